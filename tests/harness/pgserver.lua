-- A real PostgreSQL 15 for specs: initdb into a temporary directory (as the
-- postgres user, since initdb refuses root), started on a free loopback
-- port and a private unix socket directory, stopped by the PID we started.
-- The superuser `postgres` is trusted on the socket and on 127.0.0.1; the
-- test role `rbtest` must give its password over TCP, so wrong-password
-- tests meet real authentication.
--
--   local pgserver = require "pgserver"
--   local srv = pgserver.start()          -- in setup
--   local url = srv:url("appdb")          -- postgres://rbtest:...@127.0.0.1:port/appdb
--   srv:psql("select 1", "appdb")         -- runs psql as the superuser
--   srv:stop()                            -- in teardown
local proc = require "runbook._proc"
local fs = require "runbook._fs"
local host = require "runbook._host"
local rbtest = require "rbtest"

local M = {}

M.BIN = os.getenv("RUNBOOK_PG_BIN") or "/usr/lib/postgresql/15/bin"
M.ROLE = "rbtest"
M.PASSWORD = "rbtest-pw-6f1d2c9a"

local Server = {}
Server.__index = Server

local function run(argv, opts)
  opts = opts or {}
  local p = assert(proc.spawn { argv = argv, cwd = opts.cwd, env = opts.env, stdin = opts.input and "pipe" or "null" })
  local r = p:communicate { input = opts.input, timeout = opts.timeout or 60 }
  if opts.check ~= false and r.code ~= 0 then
    error(string.format("%s failed (%s): %s%s", argv[1], tostring(r.code or r.signal), r.stdout, r.stderr), 2)
  end
  return r
end

local function as_postgres(argv)
  local out = { "runuser", "-u", "postgres", "--" }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

--- Starts a server. opts.settings: extra `-c name=value` settings.
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({}, Server)
  self.dir = rbtest.tmpdir("pg")
  assert(fs.chmod(self.dir, 493)) -- postgres must enter it
  self.data = self.dir .. "/data"
  self.sock = self.dir .. "/sock"
  self.log = self.dir .. "/postgres.log"
  for _, d in ipairs { self.data, self.sock } do assert(fs.mkdir_p(d, 448)) end
  rbtest.write(self.log, "")
  run { "chown", "-R", "postgres:postgres", self.data, self.sock, self.log }
  run(as_postgres { M.BIN .. "/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
    "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C" }, { cwd = self.dir })
  -- postgres (superuser) is trusted everywhere; everyone else needs a password over TCP
  rbtest.write(self.data .. "/pg_hba.conf", table.concat({
    "local all all trust",
    "host all postgres 127.0.0.1/32 trust",
    "host all all 127.0.0.1/32 scram-sha-256",
    "",
  }, "\n"), 384)
  run { "chown", "postgres:postgres", self.data .. "/pg_hba.conf" }
  self.port = rbtest.free_port()
  local settings = {
    "-c", "listen_addresses=127.0.0.1", "-c", "port=" .. self.port,
    "-c", "unix_socket_directories=" .. self.sock, "-c", "fsync=off",
    "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
    "-c", "max_connections=50", "-c", "shared_buffers=64MB",
  }
  for k, v in pairs(opts.settings or {}) do
    settings[#settings + 1] = "-c"
    settings[#settings + 1] = k .. "=" .. tostring(v)
  end
  self.settings = table.concat(settings, " ")
  self:restart()
  self:psql(string.format("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'", M.ROLE, M.PASSWORD))
  return self
end

--- Starts the server again on the same data, port and settings (after
--- halt; start() calls it the first time).
function Server:restart()
  run(as_postgres { M.BIN .. "/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30",
    "-o", self.settings, "start" }, { cwd = self.dir })
  local pidline = assert(rbtest.read(self.data .. "/postmaster.pid"), "no postmaster.pid")
  self.pid = assert(math.tointeger(tonumber(pidline:match("^(%d+)"))))
end

--- Stops the server (fast shutdown: clients are cut off) and keeps its
--- data, for restart(): a database going away under its clients.
function Server:halt()
  if not self.pid then return end
  run({ "kill", "-INT", tostring(self.pid) }, { check = false })
  local pidfile = self.data .. "/postmaster.pid"
  for _ = 1, 1500 do
    if not rbtest.exists(pidfile) then break end
    host.sleep(0.02)
  end
  assert(not rbtest.exists(pidfile), "the server did not stop")
  self.pid = nil
end

--- A connection URL for the test role (password auth over TCP).
function Server:url(db, user, password)
  return string.format("postgres://%s:%s@127.0.0.1:%d/%s", user or M.ROLE, password or M.PASSWORD,
    self.port, db or "postgres")
end

--- A keyword/value conninfo through the unix socket, as the superuser.
function Server:socket_conninfo(db)
  return string.format("host=%s port=%d user=postgres dbname=%s", self.sock, self.port, db or "postgres")
end

--- Runs SQL through psql as the superuser; returns stdout (tuples only, unaligned).
function Server:psql(sql, db, opts)
  local r = run({ "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.sock, "-p", tostring(self.port),
    "-U", "postgres", "-d", db or "postgres", "-c", sql }, { check = not (opts and opts.check == false) })
  if opts and opts.check == false then return r end
  return (r.stdout:gsub("\n$", ""))
end

function Server:createdb(name)
  self:psql(string.format('CREATE DATABASE "%s"', name))
  return self:url(name)
end

function Server:dropdb(name)
  self:psql(string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', name))
end

--- A new database for a store (named prefix1, prefix2, ...) and its URL
--- without a password: runbook reads that from PGPASSWORD (M.password_env).
function Server:store_db(prefix, user)
  self.ndb = (self.ndb or 0) + 1
  local name = prefix .. self.ndb
  self:createdb(name)
  return string.format("postgres://%s@127.0.0.1:%d/%s", user or M.ROLE, self.port, name), name
end

--- PGPASSWORD of the test role, with the variables of extra over it.
function M.password_env(extra)
  local e = { PGPASSWORD = M.PASSWORD }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

--- Environment for client tools (psql, pg_dump, dbmate) as the test role.
function Server:env()
  return { PGPASSWORD = M.PASSWORD, PGHOST = "127.0.0.1", PGPORT = tostring(self.port), PGUSER = M.ROLE }
end

--- Stops the server (fast shutdown) and removes its directory.
function Server:stop()
  if self.pid then
    run({ "kill", "-INT", tostring(self.pid) }, { check = false })
    local pidfile = self.data .. "/postmaster.pid"
    for _ = 1, 600 do
      if not rbtest.exists(pidfile) then break end
      host.sleep(0.02)
    end
    self.pid = nil
  end
  rbtest.rmtree(self.dir)
end

return M
