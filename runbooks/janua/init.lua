-- What Janua's two runbooks share: janua-production.lua (the setup, once)
-- and janua-rollout.lua (each release) check the Deployment the same way,
-- back the database up the same way and run the migrations in the same
-- Job. The cluster is the runbook's `kubeconfig`, `context` and
-- `namespace` params; the database and the bucket are its `database_url`
-- and `backup_*` params.
local k8s = require "runbook.k8s"
local pg = require "runbook.pg"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local json = require "runbook.json"
local errors = require "runbook.errors"

local M = {}

M.SECRET, M.REGCRED = "janua-secrets", "regcred"
M.DOCKERCONFIG = "kubernetes.io/dockerconfigjson"

function M.cluster(ctx)
  return k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context, namespace = ctx.params.namespace }
end

function M.bucket(ctx)
  local p = ctx.params
  return s3.connect { endpoint = p.backup_endpoint, region = p.backup_region,
    access_key = p.access_key, secret_key = p.secret_key, ca_file = p.ca_file }
end

--- A time stamp chosen once per step (ctx:once): a resumed step names the same objects.
function M.stamp(ctx)
  return ctx:once("stamp", function() return os.date("!%Y%m%dT%H%M%SZ") end)
end

function M.fail(code, fmt, ...)
  errors.raise { kind = "verify", code = code, message = string.format(fmt, ...) }
end

--- What is wrong with regcred as stored (nil: nothing): it must be of type
--- kubernetes.io/dockerconfigjson and hold credentials of `registry_username`
--- for `registry`.
function M.regcred_problem(ctx, c)
  local s = c:get_secret { name = M.REGCRED }
  if not s then return "Secret " .. M.REGCRED .. " does not exist" end
  if s.type ~= M.DOCKERCONFIG then
    return string.format("Secret %s has type %s, not %s", M.REGCRED, tostring(s.type), M.DOCKERCONFIG)
  end
  local ok, cfg = pcall(json.decode, secret.reveal(s.data[".dockerconfigjson"] or ""))
  local entry = ok and type(cfg) == "table" and cfg.auths and cfg.auths[ctx.params.registry]
  if not entry then return string.format("Secret %s holds no credentials for %s", M.REGCRED, ctx.params.registry) end
  if entry.username ~= ctx.params.registry_username then
    return string.format("Secret %s holds the credentials of another user for %s", M.REGCRED, ctx.params.registry)
  end
end

-- Every secretKeyRef of the pod template: {name=, key=, env=, container=}.
function M.secret_refs(d)
  local out = {}
  for _, ct in ipairs(d.spec.template.spec.containers or {}) do
    for _, e in ipairs(ct.env or {}) do
      local ref = e.valueFrom and e.valueFrom.secretKeyRef
      if ref then out[#out + 1] = { name = ref.name, key = ref.key, env = e.name, container = ct.name } end
    end
  end
  return out
end

--- J2's promise (every replica serves until its replacement is ready)
--- holds only for a rolling update with maxUnavailable 0: the sentence
--- saying why the Deployment d breaks it, or nil.
function M.strategy_problem(d)
  local strategy = d.spec.strategy or {}
  local max = strategy.rollingUpdate and strategy.rollingUpdate.maxUnavailable
  if (strategy.type or "RollingUpdate") ~= "RollingUpdate" then
    return string.format("deployment %s has strategy %s, which stops every replica before the new ones start: "
      .. "a zero-downtime rollout needs RollingUpdate with maxUnavailable: 0", d.metadata.name, tostring(strategy.type))
  elseif not (max == 0 or max == "0" or max == "0%") then
    return string.format("deployment %s has strategy RollingUpdate with maxUnavailable %s: "
      .. "a zero-downtime rollout needs RollingUpdate with maxUnavailable: 0", d.metadata.name,
      tostring(max == nil and "25% (the default)" or max))
  end
end

--- What could make a rollout of the `deployment` param take replicas down
--- or leave new pods unable to start (a list of sentences; empty: none),
--- and the Deployment. opts.regcred: the Deployment must pull with regcred
--- and regcred must hold the registry's credentials (the setup); otherwise
--- every pull Secret it names must exist (a release).
function M.configuration_problems(ctx, c, opts)
  opts = opts or {}
  local p = ctx.params
  local d = c:get { api_version = "apps/v1", kind = "Deployment", name = p.deployment }
  if not d then
    return { string.format("deployment %s/%s not found (apply the guide's k8s/deployment.yaml first)", p.namespace, p.deployment) }
  end
  local problems = {}
  problems[#problems + 1] = M.strategy_problem(d)
  local pulls = d.spec.template.spec.imagePullSecrets or {}
  if opts.regcred then
    local named = false
    for _, s in ipairs(pulls) do named = named or s.name == M.REGCRED end
    if not named then
      problems[#problems + 1] = string.format("deployment %s does not pull with imagePullSecrets %s", p.deployment, M.REGCRED)
    end
    problems[#problems + 1] = M.regcred_problem(ctx, c)
  else
    for _, s in ipairs(pulls) do
      if not c:get { kind = "Secret", name = s.name } then
        problems[#problems + 1] = string.format("deployment %s pulls with imagePullSecrets %s, which does not exist", p.deployment, s.name)
      end
    end
  end
  local held = {}
  for _, ref in ipairs(M.secret_refs(d)) do
    if held[ref.name] == nil then
      local s = c:get_secret { name = ref.name }
      held[ref.name] = s and s.data or false
    end
    if not held[ref.name] then
      problems[#problems + 1] = string.format("%s reads %s from Secret %s, which does not exist", ref.container, ref.env, ref.name)
    elseif held[ref.name][ref.key] == nil then
      problems[#problems + 1] = string.format("%s reads %s from key %s of Secret %s, which has no such key",
        ref.container, ref.env, ref.key, ref.name)
    end
  end
  return problems, d
end

--- `pg_dump -Fc` of database_url to s3://<backup_bucket>/<backup_prefix>/<what>-<time>.dump,
--- verified (pg_restore --list, sha256), then retention (keep_days). Returns the step's outputs.
function M.backup(ctx, what)
  local p = ctx.params
  local client <close> = M.bucket(ctx)
  client:ensure_bucket(p.backup_bucket)
  local store = client:store { bucket = p.backup_bucket, prefix = p.backup_prefix }
  local name = what .. "-" .. M.stamp(ctx) .. ".dump"
  local b = pg.backup { url = p.database_url, store = store, name = name }
  if ctx.dry_run then return { name = name, dry_run = true } end
  local info = pg.verify_backup { store = store, name = name, sha256 = b.sha256 }
  local kept = pg.retention { store = store, keep_days = p.keep_days }
  return { name = name, location = b.location, size = b.size, sha256 = b.sha256, tables = info.tables,
    deleted = kept.deleted, kept = kept.kept }
end

--- The image of the `container` param in the Deployment d.
function M.image_of(ctx, d)
  for _, ct in ipairs(d and d.spec.template.spec.containers or {}) do
    if ct.name == ctx.params.container then return ct.image end
  end
  M.fail("missing", "deployment %s has no container %q", ctx.params.deployment, ctx.params.container)
end

local function words(s)
  local out = {}
  for w in tostring(s):gmatch("%S+") do out[#out + 1] = w end
  return out
end

--- Runs `migrate_command` in a one-off Job janua-migrate-<HHMMSS>-<hex> (after the run) with image,
--- DATABASE_URL from janua-secrets and the Deployment's pull Secrets; a
--- failed Job raises (and is made anew by the next attempt). Returns the
--- step's outputs.
function M.migrate(ctx, c, image, pulls)
  -- the run's own name (a resumed run follows its Job; two runs never share one)
  local name = "janua-migrate-" .. (ctx.run_id:match("%-(%d%d%d%d%d%d%-%x+)$") or "dry-run"):lower()
  local job = { apiVersion = "batch/v1", kind = "Job",
    metadata = { name = name, labels = { app = "janua-api", ["app.kubernetes.io/component"] = "migrate" } },
    spec = { backoffLimit = 0, template = { metadata = { labels = { app = "janua-migrate" } }, spec = {
      restartPolicy = "Never", imagePullSecrets = pulls,
      containers = { { name = "migrate", image = image, command = words(ctx.params.migrate_command), env = {
        { name = "ENVIRONMENT", value = "production" },
        { name = "DATABASE_URL", valueFrom = { secretKeyRef = { name = M.SECRET, key = "database-url" } } } } } } } } } }
  local out = c:run_job { name = name, spec = job, timeout = 1800, rerun_failed = true }
  return { job = name, image = image, status = out.status, logs_tail = out.logs_tail }
end

return M
