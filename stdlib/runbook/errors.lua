-- Structured errors: tables with kind, code, message and details, printing
-- as their message. C cores build the same shape (rb_push_error), so a
-- runbook can branch on err.kind / err.code whatever raised it.
local host = require "runbook._host"

local M = {}
local mt = host.error_mt

---@class runbook.Error
---@field kind string  what failed: "k8s", "pg", "http", "command", "timeout", ...
---@field code string|integer|nil  a machine-readable code (SQLSTATE, HTTP status, reason)
---@field message string
---@field details table|nil

--- Makes a structured error value.
---@param t {kind:string, code:any, message:string, details:table|nil}
---@return runbook.Error
function M.new(t)
  assert(type(t) == "table" and type(t.message) == "string", "errors.new: message required")
  return setmetatable(t, mt)
end

--- Raises a structured error (level 0: the message is already complete).
---@param t {kind:string, code:any, message:string, details:table|nil}
function M.raise(t)
  error(M.new(t), 0)
end

--- Raises a structured error whose message is string.format(fmt, ...).
--- The one helper every module uses instead of a local raise/fail.
---@param kind string
---@param code any
---@param fmt string
function M.raisef(kind, code, fmt, ...)
  error(setmetatable({ kind = kind, code = code, message = string.format(fmt, ...) }, mt), 0)
end

--- Like raisef, with details attached.
---@param kind string
---@param code any
---@param details table|nil
---@param fmt string
function M.raisedf(kind, code, details, fmt, ...)
  error(setmetatable({ kind = kind, code = code, details = details, message = string.format(fmt, ...) }, mt), 0)
end

--- True when e is a structured error, optionally of the given kind.
function M.is(e, kind)
  return type(e) == "table" and getmetatable(e) == mt and (kind == nil or e.kind == kind)
end

--- The message of any error value.
function M.message(e)
  if type(e) == "table" and type(e.message) == "string" then return e.message end
  return tostring(e)
end

return M
