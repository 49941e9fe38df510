-- runbook.k8s inside real `runbook exec` processes: a Secret from a
-- generated password never appears in clear on the console, in the run
-- log or in the journal; --dry-run sends every write as dryRun=All; a
-- broken kubeconfig fails the step with a config error naming the field.
local rb = require "rbtest"
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local fs = require "runbook._fs"
local crypto = require "runbook._crypto"

local RUNBOOK = [[
local k8s = require "runbook.k8s"
local secret = require "runbook.secret"
runbook "k8s-deploy" {
  params = { kubeconfig = { doc = "kubeconfig" }, context = { default = "fake" } },
}

step "M3" { title = "Create the postgres Secret", retry = { attempts = 3, delay = 0.1 }, run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context }
  local pw = ctx:once("pg-password", function() return secret.random { bytes = 32, encoding = "hex" } end)
  local _, result = c:secret { name = "postgres", data = { user = "bowmark", password = pw, host = "postgres" } }
  -- read back and print: the value must come out redacted
  local s = c:get_secret "postgres" -- nil in a dry run
  if s then print("password is " .. tostring(s.data.password) .. " / " .. s.data.password:reveal()) end
  return { result = result }
end }

step "M4" { title = "Apply the app", run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig, context = ctx.params.context }
  c:apply { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "server" },
    spec = { replicas = 1, selector = { matchLabels = { app = "server" } },
      template = { metadata = { labels = { app = "server" } }, spec = { containers = { { name = "s", image = "server:1",
        env = { { name = "PGPASSWORD", valueFrom = { secretKeyRef = { name = "postgres", key = "password" } } } } } } } } } }
  c:rollout_status { kind = "Deployment", name = "server", timeout = 30 }
end }
]]

-- every file under dir, concatenated
local function all_text(dir)
  local out = {}
  local function walk(d)
    for _, n in ipairs(fs.listdir(d) or {}) do
      local p = d .. "/" .. n
      local st = fs.stat(p)
      if st and st.type == "directory" then walk(p) else out[#out + 1] = rb.read(p) or "" end
    end
  end
  walk(dir)
  return table.concat(out, "\n")
end

describe("runbook.k8s in runbook exec", function()
  local fake, dir
  setup(function()
    fake = k8sfake.start()
  end)
  teardown(function() fake:stop() end)
  before_each(function()
    fake:reset()
    dir = rb.tmpdir("k8srun")
    rb.write(dir .. "/deploy.lua", RUNBOOK)
  end)
  after_each(function() rb.rmtree(dir) end)

  it("keeps the generated password out of the console, the log and the journal", function()
    local r = rb.run({ "exec", "deploy.lua", "--param", "kubeconfig=" .. fake.kubeconfig }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local c = k8s.connect { kubeconfig = fake.kubeconfig }
    local pw = c:get_secret("postgres").data.password:reveal()
    assert.are.equal(64, #pw)
    local everything = r.stdout .. r.stderr .. all_text(dir .. "/.runbook")
    assert.is_nil(everything:find(pw, 1, true))
    assert.is_nil(everything:find(crypto.base64_encode(pw), 1, true))
    assert.truthy((r.stdout .. r.stderr):find("password is [REDACTED] / [REDACTED]", 1, true), r.stdout .. r.stderr)
    local events = rb.journal(dir .. "/.runbook")
    local secret_action
    for _, e in ipairs(events) do
      if e.type == "action" and e.object_kind == "Secret" then secret_action = e end
    end
    assert.are.same({ "create", "created", { "host", "password", "user" } }, { secret_action.verb, secret_action.result, secret_action.keys })
  end)

  it("sends every write as a server-side dry run under --dry-run and stores nothing", function()
    local r = rb.run({ "exec", "deploy.lua", "--dry-run", "--param", "kubeconfig=" .. fake.kubeconfig }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local writes = 0
    for _, e in ipairs(fake:requests()) do
      if e.method ~= "GET" and not e.path:match("^/_fake") then
        writes = writes + 1
        assert.are.equal("All", e.params.dryRun, e.method .. " " .. e.path)
      end
    end
    assert.are.equal(2, writes)
    local c = k8s.connect { kubeconfig = fake.kubeconfig }
    assert.is_nil(c:get_secret "postgres")
    assert.is_nil(c:get { kind = "Deployment", name = "server" })
  end)

  it("stays interruptible while it waits (Ctrl-C), and within the step's time limit", function()
    rb.write(dir .. "/wait.lua", [[
local k8s = require "runbook.k8s"
runbook "k8s-wait" { params = { kubeconfig = {}, limit = { default = "600" } } }
step "W" { title = "wait for a rollout that never ends", timeout = 600, run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig }
  c:rollout_status { kind = "Deployment", name = "never", timeout = 600 }
end }
step "T" { title = "the same under a 1 s step limit", timeout = 1, run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig }
  c:rollout_status { kind = "Deployment", name = "never", timeout = 600 }
end }
]])
    fake:seed { { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "never", generation = 1 },
      spec = { replicas = 1, selector = { matchLabels = { app = "n" } }, template = { metadata = { labels = { app = "n" } },
        spec = { containers = { { name = "c", image = "x" } } } } },
      status = { observedGeneration = 1, replicas = 1, updatedReplicas = 1, availableReplicas = 0 } } }
    fake:control("POST", "/_fake/status", { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "never",
      freeze = true, status = { observedGeneration = 1, replicas = 1, updatedReplicas = 1, availableReplicas = 0 } })
    local p = rb.start({ "exec", "wait.lua", "--only", "W", "--param", "kubeconfig=" .. fake.kubeconfig }, { cwd = dir })
    -- once it watches, Ctrl-C
    fake:await("GET", "deployments$", 1, { watch = true })
    local t0 = require("runbook._host").monotime()
    p:kill("INT")
    local code = p:wait(10)
    assert.is_true(require("runbook._host").monotime() - t0 < 3)
    assert.are.equal(130, code)
    local r = rb.run({ "exec", "wait.lua", "--new", "--only", "T", "--param", "kubeconfig=" .. fake.kubeconfig }, { cwd = dir, timeout = 20 })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("timed out after 1 s", 1, true), r.stderr)
  end)

  it("keeps raw requests and credential plugins away from runbooks", function()
    rb.write(dir .. "/raw.lua", [[
runbook "raw" {}
step "R" { run = function() require "runbook.k8s._exec" end }
]])
    local r = rb.run({ "exec", "raw.lua" }, { cwd = dir })
    assert.are_not.equal(0, r.code)
    assert.truthy(r.stderr:find("module 'runbook.k8s._exec' is not available to runbooks", 1, true), r.stderr)
  end)

  it("fails the step with a config error naming the kubeconfig field, exit 2, without retrying", function()
    local r = rb.run({ "exec", "deploy.lua", "--param", "kubeconfig=" .. fake.kubeconfig, "--param", "context=nowhere" }, { cwd = dir })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("configuration error: ", 1, true), r.stderr)
    local msg = "kubeconfig " .. fake.kubeconfig .. ': context "nowhere" not found (contexts: fake)'
    assert.truthy(r.stderr:find(msg, 1, true), r.stderr)
    local failed, attempts = nil, 0
    for _, e in ipairs(rb.journal(dir .. "/.runbook")) do
      if e.type == "step.failed" then failed = e end
      if e.type == "step.started" and e.step == "M3" then attempts = attempts + 1 end
    end
    assert.are.same({ "M3", "config", msg }, { failed.step, failed.error.kind, failed.error.message })
    assert.are.equal(1, attempts)
    assert.is_true(failed.final)
    assert.are.equal(0, #fake:matching(nil, "^/api"))
  end)
end)
