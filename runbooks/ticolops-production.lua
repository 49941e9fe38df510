-- Ticolops in production: the Quick start and the "Backups and Disaster
-- Recovery" section of its production deployment guide as one resumable
-- run. The ticolops-secrets Secret (database_url, redis_url and an app
-- secret key generated once), the guide's deployment.yaml and ingress.yaml
-- (shipped in runbooks/ticolops/k8s/), the CI access it asks for, a
-- verified backup to object storage with 7 days of retention, an encrypted
-- copy of the configuration next to it, and a restore drill.
--
--   export KUBECONFIG=... TICOLOPS_DATABASE_URL=postgresql://... TICOLOPS_REDIS_URL=rediss://... \
--          BACKUP_S3_ENDPOINT=https://s3.eu-west-1.amazonaws.com AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
--          TICOLOPS_CONFIG_PASSPHRASE=... TICOLOPS_SCRATCH_DATABASE_URL=postgresql://.../postgres
--          TICOLOPS_HOST=ticolops.example.com TICOLOPS_IMAGE=ghcr.io/acme/ticolops-backend:1.4.0
--   runbook exec runbooks/ticolops-production.lua
local k8s = require "runbook.k8s"
local pg = require "runbook.pg"
local s3 = require "runbook.s3"
local sh = require "runbook.sh"
local secret = require "runbook.secret"
local json = require "runbook.json"
local errors = require "runbook.errors"
local files = require "ticolops"
local secrets = require "lib.secrets"
local restore = require "lib.restore"

runbook "ticolops-production" {
  description = "Deploy and operate Ticolops in production: secrets, manifests, backups, encrypted configuration, restore drill",
  owner = "DevOps",
  doc = [[
The application's database and Redis are managed services (the guide's
recommended architecture); their URLs come from params. The backup is a
`pg_dump` streamed to object storage (S3 or any S3-compatible store) under
`backup_prefix`, checked with `pg_restore --list`, and backups older than
`keep_days` (7, the guide's minimum) are deleted there. The configuration
copy is the ticolops-secrets Secret and the applied manifests, encrypted
with `openssl enc -aes-256-cbc -pbkdf2` under `config_passphrase` (keep it
in the vault, not next to the copy). The restore drill restores the backup
this run made into a scratch database, compares row counts with the live
database and drops it.]],
  params = {
    namespace = { default = "ticolops", doc = "the Kubernetes namespace" },
    kubeconfig = { required = false, doc = "kubeconfig path (default: $KUBECONFIG, then ~/.kube/config)" },
    context = { required = false, doc = "kubeconfig context (default: the current one)" },
    host = { env = "TICOLOPS_HOST", doc = "the public host name of the Ingress (its TLS certificate comes from cert-manager)" },
    cluster_issuer = { default = "letsencrypt-prod", doc = "the cert-manager ClusterIssuer" },
    image = { env = "TICOLOPS_IMAGE", doc = "the backend image the CI pipeline pushed (repository:tag or @sha256:...)" },
    replicas = { default = 2, doc = "the Deployment's replicas and the HPA's minimum" },
    database_url = { secret = true, env = "TICOLOPS_DATABASE_URL",
      doc = "the managed PostgreSQL (database_url in ticolops-secrets; a postgresql+driver:// scheme is read as postgresql://)" },
    redis_url = { secret = true, env = "TICOLOPS_REDIS_URL", doc = "the managed Redis (redis_url in ticolops-secrets)" },
    backup_endpoint = { env = "BACKUP_S3_ENDPOINT", doc = "the object storage endpoint (https://s3.<region>.amazonaws.com, ...)" },
    backup_region = { default = "us-east-1" },
    backup_bucket = { default = "ticolops-backups" },
    backup_prefix = { default = "pg/daily", doc = "where the dumps go in the bucket" },
    config_prefix = { default = "config", doc = "where the encrypted configuration copies go in the bucket" },
    access_key = { secret = true, env = "AWS_ACCESS_KEY_ID" },
    secret_key = { secret = true, env = "AWS_SECRET_ACCESS_KEY" },
    keep_days = { default = 7, doc = "days of backups kept (the guide: at least 7)" },
    lifecycle_days = { default = 14, doc = "the bucket's lifecycle rule on backup_prefix deletes dumps this old even when no run prunes them (a safety net; 0: no rule)" },
    config_passphrase = { secret = true, env = "TICOLOPS_CONFIG_PASSPHRASE",
      doc = "the passphrase of the encrypted configuration copy (kept in the vault)" },
    scratch_url = { secret = true, env = "TICOLOPS_SCRATCH_DATABASE_URL",
      doc = "postgres://... of a server where the restore drill may create a scratch database (its maintenance database)" },
    tolerance_pct = { default = 5, doc = "how many percent fewer rows a restored table may have than the live one" },
    ca_file = { required = false, doc = "a CA to trust for object storage, besides the system's" },
  },
}

local SECRET = "ticolops-secrets"
local DEPLOYMENT = "ticolops-backend"

-- ---------------------------------------------------------------------------
-- helpers

local function cluster(ctx)
  return k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context, namespace = ctx.params.namespace }
end

local function vars(ctx)
  local p = ctx.params
  return { IMAGE = p.image, HOST = p.host, CLUSTER_ISSUER = p.cluster_issuer, REPLICAS = tostring(p.replicas) }
end

local function bucket(ctx)
  local p = ctx.params
  return s3.connect { endpoint = p.backup_endpoint, region = p.backup_region,
    access_key = p.access_key, secret_key = p.secret_key, ca_file = p.ca_file }
end

-- The application's URL as libpq reads it: SQLAlchemy's postgresql+asyncpg://
-- is postgresql:// to pg_dump.
local function libpq_url(url)
  return secret.wrap((secret.reveal(url):gsub("^postgres[%a]*%+[%w_]+://", "postgresql://")))
end

local function stamp(ctx)
  return ctx:once("stamp", function() return os.date("!%Y%m%dT%H%M%SZ") end)
end

-- A dry run before T1 made the namespace: the server would refuse objects in it.
local function new_namespace(ctx, c, what)
  if ctx.dry_run and not c:get { kind = "Namespace", name = ctx.params.namespace } then
    ctx:log("dry run: %s would be created in the new namespace %s", what, ctx.params.namespace)
    return true
  end
  return false
end

local function dry(ctx, what)
  if not ctx.dry_run then return false end
  ctx:log("dry run: would %s", what)
  return true
end

-- ---------------------------------------------------------------------------
-- Quick start 1-2: secrets and manifests

secrets.app_secret "T1" {
  title = "Prepare secrets",
  owner = "DevOps",
  doc = [[Quick start 1: the `ticolops-secrets` Secret with `database_url` and
`redis_url`, and `secret_key` (32 random bytes, hex) for the backend, generated
once: a resumed run writes the same value. An existing Secret is kept as it is.]],
  name = SECRET,
  create_namespace = true,
  generate = { secret_key = { once = "secret-key", bytes = 32, encoding = "hex" } },
  data = function(ctx) return { database_url = ctx.params.database_url, redis_url = ctx.params.redis_url } end,
}

step "T2" {
  title = "Apply deployment.yaml",
  owner = "DevOps",
  needs = "T1",
  doc = [[Quick start 2: the backend Deployment (rolling updates with maxUnavailable 0),
its Service and the HorizontalPodAutoscaler; then waits for the rollout.]],
  timeout = 900,
  run = function(ctx)
    local c = cluster(ctx)
    if new_namespace(ctx, c, "deployment.yaml") then return { dry_run = true } end
    local report = c:apply(files.deployment, { vars = vars(ctx) })
    if not ctx.dry_run then c:rollout_status { kind = "Deployment", name = DEPLOYMENT, timeout = 600 } end
    return { created = report.created, configured = report.configured, unchanged = report.unchanged }
  end,
}

step "T3" {
  title = "Apply ingress.yaml",
  owner = "DevOps",
  needs = "T2",
  doc = "Quick start 2: the nginx Ingress for `host`, TLS from cert-manager (Secret ticolops-tls).",
  run = function(ctx)
    local c = cluster(ctx)
    if new_namespace(ctx, c, "ingress.yaml") then return { dry_run = true } end
    local report = c:apply(files.ingress, { vars = vars(ctx) })
    return { host = ctx.params.host, created = report.created, configured = report.configured, unchanged = report.unchanged }
  end,
}

manual "T4" {
  title = "Give the CI runner cluster access and its secrets",
  owner = "DevOps",
  needs = "T3",
  instructions = [[
Quick start 3 and 4:
1. Give the CI runner a KUBECONFIG secret (or run it with a service account
   allowed to patch deployment/ticolops-backend in this namespace):
     gh secret set KUBECONFIG --repo <org>/ticolops < ci-kubeconfig.yaml
2. Set the GitHub Actions secrets .github/workflows/ci-cd.yml uses (registry
   credentials; adjust the workflow for another registry or deploy mechanism).
3. Run the workflow once; it must build, push and deploy.
Then confirm: runbook confirm <run> T4 --note "<workflow run URL>"]],
}

-- ---------------------------------------------------------------------------
-- Backups and Disaster Recovery

manual "T5" {
  title = "Enable the managed database's automated daily backups",
  owner = "DevOps",
  instructions = [[
On the managed PostgreSQL (RDS / Cloud SQL): automated daily backups on, with
at least 7 days of retention (RDS: BackupRetentionPeriod >= 7; Cloud SQL:
retainedBackups >= 7), Multi-AZ / high availability on.
Then confirm: runbook confirm <run> T5 --note "<instance, retention>"]],
}

step "T6" {
  title = "Back up the database to object storage",
  owner = "DevOps",
  needs = "T1",
  doc = [[`pg_dump -Fc` streamed to s3://<backup_bucket>/<backup_prefix>/ticolops-<time>.dump
(the name chosen once: a resumed step writes the same object again), checked with
`pg_restore --list` and its sha256; then dumps older than keep_days are deleted
(never the newest) and uploads abandoned for a day aborted. The bucket's lifecycle rule
`ticolops-pg-backups` deletes dumps older than lifecycle_days on the storage side.]],
  timeout = 4 * 3600,
  run = function(ctx)
    local p = ctx.params
    local client <close> = bucket(ctx)
    client:ensure_bucket(p.backup_bucket)
    if tonumber(p.lifecycle_days) > 0 and not (ctx.dry_run and not client:bucket_exists(p.backup_bucket)) then
      client:ensure_lifecycle { bucket = p.backup_bucket, rules = { { id = "ticolops-pg-backups",
        prefix = p.backup_prefix:gsub("/*$", "/"), expire_days = tonumber(p.lifecycle_days), abort_incomplete_days = 1 } } }
    end
    local store = client:store { bucket = p.backup_bucket, prefix = p.backup_prefix }
    local name = "ticolops-" .. stamp(ctx) .. ".dump"
    local b = pg.backup { url = libpq_url(p.database_url), store = store, name = name }
    if ctx.dry_run then return { name = name, dry_run = true } end
    local info = pg.verify_backup { store = store, name = name, sha256 = b.sha256 }
    local kept = pg.retention { store = store, keep_days = p.keep_days }
    return { name = name, location = b.location, size = b.size, sha256 = b.sha256, tables = info.tables,
      deleted = kept.deleted, kept = kept.kept }
  end,
}

step "T7" {
  title = "Store an encrypted copy of the configuration",
  owner = "DevOps",
  needs = { "T1", "T3" },
  doc = [[The ticolops-secrets Secret as it is in the cluster and the two manifests as
applied, as one JSON document, encrypted with `openssl enc -aes-256-cbc -pbkdf2
-salt` (the passphrase through the environment, never the command line) and put
at s3://<backup_bucket>/<config_prefix>/ticolops-config-<time>.json.enc. The copy
is read back and decrypted again, and must give the same bytes.]],
  run = function(ctx)
    local p = ctx.params
    local c = cluster(ctx)
    local s = c:get_secret { name = SECRET }
    if not s and ctx.dry_run then
      ctx:log("dry run: would encrypt Secret %s and the manifests to s3://%s/%s/", SECRET, p.backup_bucket, p.config_prefix)
      return { dry_run = true }
    end
    local data = {}
    for k, v in pairs(s.data) do data[k] = secret.reveal(v) end
    local manifests = {}
    for _, f in ipairs { files.deployment, files.ingress } do
      for _, d in ipairs(k8s.manifests(f, { vars = vars(ctx) })) do manifests[#manifests + 1] = d.obj end
    end
    local key = p.config_prefix .. "/ticolops-config-" .. stamp(ctx) .. ".json.enc"
    if dry(ctx, "encrypt Secret " .. SECRET .. " and the manifests to s3://" .. p.backup_bucket .. "/" .. key) then
      return { key = key, dry_run = true }
    end
    local plain = secret.wrap(json.encode { namespace = p.namespace, secrets = { [SECRET] = data }, manifests = manifests })
    local env = { TICOLOPS_CONFIG_PASSPHRASE = p.config_passphrase }
    local enc = sh.run({ "openssl", "enc", "-aes-256-cbc", "-pbkdf2", "-iter", "200000", "-salt", "-a", "-A",
      "-pass", "env:TICOLOPS_CONFIG_PASSPHRASE" }, { env = env, stdin = plain, log = false })
    local client <close> = bucket(ctx)
    client:ensure_bucket(p.backup_bucket)
    local put = client:put { bucket = p.backup_bucket, key = key, body = enc.stdout, content_type = "application/octet-stream" }
    -- read it back and decrypt it: the copy is only worth keeping if it opens
    local back = client:get { bucket = p.backup_bucket, key = key }
    local dec = sh.run({ "openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-iter", "200000", "-a", "-A",
      "-pass", "env:TICOLOPS_CONFIG_PASSPHRASE" }, { env = env, stdin = back, secret_output = true })
    if secret.reveal(dec.stdout) ~= secret.reveal(plain) then
      errors.raise { kind = "verify", code = "config-copy", message = "s3://" .. p.backup_bucket .. "/" .. key
        .. " does not decrypt to the configuration that was encrypted" }
    end
    return { location = put.location, size = put.size, secrets = SECRET, manifests = #manifests }
  end,
}

-- ---------------------------------------------------------------------------
-- "Periodically test snapshot restores": this run's backup, restored

local function scratch_name(ctx)
  return "ticolops_restore_" .. (ctx.run_id:match("%-(%d%d%d%d%d%d%-%x+)$") or "dry_run"):gsub("%-", "_")
end

step "T8" {
  title = "Restore drill",
  owner = "DevOps",
  needs = "T6",
  doc = [[T6's dump is restored into a scratch database on `scratch_url`; every live table
must be there with no more than tolerance_pct percent fewer rows; then the scratch
database is dropped. On a mismatch it is kept for a look (`runbook rollback` drops it).]],
  timeout = 4 * 3600,
  run = function(ctx)
    local p = ctx.params
    local name = scratch_name(ctx)
    if dry(ctx, string.format("restore %s into the scratch database %s and compare it with the live database",
        ctx.outputs.T6.name, name)) then
      return { database = name, dry_run = true }
    end
    local client <close> = bucket(ctx)
    return restore.check(ctx, { live = libpq_url(p.database_url), scratch = p.scratch_url, name = name,
      store = client:store { bucket = p.backup_bucket, prefix = p.backup_prefix }, backup = ctx.outputs.T6.name,
      tolerance_pct = p.tolerance_pct })
  end,
  undo = function(ctx) restore.drop(ctx.params.scratch_url, scratch_name(ctx)) end,
}
