-- Bow-Mark's first-time deployment on DigitalOcean Kubernetes: the seven
-- steps of the "First-Time Deployment Runbook" in its production guide,
-- with the Kubernetes Secrets it lists, the PostgreSQL and RabbitMQ
-- StatefulSets from the repository's k8s/ (the `manifests` param), the
-- parallel backfills, the final verification, and the guide's operations:
-- a restore from Spaces through `kubectl port-forward`, and a PostgreSQL
-- password rotation (ALTER USER, the Secret, the restarts) whose rollback
-- is `kubectl rollout undo`. Helpers: runbooks/bowmark/init.lua.
--
--   export BOWMARK_PAVING_MONGO_URI=... BOWMARK_CONCRETE_MONGO_URI=... BOWMARK_JWT_SECRET=... \
--          SPACES_KEY=... SPACES_SECRET=... SMTP_PASSWORD=... MEILISEARCH_API_KEY=...
--   cd bow-mark && runbook exec runbooks/bowmark-first-deploy.lua --values bowmark-prod.yaml
local k8s = require "runbook.k8s"
local s3 = require "runbook.s3"
local pg = require "runbook.pg"
local sh = require "runbook.sh"
local secret = require "runbook.secret"
local json = require "runbook.json"
local errors = require "runbook.errors"
local bm = require "bowmark"
local secrets = require "lib.secrets"

runbook "bowmark-first-deploy" {
  description = "First-time deployment of Bow-Mark (paving and concrete) on DOKS",
  owner = "DevOps",
  doc = [[
Passwords are generated once (`openssl rand -hex 32`: hex, so connection
strings need no escaping), saved to 1Password with `op` before any Secret
holds them, and kept in the run's journal, sealed; the other credentials
come from params (the environment). Where the guide runs `kubectl exec`
into postgres-0 or rabbitmq-0, B4 runs a one-off Job with the same client
against the Service; where it port-forwards (migration status, restore,
rotation), the runbook forwards the postgres Service's port itself.
B8 and B9 run only when their params ask for them.]],
  params = {
    namespace = { default = "default", doc = "the guide deploys to the default namespace" },
    kubeconfig = { required = false, doc = "kubeconfig path (default: $KUBECONFIG; doctl kubernetes cluster kubeconfig save ...)" },
    context = { required = false },
    manifests = { default = "k8s",
      doc = "the repository's k8s/ folder (relative to the working directory): B3 applies its postgres-statefulset.yaml and rabbitmq-statefulset.yaml" },
    paving_mongo_uri = { secret = true, env = "BOWMARK_PAVING_MONGO_URI", doc = "Atlas connection string of the paving database (`paving` Secret)" },
    concrete_mongo_uri = { secret = true, env = "BOWMARK_CONCRETE_MONGO_URI", doc = "Atlas connection string of the concrete database" },
    jwt_secret = { secret = true, env = "BOWMARK_JWT_SECRET", doc = "`general` Secret" },
    spaces_name = { env = "SPACES_NAME", doc = "the Spaces bucket (backups)" },
    spaces_region = { env = "SPACES_REGION", doc = "e.g. nyc3" },
    spaces_endpoint = { required = false, doc = "default https://<spaces_region>.digitaloceanspaces.com" },
    spaces_key = { secret = true, env = "SPACES_KEY" },
    spaces_secret = { secret = true, env = "SPACES_SECRET" },
    email_from = { env = "BOWMARK_EMAIL_FROM" },
    smtp_user = { env = "SMTP_USER" },
    smtp_password = { secret = true, env = "SMTP_PASSWORD" },
    smtp_host = { env = "SMTP_HOST" },
    smtp_port = { default = "587" },
    meili_host = { env = "MEILISEARCH_HOST" },
    meili_api_key = { secret = true, env = "MEILISEARCH_API_KEY" },
    vault = { default = "Private", doc = "the 1Password vault of the item \"Bow-Mark Production K8s\"" },
    backfill_timeout = { default = 3600, doc = "seconds per backfill (the guide: about 20 minutes each)" },
    restore_from = { required = false,
      doc = "B8: the key in the Space of a pg_dump -Fc to restore (pg-backups/<db_name>/<dump_file>.pgdump); unset, B8 restores nothing" },
    restore_database = { default = "bowmark_reports_paving", choices = { "bowmark_reports_paving", "bowmark_reports_concrete" },
      doc = "B8: the database restored into" },
    work_dir = { default = "bowmark-restore", doc = "B8: a local folder for the downloaded dump (the guide's /tmp/restore.pgdump)" },
    rotate_postgres_password = { default = false,
      doc = "B9: rotate the PostgreSQL password (ALTER USER, the Secret, restart the six Deployments using it)" },
  },
}

local DB_PAVING, DB_CONCRETE = "bowmark_reports_paving", "bowmark_reports_concrete"
local DEPLOYMENTS = {
  "server-deployment", "server-concrete-deployment", "worker-deployment", "worker-concrete-deployment",
  "consumer-deployment", "consumer-concrete-deployment", "client-deployment", "client-concrete-deployment",
}
-- the postgres Secret's keys that are not secret
local PG_PLAIN = { user = "bowmark", host = "postgres", port = "5432", dbPaving = DB_PAVING, dbConcrete = DB_CONCRETE }
local DEFAULT_POOL = { ["doks.digitalocean.com/node-pool"] = "default-pool" }

local function cluster(ctx)
  return k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context, namespace = ctx.params.namespace }
end

-- Job names of this run: a resumed run finds its Jobs again, another run makes its own
local function job_name(ctx, base)
  return base .. "-" .. (ctx.run_id:match("%-(%d%d%d%d%d%d%-%x+)$") or "dry-run")
end

local function from(name, key) return { secret = name, key = key } end

-- The lines of a Job's output, for checks.
local function lines(outcome)
  local out = {}
  for l in (outcome.logs_tail or ""):gmatch("[^\n]+") do out[l:match("^%s*(.-)%s*$")] = true end
  return out
end

local function missing(seen, wanted)
  local out = {}
  for _, w in ipairs(wanted) do if not seen[w] then out[#out + 1] = w end end
  return out
end

-- ---------------------------------------------------------------------------

secrets.generate "B1" {
  title = "Generate and Store Passwords",
  owner = "DevOps",
  doc = "PG_PASS and RMQ_PASS: `openssl rand -hex 32` each, generated once for the run.",
  values = {
    postgres_password = { once = "postgres-password", bytes = 32, encoding = "hex" },
    rabbitmq_password = { once = "rabbitmq-password", bytes = 32, encoding = "hex" },
  },
}

step "B1-vault" {
  title = "Save the passwords to 1Password",
  owner = "DevOps",
  needs = "B1",
  doc = [[The guide's "Save to 1Password before proceeding", before any Secret holds
the passwords: an item "Bow-Mark Production K8s" of category login in the
`vault`, with the fields postgres-password and rabbitmq-password (concealed),
which B2's `op read "op://<vault>/Bow-Mark Production K8s/postgres-password"`
finds. The guide passes both passwords as assignment statements; they would
be in the process list and the shell history, so the step hands op the same
fields as an item JSON template on its standard input (what 1Password advises
for sensitive values):
`op item create --category login --title "Bow-Mark Production K8s" --vault <vault> --template /dev/stdin`.
op must be signed in (`eval $(op signin)`). The item is created once per run
and tagged `runbook/<run id>`: a resumed run first lists the vault's items of
that tag (`op item list --tags`), so even a run killed after op made the item
and before its id was recorded makes no second one.]],
  run = function(ctx)
    local pw = ctx.outputs.B1
    local item = ctx:once("vault-item", function()
      local template = secret.wrap(json.encode {
        title = "Bow-Mark Production K8s", category = "LOGIN",
        fields = {
          { id = "postgres-password", label = "postgres-password", type = "CONCEALED", value = secret.reveal(pw.postgres_password) },
          { id = "rabbitmq-password", label = "rabbitmq-password", type = "CONCEALED", value = secret.reveal(pw.rabbitmq_password) },
        },
      })
      local vault, tag = ctx.params.vault, "runbook/" .. ctx.run_id
      if not ctx.dry_run then
        -- an earlier attempt of this run may have made it, its id not recorded
        local l = sh.run({ "op", "item", "list", "--vault", vault, "--tags", tag, "--format", "json" }, { log = false })
        local ok, found = pcall(json.decode, l.stdout)
        if not ok or type(found) ~= "table" then
          errors.raise { kind = "command", code = "op", message = "op item list answered no JSON list: " .. l.stdout:sub(1, 200) }
        end
        if found[1] and found[1].id then return found[1].id end
      end
      local r = sh.run({ "op", "item", "create", "--category", "login", "--title", "Bow-Mark Production K8s",
        "--vault", vault, "--tags", tag, "--template", "/dev/stdin", "--format", "json" }, { stdin = template, log = false })
      if ctx.dry_run then return nil end
      local id = r.stdout:match('"id"%s*:%s*"([^"]+)"')
      if not id then
        errors.raise { kind = "command", code = "op", message = "op item create answered no item id: " .. r.stdout:sub(1, 200) }
      end
      return id
    end)
    return { item = item, title = "Bow-Mark Production K8s", vault = ctx.params.vault }
  end,
}

step "B2" {
  title = "Create All Secrets",
  owner = "DevOps",
  needs = "B1-vault",
  doc = "postgres, rabbitmq, paving, concrete, general, spaces, email, search. Existing Secrets are kept.",
  run = function(ctx)
    local p, pw = ctx.params, ctx.outputs.B1
    local c = cluster(ctx)
    local results = {}
    local function ensure(name, data)
      local _, result = c:secret { name = name, data = data, if_exists = "keep" }
      results[name] = result
    end
    local postgres = { password = pw.postgres_password }
    for k, v in pairs(PG_PLAIN) do postgres[k] = v end
    ensure("postgres", postgres)
    ensure("rabbitmq", { user = "bowmark", password = pw.rabbitmq_password, host = "rabbitmq", port = "5672",
      vhost = "bowmark", vhostConcrete = "bowmark-concrete" })
    ensure("paving", { mongoURI = p.paving_mongo_uri })
    ensure("concrete", { mongoURI = p.concrete_mongo_uri })
    ensure("general", { jwtSecret = p.jwt_secret })
    ensure("spaces", { name = p.spaces_name, region = p.spaces_region, key = p.spaces_key, secret = p.spaces_secret })
    ensure("email", { email = p.email_from, username = p.smtp_user, password = p.smtp_password, host = p.smtp_host, port = p.smtp_port })
    ensure("search", { host = p.meili_host, apiKey = p.meili_api_key })
    return results
  end,
}

step "B3" {
  title = "Deploy Infrastructure",
  owner = "DevOps",
  needs = "B2",
  doc = [[`kubectl apply -f k8s/postgres-statefulset.yaml -f k8s/rabbitmq-statefulset.yaml`
from the repository's k8s/ (the `manifests` param; the StatefulSets with
their ConfigMaps and headless Services), then waits for the PVCs to be
bound and both StatefulSets to be rolled out. The rest of k8s/ (the
Deployments, the pg-backup CronJob) is CI's, at B5.]],
  timeout = 1200,
  run = function(ctx)
    local c = cluster(ctx)
    local dir = ctx.params.manifests:gsub("/+$", "")
    local paths = { dir .. "/postgres-statefulset.yaml", dir .. "/rabbitmq-statefulset.yaml" }
    for _, path in ipairs(paths) do
      local f = io.open(path, "r")
      if not f then
        errors.raise { kind = "config", code = "manifest", message = path .. " does not exist: run from the repository's root,"
          .. " or set the manifests param to its k8s/ folder" }
      end
      f:close()
    end
    local report = c:apply(paths)
    for _, pvc in ipairs { "data-postgres-0", "data-rabbitmq-0" } do
      c:wait { kind = "PersistentVolumeClaim", name = pvc, jsonpath = "{.status.phase}", value = "Bound", timeout = 600 }
    end
    for _, name in ipairs { "postgres", "rabbitmq" } do
      c:rollout_status { kind = "StatefulSet", name = name, timeout = 600 }
    end
    return { files = paths, created = report.created, configured = report.configured, unchanged = report.unchanged }
  end,
}

step "B3-spaces" {
  title = "Spaces lifecycle rule on pg-backups/",
  owner = "DevOps",
  needs = "B2",
  doc = [[The guide's safety net behind the CronJob's 30-day cleanup: the Space deletes
objects under pg-backups/ after 35 days itself, and aborts uploads left
unfinished for a day. The Space itself is made in the DigitalOcean control panel.]],
  run = function(ctx)
    local p = ctx.params
    local spaces <close> = s3.connect { endpoint = p.spaces_endpoint or ("https://" .. p.spaces_region .. ".digitaloceanspaces.com"),
      region = p.spaces_region, access_key = p.spaces_key, secret_key = p.spaces_secret }
    if not spaces:bucket_exists(p.spaces_name) then
      errors.raise { kind = "verify", code = "no-space", message = "the Space " .. p.spaces_name .. " does not exist in "
        .. p.spaces_region .. " (or these keys cannot see it): create it in the DigitalOcean control panel" }
    end
    local result = spaces:ensure_lifecycle { bucket = p.spaces_name,
      rules = { { id = "pg-backups-35d", prefix = "pg-backups/", expire_days = 35, abort_incomplete_days = 1 } } }
    return { space = p.spaces_name, lifecycle = result }
  end,
}

step "B4" {
  title = "Verify Infrastructure",
  owner = "DevOps",
  needs = "B3",
  doc = [[PostgreSQL must list bowmark_reports_paving and bowmark_reports_concrete,
RabbitMQ the vhosts bowmark and bowmark-concrete.]],
  timeout = 900,
  run = function(ctx)
    local c = cluster(ctx)
    local pg = c:run_job {
      name = job_name(ctx, "verify-postgres"), image = "postgres:16", delete = true, rerun_failed = true, timeout = 600,
      command = { "psql", "-At", "-c", "SELECT datname FROM pg_database WHERE datname LIKE 'bowmark_reports_%' ORDER BY 1" },
      env = { PGHOST = from("postgres", "host"), PGPORT = from("postgres", "port"), PGUSER = from("postgres", "user"),
        PGPASSWORD = from("postgres", "password"), PGDATABASE = from("postgres", "dbPaving") },
      node_selector = DEFAULT_POOL,
    }
    local rmq = c:run_job {
      name = job_name(ctx, "verify-rabbitmq"), image = "rabbitmq:3-management", delete = true, rerun_failed = true, timeout = 600,
      command = { "sh", "-c", 'rabbitmqadmin -H "$RABBITMQ_HOST" -u "$RABBITMQ_USER" -p "$RABBITMQ_PASSWORD" -f tsv -q list vhosts name' },
      env = { RABBITMQ_HOST = from("rabbitmq", "host"), RABBITMQ_USER = from("rabbitmq", "user"), RABBITMQ_PASSWORD = from("rabbitmq", "password") },
      node_selector = DEFAULT_POOL,
    }
    if ctx.dry_run then return { dry_run = true } end
    local problems = {}
    local dbs = missing(lines(pg), { DB_PAVING, DB_CONCRETE })
    if #dbs > 0 then problems[#problems + 1] = "PostgreSQL lacks database(s) " .. table.concat(dbs, ", ") end
    local vhosts = missing(lines(rmq), { "bowmark", "bowmark-concrete" })
    if #vhosts > 0 then problems[#problems + 1] = "RabbitMQ lacks vhost(s) " .. table.concat(vhosts, ", ") end
    if #problems > 0 then
      errors.raise { kind = "verify", code = "infrastructure", message = table.concat(problems, "; ")
        .. " (see the Troubleshooting section of the guide: kubectl logs postgres-0 / rabbitmq-0)" }
    end
    return { databases = { DB_PAVING, DB_CONCRETE }, vhosts = { "bowmark", "bowmark-concrete" } }
  end,
}

manual "B5" {
  title = "Merge to Master",
  owner = "DevOps",
  needs = "B4",
  instructions = [[
Merge the release to master. CircleCI builds the three images, creates the
pg-migrations ConfigMap from db/migrations/ and applies k8s/ (envsubst on the
deployment files only). This step confirms itself once the pg-migrations
ConfigMap, the pg-backup CronJob and the eight Deployments exist.]],
  verify = function(ctx)
    local c = cluster(ctx)
    local absent = {}
    if not c:get { kind = "ConfigMap", name = "pg-migrations" } then absent[#absent + 1] = "ConfigMap pg-migrations" end
    if not c:get { api_version = "batch/v1", kind = "CronJob", name = "pg-backup" } then absent[#absent + 1] = "CronJob pg-backup" end
    for _, name in ipairs(DEPLOYMENTS) do
      if not c:get { api_version = "apps/v1", kind = "Deployment", name = name } then absent[#absent + 1] = name end
    end
    if #absent > 0 then ctx:log("not deployed yet: %s", table.concat(absent, ", ")) end
    return #absent == 0
  end,
}

-- kubectl run backfill-<app> --restart=Never --image=$IMAGE --overrides=...,
-- once the app's consumer is rolled out and dbmate's ledger in its database
-- (read through the forwarded postgres port) holds every migration of the
-- pg-migrations ConfigMap; then the guide's `kubectl delete pod backfill-<app>`.
local function backfill(ctx, app, consumer, mongo_secret, db)
  local c = cluster(ctx)
  c:rollout_status { kind = "Deployment", name = consumer, timeout = 900 }
  local server = c:get { api_version = "apps/v1", kind = "Deployment", name = "server-deployment" }
  if not server and ctx.dry_run then
    ctx:log("dry run: would check dbmate's migrations and run the %s backfill with server-deployment's image, "
      .. "once CI has deployed it", app)
    return { dry_run = true }
  end
  -- dbmate status, for real: the consumer's init container ran `dbmate up`
  local versions = bm.migration_versions(c:get { kind = "ConfigMap", name = "pg-migrations" })
  if #versions == 0 then
    errors.raise { kind = "verify", code = "migrations",
      message = "the pg-migrations ConfigMap holds no migration (VERSION_name.sql): CI builds it from db/migrations/" }
  end
  local password = bm.password(c, PG_PLAIN)
  local status = bm.forward(c, function(port) return bm.migration_status(port, "bowmark", password, db, versions) end)
  if #status.pending > 0 then
    errors.raise { kind = "verify", code = "migrations", message = string.format(
      "%s: dbmate has not applied %s of the pg-migrations ConfigMap (kubectl logs deployment/%s -c migrate)",
      db, table.concat(status.pending, ", "), consumer) }
  end
  ctx:log("%s: dbmate's schema_migrations holds all %d migration(s) of pg-migrations", db, #versions)
  local image = server.spec.template.spec.containers[1].image
  local name = job_name(ctx, "backfill-" .. app)
  -- the result is recorded before the Job is deleted: a resumed step finds
  -- it here rather than running the backfill a second time
  local result = ctx:once(name, function()
    local out = c:run_job {
      name = name, image = image, container = "backfill-" .. app,
      command = { "node", "dist/scripts/backfill-postgres.js" },
      env = {
        NODE_ENV = "production",
        MONGO_URI = from(mongo_secret, "mongoURI"),
        POSTGRES_HOST = from("postgres", "host"), POSTGRES_PORT = from("postgres", "port"),
        POSTGRES_USER = from("postgres", "user"), POSTGRES_PASSWORD = from("postgres", "password"),
        POSTGRES_DB = db,
      },
      node_selector = DEFAULT_POOL, labels = { component = "backfill" },
      timeout = ctx.params.backfill_timeout, rerun_failed = true,
    }
    return { job = out.name, status = out.status, succeeded = out.succeeded, pods = #out.pods, logs_tail = out.logs_tail }
  end)
  -- clean up when complete: the Job, and its pods by the garbage collector
  local job = c:get { api_version = "batch/v1", kind = "Job", name = name }
  local pods = {}
  if job then
    for _, pod in ipairs(c:list { kind = "Pod", label_selector = job.spec.selector.matchLabels }) do pods[#pods + 1] = pod.metadata.name end
  end
  c:delete({ api_version = "batch/v1", kind = "Job", name = name }, { propagation = "Background", wait = true, timeout = 300 })
  for _, pod in ipairs(pods) do c:wait { kind = "Pod", name = pod, deleted = true, timeout = 300 } end
  if c:get { api_version = "batch/v1", kind = "Job", name = name } then
    errors.raise { kind = "verify", code = "cleanup", message = "job " .. name .. " is still there after its deletion" }
  end
  return { job = name, image = image, pods = result.pods, status = result.status, logs_tail = result.logs_tail,
    migrations = #versions, deleted = true }
end

local BACKFILL_DOC = [[Waits for the app's consumer to be rolled out, then reads dbmate's
schema_migrations in its database through the forwarded postgres port:
every migration of the pg-migrations ConfigMap must be applied (the
consumer's init container runs `dbmate up`). Then the guide's `kubectl run
backfill-<app>` as a Job with server-deployment's image; its result is
recorded, and the Job is deleted (propagation Background, so its pods go
with it) and checked gone: the guide's `kubectl delete pod`.]]

parallel "backfill" {
  step "B6-paving" {
    title = "Run Initial Backfill (paving)",
    owner = "DevOps",
    doc = BACKFILL_DOC,
    needs = "B5",
    run = function(ctx) return backfill(ctx, "paving", "consumer-deployment", "paving", DB_PAVING) end,
  },
  step "B6-concrete" {
    title = "Run Initial Backfill (concrete)",
    owner = "DevOps",
    doc = BACKFILL_DOC,
    needs = "B5",
    run = function(ctx) return backfill(ctx, "concrete", "consumer-concrete-deployment", "concrete", DB_CONCRETE) end,
  },
}

step "B7" {
  title = "Verify Everything",
  owner = "DevOps",
  needs = { "B6-paving", "B6-concrete" },
  doc = [[All pods running; the consumers' last log lines; rows in
fact_material_shipment after the backfill; a manual run of the pg-backup
CronJob (Spaces access), its logs, then its deletion.]],
  timeout = 1800,
  run = function(ctx)
    local c = cluster(ctx)
    if ctx.dry_run then
      ctx:log("dry run: would check the pods, the consumers' logs and fact_material_shipment, and run a Job from the pg-backup CronJob")
      return { dry_run = true }
    end
    -- all pods running (those of finished Jobs have Succeeded)
    local not_running = {}
    for _, pod in ipairs(c:list { kind = "Pod" }) do
      local phase = pod.status and pod.status.phase
      if phase ~= "Running" and phase ~= "Succeeded" then
        not_running[#not_running + 1] = pod.metadata.name .. " (" .. tostring(phase) .. ")"
      end
    end
    if #not_running > 0 then
      errors.raise { kind = "verify", code = "pods", message = "pods not running: " .. table.concat(not_running, ", ") }
    end
    -- consumers connected and waiting
    for _, component in ipairs { "consumer", "consumer-concrete" } do
      local pods = c:list { kind = "Pod", label_selector = { component = component } }
      if #pods == 0 then errors.raise { kind = "verify", code = "consumer", message = "no pod with label component=" .. component } end
      for _, pod in ipairs(pods) do
        c:logs { pod = pod.metadata.name, tail_lines = 5, log = true }
      end
    end
    -- PostgreSQL has data post-backfill
    local count = c:run_job {
      name = job_name(ctx, "verify-backfill"), image = "postgres:16", delete = true, rerun_failed = true, timeout = 600,
      command = { "psql", "-At", "-c", "SELECT COUNT(*) FROM fact_material_shipment" },
      env = { PGHOST = from("postgres", "host"), PGPORT = from("postgres", "port"), PGUSER = from("postgres", "user"),
        PGPASSWORD = from("postgres", "password"), PGDATABASE = from("postgres", "dbPaving") },
      node_selector = DEFAULT_POOL,
    }
    local rows = tonumber((count.logs_tail or ""):match("(%d+)%s*$"))
    if not rows or rows == 0 then
      errors.raise { kind = "verify", code = "backfill", message = "fact_material_shipment in " .. DB_PAVING
        .. " has no rows after the backfill (psql said: " .. tostring(count.logs_tail) .. ")" }
    end
    -- trigger a manual backup to confirm Spaces access; the Job is deleted once it completed
    local backup = c:run_job { name = job_name(ctx, "pg-backup-verify"), from_cronjob = "pg-backup", delete = true,
      rerun_failed = true, timeout = 1200 }
    return { fact_material_shipment = rows, backup_job = backup.name, backup_log = backup.logs_tail }
  end,
}

step "B8" {
  title = "Restore from Backup",
  owner = "DevOps",
  needs = "B7",
  doc = [[Only with `restore_from`: the guide's restore. The dump is downloaded from the
Space into `work_dir`, the postgres Service's port is forwarded (`kubectl
port-forward statefulset/postgres 5432:5432`), and `pg_restore --clean
--if-exists` restores it into `restore_database` as the Secret's user; then
every table the dump holds data for must have exactly the dump's row count.]],
  timeout = 4 * 3600,
  run = function(ctx)
    local p = ctx.params
    if not p.restore_from then
      ctx:log("restore_from is not set: nothing to restore")
      return { restored = false }
    end
    local spaces <close> = s3.connect { endpoint = p.spaces_endpoint or ("https://" .. p.spaces_region .. ".digitaloceanspaces.com"),
      region = p.spaces_region, access_key = p.spaces_key, secret_key = p.spaces_secret }
    local info = spaces:head { bucket = p.spaces_name, key = p.restore_from }
    if not info then
      errors.raise { kind = "verify", code = "no-dump", message = "s3://" .. p.spaces_name .. "/" .. p.restore_from .. " does not exist" }
    end
    if ctx.dry_run then
      ctx:log("dry run: would download s3://%s/%s (%d bytes) and restore it into %s through a port-forward to the postgres Service",
        p.spaces_name, p.restore_from, info.size, p.restore_database)
      return { dry_run = true }
    end
    sh.run { "mkdir", "-p", p.work_dir }
    local path = p.work_dir .. "/restore.pgdump"
    spaces:get { bucket = p.spaces_name, key = p.restore_from, file = path }
    local expected = bm.dump_row_counts(path)
    if next(expected) == nil then
      errors.raise { kind = "verify", code = "empty-dump", message = p.restore_from .. " holds no table data in schema public" }
    end
    local c = cluster(ctx)
    local password = bm.password(c, PG_PLAIN)
    local counts = bm.forward(c, function(port)
      pg.restore { url = bm.url(port, "bowmark", password, p.restore_database), path = path, clean = true }
      return bm.row_counts(port, "bowmark", password, p.restore_database)
    end)
    local wrong = {}
    for t, n in pairs(expected) do
      if counts[t] ~= n then wrong[#wrong + 1] = string.format("%s: %s rows, the dump holds %d", t, tostring(counts[t]), n) end
    end
    table.sort(wrong)
    if #wrong > 0 then
      errors.raise { kind = "verify", code = "row-counts", message = p.restore_database .. " after the restore: " .. table.concat(wrong, "; ") }
    end
    return { restored = true, dump = p.restore_from, size = info.size, database = p.restore_database, rows = counts }
  end,
}

-- the Deployments that read the postgres Secret (the clients do not)
local USES_POSTGRES = {
  "server-deployment", "server-concrete-deployment", "worker-deployment", "worker-concrete-deployment",
  "consumer-deployment", "consumer-concrete-deployment",
}

step "B9" {
  title = "Rotate the PostgreSQL password",
  owner = "DevOps",
  needs = "B8",
  doc = [[Only with `rotate_postgres_password`: the guide's rotation. A new password
(`openssl rand -hex 32`, made once for the run) is set with `ALTER USER
bowmark PASSWORD ...` through the forwarded port (logging in with the
Secret's password; a resumed attempt whose new password already logs in
skips it), checked by logging in with it, written to the postgres Secret,
and the six Deployments using the Secret are restarted (`kubectl rollout
restart`) and watched until rolled out. Update the 1Password item after it.
`runbook rollback <run> --to B8` runs `kubectl rollout undo` on the six
(the ReplicaSet before the restart); the password stays rotated, Secret and
database agreeing.]],
  timeout = 1800,
  run = function(ctx)
    if not ctx.params.rotate_postgres_password then
      ctx:log("rotate_postgres_password is not set: the password stays")
      return { rotated = false }
    end
    local new = ctx:once("postgres-password-rotated", function() return secret.random { bytes = 32, encoding = "hex" } end)
    local c = cluster(ctx)
    if ctx.dry_run then
      ctx:log("dry run: would ALTER USER bowmark, update the postgres Secret and restart %s", table.concat(USES_POSTGRES, ", "))
      return { dry_run = true }
    end
    local current = bm.password(c, PG_PLAIN)
    local altered = bm.forward(c, function(port)
      local already = pg.try_connect(bm.url(port, "bowmark", new, DB_PAVING))
      if already then already:close() return false end
      local conn <close> = pg.connect(bm.url(port, "bowmark", current, DB_PAVING))
      conn:exec("ALTER USER bowmark PASSWORD " .. conn:literal(secret.reveal(new)))
      local check <close> = pg.connect(bm.url(port, "bowmark", new, DB_PAVING))
      check:value("SELECT 1")
      return true
    end)
    ctx:log(altered and "ALTER USER bowmark: the new password logs in" or "the new password already logs in (an earlier attempt altered it)")
    local _, result = c:secret { name = "postgres", data = { password = new }, if_exists = "merge" }
    local revisions = {}
    for _, name in ipairs(USES_POSTGRES) do c:rollout_restart { kind = "Deployment", name = name } end
    for _, name in ipairs(USES_POSTGRES) do
      c:rollout_status { kind = "Deployment", name = name, timeout = 900 }
      local d = c:get { api_version = "apps/v1", kind = "Deployment", name = name }
      revisions[name] = d.metadata.annotations["deployment.kubernetes.io/revision"]
    end
    ctx:log("now update 1Password: op item edit \"Bow-Mark Production K8s\" --vault %s \"postgres-password[password]=...\"", ctx.params.vault)
    return { rotated = true, altered = altered, secret = result, restarted = USES_POSTGRES, revisions = revisions }
  end,
  undo = function(ctx)
    if not (ctx.outputs.B9 or {}).rotated then
      ctx:log("B9 restarted nothing: nothing to roll back")
      return { rolled_back = false }
    end
    local c = cluster(ctx)
    local out = {}
    for _, name in ipairs(USES_POSTGRES) do
      local r = bm.rollout_undo(c, name)
      ctx:log("rollout undo deployment/%s: revision %d -> the template of revision %d (%s)", name, r.from, r.to, r.result)
      out[name] = r
    end
    return out
  end,
}
