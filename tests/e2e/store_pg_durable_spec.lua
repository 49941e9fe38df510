-- When an event is durable on the PostgreSQL store, with a real server
-- that crashes (immediate shutdown: what is in its WAL buffers and not yet
-- written is lost, as a power cut loses what is not flushed). A step's
-- step.finished is committed without a WAL flush of its own and shares
-- the next event's (docs/journal.md, "Durability"); these specs hold the
-- store to the rule that no code runs while an event before it is not
-- durable. The server's WAL writer is slowed to 10 s and autovacuum is
-- off, so nothing but runbook's own commits flushes the WAL in between.
local rb = require "rbtest"
local pgserver = require "pgserver"
local proc = require "runbook._proc"

local srv
-- a fresh database and its URL (no password: it goes through PGPASSWORD)
local function fresh_db() return srv:store_db("durable") end

local env_with = pgserver.password_env

local function wait_for(what, fn) return rb.wait_for(what, fn, { timeout = 60 }) end

-- the server dies at once: no shutdown checkpoint, unwritten WAL is lost
local function crash()
  local p = assert(proc.spawn { argv = { "runuser", "-u", "postgres", "--", pgserver.BIN .. "/pg_ctl", "-D", srv.data,
    "-m", "immediate", "-w", "stop" }, stdin = "null" })
  local r = p:communicate { timeout = 60 }
  assert(r.code == 0, r.stdout .. r.stderr)
  srv.pid = nil
end

setup(function()
  srv = pgserver.start { settings = { wal_writer_delay = "10000ms", autovacuum = "off" } }
end)
teardown(function() if srv then srv:stop() end end)

local BOOK = [[
runbook "durable" {}
local function effect(what)
  local f = assert(io.open(os.getenv("EFFECTS"), "a")) f:write(what, "\n") f:close()
  return what
end
step "S1" { run = function(ctx) ctx:once("e", function() return effect("S1") end) end }
step "S2" {
  -- runs before S2's step.started: the only thing between it and S1's
  -- step.finished is the engine's sync
  verify = function(ctx)
    local f = io.open(os.getenv("MARK"), "w") f:close()
    while not io.open(os.getenv("GO")) do ctx:sleep(0.02) end
    local e = io.open(os.getenv("EFFECTS"))
    local done = e and e:read("a"):find("S2", 1, true) ~= nil
    if e then e:close() end
    return done
  end,
  run = function(ctx) ctx:once("e", function() return effect("S2") end) end,
}
]]

local function book(dir) rb.write(dir .. "/d.lua", BOOK) end

describe("durability on the PostgreSQL store", function()
  it("makes a step's step.finished durable before the next code runs, though it has no flush of its own", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgdur")
    book(dir)
    local env = env_with { EFFECTS = dir .. "/effects", MARK = dir .. "/mark", GO = dir .. "/go" }
    local p = rb.exec({ "d.lua" }, { state = url, cwd = dir, env = env, start = true, stderr = "pipe" })
    wait_for("S2's verify to run", function() return rb.exists(dir .. "/mark") end)
    -- S1 is finished and S2's verify (code) runs: the server dies now
    crash()
    rb.write(dir .. "/go", "")
    local r = p:communicate { timeout = 120 }
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("in the PostgreSQL store", 1, true), r.stderr)
    srv:restart()
    assert.are.equal("step.finished S1", srv:psql("SELECT type || ' ' || step FROM runbook_events ORDER BY seq DESC LIMIT 1", db),
      "S1's step.finished survived the crash")
    os.remove(dir .. "/mark")
    r = rb.exec({ "d.lua" }, { state = url, cwd = dir, env = env_with { EFFECTS = dir .. "/effects", MARK = dir .. "/mark", GO = dir .. "/go" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("S1\nS2\n", rb.read(dir .. "/effects"))
    assert.are.equal("1", srv:psql("SELECT count(*) FROM runbook_events WHERE type = 'step.started' AND step = 'S1'", db), "S1 ran once")
    assert.are.equal(0, rb.run({ "audit", "verify", "last", "--state", url }, { cwd = dir, env = env_with() }).code)
    rb.rmtree(dir)
  end)

  it("runs no code when the flush of a step.finished fails: the server went away right after it", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgdur3")
    book(dir)
    local env = env_with { EFFECTS = dir .. "/effects", MARK = dir .. "/mark", GO = dir .. "/go",
      RUNBOOK_FAILPOINT = "after:4" } -- run.started, S1 started, S1's memo, S1 finished
    local p = rb.exec({ "d.lua" }, { state = url, cwd = dir, env = env, start = true, stderr = "pipe" })
    wait_for("the stop after S1's step.finished", function() return p:stopped() or p:wait(0) ~= nil end)
    srv:halt()
    p:kill("CONT")
    local r = p:communicate { timeout = 120 }
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("cannot make seq 4 durable in the PostgreSQL store postgres://rbtest@127.0.0.1:" .. srv.port, 1, true), r.stderr)
    assert.is_nil(rb.exists(dir .. "/mark") or nil, "S2's verify did not run")
    srv:restart()
    rb.write(dir .. "/go", "")
    r = rb.exec({ "d.lua" }, { state = url, cwd = dir, env = env_with { EFFECTS = dir .. "/effects", MARK = dir .. "/mark", GO = dir .. "/go" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("S1\nS2\n", rb.read(dir .. "/effects"))
    assert.are.equal("1", srv:psql("SELECT count(*) FROM runbook_events WHERE type = 'step.started' AND step = 'S1'", db),
      "S1 ran once: a fast shutdown kept its step.finished")
    assert.are.equal(0, rb.run({ "audit", "verify", "last", "--state", url }, { cwd = dir, env = env_with() }).code)
    rb.rmtree(dir)
  end)

  it("keeps every event durable that a side effect followed when the server crashes right after a step.finished", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgdur2")
    book(dir)
    rb.write(dir .. "/go", "")
    local env = env_with { EFFECTS = dir .. "/effects", MARK = dir .. "/mark", GO = dir .. "/go",
      RUNBOOK_FAILPOINT = "after:4" } -- run.started, S1 started, S1's memo, S1 finished
    local p = rb.exec({ "d.lua" }, { state = url, cwd = dir, env = env, start = true, stderr = "pipe" })
    wait_for("the stop after S1's step.finished", function() return p:stopped() or p:wait(0) ~= nil end)
    assert.are.equal("step.finished S1", srv:psql("SELECT type || ' ' || step FROM runbook_events ORDER BY seq DESC LIMIT 1", db))
    crash()
    p:kill("KILL")
    p:wait(30)
    srv:restart()
    -- S1's memo was durable before its effect was used; its step.finished
    -- may be lost with the server (as a power cut loses it on the file
    -- store): then S1 runs again, and its effect is not repeated
    local n = tonumber(srv:psql("SELECT count(*) FROM runbook_events", db))
    assert.truthy(n == 3 or n == 4, "events after the crash: " .. tostring(n))
    assert.are.equal("step.memo S1", srv:psql("SELECT type || ' ' || step FROM runbook_events WHERE seq = 3", db))
    local r = rb.exec({ "d.lua" }, { state = url, cwd = dir, env = env_with { EFFECTS = dir .. "/effects", MARK = dir .. "/mark", GO = dir .. "/go" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("S1\nS2\n", rb.read(dir .. "/effects"))
    assert.are.equal(0, rb.run({ "audit", "verify", "last", "--state", url }, { cwd = dir, env = env_with() }).code)
    rb.rmtree(dir)
  end)
end)
