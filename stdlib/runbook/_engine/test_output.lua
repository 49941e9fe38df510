-- busted output handler: the usual terminal output, then one closing line
-- "N passed, N failed, N skipped" that CI and people can read at a glance.
local counts = { passed = 0, failed = 0, skipped = 0 }

local function handler(options)
  local busted = require "busted"
  local isatty = io.type(io.stdout) == "file" and require("term").isatty(io.stdout)
  local inner = require(isatty and "busted.outputHandlers.utfTerminal" or "busted.outputHandlers.plainTerminal")(options)
  local errors_seen = 0
  busted.subscribe({ "error" }, function()
    errors_seen = errors_seen + 1
    return nil, true
  end)
  busted.subscribe({ "suite", "end" }, function()
    counts.passed = #inner.successes
    counts.failed = #inner.failures + #inner.errors
    counts.skipped = #inner.pendings
    -- errors outside any `it` (a spec file that fails to load) count too
    if counts.failed == 0 and errors_seen > 0 then counts.failed = errors_seen end
    io.write(string.format("%d passed, %d failed, %d skipped\n", counts.passed, counts.failed, counts.skipped))
    io.flush()
    return nil, true
  end, { priority = 100 })
  return inner
end

return setmetatable(counts, { __call = function(_, options) return handler(options) end })
