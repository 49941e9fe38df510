-- `runbook test`: busted running inside this binary, so specs exercise the
-- modules exactly as shipped. busted and its C helpers come from the
-- system's Lua paths; the code under test comes from the embedded stdlib.
local host = require "runbook._host"

local M = {}

local EXIT = setmetatable({}, { __tostring = function() return "busted exit" end })

--- Runs busted with the given command-line arguments; returns the exit code.
---@param args string[] arguments as busted takes them (paths, --run, -t, ...)
---@return integer
function M.run(args)
  local ok_busted = pcall(require, "busted.runner")
  if not ok_busted then
    host.write(2, "runbook: busted is not installed (apt-get install lua-busted lua5.4)\n")
    return 2
  end
  local argv = { [0] = "runbook test" }
  local has_output = false
  for i, a in ipairs(args) do
    argv[i] = a
    if a == "-o" or a:match("^%-%-output") then has_output = true end
  end
  if not has_output then
    table.insert(argv, 1, "runbook._engine.test_output")
    table.insert(argv, 1, "-o")
  end
  _G.arg = argv
  local real_exit = os.exit
  local code = 0
  os.exit = function(c)
    code = (c == true or c == nil) and 0 or (c == false and 1 or c)
    error(EXIT, 0)
  end
  local ok, err = pcall(function()
    require "busted.runner" ({ standalone = false, output = "runbook._engine.test_output" })
  end)
  os.exit = real_exit
  if not ok and err ~= EXIT then
    host.write(2, "runbook test: " .. tostring(err) .. "\n")
    return 2
  end
  local summary = package.loaded["runbook._engine.test_output"]
  if ok and summary and summary.failed and summary.failed > 0 then code = 1 end
  return code
end

return M
