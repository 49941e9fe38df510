-- runbook.k8s._objects: the verbs on objects (get, list, create, replace,
-- patch, apply, delete) as methods of a Cluster. Every write is an audited
-- action and becomes a server-side dry run (dryRun=All) under --dry-run.
-- Secret data read from the server comes back as secret values.
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local secret = require "runbook.secret"
local client = require "runbook.k8s._client"

local M = {}
---@class runbook.k8s.Cluster
local Cluster = {}
M.methods = Cluster

local function v(x)
  if x == nil or json.is_null(x) then return nil end
  return x
end
M.value = v

local function usage(fmt, ...)
  error(string.format(fmt, ...), 3)
end

-- ---------------------------------------------------------------------------
-- object helpers

--- Deep copy of plain data (secrets and json.null are kept as they are).
local function copy(x)
  if type(x) ~= "table" then return x end
  local out = {}
  for k, val in pairs(x) do out[k] = copy(val) end
  return setmetatable(out, getmetatable(x))
end
M.copy = copy

--- True when every field of a (recursively) has the same value in b.
local function subset(a, b)
  if type(a) ~= "table" then
    if secret.is(a) or secret.is(b) then return secret.reveal(a) == secret.reveal(b) end
    if json.is_null(a) then return b == nil or json.is_null(b) end
    return a == b
  end
  if type(b) ~= "table" then return false end
  if (#a > 0 or json.is_array(a)) and #a ~= #b then return false end -- lists are compared whole
  for k, val in pairs(a) do
    if not subset(val, b[k]) then return false end
  end
  return true
end
M.subset = subset

local function equal(a, b) return subset(a, b) and subset(b, a) end
M.equal = equal

-- Secret data values (secrets or strings) to the base64 the API wants.
local function encode_secret_data(obj)
  if obj.kind ~= "Secret" or type(obj.data) ~= "table" then return obj end
  local data = {}
  for k, val in pairs(obj.data) do
    data[k] = secret.is(val) and crypto.base64_encode(val) or val
  end
  obj = copy(obj)
  obj.data = data
  return obj
end
M.encode_secret_data = encode_secret_data

-- Secret data from the server (base64) to secret values, registered with
-- the redactor so they never reach the console or the journal in clear.
local function decode_object(obj)
  if type(obj) ~= "table" then return obj end
  if obj.kind == "Secret" and type(obj.data) == "table" then
    for k, val in pairs(obj.data) do
      if type(val) == "string" or secret.is(val) then
        local raw = crypto.base64_decode(val)
        obj.data[k] = secret.is(raw) and raw or secret.wrap(raw or val)
      end
    end
  end
  return obj
end
M.decode_object = decode_object

local function meta(obj)
  return type(obj) == "table" and type(obj.metadata) == "table" and obj.metadata or {}
end
M.meta = meta

-- ---------------------------------------------------------------------------
-- references: {kind=, name=, namespace=, api_version=} or an object

--- Resolves a reference or an object to {info, namespace, name, api_version, kind}.
--- Raises a "k8s" error with code "UnknownKind" for a kind the server lacks.
---@param x table  a {kind=, name=, namespace=, api_version=} reference or an object
---@param need_name boolean|nil
---@return table ref
function Cluster:ref(x, need_name)
  if type(x) ~= "table" then usage("expected an object or a {kind=, name=} table, got %s", type(x)) end
  local m = meta(x)
  local kind = x.kind
  local api_version = x.api_version or x.apiVersion
  local name = x.name or v(m.name)
  local namespace = x.namespace or v(m.namespace)
  if type(kind) ~= "string" or kind == "" then usage("kind is required") end
  if need_name and (type(name) ~= "string" or name == "") then usage("%s: name is required", kind) end
  local info, why = self.client:resource(api_version, kind)
  if not info then error(why, 0) end
  if info.namespaced then
    namespace = namespace or self.namespace
  else
    namespace = nil
  end
  return { info = info, namespace = namespace, name = name, api_version = info.api_version, kind = info.kind }
end

local function display(r)
  local where = r.namespace and (r.namespace .. "/") or ""
  return string.format("%s %s %s%s", r.api_version, r.kind, where, r.name or "")
end
M.display = display

local function req_for(r, verb, extra)
  local req = { verb = verb, resource = r.info.plural, namespace = r.namespace, name = r.name }
  for k, val in pairs(extra or {}) do req[k] = val end
  return req
end

function Cluster:dry(opts)
  return (opts and opts.dry_run) or audit.dry_run()
end

--- The audited action of a write, to record.
function Cluster:action(verb, r, code, result, dry, extra)
  -- any other write makes this process's view of the object stale
  if verb ~= "apply" and self.seen and r.info and not dry then self.seen[client.path(r.info, r.namespace, r.name)] = nil end
  local t = {
    kind = "k8s", verb = verb, api_version = r.api_version, object_kind = r.kind,
    namespace = r.namespace, name = r.name, code = code, result = result, dry_run = dry or nil,
    server = self.client.server,
    summary = string.format("%s %s: %s%s", verb, display(r), result, dry and " (dry run)" or ""),
  }
  for k, val in pairs(extra or {}) do t[k] = val end
  return t
end

--- Records the audited action of a write.
function Cluster:record(verb, r, code, result, dry, extra)
  audit.action(self:action(verb, r, code, result, dry, extra))
end

local function fill_kind(items, info)
  for _, it in ipairs(items) do
    if type(it) == "table" then
      it.kind = it.kind or info.kind
      it.apiVersion = it.apiVersion or info.api_version
      decode_object(it)
    end
  end
  return items
end

-- ---------------------------------------------------------------------------
-- reading

--- The object, or nil when it does not exist.
---@param x table  a {kind=, name=, namespace=, api_version=} reference or an object
---@return table|nil object
function Cluster:get(x)
  local r = self:ref(x, true)
  local req = req_for(r, "get", { method = "GET", path = client.path(r.info, r.namespace, r.name), expect = { [404] = true } })
  local res = self.client:request(req)
  if res.status == 404 then
    self:remember(r, nil)
    return nil
  end
  local obj = decode_object(res.json)
  self:remember(r, obj)
  return obj
end

local function selector(s, what)
  if s == nil then return nil end
  if type(s) == "string" then return s end
  if type(s) ~= "table" then usage("%s must be a string or a table", what) end
  local keys, parts = {}, {}
  for k in pairs(s) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(s[k]) end
  return table.concat(parts, ",")
end
M.selector = selector

--- Lists objects, following `continue` through every page.
--- opts: kind, api_version, namespace (default: the connection's; all_namespaces
--- = true for every namespace), label_selector, field_selector (strings or
--- tables), limit (page size, 500), resource_version.
--- Returns items (each with kind and apiVersion) and {resource_version=}.
---@param opts {kind:string, api_version:string|nil, namespace:string|nil, all_namespaces:boolean|nil, label_selector:string|table|nil, field_selector:string|table|nil, limit:integer|nil, resource_version:string|nil}
---@return table[] items
---@return {resource_version:string} meta
function Cluster:list(opts)
  local r = self:ref(opts)
  local ns = (opts.all_namespaces or opts.namespace == "*") and nil or r.namespace
  local path = client.path(r.info, ns)
  local items, rv = {}, nil
  local cont
  repeat
    local q = { limit = opts.limit or 500, labelSelector = selector(opts.label_selector, "label_selector"),
      fieldSelector = selector(opts.field_selector, "field_selector"), continue = cont,
      resourceVersion = cont == nil and opts.resource_version or nil }
    local res = self.client:request(req_for({ info = r.info, namespace = ns }, "list", { method = "GET", path = path, query = q }))
    local body = res.json or {}
    for _, it in ipairs(body.items or {}) do items[#items + 1] = it end
    local m = body.metadata or {}
    rv = v(m.resourceVersion) or rv
    cont = v(m.continue)
    if cont == "" then cont = nil end
  until cont == nil
  return fill_kind(items, r.info), { resource_version = rv }
end

-- ---------------------------------------------------------------------------
-- writing

local function write_query(self, opts, extra)
  local q = {}
  if self:dry(opts) then q.dryRun = "All" end
  q.fieldManager = (opts and opts.field_manager) or self.field_manager
  for k, val in pairs(extra or {}) do q[k] = val end
  return q
end

local function body_for(r, obj)
  local o = copy(obj)
  o.apiVersion = o.apiVersion or r.api_version
  o.kind = o.kind or r.kind
  o.metadata = o.metadata or {}
  o.metadata.name = o.metadata.name or r.name
  if r.namespace then o.metadata.namespace = o.metadata.namespace or r.namespace end
  return encode_secret_data(o)
end

--- Creates an object (POST). A create whose first attempt may have landed
--- (dropped connection, 5xx) and whose retry meets AlreadyExists counts as
--- created when the stored object holds everything that was sent.
---@param obj table  the object (apiVersion, kind, metadata.name or generateName)
---@param opts {dry_run:boolean|nil, field_manager:string|nil}|nil
---@return table object
function Cluster:create(obj, opts)
  opts = opts or {}
  local m = meta(obj)
  local r = self:ref(obj, m.generateName == nil)
  local body = body_for(r, obj)
  local dry = self:dry(opts)
  local policy = r.name and "create" or "once"
  local req = req_for(r, "create", { method = "POST", path = client.path(r.info, r.namespace),
    query = write_query(self, opts), body = body, policy = policy })
  local res, err = self.client:try(req)
  if not res then
    if err.code == "AlreadyExists" and err.ambiguous then
      local existing = self:get(r)
      local sent = copy(body)
      sent.metadata.resourceVersion = nil
      if existing and subset(decode_object(sent), existing) then
        self:record("create", r, 201, "created", dry, { note = "created by an attempt whose answer was lost" })
        return existing
      end
    end
    error(err, 0)
  end
  local out = decode_object(res.json)
  r.name = r.name or v(meta(out).name)
  self:record("create", r, res.status, "created", dry)
  return out
end

--- Replaces an object (PUT). With metadata.resourceVersion the update is
--- conditional (409 Conflict when stale); without, unconditional.
---@param obj table
---@param opts {dry_run:boolean|nil, field_manager:string|nil}|nil
---@return table object
function Cluster:replace(obj, opts)
  opts = opts or {}
  local r = self:ref(obj, true)
  local body = body_for(r, obj)
  local before = v(meta(obj).resourceVersion)
  local req = req_for(r, "update", { method = "PUT", path = client.path(r.info, r.namespace, r.name),
    query = write_query(self, opts), body = body, policy = "idempotent" })
  local res = self.client:request(req)
  local out = decode_object(res.json)
  local result = (before ~= nil and v(meta(out).resourceVersion) == before) and "unchanged" or "configured"
  self:record("replace", r, res.status, result, self:dry(opts))
  return out
end

local PATCH_TYPES = {
  merge = "application/merge-patch+json",
  json = "application/json-patch+json",
  strategic = "application/strategic-merge-patch+json",
}

--- Patches an object. patch: a table or JSON text; opts.type: "merge"
--- (default), "json" or "strategic"; opts.subresource ("status", "scale").
---@param x table  a reference or an object
---@param patch table|string
---@param opts {type:"merge"|"json"|"strategic"|nil, subresource:string|nil, dry_run:boolean|nil, field_manager:string|nil}|nil
---@return table object
function Cluster:patch(x, patch, opts)
  opts = opts or {}
  local ptype = opts.type or "merge"
  local ct = PATCH_TYPES[ptype]
  if not ct then usage("patch type must be merge, json or strategic, got %s", tostring(ptype)) end
  if type(patch) ~= "table" and type(patch) ~= "string" then usage("patch must be a table or a JSON string") end
  local r = self:ref(x, true)
  local req = req_for(r, "patch", { method = "PATCH", subresource = opts.subresource,
    path = client.path(r.info, r.namespace, r.name, opts.subresource),
    query = write_query(self, opts), body = patch, content_type = ct,
    policy = ptype == "json" and "once" or "idempotent" })
  local res = self.client:request(req)
  local out = decode_object(res.json)
  local extra = { patch_type = ptype, subresource = opts.subresource }
  for k, val in pairs(opts.record or {}) do extra[k] = val end
  self:record(opts.verb or "patch", r, res.status, opts.result or "patched", self:dry(opts), extra)
  return out
end

-- The fields a manager owns through apply, as the server recorded them.
local function applied_fields(obj, manager)
  for _, mf in ipairs(v(meta(obj).managedFields) or {}) do
    if mf.manager == manager and mf.operation == "Apply" and v(mf.subresource) == nil then return v(mf.fieldsV1) end
  end
  return nil
end

-- An apply changed nothing when the resourceVersion stayed, or when the
-- object already held every value sent and the set of fields this manager
-- owns is the same (controllers write status and annotations at any
-- moment, also between our read and our apply, so the version alone would
-- call such an apply "configured").
local function unchanged(before, after, sent, manager)
  if v(meta(before).resourceVersion) == v(meta(after).resourceVersion) then return true end
  local s = decode_object(copy(sent))
  s.metadata.resourceVersion = nil
  return subset(s, before) and equal(applied_fields(before, manager) or {}, applied_fields(after, manager) or {})
end

-- What an apply did: 201 is created; otherwise compared with the view of
-- the object before it (read first, or this process's last view of it).
local function apply_result(res, before, out, sent, manager)
  if res.status == 201 or not before then return "created" end
  return unchanged(before, out, sent, manager) and "unchanged" or "configured"
end

--- Keeps this process's latest view of an object (nil: known absent), so
--- an apply can tell unchanged from configured without reading it first.
--- Any other write by this Cluster forgets it (see record).
function Cluster:remember(r, obj)
  self.seen = self.seen or {}
  local key = client.path(r.info, r.namespace, r.name)
  self.seen[key] = obj and copy(obj) or false
end

--- Reads, in one request per collection, the objects a batch of applies is
--- about to write, so each apply then needs only its own request. A
--- collection holding more than `limit` objects is not used (each apply
--- reads its object first instead). refs: a list of refs.
function Cluster:prefetch(refs, limit)
  local groups, order = {}, {}
  for _, r in ipairs(refs) do
    local key = client.path(r.info, r.namespace)
    if not groups[key] then
      groups[key] = { r = r, refs = {} }
      order[#order + 1] = key
    end
    local g = groups[key]
    g.refs[#g.refs + 1] = r
  end
  for _, key in ipairs(order) do
    local g = groups[key]
    if #g.refs >= 2 then
      local res = self.client:request(req_for({ info = g.r.info, namespace = g.r.namespace }, "list",
        { method = "GET", path = key, query = { limit = limit or 1000 } }))
      local body = res.json or {}
      local more = v((body.metadata or {}).continue)
      if more == nil or more == "" then
        local by_name = {}
        for _, it in ipairs(fill_kind(body.items or {}, g.r.info)) do by_name[v(meta(it).name)] = it end
        for _, r in ipairs(g.refs) do self:remember(r, by_name[r.name]) end
      end
    end
  end
end

-- The conflicts of a failed apply: {field=, manager=, message=}.
local function conflicts(err)
  local out = {}
  for _, c in ipairs(err.details and err.details.causes or {}) do
    if c.reason == "FieldManagerConflict" then
      out[#out + 1] = { field = c.field, manager = (c.message or ""):match('conflict with "([^"]+)"'), message = c.message }
    end
  end
  return out
end
M.conflicts = conflicts

--- Server-side apply of one object (field manager "runbook" unless
--- opts.field_manager; opts.force takes fields other managers own).
--- Returns the object and "created" | "configured" | "unchanged".
---@param obj table
---@param opts {force:boolean|nil, field_manager:string|nil, dry_run:boolean|nil}|nil
---@return table object
---@return "created"|"configured"|"unchanged" result
function Cluster:apply_one(obj, opts, r)
  local out = self:apply_many({ { obj = obj, r = r } }, opts)[1]
  return out.object, out.result
end

-- The apply request of one object, and what finishing it needs.
local function apply_request(self, obj, opts, r)
  local body = body_for(r, obj)
  body.metadata.resourceVersion = nil
  local before = self.seen and self.seen[client.path(r.info, r.namespace, r.name)]
  if before == nil then before = self:get(r) or false end
  local q = write_query(self, opts, { force = opts.force and "true" or nil })
  local req = req_for(r, "apply", { method = "PATCH", path = client.path(r.info, r.namespace, r.name),
    query = q, body = body, content_type = "application/apply-patch+yaml", policy = "idempotent" })
  return { r = r, req = req, body = body, before = before, manager = q.fieldManager }
end

local function apply_error(err)
  if err.code == "Conflict" then
    err.conflicts = conflicts(err)
    if #err.conflicts > 0 then
      local parts = {}
      for _, c in ipairs(err.conflicts) do parts[#parts + 1] = string.format("%s (owned by %s)", c.field, c.manager or "?") end
      err.hint = "fields owned by another manager: " .. table.concat(parts, ", ") .. "; apply with force = true to take them"
    end
  end
  return err
end

--- Server-side apply of independent objects at once (none may need
--- another of them first): one request each, at most opts.concurrency (8)
--- in flight on kept-alive connections. Their audited actions are recorded
--- together once every apply has answered, before the caller does anything
--- else. items: a list of {obj=, r=} (r optional). Returns a list of
--- {object=, result=}; the first failure raises, after the successful
--- applies are recorded.
function Cluster:apply_many(items, opts)
  opts = opts or {}
  local dry = self:dry(opts)
  local preps, reqs = {}, {}
  for i, it in ipairs(items) do
    preps[i] = apply_request(self, it.obj, opts, it.r or self:ref(it.obj, true))
    reqs[i] = preps[i].req
  end
  local answers
  if #reqs == 1 then
    local res, err = self.client:try(reqs[1])
    answers = { { res = res, err = err } }
  else
    answers = self.client:try_many(reqs, opts.concurrency)
  end
  local out, actions, failure = {}, {}, nil
  for i, p in ipairs(preps) do
    local a = answers[i]
    if a.res then
      local obj = decode_object(a.res.json)
      local result = apply_result(a.res, p.before, obj, p.body, p.manager)
      if not dry then self:remember(p.r, obj) end
      actions[#actions + 1] = self:action("apply", p.r, a.res.status, result, dry, opts.record)
      out[i] = { object = obj, result = result }
    elseif not failure then
      failure = apply_error(a.err)
    end
  end
  audit.actions(actions)
  if failure then error(failure, 0) end
  return out
end

--- Deletes an object. opts: propagation ("Background" default, "Foreground",
--- "Orphan"), grace_period, wait (until it is gone, through a watch),
--- timeout (for wait, 120), must_exist (a missing object is an error).
--- Returns "deleted" or "absent".
---@param x table  a reference or an object
---@param opts {propagation:"Background"|"Foreground"|"Orphan"|nil, grace_period:integer|nil, wait:boolean|nil, timeout:number|nil, must_exist:boolean|nil, dry_run:boolean|nil}|nil
---@return "deleted"|"absent" result
function Cluster:delete(x, opts)
  opts = opts or {}
  local r = self:ref(x, true)
  local dry = self:dry(opts)
  local body = { kind = "DeleteOptions", apiVersion = "v1", propagationPolicy = opts.propagation or "Background" }
  if opts.grace_period then body.gracePeriodSeconds = opts.grace_period end
  if dry then body.dryRun = json.array { "All" } end
  local req = req_for(r, "delete", { method = "DELETE", path = client.path(r.info, r.namespace, r.name),
    query = dry and { dryRun = "All" } or nil, body = body, policy = "idempotent", expect = { [404] = not opts.must_exist or nil } })
  local res, err = self.client:try(req)
  if not res then
    if err.code == "NotFound" and err.ambiguous then
      res = { status = 200 } -- an earlier attempt deleted it
    else
      error(err, 0)
    end
  end
  if res.status == 404 then
    self:record("delete", r, 404, "absent", dry)
    return "absent"
  end
  self:record("delete", r, res.status, "deleted", dry, { propagation = body.propagationPolicy })
  if opts.wait and not dry then
    self:wait { kind = r.kind, api_version = r.api_version, name = r.name, namespace = r.namespace,
      deleted = true, timeout = opts.timeout or 120 }
  end
  return "deleted"
end

return M
