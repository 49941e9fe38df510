-- The sealing key on the PostgreSQL store: each operator's own key file
-- (RUNBOOK_SECRET_KEY_FILE, default ~/.config/runbook/secret.key) or
-- RUNBOOK_SECRET_KEY, refused when others may read it, never in the
-- database; a run sealed with another key says which key id it needs.
-- A real server and real processes, two operators with their own HOME.
local rb = require "rbtest"
local pgserver = require "pgserver"
local crypto = require "runbook._crypto"
local fs = require "runbook._fs"

local srv
-- a fresh database and its URL (no password: it goes through PGPASSWORD)
local function fresh_db() return srv:store_db("keys") end

local env_with = pgserver.password_env

-- the key id runbook shows for a key file's key (a fingerprint)
local function kid_of(path)
  return crypto.sha256(crypto.hex_decode((rb.read(path):gsub("%s+$", "")))):sub(1, 16)
end

setup(function() srv = pgserver.start() end)
teardown(function() if srv then srv:stop() end end)

local SEALS = [[
local secret = require "runbook.secret"
runbook "seals" {}
step "A" { run = function(ctx)
  return { pw = ctx:once("pw", function() return secret.random { bytes = 16, encoding = "hex" } end) }
end }
manual "M" { title = "hand over", instructions = "another operator continues" }
step "C" { needs = { "A", "M" }, run = function(ctx)
  local pw = ctx.outputs.A.pw:reveal() -- opened here: a wrong key fails the step
  local f = assert(io.open(os.getenv("OUT"), "w")) f:write(pw) f:close()
end }
]]

describe("the sealing key with the PostgreSQL store", function()
  it("refuses an operator key file that others may read, or a symbolic link, before any run is made", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgkeymode")
    rb.write(dir .. "/s.lua", SEALS)
    local key = dir .. "/op.key"
    rb.write(key, crypto.random_hex(32), 420) -- 0644
    local r = rb.exec({ "s.lua" }, { state = url, cwd = dir, yes = true, env = env_with { HOME = dir, OUT = dir .. "/out", RUNBOOK_SECRET_KEY_FILE = key } })
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find(key .. " has mode 0644: others may read the key that seals your runs' secrets. Run `chmod 600 " .. key .. "`", 1, true), r.stderr)
    assert.is_nil(r.stderr:find(rb.read(key), 1, true), "the key is not printed")
    assert.are.equal("0", srv:psql("SELECT count(*) FROM runbook_runs", db), "no run was made")
    -- the default place is checked the same way
    assert(fs.mkdir_p(dir .. "/.config/runbook", 448))
    rb.write(dir .. "/.config/runbook/secret.key", crypto.random_hex(32), 416) -- 0640
    r = rb.exec({ "s.lua" }, { state = url, cwd = dir, yes = true, env = env_with { HOME = dir, OUT = dir .. "/out" } })
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find(dir .. "/.config/runbook/secret.key has mode 0640", 1, true), r.stderr)
    -- a symbolic link is never followed
    assert(fs.chmod(key, 384))
    local link = dir .. "/link.key"
    local p = require("runbook._proc").spawn { argv = { "ln", "-s", key, link }, stdin = "null" }
    assert.are.equal(0, p:communicate({ timeout = 10 }).code)
    r = rb.exec({ "s.lua" }, { state = url, cwd = dir, yes = true, env = env_with { HOME = dir, OUT = dir .. "/out", RUNBOOK_SECRET_KEY_FILE = link } })
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find(link .. " is a symbolic link", 1, true), r.stderr)
    assert.are.equal("0", srv:psql("SELECT count(*) FROM runbook_runs", db))
    rb.rmtree(dir)
  end)

  it("names the key id a run needs when another operator's key differs, keeps keys out of the database, and resumes with the right key", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgkeys")
    local alice, bob = dir .. "/alice", dir .. "/bob"
    assert(fs.mkdir_p(alice, 448))
    assert(fs.mkdir_p(bob, 448))
    rb.write(alice .. "/s.lua", SEALS)
    rb.write(bob .. "/s.lua", SEALS)
    -- alice starts the run: her key file is made on first need (0600)
    local r = rb.exec({ "s.lua" }, { state = url, cwd = alice, yes = true, env = env_with { HOME = alice, OUT = alice .. "/out" } })
    assert.are.equal(3, r.code, r.stderr)
    local akey = alice .. "/.config/runbook/secret.key"
    assert.are.equal(384, fs.stat(akey).mode & 511, "alice's key file is 0600")
    local akid = kid_of(akey)
    local body = srv:psql("SELECT body FROM runbook_events WHERE type = 'step.memo'", db)
    assert.truthy(body:find('"kid":"' .. akid .. '"', 1, true), body)
    -- neither the key nor anything but its id is in the database
    local all = srv:psql("SELECT string_agg(body, ' ') FROM runbook_events", db) .. srv:psql("SELECT coalesce(string_agg(line, ' '), '') FROM runbook_log", db)
      .. srv:psql("SELECT string_agg(holder || created_by, ' ') FROM runbook_runs, runbook_locks", db)
    local araw = rb.read(akey):gsub("%s+$", "")
    assert.is_nil(all:find(araw, 1, true), "alice's key is not in the database")
    assert.is_nil(all:find(crypto.base64_encode(crypto.hex_decode(araw)), 1, true))
    assert.are.equal(0, rb.run({ "confirm", "last", "M", "--state", url }, { cwd = bob, env = env_with { HOME = bob } }).code)
    -- bob has a key of his own: the resume says which key the run needs
    assert(fs.mkdir_p(bob .. "/.config/runbook", 448))
    local bkey = bob .. "/.config/runbook/secret.key"
    rb.write(bkey, crypto.random_hex(32), 384)
    r = rb.exec({ "s.lua" }, { state = url, cwd = bob, env = env_with { HOME = bob, OUT = bob .. "/out" } })
    assert.are.equal(1, r.code, r.stderr)
    local msg = r.stdout .. r.stderr
    assert.truthy(msg:find("was sealed with key " .. akid .. ", but the current key is " .. kid_of(bkey), 1, true), msg)
    assert.is_nil(msg:find(araw, 1, true))
    assert.is_nil(rb.exists(bob .. "/out") or nil, "C could not open A's outputs")
    -- without any key, it names the key id too
    os.remove(bkey)
    r = rb.exec({ "s.lua" }, { state = url, cwd = bob, env = env_with { HOME = bob, OUT = bob .. "/out" } })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy((r.stdout .. r.stderr):find("sealed with key " .. akid .. ", but no key is available: set RUNBOOK_SECRET_KEY or put that key in "
      .. bkey .. " (RUNBOOK_SECRET_KEY_FILE)", 1, true), r.stdout .. r.stderr)
    -- with alice's key handed over out of band (the variable, never an argument), bob finishes the run
    r = rb.exec({ "s.lua" }, { state = url, cwd = bob, env = env_with { HOME = bob, OUT = bob .. "/out", RUNBOOK_SECRET_KEY = araw } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal(32, #rb.read(bob .. "/out"))
    assert.is_nil(rb.exists(bob .. "/.config/runbook/secret.key") or nil, "no key file was made for bob")
    assert.are.equal(0, rb.run({ "audit", "verify", "last", "--state", url }, { cwd = bob, env = env_with { HOME = bob } }).code)
    rb.rmtree(dir)
  end)
end)
