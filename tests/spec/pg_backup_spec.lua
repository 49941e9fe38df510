-- Backups on a real PostgreSQL with the real pg_dump and pg_restore:
-- streamed to a store through the writer interface, size and sha256
-- recorded, checked with pg_restore --list, restored and compared with the
-- source; failures leave nothing that looks complete; retention by age.
local pgserver = require "pgserver"
local rbtest = require "rbtest"
local pg = require "runbook.pg"
local audit = require "runbook._engine.audit"
local crypto = require "runbook._crypto"
local proc = require "runbook._proc"
local fs = require "runbook._fs"

local TABLES = { "laws", "articles", "blobs" }

describe("runbook.pg backups", function()
  local srv, url, dir, store

  setup(function()
    srv = pgserver.start()
    url = srv:createdb("app")
    local db <close> = pg.connect(url)
    db:exec([[CREATE TABLE laws (id serial PRIMARY KEY, name text NOT NULL, meta jsonb, enacted date);
      CREATE TABLE articles (id bigserial PRIMARY KEY, law_id int REFERENCES laws(id), body text, weight numeric(10,3));
      CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
      CREATE INDEX articles_law ON articles (law_id);
      INSERT INTO laws (name, meta, enacted) SELECT 'law ' || g, jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)), date '2000-01-01' + g FROM generate_series(1, 2000) g;
      INSERT INTO articles (law_id, body, weight) SELECT 1 + g % 2000, md5(g::text) || repeat(md5((g * 7)::text), 3), g / 7.0 FROM generate_series(1, 60000) g;
      INSERT INTO blobs SELECT g, decode(md5(g::text) || md5((g+1)::text), 'hex') FROM generate_series(1, 500) g;]])
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function()
    audit.reset()
    dir = rbtest.tmpdir("bk")
    store = pg.local_store(dir .. "/store")
  end)

  after_each(function()
    rbtest.rmtree(dir)
  end)

  local function fingerprint(u)
    local db <close> = pg.connect(u)
    local out = {}
    for _, t in ipairs(TABLES) do
      out[t] = db:value("SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM " .. t .. " t")
    end
    return out
  end

  local function sha256_file(path)
    return crypto.sha256(assert(rbtest.read(path)))
  end

  local function files_under(root)
    local p = assert(proc.spawn { argv = { "find", root, "-type", "f" } })
    local r = p:communicate {}
    local out = {}
    for l in r.stdout:gmatch("[^\n]+") do out[#out + 1] = l:sub(#root + 2) end
    table.sort(out)
    return out
  end

  it("streams pg_dump -Fc into the store, verifies it and restores it into a new database", function()
    local res = pg.backup { url = url, store = store, prefix = "pg-backups/app/" }
    assert.matches("^pg%-backups/app/app%-%d%d%d%d%d%d%d%dT%d%d%d%d%d%dZ%.dump$", res.name)
    local path = dir .. "/store/" .. res.name
    assert.are.equal(path, res.location)
    assert.are.equal(fs.stat(path).size, res.size)
    assert.are.equal(sha256_file(path), res.sha256)
    assert.are.equal("PGDMP", rbtest.read(path):sub(1, 5))
    assert.are.same({ res.name }, files_under(dir .. "/store"))
    local a = audit.recorded[#audit.recorded]
    assert.are.same({ "backup", "pg_dump", "app", path, res.size, res.sha256 }, { a.kind, a.verb, a.database, a.location, a.size, a.sha256 })
    assert.are.equal(string.format("backed up app to %s: %.1f MB, sha256 %s…", path, res.size / 1048576, res.sha256:sub(1, 12)), a.summary)

    local v = pg.verify_backup { store = store, name = res.name, sha256 = res.sha256 }
    assert.are.equal(3, v.tables)
    assert.are.equal(3, v.table_data)
    assert.are.equal("app", v.database)
    assert.are.equal(res.sha256, v.sha256)
    assert.is_true(v.entries >= 10)

    local target = srv:createdb("restored")
    local r = pg.restore { url = target, store = store, name = res.name }
    assert.are.equal("restored", r.database)
    assert.are.same(fingerprint(url), fingerprint(target))
    assert.are.equal(string.format("restored %s into restored (%.1f s)", path, r.seconds), audit.recorded[#audit.recorded].summary)
    -- clean restores over existing objects
    local db <close> = pg.connect(target)
    db:exec("DELETE FROM articles WHERE id > 10")
    pg.restore { url = target, path = path, clean = true }
    assert.are.same(fingerprint(url), fingerprint(target))
  end)

  it("writes through any writer (the interface object storage implements)", function()
    local chunks, finished, aborted = {}, false, false
    local h = require("runbook._pg").hasher()
    local writer = {
      location = "mem://backup",
      write = function(_, c) chunks[#chunks + 1] = c h:update(c) end,
      finish = function() finished = true return { size = h:size(), sha256 = h:hex(), location = "mem://backup" } end,
      abort = function() aborted = true end,
    }
    local res = pg.backup { url = url, to = writer }
    assert.is_true(finished)
    assert.is_false(aborted)
    local data = table.concat(chunks)
    assert.are.equal(#data, res.size)
    assert.are.equal(crypto.sha256(data), res.sha256)
    assert.are.equal("mem://backup", res.location)
    -- and the bytes are a valid archive
    rbtest.write(dir .. "/mem.dump", data)
    assert.are.equal(3, pg.verify_backup { path = dir .. "/mem.dump" }.tables)
  end)

  it("leaves nothing that looks complete when pg_dump fails", function()
    local bad = srv:url("app", "rbtest", "wrong-password-77")
    local ok, err = pcall(pg.backup, { url = bad, store = store, name = "x/app.dump" })
    assert.is_false(ok)
    assert.are.equal("backup", err.kind)
    assert.are.equal("pg_dump", err.code)
    assert.are.equal(string.format('pg_dump of app failed (exit 1): pg_dump: error: connection to server at "127.0.0.1", port %d failed: FATAL:  password authentication failed for user "rbtest"; nothing was kept at %s/store/x/app.dump',
      srv.port, dir), err.message)
    assert.is_nil(err.message:find("wrong-password-77", 1, true))
    assert.are.same({}, files_under(dir .. "/store"))
    assert.are.same({}, store:list(""))
  end)

  it("aborts the writer when writing fails midway and stops pg_dump", function()
    local writes, aborted = 0, false
    local inner = store:writer("mid/app.dump")
    local writer = {
      write = function(_, c)
        writes = writes + 1
        if writes == 2 then error({ kind = "store", message = "upload failed: connection reset" }) end
        inner:write(c)
      end,
      finish = function() return inner:finish() end,
      abort = function() aborted = true inner:abort() end,
    }
    local ok, err = pcall(pg.backup, { url = url, to = writer })
    assert.is_false(ok)
    assert.are.equal("upload failed: connection reset", err.message)
    assert.is_true(aborted)
    assert.are.same({}, files_under(dir .. "/store"))
    -- no pg_dump of this server left behind
    local p = assert(proc.spawn { argv = { "pgrep", "-f", "pg_dump --format=custom .*port='" .. srv.port .. "'" } })
    assert.are.equal("", p:communicate {}.stdout)
  end)

  it("records what it would do under --dry-run", function()
    local actions = {}
    audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
    local ok, res = pcall(pg.backup, { url = url, store = store, name = "app.dump" })
    audit.set_sink(nil)
    assert.is_true(ok, tostring(res))
    assert.is_true(res.dry_run)
    assert.are.equal("would back up app to " .. dir .. "/store/app.dump", actions[1].summary)
    assert.are.same({}, files_under(dir .. "/store"))
  end)

  it("rejects a damaged or altered backup", function()
    rbtest.write(dir .. "/store/junk.dump", string.rep("not a dump\n", 100))
    local ok, err = pcall(pg.verify_backup, { store = store, name = "junk.dump" })
    assert.is_false(ok)
    assert.are.equal(dir .. '/store/junk.dump is neither a pg_dump custom-format archive nor a plain pg_dump: it starts with neither "PGDMP" nor "-- PostgreSQL database dump"', err.message)
    -- an archive's magic and then garbage: pg_restore --list says why
    rbtest.write(dir .. "/store/junk2.dump", "PGDMP" .. string.rep("\255", 100))
    ok, err = pcall(pg.verify_backup, { store = store, name = "junk2.dump" })
    assert.is_false(ok)
    assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/store/junk2%.dump is not a readable pg_dump archive: pg_restore: error: ", err.message)
    local res = pg.backup { url = url, store = store, name = "good.dump" }
    local ok2, err2 = pcall(pg.verify_backup, { store = store, name = "good.dump", sha256 = string.rep("0", 64) })
    assert.is_false(ok2)
    assert.are.equal(string.format("%s/store/good.dump has sha256 %s, expected %s: the backup was altered or damaged",
      dir, res.sha256, string.rep("0", 64)), err2.message)
  end)

  it("backs up and verifies an empty database", function()
    local empty = srv:createdb("empty")
    local res = pg.backup { url = empty, store = store, name = "empty.dump" }
    local v = pg.verify_backup { store = store, name = "empty.dump", sha256 = res.sha256 }
    assert.are.same({ 0, 0, "empty", "CUSTOM" }, { v.tables, v.table_data, v.database, v.format })
  end)

  it("verifies and restores by streaming from a store without local paths", function()
    local res = pg.backup { url = url, store = store, name = "s.dump" }
    -- the same store with no path(): as object storage would be
    local opens = 0
    local streamed = {
      location = function(_, n) return "remote://" .. n end,
      open = function(_, n) opens = opens + 1 return store:open(n) end,
    }
    local v = pg.verify_backup { store = streamed, name = "s.dump", sha256 = res.sha256 }
    assert.are.equal(3, v.tables)
    assert.are.equal(res.sha256, v.sha256)
    local target = srv:createdb("streamed")
    pg.restore { url = target, store = streamed, name = "s.dump" }
    assert.are.same(fingerprint(url), fingerprint(target))
    -- the format is told from the first bytes of the one read: each object is fetched once
    assert.are.equal(2, opens)
    -- a failing restore names the target and pg_restore's reason
    local ok, err = pcall(pg.restore, { url = target, store = streamed, name = "s.dump" })
    assert.is_false(ok)
    assert.matches('^restore of remote://s%.dump into streamed failed %(exit 1%): pg_restore: error: could not execute query: ERROR:  relation "%w+" already exists$', err.message)
  end)

  describe("plain SQL dumps (pg_dump > backup.sql)", function()
    local function plain_dump(path)
      local p = assert(proc.spawn { argv = { "pg_dump", "-h", srv.sock, "-p", tostring(srv.port), "-U", "postgres", "-d", "app",
        "-f", path }, stdin = "null" })
      local r = p:communicate { timeout = 120 }
      assert.are.equal(0, r.code, r.stderr)
    end

    it("tells the formats apart by their first bytes", function()
      assert(fs.mkdir_p(dir .. "/store", 448))
      plain_dump(dir .. "/store/app.sql")
      pg.backup { url = url, store = store, name = "app.dump" }
      assert.are.equal("plain", pg.backup_format { store = store, name = "app.sql" })
      assert.are.equal("custom", pg.backup_format { path = dir .. "/store/app.dump" })
      rbtest.write(dir .. "/store/app.sql.gz", "\31\139\8\0\0\0\0\0\0\3" .. string.rep("\0", 40))
      local ok, err = pcall(pg.backup_format, { store = store, name = "app.sql.gz" })
      assert.is_false(ok)
      assert.are.equal(dir .. "/store/app.sql.gz is neither a pg_dump custom-format archive (it would start with PGDMP) "
        .. "nor a plain SQL dump (it is gzip-compressed: gunzip it first)", err.message)
      rbtest.write(dir .. "/store/empty.sql", "")
      ok, err = pcall(pg.restore, { url = url, store = store, name = "empty.sql" })
      assert.is_false(ok)
      assert.matches("empty%.sql is neither .* %(it is empty%)$", err.message)
    end)

    it("verifies a plain dump, and refuses one cut short or not pg_dump's", function()
      local path = dir .. "/app.sql"
      plain_dump(path)
      local text = rbtest.read(path)
      local v = pg.verify_backup { path = path, sha256 = crypto.sha256(text) }
      assert.are.same({ "PLAIN", 3, 3, crypto.sha256(text) }, { v.format, v.tables, v.table_data, v.sha256 })
      local a = audit.recorded[#audit.recorded]
      assert.are.same({ "backup", "verify", "PLAIN" }, { a.kind, a.verb, a.format })
      rbtest.write(dir .. "/cut.sql", text:sub(1, math.floor(#text / 2)))
      local ok, err = pcall(pg.verify_backup, { path = dir .. "/cut.sql" })
      assert.is_false(ok)
      assert.are.equal(dir .. '/cut.sql is cut short: a plain pg_dump ends with "-- PostgreSQL database dump complete"', err.message)
      rbtest.write(dir .. "/mine.sql", "CREATE TABLE x (id int);\n")
      ok, err = pcall(pg.verify_backup, { path = dir .. "/mine.sql" })
      assert.is_false(ok)
      assert.are.equal(dir .. '/mine.sql is neither a pg_dump custom-format archive nor a plain pg_dump: it starts with neither "PGDMP" nor "-- PostgreSQL database dump"', err.message)
      ok, err = pcall(pg.verify_backup, { path = path, sha256 = string.rep("0", 64) })
      assert.is_false(ok)
      assert.are.equal("checksum", err.code)
    end)

    it("restores a plain dump with psql from a file and streamed from a store, without its OWNER TO statements", function()
      local path = dir .. "/app.sql"
      plain_dump(path)
      -- the superuser's dump names the tables' owner
      assert.truthy(rbtest.read(path):find("OWNER TO " .. pgserver.ROLE .. ";", 1, true))
      local target = srv:createdb("plain_file")
      local r = pg.restore { url = target, path = path }
      assert.are.same({ "plain", "plain_file" }, { r.format, r.database })
      assert.truthy(r.owner_statements_skipped >= 3)
      assert.are.same(fingerprint(url), fingerprint(target))
      local a = audit.recorded[#audit.recorded]
      assert.are.same({ "restore", "plain", "psql", r.owner_statements_skipped }, { a.verb, a.format, a.tool, a.owner_statements_skipped })

      local opens = 0
      local streamed = {
        location = function(_, n) return "remote://" .. n end,
        open = function(_, n) opens = opens + 1 return pg.local_store(dir):open(n) end,
      }
      local v = pg.verify_backup { store = streamed, name = "app.sql", sha256 = crypto.sha256(rbtest.read(path)) }
      assert.are.same({ "PLAIN", 3 }, { v.format, v.tables })
      local target2 = srv:createdb("plain_streamed")
      pg.restore { url = target2, store = streamed, name = "app.sql", no_owner = false }
      assert.are.same(fingerprint(url), fingerprint(target2))
      assert.are.equal(2, opens)
      -- a failing restore stops at the first error, and names it
      local ok, err = pcall(pg.restore, { url = target2, store = streamed, name = "app.sql" })
      assert.is_false(ok)
      assert.matches('^restore of remote://app%.sql into plain_streamed failed %(exit 3%): ERROR:  relation "%w+" already exists$',
        err.message)
    end)

    it("restores in one transaction when asked: a failure leaves nothing", function()
      local path = dir .. "/app.sql"
      plain_dump(path)
      local target = srv:createdb("plain_tx")
      local db <close> = pg.connect(target)
      db:exec("CREATE TABLE blobs (id int)")
      local ok, err = pcall(pg.restore, { url = target, path = path, single_transaction = true })
      assert.is_false(ok)
      assert.matches('ERROR:  relation "blobs" already exists$', err.message)
      assert.are.equal(0, db:value("SELECT count(*) FROM pg_tables WHERE tablename IN ('laws', 'articles')"))
    end)
  end)

  describe("retention", function()
    local DAY = 86400
    local now = 1900000000

    local function put(name, age_days)
      local path = dir .. "/store/" .. name
      assert(fs.mkdir_p(path:match("^(.*)/"), 448))
      rbtest.write(path, "x")
      local p = assert(proc.spawn { argv = { "touch", "-d", "@" .. (now - age_days * DAY), path } })
      assert.are.equal(0, p:communicate {}.code)
    end

    it("deletes backups older than keep_days under the prefix, keeping the newest", function()
      put("pg-backups/app/a-40.dump", 40)
      put("pg-backups/app/a-35.dump", 35)
      put("pg-backups/app/a-10.dump", 10)
      put("pg-backups/app/a-1.dump", 1)
      put("pg-backups/other/o-50.dump", 50)
      put("pg-backups/app/a-99.dump.partial", 99)
      local res = pg.retention { store = store, prefix = "pg-backups/app/", keep_days = 30, now = now }
      assert.are.same({ "pg-backups/app/a-35.dump", "pg-backups/app/a-40.dump" }, res.deleted)
      assert.are.same({ "pg-backups/app/a-1.dump", "pg-backups/app/a-10.dump" }, res.kept)
      assert.are.same({ "pg-backups/app/a-1.dump", "pg-backups/app/a-10.dump", "pg-backups/app/a-99.dump.partial", "pg-backups/other/o-50.dump" },
        files_under(dir .. "/store"))
      assert.are.equal("deleted " .. dir .. "/store/pg-backups/app/a-40.dump (40 days old)", audit.recorded[1].summary)
    end)

    it("never deletes the newest keep_min backups", function()
      put("b/x-60.dump", 60)
      put("b/x-50.dump", 50)
      put("b/x-45.dump", 45)
      local res = pg.retention { store = store, prefix = "b/", keep_days = 30, keep_min = 2, now = now }
      assert.are.same({ "b/x-60.dump" }, res.deleted)
      assert.are.same({ "b/x-45.dump", "b/x-50.dump" }, res.kept)
    end)

    it("only reports under --dry-run", function()
      put("c/y-60.dump", 60)
      put("c/y-2.dump", 2)
      local actions = {}
      audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
      local ok, res = pcall(pg.retention, { store = store, prefix = "c/", keep_days = 30, now = now })
      audit.set_sink(nil)
      assert.is_true(ok, tostring(res))
      assert.are.same({ "c/y-60.dump" }, res.deleted)
      assert.are.equal("would delete " .. dir .. "/store/c/y-60.dump (60 days old)", actions[1].summary)
      assert.are.same({ "c/y-2.dump", "c/y-60.dump" }, files_under(dir .. "/store"))
    end)
  end)
end)
