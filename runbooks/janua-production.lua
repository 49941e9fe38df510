-- Janua in production, once: what its deployment guide expects to be in
-- place before the first release and around it, as one resumable run. The
-- guide's own split is kept: its "Kubernetes Deployment", "Production
-- Security" and "Deployment Checklist" sections describe a setup done once
-- (the janua-secrets Secret the Deployment reads, the regcred image pull
-- Secret, backups, the checklists) and its CI/CD "deploy" job describes
-- what every release does (kubectl set image + rollout status). So this is
-- a second runbook, and runbooks/janua-rollout.lua stays the release:
--
--   P1-P2  secrets: janua-secrets (database-url, redis-url, jwt-secret and
--          secret-key generated once, never again on a resume) and regcred
--   P3-P4  the pre-deployment checklist: configuration validated against
--          the cluster (the Deployment's rolling-update strategy, the keys
--          it reads, its pull Secret), the CI's tests and scans by a person
--   P5-P7  the rollback plan: a verified backup to object storage, restored
--          into a scratch database and compared; then the migrations
--   P8-P9  the post-deployment checklist: health, readiness and metrics
--          verified, the rest by a person
--
--   export KUBECONFIG=... JANUA_DATABASE_URL=postgresql://... JANUA_REDIS_URL=redis://... \
--          DOCKER_USERNAME=... DOCKER_PASSWORD=... BACKUP_S3_ENDPOINT=https://s3.us-east-1.amazonaws.com \
--          AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... JANUA_SCRATCH_DATABASE_URL=postgresql://.../postgres
--   runbook exec runbooks/janua-production.lua
local secret = require "runbook.secret"
local json = require "runbook.json"
local janua = require "janua"
local secrets = require "lib.secrets"
local smoke = require "lib.smoke"
local restore = require "lib.restore"

runbook "janua-production" {
  description = "Janua's production setup: secrets, registry credentials, checklists, backup and restore check, migrations",
  owner = "Platform",
  doc = [[
Run once when Janua goes to production (and again after a change to what
it sets up: a resumed or repeated run keeps the generated secrets). Each
release after that is `runbooks/janua-rollout.lua`. The Deployment itself
(k8s/deployment.yaml, service.yaml, ingress.yaml of the guide) is the
repository's and is checked here, not written: P3 refuses a Deployment that
could take replicas down during a rollout, that reads a key janua-secrets
does not hold, or that pulls without regcred.]],
  params = {
    namespace = { default = "janua" },
    kubeconfig = { required = false },
    context = { required = false },
    deployment = { default = "janua-api" },
    container = { default = "api" },
    database_url = { secret = true, env = "JANUA_DATABASE_URL", doc = "the production PostgreSQL (database-url in janua-secrets)" },
    redis_url = { secret = true, env = "JANUA_REDIS_URL", doc = "the production Redis (redis-url in janua-secrets)" },
    registry = { default = "https://index.docker.io/v1/", doc = "the registry the images are pulled from (the guide pushes janua/api to Docker Hub)" },
    registry_username = { env = "DOCKER_USERNAME", doc = "the registry user (the CI's DOCKER_USERNAME)" },
    registry_password = { secret = true, env = "DOCKER_PASSWORD", doc = "its password or access token (the CI's DOCKER_PASSWORD)" },
    backup_endpoint = { env = "BACKUP_S3_ENDPOINT", doc = "the object storage endpoint" },
    backup_region = { default = "us-east-1" },
    backup_bucket = { default = "janua-backups" },
    backup_prefix = { default = "pg/janua", doc = "where the dumps go in the bucket" },
    access_key = { secret = true, env = "AWS_ACCESS_KEY_ID" },
    secret_key = { secret = true, env = "AWS_SECRET_ACCESS_KEY" },
    keep_days = { default = 7, doc = "days of dumps kept (the guide's backup_retention_period)" },
    scratch_url = { secret = true, env = "JANUA_SCRATCH_DATABASE_URL",
      doc = "postgres://... of a server where the restore check may create a scratch database (its maintenance database)" },
    tolerance_pct = { default = 0, doc = "how many percent fewer rows a restored table may have than the live one" },
    migrate_command = { default = "alembic upgrade head", doc = "the migration command, run in a Job with the Deployment's image" },
    api_url = { default = "https://api.janua.dev", doc = "the public URL the health checks call" },
    ca_file = { required = false, doc = "a CA to trust for the health checks and object storage (staging, tests)" },
  },
}

local SECRET, REGCRED = janua.SECRET, janua.REGCRED
local cluster = janua.cluster

-- ---------------------------------------------------------------------------
-- Kubernetes Deployment, Production Security: the Secrets

secrets.app_secret "P1" {
  title = "Create janua-secrets",
  doc = [[The Secret the guide's Deployment reads: `database-url`, `redis-url`, and
`jwt-secret` (JWT_SECRET_KEY) and `secret-key` (SECRET_KEY), 64 random bytes each,
hex, "cryptographically secure". They are generated once per run (ctx:once): a
resumed or repeated step writes the very same values. An existing Secret is kept
as it is (a new run never replaces the keys the running pods sign with).]],
  name = SECRET,
  create_namespace = true,
  generate = {
    ["jwt-secret"] = { once = "jwt-secret", bytes = 64 },
    ["secret-key"] = { once = "secret-key", bytes = 64 },
  },
  data = function(ctx) return { ["database-url"] = ctx.params.database_url, ["redis-url"] = ctx.params.redis_url } end,
}

-- {"auths": {REGISTRY: {username, password, auth}}}, as kubectl create secret docker-registry writes it
local function dockerconfig(p)
  local user, pw = p.registry_username, secret.reveal(p.registry_password)
  local auth = secret.reveal(secret.wrap(user .. ":" .. pw):base64())
  return secret.wrap(json.encode { auths = { [p.registry] = { username = user, password = pw, auth = auth } } })
end

step "P2" {
  title = "Create the registry credentials (regcred)",
  needs = "P1",
  doc = [[The image pull Secret `regcred` the Deployment names in imagePullSecrets, of
type kubernetes.io/dockerconfigjson (what `kubectl create secret docker-registry`
makes) for `registry` with the CI's DOCKER_USERNAME / DOCKER_PASSWORD. The
registry's credentials are the source: a changed password replaces it. Verified:
read back, of that type, holding credentials of that user for that registry.]],
  verify = function(ctx)
    return janua.regcred_problem(ctx, cluster(ctx)) == nil
  end,
  run = function(ctx)
    local c = cluster(ctx)
    if ctx.dry_run and not c:get { kind = "Namespace", name = ctx.params.namespace } then
      ctx:log("dry run: Secret %s would be created in the new namespace %s", REGCRED, ctx.params.namespace)
      return { secret = REGCRED, result = "created" }
    end
    local _, result = c:secret { name = REGCRED, type = janua.DOCKERCONFIG, data = { [".dockerconfigjson"] = dockerconfig(ctx.params) },
      if_exists = "replace" }
    return { secret = REGCRED, registry = ctx.params.registry, result = result }
  end,
}

-- ---------------------------------------------------------------------------
-- Pre-Deployment Checklist

step "P3" {
  title = "Configuration validated",
  needs = "P2",
  doc = [[Pre-deployment checklist, checked against the cluster: the Deployment rolls out
with RollingUpdate and maxUnavailable 0 (what janua-rollout's J2 promises: every
replica serves until its replacement is ready), pulls with regcred, and every key
it reads from a Secret is there. Fails naming each problem.]],
  verify = function(ctx)
    return #janua.configuration_problems(ctx, cluster(ctx), { regcred = true }) == 0
  end,
  run = function(ctx)
    local c = cluster(ctx)
    local problems, d = janua.configuration_problems(ctx, c, { regcred = true })
    if #problems > 0 then
      if ctx.dry_run then
        ctx:log("dry run: the configuration is checked once P1 and P2 wrote the Secrets (now: %s)", table.concat(problems, "; "))
        return { dry_run = true }
      end
      janua.fail("configuration", "%s", table.concat(problems, "; "))
    end
    return { deployment = d.metadata.name, secret_keys = #janua.secret_refs(d) }
  end,
}

manual "P4" {
  title = "Tests, security scan and performance tests passed",
  needs = "P3",
  instructions = [[
Pre-deployment checklist, from the CI pipeline (.github/workflows/deploy.yml)
of the commit going out:
1. "All tests passing": the test job (pytest --cov, with its PostgreSQL
   service, which runs the migrations) is green.
2. "Security scan completed": its bandit -r app/ step is green.
3. "Performance tests completed": the load test of the release is in its
   usual range.
Then confirm: runbook confirm <run> P4 --note "<workflow run URL>"]],
}

-- ---------------------------------------------------------------------------
-- Rollback plan: a backup that restores, before the migrations

step "P5" {
  title = "Back up the database",
  needs = "P3",
  doc = [[`pg_dump -Fc` of database-url streamed to
s3://<backup_bucket>/<backup_prefix>/janua-<time>.dump (the name chosen once: a
resumed step writes the same object), checked with `pg_restore --list` and its
sha256; dumps older than keep_days are deleted there (never the newest).]],
  timeout = 4 * 3600,
  run = function(ctx) return janua.backup(ctx, "janua") end,
}

local function scratch_name(ctx)
  return "janua_restore_" .. (ctx.run_id:match("%-(%d%d%d%d%d%d%-%x+)$") or "dry_run"):gsub("%-", "_")
end

step "P6" {
  title = "Restore check",
  needs = "P5",
  doc = [[P5's dump restored into a scratch database on `scratch_url`: every live table
must be there with its rows (tolerance_pct fewer at most), then the scratch
database is dropped. On a mismatch it is kept for a look (`runbook rollback` drops it).]],
  timeout = 4 * 3600,
  run = function(ctx)
    local p = ctx.params
    if ctx.dry_run then
      ctx:log("dry run: would restore %s into the scratch database %s and compare it", ctx.outputs.P5.name, scratch_name(ctx))
      return { database = scratch_name(ctx), dry_run = true }
    end
    local client <close> = janua.bucket(ctx)
    return restore.check(ctx, { live = p.database_url, scratch = p.scratch_url, name = scratch_name(ctx),
      store = client:store { bucket = p.backup_bucket, prefix = p.backup_prefix }, backup = ctx.outputs.P5.name,
      tolerance_pct = p.tolerance_pct })
  end,
  undo = function(ctx) restore.drop(ctx.params.scratch_url, scratch_name(ctx)) end,
}

step "P7" {
  title = "Run the database migrations",
  needs = { "P4", "P6" },
  doc = [[`migrate_command` (alembic upgrade head) in a one-off Job with the image the
Deployment runs, DATABASE_URL from janua-secrets and regcred to pull it, after a
backup that restored. A failed Job fails the step with its logs' tail; the same
command again runs it again (the Job is made anew).]],
  timeout = 3600,
  run = function(ctx)
    local c = cluster(ctx)
    local d = c:get { api_version = "apps/v1", kind = "Deployment", name = ctx.params.deployment }
    return janua.migrate(ctx, c, janua.image_of(ctx, d), { { name = REGCRED } })
  end,
}

-- ---------------------------------------------------------------------------
-- Post-Deployment Checklist

smoke.step "P8" {
  title = "Health checks passing, metrics exposed",
  needs = "P7",
  doc = [[Post-deployment checklist: readiness within two minutes, then /health (the
liveness probe), /ready (the readiness probe) and /metrics (what the guide's
Prometheus scrape job `janua-api` reads: the http_requests_total its dashboards
and alerts use) answer.]],
  timeout = 300,
  ready = "/ready",
  ready_timeout = 120,
  ready_what = "Janua to report ready",
  checks = {
    { name = "liveness /health", path = "/health", status = 200 },
    { name = "readiness /ready", path = "/ready", status = 200 },
    { name = "metrics /metrics", path = "/metrics", status = 200, body = "http_requests_total" },
  },
  check_timeout = 10,
}

manual "P9" {
  title = "Monitoring, documentation and the team",
  needs = "P8",
  instructions = [[
Post-deployment checklist, what only a person can tell:
1. "Monitoring alerts configured": the janua_rules.yml alerts are loaded
   in Prometheus and route to Alertmanager (Status > Rules).
2. "Performance metrics baseline": note the Grafana "Janua API Dashboard"
   request rate, 95th percentile and error rate now.
3. "Security monitoring active": Sentry (SENTRY_DSN) receives events.
4. "Documentation updated" and "Team notified".
Then confirm: runbook confirm <run> P9 --note "<baseline, announcement link>"]],
}
