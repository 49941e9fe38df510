-- Manual steps and confirmation, the per-run lock, Ctrl-C, the memo key,
-- and the read-only commands' output.
local rb = require "rbtest"
local host = require "runbook._host"
local json = require "runbook._json"

local dir

local function write(name, text) rb.write(dir .. "/" .. name, text) end
local function run(args, env, input) return rb.run(args, { cwd = dir, env = env, input = input }) end
local function events() return (rb.journal(dir .. "/.runbook")) end
local function last(evs, t)
  for i = #evs, 1, -1 do
    if evs[i].type == t then return evs[i] end
  end
end
local function wait_for(path)
  return rb.wait_for(path, function() return rb.exists(path) end)
end

before_each(function() dir = rb.tmpdir("cmd") end)
after_each(function() rb.rmtree(dir) end)

describe("manual steps", function()
  local BOOK = [[
runbook "m" {}
step "A" { run = function() end }
manual "DNS" {
  title = "Configure DNS", owner = "DevOps",
  instructions = "Point api.example.test at the tunnel.",
  verify = function(ctx) return os.getenv("DNS_READY") == "1" end,
}
step "B" { needs = "DNS", run = function() end }
]]

  it("waits with exit 3 off a terminal, then continues after `runbook confirm`", function()
    write("m.lua", BOOK)
    local r = run { "exec", "m.lua" }
    assert.are.equal(3, r.code, r.stderr)
    local id = events()[1].run
    assert.truthy(r.stderr:find("waiting for DNS (Configure DNS). When it is done: runbook confirm " .. id .. " DNS --note '...'  then run the same command again.", 1, true), r.stderr)
    -- confirming a step that is not manual is refused
    local bad = run { "confirm", id, "A" }
    assert.are.equal(2, bad.code)
    local c = run { "confirm", id, "DNS", "--note", "records created in Cloudflare" }
    assert.are.equal(0, c.code, c.stderr)
    local ev = last(events(), "step.confirmed")
    assert.are.equal("DNS", ev.step)
    assert.are.equal("command", ev.via)
    assert.are.equal(host.user(), ev.by)
    assert.are.equal(host.hostname(), ev.host)
    assert.are.equal("records created in Cloudflare", ev.note)
    r = run { "exec", "m.lua" }
    assert.are.equal(0, r.code, r.stderr)
    local again = run { "confirm", id, "DNS" }
    assert.are.equal(2, again.code)
    assert.truthy(again.stderr:find("step DNS of run " .. id .. " is already confirmed", 1, true))
  end)

  it("asks on a terminal and records the confirmation with its note", function()
    write("m.lua", BOOK)
    -- script(1) gives the process a pseudo-terminal and forwards our input to it
    local cmd = string.format("%s exec m.lua", rb.bin)
    local proc = require "runbook._proc"
    local p = assert(proc.spawn { argv = { "script", "-qec", cmd, "/dev/null" }, cwd = dir, stdin = "pipe",
      env = { TERM = "dumb", NO_COLOR = "1" } })
    local r = p:communicate { input = "done\nrecords created\n", timeout = 30 }
    assert.are.equal(0, r.code, r.stdout)
    assert.truthy(r.stdout:find("Point api.example.test at the tunnel.", 1, true))
    assert.truthy(r.stdout:find("Type 'done' once this is complete", 1, true))
    local ev = last(events(), "step.confirmed")
    assert.are.equal("terminal", ev.via)
    assert.are.equal("records created", ev.note)
    assert.are.equal(host.user(), ev.by)
  end)

  it("completes without asking when verify passes", function()
    write("m.lua", BOOK)
    local r = run({ "exec", "m.lua" }, { DNS_READY = "1" })
    assert.are.equal(0, r.code, r.stderr)
    local ev = last(events(), "step.confirmed")
    assert.are.equal("verify", ev.via)
  end)
end)

describe("the run lock", function()
  it("gives a second process exit 4 naming the holder's pid and host", function()
    write("l.lua", [[
runbook "l" {}
step "A" { run = function(ctx)
  local f = io.open(os.getenv("MARK"), "w") f:close()
  ctx:sleep(30)
end }
]])
    local p = rb.start({ "exec", "l.lua" }, { cwd = dir, env = { MARK = dir .. "/running" } })
    assert.is_true(wait_for(dir .. "/running"))
    local r = run { "exec", "l.lua" }
    assert.are.equal(4, r.code)
    assert.truthy(r.stderr:find("is locked by pid " .. p:pid() .. " on " .. host.hostname(), 1, true), r.stderr)
    local c = run { "reset", "last", "A" }
    assert.are.equal(4, c.code)
    p:kill("KILL")
    p:wait(10)
  end)
end)

describe("Ctrl-C", function()
  it("stops at a resumable point with exit 130 and the step recorded as interrupted", function()
    write("i.lua", [[
runbook "i" {}
step "A" { run = function(ctx)
  local f = io.open(os.getenv("MARK"), "w") f:close()
  while true do ctx:sleep(0.01) end
end }
step "B" { run = function() end }
]])
    local p = rb.start({ "exec", "i.lua" }, { cwd = dir, env = { MARK = dir .. "/running" } })
    assert.is_true(wait_for(dir .. "/running"))
    local t0 = host.monotime()
    p:kill("INT")
    local code = p:wait(10)
    assert.are.equal(130, code)
    assert.truthy(host.monotime() - t0 < 1)
    local evs = events()
    assert.are.equal("step.interrupted", evs[#evs - 1].type)
    assert.are.equal("run.interrupted", evs[#evs].type)
    -- the resume runs A again
    write("i.lua", 'runbook "i" {}\nstep "A" { run = function() end }\nstep "B" { run = function() end }\n')
    local r = run { "exec", "i.lua" }
    assert.are.equal(0, r.code, r.stderr)
  end)
end)

describe("the memo key", function()
  local BOOK = [[
local secret = require "runbook.secret"
runbook "k" {}
step "A" { run = function(ctx)
  local pw = ctx:once("pw", function() return secret.random { bytes = 16 } end)
  local f = io.open(os.getenv("OUT"), "a") f:write(require("runbook.secret").reveal(pw), "\n") f:close()
  if os.getenv("FAIL") then error("stop after the memo") end
end }
]]
  local function passwords()
    local out = {}
    for l in (rb.read(dir .. "/pw") or ""):gmatch("[^\n]+") do out[#out + 1] = l end
    return out
  end

  it("gives a resumed step the very same secret", function()
    write("k.lua", BOOK)
    assert.are.equal(1, run({ "exec", "k.lua" }, { OUT = dir .. "/pw", FAIL = "1" }).code)
    assert.are.equal(0, run({ "exec", "k.lua" }, { OUT = dir .. "/pw" }).code)
    local pws = passwords()
    assert.are.equal(2, #pws)
    assert.are.equal(pws[1], pws[2])
    local st = require("runbook._fs").stat(dir .. "/.runbook/secret.key")
    assert.are.equal(384, st.mode) -- 0600
  end)

  it("refuses clearly, never regenerating, when the key is missing or wrong", function()
    write("k.lua", BOOK)
    assert.are.equal(1, run({ "exec", "k.lua" }, { OUT = dir .. "/pw", FAIL = "1" }).code)
    os.rename(dir .. "/.runbook/secret.key", dir .. "/saved.key")
    local r = run({ "exec", "k.lua" }, { OUT = dir .. "/pw" })
    assert.are.equal(1, r.code)
    local failed = last(events(), "step.failed")
    assert.truthy(failed.error.message:find("memo 'pw' of step A holds a secret sealed with key %x+, but no key is available: set RUNBOOK_SECRET_KEY or restore the store's secret.key"), failed.error.message)
    r = run({ "exec", "k.lua" }, { OUT = dir .. "/pw", RUNBOOK_SECRET_KEY = string.rep("ab", 32) })
    failed = last(events(), "step.failed")
    assert.truthy(failed.error.message:find("was sealed with key %x+, but the current key is %x+: set RUNBOOK_SECRET_KEY to the key the run started with"), failed.error.message)
    assert.are.equal(1, #passwords())
    -- the right key from the environment works
    local key = rb.read(dir .. "/saved.key")
    r = run({ "exec", "k.lua" }, { OUT = dir .. "/pw", RUNBOOK_SECRET_KEY = key })
    assert.are.equal(0, r.code, r.stderr)
    local pws = passwords()
    assert.are.equal(pws[1], pws[2])
  end)
end)

describe("reading runs", function()
  before_each(function()
    write("r.lua", [[
runbook "r" { description = "reads" }
step "A" { title = "first", run = function(ctx) ctx:action { kind = "note", summary = "did a thing", target = "x" } end }
step "B" { title = "second", run = function() error("nope") end }
]])
    run { "exec", "r.lua" }
  end)

  it("status shows each step", function()
    local r = run { "status" }
    assert.are.equal(0, r.code)
    assert.truthy(r.stdout:find("status   failed at B", 1, true))
    assert.truthy(r.stdout:match("\n  A%s+done%s+1%s+%d+ms%s+first\n"), r.stdout)
    assert.truthy(r.stdout:match("\n  B%s+failed%s+1%s+%d+ms%s+r.lua:3: nope\n"), r.stdout)
  end)

  it("runs lists runs; log shows and streams the journal", function()
    local r = run { "runs" }
    assert.truthy(r.stdout:match("\nr%-%d+%-%d+%-%x+%s+failed%s+1/2%s"), r.stdout)
    r = run { "log", "last" }
    assert.truthy(r.stdout:find("action             note: did a thing  target=x", 1, true), r.stdout)
    r = run { "log", "last", "--output", "json" }
    local n = 0
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      n = n + 1
      assert.are.equal(n, ev.seq)
      assert.are.equal(64, #ev.hash)
    end
    assert.are.equal(7, n)
    -- --step picks the step's events by their step field, not by text,
    -- after seq 1, which names the run and the export's version
    r = run { "log", "last", "--output", "json", "--step", "A" }
    local seqs = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev.seq == 1 then
        assert.are.equal("run.started", ev.type)
        assert.are.equal(1, ev.log_format)
      else
        assert.are.equal("A", ev.step)
      end
      seqs[#seqs + 1] = ev.seq
    end
    assert.are.same({ 1, 2, 3, 4 }, seqs)
  end)

  it("runs --runbook reads only that runbook's runs", function()
    write("other.lua", 'runbook "other" {}\nstep "O" { run = function() end }\n')
    assert.are.equal(0, run({ "exec", "other.lua" }).code)
    -- the other runbook's journal made unreadable: a symbolic link, which
    -- the store refuses to follow
    local rundir = dir .. "/.runbook/runs/" .. run({ "runs", "--runbook", "other", "--output", "json" }).stdout:match('"run":"(other%-[^"]+)"')
    assert.is_true(os.rename(rundir .. "/journal.jsonl", dir .. "/moved.jsonl"))
    local ln = require("runbook._proc").spawn { argv = { "ln", "-s", dir .. "/moved.jsonl", rundir .. "/journal.jsonl" } }
    assert.are.equal(0, ln:communicate {}.code)
    local all = run { "runs" }
    assert.are.equal(2, all.code)
    assert.truthy(all.stderr:find("a symbolic link", 1, true), all.stderr)
    local r = run { "runs", "--runbook", "r" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:match("\nr%-%d+%-%d+%-%x+%s+failed%s+1/2%s"), r.stdout)
    assert.falsy(r.stdout:find("other-", 1, true))
  end)

  it("--output json streams events on stdout", function()
    local r = run { "exec", "r.lua", "--new", "--output", "json" }
    assert.are.equal(1, r.code)
    local types = {}
    for line in r.stdout:gmatch("[^\n]+") do types[#types + 1] = json.decode(line).type end
    -- the debug log line carries the failure's traceback
    assert.are.same({ "run.started", "console.begin", "step.started", "action", "step.finished", "step.started", "log", "step.failed", "run.failed", "console.end" }, types)
  end)

  it("every command has --help", function()
    for _, c in ipairs { "exec", "plan", "status", "runs", "log", "audit", "confirm", "reset", "rollback", "check", "doc", "test", "version" } do
      local r = run { c, "--help" }
      assert.are.equal(0, r.code, c)
      assert.truthy(r.stdout:find("Usage: runbook " .. c, 1, true), c)
    end
    local r = run { "frobnicate" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: unknown command 'frobnicate' (see runbook --help)\n", r.stderr)
  end)
end)

describe("reset and rollback", function()
  it("reset makes a done step run again; rollback runs undo newest first", function()
    write("u.lua", [[
runbook "u" {}
local function mark(ctx, s) local f = io.open(os.getenv("OUT"), "a") f:write(s, "\n") f:close() end
step "A" { run = function(ctx) mark(ctx, "do A") end, undo = function(ctx) mark(ctx, "undo A") end }
step "B" { run = function(ctx) mark(ctx, "do B") end, undo = function(ctx) mark(ctx, "undo B") end }
step "C" { run = function(ctx) mark(ctx, "do C") end, undo = function(ctx) mark(ctx, "undo C") end }
step "CHECK" { run = function(ctx) ctx:log("a read-only check: no action, no undo needed") end }
]])
    local env = { OUT = dir .. "/out" }
    assert.are.equal(0, run({ "exec", "u.lua" }, env).code)
    local reset = run({ "reset", "last", "B", "--note", "redo" }, env)
    assert.are.equal(0, reset.code)
    assert.truthy((reset.stdout .. reset.stderr):find("reset B in run u%-%d+%-%d+%-%x+ %(was done%); it runs again"), reset.stdout .. reset.stderr)
    assert.are.equal(0, run({ "exec", "u.lua" }, env).code)
    local r = run({ "rollback", "last", "--to", "A" }, env)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("do A\ndo B\ndo C\ndo B\nundo B\nundo C\n", rb.read(dir .. "/out"))
    assert.truthy(r.stderr:find("CHECK recorded no action; nothing to undo", 1, true), r.stderr)
    local evs = events()
    assert.are.equal("run.rolled_back", evs[#evs].type)
    -- the rolled-back steps run again on the next exec
    assert.are.equal(0, run({ "exec", "u.lua" }, env).code)
  end)
end)
