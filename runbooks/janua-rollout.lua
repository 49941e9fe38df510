-- A zero-downtime release of the Janua API, as its deployment guide sets
-- it out: the pre-deployment checks, a backup, the new image's migrations,
-- a rolling update of `janua-api` to the new image watched to the end
-- (kubectl set image + rollout status), health checks after. A rollout
-- that fails is reverted at once to the image that ran before; `runbook
-- rollback <run>` reverts a release that rolled out but should not stay.
-- The guide's setup done once (janua-secrets with the keys generated once,
-- regcred, the full checklists, the restore check) is
-- runbooks/janua-production.lua: run it before the first release. What the
-- two share is runbooks/janua/init.lua.
--
--   runbook exec runbooks/janua-rollout.lua --param image_tag=2026.03.1 --new
local k8s = require "runbook.k8s"
local errors = require "runbook.errors"
local smoke = require "lib.smoke"
local janua = require "janua"

runbook "janua-rollout" {
  description = "Zero-downtime rollout of the Janua API to a new image",
  owner = "Platform",
  params = {
    image_tag = { doc = "the tag to deploy (CI pushes janua/api:<git sha>)" },
    image = { default = "janua/api", doc = "the image repository" },
    namespace = { default = "janua" },
    deployment = { default = "janua-api" },
    container = { default = "api" },
    kubeconfig = { required = false },
    context = { required = false },
    api_url = { default = "https://api.janua.dev", doc = "the public URL the health checks call" },
    ca_file = { required = false, doc = "a CA to trust for the health checks (staging, tests)" },
    rollout_timeout = { default = 600, doc = "seconds for the rolling update" },
    database_url = { secret = true, env = "JANUA_DATABASE_URL", doc = "the production PostgreSQL, backed up before the migrations" },
    backup_endpoint = { env = "BACKUP_S3_ENDPOINT", doc = "the object storage endpoint of the backups" },
    backup_region = { default = "us-east-1" },
    backup_bucket = { default = "janua-backups" },
    backup_prefix = { default = "pg/janua", doc = "where the dumps go in the bucket (janua-production's too)" },
    access_key = { secret = true, env = "AWS_ACCESS_KEY_ID" },
    secret_key = { secret = true, env = "AWS_SECRET_ACCESS_KEY" },
    keep_days = { default = 7, doc = "days of dumps kept" },
    migrate_command = { default = "alembic upgrade head", doc = "the migration command, run in a Job with the new image" },
  },
}

local function cluster(ctx)
  return k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context, namespace = ctx.params.namespace }
end

local function ref(ctx)
  return { api_version = "apps/v1", kind = "Deployment", name = ctx.params.deployment }
end

local function current_image(ctx, c)
  local d = c:get(ref(ctx))
  if not d then
    errors.raise { kind = "deploy", code = "missing", message = string.format("deployment %s/%s not found",
      ctx.params.namespace, ctx.params.deployment) }
  end
  for _, ct in ipairs(d.spec.template.spec.containers) do
    if ct.name == ctx.params.container then return ct.image, d end
  end
  errors.raise { kind = "deploy", code = "missing", message = string.format("deployment %s has no container %q",
    ctx.params.deployment, ctx.params.container) }
end

-- kubectl set image deployment/janua-api api=IMAGE: a strategic merge patch
-- of the one container, then kubectl rollout status.
local function set_image(ctx, c, image)
  c:patch(ref(ctx), { spec = { template = { spec = { containers = { { name = ctx.params.container, image = image } } } } } },
    { type = "strategic" })
  return c:rollout_status { kind = "Deployment", name = ctx.params.deployment, timeout = ctx.params.rollout_timeout }
end

local HEALTH = {
  { name = "liveness /health", path = "/health", status = 200 },
  { name = "readiness /ready", path = "/ready", status = 200 },
}

local function health(ctx)
  return smoke.check(ctx, ctx.params.api_url, HEALTH, { timeout = 10 })
end

local target = function(ctx) return ctx.params.image .. ":" .. ctx.params.image_tag end

step "J1" {
  title = "Pre-deployment checks",
  doc = [[The running release is fully rolled out and healthy, and rolls out with
maxUnavailable 0 (what J2 relies on); every pull Secret and Secret key the
Deployment names is there (new pods could not start otherwise); its image is
what a failed rollout returns to.]],
  run = function(ctx)
    local c = cluster(ctx)
    c:rollout_status { kind = "Deployment", name = ctx.params.deployment, timeout = 120 }
    local problems = janua.configuration_problems(ctx, c)
    if #problems > 0 then
      errors.raise { kind = "verify", code = "configuration", message = table.concat(problems, "; ") .. " (fix the manifest or run janua-production.lua first)" }
    end
    health(ctx)
    local image, d = current_image(ctx, c)
    return { previous_image = image, revision = d.metadata.annotations and d.metadata.annotations["deployment.kubernetes.io/revision"] }
  end,
  undo = function() end, -- it only looked
}

step "J1-backup" {
  title = "Back up the database",
  needs = "J1",
  doc = [[Before the migrations: `pg_dump -Fc` of database_url to
s3://<backup_bucket>/<backup_prefix>/janua-<time>.dump, verified (`pg_restore
--list`, sha256), dumps older than keep_days deleted. The dump to restore if the
release must go back past its migrations.]],
  timeout = 4 * 3600,
  run = function(ctx) return janua.backup(ctx, "janua") end,
  undo = function() end, -- the dump is kept
}

step "J1-migrate" {
  title = "Run the new image's migrations",
  needs = "J1-backup",
  doc = [[`migrate_command` (alembic upgrade head) in a one-off Job with the new image,
DATABASE_URL from janua-secrets and the Deployment's pull Secrets, while the
running release still serves (migrations must suit both images). A failed Job
fails the step before anything rolls out; the same command runs it again.]],
  timeout = 3600,
  run = function(ctx)
    local c = cluster(ctx)
    local _, d = current_image(ctx, c)
    return janua.migrate(ctx, c, target(ctx), d.spec.template.spec.imagePullSecrets)
  end,
  undo = function(ctx)
    ctx:warn("the migrations of %s are not reverted; restore %s if the schema must go back", target(ctx),
      ctx.outputs["J1-backup"].location or ctx.outputs["J1-backup"].name)
  end,
}

step "J2" {
  title = "Roll out the new image",
  needs = "J1-migrate",
  doc = [[Rolling update (maxUnavailable 0 keeps every replica serving until its
replacement is ready). On failure (ProgressDeadlineExceeded, timeout) the
previous image is set again at once and the step fails.]],
  timeout = 1800,
  verify = function(ctx)
    local c = cluster(ctx)
    local image, d = current_image(ctx, c)
    if image ~= target(ctx) then return false end
    return k8s.rules.deployment(d) == "done"
  end,
  run = function(ctx)
    local c = cluster(ctx)
    local previous, new = ctx.outputs.J1.previous_image, target(ctx)
    local ok, err = pcall(set_image, ctx, c, new)
    if not ok then
      if errors.is(err) and (err.kind == "interrupted" or err.kind == "timeout") then error(err, 0) end
      ctx:warn("rollout of %s failed: %s; setting %s again", new, errors.message(err), previous)
      local back_ok, back_err = pcall(set_image, ctx, c, previous)
      errors.raise { kind = "deploy", code = "rolled-back", message = string.format(
        "rollout of %s failed (%s); rolled back to %s%s", new, errors.message(err), previous,
        back_ok and "" or (", whose own rollout has not finished: " .. errors.message(back_err))) }
    end
    return { image = new, previous_image = previous }
  end,
  undo = function(ctx)
    local c = cluster(ctx)
    local previous = ctx.outputs.J2.previous_image
    ctx:log("setting %s back to %s", ctx.params.deployment, previous)
    set_image(ctx, c, previous)
  end,
}

smoke.step "J3" {
  title = "Post-deployment health checks",
  needs = "J2",
  doc = "Readiness within two minutes, then /health and /ready. If they fail: runbook rollback <run>.",
  timeout = 300,
  ready = "/ready",
  ready_timeout = 120,
  ready_what = "Janua to report ready",
  checks = HEALTH,
  check_timeout = 10,
  undo = function() end, -- it only looked
}
