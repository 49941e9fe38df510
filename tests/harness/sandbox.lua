-- The rehearsal sandbox: local stand-ins for everything the shipped
-- runbooks touch, started as daemons in one folder and stopped by the pids
-- recorded there. scripts/sandbox.sh (through sandbox_main.lua), the demo and
-- the runbooks' e2e specs all use this one module.
--
--   local sandbox = require "sandbox"
--   local sb = sandbox.up(dir)            -- or up(dir, { services = { "k8s", "https" } })
--   sb.fake                               -- the fake Kubernetes API (k8sfake.attach)
--   sb.https.tezca / .janua / .tessera    -- {base, port, token, host, url(path)}
--   sb.s3 {endpoint, access_key, secret_key}, sb.pg {port, url(db)}, sb.redis {url}
--   sb:env(), sb:values_file("first-deploy"), sb:exec(args), sb:rehearse("runbooks/x.lua")
--   sandbox.down(dir)
--
-- What runs (each a process of its own, recorded in DIR/sandbox.json):
--   pg       PostgreSQL 15 (initdb as the postgres user), role `sandbox`
--   redis    redis-server
--   s3       moto with SigV4 signatures checked (s3server.lua's bootstrap)
--   k8s      tests/k8s/fake_apiserver.py with its controllers
--   https    three tests/harness/httpserver.py: Tezca (web, api, admin), Janua, Tessera
--   argocd   this module's ArgoCD stand-in: an Application in namespace argocd
--            becomes the Deployments of DIR/argocd/<name>.json in its destination
-- and, in the folder: env (to source), kubeconfig, values/<runbook>.yaml,
-- hosts (the runbooks' host names on 127.0.0.1), bin/ (stubs for enclii, gh,
-- op, doctl and helm that log their argv to logs/cli.log, and a `runbook` that
-- resolves the host names through hosts in a private mount namespace).
local proc = require "runbook._proc"
local fs = require "runbook._fs"
local host = require "runbook._host"
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local rbtest = require "rbtest"
local k8sfake = require "k8sfake"
local httpserver = require "httpserver"
local s3server = require "s3server"
local stubs = require "sandbox.stubs"

local M = {}

M.SERVICES = { "pg", "redis", "s3", "k8s", "https", "argocd" }
M.PG_BIN = os.getenv("RUNBOOK_PG_BIN") or "/usr/lib/postgresql/15/bin"
M.STUBS = stubs.TOOLS

-- The stand-ins for the services' public names: each httpserver.py
-- instance answers for its service's names.
M.SITES = {
  tezca = { "tezca.mx", "www.tezca.mx", "api.tezca.mx", "admin.tezca.mx" },
  janua = { "api.janua.dev" },
  tessera = { "tessera.your-domain.com" },
}

-- One profile per shipped runbook (tests/harness/sandbox/<name>.lua): what
-- that runbook expects to find, seeded once the services run. A profile is
-- a table with `runbook` (the name of runbooks/NAME.lua) and any of:
--   namespaces      namespaces it lives in (created when the fake starts)
--   job_logs        {namespace, Job name prefix, logs} rules for the fake
--   seed_k8s(sb)    when the fake started (after the namespaces)
--   seed(sb, fresh) once moto and PostgreSQL answer; fresh.pg / fresh.s3
--                   say which of them this `up` started
--   env(sb, e)      adds the credentials the runbook reads to DIR/env
--   values(sb)      its params, written to DIR/values/<runbook>.yaml
--   players         the people its guide needs at manual steps (see M.PLAYERS)
-- and constants the specs read. Their constants are re-exported here.
M.PROFILES = {}
M.JOB_LOGS = {}
for _, name in ipairs { "tezca", "janua", "janua_production", "tessera", "bowmark", "drill", "ticolops" } do
  local p = require("sandbox." .. name)
  M.PROFILES[#M.PROFILES + 1] = p
  for k, v in pairs(p) do
    if k:match("^%u[%u%d_]*$") or k:match("^tezca_") or k:match("^bowmark_") then M[k] = v end
  end
  for _, rule in ipairs(p.job_logs or {}) do M.JOB_LOGS[#M.JOB_LOGS + 1] = rule end
end

-- ---------------------------------------------------------------------------
-- small helpers

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local function say(fmt, ...)
  io.stdout:write(string.format(fmt, ...) .. "\n")
  io.stdout:flush()
end
M.say = say

local function run(argv, opts)
  opts = opts or {}
  local p = assert(proc.spawn { argv = argv, cwd = opts.cwd, env = opts.env, stdin = opts.input and "pipe" or "null" })
  local r = p:communicate { input = opts.input, timeout = opts.timeout or 60 }
  if opts.check ~= false and r.code ~= 0 then
    fail("%s failed (%s): %s%s", table.concat(argv, " "), tostring(r.code or r.signal), r.stdout or "", r.stderr or "")
  end
  return r
end

local function read(path) return rbtest.read(path) end
local function write(path, text, mode) assert(fs.write_file(path, text, mode or 420)) end
local function exists(path) return fs.stat(path) ~= nil end
local function mkdir(path, mode) assert(fs.mkdir_p(path, mode or 493)) end

--- Polls fn until it returns a truthy value (returned), or raises after
--- timeout seconds naming what was awaited.
local function await(what, fn, timeout)
  local deadline = host.monotime() + (timeout or 30)
  while true do
    local v, why = fn()
    if v then return v end
    if host.monotime() > deadline then fail("timed out waiting for %s%s", what, why and (": " .. why) or "") end
    host.sleep(0.05)
  end
end
M.await = await

local function free_port() return rbtest.free_port() end

-- A daemon: argv with stdout and stderr appended to log, stdin from
-- /dev/null, in its own process group (so a Ctrl-C of the caller does not
-- reach it), not killed when the caller exits. Returns its pid.
local function daemon(argv, log, env)
  local full = { "sh", "-c", 'log=$1; shift; exec "$@" >>"$log" 2>&1 </dev/null', "sh", log }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local p = assert(proc.spawn { argv = full, env = env, stdout = "null", stderr = "null" })
  p:detach()
  return p:pid()
end

--- Is pid a live process whose command line contains marker?
function M.alive(pid, marker)
  if not pid then return false end
  local stat = read("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  if state == "Z" or state == "X" then return false end
  local cmd = (read("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
  return marker == nil or cmd:find(marker, 1, true) ~= nil
end

local function kill(pid, sig)
  run({ "kill", "-" .. sig, tostring(pid) }, { check = false })
end

local function ready_port(log, pid, marker, what)
  return await(what .. " to print READY", function()
    local port = (read(log) or ""):match("READY (%d+)")
    if port then return math.tointeger(tonumber(port)) end
    -- no marker here: while sh execs into the server its command line can read empty
    if not M.alive(pid) then fail("%s exited before it was ready; its log %s says:\n%s", what, log, read(log) or "") end
  end, 30)
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- ---------------------------------------------------------------------------
-- the sandbox object

local Sandbox = {}
Sandbox.__index = Sandbox

local function state_path(dir) return dir .. "/sandbox.json" end

function Sandbox:save()
  local t = {}
  for k, v in pairs(self) do
    if k ~= "fake" and k ~= "dir" and k ~= "started" and k ~= "kept" and k ~= "seconds" then t[k] = v end
  end
  write(state_path(self.dir), json.encode(t, { pretty = true }) .. "\n", 384)
end

local function load_state(dir)
  local text = read(state_path(dir))
  if not text then return nil end
  local sb = setmetatable(json.decode(text), Sandbox)
  sb.dir = dir
  sb.procs = sb.procs or {}
  return sb
end

local function new_state(dir)
  return setmetatable({ dir = dir, procs = {}, services = {}, https = {}, secrets = {} }, Sandbox)
end

--- The recorded process of a service, when it still runs.
function Sandbox:running(name)
  local p = self.procs[name]
  return p and M.alive(p.pid, p.marker) and p or nil
end

function Sandbox:record(name, pid, marker, extra)
  local p = { pid = pid, marker = marker }
  for k, v in pairs(extra or {}) do p[k] = v end
  self.procs[name] = p
  self:save()
  return p
end

local function absolute(dir)
  if dir:sub(1, 1) ~= "/" then dir = fs.cwd() .. "/" .. dir end
  return (dir:gsub("/+$", ""))
end

-- ---------------------------------------------------------------------------
-- the services

local function as_postgres(argv)
  local out = { "runuser", "-u", "postgres", "--" }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

-- A fresh initdb's data folder, kept once per user so the next sandbox
-- copies it (a fraction of initdb's time) instead of running initdb again.
local function pg_template()
  local root = (os.getenv("RUNBOOK_TEST_CACHE") or "/tmp/runbook-test-cache")
  return root, root .. "/pg15-initdb-" .. host.user()
end

-- initdb (as the postgres user when we are root: it refuses root), or a
-- copy of the kept one, in the background; start_pg waits for it
local function init_pg(sb)
  local dir = sb.dir .. "/pg"
  local data, sock, log = dir .. "/data", dir .. "/sock", dir .. "/postgres.log"
  if exists(data .. "/PG_VERSION") then return nil end
  local root = host.user() == "root"
  mkdir(dir, 493); assert(fs.chmod(dir, 493)) -- postgres must enter it
  mkdir(data, 448); mkdir(sock, 493)
  write(log, "")
  if root then run { "chown", "-R", "postgres:postgres", data, sock, log } end
  local _, template = pg_template()
  if exists(template .. "/PG_VERSION") then
    return assert(proc.spawn { argv = { "cp", "-a", template .. "/.", data } }), "copy"
  end
  local initdb = { M.PG_BIN .. "/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync",
    "--no-instructions", "-E", "UTF8", "--locale=C" }
  return assert(proc.spawn { argv = root and as_postgres(initdb) or initdb, cwd = dir }), "initdb"
end

-- keeps a fresh data folder as the template (written aside, then renamed:
-- two sandboxes starting at once cannot leave half a template)
local function keep_template(data)
  local parent, template = pg_template()
  if exists(template .. "/PG_VERSION") then return end
  mkdir(parent, 493)
  local tmp = template .. ".tmp-" .. crypto.random_hex(4)
  if run({ "cp", "-a", data, tmp }, { check = false }).code == 0 then
    -- rename(2): refused when another sandbox kept one first
    if run({ "mv", "-T", tmp, template }, { check = false }).code ~= 0 then run({ "rm", "-rf", tmp }, { check = false }) end
  else
    run({ "rm", "-rf", tmp }, { check = false })
  end
end

local function start_pg(sb, init, how)
  local dir = sb.dir .. "/pg"
  local data, sock, log = dir .. "/data", dir .. "/sock", dir .. "/postgres.log"
  local root = host.user() == "root"
  if init then
    local r = init:communicate { timeout = 120 }
    if r.code ~= 0 then fail("%s failed: %s%s", how, r.stdout or "", r.stderr or "") end
    if how == "initdb" then keep_template(data) end
    write(data .. "/pg_hba.conf", "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n", 384)
    if root then run { "chown", "postgres:postgres", data .. "/pg_hba.conf" } end
  end
  local port = (sb.services.pg and sb.services.pg.port) or free_port()
  local settings = table.concat({ "-c listen_addresses=127.0.0.1", "-c port=" .. port,
    "-c unix_socket_directories=" .. sock, "-c fsync=off", "-c synchronous_commit=off",
    "-c full_page_writes=off", "-c max_connections=50", "-c shared_buffers=64MB" }, " ")
  local ctl = { M.PG_BIN .. "/pg_ctl", "-D", data, "-l", log, "-w", "-t", "30", "-o", settings, "start" }
  run(root and as_postgres(ctl) or ctl, { cwd = dir })
  local pid = assert(math.tointeger(tonumber((read(data .. "/postmaster.pid") or ""):match("^(%d+)"))), "no postmaster.pid")
  if not sb.secrets.pg_password then sb.secrets.pg_password = crypto.random_hex(12) end
  sb.services.pg = { port = port, sock = sock, data = data, user = "sandbox" }
  sb:record("pg", pid, data, { pidfile = data .. "/postmaster.pid" })
  sb:psql(string.format("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sandbox') THEN "
    .. "CREATE ROLE sandbox LOGIN SUPERUSER; END IF; END $$; ALTER ROLE sandbox PASSWORD '%s'", sb.secrets.pg_password))
end

--- Runs SQL through psql as the superuser (a list: each its own
--- transaction); returns stdout.
function Sandbox:psql(sql, db)
  local pg = self.services.pg
  local argv = { "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", pg.sock, "-p", tostring(pg.port),
    "-U", "postgres", "-d", db or "postgres" }
  for _, q in ipairs(type(sql) == "table" and sql or { sql }) do argv[#argv + 1] = "-c"; argv[#argv + 1] = q end
  local r = run(argv)
  return (r.stdout:gsub("\n$", ""))
end

--- A connection URL of the sandbox role (password over TCP).
function Sandbox:pg_url(db)
  return string.format("postgres://sandbox:%s@127.0.0.1:%d/%s", self.secrets.pg_password, self.services.pg.port, db or "postgres")
end

local function spawn_redis(sb)
  local port = free_port()
  local dir = sb.dir .. "/redis"
  mkdir(dir)
  local pid = daemon({ "redis-server", "--port", tostring(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
    "--dir", dir, "--daemonize", "no" }, dir .. "/redis.log")
  sb.services.redis = { port = port, url = string.format("redis://127.0.0.1:%d/0", port) }
  -- redis-server rewrites its command line to "redis-server 127.0.0.1:PORT"
  sb:record("redis", pid, "127.0.0.1:" .. port)
end

local function await_redis(sb)
  local net = require "runbook._net"
  local port = sb.services.redis.port
  await("redis-server on port " .. port, function()
    if not M.alive(sb.procs.redis.pid) then fail("redis-server exited: %s", read(sb.dir .. "/redis/redis.log") or "") end
    return net.tcp_connect("127.0.0.1", port, 0.2)
  end, 10)
end

local function spawn_s3(sb)
  if not s3server.find() then fail("%s", s3server.MISSING) end
  local port = free_port()
  local dir = sb.dir .. "/s3"
  mkdir(dir)
  local argv, env = s3server.argv(port)
  local pid = daemon(argv, dir .. "/moto.log", env)
  sb.services.s3 = { port = port, endpoint = "http://127.0.0.1:" .. port, region = "us-east-1" }
  sb:record("s3", pid, "-p " .. port)
end

local function await_s3(sb)
  local s = sb.services.s3
  local ok, err = pcall(s3server.await, s.endpoint, function() return M.alive(sb.procs.s3.pid) end, 60)
  if not ok then fail("%s; its log %s/s3/moto.log says:\n%s", err, sb.dir, read(sb.dir .. "/s3/moto.log") or "") end
  s.access_key, s.secret_key = s3server.credentials(s.endpoint)
  sb:save()
end

local function spawn_k8s(sb)
  local dir = sb.dir .. "/k8s"
  local log = dir .. "/apiserver.log"
  write(log, "")
  -- the command line k8sfake.start uses
  local pid = daemon({ "python3", k8sfake.fake_dir() .. "/fake_apiserver.py", "--port", "0",
    "--cert", dir .. "/server.crt", "--key", dir .. "/server.key", "--client-ca", dir .. "/ca.crt",
    "--token", k8sfake.TOKEN, "--controller-delay", "0.05", "--log-interval", "0.02" }, log)
  sb:record("k8s", pid, dir .. "/server.crt", { log = log })
end

local function await_k8s(sb)
  local p = sb.procs.k8s
  local port = ready_port(p.log, p.pid, p.marker, "the fake Kubernetes API server")
  sb.services.k8s = { port = port, server = "https://127.0.0.1:" .. port, ca_file = sb.dir .. "/k8s/ca.crt" }
  sb:attach_k8s()
  sb.fake:write_kubeconfig { path = sb.dir .. "/kubeconfig", namespace = "default", context = "sandbox" }
  sb:save()
end

function Sandbox:attach_k8s()
  local k = self.services.k8s
  self.fake = k8sfake.attach { server = k.server, ca_file = k.ca_file, dir = self.dir .. "/k8s", token = k8sfake.TOKEN,
    port = k.port }
  return self.fake
end

--- A runbook.k8s client on the sandbox's cluster.
function Sandbox:cluster(namespace)
  return require("runbook.k8s").connect { kubeconfig = self.dir .. "/kubeconfig", namespace = namespace }
end

local function https_certs(sb)
  local dir = sb.dir .. "/https"
  if not exists(dir .. "/server.pem") then
    mkdir(dir, 448)
    local names = {}
    for _, site in ipairs { "tezca", "janua", "tessera" } do
      for _, n in ipairs(M.SITES[site]) do names[#names + 1] = n end
    end
    httpserver.certs(dir, names)
  end
end

local function spawn_https(sb, site)
  local dir = sb.dir .. "/https"
  local log = dir .. "/" .. site .. ".log"
  write(log, "")
  local key = "https_" .. site .. "_token"
  if not sb.secrets[key] then sb.secrets[key] = site .. "-" .. crypto.random_hex(16) end
  local pid = daemon({ "python3", rbtest.source_dir .. "/tests/harness/httpserver.py",
    "--cert", dir .. "/server.pem", "--key", dir .. "/server.key", "--client-ca", dir .. "/ca.pem",
    "--token", sb.secrets[key], "--no-parent-watch", "--port", "0" }, log)
  -- its token is its own: no other process has it on its command line
  sb:record("https-" .. site, pid, sb.secrets[key], { log = log })
end

local function await_https(sb, site)
  local p = sb.procs["https-" .. site]
  local port = ready_port(p.log, p.pid, p.marker, "the " .. site .. " stand-in")
  local name = sb.dns and M.SITES[site][1] or "localhost"
  sb.https[site] = { port = port, token = sb.secrets["https_" .. site .. "_token"], host = name,
    base = string.format("https://%s:%d", name, port), local_base = string.format("https://127.0.0.1:%d", port) }
  sb:save()
end

--- The base URL of a site's stand-in for a host name of that site (the
--- web, api. and admin. hosts of Tezca share one server).
function Sandbox:site_url(site, name)
  local h = self.https[site]
  return string.format("https://%s:%d", self.dns and (name or M.SITES[site][1]) or "localhost", h.port)
end

function Sandbox:ca_file() return self.dir .. "/https/ca.pem" end

-- ---------------------------------------------------------------------------
-- ArgoCD's stand-in (run by sandbox_main.lua as a daemon: `argocd` command)

local ARGO_CRD = { apiVersion = "apiextensions.k8s.io/v1", kind = "CustomResourceDefinition",
  metadata = { name = "applications.argoproj.io" },
  spec = { group = "argoproj.io", scope = "Namespaced",
    names = { kind = "Application", plural = "applications", singular = "application", listKind = "ApplicationList" },
    versions = { { name = "v1alpha1", served = true, storage = true,
      schema = { openAPIV3Schema = { type = "object", ["x-kubernetes-preserve-unknown-fields"] = true } } } } } }

--- One pass of the ArgoCD stand-in: every Application in namespace argocd
--- whose manifests are in DIR/argocd/<name>.json and that changed since the
--- last pass (seen: name -> resourceVersion) is synced into its destination
--- namespace, then its status says Synced (at the revision in
--- DIR/argocd/<name>.rev, else HEAD) and Healthy, as ArgoCD's does. Returns
--- the names synced.
function M.argocd_sync(dir, c, seen)
  local synced = {}
  local apps = c:list { api_version = "argoproj.io/v1alpha1", kind = "Application", namespace = "argocd" }
  for _, app in ipairs(apps) do
    local name, rv = app.metadata.name, app.metadata.resourceVersion
    local text = seen[name] ~= rv and read(dir .. "/argocd/" .. name .. ".json")
    if text then
      local ns = app.spec and app.spec.destination and app.spec.destination.namespace or "default"
      c:apply { apiVersion = "v1", kind = "Namespace", metadata = { name = ns } }
      for _, obj in ipairs(json.decode(text)) do
        obj.metadata.namespace = ns
        c:apply(obj)
      end
      local rev = (read(dir .. "/argocd/" .. name .. ".rev") or "HEAD"):gsub("%s+$", "")
      local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
      local done = c:patch({ api_version = "argoproj.io/v1alpha1", kind = "Application", name = name, namespace = "argocd" },
        { status = { sync = { status = "Synced", revision = rev }, health = { status = "Healthy" }, reconciledAt = now } })
      -- the status write is this pass's own change: not a reason for the next
      seen[name] = done.metadata.resourceVersion
      synced[#synced + 1] = name
    end
  end
  return synced
end

--- The stand-in's loop: polls the Applications (a fifth of a second apart)
--- until killed.
function M.argocd_loop(dir)
  local c = require("runbook.k8s").connect { kubeconfig = dir .. "/kubeconfig" }
  local seen = {}
  say("argocd stand-in: watching Applications in namespace argocd")
  while true do
    local ok, res = pcall(M.argocd_sync, dir, c, seen)
    if not ok then
      say("argocd stand-in: %s", require("runbook.errors").message(res))
    elseif #res > 0 then
      say("argocd stand-in: synced %s", table.concat(res, ", "))
    end
    host.sleep(0.2)
  end
end

local function spawn_argocd(sb)
  local log = sb.dir .. "/logs/argocd.log"
  write(log, "")
  local env = { SANDBOX_ARGV = "argocd", SANDBOX_DIR = sb.dir, RUNBOOK_SOURCE_DIR = rbtest.source_dir,
    RUNBOOK_BIN = rbtest.bin }
  -- the --Xoutput argument (ignored by the handler) marks the process as this sandbox's
  local marker = "sandbox-argocd-" .. crypto.random_hex(6)
  local pid = daemon({ rbtest.bin, "test", "-o", rbtest.source_dir .. "/tests/harness/sandbox_output.lua",
    "--Xoutput=" .. marker, rbtest.source_dir .. "/tests/harness/sandbox_main.lua" }, log, env)
  sb:record("argocd", pid, marker, { log = log })
  await("the ArgoCD stand-in to start", function()
    if (read(log) or ""):find("watching Applications", 1, true) then return true end
    if not M.alive(pid) then fail("the ArgoCD stand-in exited; its log %s says:\n%s", log, read(log) or "") end
  end, 60)
end

-- ---------------------------------------------------------------------------
-- what each shipped runbook expects to find, seeded once the services run:
-- one profile per runbook in tests/harness/sandbox/<name>.lua

local function seed_k8s(sb)
  local c = sb:cluster()
  c:apply(ARGO_CRD)
  local namespaces = { "argocd" }
  for _, p in ipairs(M.PROFILES) do
    for _, ns in ipairs(p.namespaces or {}) do namespaces[#namespaces + 1] = ns end
  end
  for _, ns in ipairs(namespaces) do
    c:apply { apiVersion = "v1", kind = "Namespace", metadata = { name = ns } }
  end
  c:close()
  for _, p in ipairs(M.PROFILES) do if p.seed_k8s then p.seed_k8s(sb) end end
  for _, rule in ipairs(M.JOB_LOGS) do
    sb.fake:control("POST", "/_fake/job-logs", { namespace = rule[1], prefix = rule[2], logs = rule[3] })
  end
end

-- ---------------------------------------------------------------------------
-- env, values, stubs, host names

--- The environment the runbooks read their credentials from (and the
--- sandbox's PATH, kubeconfig and state store).
function Sandbox:env()
  local e = {
    RUNBOOK_SANDBOX = self.dir,
    RUNBOOK_STATE = self.dir .. "/state",
    KUBECONFIG = self.dir .. "/kubeconfig",
    PATH = self.dir .. "/bin:" .. (os.getenv("PATH") or "/usr/bin:/bin"),
  }
  for _, p in ipairs(M.PROFILES) do if p.env then p.env(self, e) end end
  -- every exec holds the team lock in the sandbox's Redis, as a team's would
  if self.services.redis then e.RUNBOOK_LOCK = self.services.redis.url end
  return e
end

--- The plain params of each shipped runbook, for its --values file.
function Sandbox:values()
  local v = {}
  for _, p in ipairs(M.PROFILES) do
    if p.values then v[p.runbook] = p.values(self) end
  end
  return v
end

function Sandbox:values_file(name) return self.dir .. "/values/" .. name .. ".yaml" end

local function write_files(sb)
  local d = sb.dir
  mkdir(d .. "/bin"); mkdir(d .. "/logs"); mkdir(d .. "/values")
  local log = d .. "/logs/cli.log"
  if not exists(log) then write(log, "") end
  for _, tool in ipairs(M.STUBS) do
    write(d .. "/bin/" .. tool, stubs.script(tool, log), 493)
  end
  -- the runbooks' host names on 127.0.0.1, over the machine's own
  -- Tezca's names are CNAMEs to the tunnel: the tunnel's name first on their
  -- line makes it their canonical name, as a DNS-only CNAME would
  local names = {}
  for _, site in ipairs { "janua", "tessera" } do
    for _, n in ipairs(M.SITES[site]) do names[#names + 1] = n end
  end
  write(d .. "/hosts", (read("/etc/hosts") or "127.0.0.1 localhost\n") .. "\n# rehearsal sandbox " .. d .. "\n127.0.0.1 "
    .. M.TEZCA_TUNNEL .. " " .. table.concat(M.SITES.tezca, " ") .. "\n127.0.0.1 " .. table.concat(names, " ") .. "\n")
  local wrapper
  if sb.dns then
    wrapper = string.format([[#!/bin/sh
# runbook in the rehearsal sandbox: the runbooks' host names resolve to its
# stand-ins (%s/hosts over /etc/hosts, in a private mount namespace).
exec unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' %s %s "$@"
]], d, quote(d .. "/hosts"), quote(rbtest.bin))
  else
    wrapper = string.format("#!/bin/sh\n# runbook in the rehearsal sandbox (no private mount namespace here: URLs use localhost)\nexec %s \"$@\"\n", quote(rbtest.bin))
  end
  write(d .. "/bin/runbook", wrapper, 493)
  -- env to source
  local e = sb:env()
  local keys = {}
  for k in pairs(e) do keys[#keys + 1] = k end
  table.sort(keys)
  local lines = { "# the rehearsal sandbox in " .. d .. ": . " .. d .. "/env" }
  for _, k in ipairs(keys) do
    if k == "PATH" then
      lines[#lines + 1] = "export PATH=" .. quote(d .. "/bin") .. ':"$PATH"'
    else
      lines[#lines + 1] = "export " .. k .. "=" .. quote(e[k])
    end
  end
  write(d .. "/env", table.concat(lines, "\n") .. "\n", 384)
  for name, params in pairs(sb:values()) do
    local ks = {}
    for k in pairs(params) do ks[#ks + 1] = k end
    table.sort(ks)
    local out = { "# --values for runbooks/" .. name .. ".lua in the sandbox " .. d }
    for _, k in ipairs(ks) do out[#out + 1] = k .. ": " .. json.encode(params[k]) end
    write(sb:values_file(name), table.concat(out, "\n") .. "\n")
  end
end

-- ---------------------------------------------------------------------------
-- up / down / status

local function dns_available()
  local p = proc.spawn { argv = { "unshare", "-m", "true" }, stdout = "null", stderr = "null" }
  return p ~= nil and p:communicate({ timeout = 10 }).code == 0
end

local function wanted_set(list)
  local t = {}
  for _, s in ipairs(list or M.SERVICES) do t[s] = true end
  return t
end

--- Loads a sandbox that is up (raises when none is recorded in dir).
function M.load(dir)
  dir = absolute(dir)
  local sb = load_state(dir)
  if not sb then fail("no sandbox in %s: run scripts/sandbox.sh up %s", dir, dir) end
  if sb.services.k8s then sb:attach_k8s() end
  return sb
end

--- Starts what is not running yet. opts: services (default all),
--- quiet. Returns the sandbox; sb.started lists what this call started.
function M.up(dir, opts)
  opts = opts or {}
  dir = absolute(dir)
  local t0 = host.monotime()
  mkdir(dir, 493)
  assert(fs.chmod(dir, 493)) -- postgres must enter it
  local sb = load_state(dir) or new_state(dir)
  sb.dir = dir
  local want = wanted_set(opts.services or sb.wanted)
  sb.wanted = {}
  for _, s in ipairs(M.SERVICES) do if want[s] then sb.wanted[#sb.wanted + 1] = s end end
  if sb.dns == nil then sb.dns = dns_available() end
  sb.https = sb.https or {}
  local started, kept, fresh = {}, {}, {}
  local function needed(name)
    if sb:running(name) then kept[#kept + 1] = name return false end
    started[#started + 1] = name
    fresh[name] = true
    return true
  end
  -- RUNBOOK_SANDBOX_TIMING=1: how long each phase took
  local timing = os.getenv("RUNBOOK_SANDBOX_TIMING")
  local last = t0
  local function phase(name)
    local now = host.monotime()
    if timing and timing ~= "" then say("  (%5.2f s) %s", now - last, name) end
    last = now
  end
  local ok, err = pcall(function()
    mkdir(dir .. "/logs")
    -- what takes longest to start goes first (moto imports a lot of
    -- Python), certificates while it starts, then the servers that need
    -- them, then PostgreSQL while they all come up
    if want.s3 and needed("s3") then spawn_s3(sb) end
    local init, how
    if want.pg and not sb:running("pg") then init, how = init_pg(sb) end
    if want.redis and needed("redis") then spawn_redis(sb) end
    local gen
    if want.k8s and not exists(dir .. "/k8s/server.crt") then
      mkdir(dir .. "/k8s")
      gen = assert(proc.spawn { argv = { "sh", k8sfake.fake_dir() .. "/gen_certs.sh", dir .. "/k8s" }, stdout = "null" })
    end
    if want.https then https_certs(sb) end
    phase("certificates")
    if want.https then
      for _, site in ipairs { "tezca", "janua", "tessera" } do
        if needed("https-" .. site) then spawn_https(sb, site) end
      end
    end
    if gen then
      local r = gen:communicate { timeout = 60 }
      if r.code ~= 0 then fail("tests/k8s/gen_certs.sh failed: %s", r.stderr or "") end
    end
    if want.k8s and needed("k8s") then spawn_k8s(sb) end
    if want.pg and needed("pg") then start_pg(sb, init, how) end
    phase("postgresql")
    if fresh.redis then await_redis(sb) end
    if fresh.k8s then await_k8s(sb) elseif want.k8s then sb:attach_k8s() end
    if want.https then
      for _, site in ipairs { "tezca", "janua", "tessera" } do
        if fresh["https-" .. site] then await_https(sb, site) end
      end
    end
    phase("k8s and https ready")
    write_files(sb)
    if fresh.k8s then seed_k8s(sb) end
    -- the stand-in starts while the drill's world is seeded
    if want.argocd and want.k8s and needed("argocd") then spawn_argocd(sb) end
    phase("k8s seeded")
    if fresh.s3 then await_s3(sb) end
    phase("moto ready")
    write_files(sb)
    for _, p in ipairs(M.PROFILES) do if p.seed then p.seed(sb, fresh) end end
    phase("drill seeded")
    sb:save()
  end)
  if not ok then
    -- stop what this call started, and say why it could not start
    for _, name in ipairs(started) do M.stop_proc(sb, name) end
    sb:save()
    error(err, 0)
  end
  sb.started, sb.kept, sb.seconds = started, kept, host.monotime() - t0
  if not opts.quiet then M.report(sb) end
  return sb
end

--- Prints what runs, where, and how to use it.
function M.report(sb)
  local started = {}
  for _, n in ipairs(sb.started or {}) do started[n] = true end
  local function row(name, label, where)
    local p = sb.procs[name]
    if not p then return end
    local st = started[name] and "started" or (sb:running(name) and "already running" or "NOT RUNNING")
    say("  %-10s %-40s pid %-7s %s", label, where, tostring(p.pid), st)
  end
  if not sb.started then
    local n, up = 0, 0
    for name in pairs(sb.procs) do
      n = n + 1
      if sb:running(name) then up = up + 1 end
    end
    say("sandbox in %s: %s", sb.dir, n == 0 and "down (no process recorded)" or
      string.format("%d of %d process(es) running", up, n))
    if n == 0 then return end
  elseif #sb.started == 0 then
    say("sandbox in %s: already up, everything was running (nothing started)", sb.dir)
  else
    say("sandbox in %s: up in %.1f s", sb.dir, sb.seconds or 0)
  end
  local s = sb.services
  if s.pg then row("pg", "postgresql", string.format("127.0.0.1:%d (role sandbox)", s.pg.port)) end
  if s.redis then row("redis", "redis", "127.0.0.1:" .. s.redis.port) end
  if s.s3 then row("s3", "s3 (moto)", s.s3.endpoint .. " (SigV4 checked)") end
  if s.k8s then row("k8s", "kubernetes", s.k8s.server .. " (fake, controllers on)") end
  for _, site in ipairs { "tezca", "janua", "tessera" } do
    if sb.https[site] then row("https-" .. site, site, sb:site_url(site)) end
  end
  row("argocd", "argocd", "Applications in ns argocd -> Deployments")
  if sb.dns then
    local names = {}
    for _, site in ipairs { "tezca", "janua", "tessera" } do
      for _, n in ipairs(M.SITES[site]) do names[#names + 1] = n end
    end
    say("  %-10s %s -> 127.0.0.1 (for %s/bin/runbook)", "dns", table.concat(names, " "), sb.dir)
  else
    say("  %-10s no private mount namespace here: the values files use localhost", "dns")
  end
  say("  %-10s %s/bin: %s (argv logged to %s/logs/cli.log)", "cli stubs", sb.dir, table.concat(M.STUBS, " "), sb.dir)
  say("  %-10s %s/values/<runbook>.yaml, kubeconfig %s/kubeconfig, state %s/state", "files", sb.dir, sb.dir, sb.dir)
  say("use it:     . %s/env && runbook exec runbooks/first-deploy.lua --values %s", sb.dir, sb:values_file("first-deploy"))
  say("rehearse:   scripts/sandbox.sh rehearse runbooks/NAME.lua %s", sb.dir)
  say("stop:       scripts/sandbox.sh down %s", sb.dir)
end

--- Stops one recorded process by its pid (only when it is still ours).
function M.stop_proc(sb, name)
  local p = sb.procs[name]
  if not p then return false end
  local was = M.alive(p.pid, p.marker)
  if was then
    if name == "pg" then
      -- fast shutdown; the postmaster removes its pid file, then exits (a
      -- zombie until its parent reaps it counts as stopped)
      kill(p.pid, "INT")
      await("PostgreSQL (pid " .. p.pid .. ") to stop", function()
        return not exists(p.pidfile) and not M.alive(p.pid, p.marker)
      end, 30)
    else
      kill(p.pid, "TERM")
      local ok = pcall(await, name .. " (pid " .. p.pid .. ") to stop", function() return not M.alive(p.pid, p.marker) end, 10)
      if not ok then kill(p.pid, "KILL") end
    end
  end
  sb.procs[name] = nil
  return was
end

--- Stops exactly what the sandbox in dir started, by pid; removes no file.
--- Returns the names stopped.
function M.down(dir, opts)
  opts = opts or {}
  dir = absolute(dir)
  local sb = load_state(dir)
  if not sb then
    if not opts.quiet then say("no sandbox in %s: nothing to stop", dir) end
    return {}
  end
  local stopped = {}
  -- the stand-in first (it talks to the fake), the databases last
  for _, name in ipairs { "argocd", "https-tezca", "https-janua", "https-tessera", "k8s", "s3", "redis", "pg" } do
    local p = sb.procs[name]
    if p then
      local was = M.stop_proc(sb, name)
      if not opts.quiet then say("  %-14s pid %-7d %s", name, p.pid, was and "stopped" or "was not running") end
      if was then stopped[#stopped + 1] = name end
    end
  end
  sb:save()
  if not opts.quiet then say("sandbox in %s: down (%d process(es) stopped; files kept)", dir, #stopped) end
  return stopped
end

--- The pids the sandbox recorded, by name.
function M.pids(dir)
  local sb = load_state(absolute(dir))
  local out = {}
  for name, p in pairs(sb and sb.procs or {}) do out[name] = p.pid end
  return out
end

-- ---------------------------------------------------------------------------
-- running runbooks in the sandbox, and playing the people their guides need

--- Runs the sandbox's `runbook` (DIR/bin/runbook: the host names resolve to
--- the stand-ins) with args, in the sandbox's environment. opts: env (extra),
--- unset (the sandbox variables to leave out), cwd, timeout. Returns {code=, stdout=, stderr=}.
function Sandbox:runbook(args, opts)
  opts = opts or {}
  local argv = { self.dir .. "/bin/runbook" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local env = self:env()
  env.NO_COLOR = "1"
  for k, v in pairs(self.env_over or {}) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  for _, k in ipairs(opts.unset or {}) do env[k] = nil end
  local p = assert(proc.spawn { argv = argv, cwd = opts.cwd or self.dir, env = env, stdin = "null" })
  return p:communicate { timeout = opts.timeout or 600 }
end

--- `runbook exec FILE --values DIR/values/NAME.yaml --yes [extra...]`.
function Sandbox:exec(file, extra, opts)
  local name = file:match("([^/]+)%.lua$")
  local args = { "exec", file, "--yes" }
  if exists(self:values_file(name)) then args[#args + 1] = "--values"; args[#args + 1] = self:values_file(name) end
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return self:runbook(args, opts)
end

--- Starts `runbook exec` like Sandbox:exec without waiting, its stderr
--- going to the file opts.stderr (stdout to /dev/null). Returns the process.
function Sandbox:start_exec(file, extra, opts)
  local name = file:match("([^/]+)%.lua$")
  local argv = { "sh", "-c", 'f=$1; shift; exec "$@" 2>"$f"', "sh", opts.stderr, self.dir .. "/bin/runbook", "exec", file, "--yes" }
  if exists(self:values_file(name)) then argv[#argv + 1] = "--values"; argv[#argv + 1] = self:values_file(name) end
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local env = self:env()
  env.NO_COLOR = "1"
  for k, v in pairs(self.env_over or {}) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  return assert(proc.spawn { argv = argv, cwd = self.dir, env = env, stdin = "null", stdout = "null" })
end

--- The ids of the runs in the sandbox's store.
function Sandbox:runs()
  local r = self:runbook { "runs", "--output", "json" }
  local out = {}
  for line in (r.stdout or ""):gmatch("[^\n]+") do
    local ok, row = pcall(json.decode, line)
    if ok and type(row) == "table" then out[#out + 1] = row end
  end
  return out
end

--- Confirms a manual step as the sandbox: the note says it was a rehearsal.
function Sandbox:confirm(run, step, note)
  local r = self:runbook({ "confirm", run, step, "--note", "rehearsal: " .. note }, { env = { RUNBOOK_ACTOR = "sandbox" } })
  if r.code ~= 0 then fail("runbook confirm %s %s failed: %s", run, step, r.stderr) end
  return r
end

--- Runs one of the recording CLI stubs.
function Sandbox:cli(argv, input)
  local full = { self.dir .. "/bin/" .. argv[1] }
  for i = 2, #argv do full[#full + 1] = argv[i] end
  return run(full, { env = self:env(), input = input })
end

--- The lines the CLI stubs recorded.
function Sandbox:cli_log()
  local out = {}
  for l in (read(self.dir .. "/logs/cli.log") or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

--- Waits until every Deployment named exists in namespace.
function Sandbox:await_deployments(namespace, names)
  local c = self:cluster(namespace)
  await(#names .. " Deployments in namespace " .. namespace, function()
    local missing = {}
    for _, n in ipairs(names) do
      if not c:get { api_version = "apps/v1", kind = "Deployment", name = n } then missing[#missing + 1] = n end
    end
    return #missing == 0, table.concat(missing, ", ") .. " missing"
  end, 60)
  c:close()
end

-- The people (and systems) each guide needs at its manual steps, played
-- by the sandbox (each profile's `players`, by runbook name). `self_confirms`:
-- the step's verify sees what the player did, so the next exec confirms it;
-- otherwise the sandbox confirms it with `runbook confirm ... --note "rehearsal: ..."`.
M.PLAYERS = {}
for _, p in ipairs(M.PROFILES) do M.PLAYERS[p.runbook] = p.players end
-- a profile's `rehearse_after`: the runbook whose setup it works on (Janua's
-- release after its production setup), rehearsed first when no run of it finished
M.AFTER = {}
for _, p in ipairs(M.PROFILES) do M.AFTER[p.runbook] = p.rehearse_after end

--- Plays the person a manual step of runbook `name` needs, then confirms
--- it unless its verify will. Returns what was done, for the report.
function Sandbox:play(name, run, step)
  local player = (M.PLAYERS[name] or {})[step]
  if player and player.act then player.act(self) end
  if player and player.self_confirms then
    return string.format("%s: the sandbox played %s; the step's verify confirms it", step, player.role)
  end
  local note = player and player.note or "the sandbox confirmed it"
  self:confirm(run, step, note)
  return string.format("%s: confirmed, note \"rehearsal: %s\"", step, note)
end

local function tail(text, n)
  local lines = {}
  for l in (text or ""):gmatch("[^\n]*\n?") do if l ~= "" then lines[#lines + 1] = l end end
  return table.concat(lines, "", math.max(1, #lines - n + 1))
end

--- Rehearses a shipped runbook from start to finish: a new run, manual
--- steps played and confirmed as the sandbox, until it finishes; then
--- `runbook audit verify`. Raises when it does not go green. opts: quiet,
--- max_execs (30), env (for every command it runs), kill_after (a crash
--- trial: the first execs carry RUNBOOK_FAILPOINT=after:N; once the process
--- stops there, on_kill(sb) is called and it is killed with SIGKILL, and the
--- rehearsal goes on). Returns {run=, execs=, confirmed=, seconds=, killed=}.
function Sandbox:rehearse(file, opts)
  opts = opts or {}
  -- opts.env reaches every command of the rehearsal (exec, runs, confirm, audit)
  local saved = self.env_over
  self.env_over = opts.env or saved
  local ok, result = pcall(self._rehearse, self, file, opts)
  self.env_over = saved
  if not ok then error(result, 0) end
  return result
end

function Sandbox:_rehearse(file, opts)
  local t0 = host.monotime()
  if file:sub(1, 1) ~= "/" then file = fs.cwd() .. "/" .. file end
  if not exists(file) then fail("no runbook %s", file) end
  local name = file:match("([^/]+)%.lua$")
  local out = function(...) if not opts.quiet then say(...) end end
  local first = M.AFTER[name]
  if first then
    local done = false
    for _, r in ipairs(self:runs()) do done = done or (r.runbook == first and r.status == "finished") end
    if not done then
      out("%s works on what %s sets up: rehearsing that first", name, first)
      self:rehearse((file:gsub("[^/]+%.lua$", first .. ".lua")), opts)
    end
  end
  local before = {}
  for _, r in ipairs(self:runs()) do before[r.run] = true end
  out("rehearsing %s in the sandbox %s", file, self.dir)
  local run_id, played, last_wait = nil, {}, nil
  local result = { execs = 0, confirmed = {} }
  for i = 1, opts.max_execs or 30 do
    local r
    if opts.kill_after and not result.killed then
      -- the crash trial: every exec carries the failpoint until the run's
      -- event kill_after is durable and the process stops there; then SIGKILL
      local errf = self.dir .. "/logs/trial-stderr"
      local p = self:start_exec(file, i == 1 and { "--new" } or nil,
        { stderr = errf, env = { RUNBOOK_FAILPOINT = "after:" .. opts.kill_after } })
      if p:stopped(opts.timeout or 600) then
        if opts.on_kill then opts.on_kill(self) end
        p:kill("KILL")
        local _, sig = p:wait(30)
        if sig ~= 9 then fail("exec %d was stopped at event %d but did not die of SIGKILL", i, opts.kill_after) end
        result.killed = i
        out("  exec %-2d stopped after event %d: SIGKILL", i, opts.kill_after)
        r = { code = "killed" }
      else
        local code, sig = p:wait(30)
        r = { code = code, signal = sig, stderr = read(errf) or "" }
      end
    else
      r = self:exec(file, i == 1 and { "--new" } or nil)
    end
    result.execs = i
    if not run_id then
      for _, row in ipairs(self:runs()) do if not before[row.run] then run_id = row.run end end
      if not run_id then fail("exec %d of %s started no run (exit %s):\n%s", i, file, tostring(r.code), tail(r.stderr, 30)) end
    end
    if r.code == "killed" then
      -- resumed by the next exec
    elseif r.code == 0 then
      out("  exec %-2d exit 0: finished", i)
      break
    elseif r.code == 3 then
      local step = (r.stderr or ""):match("waiting for (%S+) %(")
      if not step then fail("exec %d exited 3 but names no waiting step:\n%s", i, tail(r.stderr, 30)) end
      if step == last_wait and played[step] then
        fail("%s still waits after the sandbox played it:\n%s", step, tail(r.stderr, 30))
      end
      out("  exec %-2d exit 3: waiting for %s", i, step)
      local what = self:play(name, run_id, step)
      result.confirmed[#result.confirmed + 1] = step
      played[step], last_wait = true, step
      out("           %s", what)
    else
      fail("rehearsal of %s failed: exec %d exited %s (run %s):\n%s", file, i, tostring(r.code or r.signal),
        tostring(run_id), tail(r.stderr, 40))
    end
    if i == (opts.max_execs or 30) then fail("rehearsal of %s did not finish in %d execs", file, i) end
  end
  local v = self:runbook { "audit", "verify", run_id }
  if v.code ~= 0 then fail("runbook audit verify %s failed: %s%s", run_id, v.stdout, v.stderr) end
  out("  audit    %s", (v.stdout:gsub("\n$", "")))
  result.run, result.seconds = run_id, host.monotime() - t0
  out("rehearsal of %s: green in %.1f s (%d exec(s), run %s)", name, result.seconds, result.execs, run_id)
  return result
end

--- Returns the world the shipped runbooks touch to how `up` left it, for
--- a test that runs one many times from scratch (the crash trials): the
--- fake's store reset and seeded again, the service stand-ins' clients,
--- teams and keys forgotten, the CLI log emptied, and each profile's
--- `reset(sb)` (what its runbook made elsewhere: buckets, databases).
function Sandbox:reset_world()
  if self.fake then
    self.fake:control("POST", "/_fake/reset")
    seed_k8s(self)
  end
  local curl = require "runbook._curl"
  for _, site in ipairs { "tezca", "janua", "tessera" } do
    local h = self.https[site]
    if h and self:running("https-" .. site) then
      local c = curl.client { ca_file = self:ca_file() }
      local res = c:request { method = "POST", url = h.local_base .. "/_stand-in/forget",
        headers = { { "Authorization", "Bearer " .. h.token } } }
      c:close()
      if not res or res.status ~= 200 then fail("the %s stand-in did not forget its state", site) end
    end
  end
  write(self.dir .. "/logs/cli.log", "")
  for _, p in ipairs(M.PROFILES) do if p.reset then p.reset(self) end end
end

--- Faults a demo or a spec can switch on: "migration" makes Tezca's
--- migration Jobs fail (a database error in their log) until "clear".
function Sandbox:fault(what)
  local f = self.fake
  if what == "migration" then
    f:control("POST", "/_fake/job-logs", { namespace = "tezca", prefix = "tezca-migrate-",
      logs = "Operations to perform:\ndjango.db.utils.OperationalError: password authentication failed for user \"tezca\"" })
    f:control("POST", "/_fake/fail-job", { namespace = "tezca" })
  elseif what == "clear" then
    f:control("DELETE", "/_fake/fail-job")
    f:control("DELETE", "/_fake/job-logs")
    for _, rule in ipairs(M.JOB_LOGS) do
      f:control("POST", "/_fake/job-logs", { namespace = rule[1], prefix = rule[2], logs = rule[3] })
    end
  else
    fail("unknown fault %s (migration, clear)", tostring(what))
  end
end

return M
