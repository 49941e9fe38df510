-- Backups on object storage: pg.backup, verify_backup, restore and
-- retention through client:store{} against a real PostgreSQL and a real
-- moto_server that checks SigV4 signatures. Small parts and odd read sizes
-- so every path crosses part and range boundaries.
local pgserver = require "pgserver"
local s3server = require "s3server"
local rbtest = require "rbtest"
local pg = require "runbook.pg"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local audit = require "runbook._engine.audit"
local crypto = require "runbook._crypto"
local host = require "runbook._host"

local BUCKET = "pg-backups"
local PART = 256 * 1024

describe("runbook.pg backups on object storage", function()
  local srv, s3srv, client, url, dir

  setup(function()
    srv = pgserver.start()
    s3srv = s3server.start()
    client = s3.connect { endpoint = s3srv.endpoint, region = s3srv.region, access_key = s3srv.access_key,
      secret_key = secret.wrap(s3srv.secret_key) }
    client:ensure_bucket(BUCKET)
    url = srv:createdb("app")
    local db <close> = pg.connect(url)
    db:exec([[CREATE TABLE laws (id serial PRIMARY KEY, name text NOT NULL, meta jsonb);
      CREATE TABLE articles (id bigserial PRIMARY KEY, law_id int REFERENCES laws(id), body text);
      INSERT INTO laws (name, meta) SELECT 'law ' || g, jsonb_build_object('n', g) FROM generate_series(1, 2000) g;
      INSERT INTO articles (law_id, body) SELECT 1 + g % 2000, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
        FROM generate_series(1, 40000) g;]])
    dir = rbtest.tmpdir("pgs3")
  end)

  teardown(function()
    if client then client:close() end
    if s3srv then s3srv:stop() end
    if srv then srv:stop() end
    if dir then rbtest.rmtree(dir) end
  end)

  before_each(function() audit.reset() end)

  local function fingerprint(u)
    local db <close> = pg.connect(u)
    local out = {}
    for _, t in ipairs { "laws", "articles" } do
      out[t] = db:value("SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM " .. t .. " t")
    end
    return out
  end

  local function keys(prefix)
    local out = {}
    for _, o in ipairs(client:list { bucket = BUCKET, prefix = prefix }) do out[#out + 1] = o.key end
    return out
  end

  local function uploads(prefix)
    local out = {}
    for _, u in ipairs(client:list_multipart { bucket = BUCKET, prefix = prefix }) do out[#out + 1] = u.key end
    return out
  end

  local function actions(verb)
    local out = {}
    for _, a in ipairs(audit.recorded) do
      if a.verb == verb then out[#out + 1] = a end
    end
    return out
  end

  it("streams a backup up in parts, verifies it and restores it into a new database", function()
    local store = client:store { bucket = BUCKET, prefix = "tezca", part_size = PART, read_size = 100003 }
    local res = pg.backup { url = url, store = store, name = "daily/app.dump" }
    assert.are.equal("s3://pg-backups/tezca/daily/app.dump", res.location)
    assert.is_true(res.size > 4 * PART, "a dump of " .. res.size .. " bytes")
    assert.are.equal(math.ceil(res.size / PART), res.parts)
    -- what S3 holds is exactly what was hashed
    local body, info = client:get { bucket = BUCKET, key = "tezca/daily/app.dump" }
    assert.are.equal(res.size, #body)
    assert.are.equal(res.sha256, crypto.sha256(body))
    assert.are.equal(res.sha256, info.sha256)
    local a = actions("pg_dump")[1]
    assert.are.same({ "backup", "app", res.location, res.size, res.sha256 }, { a.kind, a.database, a.location, a.size, a.sha256 })
    assert.are.equal(1, #actions("put"))
    assert.is_true(actions("put")[1].multipart)

    local listed = store:list("daily/")
    assert.are.equal(1, #listed)
    assert.are.same({ "daily/app.dump", res.size }, { listed[1].name, listed[1].size })
    assert.is_true(math.abs(listed[1].mtime - host.now()) < 120, "mtime " .. listed[1].mtime)

    local v = pg.verify_backup { store = store, name = "daily/app.dump", sha256 = res.sha256 }
    assert.are.same({ 2, 2, "app", res.sha256, "s3://pg-backups/tezca/daily/app.dump" },
      { v.tables, v.table_data, v.database, v.sha256, v.location })

    local target = srv:createdb("drill")
    local r = pg.restore { url = target, store = store, name = "daily/app.dump" }
    assert.are.equal("s3://pg-backups/tezca/daily/app.dump", r.location)
    assert.are.same(fingerprint(url), fingerprint(target))
  end)

  it("backs up an empty database in one PUT", function()
    local empty = srv:createdb("empty")
    local store = client:store { bucket = BUCKET, prefix = "small/" }
    local res = pg.backup { url = empty, store = store, name = "empty.dump" }
    assert.are.equal(1, res.parts)
    assert.is_false(actions("put")[1].multipart)
    local v = pg.verify_backup { store = store, name = "empty.dump", sha256 = res.sha256 }
    assert.are.same({ 0, "empty" }, { v.tables, v.database })
  end)

  it("leaves no object and no unfinished upload when pg_dump fails midway", function()
    -- a pg_dump that sends a good part of the archive, then dies
    local tool = dir .. "/pg_dump_dies"
    rbtest.write(tool, '#!/bin/sh\npg_dump "$@" | head -c 1500000\necho "pg_dump: error: out of disk" >&2\nexit 1\n', 448)
    local store = client:store { bucket = BUCKET, prefix = "fail/", part_size = PART }
    local ok, err = pcall(pg.backup, { url = url, store = store, name = "app.dump", pg_dump = tool })
    assert.is_false(ok)
    assert.are.equal("pg_dump of app failed (exit 1): pg_dump: error: out of disk; nothing was kept at s3://pg-backups/fail/app.dump", err.message)
    assert.are.same({}, keys("fail/"))
    assert.are.same({}, uploads("fail/"))
    local ab = actions("abort-multipart")
    assert.are.equal(1, #ab)
    assert.are.equal(math.floor(1500000 / PART), ab[1].parts)
    assert.is_nil(ab[1].error)
  end)

  it("aborts what a killed attempt left of the same object before writing it again", function()
    local store = client:store { bucket = BUCKET, prefix = "resume/", part_size = PART }
    local id = client:create_multipart { bucket = BUCKET, key = "resume/app.dump" }
    client:upload_part { bucket = BUCKET, key = "resume/app.dump", upload_id = id, part_number = 1, body = string.rep("x", 2048) }
    assert.are.same({ "resume/app.dump" }, uploads("resume/"))
    local res = pg.backup { url = url, store = store, name = "app.dump" }
    assert.are.same({}, uploads("resume/"))
    assert.are.same({ "resume/app.dump" }, keys("resume/"))
    assert.are.equal(res.sha256, pg.verify_backup { store = store, name = "app.dump", sha256 = res.sha256 }.sha256)
  end)

  it("rejects an altered backup and one replaced while being read", function()
    local store = client:store { bucket = BUCKET, prefix = "alter/", read_size = 65536 }
    local res = pg.backup { url = url, store = store, name = "app.dump" }
    local body = client:get { bucket = BUCKET, key = "alter/app.dump" }
    local altered = body:sub(1, 200000) .. string.char((body:byte(200001) + 1) % 256) .. body:sub(200002)
    client:put { bucket = BUCKET, key = "alter/app.dump", body = altered }
    local ok, err = pcall(pg.verify_backup, { store = store, name = "app.dump", sha256 = res.sha256 })
    assert.is_false(ok)
    assert.are.equal(string.format("s3://pg-backups/alter/app.dump has sha256 %s, expected %s: the backup was altered or damaged",
      crypto.sha256(altered), res.sha256), err.message)

    local reader = store:open("app.dump")
    assert.are.equal(altered:sub(1, 1000), reader:read(1000))
    client:put { bucket = BUCKET, key = "alter/app.dump", body = body }
    assert.are.equal(altered:sub(1001, 65536), reader:read(1048576))
    local ok2, err2 = pcall(reader.read, reader, 1000)
    assert.is_false(ok2)
    assert.are.equal("PreconditionFailed", err2.code)
    assert.matches("^s3: get s3://pg%-backups/alter/app%.dump: PreconditionFailed.*: the object changed while it was being read$", err2.message)
  end)

  it("names a missing backup", function()
    local store = client:store { bucket = BUCKET, prefix = "none/" }
    local ok, err = pcall(pg.verify_backup, { store = store, name = "gone.dump" })
    assert.is_false(ok)
    assert.are.equal("cannot open s3://pg-backups/none/gone.dump: no such object", err.message)
  end)

  it("keeps object names inside the prefix", function()
    local store = client:store { bucket = BUCKET, prefix = "x/" }
    local ok, err = pcall(store.writer, store, "../escape.dump")
    assert.is_false(ok)
    assert.matches("object name must be a relative path without '%.%.'", err)
  end)

  describe("retention", function()
    it("deletes old backups under the prefix, keeps the newest and aborts abandoned uploads", function()
      local store = client:store { bucket = BUCKET, prefix = "ret" }
      -- three backups in three different seconds (S3 times have one-second
      -- resolution): each written once the clock has passed the last one's
      local last
      for _, name in ipairs { "daily/a.dump", "daily/b.dump", "daily/c.dump" } do
        if last then
          rbtest.wait_for("the second after " .. last, function() return math.floor(host.now()) > last end)
        end
        store:writer(name):finish()
        for _, o in ipairs(store:list("daily/")) do
          if o.name == name then last = math.floor(o.mtime) end
        end
      end
      client:put { bucket = BUCKET, key = "ret/weekly/w.dump", body = "w" }
      client:put { bucket = BUCKET, key = "other/daily/o.dump", body = "o" }
      client:create_multipart { bucket = BUCKET, key = "ret/daily/killed.dump" }
      local mt = {}
      for _, o in ipairs(store:list("daily/")) do mt[o.name] = o.mtime end
      assert.is_true(mt["daily/a.dump"] < mt["daily/b.dump"] and mt["daily/b.dump"] < mt["daily/c.dump"])
      -- 30 days after b was written, less half a second: a is older than 30 days, b and c are not
      local now = mt["daily/b.dump"] + 30 * 86400 - 0.5
      audit.reset()

      local dry
      audit.set_sink { dry_run = true, action = function() end, log = function() end, progress = function() end }
      local ok, res = pcall(pg.retention, { store = store, prefix = "daily/", keep_days = 30, now = now })
      audit.set_sink(nil)
      assert.is_true(ok, tostring(res))
      dry = res
      assert.are.same({ "daily/a.dump" }, dry.deleted)
      assert.are.same({ "daily/killed.dump" }, dry.aborted)
      assert.are.same({ "ret/daily/a.dump", "ret/daily/b.dump", "ret/daily/c.dump", "ret/weekly/w.dump" }, keys("ret/"))
      assert.are.same({ "ret/daily/killed.dump" }, uploads("ret/"))

      res = pg.retention { store = store, prefix = "daily/", keep_days = 30, now = now }
      assert.are.same({ "daily/a.dump" }, res.deleted)
      assert.are.same({ "daily/b.dump", "daily/c.dump" }, res.kept)
      assert.are.same({ "daily/killed.dump" }, res.aborted)
      assert.are.same({ "ret/daily/b.dump", "ret/daily/c.dump", "ret/weekly/w.dump" }, keys("ret/"))
      assert.are.same({ "other/daily/o.dump" }, keys("other/"))
      assert.are.same({}, uploads("ret/"))
      local del = actions("delete")
      assert.are.equal("deleted s3://pg-backups/ret/daily/a.dump (30 days old)", del[#del].summary)
      -- moto reports every upload as initiated at 2010-11-10T20:48:33Z
      local hours = (math.floor(now) - 1289422113) // 3600
      assert.are.equal(string.format("aborted the unfinished upload of s3://pg-backups/ret/daily/killed.dump (started %d hours ago)", hours),
        actions("abort-upload")[1].summary)
      -- an upload started after the cutoff is left alone
      client:create_multipart { bucket = BUCKET, key = "ret/daily/running.dump" }
      assert.are.same({}, store:stale_uploads(1289422113))
      assert.are.equal("daily/running.dump", store:stale_uploads(1289422114)[1].name)
      res = pg.retention { store = store, prefix = "daily/", keep_days = 30, now = now, abandon_after = now - 1289422113 }
      assert.are.same({}, res.aborted)
      assert.are.same({ "ret/daily/running.dump" }, uploads("ret/"))
      client:abort_multipart { bucket = BUCKET, key = "ret/daily/running.dump", upload_id = client:list_multipart { bucket = BUCKET, prefix = "ret/" }[1].upload_id }

      -- a year later keep_min still keeps the newest
      res = pg.retention { store = store, prefix = "daily/", keep_days = 30, keep_min = 1, now = now + 365 * 86400 }
      assert.are.same({ "daily/b.dump" }, res.deleted)
      assert.are.same({ "ret/daily/c.dump", "ret/weekly/w.dump" }, keys("ret/"))
    end)
  end)
end)
