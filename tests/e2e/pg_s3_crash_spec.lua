-- A backup to object storage killed with SIGKILL in the middle of its
-- multipart upload, then the same command again: while dead, the bucket
-- holds no object (only an unfinished upload, which S3 never lists); the
-- resume aborts that upload, writes the backup once, and the object
-- verifies, restores to the source's rows, and matches the journal's
-- recorded size and sha256. Real runbook binary, PostgreSQL and moto.
local pgserver = require "pgserver"
local s3server = require "s3server"
local rbtest = require "rbtest"
local pg = require "runbook.pg"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local crypto = require "runbook._crypto"
local proc = require "runbook._proc"

local BOOK = [[
local pg = require "runbook.pg"
local s3 = require "runbook.s3"

runbook "s3-backup" {
  params = {
    url = { secret = true, env = "E2E_PG_URL" },
    endpoint = {}, access_key = {}, pg_dump = {},
    s3_secret = { secret = true, env = "E2E_S3_SECRET" },
  },
}

local function store(p)
  local c = s3.connect { endpoint = p.endpoint, access_key = p.access_key, secret_key = p.s3_secret }
  return c:store { bucket = "backups", prefix = "nightly", part_size = 262144, read_size = 300007 }, c
end

step "backup" {
  title = "pg_dump -Fc to object storage",
  run = function(ctx)
    local st, c <close> = store(ctx.params)
    local name = ctx:once("name", function() return "app-" .. os.date("!%Y%m%dT%H%M%SZ") .. ".dump" end)
    local res = pg.backup { url = ctx.params.url, store = st, name = name, pg_dump = ctx.params.pg_dump }
    return { name = name, size = res.size, sha256 = res.sha256 }
  end,
}

step "verify" {
  title = "pg_restore --list and the recorded sha256",
  run = function(ctx)
    local st, c <close> = store(ctx.params)
    local b = ctx.outputs.backup
    return { tables = pg.verify_backup { store = st, name = b.name, sha256 = b.sha256 }.tables }
  end,
}
]]

describe("a backup to object storage after SIGKILL", function()
  local pgsrv, s3srv, client, dir

  setup(function()
    pgsrv = pgserver.start()
    s3srv = s3server.start()
    client = s3.connect { endpoint = s3srv.endpoint, region = s3srv.region, access_key = s3srv.access_key,
      secret_key = secret.wrap(s3srv.secret_key) }
    client:ensure_bucket("backups")
  end)

  teardown(function()
    if client then client:close() end
    if s3srv then s3srv:stop() end
    if pgsrv then pgsrv:stop() end
  end)

  before_each(function() dir = rbtest.tmpdir("s3crash") end)
  after_each(function() rbtest.rmtree(dir) end)

  local function wait_for(fn, what, timeout)
    return rbtest.wait_for(what, fn, { timeout = timeout })
  end

  local function fingerprint(u)
    local db <close> = pg.connect(u)
    return db:value("SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM docs t")
  end

  it("leaves no object while dead and backs up exactly once on resume", function()
    local url = pgsrv:createdb("app")
    do
      local db <close> = pg.connect(url)
      db:exec([[CREATE TABLE docs (id int PRIMARY KEY, body text);
        INSERT INTO docs SELECT g, md5(g::text) || md5((g * 3)::text) || md5((g * 5)::text) FROM generate_series(1, 60000) g;]])
    end
    -- pg_dump as usual, unless the "die" file exists: then the archive
    -- stops after 1.5 MB and the tool hangs, as if the network stalled
    local tool, die, hung, hung_pid = dir .. "/pg_dump", dir .. "/die", dir .. "/hung", dir .. "/hung.pid"
    rbtest.write(tool, string.format([[#!/bin/sh
if [ -e %s ]; then
  pg_dump "$@" | head -c 1500000
  echo $$ > %s
  touch %s
  exec sleep 30
fi
exec pg_dump "$@"
]], die, hung_pid, hung), 448)
    rbtest.write(die, "")
    local book = dir .. "/book.lua"
    rbtest.write(book, BOOK)
    local args = { "exec", book, "--state", dir .. "/state", "--param", "endpoint=" .. s3srv.endpoint,
      "--param", "access_key=" .. s3srv.access_key, "--param", "pg_dump=" .. tool }
    local env = { E2E_PG_URL = url, E2E_S3_SECRET = s3srv.secret_key }

    local p = rbtest.start(args, { cwd = dir, env = env })
    wait_for(function() return rbtest.exists(hung) end, "the stalled pg_dump")
    -- all 1.5 MB read: five 256 KiB parts go up, the rest stays buffered
    local upload
    wait_for(function()
      upload = client:list_multipart { bucket = "backups", prefix = "nightly/" }[1]
      return upload ~= nil
    end, "the multipart upload")
    wait_for(function()
      local res = client:_must { verb = "list-parts", method = "GET", bucket = "backups", key = upload.key,
        query = { uploadId = upload.upload_id } }
      local parts = select(2, res.body:gsub("<Part>", ""))
      return parts >= 5
    end, "five parts uploaded")
    p:kill("KILL")
    p:wait()
    -- the stalled tool outlives the killed runbook: stop it by its pid (not by name, which could hit others' processes)
    local k = assert(proc.spawn { argv = { "kill", (assert(rbtest.read(hung_pid)):gsub("%s+$", "")) } })
    k:communicate {}

    -- dead mid-upload: nothing that looks like a backup
    assert.are.same({}, client:list { bucket = "backups", prefix = "nightly/" })
    local left = client:list_multipart { bucket = "backups", prefix = "nightly/" }
    assert.are.equal(1, #left)
    local key = left[1].key
    assert.matches("^nightly/app%-%d+T%d+Z%.dump$", key)

    os.remove(die)
    local r = rbtest.run(args, { cwd = dir, env = env, timeout = 120 })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)

    -- one object, under the name chosen before the kill; no upload left
    local objs = client:list { bucket = "backups", prefix = "nightly/" }
    assert.are.equal(1, #objs)
    assert.are.equal(key, objs[1].key)
    assert.are.same({}, client:list_multipart { bucket = "backups", prefix = "nightly/" })

    -- the journal: the leftover aborted, one backup with the object's size and hash
    local body = client:get { bucket = "backups", key = key }
    local backups, aborted = {}, {}
    for _, ev in ipairs((rbtest.journal(dir .. "/state"))) do
      if ev.type == "action" and ev.verb == "pg_dump" then backups[#backups + 1] = ev end
      if ev.type == "action" and ev.verb == "abort-multipart" then aborted[#aborted + 1] = ev end
    end
    assert.are.equal(1, #backups)
    assert.are.same({ #body, crypto.sha256(body), "s3://backups/" .. key }, { backups[1].size, backups[1].sha256, backups[1].location })
    assert.are.equal(1, #aborted)
    assert.are.equal(key, aborted[1].key)

    -- and it is the database
    local st = client:store { bucket = "backups", prefix = "nightly" }
    local target = pgsrv:createdb("restored")
    pg.restore { url = target, store = st, name = key:sub(#"nightly/" + 1) }
    assert.are.equal(fingerprint(url), fingerprint(target))

    local a = rbtest.run({ "audit", "verify", "last", "--state", dir .. "/state" }, { cwd = dir })
    assert.are.equal(0, a.code, a.stdout .. a.stderr)
    -- no credential in the journal
    local _, path = rbtest.journal(dir .. "/state")
    local text = assert(rbtest.read(path))
    assert.is_nil(text:find(s3srv.secret_key, 1, true))
    assert.is_nil(text:find(url, 1, true))
  end)
end)
