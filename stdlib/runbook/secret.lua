-- runbook.secret: secret values. A secret prints as [REDACTED], is scrubbed
-- (with its hex, base64, percent-encoded and JSON-escaped forms) from the
-- console, logs and journal, and gives up its bytes only through :reveal().
local core = require "runbook._secret"
local errors = require "runbook.errors"

local M = {}

local ENCODINGS = { hex = true, base64 = true, base64url = true, alnum = true }

--- A new random secret from OpenSSL's generator.
--- `bytes` random bytes, encoded; for `alnum`, `bytes` characters from [A-Za-z0-9].
---@param opts {bytes:integer|nil, encoding:"hex"|"base64"|"base64url"|"alnum"|nil}|nil
---@return userdata secret
function M.random(opts)
  opts = opts or {}
  local n = opts.bytes or 32
  local enc = opts.encoding or "hex"
  if math.type(n) ~= "integer" or n < 1 or n > 4096 then
    error("secret.random: bytes must be an integer from 1 to 4096", 2)
  end
  if not ENCODINGS[enc] then
    error("secret.random: encoding must be hex, base64, base64url or alnum (got " .. tostring(enc) .. ")", 2)
  end
  return core.random(n, enc)
end

--- Wraps a string as a secret (and registers it for scrubbing). Every way
--- of making a secret registers it: one under 8 characters is warned about
--- once (it also redacts the same text inside ordinary words), and one the
--- redactor has no memory for raises rather than being handed back.
---@param value string
---@return userdata secret
function M.wrap(value)
  if core.is(value) then return value end
  if type(value) ~= "string" then error("secret.wrap: string expected, got " .. type(value), 2) end
  return core.new(value)
end

--- A secret from an environment variable. Raises when it is unset or empty,
--- unless opts.optional (then returns nil).
---@param name string
---@param opts {optional:boolean|nil}|nil
---@return userdata|nil secret
function M.env(name, opts)
  local v = os.getenv(name)
  if v == nil or v == "" then
    if opts and opts.optional then return nil end
    errors.raise { kind = "secret", code = "missing", message = "secret.env: environment variable " .. name .. " is not set" }
  end
  return core.new(v)
end

--- A secret from a file (a trailing newline is dropped unless opts.keep_newline).
---@param path string
---@param opts {keep_newline:boolean|nil}|nil
---@return userdata secret
function M.file(path, opts)
  local f, err = io.open(path, "rb")
  if not f then
    errors.raise { kind = "secret", code = "unreadable", message = "secret.file: " .. tostring(err) }
  end
  local data = f:read("a")
  f:close()
  if not (opts and opts.keep_newline) then data = data:gsub("\r?\n$", "") end
  return core.new(data)
end

--- Asks on the terminal without echo. Raises when there is no terminal.
---@param prompt string|nil
---@return userdata secret
function M.prompt(prompt)
  local v, err = require("runbook._host").read_password((prompt or "Secret") .. ": ")
  if not v then
    errors.raise { kind = "secret", code = "no-terminal", message = "secret.prompt: " .. err .. "; pass the value through the environment instead" }
  end
  return core.new(v)
end

--- True when v is a secret value.
function M.is(v) return core.is(v) end

--- The bytes of a secret (or a plain string unchanged). Use only where the
--- value must leave the process: a request, a command's stdin.
---@param v userdata|string
---@return string
function M.reveal(v)
  if core.is(v) then return v:reveal() end
  return v
end

--- Marks a plain string as secret for scrubbing without wrapping it
--- (raises, like wrap, when the redactor is out of memory).
---@param s string
function M.register(s) core.register(s) end

return M
