-- runbook.k8s._client: talking to one API server. One reused libcurl
-- connection for requests (HTTP/2 when offered) and a second one for
-- streams (watches, followed logs); credentials on every request (token,
-- token file re-read when it changes, basic auth, client certificate, exec
-- plugin re-run after a 401); Status bodies turned into structured errors;
-- retries with backoff; discovery cached per server for the run.
--
-- Retry policy, by what a request may do twice (see docs/api/k8s.md):
--   "safe"        GET, LIST, WATCH, discovery
--   "idempotent"  server-side apply, merge and strategic patches, PUT, DELETE
--                 (a PUT carrying a resourceVersion answers Conflict when the
--                 first attempt had landed; a DELETE answers NotFound)
--   "create"      POST of a named object: retried, and the caller accepts
--                 AlreadyExists with identical content after an attempt whose
--                 outcome is unknown (res.ambiguous)
--   "once"        JSON patches and generateName creates: only when the request
--                 surely did not reach the server (429, refused connection)
-- Retried: 429 (Retry-After honoured), 5xx, refused or dropped connections
-- and timeouts of the request itself.
local curl = require "runbook._curl"
local json = require "runbook._json"
local host = require "runbook._host"
local fs = require "runbook._fs"
local crypto = require "runbook._crypto"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local secret = require "runbook.secret"
local url = require "runbook.http.url"
local retry_after = require("runbook.http").retry_after
local backoffs = require "runbook._engine.backoff"
local exec = require "runbook.k8s._exec"

local M = {}

local Client = {}
Client.__index = Client
M.Client = Client

local REASONS = {
  [400] = "BadRequest", [401] = "Unauthorized", [403] = "Forbidden", [404] = "NotFound",
  [405] = "MethodNotAllowed", [406] = "NotAcceptable", [409] = "Conflict", [410] = "Expired",
  [413] = "RequestEntityTooLarge", [415] = "UnsupportedMediaType", [422] = "Invalid",
  [429] = "TooManyRequests", [500] = "InternalError", [503] = "ServiceUnavailable", [504] = "Timeout",
}

local NOT_SENT = { connect = true, resolve = true }       -- the request never left
local AMBIGUOUS = { reset = true, timeout = true }        -- it may have been processed

--- A new client for a resolved configuration (runbook.k8s._config.load).
--- opts: timeout (30), connect_timeout (10), retries (4), retry_delay (0.2),
--- max_delay (5), max_retry_after (60), user_agent.
function M.new(cfg, opts)
  opts = opts or {}
  local self = setmetatable({
    cfg = cfg,
    server = cfg.server,
    timeout = opts.timeout or 30,
    connect_timeout = opts.connect_timeout or 10,
    retries = opts.retries or 4,
    retry_delay = opts.retry_delay or 0.2,
    max_delay = opts.max_delay or 5,
    max_retry_after = opts.max_retry_after or 60,
    user_agent = opts.user_agent or ("runbook/" .. host.version() .. " (kubernetes)"),
  }, Client)
  return self
end

-- ---------------------------------------------------------------------------
-- credentials

function Client:tls_options()
  local cfg, o = self.cfg, {}
  o.ca_file, o.ca_data, o.insecure, o.proxy = cfg.ca_file, cfg.ca_data, cfg.insecure, cfg.proxy
  o.tls_server_name = cfg.tls_server_name
  o.cert_file, o.cert_data, o.key_file, o.key_data = cfg.cert_file, cfg.cert_data, cfg.key_file, cfg.key_data
  if self.exec_cert then o.cert_data, o.key_data, o.cert_file, o.key_file = self.exec_cert, self.exec_key, nil, nil end
  o.timeout, o.connect_timeout, o.user_agent = self.timeout, self.connect_timeout, self.user_agent
  return o
end

local function tls_key(o)
  return table.concat({ tostring(o.cert_file), o.cert_data and crypto.sha256(o.cert_data) or "-" }, "|")
end

function Client:curl_for(stream)
  local o = self:tls_options()
  local key = tls_key(o)
  if self.curl_key ~= key then
    if self.main then self.main:close() end
    if self.streamer then self.streamer:close() end
    self.main, self.streamer, self.curl_key = nil, nil, key
  end
  if stream then
    self.streamer = self.streamer or curl.client(o)
    return self.streamer
  end
  self.main = self.main or curl.client(o)
  return self.main
end

function Client:close()
  if self.main then self.main:close() end
  if self.streamer then self.streamer:close() end
  self.main, self.streamer = nil, nil
end

-- The token of a token file, re-read when the file changes (service account
-- tokens are rotated in place).
function Client:file_token(path, force)
  local st = fs.stat(path)
  if not st then
    errors.raise { kind = "config", code = "kubeconfig", message = string.format("%s: token file %s: no such file", self.cfg.source, path) }
  end
  local c = self.token_cache
  if force or not c or c.path ~= path or c.mtime ~= st.mtime or c.size ~= st.size then
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    c = { path = path, mtime = st.mtime, size = st.size, token = secret.wrap((text:gsub("%s+$", ""))) }
    self.token_cache = c
  end
  return c.token
end

-- The Authorization header value (a Secret) or nil; refresh after a 401.
-- Returns value, refreshable.
function Client:authorization(refresh)
  local auth = self.cfg.auth or {}
  if auth.exec then
    local cred = exec.credential(auth.exec, self.cfg, refresh)
    if cred.cert then
      self.exec_cert, self.exec_key = cred.cert, cred.key
    end
    if cred.token then return "Bearer " .. cred.token, true end
    return nil, true
  end
  if auth.token then return "Bearer " .. auth.token, false end
  if auth.token_file then return "Bearer " .. self:file_token(auth.token_file, refresh), true end
  if auth.basic then
    return "Basic " .. crypto.base64_encode(auth.basic.username .. ":" .. auth.basic.password), false
  end
  return nil, false
end

-- ---------------------------------------------------------------------------
-- errors

-- "get secrets "x" in namespace "y"" for messages
local function describe(req)
  local parts = { req.verb or req.method:lower() }
  if req.resource then parts[#parts + 1] = req.resource .. (req.subresource and ("/" .. req.subresource) or "") end
  if req.name then parts[#parts + 1] = string.format("%q", req.name) end
  local s = table.concat(parts, " ")
  if req.namespace then s = s .. string.format(" in namespace %q", req.namespace) end
  if not req.resource then s = s .. " " .. req.path end
  return s
end
M.describe = describe

local function snippet(body)
  local s = host.scrub(body or ""):gsub("%s+", " ")
  if #s > 200 then s = s:sub(1, 200) .. "..." end
  return s
end

--- The structured error for a non-2xx response: {kind="k8s", code=<reason>,
--- status=<http code>, message=<Status.message>, details=<Status.details>}.
function Client:status_error(res, req)
  local st
  if (res.headers["content-type"] or ""):find("json", 1, true) then
    st = json.decode(res.body or "")
  end
  local reason, message, details
  if type(st) == "table" and st.kind == "Status" then
    reason = type(st.reason) == "string" and st.reason ~= "" and st.reason or nil
    message = type(st.message) == "string" and st.message or nil
    details = type(st.details) == "table" and st.details or nil
  end
  reason = reason or REASONS[res.status] or ("HTTP" .. res.status)
  message = message or string.format("the server responded with status %d to %s %s: %s", res.status,
    req.method, req.path, snippet(res.body))
  local auth = self.cfg.auth or {}
  if res.status == 401 then
    message = string.format("unauthorized: %s rejected the credentials of %s (%s) to %s: %s",
      self.server, self.cfg.who or "this client", auth.how or "no credentials", describe(req), message)
  elseif res.status == 403 then
    message = string.format("forbidden: %s may not %s on %s: %s",
      self.cfg.who or "this client", describe(req), self.server, message)
  end
  return errors.new {
    kind = "k8s", code = reason, status = res.status, message = message, details = details,
    request = req.method .. " " .. req.path, server = self.server,
  }
end

--- The structured error for a request that got no response.
function Client:transport_error(err, req)
  if err.kind ~= "http" then return err end -- interrupted, or the step's time limit
  local cause = err.details and err.details.cause or err.message
  local code, message = err.code, nil
  if err.code == "tls" then
    local ca = self.cfg.insecure and "" or (" (CA from " .. (self.cfg.ca_field and (self.cfg.source .. " " .. self.cfg.ca_field) or "the system's trust store") .. ")")
    message = string.format("TLS verification of the Kubernetes API server %s failed%s: %s", self.server, ca, cause)
  elseif err.code == "timeout" then
    message = string.format("the Kubernetes API server %s did not answer %s %s in time: %s", self.server, req.method, req.path, cause)
  else
    code = err.code == "reset" and "reset" or "unreachable"
    message = string.format("cannot reach the Kubernetes API server %s: %s", self.server, cause)
  end
  return errors.new { kind = "k8s", code = code, message = message,
    details = { curl = err.code, curl_code = err.details and err.details.curl_code }, request = req.method .. " " .. req.path, server = self.server }
end

-- ---------------------------------------------------------------------------
-- requests

--- Builds "/path?query" from a path and a query table (or string).
function M.with_query(path, query)
  if query == nil then return path end
  local q = query
  if type(query) == "table" then
    if next(query) == nil then return path end
    q = url.query(query)
  end
  if q == "" then return path end
  return path .. "?" .. q
end

local function should_retry(policy, status, errcode)
  if status == 429 or NOT_SENT[errcode] then return true end
  if policy == "once" or policy == "none" then return false end
  if status then return status >= 500 and status ~= 501 end
  return AMBIGUOUS[errcode] == true
end

--- Sends one request with credentials and retries.
--- req: method, path, query, body (string, Secret or table), content_type,
--- accept, on_data (streaming; on_retry is called before a request is sent
--- again, to drop what on_data got), timeout, raw (return any status),
--- policy ("safe" default for GET,
--- else "none"), verb, resource, subresource, namespace, name (for messages),
--- expect (a status, or a set of statuses that are not errors).
--- Returns res (res.json decoded when JSON, res.ambiguous when an earlier
--- attempt may have landed), or nil, err.
function Client:try(req)
  req.method = req.method or "GET"
  local path = M.with_query(req.path, req.query)
  local policy = req.policy or (req.method == "GET" and "safe" or "none")
  local body = req.body
  if type(body) == "table" then body = json.encode(body, { secrets = "reveal" }) end
  local attempts = (policy == "none") and 1 or (self.retries + 1)
  local refreshed, ambiguous = false, false
  local attempt = 0
  while true do
    attempt = attempt + 1
    local headers = { { "Accept", req.accept or "application/json" } }
    if body ~= nil then headers[#headers + 1] = { "Content-Type", req.content_type or "application/json" } end
    local authz, refreshable = self:authorization(refreshed == "now")
    if authz then headers[#headers + 1] = { "Authorization", authz } end
    local c = self:curl_for(req.on_data ~= nil)
    local res, err = c:request {
      method = req.method, url = self.server .. path, headers = headers, body = body,
      on_data = req.on_data, timeout = req.timeout or self.timeout,
    }
    if res and res.status == 401 and refreshable and not refreshed then
      refreshed = "now" -- run the exec plugin again / re-read the token file, once
      if req.on_retry then req.on_retry() end
    else
      if refreshed == "now" then refreshed = true end
      local status = res and res.status
      local errcode = err and err.code
      if err and err.kind ~= "http" then return nil, err end
      if err and err.code == "aborted" then return nil, err end -- on_data asked to stop
      local retryable = (status and (status == 429 or status >= 500)) or err
      if not retryable or attempt >= attempts or not should_retry(policy, status, errcode) then
        if err then return nil, self:transport_error(err, req) end
        res.ambiguous = ambiguous or nil
        res.attempts = attempt
        if req.raw then return res end
        if status >= 200 and status < 300 or (req.expect and req.expect[status]) then
          local ct = res.headers["content-type"] or ""
          if res.body and ct:find("json", 1, true) and res.body ~= "" then
            res.json = json.decode(res.body)
          end
          return res
        end
        local e = self:status_error(res, req)
        e.attempts = attempt
        e.ambiguous = ambiguous or nil
        return nil, e, res
      end
      if err and AMBIGUOUS[errcode] then ambiguous = true end
      if status and status >= 500 then ambiguous = true end
      local delay = backoffs.delay("exponential", self.retry_delay, attempt, self.max_delay)
      local why
      if status then
        local ra = retry_after(res.headers["retry-after"])
        if ra then delay = math.min(ra, self.max_retry_after) end
        why = string.format("%d %s", status, REASONS[status] or "")
      else
        why = err.code == "reset" and "connection dropped" or (err.code == "timeout" and "timed out" or "connection refused")
      end
      audit.log("warn", string.format("%s %s%s: %s; retrying in %g s (attempt %d of %d)",
        req.method, self.server, req.path, why, delay, attempt + 1, attempts))
      host.sleep(delay)
      if req.on_retry then req.on_retry() end -- a streamed body starts again
    end
  end
end

--- Several independent requests at once, on at most `concurrency` (8)
--- kept-alive connections (HTTP/2 streams where the server speaks it).
--- Returns, by index, {res=} or {err=} as try would. A request that gets a
--- 401, 429, 5xx or a transport error goes through try again, alone, with
--- its retry policy; streamed requests (on_data) are not accepted.
function Client:try_many(reqs, concurrency)
  local authz = self:authorization(false)
  local batch = {}
  for i, req in ipairs(reqs) do
    assert(req.on_data == nil, "try_many: streamed requests are not supported")
    req.method = req.method or "GET"
    local body = req.body
    if type(body) == "table" then body = json.encode(body, { secrets = "reveal" }) end
    local headers = { { "Accept", req.accept or "application/json" } }
    if body ~= nil then headers[#headers + 1] = { "Content-Type", req.content_type or "application/json" } end
    if authz then headers[#headers + 1] = { "Authorization", authz } end
    batch[i] = { method = req.method, url = self.server .. M.with_query(req.path, req.query), headers = headers,
      body = body, timeout = req.timeout or self.timeout }
  end
  local results, errs = self:curl_for(false):request_many(batch, concurrency or 8)
  local out = {}
  for i, req in ipairs(reqs) do
    local res = results[i]
    local status = res and res.status
    if not res or status == 401 or status == 429 or status >= 500 then
      if not res and errs[i] and errs[i].kind ~= "http" then
        out[i] = { err = errs[i] } -- interrupted or out of time: no retry
      else
        local r2, e2 = self:try(req)
        out[i] = { res = r2, err = e2 }
      end
    elseif status >= 200 and status < 300 or (req.expect and req.expect[status]) then
      res.attempts = 1
      local ct = res.headers["content-type"] or ""
      if res.body and ct:find("json", 1, true) and res.body ~= "" then res.json = json.decode(res.body) end
      out[i] = { res = res }
    else
      local e = self:status_error(res, req)
      e.attempts = 1
      out[i] = { err = e }
    end
  end
  return out
end

--- Like try, but raises the error.
function Client:request(req)
  local res, err = self:try(req)
  if not res then error(err, 0) end
  return res
end

-- ---------------------------------------------------------------------------
-- discovery and paths

-- Kinds whose group/version need no discovery walk to find.
M.DEFAULT_GV = {
  Pod = "v1", Service = "v1", ConfigMap = "v1", Secret = "v1", Namespace = "v1",
  PersistentVolumeClaim = "v1", PersistentVolume = "v1", ServiceAccount = "v1", Endpoints = "v1",
  Event = "v1", Node = "v1", LimitRange = "v1", ResourceQuota = "v1", ReplicationController = "v1",
  Deployment = "apps/v1", StatefulSet = "apps/v1", DaemonSet = "apps/v1", ReplicaSet = "apps/v1",
  ControllerRevision = "apps/v1", Job = "batch/v1", CronJob = "batch/v1",
  Ingress = "networking.k8s.io/v1", IngressClass = "networking.k8s.io/v1", NetworkPolicy = "networking.k8s.io/v1",
  Role = "rbac.authorization.k8s.io/v1", RoleBinding = "rbac.authorization.k8s.io/v1",
  ClusterRole = "rbac.authorization.k8s.io/v1", ClusterRoleBinding = "rbac.authorization.k8s.io/v1",
  HorizontalPodAutoscaler = "autoscaling/v2", PodDisruptionBudget = "policy/v1",
  StorageClass = "storage.k8s.io/v1", CustomResourceDefinition = "apiextensions.k8s.io/v1",
  PriorityClass = "scheduling.k8s.io/v1", Lease = "coordination.k8s.io/v1",
}

-- Cluster-scoped built-in kinds, for the offline fallback.
M.CLUSTER_SCOPED = {
  Namespace = true, Node = true, PersistentVolume = true, ClusterRole = true, ClusterRoleBinding = true,
  StorageClass = true, CustomResourceDefinition = true, PriorityClass = true, IngressClass = true,
  APIService = true, MutatingWebhookConfiguration = true, ValidatingWebhookConfiguration = true,
}

--- The plural resource name guessed from a kind, as apimachinery's
--- UnsafeGuessKindToResource: lowercase, then s -> ses, y -> ies, else +s.
---@param kind string
---@return string
function M.guess_plural(kind)
  local k = kind:lower()
  if k == "" then return k end
  if k:sub(-1) == "s" then return k .. "es" end
  if k:sub(-1) == "y" then return k:sub(1, -2) .. "ies" end
  return k .. "s"
end

--- "apps/v1" -> "apps", "v1"; "v1" -> "", "v1"
function M.split_gv(api_version)
  local g, ver = api_version:match("^([^/]+)/([^/]+)$")
  if g then return g, ver end
  return "", api_version
end

local function gv_path(api_version)
  local g, ver = M.split_gv(api_version)
  if g == "" then return "/api/" .. ver end
  return "/apis/" .. g .. "/" .. ver
end
M.gv_path = gv_path

-- Discovery caches live per server for the whole run, so a runbook that
-- connects in several steps asks once.
local discovery_cache = {}

function Client:disc()
  local d = discovery_cache[self.server]
  if not d then
    d = { gv = {}, fetched = {} }
    discovery_cache[self.server] = d
  end
  return d
end

--- Forgets discovery (after CRDs change); api_version limits it to one group version.
function Client:invalidate(api_version)
  if not api_version then
    discovery_cache[self.server] = nil
    return
  end
  local d = self:disc()
  d.gv[api_version] = nil
  d.groups = nil
end

-- The APIResourceList of one group version: a table of entries, false when
-- the server does not serve it, or "offline" when discovery is forbidden.
function Client:group_version(api_version, refresh)
  local d = self:disc()
  local e = d.gv[api_version]
  if e ~= nil and not refresh then return e end
  local res, err = self:try { method = "GET", path = gv_path(api_version), verb = "discover", expect = { [404] = true } }
  if not res then
    if err.kind == "k8s" and err.status == 403 then
      e = "offline"
    else
      error(err, 0)
    end
  elseif res.status == 404 then
    e = false
  else
    local list = res.json or {}
    e = { by_kind = {}, by_name = {}, subresources = {} }
    for _, r in ipairs(list.resources or {}) do
      local base, sub = r.name:match("^([^/]+)/(.+)$")
      if base then
        e.subresources[base] = e.subresources[base] or {}
        e.subresources[base][sub] = r
      else
        local info = { api_version = api_version, kind = r.kind, plural = r.name, namespaced = r.namespaced,
          verbs = r.verbs, singular = r.singularName, short_names = r.shortNames }
        info.group, info.version = M.split_gv(api_version)
        e.by_kind[r.kind] = info
        e.by_name[r.name:lower()] = info
        if r.singularName and r.singularName ~= "" then e.by_name[r.singularName:lower()] = info end
        for _, s in ipairs(r.shortNames or {}) do e.by_name[s:lower()] = info end
        e.by_name[r.kind:lower()] = e.by_name[r.kind:lower()] or info
      end
    end
    for base, subs in pairs(e.subresources) do
      if e.by_name[base] then e.by_name[base].subresources = subs end
    end
  end
  d.gv[api_version] = e
  return e
end

-- The preferred group versions the server serves (from /api and /apis).
function Client:preferred_versions()
  local d = self:disc()
  if d.groups then return d.groups end
  local out = {}
  local core = self:request { method = "GET", path = "/api", verb = "discover" }.json or {}
  for _, ver in ipairs(core.versions or {}) do out[#out + 1] = ver end
  local apis = self:request { method = "GET", path = "/apis", verb = "discover" }.json or {}
  for _, g in ipairs(apis.groups or {}) do
    local pv = g.preferredVersion and g.preferredVersion.groupVersion
    if pv then out[#out + 1] = pv end
    for _, ver in ipairs(g.versions or {}) do
      if ver.groupVersion ~= pv then out[#out + 1] = ver.groupVersion end
    end
  end
  d.groups = out
  return out
end

local function lookup(e, kind)
  return e.by_kind[kind] or e.by_name[kind:lower()]
end

--- The resource for an apiVersion and kind: {api_version, group, version,
--- kind, plural, namespaced, verbs, subresources}, or nil and a structured
--- error (kind "k8s", code "UnknownKind", details {api_version=, kind=}).
--- Without api_version, common kinds are found at once and others by
--- walking discovery. A kind missing from a cached list is looked up again
--- once (a CRD may have just been created).
local function unknown(api_version, kind, fmt, ...)
  return nil, errors.new { kind = "k8s", code = "UnknownKind", message = string.format(fmt, ...),
    details = { api_version = api_version, kind = kind } }
end

function Client:resource(api_version, kind)
  if type(kind) ~= "string" or kind == "" then return unknown(api_version, kind, "kind is missing") end
  if api_version == nil or api_version == "" then
    local gv = M.DEFAULT_GV[kind]
    if gv then return self:resource(gv, kind) end
    for _, cand in ipairs(self:preferred_versions()) do
      local e = self:group_version(cand)
      if type(e) == "table" and lookup(e, kind) then return lookup(e, kind) end
    end
    return unknown(nil, kind, "unknown kind %s (no group version served by %s has it)", kind, self.server)
  end
  local e = self:group_version(api_version)
  if e == "offline" then
    local g, ver = M.split_gv(api_version)
    return { api_version = api_version, group = g, version = ver, kind = kind, plural = M.guess_plural(kind),
      namespaced = not M.CLUSTER_SCOPED[kind], guessed = true }
  end
  local info = type(e) == "table" and lookup(e, kind) or nil
  if not info then
    e = self:group_version(api_version, true)
    info = type(e) == "table" and lookup(e, kind) or nil
  end
  if not info then
    if e == false then
      return unknown(api_version, kind, "unknown kind %s: apiVersion %s is not served by %s", kind, api_version, self.server)
    end
    return unknown(api_version, kind, "unknown kind %s in apiVersion %s (not served by %s)", kind, api_version, self.server)
  end
  return info
end

--- The URL path of a resource: /api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]].
function M.path(info, namespace, name, subresource)
  local p = gv_path(info.api_version)
  if info.namespaced and namespace then p = p .. "/namespaces/" .. url.encode(namespace) end
  p = p .. "/" .. info.plural
  if name then p = p .. "/" .. url.encode(name) end
  if subresource then p = p .. "/" .. subresource end
  return p
end

return M
