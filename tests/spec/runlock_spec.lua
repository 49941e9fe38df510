-- runbook._engine.runlock: the run lock behind `runbook exec --lock`, in process
-- and between two real runbook processes contending for one Redis lock.
local runlock = require "runbook._engine.runlock"
local host = require "runbook._host"
local fs = require "runbook._fs"
local json = require "runbook._json"
local redisserver = require "redisserver"
local rbtest = require "rbtest"

-- A process holding the lock: a spec under `runbook test` (the engine's
-- run lock is private by its name, so a runbook cannot require it; specs
-- can). It reports contention on stderr and fails, as a step would.
local HOLDER = [[
local runlock = require "runbook._engine.runlock"
local wait = require "runbook.wait"
local url, dir, run = os.getenv("LOCK_URL"), os.getenv("LOCK_DIR"), os.getenv("LOCK_RUN")
it("holds the shared lock until told to let go", function()
  local h, holder = runlock.acquire(url, "shared-book", { ttl = 2, run = run })
  if not h then
    io.stderr:write("locked by " .. holder .. "\n")
    error("locked by " .. holder, 0)
  end
  local f = assert(io.open(dir .. "/held-" .. run, "w"))
  f:write(h.owner)
  f:close()
  wait(function()
    local r = io.open(dir .. "/release")
    if r then r:close() return true end
    return false
  end, { timeout = 30, interval = 0.05, what = "the release file" })
  h:check()
  assert(h:release(), "the lock was lost before release")
end)
]]

local function held_files(dir)
  local out = {}
  for _, n in ipairs(fs.listdir(dir) or {}) do
    if n:match("^held%-") then out[#out + 1] = n end
  end
  return out
end

local function wait_held(dir, count)
  local deadline = host.monotime() + 15
  while host.monotime() < deadline do
    if #held_files(dir) >= count then return true end
    host.sleep(0.05)
  end
  return false
end

describe("runbook._engine.runlock", function()
  local srv

  setup(function() srv = redisserver.start() end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:cli("FLUSHALL") end)

  it("takes the lock on runbook:lock:<name>, naming user@host, pid and run", function()
    local h = assert(runlock.acquire(srv.url, "first-deploy", { ttl = 10, run = "first-deploy-1" }))
    local want = string.format("%s@%s pid %d run first-deploy-1", host.user(), host.hostname(), host.pid())
    assert.are.equal("runbook:lock:first-deploy", h.key)
    assert.are.equal(want, h.owner)
    assert.are.equal(want, json.decode(srv:cli("GET", "runbook:lock:first-deploy")).owner)

    local none, holder = runlock.acquire(srv.url, "first-deploy", { run = "first-deploy-2" })
    assert.is_nil(none)
    assert.matches("^" .. want:gsub("%p", "%%%0") .. " since %d%d%d%d%-", holder)

    assert.is_true(h:check())
    assert.is_true(h:renew())
    assert.is_true(h:release())
    assert.is_false(h:release())
    assert.are.equal("", srv:cli("GET", "runbook:lock:first-deploy"))
  end)

  it("keeps the lock for longer than its ttl while the run lasts", function()
    local h = assert(runlock.acquire(srv.url, "long", { ttl = 1 }))
    host.sleep(1.6)
    local none, holder = runlock.acquire(srv.url, "long")
    assert.is_nil(none)
    assert.is_string(holder)
    assert.is_true(h:check())
    assert.is_true(h:release())
  end)

  it("raises one clear line when Redis is down or refuses the password", function()
    local port = rbtest.free_port()
    local ok, err = pcall(runlock.acquire, "redis://127.0.0.1:" .. port, "x")
    assert.is_false(ok)
    assert.are.equal(string.format("redis 127.0.0.1:%d: cannot connect: Connection refused", port), err.message)
    local ok2, err2 = pcall(runlock.acquire, string.format("redis://:nope-nope@127.0.0.1:%d", srv.port), "x")
    assert.is_false(ok2)
    assert.are.equal("auth", err2.code)
  end)

  describe("two runbook processes", function()
    local dir, spec

    before_each(function()
      dir = rbtest.tmpdir("contend")
      spec = dir .. "/holder_spec.lua"
      rbtest.write(spec, HOLDER)
    end)
    after_each(function() rbtest.rmtree(dir) end)

    local function args(run)
      return { "test", spec }, { env = { LOCK_URL = srv.url, LOCK_DIR = dir, LOCK_RUN = run }, stderr = "null" }
    end
    local function run(id) local a, o = args(id); o.timeout = 30; return rbtest.run(a, o) end
    local function start(id) return rbtest.start(args(id)) end

    it("let only one drive the runbook; the other is told who holds it", function()
      local a = start("run-a")
      assert.is_true(wait_held(dir, 1), "the first process never took the lock")
      local a_run = held_files(dir)[1]:match("^held%-(.*)$")

      local b = run("run-b")
      assert.are.equal(1, b.code)
      local want = string.format("locked by %s@%s pid %d run %s since ", host.user(), host.hostname(), a:pid(), a_run)
      assert.is_truthy(b.stderr:find(want, 1, true), b.stderr)

      -- past the ttl (2 s) the first process still holds it: it is renewed
      host.sleep(2.5)
      local b2 = run("run-b")
      assert.are.equal(1, b2.code)
      assert.is_truthy(b2.stderr:find(want, 1, true), b2.stderr)

      rbtest.write(dir .. "/release", "")
      local code = a:wait(20)
      assert.are.equal(0, code)
      assert.are.equal("", srv:cli("GET", "runbook:lock:shared-book"))

      local b3 = run("run-b")
      assert.are.equal(0, b3.code, b3.stderr)
      assert.are.equal(2, #held_files(dir))
    end)

    it("take over at once the lock of a process of this machine that was killed", function()
      local a = start("run-a")
      assert.is_true(wait_held(dir, 1), "the first process never took the lock")
      local a_pid, a_owner = a:pid(), rbtest.read(dir .. "/" .. held_files(dir)[1])
      a:kill("KILL", true)
      a:wait(10)
      -- its lock is still there (its ttl has not passed), and names a pid that is gone
      assert.truthy(srv:cli("GET", "runbook:lock:shared-book"):find("pid " .. a_pid .. " ", 1, true))
      assert.is_false(host.pid_alive(a_pid))
      local h = assert(runlock.acquire(srv.url, "shared-book", { ttl = 30, run = "run-c" }))
      assert.are.equal(a_owner, h.took_over)
      assert.truthy(srv:cli("GET", "runbook:lock:shared-book"):find("run run-c", 1, true))
      h:release()
    end)

    it("leave a holder named on another machine to its ttl", function()
      local other = json.encode { owner = "ci@build-7 pid 4242 run elsewhere", since = "2026-12-04T00:00:00Z", token = "00" }
      srv:cli("SET", "runbook:lock:shared-book", other, "PX", "2000")
      local h, holder = runlock.acquire(srv.url, "shared-book", { ttl = 5 })
      assert.is_nil(h)
      assert.truthy(holder:find("ci@build-7 pid 4242 run elsewhere", 1, true), holder)
      -- nobody renews it: Redis drops it once its ttl (2 s) has passed
      rbtest.wait_for("the other machine's lock to expire", function()
        return srv:cli("EXISTS", "runbook:lock:shared-book") == "0"
      end)
      rbtest.write(dir .. "/release", "")
      local b2 = run("run-b")
      assert.are.equal(0, b2.code, b2.stderr)
    end)
  end)
end)
