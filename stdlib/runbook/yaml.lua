-- runbook.yaml: YAML for runbooks (Kubernetes manifests, Compose files,
-- values files), over the C core runbook._yaml (libyaml).
--
-- Values follow runbook.json's conventions, so a document can go straight
-- into json.encode or a Kubernetes request and back:
--   * null (~, null, an empty value) is json.null; empty sequences carry the
--     json.array mark; integers are 64-bit Lua integers, floats Lua floats;
--   * plain scalars resolve by the YAML 1.2 core schema (yes/no/on/off are
--     strings); quoted and block scalars are always strings;
--   * mapping keys are strings: 1 -> "1", true -> "true", null -> "null";
--   * an alias is the anchored value itself: an aliased mapping or sequence
--     is the same Lua table in both places (changing one changes the other);
--   * duplicate keys, unknown aliases and integers outside 64 bits are errors.
--
-- Text that fails to load raises a structured error (kind "yaml"); a value
-- that cannot be dumped raises a plain message at the caller's line.
local core = require "runbook._yaml"
local jcore = require "runbook._json"
local host = require "runbook._host"

local M = {}

--- The null sentinel, the same value as json.null.
---@type userdata
M.null = jcore.null

---@class runbook.yaml.DumpOptions
---@field indent integer|nil  spaces per level, 2-9 (default 2)
---@field secrets "error"|"redact"|"reveal"|nil  how to treat a Secret (default "error")

local OPTIONS = { indent = "number", secrets = "string" }
local MODES = { error = true, redact = true, reveal = true }

local function new_error(message, code, details)
  return setmetatable({ kind = "yaml", code = code, message = message, details = details }, host.error_mt)
end

local function check_text(fn, text, name)
  if type(text) ~= "string" then return string.format("%s: text must be a string, got %s", fn, type(text)) end
  if name ~= nil and type(name) ~= "string" then
    return string.format("%s: name must be a string, got %s", fn, type(name))
  end
end

-- All documents, or nil and the structured error. The core says
-- "line L column C: problem"; the details keep the numbers for tools.
local function load_all(fn, text, name)
  local docs, err = core.load(text)
  if docs then return docs end
  local line, column = err:match("^line (%d+) column (%d+): ")
  local where = name and (name .. ": ") or ""
  return nil, new_error(fn .. ": " .. where .. err, "syntax",
    { line = tonumber(line), column = tonumber(column), name = name })
end

local function read(fn, path)
  if type(path) ~= "string" then return nil, nil, string.format("%s: path must be a string, got %s", fn, type(path)) end
  local f, ioerr = io.open(path, "rb")
  if not f then return nil, new_error(fn .. ": " .. ioerr, "io", { name = path }) end
  local text = f:read("a")
  f:close()
  return text
end

--- Loads the first document of a YAML stream (nil when the stream has no
--- document at all, json.null when the document is empty or `null`).
--- Raises a runbook.Error {kind="yaml", code="syntax", message=, details={line=, column=, name=}};
--- `name` (a file name) goes into the message.
---@param text string
---@param name string|nil  what the text is, for error messages
---@return any value
function M.load(text, name)
  local bad = check_text("yaml.load", text, name)
  if bad then error(bad, 2) end
  local docs, err = load_all("yaml.load", text, name)
  if not docs then error(err) end
  return docs[1]
end

--- Loads every document of a YAML stream (documents separated by `---`).
--- Returns an array (json.array-marked, so an empty stream gives an empty array).
---@param text string
---@param name string|nil
---@return any[] documents
function M.load_all(text, name)
  local bad = check_text("yaml.load_all", text, name)
  if bad then error(bad, 2) end
  local docs, err = load_all("yaml.load_all", text, name)
  if not docs then error(err) end
  return docs
end

--- Like load, but returns nil and the error instead of raising. A stream
--- with no document also gives nil, without an error: test the second value.
---@param text string
---@param name string|nil
---@return any value
---@return runbook.Error|nil err
function M.pload(text, name)
  local bad = check_text("yaml.pload", text, name)
  if bad then error(bad, 2) end
  local docs, err = load_all("yaml.pload", text, name)
  if not docs then return nil, err end
  return docs[1]
end

--- Reads a YAML file and loads its first document. Raises a runbook.Error
--- naming the file: code "io" when it cannot be read, "syntax" when it is not YAML.
---@param path string
---@return any value
function M.load_file(path)
  local text, ioerr, bad = read("yaml.load_file", path)
  if bad then error(bad, 2) end
  if not text then error(ioerr) end
  local docs, err = load_all("yaml.load_file", text, path)
  if not docs then error(err) end
  return docs[1]
end

--- Reads a YAML file and loads all of its documents (see load_all).
---@param path string
---@return any[] documents
function M.load_all_file(path)
  local text, ioerr, bad = read("yaml.load_all_file", path)
  if bad then error(bad, 2) end
  if not text then error(ioerr) end
  local docs, err = load_all("yaml.load_all_file", text, path)
  if not docs then error(err) end
  return docs
end

--- Dumps a value as one YAML document in block style, mapping keys sorted.
--- Strings that would load as another type ("1", "true", "") are quoted,
--- multi-line strings are written as | blocks, bytes that are not UTF-8 as
--- !!binary; load(dump(v)) gives back v.
---@param value any
---@param opts runbook.yaml.DumpOptions|nil
---@return string
function M.dump(value, opts)
  if opts ~= nil then
    if type(opts) ~= "table" then error("yaml.dump: options must be a table, got " .. type(opts), 2) end
    for k, v in pairs(opts) do
      if not OPTIONS[k] then error(string.format("yaml.dump: unknown option '%s'", tostring(k)), 2) end
      if type(v) ~= OPTIONS[k] then
        error(string.format("yaml.dump: option '%s' must be a %s, got %s", k, OPTIONS[k], type(v)), 2)
      end
    end
    if opts.secrets and not MODES[opts.secrets] then
      error(string.format('yaml.dump: option \'secrets\' must be "error", "redact" or "reveal", got "%s"',
        opts.secrets), 2)
    end
    if opts.indent and (math.type(opts.indent) ~= "integer" or opts.indent < 2 or opts.indent > 9) then
      error("yaml.dump: option 'indent' must be an integer from 2 to 9", 2)
    end
  end
  -- called through pcall so the core's message carries no position of ours
  local ok, text = pcall(core.dump, value, opts)
  if not ok then error(text, 2) end
  return text
end

return M
