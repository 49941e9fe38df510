-- The engine as a user meets it: bad runbooks and params (exit 2, no run
-- created), the sandbox, resume, change detection, --from/--only,
-- --dry-run, retries and timeouts.
local rb = require "rbtest"
local fs = require "runbook._fs"

local dir

local function write(name, text) rb.write(dir .. "/" .. name, text) end

local function exec(args, env) return rb.exec(args, { cwd = dir, env = env }) end

local function runs()
  return fs.listdir(dir .. "/.runbook/runs") or {}
end

local function events()
  local evs = rb.journal(dir .. "/.runbook")
  return evs
end

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

before_each(function() dir = rb.tmpdir("engine") end)
after_each(function() rb.rmtree(dir) end)

describe("bad runbooks", function()
  local cases = {
    { "syntax error", 'runbook "x" {}\nstep "A" { run = function() end\n', "bad.lua:3: '}' expected (to close '{' at line 2) near <eof>" },
    { "runtime error at load", 'runbook "x" {}\nlocal t = nil\nprint(t.x)\n', "bad.lua:3: attempt to index a nil value (local 't')" },
    { "duplicate ids", 'runbook "x" {}\nstep "A" { run = function() end }\nstep "A" { run = function() end }\n', "bad.lua:3: duplicate step id 'A' (first declared at line 2)" },
    { "unknown needs", 'runbook "x" {}\nstep "A" { run = function() end }\nstep "B" { needs = "a", run = function() end }\n', "bad.lua:3: step B needs unknown step 'a' (did you mean 'A'?)" },
    { "a cycle", 'runbook "x" {}\nstep "A" { needs = "C", run = function() end }\nstep "B" { needs = "A", run = function() end }\nstep "C" { needs = "B", run = function() end }\n', "bad.lua:2: steps form a cycle: A -> C -> B -> A" },
    { "a misspelt field", 'runbook "x" {}\nstep "A" { retires = 3, run = function() end }\n', "bad.lua:2: step A: unknown field 'retires' (did you mean 'retry'?)" },
    { "an undefined global", 'runbook "x" {}\nstep "A" { run = fucntion }\n', "bad.lua:2: undefined global 'fucntion' (did you mean 'function'?)" },
    { "no steps", 'runbook "x" {}\n', "bad.lua: no steps declared" },
    { "a manual step without instructions", 'runbook "x" {}\nmanual "M" { title = "t" }\n', "bad.lua:2: manual M: instructions required" },
  }
  for _, c in ipairs(cases) do
    it("reports " .. c[1] .. " with file and line, exit 2, and creates no run", function()
      write("bad.lua", c[2])
      local r = exec { "bad.lua" }
      assert.are.equal(2, r.code)
      local msg = r.stderr:gsub("\n$", "")
      assert.truthy(msg:sub(-#c[3]) == c[3], "got: " .. r.stderr)
      assert.truthy(msg:match("^runbook: "))
      assert.are.equal(0, #runs())
      -- check says the same without running anything
      local ck = rb.run({ "check", "bad.lua" }, { cwd = dir })
      assert.are.equal(2, ck.code)
      assert.truthy(ck.stderr:find(c[3], 1, true))
    end)
  end
end)

describe("params", function()
  local BOOK = [[
runbook "p" { params = {
  ns = { default = "tezca" },
  replicas = { default = 2 },
  db = { env = "P_DB", secret = true },
  ctx = { doc = "kube context" },
  debug = { type = "boolean", required = false },
} }
step "A" { run = function(ctx)
  ctx:log("ns=%s replicas=%s(%s) ctx=%s db=%s debug=%s", ctx.params.ns, ctx.params.replicas,
    math.type(ctx.params.replicas), ctx.params.ctx, ctx.params.db, tostring(ctx.params.debug))
end }
]]
  it("names an unknown --param and a missing required one, exit 2", function()
    write("p.lua", BOOK)
    local r = exec({ "p.lua", "--param", "nss=x", "--param", "ctx=prod" }, { P_DB = "postgres://u:pw@h/db" })
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: unknown param 'nss' (did you mean 'ns'?)\n", r.stderr)
    r = exec({ "p.lua", "--param", "ctx=prod" })
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: missing required param 'db' (set --param db=... or the environment variable P_DB)\n", r.stderr)
    r = exec({ "p.lua", "--param", "ctx=prod", "--param", "replicas=two" }, { P_DB = "postgres://u:pw@h/db" })
    assert.are.equal("runbook: param replicas: a number expected, got 'two'\n", r.stderr)
    assert.are.equal(0, #runs())
  end)

  it("takes --param, --values, env and defaults; secrets are redacted and not recorded", function()
    write("p.lua", BOOK)
    write("v.yaml", "ctx: staging\nreplicas: 3\n")
    local r = exec({ "p.lua", "--values", "v.yaml", "--param", "ns=other" }, { P_DB = "postgres://u:hunter22@h/db" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("ns=other replicas=3(integer) ctx=staging db=[REDACTED] debug=nil", 1, true), r.stderr)
    local started = events()[1]
    assert.are.same({ ns = "other", replicas = 3, ctx = "staging" }, started.params)
    local journal = rb.read(select(2, rb.journal(dir .. "/.runbook")))
    assert.is_nil(journal:find("hunter22", 1, true))
  end)
end)

describe("the sandbox", function()
  it("has no os.execute, io.popen, package or debug, and refuses private modules", function()
    write("s.lua", [[
runbook "s" {}
step "A" { run = function(ctx)
  local res = {}
  res[1] = tostring(os.execute)
  res[2] = tostring(io.popen)
  res[3] = select(2, pcall(function() return package end))
  res[4] = select(2, pcall(function() return debug end))
  res[5] = select(2, pcall(require, "runbook._proc"))
  res[6] = select(2, pcall(require, "runbook._engine.engine")) .. " / " .. select(2, pcall(require, "runbook._engine.audit"))
  res[7] = select(2, pcall(load, "\27Lua", "x", "b"))
  ctx:log(table.concat(res, " | "))
end }
]])
    local r = exec { "s.lua" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("nil | nil | s.lua:6: undefined global 'package' | s.lua:7: undefined global 'debug' | module 'runbook._proc' is not available to runbooks | module 'runbook._engine.engine' is not available to runbooks / module 'runbook._engine.audit' is not available to runbooks | load: only text chunks may be loaded in a runbook", 1, true), r.stderr)
  end)

  it("requires modules from the runbook's folder and RUNBOOK_PATH, not elsewhere", function()
    fs.mkdir_p(dir .. "/lib/shared", 448)
    fs.mkdir_p(dir .. "/other", 448)
    write("lib/shared/init.lua", "return { name = 'shared-from-folder' }\n")
    write("other/team.lua", "return { name = 'team-from-path', secret = require('runbook.secret') ~= nil }\n")
    write("m.lua", [[
runbook "m" {}
step "A" { run = function(ctx)
  ctx:log(require("lib.shared").name .. " " .. require("team").name)
  local ok, err = pcall(require, "nope")
  ctx:log(err)
end }
]])
    local r = exec({ "m.lua" }, { RUNBOOK_PATH = dir .. "/other" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("shared-from-folder team-from-path", 1, true))
    assert.truthy(r.stderr:find("module 'nope' not found in the runbook's folder or RUNBOOK_PATH:", 1, true))
  end)
end)

describe("resume", function()
  local BOOK = [[
runbook "r" { params = { fail = { default = "" } } }
step "A" { run = function(ctx) return { n = 41 } end }
step "B" { needs = "A", run = function(ctx)
  if ctx.params.fail == "B" then error("B is broken") end
  return { n = ctx.outputs.A.n + 1 }
end }
step "C" { run = function(ctx) ctx:log("C sees %d", ctx.outputs.B.n) end }
]]
  it("continues the unfinished run, skipping what is done; --new starts another", function()
    write("r.lua", BOOK)
    local r = exec { "r.lua", "--param", "fail=B" }
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("B        FAILED: r.lua:4: B is broken", 1, true), r.stderr)
    r = exec { "r.lua", "--param", "fail=" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("Resuming r-", 1, true))
    assert.truthy(r.stderr:find("C sees 42", 1, true))
    assert.are.equal(1, #runs())
    local evs = events()
    assert.are.equal(1, #of_type(evs, "step.finished", "A"))
    assert.are.equal(2, #of_type(evs, "step.started", "B"))
    -- a finished run is not resumed: a new one starts
    r = exec { "r.lua" }
    assert.are.equal(0, r.code)
    assert.truthy(r.stderr:find("Starting r-", 1, true))
    assert.are.equal(2, #runs())
    r = exec { "r.lua", "--new" }
    assert.are.equal(3, #runs())
  end)

  it("allows edits inside steps, and records both hashes", function()
    write("r.lua", BOOK)
    exec { "r.lua", "--param", "fail=B" }
    write("r.lua", (BOOK:gsub("B is broken", "B is still broken")))
    local r = exec { "r.lua", "--param", "fail=" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("the runbook changed since this run started", 1, true))
    local resumed = of_type(events(), "run.resumed")[1]
    assert.are.equal(64, #resumed.sha256)
    assert.is_true(resumed.changed)
  end)

  it("refuses when a completed step was removed, renamed or reordered, unless --accept-changes", function()
    write("r.lua", BOOK .. 'step "D" { run = function() error("stop") end }\n')
    local r = exec { "r.lua" }
    assert.are.equal(1, r.code)
    -- rename A
    write("r.lua", (BOOK:gsub('step "A"', 'step "A2"'):gsub('needs = "A"', 'needs = "A2"'):gsub("outputs.A.n", "outputs.A2.n")) .. 'step "D" { run = function() end }\n')
    r = exec { "r.lua" }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("step A already ran in this run but is no longer in the runbook (removed or renamed)", 1, true), r.stderr)
    assert.truthy(r.stderr:find("Pass --accept-changes to resume anyway, or --new to start a new run.", 1, true))
    -- move C before B
    local moved = [[
runbook "r" { params = { fail = { default = "" } } }
step "A" { run = function(ctx) return { n = 41 } end }
step "C" { run = function(ctx) end }
step "B" { run = function(ctx) return { n = 1 } end }
step "D" { run = function() end }
]]
    write("r.lua", moved)
    r = exec { "r.lua" }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("step C was moved before B; both already ran in the other order", 1, true), r.stderr)
    r = exec { "r.lua", "--accept-changes" }
    assert.are.equal(0, r.code, r.stderr)
    local resumed = of_type(events(), "run.resumed")
    assert.truthy(resumed[#resumed].accepted_changes[1]:find("moved before", 1, true))
  end)

  it("runs only what --only and --from select", function()
    write("r.lua", BOOK)
    local r = exec { "r.lua", "--only", "B" }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("step B needs A, which has not completed in this run; run it first", 1, true), r.stderr)
    r = exec { "r.lua", "--only", "A" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("1 step(s) ran; 2 step(s) remain", 1, true), r.stderr)
    r = exec { "r.lua", "--from", "B" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("finished", 1, true))
  end)

  it("--dry-run writes nothing to the store", function()
    write("r.lua", BOOK)
    local r = exec { "r.lua", "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("dry run complete: 3 step(s) would run; nothing was written", 1, true), r.stderr)
    assert.are.equal(0, #runs())
  end)
end)

describe("retries and timeouts", function()
  it("retries with backoff and reports each attempt", function()
    write("t.lua", [[
runbook "t" {}
step "A" { retry = { attempts = 3, backoff = "fixed", delay = 0.05 }, run = function(ctx)
  if ctx.attempt < 3 then error({ kind = "flaky", message = "not yet (attempt " .. ctx.attempt .. ")" }) end
  return { attempt = ctx.attempt }
end }
]])
    local r = exec { "t.lua" }
    assert.are.equal(0, r.code, r.stderr)
    local failed = of_type(events(), "step.failed", "A")
    assert.are.equal(2, #failed)
    assert.are.same({ message = "not yet (attempt 1)", kind = "flaky", where = "t.lua:3" }, failed[1].error)
    assert.are.equal(0.05, failed[1].retry_in)
    assert.is_false(failed[1].final)
  end)

  it("records an error's details with long strings cut, never inside a UTF-8 character", function()
    write("t.lua", [[
local errors = require "runbook.errors"
runbook "t" {}
step "A" { run = function()
  errors.raise { kind = "http", code = "status", message = "GET /x: expected 200, got 502",
    details = { status = 502, response = { body = "<p>" .. string.rep("é", 3000), headers = { server = "nginx" } }, list = { 1, 2 } } }
end }
]])
    local r = exec { "t.lua" }
    assert.are.equal(1, r.code, r.stderr)
    local d = of_type(events(), "step.failed", "A")[1].error.details
    assert.are.equal("<p>" .. string.rep("é", 2046) .. "… (6003 bytes in all)", d.response.body)
    assert.are.same({ server = "nginx" }, d.response.headers)
    assert.are.same({ 1, 2 }, d.list)
    assert.are.equal(502, d.status)
  end)

  it("stops a runaway step at its timeout even if it pcalls, and fails it", function()
    write("t.lua", [[
runbook "t" {}
step "A" { timeout = 0.3, run = function(ctx)
  while true do pcall(function() local x = 0 for i = 1, 1000 do x = x + i end end) end
end }
]])
    local r = exec { "t.lua" }
    assert.are.equal(1, r.code)
    local failed = of_type(events(), "step.failed", "A")[1]
    assert.are.equal("timeout", failed.error.kind)
    assert.are.equal("timed out after 0.3 s", failed.error.message)
  end)
end)

describe("dry runs", function()
  it("refuse to write files and run steps with ctx.dry_run set", function()
    write("d.lua", [[
runbook "d" {}
step "A" { run = function(ctx)
  ctx:log("dry=%s", tostring(ctx.dry_run))
  local ok, err = pcall(io.open, "out.txt", "w")
  ctx:log("open for writing: %s", tostring(err))
  assert(io.open("d.lua", "r")):close()
end }
]])
    local r = exec { "d.lua", "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("dry=true", 1, true))
    assert.truthy(r.stderr:find("open for writing: io.open: cannot open out.txt for writing in a dry run", 1, true), r.stderr)
    assert.is_false(rb.exists(dir .. "/out.txt"))
  end)
end)

describe("runs started within one second", function()
  it("are told apart: the newest unfinished one is resumed", function()
    write("s.lua", [[
runbook "s" { params = { tag = {} } }
step "A" { run = function(ctx) ctx:log("tag=%s dir=%s", ctx.params.tag, ctx.dir) error("stop") end }
]])
    for i = 1, 4 do
      local r = exec { "s.lua", "--new", "--param", "tag=" .. i }
      assert.are.equal(1, r.code)
    end
    local r = exec { "s.lua" }
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("tag=4 dir=" .. require("runbook._fs").realpath(dir), 1, true), r.stderr)
  end)
end)
