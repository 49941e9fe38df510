-- runbook.k8s: a Kubernetes client that does what kubectl does, for
-- runbooks. k8s.connect reads the kubeconfig like kubectl (or the pod's
-- service account) and returns a Cluster, whose methods are the verbs
-- (get, list, create, replace, patch, apply, delete), manifests, Secrets,
-- waits driven by watch, rollout status/restart, scale, Jobs and logs.
--
-- The methods live in runbook/k8s/*.lua by concern: objects (verbs),
-- secrets, wait (watch, rollout), jobs (Jobs, logs); config and exec read
-- the configuration; client talks HTTP; manifest loads and orders; rules
-- are kubectl's readiness rules as pure functions.
local json = require "runbook._json"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local config = require "runbook.k8s._config"
local client = require "runbook.k8s._client"
local objects = require "runbook.k8s._objects"
local manifest = require "runbook.k8s._manifest"
local rules = require "runbook.k8s._rules"

local M = {}
local v = objects.value

---@class runbook.k8s.Cluster
---@field server string       the API server URL
---@field context string|nil  the kubeconfig context
---@field namespace string    the default namespace of this connection
---@field field_manager string
local Cluster = {}
Cluster.__index = Cluster

for _, mod in ipairs { "runbook.k8s._objects", "runbook.k8s._secrets", "runbook.k8s._wait", "runbook.k8s._jobs",
  "runbook.k8s._streams" } do
  for name, fn in pairs(require(mod).methods) do Cluster[name] = fn end
end

--- Connects to a cluster (no request is sent until the first call).
--- opts: kubeconfig (a path or a list; else KUBECONFIG, else ~/.kube/config),
--- context (else current-context), namespace (else the context's, else
--- "default"), in_cluster (true: the pod's service account), field_manager
--- ("runbook"), timeout (30 s per request), connect_timeout (10), retries (4).
--- Configuration errors raise kind = "config" errors naming the file and field.
---@param opts table|nil
---@return runbook.k8s.Cluster
function M.connect(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("k8s.connect: options table expected", 2) end
  local cfg = config.load(opts)
  local c = client.new(cfg, opts)
  return setmetatable({
    client = c, cfg = cfg, server = cfg.server, context = cfg.context, namespace = cfg.namespace,
    field_manager = opts.field_manager or "runbook",
  }, Cluster)
end

--- Closes the connections (they are reopened by the next call).
function Cluster:close() self.client:close() end
Cluster.__close = Cluster.close

function Cluster:__tostring()
  return string.format("runbook.k8s.Cluster (%s, namespace %s)", self.server, self.namespace)
end

--- The server's version (GET /version): {major=, minor=, gitVersion=, ...}.
---@return table version
function Cluster:version()
  return self.client:request { method = "GET", path = "/version", verb = "get version" }.json
end

--- Discovery: the resource of an apiVersion and kind, {api_version, kind,
--- plural, namespaced, verbs, subresources}, or nil and a message.
---@param api_version string|nil
---@param kind string
---@return table|nil info
---@return string|nil message
function Cluster:resource(api_version, kind)
  return self.client:resource(api_version, kind)
end

-- ---------------------------------------------------------------------------
-- apply

local function is_object(x)
  return type(x) == "table" and (x.kind ~= nil or x.apiVersion ~= nil or x.metadata ~= nil)
end

-- Waits until the CRDs are Established, then forgets discovery of their groups.
local function settle_crds(self, crds, opts)
  for _, c in ipairs(crds) do
    self:wait { kind = "CustomResourceDefinition", api_version = "apiextensions.k8s.io/v1", name = c.metadata.name,
      condition = "Established", timeout = opts.crd_timeout or 60 }
    for _, k in ipairs(manifest.crd_kinds(c)) do self.client:invalidate(k.api_version) end
  end
end

--- Server-side apply. With one object: returns the object and "created",
--- "configured" or "unchanged". With manifests (YAML text, a file, a
--- folder, a list): applies them in order and returns the report.
--- opts: force, field_manager, dry_run, vars (${VAR} substitution), recursive,
--- concurrency (applies in flight at once, 8).
---@param source table|string  an object, a list, YAML text, a file or a folder
---@param opts {force:boolean|nil, field_manager:string|nil, dry_run:boolean|nil, vars:table|function|nil, recursive:boolean|nil}|nil
---@return table object_or_report
---@return string|nil result
function Cluster:apply(source, opts)
  opts = opts or {}
  if is_object(source) then
    local d = manifest.load(source, opts)[1]
    return self:apply_one(d.obj, opts)
  end
  return self:apply_manifests(source, opts)
end

--- Applies manifests in order (Namespaces, CRDs, then the rest; custom
--- resources once their CRDs are established) and reports each as created,
--- configured or unchanged. Returns a list of {api_version, kind, namespace,
--- name, result, file, index, object} with counts report.created,
--- report.configured, report.unchanged.
---@param source table|string
---@param opts {force:boolean|nil, field_manager:string|nil, dry_run:boolean|nil, vars:table|function|nil, recursive:boolean|nil, crd_timeout:number|nil}|nil
---@return table report
function Cluster:apply_manifests(source, opts)
  opts = opts or {}
  local docs = manifest.load(source, opts)
  local dry = self:dry(opts)
  local defined = {}
  for _, d in ipairs(docs) do
    if d.obj.kind == "CustomResourceDefinition" then
      for _, k in ipairs(manifest.crd_kinds(d.obj)) do defined[k.api_version .. "|" .. k.kind] = true end
    end
  end
  -- every kind is known (or defined by a CRD here) before anything is written
  for _, d in ipairs(docs) do
    local info, why = self.client:resource(d.obj.apiVersion, d.obj.kind)
    if info then
      d.info = info
    elseif defined[d.obj.apiVersion .. "|" .. d.obj.kind] then
      d.deferred = true
    else
      errors.raise { kind = "config", code = "UnknownKind", message = manifest.where(d) .. ": " .. why.message, details = why.details }
    end
  end
  manifest.order(docs)
  -- one read per collection instead of one per object (see Cluster:prefetch)
  local refs = {}
  for _, d in ipairs(docs) do
    if not d.deferred then refs[#refs + 1] = self:ref(d.obj, true) end
  end
  self:prefetch(refs)
  local report = { created = 0, configured = 0, unchanged = 0 }
  local crds, settled = {}, false
  local dry_namespaces = {}
  local function add(d, r, obj, result)
    report[result] = (report[result] or 0) + 1
    report[#report + 1] = { api_version = r.api_version, kind = r.kind, namespace = r.namespace, name = r.name,
      result = result, file = d.file, index = d.index, object = obj }
  end
  -- Objects other than Namespaces and CRDs, whose kinds are known, go in
  -- waves of `concurrency` concurrent applies, never mixing tiers (so
  -- Secrets and ConfigMaps are in before the workloads that use them, as
  -- in sequence); each wave's actions are recorded before the next starts.
  local wave_size = opts.concurrency or 8
  local wave, wave_tier = {}, nil
  local function flush()
    if #wave == 0 then return end
    local items = {}
    for j, w in ipairs(wave) do items[j] = { obj = w.d.obj, r = w.r } end
    local results = self:apply_many(items, opts)
    for j, w in ipairs(wave) do add(w.d, w.r, results[j].object, results[j].result) end
    wave = {}
  end
  for i, d in ipairs(docs) do
    local o = d.obj
    audit.progress(i - 1, #docs, string.format("%s %s", o.kind, o.metadata.name))
    local plain = not d.deferred and o.kind ~= "Namespace" and o.kind ~= "CustomResourceDefinition"
    local r = plain and self:ref(o, true) or nil
    if plain and not (dry and r.namespace and dry_namespaces[r.namespace]) then
      local tier = manifest.tier(o)
      if tier ~= wave_tier then flush() end
      wave_tier = tier
      wave[#wave + 1] = { d = d, r = r }
      if #wave >= wave_size then flush() end
    else
      flush()
      if d.deferred and not settled and not dry then
        settle_crds(self, crds, opts)
        settled = true
      end
      local obj, result
      if d.deferred and dry then
        r = { api_version = o.apiVersion, kind = o.kind, name = o.metadata.name, namespace = v(o.metadata.namespace) or self.namespace }
        result = "created"
        self:record("apply", r, nil, result, true, { note = "its CustomResourceDefinition is not installed yet" })
      else
        if d.deferred then
          local info, why = self.client:resource(o.apiVersion, o.kind)
          if not info then errors.raise { kind = "config", code = "UnknownKind", message = manifest.where(d) .. ": " .. why } end
        end
        r = self:ref(o, true)
        if dry and r.namespace and dry_namespaces[r.namespace] then
          result = "created"
          self:record("apply", r, nil, result, true, { note = "its namespace would be created first" })
        else
          obj, result = self:apply_one(o, opts, r)
        end
      end
      if o.kind == "Namespace" and dry and result == "created" then dry_namespaces[o.metadata.name] = true end
      if o.kind == "CustomResourceDefinition" then crds[#crds + 1] = o end
      add(d, r, obj, result)
    end
  end
  flush()
  audit.progress(#docs, #docs, "applied")
  return report
end

-- ---------------------------------------------------------------------------
-- pure helpers, for runbooks and tests

M.manifests = manifest.load          --- Loads manifests without applying them.
M.substitute = manifest.substitute   --- ${VAR} substitution over text.
M.order = manifest.order             --- Sorts loaded manifests into apply order.
M.guess_plural = client.guess_plural --- The plural a kind most likely has.
M.rules = rules                      --- kubectl's readiness rules over objects.
M.load_config = config.load          --- The resolved configuration of a connection.
M.Cluster = Cluster
M.is_object = is_object

return M
