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

--- Sends SIGINT to this process once `path` exists and is not empty (for
--- a test that must interrupt a command only once it runs: a fixed delay
--- can fire before it starts on a busy machine). Gives up after 30 s.
function M.once(path)
  host.trap_signals()
  local script = string.format("i=0; while [ ! -s '%s' ]; do i=$((i+1)); [ $i -lt 3000 ] || exit 1; sleep 0.01; done; kill -INT %d",
    path, host.pid())
  local p = assert(proc.spawn { argv = { "sh", "-c", script }, stdout = "null", stderr = "null", group = false })
  return function()
    p:wait(40)
    host.clear_interrupt()
  end
end

--- Runs fn under the guard (as a step runs) with SIGINT arriving after
--- `when` seconds, or once the file `when.file` has been written.
--- Returns guarded's results and the elapsed time.
function M.run(when, fn)
  local done = type(when) == "table" and M.once(when.file) or M.after(when)
  local t0 = host.monotime()
  local r = table.pack(host.guarded(nil, fn))
  local elapsed = host.monotime() - t0
  done()
  return r[1], r[2], elapsed
end

return M
