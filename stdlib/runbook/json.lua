-- runbook.json: JSON over jansson. JSON null is json.null (not nil), [] and
-- {} round-trip (json.array marks an empty array), integers are 64-bit
-- and floats stay floats.
local core = require "runbook._json"
local errors = require "runbook.errors"

local M = {}

--- The JSON null value (distinct from nil, which means "absent").
M.null = core.null

--- Encodes a value as JSON text.
--- Secrets raise unless opts.secrets is "redact" (written as "[REDACTED]")
--- or "reveal" (their bytes: only for what goes over the wire).
---@param value any
---@param opts {pretty:boolean|nil, indent:integer|nil, secrets:"error"|"redact"|"reveal"|nil}|nil
---@return string
function M.encode(value, opts)
  return core.encode(value, opts)
end

--- Decodes JSON text. Raises {kind="json"} naming the position (and
--- `name`, a file name for the message, when given).
---@param text string
---@param name string|nil
---@return any
function M.decode(text, name)
  if type(text) ~= "string" then error("json.decode: string expected, got " .. type(text), 2) end
  local v, err = core.decode(text)
  if v == nil then
    errors.raise { kind = "json", code = "syntax", message = "json.decode: " .. (name and (name .. ": ") or "") .. err }
  end
  return v
end

--- Like decode, without raising: value, or nil and the error.
---@param text string
---@return any, runbook.Error|nil
function M.pdecode(text)
  local ok, v = pcall(M.decode, text)
  if ok then return v end
  return nil, v
end

--- Marks a table as a JSON array, so an empty one encodes as [].
---@param t table|nil
---@return table
function M.array(t) return core.array(t) end

function M.is_array(t) return core.is_array(t) end
function M.is_null(v) return core.is_null(v) end

--- Reads and decodes a JSON file; errors name the file.
---@param path string
---@return any
function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then errors.raise { kind = "json", code = "io", message = "json.read_file: " .. tostring(err) } end
  local text = f:read("a")
  f:close()
  return M.decode(text, path)
end

return M
