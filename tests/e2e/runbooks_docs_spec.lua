-- docs/runbooks/NAME.md is `runbook doc runbooks/NAME.lua` for every
-- shipped runbook: a runbook changed without its rendered checklist, a
-- runbook without one, or a page left behind by a removed runbook fails
-- here, naming the command that brings the page up to date.
local rb = require "rbtest"
local fs = require "runbook._fs"

local RUNBOOKS = rb.source_dir .. "/runbooks"
local DOCS = rb.source_dir .. "/docs/runbooks"
local REGEN = "for f in runbooks/*.lua; do runbook doc \"$f\" > docs/runbooks/$(basename \"$f\" .lua).md; done"

local function names(dir, ext)
  local out = {}
  for _, f in ipairs(fs.listdir(dir) or {}) do
    local n = f:match("^(.+)%." .. ext .. "$")
    if n then out[#out + 1] = n end
  end
  table.sort(out)
  return out
end

describe("docs/runbooks/", function()
  it("has a page for every shipped runbook and none for a runbook that is gone", function()
    local books = names(RUNBOOKS, "lua")
    assert.truthy(#books >= 6, "runbooks/ lists " .. #books .. " runbooks")
    assert.are.same(books, names(DOCS, "md"), "docs/runbooks/ does not match runbooks/*.lua; regenerate: " .. REGEN)
  end)

  for _, name in ipairs(names(RUNBOOKS, "lua")) do
    it("docs/runbooks/" .. name .. ".md is what runbook doc renders now", function()
      -- as the command above runs it: from the repository, the path relative
      -- (the page shows the commands that run it with that path)
      local r = rb.run({ "doc", "runbooks/" .. name .. ".lua" }, { cwd = rb.source_dir })
      assert.are.equal(0, r.code, r.stderr)
      local page = rb.exists(DOCS .. "/" .. name .. ".md") and rb.read(DOCS .. "/" .. name .. ".md") or nil
      assert.is_true(page == r.stdout, "docs/runbooks/" .. name .. ".md is stale; regenerate: " .. REGEN)
    end)
  end
end)
