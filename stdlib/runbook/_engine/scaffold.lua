-- `runbook init [NAME]`: a starter project that passes `runbook check`,
-- runs its first steps on a laptop without a cluster (--param k8s=false),
-- has a spec for `runbook test` and points lua-language-server at the
-- installed type stubs.
local host = require "runbook._host"
local fs = require "runbook._fs"
local errors = require "runbook.errors"

local M = {}

local RUNBOOK = [==[
-- @NAME@.lua: a starter runbook written by `runbook init`. Each step is
-- recorded in the journal (.runbook/); when one fails, fix the cause and
-- run the same command again: it resumes there.
--
--   runbook check @NAME@.lua                    static checks, nothing runs
--   runbook exec @NAME@.lua --param k8s=false   on a laptop: no cluster needed
--   runbook confirm last dns --note '...'       after doing the manual step
local k8s = require "runbook.k8s"
local pg = require "runbook.pg"
local secret = require "runbook.secret"
local dns = require "runbook.dns"

runbook "@NAME@" {
  description = "First deploy of @NAME@",
  params = {
    namespace = { default = "@NAME@", doc = "the Kubernetes namespace to deploy to" },
    context = { required = false, doc = "the kubeconfig context (default: the current one)" },
    k8s = { type = "boolean", default = true, doc = "apply to the cluster; --param k8s=false skips it" },
    domain = { required = false, doc = "the name the DNS step points at the cluster; verified when given" },
    db_url = { secret = true, required = false, env = "DATABASE_URL", doc = "PostgreSQL URL for the migrations" },
  },
}

step "password" {
  title = "Generate the database password",
  owner = "DevOps",
  run = function(ctx)
    -- made once per run: a retry or a resume gets the very same password
    local pw = ctx:once("db-password", function() return secret.random { bytes = 32, encoding = "hex" } end)
    return { password = pw }
  end,
}

step "apply" {
  title = "Create the namespace and the database Secret",
  owner = "DevOps",
  needs = "password",
  run = function(ctx)
    if not ctx.params.k8s then
      ctx:log("k8s=false: nothing applied to a cluster")
      return { applied = false }
    end
    local cluster = k8s.connect { context = ctx.params.context }
    cluster:apply { apiVersion = "v1", kind = "Namespace", metadata = { name = ctx.params.namespace } }
    cluster:secret {
      namespace = ctx.params.namespace, name = "@NAME@-db",
      data = { DB_PASSWORD = ctx.outputs.password.password },
      if_exists = "keep",
    }
    return { applied = true }
  end,
}

manual "dns" {
  title = "Point the DNS at the cluster",
  owner = "DevOps",
  instructions = [[In your DNS provider, point the service's name at the cluster's load balancer.]],
  -- holds once the name resolves; without --param domain=... a person confirms
  verify = function(ctx)
    return ctx.params.domain ~= nil and dns.resolves(ctx.params.domain, { timeout = 3 })
  end,
}

step "migrate" {
  title = "Run the database migrations",
  owner = "Backend",
  needs = "dns",
  retry = { attempts = 3, backoff = "exponential", max_delay = 30 },
  timeout = 600,
  run = function(ctx)
    if not ctx.params.db_url then
      ctx:log("no db_url (or DATABASE_URL): migrations not run")
      return { applied = 0 }
    end
    local r = pg.migrate { url = ctx.params.db_url, dir = "db/migrations" }
    return { applied = #r.applied }
  end,
}
]==]

local MIGRATION = [==[
-- migrate:up
CREATE TABLE @NAME_ID@_example (
  id bigserial PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE @NAME_ID@_example;
]==]

local SPEC = [==[
-- Specs for @NAME@.lua, run from this folder by `runbook test` (busted
-- inside runbook, so every module is the one runbooks get). They start
-- runbook itself as a process, with a store of their own.
local proc = require "runbook._proc"
local fs = require "runbook._fs"
local crypto = require "runbook._crypto"
local json = require "runbook._json"

local BIN = fs.realpath("/proc/self/exe")

local function runbook(args)
  local argv = { BIN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = assert(proc.spawn { argv = argv, env = { NO_COLOR = "1" }, stdin = "null" })
  return p:communicate { timeout = 60 }
end

describe("@NAME@.lua", function()
  local state

  before_each(function()
    state = (os.getenv("TMPDIR") or "/tmp") .. "/@NAME@-spec-" .. crypto.random_hex(6)
  end)
  after_each(function()
    proc.spawn({ argv = { "rm", "-rf", state } }):communicate {}
  end)

  it("passes runbook check", function()
    local r = runbook { "check", "@NAME@.lua" }
    assert.are.equal(0, r.code, r.stderr)
  end)

  it("runs without a cluster up to the manual step, then waits (exit 3)", function()
    local r = runbook { "exec", "@NAME@.lua", "--state", state, "--param", "k8s=false" }
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for dns", 1, true), r.stderr)
    -- the same command again resumes: the password step does not run again
    r = runbook { "exec", "@NAME@.lua", "--state", state, "--param", "k8s=false", "--output", "json" }
    assert.are.equal(3, r.code, r.stderr)
    local started = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev.type == "step.started" then started[#started + 1] = ev.step end
    end
    assert.are.same({}, started)
  end)
end)
]==]

-- Where lua-language-server finds the type stubs: installed next to this
-- binary (PREFIX/share/runbook), else the source tree it was built from.
local function stub_dirs()
  local exe = fs.realpath("/proc/self/exe")
  if exe then
    local prefix = exe:match("^(.*)/bin/[^/]+$")
    if prefix and fs.stat(prefix .. "/share/runbook/meta") then
      return { prefix .. "/share/runbook/meta", prefix .. "/share/runbook/lua" }
    end
  end
  local src = host.source_stdlib()
  local root = src:match("^(.*)/stdlib$")
  if root and fs.stat(root .. "/meta") then return { root .. "/meta", src } end
  return { "/usr/share/runbook/meta", "/usr/share/runbook/lua" }
end

local function luarc()
  local json = require "runbook._json"
  local lib = {}
  for i, d in ipairs(stub_dirs()) do lib[i] = json.encode(d) end
  return table.concat({
    "{",
    '  "runtime.version": "Lua 5.4",',
    '  "workspace.library": [' .. table.concat(lib, ", ") .. "],",
    '  "diagnostics.globals": ["runbook", "step", "manual", "parallel"]',
    "}", "" }, "\n")
end

local function fill(text, name)
  local id = name:gsub("[^%w]", "_")
  return (text:gsub("@NAME_ID@", id):gsub("@NAME@", name))
end

function M.init(name, opts)
  local dir = opts.dir or "."
  local st = fs.stat(dir)
  if st and st.type ~= "directory" then errors.raisef("usage", nil, "init: %s is not a directory", dir) end
  if not name then
    local abs = fs.realpath(dir) or dir
    name = abs:match("([^/]+)/*$") or "runbook"
    name = name:gsub("[^%w_.-]", "-")
  end
  if not name:match("^[%w][%w_.-]*$") then
    errors.raisef("usage", nil, "init: '%s' is not a usable name: letters, digits, '_', '-' and '.' (not first)", name)
  end
  local existing_migration
  for _, f in ipairs(fs.listdir(dir .. "/db/migrations") or {}) do
    if f:match("_create_example%.sql$") then existing_migration = "db/migrations/" .. f end
  end
  local files = {
    { name .. ".lua", fill(RUNBOOK, name) },
    { "spec/" .. name .. "_spec.lua", fill(SPEC, name) },
    { existing_migration or ("db/migrations/" .. os.date("!%Y%m%d%H%M%S") .. "_create_example.sql"), fill(MIGRATION, name) },
    { ".luarc.json", luarc() },
  }
  if not opts.force then
    local clash = {}
    for _, f in ipairs(files) do
      if fs.stat(dir .. "/" .. f[1]) then clash[#clash + 1] = f[1] end
    end
    if #clash > 0 then
      errors.raisef("usage", nil, "init: %s already exist%s in %s; nothing was written (--force overwrites)",
        table.concat(clash, ", "), #clash == 1 and "s" or "", dir)
    end
  end
  local written = {}
  for _, f in ipairs(files) do
    local path = dir .. "/" .. f[1]
    local parent = path:match("^(.*)/[^/]+$")
    local ok, err = fs.mkdir_p(parent, 493) -- 0755
    if ok then ok, err = fs.write_file(path, f[2], 420) end -- 0644
    if not ok then errors.raisef("usage", nil, "init: cannot write %s: %s", path, tostring(err)) end
    written[#written + 1] = f[1]
  end
  -- the store holds the key that seals secret memos: keep it out of git
  local gi = dir .. "/.gitignore"
  local f = io.open(gi, "rb")
  local text = f and f:read("a") or ""
  if f then f:close() end
  if not ("\n" .. text .. "\n"):find("\n/?%.runbook/?\n") then
    local sep = (text == "" or text:sub(-1) == "\n") and "" or "\n"
    local ok, err = fs.write_file(gi, text .. sep .. ".runbook/\n", 420)
    if not ok then errors.raisef("usage", nil, "init: cannot write %s: %s", gi, tostring(err)) end
    written[#written + 1] = ".gitignore"
  end
  local where = dir == "." and "" or ("cd " .. dir .. " && ")
  host.write(1, string.format([[
wrote %s
next:
  %srunbook check %s.lua
  runbook exec %s.lua --param k8s=false   # on a laptop: runs up to the manual step (exit 3)
  runbook test spec/
]], table.concat(written, ", "), where, name, name))
  return 0
end

return M
