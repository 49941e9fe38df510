-- The real runbook binary killed with SIGKILL in the middle of database
-- work, then run again with the same command: a migration transaction,
-- in-place backfill batches and cross-database COPY batches (at exact
-- journal events through RUNBOOK_FAILPOINT, and at random times), and a
-- backup. After the resume the ledger is right, and a count and checksum
-- of the target rows equal those of a run that was never interrupted.
local pgserver = require "pgserver"
local rbtest = require "rbtest"
local pg = require "runbook.pg"
local host = require "runbook._host"
local fs = require "runbook._fs"

describe("runbook.pg after SIGKILL", function()
  local srv, dir

  setup(function()
    srv = pgserver.start()
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function() dir = rbtest.tmpdir("crash") end)
  after_each(function() rbtest.rmtree(dir) end)

  local function book(body)
    local path = dir .. "/book.lua"
    rbtest.write(path, 'local pg = require "runbook.pg"\nrunbook "pg-crash" {}\n' .. body)
    return path
  end

  local function exec(path, env)
    return rbtest.exec(path, { state = dir .. "/state", cwd = dir, env = env, start = true })
  end

  -- runs to the end (no failpoint); returns the exit code
  local function finish(path)
    local r = rbtest.exec(path, { state = dir .. "/state", cwd = dir, timeout = 120 })
    return r.code, r
  end

  local function wait_for(fn, what, timeout)
    return rbtest.wait_for(what, fn, { timeout = timeout })
  end

  local function events_of_type(t) return rbtest.events(dir .. "/state", t) end

  it("resumes migrations after a kill inside a migration transaction", function()
    local url = srv:createdb("mig")
    local mdir = dir .. "/migrations"
    assert(fs.mkdir_p(mdir, 448))
    rbtest.write(mdir .. "/20260101000000_laws.sql", "-- migrate:up\ncreate table laws (id serial primary key, name text);\n-- migrate:down\ndrop table laws;\n")
    rbtest.write(mdir .. "/20260102000000_slow.sql", "-- migrate:up\ncreate table slow (id int);\ninsert into laws (name) values ('from-002');\nselect pg_advisory_xact_lock(4243);\n-- migrate:down\ndrop table slow;\n")
    rbtest.write(mdir .. "/20260103000000_articles.sql", "-- migrate:up\ncreate table articles (id int);\n-- migrate:down\ndrop table articles;\n")
    local path = book(string.format([[
step "M7" { title = "migrate", run = function() return #pg.migrate { url = %q, dir = %q }.applied end }
]], url, mdir))
    -- 002 waits for an advisory lock the test holds: it stays in flight until
    -- the kill, however slow the machine
    local gate = pg.connect(url)
    gate:value("SELECT pg_advisory_lock(4243)")
    local p = exec(path)
    local db <close> = pg.connect(url)
    wait_for(function()
      return db:value("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_advisory_xact_lock(4243)%' AND state = 'active' AND pid <> pg_backend_pid()") > 0
    end, "the slow migration")
    p:kill("KILL")
    p:wait()
    -- 002 was in flight: its transaction never committed
    assert.are.equal("20260101000000", db:value("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations"))
    gate:value("SELECT pg_advisory_unlock(4243)")
    gate:close()
    local code = finish(path)
    assert.are.equal(0, code)
    assert.are.equal("20260101000000,20260102000000,20260103000000", db:value("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations"))
    assert.are.equal(1, db:value("SELECT count(*) FROM laws WHERE name = 'from-002'"))
    assert.are.equal(3, db:value("SELECT count(*) FROM runbook_migration_checksums"))
    local applied = {}
    for _, a in ipairs(events_of_type("action")) do applied[#applied + 1] = a.file end
    assert.are.same({ "20260101000000_laws.sql", "20260102000000_slow.sql", "20260103000000_articles.sql" }, applied)
  end)

  it("cancels a running statement on Ctrl-C and exits resumable", function()
    local url = srv:createdb("intr")
    local path = book(string.format([[
step "Q1" { title = "long query", run = function()
  local db <close> = pg.connect(%q)
  db:query("SELECT pg_sleep(60)")
end }
]], url))
    local p = exec(path)
    local db <close> = pg.connect(url)
    local active = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'"
    wait_for(function() return db:value(active) > 0 end, "the long query")
    local t0 = host.monotime()
    p:kill("INT")
    local code = p:wait(10)
    assert.are.equal(130, code)
    -- cancelled on the server, not left sleeping behind a closed socket
    wait_for(function() return db:value(active) == 0 end, "the cancel", 3)
    assert.is_true(host.monotime() - t0 < 3)
    local interrupted = events_of_type("step.interrupted")
    assert.are.equal(1, #interrupted)
  end)

  it("does not apply a migration twice when killed right after recording it", function()
    local url = srv:createdb("mig2")
    local mdir = dir .. "/migrations"
    assert(fs.mkdir_p(mdir, 448))
    rbtest.write(mdir .. "/1_a.sql", "-- migrate:up\ncreate table a (id int);\ninsert into a values (1);\n-- migrate:down\n")
    rbtest.write(mdir .. "/2_b.sql", "-- migrate:up\ninsert into a values (2);\n-- migrate:down\n")
    local path = book(string.format([[
step "M7" { title = "migrate", run = function() return #pg.migrate { url = %q, dir = %q }.applied end }
]], url, mdir))
    -- events: 1 run.started, 2 step.started, 3 the action of 1_a.sql
    local p = exec(path, { RUNBOOK_FAILPOINT = "after:3" })
    assert.is_true(p:stopped(20))
    p:kill("KILL")
    p:wait()
    assert.are.equal(0, finish(path))
    local db <close> = pg.connect(url)
    assert.are.equal("1,2", db:value("SELECT string_agg(id::text, ',' ORDER BY id) FROM a"))
    assert.are.equal("1,2", db:value("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations"))
  end)

  -- the number of events in the run's journal so far (0 before the first)
  local function journal_length()
    local runs = fs.listdir(dir .. "/state/runs")
    if not runs or #runs == 0 then return 0 end
    return #(rbtest.journal(dir .. "/state"))
  end

  -- a backfill killed again and again until it completes, alternately
  -- right after a batch's checkpoint reached the journal (a failpoint a
  -- few events ahead) and at a random time
  local function torture(path, kills)
    math.randomseed(os.time())
    local finished = false
    for i = 1, kills do
      local p
      if i % 2 == 1 then
        p = exec(path, { RUNBOOK_FAILPOINT = "after:" .. (journal_length() + math.random(3, 10)) })
        if not p:stopped(30) then
          finished = p:wait() == 0 -- it completed before reaching the failpoint
          break
        end
      else
        p = exec(path)
        host.sleep(math.random(20, 250) / 1000)
        if p:wait(0) == 0 then
          finished = true -- it completed within the delay
          break
        end
      end
      p:kill("KILL")
      p:wait()
      -- killed after the run had recorded its end: nothing left to resume
      if #events_of_type("run.finished") > 0 then
        finished = true
        break
      end
    end
    if not finished then
      local code, r = finish(path)
      assert.are.equal(0, code, r and r.stderr)
    end
    local runs = fs.listdir(dir .. "/state/runs")
    assert.are.equal(1, #runs)
  end

  local function digest(conn, tbl)
    return conn:value("SELECT count(*) || ':' || md5(string_agg(id || ',' || v || ',' || coalesce(new_col, -1), ';' ORDER BY id)) FROM " .. tbl)
  end

  it("resumes an in-place backfill killed at random batches with the same result", function()
    local url = srv:createdb("bfx")
    local db <close> = pg.connect(url)
    for _, t in ipairs { "items", "reference" } do
      db:exec("CREATE TABLE " .. t .. " (id serial PRIMARY KEY, v int NOT NULL, new_col int)")
      db:exec("INSERT INTO " .. t .. " (v) SELECT (g * 7919) % 10007 FROM generate_series(1, 40000) g")
    end
    -- not idempotent: a batch applied twice would show
    local set = "new_col = coalesce(new_col, 0) + v"
    pg.backfill { url = url, table = "reference", set = set, batch = 1000 }
    local path = book(string.format([[
step "B1" { title = "backfill", run = function()
  local r = pg.backfill { url = %q, table = "items", set = %q, batch = 1000, throttle = 5 }
  return { rows = r.rows, batches = r.batches }
end }
]], url, set))
    torture(path, 6)
    assert.are.equal(digest(db, "reference"), digest(db, "items"))
    local cp = db:query_one("SELECT * FROM runbook_backfill_checkpoints WHERE name LIKE 'items:%'")
    assert.are.same({ "40000", 40000, 40, true }, { cp.cursor, cp.rows, cp.batches, cp.done })
    -- it was really interrupted, and the journal's mirror ends where the database's cursor does
    assert.is_true(#events_of_type("run.resumed") >= 1)
    local cps = events_of_type("step.checkpoint")
    assert.are.same({ cursor = "40000", rows = 40000, batches = 40, done = true }, cps[#cps].value)
    assert.are.equal(1, #events_of_type("step.finished"))
  end)

  it("resumes a copy between databases killed at random batches with the same rows", function()
    local src = srv:createdb("src")
    local dst = srv:createdb("dst")
    local s <close> = pg.connect(src)
    local d <close> = pg.connect(dst)
    s:exec("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, new_col int, body text)")
    s:exec("INSERT INTO items SELECT g, (g * 31) % 1000, g % 3, md5(g::text) FROM generate_series(1, 60000) g")
    d:exec("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, new_col int, body text)")
    local path = book(string.format([[
step "C1" { title = "copy", run = function()
  local r = pg.copy_rows { from = %q, to = %q, table = "items", batch = 1500, throttle = 5 }
  return { rows = r.rows, batches = r.batches }
end }
]], src, dst))
    torture(path, 6)
    local q = "SELECT count(*) || ':' || md5(string_agg(id || ',' || v || ',' || new_col || ',' || body, ';' ORDER BY id)) FROM items"
    assert.are.equal(s:value(q), d:value(q))
    local cp = d:query_one("SELECT * FROM runbook_backfill_checkpoints")
    assert.are.same({ "60000", 60000, 40, true }, { cp.cursor, cp.rows, cp.batches, cp.done })
    assert.is_true(#events_of_type("run.resumed") >= 1)
    local cps = events_of_type("step.checkpoint")
    assert.are.same({ cursor = "60000", rows = 60000, batches = 40, done = true }, cps[#cps].value)
  end)

  -- the instant a kill can fall in: the last batch committed in the target
  -- (its checkpoint row done) but its journal mirror never written. Made
  -- exact by finishing the copy outside any run, so the journal has no
  -- mirror at all when the step finds the row done.
  it("records the final mirror when a resumed copy finds the checkpoint row already done", function()
    local src = srv:createdb("srcdone")
    local dst = srv:createdb("dstdone")
    local s <close> = pg.connect(src)
    local d <close> = pg.connect(dst)
    s:exec("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    s:exec("INSERT INTO items SELECT g, g % 7 FROM generate_series(1, 3000) g")
    d:exec("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    local r = pg.copy_rows { from = src, to = dst, table = "items", batch = 1000 }
    assert.are.equal(3000, r.rows)
    local path = book(string.format([[
step "C1" { title = "copy", run = function()
  local r = pg.copy_rows { from = %q, to = %q, table = "items", batch = 1000 }
  return { rows = r.rows, already = r.already_done }
end }
]], src, dst))
    local code, res = finish(path)
    assert.are.equal(0, code, res and res.stderr)
    local cps = events_of_type("step.checkpoint")
    assert.are.equal(1, #cps)
    assert.are.same({ cursor = "3000", rows = 3000, batches = 3, done = true }, cps[1].value)
    assert.are.same({ rows = 3000, already = true }, events_of_type("step.finished")[1].outputs)
  end)

  it("leaves no complete-looking backup after a kill, and completes on resume", function()
    local url = srv:createdb("big")
    local db <close> = pg.connect(url)
    db:exec("CREATE TABLE blob (id int PRIMARY KEY, body text)")
    db:exec("INSERT INTO blob SELECT g, md5(g::text) || md5((g * 3)::text) || md5((g * 5)::text) FROM generate_series(1, 300000) g")
    local sdir = dir .. "/backups"
    local path = book(string.format([[
step "K1" { title = "backup", run = function()
  local r = pg.backup { url = %q, store = pg.local_store(%q), name = "nightly/big.dump" }
  return { size = r.size, sha256 = r.sha256 }
end }
]], url, sdir))
    local p = exec(path)
    local partial = sdir .. "/nightly/big.dump.partial"
    wait_for(function()
      local st = fs.stat(partial)
      return st and st.size > 0
    end, "the backup to start")
    p:kill("KILL")
    p:wait()
    assert.is_nil(fs.stat(sdir .. "/nightly/big.dump"))
    assert.are.same({}, pg.local_store(sdir):list(""))
    assert.are.equal(0, finish(path))
    local outputs = events_of_type("step.finished")[1].outputs
    local st = fs.stat(sdir .. "/nightly/big.dump")
    assert.are.equal(st.size, outputs.size)
    assert.is_nil(fs.stat(partial))
    local v = pg.verify_backup { path = sdir .. "/nightly/big.dump", sha256 = outputs.sha256 }
    assert.are.equal(1, v.tables)
  end)
end)
