-- The PostgreSQL store with real parts: a real PostgreSQL (pgserver) and
-- real `runbook` processes. Every command on the shared store, races
-- between drivers, many runs at once, a resume from another HOME and
-- working directory, SIGKILL and resume, tampering, a newer schema, an
-- unreachable store, and operators with INSERT/SELECT grants only.
local rb = require "rbtest"
local pgserver = require "pgserver"
local host = require "runbook._host"
local json = require "runbook._json"

local srv

-- a fresh database and its URL (no password: it goes through PGPASSWORD)
local function fresh_db(user) return srv:store_db("store", user) end

local ENV = pgserver.password_env()
local env_with = pgserver.password_env

local function rbrun(args, dir, extra_env)
  return rb.run(args, { cwd = dir, env = env_with(extra_env), timeout = 120 })
end

-- waits until fn() is true, polling with a deadline
local function wait_for(what, fn, deadline) return rb.wait_for(what, fn, { timeout = deadline or 60 }) end

local BLOCKING = [[
runbook "blocking" {}
step "A" { run = function(ctx)
  local f = io.open(os.getenv("MARK"), "w") f:close()
  while not io.open(os.getenv("GO")) do ctx:sleep(0.02) end
end }
step "B" { run = function() end }
]]

local SIMPLE = [[
runbook "simple" {}
step "A" { run = function(ctx) return { v = ctx:once("k", function() return 41 + 1 end) } end }
step "B" { needs = "A", run = function(ctx) ctx:log("B sees " .. ctx.outputs.A.v) end }
]]

setup(function() srv = pgserver.start() end)
teardown(function() if srv then srv:stop() end end)

describe("the PostgreSQL store", function()
  it("runs every reading command the same as the file store", function()
    local url = fresh_db()
    local dir = rb.tmpdir("pgcmd")
    rb.write(dir .. "/s.lua", SIMPLE)
    local r = rbrun({ "exec", "s.lua", "--state", url }, dir)
    assert.are.equal(0, r.code, r.stderr)
    assert.is_nil(rb.exists(dir .. "/.runbook") or nil, "nothing is written to the working directory's store")
    r = rbrun({ "runs", "--state", url, "--output", "json" }, dir)
    assert.are.equal(0, r.code, r.stderr)
    local row = json.decode((r.stdout:match("^[^\n]+")))
    assert.are.equal("simple", row.runbook)
    assert.are.equal("finished", row.status)
    assert.are.equal(2, row.done)
    r = rbrun({ "status", row.run, "--state", url }, dir)
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("hash chain intact", 1, true), r.stdout)
    r = rbrun({ "audit", "verify", row.run, "--state", url }, dir)
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("run " .. row.run .. ": 7 events, hash chain intact", 1, true), r.stdout)
    -- the events are the file store's lines: `log --output json` gives them back
    r = rbrun({ "log", row.run, "--state", url, "--output", "json" }, dir)
    assert.are.equal(0, r.code, r.stderr)
    local n = 0
    for line in r.stdout:gmatch("[^\n]+") do
      n = n + 1
      assert.are.equal(n, json.decode(line).seq)
    end
    assert.are.equal(7, n)
    assert.are.equal(1, json.decode((r.stdout:match("^[^\n]+"))).log_format, "the export's version")
    local rows = srv:psql("SELECT seq || ' ' || type || ' ' || coalesce(step, '-') FROM runbook_events ORDER BY seq", url:match("/(%w+)$"))
    assert.truthy(rows:find("3 step.memo A", 1, true), rows)
    rb.rmtree(dir)
  end)

  it("refuses a password in --state, and says so without printing it", function()
    local url = fresh_db()
    local dir = rb.tmpdir("pgpw")
    local r = rbrun({ "runs", "--state", (url:gsub("^postgres://rbtest@", "postgres://rbtest:" .. pgserver.PASSWORD .. "@")) }, dir)
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("shows in `ps`", 1, true), r.stderr)
    assert.is_nil(r.stderr:find(pgserver.PASSWORD, 1, true))
    -- through RUNBOOK_STATE a password is accepted, never shown
    r = rbrun({ "runs" }, dir, { PGPASSWORD = "", RUNBOOK_STATE = (url:gsub("^postgres://rbtest@", "postgres://rbtest:" .. pgserver.PASSWORD .. "@")) })
    assert.are.equal(0, r.code, r.stderr)
    assert.is_nil((r.stdout .. r.stderr):find(pgserver.PASSWORD, 1, true))
    rb.rmtree(dir)
  end)

  it("exits 2 naming the store when the database cannot be reached", function()
    local dir = rb.tmpdir("pgdown")
    rb.write(dir .. "/s.lua", SIMPLE)
    local port = rb.free_port()
    local r = rbrun({ "exec", "s.lua", "--state", string.format("postgres://rbtest@127.0.0.1:%d/x", port) }, dir)
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find(string.format("cannot reach the PostgreSQL store postgres://rbtest@127.0.0.1:%d/x", port), 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("refuses a schema newer than it knows, naming both versions", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgschema")
    assert.are.equal(0, rbrun({ "runs", "--state", url }, dir).code)
    srv:psql("INSERT INTO runbook_schema (version, by_runbook) VALUES (7, 'future')", db)
    local r = rbrun({ "runs", "--state", url }, dir)
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("has schema version 7, newer than this runbook", 1, true), r.stderr)
    assert.truthy(r.stderr:find("(version 2)", 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("lets one of two execs of one run drive it; the other exits 4 naming the holder; one chain", function()
    local url = fresh_db()
    local dir = rb.tmpdir("pglock")
    rb.write(dir .. "/b.lua", BLOCKING)
    local env = env_with { MARK = dir .. "/mark", GO = dir .. "/go" }
    local first = rb.exec({ "b.lua" }, { state = url, cwd = dir, env = env, start = true })
    wait_for("step A to start", function() return rb.exists(dir .. "/mark") end)
    local r = rb.exec({ "b.lua" }, { state = url, cwd = dir, env = env })
    assert.are.equal(4, r.code, r.stderr)
    assert.truthy(r.stderr:find(string.format("is locked by pid %d on %s (user %s)", first:pid(), host.hostname(), host.user()), 1, true), r.stderr)
    rb.write(dir .. "/go", "")
    assert.are.equal(0, first:communicate({ timeout = 60 }).code)
    local a = rbrun({ "audit", "verify", "last", "--state", url }, dir)
    assert.are.equal(0, a.code, a.stderr)
    rb.rmtree(dir)
  end)

  it("makes exactly one run of two fresh execs at once, 30 times out of 30", function()
    local dir = rb.tmpdir("pgrace")
    rb.write(dir .. "/b.lua", BLOCKING)
    for round = 1, 30 do
      local url, db = fresh_db()
      os.remove(dir .. "/mark")
      os.remove(dir .. "/go")
      local env = env_with { MARK = dir .. "/mark", GO = dir .. "/go" }
      local procs = {
        rb.exec({ "b.lua" }, { state = url, cwd = dir, env = env, start = true, stderr = "pipe" }),
        rb.exec({ "b.lua" }, { state = url, cwd = dir, env = env, start = true, stderr = "pipe" }),
      }
      local loser
      wait_for("one exec to end", function()
        for i, p in ipairs(procs) do
          if p:wait(0.01) ~= nil then loser = i return true end
        end
      end)
      local lr = procs[loser]:communicate { timeout = 10 }
      assert.are.equal(4, lr.code, "round " .. round .. ": " .. lr.stderr)
      assert.truthy(lr.stderr:find("is locked by pid " .. procs[3 - loser]:pid(), 1, true), "round " .. round .. ": " .. lr.stderr)
      rb.write(dir .. "/go", "")
      local wr = procs[3 - loser]:communicate { timeout = 60 }
      assert.are.equal(0, wr.code, "round " .. round .. ": " .. wr.stderr)
      assert.are.equal("1", srv:psql("SELECT count(*) FROM runbook_runs", db), "round " .. round)
    end
    rb.rmtree(dir)
  end)

  it("keeps 20 runs of 100 steps driven by 20 processes at once whole: no lost or duplicated event", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgmany")
    local procs = {}
    for i = 1, 20 do
      local lines = { string.format('runbook "many%02d" {}', i) }
      for s = 1, 100 do lines[#lines + 1] = string.format('step "S%03d" { run = function() end }', s) end
      rb.write(string.format("%s/m%02d.lua", dir, i), table.concat(lines, "\n") .. "\n")
    end
    for i = 1, 20 do
      procs[i] = rb.exec({ string.format("m%02d.lua", i) }, { state = url, cwd = dir, env = ENV, start = true, stderr = "pipe" })
    end
    for i, p in ipairs(procs) do
      local r = p:communicate { timeout = 300 }
      assert.are.equal(0, r.code, "run " .. i .. ": " .. r.stderr)
    end
    -- run.started, 100 x (started, finished), run.finished
    local counts = srv:psql("SELECT count(*) || ' ' || count(DISTINCT (run, seq)) || ' ' || count(DISTINCT run) || ' ' || max(seq) FROM runbook_events", db)
    assert.are.equal("4040 4040 20 202", counts)
    local r = rbrun({ "audit", "verify", "--all", "--state", url }, dir)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local n = 0
    for line in r.stdout:gmatch("[^\n]+") do
      n = n + 1
      assert.truthy(line:find(": 202 events, hash chain intact", 1, true), line)
    end
    assert.are.equal(20, n)
    rb.rmtree(dir)
  end)

  it("resumes a run from another HOME and working directory, memos and outputs included", function()
    local url = fresh_db()
    local a, b = rb.tmpdir("pghomea"), rb.tmpdir("pghomeb")
    local book = [[
runbook "roam" {}
step "A" { run = function(ctx) return { v = ctx:once("k", function() return os.getenv("WHO") end) } end }
manual "M" { title = "a person checks", instructions = "look" }
step "C" { needs = { "A", "M" }, run = function(ctx) ctx:log("A said " .. ctx.outputs.A.v) end }
]]
    rb.write(a .. "/roam.lua", book)
    rb.write(b .. "/roam.lua", book)
    local r = rb.exec({ "roam.lua" }, { state = url, yes = true, cwd = a, env = env_with { HOME = a, WHO = "first" } })
    assert.are.equal(3, r.code, r.stderr)
    local id = json.decode((rbrun({ "runs", "--state", url, "--output", "json" }, b, { HOME = b }).stdout:match("^[^\n]+"))).run
    r = rbrun({ "confirm", id, "M", "--note", "checked", "--state", url }, b, { HOME = b })
    assert.are.equal(0, r.code, r.stderr)
    r = rb.exec({ "roam.lua", "--accept-changes" }, { state = url, cwd = b, env = env_with { HOME = b, WHO = "second" } })
    assert.are.equal(0, r.code, r.stderr)
    local log = rbrun({ "log", id, "--state", url, "--output", "json" }, b, { HOME = b }).stdout
    assert.truthy(log:find('"type":"run.resumed"', 1, true))
    assert.truthy(log:find('"confirmed_by"', 1, true) or log:find('"type":"step.confirmed"', 1, true))
    assert.are.equal(1, select(2, log:gsub('"type":"step.memo"', "")), "A ran once")
    assert.are.equal(0, rbrun({ "audit", "verify", id, "--state", url }, b, { HOME = b }).code)
    rb.rmtree(a)
    rb.rmtree(b)
  end)

  it("resumes after SIGKILL at every event, each effect exactly once", function()
    local dir = rb.tmpdir("pgkill")
    rb.write(dir .. "/k.lua", [[
runbook "kill" { params = { dir = {} } }
local function effect(ctx, what)
  local f = assert(io.open(ctx.params.dir .. "/effects", "a")) f:write(what, "\n") f:close()
  return what
end
step "S1" { run = function(ctx) ctx:once("e1", function() return effect(ctx, "S1-a") end)
  ctx:once("e2", function() return effect(ctx, "S1-b") end) end }
step "S2" { run = function(ctx) ctx:once("e", function() return effect(ctx, "S2") end) end }
step "S3" { run = function(ctx) ctx:once("e", function() return effect(ctx, "S3") end) end }
]])
    -- run.started, S1 started, 2 memos, finished, S2 3 events, S3 3 events, run.finished
    for at = 1, 11 do
      local url = fresh_db()
      os.remove(dir .. "/effects")
      local p = rb.exec({ "k.lua" }, { state = url, cwd = dir, params = { dir = dir }, start = true,
        env = env_with { RUNBOOK_FAILPOINT = "after:" .. at } })
      wait_for("the stop after seq " .. at, function() return p:stopped() or p:wait(0) ~= nil end)
      p:kill("KILL")
      p:wait(30)
      local r = rb.exec({ "k.lua" }, { state = url, cwd = dir, params = { dir = dir }, env = ENV })
      assert.are.equal(0, r.code, "after " .. at .. ": " .. r.stderr)
      assert.are.equal("S1-a\nS1-b\nS2\nS3\n", rb.read(dir .. "/effects"), "killed after seq " .. at)
      assert.are.equal(0, rbrun({ "audit", "verify", "last", "--state", url }, dir).code)
    end
    rb.rmtree(dir)
  end)

  it("catches a deleted or edited row, naming the run and seq", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgtamper")
    rb.write(dir .. "/s.lua", SIMPLE)
    assert.are.equal(0, rbrun({ "exec", "s.lua", "--state", url }, dir).code)
    assert.are.equal(0, rbrun({ "exec", "s.lua", "--state", url, "--new" }, dir).code)
    local ids = {}
    for id in srv:psql("SELECT id FROM runbook_runs ORDER BY created_at", db):gmatch("%S+") do ids[#ids + 1] = id end
    srv:psql(string.format("UPDATE runbook_events SET body = replace(body, '\"ms\":', '\"ms\":1') WHERE run = '%s' AND seq = 4", ids[1]), db)
    srv:psql(string.format("DELETE FROM runbook_events WHERE run = '%s' AND seq = 7", ids[2]), db)
    local r = rbrun({ "audit", "verify", ids[1], "--state", url }, dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("run " .. ids[1] .. ": audit FAILED at seq 4", 1, true), r.stderr)
    r = rbrun({ "audit", "verify", ids[2], "--state", url }, dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("run " .. ids[2] .. ": audit FAILED at seq 7", 1, true), r.stderr)
    r = rbrun({ "audit", "verify", "--all", "--state", url }, dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find(ids[1] .. ": audit FAILED at seq 4", 1, true), r.stderr)
    assert.truthy(r.stderr:find(ids[2] .. ": audit FAILED at seq 7", 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("works for operators granted only INSERT and SELECT on the events", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pggrant")
    rb.write(dir .. "/s.lua", SIMPLE)
    rb.write(dir .. "/b.lua", BLOCKING)
    -- the schema is made by an administrator once
    assert.are.equal(0, rbrun({ "runs", "--state", url }, dir).code)
    srv:psql("CREATE ROLE operator LOGIN PASSWORD 'op-pw-1'", db)
    srv:psql(table.concat({
      "GRANT SELECT ON runbook_schema TO operator",
      "GRANT SELECT, INSERT ON runbook_events, runbook_log TO operator",
      "GRANT SELECT, INSERT, UPDATE (last_seq, last_hash, last_hmac, last_type, updated_at) ON runbook_runs TO operator",
      "GRANT SELECT, INSERT, UPDATE ON runbook_locks TO operator",
      "GRANT USAGE ON SEQUENCE runbook_log_n_seq TO operator",
    }, "; "), db)
    local op = url:gsub("^postgres://rbtest@", "postgres://operator@")
    local env = { PGPASSWORD = "op-pw-1", MARK = dir .. "/mark", GO = dir .. "/go" }
    local r = rbrun({ "exec", "s.lua", "--state", op }, dir, env)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(0, rbrun({ "audit", "verify", "last", "--state", op }, dir, env).code)
    -- locks work under these grants too
    local first = rb.exec({ "b.lua" }, { state = op, cwd = dir, env = env_with(env), start = true })
    wait_for("step A to start", function() return rb.exists(dir .. "/mark") end)
    r = rbrun({ "exec", "b.lua", "--state", op }, dir, env)
    assert.are.equal(4, r.code, r.stderr)
    rb.write(dir .. "/go", "")
    assert.are.equal(0, first:communicate({ timeout = 60 }).code)
    -- and the table is append-only for them
    local d = srv:psql("SET ROLE operator; DELETE FROM runbook_events", db, { check = false })
    assert.truthy(d.stderr:find("permission denied", 1, true), d.stderr)
    local u = srv:psql("SET ROLE operator; UPDATE runbook_events SET body = ''", db, { check = false })
    assert.truthy(u.stderr:find("permission denied", 1, true), u.stderr)
    rb.rmtree(dir)
  end)

  it("pushes a local run with sealed memos into the shared store, where it is resumed", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgpush")
    rb.write(dir .. "/p.lua", [[
local secret = require "runbook.secret"
runbook "pushme" {}
step "A" { run = function(ctx)
  return { pw = ctx:once("pw", function() return secret.random { bytes = 16, encoding = "hex" } end) }
end }
manual "M" { title = "wait here", instructions = "wait" }
step "C" { needs = { "A", "M" }, run = function(ctx)
  local f = assert(io.open(os.getenv("OUT"), "w")) f:write(ctx.outputs.A.pw:reveal()) f:close()
end }
]])
    local env = { HOME = dir, OUT = dir .. "/out" }
    local r = rb.exec({ "p.lua" }, { yes = true, cwd = dir, env = env_with(env) })
    assert.are.equal(3, r.code, r.stderr)
    local id = json.decode((rbrun({ "runs", "--output", "json" }, dir, env).stdout:match("^[^\n]+"))).run
    local memo_line = rbrun({ "log", id, "--output", "json" }, dir, env).stdout:match('[^\n]*"type":"step.memo"[^\n]*')
    assert.truthy(memo_line and memo_line:find('"$secret"', 1, true), "the memo is sealed")
    r = rbrun({ "push", id, "--state", url }, dir, env)
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("pushed run " .. id .. " (", 1, true), r.stdout)
    assert.truthy(r.stderr:find("memos sealed with key", 1, true), r.stderr)
    -- the row holds the sealed line as it was, byte for byte
    assert.are.equal(memo_line, srv:psql(string.format("SELECT body FROM runbook_events WHERE run = '%s' AND type = 'step.memo'", id), db))
    -- the local store refuses to drive it now
    r = rb.exec({ "p.lua" }, { cwd = dir, env = env_with(env) })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("was pushed to postgres://", 1, true), r.stderr)
    -- without the key, the resume says which key it needs
    assert.are.equal(0, rbrun({ "confirm", id, "M", "--state", url }, dir, env).code)
    r = rb.exec({ "p.lua" }, { state = url, cwd = dir, env = env_with(env) })
    assert.are.equal(1, r.code)
    assert.truthy(r.stdout:find("sealed with key", 1, true) or r.stderr:find("sealed with key", 1, true), r.stdout .. r.stderr)
    -- with the key that sealed it, the resume finishes with the same secret
    env.RUNBOOK_SECRET_KEY_FILE = dir .. "/.runbook/secret.key"
    r = rb.exec({ "p.lua" }, { state = url, cwd = dir, env = env_with(env) })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal(32, #rb.read(dir .. "/out"))
    assert.are.equal(0, rbrun({ "audit", "verify", id, "--state", url }, dir, env).code)
    rb.rmtree(dir)
  end)

  it("stops with a clear error when the database goes away, and resumes when it is back, nothing lost or repeated", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgoutage")
    rb.write(dir .. "/o.lua", [[
runbook "outage" {}
local function effect(what)
  local f = assert(io.open(os.getenv("EFFECTS"), "a")) f:write(what, "\n") f:close()
  return what
end
step "A" { run = function(ctx)
  ctx:once("e", function() return effect("A") end)
  local f = io.open(os.getenv("MARK"), "w") f:close()
  while not io.open(os.getenv("GO")) do ctx:sleep(0.02) end
end }
step "B" { run = function(ctx)
  ctx:once("e", function() return effect("B") end)
  local f = io.open(os.getenv("MARKB"), "w") f:close()
  while not io.open(os.getenv("GOB")) do ctx:sleep(0.02) end
end }
step "C" { run = function(ctx) ctx:once("e", function() return effect("C") end) end }
]])
    local env = env_with { EFFECTS = dir .. "/effects", MARK = dir .. "/mark", GO = dir .. "/go", MARKB = dir .. "/markb", GOB = dir .. "/gob" }
    -- during a step: A is in flight when the server stops
    local p = rb.exec({ "o.lua" }, { state = url, cwd = dir, env = env, start = true, stderr = "pipe" })
    wait_for("step A to start", function() return rb.exists(dir .. "/mark") end)
    srv:halt()
    rb.write(dir .. "/go", "")
    local r = p:communicate { timeout = 120 }
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("cannot record step.finished in the PostgreSQL store postgres://rbtest@127.0.0.1:" .. srv.port, 1, true), r.stderr)
    srv:restart()
    assert.are.equal("", srv:psql("SELECT step FROM runbook_events WHERE type = 'step.finished'", db), "A is not recorded as done")
    -- between two steps: stopped right after A's step.finished is durable,
    -- the server goes, and B's step.started cannot be recorded
    os.remove(dir .. "/mark")
    local m = math.tointeger(tonumber(srv:psql("SELECT max(seq) FROM runbook_events", db)))
    local fp = env_with(env)
    fp.RUNBOOK_FAILPOINT = "after:" .. (m + 3) -- run.resumed, A's step.started, A's step.finished
    p = rb.exec({ "o.lua" }, { state = url, cwd = dir, env = fp, start = true, stderr = "pipe" })
    wait_for("the stop after A's end", function() return p:stopped() or p:wait(0) ~= nil end)
    assert.are.equal("step.finished A", srv:psql("SELECT type || ' ' || step FROM runbook_events ORDER BY seq DESC LIMIT 1", db))
    srv:halt()
    p:kill("CONT")
    r = p:communicate { timeout = 120 }
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("cannot record step.started in the PostgreSQL store", 1, true), r.stderr)
    assert.is_nil(rb.exists(dir .. "/markb") or nil, "B did not start")
    -- B in flight when the server goes
    srv:restart()
    p = rb.exec({ "o.lua" }, { state = url, cwd = dir, env = env, start = true, stderr = "pipe" })
    wait_for("step B to start", function() return rb.exists(dir .. "/markb") end)
    srv:halt()
    rb.write(dir .. "/gob", "")
    r = p:communicate { timeout = 120 }
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("in the PostgreSQL store", 1, true), r.stderr)
    -- while the server is down, exec says so and exits 2
    r = rb.exec({ "o.lua" }, { state = url, cwd = dir, env = env })
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("cannot reach the PostgreSQL store", 1, true), r.stderr)
    srv:restart()
    r = rb.exec({ "o.lua" }, { state = url, cwd = dir, env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("A\nB\nC\n", rb.read(dir .. "/effects"))
    assert.are.equal("A B C", srv:psql("SELECT string_agg(step, ' ' ORDER BY seq) FROM runbook_events WHERE type = 'step.finished'", db))
    assert.are.equal(0, rbrun({ "audit", "verify", "last", "--state", url }, dir).code)
    rb.rmtree(dir)
  end)

  it("runs a parallel group's steps at once, each appending from its own connection, in one chain", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgpar")
    local lines = { 'runbook "par" {}', 'step "A" { run = function(ctx) return ctx:once("k", function() return 7 end) end }', 'parallel "g" {' }
    for i = 1, 6 do
      lines[#lines + 1] = string.format('  step "P%d" { needs = "A", run = function(ctx) for j = 1, 10 do ctx:checkpoint("j", j) end return %d end },', i, i)
    end
    lines[#lines + 1] = "}"
    lines[#lines + 1] = 'step "Z" { needs = { "P1", "P2", "P3", "P4", "P5", "P6" }, run = function(ctx) ctx:log("sum " .. (ctx.outputs.P1 + ctx.outputs.P6)) end }'
    rb.write(dir .. "/par.lua", table.concat(lines, "\n") .. "\n")
    local r = rb.exec({ "par.lua", "--jobs", "6" }, { state = url, cwd = dir, env = ENV })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("sum 7", 1, true), r.stderr)
    assert.are.equal("8", srv:psql("SELECT count(*) FROM runbook_events WHERE type = 'step.finished'", db))
    assert.are.equal("60", srv:psql("SELECT count(*) FROM runbook_events WHERE type = 'step.checkpoint'", db))
    r = rbrun({ "audit", "verify", "last", "--state", url }, dir)
    assert.are.equal(0, r.code, r.stderr)
    rb.rmtree(dir)
  end)
end)
