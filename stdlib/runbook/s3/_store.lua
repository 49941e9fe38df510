-- A bucket (and a key prefix in it) as a store for runbook.pg backups: the
-- same interface as pg.local_store (runbook.pg._store), so pg.backup,
-- pg.verify_backup, pg.restore and pg.retention work on object storage
-- unchanged.
--
--   local store = client:store { bucket = "backups", prefix = "pg/tezca/" }
--   pg.backup { url = db, store = store, prefix = "daily/" }
--
-- Writing goes through the streaming multipart writer (constant memory,
-- aborted on failure, so no half object is ever listed). Reading streams
-- the object in ranged GETs pinned to its ETag, so a backup replaced while
-- it is being read fails instead of mixing two objects. Object names are
-- relative to the prefix, like file names under a local store's directory.
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local rfc3339 = require "runbook._engine.rfc3339"

local M = {}

-- one ranged GET per this many bytes while reading a backup back
M.READ_SIZE = 8 * 1024 * 1024

---@class runbook.s3.Store
local Store = {}
Store.__index = Store

local function check_name(name)
  if type(name) ~= "string" or name == "" or name:match("^/") or name:match("%.%.") then
    error("s3 store: object name must be a relative path without '..' (got " .. tostring(name) .. ")", 3)
  end
end

function Store:key(name) return self.prefix .. name end

--- "s3://bucket/prefix/name", for messages and the audit trail.
function Store:location(name) return "s3://" .. self.bucket .. "/" .. self.prefix .. name end

-- Aborts unfinished multipart uploads of exactly this key: what a process
-- killed in the middle of writing it left behind. A resumed step that
-- writes the same name again cleans up after the attempt that died.
function Store:_abort_leftovers(key)
  if audit.dry_run() then return end
  for _, u in ipairs(self.client:list_multipart { bucket = self.bucket, prefix = key }) do
    if u.key == key then
      self.client:abort_multipart { bucket = self.bucket, key = key, upload_id = u.upload_id }
      audit.log("info", string.format("s3: aborted an unfinished upload of %s started %s (left by an interrupted attempt)",
        self:location(key:sub(#self.prefix + 1)), u.initiated or "earlier"))
    end
  end
end

--- A writer for one object (see runbook.s3._writer). An unfinished upload of
--- the same key left by a killed attempt is aborted first.
---@param name string
---@return runbook.s3.Writer
function Store:writer(name)
  check_name(name)
  local key = self:key(name)
  self:_abort_leftovers(key)
  local w = self.client:writer { bucket = self.bucket, key = key, part_size = self.part_size,
    content_type = "application/octet-stream" }
  w.location = self:location(name)
  return w
end

--- Complete objects whose names (relative to the store's prefix) start
--- with prefix, sorted by name: {{name, size, mtime, etag}...}. Unfinished
--- multipart uploads are not objects, so they are never listed.
---@param prefix string|nil
function Store:list(prefix)
  local objects = self.client:list { bucket = self.bucket, prefix = self.prefix .. (prefix or "") }
  local out = {}
  for _, o in ipairs(objects) do
    local mtime = rfc3339.parse(o.last_modified)
    if not mtime then
      errors.raise { kind = "s3", code = "BadResponse", message = string.format(
        "s3: list s3://%s/%s: object %s has an unreadable LastModified %q", self.bucket, self.prefix, o.key, tostring(o.last_modified)) }
    end
    out[#out + 1] = { name = o.key:sub(#self.prefix + 1), size = o.size, mtime = mtime, etag = o.etag }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

--- Deletes an object. Like the local store it records nothing itself: the
--- caller (pg.retention) records the deletion with its reason.
function Store:delete(name)
  check_name(name)
  self.client:_must { verb = "delete", method = "DELETE", bucket = self.bucket, key = self:key(name), retry = true }
  return true
end

--- A reader streaming the object: reader:read(max) -> chunk, or nil at the
--- end; reader:close(). At most READ_SIZE bytes are held at a time.
---@param name string
function Store:open(name)
  check_name(name)
  local key = self:key(name)
  local info = self.client:head { bucket = self.bucket, key = key }
  if not info then
    errors.raise { kind = "store", code = "not-found", message = "cannot open " .. self:location(name) .. ": no such object" }
  end
  local client, bucket, step = self.client, self.bucket, self.read_size
  local size, etag = info.size or 0, info.etag
  local pos, buf, off = 0, "", 1 -- next byte to fetch; the fetched bytes not yet returned
  local reader = {}
  function reader.read(_, max)
    max = max or 1048576
    if off > #buf then
      if pos >= size then return nil end
      local last = math.min(pos + step, size) - 1
      local headers = { range = string.format("bytes=%d-%d", pos, last) }
      if etag then headers["if-match"] = '"' .. etag .. '"' end
      local res, err = client:_send { verb = "get", method = "GET", bucket = bucket, key = key, headers = headers,
        retry = true, timeout = 0, low_speed_time = 60 }
      if not res then
        if err.code == "PreconditionFailed" then
          err.message = err.message .. ": the object changed while it was being read"
        end
        error(err, 0)
      end
      if #res.body ~= last - pos + 1 then
        errors.raise { kind = "s3", code = "BadResponse", message = string.format(
          "s3: get %s: asked for bytes %d-%d, got %d bytes (HTTP %d)", "s3://" .. bucket .. "/" .. key, pos, last, #res.body, res.status) }
      end
      buf, off, pos = nil, 1, last + 1
      collectgarbage() -- the previous range is garbage now: free it before it piles up
      buf = res.body
    end
    local chunk = buf:sub(off, off + max - 1)
    off = off + #chunk
    return chunk
  end
  function reader.close() buf = "" end
  return reader
end

--- Unfinished multipart uploads under the store's prefix that were started
--- before `before` (epoch seconds): {{name, upload_id, initiated}...}.
---@param before number
function Store:stale_uploads(before)
  local out = {}
  for _, u in ipairs(self.client:list_multipart { bucket = self.bucket, prefix = self.prefix }) do
    local t = rfc3339.parse(u.initiated)
    if t and t < before then
      out[#out + 1] = { name = u.key:sub(#self.prefix + 1), upload_id = u.upload_id, initiated = t }
    end
  end
  return out
end

--- Aborts an unfinished upload listed by stale_uploads.
function Store:abort_upload(u)
  self.client:_abort_multipart { bucket = self.bucket, key = self:key(u.name), upload_id = u.upload_id }
end

--- Use client:store{bucket=, prefix=, part_size=, read_size=}.
function M.new(client, o)
  if type(o) ~= "table" then error("s3:store: table expected", 3) end
  if type(o.bucket) ~= "string" or o.bucket == "" then error("s3:store: bucket must be a non-empty string", 3) end
  local prefix = o.prefix or ""
  if type(prefix) ~= "string" or prefix:match("^/") or prefix:match("%.%.") then
    error("s3:store: prefix must be a relative key prefix without '..' (got " .. tostring(prefix) .. ")", 3)
  end
  if prefix ~= "" and not prefix:match("/$") then prefix = prefix .. "/" end
  local read_size = o.read_size or M.READ_SIZE
  if math.type(read_size) ~= "integer" or read_size < 1 then error("s3:store: read_size must be a positive integer", 3) end
  return setmetatable({ client = client, bucket = o.bucket, prefix = prefix, kind = "s3",
    part_size = o.part_size, read_size = read_size }, Store)
end

return M
