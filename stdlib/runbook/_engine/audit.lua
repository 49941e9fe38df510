-- The hub between primitives and the engine. A primitive that changes the
-- world calls audit.action{...}; one that talks calls audit.log. While a
-- step runs the engine installs a sink that writes to the run's journal,
-- log and console; outside a run (specs, `runbook test`) events are kept
-- in audit.recorded / audit.logs so specs can assert on them.
local host = require "runbook._host"

local M = {
  recorded = {}, -- actions recorded outside a run
  logs = {},     -- log lines recorded outside a run
}

local sink = nil

--- Installs (or with nil, removes) the engine's sink.
---@param s {action:fun(t:table), log:fun(level:string, msg:string), progress:fun(done:number, total:number|nil, note:string|nil), ctx:table, dry_run:boolean}|nil
function M.set_sink(s) sink = s end

--- Records an audited side effect: kind ("k8s", "command", "migration",
--- "backup", "http", "s3", "redis", ...) plus what was done and its result.
--- Strings are scrubbed and secrets redacted before anything is written.
---@param t table
function M.action(t)
  assert(type(t) == "table" and type(t.kind) == "string", "audit.action: kind required")
  if sink then return sink.action(t) end
  M.recorded[#M.recorded + 1] = t
end

--- Records several actions that happened together (independent writes
--- done concurrently): the engine makes them durable with one sync, before
--- the step goes on.
function M.actions(list)
  if #list == 0 then return end
  if sink and sink.actions then return sink.actions(list) end
  for _, t in ipairs(list) do M.action(t) end
end

--- Writes a line to the run log (and console), scrubbed.
---@param level "debug"|"info"|"warn"|"error"
---@param msg string
function M.log(level, msg)
  msg = tostring(msg)
  if sink then return sink.log(level, msg) end
  M.logs[#M.logs + 1] = { level = level, message = host.scrub(msg) }
  if os.getenv("RUNBOOK_VERBOSE") then
    host.write(2, string.format("[%s] %s\n", level, msg))
  end
end

--- Reports progress of the current step (done of total, and a note).
function M.progress(done, total, note)
  if sink then return sink.progress(done, total, note) end
end

--- True while the run is a --dry-run: writing primitives must not write.
function M.dry_run()
  return sink ~= nil and sink.dry_run == true
end

--- The running step's ctx, or nil outside a step.
function M.current()
  return sink and sink.ctx
end

--- Clears what was recorded outside a run (for specs).
function M.reset()
  M.recorded, M.logs = {}, {}
end

return M
