-- runbook.k8s._config: where a cluster is and who we are to it, read the way
-- kubectl reads it (client-go's clientcmd): KUBECONFIG as a list of files
-- merged with "the first file to set a name or a field wins", else
-- ~/.kube/config; the current or a named context; clusters with a CA (data
-- or file) and insecure-skip-tls-verify only when the file says so; users
-- with a token, a token file, a client certificate and key, basic auth or
-- an exec credential plugin; and the in-cluster service account.
--
-- Everything wrong with the configuration raises a kind = "config" error
-- whose message is one line naming the file and the field.
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local fs = require "runbook._fs"
local yaml = require "runbook._yaml"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local secret = require "runbook.secret"

local M = {}

M.SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

-- YAML and JSON nulls read as absent
local function v(x)
  if x == nil or json.is_null(x) then return nil end
  return x
end
M.value = v

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function absolute(path, base)
  if path:sub(1, 1) == "/" then return path end
  if path:sub(1, 2) == "~/" then
    return (os.getenv("HOME") or "") .. path:sub(2)
  end
  return (base or fs.cwd()) .. "/" .. path
end
M.absolute = absolute

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

-- Parses YAML (or JSON, which is YAML) into its one document.
function M.parse(text, name)
  if text:match("^%s*$") then return {} end
  local doc, err
  if yaml.load then
    local docs
    docs, err = yaml.load(text)
    if docs then doc = docs[1] end
  else
    doc, err = json.decode(text)
  end
  if err ~= nil or (doc ~= nil and type(doc) ~= "table") then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: not valid YAML: %s", name, tostring(err or ("a " .. type(doc) .. " instead of a mapping")))
  end
  return doc or {}
end

-- ---------------------------------------------------------------------------
-- loading and merging

-- The files to read: opts.kubeconfig (a path or a list; each must exist),
-- else $KUBECONFIG (colon-separated; missing ones are skipped, as kubectl
-- does), else ~/.kube/config.
local function kubeconfig_files(opts, getenv)
  local explicit = opts.kubeconfig
  if explicit then
    local list = type(explicit) == "table" and explicit or { explicit }
    local out = {}
    for _, p in ipairs(list) do
      local abs = absolute(p)
      if not fs.stat(abs) then errors.raisef("config", "kubeconfig", "kubeconfig %s: no such file", p) end
      out[#out + 1] = abs
    end
    return out, true
  end
  local env = getenv("KUBECONFIG")
  local out, seen = {}, {}
  if env and env ~= "" then
    for p in env:gmatch("[^:]+") do
      local abs = absolute(p)
      if not seen[abs] and fs.stat(abs) then
        seen[abs] = true
        out[#out + 1] = abs
      end
    end
    return out, false, "KUBECONFIG=" .. env
  end
  local home = getenv("HOME")
  if home and fs.stat(home .. "/.kube/config") then
    return { home .. "/.kube/config" }, false
  end
  return {}, false, (home or "~") .. "/.kube/config"
end

local SECTIONS = { clusters = "cluster", users = "user", contexts = "context" }

-- Merges the files: a named entry comes whole from the first file that has
-- it (and remembers that file, against which its relative paths resolve);
-- current-context comes from the first file that sets it.
function M.merge(files)
  local merged = { clusters = {}, users = {}, contexts = {}, files = files }
  for _, path in ipairs(files) do
    local text, err = read_file(path)
    if not text then errors.raisef("config", "kubeconfig", "kubeconfig %s: cannot read: %s", path, err) end
    local doc = M.parse(text, path)
    for section, field in pairs(SECTIONS) do
      local list = v(doc[section])
      if list ~= nil and type(list) ~= "table" then
        errors.raisef("config", "kubeconfig", "kubeconfig %s: %s must be a list", path, section)
      end
      for i, entry in ipairs(list or {}) do
        local name = type(entry) == "table" and v(entry.name)
        if type(name) ~= "string" or name == "" then
          errors.raisef("config", "kubeconfig", "kubeconfig %s: %s[%d].name is missing", path, section, i - 1)
        end
        if not merged[section][name] then
          local body = v(entry[field])
          if body ~= nil and type(body) ~= "table" then
            errors.raisef("config", "kubeconfig", "kubeconfig %s: %s[\"%s\"].%s must be a mapping", path, section, name, field)
          end
          merged[section][name] = { body = body or {}, file = path, dir = dirname(path) }
        end
      end
    end
    local cur = v(doc["current-context"])
    if merged.current_context == nil and type(cur) == "string" and cur ~= "" then
      merged.current_context = cur
      merged.current_file = path
    end
  end
  return merged
end

local function names(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return #out > 0 and table.concat(out, ", ") or "none"
end

-- ---------------------------------------------------------------------------
-- clusters and users

local function field_path(section, name, field)
  return string.format("%s[\"%s\"].%s", section, name, field)
end

local function decode_b64(entry, section, name, field)
  local raw = v(entry.body[field])
  if raw == nil then return nil end
  if type(raw) ~= "string" then errors.raisef("config", "kubeconfig", "kubeconfig %s: %s must be a string", entry.file, field_path(section, name, field)) end
  local out = crypto.base64_decode((raw:gsub("%s+", "")))
  if not out then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s is not valid base64", entry.file, field_path(section, name, field))
  end
  return out
end

local function file_field(entry, section, name, field)
  local p = v(entry.body[field])
  if p == nil then return nil end
  if type(p) ~= "string" or p == "" then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s must be a path", entry.file, field_path(section, name, field))
  end
  local abs = absolute(p, entry.dir)
  if not fs.stat(abs) then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s: %s: no such file", entry.file, field_path(section, name, field), abs)
  end
  return abs
end

local function truthy(x)
  x = v(x)
  return x == true or x == "true"
end

-- cluster: server, CA, TLS options
local function cluster_config(cfg, entry, name)
  local c = entry.body
  local server = v(c.server)
  if type(server) ~= "string" or server == "" then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s is missing", entry.file, field_path("clusters", name, "server"))
  end
  if not server:match("^https?://[^/]") then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s must be an https:// URL, got %q", entry.file, field_path("clusters", name, "server"), server)
  end
  cfg.server = server:gsub("/+$", "")
  cfg.cluster_name = name
  cfg.ca_file = file_field(entry, "clusters", name, "certificate-authority")
  cfg.ca_data = decode_b64(entry, "clusters", name, "certificate-authority-data")
  cfg.ca_field = (cfg.ca_data and field_path("clusters", name, "certificate-authority-data"))
    or (cfg.ca_file and field_path("clusters", name, "certificate-authority"))
  if truthy(c["insecure-skip-tls-verify"]) then
    if cfg.ca_file or cfg.ca_data then
      errors.raisef("config", "kubeconfig", "kubeconfig %s: %s: specifying a root certificates file with the insecure flag is not allowed",
        entry.file, field_path("clusters", name, "insecure-skip-tls-verify"))
    end
    cfg.insecure = true
  end
  -- the name the certificate is verified against (and the SNI), while the
  -- connection goes to the host of server, as client-go's TLSClientConfig.ServerName
  local sn = v(c["tls-server-name"])
  if sn ~= nil then
    if type(sn) ~= "string" or sn == "" or sn:find("[/:@%[%]?#%s]") then
      errors.raisef("config", "kubeconfig", "kubeconfig %s: %s must be a host name or an IPv4 address, got %q", entry.file,
        field_path("clusters", name, "tls-server-name"), tostring(sn))
    end
    cfg.tls_server_name = sn
  end
  local proxy = v(c["proxy-url"])
  if proxy ~= nil then cfg.proxy = tostring(proxy) end
  local ext = v(c.extensions)
  for _, e in ipairs(type(ext) == "table" and ext or {}) do
    if type(e) == "table" and v(e.name) == "client.authentication.k8s.io/exec" then
      cfg.exec_cluster_config = v(e.extension)
    end
  end
  cfg.cluster_raw = c
end

local function user_config(cfg, entry, name)
  local u = entry.body
  local auth = { user = name, file = entry.file }
  local token = v(u.token)
  if token ~= nil then
    if type(token) ~= "string" then errors.raisef("config", "kubeconfig", "kubeconfig %s: %s must be a string", entry.file, field_path("users", name, "token")) end
    auth.token = secret.wrap(token)
    auth.how = "bearer token"
  end
  local tf = file_field(entry, "users", name, "tokenFile")
  if tf then
    auth.token_file = tf
    auth.how = auth.how or ("bearer token from " .. tf)
  end
  cfg.cert_file = file_field(entry, "users", name, "client-certificate")
  cfg.key_file = file_field(entry, "users", name, "client-key")
  cfg.cert_data = decode_b64(entry, "users", name, "client-certificate-data")
  local key = decode_b64(entry, "users", name, "client-key-data")
  if key then cfg.key_data = secret.wrap(key) end
  local has_cert = cfg.cert_file or cfg.cert_data
  local has_key = cfg.key_file or cfg.key_data
  if has_cert and not has_key then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s has a client certificate but no client-key or client-key-data", entry.file, field_path("users", name, "user"))
  elseif has_key and not has_cert then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s has a client key but no client-certificate or client-certificate-data", entry.file, field_path("users", name, "user"))
  end
  if has_cert then auth.how = auth.how or "client certificate" end
  local username, password = v(u.username), v(u.password)
  if username ~= nil or password ~= nil then
    auth.basic = { username = tostring(username or ""), password = secret.wrap(tostring(password or "")) }
    auth.how = auth.how or ("basic auth as " .. tostring(username))
  end
  local exec = v(u.exec)
  if exec ~= nil then
    auth.exec = require("runbook.k8s._exec").validate(exec, entry, name)
    auth.how = auth.how or ("exec plugin " .. auth.exec.command)
  end
  local ap = v(u["auth-provider"])
  if ap ~= nil then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s (%s) is not supported; use an exec credential plugin instead",
      entry.file, field_path("users", name, "auth-provider"), tostring(type(ap) == "table" and v(ap.name) or "?"))
  end
  auth.how = auth.how or "no credentials"
  cfg.auth = auth
end

-- ---------------------------------------------------------------------------
-- in-cluster

--- The in-cluster configuration (a pod's service account), as client-go's
--- InClusterConfig: server from KUBERNETES_SERVICE_HOST/PORT, token (re-read
--- from its file), CA, namespace from POD_NAMESPACE or the namespace file.
---@param opts table|nil  {dir=, env=}: the service account folder and an env lookup (for tests)
function M.in_cluster(opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local dir = opts.dir or M.SA_DIR
  local host, port = getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
  if not host or host == "" or not port or port == "" then
    errors.raisef("config", "kubeconfig", "in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (not running in a pod?)")
  end
  local token_file = dir .. "/token"
  if not fs.stat(token_file) then errors.raisef("config", "kubeconfig", "in-cluster configuration: %s: no such file", token_file) end
  local ca = dir .. "/ca.crt"
  if not fs.stat(ca) then errors.raisef("config", "kubeconfig", "in-cluster configuration: %s: no such file", ca) end
  local ns = getenv("POD_NAMESPACE")
  if not ns or ns == "" then
    local text = read_file(dir .. "/namespace")
    ns = text and text:match("^%s*(.-)%s*$") or ""
    if ns == "" then ns = "default" end
  end
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  return {
    server = "https://" .. host .. ":" .. port,
    ca_file = ca, ca_field = ca,
    namespace = ns,
    source = "in-cluster service account (" .. dir .. ")",
    auth = { token_file = token_file, how = "service account token from " .. token_file, user = "serviceaccount", in_cluster = true },
    who = "the pod's service account",
  }
end

-- ---------------------------------------------------------------------------
-- the public entry

--- Resolves the configuration of one connection.
--- opts: kubeconfig (path or list), context, namespace, cluster, user,
--- in_cluster (true, or {dir=} for tests), getenv (for tests).
---@return table cfg
---@param opts table|nil
function M.load(opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  if opts.in_cluster then
    local ic = M.in_cluster { dir = type(opts.in_cluster) == "table" and opts.in_cluster.dir or nil, getenv = getenv }
    if opts.namespace then ic.namespace = opts.namespace end
    return ic
  end
  local files, explicit, where = kubeconfig_files(opts, getenv)
  if #files == 0 then
    if not explicit and (getenv("KUBERNETES_SERVICE_HOST") or "") ~= "" then
      return M.load { in_cluster = true, namespace = opts.namespace, getenv = getenv }
    end
    errors.raisef("config", "kubeconfig", "no kubeconfig: %s does not exist; pass kubeconfig= or set KUBECONFIG", where)
  end
  local merged = M.merge(files)
  local source = table.concat(files, ":")
  local ctx_name = opts.context or merged.current_context
  if not ctx_name then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: current-context is not set; pass context= (contexts: %s)", source, names(merged.contexts))
  end
  local ctx = merged.contexts[ctx_name]
  if not ctx then
    local where_from = opts.context and "context" or ("current-context (" .. (merged.current_file or source) .. ")")
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s %q not found (contexts: %s)", source, where_from, ctx_name, names(merged.contexts))
  end
  local cluster_name = opts.cluster or v(ctx.body.cluster)
  if type(cluster_name) ~= "string" or cluster_name == "" then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s is missing", ctx.file, field_path("contexts", ctx_name, "cluster"))
  end
  local cl = merged.clusters[cluster_name]
  if not cl then
    errors.raisef("config", "kubeconfig", "kubeconfig %s: %s refers to cluster %q, which is not in clusters (%s)", ctx.file,
      field_path("contexts", ctx_name, "cluster"), cluster_name, names(merged.clusters))
  end
  local cfg = { context = ctx_name, source = "kubeconfig " .. source, files = files }
  cluster_config(cfg, cl, cluster_name)
  local user_name = opts.user or v(ctx.body.user)
  if user_name ~= nil and user_name ~= "" then
    local ue = merged.users[user_name]
    if not ue then
      errors.raisef("config", "kubeconfig", "kubeconfig %s: %s refers to user %q, which is not in users (%s)", ctx.file,
        field_path("contexts", ctx_name, "user"), user_name, names(merged.users))
    end
    cfg.user_name = user_name
    user_config(cfg, ue, user_name)
  else
    cfg.auth = { how = "no credentials" }
  end
  local ns = opts.namespace or v(ctx.body.namespace)
  cfg.namespace = (type(ns) == "string" and ns ~= "") and ns or "default"
  cfg.who = string.format("kubeconfig user %q (context %q)", cfg.user_name or "", ctx_name)
  if cfg.insecure then
    audit.log("warn", string.format(
      "WARNING: kubeconfig %s: cluster %q sets insecure-skip-tls-verify: the certificate of %s is NOT verified, so anyone on the network path can impersonate the API server and read every credential and Secret sent to it",
      cl.file, cluster_name, cfg.server))
  end
  return cfg
end

return M
