-- Under --dry-run a step's writes are not made, so its verify cannot hold
-- after it ran: the engine does not check it then (and says so), while a
-- real run still fails a step whose verify does not pass after run.
local rb = require "rbtest"

local BOOK = [[
runbook "v" {}
step "A" {
  verify = function(ctx) ctx:log("verify called") return false end,
  run = function(ctx) ctx:log("run, dry=%s", tostring(ctx.dry_run)) end,
}
step "B" { needs = "A", run = function(ctx) ctx:log("B ran") end }
]]

describe("verify in a dry run", function()
  local dir
  before_each(function()
    dir = rb.tmpdir("dryverify")
    rb.write(dir .. "/v.lua", BOOK)
  end)
  after_each(function() rb.rmtree(dir) end)

  it("is checked before the step and not after it", function()
    local r = rb.run({ "exec", "v.lua", "--dry-run" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local _, calls = r.stderr:gsub("verify called", "")
    assert.are.equal(1, calls)
    assert.truthy(r.stderr:find("A        dry run: verify after run not checked (nothing was written)", 1, true), r.stderr)
    assert.truthy(r.stderr:find("B ran", 1, true))
    assert.truthy(r.stderr:find("dry run complete: 2 step(s) would run; nothing was written", 1, true), r.stderr)
  end)

  it("still fails a real run whose verify does not pass after the step", function()
    local r = rb.run({ "exec", "v.lua" }, { cwd = dir })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("A        FAILED: verify did not pass after run", 1, true), r.stderr)
    local _, calls = r.stderr:gsub("verify called", "")
    assert.are.equal(2, calls)
  end)
end)
