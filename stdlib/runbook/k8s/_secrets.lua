-- runbook.k8s._secrets: ensuring a Secret from values that stay opaque, and
-- reading one as secret values. The values go to the server base64-encoded
-- inside the request body and nowhere else: action records name the keys,
-- never the values; values read back are registered with the redactor.
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local errors = require "runbook.errors"
local secret = require "runbook.secret"
local audit = require "runbook._engine.audit"
local objects = require "runbook.k8s._objects"

local M = {}
---@class runbook.k8s.Cluster
local Cluster = {}
M.methods = Cluster

local v = objects.value
local IF_EXISTS = { keep = true, replace = true, merge = true }
local KEY = "^[%-%._%w]+$"

local function usage(fmt, ...) error(string.format(fmt, ...), 3) end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t or {}) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- The declared values as {key = Secret|string}: data and string_data both
-- hold the plain value (the base64 the API wants is made when sending).
local function declared(opts)
  local out = {}
  for _, field in ipairs { "data", "string_data" } do
    local t = opts[field]
    if t ~= nil and type(t) ~= "table" then usage("secret: %s must be a table of key = value", field) end
    for k, val in pairs(t or {}) do
      if type(k) ~= "string" or not k:match(KEY) then
        usage("secret: key %s is not valid (letters, digits, '-', '_' and '.')", tostring(k))
      end
      if type(val) == "number" then val = tostring(val) end
      if type(val) ~= "string" and not secret.is(val) then
        usage("secret: value of %s must be a string or a secret, got %s", k, type(val))
      end
      out[k] = val
    end
  end
  return out
end

local function same_value(a, b)
  return crypto.equal(a, b)
end

-- A Secret read back while ensuring it. Values the caller declared as
-- plain strings (a user name, a host, a port) and that the Secret holds
-- unchanged stay plain strings: made secret values, they would be
-- registered with the redactor, and every later mention of "bowmark" or
-- "5432" in the console, the run log and the journal would read
-- [REDACTED]. Every other value comes back as a secret.
local function decode(obj, want)
  if type(obj) ~= "table" then return obj end
  if type(obj.data) == "table" then
    for k, val in pairs(obj.data) do
      if type(val) == "string" then
        local raw = crypto.base64_decode(val) or val
        local declared_plain = want[k]
        if type(declared_plain) == "string" and raw == declared_plain then
          obj.data[k] = raw
        else
          obj.data[k] = secret.wrap(raw)
        end
      end
    end
  end
  return obj
end

-- GET without objects.decode_object, which would register every value:
-- the Secret as the server sends it (data in base64), or nil.
local function fetch(self, r)
  local res = self.client:request { method = "GET", path = require("runbook.k8s._client").path(r.info, r.namespace, r.name),
    expect = { [404] = true }, verb = "get", resource = "secrets", namespace = r.namespace, name = r.name }
  if res.status == 404 then return nil end
  return res.json
end

local function read(self, r, want)
  local obj = fetch(self, r)
  return obj and decode(obj, want)
end

local function differing(have, want)
  local keys = {}
  for k, val in pairs(want) do
    if have[k] == nil or not same_value(have[k], val) then keys[#keys + 1] = k end
  end
  for k in pairs(have) do
    if want[k] == nil then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys
end

--- Reads a Secret: the object with data values as secrets, or nil. With
--- `keys`, only those keys are read (and registered with the redactor): a
--- Secret's plain neighbours (a user name, a host) stay out of it.
---@param opts string|{name:string, namespace:string|nil, keys:string[]|nil}
---@return table|nil secret
function Cluster:get_secret(opts)
  if type(opts) == "string" then opts = { name = opts } end
  local ref = { kind = "Secret", api_version = "v1", name = opts.name, namespace = opts.namespace }
  if opts.keys == nil then return self:get(ref) end
  if type(opts.keys) ~= "table" then error("get_secret: keys must be a list of key names", 2) end
  local obj = fetch(self, self:ref(ref, true))
  if not obj then return nil end
  local data = {}
  for _, k in ipairs(opts.keys) do data[k] = type(obj.data) == "table" and obj.data[k] or nil end
  obj.data = data
  return decode(obj, {})
end

--- Ensures a Secret holds values. opts: namespace, name, data = {KEY =
--- string|Secret}, string_data (the same, merged), type ("Opaque"), labels,
--- annotations, if_exists = "keep" (default: an existing Secret is left as
--- it is) | "replace" (exactly these keys) | "merge" (these keys over the
--- existing ones). Returns the Secret (values as secrets, except values
--- declared as plain strings that it holds unchanged: those stay plain
--- strings, never registered with the redactor) and the result:
--- "created", "configured", "unchanged" or "kept".
---@param opts {name:string, namespace:string|nil, data:table<string, string|userdata>|nil, string_data:table<string, string|userdata>|nil, type:string|nil, labels:table|nil, annotations:table|nil, if_exists:"keep"|"replace"|"merge"|nil, dry_run:boolean|nil}
---@return table secret
---@return "created"|"configured"|"unchanged"|"kept" result
function Cluster:secret(opts)
  if type(opts) ~= "table" then usage("secret: options table expected") end
  if type(opts.name) ~= "string" or opts.name == "" then usage("secret: name is required") end
  local mode = opts.if_exists or "keep"
  if not IF_EXISTS[mode] then usage("secret: if_exists must be keep, replace or merge, got %s", tostring(mode)) end
  local want = declared(opts)
  local stype = opts.type or "Opaque"
  local r = self:ref { kind = "Secret", api_version = "v1", name = opts.name, namespace = opts.namespace }
  local dry = self:dry(opts)
  local function record(verb, code, result, extra)
    local t = { keys = json.array(sorted_keys(extra and extra.keys_map or want)), type = stype, if_exists = mode }
    if extra and extra.changed then t.changed_keys = json.array(extra.changed) end
    self:record(verb, r, code, result, dry, t)
  end
  local function body(data_map, existing)
    local data = {}
    for k, val in pairs(data_map) do data[k] = crypto.base64_encode(val) end
    local m = { name = opts.name, namespace = r.namespace, labels = opts.labels, annotations = opts.annotations }
    if existing then
      m.resourceVersion = existing.metadata.resourceVersion
      m.labels = opts.labels or v(existing.metadata.labels)
      m.annotations = opts.annotations or v(existing.metadata.annotations)
    end
    return { apiVersion = "v1", kind = "Secret", metadata = m, type = stype, data = data }
  end

  local maybe_created = false
  for _ = 1, 5 do
    local existing = read(self, r, want)
    if not existing then
      local res, err = self.client:try {
        method = "POST", path = require("runbook.k8s._client").path(r.info, r.namespace),
        query = { fieldManager = opts.field_manager or self.field_manager, dryRun = dry and "All" or nil },
        body = body(want), policy = "create", verb = "create", resource = "secrets", namespace = r.namespace, name = r.name,
      }
      if res then
        record("create", res.status, "created")
        return decode(res.json, want) or existing, "created"
      end
      if err.code ~= "AlreadyExists" then error(err, 0) end
      maybe_created = err.ambiguous == true
      -- created meanwhile (or by an attempt whose answer was lost): look again
    else
      local have = {}
      for k, val in pairs(v(existing.data) or {}) do have[k] = val end
      if maybe_created and #differing(have, want) == 0 then
        record("create", 201, "created")
        return existing, "created"
      end
      if mode == "keep" then
        local diff = differing(have, want)
        if #diff > 0 then
          audit.log("info", string.format("Secret %s/%s exists and is kept as it is (if_exists = \"keep\"); keys that differ from the declared ones: %s",
            r.namespace, r.name, table.concat(diff, ", ")))
        end
        record("ensure", 200, "kept", { keys_map = have })
        return existing, "kept"
      end
      local target = want
      if mode == "merge" then
        target = {}
        for k, val in pairs(have) do target[k] = val end
        for k, val in pairs(want) do target[k] = val end
      end
      local old_type = v(existing.type) or "Opaque"
      if old_type ~= stype then
        errors.raise { kind = "k8s", code = "Invalid", message = string.format(
          "Secret %s/%s has type %s, not %s; a Secret's type cannot change: delete it first", r.namespace, r.name, old_type, stype) }
      end
      local changed = differing(have, target)
      if #changed == 0 and (opts.labels == nil or objects.subset(opts.labels, v(existing.metadata.labels) or {}))
        and (opts.annotations == nil or objects.subset(opts.annotations, v(existing.metadata.annotations) or {})) then
        record("ensure", 200, "unchanged", { keys_map = target })
        return existing, "unchanged"
      end
      local res, err = self.client:try {
        method = "PUT", path = require("runbook.k8s._client").path(r.info, r.namespace, r.name),
        query = { fieldManager = opts.field_manager or self.field_manager, dryRun = dry and "All" or nil },
        body = body(target, existing), policy = "idempotent", verb = "update", resource = "secrets",
        namespace = r.namespace, name = r.name,
      }
      if res then
        record("replace", res.status, "configured", { keys_map = target, changed = changed })
        return decode(res.json, target), "configured"
      end
      if err.code ~= "Conflict" then error(err, 0) end
      -- changed by someone else since we read it: read again and redo
    end
  end
  errors.raise { kind = "k8s", code = "Conflict", message = string.format(
    "Secret %s/%s kept changing while it was being written (5 attempts)", r.namespace, r.name) }
end

return M
