-- Where backups go: a writer for one object, and a store that lists,
-- reads and deletes them. Backups, verification, restore and retention
-- only use these interfaces, so object storage plugs in beside the local
-- directory implemented here (see docs/api/pg.md, "Writers and stores"):
--
--   writer:write(chunk)                     raises on failure
--   writer:finish() -> {size=, sha256=, location=}   the object is complete
--   writer:abort()                          nothing is left that looks complete
--
--   store:writer(name) -> writer
--   store:list(prefix) -> {{name=, size=, mtime=}...}   complete objects only
--   store:open(name) -> reader   reader:read(max) -> chunk | nil at the end; reader:close()
--   store:delete(name)
--   store:location(name) -> string   for messages and the audit trail
--   store:path(name) -> string|nil   a local file path, when there is one
local core = require "runbook._pg"
local fs = require "runbook._fs"
local errors = require "runbook.errors"

local M = {}

local PARTIAL = "%.partial$"

---@class runbook.pg.Writer
---@field write fun(self, chunk:string)
---@field finish fun(self):{size:integer, sha256:string, location:string}
---@field abort fun(self)

--- A writer to a local file: the data goes to "<path>.partial", is
--- fsync'd and renamed to path by finish(); abort() (or an error, or a
--- crash) leaves no file at path.
---@param path string
---@param mode integer|nil  file mode, default 0600
---@return runbook.pg.Writer
function M.file_writer(path, mode)
  if type(path) ~= "string" or path == "" then error("file_writer: path required", 2) end
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    local ok, err = fs.mkdir_p(dir, 448)
    if not ok then errors.raisef("store", "io", "cannot create %s: %s", dir, err) end
  end
  local sink, err = core.file_sink(path, mode)
  if not sink then errors.raisef("store", "io", "%s", err) end
  local w = { location = path }
  function w:write(chunk)
    local ok, e = sink:write(chunk)
    if not ok then
      sink:abort()
      errors.raisef("store", "io", "%s", e)
    end
  end
  function w:finish()
    local res, e = sink:finish()
    if not res then errors.raisef("store", "io", "%s", e) end
    return res
  end
  function w:abort() sink:abort() end
  function w:size() return sink:size() end
  return setmetatable(w, { __close = function() sink:abort() end })
end

---@class runbook.pg.Store
local Local = {}
Local.__index = Local

local function check_name(name)
  if type(name) ~= "string" or name == "" or name:match("^/") or name:match("%.%.") then
    error("store: object name must be a relative path without '..' (got " .. tostring(name) .. ")", 3)
  end
end

function Local:location(name) return self.dir .. "/" .. name end
function Local:path(name) return self.dir .. "/" .. name end

function Local:writer(name)
  check_name(name)
  return M.file_writer(self.dir .. "/" .. name, self.mode)
end

-- walks dir/rel recursively, collecting files whose names start with prefix
local function walk(root, rel, prefix, out)
  local names = fs.listdir(rel == "" and root or (root .. "/" .. rel))
  for _, n in ipairs(names or {}) do
    local name = rel == "" and n or (rel .. "/" .. n)
    local st = fs.stat(root .. "/" .. name)
    if st and st.type == "directory" then
      if prefix:sub(1, #name + 1) == name .. "/" or name:sub(1, #prefix) == prefix then
        walk(root, name, prefix, out)
      end
    elseif st and st.type == "file" and name:sub(1, #prefix) == prefix and not name:match(PARTIAL) then
      out[#out + 1] = { name = name, size = st.size, mtime = st.mtime }
    end
  end
end

--- Complete objects whose names start with prefix, sorted by name.
function Local:list(prefix)
  prefix = prefix or ""
  local out = {}
  walk(self.dir, "", prefix, out)
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

function Local:delete(name)
  check_name(name)
  local ok, err = fs.remove(self.dir .. "/" .. name)
  if not ok then errors.raisef("store", "io", "cannot delete %s: %s", self:location(name), err) end
  return true
end

function Local:open(name)
  check_name(name)
  local f, err = io.open(self.dir .. "/" .. name, "rb")
  if not f then errors.raisef("store", "not-found", "cannot open %s: %s", self:location(name), err) end
  return {
    read = function(_, max) return f:read(max or 1048576) end,
    close = function() f:close() end,
  }
end

--- A store in a local directory (created 0700 if missing). Object names
--- are relative paths under it; unfinished ".partial" files are never listed.
---@param dir string
---@param opts {mode:integer|nil}|nil
---@return runbook.pg.Store
function M.local_store(dir, opts)
  if type(dir) ~= "string" or dir == "" then error("local_store: directory required", 2) end
  dir = dir:gsub("/+$", "")
  local ok, err = fs.mkdir_p(dir, 448)
  if not ok then errors.raisef("store", "io", "cannot create %s: %s", dir, err) end
  return setmetatable({ dir = dir, kind = "local", mode = opts and opts.mode }, Local)
end

return M
