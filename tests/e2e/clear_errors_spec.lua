-- Mistakes and odd journals get one clear line and exit 2: never a Lua
-- traceback, a "[C]:-1:" location or a literal nil.
local rb = require "rbtest"
local fs = require "runbook._fs"
local crypto = require "runbook._crypto"

local dir
before_each(function() dir = rb.tmpdir("clear") end)
after_each(function() rb.rmtree(dir) end)

local function run(args, env) return rb.run(args, { cwd = dir, env = env }) end

-- one clear line on stderr, exit 2
local function one_line(r, want)
  assert.are.equal(2, r.code, r.stderr)
  assert.are.equal("runbook: " .. want .. "\n", r.stderr)
  assert.is_nil(r.stdout:find("nil", 1, true), r.stdout)
end

-- writes a journal with a valid hash chain from the events' own fields
local function chain(id, events)
  local rdir = dir .. "/.runbook/runs/" .. id
  assert(fs.mkdir_p(rdir, 448))
  local prev, out = string.rep("0", 64), {}
  for i, fields in ipairs(events) do
    local body = string.format('{"seq":%d%s,"prev":"%s"', i, fields, prev)
    prev = crypto.sha256(body .. "}")
    out[#out + 1] = body .. ',"hash":"' .. prev .. '"}'
  end
  rb.write(rdir .. "/journal.jsonl", table.concat(out, "\n") .. "\n", 384)
end

describe("one clear line, exit 2", function()
  it("for `runbook exec` on a directory", function()
    one_line(run { "exec", dir }, dir .. " is a directory: give the runbook file itself (runbook exec " .. dir .. "/NAME.lua)")
  end)

  it("for --values holding a list, or a param given a mapping", function()
    rb.write(dir .. "/v.lua", 'runbook "v" { params = { a = { default = "x" }, n = { default = 3 } } }\nstep "A" { run = function() end }\n')
    rb.write(dir .. "/list.yaml", "- a\n- b\n")
    rb.write(dir .. "/nested.yaml", "n:\n  b: 1\n")
    one_line(run { "exec", "v.lua", "--values", "list.yaml" }, "--values list.yaml: a mapping of param names to values expected, got a list")
    one_line(run { "exec", "v.lua", "--values", "nested.yaml" }, "--values nested.yaml: param 'n' must be one value (a string, number or boolean), got a mapping")
  end)

  it("for runs, status and log on a journal whose events lack their fields", function()
    local id = "odd-20260101-000000-abcd"
    chain(id, { ',"run":"' .. id .. '","type":"run.started"', ',"ts":"2026-01-01T00:00:00.000Z","run":"' .. id .. '","type":"run.finished"' })
    local want = "run " .. id .. " cannot be shown: the journal is damaged at seq 1 (seq 1 lacks its 'ts')"
    one_line(run { "status", id }, want)
    one_line(run { "log", id }, want)
    local r = run { "runs" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: " .. want .. "\n", r.stderr)
    assert.is_nil(r.stdout:find("nil", 1, true), r.stdout)
  end)

  it("for runs, status and log on an HMAC journal without RUNBOOK_AUDIT_KEY", function()
    rb.write(dir .. "/h.lua", 'runbook "h" {}\nstep "A" { run = function() end }\n')
    assert.are.equal(0, run({ "exec", "h.lua" }, { RUNBOOK_AUDIT_KEY = "k-1" }).code)
    local _, _, id = rb.journal(dir .. "/.runbook")
    local want = "run " .. id .. " cannot be shown: it is HMAC-protected: set RUNBOOK_AUDIT_KEY to read it"
    one_line(run { "status", "last" }, want)
    one_line(run { "log", "last" }, want)
    local r = run { "runs" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: " .. want .. "\n", r.stderr)
    assert.is_nil(r.stdout:find("nil", 1, true), r.stdout)
    assert.are.equal(0, run({ "status", "last" }, { RUNBOOK_AUDIT_KEY = "k-1" }).code)
  end)

  it("for exec on a journal that does not begin with run.started", function()
    rb.write(dir .. "/nr.lua", 'runbook "nr" {}\nstep "A" { run = function() end }\n')
    local id = "nr-20260101-000000-abcd"
    chain(id, { ',"ts":"2026-01-01T00:00:00.000Z","run":"' .. id .. '","type":"step.started","step":"A","attempt":1' })
    local r = run { "exec", "nr.lua" }
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("run " .. id .. ": the journal is damaged at seq 1 (seq 1 is step.started, not run.started: a run's journal begins with run.started); it will not be continued.", 1, true), r.stderr)
    assert.is_nil(r.stderr:find("changed", 1, true), r.stderr)
  end)

  it("for a manual step inside a parallel group, at the runbook's line", function()
    rb.write(dir .. "/p.lua", 'runbook "p" {}\nparallel "g" {\n  step "A" { run = function() end },\n  manual "M" { title = "t", instructions = "i" },\n}\n')
    one_line(run { "exec", "p.lua" }, "p.lua:2: parallel g: manual step M cannot run in parallel")
  end)
end)
