-- runbook._pg's prepared statements (_prepare, _query_prepared: the
-- PostgreSQL store's append) against a real PostgreSQL 15: typed rows and
-- parameters as _query gives them, NULL, structured errors for bad SQL, an
-- unknown name and a lost server, and the plan made once per session.
local pgserver = require "pgserver"
local pgconn = require "runbook.pg._conn"

describe("runbook._pg prepared statements", function()
  local srv, url

  setup(function()
    srv = pgserver.start()
    url = srv:createdb("prep")
  end)
  teardown(function() if srv then srv:stop() end end)

  it("prepares once and runs with parameters, as _query does", function()
    local c <close> = pgconn._open(url)
    assert(c:_query("CREATE TABLE t (id int PRIMARY KEY, name text, note text)"))
    local info = assert(c:_prepare("ins", "INSERT INTO t (id, name, note) VALUES ($1, $2, $3) RETURNING id, note"))
    assert.are.equal("table", type(info))
    for i = 1, 3 do
      local rows, qi = c:_query_prepared("ins", i, "n" .. i, i == 2 and pgconn.null or "x")
      assert(rows, qi)
      assert.are.equal(1, qi.affected)
      assert.are.equal(i, rows[1].id)
      assert.are.equal(i == 2 and pgconn.null or "x", rows[1].note)
    end
    -- one statement prepared on the session, run three times
    local p = c:_query("SELECT name, statement FROM pg_prepared_statements")
    assert.are.equal(1, #p)
    assert.are.equal("ins", p[1].name)
    local rows = assert(c:_query("SELECT string_agg(name, ',' ORDER BY id) AS s FROM t"))
    assert.are.equal("n1,n2,n3", rows[1].s)
    -- a unique violation is a structured error, and the session goes on
    local nrows, err = c:_query_prepared("ins", 1, "again", "y")
    assert.is_nil(nrows)
    assert.are.equal("23505", err.code)
    assert.are.equal("idle", c:status())
  end)

  it("returns structured errors for bad SQL and for a name never prepared", function()
    local c <close> = pgconn._open(url)
    local ok, err = c:_prepare("bad", "SELEC 1")
    assert.is_nil(ok)
    assert.are.equal("42601", err.code)
    local rows, err2 = c:_query_prepared("nope", 1)
    assert.is_nil(rows)
    assert.are.equal("26000", err2.code)
    assert.are.equal(1, c:_query("SELECT 1 AS one")[1].one)
  end)

  it("says the connection was lost when the server is gone", function()
    local c <close> = pgconn._open(url)
    assert(c:_prepare("one", "SELECT $1::int AS v"))
    assert.are.equal(5, c:_query_prepared("one", 5)[1].v)
    srv:halt()
    local rows, err = c:_query_prepared("one", 6)
    srv:restart()
    assert.is_nil(rows)
    assert.are.equal("pg", err.kind)
    assert.truthy(tostring(err.message):find("127.0.0.1:" .. srv.port, 1, true), tostring(err.message))
  end)
end)
