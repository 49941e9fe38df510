local host = require "runbook._host"
local M = {}
function M.main(args)
  host.write(1, "runbook " .. host.version() .. "\n")
  return 0
end
return M
