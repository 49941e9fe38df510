-- Tessera on Kubernetes as its deployment guide has it, from nothing to
-- bootstrapped: the guide's manifests (runbooks/tessera/k8s/: namespace,
-- ConfigMap, Deployment, Service, Ingress, HPA) and the tessera-secrets
-- Secret, the rollout, the security checklist checked against what is
-- deployed, Alembic migrations, the first team and admin API key created
-- with BOOTSTRAP_API_KEY, the key stored, the bootstrap key removed from
-- the production config, health checks over HTTPS; the checklist items
-- only a person can tell are manual steps.
--
--   TESSERA_DATABASE_URL=postgresql+asyncpg://... TESSERA_REDIS_URL=redis://... TESSERA_IMAGE=registry/tessera:1.2.0 \
--   runbook exec runbooks/tessera-bootstrap.lua --param api_url=https://tessera.example.com \
--     --param host=tessera.example.com --param cors_origins=https://app.example.com
local k8s = require "runbook.k8s"
local http = require "runbook.http"
local secret = require "runbook.secret"
local wait = require "runbook.wait"
local errors = require "runbook.errors"
local smoke = require "lib.smoke"
local secrets = require "lib.secrets"
local files = require "tessera"

runbook "tessera-bootstrap" {
  description = "Deploy Tessera from its guide's manifests, check its security checklist, "
    .. "migrate and bootstrap its first team and admin API key",
  owner = "Platform",
  doc = [[
The PostgreSQL and Redis Tessera uses are managed services that exist
before the guide starts (their URLs are secret params); so are the
container image in the registry, the ingress controller and the TLS
certificate's issuer. Everything in the guide's Kubernetes section is
created here, and nothing twice: a resumed or repeated run applies the same
manifests (unchanged) and keeps the Secret as it is. BOOTSTRAP_API_KEY is
the environment's, or 32 random bytes generated once and kept in the
Secret; no value is printed or written outside the cluster and the sealed
journal.]],
  params = {
    api_url = { doc = "Tessera's public URL, e.g. https://tessera.your-domain.com" },
    host = { default = "tessera.your-domain.com", doc = "the Ingress host (its TLS certificate: Secret tessera-tls)" },
    image = { env = "TESSERA_IMAGE", doc = "the Tessera image in your registry (repository:tag or @sha256:...)" },
    replicas = { default = 3, doc = "the Deployment's replicas (the HPA scales between 2 and 10)" },
    cors_origins = { default = "https://your-domain.com", doc = "CORS_ORIGINS in tessera-config: the allowed origins, comma-separated" },
    database_url = { secret = true, env = "TESSERA_DATABASE_URL",
      doc = "DATABASE_URL in tessera-secrets: postgresql+asyncpg://user:password@host:5432/tessera" },
    redis_url = { secret = true, env = "TESSERA_REDIS_URL", doc = "REDIS_URL in tessera-secrets: redis://host:6379/0" },
    bootstrap_api_key = { secret = true, required = false, env = "BOOTSTRAP_API_KEY",
      doc = "BOOTSTRAP_API_KEY for tessera-secrets (default: 32 random bytes, generated once)" },
    namespace = { default = "tessera" },
    deployment = { default = "tessera" },
    config_secret = { default = "tessera-secrets", doc = "the Secret holding DATABASE_URL, REDIS_URL and BOOTSTRAP_API_KEY" },
    config_map = { default = "tessera-config" },
    key_secret = { default = "tessera-admin-api-key", doc = "the Secret the admin API key is stored in" },
    team = { default = "Platform", doc = "the admin team" },
    key_name = { default = "admin" },
    kubeconfig = { required = false },
    context = { required = false },
    ca_file = { required = false, doc = "a CA to trust for Tessera's URL (staging, tests)" },
  },
}

local function cluster(ctx)
  return k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context, namespace = ctx.params.namespace }
end

local function vars(ctx)
  local p = ctx.params
  return { NAMESPACE = p.namespace, IMAGE = p.image, REPLICAS = tostring(p.replicas), HOST = p.host,
    CORS_ORIGINS = p.cors_origins }
end

-- A dry run before T1 made the namespace: the server would refuse objects in it.
local function new_namespace(ctx, c, what)
  if ctx.dry_run and not c:get { kind = "Namespace", name = ctx.params.namespace } then
    ctx:log("dry run: %s would be created in the new namespace %s", what, ctx.params.namespace)
    return true
  end
  return false
end

local function api(ctx, method, path, key, body)
  return http.request { method = method, url = ctx.params.api_url .. path, json = body, ca_file = ctx.params.ca_file,
    headers = { ["X-API-Key"] = key } }
end

-- The key Tessera runs with: tessera-secrets' BOOTSTRAP_API_KEY (what the
-- pods were started with), else the param.
local function bootstrap_key(ctx, c)
  local s = c:get_secret(ctx.params.config_secret)
  local key = s and s.data.BOOTSTRAP_API_KEY or ctx.params.bootstrap_api_key
  if not key then
    errors.raise { kind = "usage", message = ctx.step .. " needs BOOTSTRAP_API_KEY, but Secret " .. ctx.params.config_secret
      .. " no longer holds it (T7 removed it) and none is set: set it in the environment, or reset T7 if the admin key was lost" }
  end
  return key
end

-- The admin key stored by an earlier run, if Tessera accepts it.
local function stored_admin_key(ctx, c)
  local s = c:get_secret(ctx.params.key_secret)
  local key = s and s.data.API_KEY
  if not key then return nil end
  local res = api(ctx, "GET", "/api/v1/teams", key)
  if res.status == 200 then return key, res.json end
  ctx:warn("the key in Secret %s is not accepted (HTTP %d)", ctx.params.key_secret, res.status)
  return nil
end

local function copy(x)
  if type(x) ~= "table" then return x end
  local out = {}
  for k, v in pairs(x) do out[k] = copy(v) end
  return setmetatable(out, getmetatable(x))
end

-- ---------------------------------------------------------------------------
-- the guide's Kubernetes section

step "T1" {
  title = "Create the namespace and tessera-secrets",
  doc = [[namespace.yaml (with a Pod Security label: see C7), then the guide's
secrets.yaml as a Secret: DATABASE_URL and REDIS_URL from the params,
BOOTSTRAP_API_KEY from the environment or 32 random bytes (hex) generated
once, so a resumed run writes the same value. An existing Secret is kept as
it is (after T7 it no longer holds the bootstrap key, and must not get it
back).]],
  run = function(ctx)
    local p = ctx.params
    local c = cluster(ctx)
    local ns = c:apply(files.namespace, { vars = vars(ctx) })[1].result
    if new_namespace(ctx, c, "Secret " .. p.config_secret) then return { namespace = ns, dry_run = true } end
    local generated = p.bootstrap_api_key and {} or secrets.generated(ctx,
      { BOOTSTRAP_API_KEY = { once = "bootstrap-api-key", bytes = 32, encoding = "hex" } })
    local data = { DATABASE_URL = p.database_url, REDIS_URL = p.redis_url,
      BOOTSTRAP_API_KEY = p.bootstrap_api_key or generated.BOOTSTRAP_API_KEY }
    local _, result = c:secret { name = p.config_secret, data = data, type = "Opaque", if_exists = "keep" }
    return { namespace = ns, secret = p.config_secret, result = result,
      bootstrap_api_key = p.bootstrap_api_key and "environment" or "generated" }
  end,
}

step "T2" {
  title = "Apply the manifests and wait for the rollout",
  needs = "T1",
  doc = [[configmap.yaml, deployment.yaml, service.yaml, ingress.yaml and hpa.yaml
(runbooks/tessera/k8s/) with the image, replicas, host and CORS origins of
the params; then waits until every replica of the Deployment is updated and
ready. When only the ConfigMap changed, the Deployment is restarted so that
the pods read it.]],
  timeout = 900,
  run = function(ctx)
    local c = cluster(ctx)
    if new_namespace(ctx, c, "the manifests") then return { dry_run = true } end
    local report = c:apply(files.k8s, { vars = vars(ctx) })
    local results = {}
    for _, r in ipairs(report) do results[r.kind] = r.result end
    if ctx.dry_run then return { created = report.created, configured = report.configured, unchanged = report.unchanged } end
    if results.ConfigMap == "configured" and results.Deployment == "unchanged" then
      c:rollout_restart { kind = "Deployment", name = ctx.params.deployment, wait = true, timeout = 600 }
    else
      c:rollout_status { kind = "Deployment", name = ctx.params.deployment, timeout = 600 }
    end
    return { created = report.created, configured = report.configured, unchanged = report.unchanged }
  end,
}

-- ---------------------------------------------------------------------------
-- the security checklist, checked against what is deployed

-- What the checks look at, read once per step: the namespace, the Secret,
-- the ConfigMap, the Deployment (and its first container), the Ingress.
local function deployed(ctx)
  local p, c = ctx.params, cluster(ctx)
  local w = {
    namespace = c:get { kind = "Namespace", name = p.namespace },
    secret = c:get_secret(p.config_secret),
    config = c:get { kind = "ConfigMap", name = p.config_map },
    deployment = c:get { api_version = "apps/v1", kind = "Deployment", name = p.deployment },
    ingress = c:get { api_version = "networking.k8s.io/v1", kind = "Ingress", name = p.deployment },
    cluster = c,
  }
  w.pod = w.deployment and w.deployment.spec.template.spec or {}
  w.containers = w.pod.containers or {}
  return w
end

-- The value a variable has in Tessera's container: env overrides envFrom,
-- a later envFrom source an earlier one. Returns the value (a string, a
-- secret, or "(from another object)") and where it comes from.
local function effective(ctx, w, name)
  local value, from
  local ct = w.containers[1] or {}
  for _, src in ipairs(ct.envFrom or {}) do
    local prefix = src.prefix or ""
    if src.configMapRef then
      local cm = src.configMapRef.name == ctx.params.config_map and w.config
        or w.cluster:get { kind = "ConfigMap", name = src.configMapRef.name }
      for k, v in pairs(cm and cm.data or {}) do
        if prefix .. k == name then value, from = v, "ConfigMap " .. src.configMapRef.name end
      end
    elseif src.secretRef then
      local s = src.secretRef.name == ctx.params.config_secret and w.secret or w.cluster:get_secret(src.secretRef.name)
      for k, v in pairs(s and s.data or {}) do
        if prefix .. k == name then value, from = v, "Secret " .. src.secretRef.name end
      end
    end
  end
  for _, e in ipairs(ct.env or {}) do
    if e.name == name then
      if e.value ~= nil then value, from = e.value, "the Deployment's env"
      else value, from = "(from another object)", "the Deployment's env (valueFrom)" end
    end
  end
  return value, from
end

local function plain(v) return v ~= nil and secret.reveal(v) or nil end

-- Declares a verified checklist step: `check(ctx, w, bad, ok)` looks at
-- the deployed objects and calls bad(fmt, ...) for each problem, ok(fmt,
-- ...) for each thing it found right. Any problem fails the step, every
-- problem in its message.
local function check(id)
  return function(opts)
    step(id) {
      title = opts.title, needs = opts.needs, doc = opts.doc, owner = opts.owner,
      run = function(ctx)
        local c = cluster(ctx)
        if ctx.dry_run and not c:get { kind = "Namespace", name = ctx.params.namespace } then
          ctx:log("dry run: would check %s once the namespace %s exists", opts.title, ctx.params.namespace)
          return { dry_run = true }
        end
        local problems, passed = {}, {}
        local function bad(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
        local function ok(fmt, ...)
          local line = string.format(fmt, ...)
          passed[#passed + 1] = line
          ctx:log("ok: %s", line)
        end
        local w = deployed(ctx)
        if not w.deployment then bad("Deployment %s is not there (T2 applies it)", ctx.params.deployment)
        else opts.check(ctx, w, bad, ok) end
        if #problems > 0 then
          errors.raise { kind = "verify", code = "security", message = opts.title .. ": " .. table.concat(problems, "; ") }
        end
        return { passed = passed }
      end,
    }
  end
end

-- the Secret's keys, and what else in tessera-secrets is a credential
local SECRET_KEYS = { "DATABASE_URL", "REDIS_URL", "BOOTSTRAP_API_KEY", "WEBHOOK_SECRET" }

check "C1" {
  title = "Secrets not in env files or code",
  needs = "T2",
  doc = [[Security checklist, "Secrets in secret manager": DATABASE_URL, REDIS_URL,
BOOTSTRAP_API_KEY and WEBHOOK_SECRET are not keys of the ConfigMap nor literal
values in the Deployment, and no value of tessera-secrets appears in the
ConfigMap under another name. (Keeping the Secret's values in a secret manager
as well is M1-secret-manager.)]],
  check = function(ctx, w, bad, ok)
    local cm = w.config and w.config.data or {}
    for _, k in ipairs(SECRET_KEYS) do
      if cm[k] ~= nil then bad("%s is in ConfigMap %s: move it to Secret %s", k, ctx.params.config_map, ctx.params.config_secret) end
    end
    for _, ct in ipairs(w.containers) do
      for _, e in ipairs(ct.env or {}) do
        for _, k in ipairs(SECRET_KEYS) do
          if e.name == k and e.value ~= nil then
            bad("%s is a literal value in container %s of Deployment %s: take it from Secret %s", k, ct.name, ctx.params.deployment,
              ctx.params.config_secret)
          end
        end
      end
    end
    for sk, sv in pairs(w.secret and w.secret.data or {}) do
      local v = plain(sv)
      for ck, cv in pairs(cm) do
        if #v >= 8 and tostring(cv):find(v, 1, true) then
          bad("ConfigMap %s key %s holds the value of %s from Secret %s", ctx.params.config_map, ck, sk, ctx.params.config_secret)
        end
      end
    end
    ok("no credential in ConfigMap %s or in the Deployment's env", ctx.params.config_map)
  end,
}

-- the guide's examples: what a copied manifest or a default would hold
local EXAMPLE_PASSWORDS = { password = true, pass = true, postgres = true, tessera = true, changeme = true }
local EXAMPLE_KEYS = { ["your-secure-bootstrap-key"] = true, ["your-secure-key"] = true, ["your-key"] = true,
  ["your-admin-key"] = true }

check "C2" {
  title = "Database credentials changed from defaults",
  needs = "T2",
  doc = [[Security checklist, "Database credentials rotated": DATABASE_URL in
tessera-secrets has a password, not the guide's example (`password`, `pass`) nor
a default (`postgres`, the user name), of at least 12 characters, and
BOOTSTRAP_API_KEY (while set) is not one of the guide's placeholders and has at
least 32 characters. Whether the password was rotated since it was shared is
only known to whoever rotates it: this checks it is not a default.]],
  check = function(ctx, w, bad, ok)
    local url = plain(w.secret and w.secret.data.DATABASE_URL)
    if not url then
      bad("Secret %s has no DATABASE_URL", ctx.params.config_secret)
    else
      local user, pw = url:match("^[%w+.-]+://([^:@/]*):([^@/]*)@")
      if not pw or pw == "" then
        bad("DATABASE_URL in Secret %s has no password", ctx.params.config_secret)
      elseif EXAMPLE_PASSWORDS[pw:lower()] or pw == user then
        bad("DATABASE_URL in Secret %s still has a default or example password (the guide's, postgres, or the user name): rotate it",
          ctx.params.config_secret)
      elseif #pw < 12 then
        bad("DATABASE_URL in Secret %s has a password of %d characters: use at least 12", ctx.params.config_secret, #pw)
      else
        ok("DATABASE_URL's password is not a default")
      end
    end
    local key = plain(w.secret and w.secret.data.BOOTSTRAP_API_KEY)
    if key and (EXAMPLE_KEYS[key] or #key < 32) then
      bad("BOOTSTRAP_API_KEY in Secret %s is the guide's placeholder or shorter than 32 characters", ctx.params.config_secret)
    elseif key then
      ok("BOOTSTRAP_API_KEY is not a placeholder")
    end
  end,
}

check "C3" {
  title = "AUTH_DISABLED=false",
  needs = "T2",
  doc = "Security checklist: AUTH_DISABLED, as Tessera's container sees it (env over envFrom), is unset or `false`.",
  check = function(ctx, w, bad, ok)
    local v, from = effective(ctx, w, "AUTH_DISABLED")
    v = plain(v)
    if v ~= nil and v:lower() ~= "false" then
      bad("AUTH_DISABLED is %q (from %s): authentication is off; remove it or set it to \"false\"", v, from)
    else
      ok("AUTH_DISABLED is %s", v and "false" or "unset (false)")
    end
  end,
}

check "C4" {
  title = "CORS restricted",
  needs = "T2",
  doc = [[Security checklist, "Only allowed origins listed": CORS_ORIGINS is set
(Tessera allows `*` by default in development), lists no `*`, and every origin
is https://.]],
  check = function(ctx, w, bad, ok)
    local v, from = effective(ctx, w, "CORS_ORIGINS")
    v = plain(v)
    if not v or v:match("^%s*$") then
      bad("CORS_ORIGINS is not set (Tessera's default allows any origin): list the allowed origins in ConfigMap %s (param cors_origins)",
        ctx.params.config_map)
      return
    end
    local n = 0
    for origin in v:gmatch("[^,%s]+") do
      n = n + 1
      if origin:find("*", 1, true) then
        bad("CORS_ORIGINS (from %s) allows any origin (%q): list the allowed origins (param cors_origins)", from, origin)
      elseif not origin:match("^https://[^/]+$") then
        bad("CORS_ORIGINS (from %s) lists %q, which is not an https:// origin", from, origin)
      end
    end
    ok("CORS_ORIGINS lists %d origin(s)", n)
  end,
}

check "C5" {
  title = "Rate limiting enabled",
  needs = "T2",
  doc = "Security checklist: RATE_LIMIT_ENABLED is not `false` (the guide's ConfigMap sets `true`), with read and write limits.",
  check = function(ctx, w, bad, ok)
    local v, from = effective(ctx, w, "RATE_LIMIT_ENABLED")
    v = plain(v)
    if v ~= nil and v:lower() ~= "true" then
      bad("RATE_LIMIT_ENABLED is %q (from %s): set it to \"true\"", v, from)
      return
    end
    for _, k in ipairs { "RATE_LIMIT_READ", "RATE_LIMIT_WRITE" } do
      local limit = plain((effective(ctx, w, k)))
      if limit and not limit:match("^%d+/%a+$") then bad("%s is %q, not a limit like 100/minute", k, limit) end
    end
    ok("rate limiting is on")
  end,
}

check "C6" {
  title = "Production mode, debug logging off",
  needs = "T2",
  doc = [[ENVIRONMENT is `production` and LOG_LEVEL is not DEBUG (the guide's "Debug
Mode" is for troubleshooting only: debug logs may hold request data).]],
  check = function(ctx, w, bad, ok)
    local env, from = effective(ctx, w, "ENVIRONMENT")
    env = plain(env)
    if env ~= "production" then
      bad("ENVIRONMENT is %s: set it to \"production\" in ConfigMap %s", env and string.format("%q (from %s)", env, from) or "unset",
        ctx.params.config_map)
    end
    local level, lfrom = effective(ctx, w, "LOG_LEVEL")
    level = plain(level)
    if level and level:upper() == "DEBUG" then
      bad("LOG_LEVEL is DEBUG (from %s): debug logging is for troubleshooting, remove it", lfrom)
    end
    ok("ENVIRONMENT=production, LOG_LEVEL %s", level or "unset")
  end,
}

check "C7" {
  title = "Pod security: container capabilities restricted",
  needs = "T2",
  doc = [[Security checklist, "Pod security policies": the namespace enforces a Pod
Security Standard (label pod-security.kubernetes.io/enforce: baseline or
restricted), and no container of the Deployment is privileged, adds
capabilities or allows privilege escalation, nor does the pod share the
host's network, PID or IPC namespaces.]],
  check = function(ctx, w, bad, ok)
    local labels = w.namespace and w.namespace.metadata.labels or {}
    local level = labels["pod-security.kubernetes.io/enforce"]
    if level ~= "baseline" and level ~= "restricted" then
      bad("namespace %s enforces no Pod Security Standard (label pod-security.kubernetes.io/enforce is %s; want baseline or restricted)",
        ctx.params.namespace, level and string.format("%q", level) or "unset")
    end
    for _, k in ipairs { "hostNetwork", "hostPID", "hostIPC" } do
      if w.pod[k] then bad("the pod sets %s", k) end
    end
    for _, ct in ipairs(w.containers) do
      local sc = ct.securityContext or {}
      if sc.privileged then bad("container %s is privileged", ct.name) end
      if sc.allowPrivilegeEscalation then bad("container %s allows privilege escalation", ct.name) end
      if sc.capabilities and sc.capabilities.add and #sc.capabilities.add > 0 then
        bad("container %s adds capabilities %s", ct.name, table.concat(sc.capabilities.add, ", "))
      end
    end
    ok("namespace %s enforces %s; no privileged container", ctx.params.namespace, tostring(level))
  end,
}

check "C8" {
  title = "Resource requests and limits set",
  needs = "T2",
  doc = "Every container of the Deployment has CPU and memory requests and limits (the guide: 250m/256Mi, 500m/512Mi).",
  check = function(_, w, bad, ok)
    for _, ct in ipairs(w.containers) do
      local r = ct.resources or {}
      for _, kind in ipairs { "requests", "limits" } do
        for _, res in ipairs { "cpu", "memory" } do
          if not (r[kind] and r[kind][res]) then bad("container %s has no %s %s", ct.name, res, kind:sub(1, -2)) end
        end
      end
      if r.limits then ok("container %s: limits cpu %s, memory %s", ct.name, tostring(r.limits.cpu), tostring(r.limits.memory)) end
    end
  end,
}

check "C9" {
  title = "Health checks configured",
  needs = "T2",
  doc = [[Security checklist, "Liveness and readiness probes": Tessera's container has a
liveness probe on /health/live and a readiness probe on /health/ready (that
they answer is checked over HTTPS in C10 and T8).]],
  check = function(_, w, bad, ok)
    local ct = w.containers[1] or {}
    for _, probe in ipairs { { "livenessProbe", "/health/live" }, { "readinessProbe", "/health/ready" } } do
      local p = ct[probe[1]]
      local path = p and p.httpGet and p.httpGet.path
      if not p then bad("container %s has no %s", tostring(ct.name), probe[1])
      elseif path ~= probe[2] then bad("the %s of container %s is on %s, not %s", probe[1], tostring(ct.name), tostring(path), probe[2])
      else ok("%s on %s", probe[1], path) end
    end
  end,
}

-- ---------------------------------------------------------------------------
-- migrations and bootstrap

step "T3" {
  title = "Run migrations",
  needs = { "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9" },
  doc = "`alembic upgrade head` in a one-off Job with the tessera Deployment's image and environment.",
  timeout = 1800,
  run = function(ctx)
    local c = cluster(ctx)
    local d = c:get { api_version = "apps/v1", kind = "Deployment", name = ctx.params.deployment }
    if not d and ctx.dry_run then
      ctx:log("dry run: would run alembic upgrade head in a Job once Deployment %s exists", ctx.params.deployment)
      return { dry_run = true }
    end
    if not d then
      errors.raise { kind = "deploy", code = "missing", message = string.format("deployment %s/%s not found: T2 applies it",
        ctx.params.namespace, ctx.params.deployment) }
    end
    local pod = copy(d.spec.template.spec)
    local main = pod.containers[1]
    main.command, main.args = { "alembic", "upgrade", "head" }, nil
    main.livenessProbe, main.readinessProbe, main.startupProbe, main.ports = nil, nil, nil, nil
    pod.containers, pod.restartPolicy = { main }, "Never"
    local out = c:run_job {
      name = "tessera-migrate-" .. (ctx.run_id:match("%-(%d%d%d%d%d%d%-%x+)$") or "dry-run"),
      spec = { backoffLimit = 0, ttlSecondsAfterFinished = 7 * 24 * 3600,
        template = { metadata = { labels = { ["app.kubernetes.io/component"] = "migrate" } }, spec = pod } },
      timeout = 1800, rerun_failed = true,
    }
    return { job = out.name }
  end,
}

step "T4" {
  title = "Wait until Tessera is ready",
  needs = "T3",
  timeout = 900,
  run = function(ctx)
    if ctx.dry_run and not cluster(ctx):get { kind = "Namespace", name = ctx.params.namespace } then
      ctx:log("dry run: would wait for Deployment %s and %s/health/ready", ctx.params.deployment, ctx.params.api_url)
      return { dry_run = true }
    end
    cluster(ctx):rollout_status { kind = "Deployment", name = ctx.params.deployment, timeout = 600 }
    wait.http(ctx.params.api_url .. "/health/ready", { timeout = 180, interval = 2, ca_file = ctx.params.ca_file,
      what = "Tessera to report ready (database connected)" })
  end,
}

check "C10" {
  title = "TLS enabled",
  needs = "T4",
  doc = [[Security checklist, "All traffic over HTTPS": the Ingress has a TLS entry
with a certificate Secret for every host it routes, nginx's ssl-redirect is on,
api_url is https://, and /health answers there over TLS with a certificate the
client verifies (ca_file, else the system's CAs).]],
  check = function(ctx, w, bad, ok)
    local ing = w.ingress
    if not ing then
      bad("Ingress %s is not there (T2 applies it)", ctx.params.deployment)
      return
    end
    local covered = {}
    for _, t in ipairs(ing.spec.tls or {}) do
      if t.secretName then for _, h in ipairs(t.hosts or {}) do covered[h] = t.secretName end end
    end
    for _, r in ipairs(ing.spec.rules or {}) do
      if not r.host then bad("Ingress %s has a rule for any host, which no TLS entry can cover", ing.metadata.name)
      elseif not covered[r.host] then
        bad("Ingress %s routes %s without TLS (no tls entry with a secretName for it)", ing.metadata.name, r.host)
      else
        ok("%s over TLS (Secret %s)", r.host, covered[r.host])
        local s = w.cluster:get { kind = "Secret", name = covered[r.host] }
        if s and s.type ~= "kubernetes.io/tls" then bad("Secret %s is of type %s, not kubernetes.io/tls", covered[r.host], s.type)
        elseif not s then
          ctx:warn("Secret %s is not there yet: until it is, the ingress controller serves its default certificate", covered[r.host])
        end
      end
    end
    local redirect = (ing.metadata.annotations or {})["nginx.ingress.kubernetes.io/ssl-redirect"]
    if redirect == "false" then bad("Ingress %s turns nginx's ssl-redirect off: plain HTTP is served", ing.metadata.name) end
    if not ctx.params.api_url:match("^https://") then
      bad("api_url %s is not https://", ctx.params.api_url)
      return
    end
    local got, res = pcall(http.request, { url = ctx.params.api_url .. "/health", ca_file = ctx.params.ca_file, timeout = 15 })
    local err = not got and res or nil
    if not got then bad("%s/health does not answer over verified TLS: %s", ctx.params.api_url, errors.message(err))
    elseif res.status ~= 200 then bad("%s/health answered %d over HTTPS", ctx.params.api_url, res.status)
    else ok("%s/health answers 200 over verified TLS", ctx.params.api_url) end
  end,
}

step "T5" {
  title = "Create the admin team",
  needs = "C10",
  doc = "POST /api/v1/teams with the bootstrap key, once; a team of that name that exists is taken as done.",
  verify = function(ctx)
    -- the teams, as the stored admin key (a later run) or the bootstrap key sees them
    local c = cluster(ctx)
    local _, teams = stored_admin_key(ctx, c)
    local s = not teams and c:get_secret(ctx.params.config_secret)
    local key = s and s.data.BOOTSTRAP_API_KEY or ctx.params.bootstrap_api_key
    if not teams and key then
      local res = api(ctx, "GET", "/api/v1/teams", key)
      teams = res.status == 200 and res.json or nil
    end
    for _, t in ipairs(teams and teams.items or {}) do
      if t.name == ctx.params.team then return true end
    end
    return false
  end,
  run = function(ctx)
    if ctx.dry_run and not cluster(ctx):get { kind = "Namespace", name = ctx.params.namespace } then
      ctx:log("dry run: would POST %s/api/v1/teams", ctx.params.api_url)
      return { name = ctx.params.team, dry_run = true }
    end
    local key = bootstrap_key(ctx, cluster(ctx))
    return ctx:once("team", function()
      local res = api(ctx, "POST", "/api/v1/teams", key, { name = ctx.params.team })
      if res.dry_run then return { name = ctx.params.team, dry_run = true } end
      if res.status == 409 then return { name = ctx.params.team, existed = true } end
      if res.status ~= 201 and res.status ~= 200 then
        errors.raise { kind = "http", code = "status", message = string.format("POST /api/v1/teams answered %d: %s",
          res.status, http.snippet(res.body)) }
      end
      return { id = res.json.id, name = res.json.name }
    end)
  end,
}

step "T6" {
  title = "Create the admin API key",
  needs = "T5",
  doc = [[POST /api/v1/api-keys (scopes read, write, admin) with the bootstrap key, once;
the returned key is stored in the Secret tessera-admin-api-key (API_KEY) and
never shown. Copy it into your secret manager from there (M1-secret-manager).]],
  verify = function(ctx) return stored_admin_key(ctx, cluster(ctx)) ~= nil end,
  run = function(ctx)
    local c = cluster(ctx)
    if ctx.dry_run and not c:get { kind = "Namespace", name = ctx.params.namespace } then
      ctx:log("dry run: would POST %s/api/v1/api-keys and store the key in Secret %s", ctx.params.api_url, ctx.params.key_secret)
      return { dry_run = true }
    end
    local key = bootstrap_key(ctx, c)
    local admin_key = ctx:once("admin-api-key", function()
      local res = api(ctx, "POST", "/api/v1/api-keys", key, { name = ctx.params.key_name, scopes = { "read", "write", "admin" } })
      if res.dry_run then return nil end
      if res.status ~= 201 and res.status ~= 200 then
        errors.raise { kind = "http", code = "status", message = string.format("POST /api/v1/api-keys answered %d: %s",
          res.status, http.snippet(res.body)) }
      end
      return secret.wrap(res.json.key)
    end)
    if not admin_key then return { dry_run = true } end
    local _, result = c:secret { name = ctx.params.key_secret, data = { API_KEY = admin_key, name = ctx.params.key_name },
      if_exists = "replace" }
    return { secret = ctx.params.key_secret, result = result }
  end,
}

step "T7" {
  title = "Remove BOOTSTRAP_API_KEY from production config",
  needs = "T6",
  doc = "Drops the key from tessera-secrets and restarts the Deployment so no pod keeps it.",
  timeout = 900,
  verify = function(ctx)
    local s = cluster(ctx):get_secret(ctx.params.config_secret)
    return s ~= nil and s.data.BOOTSTRAP_API_KEY == nil
  end,
  run = function(ctx)
    local c = cluster(ctx)
    local s = c:get_secret(ctx.params.config_secret)
    if s and s.data.BOOTSTRAP_API_KEY ~= nil then
      c:patch({ kind = "Secret", name = ctx.params.config_secret }, { { op = "remove", path = "/data/BOOTSTRAP_API_KEY" } },
        { type = "json" })
    end
    if ctx.dry_run and not s then return { dry_run = true } end
    c:rollout_restart { kind = "Deployment", name = ctx.params.deployment, wait = true, timeout = 600 }
  end,
}

check "C11" {
  title = "BOOTSTRAP_API_KEY removed",
  needs = "T7",
  doc = [[Security checklist, "Not set in production": BOOTSTRAP_API_KEY is in neither
tessera-secrets nor the ConfigMap nor the Deployment's env, and the pods were
restarted since it was removed (T7).]],
  check = function(ctx, w, bad, ok)
    local v, from = effective(ctx, w, "BOOTSTRAP_API_KEY")
    if v ~= nil then bad("BOOTSTRAP_API_KEY is still set (in %s): remove it", from) end
    local restarted = ((w.deployment.spec.template.metadata or {}).annotations or {})["kubectl.kubernetes.io/restartedAt"]
    if not restarted and not ctx.dry_run then
      bad("Deployment %s was not restarted since: its pods may still hold the key", ctx.params.deployment)
    end
    if v == nil then ok("BOOTSTRAP_API_KEY is not set; pods restarted at %s", tostring(restarted)) end
  end,
}

smoke.step "T8" {
  title = "Health checks",
  needs = "C11",
  prepare = function(ctx)
    if ctx.dry_run and not cluster(ctx):get { kind = "Namespace", name = ctx.params.namespace } then return nil end
    local key = stored_admin_key(ctx, cluster(ctx))
    if not key and not ctx.dry_run then
      errors.raise { kind = "verify", message = "Tessera does not accept the stored admin API key" }
    end
    return key
  end,
  checks = function(_, key)
    local rows = {
      { name = "liveness (app running)", path = "/health/live", status = 200 },
      { name = "readiness (database connected)", path = "/health/ready", status = 200 },
      { name = "general health", path = "/health", status = 200 },
    }
    if key then rows[#rows + 1] = { name = "admin API key", path = "/api/v1/teams", headers = { ["X-API-Key"] = key }, status = 200 } end
    return rows
  end,
}

-- ---------------------------------------------------------------------------
-- the checklist items only a person can tell

manual "M1-secret-manager" {
  title = "Store the admin API key in the secret manager",
  owner = "Platform",
  needs = "T8",
  instructions = [[
Initial Bootstrap 3 and "Secrets in secret manager": copy API_KEY from the
Secret tessera-admin-api-key into your secret manager (Vault, 1Password, AWS
Secrets Manager) without printing it, e.g.
  kubectl -n tessera get secret tessera-admin-api-key -o jsonpath='{.data.API_KEY}' | base64 -d | <your secret manager's CLI>
and keep DATABASE_URL and REDIS_URL there as the source of tessera-secrets.
Then confirm: runbook confirm <run> M1-secret-manager --note "<where it is stored>"]],
}

manual "M2-db-private" {
  title = "Database not public",
  owner = "Platform",
  needs = "T8",
  instructions = [[
Network checklist: the PostgreSQL in DATABASE_URL accepts connections only
from the cluster's (app) subnet: no public IP, or a security group / firewall
rule / authorized network limited to it; SSL required (sslmode=require).
Then confirm: runbook confirm <run> M2-db-private --note "<instance, rule>"]],
}

manual "M3-redis-private" {
  title = "Redis not public",
  owner = "Platform",
  needs = "T8",
  instructions = [[
Network checklist: the Redis in REDIS_URL is reachable on the internal network
only (no public endpoint; a security group or NetworkPolicy limited to the
cluster).
Then confirm: runbook confirm <run> M3-redis-private --note "<instance, rule>"]],
}

manual "M4-waf" {
  title = "Ingress has a WAF",
  owner = "Platform",
  needs = "T8",
  instructions = [[
Network checklist: a web application firewall in front of the Ingress for
tessera.your-domain.com: the cloud load balancer's WAF (AWS WAF, Cloud Armor,
Azure WAF) or ingress-nginx's ModSecurity with the OWASP core rule set
(annotations nginx.ingress.kubernetes.io/enable-modsecurity and
enable-owasp-core-rules on the Ingress tessera).
Then confirm: runbook confirm <run> M4-waf --note "<which WAF, rule set>"]],
}

manual "M5-metrics" {
  title = "Metrics exported",
  owner = "Platform",
  needs = "T8",
  instructions = [[
Monitoring checklist: Prometheus scrapes /metrics. With the Prometheus
Operator, apply the guide's ServiceMonitor; note that its endpoint names the
port `http`, which the guide's Service leaves unnamed: name the Service's port
`http` first (or scrape by targetPort). Check the target is up in Prometheus.
Then confirm: runbook confirm <run> M5-metrics --note "<Prometheus target>"]],
}

manual "M6-audit-log" {
  title = "Audit logging enabled",
  owner = "Platform",
  needs = "T8",
  instructions = [[
Monitoring checklist: changes are tracked: Tessera's audit schema is written
(the `audit` schema exists after the migrations) and shipped with the pods'
logs to your log store, and the cluster's audit log covers namespace tessera.
Then confirm: runbook confirm <run> M6-audit-log --note "<where the audit trail is>"]],
}

manual "M7-alerts" {
  title = "Alerts configured",
  owner = "Platform",
  needs = "M5-metrics",
  instructions = [[
Monitoring checklist: the guide's PrometheusRule (TesseraHighErrorRate,
TesseraHighLatency, TesseraDatabaseDown) is applied and routed to someone
on call (Alertmanager receiver), for error rates, latency and availability.
Then confirm: runbook confirm <run> M7-alerts --note "<alert route>"]],
}
