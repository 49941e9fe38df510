-- Smoke checks over runbook.http: http.expect for one request, and
-- http.check for a whole verification table (the "Verification Checklist"
-- of a deploy guide: URL, method, headers, expected status, expected JSON
-- fields or a body pattern), reporting every row with what was seen.
local http = require "runbook.http"
local json = require "runbook._json"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"

local M = {}

local function show(v)
  if json.is_null(v) then return "null" end
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v, { secrets = "redact" })
    return ok and s or tostring(v)
  end
  return tostring(v)
end

-- Does `got` hold `want`? Tables match as subsets (every expected key, any
-- extra keys); other values must be equal.
local function matches(want, got)
  if type(want) == "table" and not json.is_null(want) then
    if type(got) ~= "table" then return false end
    for k, v in pairs(want) do
      if not matches(v, got[k]) then return false end
    end
    return true
  end
  if json.is_null(want) then return json.is_null(got) end
  return want == got
end

-- field "a.b.1" walks nested tables (numbers index arrays)
local function lookup(doc, field)
  local v = doc
  for part in tostring(field):gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    local n = math.tointeger(tonumber(part))
    if n ~= nil and v[n] ~= nil then v = v[n] else v = v[part] end
  end
  return v
end

local function status_ok(expected, status)
  if expected == nil then return status >= 200 and status < 300 end
  if type(expected) == "number" then return status == expected end
  for _, s in ipairs(expected) do
    if s == status then return true end
  end
  return false
end

local function status_text(expected)
  if expected == nil then return "2xx" end
  if type(expected) == "number" then return tostring(expected) end
  local t = {}
  for _, s in ipairs(expected) do t[#t + 1] = tostring(s) end
  return table.concat(t, " or ")
end

-- Compares a response with an expectation; returns the list of problems.
local function evaluate(res, spec)
  local problems = {}
  if not status_ok(spec.status, res.status) then
    problems[#problems + 1] = string.format("expected status %s, got %d", status_text(spec.status), res.status)
  end
  if spec.json ~= nil then
    local ok, doc = pcall(function() return res.json end)
    if not ok then
      problems[#problems + 1] = string.format("expected a JSON body, got %s: %s",
        res.headers["content-type"] or "no content type", http.snippet(res.body))
    else
      local fields = {}
      for k in pairs(spec.json) do fields[#fields + 1] = k end
      table.sort(fields, function(a, b) return tostring(a) < tostring(b) end)
      for _, field in ipairs(fields) do
        local want, got = spec.json[field], lookup(doc, field)
        if not matches(want, got) then
          problems[#problems + 1] = string.format("expected json.%s = %s, got %s", tostring(field), show(want),
            got == nil and "nothing" or show(got))
        end
      end
    end
  end
  if spec.body ~= nil and not (res.body or ""):find(spec.body) then
    problems[#problems + 1] = string.format("expected the body to match %q, got %s", spec.body, http.snippet(res.body))
  end
  return problems
end

local REQUEST_FIELDS = { "method", "url", "query", "headers", "timeout", "connect_timeout", "follow",
  "max_redirs", "retries", "retry_delay", "ca_file", "ca_data", "cert_file", "cert_data", "key_file",
  "key_data", "insecure", "http2", "user_agent", "proxy", "read_only", "client" }

local function to_request(target, extra)
  local req = {}
  if type(target) == "string" then
    req.url = target
  elseif type(target) == "table" then
    for _, k in ipairs(REQUEST_FIELDS) do req[k] = target[k] end
    for k, v in pairs(target.request or {}) do req[k] = v end
  else
    error("http.expect: URL or request table expected, got " .. type(target), 3)
  end
  for k, v in pairs(extra or {}) do if req[k] == nil then req[k] = v end end
  return req
end

-- Runs one request against an expectation: ok, problems, response|nil, method, url
local function run_one(req, spec)
  local res, err = http.try(req)
  local method = (req.method or "GET"):upper()
  if not res then
    if err.kind ~= "http" then error(err, 0) end -- Ctrl-C or the step's timeout stops the check
    return false, { err.message }, nil, method, err.details and err.details.url or tostring(req.url)
  end
  if res.dry_run then return true, {}, res, method, res.url end
  local problems = evaluate(res, spec)
  return #problems == 0, problems, res, method, res.url
end

--- Sends one request and checks the response; returns it, or raises a
--- structured error (kind "http", code "expectation") listing every
--- mismatch. spec: status (a number or list; default any 2xx), json
--- ({field = value}: dotted fields reach nested values, tables match as
--- subsets), body (a Lua pattern the body must match).
---@param target string|table  a URL, or a request table as http.request takes
---@param spec {status:integer|integer[]|nil, json:table|nil, body:string|nil}|nil
---@return runbook.http.Response
function M.expect(target, spec)
  spec = spec or {}
  local req
  if type(target) == "string" then
    req = { url = target }
  elseif type(target) == "table" then
    req = {}
    for k, v in pairs(target) do req[k] = v end
  else
    error("http.expect: URL or request table expected, got " .. type(target), 2)
  end
  local ok, problems, res, method, url = run_one(req, spec)
  if not ok then
    if not res then
      errors.raise { kind = "http", code = "expectation", message = problems[1], details = { url = url } }
    end
    errors.raise {
      kind = "http", code = "expectation",
      message = string.format("%s %s: %s", method, url, table.concat(problems, "; ")),
      details = { url = url, status = res.status, problems = problems },
    }
  end
  return res
end

--- Runs a verification checklist. Each row: name, url, method, headers,
--- query, request (more request fields: body, json, ...) and the expected
--- status, json fields and body pattern. Every row runs and is reported
--- (a log line each, and one "http-check" action with per-row results);
--- when any row fails, raises an error listing the failing rows.
--- opts: defaults for every row's request (ca_file, timeout, headers, ...).
---@param rows table[]
---@param opts table|nil
---@return table[] results  {name, method, url, ok, status, problems}
function M.check(rows, opts)
  if type(rows) ~= "table" or #rows == 0 then error("http.check: a non-empty list of rows expected", 2) end
  local results, failed = {}, {}
  for i, row in ipairs(rows) do
    if type(row) ~= "table" or row.url == nil then error("http.check: row " .. i .. " needs a url", 2) end
    local name = row.name or ("row " .. i)
    local req = to_request(row, opts)
    local ok, problems, res, method, url = run_one(req, row)
    local r = { name = name, method = method, url = url, ok = ok, problems = problems,
      expected_status = row.status or "2xx", status = res and res.status, dry_run = res and res.dry_run or nil,
      time = res and res.time }
    results[#results + 1] = r
    local seen = res and (res.dry_run and "not sent (dry run)" or tostring(res.status)) or problems[1]
    if ok then
      audit.log("info", string.format("http.check [ok] %s: %s %s -> %s", name, method, url, seen))
    else
      failed[#failed + 1] = r
      local what = res and table.concat(problems, "; ") or problems[1]
      audit.log("error", string.format("http.check [FAIL] %s: %s %s -> %s", name, method, url, what))
    end
  end
  audit.action {
    kind = "http-check", rows = results, passed = #results - #failed, failed = #failed,
    summary = string.format("http.check: %d of %d rows passed", #results - #failed, #results),
  }
  if #failed > 0 then
    local lines = {}
    for _, r in ipairs(failed) do
      local what = r.status and string.format("%s %s: %s", r.method, r.url, table.concat(r.problems, "; ")) or r.problems[1]
      lines[#lines + 1] = string.format("  - %s: %s", r.name, what)
    end
    errors.raise {
      kind = "http", code = "check-failed",
      message = string.format("http.check: %d of %d rows failed:\n%s", #failed, #results, table.concat(lines, "\n")),
      details = { rows = results },
    }
  end
  return results
end

return M
