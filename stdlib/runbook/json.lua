-- runbook.json: JSON for runbooks, over the C core runbook._json (jansson).
--
-- The conventions that make values round-trip exactly:
--   * JSON null is json.null, a sentinel distinct from nil (a Lua table
--     cannot hold nil, so {"a": null} decodes to { a = json.null });
--   * {} encodes as an object, json.array{} as an array; decoded empty
--     arrays carry the array mark, so [] and {} both come back as they were;
--   * Lua integers are 64-bit JSON integers, Lua floats JSON reals (1.0
--     stays a float, -0.0 keeps its sign);
--   * a Secret is refused unless the caller says to redact or reveal it.
-- Decoding refuses duplicate keys (as runbook.yaml does), a NUL byte outside
-- a string, and nesting past 512 levels, the limit encode has too.
--
-- Text that fails to parse comes from the outside world, so decode raises a
-- structured error (kind "json"); a value that cannot be encoded is the
-- caller's mistake, so encode raises a plain message at the caller's line.
local core = require "runbook._json"
local host = require "runbook._host"

local M = {}

--- The JSON null sentinel (prints as "null"). Use it where a table needs a null.
---@type userdata
M.null = core.null

---@class runbook.json.EncodeOptions
---@field pretty boolean|nil    indent the output, one value a line (default false: compact)
---@field indent integer|nil    spaces per level, 0-31 (default 2; implies pretty)
---@field secrets "error"|"redact"|"reveal"|nil  how to treat a Secret (default "error")
---@field scrub boolean|nil     replace every registered secret inside strings with [REDACTED]

local OPTIONS = { pretty = "boolean", indent = "number", secrets = "string", scrub = "boolean" }
local MODES = { error = true, redact = true, reveal = true }

local function new_error(message, code, details)
  return setmetatable({ kind = "json", code = code, message = message, details = details }, host.error_mt)
end

local function check_text(fn, text, name)
  if type(text) ~= "string" then return string.format("%s: text must be a string, got %s", fn, type(text)) end
  if name ~= nil and type(name) ~= "string" then
    return string.format("%s: name must be a string, got %s", fn, type(name))
  end
end

local function encode_options(opts)
  if opts == nil then return nil end
  if type(opts) ~= "table" then return nil, "json.encode: options must be a table, got " .. type(opts) end
  for k, v in pairs(opts) do
    if not OPTIONS[k] then return nil, string.format("json.encode: unknown option '%s'", tostring(k)) end
    if type(v) ~= OPTIONS[k] then
      return nil, string.format("json.encode: option '%s' must be a %s, got %s", k, OPTIONS[k], type(v))
    end
  end
  if opts.secrets and not MODES[opts.secrets] then
    return nil, string.format('json.encode: option \'secrets\' must be "error", "redact" or "reveal", got "%s"',
      opts.secrets)
  end
  if opts.indent and (math.type(opts.indent) ~= "integer" or opts.indent < 0 or opts.indent > 31) then
    return nil, "json.encode: option 'indent' must be an integer from 0 to 31"
  end
  return {
    pretty = opts.pretty or opts.indent ~= nil,
    indent = opts.indent,
    secrets = opts.secrets,
    scrub = opts.scrub,
  }
end

--- Encodes a value as JSON text. Objects have their keys sorted, so the
--- same value always gives the same text.
---@param value any  nil, boolean, number, string, table, json.null or a Secret (per opts.secrets)
---@param opts runbook.json.EncodeOptions|nil
---@return string
function M.encode(value, opts)
  local o, bad = encode_options(opts)
  if bad then error(bad, 2) end
  -- called through pcall so the core's message carries no position of ours
  local ok, text = pcall(core.encode, value, o)
  if not ok then error(text, 2) end
  return text
end

-- The structured error for text that does not parse. The core says
-- "line L column C: message"; the details keep the numbers for tools.
local function parse_error(fn, err, name)
  local line, column = err:match("^line (%d+) column (%d+): ")
  local where = name and (name .. ": ") or ""
  return new_error(fn .. ": " .. where .. err, "syntax",
    { line = tonumber(line), column = tonumber(column), name = name })
end

local function decode(fn, text, name)
  local value, err = core.decode(text)
  if value == nil then return nil, parse_error(fn, err, name) end
  return value
end

--- Decodes JSON text (any JSON value, not only objects and arrays).
--- Raises a runbook.Error {kind="json", code="syntax", message=, details={line=, column=, name=}}
--- when the text is not JSON; `name` (a file name, "response body") goes into the message.
---@param text string
---@param name string|nil  what the text is, for the error message
---@return any value  json.null for null; never nil
function M.decode(text, name)
  local bad = check_text("json.decode", text, name)
  if bad then error(bad, 2) end
  local value, err = decode("json.decode", text, name)
  if value == nil then error(err) end
  return value
end

--- Like decode, but returns nil and the error instead of raising.
---@param text string
---@param name string|nil
---@return any value
---@return runbook.Error|nil err
function M.pdecode(text, name)
  local bad = check_text("json.pdecode", text, name)
  if bad then error(bad, 2) end
  return decode("json.pdecode", text, name)
end

--- Reads and decodes a JSON file. Raises a runbook.Error naming the file:
--- code "io" when it cannot be read, "syntax" when it is not JSON.
---@param path string
---@return any value
function M.read_file(path)
  if type(path) ~= "string" then error("json.read_file: path must be a string, got " .. type(path), 2) end
  local f, ioerr = io.open(path, "rb")
  if not f then error(new_error("json.read_file: " .. ioerr, "io", { name = path })) end
  local text = f:read("a")
  f:close()
  local value, err = decode("json.read_file", text, path)
  if value == nil then error(err) end
  return value
end

--- Marks a table as a JSON array, so an empty one encodes as [] (not {}).
--- Returns the same table; with no argument, a new empty array.
---@generic T: table
---@param t T|nil
---@return T
function M.array(t)
  if t ~= nil and type(t) ~= "table" then error("json.array: table expected, got " .. type(t), 2) end
  return core.array(t)
end

--- True when t carries the array mark (json.array, or decoded from []).
---@param t any
---@return boolean
function M.is_array(t)
  return core.is_array(t)
end

--- True when v is json.null.
---@param v any
---@return boolean
function M.is_null(v)
  return core.is_null(v)
end

return M
