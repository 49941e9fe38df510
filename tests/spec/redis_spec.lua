-- runbook.redis against a real redis-server (tests/harness/redisserver.lua);
-- redis-cli checks what was written.
local redis = require "runbook.redis"
local secret = require "runbook.secret"
local host = require "runbook._host"
local json = require "runbook._json"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local redisserver = require "redisserver"
local interrupt = require "interrupt"
local rbtest = require "rbtest"


-- The pauses asked of host.sleep while fn ran: "at once" without a stopwatch.
local function sleeps(fn)
  local asked, real = {}, host.sleep
  host.sleep = function(d) asked[#asked + 1] = d; return real(d) end
  local ok, err = pcall(fn)
  host.sleep = real
  if not ok then error(err, 0) end
  return asked
end

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

describe("runbook.redis", function()
  local srv, conn

  setup(function()
    srv = redisserver.start()
  end)
  teardown(function()
    if srv then srv:stop() end
  end)
  before_each(function()
    srv:cli("FLUSHALL")
    conn = redis.connect(srv.url)
    audit.reset()
  end)
  after_each(function()
    conn:close()
  end)

  describe("replies", function()
    it("maps status, bulk, integer, nil and arrays", function()
      assert.are.equal("OK", conn:call("SET", "k", "v"))
      assert.are.equal("v", conn:call("GET", "k"))
      assert.are.equal(1, conn:call("INCR", "n"))
      assert.are.equal("integer", math.type(conn:call("INCR", "n")))
      assert.is_nil(conn:call("GET", "missing"))
      assert.are.equal(3, conn:call("RPUSH", "l", "a", "b", "c"))
      assert.are.same({ "a", "b", "c" }, conn:call("LRANGE", "l", 0, -1))
      assert.are.same({}, conn:call("LRANGE", "empty", 0, -1))
    end)

    it("keeps nil inside arrays as false, so the length holds", function()
      conn:call("SET", "a", "1")
      conn:call("SET", "c", "3")
      assert.are.same({ "1", false, "3" }, conn:call("MGET", "a", "b", "c"))
    end)

    it("is binary-safe both ways", function()
      local blob = "a\0b\255\n\r" .. string.rep("\1", 300)
      conn:call("SET", "bin", blob)
      assert.are.equal(blob, conn:call("GET", "bin"))
      assert.are.equal(tostring(#blob), srv:cli("STRLEN", "bin"))
    end)

    it("maps nested arrays (MULTI/EXEC) and error elements inside them", function()
      conn:call("SET", "s", "x")
      assert.are.equal("OK", conn:call("MULTI"))
      assert.are.equal("QUEUED", conn:call("INCR", "n"))
      assert.are.equal("QUEUED", conn:call("LPUSH", "s", "y"))
      assert.are.equal("QUEUED", conn:call("LRANGE", "nolist", 0, -1))
      local r = conn:call("EXEC")
      assert.are.equal(1, r[1])
      assert.is_true(errors.is(r[2], "redis"))
      assert.are.equal("WRONGTYPE", r[2].code)
      assert.are.same({}, r[3])
    end)

    it("takes numbers and secrets as arguments", function()
      local s = secret.wrap("value-from-a-secret")
      conn:call("SET", "sec", s)
      conn:call("SET", "num", 42.5)
      assert.are.equal("value-from-a-secret", srv:cli("GET", "sec"))
      assert.are.equal("42.5", conn:call("GET", "num"))
    end)
  end)

  describe("call and pcall", function()
    it("call raises a structured error on an error reply", function()
      conn:call("SET", "k", "v")
      local err = raised(conn.call, conn, "LPUSH", "k", "x")
      assert.is_true(errors.is(err, "redis"))
      assert.are.equal("WRONGTYPE", err.code)
      assert.are.equal("redis LPUSH: WRONGTYPE Operation against a key holding the wrong kind of value", err.message)
      assert.are.equal("LPUSH", err.command)
      assert.are.equal(err.message, tostring(err))
    end)

    it("names an unknown command's reply code ERR", function()
      local err = raised(conn.call, conn, "NOSUCHCOMMAND", "x")
      assert.are.equal("ERR", err.code)
      assert.matches("^redis NOSUCHCOMMAND: ERR unknown command 'NOSUCHCOMMAND'", err.message)
    end)

    it("pcall returns error replies as values, and the connection stays usable", function()
      conn:call("SET", "k", "v")
      local r, err = conn:pcall("LPUSH", "k", "x")
      assert.is_nil(r)
      assert.are.equal("WRONGTYPE", err.code)
      assert.are.equal("v", conn:pcall("GET", "k"))
      local r2, err2 = conn:pcall("GET", "missing")
      assert.is_nil(r2)
      assert.is_nil(err2)
    end)

    it("rejects a missing command name and bad argument types", function()
      assert.matches("call: command name expected", tostring(raised(conn.call, conn)))
      assert.matches("redis: argument 2 must be a string, number or secret, got table",
        tostring(raised(conn.call, conn, "GET", {})))
    end)

    it("records writes as audited actions with the key but never the value", function()
      conn:call("SET", "app:flag", "super-private-value")
      conn:call("GET", "app:flag")
      conn:call("CONFIG", "GET", "maxmemory")
      assert.are.equal(1, #audit.recorded)
      local a = audit.recorded[1]
      assert.are.equal("redis", a.kind)
      assert.are.equal("SET", a.command)
      assert.are.equal("SET app:flag", a.summary)
      assert.is_nil(json.encode(a):find("super-private-value", 1, true))
    end)
  end)

  describe("pipelines", function()
    it("sends queued commands in one round trip and returns replies in order", function()
      local r = conn:pipeline(function(p)
        p:call("SET", "a", "1")
        p:call("INCR", "a")
        p:call("GET", "a")
        p:call("GET", "missing")
      end)
      assert.are.equal(4, r.n)
      assert.are.same({ "OK", 2, "2", false, n = 4 }, r)
      assert.are.equal(1, #audit.recorded)
      assert.are.equal("pipeline of 4 commands: SET a, INCR a", audit.recorded[1].summary)
    end)

    it("keeps a p:pcall error reply in its slot", function()
      conn:call("SET", "s", "x")
      local r = conn:pipeline(function(p)
        p:pcall("LPUSH", "s", "y")
        p:call("GET", "s")
      end)
      assert.are.equal("WRONGTYPE", r[1].code)
      assert.are.equal("x", r[2])
    end)

    it("raises the first p:call error after reading every reply", function()
      conn:call("SET", "s", "x")
      local err = raised(conn.pipeline, conn, function(p)
        p:call("SET", "before", "1")
        p:call("LPUSH", "s", "y")
        p:call("SET", "after", "1")
      end)
      assert.are.equal("WRONGTYPE", err.code)
      assert.are.equal(2, err.index)
      assert.are.equal("redis LPUSH: WRONGTYPE Operation against a key holding the wrong kind of value"
        .. " (command 2 of 3 in a pipeline; the others were sent)", err.message)
      assert.are.equal("1", srv:cli("GET", "after"))
      assert.are.equal("PONG", conn:call("PING")) -- still in step
    end)

    it("returns an empty result for an empty pipeline", function()
      assert.are.same({ n = 0 }, conn:pipeline(function() end))
    end)
  end)

  describe("under --dry-run", function()
    local function dry(fn)
      local acts = {}
      audit.set_sink { dry_run = true, action = function(t) acts[#acts + 1] = t end, log = function() end, progress = function() end }
      local ok, err = pcall(fn)
      audit.set_sink(nil)
      assert(ok, err)
      return acts
    end

    it("sends reads but not writes, and records what it would have written", function()
      srv:cli("SET", "k", "before")
      local got, set, incr, lock
      local acts = dry(function()
        got = conn:call("GET", "k")
        set = conn:call("SET", "k", "after")
        incr = conn:pcall("INCR", "n")
        lock = conn:lock("deploy")
      end)
      assert.are.equal("before", got)
      assert.is_nil(set)
      assert.is_nil(incr)
      assert.is_true(lock.dry_run)
      assert.are.equal("before", srv:cli("GET", "k"))
      assert.are.equal("", srv:cli("GET", "n"))
      assert.are.equal("", srv:cli("GET", "deploy"))
      assert.are.same({ "would send SET k", "would send INCR n", "would take the lock deploy" },
        { acts[1].summary, acts[2].summary, acts[3].summary })
    end)

    it("sends a read-only pipeline and holds back one that writes", function()
      srv:cli("SET", "k", "v")
      local reads, writes
      local acts = dry(function()
        reads = conn:pipeline(function(p) p:call("GET", "k") p:call("EXISTS", "k") end)
        writes = conn:pipeline(function(p) p:call("GET", "k") p:call("DEL", "k") end)
      end)
      assert.are.same({ "v", 1, n = 2 }, reads)
      assert.are.same({ false, false, n = 2 }, writes)
      assert.are.equal("v", srv:cli("GET", "k"))
      assert.are.equal(1, #acts)
      assert.are.equal("would send a pipeline of 2 commands: DEL k", acts[1].summary)
    end)
  end)

  describe("connecting", function()
    it("selects the database from the URL", function()
      local c3 = redis.connect(srv.url .. "/3")
      c3:call("SET", "in3", "yes")
      assert.are.equal("yes", srv:cli("-n", 3, "GET", "in3"))
      assert.are.equal("", srv:cli("-n", 0, "GET", "in3"))
      assert.are.equal(3, c3:info().db)
      c3:close()
    end)

    it("fails in one line on a database that does not exist", function()
      local err = raised(redis.connect, srv.url .. "/99")
      assert.are.equal("ERR", err.code)
      assert.are.equal(string.format("redis 127.0.0.1:%d: cannot select database 99: ERR DB index is out of range", srv.port), err.message)
    end)

    it("resolves a host name (localhost from /etc/hosts) with the connect timeout", function()
      local c = redis.connect(string.format("redis://localhost:%d", srv.port))
      assert.is_true(c:ping())
      assert.are.equal(string.format("runbook.redis.Conn (localhost:%d/0)", srv.port), tostring(c))
      c:close()
    end)

    it("accepts the URL as a secret", function()
      local c = redis.connect(secret.wrap(srv.url .. "/2"))
      c:call("SET", "x", "1")
      assert.are.equal("1", srv:cli("-n", 2, "GET", "x"))
      c:close()
    end)

    it("fails in one line, at once, when Redis is down", function()
      local port = rbtest.free_port()
      local err
      local slept = sleeps(function() err = raised(redis.connect, "redis://127.0.0.1:" .. port) end)
      assert.are.same({}, slept) -- no pause to try again
      assert.are.equal("connect", err.code)
      assert.are.equal(string.format("redis 127.0.0.1:%d: cannot connect: Connection refused", port), err.message)
    end)

    it("does not hang past connect_timeout when the server does not answer", function()
      srv:pause()
      local t0 = host.monotime()
      local ok, err = pcall(redis.connect, srv.url, { connect_timeout = 0.4 })
      local took = host.monotime() - t0
      srv:resume()
      assert.is_false(ok)
      assert.are.equal("timeout", err.code)
      assert.are.equal(string.format("redis 127.0.0.1:%d: no reply to PING within 0.4 s; the connection was closed", srv.port), err.message)
      assert.is_true(took >= 0.35 and took < 1.5, "took " .. took)
    end)

    it("reports bad URLs without quoting them", function()
      local cases = {
        { "http://x", "redis: invalid URL: the URL must start with redis://" },
        { "rediss://:pw@h:1", "redis: invalid URL: rediss:// (TLS) is not supported: this build's hiredis 0.14 has no TLS" },
        { "redis://:hunter22@h:99999", "redis: invalid URL: the port must be a number from 1 to 65535" },
        { "redis://:hunter22@h:1/x", "redis: invalid URL: the path must be a database number (redis://host:port/0)" },
        { "redis://:hunter22@", "redis: invalid URL: the URL names no host" },
        { "redis://:hun%zz@h", "redis: invalid URL: bad %-escape in the password" },
        { "redis://h:1/0?timeout=1", "redis: invalid URL: query parameters are not supported (give timeouts as options)" },
      }
      for _, c in ipairs(cases) do
        local err = raised(redis.connect, c[1])
        assert.are.equal("url", err.code)
        assert.are.equal(c[2], err.message)
      end
      assert.matches("URL %(string or secret%) expected, got nil", tostring(raised(redis.connect, nil)))
    end)

    it("prints a connection without secrets and refuses use after close", function()
      assert.are.equal(string.format("runbook.redis.Conn (127.0.0.1:%d/0)", srv.port), tostring(conn))
      local c = redis.connect(srv.url)
      c:close()
      c:close() -- twice is fine
      assert.are.equal("runbook.redis.Conn (closed)", tostring(c))
      assert.matches("attempt to use a closed redis connection", tostring(raised(c.call, c, "PING")))
    end)

    it("closes at the end of a <close> block", function()
      local before = tonumber(srv:cli("INFO", "clients"):match("connected_clients:(%d+)"))
      do
        local c <close> = redis.connect(srv.url)
        c:call("PING")
        assert.are.equal(before + 1, tonumber(srv:cli("INFO", "clients"):match("connected_clients:(%d+)")))
      end
      assert.are.equal(before, tonumber(srv:cli("INFO", "clients"):match("connected_clients:(%d+)")))
    end)
  end)

  describe("timeouts and failures", function()
    it("bounds a command by the connection's timeout and closes it", function()
      conn:set_timeout(0.3)
      local t0 = host.monotime()
      local err = raised(conn.call, conn, "BLPOP", "nothing", 5)
      local took = host.monotime() - t0
      assert.is_true(took >= 0.25 and took < 1.5, "took " .. took)
      assert.are.equal("timeout", err.code)
      assert.are.equal(string.format("redis 127.0.0.1:%d: no reply to BLPOP within 0.3 s; the connection was closed", srv.port), err.message)
      local err2 = raised(conn.call, conn, "PING")
      assert.are.equal("closed", err2.code)
      assert.are.equal(string.format("redis 127.0.0.1:%d: the connection was closed after an earlier failure (no reply to BLPOP within 0.3 s); connect again", srv.port), err2.message)
    end)

    it("stops a blocked command at the step's deadline", function()
      local ok, err = host.guarded(0.3, function() return conn:call("BLPOP", "nothing", 5) end)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      assert.are.equal("timed out after 0 s", err.message)
      assert.is_false(conn:info().open)
    end)

    it("stops a blocked command at once on Ctrl-C", function()
      local ok, err, took = interrupt.run(0.3, function() return conn:call("BLPOP", "nothing", 10) end)
      assert.is_false(ok)
      assert.are.equal("interrupted", err.kind)
      assert.is_true(took < 1.5, "took " .. took)
    end)

    it("reports a server that went away as a lost connection", function()
      local c = redis.connect(srv.url)
      srv:restart()
      local err = raised(c.call, c, "GET", "k")
      assert.are.equal("io", err.code)
      assert.are.equal(string.format("redis 127.0.0.1:%d: connection lost during GET: Server closed the connection; the connection was closed", srv.port), err.message)
      c:close()
      conn:close()
      conn = redis.connect(srv.url)
    end)
  end)

  describe("wait_ready", function()
    it("returns once a server that starts late answers PING", function()
      local port = rbtest.free_port()
      local dir = rbtest.tmpdir("late")
      local p = require("runbook._proc").spawn { argv = { "sh", "-c",
        string.format("sleep 0.6; exec redis-server --port %d --bind 127.0.0.1 --save '' --dir %s", port, dir) },
        stdout = "null", stderr = "null" }
      local t0 = host.monotime()
      assert.is_true(redis.wait_ready("redis://127.0.0.1:" .. port, { timeout = 10 }))
      local took = host.monotime() - t0
      p:kill("TERM", true)
      p:wait(5)
      rbtest.rmtree(dir)
      assert.is_true(took >= 0.5 and took < 5, "took " .. took)
    end)

    it("times out naming what it last saw", function()
      local port = rbtest.free_port()
      local err = raised(redis.wait_ready, "redis://127.0.0.1:" .. port, { timeout = 0.5, interval = 0.1 })
      assert.are.equal("wait", err.kind)
      assert.are.equal("timeout", err.code)
      assert.matches("^timed out after 0%.5 s waiting for Redis to answer PING %(%d+ checks?%); last observed: redis 127%.0%.0%.1:"
        .. port .. ": cannot connect: Connection refused$", err.message)
    end)
  end)
end)

describe("runbook.redis with a password", function()
  local srv
  local PASSWORD = "pw-" .. require("runbook._crypto").random_hex(8)

  setup(function() srv = redisserver.start { password = PASSWORD } end)
  teardown(function() if srv then srv:stop() end end)

  it("authenticates from the URL and from a secret option", function()
    local c = redis.connect(srv.auth_url)
    c:call("SET", "a", "1")
    c:close()
    local c2 = redis.connect(srv.url, { password = secret.wrap(PASSWORD) })
    assert.are.equal("1", c2:call("GET", "a"))
    c2:close()
    local c3 = redis.connect(secret.wrap(srv.auth_url .. "/1"))
    c3:call("SET", "b", "2")
    assert.are.equal("2", srv:cli("-n", 1, "GET", "b"))
    c3:close()
  end)

  it("decodes a percent-escaped password", function()
    local c = redis.connect(string.format("redis://:%s@127.0.0.1:%d", PASSWORD:gsub("%-", "%%2D"), srv.port))
    assert.is_true(c:ping())
    c:close()
  end)

  it("fails in one line on a wrong password, never echoing it", function()
    local wrong = "wrong-" .. PASSWORD
    local err
    local slept = sleeps(function() err = raised(redis.connect, string.format("redis://:%s@127.0.0.1:%d", wrong, srv.port)) end)
    assert.are.same({}, slept)
    assert.are.equal("auth", err.code)
    assert.are.equal(string.format("redis 127.0.0.1:%d: authentication failed: WRONGPASS invalid username-password pair or user is disabled.", srv.port), err.message)
    assert.is_nil(err.message:find(wrong, 1, true))
    -- the password from a plain URL is registered for scrubbing
    assert.are.equal("x [REDACTED] y", host.scrub("x " .. wrong .. " y"))
  end)

  it("says so when the server wants a password and none was given", function()
    local err = raised(redis.connect, srv.url)
    assert.are.equal("auth", err.code)
    assert.are.equal(string.format("redis 127.0.0.1:%d: the server requires a password and none was given (NOAUTH Authentication required.)", srv.port), err.message)
  end)

  it("wait_ready fails at once on a wrong password instead of waiting", function()
    local err
    local slept = sleeps(function() err = raised(redis.wait_ready, srv.url, { timeout = 10 }) end)
    assert.are.same({}, slept) -- it did not wait between checks
    assert.are.equal("auth", err.code)
  end)

  it("authenticates with a user name (ACL)", function()
    srv:cli("ACL", "SETUSER", "deployer", "on", ">deployer-pass-1", "~*", "+@all")
    local c = redis.connect(string.format("redis://deployer:deployer-pass-1@127.0.0.1:%d", srv.port))
    assert.are.equal("deployer", c:call("ACL", "WHOAMI"))
    c:close()
  end)
end)
