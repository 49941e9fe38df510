-- A streaming writer for one S3 object, for backups and other streams of
-- unknown length: constant memory (at most one part buffered), a multipart
-- upload started only when more than one part's worth arrives, a sha256 of
-- everything written, and an abort on any failure so no half object is
-- ever left looking complete.
--
--   local w <close> = store:writer { bucket = "backups", key = "db.dump", part_size = 8 * 1024 * 1024 }
--   w:write(chunk) ...
--   local info = w:finish()   -- {size, sha256, location, etag, parts}
local hash = require "runbook._hash"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local secret = require "runbook.secret"

local M = {}

---@class runbook.s3.Writer
local W = {}
W.__index = W

--- Use store:writer{...}. o: bucket, key, part_size (the client's, 8 MiB),
--- content_type, metadata.
function M.new(s3, o)
  if type(o) ~= "table" then error("s3:writer: table expected", 3) end
  if type(o.bucket) ~= "string" or o.bucket == "" then error("s3:writer: bucket must be a non-empty string", 3) end
  if type(o.key) ~= "string" or o.key == "" then error("s3:writer: key must be a non-empty string", 3) end
  local part_size = o.part_size or s3.part_size
  if math.type(part_size) ~= "integer" or part_size < 1 then error("s3:writer: part_size must be a positive integer", 3) end
  return setmetatable({
    s3 = s3, bucket = o.bucket, key = o.key, part_size = part_size, content_type = o.content_type,
    metadata = o.metadata, buf = {}, buflen = 0, parts = {}, hasher = hash.sha256(), size = 0,
    state = "open", dry = audit.dry_run(),
  }, W)
end

local function where(self) return "s3://" .. self.bucket .. "/" .. self.key end

function W:_check(what)
  if self.state ~= "open" then
    error(string.format("s3 writer for %s: %s after it was %s", where(self), what, self.state), 3)
  end
end

-- Runs fn; on failure aborts the upload first, then raises the error.
function W:_guard(fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then
    self:abort()
    error(err, 0)
  end
  return err
end

function W:_upload_part(data)
  local s3 = self.s3
  if not self.upload_id then
    self.upload_id = s3:_create_multipart { bucket = self.bucket, key = self.key, content_type = self.content_type, metadata = self.metadata }
  end
  local n = #self.parts + 1
  local etag = s3:_upload_part { bucket = self.bucket, key = self.key, upload_id = self.upload_id, part_number = n, body = data }
  self.parts[n] = { n, etag }
  audit.progress(self.size, nil, string.format("%s: %d parts uploaded", where(self), n))
  -- each part leaves a few part-sized strings behind; collecting them now
  -- keeps memory at about one part instead of whatever the collector's
  -- pace allows (a full cycle over the small live heap costs well under 1 ms)
  collectgarbage()
end

--- Appends data (a string; a secret is written revealed). Uploads a part
--- each time part_size bytes are buffered.
---@param chunk string
function W:write(chunk)
  self:_check("write")
  if secret.is(chunk) then chunk = chunk:reveal() end
  if type(chunk) ~= "string" then error("s3 writer: write expects a string, got " .. type(chunk), 2) end
  if #chunk == 0 then return end
  self.hasher:update(chunk)
  self.size = self.size + #chunk
  if self.dry then return end
  self.buf[#self.buf + 1] = chunk
  self.buflen = self.buflen + #chunk
  while self.buflen >= self.part_size do
    local data = table.concat(self.buf)
    local part, rest = data:sub(1, self.part_size), data:sub(self.part_size + 1)
    data = nil
    self.buf = rest ~= "" and { rest } or {}
    self.buflen = #rest
    self:_guard(self._upload_part, self, part)
  end
end

--- Completes the object and returns {size, sha256, location, etag, parts}.
--- Nothing bigger than one part was ever written: a single PUT. On failure
--- the multipart upload is aborted and the error raised.
function W:finish()
  self:_check("finish")
  local sha = self.hasher:hex()
  local info = { size = self.size, sha256 = sha, location = where(self), parts = 0 }
  if self.dry then
    self.state = "finished"
    audit.action { kind = "s3", verb = "put", bucket = self.bucket, key = self.key, size = self.size, sha256 = sha,
      dry_run = true, summary = string.format("would put %s (%d bytes)", where(self), self.size) }
    info.dry_run = true
    return info
  end
  local data = table.concat(self.buf)
  self.buf, self.buflen = {}, 0
  if not self.upload_id then
    local res = self:_guard(self.s3._must, self.s3, { verb = "put", method = "PUT", bucket = self.bucket, key = self.key,
      body = data, payload_hash = hash.sha256(data):hex(), retry = true, timeout = 0, low_speed_time = 60,
      headers = (function()
        local h = {}
        if self.content_type then h["content-type"] = self.content_type end
        for k, v in pairs(self.metadata or {}) do h["x-amz-meta-" .. k:lower()] = v end
        return h
      end)() })
    info.etag = res.headers.etag and res.headers.etag:gsub('"', "") or nil
    info.parts = 1
  else
    if #data > 0 then self:_guard(self._upload_part, self, data) end
    info.etag = self:_guard(self.s3._complete_multipart, self.s3,
      { bucket = self.bucket, key = self.key, upload_id = self.upload_id, parts = self.parts })
    info.parts = #self.parts
  end
  self.state = "finished"
  audit.action { kind = "s3", verb = "put", bucket = self.bucket, key = self.key, size = self.size, sha256 = sha,
    etag = info.etag, parts = info.parts, multipart = self.upload_id ~= nil,
    summary = string.format("put %s (%d bytes, %d part%s)", where(self), self.size, info.parts, info.parts == 1 and "" or "s") }
  return info
end

--- Gives up: aborts the multipart upload (its parts are discarded, no
--- object appears) and drops the buffer. Safe to call twice; a finished
--- writer is left alone.
function W:abort()
  if self.state ~= "open" then return end
  self.state = "aborted"
  self.buf, self.buflen = {}, 0
  if self.upload_id then
    local ok, err = pcall(self.s3._abort_multipart, self.s3, { bucket = self.bucket, key = self.key, upload_id = self.upload_id })
    audit.action { kind = "s3", verb = "abort-multipart", bucket = self.bucket, key = self.key, size = self.size,
      parts = #self.parts, error = not ok and errors.message(err) or nil,
      summary = string.format("aborted the upload of %s after %d parts%s", where(self), #self.parts,
        ok and "" or (" (the abort failed: " .. errors.message(err) .. ")")) }
    if not ok then audit.log("error", "s3: could not abort the multipart upload of " .. where(self) .. ": " .. errors.message(err)) end
  end
end

--- An unfinished writer aborts when its <close> scope ends.
function W:__close() self:abort() end

return M
