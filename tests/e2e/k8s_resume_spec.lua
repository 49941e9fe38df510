-- A real runbook process applying twenty objects in one step is killed with
-- SIGKILL midway (stopped by the journal failpoint right after the eighth
-- object's action event is durable: the end of the first wave of eight
-- concurrent applies, apply_manifests' default), then resumed: no apply of
-- the next wave happened before the wave's actions were durable, every
-- object is there once, and the action events tell which were created
-- before the kill and which were found unchanged after it.
local rb = require "rbtest"
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"

local RUNBOOK = [[
local k8s = require "runbook.k8s"
runbook "k8s-resume" {
  params = {
    kubeconfig = { doc = "the cluster's kubeconfig" },
    namespace = { default = "resume" },
  },
}

step "ns" { title = "namespace", run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig }
  c:apply { apiVersion = "v1", kind = "Namespace", metadata = { name = ctx.params.namespace } }
end }

step "apply" { title = "apply twenty ConfigMaps", run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig, namespace = ctx.params.namespace }
  local objs = {}
  for i = 1, 20 do
    objs[i] = { apiVersion = "v1", kind = "ConfigMap",
      metadata = { name = string.format("cm-%02d", i), labels = { set = "resume" } },
      data = { index = tostring(i) } }
  end
  local report = c:apply_manifests(objs)
  return { created = report.created, unchanged = report.unchanged }
end }
]]

local function actions(events, step)
  local out = {}
  for _, e in ipairs(events) do
    if e.type == "action" and e.step == step then out[#out + 1] = e end
  end
  return out
end

describe("k8s resume after SIGKILL", function()
  local fake, dir
  setup(function()
    fake = k8sfake.start()
    dir = rb.tmpdir("k8sresume")
    rb.write(dir .. "/resume.lua", RUNBOOK)
  end)
  teardown(function()
    fake:stop()
    rb.rmtree(dir)
  end)

  it("finishes with every object present once, and the actions say created or unchanged", function()
    -- a reference run (its own state and namespace) numbers the journal events
    local ref = rb.run({ "exec", "resume.lua", "--state", dir .. "/ref-state", "--param", "kubeconfig=" .. fake.kubeconfig,
      "--param", "namespace=reference" }, { cwd = dir })
    assert.are.equal(0, ref.code, ref.stderr)
    local events = rb.journal(dir .. "/ref-state")
    local applied = actions(events, "apply")
    assert.are.equal(20, #applied)
    local WAVE = 8 -- apply_manifests' default concurrency
    local last_of_wave = applied[WAVE].seq

    local p = rb.start({ "exec", "resume.lua", "--state", dir .. "/state", "--param", "kubeconfig=" .. fake.kubeconfig },
      { cwd = dir, env = { RUNBOOK_FAILPOINT = "after:" .. last_of_wave } })
    assert.is_true(p:stopped(30), "the run did not reach event " .. last_of_wave)
    p:kill("KILL")
    local _, sig = p:wait(10)
    assert.are.equal(9, sig)

    local c = k8s.connect { kubeconfig = fake.kubeconfig, namespace = "resume" }
    assert.are.equal(WAVE, #c:list { kind = "ConfigMap", label_selector = { set = "resume" } })

    local r = rb.run({ "exec", "resume.lua", "--state", dir .. "/state", "--param", "kubeconfig=" .. fake.kubeconfig }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)

    local items = c:list { kind = "ConfigMap", label_selector = { set = "resume" } }
    local names = {}
    for _, it in ipairs(items) do names[#names + 1] = it.metadata.name end
    table.sort(names)
    local want = {}
    for i = 1, 20 do want[i] = string.format("cm-%02d", i) end
    assert.are.same(want, names)

    events = rb.journal(dir .. "/state")
    local resumed_at
    for i, e in ipairs(events) do if e.type == "run.resumed" then resumed_at = i end end
    assert.is_number(resumed_at)
    local before, after = {}, {}
    for i, e in ipairs(events) do
      if e.type == "action" and e.step == "apply" then
        local t = i < resumed_at and before or after
        t[#t + 1] = e.name .. "=" .. e.result
      end
    end
    local want_before, want_after = {}, {}
    for i = 1, WAVE do want_before[i] = string.format("cm-%02d=created", i) end
    for i = 1, WAVE do want_after[i] = string.format("cm-%02d=unchanged", i) end
    for i = WAVE + 1, 20 do want_after[i] = string.format("cm-%02d=created", i) end
    assert.are.same(want_before, before)
    assert.are.same(want_after, after)
    for _, e in ipairs(actions(events, "apply")) do
      assert.are.same({ "k8s", "apply", "v1", "ConfigMap", "resume", e.result == "created" and 201 or 200 },
        { e.kind, e.verb, e.api_version, e.object_kind, e.namespace, e.code })
    end
    local finished
    for _, e in ipairs(events) do if e.type == "step.finished" and e.step == "apply" then finished = e end end
    assert.are.same({ created = 20 - WAVE, unchanged = WAVE }, finished.outputs)
    local v = rb.run({ "audit", "verify", "last", "--state", dir .. "/state" }, { cwd = dir })
    assert.are.equal(0, v.code, v.stderr)
  end)
end)
