-- runbook.http: HTTP(S) requests for runbooks over runbook._curl.
-- Timeouts, redirects off by default, TLS verification always on (a CA file
-- or data and a client certificate are options), retries with backoff for
-- connection errors, 5xx and 429 on idempotent methods (Retry-After
-- honoured), JSON bodies in and out, and an audit action for every request
-- that changes something. Smoke checks (http.expect, http.check) live in
-- runbook.http._check.
local curl = require "runbook._curl"
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local backoffs = require "runbook._engine.backoff"
local errors = require "runbook.errors"
local secret = require "runbook.secret"
local url_lib = require "runbook.http.url"

local M = {}

--- Methods that may be sent again after a failure.
M.IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }
--- Methods that change nothing (not audited, sent even in a dry run).
M.SAFE = { GET = true, HEAD = true, OPTIONS = true }

local RETRY_CODES = { connect = true, reset = true, timeout = true }
local TLS_FIELDS = { "ca_file", "ca_data", "cert_file", "cert_data", "key_file", "key_data",
  "insecure", "http2", "user_agent", "proxy" }
local KNOWN = {
  method = true, url = true, query = true, headers = true, body = true, json = true, form = true,
  upload = true, upload_size = true, on_data = true, timeout = true, connect_timeout = true,
  low_speed_time = true, follow = true, max_redirs = true, retries = true, retry_delay = true,
  max_delay = true, max_retry_after = true, status = true, read_only = true, client = true,
}
for _, k in ipairs(TLS_FIELDS) do KNOWN[k] = true end

-- ---- responses ------------------------------------------------------------

--- A body cut to a readable length, secrets scrubbed, whitespace folded.
---@param body string|nil
---@param max integer|nil
function M.snippet(body, max)
  max = max or 200
  body = body or ""
  local s = host.scrub(body):gsub("[%c%s]+", " ")
  if #s > max then
    return string.format("%q", s:sub(1, max)) .. string.format(" ... (%d bytes in all)", #body)
  end
  return string.format("%q", s)
end

---@class runbook.http.Response
---@field status integer|nil   nil only for a request not sent in a dry run
---@field headers table<string,string>  lowercased names
---@field header_list string[][]
---@field body string|nil
---@field json any             the body decoded as JSON, on first use (raises when it is not JSON)
---@field http_version string
---@field url string           the URL as shown in messages (secrets masked)
---@field effective_url string
---@field time number
---@field attempts integer
---@field method string
---@field dry_run boolean|nil
local Response = {}

local function decode_json(res)
  if res.dry_run then
    errors.raise { kind = "http", code = "dry-run",
      message = string.format("%s %s: the request was not sent (dry run), so there is no body; check res.dry_run before reading it",
        res.method, res.url), details = { url = res.url } }
  end
  local body = res.body or ""
  local v, err
  if body:match("^%s*$") then
    err = "an empty body"
  else
    v, err = json.decode(body)
  end
  if v == nil then
    errors.raise {
      kind = "http", code = "not-json",
      message = string.format("%s %s: expected a JSON body, got %s (status %s, %d bytes): %s",
        res.method, res.url, res.headers["content-type"] or "no content type", tostring(res.status),
        #body, M.snippet(body)),
      details = { url = res.url, status = res.status, content_type = res.headers["content-type"], reason = err },
    }
  end
  return v
end

Response.__index = function(t, k)
  if k == "json" then
    local v = decode_json(t)
    rawset(t, "json", v)
    return v
  end
  return Response[k]
end

--- A response header by name, whatever its case.
function Response:header(name) return self.headers[name:lower()] end

--- True for a 2xx status.
function Response:ok() return self.status ~= nil and self.status >= 200 and self.status < 300 end

local function new_response(raw, method, display, attempts)
  raw.method = method
  raw.url = display
  raw.attempts = attempts
  return setmetatable(raw, Response)
end
M.Response = Response

-- ---- clients: one per TLS configuration, reused so connections are kept ---

local clients = setmetatable({}, { __mode = "v" })

local function client_key(o)
  local parts = {}
  for _, k in ipairs(TLS_FIELDS) do
    local v = o[k]
    if v ~= nil then
      if k:match("_data$") then v = crypto.sha256(v) end
      parts[#parts + 1] = k .. "=" .. tostring(v)
    end
  end
  return table.concat(parts, "\n")
end

--- The shared curl client for these TLS options (ca_file, ca_data, cert_file,
--- cert_data, key_file, key_data, insecure, http2, user_agent, proxy).
function M.client_for(o)
  local key = client_key(o)
  local c = clients[key]
  if not c then
    local opts = {}
    for _, k in ipairs(TLS_FIELDS) do opts[k] = o[k] end
    c = curl.client(opts)
    clients[key] = c
  end
  return c
end

-- ---- building the request --------------------------------------------------

local function has_header(list, name)
  name = name:lower()
  for _, h in ipairs(list) do
    if h[1]:lower() == name then return true end
  end
  return false
end

local function header_list(h)
  local list = {}
  if h == nil then return list end
  if type(h) ~= "table" then error("http: headers must be a table", 4) end
  if #h > 0 then
    for i, pair in ipairs(h) do
      if type(pair) ~= "table" or type(pair[1]) ~= "string" then
        error("http: headers[" .. i .. "] must be a {name, value} pair", 4)
      end
      list[#list + 1] = { pair[1], pair[2] }
    end
  else
    local names = {}
    for k in pairs(h) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do list[#list + 1] = { k, h[k] } end
  end
  return list
end

-- Returns the table for curl's request, and the method and URL to show.
local function prepare(req)
  if type(req) ~= "table" then error("http.request: table expected, got " .. type(req), 3) end
  for k in pairs(req) do
    if not KNOWN[k] then error("http.request: unknown option '" .. tostring(k) .. "'", 3) end
  end
  local method = (req.method or "GET")
  if type(method) ~= "string" then error("http.request: method must be a string", 3) end
  method = method:upper()
  local url = req.url
  if not (type(url) == "string" or secret.is(url)) then
    error("http.request: url must be a string or secret, got " .. type(url), 3)
  end
  local wire_url = secret.reveal(url)
  if not wire_url:match("^[hH][tT][tT][pP][sS]?://") then
    error("http.request: url must start with http:// or https:// (got " .. url_lib.display(host.scrub(wire_url)) .. ")", 3)
  end
  local display = secret.is(url) and "[REDACTED]" or url_lib.display(host.scrub(wire_url))
  if req.query ~= nil then
    if type(req.query) ~= "table" then error("http.request: query must be a table", 3) end
    local q, shown = url_lib.query(req.query)
    if q ~= "" then
      local sep = wire_url:find("?", 1, true) and "&" or "?"
      wire_url = wire_url .. sep .. q
      display = display .. sep .. host.scrub(shown)
    end
  end
  local headers = header_list(req.headers)
  local body = req.body
  local given = (body ~= nil and 1 or 0) + (req.json ~= nil and 1 or 0) + (req.form ~= nil and 1 or 0)
    + (req.upload ~= nil and 1 or 0)
  if given > 1 then error("http.request: give only one of body, json, form and upload", 3) end
  if req.json ~= nil then
    -- secrets inside go out revealed on the wire only; nothing logs this text
    body = json.encode(req.json, { secrets = "reveal" })
    if not has_header(headers, "content-type") then headers[#headers + 1] = { "Content-Type", "application/json" } end
  elseif req.form ~= nil then
    if type(req.form) ~= "table" then error("http.request: form must be a table", 3) end
    body = url_lib.query(req.form)
    if not has_header(headers, "content-type") then
      headers[#headers + 1] = { "Content-Type", "application/x-www-form-urlencoded" }
    end
  end
  local wire = {
    method = method, url = wire_url, display_url = display, headers = headers, body = body,
    upload = req.upload, upload_size = req.upload_size, on_data = req.on_data,
    timeout = req.timeout, connect_timeout = req.connect_timeout, low_speed_time = req.low_speed_time,
    follow = req.follow, max_redirs = req.max_redirs,
  }
  return wire, method, display
end

-- ---- retries ------------------------------------------------------------------

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Seconds to wait from a Retry-After header (seconds or an HTTP date), or nil.
function M.retry_after(value, now)
  if not value then return nil end
  local n = tonumber(value:match("^%s*(%d+)%s*$"))
  if n then return n end
  local d, mon, y, hh, mm, ss = value:match("(%d+) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT")
  if not d or not MONTHS[mon] then return nil end
  now = now or os.time()
  -- os.time reads a table as local time: correct by the zone's offset
  local t = { year = tonumber(y), month = MONTHS[mon], day = tonumber(d), hour = tonumber(hh), min = tonumber(mm), sec = tonumber(ss) }
  local offset = os.time(os.date("*t", now)) - os.time(os.date("!*t", now))
  local at = os.time(t) + offset
  return math.max(0, at - now)
end

local function backoff(opts, attempt)
  return backoffs.delay("exponential", opts.retry_delay or 0.5, attempt, opts.max_delay or 8)
end

local function perform(client, wire, method, display, req)
  local idempotent = M.IDEMPOTENT[method] and req.upload == nil
  local retries = req.retries
  if retries == nil then retries = idempotent and 2 or 0 end
  if math.type(retries) ~= "integer" or retries < 0 then error("http.request: retries must be an integer >= 0", 3) end
  if not idempotent then retries = 0 end
  local max_after = req.max_retry_after or 60
  local attempt = 0
  while true do
    attempt = attempt + 1
    local res, err = client:request(wire)
    local delay, why
    if res then
      if attempt <= retries and (res.status >= 500 or res.status == 429) then
        delay = M.retry_after(res.headers["retry-after"])
        if delay and delay > max_after then return res, nil, attempt end
        delay = delay or backoff(req, attempt)
        why = "status " .. res.status
      else
        return res, nil, attempt
      end
    else
      if err.kind ~= "http" or not RETRY_CODES[err.code] or attempt > retries then
        return nil, err, attempt
      end
      delay = backoff(req, attempt)
      why = err.code
    end
    audit.log("warn", string.format("%s %s: %s, trying again in %g s (attempt %d of %d)",
      method, display, why, delay, attempt + 1, retries + 1))
    host.sleep(delay)
  end
end

-- ---- requests ---------------------------------------------------------------------

local function status_matches(expected, status)
  if type(expected) == "number" then return status == expected end
  for _, s in ipairs(expected) do
    if s == status then return true end
  end
  return false
end

local function status_text(expected)
  if type(expected) == "number" then return tostring(expected) end
  local t = {}
  for _, s in ipairs(expected) do t[#t + 1] = tostring(s) end
  return table.concat(t, " or ")
end

--- Sends a request; returns the response, or nil and a structured error
--- (kind "http": a transport failure or, with `status`, an unexpected status).
--- See M.request for the fields.
---@param req table
---@return runbook.http.Response|nil, runbook.Error|nil
function M.try(req)
  local wire, method, display = prepare(req)
  if req.status ~= nil and type(req.status) ~= "number" and type(req.status) ~= "table" then
    error("http.request: status must be a number or a list of numbers", 2)
  end
  local changes = not M.SAFE[method]
  if changes and audit.dry_run() and not req.read_only then
    audit.action { kind = "http", method = method, url = display, dry_run = true,
      summary = "would " .. method .. " " .. display }
    return new_response({ status = nil, headers = {}, header_list = {}, body = "", dry_run = true }, method, display, 0)
  end
  local client = req.client or M.client_for(req)
  local raw, err, attempts = perform(client, wire, method, display, req)
  if changes then
    audit.action { kind = "http", method = method, url = display, status = raw and raw.status,
      error = err and err.code, attempts = attempts,
      summary = string.format("%s %s -> %s", method, display, raw and tostring(raw.status) or err.code) }
  end
  if not raw then
    err.details = err.details or {}
    err.details.attempts = attempts
    if attempts > 1 then err.message = err.message .. string.format(" (after %d attempts)", attempts) end
    return nil, err
  end
  local res = new_response(raw, method, display, attempts)
  if req.status ~= nil and not status_matches(req.status, res.status) then
    return nil, errors.new {
      kind = "http", code = "status",
      message = string.format("%s %s: expected status %s, got %d: %s", method, display,
        status_text(req.status), res.status, M.snippet(res.body)),
      details = { url = display, status = res.status, expected = req.status, response = res },
    }
  end
  return res
end

--- Sends a request and returns the response; raises a structured error
--- (kind "http") on a transport failure, or when `status` is given and the
--- response has another. Fields:
--- method ("GET"), url (string or secret), query (table, URL-encoded; secret
--- values masked in messages), headers ({{name, value}} or {Name = value},
--- values may be secrets), body (string or secret) | json (a value encoded
--- as JSON; secrets inside revealed on the wire only) | form (a table,
--- URL-encoded) | upload (function(max) -> chunk|nil) with upload_size,
--- on_data (function(chunk): stream the body), timeout (30), connect_timeout
--- (10), low_speed_time, follow (false), max_redirs (5), retries (2 for
--- idempotent methods, never for others), retry_delay (0.5), max_delay (8),
--- max_retry_after (60), status (expected: a number or a list), read_only
--- (send even in a dry run), and TLS: ca_file, ca_data, cert_file,
--- cert_data, key_file, key_data, insecure, http2, user_agent, proxy.
---@param req table
---@return runbook.http.Response
function M.request(req)
  local res, err = M.try(req)
  if not res then error(err, 0) end
  return res
end

local function verb(method)
  return function(url, opts)
    local req = {}
    if type(url) == "table" then
      for k, v in pairs(url) do req[k] = v end
    else
      for k, v in pairs(opts or {}) do req[k] = v end
      req.url = url
    end
    req.method = method
    return M.request(req)
  end
end

--- http.get(url [, opts]) and friends: M.request with the method set.
--- Each also takes a single request table: http.get{url = ..., query = ...}.
---@alias runbook.http.Verb fun(url: string|userdata|table, opts: table|nil): runbook.http.Response
---@type runbook.http.Verb
M.get = verb("GET")
---@type runbook.http.Verb
M.head = verb("HEAD")
---@type runbook.http.Verb
M.post = verb("POST")
---@type runbook.http.Verb
M.put = verb("PUT")
---@type runbook.http.Verb
M.patch = verb("PATCH")
---@type runbook.http.Verb
M.delete = verb("DELETE")
---@type runbook.http.Verb
M.options = verb("OPTIONS")

--- Smoke check: see runbook.http._check.
---@param target string|table
---@param spec {status:integer|integer[]|nil, json:table|nil, body:string|nil}|nil
---@return runbook.http.Response
function M.expect(target, spec) return require("runbook.http._check").expect(target, spec) end

--- A verification checklist: see runbook.http._check.
---@param rows table[]
---@param opts table|nil
---@return table[]
function M.check(rows, opts) return require("runbook.http._check").check(rows, opts) end

return M
