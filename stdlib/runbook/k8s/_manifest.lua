-- runbook.k8s._manifest: manifests from Lua tables, YAML text, files and
-- folders (multi-document), with an opt-in ${VAR} / ${VAR:-default}
-- substitution (a missing variable is an error), checked before anything
-- is sent, and put in the order a cluster needs them: Namespaces, then
-- CRDs, then what others refer to (accounts, Secrets, ConfigMaps,
-- claims), Services, workloads, and custom resources last, once their
-- CRDs are established.
local json = require "runbook._json"
local fs = require "runbook._fs"
local yaml = require "runbook._yaml"
local errors = require "runbook.errors"
local secret = require "runbook.secret"

local M = {}

local function v(x)
  if x == nil or json.is_null(x) then return nil end
  return x
end

-- ---------------------------------------------------------------------------
-- ${VAR} substitution

local function lookup(vars, name)
  if type(vars) == "function" then return vars(name) end
  return vars[name]
end

--- Replaces ${VAR} and ${VAR:-default} in text; $${ stays a literal ${.
--- vars: a table or a function(name). where: for messages ("k8s/a.yaml").
---@param text string
---@param vars table|fun(name:string):any
---@param where string
---@return string
function M.substitute(text, vars, where)
  local out = {}
  local pos, line = 1, 1
  while true do
    local s = text:find("$", pos, true)
    if not s then break end
    out[#out + 1] = text:sub(pos, s - 1)
    local _, nl = text:sub(pos, s - 1):gsub("\n", "")
    line = line + nl
    if text:sub(s, s + 2) == "$${" then
      out[#out + 1] = "${"
      pos = s + 3
    elseif text:sub(s + 1, s + 1) == "{" then
      local close = text:find("}", s + 2, true)
      local expr = close and text:sub(s + 2, close - 1)
      local name, default = (expr or ""):match("^([%a_][%w_]*):%-(.*)$")
      if not name then name = (expr or ""):match("^([%a_][%w_]*)$") end
      if not name then
        errors.raisef("config", "manifest", "%s line %d: ${%s is not a valid variable reference (use ${NAME} or ${NAME:-default})",
          where, line, (expr or text:sub(s + 2, s + 20)) .. (close and "}" or ""))
      end
      local val = lookup(vars, name)
      if val == nil or val == "" then val = default end
      if val == nil then
        errors.raisef("config", "manifest", "%s line %d: ${%s} is not set (pass it in vars, or write ${%s:-default})", where, line, name, name)
      end
      if secret.is(val) then
        errors.raisef("config", "manifest", "%s line %d: ${%s} is a secret value; manifests are not secret, put it in a Secret (cluster:secret) instead",
          where, line, name)
      end
      out[#out + 1] = tostring(val)
      pos = close + 1
    else
      out[#out + 1] = "$"
      pos = s + 1
    end
  end
  out[#out + 1] = text:sub(pos)
  return table.concat(out)
end

local function substitute_tree(x, vars, where)
  if type(x) == "string" then return M.substitute(x, vars, where) end
  if type(x) ~= "table" or json.is_null(x) then return x end
  local out = {}
  for k, val in pairs(x) do out[k] = substitute_tree(val, vars, where) end
  return setmetatable(out, getmetatable(x))
end

-- ---------------------------------------------------------------------------
-- loading

local function parse_yaml(text, where)
  local docs, err
  if yaml.load then
    docs, err = yaml.load(text)
  elseif text:match("^%s*[%[{]") then
    local one
    one, err = json.decode(text)
    docs = one ~= nil and { one } or nil
  else
    err = "YAML support (runbook._yaml) is not built into this runbook binary"
  end
  if not docs then errors.raisef("config", "manifest", "%s: not valid YAML: %s", where, tostring(err)) end
  return docs
end

local function is_object(t)
  return type(t) == "table" and (t.kind ~= nil or t.apiVersion ~= nil or t.metadata ~= nil)
end

-- Adds the documents of one parsed source, expanding kind: List.
local function add_docs(out, docs, file)
  for i, doc in ipairs(docs) do
    doc = v(doc)
    if doc ~= nil then
      if type(doc) ~= "table" then
        errors.raisef("config", "manifest", "%s document %d: expected a mapping, got %s", file, i, type(doc))
      end
      if doc.kind == "List" or (type(doc.kind) == "string" and doc.kind:match("List$") and type(v(doc.items)) == "table") then
        for j, item in ipairs(doc.items or {}) do
          out[#out + 1] = { obj = item, file = file, index = i, item = j }
        end
      else
        out[#out + 1] = { obj = doc, file = file, index = i }
      end
    end
  end
end

local EXTS = { yaml = true, yml = true, json = true }

local function files_of(dir, recursive, out)
  local names = fs.listdir(dir)
  if not names then errors.raisef("config", "manifest", "%s: cannot list the folder", dir) end
  table.sort(names)
  for _, n in ipairs(names) do
    local p = dir .. "/" .. n
    local st = fs.stat(p)
    if st and st.type == "directory" then
      if recursive then files_of(p, recursive, out) end
    elseif EXTS[(n:match("%.([%w]+)$") or ""):lower()] and n:sub(1, 1) ~= "." then
      out[#out + 1] = p
    end
  end
  return out
end

local function load_file(out, path, opts)
  local f, err = io.open(path, "rb")
  if not f then errors.raisef("config", "manifest", "%s: cannot read: %s", path, tostring(err)) end
  local text = f:read("a")
  f:close()
  if opts.vars then text = M.substitute(text, opts.vars, path) end
  add_docs(out, parse_yaml(text, path), path)
end

local function load_string(out, s, opts, label)
  if s:find("\n", 1, true) or s:match("^%s*[%[{]") or s:match("^%s*apiVersion:") then
    if opts.vars then s = M.substitute(s, opts.vars, label) end
    add_docs(out, parse_yaml(s, label), label)
    return
  end
  local st = fs.stat(s)
  if not st then errors.raisef("config", "manifest", "%s: no such file or folder", s) end
  if st.type == "directory" then
    local files = files_of(s, opts.recursive, {})
    if #files == 0 then errors.raisef("config", "manifest", "%s: no .yaml, .yml or .json files in the folder", s) end
    for _, p in ipairs(files) do load_file(out, p, opts) end
  else
    load_file(out, s, opts)
  end
end

--- Loads manifests. source: an object table, a list of objects and/or
--- sources, YAML text, or a path to a file or folder (.yaml, .yml, .json;
--- opts.recursive for subfolders). opts.vars (table or function) turns on
--- ${VAR} substitution. Returns a list of {obj=, file=, index=}; each is
--- checked for apiVersion, kind and metadata.name.
---@param source table|string
---@param opts {vars:table|function|nil, recursive:boolean|nil}|nil
---@return {obj:table, file:string, index:integer}[]
function M.load(source, opts)
  opts = opts or {}
  local out = {}
  local function walk(src, label)
    if type(src) == "string" then
      load_string(out, src, opts, label)
    elseif is_object(src) then
      out[#out + 1] = { obj = opts.vars and substitute_tree(src, opts.vars, label) or src, file = label, index = 1 }
    elseif type(src) == "table" then
      for i, item in ipairs(src) do
        if type(item) == "string" then
          walk(item, "manifest text #" .. i)
        else
          walk(item, "manifest table #" .. i)
        end
      end
    else
      error("manifests: expected a table, YAML text or a path, got " .. type(src), 3)
    end
  end
  walk(source, type(source) == "string" and "manifest text" or "manifest table")
  for _, d in ipairs(out) do M.check(d) end
  return out
end

--- Where a document came from, for messages.
function M.where(d)
  if d.item then return string.format("%s document %d item %d", d.file, d.index, d.item) end
  if d.file:match("^manifest table") then return d.file end
  return string.format("%s document %d", d.file, d.index)
end

--- Checks a document has what every object needs.
function M.check(d)
  local o = d.obj
  local where = M.where(d)
  if type(v(o.apiVersion)) ~= "string" or o.apiVersion == "" then errors.raisef("config", "manifest", "%s: apiVersion is missing", where) end
  if type(v(o.kind)) ~= "string" or o.kind == "" then errors.raisef("config", "manifest", "%s: kind is missing", where) end
  local m = v(o.metadata)
  if type(m) ~= "table" or type(v(m.name)) ~= "string" or m.name == "" then
    errors.raisef("config", "manifest", "%s: metadata.name is missing (%s %s)", where, o.apiVersion, o.kind)
  end
end

-- ---------------------------------------------------------------------------
-- ordering

local TIER = {
  Namespace = 1,
  CustomResourceDefinition = 2,
  PriorityClass = 3, StorageClass = 3, PersistentVolume = 3, ClusterRole = 3, ClusterRoleBinding = 3,
  IngressClass = 3, ResourceQuota = 4, LimitRange = 4, NetworkPolicy = 4, PodSecurityPolicy = 4,
  ServiceAccount = 5, Secret = 5, ConfigMap = 5, Role = 5, RoleBinding = 5, PersistentVolumeClaim = 5,
  PodDisruptionBudget = 6, Service = 6, Endpoints = 6,
  DaemonSet = 7, Pod = 7, ReplicationController = 7, ReplicaSet = 7, Deployment = 7, StatefulSet = 7,
  HorizontalPodAutoscaler = 8, Job = 8, CronJob = 8, Ingress = 9, APIService = 9,
  MutatingWebhookConfiguration = 10, ValidatingWebhookConfiguration = 10,
}
M.TIER = TIER
local CUSTOM = 11

--- The tier of a document: built-in kinds by TIER, other kinds of built-in
--- groups with the workloads, custom resources last.
function M.tier(obj)
  local t = TIER[obj.kind]
  if t then
    -- a same-named kind of a custom group is a custom resource
    local group = obj.apiVersion:match("^([^/]+)/") or ""
    if group == "" or group:match("k8s%.io$") or not group:find(".", 1, true) then return t end
  end
  local group = obj.apiVersion:match("^([^/]+)/") or ""
  if group == "" or group:match("k8s%.io$") or not group:find(".", 1, true) then return 7 end
  return CUSTOM
end

--- Sorts documents by tier, keeping their given order within a tier.
---@param docs {obj:table}[]
---@return {obj:table}[]
function M.order(docs)
  for i, d in ipairs(docs) do d.pos = i end
  table.sort(docs, function(a, b)
    local ta, tb = M.tier(a.obj), M.tier(b.obj)
    if ta ~= tb then return ta < tb end
    return a.pos < b.pos
  end)
  return docs
end

--- The kinds a CRD defines: {api_version = "g/v", kind = "K"} for each served version.
function M.crd_kinds(crd)
  local spec = v(crd.spec) or {}
  local group, names = v(spec.group), v(spec.names) or {}
  local out = {}
  if not group or not v(names.kind) then return out end
  for _, ver in ipairs(v(spec.versions) or {}) do
    if v(ver.served) ~= false and v(ver.name) then
      out[#out + 1] = { api_version = group .. "/" .. ver.name, kind = names.kind }
    end
  end
  return out
end

return M
