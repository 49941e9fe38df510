-- cluster:exec against the fake API server: the WebSocket channel protocol
-- (v5, and v4 when the server offers only that), argv, stdin (a secret,
-- redacted everywhere), stdout/stderr, exit codes, Status errors and the
-- audited action.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local secret = require "runbook.secret"
local json = require "runbook._json"
local rb = require "rbtest"
local fs = require "runbook._fs"

local RUNBOOK = [[
local k8s = require "runbook.k8s"
local secret = require "runbook.secret"
runbook "k8s-exec" { params = { kubeconfig = { doc = "kubeconfig" } } }

step "E1" { title = "Load the schema", run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig }
  local pw = secret.wrap("pw-" .. string.rep("z", 24))
  local r = c:exec { pod = "web-1", command = { "sh", "-c", "cat; echo; echo done >&2" }, stdin = pw, expect_code = 0 }
  print("stdout: " .. r.stdout .. "stderr: " .. r.stderr)
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

local function pod(name, phase, containers)
  local cs = {}
  for i, c in ipairs(containers or { "app" }) do cs[i] = { name = c, image = "busybox:1" } end
  return { apiVersion = "v1", kind = "Pod", metadata = { name = name, namespace = "default", labels = { app = "web" } },
    spec = { containers = cs }, status = { phase = phase or "Running" } }
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

describe("k8s exec", function()
  local fake, c
  setup(function()
    fake = k8sfake.start()
    c = k8s.connect { kubeconfig = fake.kubeconfig }
  end)
  teardown(function() fake:stop() end)
  before_each(function()
    fake:reset()
    audit.reset()
    fake:control("POST", "/_fake/objects", { objects = { pod("web-1"), pod("web-0", "Pending"), pod("two", "Running", { "app", "side" }),
      pod("done", "Succeeded") }, reconcile = false })
  end)

  it("runs the argv and captures stdout, stderr and the exit code", function()
    local r = c:exec { pod = "web-1", command = { "sh", "-c", "echo out; echo err >&2; echo \"$1\"", "sh", "a b" } }
    assert.are.same({ code = 0, stdout = "out\na b\n", stderr = "err\n" }, r)
    local execs = fake:control("GET", "/_fake/execs").items
    assert.are.equal("v5.channel.k8s.io", execs[1].protocol)
    assert.are.same({ "sh", "-c", "echo out; echo err >&2; echo \"$1\"", "sh", "a b" }, execs[1].command)
    assert.are.equal("app", execs[1].container)
  end)

  it("returns a non-zero exit as a result, and raises with expect_code", function()
    local r = c:exec { pod = "web-1", command = { "sh", "-c", "echo partial; exit 3" } }
    assert.are.equal(3, r.code)
    assert.are.equal("partial\n", r.stdout)
    local e = err_of(c.exec, c, { pod = "web-1", command = { "sh", "-c", "echo bad >&2; exit 4" }, expect_code = 0 })
    assert.are.equal("NonZeroExitCode", e.code)
    assert.are.equal("exec in pod default/web-1: sh exited with 4, expected 0: bad\n", e.message)
    assert.are.equal(0, c:exec { pod = "web-1", command = { "true" }, expect_code = true }.code)
  end)

  it("sends stdin, a secret, and redacts it in the output and the action", function()
    local s = secret.wrap("hunter2-very-secret")
    local r = c:exec { pod = "web-1", command = { "sh", "-c", "cat; echo; cat >&2 </dev/null; wc -c" }, stdin = s }
    assert.is_nil(r.stdout:find("hunter2", 1, true))
    assert.truthy(r.stdout:find("0\n$"))
    local r2 = c:exec { pod = "web-1", command = { "wc", "-c" }, stdin = s }
    assert.are.equal("19", r2.stdout:match("%d+"))
    local r4 = c:exec { pod = "web-1", command = { "sh", "-c", "printf %s \"$1\" | wc -c", "sh", s } }
    assert.are.equal("19", r4.stdout:match("%d+"))
    assert.are.same({ "sh", "-c", "printf %s \"$1\" | wc -c", "sh", "[REDACTED]" }, audit.recorded[#audit.recorded].argv)
    local r3 = c:exec { pod = "web-1", command = { "cat" }, stdin = "plain text" }
    assert.are.equal("plain text", r3.stdout)
    for _, a in ipairs(audit.recorded) do
      assert.is_nil(json.encode(a):find("hunter2", 1, true))
    end
  end)

  it("falls back to v4.channel.k8s.io, where stdin cannot be closed", function()
    fake:config { exec_v5 = false }
    local r = c:exec { pod = "web-1", command = { "head", "-c", "5" }, stdin = "hello world" }
    assert.are.same({ code = 0, stdout = "hello", stderr = "" }, r)
    assert.are.equal(3, c:exec { pod = "web-1", command = { "sh", "-c", "exit 3" } }.code)
    assert.are.equal("v4.channel.k8s.io", fake:control("GET", "/_fake/execs").items[1].protocol)
  end)

  it("records the audited action; a dry run records what it would run", function()
    c:exec { pod = "web-1", container = "app", command = { "sh", "-c", "exit 2" } }
    local a = audit.recorded[#audit.recorded]
    assert.are.equal("k8s", a.kind)
    assert.are.equal("exec", a.verb)
    assert.are.equal("v1 Pod default/web-1", a.object)
    assert.are.equal("app", a.container)
    assert.are.same({ "sh", "-c", "exit 2" }, a.argv)
    assert.are.equal(2, a.code)
    local before = #fake:control("GET", "/_fake/execs").items
    local r = c:exec { pod = "web-1", command = { "rm", "-rf", "/data" }, dry_run = true }
    assert.is_true(r.dry_run)
    a = audit.recorded[#audit.recorded]
    assert.is_true(a.dry_run)
    assert.are.same({ "rm", "-rf", "/data" }, a.argv)
    assert.are.equal(before, #fake:control("GET", "/_fake/execs").items)
  end)

  it("picks a running pod by selector and a container by name", function()
    local r = c:exec { selector = { app = "web" }, container = "app", command = { "sh", "-c", "echo $HOSTNAME" } }
    assert.are.equal(0, r.code)
    assert.truthy(r.stdout == "two\n" or r.stdout == "web-1\n")
    assert.are.equal("side\n", c:exec { pod = "two", container = "side", command = { "sh", "-c", "echo $CONTAINER" } }.stdout)
  end)

  it("raises Status errors: pod not found, container not found, pod not running", function()
    local e = err_of(c.exec, c, { pod = "nope", command = { "true" } })
    assert.are.equal("NotFound", e.code)
    assert.are.equal(404, e.status)
    assert.are.equal('pods "nope" not found', e.message)
    e = err_of(c.exec, c, { pod = "web-1", container = "db", command = { "true" } })
    assert.are.equal("BadRequest", e.code)
    assert.are.equal(400, e.status)
    assert.are.equal("container db is not valid for pod web-1", e.message)
    e = err_of(c.exec, c, { pod = "web-0", command = { "true" } })
    assert.are.equal(400, e.status)
    e = err_of(c.exec, c, { pod = "done", command = { "true" } })
    assert.are.equal("cannot exec into a container in a completed pod; current phase is Succeeded", e.message)
  end)

  it("raises Timeout when the command outlives its timeout", function()
    local e = err_of(c.exec, c, { pod = "web-1", command = { "sleep", "30" }, timeout = 0.5 })
    assert.are.equal("Timeout", e.code)
    assert.are.equal("exec in pod default/web-1: no outcome within 0.5s", e.message)
  end)

  it("raises a structured error when it cannot connect", function()
    local dead = k8s.connect { kubeconfig = fake.kubeconfig, retries = 0 }
    dead.client.server = "https://127.0.0.1:1"
    local e = err_of(dead.exec, dead, { pod = "web-1", command = { "true" } })
    assert.are.equal("k8s", e.kind)
    assert.are.equal("unreachable", e.code)
  end)

  it("journals the action in a real runbook exec, with the secret stdin redacted everywhere", function()
    local dir = rb.tmpdir("k8sexec")
    rb.write(dir .. "/exec.lua", RUNBOOK)
    local r = rb.run({ "exec", "exec.lua", "--param", "kubeconfig=" .. fake.kubeconfig }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local everything = r.stdout .. r.stderr .. all_text(dir .. "/.runbook")
    assert.is_nil(everything:find("pw-" .. string.rep("z", 24), 1, true))
    assert.truthy((r.stdout .. r.stderr):find("stdout: [REDACTED]\n", 1, true), r.stdout .. r.stderr)
    assert.truthy((r.stdout .. r.stderr):find("stderr: done\n", 1, true), r.stdout .. r.stderr)
    local action
    for _, e in ipairs(rb.journal(dir .. "/.runbook")) do
      if e.type == "action" and e.verb == "exec" then action = e end
    end
    assert.are.same({ "k8s", "v1 Pod default/web-1", { "sh", "-c", "cat; echo; echo done >&2" }, 0 },
      { action.kind, action.object, action.argv, action.code })
    rb.rmtree(dir)
  end)

  it("checks its arguments", function()
    assert.has_error(function() c:exec { pod = "web-1" } end, "exec: command must be a non-empty list of strings")
    assert.has_error(function() c:exec { command = { "true" } } end, "exec: pod or selector is required")
  end)
end)
