-- Who is acting: RUNBOOK_ACTOR where it is set (a CI job, or a shared
-- account naming the person at it), else user@host. Confirmations record
-- it, and approvals count distinct actors.
local host = require "runbook._host"

return function()
  local a = os.getenv("RUNBOOK_ACTOR")
  if a and a:match("%S") then return (a:gsub("^%s+", ""):gsub("%s+$", "")) end
  return host.user() .. "@" .. host.hostname()
end
