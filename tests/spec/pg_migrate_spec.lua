-- Migrations: dbmate's file format and ledger, failures and malformed
-- files, checksums of applied files, status, rollback, --dry-run, the
-- advisory lock between two real processes, and dbmate itself taking
-- turns with runbook on one database, in both directions.
local pgserver = require "pgserver"
local rbtest = require "rbtest"
local dbmate = require "dbmate"
local pg = require "runbook.pg"
local migrate = require "runbook.pg._migrate"
local crypto = require "runbook._crypto"
local audit = require "runbook._engine.audit"

local LAWS = [[
-- migrate:up
create table laws (id serial primary key, name text not null);

-- migrate:down
drop table laws;
]]

local ARTICLES = [[
-- migrate:up
create table articles (id serial primary key, law_id int references laws(id), body text);
insert into laws (name) values ('constitution');

-- migrate:down
drop table articles;
delete from laws where name = 'constitution';
]]

local INDEX_CONCURRENTLY = [[
-- migrate:up transaction:false
create index concurrently laws_name_idx on laws (name);

-- migrate:down transaction:false
drop index concurrently laws_name_idx;
]]

describe("runbook.pg migrations", function()
  local srv, dir, n = nil, nil, 0

  setup(function()
    srv = pgserver.start()
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  -- a fresh database and migrations folder per test
  local url
  before_each(function()
    n = n + 1
    url = srv:createdb("m" .. n)
    dir = rbtest.tmpdir("mig")
    audit.reset()
  end)

  after_each(function()
    rbtest.rmtree(dir)
  end)

  local function file(name, text)
    rbtest.write(dir .. "/" .. name, text)
  end

  local function ledger(db_name)
    return srv:psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations", db_name)
  end

  describe("file format", function()
    it("parses up and down sections and options", function()
      local p = migrate.parse("-- a comment\n\n-- migrate:up transaction:false\ncreate index concurrently i on t (x);\n-- migrate:down\ndrop index i;\n", "x.sql")
      assert.are.equal("-- migrate:up transaction:false\ncreate index concurrently i on t (x);\n", p.up)
      assert.are.equal(3, p.up_line)
      assert.is_false(p.up_tx)
      assert.are.equal("-- migrate:down\ndrop index i;\n", p.down)
      assert.are.equal(5, p.down_line)
      assert.is_true(p.down_tx)
    end)

    it("names malformed files", function()
      local cases = {
        { "create table x (id int);\n", "x.sql: no '-- migrate:up' section; nothing was applied" },
        { "create type s as enum ('a');\n-- migrate:up\ncreate table x (s s);\n-- migrate:down\n",
          "x.sql: line 1: statements before '-- migrate:up' (dbmate refuses them too); nothing was applied" },
        { "-- migrate:up\ncreate table x (id int);\n",
          "x.sql: no '-- migrate:down' section (dbmate requires one; leave it empty if there is nothing to undo); nothing was applied" },
        { "-- migrate:down\n\n-- migrate:up\nselect 1;\n", "x.sql: '-- migrate:down' comes before '-- migrate:up'; nothing was applied" },
        { "-- migrate:up\nselect 1;\n-- migrate:down\n-- migrate:up\nselect 2;\n-- migrate:down\n",
          "x.sql: more than one '-- migrate:up' or '-- migrate:down' section; dbmate would record the version twice. Split it into separate files; nothing was applied" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(migrate.parse, c[1], "x.sql")
        assert.is_false(ok)
        assert.are.equal("migration", err.kind)
        assert.are.equal("malformed", err.code)
        assert.are.equal(c[2], err.message)
      end
      -- "-- migrate:upgrade" is not a directive, as in dbmate
      assert.has_error(function() migrate.parse("-- migrate:upgrade\n-- migrate:down\n", "y.sql") end,
        "y.sql: no '-- migrate:up' section; nothing was applied")
    end)

    it("splits statements as psql reads a file", function()
      local sqlsplit = require "runbook.pg._sqlsplit"
      local text = "-- migrate:up\ncreate table a (s text default 'x;y');\n/* c; /* nested; */ */\n"
        .. "create function f() returns text as $body$ select 'a;b'; $body$ language sql;\n"
        .. "insert into a values (E'it\\'s;'), ($$;$$), ($1$);\nselect \"we;ird\" from a; -- trailing; comment\n"
      local st, whole = sqlsplit.split(text)
      assert.is_false(whole)
      local lines = {}
      for i, s in ipairs(st) do lines[i] = s.content_line end
      assert.are.same({ 1, 3, 4, 5 }, lines)
      assert.are.equal("\nselect \"we;ird\" from a;", st[4].sql)
      assert.are.equal("\n/* c; /* nested; */ */\ncreate function f() returns text as $body$ select 'a;b'; $body$ language sql;", st[2].sql)
      local _, atomic = sqlsplit.split("create function g() returns int language sql begin atomic select 1; end;")
      assert.is_true(atomic)
    end)

    it("lists files as dbmate does: leading digits, .sql, sorted by name", function()
      file("20260102000000_b.sql", LAWS)
      file("20260101000000_a.sql", LAWS)
      file("003.sql", LAWS)
      file("notes.sql", LAWS)
      file("20260103_x.txt", LAWS)
      local names = {}
      for _, f in ipairs(migrate.files(dir)) do names[#names + 1] = f.file .. "=" .. f.version end
      assert.are.same({ "003.sql=003", "20260101000000_a.sql=20260101000000", "20260102000000_b.sql=20260102000000" }, names)
    end)
  end)

  describe("migrate", function()
    it("applies pending files in order, each with its ledger row and checksum", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_create_articles.sql", ARTICLES)
      local res = pg.migrate { url = url, dir = dir }
      assert.are.equal(2, #res.applied)
      assert.are.equal(0, res.already)
      assert.are.equal("20260101000000_create_laws.sql", res.applied[1].file)
      assert.are.equal(crypto.sha256(LAWS), res.applied[1].sha256)
      assert.are.equal("20260101000000,20260102000000", ledger("m" .. n))
      assert.are.equal("1", srv:psql("SELECT count(*) FROM laws", "m" .. n))
      -- the ledger is exactly dbmate's
      assert.are.equal("version|character varying||NO",
        srv:psql("SELECT column_name, data_type, coalesce(character_maximum_length::text, ''), is_nullable FROM information_schema.columns WHERE table_name = 'schema_migrations'", "m" .. n))
      assert.are.equal("schema_migrations_pkey|PRIMARY KEY (version)",
        srv:psql("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'schema_migrations'::regclass", "m" .. n))
      assert.are.equal("20260101000000|" .. crypto.sha256(LAWS) .. "\n20260102000000|" .. crypto.sha256(ARTICLES),
        srv:psql("SELECT version, sha256 FROM runbook_migration_checksums ORDER BY version", "m" .. n))
      -- each applied migration is an action
      local actions = {}
      for _, a in ipairs(audit.recorded) do
        if a.kind == "migration" then actions[#actions + 1] = a end
      end
      assert.are.equal(2, #actions)
      assert.are.equal("up", actions[1].verb)
      assert.are.equal("20260101000000", actions[1].version)
      assert.are.equal(crypto.sha256(LAWS), actions[1].sha256)
      assert.matches("^applied 20260101000000_create_laws%.sql %(%d+ ms%)$", actions[1].summary)
      -- nothing to do the second time
      local again = pg.migrate { url = url, dir = dir }
      assert.are.same({}, again.applied)
      assert.are.equal(2, again.already)
    end)

    it("reports a failing migration with file, line and SQLSTATE, records nothing, and resumes after the fix", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260206000000_add_index.sql", "-- migrate:up\ncreate table tmp_a (id int);\ncreate index on lawz (name);\n\n-- migrate:down\n")
      file("20260207000000_later.sql", "-- migrate:up\ncreate table later (id int);\n-- migrate:down\ndrop table later;\n")
      local ok, err = pcall(pg.migrate, { url = url, dir = dir })
      assert.is_false(ok)
      assert.are.equal("migration", err.kind)
      assert.are.equal("42P01", err.code)
      assert.are.equal('20260206000000_add_index.sql failed at line 3: relation "lawz" does not exist (SQLSTATE 42P01); nothing was recorded, fix the file and run the same command again', err.message)
      assert.are.equal("20260101000000", ledger("m" .. n))
      assert.are.equal("", srv:psql("SELECT to_regclass('tmp_a')", "m" .. n)) -- rolled back
      assert.are.equal("", srv:psql("SELECT to_regclass('later')", "m" .. n))  -- not reached
      -- fix and run the same command again
      file("20260206000000_add_index.sql", "-- migrate:up\ncreate table tmp_a (id int);\ncreate index on laws (name);\n\n-- migrate:down\n")
      local res = pg.migrate { url = url, dir = dir }
      assert.are.equal(2, #res.applied)
      assert.are.equal("20260101000000,20260206000000,20260207000000", ledger("m" .. n))
    end)

    it("counts lines in multi-byte files by characters, as the server reports positions", function()
      file("20260101000000_utf8.sql", "-- migrate:up\n-- ñandú ñandú ñandú\nselect 'ñ';\nselect * from nowhere;\n-- migrate:down\n")
      local _, err = pcall(pg.migrate, { url = url, dir = dir })
      assert.are.equal('20260101000000_utf8.sql failed at line 4: relation "nowhere" does not exist (SQLSTATE 42P01); nothing was recorded, fix the file and run the same command again', err.message)
    end)

    it("refuses an empty or missing folder, as dbmate does", function()
      assert.has_error(function() pg.migrate { url = url, dir = dir } end, "no migration files (VERSION_name.sql) in " .. dir)
      local ok, err = pcall(pg.migrate, { url = url, dir = dir .. "/nope" })
      assert.is_false(ok)
      assert.are.equal("no-directory", err.code)
      assert.are.equal("cannot read migrations directory " .. dir .. "/nope: No such file or directory", err.message)
    end)

    it("applies nothing when any file is malformed", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_broken.sql", "create table x (id int);\n-- migrate:up\n-- migrate:down\n")
      local ok, err = pcall(pg.migrate, { url = url, dir = dir })
      assert.is_false(ok)
      assert.are.equal("20260102000000_broken.sql: line 1: statements before '-- migrate:up' (dbmate refuses them too); nothing was applied", err.message)
      assert.are.equal("", srv:psql("SELECT to_regclass('schema_migrations')", "m" .. n))
    end)

    it("runs transaction:false migrations outside a transaction", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_index.sql", INDEX_CONCURRENTLY)
      local res = pg.migrate { url = url, dir = dir }
      assert.is_false(res.applied[2].transaction)
      assert.are.equal("laws_name_idx", srv:psql("SELECT indexname FROM pg_indexes WHERE indexname = 'laws_name_idx'", "m" .. n))
      pg.migrate_down { url = url, dir = dir }
      assert.are.equal("", srv:psql("SELECT indexname FROM pg_indexes WHERE indexname = 'laws_name_idx'", "m" .. n))
      file("20260103000000_bad_nontx.sql", "-- migrate:up transaction:false\ncreate index concurrently on nope (x);\n-- migrate:down\n")
      local _, err = pcall(pg.migrate, { url = url, dir = dir })
      assert.are.equal('20260103000000_bad_nontx.sql failed at line 2: relation "nope" does not exist (SQLSTATE 42P01); the version was not recorded; it ran outside a transaction (transaction:false), so statements before the failing one may have taken effect: check them, fix the file and run the same command again', err.message)
    end)

    it("reports an applied file that was edited", function()
      file("20260101000000_create_laws.sql", LAWS)
      pg.migrate { url = url, dir = dir }
      local edited = LAWS:gsub("name text not null", "name text")
      file("20260101000000_create_laws.sql", edited)
      audit.reset()
      local res = pg.migrate { url = url, dir = dir }
      assert.are.same({}, res.applied)
      local msg = string.format("20260101000000_create_laws.sql was edited after it was applied (sha256 when applied %s…, now %s…); the database did not change: write a new migration instead",
        crypto.sha256(LAWS):sub(1, 12), crypto.sha256(edited):sub(1, 12))
      assert.are.same({ level = "warn", message = msg }, audit.logs[#audit.logs])
      local st = pg.migration_status { url = url, dir = dir }
      assert.is_true(st.migrations[1].changed)
      assert.are.equal(crypto.sha256(LAWS), st.migrations[1].recorded_sha256)
      assert.has_error(function() pg.migrate { url = url, dir = dir, on_changed = "error" } end, msg)
    end)

    it("gives status: applied, pending and missing files", function()
      file("20260101000000_create_laws.sql", LAWS)
      pg.migrate { url = url, dir = dir }
      file("20260102000000_create_articles.sql", ARTICLES)
      srv:psql("INSERT INTO schema_migrations VALUES ('20250101000000')", "m" .. n)
      local st = pg.migration_status { url = url, dir = dir }
      assert.are.equal(1, st.applied)
      assert.are.equal(1, st.pending)
      assert.are.same({ "20250101000000" }, st.missing)
      assert.is_true(st.migrations[1].applied)
      assert.is_false(st.migrations[2].applied)
      assert.are.equal(crypto.sha256(ARTICLES), st.migrations[2].sha256)
    end)

    it("refuses out-of-order files in strict mode", function()
      file("20260102000000_create_laws.sql", LAWS)
      pg.migrate { url = url, dir = dir }
      file("20260101000000_old.sql", "-- migrate:up\nselect 1;\n-- migrate:down\n")
      assert.has_error(function() pg.migrate { url = url, dir = dir, strict = true } end,
        "20260101000000_old.sql is older than the applied migration 20260102000000 (strict mode); nothing was applied")
      assert.are.equal(1, #pg.migrate({ url = url, dir = dir }).applied)
    end)

    it("rolls back to a version, newest first, with the ledger", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_create_articles.sql", ARTICLES)
      file("20260103000000_index.sql", INDEX_CONCURRENTLY)
      pg.migrate { url = url, dir = dir }
      local one = pg.migrate_down { url = url, dir = dir }
      assert.are.equal("20260103000000_index.sql", one.rolled_back[1].file)
      assert.are.equal("20260101000000,20260102000000", ledger("m" .. n))
      pg.migrate { url = url, dir = dir }
      local res = pg.migrate_down { url = url, dir = dir, to = "20260101000000" }
      assert.are.same({ "20260103000000", "20260102000000" }, { res.rolled_back[1].version, res.rolled_back[2].version })
      assert.are.equal("20260101000000", ledger("m" .. n))
      assert.are.equal("20260101000000", srv:psql("SELECT string_agg(version, ',') FROM runbook_migration_checksums", "m" .. n))
      assert.are.equal("", srv:psql("SELECT to_regclass('articles')", "m" .. n))
      local downs = 0
      for _, a in ipairs(audit.recorded) do if a.kind == "migration" and a.verb == "down" then downs = downs + 1 end end
      assert.are.equal(3, downs)
      pg.migrate_down { url = url, dir = dir, to = "0" }
      assert.are.equal("", ledger("m" .. n))
      -- a failing down section keeps the ledger row
      pg.migrate { url = url, dir = dir }
      file("20260103000000_index.sql", "-- migrate:up\nselect 1;\n-- migrate:down\ndrop index nonexistent_idx;\n")
      local ok, err = pcall(pg.migrate_down, { url = url, dir = dir })
      assert.is_false(ok)
      assert.are.equal('20260103000000_index.sql failed at line 4: index "nonexistent_idx" does not exist (SQLSTATE 42704); nothing was recorded, fix the file and run the same command again', err.message)
      assert.are.equal("20260101000000,20260102000000,20260103000000", ledger("m" .. n))
    end)

    it("under --dry-run applies inside a rolled-back transaction and reports what would run", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_create_articles.sql", ARTICLES)
      file("20260103000000_index.sql", INDEX_CONCURRENTLY)
      local actions = {}
      audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
      local ok, res = pcall(pg.migrate, { url = url, dir = dir })
      audit.set_sink(nil)
      assert.is_true(ok, tostring(res))
      assert.is_true(res.dry_run)
      assert.are.same({}, res.applied)
      assert.are.equal(3, #res.would_apply)
      assert.are.equal("ran inside a transaction that was rolled back", res.would_apply[2].note)
      assert.are.equal("not tried: transaction:false migrations, and those after one, cannot run inside the dry-run transaction", res.would_apply[3].note)
      assert.are.equal("would apply 20260101000000_create_laws.sql (ran inside a transaction that was rolled back)", actions[1].summary)
      assert.are.equal("", srv:psql("SELECT to_regclass('schema_migrations')", "m" .. n))
      assert.are.equal("", srv:psql("SELECT to_regclass('laws')", "m" .. n))
      -- a file that would fail fails the dry run the same way
      file("20260102000000_create_articles.sql", "-- migrate:up\nselect * from nope;\n-- migrate:down\n")
      audit.set_sink { dry_run = true, action = function() end, log = function() end, progress = function() end }
      local ok2, err = pcall(pg.migrate, { url = url, dir = dir })
      audit.set_sink(nil)
      assert.is_false(ok2)
      assert.are.equal('20260102000000_create_articles.sql failed at line 2: relation "nope" does not exist (SQLSTATE 42P01); nothing was recorded, fix the file and run the same command again', err.message)
    end)

    it("under --dry-run rolls back inside a transaction that is rolled back", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_create_articles.sql", ARTICLES)
      file("20260103000000_index.sql", INDEX_CONCURRENTLY)
      pg.migrate { url = url, dir = dir }
      audit.set_sink { dry_run = true, action = function() end, log = function() end, progress = function() end }
      local ok, res = pcall(pg.migrate_down, { url = url, dir = dir, to = "20260101000000" })
      audit.set_sink(nil)
      assert.is_true(ok, tostring(res))
      assert.are.equal("not tried: transaction:false sections, and those after one, cannot run inside the dry-run transaction", res.rolled_back[1].note)
      assert.are.equal("20260101000000,20260102000000,20260103000000", ledger("m" .. n))
      assert.are.equal("1", srv:psql("SELECT count(*) FROM laws", "m" .. n))
    end)

    it("lets one runner migrate at a time (two real processes)", function()
      file("20260101000000_create_laws.sql", LAWS)
      -- the second migration waits for an advisory lock the test holds, so
      -- the first runner keeps the migration lock until the second is seen
      -- waiting for it (not for a fixed time a busy machine may outlast)
      file("20260102000000_slow.sql", "-- migrate:up\ncreate table slow (id int);\nselect pg_advisory_xact_lock(4242);\n-- migrate:down\ndrop table slow;\n")
      local book = dir .. "/book.lua"
      rbtest.write(book, string.format([[
local pg = require "runbook.pg"
runbook "migrate-lock" {}
step "M7" { title = "migrate", run = function(ctx)
  local r = pg.migrate { url = %q, dir = %q }
  return { applied = #r.applied, already = r.already }
end }
]], url, dir))
      local logs = {}
      local procs = {}
      local gate = pg.connect(url)
      gate:value("SELECT pg_advisory_lock(4242)")
      for i = 1, 2 do
        local state = dir .. "/state" .. i
        logs[i] = state
        procs[i] = rbtest.start({ "exec", book, "--state", state }, { cwd = dir })
        if i == 1 then
          -- the first has taken the migration lock and is in the slow migration
          rbtest.wait_for("the first runner in the slow migration", function()
            return gate:value("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_advisory_xact_lock(4242)%' AND pid <> pg_backend_pid()") > 0
          end)
        end
      end
      -- the second says it waits for the migration lock; then the first may finish
      rbtest.wait_for("the second runner waiting for the migration lock", function()
        local runs = require("runbook._fs").listdir(logs[2] .. "/runs") or {}
        local log = runs[1] and rbtest.read(logs[2] .. "/runs/" .. runs[#runs] .. "/log") or ""
        return log:find("waiting for the migration lock", 1, true)
      end)
      gate:value("SELECT pg_advisory_unlock(4242)")
      gate:close()
      for i = 1, 2 do
        local code = procs[i]:wait(30)
        assert.are.equal(0, code)
      end
      assert.are.equal("20260101000000,20260102000000", ledger("m" .. n))
      local out = {}
      for i = 1, 2 do
        local events = rbtest.journal(logs[i])
        for _, ev in ipairs(events) do
          if ev.type == "step.finished" then out[i] = ev.outputs end
        end
      end
      assert.are.same({ applied = 2, already = 0 }, out[1])
      assert.are.same({ applied = 0, already = 2 }, out[2])
      local _, _, run2 = rbtest.journal(logs[2])
      local log2 = rbtest.read(logs[2] .. "/runs/" .. run2 .. "/log")
      assert.matches("waiting for the migration lock on m%d+ %(held by backend pid %d+, runbook migrate%)", log2)
    end)
  end)

  describe("with dbmate", function()
    local function dburl() return url .. "?sslmode=disable" end

    it("continues a database dbmate migrated", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_create_articles.sql", ARTICLES)
      local r = dbmate.run(dburl(), dir, { "up" })
      assert.are.equal(0, r.code, r.stderr)
      file("20260103000000_index.sql", INDEX_CONCURRENTLY)
      local res = pg.migrate { url = url, dir = dir }
      assert.are.equal(1, #res.applied)
      assert.are.equal("20260103000000", res.applied[1].version)
      assert.are.equal(2, res.already)
      assert.are.equal("20260101000000,20260102000000,20260103000000", ledger("m" .. n))
      local st = dbmate.run(dburl(), dir, { "status" })
      assert.are.equal(0, st.code)
      assert.are.equal("[X] 20260101000000_create_laws.sql\n[X] 20260102000000_create_articles.sql\n[X] 20260103000000_index.sql\n\nApplied: 3\nPending: 0\n", st.stdout)
      -- dbmate rolls back what runbook applied
      local rb = dbmate.run(dburl(), dir, { "rollback" })
      assert.are.equal(0, rb.code, rb.stderr)
      assert.are.equal("20260101000000,20260102000000", ledger("m" .. n))
      assert.are.equal("", srv:psql("SELECT indexname FROM pg_indexes WHERE indexname = 'laws_name_idx'", "m" .. n))
    end)

    it("lets dbmate continue a database runbook migrated, with the same ledger", function()
      file("20260101000000_create_laws.sql", LAWS)
      file("20260102000000_create_articles.sql", ARTICLES)
      pg.migrate { url = url, dir = dir }
      file("20260103000000_index.sql", INDEX_CONCURRENTLY)
      local r = dbmate.run(dburl(), dir, { "up" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("Applying: 20260103000000_index.sql\n", r.stdout:match("^(Applying: [^\n]+\n)"))
      assert.is_nil(r.stdout:find("20260101000000_create_laws", 1, true))
      assert.are.equal("20260101000000,20260102000000,20260103000000", ledger("m" .. n))
      -- runbook rolls back what dbmate applied, and sees the rest applied
      local res = pg.migrate_down { url = url, dir = dir }
      assert.are.equal("20260103000000", res.rolled_back[1].version)
      local st = pg.migration_status { url = url, dir = dir }
      assert.are.equal(2, st.applied)
      assert.are.equal(1, st.pending)
      -- the ledger runbook created is the one dbmate creates
      local other = "m" .. n .. "_dbmate"
      local ourl = srv:createdb(other)
      assert.are.equal(0, dbmate.run(ourl .. "?sslmode=disable", dir, { "up" }).code)
      local def = "SELECT column_name, data_type, coalesce(character_maximum_length::text, ''), is_nullable, coalesce(column_default, '') FROM information_schema.columns WHERE table_name = 'schema_migrations' ORDER BY ordinal_position"
      assert.are.equal(srv:psql(def, other), srv:psql(def, "m" .. n))
      local idx = "SELECT indexdef FROM pg_indexes WHERE tablename = 'schema_migrations'"
      assert.are.equal(srv:psql(idx, other), srv:psql(idx, "m" .. n))
    end)
  end)
end)
