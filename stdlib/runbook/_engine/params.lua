-- Runbook parameters: declared in `runbook "x" { params = {...} }`, set by
-- --param k=v, --values FILE.yaml, the environment, what a resumed run was
-- started with, and defaults, in that order. Secret params are wrapped as
-- secrets and never recorded; they are read again on every invocation.
local secret = require "runbook._secret"
local errors = require "runbook.errors"

local M = {}

local function coerce(name, spec, v)
  local want = spec.type or (spec.default ~= nil and math.type(spec.default) == "integer" and "integer")
    or (spec.default ~= nil and type(spec.default)) or "string"
  if secret.is(v) then return v end
  if want == "string" then
    if type(v) == "table" then errors.raisef("usage", nil, "param %s: a string expected, got a table", name) end
    return tostring(v)
  elseif want == "number" or want == "integer" then
    local n = tonumber(v)
    if n == nil then errors.raisef("usage", nil, "param %s: a number expected, got '%s'", name, tostring(v)) end
    if want == "integer" then
      if math.type(n) == "float" and n == math.floor(n) then n = math.tointeger(n) end
      if math.type(n) ~= "integer" then errors.raisef("usage", nil, "param %s: an integer expected, got '%s'", name, tostring(v)) end
    end
    return n
  elseif want == "boolean" then
    if type(v) == "boolean" then return v end
    local s = tostring(v):lower()
    if s == "true" or s == "yes" or s == "1" or s == "on" then return true end
    if s == "false" or s == "no" or s == "0" or s == "off" then return false end
    errors.raisef("usage", nil, "param %s: true or false expected, got '%s'", name, tostring(v))
  end
  return v
end

local function suggest(name, specs)
  local near = require("runbook._engine.suggest").hint(name, specs)
  if near ~= "" then return near end
  local keys = {}
  for k in pairs(specs) do keys[#keys + 1] = k end
  table.sort(keys)
  return #keys > 0 and (" (declared: " .. table.concat(keys, ", ") .. ")") or " (the runbook declares no params)"
end

local function how_to_set(name, spec)
  local how = "--param " .. name .. "=..."
  if spec.env then how = how .. " or the environment variable " .. spec.env end
  return how
end

-- one message naming every missing param, so one attempt finds them all
local function missing_message(missing)
  if #missing == 1 then
    return string.format("missing required param '%s' (set %s)", missing[1].name, missing[1].how)
  end
  local parts = {}
  for i, m in ipairs(missing) do parts[i] = string.format("'%s' (set %s)", m.name, m.how) end
  return "missing required params " .. table.concat(parts, ", ", 1, #parts - 1) .. " and " .. parts[#parts]
end

--- Parses a --values file: a YAML mapping of param names to values.
function M.read_values(path)
  local f, err = io.open(path, "rb")
  if not f then errors.raisef("usage", nil, "--values: %s", tostring(err)) end
  local text = f:read("a")
  f:close()
  local docs, perr = require("runbook._yaml").load(text)
  if not docs then errors.raisef("usage", nil, "--values %s: %s", path, tostring(perr)) end
  local v = docs[1]
  if v == nil then return {} end
  if type(v) ~= "table" then errors.raisef("usage", nil, "--values %s: a mapping of param names to values expected", path) end
  for k, x in pairs(v) do
    if type(k) ~= "string" then
      errors.raisef("usage", nil, "--values %s: a mapping of param names to values expected, got a list", path)
    end
    if type(x) == "table" then
      errors.raisef("usage", nil, "--values %s: param '%s' must be one value (a string, number or boolean), got a %s", path, k,
        (next(x) == nil or x[1] ~= nil) and "list" or "mapping")
    end
  end
  return v
end

--- Resolves every declared param.
---@param specs table<string, table> book.params
---@param given {cli:table<string,string>|nil, values:table|nil, recorded:table|nil}
---@return table values, table sources  (sources[name] = "param"|"values"|"env"|"recorded"|"default")
function M.resolve(specs, given)
  local cli, values, recorded = given.cli or {}, given.values or {}, given.recorded or {}
  for k in pairs(cli) do
    if not specs[k] then errors.raisef("usage", nil, "unknown param '%s'%s", k, suggest(k, specs)) end
  end
  for k in pairs(values) do
    if type(k) ~= "string" or not specs[k] then errors.raisef("usage", nil, "--values: unknown param '%s'%s", tostring(k), suggest(k, specs)) end
  end
  local out, sources, missing = {}, {}, {}
  local names = {}
  for k in pairs(specs) do names[#names + 1] = k end
  table.sort(names)
  for _, name in ipairs(names) do
    local spec = specs[name]
    local v, src
    if cli[name] ~= nil then
      v, src = cli[name], "param"
    elseif values[name] ~= nil then
      v, src = values[name], "values"
    elseif spec.env and os.getenv(spec.env) and os.getenv(spec.env) ~= "" then
      v, src = os.getenv(spec.env), "env"
    elseif recorded[name] ~= nil and not spec.secret then
      v, src = recorded[name], "recorded"
    elseif spec.default ~= nil then
      v, src = spec.default, "default"
    end
    if v == nil then
      local required = spec.required
      if required == nil then required = true end
      if required then missing[#missing + 1] = { name = name, how = how_to_set(name, spec) } end
    else
      v = coerce(name, spec, v)
      if spec.choices then
        local okc = false
        for _, c in ipairs(spec.choices) do if c == v then okc = true end end
        if not okc then
          local cs = {}
          for i, c in ipairs(spec.choices) do cs[i] = tostring(c) end
          errors.raisef("usage", nil, "param %s: '%s' is not one of %s", name, tostring(v), table.concat(cs, ", "))
        end
      end
      if spec.secret and not secret.is(v) then v = secret.new(tostring(v)) end
      out[name] = v
      sources[name] = src
    end
  end
  if #missing > 0 then errors.raisef("usage", nil, "%s", missing_message(missing)) end
  return out, sources
end

--- The required params that nothing sets: {name=, how=} in name order.
--- given: {cli=, values=} (the environment is read).
function M.missing(specs, given)
  local cli, values = given.cli or {}, given.values or {}
  local names = {}
  for k in pairs(specs) do names[#names + 1] = k end
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local spec = specs[name]
    local env = spec.env and os.getenv(spec.env)
    if spec.default == nil and spec.required ~= false and cli[name] == nil and values[name] == nil
      and (env == nil or env == "") then
      out[#out + 1] = { name = name, how = how_to_set(name, spec) }
    end
  end
  return out
end

--- The params as recorded in run.started: secrets left out.
function M.recordable(specs, values)
  local r = {}
  for k, v in pairs(values) do
    if not specs[k].secret and not secret.is(v) then r[k] = v end
  end
  return r
end

--- Parses "k=v" strings from --param.
function M.parse_cli(list)
  local out = {}
  for _, kv in ipairs(list) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if not k then errors.raisef("usage", nil, "--param expects NAME=VALUE, got '%s'", kv) end
    out[k] = v
  end
  return out
end

return M
