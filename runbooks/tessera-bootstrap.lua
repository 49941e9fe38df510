-- Tessera on Kubernetes, from "deployed" to "bootstrapped", as its
-- deployment guide has it: Alembic migrations, readiness, the first team
-- and admin API key created with BOOTSTRAP_API_KEY, the key stored, the
-- bootstrap key removed from the production config, health checks.
--
--   BOOTSTRAP_API_KEY=... runbook exec runbooks/tessera-bootstrap.lua --param api_url=https://tessera.example.com
local k8s = require "runbook.k8s"
local http = require "runbook.http"
local secret = require "runbook.secret"
local wait = require "runbook.wait"
local errors = require "runbook.errors"
local smoke = require "lib.smoke"

runbook "tessera-bootstrap" {
  description = "Migrate Tessera and bootstrap its first team and admin API key",
  owner = "Platform",
  params = {
    api_url = { doc = "Tessera's public URL, e.g. https://tessera.your-domain.com" },
    bootstrap_api_key = { secret = true, required = false, env = "BOOTSTRAP_API_KEY",
      doc = "the BOOTSTRAP_API_KEY Tessera runs with (needed until the admin key exists)" },
    namespace = { default = "tessera" },
    deployment = { default = "tessera" },
    config_secret = { default = "tessera-secrets", doc = "the Secret holding DATABASE_URL, REDIS_URL and BOOTSTRAP_API_KEY" },
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

local function api(ctx, method, path, key, body)
  return http.request { method = method, url = ctx.params.api_url .. path, json = body, ca_file = ctx.params.ca_file,
    headers = { ["X-API-Key"] = key } }
end

local function bootstrap_key(ctx)
  local key = ctx.params.bootstrap_api_key
  if not key then
    errors.raise { kind = "usage", message = ctx.step .. " needs BOOTSTRAP_API_KEY (the key Tessera was started with): "
      .. "set it in the environment or pass --param bootstrap_api_key=..." }
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

step "T1" {
  title = "Run migrations",
  doc = "`alembic upgrade head` in a one-off Job with the tessera Deployment's image and environment.",
  timeout = 1800,
  run = function(ctx)
    local c = cluster(ctx)
    local d = c:get { api_version = "apps/v1", kind = "Deployment", name = ctx.params.deployment }
    if not d then
      errors.raise { kind = "deploy", code = "missing", message = string.format("deployment %s/%s not found: apply the manifests first",
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

step "T2" {
  title = "Wait until Tessera is ready",
  needs = "T1",
  timeout = 900,
  run = function(ctx)
    cluster(ctx):rollout_status { kind = "Deployment", name = ctx.params.deployment, timeout = 600 }
    wait.http(ctx.params.api_url .. "/health/ready", { timeout = 180, interval = 2, ca_file = ctx.params.ca_file,
      what = "Tessera to report ready (database connected)" })
  end,
}

step "T3" {
  title = "Create the admin team",
  needs = "T2",
  doc = "POST /api/v1/teams with the bootstrap key, once; a team of that name that exists is taken as done.",
  verify = function(ctx)
    -- the teams, as the stored admin key (a later run) or the bootstrap key sees them
    local _, teams = stored_admin_key(ctx, cluster(ctx))
    if not teams and ctx.params.bootstrap_api_key then
      local res = api(ctx, "GET", "/api/v1/teams", ctx.params.bootstrap_api_key)
      teams = res.status == 200 and res.json or nil
    end
    for _, t in ipairs(teams and teams.items or {}) do
      if t.name == ctx.params.team then return true end
    end
    return false
  end,
  run = function(ctx)
    local key = bootstrap_key(ctx)
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

step "T4" {
  title = "Create the admin API key",
  needs = "T3",
  doc = [[POST /api/v1/api-keys (scopes read, write, admin) with the bootstrap key, once;
the returned key is stored in the Secret tessera-admin-api-key (API_KEY) and
never shown. Copy it into your secret manager from there.]],
  verify = function(ctx) return stored_admin_key(ctx, cluster(ctx)) ~= nil end,
  run = function(ctx)
    local key = bootstrap_key(ctx)
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
    local _, result = cluster(ctx):secret { name = ctx.params.key_secret, data = { API_KEY = admin_key, name = ctx.params.key_name },
      if_exists = "replace" }
    return { secret = ctx.params.key_secret, result = result }
  end,
}

step "T5" {
  title = "Remove BOOTSTRAP_API_KEY from production config",
  needs = "T4",
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
    c:rollout_restart { kind = "Deployment", name = ctx.params.deployment, wait = true, timeout = 600 }
  end,
}

smoke.step "T6" {
  title = "Health checks",
  needs = "T5",
  prepare = function(ctx)
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
