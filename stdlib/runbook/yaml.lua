-- runbook.yaml: YAML over libyaml, with the same values as runbook.json:
-- null is yaml.null (= json.null), empty sequences are marked arrays.
-- Plain scalars follow the YAML 1.2 core schema (so `yes` is a string and
-- `on: push` keeps its key); quoted and block scalars are strings; anchors,
-- aliases (shared, not copied), merge keys and multi-document streams load.
local core = require "runbook._yaml"
local errors = require "runbook.errors"

local M = {}

M.null = core.null

local function raise(fn, name, err)
  errors.raise { kind = "yaml", code = "syntax", message = "yaml." .. fn .. ": " .. (name and (name .. ": ") or "") .. err }
end

--- Every document of a YAML stream, in order.
---@param text string
---@param name string|nil  a file name for error messages
---@return any[]
function M.load_all(text, name)
  if type(text) ~= "string" then error("yaml.load_all: string expected, got " .. type(text), 2) end
  local docs, err = core.load(text)
  if not docs then raise("load_all", name, err) end
  return docs
end

--- The first document of a YAML stream (nil for an empty stream).
---@param text string
---@param name string|nil
---@return any
function M.load(text, name)
  if type(text) ~= "string" then error("yaml.load: string expected, got " .. type(text), 2) end
  local docs, err = core.load(text)
  if not docs then raise("load", name, err) end
  return docs[1]
end

--- Like load, without raising: value, or nil and the error.
function M.pload(text, name)
  local ok, v = pcall(M.load, text, name)
  if ok then return v end
  return nil, v
end

local function read(path, fn)
  local f, err = io.open(path, "rb")
  if not f then errors.raise { kind = "yaml", code = "io", message = "yaml." .. fn .. ": " .. tostring(err) } end
  local text = f:read("a")
  f:close()
  return text
end

--- The first document of a YAML file; errors name the file.
function M.load_file(path) return M.load(read(path, "load_file"), path) end

--- Every document of a YAML file.
function M.load_all_file(path) return M.load_all(read(path, "load_all_file"), path) end

--- Block-style YAML for a value (keys sorted; strings quoted when they
--- would read back as another type; multi-line strings as | blocks).
---@param value any
---@param opts {indent:integer|nil}|nil
---@return string
function M.dump(value, opts) return core.dump(value, opts) end

return M
