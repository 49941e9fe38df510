-- busted output handler for scripts/sandbox.sh: the sandbox driver
-- (sandbox_main.lua) prints its own lines; this handler adds nothing but
-- the reason when the driver fails, as one plain line (no traceback).
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local function report(_, _, message)
    local text = message
    if type(message) == "table" then
      local ok, errors = pcall(require, "runbook.errors")
      text = ok and errors.message(message) or tostring(message.message or message)
    end
    -- the driver's messages are for people: no "file.lua:N:" in front
    text = tostring(text):gsub("^[^\n]-%.lua:%d+: ", "")
    io.stderr:write("sandbox: " .. text .. "\n")
    io.stderr:flush()
    return nil, true
  end
  busted.subscribe({ "error" }, report)
  busted.subscribe({ "failure" }, report)
  return handler
end
