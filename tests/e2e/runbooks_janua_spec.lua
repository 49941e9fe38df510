-- runbooks/janua-rollout.lua with the real binary in the rehearsal sandbox
-- (tests/harness/sandbox.lua): its fake cluster runs Janua's current
-- release, its HTTPS stand-in answers for api.janua.dev. A release rolls out
-- and passes its health checks, `runbook rollback` sets the previous image
-- again, and a rollout that cannot progress is reverted at once.
local rb = require "rbtest"
local sandbox = require "sandbox"

local RUNBOOK = rb.source_dir .. "/runbooks/janua-rollout.lua"

-- The journal of the run started with this image tag (several runs may
-- start within one second, and run ids of one second sort by their random part)
local function journal_of(dir, tag)
  local fs = require "runbook._fs"
  local json = require "runbook._json"
  for _, id in ipairs(fs.listdir(dir .. "/state/runs") or {}) do
    local evs = {}
    for line in io.lines(dir .. "/state/runs/" .. id .. "/journal.jsonl") do evs[#evs + 1] = json.decode(line) end
    if evs[1].params.image_tag == tag then return evs, id end
  end
  error("no run with image_tag " .. tag)
end

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

describe("runbooks/janua-rollout.lua", function()
  local sb, fake, dir, c

  setup(function()
    dir = rb.tmpdir("janua")
    -- the sandbox seeds namespace janua with janua-api at janua/api:2026.02.3
    sb = sandbox.up(dir, { services = { "k8s", "https" }, quiet = true })
    fake = sb.fake
    c = sb:cluster("janua")
    c:rollout_status { kind = "Deployment", name = "janua-api", timeout = 30 }
  end)
  teardown(function()
    if c then c:close() end
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  -- a release: --new, the image tag, and the values file's api_url and ca_file
  local function release(tag, extra)
    local a = { "--new", "--param", "image_tag=" .. tag }
    for _, x in ipairs(extra or {}) do a[#a + 1] = x end
    return sb:exec(RUNBOOK, a, { timeout = 120 })
  end
  local function exec(tag) return release(tag, { "--param", "rollout_timeout=30" }) end
  local function images()
    local out = {}
    for _, ct in ipairs(c:get { kind = "Deployment", name = "janua-api" }.spec.template.spec.containers) do out[ct.name] = ct.image end
    return out
  end

  it("checks and renders", function()
    local r = rb.run { "check", RUNBOOK, "--param", "image_tag=x" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook janua-rollout, 3 steps (0 manual), 0 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.truthy(d.stdout:find("- [ ] **J2** Roll out the new image\n  <br>after J1; timeout 1800 s; verified; can be rolled back", 1, true), d.stdout)
  end)

  it("runs dry and leaves the Deployment as it was", function()
    local r = sb:exec(RUNBOOK, { "--dry-run", "--param", "image_tag=2026.03.0" }, { timeout = 120 })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("J2       action k8s: patch apps/v1 Deployment janua/janua-api: patched (dry run)", 1, true), r.stderr)
    assert.truthy(r.stderr:find("dry run complete: 3 step(s) would run; nothing was written", 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", images().api)
  end)

  it("rolls out, and runbook rollback sets the previous image again", function()
    local r = exec("2026.03.1")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ api = "janua/api:2026.03.1", ["metrics-sidecar"] = "prom/statsd-exporter:v0.26.0" }, images())
    local d = c:get { kind = "Deployment", name = "janua-api" }
    assert.are.equal("2", d.metadata.annotations["deployment.kubernetes.io/revision"])
    assert.truthy(r.stderr:find('J2       deployment "janua-api" successfully rolled out', 1, true), r.stderr)
    local evs, run_id = journal_of(dir, "2026.03.1")
    assert.are.same({ previous_image = "janua/api:2026.02.3", revision = "1" }, of_type(evs, "step.finished", "J1")[1].outputs)
    local patch = of_type(evs, "action", "J2")[1]
    assert.are.same({ "patch", "strategic", "janua-api" }, { patch.verb, patch.patch_type, patch.name })
    local checks = of_type(evs, "action", "J3")[1]
    assert.are.same({ "http-check", 2, 0 }, { checks.kind, checks.passed, checks.failed })

    -- the release is not wanted after all
    local rr = sb:runbook({ "rollback", run_id }, { timeout = 120 })
    assert.are.equal(0, rr.code, rr.stderr)
    assert.truthy(rr.stderr:find("rolled back 3 step(s) of run " .. run_id, 1, true), rr.stderr)
    assert.are.equal("janua/api:2026.02.3", images().api)
    evs = journal_of(dir, "2026.03.1")
    local undone = {}
    for _, e in ipairs(of_type(evs, "step.undone")) do undone[#undone + 1] = e.step end
    assert.are.same({ "J3", "J2", "J1" }, undone)
    assert.are.equal("3", c:get({ kind = "Deployment", name = "janua-api" }).metadata.annotations["deployment.kubernetes.io/revision"])
    assert.are.equal(0, rb.run({ "audit", "verify", run_id, "--state", dir .. "/state" }, { cwd = dir }).code)
  end)

  it("reverts a rollout that does not finish in time, and says so", function()
    -- the controller stops here: the new template is never observed
    local d = c:get { kind = "Deployment", name = "janua-api" }
    fake:set_status { apiVersion = "apps/v1", kind = "Deployment", namespace = "janua", name = "janua-api",
      status = d.status, freeze = true }
    local r = release("2026.03.2", { "--param", "rollout_timeout=1" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("J2       FAILED: rollout of janua/api:2026.03.2 failed (timed out after 1 s waiting for apps/v1 Deployment janua/janua-api rollout", 1, true), r.stderr)
    assert.truthy(r.stderr:find("; rolled back to janua/api:2026.02.3, whose own rollout has not finished: timed out after 1 s", 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", images().api)
    local evs = journal_of(dir, "2026.03.2")
    local patches = {}
    for _, a in ipairs(of_type(evs, "action", "J2")) do patches[#patches + 1] = a.verb .. ":" .. a.result end
    assert.are.same({ "patch:patched", "patch:patched" }, patches)
    assert.are.equal(0, #of_type(evs, "step.started", "J3"))
  end)

  it("does not start when the Deployment could take replicas down during the rollout", function()
    c:apply { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "janua-batch" },
      spec = { replicas = 2, selector = { matchLabels = { app = "janua-batch" } },
        strategy = { type = "RollingUpdate", rollingUpdate = { maxUnavailable = "25%", maxSurge = 1 } },
        template = { metadata = { labels = { app = "janua-batch" } }, spec = { containers = { { name = "api", image = "janua/api:2026.02.3" } } } } } }
    c:rollout_status { kind = "Deployment", name = "janua-batch", timeout = 30 }
    local r = release("2026.03.4", { "--param", "deployment=janua-batch" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("J1       FAILED: deployment janua-batch has strategy RollingUpdate with maxUnavailable 25%: a zero-downtime rollout needs RollingUpdate with maxUnavailable: 0", 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", c:get({ kind = "Deployment", name = "janua-batch" }).spec.template.spec.containers[1].image)
  end)

  it("does not start while the running release is stuck", function()
    c:apply { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "janua-worker" },
      spec = { replicas = 1, selector = { matchLabels = { app = "janua-worker" } },
        template = { metadata = { labels = { app = "janua-worker" } }, spec = { containers = { { name = "api", image = "janua/api:2026.02.3" } } } } } }
    fake:control("POST", "/_fake/stuck", { kind = "Deployment", namespace = "janua", name = "janua-worker" })
    local r = release("2026.03.3", { "--param", "deployment=janua-worker" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find('J1       FAILED: apps/v1 Deployment janua/janua-worker rollout: deployment "janua-worker" exceeded its progress deadline', 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", c:get({ kind = "Deployment", name = "janua-worker" }).spec.template.spec.containers[1].image)
  end)
end)
