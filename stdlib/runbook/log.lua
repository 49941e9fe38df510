-- runbook.log: logging for shared modules, which have no ctx at hand. Lines
-- go to the running step's log and the console (scrubbed of secrets), or,
-- outside a run, to audit.logs.
local audit = require "runbook._engine.audit"

local M = {}

--- How log calls build their line: string.format when the first argument
--- is a format with arguments after it, else the values joined by spaces.
local function fmt(first, ...)
  if select("#", ...) > 0 and type(first) == "string" and first:find("%", 1, true) then return string.format(first, ...) end
  local parts = table.pack(first, ...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  return table.concat(parts, " ", 1, parts.n)
end

M.format = fmt

--- Logs at info level: log.info("applied %d objects", n)
function M.info(...) audit.log("info", fmt(...)) end
--- Logs at warn level.
function M.warn(...) audit.log("warn", fmt(...)) end
--- Logs at error level (the step goes on; raise to fail it).
function M.error(...) audit.log("error", fmt(...)) end
--- Logs at debug level (shown with RUNBOOK_VERBOSE).
function M.debug(...) audit.log("debug", fmt(...)) end

--- Progress of the running step: done of total (total may be nil), a note.
function M.progress(done, total, note) audit.progress(done, total, note) end

return M
