-- runbook.dns: name resolution through the system resolver (getaddrinfo:
-- /etc/hosts, then DNS), bounded by a timeout even when the resolver does
-- not answer, and a check for verifying a manual DNS step.
local net = require "runbook._net"
local errors = require "runbook.errors"
local audit = require "runbook._engine.audit"

local M = {}

local FAMILIES = { any = true, inet = true, inet6 = true }

local function check(fname, name, opts, extra)
  if type(name) ~= "string" or name == "" then error(fname .. ": name expected", 3) end
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fname .. ": options must be a table", 3) end
  for k in pairs(opts) do
    if k ~= "timeout" and k ~= "family" and not (extra and extra[k]) then
      error(string.format("%s: unknown option '%s'", fname, tostring(k)), 3)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error(fname .. ": timeout must be a positive number", 3)
  end
  if opts.family ~= nil and not FAMILIES[opts.family] then
    error(fname .. ": family must be any, inet or inet6", 3)
  end
  return opts
end

--- Resolves name without raising: {addresses = {...}, canonical = name}
--- or nil and a structured error (kind "dns", code "not-found",
--- "no-address", "temporary", "timeout" or "failed").
---@param name string
---@param opts {timeout:number|nil, family:"any"|"inet"|"inet6"|nil}|nil
---@return {addresses:string[], canonical:string|nil}|nil
---@return runbook.Error|nil
function M.lookup(name, opts)
  opts = check("dns.lookup", name, opts)
  return net.resolve(name, { timeout = opts.timeout or 5, family = opts.family })
end

--- Resolves name to its addresses (IPv4 and IPv6 text, de-duplicated, in
--- the resolver's order) and its canonical name. Raises on failure.
---@param name string
---@param opts {timeout:number|nil, family:"any"|"inet"|"inet6"|nil}|nil
---@return string[] addresses
---@return string|nil canonical
function M.resolve(name, opts)
  opts = check("dns.resolve", name, opts)
  local r, err = net.resolve(name, { timeout = opts.timeout or 5, family = opts.family })
  if not r then error(err, 0) end
  return r.addresses, r.canonical
end

local function is_ip(s)
  return s:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or s:find(":", 1, true) ~= nil
end

local function norm_name(s)
  return (s:lower():gsub("%.$", ""))
end

--- Checks a DNS step: true when name resolves and, with `expect`, to what
--- was expected: an address ("1.2.3.4"), a list of addresses (each must be
--- among the answers; with exact = true, nothing else may be), or a
--- canonical name (the CNAME target, compared without case or trailing
--- dot). Returns the verdict and what was seen: {addresses=, canonical=,
--- error=, summary=}. Never raises for a resolution failure.
---@param name string
---@param opts {expect:string|string[]|nil, exact:boolean|nil, timeout:number|nil, family:"any"|"inet"|"inet6"|nil}|nil
---@return boolean
---@return {addresses:string[], canonical:string|nil, error:string|nil, summary:string}
function M.resolves(name, opts)
  opts = check("dns.resolves", name, opts, { expect = true, exact = true })
  local expect = opts.expect
  if expect ~= nil and type(expect) ~= "string" and type(expect) ~= "table" then
    error("dns.resolves: expect must be an address, a list of addresses or a name", 2)
  end
  local r, err = net.resolve(name, { timeout = opts.timeout or 5, family = opts.family })
  local seen
  if not r then
    seen = { addresses = {}, error = errors.message(err), summary = errors.message(err) }
    audit.log("info", "dns: " .. seen.summary)
    return false, seen
  end
  seen = { addresses = r.addresses, canonical = r.canonical }
  local shown = string.format("%s resolves to %s%s", name, table.concat(r.addresses, ", "),
    (r.canonical and norm_name(r.canonical) ~= norm_name(name)) and (" (canonical name " .. r.canonical .. ")") or "")
  local ok, want = true, nil
  if type(expect) == "string" and not is_ip(expect) then
    ok = r.canonical ~= nil and norm_name(r.canonical) == norm_name(expect)
    want = "canonical name " .. expect
  elseif expect ~= nil then
    local list = type(expect) == "string" and { expect } or expect
    local have = {}
    for _, a in ipairs(r.addresses) do have[a] = true end
    for _, a in ipairs(list) do
      if type(a) ~= "string" then error("dns.resolves: expect must list addresses as strings", 2) end
      if not have[a] then ok = false end
    end
    if ok and opts.exact then
      local wanted = {}
      for _, a in ipairs(list) do wanted[a] = true end
      for _, a in ipairs(r.addresses) do
        if not wanted[a] then ok = false end
      end
    end
    want = (opts.exact and "exactly " or "") .. table.concat(list, ", ")
  end
  seen.summary = shown .. (want and ("; expected " .. want .. (ok and "" or ": does not match")) or "")
  audit.log("info", "dns: " .. seen.summary)
  return ok, seen
end

return M
