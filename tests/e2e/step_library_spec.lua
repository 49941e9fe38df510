-- Step libraries: a module declares steps for the runbook that requires
-- it, under a prefix the caller gives. run.started records the sha256 of
-- every local module loaded; a resume after a library changed says which,
-- and refuses when a completed step it declared vanished.
local rb = require "rbtest"
local fs = require "runbook._fs"

local LIB = [[
-- lib/checks.lua: numbered checks under the caller's prefix
local M = {}
function M.checks(opts)
  for i, name in ipairs(opts.names) do
    step(opts.prefix .. "." .. i) {
      title = opts.prefix .. ": " .. name,
      run = function(ctx)
        if os.getenv("FAIL_AT") == name then error("check " .. name .. " failed", 0) end
        ctx:log("checked %s", name)
      end,
    }
  end
end
return M
]]

local BOOK = [[
local checks = require "lib.checks"
runbook "uses-lib" {}
step "first" { run = function() end }
checks.checks { prefix = "smoke", names = { "web", "api", "admin" } }
checks.checks { prefix = "after", names = { "db" } }
]]

describe("step libraries", function()
  local dir
  before_each(function()
    dir = rb.tmpdir("steplib")
    assert(fs.mkdir_p(dir .. "/lib", 448))
    rb.write(dir .. "/lib/checks.lua", LIB)
    rb.write(dir .. "/book.lua", BOOK)
  end)
  after_each(function() rb.rmtree(dir) end)

  it("declare steps under the caller's prefix, and a resume names a changed library", function()
    local plan = rb.run({ "plan", "book.lua" }, { cwd = dir })
    assert.are.equal(0, plan.code, plan.stderr)
    for _, id in ipairs { "smoke.1", "smoke.2", "smoke.3", "after.1" } do
      assert.is_truthy(plan.stdout:find(id, 1, true), plan.stdout)
    end

    local r = rb.exec("book.lua", { cwd = dir, env = { FAIL_AT = "api" } })
    assert.are.equal(1, r.code)
    local started = rb.events(dir .. "/.runbook", "run.started")[1]
    assert.are.equal(1, #started.modules)
    assert.are.same({ "lib.checks", "lib/checks.lua" }, { started.modules[1].name, started.modules[1].path })
    assert.are.equal(64, #started.modules[1].sha256)

    -- an edit inside the library: allowed, and said
    rb.write(dir .. "/lib/checks.lua", LIB .. "-- tuned\n")
    r = rb.exec("book.lua", { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local out = r.stdout .. r.stderr
    assert.is_truthy(out:find("module lib.checks (lib/checks.lua) changed since this run started (sha256 ", 1, true), out)
    local resumed = rb.events(dir .. "/.runbook", "run.resumed")[1]
    assert.are.equal(1, #resumed.modules_changed)
    assert.is_true(resumed.changed)
    -- smoke.1 ran once, before the failure; smoke.2 twice (failed, then done)
    local starts = {}
    for _, ev in ipairs(rb.events(dir .. "/.runbook", "step.started")) do starts[ev.step] = (starts[ev.step] or 0) + 1 end
    assert.are.same({ first = 1, ["smoke.1"] = 1, ["smoke.2"] = 2, ["smoke.3"] = 1, ["after.1"] = 1 }, starts)
  end)

  it("refuses a resume when the library no longer declares a step that completed", function()
    local r = rb.exec("book.lua", { cwd = dir, env = { FAIL_AT = "admin" } })
    assert.are.equal(1, r.code)
    rb.write(dir .. "/book.lua", (BOOK:gsub('"web", "api", "admin"', '"api", "admin"')))
    r = rb.exec("book.lua", { cwd = dir })
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("step smoke.1 already ran as 'smoke: web' (declared by lib.checks) but is now 'smoke: api' (declared by lib.checks): the library's steps moved", 1, true), r.stderr)
    assert.is_truthy(r.stderr:find("Pass --accept-changes to resume anyway", 1, true), r.stderr)
    -- a library edit that keeps its steps is not refused: only moved definitions are
    rb.write(dir .. "/book.lua", BOOK)
    r = rb.exec("book.lua", { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
  end)
end)
