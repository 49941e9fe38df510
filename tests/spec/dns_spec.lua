-- runbook.dns: names from /etc/hosts in process; canonical names, a
-- resolver that never answers and a name that does not exist inside
-- private namespaces (tests/harness/netns.lua), so no query leaves them.
local dns = require "runbook.dns"
local net = require "runbook._net"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local netns = require "netns"
local rbtest = require "rbtest"

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- a runbook whose one step runs `body` and writes "key<TAB>value" lines to out
local function book(dir, body)
  local path = dir .. "/dns.lua"
  rbtest.write(path, [[
local dns = require "runbook.dns"
local wait = require "runbook.wait"
local sh = require "runbook.sh"
local redis = require "runbook.redis"
runbook "dns-check" { params = { out = {} } }
step "check" { run = function(ctx)
  local f = assert(io.open(ctx.params.out, "w"))
  local function put(k, v) f:write(k, "\t", tostring(v), "\n") f:flush() end
]] .. body .. [[

  f:close()
end }
]])
  return path
end

local function read_kv(path)
  local t = {}
  for line in io.lines(path) do
    local k, v = line:match("^([^\t]+)\t(.*)$")
    if k then t[k] = v end
  end
  return t
end

describe("runbook.dns", function()
  before_each(function() audit.reset() end)

  describe("in process", function()
    it("resolves names from /etc/hosts", function()
      local addrs, canonical = dns.resolve("localhost")
      assert.is_truthy(#addrs >= 1)
      local has = false
      for _, a in ipairs(addrs) do has = has or a == "127.0.0.1" end
      assert.is_true(has)
      assert.are.equal("localhost", canonical)
    end)

    it("passes numeric addresses through", function()
      assert.are.same({ "127.0.0.1" }, (dns.resolve("127.0.0.1")))
      assert.are.same({ "::1" }, (dns.resolve("::1")))
      assert.are.same({ "127.0.0.1" }, (dns.resolve("127.0.0.1", { family = "inet" })))
    end)

    it("looks up without raising", function()
      local r = assert(dns.lookup("localhost", { family = "inet" }))
      assert.are.same({ "127.0.0.1" }, r.addresses)
      local none, err = dns.lookup("127.0.0.1", { family = "inet6" })
      assert.is_nil(none)
      assert.are.equal("dns", err.kind)
    end)

    it("verifies a name against expected addresses", function()
      local ok, seen = dns.resolves("localhost", { expect = "127.0.0.1", family = "inet" })
      assert.is_true(ok)
      assert.are.same({ "127.0.0.1" }, seen.addresses)
      assert.are.equal("localhost resolves to 127.0.0.1; expected 127.0.0.1", seen.summary)
      assert.are.equal("dns: localhost resolves to 127.0.0.1; expected 127.0.0.1", audit.logs[1].message)

      local bad, seen2 = dns.resolves("localhost", { expect = "192.0.2.10", family = "inet" })
      assert.is_false(bad)
      assert.are.equal("localhost resolves to 127.0.0.1; expected 192.0.2.10: does not match", seen2.summary)

      assert.is_true(dns.resolves("localhost", { family = "inet" }))
      assert.is_true(dns.resolves("localhost", { expect = { "127.0.0.1" }, exact = true, family = "inet" }))
      assert.is_false(dns.resolves("localhost", { expect = { "127.0.0.1", "192.0.2.11" }, family = "inet" }))
    end)

    it("checks its arguments", function()
      assert.matches("dns.resolve: name expected", tostring(raised(dns.resolve, "")))
      assert.matches("dns.resolve: unknown option 'expect'", tostring(raised(dns.resolve, "x", { expect = "1.2.3.4" })))
      assert.matches("dns.resolves: timeout must be a positive number", tostring(raised(dns.resolves, "x", { timeout = 0 })))
      assert.matches("dns.lookup: family must be any, inet or inet6", tostring(raised(dns.lookup, "x", { family = "ipx" })))
      assert.matches("dns.resolves: expect must be an address", tostring(raised(dns.resolves, "localhost", { expect = 5 })))
    end)
  end)

  describe("in a private network namespace", function()
    local dir
    local usable = netns.available()

    before_each(function() dir = rbtest.tmpdir("dns") end)
    after_each(function() rbtest.rmtree(dir) end)

    local function run(body, opts)
      local path = book(dir, body)
      local out = dir .. "/out.txt"
      local t0 = host.monotime()
      local r = netns.run({ rbtest.bin, "exec", path, "--state", dir .. "/state", "--param", "out=" .. out }, opts)
      r.took = host.monotime() - t0
      r.kv = rbtest.exists(out) and read_kv(out) or {}
      return r
    end

    it("follows aliases to the canonical name and checks address lists", function()
      if not usable then return pending("unshare -m -n is not permitted here") end
      local r = run([[
  local ok, seen = dns.resolves("www.tezca.test", { expect = "tezca-tunnel.test" })
  put("alias_ok", ok) put("alias_canonical", seen.canonical) put("alias_summary", seen.summary)
  local ok2, seen2 = dns.resolves("www.tezca.test", { expect = "elsewhere.test" })
  put("wrong_ok", ok2) put("wrong_summary", seen2.summary)
  local ok3 = dns.resolves("multi.test", { expect = { "127.0.0.8", "127.0.0.7" }, exact = true })
  local ok4 = dns.resolves("multi.test", { expect = { "127.0.0.7" }, exact = true })
  put("multi_exact", ok3) put("multi_not_exact", ok4)
  put("multi", table.concat(dns.resolve("multi.test"), ","))
]], { hosts = "127.0.0.1 localhost\n127.0.0.9 tezca-tunnel.test www.tezca.test\n127.0.0.7 multi.test\n127.0.0.8 multi.test\n" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("true", r.kv.alias_ok)
      assert.are.equal("tezca-tunnel.test", r.kv.alias_canonical)
      assert.are.equal("www.tezca.test resolves to 127.0.0.9 (canonical name tezca-tunnel.test); expected canonical name tezca-tunnel.test", r.kv.alias_summary)
      assert.are.equal("false", r.kv.wrong_ok)
      assert.are.equal("www.tezca.test resolves to 127.0.0.9 (canonical name tezca-tunnel.test); expected canonical name elsewhere.test: does not match", r.kv.wrong_summary)
      assert.are.equal("true", r.kv.multi_exact)
      assert.are.equal("false", r.kv.multi_not_exact)
      assert.are.equal("127.0.0.7,127.0.0.8", r.kv.multi)
    end)

    it("reports a name that does not exist", function()
      if not usable then return pending("unshare -m -n is not permitted here") end
      local r = run([[
  local ok, err = pcall(dns.resolve, "nowhere.test")
  put("code", err.code) put("message", err.message) put("name", err.name)
  local ok2, seen = dns.resolves("nowhere.test", { expect = "1.2.3.4" })
  put("resolves", ok2) put("error", seen.error)
  local ok3, terr = pcall(wait.tcp, "nowhere.test", 80, { timeout = 0.2, interval = 0.05 })
  put("tcp", terr.message)
  local ok4, rerr = pcall(redis.connect, "redis://nowhere.test:6379")
  put("redis", rerr.message) put("redis_code", rerr.code)
]], { nsswitch = "files" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("not-found", r.kv.code)
      assert.are.equal("dns: cannot resolve nowhere.test: Name or service not known", r.kv.message)
      assert.are.equal("nowhere.test", r.kv.name)
      assert.are.equal("false", r.kv.resolves)
      assert.are.equal("dns: cannot resolve nowhere.test: Name or service not known", r.kv.error)
      assert.matches("last observed: dns: cannot resolve nowhere%.test: Name or service not known$", r.kv.tcp)
      assert.are.equal("redis nowhere.test:6379: cannot resolve nowhere.test: Name or service not known", r.kv.redis)
      assert.are.equal("connect", r.kv.redis_code)
    end)

    it("does not wait past its timeout for a resolver that never answers", function()
      if not usable then return pending("unshare -m -n is not permitted here") end
      local r = run([[
  local ok, err = pcall(dns.resolve, "hung.test", { timeout = 0.5 })
  put("code", err.code) put("message", err.message)
  local ok2, seen = dns.resolves("hung2.test", { timeout = 0.5 })
  put("resolves", ok2) put("error", seen.error)
  local ok3, terr = pcall(wait.tcp, "hung3.test", 80, { timeout = 0.4, connect_timeout = 0.3, interval = 0.05 })
  put("tcp", terr.message)
  local ok4, rerr = pcall(redis.connect, "redis://:pw@hung4.test:6379", { connect_timeout = 0.5 })
  put("redis", rerr.message) put("redis_code", rerr.code)
]], { blackhole = true })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("timeout", r.kv.code)
      assert.are.equal("dns: cannot resolve hung.test: no answer within 0.5 s", r.kv.message)
      assert.are.equal("false", r.kv.resolves)
      assert.are.equal("dns: cannot resolve hung2.test: no answer within 0.5 s", r.kv.error)
      assert.matches("last observed: tcp hung3%.test:80: cannot resolve hung3%.test within 0%.3 s$", r.kv.tcp)
      assert.are.equal("redis hung4.test:6379: cannot resolve hung4.test: no answer within 0.5 s", r.kv.redis)
      assert.are.equal("timeout", r.kv.redis_code)
      -- the resolver itself would take 5 s x 2 attempts for each name
      assert.is_true(r.took < 7, "took " .. r.took)
    end)

    it("stops a hung lookup at once on Ctrl-C", function()
      if not usable then return pending("unshare -m -n is not permitted here") end
      local r = run([[
  put("started", true)
  sh.run { "sh", "-c", "(sleep 0.5; kill -INT $PPID) >/dev/null 2>&1 &" }
  local ok, err = pcall(dns.resolve, "hung.test", { timeout = 30 })
  put("after", err and err.kind)
]], { blackhole = true })
      assert.are.equal(130, r.code, r.stderr)
      assert.are.equal("true", r.kv.started)
      assert.is_nil(r.kv.after) -- the interrupt is not swallowed by pcall
      assert.is_true(r.took < 5, "took " .. r.took)
      assert.is_truthy(r.stderr:find("interrupted during check", 1, true), r.stderr)
    end)
  end)

  describe("the resolver core", function()
    it("answers from a thread while the caller waits in slices", function()
      -- many lookups in a row: every request is freed, whichever side lets go last
      for _ = 1, 200 do
        assert(net.resolve("localhost", { timeout = 2 }))
      end
      local none, err = net.resolve("127.0.0.1", { family = "inet6" })
      assert.is_nil(none)
      assert.matches("^dns: cannot resolve 127%.0%.0%.1: ", err.message)
    end)
  end)
end)
