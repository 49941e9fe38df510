-- Tezca's first production deploy: the "Remaining (Manual / Requires
-- Credentials)" list M1-M14 of Tezca's deployment guide, in its
-- recommended order, as one resumable run. Steps a person does in a
-- dashboard are manual steps; where their result can be seen from here
-- (DNS, the ArgoCD Application) they confirm themselves.
--
--   export KUBECONFIG=~/.kube/madfam-prod TEZCA_DB_HOST=pg.madfam.internal \
--          JANUA_API_KEY=... JANUA_PUBLISHABLE_KEY=... JANUA_SECRET_KEY=... JANUA_ADMIN_TOKEN=... \
--          R2_ENDPOINT_URL=https://<account>.r2.cloudflarestorage.com R2_ACCESS_KEY_ID=... R2_SECRET_ACCESS_KEY=... \
--          SENTRY_DSN=... TEZCA_ADMIN_JWT=... \
--          TEZCA_PG_ADMIN_URL=postgres://admin@pg.madfam.internal:5432/postgres PGPASSWORD=...
--   runbook exec runbooks/first-deploy.lua
--
-- `gh` (GitHub's CLI, signed in with read access to the repository) answers
-- M2's and M10-images' and M10-ci's questions.
local k8s = require "runbook.k8s"
local http = require "runbook.http"
local dns = require "runbook.dns"
local s3 = require "runbook.s3"
local errors = require "runbook.errors"
local pg = require "runbook.pg"
local secret = require "runbook.secret"
local wait = require "runbook.wait"
local yaml = require "runbook.yaml"
local secrets = require "lib.secrets"
local smoke = require "lib.smoke"
local github = require "lib.github"

runbook "tezca-first-deploy" {
  description = "First production deploy of Tezca (tezca.mx): M1-M14 of the deployment guide",
  owner = "DevOps",
  doc = [[
Namespace `tezca` on the MADFAM cluster, images from ghcr.io/madfam-org/tezca,
PostgreSQL on the shared MADFAM cluster (database `tezca`), documents on R2.
ArgoCD deploys the manifests of `k8s/production/` (M6); the one-off commands
the guide runs with `enclii exec tezca-api -- ...` (M7, M8, M9, M14) run here
as Kubernetes Jobs with the `tezca-api` Deployment's pod template (its image,
environment and volumes), their logs in the run log.]],
  params = {
    namespace = { default = "tezca", doc = "the Kubernetes namespace" },
    kubeconfig = { required = false, doc = "kubeconfig path (default: $KUBECONFIG, then ~/.kube/config)" },
    context = { required = false, doc = "kubeconfig context (default: the current one)" },
    domain = { default = "tezca.mx", doc = "the Cloudflare zone; the web, api. and admin. hosts are derived from it" },
    web_url = { required = false, doc = "the web app's base URL (default https://<domain>)" },
    api_url = { required = false, doc = "the API's base URL (default https://api.<domain>)" },
    admin_url = { required = false, doc = "the admin console's base URL (default https://admin.<domain>)" },
    ca_file = { required = false, doc = "a CA to trust for the HTTPS checks, besides the system's (staging, tests)" },
    www_host = { required = false, doc = "the www host M5 checks (default www.<domain>)" },
    tunnel_host = { default = "tunnel.enclii.dev", doc = "the CNAME target of the four hosts (M5)" },
    dns_proxied = { type = "boolean", default = true,
      doc = "the records are proxied by Cloudflare, which hides their CNAME: M5 then checks that they resolve, not their target" },
    api_image = { default = "ghcr.io/madfam-org/tezca/api", doc = "the API image repository" },
    image_tag = { required = false, doc = "run the one-off Jobs with this tag of api_image (default: the image tezca-api runs)" },
    db_host = { env = "TEZCA_DB_HOST", doc = "the shared PostgreSQL cluster's endpoint (DB_HOST)" },
    pg_admin_url = { secret = true, env = "TEZCA_PG_ADMIN_URL",
      doc = "an admin connection URL of the shared PostgreSQL cluster, for M3-db (a role with CREATEROLE and CREATEDB; its password in the URL, PGPASSWORD or ~/.pgpass)" },
    db_name = { default = "tezca", doc = "the database M3-db makes on the shared cluster" },
    github_repo = { default = "madfam-org/tezca", doc = "the repository whose Actions secrets (M2) and deploy workflows (M10-images, M10-ci) are checked" },
    registry = { default = "ghcr.io/madfam-org/tezca", doc = "where CI pushes the api, web and admin images (M10-ci)" },
    janua_url = { default = "https://api.janua.dev", doc = "Janua's API (OAuth client registration, M4)" },
    janua_admin_token = { secret = true, env = "JANUA_ADMIN_TOKEN", doc = "a Janua admin access token (M4)" },
    janua_api_key = { secret = true, env = "JANUA_API_KEY", doc = "sk_live_... (tezca-secrets)" },
    janua_publishable_key = { secret = true, env = "JANUA_PUBLISHABLE_KEY", doc = "pk_live_... (tezca-secrets)" },
    janua_secret_key = { secret = true, env = "JANUA_SECRET_KEY", doc = "sk_live_... (tezca-secrets)" },
    argocd_namespace = { default = "argocd" },
    argocd_app = { default = "tezca", doc = "the ArgoCD Application the root application gains (M6)" },
    r2_endpoint = { env = "R2_ENDPOINT_URL", doc = "https://<account_id>.r2.cloudflarestorage.com" },
    r2_region = { default = "auto" },
    r2_bucket = { default = "tezca-documents" },
    r2_access_key_id = { secret = true, env = "R2_ACCESS_KEY_ID" },
    r2_secret_access_key = { secret = true, env = "R2_SECRET_ACCESS_KEY" },
    sentry_dsn = { secret = true, env = "SENTRY_DSN" },
    next_public_sentry_dsn = { secret = true, required = false, env = "NEXT_PUBLIC_SENTRY_DSN", doc = "default: SENTRY_DSN" },
    sentry_environment = { default = "production" },
    admin_jwt = { secret = true, required = false, env = "TEZCA_ADMIN_JWT",
      doc = "a Janua JWT of a Tezca admin, for check 7 of M10 (sign in at admin.<domain> once M4-M6 are done)" },
  },
}

local OAUTH_CLIENT = "tezca-admin"
local GITHUB_SECRETS = { "MADFAM_BOT_PAT", "ENCLII_CALLBACK_TOKEN", "NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY" }
local DB_USER = "tezca"
local DEPLOYMENTS = { "tezca-api", "tezca-web", "tezca-admin", "tezca-worker", "tezca-beat", "tezca-redis", "tezca-es" }
local WEEK = 7 * 24 * 3600

-- ---------------------------------------------------------------------------
-- helpers

local function cluster(ctx)
  return k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context, namespace = ctx.params.namespace }
end

local function urls(ctx)
  local p = ctx.params
  return {
    web = p.web_url or ("https://" .. p.domain),
    api = p.api_url or ("https://api." .. p.domain),
    admin = p.admin_url or ("https://admin." .. p.domain),
  }
end

-- A Job name of this run: a resumed run finds its own Job again, a new
-- run (--new) makes new ones.
local function job_name(ctx, base)
  return base .. "-" .. (ctx.run_id:match("%-(%d%d%d%d%d%d%-%x+)$") or "dry-run")
end

local function copy(x)
  if type(x) ~= "table" then return x end
  local out = {}
  for k, v in pairs(x) do out[k] = copy(v) end
  return setmetatable(out, getmetatable(x))
end

-- cluster:secret, except in a dry run before M3 made the namespace: the
-- server would refuse a Secret in a namespace that does not exist yet.
local function ensure_secret(ctx, c, opts)
  if ctx.dry_run and not c:get { kind = "Namespace", name = ctx.params.namespace } then
    ctx:log("dry run: Secret %s would be created in the new namespace %s", opts.name, ctx.params.namespace)
    return nil, "created"
  end
  return c:secret(opts)
end

-- `enclii exec tezca-api -- CMD` as a one-off Job: the tezca-api pod
-- template's first container (image, env, envFrom, volumes) with CMD as its
-- command, without probes and ports, and without the template's labels (a
-- Service must not send traffic to it). A failed Job of an earlier attempt
-- is deleted and run again (rerun_failed).
local function api_job(ctx, c, base, argv, opts)
  opts = opts or {}
  local dep = c:get { api_version = "apps/v1", kind = "Deployment", name = "tezca-api" }
  if not dep and ctx.dry_run then
    ctx:log("dry run: would run %s in a Job from tezca-api's pod template, once ArgoCD has created it", table.concat(argv, " "))
    return { name = job_name(ctx, base), dry_run = true }
  end
  if not dep then
    errors.raise { kind = "deploy", code = "missing", message = string.format(
      "deployment %s/tezca-api not found: ArgoCD (M6) has not synced k8s/production/ yet", ctx.params.namespace) }
  end
  local pod = copy(dep.spec.template.spec)
  local main = copy(pod.containers[1])
  main.command, main.args = argv, nil
  main.livenessProbe, main.readinessProbe, main.startupProbe, main.ports, main.lifecycle = nil, nil, nil, nil, nil
  if ctx.params.image_tag then main.image = ctx.params.api_image .. ":" .. ctx.params.image_tag end
  for _, ref in ipairs(opts.env_from or {}) do
    main.envFrom = main.envFrom or {}
    main.envFrom[#main.envFrom + 1] = ref
  end
  pod.containers = { main }
  pod.initContainers = nil
  pod.restartPolicy = "Never"
  local out = c:run_job {
    name = job_name(ctx, base), timeout = opts.timeout, rerun_failed = true,
    spec = {
      backoffLimit = 0, ttlSecondsAfterFinished = WEEK,
      template = { metadata = { labels = { ["app.kubernetes.io/part-of"] = "tezca", ["app.kubernetes.io/component"] = base } }, spec = pod },
    },
  }
  ctx:log("%s: %s with %s", out.name, out.status or "not run (dry run)", main.image)
  return out
end

-- ---------------------------------------------------------------------------
-- M1-M6: packages, CI secrets, cluster secrets, OAuth client, DNS, ArgoCD

manual "M1" {
  title = "Install @janua/nextjs in admin",
  owner = "Dev",
  instructions = [[
@janua/nextjs is on the MADFAM private npm registry, not on public npm.
1. In apps/admin/.npmrc (or the repository's .npmrc) point the scope at the registry:
     @janua:registry=<MADFAM private registry URL>
     //<registry host>/:_authToken=${NPM_TOKEN}
2. cd apps/admin && npm install @janua/nextjs
3. Commit package.json and the lockfile; the admin build (deploy-admin.yml) must pass.
Then confirm: runbook confirm <run> M1 --note "<commit>"]],
}

manual "M2" {
  title = "Set GitHub secrets",
  owner = "Repo Admin",
  instructions = [[
In github.com/madfam-org/tezca > Settings > Secrets and variables > Actions (or with gh):
  gh secret set MADFAM_BOT_PAT --repo madfam-org/tezca                      # GHCR push + kustomization digest commit
  gh secret set ENCLII_CALLBACK_TOKEN --repo madfam-org/tezca               # CI lifecycle events to the enclii API
  gh secret set NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY --repo madfam-org/tezca   # admin Docker build arg
This step confirms itself once `gh secret list --repo madfam-org/tezca` lists the
three; the run log names the ones still missing. Without gh here, check the
settings page and confirm: runbook confirm <run> M2]],
  verify = function(ctx)
    local repo = ctx.params.github_repo
    local missing = github.missing_secrets(repo, GITHUB_SECRETS)
    if #missing > 0 then
      ctx:log("%s has no Actions secret %s yet", repo, table.concat(missing, ", "))
      return false
    end
    return true
  end,
}

secrets.app_secret "M3" {
  title = "Create K8s tezca-secrets",
  owner = "DevOps",
  doc = [[DJANGO_SECRET_KEY (50 random bytes) and DB_PASSWORD (32) are generated once
per run, base64 like `openssl rand -base64`; a resumed run writes the very same
values. An existing Secret is kept as it is. M3-db gives the `tezca` role on
the shared PostgreSQL cluster this DB_PASSWORD.]],
  name = "tezca-secrets",
  create_namespace = true,
  generate = {
    DJANGO_SECRET_KEY = { once = "django-secret-key", bytes = 50, encoding = "base64" },
    DB_PASSWORD = { once = "db-password", bytes = 32, encoding = "base64" },
  },
  data = function(ctx)
    local p = ctx.params
    return {
      DB_USER = DB_USER,
      DB_HOST = p.db_host,
      JANUA_API_KEY = p.janua_api_key,
      JANUA_PUBLISHABLE_KEY = p.janua_publishable_key,
      JANUA_SECRET_KEY = p.janua_secret_key,
    }
  end,
}

-- The DB_PASSWORD the pods will read: tezca-secrets as the cluster holds
-- it (an existing Secret is kept, so this, not the run's memo, is the truth).
-- nil in a dry run before M3 made it.
local function db_password(ctx)
  -- only this key: DB_USER and DB_HOST stay plain text in the log
  local s = cluster(ctx):get_secret { name = "tezca-secrets", keys = { "DB_PASSWORD" } }
  local pw = s and s.data and s.data.DB_PASSWORD
  if not pw and not ctx.dry_run then
    errors.raise { kind = "deploy", code = "missing", message = string.format(
      "Secret %s/tezca-secrets has no DB_PASSWORD: M3 makes it", ctx.params.namespace) }
  end
  return pw
end

-- tezca's connection to its database, on the server the admin URL names
local function as_tezca(ctx, pw)
  return pg.try_connect(pg.conninfo(ctx.params.pg_admin_url, { user = DB_USER, password = pw, dbname = ctx.params.db_name }),
    { connect_timeout = 10 })
end

step "M3-db" {
  title = "Create the tezca role and database on the shared PostgreSQL",
  owner = "DevOps",
  needs = "M3",
  doc = [[The role `tezca` (LOGIN, password DB_PASSWORD of tezca-secrets, sent to the
server as a SCRAM verifier made here, never in clear) and the database `tezca`
owned by it, closed to other roles (REVOKE ALL FROM PUBLIC). An existing role
only gets its password set, an existing database only its owner. Done when
tezca logs in to its database with the Secret's password and owns it.]],
  verify = function(ctx)
    local pw = db_password(ctx)
    if not pw then return false end
    local db, err = as_tezca(ctx, pw)
    if not db then
      ctx:log("tezca cannot log in to database %s yet: %s", ctx.params.db_name, errors.message(err))
      return false
    end
    local owner = db:value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
    db:close()
    if owner ~= DB_USER then
      ctx:log("database %s is owned by %s, not %s", ctx.params.db_name, tostring(owner), DB_USER)
      return false
    end
    return true
  end,
  run = function(ctx)
    local p = ctx.params
    local pw = db_password(ctx)
    local db <close> = pg.connect(p.pg_admin_url, { connect_timeout = 10 })
    local role, name = db:ident(DB_USER), db:ident(p.db_name)
    local out = { role = DB_USER, database = p.db_name }
    if not pw then
      ctx:log("dry run: role %s would get DB_PASSWORD of tezca-secrets, once M3 has made it", DB_USER)
      return out
    end
    local hashed = db:encrypt_password(DB_USER, pw)
    secret.register(hashed) -- a hash, yet no place for it in the journal either
    local verifier = db:literal(hashed)
    if db:value("SELECT true FROM pg_roles WHERE rolname = $1", DB_USER) then
      db:exec("ALTER ROLE " .. role .. " WITH LOGIN PASSWORD " .. verifier)
      out.role_result = "password set"
    else
      db:exec("CREATE ROLE " .. role .. " LOGIN PASSWORD " .. verifier)
      out.role_result = "created"
    end
    local owner = db:value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", p.db_name)
    if not owner and ctx.dry_run then
      ctx:log("dry run: database %s would be created, owned by %s", p.db_name, DB_USER)
      out.database_result = "created"
    elseif not owner then
      -- CREATE DATABASE cannot run in a transaction: each statement on its own
      db:exec("CREATE DATABASE " .. name .. " OWNER " .. role)
      db:exec("REVOKE ALL ON DATABASE " .. name .. " FROM PUBLIC")
      out.database_result = "created"
    elseif owner ~= DB_USER then
      db:exec("ALTER DATABASE " .. name .. " OWNER TO " .. role)
      out.database_result = "owner was " .. owner
    else
      out.database_result = "exists"
    end
    ctx:log("role %s %s; database %s %s", DB_USER, out.role_result, p.db_name, out.database_result)
    return out
  end,
}

-- Janua's admin API: GET /api/v1/oauth/clients/ID answers 200 or 404,
-- POST /api/v1/oauth/clients registers one (409 when the id is taken).
local function oauth_client(ctx)
  local res = http.get(ctx.params.janua_url .. "/api/v1/oauth/clients/" .. OAUTH_CLIENT, {
    headers = { Authorization = "Bearer " .. ctx.params.janua_admin_token }, status = { 200, 404 }, ca_file = ctx.params.ca_file })
  if res.status == 404 then return nil end
  return res.json
end

local function oauth_spec(ctx)
  return {
    client_id = OAUTH_CLIENT,
    name = "Tezca Admin",
    redirect_uris = { urls(ctx).admin .. "/auth/callback" },
    allowed_scopes = { "openid", "email", "profile" },
    grant_types = { "authorization_code", "refresh_token" },
    is_confidential = false, -- Next.js admin console: a public client with PKCE
  }
end

step "M4" {
  title = "Register Janua OAuth client",
  owner = "DevOps",
  doc = "client_id tezca-admin, redirect https://admin.tezca.mx/auth/callback, scopes openid email profile.",
  verify = function(ctx)
    local have = oauth_client(ctx)
    if not have then return false end
    local want = oauth_spec(ctx)
    if type(have.redirect_uris) == "table" and have.redirect_uris[1] ~= want.redirect_uris[1] then
      ctx:warn("Janua client %s exists with redirect %s, not %s: fix it in Janua's console",
        OAUTH_CLIENT, tostring(have.redirect_uris[1]), want.redirect_uris[1])
    end
    return true
  end,
  run = function(ctx)
    local res = http.post(ctx.params.janua_url .. "/api/v1/oauth/clients", {
      headers = { Authorization = "Bearer " .. ctx.params.janua_admin_token },
      json = oauth_spec(ctx), status = { 201, 409 }, ca_file = ctx.params.ca_file })
    if res.dry_run then return { client_id = OAUTH_CLIENT, result = "created", dry_run = true } end
    return { client_id = OAUTH_CLIENT, result = res.status == 201 and "created" or "exists" }
  end,
}

manual "M5" {
  title = "Configure Cloudflare DNS",
  owner = "DevOps",
  instructions = [[
Cloudflare zone tezca.mx: enclii provisions CNAME records to tunnel.enclii.dev for
tezca.mx, www.tezca.mx, api.tezca.mx and admin.tezca.mx. Check them in the dashboard
(DNS > Records; proxied). This step confirms itself once the four names resolve
(and, for records that are not proxied, once each is a CNAME to the tunnel).]],
  verify = function(ctx)
    local p = ctx.params
    local hosts = {}
    for _, url in pairs(urls(ctx)) do hosts[#hosts + 1] = url:match("^https?://%[?([^/:%]]+)") end
    hosts[#hosts + 1] = p.www_host or ("www." .. p.domain)
    table.sort(hosts)
    local all, seen_hosts = true, {}
    for _, host in ipairs(hosts) do
      if not seen_hosts[host] then
        seen_hosts[host] = true
        local ok = dns.resolves(host, { expect = (not p.dns_proxied) and p.tunnel_host or nil })
        if not ok then all = false end
      end
    end
    if all and p.dns_proxied then
      ctx:log("the names resolve; proxied records hide their CNAME: check in the dashboard that they point at %s", p.tunnel_host)
    end
    return all
  end,
}

manual "M6" {
  title = "Add to ArgoCD root application",
  owner = "DevOps",
  instructions = [[
In the infra repository add tezca to infra/argocd/root-application.yaml:
  an Application "tezca", source path k8s/production/ of madfam-org/tezca,
  destination namespace tezca, automated sync.
Merge it and let ArgoCD sync. This step confirms itself once the Application
exists and the seven Deployments (api, web, admin, worker, beat, redis, es) are in
the namespace.]],
  verify = function(ctx)
    local p = ctx.params
    local c = cluster(ctx)
    local app = c:get { api_version = "argoproj.io/v1alpha1", kind = "Application", name = p.argocd_app, namespace = p.argocd_namespace }
    if not app then
      ctx:log("ArgoCD Application %s/%s does not exist yet", p.argocd_namespace, p.argocd_app)
      return false
    end
    local dest = app.spec and app.spec.destination or {}
    if dest.namespace ~= p.namespace then
      ctx:warn("Application %s deploys to namespace %s, not %s", p.argocd_app, tostring(dest.namespace), p.namespace)
      return false
    end
    local missing = {}
    for _, name in ipairs(DEPLOYMENTS) do
      if not c:get { api_version = "apps/v1", kind = "Deployment", name = name } then missing[#missing + 1] = name end
    end
    if #missing > 0 then
      ctx:log("waiting for ArgoCD to create: %s", table.concat(missing, ", "))
      return false
    end
    return true
  end,
}

-- ---------------------------------------------------------------------------
-- M7-M10: database, static files, search indices, smoke tests

step "M7" {
  title = "Run initial database migration",
  owner = "DevOps",
  needs = { "M3", "M6" },
  doc = [[`python apps/manage.py migrate` in a one-off Job with the API image. Not
retried: a failed migration wants a look first; the same command then runs it again.]],
  timeout = 1800,
  run = function(ctx)
    local out = api_job(ctx, cluster(ctx), "tezca-migrate", { "python", "apps/manage.py", "migrate", "--noinput" }, { timeout = 1800 })
    return { job = out.name }
  end,
}

parallel "after-migrate" {
  step "M8" {
    title = "Collect static files",
    owner = "DevOps",
    needs = "M7",
    doc = "`python apps/manage.py collectstatic --noinput`.",
    timeout = 1800,
    run = function(ctx)
      local out = api_job(ctx, cluster(ctx), "tezca-collectstatic", { "python", "apps/manage.py", "collectstatic", "--noinput" }, { timeout = 1800 })
      return { job = out.name }
    end,
  },
  step "M9" {
    title = "Build Elasticsearch indices",
    owner = "DevOps",
    needs = "M7",
    doc = "`python apps/manage.py index_laws --all --create-indices`: long, retried.",
    retry = { attempts = 3, backoff = "exponential", delay = 60, max_delay = 600 },
    timeout = 4 * 3600,
    run = function(ctx)
      local out = api_job(ctx, cluster(ctx), "tezca-index-laws",
        { "python", "apps/manage.py", "index_laws", "--all", "--create-indices" }, { timeout = 4 * 3600 })
      return { job = out.name }
    end,
  },
}

step "M10" {
  title = "Smoke test all domains",
  owner = "QA",
  needs = { "M8", "M9" },
  doc = [[The guide's Verification Checklist: rows 2-7 as HTTP checks, row 9 as a Job.
Row 1 (Docker builds) is M10-images, row 8 M10-login, row 10 (CI/CD pipeline) M10-ci.]],
  timeout = 1800,
  run = function(ctx)
    local p = ctx.params
    if not p.admin_jwt then
      errors.raise { kind = "usage", message = "M10 needs an admin JWT for check 7: sign in at "
        .. urls(ctx).admin .. " as a Tezca admin and set TEZCA_ADMIN_JWT (or --param admin_jwt=...)" }
    end
    local c = cluster(ctx)
    for _, name in ipairs { "tezca-api", "tezca-web", "tezca-admin" } do
      c:rollout_status { kind = "Deployment", name = name, timeout = 600 }
    end
    local u = urls(ctx)
    local results = smoke.check(ctx, u.api, {
      { name = "2 Web health", url = u.web .. "/api/health", json = { status = "ok" } },
      { name = "3 API health", url = u.api .. "/api/v1/admin/health/", json = { status = "healthy", database = "connected" } },
      { name = "4 Admin health", url = u.admin .. "/api/health", json = { status = "ok" } },
      { name = "5 Public API (no auth)", path = "/api/v1/laws/", status = 200 },
      { name = "6 Admin API (no auth)", path = "/api/v1/admin/metrics/", status = 401 },
      { name = "7 Admin API (valid JWT)", path = "/api/v1/admin/metrics/", status = 200,
        headers = { Authorization = "Bearer " .. p.admin_jwt } },
    })
    local check = api_job(ctx, c, "tezca-check-deploy", { "python", "apps/manage.py", "check", "--deploy" }, { timeout = 900 })
    return { http_checks = #results, django_check = check.name }
  end,
}

github.workflows_pass "M10-images" {
  title = "Docker images build in CI (verification check 1)",
  owner = "QA",
  needs = { "M1", "M2" },
  doc = [[The three Dockerfiles build where it counts: the newest run on main of
deploy-api.yml, deploy-web.yml and deploy-admin.yml succeeded (`gh run list`;
a run in progress is waited for, up to 30 minutes). The admin build needs
M1's package and M2's NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY.]],
  repo = function(ctx) return ctx.params.github_repo end,
  workflows = { "deploy-api.yml", "deploy-web.yml", "deploy-admin.yml" },
  branch = "main",
}

-- the Deployments and the image each runs (worker and beat run the API's)
local IMAGE_OF = {
  { "tezca-api", "api" }, { "tezca-worker", "api" }, { "tezca-beat", "api" },
  { "tezca-web", "web" }, { "tezca-admin", "admin" },
}

-- {repository = digest} of the images main's kustomization.yaml pins
local function pinned_digests(ctx)
  local path = "k8s/production/kustomization.yaml"
  local text = github.file(ctx.params.github_repo, path, "main")
  local ok, k = pcall(yaml.load, text, path)
  if not ok or type(k) ~= "table" then
    errors.raise { kind = "deploy", code = "kustomization", message = string.format(
      "%s on main of %s is not a kustomization: %s", path, ctx.params.github_repo, ok and "not a mapping" or errors.message(k)) }
  end
  local out = {}
  for _, img in ipairs(k.images or {}) do
    if type(img) == "table" and img.digest then out[img.newName or img.name] = img.digest end
  end
  return out
end

-- nil when every Deployment runs what main pins and the Application is
-- synced, else what is not so yet
local function pipeline_lag(ctx, c, want)
  local p = ctx.params
  local app = c:get { api_version = "argoproj.io/v1alpha1", kind = "Application", name = p.argocd_app, namespace = p.argocd_namespace }
  local sync = app and app.status and app.status.sync or {}
  if sync.status ~= "Synced" then
    return string.format("ArgoCD Application %s is %s", p.argocd_app, tostring(sync.status or "not synced yet"))
  end
  for _, pair in ipairs(IMAGE_OF) do
    local dep, repo = pair[1], p.registry .. "/" .. pair[2]
    local d = c:get { api_version = "apps/v1", kind = "Deployment", name = dep }
    local running
    for _, ctr in ipairs(d and d.spec.template.spec.containers or {}) do
      if ctr.image and ctr.image:match("^[^@]+") == repo then running = ctr.image end
    end
    if running ~= want[pair[2]] then
      return string.format("%s runs %s, main pins %s", dep, tostring(running or "no " .. repo .. " image"), want[pair[2]])
    end
  end
  return nil, sync.revision
end

step "M10-ci" {
  title = "CI/CD pipeline: digests committed, ArgoCD synced (verification check 10)",
  owner = "DevOps",
  needs = { "M6", "M10-images" },
  doc = [[The pipeline end to end, as it stands after its newest pass: main's
k8s/production/kustomization.yaml pins a digest for each of the api, web and
admin images (the workflows commit it after pushing), the ArgoCD Application is
Synced, and the five Deployments run exactly those digests. ArgoCD polls every
few minutes: a lag is waited for, up to 15 minutes. The check does not push a
commit; push one touching apps/api/ and run `runbook reset <run> M10-ci` to
see a new pass through.]],
  timeout = 1200,
  run = function(ctx)
    local p = ctx.params
    local digests = pinned_digests(ctx)
    local want = {}
    for _, svc in ipairs { "api", "web", "admin" } do
      local repo = p.registry .. "/" .. svc
      if not digests[repo] then
        errors.raise { kind = "deploy", code = "no-digest", message = string.format(
          "main's k8s/production/kustomization.yaml pins no digest for %s: deploy-%s.yml commits it after pushing the image", repo, svc) }
      end
      want[svc] = repo .. "@" .. digests[repo]
    end
    local c = cluster(ctx)
    local lag, revision = pipeline_lag(ctx, c, want)
    if lag and ctx.dry_run then
      ctx:log("dry run: not waited for: %s", lag)
    elseif lag then
      ctx:log("%s: waiting for ArgoCD", lag)
      revision = select(2, wait(function()
        local l, rev = pipeline_lag(ctx, c, want)
        if l then return false, l end
        return true, rev
      end, { timeout = 900, interval = 10, what = "ArgoCD to run the digests main pins" }))
    end
    return { api = want.api, web = want.web, admin = want.admin, revision = revision }
  end,
}

manual "M10-login" {
  title = "Admin login flow (verification check 8)",
  owner = "QA",
  needs = "M10",
  instructions = [[
In a private browser window open https://admin.tezca.mx: it must redirect to /sign-in;
sign in with a Janua admin account; the dashboard must load.
Then confirm: runbook confirm <run> M10-login --note "<who, browser>"]],
}

-- ---------------------------------------------------------------------------
-- M11-M14: object storage and error tracking

parallel "secrets" {
  step "M11" {
    title = "Create tezca-r2-credentials K8s Secret",
    owner = "DevOps",
    run = function(ctx)
      local p = ctx.params
      local _, result = ensure_secret(ctx, cluster(ctx), {
        name = "tezca-r2-credentials",
        data = {
          R2_ACCESS_KEY_ID = p.r2_access_key_id,
          R2_SECRET_ACCESS_KEY = p.r2_secret_access_key,
          R2_ENDPOINT_URL = p.r2_endpoint,
          R2_BUCKET_NAME = p.r2_bucket,
          STORAGE_BACKEND = "r2",
        },
        if_exists = "merge",
      })
      return { result = result }
    end,
  },
  step "M12" {
    title = "Create tezca-sentry K8s Secret",
    owner = "DevOps",
    run = function(ctx)
      local p = ctx.params
      local _, result = ensure_secret(ctx, cluster(ctx), {
        name = "tezca-sentry",
        data = {
          SENTRY_DSN = p.sentry_dsn,
          SENTRY_ENVIRONMENT = p.sentry_environment,
          NEXT_PUBLIC_SENTRY_DSN = p.next_public_sentry_dsn or p.sentry_dsn,
        },
        if_exists = "merge",
      })
      return { result = result }
    end,
  },
}

-- the Deployments whose pods read R2's and Sentry's variables
local RESTART = { "tezca-api", "tezca-worker", "tezca-beat", "tezca-web", "tezca-admin" }

step "M12-restart" {
  title = "Restart the pods so they see the R2 and Sentry variables",
  owner = "DevOps",
  needs = { "M6", "M11", "M12" },
  doc = [[A pod reads its environment when it starts: tezca-api, -worker, -beat, -web and
-admin are restarted (`kubectl rollout restart`) and waited for, unless both
Secrets were already as wanted.]],
  timeout = 1800,
  run = function(ctx)
    local o = ctx.outputs
    if o.M11.result == "unchanged" and o.M12.result == "unchanged" then
      ctx:log("tezca-r2-credentials and tezca-sentry were already as wanted: no restart")
      return { restarted = {} }
    end
    local c = cluster(ctx)
    local restarted = {}
    for _, name in ipairs(RESTART) do
      if c:get { api_version = "apps/v1", kind = "Deployment", name = name } then
        c:rollout_restart { kind = "Deployment", name = name, wait = true, timeout = 600 }
        restarted[#restarted + 1] = name
      elseif not ctx.dry_run then
        ctx:warn("deployment %s/%s not found: not restarted", ctx.params.namespace, name)
      end
    end
    return { restarted = restarted }
  end,
}

local function r2(ctx)
  local p = ctx.params
  return s3.connect { endpoint = p.r2_endpoint, region = p.r2_region,
    access_key = p.r2_access_key_id, secret_key = p.r2_secret_access_key, ca_file = p.ca_file }
end

step "M13" {
  title = "Create tezca-documents R2 bucket",
  owner = "DevOps",
  doc = [[On the existing Cloudflare R2 account (the one holding the PostgreSQL backups).
Creating it needs a token with Admin Read & Write; with an object-only token,
create it in the dashboard (R2 > Create bucket) and run again: the check sees it.]],
  verify = function(ctx)
    local store <close> = r2(ctx)
    return store:bucket_exists(ctx.params.r2_bucket)
  end,
  run = function(ctx)
    local store <close> = r2(ctx)
    return { bucket = ctx.params.r2_bucket, result = store:ensure_bucket(ctx.params.r2_bucket) }
  end,
}

step "M14-dry" {
  title = "Dry-run the R2 data migration",
  owner = "DevOps",
  needs = { "M11", "M13" },
  doc = "`scripts/migrate_to_r2.py --dry-run` as a Job: what would move, before anything does.",
  timeout = 3600,
  run = function(ctx)
    local c = cluster(ctx)
    local dry = api_job(ctx, c, "tezca-migrate-to-r2-dry-run", { "python", "scripts/migrate_to_r2.py", "--dry-run" },
      { env_from = { { secretRef = { name = "tezca-r2-credentials" } } }, timeout = 3600 })
    return { dry_run_job = dry.name }
  end,
}

manual "M14-approve" {
  title = "Approve the R2 data migration after its dry run",
  owner = "DevOps",
  needs = "M14-dry",
  instructions = [[
Read what the dry run would move, in the run log:

    runbook log <run> --step M14-dry

When the list of files and their count are what you expect, approve:

    runbook confirm <run> M14-approve --note "<what you checked>"

then run the same command again to migrate for real.]],
}

step "M14" {
  title = "Run R2 data migration",
  owner = "DevOps",
  needs = { "M14-approve" },
  doc = "`scripts/migrate_to_r2.py` without `--dry-run`, once the dry run was approved.",
  timeout = 3 * 3600,
  run = function(ctx)
    local c = cluster(ctx)
    local real = api_job(ctx, c, "tezca-migrate-to-r2", { "python", "scripts/migrate_to_r2.py" },
      { env_from = { { secretRef = { name = "tezca-r2-credentials" } } }, timeout = 3 * 3600 })
    return { dry_run_job = ctx.outputs["M14-dry"].dry_run_job, job = real.name }
  end,
}
