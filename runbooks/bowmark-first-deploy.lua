-- Bow-Mark's first-time deployment on DigitalOcean Kubernetes: the seven
-- steps of the "First-Time Deployment Runbook" in its production guide,
-- with the Kubernetes Secrets it lists, the PostgreSQL and RabbitMQ
-- StatefulSets and the pg-backup CronJob (runbooks/bowmark/k8s/), the
-- parallel backfills, and the final verification.
--
--   export BOWMARK_PAVING_MONGO_URI=... BOWMARK_CONCRETE_MONGO_URI=... BOWMARK_JWT_SECRET=... \
--          SPACES_KEY=... SPACES_SECRET=... SMTP_PASSWORD=... MEILISEARCH_API_KEY=...
--   runbook exec runbooks/bowmark-first-deploy.lua --values bowmark-prod.yaml
local k8s = require "runbook.k8s"
local s3 = require "runbook.s3"
local errors = require "runbook.errors"
local files = require "bowmark"
local secrets = require "lib.secrets"

runbook "bowmark-first-deploy" {
  description = "First-time deployment of Bow-Mark (paving and concrete) on DOKS",
  owner = "DevOps",
  doc = [[
Passwords are generated once (`openssl rand -hex 32`: hex, so connection
strings need no escaping) and kept in the run's journal, sealed; the other
credentials come from params (the environment). Where the guide runs
`kubectl exec` into postgres-0 or rabbitmq-0, this runbook runs a one-off Job
with the same client against the Service, and checks its output.]],
  params = {
    namespace = { default = "default", doc = "the guide deploys to the default namespace" },
    kubeconfig = { required = false, doc = "kubeconfig path (default: $KUBECONFIG; doctl kubernetes cluster kubeconfig save ...)" },
    context = { required = false },
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
    backfill_timeout = { default = 3600, doc = "seconds per backfill (the guide: about 20 minutes each)" },
  },
}

local DB_PAVING, DB_CONCRETE = "bowmark_reports_paving", "bowmark_reports_concrete"
local DEPLOYMENTS = {
  "server-deployment", "server-concrete-deployment", "worker-deployment", "worker-concrete-deployment",
  "consumer-deployment", "consumer-concrete-deployment", "client-deployment", "client-concrete-deployment",
}
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

step "B2" {
  title = "Create All Secrets",
  owner = "DevOps",
  needs = "B1",
  doc = "postgres, rabbitmq, paving, concrete, general, spaces, email, search. Existing Secrets are kept.",
  run = function(ctx)
    local p, pw = ctx.params, ctx.outputs.B1
    local c = cluster(ctx)
    local results = {}
    local function ensure(name, data)
      local _, result = c:secret { name = name, data = data, if_exists = "keep" }
      results[name] = result
    end
    ensure("postgres", { user = "bowmark", password = pw.postgres_password, host = "postgres", port = "5432",
      dbPaving = DB_PAVING, dbConcrete = DB_CONCRETE })
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

manual "B2-vault" {
  title = "Save the passwords to 1Password",
  owner = "DevOps",
  needs = "B2",
  instructions = [[
Store the generated passwords under "Bow-Mark Production K8s" (vault Private):
  op item create --category login --title "Bow-Mark Production K8s" --vault "Private" \
    "postgres-password[password]=$(kubectl get secret postgres -o jsonpath='{.data.password}' | base64 -d)" \
    "rabbitmq-password[password]=$(kubectl get secret rabbitmq -o jsonpath='{.data.password}' | base64 -d)"
Then confirm: runbook confirm <run> B2-vault]],
}

step "B3" {
  title = "Deploy Infrastructure",
  owner = "DevOps",
  needs = "B2",
  doc = [[Applies runbooks/bowmark/k8s/ (postgres and rabbitmq StatefulSets with their
ConfigMaps and headless Services, the pg-backup CronJob), then waits for the
PVCs to be bound and both StatefulSets to be rolled out.]],
  timeout = 1200,
  run = function(ctx)
    local c = cluster(ctx)
    local report = c:apply(files.manifests)
    for _, pvc in ipairs { "data-postgres-0", "data-rabbitmq-0" } do
      c:wait { kind = "PersistentVolumeClaim", name = pvc, jsonpath = "{.status.phase}", value = "Bound", timeout = 600 }
    end
    for _, name in ipairs { "postgres", "rabbitmq" } do
      c:rollout_status { kind = "StatefulSet", name = name, timeout = 600 }
    end
    return { created = report.created, configured = report.configured, unchanged = report.unchanged }
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
ConfigMap and the eight Deployments exist.]],
  verify = function(ctx)
    local c = cluster(ctx)
    local absent = {}
    if not c:get { kind = "ConfigMap", name = "pg-migrations" } then absent[#absent + 1] = "ConfigMap pg-migrations" end
    for _, name in ipairs(DEPLOYMENTS) do
      if not c:get { api_version = "apps/v1", kind = "Deployment", name = name } then absent[#absent + 1] = name end
    end
    if #absent > 0 then ctx:log("not deployed yet: %s", table.concat(absent, ", ")) end
    return #absent == 0
  end,
}

-- kubectl run backfill-<app> --restart=Never --image=$IMAGE --overrides=...,
-- once the app's consumer is rolled out (its init container has applied the
-- dbmate migrations the backfill writes into).
local function backfill(ctx, app, consumer, mongo_secret, db)
  local c = cluster(ctx)
  c:rollout_status { kind = "Deployment", name = consumer, timeout = 900 }
  local server = c:get { api_version = "apps/v1", kind = "Deployment", name = "server-deployment" }
  if not server and ctx.dry_run then
    ctx:log("dry run: would run the %s backfill with server-deployment's image, once CI has deployed it", app)
    return { dry_run = true }
  end
  local image = server.spec.template.spec.containers[1].image
  local out = c:run_job {
    name = job_name(ctx, "backfill-" .. app), image = image, container = "backfill-" .. app,
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
  return { job = out.name, image = image, pods = #out.pods }
end

parallel "backfill" {
  step "B6-paving" {
    title = "Run Initial Backfill (paving)",
    owner = "DevOps",
    needs = "B5",
    run = function(ctx) return backfill(ctx, "paving", "consumer-deployment", "paving", DB_PAVING) end,
  },
  step "B6-concrete" {
    title = "Run Initial Backfill (concrete)",
    owner = "DevOps",
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
