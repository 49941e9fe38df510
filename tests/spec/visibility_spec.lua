-- Privacy is in the name: every module of the stdlib whose name has no part
-- starting with '_' is public, so it has a page in docs/api/ (a submodule is
-- named on its parent's page); every module with such a part is refused by
-- a runbook's require.
local rbtest = require "rbtest"
local fs = require "runbook._fs"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function modules()
  local public, private = {}, {}
  for name in pairs(package.preload) do
    if name:match("^runbook%.") then
      if name:match("%._") then private[#private + 1] = name else public[#public + 1] = name end
    end
  end
  table.sort(public)
  table.sort(private)
  return public, private
end

describe("module visibility", function()
  local public, private = modules()

  it("finds both kinds of module", function()
    assert.is_true(#public >= 15, "public modules: " .. #public)
    assert.is_true(#private >= 30, "private modules: " .. #private)
    assert.is_nil(package.preload["runbook.engine"], "the engine lives in runbook._engine")
  end)

  for _, name in ipairs(public) do
    it(name .. " has a page in docs/api", function()
      local top = name:match("^runbook%.([%w]+)")
      local page = rbtest.source_dir .. "/docs/api/" .. top .. ".md"
      assert.is_truthy(fs.stat(page), "no page " .. page .. " for " .. name)
      assert.is_truthy(read(page):find(name, 1, true), page .. " does not name " .. name)
    end)
  end

  it("refuses every private module to a runbook, and lets it require the public ones", function()
    local dir = rbtest.tmpdir("visibility")
    local lines = { 'runbook "visibility" {}', 'local PRIVATE = {' }
    for _, name in ipairs(private) do lines[#lines + 1] = string.format("  %q,", name) end
    lines[#lines + 1] = "}"
    lines[#lines + 1] = "local PUBLIC = {"
    for _, name in ipairs(public) do lines[#lines + 1] = string.format("  %q,", name) end
    lines[#lines + 1] = "}"
    lines[#lines + 1] = [[
step "probe" {
  run = function(ctx)
    local leaked, refused = {}, 0
    for _, name in ipairs(PRIVATE) do
      local ok, err = pcall(require, name)
      if ok then leaked[#leaked + 1] = name
      elseif tostring(err):find("module '" .. name .. "' is not available to runbooks", 1, true) then refused = refused + 1
      else leaked[#leaked + 1] = name .. " (" .. tostring(err) .. ")" end
    end
    for _, name in ipairs(PUBLIC) do assert(require(name), name) end
    if #leaked > 0 then error("a runbook could load: " .. table.concat(leaked, ", "), 0) end
    ctx:log("refused %d private modules", refused)
  end,
}
]]
    rbtest.write(dir .. "/visibility.lua", table.concat(lines, "\n"))
    local r = rbtest.run({ "exec", dir .. "/visibility.lua", "--state", dir .. "/state" })
    rbtest.rmtree(dir)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.is_truthy((r.stdout .. r.stderr):find("refused " .. #private .. " private modules", 1, true), r.stdout .. r.stderr)
  end)
end)

describe("runbook._engine.backoff", function()
  local backoff = require "runbook._engine.backoff"
  it("is the one rule behind step retries and the primitives' retries", function()
    assert.are.same({ 2, 2, 2 }, { backoff.delay("fixed", 2, 1), backoff.delay("fixed", 2, 2), backoff.delay("fixed", 2, 9) })
    assert.are.same({ 2, 4, 6 }, { backoff.delay("linear", 2, 1), backoff.delay("linear", 2, 2), backoff.delay("linear", 2, 3) })
    assert.are.same({ 0.5, 1, 2, 4, 8, 8 }, {
      backoff.delay("exponential", 0.5, 1, 8), backoff.delay("exponential", 0.5, 2, 8), backoff.delay("exponential", 0.5, 3, 8),
      backoff.delay("exponential", 0.5, 4, 8), backoff.delay("exponential", 0.5, 5, 8), backoff.delay("exponential", 0.5, 6, 8) })
    assert.has_error(function() backoff.delay("random", 1, 1) end, "backoff: unknown policy random")
  end)
end)
