-- Sealing values for the journal. Memos, checkpoints and outputs may hold
-- secrets that a resumed step needs back exactly (the generated password);
-- each secret inside them is stored as {"$secret":{"kid":K,"box":B}}, B
-- being AES-256-GCM of the value under the store's key, bound to the run,
-- step and key by the associated data so sealed values cannot be swapped.
--
-- A plain string that holds a registered secret (a connection string built
-- around a password) is sealed too, marked plain, and comes back as the
-- same plain string: the engine reads these values back, so they are never
-- scrubbed (scrubbing is for what people read).
local secret = require "runbook._secret"
local crypto = require "runbook._crypto"
local host = require "runbook._host"
local errors = require "runbook.errors"

local M = {}

local function walk(v, f, depth)
  depth = depth or 0
  if depth > 100 then error("value nested too deeply (a cycle?)", 0) end
  if secret.is(v) then return f(v) end
  if type(v) == "table" then
    if v["$secret"] ~= nil then return f(v) end
    local out = {}
    for k, x in pairs(v) do out[k] = walk(x, f, depth + 1) end
    return setmetatable(out, getmetatable(v))
  end
  return v
end

--- True when the value holds a secret anywhere.
function M.has_secret(v)
  local found = false
  walk(v, function(x) found = true return x end)
  return found
end

local function unrecordable(what, path, v)
  errors.raise { kind = "value", code = "unrecordable", message = string.format(
    "%s%s is a %s, which cannot be recorded (only JSON data, secrets or nil)",
    what or "the value", path ~= "" and (" (at " .. path .. ")") or "", type(v)) }
end

--- A journal-safe copy of value: every secret sealed, and every string
--- holding a registered secret sealed as a plain string. Raises (kind
--- "value", code "unrecordable") on a function, userdata or thread, or a
--- table key that is neither a string nor a number.
---@param value any
---@param keyfn fun(create:boolean):(userdata, string)  the store's secret_key
---@param aad string
---@param what string|nil  names the value in errors ("the step's outputs")
function M.seal(value, keyfn, aad, what)
  local function box_of(s, plain)
    local key, kid = keyfn(true)
    local box = secret.seal(key, aad, s)
    return { ["$secret"] = { kid = kid, box = crypto.base64_encode(box), plain = plain or nil } }
  end
  local function go(v, path, depth)
    if depth > 100 then error("value nested too deeply (a cycle?)", 0) end
    if secret.is(v) then return box_of(v) end
    local t = type(v)
    if t == "string" then
      if host.scrub(v) ~= v then return box_of(secret.new(v), true) end
      return v
    elseif t == "table" then
      if v["$secret"] ~= nil then return v end -- sealed already
      local out = {}
      for k, x in pairs(v) do
        local kt = type(k)
        if kt ~= "string" and kt ~= "number" then unrecordable(what, path, k) end
        out[k] = go(x, path .. (kt == "string" and ("." .. k) or ("[" .. tostring(k) .. "]")), depth + 1)
      end
      return setmetatable(out, getmetatable(v))
    elseif t == "nil" or t == "boolean" or t == "number" then
      return v
    end
    unrecordable(what, path:sub(1, 1) == "." and path:sub(2) or path, v)
  end
  return go(value, "", 0)
end

--- The value with sealed secrets opened again. `what` names the value in
--- errors ("memo 'db-password' of step M3").
function M.open(value, keyfn, aad, what)
  return walk(value, function(t)
    if secret.is(t) then return t end
    local sealed = t["$secret"]
    if type(sealed) ~= "table" or type(sealed.box) ~= "string" then
      errors.raise { kind = "secret", code = "corrupt", message = what .. ": malformed sealed secret in the journal" }
    end
    -- (a store may say where it looked for the key file)
    local key, kid, key_file = keyfn(false)
    if not key then
      errors.raise { kind = "secret", code = "no-key", message = string.format(
        "%s holds a secret sealed with key %s, but no key is available: set RUNBOOK_SECRET_KEY or %s (a new secret is never generated in its place)",
        what, tostring(sealed.kid), key_file and ("put that key in " .. key_file .. " (RUNBOOK_SECRET_KEY_FILE)") or "restore the store's secret.key") }
    end
    if sealed.kid ~= kid then
      errors.raise { kind = "secret", code = "wrong-key", message = string.format(
        "%s was sealed with key %s, but the current key is %s: set RUNBOOK_SECRET_KEY to the key the run started with",
        what, tostring(sealed.kid), kid) }
    end
    local box = crypto.base64_decode(sealed.box)
    local s = box and secret.open(key, aad, box)
    if not s then
      errors.raise { kind = "secret", code = "auth", message = what .. ": the sealed secret does not authenticate (edited journal or wrong key)" }
    end
    if sealed.plain then return s:reveal() end
    return s
  end)
end

return M
