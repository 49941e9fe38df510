local host = require "runbook._host"
local M = {}
function M.main(args)
  local cmd = args[1]
  if cmd == "version" then
    host.write(1, "runbook " .. host.version() .. "\n")
    return 0
  elseif cmd == "test" then
    return require("runbook.testing").run({ table.unpack(args, 2) })
  end
  host.write(2, "runbook: unknown command\n")
  return 2
end
return M
