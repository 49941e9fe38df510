-- A zero-downtime release of the Janua API, as its deployment guide sets
-- it out: health checks first, a rolling update of `janua-api` to the new
-- image watched to the end (kubectl set image + rollout status), health
-- checks after. A rollout that fails is reverted at once to the image
-- that ran before; `runbook rollback <run>` reverts a release that rolled
-- out but should not stay.
--
--   runbook exec runbooks/janua-rollout.lua --param image_tag=2026.03.1 --new
local k8s = require "runbook.k8s"
local errors = require "runbook.errors"
local smoke = require "lib.smoke"

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

-- J2's promise (every replica serves until its replacement is ready) holds
-- only for a rolling update with maxUnavailable 0.
local function zero_downtime(ctx, c)
  local d = c:get(ref(ctx))
  local strategy = d and d.spec.strategy or {}
  local max = strategy.rollingUpdate and strategy.rollingUpdate.maxUnavailable
  if (strategy.type or "RollingUpdate") ~= "RollingUpdate" or not (max == 0 or max == "0" or max == "0%") then
    errors.raise { kind = "verify", code = "strategy", message = string.format(
      "deployment %s has strategy %s with maxUnavailable %s: a zero-downtime rollout needs RollingUpdate with maxUnavailable: 0 (set it in the manifest first)",
      ctx.params.deployment, tostring(strategy.type or "RollingUpdate"), tostring(max == nil and "25% (the default)" or max)) }
  end
end

local target = function(ctx) return ctx.params.image .. ":" .. ctx.params.image_tag end

step "J1" {
  title = "Pre-deployment checks",
  doc = [[The running release is fully rolled out and healthy, and rolls out with
maxUnavailable 0 (what J2 relies on); its image is what a failed rollout returns to.]],
  run = function(ctx)
    local c = cluster(ctx)
    c:rollout_status { kind = "Deployment", name = ctx.params.deployment, timeout = 120 }
    zero_downtime(ctx, c)
    health(ctx)
    local image, d = current_image(ctx, c)
    return { previous_image = image, revision = d.metadata.annotations and d.metadata.annotations["deployment.kubernetes.io/revision"] }
  end,
  undo = function() end, -- it only looked
}

step "J2" {
  title = "Roll out the new image",
  needs = "J1",
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
