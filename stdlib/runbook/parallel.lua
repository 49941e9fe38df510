-- Parallel groups: steps declared in `parallel { ... }` run concurrently,
-- each in its own Lua state on its own thread, sharing the run's journal.
local M = {}

--- True when this process can run a group's steps on threads.
function M.available(run)
  return false
end

function M.run(run, steps)
  error("parallel execution is not available")
end

return M
