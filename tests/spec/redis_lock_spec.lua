-- Locks in runbook.redis: SET NX PX with a random token, compare-and-DEL,
-- compare-and-PEXPIRE and the background keeper, against a real Redis.
local redis = require "runbook.redis"
local host = require "runbook._host"
local json = require "runbook._json"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local redisserver = require "redisserver"
local rbtest = require "rbtest"

describe("redis locks", function()
  local srv, a, b

  setup(function() srv = redisserver.start() end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function()
    srv:cli("FLUSHALL")
    a = redis.connect(srv.url)
    b = redis.connect(srv.url)
    audit.reset()
  end)
  after_each(function()
    a:close()
    b:close()
  end)

  it("takes a free lock with SET NX PX and a random token", function()
    local lock = assert(a:lock("deploy", { ttl = 30, owner = "alice@laptop pid 1" }))
    local stored = json.decode(srv:cli("GET", "deploy"))
    assert.are.equal("alice@laptop pid 1", stored.owner)
    assert.are.equal(32, #stored.token)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", stored.since)
    local pttl = tonumber(srv:cli("PTTL", "deploy"))
    assert.is_true(pttl > 29000 and pttl <= 30000, "pttl " .. pttl)
    assert.is_true(lock:held())
    local other = assert(b:lock("other", { owner = "x" }))
    assert.are_not.equal(json.decode(srv:cli("GET", "other")).token, stored.token)
    other:release()
    lock:release()
  end)

  it("refuses a second holder and names the first", function()
    local lock = assert(a:lock("deploy", { owner = "alice@laptop pid 1" }))
    local since = json.decode(srv:cli("GET", "deploy")).since
    local none, holder = b:lock("deploy", { owner = "bob@desk pid 2" })
    assert.is_nil(none)
    assert.are.equal("alice@laptop pid 1 since " .. since, holder)
    lock:release()
    local mine = assert(b:lock("deploy", { owner = "bob@desk pid 2" }))
    mine:release()
  end)

  it("describes a holder that is not one of ours by its raw value", function()
    srv:cli("SET", "deploy", "held-by-a-shell-script")
    local none, holder = a:lock("deploy")
    assert.is_nil(none)
    assert.are.equal("held-by-a-shell-script", holder)
  end)

  it("releases only its own lock (compare-and-delete)", function()
    local lock = assert(a:lock("deploy", { ttl = 0.3, owner = "alice" }))
    rbtest.wait_for("alice's lock to expire", function() return srv:cli("EXISTS", "deploy") == "0" end)
    local theirs = assert(b:lock("deploy", { ttl = 30, owner = "bob" }))
    assert.is_false(lock:held())
    assert.is_false(lock:release())
    assert.are.equal("bob", json.decode(srv:cli("GET", "deploy")).owner)
    assert.is_true(theirs:release())
    assert.are.equal("", srv:cli("GET", "deploy"))
    assert.is_false(theirs:release()) -- twice: already released
  end)

  it("renews only while it holds the lock (compare-and-PEXPIRE)", function()
    local lock = assert(a:lock("deploy", { ttl = 2 }))
    assert.is_true(lock:renew(60))
    local pttl = tonumber(srv:cli("PTTL", "deploy"))
    assert.is_true(pttl > 59000, "pttl " .. pttl)
    srv:cli("SET", "deploy", "someone-else")
    assert.is_false(lock:renew(60))
    assert.are.equal("-1", srv:cli("PTTL", "deploy")) -- theirs untouched
    assert.is_false(lock:release())
  end)

  it("waits for a lock to come free when asked", function()
    local first = assert(a:lock("deploy", { ttl = 0.4, owner = "alice" }))
    local t0 = host.monotime()
    local second = assert(b:lock("deploy", { wait = 3, owner = "bob" }))
    local took = host.monotime() - t0
    assert.is_true(took >= 0.2 and took < 2, "took " .. took)
    assert.is_false(first:release())
    second:release()
  end)

  it("gives up after `wait` seconds naming the holder", function()
    local first = assert(a:lock("deploy", { ttl = 30, owner = "alice" }))
    local t0 = host.monotime()
    local none, holder = b:lock("deploy", { wait = 0.5 })
    local took = host.monotime() - t0
    assert.is_nil(none)
    assert.matches("^alice since ", holder)
    assert.is_true(took >= 0.45 and took < 1.5, "took " .. took)
    first:release()
  end)

  it("keeps a lock alive past its ttl from a background thread", function()
    local lock = assert(a:lock("deploy", { ttl = 1 })):keep_alive(0.2)
    host.sleep(1.6)
    assert.is_true(lock:held())
    assert.is_true(lock:check())
    local pttl = tonumber(srv:cli("PTTL", "deploy"))
    assert.is_true(pttl > 500, "pttl " .. pttl)
    assert.is_true(lock:release())
    assert.are.equal("", srv:cli("GET", "deploy"))
  end)

  it("reports a kept lock that was taken over", function()
    local lock = assert(a:lock("deploy", { ttl = 2 })):keep_alive(0.1)
    srv:cli("SET", "deploy", "intruder")
    -- the keeper renews every 0.1 s: wait until it has found out
    local ok, err
    rbtest.wait_for("the keeper to find the lock taken", function()
      ok, err = pcall(lock.check, lock)
      return not ok
    end)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "redis"))
    assert.are.equal("lock-lost", err.code)
    assert.are.equal("redis lock deploy: the lock is no longer held by this process (it expired or was taken over)", err.message)
    assert.is_false(lock:release())
    assert.are.equal("intruder", srv:cli("GET", "deploy"))
  end)

  it("reports a kept lock that could not be renewed before it expired", function()
    local lock = assert(a:lock("deploy", { ttl = 0.6 })):keep_alive(0.1)
    srv:pause()
    -- the keeper gives up once 600 ms pass without a renewal
    local ok, err
    local waited, why = pcall(rbtest.wait_for, "the keeper to give up", function()
      ok, err = pcall(lock.check, lock)
      return not ok
    end)
    srv:resume()
    assert(waited, why)
    assert.is_false(ok)
    assert.are.equal("lock-lost", err.code)
    assert.matches("^redis lock deploy: the lock could not be renewed for 600 ms and has expired: ", err.message)
  end)

  it("releases at the end of a <close> block", function()
    do
      local lock <close> = assert(a:lock("deploy"))
      assert.are_not.equal("", srv:cli("GET", "deploy"))
    end
    assert.are.equal("", srv:cli("GET", "deploy"))
  end)

  it("records taking and releasing as audited actions", function()
    local lock = assert(a:lock("deploy", { ttl = 5 }))
    lock:release()
    assert.are.equal(2, #audit.recorded)
    assert.are.equal("took the lock deploy (ttl 5 s)", audit.recorded[1].summary)
    assert.are.equal("released the lock deploy", audit.recorded[2].summary)
  end)

  it("checks its arguments", function()
    assert.matches("lock: key must be a non%-empty string", tostring(select(2, pcall(a.lock, a, ""))))
    assert.matches("lock: ttl must be a positive number of seconds", tostring(select(2, pcall(a.lock, a, "k", { ttl = 0 }))))
  end)
end)
