-- runbook.k8s._exec: exec credential plugins (client.authentication.k8s.io
-- v1 and v1beta1), as client-go runs them: the parent's environment plus
-- the plugin's env plus KUBERNETES_EXEC_INFO, stdout read as an
-- ExecCredential, the result cached until its expirationTimestamp and the
-- plugin run again when the server answers 401.
local json = require "runbook._json"
local proc = require "runbook._proc"
local host = require "runbook._host"
local crypto = require "runbook._crypto"
local errors = require "runbook.errors"
local secret = require "runbook.secret"

local M = {}

local API_VERSIONS = {
  ["client.authentication.k8s.io/v1"] = true,
  ["client.authentication.k8s.io/v1beta1"] = true,
}
local MODES = { Never = true, IfAvailable = true, Always = true }

local function v(x)
  if x == nil or json.is_null(x) then return nil end
  return x
end

--- Checks users[].user.exec as client-go's validation does; entry is the
--- kubeconfig entry ({file=, dir=}). Returns the normalized plugin config.
function M.validate(exec, entry, user)
  local where = string.format("kubeconfig %s: users[\"%s\"].user.exec", entry.file, user)
  if type(exec) ~= "table" then errors.raisef("config", "kubeconfig", "%s must be a mapping", where) end
  local api = v(exec.apiVersion)
  if not API_VERSIONS[api] then
    errors.raisef("config", "kubeconfig", "%s.apiVersion must be client.authentication.k8s.io/v1 or v1beta1, got %s", where, tostring(api))
  end
  local command = v(exec.command)
  if type(command) ~= "string" or command == "" then errors.raisef("config", "kubeconfig", "%s.command is missing", where) end
  -- a command with a slash is relative to the kubeconfig's folder
  if command:find("/", 1, true) and command:sub(1, 1) ~= "/" then
    command = entry.dir .. "/" .. command
  end
  local args = {}
  for i, a in ipairs(v(exec.args) or {}) do
    if type(a) ~= "string" then errors.raisef("config", "kubeconfig", "%s.args[%d] must be a string", where, i - 1) end
    args[#args + 1] = a
  end
  local env = {}
  for i, e in ipairs(v(exec.env) or {}) do
    if type(e) ~= "table" or type(v(e.name)) ~= "string" then
      errors.raisef("config", "kubeconfig", "%s.env[%d].name is missing", where, i - 1)
    end
    env[e.name] = tostring(v(e.value) or "")
  end
  local mode = v(exec.interactiveMode)
  if mode == nil then
    if api == "client.authentication.k8s.io/v1" then
      errors.raisef("config", "kubeconfig", "%s.interactiveMode must be specified for %s (Never, IfAvailable or Always)", where, api)
    end
    mode = "IfAvailable"
  elseif not MODES[mode] then
    errors.raisef("config", "kubeconfig", "%s.interactiveMode must be Never, IfAvailable or Always, got %s", where, tostring(mode))
  end
  return {
    api_version = api, command = command, args = args, env = env, interactive_mode = mode,
    provide_cluster_info = v(exec.provideClusterInfo) == true,
    install_hint = v(exec.installHint), where = where,
  }
end

-- RFC 3339 to epoch seconds (kept here too: the config spec tests it by this name)
M.parse_time = require("runbook._engine.rfc3339").parse

local cache = {} -- key -> {cred=, expires=}

local function cache_key(p, cfg)
  return crypto.sha256(table.concat({ p.api_version, p.command, table.concat(p.args, "\0"),
    json.encode(p.env), cfg.server or "" }, "\n"))
end

local function exec_info(p, cfg, interactive)
  local spec = { interactive = interactive }
  if p.provide_cluster_info then
    local cl = { server = cfg.server }
    -- client-go loads a certificate-authority file into CAData before
    -- building the plugin's cluster info, so the plugin gets the bytes either way
    local ca = cfg.ca_data
    if not ca and cfg.ca_file then
      local f = io.open(cfg.ca_file, "rb")
      if f then ca = f:read("a"); f:close() end
    end
    if ca then cl["certificate-authority-data"] = crypto.base64_encode(ca) end
    if cfg.insecure then cl["insecure-skip-tls-verify"] = true end
    if cfg.tls_server_name then cl["tls-server-name"] = cfg.tls_server_name end
    if cfg.proxy then cl["proxy-url"] = cfg.proxy end
    if cfg.exec_cluster_config ~= nil then cl.config = cfg.exec_cluster_config end
    spec.cluster = cl
  end
  return json.encode { kind = "ExecCredential", apiVersion = p.api_version, spec = spec }
end

local function snippet(s)
  s = host.scrub(s or ""):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #s > 300 then s = s:sub(1, 300) .. "..." end
  return s
end

-- Runs the plugin and returns {token=Secret|nil, cert=string|nil, key=Secret|nil, expires=epoch|nil}.
local function run(p, cfg)
  local interactive = p.interactive_mode == "Always"
    or (p.interactive_mode == "IfAvailable" and host.isatty(0))
  if p.interactive_mode == "Always" and not host.isatty(0) then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s needs a terminal (interactiveMode: Always) and there is none",
      p.where, p.command)
  end
  local env = {}
  for k, val in pairs(p.env) do env[k] = val end
  env.KUBERNETES_EXEC_INFO = exec_info(p, cfg, interactive)
  local argv = { p.command }
  for _, a in ipairs(p.args) do argv[#argv + 1] = a end
  local child, err = proc.spawn { argv = argv, env = env, stdin = interactive and "inherit" or "null",
    stdout = "pipe", stderr = interactive and "inherit" or "pipe" }
  if not child then
    local hint = p.install_hint and (" (" .. p.install_hint:gsub("%s+", " ") .. ")") or ""
    errors.raisef("k8s", "exec-plugin", "%s: cannot run exec plugin %s: %s%s", p.where, p.command, err, hint)
  end
  local r = child:communicate { timeout = 120, grace = 2 }
  if r.interrupted then errors.raise { kind = "interrupted", message = "interrupted" } end
  if r.timed_out then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s did not finish within 120 s", p.where, p.command)
  end
  if r.code ~= 0 then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s failed (exit %s): %s", p.where, p.command,
      tostring(r.code or ("signal " .. tostring(r.signal))), snippet(r.stderr))
  end
  local cred, jerr = json.decode(r.stdout or "")
  if type(cred) ~= "table" then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s printed no ExecCredential JSON (%s)", p.where, p.command, tostring(jerr))
  end
  if v(cred.kind) ~= "ExecCredential" or v(cred.apiVersion) ~= p.api_version then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s answered %s %s, expected ExecCredential %s", p.where, p.command,
      tostring(v(cred.apiVersion)), tostring(v(cred.kind)), p.api_version)
  end
  local status = v(cred.status)
  if type(status) ~= "table" then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s returned no status", p.where, p.command)
  end
  local out = {}
  local tok = v(status.token)
  if type(tok) == "string" and tok ~= "" then out.token = secret.wrap(tok) end
  local cert, key = v(status.clientCertificateData), v(status.clientKeyData)
  if (cert ~= nil) ~= (key ~= nil) then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s returned only one of clientCertificateData and clientKeyData", p.where, p.command)
  end
  if cert then
    out.cert = tostring(cert)
    out.key = secret.wrap(tostring(key))
  end
  if not out.token and not out.cert then
    errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s returned neither a token nor a client certificate and key", p.where, p.command)
  end
  local exp = v(status.expirationTimestamp)
  if exp ~= nil then
    out.expires = M.parse_time(exp)
    if not out.expires then
      errors.raisef("k8s", "exec-plugin", "%s: exec plugin %s returned an expirationTimestamp that is not RFC 3339: %s", p.where, p.command, tostring(exp))
    end
  end
  return out
end

--- The plugin's credential, from the cache while it has not expired.
--- refresh = true runs the plugin again (after a 401).
function M.credential(p, cfg, refresh)
  local key = cache_key(p, cfg)
  local c = cache[key]
  if c and not refresh and (c.expires == nil or c.expires > host.now() + 5) then
    return c, false
  end
  c = run(p, cfg)
  cache[key] = c
  return c, true
end

--- Forgets every cached credential (for tests).
function M.clear_cache() cache = {} end

return M
