-- Backfills on a real PostgreSQL: in-place batched updates and COPY
-- between databases, each batch committed with its cursor in the target;
-- resume from the target's checkpoint, filters, throttle, lock and
-- statement timeouts, progress, the journal mirror and --dry-run.
-- (SIGKILL at random batches is in tests/e2e/pg_crash_spec.lua.)
local pgserver = require "pgserver"
local pg = require "runbook.pg"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"

describe("runbook.pg backfills", function()
  local srv, url, url2, db, other

  setup(function()
    srv = pgserver.start()
    url = srv:createdb("bf")
    url2 = srv:createdb("bf2")
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function()
    audit.reset()
    db = pg.connect(url)
    other = pg.connect(url2)
    db:exec([[DROP TABLE IF EXISTS items, runbook_backfill_checkpoints, words;
      CREATE TABLE items (id serial PRIMARY KEY, v int NOT NULL, new_col int);
      INSERT INTO items (v) SELECT g FROM generate_series(1, 10000) g]])
    other:exec([[DROP TABLE IF EXISTS items, runbook_backfill_checkpoints, summary;
      CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, new_col int)]])
  end)

  after_each(function()
    db:close()
    other:close()
  end)

  -- collects progress notes and journal checkpoints through a fake step
  local function with_step(fn)
    local seen = { progress = {}, checkpoints = {}, actions = {} }
    local ctx = {
      run_id = "r1",
      checkpoint = function(_, k, v) seen.checkpoints[#seen.checkpoints + 1] = { key = k, value = v } end,
      cursor = function(_, k) return seen.cursor and seen.cursor[k] end,
    }
    audit.set_sink {
      ctx = ctx, dry_run = false,
      action = function(t) seen.actions[#seen.actions + 1] = t end,
      log = function() end,
      progress = function(done, total, note) seen.progress[#seen.progress + 1] = { done = done, total = total, note = note } end,
    }
    local ok, res = pcall(fn, seen)
    audit.set_sink(nil)
    if not ok then error(res, 0) end
    return res, seen
  end

  local function digest(conn)
    return conn:value("SELECT count(*) || ':' || md5(string_agg(id || ',' || v || ',' || coalesce(new_col, -1), ';' ORDER BY id)) FROM items")
  end

  describe("in place", function()
    it("updates in batches, each with its cursor, and reports progress", function()
      local res, seen = with_step(function()
        return pg.backfill { url = url, table = "items", set = "new_col = v * 2", batch = 1000 }
      end)
      assert.are.equal(10000, res.rows)
      assert.are.equal(10, res.batches)
      assert.is_true(res.done)
      assert.are.equal(0, db:value("SELECT count(*) FROM items WHERE new_col IS DISTINCT FROM v * 2"))
      local cp = db:query_one("SELECT * FROM runbook_backfill_checkpoints")
      assert.are.equal(res.name, cp.name)
      assert.matches("^items:%x+$", cp.name)
      assert.are.same({ "10000", 10000, 10, true }, { cp.cursor, cp.rows, cp.batches, cp.done })
      -- the journal mirror follows every commit
      assert.are.equal(10, #seen.checkpoints)
      assert.are.equal("pg.backfill:" .. res.name, seen.checkpoints[1].key)
      assert.are.same({ cursor = "1000", rows = 1000, batches = 1, done = false }, seen.checkpoints[1].value)
      assert.are.same({ cursor = "10000", rows = 10000, batches = 10, done = true }, seen.checkpoints[10].value)
      -- progress with rows per second and an ETA
      assert.are.equal(10, #seen.progress)
      assert.are.equal(1000, seen.progress[1].done)
      assert.are.equal(10000, seen.progress[1].total)
      assert.matches("^items: 1000 rows, %d+ rows/s, ETA %d+s$", seen.progress[1].note)
      assert.matches("^items: 10000 rows, %d+ rows/s, ETA 0s$", seen.progress[10].note)
      local a = seen.actions[#seen.actions]
      assert.are.equal("backfill", a.kind)
      assert.are.equal(10000, a.rows)
      assert.matches("^backfilled items: 10000 rows in 10 batches %(%d+ rows/s%)$", a.summary)
    end)

    it("does nothing more once complete", function()
      pg.backfill { url = url, table = "items", set = "new_col = v * 2", batch = 4000 }
      db:exec("UPDATE items SET new_col = NULL")
      local res = pg.backfill { url = url, table = "items", set = "new_col = v * 2", batch = 4000 }
      assert.is_true(res.already_done)
      assert.are.equal(10000, res.rows)
      assert.are.equal(3, res.batches)
      assert.are.equal(10000, db:value("SELECT count(*) FROM items WHERE new_col IS NULL"))
      -- restart runs it again from the start
      local again = pg.backfill { url = url, table = "items", set = "new_col = v * 2", batch = 4000, restart = true }
      assert.are.equal(10000, again.rows)
      assert.are.equal(0, db:value("SELECT count(*) FROM items WHERE new_col IS NULL"))
    end)

    it("resumes after the last committed batch, never updating a row twice", function()
      -- a non-idempotent update shows any row visited twice
      db:exec("UPDATE items SET new_col = 0")
      local name = "count-visits"
      db:exec([[CREATE TABLE runbook_backfill_checkpoints (name text PRIMARY KEY, cursor text, rows bigint NOT NULL DEFAULT 0,
        batches bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false,
        started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())]])
      -- as a crash would leave it: batches 1-3 committed with their cursor
      db:exec("UPDATE items SET new_col = new_col + 1 WHERE id <= 3000")
      db:exec("INSERT INTO runbook_backfill_checkpoints (name, cursor, rows, batches) VALUES ($1, '3000', 3000, 3)", name)
      local res, seen = with_step(function(s)
        s.cursor = { ["pg.backfill:" .. name] = { cursor = "2000", rows = 2000, batches = 2, done = false } }
        return pg.backfill { url = url, table = "items", set = "new_col = new_col + 1", batch = 1000, name = name }
      end)
      assert.are.equal(7000, res.rows)
      assert.are.equal(7, res.batches)
      assert.are.equal(0, db:value("SELECT count(*) FROM items WHERE new_col <> 1"))
      assert.are.same({ cursor = "4000", rows = 4000, batches = 4, done = false }, seen.checkpoints[1].value)
      assert.are.same({ "10000", 10000, 10 }, { db:query_one("SELECT * FROM runbook_backfill_checkpoints").cursor,
        db:query_one("SELECT * FROM runbook_backfill_checkpoints").rows, db:query_one("SELECT * FROM runbook_backfill_checkpoints").batches })
    end)

    it("works outside a run, with the cursor only in the target", function()
      local res = pg.backfill { url = url, table = "items", set = "new_col = v", where = "v % 2 = 0", batch = 3000, name = "evens" }
      assert.are.equal(5000, res.rows)
      assert.are.equal(4, res.batches)
      assert.are.equal(5000, db:value("SELECT count(*) FROM items WHERE new_col IS NULL"))
      assert.are.equal("10000", db:value("SELECT cursor FROM runbook_backfill_checkpoints WHERE name = 'evens'"))
    end)

    it("handles text keys, schema-qualified tables and a connection given by the caller", function()
      db:exec([[CREATE SCHEMA IF NOT EXISTS app; DROP TABLE IF EXISTS app.words;
        CREATE TABLE app.words (w text PRIMARY KEY, len int);
        INSERT INTO app.words (w) VALUES ('pear'), ('apple'), ('fig'), ('kiwi'), ('banana'), ('cherry'), ('date')]])
      local res = pg.backfill { conn = db, table = "app.words", key = "w", set = "len = length(w)", batch = 3 }
      assert.are.equal(7, res.rows)
      assert.are.equal(3, res.batches)
      assert.are.equal(0, db:value("SELECT count(*) FROM app.words WHERE len IS DISTINCT FROM length(w)"))
      assert.are.equal("pear", db:value("SELECT cursor FROM runbook_backfill_checkpoints WHERE name = $1", res.name))
      assert.is_false(db:is_closed())
    end)

    it("sleeps the throttle between batches", function()
      local t0 = host.monotime()
      pg.backfill { url = url, table = "items", set = "new_col = 1", batch = 2500, throttle = 100 }
      assert.is_true(host.monotime() - t0 >= 0.3)
    end)

    it("gives up a batch that cannot get its lock within max_lock_ms, after retries", function()
      local locker = pg.connect(url)
      locker:exec("BEGIN")
      locker:exec("LOCK TABLE items IN EXCLUSIVE MODE")
      local t0 = host.monotime()
      local ok, err = pcall(pg.backfill, { url = url, table = "items", set = "new_col = 1", batch = 5000, max_lock_ms = 50, retries = 2 })
      assert.is_false(ok)
      assert.are.equal("55P03", err.code)
      assert.are.equal("canceling statement due to lock timeout (SQLSTATE 55P03)", err.message)
      assert.is_true(host.monotime() - t0 < 3)
      locker:exec("ROLLBACK")
      locker:close()
      assert.are.equal(10000, pg.backfill { url = url, table = "items", set = "new_col = 1", batch = 5000, max_lock_ms = 50 }.rows)
    end)

    it("bounds each batch with statement_timeout", function()
      local ok, err = pcall(pg.backfill, { url = url, table = "items", batch = 5000, statement_timeout = 0.3,
        set = "new_col = v + CASE WHEN id = 1 THEN (SELECT 0 FROM pg_sleep(2)) ELSE 0 END" })
      assert.is_false(ok)
      assert.are.equal("57014", err.code)
      assert.are.equal(0, db:value("SELECT count(*) FROM items WHERE new_col IS NOT NULL"))
    end)

    it("under --dry-run reports the planned batches and writes nothing", function()
      local actions = {}
      audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
      local ok, res = pcall(pg.backfill, { url = url, table = "items", set = "new_col = v", batch = 3000 })
      audit.set_sink(nil)
      assert.is_true(ok, tostring(res))
      assert.are.same({ true, 4, 10000, 3000 }, { res.dry_run, res.planned_batches, res.remaining, res.first_batch_rows })
      assert.are.equal("would update items in 4 batches of 3000 keys from the start (10000 keys left)", actions[1].summary)
      assert.are.equal(0, db:value("SELECT count(*) FROM items WHERE new_col IS NOT NULL"))
      assert.are.equal(pg.null, db:value("SELECT to_regclass('runbook_backfill_checkpoints')"))
      -- a wrong SET fails the dry run
      audit.set_sink { dry_run = true, action = function() end, log = function() end, progress = function() end }
      local ok2, err = pcall(pg.backfill, { url = url, table = "items", set = "new_col = nosuch", batch = 3000 })
      audit.set_sink(nil)
      assert.is_false(ok2)
      assert.are.equal('column "nosuch" does not exist (SQLSTATE 42703)', err.message)
    end)

    it("finishes cleanly on an empty table", function()
      db:exec("DELETE FROM items")
      local res = pg.backfill { url = url, table = "items", set = "new_col = 1" }
      assert.are.same({ 0, 0, true }, { res.rows, res.batches, res.done })
      assert.is_true(db:value("SELECT done FROM runbook_backfill_checkpoints"))
    end)
  end)

  describe("between databases", function()
    it("copies in batches, each committed with its cursor in the target", function()
      db:exec("UPDATE items SET new_col = v % 7")
      local res, seen = with_step(function()
        return pg.copy_rows { from = url, to = url2, table = "items", batch = 2500 }
      end)
      assert.are.same({ 10000, 4, true, "binary" }, { res.rows, res.batches, res.done, res.format })
      assert.is_true(res.bytes > 10000 * 6)
      assert.are.equal(digest(db), digest(other))
      local cp = other:query_one("SELECT * FROM runbook_backfill_checkpoints")
      assert.are.same({ res.name, "10000", 10000, 4, true }, { cp.name, cp.cursor, cp.rows, cp.batches, cp.done })
      assert.matches("^copy:items:%x+$", res.name)
      assert.are.equal(4, #seen.checkpoints)
      assert.are.same({ cursor = "2500", rows = 2500, batches = 1, done = false }, seen.checkpoints[1].value)
      assert.matches("^items: 2500 rows, %d+ rows/s, ETA %d+s$", seen.progress[1].note)
      assert.matches("^copied 10000 rows into items in 4 batches %(%d+ rows/s%)$", seen.actions[#seen.actions].summary)
      -- once complete, a rerun does nothing
      local again = pg.copy_rows { from = url, to = url2, table = "items", batch = 2500 }
      assert.is_true(again.already_done)
      assert.are.equal(10000, other:value("SELECT count(*) FROM items"))
    end)

    it("copies the rows of a query into another table", function()
      other:exec("CREATE TABLE summary (id int PRIMARY KEY, doubled int)")
      local res = pg.copy_rows { from = url, to = url2, query = "SELECT id, v * 2 AS doubled FROM items WHERE v > 9000",
        target_table = "summary", batch = 300 }
      assert.are.same({ 1000, 4 }, { res.rows, res.batches })
      assert.are.equal(2 * (9001 + 10000) * 1000 // 2, other:value("SELECT sum(doubled) FROM summary"))
    end)

    it("uses COPY's binary format only when the column types match exactly", function()
      other:exec("DROP TABLE items; CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, new_col int)")
      local res = pg.copy_rows { from = url, to = url2, table = "items", batch = 4000, name = "widen" }
      assert.are.equal("text", res.format)
      assert.are.equal(10000, res.rows)
      assert.are.equal(digest(db), digest(other))
      local ok, err = pcall(pg.copy_rows, { from = url, to = url2, table = "items", format = "binary", name = "widen2" })
      assert.is_false(ok)
      assert.are.equal("pg.copy_rows: format binary needs the same built-in column types on both sides", err.message)
      other:exec("TRUNCATE items")
      local t = pg.copy_rows { from = url, to = url2, table = "items", format = "text", name = "as-text" }
      assert.are.equal("text", t.format)
      assert.are.equal(digest(db), digest(other))
    end)

    it("resumes after the last committed batch", function()
      -- a crash after batch 2 of 4: the target holds rows 1-5000 and that cursor
      other:exec([[CREATE TABLE runbook_backfill_checkpoints (name text PRIMARY KEY, cursor text, rows bigint NOT NULL DEFAULT 0,
        batches bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false,
        started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())]])
      other:exec("INSERT INTO runbook_backfill_checkpoints (name, cursor, rows, batches) VALUES ('copy-items', '5000', 5000, 2)")
      pg.copy(db, "COPY (SELECT * FROM items WHERE id <= 5000) TO STDOUT", other, "COPY items FROM STDIN")
      local res = pg.copy_rows { from = url, to = url2, table = "items", batch = 2500, name = "copy-items" }
      assert.are.same({ 5000, 2 }, { res.rows, res.batches })
      assert.are.equal(digest(db), digest(other))
      assert.are.same({ 10000, 4 }, { other:value("SELECT rows FROM runbook_backfill_checkpoints"), other:value("SELECT batches FROM runbook_backfill_checkpoints") })
    end)

    it("leaves the target unchanged when a batch fails", function()
      other:exec("INSERT INTO items VALUES (7500, 0, 0)") -- collides with batch 3
      local ok, err = pcall(pg.copy_rows, { from = url, to = url2, table = "items", batch = 2500, name = "collide" })
      assert.is_false(ok)
      assert.are.equal("23505", err.code)
      assert.are.equal(5001, other:value("SELECT count(*) FROM items"))
      assert.are.equal("5000", other:value("SELECT cursor FROM runbook_backfill_checkpoints WHERE name = 'collide'"))
      other:exec("DELETE FROM items WHERE id = 7500 AND v = 0")
      local res = pg.copy_rows { from = url, to = url2, table = "items", batch = 2500, name = "collide" }
      assert.are.equal(5000, res.rows)
      assert.are.equal(digest(db), digest(other))
      -- a failing source query
      local ok2, err2 = pcall(pg.copy_rows, { from = url, to = url2, query = "SELECT id, v / 0 AS v, new_col FROM items",
        target_table = "items", name = "divzero", batch = 100 })
      assert.is_false(ok2)
      assert.are.equal("22012", err2.code)
    end)

    it("under --dry-run writes nothing to the target", function()
      local actions = {}
      audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
      local ok, res = pcall(pg.copy_rows, { from = url, to = url2, table = "items", batch = 4000 })
      audit.set_sink(nil)
      assert.is_true(ok, tostring(res))
      assert.are.same({ true, 3, 10000, 4000 }, { res.dry_run, res.planned_batches, res.remaining, res.first_batch_rows })
      assert.are.equal("would copy 10000 rows into items in 3 batches of 4000 from the start", actions[1].summary)
      assert.are.equal(0, other:value("SELECT count(*) FROM items"))
      assert.are.equal(pg.null, other:value("SELECT to_regclass('runbook_backfill_checkpoints')"))
    end)
  end)
end)
