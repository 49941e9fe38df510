-- runbook.s3: S3-compatible object storage (AWS, Cloudflare R2, DigitalOcean
-- Spaces, MinIO) over runbook._curl, signed with SigV4 (runbook.s3.sigv4).
-- Buckets, put/get/head/list/delete, multipart uploads and a streaming
-- writer for backups (runbook.s3._writer). Every write records an audit
-- action and is only reported in a dry run.
local curl = require "runbook._curl"
local crypto = require "runbook._crypto"
local hash = require "runbook._hash"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local backoffs = require "runbook._engine.backoff"
local errors = require "runbook.errors"
local secret = require "runbook.secret"
local url_lib = require "runbook.http.url"
local sigv4 = require "runbook.s3.sigv4"
local xml = require "runbook.s3._xml"
local md5 = require "runbook.s3._md5"

local M = {}

M.DEFAULT_PART_SIZE = 8 * 1024 * 1024

---@class runbook.s3.Client
local S3 = {}
S3.__index = S3

local CONNECT_FIELDS = {
  endpoint = true, region = true, access_key = true, secret_key = true, session_token = true,
  path_style = true, ca_file = true, ca_data = true, insecure = true, timeout = true,
  connect_timeout = true, retries = true, part_size = true, http2 = true,
}

--- Opens a client. opts: endpoint (default https://s3.<region>.amazonaws.com),
--- region ("us-east-1"; "auto" for R2), access_key and secret_key (strings
--- or secrets), session_token, path_style (default: true when an endpoint
--- is given, virtual-hosted for AWS), ca_file, ca_data, insecure, timeout
--- (seconds per request, 60; 0 = none), connect_timeout (10), retries (2),
--- part_size (8 MiB, for writers and large puts).
---@param opts table
---@return runbook.s3.Client
function M.connect(opts)
  if type(opts) ~= "table" then error("s3.connect: table expected", 2) end
  for k in pairs(opts) do
    if not CONNECT_FIELDS[k] then error("s3.connect: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if opts.access_key == nil or opts.secret_key == nil then
    error("s3.connect: access_key and secret_key are required (strings or secrets)", 2)
  end
  local region = opts.region or "us-east-1"
  local endpoint = opts.endpoint or ("https://s3." .. region .. ".amazonaws.com")
  local scheme, authority = url_lib.split(endpoint)
  if not scheme or (scheme ~= "http" and scheme ~= "https") or authority == "" then
    error("s3.connect: endpoint must be an http(s) URL, got " .. tostring(endpoint), 2)
  end
  local path_style = opts.path_style
  if path_style == nil then path_style = opts.endpoint ~= nil end
  local self = setmetatable({
    endpoint = scheme .. "://" .. authority, scheme = scheme, authority = authority:lower(),
    region = region, path_style = path_style,
    access_key = opts.access_key, secret_key = secret.wrap(secret.reveal(opts.secret_key)),
    session_token = opts.session_token,
    timeout = opts.timeout or 60, retries = opts.retries or 2,
    part_size = opts.part_size or M.DEFAULT_PART_SIZE,
  }, S3)
  secret.register(secret.reveal(opts.access_key))
  self.curl = curl.client { ca_file = opts.ca_file, ca_data = opts.ca_data, insecure = opts.insecure,
    connect_timeout = opts.connect_timeout or 10, timeout = self.timeout, http2 = opts.http2 }
  return self
end

--- Closes the connection (also at the end of a <close> scope).
function S3:close() self.curl:close() end
S3.__close = S3.close

-- ---- signing and sending ---------------------------------------------------

local function target(bucket, key)
  if bucket and key then return "s3://" .. bucket .. "/" .. key end
  if bucket then return "s3://" .. bucket end
  return "s3://"
end
M.target = target

-- the derived key is cached per day: the secret is used once a day, not per request
function S3:_key(date)
  if self._key_date ~= date then
    self._key_date, self._signing_key = date, sigv4.signing_key(self.secret_key, date, self.region, "s3")
  end
  return self._signing_key
end

function S3:_url(bucket, key)
  local hostname, path
  if bucket == nil then
    hostname, path = self.authority, "/"
  elseif self.path_style or bucket:find(".", 1, true) then
    hostname = self.authority
    path = "/" .. url_lib.encode(bucket) .. (key and ("/" .. url_lib.encode(key, true)) or "")
  else
    hostname = bucket .. "." .. self.authority
    path = "/" .. (key and url_lib.encode(key, true) or "")
  end
  return hostname, path
end

local STATUS_CODES = { [301] = "PermanentRedirect", [400] = "BadRequest", [403] = "Forbidden", [404] = "NotFound",
  [409] = "Conflict", [412] = "PreconditionFailed", [500] = "InternalError", [503] = "ServiceUnavailable" }

-- A structured error from an S3 answer: the XML Code and Message when there
-- is a body, else a name for the status.
local function s3_error(op, status, body, resp_headers)
  local code = body and xml.text(body, "Code") or nil
  local msg = body and xml.text(body, "Message") or nil
  code = code or STATUS_CODES[status] or ("HTTP" .. tostring(status))
  local where = target(op.bucket, op.key)
  return errors.new {
    kind = "s3", code = code,
    message = string.format("s3: %s %s: %s%s (HTTP %d)", op.verb, where, code, msg and (": " .. msg) or "", status),
    details = { bucket = op.bucket, key = op.key, status = status, s3_message = msg,
      request_id = resp_headers and (resp_headers["x-amz-request-id"] or resp_headers["x-amzn-requestid"]) or nil },
  }
end
M.error_from = s3_error

local RETRY_CODES = { connect = true, reset = true, timeout = true }
local RETRY_STATUS = { [500] = true, [502] = true, [503] = true, [504] = true }

--- Sends one signed request. op: verb (for messages), method, bucket, key,
--- query, headers, body | upload (+ upload_size), on_data, payload_hash,
--- ok (statuses that are not errors; default 2xx), retry (true for requests
--- that may be sent again). Returns the raw response, or nil and an error.
function S3:_send(op)
  local hostname, path = self:_url(op.bucket, op.key)
  local q = sigv4.canonical_query(op.query)
  local url = self.scheme .. "://" .. hostname .. path .. (q ~= "" and ("?" .. q) or "")
  local payload_hash = op.payload_hash
  if not payload_hash then
    if op.upload then payload_hash = sigv4.UNSIGNED
    else payload_hash = op.body and crypto.sha256(op.body) or sigv4.EMPTY_SHA256 end
  end
  local attempts = (op.retry and not op.upload) and (self.retries + 1) or 1
  local res, err
  for attempt = 1, attempts do
    local amz_date = os.date("!%Y%m%dT%H%M%SZ")
    local h = { host = hostname, ["x-amz-date"] = amz_date, ["x-amz-content-sha256"] = payload_hash }
    if self.session_token then h["x-amz-security-token"] = self.session_token end
    for k, v in pairs(op.headers or {}) do h[k:lower()] = v end
    local auth = sigv4.sign { method = op.method, path = path, query = op.query, headers = h,
      payload_hash = payload_hash, region = self.region, service = "s3", access_key = self.access_key,
      key = self:_key(amz_date:sub(1, 8)), amz_date = amz_date }
    local list = { { "Authorization", auth } }
    for k, v in pairs(h) do list[#list + 1] = { k, v } end
    local on_data, errbody = op.on_data, nil
    if on_data then
      -- an error answer's body is S3's XML, not the object: keep it for the message
      on_data = function(chunk, status)
        if status >= 300 then
          errbody = (errbody or "") .. chunk
          return #errbody < 65536
        end
        return op.on_data(chunk, status)
      end
    end
    res, err = self.curl:request { method = op.method, url = url, headers = list, body = op.body,
      upload = op.upload, upload_size = op.upload_size, on_data = on_data, path_as_is = true,
      timeout = op.timeout, low_speed_time = op.low_speed_time }
    if res and errbody then res.body = errbody end
    local retry = attempt < attempts and ((res and RETRY_STATUS[res.status]) or (err and err.kind == "http" and RETRY_CODES[err.code]))
    if not retry then break end
    local delay = backoffs.delay("exponential", 0.2, attempt)
    audit.log("warn", string.format("s3: %s %s: %s, trying again in %g s (attempt %d of %d)", op.verb,
      target(op.bucket, op.key), res and ("HTTP " .. res.status) or err.code, delay, attempt + 1, attempts))
    host.sleep(delay)
  end
  if not res then
    if err.kind ~= "http" then return nil, err end -- Ctrl-C and the step's timeout stay what they are
    return nil, errors.new { kind = "s3", code = err.code, message = "s3: " .. err.message,
      details = { bucket = op.bucket, key = op.key, url = err.details and err.details.url } }
  end
  local ok = op.ok
  if (ok and not ok[res.status]) or (not ok and (res.status < 200 or res.status >= 300)) then
    return nil, s3_error(op, res.status, res.body ~= "" and res.body or nil, res.headers), res
  end
  -- CompleteMultipartUpload can fail with 200 and an <Error> body
  if op.error_in_body and res.body and res.body:find("<Error>", 1, true) then
    return nil, s3_error(op, res.status, res.body, res.headers), res
  end
  return res
end

function S3:_must(op)
  local res, err = self:_send(op)
  if not res then error(err, 0) end
  return res
end

local function check_name(v, what, fname)
  if type(v) ~= "string" or v == "" then error(fname .. ": " .. what .. " must be a non-empty string", 3) end
end

local function record(t)
  audit.action(t)
end

-- ---- buckets ------------------------------------------------------------------

--- True when the bucket exists (and these credentials may see it).
---@param bucket string
---@return boolean
function S3:bucket_exists(bucket)
  check_name(bucket, "bucket", "s3:bucket_exists")
  local res, err = self:_send { verb = "head", method = "HEAD", bucket = bucket, retry = true, ok = { [200] = true, [404] = true } }
  if not res then error(err, 0) end
  return res.status == 200
end

--- Creates the bucket unless it exists. Returns "exists" or "created"
--- ("would create" in a dry run).
---@param bucket string
---@return string
function S3:ensure_bucket(bucket)
  if type(bucket) == "table" then bucket = bucket.bucket end
  check_name(bucket, "bucket", "s3:ensure_bucket")
  if self:bucket_exists(bucket) then return "exists" end
  if audit.dry_run() then
    record { kind = "s3", verb = "create-bucket", bucket = bucket, dry_run = true, summary = "would create bucket " .. target(bucket) }
    return "would create"
  end
  local body
  if self.region ~= "us-east-1" and self.region ~= "auto" then
    body = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>"
      .. xml.escape(self.region) .. "</LocationConstraint></CreateBucketConfiguration>"
  end
  local res, err = self:_send { verb = "create-bucket", method = "PUT", bucket = bucket, body = body, retry = true,
    ok = { [200] = true, [409] = true } }
  if not res then error(err, 0) end
  if res.status == 409 then
    local code = xml.text(res.body, "Code")
    if code ~= "BucketAlreadyOwnedByYou" then error(s3_error({ verb = "create-bucket", bucket = bucket }, 409, res.body, res.headers), 0) end
    return "exists"
  end
  record { kind = "s3", verb = "create-bucket", bucket = bucket, summary = "created bucket " .. target(bucket) }
  return "created"
end

--- Deletes an empty bucket.
---@param bucket string
function S3:delete_bucket(bucket)
  check_name(bucket, "bucket", "s3:delete_bucket")
  if audit.dry_run() then
    record { kind = "s3", verb = "delete-bucket", bucket = bucket, dry_run = true, summary = "would delete bucket " .. target(bucket) }
    return
  end
  self:_must { verb = "delete-bucket", method = "DELETE", bucket = bucket, retry = true }
  record { kind = "s3", verb = "delete-bucket", bucket = bucket, summary = "deleted bucket " .. target(bucket) }
end

-- ---- lifecycle rules -----------------------------------------------------------

local LC_FIELDS = { id = true, prefix = true, expire_days = true, abort_incomplete_days = true }

local function lc_days(v, what, id)
  if v == nil then return nil end
  local n = math.tointeger(tonumber(v))
  if not n or n < 1 then error("s3:ensure_lifecycle: rule " .. id .. ": " .. what .. " must be a whole number of days >= 1", 4) end
  return n
end

local function lc_rules(rules)
  if type(rules) ~= "table" or #rules == 0 then error("s3:ensure_lifecycle: rules must be a non-empty list", 3) end
  local out, seen = {}, {}
  for i, r in ipairs(rules) do
    if type(r) ~= "table" then error("s3:ensure_lifecycle: rule " .. i .. " must be a table", 3) end
    for k in pairs(r) do
      if not LC_FIELDS[k] then error("s3:ensure_lifecycle: rule " .. i .. ": unknown field '" .. tostring(k) .. "'", 3) end
    end
    if type(r.id) ~= "string" or r.id == "" then error("s3:ensure_lifecycle: rule " .. i .. " needs an id", 3) end
    if seen[r.id] then error("s3:ensure_lifecycle: rule id " .. r.id .. " given twice", 3) end
    seen[r.id] = true
    local rule = { id = r.id, prefix = r.prefix or "", expire_days = lc_days(r.expire_days, "expire_days", r.id),
      abort_incomplete_days = lc_days(r.abort_incomplete_days, "abort_incomplete_days", r.id) }
    if not rule.expire_days and not rule.abort_incomplete_days then
      error("s3:ensure_lifecycle: rule " .. r.id .. " needs expire_days or abort_incomplete_days", 3)
    end
    out[#out + 1] = rule
  end
  return out
end

-- A <Rule> of a GetBucketLifecycleConfiguration answer as the fields this
-- module writes; `plain` is false when it has anything else (transitions,
-- tags, versions, a disabled status): such a rule is never "the same".
local function lc_parse(block)
  local filter = xml.blocks(block, "Filter")[1]
  local prefix = xml.text(filter or block, "Prefix") or ""
  local exp = xml.blocks(block, "Expiration")[1]
  local abort = xml.blocks(block, "AbortIncompleteMultipartUpload")[1]
  local rule = {
    id = xml.text(block, "ID") or "", prefix = prefix,
    expire_days = exp and math.tointeger(tonumber(xml.text(exp, "Days") or "")) or nil,
    abort_incomplete_days = abort and math.tointeger(tonumber(xml.text(abort, "DaysAfterInitiation") or "")) or nil,
  }
  local plain = xml.text(block, "Status") == "Enabled"
  for _, other in ipairs { "Transition", "NoncurrentVersionExpiration", "NoncurrentVersionTransition", "Tag", "And",
      "ObjectSizeGreaterThan", "ObjectSizeLessThan", "Date", "ExpiredObjectDeleteMarker" } do
    if #xml.blocks(block, other) > 0 then plain = false end
  end
  return rule, plain
end

local function lc_xml(rule)
  local b = { "<Rule><ID>", xml.escape(rule.id), "</ID><Filter><Prefix>", xml.escape(rule.prefix),
    "</Prefix></Filter><Status>Enabled</Status>" }
  if rule.expire_days then b[#b + 1] = "<Expiration><Days>" .. rule.expire_days .. "</Days></Expiration>" end
  if rule.abort_incomplete_days then
    b[#b + 1] = "<AbortIncompleteMultipartUpload><DaysAfterInitiation>" .. rule.abort_incomplete_days
      .. "</DaysAfterInitiation></AbortIncompleteMultipartUpload>"
  end
  b[#b + 1] = "</Rule>"
  return table.concat(b)
end

local function lc_describe(rule)
  local parts = {}
  if rule.expire_days then parts[#parts + 1] = "expire after " .. rule.expire_days .. " d" end
  if rule.abort_incomplete_days then parts[#parts + 1] = "abort uploads after " .. rule.abort_incomplete_days .. " d" end
  return rule.id .. " (" .. (rule.prefix ~= "" and rule.prefix or "whole bucket") .. ": " .. table.concat(parts, ", ") .. ")"
end

--- The bucket's lifecycle rules as {id, prefix, expire_days,
--- abort_incomplete_days, plain} (plain: nothing else in the rule), or {}.
---@param bucket string
---@return table
function S3:lifecycle(bucket)
  if type(bucket) == "table" then bucket = bucket.bucket end
  check_name(bucket, "bucket", "s3:lifecycle")
  local res, err = self:_send { verb = "get-lifecycle", method = "GET", bucket = bucket, query = { lifecycle = "" },
    retry = true, ok = { [200] = true, [404] = true } }
  if not res then error(err, 0) end
  if res.status == 404 then
    local code = res.body ~= "" and xml.text(res.body, "Code") or nil
    if code ~= "NoSuchLifecycleConfiguration" then
      error(s3_error({ verb = "get-lifecycle", bucket = bucket }, 404, res.body ~= "" and res.body or nil, res.headers), 0)
    end
    return {}
  end
  local out = {}
  for _, block in ipairs(xml.blocks(res.body, "Rule")) do
    local rule, plain = lc_parse(block)
    rule.plain, rule.xml = plain, "<Rule>" .. block .. "</Rule>"
    out[#out + 1] = rule
  end
  return out
end

--- Makes the bucket's lifecycle configuration hold `rules` (each {id=,
--- prefix=, expire_days=, abort_incomplete_days=}), keeping the rules of
--- other ids as they are. Returns "unchanged", "configured" or "would
--- configure" (dry run).
---@param o table
---@return string
function S3:ensure_lifecycle(o)
  if type(o) ~= "table" then error("s3:ensure_lifecycle: table expected", 2) end
  check_name(o.bucket, "bucket", "s3:ensure_lifecycle")
  local want = lc_rules(o.rules)
  local have = self:lifecycle(o.bucket)
  local by_id = {}
  for _, r in ipairs(have) do by_id[r.id] = r end
  local changed = {}
  for _, w in ipairs(want) do
    local h = by_id[w.id]
    if not (h and h.plain and h.prefix == w.prefix and h.expire_days == w.expire_days
        and h.abort_incomplete_days == w.abort_incomplete_days) then
      changed[#changed + 1] = lc_describe(w)
    end
  end
  if #changed == 0 then return "unchanged" end
  local ids, wanted = {}, {}
  for _, w in ipairs(want) do ids[#ids + 1] = w.id; wanted[w.id] = true end
  local summary = "lifecycle of " .. target(o.bucket) .. ": " .. table.concat(changed, "; ")
  if audit.dry_run() then
    record { kind = "s3", verb = "put-lifecycle", bucket = o.bucket, rules = ids, dry_run = true, summary = "would set " .. summary }
    return "would configure"
  end
  local b = { '<?xml version="1.0" encoding="UTF-8"?><LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' }
  for _, r in ipairs(have) do
    if not wanted[r.id] then b[#b + 1] = r.xml end
  end
  for _, w in ipairs(want) do b[#b + 1] = lc_xml(w) end
  b[#b + 1] = "</LifecycleConfiguration>"
  local body = table.concat(b)
  -- S3 wants an integrity header on this PUT: Content-MD5 is the one every
  -- implementation (AWS, Spaces/Ceph, R2, MinIO, moto) understands
  self:_must { verb = "put-lifecycle", method = "PUT", bucket = o.bucket, query = { lifecycle = "" }, body = body, retry = true,
    headers = { ["content-md5"] = crypto.base64_encode(md5.digest(body)), ["content-type"] = "application/xml" } }
  record { kind = "s3", verb = "put-lifecycle", bucket = o.bucket, rules = ids, summary = "set " .. summary }
  return "configured"
end

-- ---- objects --------------------------------------------------------------------

local function etag_of(res) return res.headers.etag and res.headers.etag:gsub('"', "") or nil end

--- Object metadata, or nil when there is no such object:
--- {size, etag, content_type, last_modified, metadata = {x-amz-meta-* without the prefix}}.
---@param o {bucket:string, key:string}
---@return table|nil
function S3:head(o)
  check_name(o.bucket, "bucket", "s3:head")
  check_name(o.key, "key", "s3:head")
  local res, err = self:_send { verb = "head", method = "HEAD", bucket = o.bucket, key = o.key, retry = true,
    ok = { [200] = true, [404] = true } }
  if not res then error(err, 0) end
  if res.status == 404 then return nil end
  local meta = {}
  for k, v in pairs(res.headers) do
    local m = k:match("^x%-amz%-meta%-(.+)$")
    if m then meta[m] = v end
  end
  return { size = math.tointeger(tonumber(res.headers["content-length"])), etag = etag_of(res),
    content_type = res.headers["content-type"], last_modified = res.headers["last-modified"], metadata = meta }
end

local function object_headers(o)
  local h = {}
  if o.content_type then h["content-type"] = o.content_type end
  for k, v in pairs(o.metadata or {}) do h["x-amz-meta-" .. k:lower()] = v end
  return h
end

local function file_size(path)
  local f, err = io.open(path, "rb")
  if not f then errors.raise { kind = "s3", code = "file", message = "s3:put: cannot read " .. tostring(err) } end
  local size = f:seek("end")
  f:seek("set", 0)
  return f, size
end

--- Uploads an object from exactly one of: body (string), file (a path) or
--- source (function(max) -> chunk|nil), with size when the source's length
--- is known. A string or a file up to part_size goes in one PUT; a larger
--- file, or a source without size, goes through a multipart writer.
--- Returns {size, sha256, etag, location, parts}.
---@param o {bucket:string, key:string, body:string|nil, file:string|nil, source:function|nil, size:integer|nil, content_type:string|nil, metadata:table|nil, part_size:integer|nil}
---@return table
function S3:put(o)
  check_name(o.bucket, "bucket", "s3:put")
  check_name(o.key, "key", "s3:put")
  local n = (o.body ~= nil and 1 or 0) + (o.file ~= nil and 1 or 0) + (o.source ~= nil and 1 or 0)
  if n ~= 1 then error("s3:put: give exactly one of body, file and source", 2) end
  local part_size = o.part_size or self.part_size
  local where = target(o.bucket, o.key)
  if o.file then
    local f, size = file_size(o.file)
    if size > part_size then
      local w = self:writer { bucket = o.bucket, key = o.key, part_size = part_size, content_type = o.content_type, metadata = o.metadata }
      local ok, err = pcall(function()
        while true do
          local chunk = f:read(1024 * 1024)
          if not chunk then break end
          w:write(chunk)
        end
      end)
      f:close()
      if not ok then w:abort(); error(err, 0) end
      return w:finish()
    end
    local h = hash.sha256()
    local source = function(max)
      local chunk = f:read(math.min(max, 1024 * 1024))
      if chunk then h:update(chunk) end
      return chunk
    end
    local ok, res = pcall(self._put_stream, self, o, source, size, h)
    f:close()
    if not ok then error(res, 0) end
    return res
  end
  if o.source then
    if type(o.source) ~= "function" then error("s3:put: source must be a function(max) returning chunks, then nil", 2) end
    if o.size then
      local h = hash.sha256()
      local source = function(max)
        local chunk = o.source(max)
        if chunk then h:update(chunk) end
        return chunk
      end
      return self:_put_stream(o, source, o.size, h)
    end
    local w = self:writer { bucket = o.bucket, key = o.key, part_size = part_size, content_type = o.content_type, metadata = o.metadata }
    local ok, err = pcall(function()
      while true do
        local chunk = o.source(part_size)
        if chunk == nil then break end
        w:write(chunk)
      end
    end)
    if not ok then w:abort(); error(err, 0) end
    return w:finish()
  end
  -- a string body: one PUT, payload signed
  local body = o.body
  local size, sha = #body, crypto.sha256(body)
  if audit.dry_run() then
    record { kind = "s3", verb = "put", bucket = o.bucket, key = o.key, size = size, sha256 = sha, dry_run = true,
      summary = string.format("would put %s (%d bytes)", where, size) }
    return { size = size, sha256 = sha, location = where, dry_run = true }
  end
  local res = self:_must { verb = "put", method = "PUT", bucket = o.bucket, key = o.key, body = body,
    payload_hash = sha, headers = object_headers(o), retry = true }
  record { kind = "s3", verb = "put", bucket = o.bucket, key = o.key, size = size, sha256 = sha, etag = etag_of(res),
    summary = string.format("put %s (%d bytes)", where, size) }
  return { size = size, sha256 = sha, etag = etag_of(res), location = where }
end

-- One PUT streamed from source with a known size (UNSIGNED-PAYLOAD); h hashes what went out.
function S3:_put_stream(o, source, size, h)
  local where = target(o.bucket, o.key)
  if audit.dry_run() then
    while source(1024 * 1024) do end
    record { kind = "s3", verb = "put", bucket = o.bucket, key = o.key, size = size, sha256 = h:hex(), dry_run = true,
      summary = string.format("would put %s (%d bytes)", where, size) }
    return { size = size, sha256 = h:hex(), location = where, dry_run = true }
  end
  local res = self:_must { verb = "put", method = "PUT", bucket = o.bucket, key = o.key, upload = source,
    upload_size = size, headers = object_headers(o), timeout = 0, low_speed_time = 60 }
  local sha = h:hex()
  record { kind = "s3", verb = "put", bucket = o.bucket, key = o.key, size = size, sha256 = sha, etag = etag_of(res),
    summary = string.format("put %s (%d bytes)", where, size) }
  return { size = size, sha256 = sha, etag = etag_of(res), location = where }
end

--- Downloads an object. Without file or on_data, returns the body as a
--- string (and the info table). With file = path, writes it there (through
--- a temporary file renamed at the end); with on_data = function(chunk),
--- streams it. Then returns {size, sha256, etag}. Raises NoSuchKey and the
--- like as structured errors (kind "s3"). In a dry run a file is not
--- written: the object is read and hashed, and the result has dry_run = true.
---@param o {bucket:string, key:string, file:string|nil, on_data:fun(chunk:string)|nil, timeout:number|nil}
---@return string|table body_or_info, table|nil info
function S3:get(o)
  check_name(o.bucket, "bucket", "s3:get")
  check_name(o.key, "key", "s3:get")
  local h, size = hash.sha256(), 0
  if not o.file and not o.on_data then
    local res = self:_must { verb = "get", method = "GET", bucket = o.bucket, key = o.key, retry = true, timeout = o.timeout }
    return res.body, { size = #res.body, sha256 = crypto.sha256(res.body), etag = etag_of(res) }
  end
  local f, tmp
  local sink = o.on_data
  local dry_file = o.file and audit.dry_run()
  if dry_file then
    -- a dry run writes no file: the object is read and hashed only
    sink = function() end
  elseif o.file then
    tmp = o.file .. ".part"
    local err
    f, err = io.open(tmp, "wb")
    if not f then errors.raise { kind = "s3", code = "file", message = "s3:get: cannot write " .. tostring(err) } end
    sink = function(chunk) assert(f:write(chunk)) end
  end
  local on_data = function(chunk)
    h:update(chunk)
    size = size + #chunk
    return sink(chunk)
  end
  -- a stream can be long: no total timeout, but fail when it stalls for a minute
  local ok, res, err = pcall(self._send, self, { verb = "get", method = "GET", bucket = o.bucket, key = o.key,
    on_data = on_data, timeout = o.timeout or 0, low_speed_time = 60 })
  if f then f:close() end
  if not ok or not res then
    if tmp then os.remove(tmp) end
    error(ok and err or res, 0)
  end
  if tmp then
    local moved, merr = os.rename(tmp, o.file)
    if not moved then os.remove(tmp); errors.raise { kind = "s3", code = "file", message = "s3:get: " .. tostring(merr) } end
  end
  if dry_file then
    audit.log("info", string.format("s3: dry run: would write %s (%d bytes) to %s", target(o.bucket, o.key), size, o.file))
    return { size = size, sha256 = h:hex(), etag = etag_of(res), dry_run = true }
  end
  return { size = size, sha256 = h:hex(), etag = etag_of(res) }
end

--- Deletes an object (deleting one that does not exist succeeds, as in S3).
---@param o {bucket:string, key:string}
function S3:delete(o)
  check_name(o.bucket, "bucket", "s3:delete")
  check_name(o.key, "key", "s3:delete")
  local where = target(o.bucket, o.key)
  if audit.dry_run() then
    record { kind = "s3", verb = "delete", bucket = o.bucket, key = o.key, dry_run = true, summary = "would delete " .. where }
    return
  end
  self:_must { verb = "delete", method = "DELETE", bucket = o.bucket, key = o.key, retry = true }
  record { kind = "s3", verb = "delete", bucket = o.bucket, key = o.key, summary = "deleted " .. where }
end

--- Lists objects with ListObjectsV2, following continuation tokens until
--- the end (or `limit` objects). o: bucket, prefix, delimiter, max_keys
--- (page size, 1000), limit. Returns the objects ({key, size, etag,
--- last_modified}) and the common prefixes (with a delimiter).
---@param o {bucket:string, prefix:string|nil, delimiter:string|nil, max_keys:integer|nil, limit:integer|nil}
---@return table[] objects, string[] prefixes
function S3:list(o)
  check_name(o.bucket, "bucket", "s3:list")
  local objects, prefixes, token = {}, {}, nil
  repeat
    local q = { ["list-type"] = 2, prefix = o.prefix, delimiter = o.delimiter, ["max-keys"] = o.max_keys,
      ["continuation-token"] = token }
    local res = self:_must { verb = "list", method = "GET", bucket = o.bucket, query = q, retry = true }
    for _, c in ipairs(xml.blocks(res.body, "Contents")) do
      objects[#objects + 1] = { key = xml.text(c, "Key"), size = math.tointeger(tonumber(xml.text(c, "Size"))),
        etag = (xml.text(c, "ETag") or ""):gsub('"', ""), last_modified = xml.text(c, "LastModified") }
      if o.limit and #objects >= o.limit then return objects, prefixes end
    end
    for _, p in ipairs(xml.blocks(res.body, "CommonPrefixes")) do prefixes[#prefixes + 1] = xml.text(p, "Prefix") end
    token = xml.text(res.body, "IsTruncated") == "true" and xml.text(res.body, "NextContinuationToken") or nil
  until not token
  return objects, prefixes
end

-- ---- multipart ------------------------------------------------------------------------
-- The writer (runbook.s3._writer) drives these and records one action for
-- the whole object; called directly, they record their own and honour a
-- dry run.

function S3:_create_multipart(o)
  local res = self:_must { verb = "create-multipart", method = "POST", bucket = o.bucket, key = o.key,
    query = { uploads = "" }, headers = object_headers(o), body = "" }
  local id = xml.text(res.body, "UploadId")
  if not id then errors.raise { kind = "s3", code = "BadResponse", message = "s3: create-multipart " .. target(o.bucket, o.key) .. ": no UploadId in the answer" } end
  return id
end

function S3:_upload_part(o)
  local res = self:_must { verb = "upload-part", method = "PUT", bucket = o.bucket, key = o.key,
    query = { partNumber = o.part_number, uploadId = o.upload_id }, body = o.body, retry = true,
    timeout = o.timeout or 0, low_speed_time = 60 }
  return res.headers.etag
end

function S3:_complete_multipart(o)
  local b = { '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' }
  for _, p in ipairs(o.parts) do
    b[#b + 1] = string.format("<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", p[1], xml.escape(p[2]))
  end
  b[#b + 1] = "</CompleteMultipartUpload>"
  local res = self:_must { verb = "complete-multipart", method = "POST", bucket = o.bucket, key = o.key,
    query = { uploadId = o.upload_id }, body = table.concat(b), error_in_body = true,
    headers = { ["content-type"] = "application/xml" } }
  return (xml.text(res.body, "ETag") or ""):gsub('"', "")
end

function S3:_abort_multipart(o)
  self:_must { verb = "abort-multipart", method = "DELETE", bucket = o.bucket, key = o.key,
    query = { uploadId = o.upload_id }, retry = true, ok = { [200] = true, [204] = true, [404] = true } }
end

--- Starts a multipart upload; returns its upload id ("dry-run" in a dry run).
function S3:create_multipart(o)
  check_name(o.bucket, "bucket", "s3:create_multipart")
  check_name(o.key, "key", "s3:create_multipart")
  if audit.dry_run() then
    record { kind = "s3", verb = "create-multipart", bucket = o.bucket, key = o.key, dry_run = true,
      summary = "would start a multipart upload of " .. target(o.bucket, o.key) }
    return "dry-run"
  end
  return self:_create_multipart(o)
end

--- Uploads part number `part_number` (from 1) of an upload; returns its ETag.
function S3:upload_part(o)
  if audit.dry_run() then return '"dry-run"' end
  return self:_upload_part(o)
end

--- Completes an upload from its parts ({ {part_number, etag}, ... } in order);
--- returns the object's ETag.
function S3:complete_multipart(o)
  local where = target(o.bucket, o.key)
  if audit.dry_run() then
    record { kind = "s3", verb = "complete-multipart", bucket = o.bucket, key = o.key, parts = #o.parts, dry_run = true,
      summary = string.format("would complete %s from %d parts", where, #o.parts) }
    return ""
  end
  local etag = self:_complete_multipart(o)
  record { kind = "s3", verb = "complete-multipart", bucket = o.bucket, key = o.key, parts = #o.parts, etag = etag,
    summary = string.format("completed %s from %d parts", where, #o.parts) }
  return etag
end

--- Aborts an upload: its parts are discarded and no object appears.
function S3:abort_multipart(o)
  if audit.dry_run() then return end
  self:_abort_multipart(o)
  record { kind = "s3", verb = "abort-multipart", bucket = o.bucket, key = o.key,
    summary = "aborted a multipart upload of " .. target(o.bucket, o.key) }
end

--- Multipart uploads in progress in a bucket, following pages:
--- { {key, upload_id, initiated}, ... } (initiated as S3 gives it, RFC 3339).
function S3:list_multipart(o)
  check_name(o.bucket, "bucket", "s3:list_multipart")
  local out, key_marker, id_marker = {}, nil, nil
  repeat
    local res = self:_must { verb = "list-multipart", method = "GET", bucket = o.bucket, retry = true,
      query = { uploads = "", prefix = o.prefix, ["key-marker"] = key_marker, ["upload-id-marker"] = id_marker } }
    for _, u in ipairs(xml.blocks(res.body, "Upload")) do
      out[#out + 1] = { key = xml.text(u, "Key"), upload_id = xml.text(u, "UploadId"), initiated = xml.text(u, "Initiated") }
    end
    local more = xml.text(res.body, "IsTruncated") == "true"
    key_marker, id_marker = xml.text(res.body, "NextKeyMarker"), xml.text(res.body, "NextUploadIdMarker")
  until not more or not key_marker
  return out
end

--- A streaming writer for one object (see runbook.s3._writer):
--- w:write(chunk), w:finish() -> {size, sha256, location}, w:abort().
---@param o {bucket:string, key:string, part_size:integer|nil, content_type:string|nil, metadata:table|nil}
---@return runbook.s3.Writer
function S3:writer(o)
  return require("runbook.s3._writer").new(self, o)
end

--- A bucket and key prefix as a store for runbook.pg backups (see
--- runbook.s3._store): writer(name), list(prefix), open(name), delete(name),
--- location(name).
---@param o {bucket:string, prefix:string|nil, part_size:integer|nil, read_size:integer|nil}
---@return runbook.s3.Store
function S3:store(o)
  return require("runbook.s3._store").new(self, o)
end

return M
