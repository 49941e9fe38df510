-- URL helpers shared by runbook.http and runbook.s3: percent-encoding
-- (RFC 3986, as SigV4 wants it too), query strings from tables, and the
-- form of a URL that is safe to show (secrets masked, no password).
local secret = require "runbook.secret"

local M = {}

--- Percent-encodes every byte but the unreserved ones (A-Z a-z 0-9 - . _ ~);
--- with keep_slash, "/" is kept too (for paths).
---@param s string
---@param keep_slash boolean|nil
---@return string
function M.encode(s, keep_slash)
  s = tostring(s)
  local pat = keep_slash and "[^%w%-%._~/]" or "[^%w%-%._~]"
  return (s:gsub(pat, function(c) return string.format("%%%02X", c:byte()) end))
end

--- Decodes %XX escapes (and nothing else: "+" stays "+").
function M.decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function scalar(v, name)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    return math.type(v) == "integer" and tostring(v) or string.format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if secret.is(v) then return v end
  error("query: value of " .. name .. " must be a string, number, boolean or secret, got " .. t, 4)
end

--- Builds "a=1&b=x%20y" from a table, keys sorted; a list value repeats the
--- key. Returns the wire form and a display form where secret values are
--- replaced by [REDACTED].
---@param q table<string, any>
---@return string wire, string display
function M.query(q)
  local keys = {}
  for k in pairs(q) do
    if type(k) ~= "string" then error("query: keys must be strings", 3) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local wire, shown = {}, {}
  for _, k in ipairs(keys) do
    local v = q[k]
    local list = (type(v) == "table") and v or { v }
    for _, item in ipairs(list) do
      local s = scalar(item, k)
      local ek = M.encode(k)
      if secret.is(s) then
        wire[#wire + 1] = ek .. "=" .. M.encode(s:reveal())
        shown[#shown + 1] = ek .. "=[REDACTED]"
      else
        wire[#wire + 1] = ek .. "=" .. M.encode(s)
        shown[#shown + 1] = ek .. "=" .. M.encode(s)
      end
    end
  end
  return table.concat(wire, "&"), table.concat(shown, "&")
end

--- Parses "a=1&b=2" into a table (last value wins), decoding escapes.
function M.parse_query(s)
  local out = {}
  for pair in (s or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[M.decode(k)] = M.decode(v)
  end
  return out
end

--- The URL without the password of its userinfo part, for messages.
function M.display(url)
  return (url:gsub("^(%a[%w+.-]*://)([^/@:]*):[^/@]*@", "%1%2:***@"))
end

--- Splits "https://host:port/path?query" into scheme, authority, path, query.
function M.split(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  local p, q = path:match("^([^?#]*)%??([^#]*)")
  if p == "" then p = "/" end
  return scheme:lower(), authority, p, q
end

return M
