-- runbook.wait: wait until something holds, with a timeout that says what
-- was last seen. Sleeps go through host.sleep, so Ctrl-C and the step's
-- timeout stop a wait at once.
--
-- `until` is a Lua keyword, so the function is reached as wait["until"],
-- wait.until_ or by calling the module: wait(fn, opts).
local host = require "runbook._host"
local net = require "runbook._net"
local errors = require "runbook.errors"
local audit = require "runbook._engine.audit"

local M = {}

local OPTS = { timeout = true, interval = true, backoff = true, max_interval = true, jitter = true, what = true }

local function check_opts(fname, opts, extra)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fname .. ": options must be a table", 3) end
  for k in pairs(opts) do
    if not OPTS[k] and not (extra and extra[k]) then
      error(string.format("%s: unknown option '%s'", fname, tostring(k)), 3)
    end
  end
  for _, k in ipairs { "timeout", "interval", "backoff", "max_interval", "jitter" } do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] < 0) then
      error(string.format("%s: %s must be a non-negative number", fname, k), 3)
    end
  end
  if opts.jitter and opts.jitter > 1 then error(fname .. ": jitter is a fraction from 0 to 1", 3) end
  if opts.backoff and opts.backoff < 1 then error(fname .. ": backoff is a factor of 1 or more", 3) end
  return opts
end

local function fmt_secs(s)
  if s == math.floor(s) then return string.format("%d s", s) end
  return string.format("%.1f s", s)
end

-- errors raised by the guard (Ctrl-C, the step's timeout) end the wait
local function is_stop(e)
  return type(e) == "table" and (e.kind == "interrupted" or e.kind == "timeout")
end

local function cut(s, n)
  s = tostring(s):gsub("%s+", " ")
  if #s > n then return s:sub(1, n) .. "…" end
  return s
end

--- Calls fn until it returns a true value, and returns what it returned.
--- fn may return `false, "what I saw"`; a structured error raised by fn
--- (connection refused, an HTTP failure) counts as an observation too,
--- while any other error (a bug) is raised at once. After `timeout`
--- seconds (default 60) raises {kind="wait", code="timeout"} naming
--- `what` and the last observation. Between checks it sleeps `interval`
--- (default 1), multiplied by `backoff` after each check (default 1, at
--- most `max_interval`), varied by ± `jitter` (a fraction).
---@param fn fun(attempt:integer):any, string|nil
---@param opts {timeout:number|nil, interval:number|nil, backoff:number|nil, max_interval:number|nil, jitter:number|nil, what:string|nil}|nil
---@return any
function M.until_(fn, opts)
  if type(fn) ~= "function" then error("wait: function expected, got " .. type(fn), 2) end
  opts = check_opts("wait", opts)
  local timeout = opts.timeout or 60
  local interval = opts.interval or 1
  local backoff = opts.backoff or 1
  local max_interval = opts.max_interval or math.max(interval, 30)
  local jitter = opts.jitter or 0
  local what = opts.what or "the condition"
  local start = host.monotime()
  local attempts, last = 0, nil
  while true do
    attempts = attempts + 1
    local r = table.pack(pcall(fn, attempts))
    if r[1] and r[2] then
      local took = host.monotime() - start
      if attempts > 1 then
        audit.log("info", string.format("%s: held after %.1f s (%d checks)", what, took, attempts))
      end
      return table.unpack(r, 2, r.n)
    elseif r[1] then
      if r[3] ~= nil then last = cut(r[3], 300) end
    else
      local e = r[2]
      if is_stop(e) or not errors.is(e) then error(e, 0) end
      last = cut(errors.message(e), 300)
    end
    local elapsed = host.monotime() - start
    audit.progress(math.floor(elapsed), timeout, "waiting for " .. what .. (last and (": " .. last) or ""))
    if elapsed >= timeout then
      errors.raise {
        kind = "wait", code = "timeout",
        message = string.format("timed out after %s waiting for %s (%d check%s); %s", fmt_secs(timeout), what,
          attempts, attempts == 1 and "" or "s", last and ("last observed: " .. last) or "the check never passed"),
        details = { what = what, attempts = attempts, elapsed = elapsed, last = last },
      }
    end
    local delay = math.min(interval * backoff ^ (attempts - 1), max_interval)
    if jitter > 0 then delay = delay * (1 + jitter * (2 * math.random() - 1)) end
    delay = math.min(delay, timeout - elapsed)
    if delay > 0 then host.sleep(delay) else host.check_interrupt() end
  end
end
M["until"] = M.until_

--- Waits until a TCP connection to host:port succeeds (nothing is sent).
--- Returns the address that answered ("127.0.0.1:5432").
---@param hostname string
---@param port integer
---@param opts {timeout:number|nil, interval:number|nil, backoff:number|nil, connect_timeout:number|nil, what:string|nil}|nil
---@return string address
function M.tcp(hostname, port, opts)
  if type(hostname) ~= "string" or hostname == "" then error("wait.tcp: host name expected", 2) end
  if math.type(port) ~= "integer" or port < 1 or port > 65535 then error("wait.tcp: port must be an integer from 1 to 65535", 2) end
  opts = check_opts("wait.tcp", opts, { connect_timeout = true })
  local ct = opts.connect_timeout or 2
  return M.until_(function()
    local addr, err = net.tcp_connect(hostname, port, ct)
    if addr then return addr end
    return false, err.message
  end, { timeout = opts.timeout or 60, interval = opts.interval or 0.5, backoff = opts.backoff,
         max_interval = opts.max_interval, jitter = opts.jitter,
         what = opts.what or string.format("%s:%d to accept connections", hostname, port) })
end

local function status_ok(want, status)
  if want == nil then return status >= 200 and status < 300 end
  if type(want) == "number" then return status == want end
  for _, s in ipairs(want) do
    if s == status then return true end
  end
  return false
end

local function status_text(want)
  if want == nil then return "2xx" end
  if type(want) == "number" then return tostring(want) end
  local t = {}
  for i, s in ipairs(want) do t[i] = tostring(s) end
  return table.concat(t, " or ")
end

--- Waits until GET url answers with the expected status (default any 2xx)
--- and, with `match`, a body matching that Lua pattern. Returns the
--- response. TLS options (ca_file, ca_data, cert_file, cert_data, key_file,
--- key_data, insecure) go to each request as in runbook.http. Needs runbook.http.
---@param url string
---@param opts {status:integer|integer[]|nil, match:string|nil, headers:table|nil, request_timeout:number|nil, timeout:number|nil, interval:number|nil, backoff:number|nil, what:string|nil, ca_file:string|nil, ca_data:string|nil, cert_file:string|nil, cert_data:string|nil, key_file:string|nil, key_data:string|userdata|nil, insecure:boolean|nil}|nil
---@return table response
function M.http(url, opts)
  if type(url) ~= "string" or url == "" then error("wait.http: URL expected", 2) end
  opts = check_opts("wait.http", opts, { status = true, match = true, headers = true, request_timeout = true,
    ca_file = true, ca_data = true, cert_file = true, cert_data = true, key_file = true, key_data = true, insecure = true })
  local has_http, http = pcall(require, "runbook.http")
  if not has_http then
    errors.raise { kind = "wait", code = "unavailable", message = "wait.http: runbook.http could not be loaded: " .. errors.message(http) }
  end
  local rt = opts.request_timeout or 5
  local shown = host.scrub(url)
  local deadline = host.monotime() + (opts.timeout or 60)
  return M.until_(function()
    -- one request per check: the wait is the retry loop, so runbook.http's
    -- own retries are off, and no request outlives the wait's deadline by
    -- more than a second
    local res = http.request { method = "GET", url = url, retries = 0, headers = opts.headers,
      timeout = math.min(rt, math.max(deadline - host.monotime(), 1)),
      ca_file = opts.ca_file, ca_data = opts.ca_data, cert_file = opts.cert_file, cert_data = opts.cert_data,
      key_file = opts.key_file, key_data = opts.key_data, insecure = opts.insecure }
    if not status_ok(opts.status, res.status) then
      return false, string.format("status %d (want %s): %s", res.status, status_text(opts.status), cut(res.body or "", 120))
    end
    if opts.match and not tostring(res.body or ""):find(opts.match) then
      return false, string.format("status %d but the body does not match %q: %s", res.status, opts.match, cut(res.body or "", 120))
    end
    return res
  end, { timeout = opts.timeout or 60, interval = opts.interval or 1, backoff = opts.backoff,
         max_interval = opts.max_interval, jitter = opts.jitter,
         what = opts.what or ("GET " .. shown .. " to answer " .. status_text(opts.status)) })
end

return setmetatable(M, { __call = function(_, fn, opts) return M.until_(fn, opts) end })
