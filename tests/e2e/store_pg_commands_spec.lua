-- The commands that change or list runs, on the PostgreSQL store as on the
-- file store, with a real server and real processes: reset, rollback (and
-- both refused while another exec drives the run), approvals by two
-- people, plan, confirm, and the filters of `runbook runs`.
local rb = require "rbtest"
local pgserver = require "pgserver"
local host = require "runbook._host"
local json = require "runbook._json"

local srv
-- a fresh database and its URL (no password: it goes through PGPASSWORD)
local function fresh_db() return srv:store_db("cmds") end

local env_with = pgserver.password_env

local function wait_for(what, fn) return rb.wait_for(what, fn, { timeout = 60 }) end

setup(function() srv = pgserver.start() end)
teardown(function() if srv then srv:stop() end end)

local UNDO = [[
runbook "u" {}
local function mark(s) local f = io.open(os.getenv("OUT"), "a") f:write(s, "\n") f:close() end
step "A" { run = function(ctx) mark("do A") end, undo = function(ctx) mark("undo A") end }
step "B" { run = function(ctx)
  mark("do B")
  if os.getenv("MARK") then
    local f = io.open(os.getenv("MARK"), "w") f:close()
    while not io.open(os.getenv("GO")) do ctx:sleep(0.02) end
  end
end, undo = function(ctx) mark("undo B") end }
step "C" { run = function(ctx) mark("do C") end, undo = function(ctx) mark("undo C") end }
step "CHECK" { run = function(ctx) ctx:log("a read-only check: no action, no undo needed") end }
]]

describe("the PostgreSQL store's commands", function()
  it("resets a done step and rolls back newest first, as the file store does", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgundo")
    rb.write(dir .. "/u.lua", UNDO)
    local env = env_with { OUT = dir .. "/out" }
    local function run(args) return rb.run(args, { cwd = dir, env = env, timeout = 120 }) end
    assert.are.equal(0, rb.exec({ "u.lua" }, { state = url, cwd = dir, env = env }).code)
    local r = run { "reset", "last", "B", "--note", "redo", "--state", url }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("step.reset B", srv:psql("SELECT type || ' ' || step FROM runbook_events ORDER BY seq DESC LIMIT 1", db))
    assert.are.equal(0, rb.exec({ "u.lua" }, { state = url, cwd = dir, env = env }).code)
    r = run { "rollback", "last", "--to", "A", "--state", url }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("do A\ndo B\ndo C\ndo B\nundo B\nundo C\n", rb.read(dir .. "/out"))
    assert.truthy(r.stderr:find("CHECK recorded no action; nothing to undo", 1, true), r.stderr)
    assert.are.equal("run.rolled_back", srv:psql("SELECT type FROM runbook_events ORDER BY seq DESC LIMIT 1", db))
    assert.are.equal("run.rolled_back", srv:psql("SELECT last_type FROM runbook_runs", db), "the tip names the last event")
    local row = json.decode((run({ "runs", "--state", url, "--output", "json" }).stdout:match("^[^\n]+")))
    assert.are.equal("rolled back", row.status)
    -- a rolled-back run is over: the next exec starts a new one
    assert.are.equal(0, rb.exec({ "u.lua" }, { state = url, cwd = dir, env = env }).code)
    assert.are.equal("do A\ndo B\ndo C\ndo B\nundo B\nundo C\ndo A\ndo B\ndo C\n", rb.read(dir .. "/out"))
    assert.are.equal("2", srv:psql("SELECT count(*) FROM runbook_runs", db))
    r = run { "audit", "verify", "--all", "--state", url }
    assert.are.equal(0, r.code, r.stderr)
    rb.rmtree(dir)
  end)

  it("refuses reset and rollback with exit 4 naming the holder while another exec drives the run", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgundolock")
    rb.write(dir .. "/u.lua", UNDO)
    local env = env_with { OUT = dir .. "/out", MARK = dir .. "/mark", GO = dir .. "/go" }
    local p = rb.exec({ "u.lua" }, { state = url, cwd = dir, env = env, start = true })
    wait_for("step B to start", function() return rb.exists(dir .. "/mark") end)
    local before = srv:psql("SELECT count(*) FROM runbook_events", db)
    for _, args in ipairs { { "reset", "last", "A" }, { "rollback", "last" } } do
      args[#args + 1] = "--state"
      args[#args + 1] = url
      local r = rb.run(args, { cwd = dir, env = env, timeout = 60 })
      assert.are.equal(4, r.code, args[1] .. ": " .. r.stderr)
      assert.truthy(r.stderr:find("is locked by pid " .. p:pid() .. " on " .. host.hostname(), 1, true), r.stderr)
    end
    assert.are.equal(before, srv:psql("SELECT count(*) FROM runbook_events", db), "nothing was recorded by the refused commands")
    rb.write(dir .. "/go", "")
    assert.are.equal(0, p:communicate({ timeout = 60 }).code)
    assert.are.equal("do A\ndo B\ndo C\n", rb.read(dir .. "/out"), "no undo ran")
    rb.rmtree(dir)
  end)

  it("counts approvals by different people from different machines' HOMEs, each its own row", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgapprove")
    rb.write(dir .. "/g.lua", [[
runbook "gated" {}
step "plan" { run = function(ctx) ctx:log("planned") end }
manual "approve" { title = "Approve the production change", instructions = "read the plan", approvers = 2 }
step "apply" { run = function(ctx) local f = io.open(os.getenv("OUT"), "a") f:write("applied\n") f:close() end }
]])
    local env = env_with { OUT = dir .. "/out" }
    local function as(who, args)
      args[#args + 1] = "--state"
      args[#args + 1] = url
      local home = dir .. "/home-" .. who
      return rb.run(args, { cwd = dir, env = env_with { RUNBOOK_ACTOR = who, HOME = home }, timeout = 60 })
    end
    assert.are.equal(3, rb.exec({ "g.lua" }, { state = url, cwd = dir, env = env, yes = true }).code)
    local a = as("alice", { "confirm", "last", "approve", "--note", "plan looks right" })
    assert.are.equal(0, a.code, a.stderr)
    assert.truthy(a.stdout:find("by alice (1 of 2 approvals; 1 more needed from someone else)", 1, true), a.stdout)
    assert.are.equal(3, rb.exec({ "g.lua" }, { state = url, cwd = dir, env = env, yes = true }).code, "one approval is not enough")
    local again = as("alice", { "confirm", "last", "approve" })
    assert.are.equal(2, again.code)
    assert.truthy(again.stderr:find("alice has already approved step approve of run ", 1, true), again.stderr)
    local st = as("carol", { "status", "last" })
    assert.truthy(st.stdout:find("approved by alice (1 of 2); 1 more needed from someone else", 1, true), st.stdout)
    local b = as("bob", { "confirm", "last", "approve", "--note", "ok from me" })
    assert.are.equal(0, b.code, b.stderr)
    assert.truthy(b.stdout:find("confirmed approve in run ", 1, true), b.stdout)
    assert.are.equal("alice bob", srv:psql("SELECT string_agg(body::json->>'actor', ' ' ORDER BY seq) FROM runbook_events WHERE type = 'step.confirmed'", db))
    assert.are.equal(0, rb.exec({ "g.lua" }, { state = url, cwd = dir, env = env }).code)
    assert.are.equal("applied\n", rb.read(dir .. "/out"))
    st = as("carol", { "status", "last" })
    assert.truthy(st.stdout:find("approved by alice, bob: ok from me", 1, true), st.stdout)
    assert.are.equal(0, as("carol", { "audit", "verify", "last" }).code)
    rb.rmtree(dir)
  end)

  it("plans, confirms and lists runs by runbook, state, actor and date", function()
    local url = fresh_db()
    local dir = rb.tmpdir("pgruns")
    rb.write(dir .. "/w.lua", [[
runbook "w" {}
step "A" { run = function() end }
manual "M" { title = "look at the graphs", instructions = "look" }
step "C" { needs = "M", run = function() end }
]])
    rb.write(dir .. "/o.lua", 'runbook "o" {}\nstep "A" { run = function() end }\n')
    local env = env_with()
    local function run(args)
      args[#args + 1] = "--state"
      args[#args + 1] = url
      return rb.run(args, { cwd = dir, env = env, timeout = 60 })
    end
    assert.are.equal(3, rb.exec({ "w.lua" }, { state = url, cwd = dir, env = env, yes = true }).code)
    assert.are.equal(0, rb.exec({ "o.lua" }, { state = url, cwd = dir, env = env }).code)
    local plan = run { "plan", "w.lua" }
    assert.are.equal(0, plan.code, plan.stderr)
    assert.truthy(plan.stdout:find("w: resumes run w%-%d+%-%d+%-%x+"), plan.stdout)
    assert.truthy(plan.stdout:find("A%s+done"), plan.stdout)
    assert.truthy(plan.stdout:find("M%s+waiting"), plan.stdout)
    assert.truthy(plan.stdout:find("C%s+pending"), plan.stdout)
    local function ids(args)
      args[#args + 1] = "--output"
      args[#args + 1] = "json"
      local r = run(args)
      assert.are.equal(0, r.code, r.stderr)
      local out = {}
      for line in r.stdout:gmatch("[^\n]+") do
        local row = json.decode(line)
        out[#out + 1] = row.runbook .. ":" .. row.status
      end
      table.sort(out)
      return table.concat(out, " ")
    end
    assert.are.equal("o:finished w:waiting", ids { "runs" })
    assert.are.equal("w:waiting", ids { "runs", "--runbook", "w" })
    assert.are.equal("w:waiting", ids { "runs", "--status", "waiting" })
    assert.are.equal("o:finished", ids { "runs", "--status", "finished" })
    assert.are.equal("o:finished w:waiting", ids { "runs", "--actor", host.user() })
    assert.are.equal("o:finished w:waiting", ids { "runs", "--actor", host.user() .. "@" .. host.hostname() })
    assert.are.equal("", ids { "runs", "--actor", "nobody-" .. host.user() })
    assert.are.equal("o:finished w:waiting", ids { "runs", "--since", "1h" })
    assert.are.equal("", ids { "runs", "--since", os.date("!%Y-%m-%d", os.time() + 2 * 86400) })
    local r = run { "confirm", "last", "M", "--note", "graphs flat" }
    assert.are.equal(2, r.code, "`last` is o's run, which has no step M: " .. r.stderr)
    local w = ids { "runs", "--runbook", "w" }
    assert.are.equal("w:waiting", w)
    local wid = json.decode((run({ "runs", "--runbook", "w", "--output", "json" }).stdout:match("^[^\n]+"))).run
    r = run { "confirm", wid, "M", "--note", "graphs flat" }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(0, rb.exec({ "w.lua" }, { state = url, cwd = dir, env = env }).code)
    assert.are.equal("o:finished w:finished", ids { "runs", "--status", "finished" })
    assert.are.equal("", ids { "runs", "--status", "waiting" })
    rb.rmtree(dir)
  end)
end)
