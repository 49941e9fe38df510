-- runbook.pg against a real PostgreSQL 15: connections, typed rows,
-- parameters, structured errors, transactions, COPY, notices, readiness,
-- interruption, and what bad credentials get.
local pgserver = require "pgserver"
local pg = require "runbook.pg"
local host = require "runbook._host"
local proc = require "runbook._proc"
local secret = require "runbook.secret"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"

describe("runbook.pg", function()
  local srv, url

  setup(function()
    srv = pgserver.start()
    url = srv:createdb("app")
    srv:createdb("other")
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function() audit.reset() end)

  describe("connections", function()
    it("connects from a URL and closes with <close>", function()
      local keep
      do
        local db <close> = pg.connect(url)
        keep = db
        assert.are.equal(1, db:value("SELECT 1"))
        assert.are.equal("idle", db:status())
        assert.are.equal(string.format('runbook.pg.Conn (127.0.0.1:%d (database "app", user "rbtest"))', srv.port), tostring(db))
      end
      assert.is_true(keep:is_closed())
      assert.are.equal("runbook.pg.Conn (closed)", tostring(keep))
      assert.has_error(function() keep:query("SELECT 1") end, "attempt to use a closed PostgreSQL connection")
      keep:close() -- twice is fine
    end)

    it("connects from a secret and registers its password for scrubbing", function()
      local db <close> = pg.connect(secret.wrap(url))
      assert.are.equal("app", db:value("SELECT current_database()"))
      assert.are.equal("pw is [REDACTED]", host.scrub("pw is " .. pgserver.PASSWORD))
    end)

    it("connects from a URL built by joining strings and a secret password", function()
      -- secret .. string makes a new secret; its bytes must end like a C string
      for _ = 1, 50 do
        local pw = secret.wrap(pgserver.PASSWORD)
        local u = "postgres://" .. pgserver.ROLE .. ":" .. pw .. "@127.0.0.1:" .. srv.port .. "/app"
        assert.is_true(secret.is(u))
        local db <close> = pg.connect(u)
        assert.are.equal(1, db:value("SELECT 1"))
      end
    end)

    it("scrubs a percent-encoded password in both forms", function()
      srv:psql([[CREATE ROLE odd LOGIN PASSWORD 'p@ss:w/rd%42x']])
      local u = string.format("postgres://odd:p%%40ss%%3Aw%%2Frd%%2542x@127.0.0.1:%d/app", srv.port)
      local db <close> = pg.connect(u)
      assert.are.equal("odd", db:value("SELECT current_user"))
      assert.are.equal("[REDACTED] [REDACTED]", host.scrub("p@ss:w/rd%42x p%40ss%3Aw%2Frd%2542x"))
      local _, err = pg.try_connect((u:gsub("odd:", "nobody:")))
      assert.are.equal("28P01", err.code)
      assert.is_nil(err.message:find("p@ss", 1, true))
    end)

    it("reports info about the server", function()
      local db <close> = pg.connect(url)
      local i = db:info()
      assert.are.equal("127.0.0.1", i.host)
      assert.are.equal(tostring(srv.port), i.port)
      assert.are.equal("app", i.database)
      assert.are.equal("rbtest", i.user)
      assert.is_true(i.server_version >= 150000 and i.server_version < 160000)
      assert.are.equal(db:value("SELECT pg_backend_pid()"), i.backend_pid)
    end)

    it("gives one clear line for a wrong password, without the password", function()
      local bad = srv:url("app", "rbtest", "not-the-password-42")
      local db, err = pg.try_connect(bad)
      assert.is_nil(db)
      assert.are.equal("pg", err.kind)
      assert.are.equal("28P01", err.code)
      assert.are.equal(string.format('cannot connect to PostgreSQL at 127.0.0.1:%d (database "app", user "rbtest"): password authentication failed for user "rbtest"', srv.port), err.message)
      assert.is_nil(err.message:find("not-the-password-42", 1, true))
      assert.are.equal("authentication", err.details.reason)
      assert.has_error(function() pg.connect(bad) end, err.message)
    end)

    it("names a missing database", function()
      local _, err = pg.try_connect(srv:url("nosuchdb"))
      assert.are.equal("3D000", err.code)
      assert.are.equal(string.format('cannot connect to PostgreSQL at 127.0.0.1:%d (database "nosuchdb", user "rbtest"): database "nosuchdb" does not exist', srv.port), err.message)
    end)

    it("names an unreachable server", function()
      local port = require("rbtest").free_port()
      local _, err = pg.try_connect(string.format("postgres://rbtest:%s@127.0.0.1:%d/app", pgserver.PASSWORD, port))
      assert.are.equal("08001", err.code)
      assert.are.equal("refused", err.details.reason)
      assert.are.equal(string.format('cannot connect to PostgreSQL at 127.0.0.1:%d (database "app", user "rbtest"): connection refused', port), err.message)
    end)

    it("gives up on a server that never answers after connect_timeout", function()
      -- a listener that accepts nothing: the TCP handshake completes, the
      -- startup packet is never answered
      local p = assert(proc.spawn { argv = { "python3", "-c",
        "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(1)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)" } })
      local port = math.tointeger(tonumber(p:read(100, 5)))
      local t0 = host.monotime()
      local _, err = pg.try_connect(string.format("postgres://rbtest:x@127.0.0.1:%d/app?sslmode=disable", port), { connect_timeout = 0.5 })
      local took = host.monotime() - t0
      p:kill("KILL")
      p:wait()
      assert.are.equal(string.format('cannot connect to PostgreSQL at 127.0.0.1:%d (database "app", user "rbtest"): timeout after 0.5 s (connect_timeout)', port), err.message)
      assert.are.equal("timeout", err.details.reason)
      assert.is_true(took >= 0.5 and took < 1.5, "took " .. took)
    end)

    it("does not echo a malformed connection string", function()
      local _, err = pg.try_connect("host=127.0.0.1 password=hunter2-secret bogus_option=1")
      assert.are.equal("08P01", err.code)
      assert.are.equal('invalid PostgreSQL connection string: invalid connection option "..."', err.message)
      local _, err2 = pg.try_connect("host=127.0.0.1 password 'hunter2-secret'")
      assert.is_nil(err2.message:find("hunter2", 1, true))
    end)

    it("applies statement_timeout", function()
      local db <close> = pg.connect(url, { statement_timeout = 0.2 })
      local rows, err = db:pquery("SELECT pg_sleep(2)")
      assert.is_nil(rows)
      assert.are.equal("57014", err.code)
      assert.are.equal("canceling statement due to statement timeout (SQLSTATE 57014)", err.message)
      assert.are.equal(1, db:value("SELECT 1"))
    end)

    it("cancels a running query at the step's deadline and keeps the connection usable", function()
      local db <close> = pg.connect(url)
      local t0 = host.monotime()
      local ok, err = host.guarded(0.3, function() db:query("SELECT pg_sleep(10)") end)
      local took = host.monotime() - t0
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      assert.is_true(took < 2, "took " .. took)
      assert.are.equal("idle", db:status())
      assert.are.equal(2, db:value("SELECT 2"))
      -- the server really stopped the statement
      assert.are.equal(0, db:value("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'"))
    end)

    it("waits for readiness, and fails at once on a wrong password", function()
      assert.is_true(pg.wait_ready { url = url, timeout = 5 } < 5)
      local t0 = host.monotime()
      assert.has_error(function() pg.wait_ready { url = srv:url("app", "rbtest", "wrong-pw-123"), timeout = 10 } end,
        string.format('cannot connect to PostgreSQL at 127.0.0.1:%d (database "app", user "rbtest"): password authentication failed for user "rbtest"', srv.port))
      assert.is_true(host.monotime() - t0 < 2)
      local port = require("rbtest").free_port()
      local ok, err = pcall(pg.wait_ready, { url = string.format("postgres://rbtest:x@127.0.0.1:%d/app", port), timeout = 0.6, interval = 0.2 })
      assert.is_false(ok)
      assert.are.equal("timeout", err.code)
      assert.are.equal(string.format('PostgreSQL not ready after 0.6 s: cannot connect to PostgreSQL at 127.0.0.1:%d (database "app", user "rbtest"): connection refused', port), err.message)
    end)

    it("derives a connection string for another role, as a secret", function()
      local s = pg.conninfo("postgres://admin:s3cr%27t@db.example:6543/postgres?sslmode=require",
        { user = "tezca", dbname = "tezca", password = secret.wrap("p'w\\x") })
      assert.is_true(secret.is(s))
      assert.are.equal([[dbname='tezca' host='db.example' password='p\'w\\x' port='6543' sslmode='require' user='tezca']], s:reveal())
      local ok, err = pcall(pg.conninfo, "postgres://[bad")
      assert.is_false(ok)
      assert.are.equal("usage", err.kind)
      assert.truthy(err.message:match("^pg%.conninfo: "), err.message)
      -- the derived string connects
      local db <close> = pg.connect(pg.conninfo(url, { application_name = "derived" }))
      assert.are.equal("derived", db:value("SHOW application_name"))
    end)

    it("hashes a password client-side, so ALTER ROLE never carries it in clear", function()
      local db <close> = pg.connect(url)
      local pw = secret.random { bytes = 24, encoding = "alnum" }
      local v = db:encrypt_password("pw_hashed", pw)
      assert.truthy(v:match("^SCRAM%-SHA%-256%$4096:[^$]+%$[^:]+:.+$"), v)
      assert.is_nil(v:find(pw:reveal(), 1, true))
      -- a new salt each time, and the md5 form on request
      assert.are_not.equal(v, db:encrypt_password("pw_hashed", pw))
      assert.truthy(db:encrypt_password("pw_hashed", "x", "md5"):match("^md5%x+$"))
      assert.has_error(function() db:encrypt_password("pw_hashed", "x", "rot13") end)
      db:exec("DROP ROLE IF EXISTS pw_hashed")
      db:exec("CREATE ROLE pw_hashed LOGIN PASSWORD " .. db:literal(v))
      -- the server took the verifier as the role's password: logging in with it works
      local as_role <close> = pg.connect(srv:url("app", "pw_hashed", pw:reveal()))
      assert.are.equal("pw_hashed", as_role:value("SELECT current_user"))
      local ok, err = pg.try_connect(srv:url("app", "pw_hashed", "not-the-password"))
      assert.is_nil(ok)
      assert.are.equal("28P01", err.code)
      as_role:close()
      db:exec("DROP ROLE pw_hashed")
    end)
  end)

  describe("queries", function()
    local db
    before_each(function() db = pg.connect(url) end)
    after_each(function() db:close() end)

    it("types values by column type", function()
      local r = db:query_one([[SELECT 1::int2 AS a, 2::int4 AS b, 9007199254740993::int8 AS c, 1.5::float4 AS d,
        0.1::float8 AS e, 'NaN'::float8 AS nan, '-Infinity'::float8 AS ninf, true AS t, false AS f,
        '{"x":[1,2,{"y":null}],"z":{}}'::jsonb AS j, '[]'::json AS ja, NULL::text AS n, 12.50::numeric AS num,
        '\x00ff41'::bytea AS by, 'héllo'::text AS s, '2026-01-02 03:04:05+00'::timestamptz AS ts,
        ARRAY[1,2] AS arr, 26::oid AS o]])
      assert.are.equal(1, r.a)
      assert.are.equal(math.type(r.a), "integer")
      assert.are.equal(2, r.b)
      assert.are.equal(9007199254740993, r.c)
      assert.are.equal(1.5, r.d)
      assert.are.equal(0.1, r.e)
      assert.are.equal("float", math.type(r.e))
      assert.is_true(r.nan ~= r.nan)
      assert.are.equal(-math.huge, r.ninf)
      assert.is_true(r.t)
      assert.is_false(r.f)
      assert.are.same({ 1, 2 }, { r.j.x[1], r.j.x[2] })
      assert.are.equal(pg.null, r.j.x[3].y)
      assert.are.equal('{"x":[1,2,{"y":null}],"z":{}}', require("runbook._json").encode(r.j))
      assert.are.equal("[]", require("runbook._json").encode(r.ja))
      assert.are.equal(pg.null, r.n)
      assert.are.equal("12.50", r.num)
      assert.are.equal("\0\255A", r.by)
      assert.are.equal("héllo", r.s)
      assert.are.equal("2026-01-02 03:04:05+00", r.ts)
      assert.are.equal("{1,2}", r.arr)
      assert.are.equal(26, r.o)
    end)

    it("sends parameters of every kind", function()
      db:exec("CREATE TABLE params (i int, f float8, b bool, t text, j jsonb, by bytea, n text)")
      local _, info = db:query("INSERT INTO params VALUES ($1, $2, $3, $4, $5, $6, $7)",
        42, 2.5, true, "it's", { a = { 1, 2 } }, "\0\1\2", nil)
      assert.are.equal("INSERT", info.command)
      assert.are.equal(1, info.affected)
      local r = db:query_one("SELECT * FROM params")
      assert.are.same({ 42, 2.5, true, "it's", "\0\1\2", pg.null }, { r.i, r.f, r.b, r.t, r.by, r.n })
      assert.are.same({ a = { 1, 2 } }, { a = { r.j.a[1], r.j.a[2] } })
      assert.are.equal("[REDACTED]", tostring(secret.wrap("s3cr3t-value")))
      assert.are.equal("s3cr3t-value", db:value("SELECT $1::text", secret.wrap("s3cr3t-value")))
      assert.are.equal(true, db:value("SELECT $1::text IS NULL", pg.null))
    end)

    it("returns info with fields, command and affected rows", function()
      local rows, info = db:query("SELECT g AS n, g * 2 AS twice FROM generate_series(1, 3) g")
      assert.are.equal(3, #rows)
      assert.are.same({ "n", "twice" }, { info.fields[1], info.fields[2] })
      assert.are.equal("SELECT", info.command)
      assert.are.equal(3, info.affected)
      assert.are.equal(6, rows[3].twice)
      assert.is_nil(db:query_one("SELECT 1 WHERE false"))
      assert.is_nil(db:value("SELECT 1 WHERE false"))
    end)

    it("exec runs several statements and records an action", function()
      local n = db:exec("CREATE TABLE ex (id int); INSERT INTO ex SELECT generate_series(1, 5); UPDATE ex SET id = id + 1 WHERE id > 2")
      assert.are.equal(3, n)
      assert.are.equal(1, db:exec("DELETE FROM ex WHERE id = $1", 6))
      local a = audit.recorded[#audit.recorded]
      assert.are.equal("pg", a.kind)
      assert.are.equal("exec", a.verb)
      assert.are.equal("DELETE FROM ex WHERE id = $1", a.statement)
      assert.are.equal("DELETE 1 on app", a.summary)
    end)

    it("raises structured errors with SQLSTATE and details", function()
      local ok, err = pcall(db.query, db, "SELECT * FROM\n  nosuch")
      assert.is_false(ok)
      assert.is_true(errors.is(err, "pg"))
      assert.are.equal("42P01", err.code)
      assert.are.equal('relation "nosuch" does not exist (SQLSTATE 42P01)', err.message)
      assert.are.equal('relation "nosuch" does not exist (SQLSTATE 42P01)', tostring(err))
      assert.are.equal(17, err.details.position)
      assert.are.equal("ERROR", err.details.severity)

      db:exec("CREATE TABLE u (id int PRIMARY KEY, email text CONSTRAINT u_email UNIQUE)")
      db:exec("INSERT INTO u VALUES (1, 'a@x')")
      local rows, e2 = db:pquery("INSERT INTO u VALUES (2, 'a@x')")
      assert.is_nil(rows)
      assert.are.equal("23505", e2.code)
      assert.are.equal('duplicate key value violates unique constraint "u_email" (SQLSTATE 23505)', e2.message)
      assert.are.equal("Key (email)=(a@x) already exists.", e2.details.detail)
      assert.are.equal("u", e2.details.table)
      assert.are.equal("u_email", e2.details.constraint)
      assert.are.equal("public", e2.details.schema)

      local _, e3 = db:pquery("SELECT 1 +")
      assert.are.equal("42601", e3.code)
      local _, e4 = db:pquery("SELECT lenght('x')")
      assert.are.equal("No function matches the given name and argument types. You might need to add explicit type casts.", e4.details.hint)
      assert.are.equal(1, db:value("SELECT 1"))
    end)

    it("logs server notices", function()
      db:exec("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
      local logs = audit.logs
      assert.are.same({ level = "info", message = "postgres: NOTICE: hello 42" }, logs[#logs - 1])
      assert.are.same({ level = "warn", message = "postgres: WARNING: careful" }, logs[#logs])
    end)
  end)

  describe("transactions", function()
    local db
    before_each(function()
      db = pg.connect(url)
      db:exec("DROP TABLE IF EXISTS t; CREATE TABLE t (id int)")
    end)
    after_each(function() db:close() end)

    it("commits when fn returns and passes its results", function()
      local a, b = db:tx(function(c)
        c:exec("INSERT INTO t VALUES (1)")
        return "x", 2
      end)
      assert.are.same({ "x", 2 }, { a, b })
      assert.are.equal(1, db:value("SELECT count(*) FROM t"))
    end)

    it("rolls back and re-raises the error", function()
      local ok, err = pcall(db.tx, db, function(c)
        c:exec("INSERT INTO t VALUES (1)")
        error({ marker = true })
      end)
      assert.is_false(ok)
      assert.is_true(err.marker)
      assert.are.equal(0, db:value("SELECT count(*) FROM t"))
      assert.are.equal("idle", db:status())
      local ok2, err2 = pcall(db.tx, db, function(c) c:exec("INSERT INTO t VALUES ('x')") end)
      assert.is_false(ok2)
      assert.are.equal("22P02", err2.code)
      assert.are.equal("idle", db:status())
    end)

    it("nests with savepoints", function()
      db:tx(function(c)
        c:exec("INSERT INTO t VALUES (1)")
        pcall(c.tx, c, function(c2)
          c2:exec("INSERT INTO t VALUES (2)")
          error("inner")
        end)
        c:tx(function(c2) c2:exec("INSERT INTO t VALUES (3)") end)
      end)
      local rows = db:query("SELECT id FROM t ORDER BY id")
      assert.are.same({ 1, 3 }, { rows[1].id, rows[2].id })
      assert.are.equal(2, #rows)
    end)

    it("closes a connection whose rollback was itself stopped, leaving no half transaction", function()
      local c = pg.connect(url)
      local ok, err = host.guarded(0.3, function()
        c:tx(function(t)
          t:exec("INSERT INTO t VALUES (42)")
          t:query("SELECT pg_sleep(5)")
        end)
      end)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      assert.is_true(c:is_closed())
      assert.are.equal(0, db:value("SELECT count(*) FROM t"))
    end)

    it("takes isolation and read-only options", function()
      local iso = db:tx(function(c) return c:value("SHOW transaction_isolation") end, { isolation = "serializable" })
      assert.are.equal("serializable", iso)
      local _, err = pcall(db.tx, db, function(c) c:exec("INSERT INTO t VALUES (1)") end, { read_only = true })
      assert.are.equal("25006", err.code)
    end)

    it("runs everything in a rolled-back transaction under --dry-run", function()
      audit.set_sink { dry_run = true, action = function() end, log = function() end, progress = function() end }
      local ok, err = pcall(function()
        local d <close> = pg.connect(url)
        d:exec("INSERT INTO t VALUES (7)")
        d:tx(function(c) c:exec("INSERT INTO t VALUES (8)") end)
        assert.are.equal(2, d:value("SELECT count(*) FROM t"))
      end)
      audit.set_sink(nil)
      assert.is_true(ok, tostring(err))
      assert.are.equal(0, db:value("SELECT count(*) FROM t"))
    end)
  end)

  describe("COPY", function()
    local db
    before_each(function()
      db = pg.connect(url)
      db:exec("DROP TABLE IF EXISTS c; CREATE TABLE c (id int PRIMARY KEY, name text)")
    end)
    after_each(function() db:close() end)

    it("copies in from a string, a list and a function", function()
      assert.are.equal(2, db:copy_in("COPY c FROM STDIN", "1\ta\n2\tb\n"))
      assert.are.equal(2, db:copy_in("COPY c FROM STDIN", { "3\tc\n", "4\t", "d\n" }))
      local i = 4
      local n = db:copy_in("COPY c FROM STDIN", function()
        i = i + 1
        if i > 1004 then return nil end
        return i .. "\tn" .. i .. "\n"
      end)
      assert.are.equal(1000, n)
      assert.are.equal(1004, db:value("SELECT count(*) FROM c"))
    end)

    it("streams COPY out in chunks of whole rows", function()
      db:exec("INSERT INTO c SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
      local chunks, total = {}, 0
      local rows, bytes = db:copy_out("COPY c TO STDOUT", function(chunk)
        chunks[#chunks + 1] = chunk
        total = total + #chunk
        assert.are.equal("\n", chunk:sub(-1))
      end, 65536)
      assert.are.equal(5000, rows)
      assert.are.equal(total, bytes)
      assert.is_true(#chunks > 5)
      assert.are.equal("1\t" .. string.rep("x", 100) .. "\n", table.concat(chunks):sub(1, 103))
    end)

    it("reports bad data as a structured error and stays usable", function()
      local rows, err = db:_copy_in("COPY c FROM STDIN", "1\ta\nnot-a-number\tb\n")
      assert.is_nil(rows)
      assert.are.equal("22P02", err.code)
      assert.are.equal('invalid input syntax for type integer: "not-a-number" (SQLSTATE 22P02)', err.message)
      assert.are.equal(0, db:value("SELECT count(*) FROM c"))
      assert.has_error(function() db:copy_in("COPY c FROM STDIN", { 5 }) end)
      assert.are.equal(1, db:value("SELECT 1"))
    end)

    it("aborts the COPY when the source function fails", function()
      local n = 0
      local ok, err = pcall(db.copy_in, db, "COPY c FROM STDIN", function()
        n = n + 1
        if n == 3 then error("source broke") end
        return n .. "\tx\n"
      end)
      assert.is_false(ok)
      assert.matches("source broke", tostring(err))
      assert.are.equal(0, db:value("SELECT count(*) FROM c"))
      assert.are.equal("idle", db:status())
    end)

    it("refuses COPY in plain queries and the wrong direction", function()
      local _, err = db:pquery("COPY c FROM STDIN")
      assert.are.equal("57014", err.code)
      local _, e2 = db:_copy_out("SELECT 1", function() end)
      assert.are.equal("copy_out() needs a COPY ... TO STDOUT statement", e2.message)
      assert.are.equal(1, db:value("SELECT 1"))
    end)

    it("pipes rows between two databases", function()
      local other <close> = pg.connect(srv:url("other"))
      other:exec("DROP TABLE IF EXISTS c; CREATE TABLE c (id int PRIMARY KEY, name text)")
      db:exec("INSERT INTO c SELECT g, 'n' || g FROM generate_series(1, 20000) g")
      local rows, bytes = pg.copy(db, "COPY c TO STDOUT", other, "COPY c FROM STDIN")
      assert.are.equal(20000, rows)
      assert.is_true(bytes > 20000 * 4)
      assert.are.equal(db:value("SELECT md5(string_agg(id || name, ',' ORDER BY id)) FROM c"),
        other:value("SELECT md5(string_agg(id || name, ',' ORDER BY id)) FROM c"))
      -- a failing source aborts the target's COPY
      local _, err = pcall(pg.copy, db, "COPY (SELECT 1/0, 'x') TO STDOUT", other, "COPY c FROM STDIN")
      assert.are.equal("22012", err.code)
      assert.are.equal("idle", other:status())
      assert.are.equal(20000, other:value("SELECT count(*) FROM c"))
      -- a failing target
      local _, e2 = pcall(pg.copy, db, "COPY c TO STDOUT", other, "COPY c FROM STDIN")
      assert.are.equal("23505", e2.code)
      assert.are.equal("idle", db:status())
      assert.are.equal(1, db:value("SELECT 1"))
    end)
  end)
end)
