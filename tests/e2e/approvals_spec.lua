-- manual "X" { approvers = N }: confirmed only when N different people
-- (RUNBOOK_ACTOR, else user@host) have confirmed it; each confirmation is
-- its own event, the same person twice counts once, and status says who
-- approved and how many are still needed. Real processes, a real store.
local rb = require "rbtest"

local BOOK = [[
runbook "gated" {}
step "plan" { run = function(ctx) ctx:log("planned") end }
manual "approve" {
  title = "Approve the production change",
  instructions = "Read the plan, then: runbook confirm <run> approve --note '...'",
  approvers = 2,
}
step "apply" { run = function(ctx) ctx:log("applied") end }
]]

describe("approvals by more than one person", function()
  local dir
  before_each(function()
    dir = rb.tmpdir("approvals")
    rb.write(dir .. "/gated.lua", BOOK)
  end)
  after_each(function() rb.rmtree(dir) end)

  local function run(args, who) return rb.run(args, { cwd = dir, env = { RUNBOOK_ACTOR = who } }) end

  it("waits until two different people have confirmed, and records each", function()
    assert.are.equal(3, rb.exec("gated.lua", { cwd = dir }).code)

    local a = run({ "confirm", "last", "approve", "--note", "plan looks right" }, "alice")
    assert.are.equal(0, a.code, a.stderr)
    assert.is_truthy(a.stdout:find("approved approve in run ", 1, true), a.stdout)
    assert.is_truthy(a.stdout:find("by alice (1 of 2 approvals; 1 more needed from someone else)", 1, true), a.stdout)

    -- one approval is not enough: the run still waits
    assert.are.equal(3, rb.exec("gated.lua", { cwd = dir }).code)

    local again = run({ "confirm", "last", "approve" }, "alice")
    assert.are.equal(2, again.code)
    assert.is_truthy(again.stderr:find("alice has already approved step approve of run ", 1, true), again.stderr)
    assert.is_truthy(again.stderr:find("(1 of 2); another person must approve it", 1, true), again.stderr)

    local st = run({ "status", "last" })
    assert.is_truthy(st.stdout:find("approved by alice (1 of 2); 1 more needed from someone else", 1, true), st.stdout)

    local b = run({ "confirm", "last", "approve", "--note", "ok from me" }, "bob")
    assert.are.equal(0, b.code, b.stderr)
    assert.is_truthy(b.stdout:find("confirmed approve in run ", 1, true), b.stdout)

    local fin = rb.exec("gated.lua", { cwd = dir })
    assert.are.equal(0, fin.code, fin.stderr)
    st = run({ "status", "last" })
    assert.is_truthy(st.stdout:find("approved by alice, bob: ok from me", 1, true), st.stdout)

    local confirmations = rb.events(dir .. "/.runbook", "step.confirmed")
    assert.are.equal(2, #confirmations)
    assert.are.same({ "alice", "bob" }, { confirmations[1].actor, confirmations[2].actor })
    assert.are.same({ 2, 2 }, { confirmations[1].needed, confirmations[2].needed })
    assert.are.equal(1, #rb.events(dir .. "/.runbook", "step.finished") - 1, "apply ran once")
    assert.are.equal(0, run({ "audit", "verify", "last" }).code)
  end)

  it("refuses a count that is not a whole number of people", function()
    rb.write(dir .. "/bad.lua", 'runbook "bad" {}\nmanual "m" { instructions = "x", approvers = 0 }\n')
    local r = run({ "check", "bad.lua" })
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("bad.lua:2: manual m: approvers must be a whole number of people, 1 or more", 1, true), r.stderr)
  end)
end)
