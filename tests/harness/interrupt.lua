-- Ctrl-C for in-process specs: a helper process sends SIGINT to this
-- process after a delay, exactly as a terminal would. The host's handler
-- only sets the interrupt flag, which specs clear when done.
local proc = require "runbook._proc"
local host = require "runbook._host"

local M = {}

--- Sends SIGINT to this process after `seconds`. Returns a function that
--- waits for the sender and clears the interrupt flag (call it in every path).
function M.after(seconds)
  host.trap_signals()
  local p = assert(proc.spawn { argv = { "sh", "-c", string.format("sleep %s; kill -INT %d", tostring(seconds), host.pid()) },
    stdout = "null", stderr = "null", group = false })
  return function()
    p:wait(10)
    host.clear_interrupt()
  end
end

--- Runs fn under the guard (as a step runs) with SIGINT arriving after
--- `seconds`. Returns guarded's results and the elapsed time.
function M.run(seconds, fn)
  local done = M.after(seconds)
  local t0 = host.monotime()
  local r = table.pack(host.guarded(nil, fn))
  local elapsed = host.monotime() - t0
  done()
  return r[1], r[2], elapsed
end

return M
