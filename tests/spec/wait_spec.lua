-- runbook.wait: until (with backoff, jitter, progress and a timeout that
-- names the last observation), tcp against real listeners, and http against
-- the real local server of tests/harness/httpserver (a service coming up,
-- a port that refuses connections, then answers, timeouts naming the last
-- status and body).
local wait = require "runbook.wait"
local net = require "runbook._net"
local host = require "runbook._host"
local proc = require "runbook._proc"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local http = require "runbook.http"
local httpserver = require "httpserver"
local interrupt = require "interrupt"
local rbtest = require "rbtest"

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- a TCP listener on 127.0.0.1:port after `delay` seconds (python3, a peer we did not write)
local function listen_later(port, delay)
  return assert(proc.spawn { argv = { "sh", "-c", string.format(
    "sleep %s; exec python3 -c 'import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((\"127.0.0.1\",%d))\ns.listen(8)\ntime.sleep(30)'",
    tostring(delay), port) }, stdout = "null", stderr = "null" })
end

local function stop(p)
  p:kill("KILL", true)
  p:wait(5)
end

describe("runbook.wait", function()
  before_each(function() audit.reset() end)

  describe("until", function()
    it("returns what fn returned once it holds", function()
      local calls = 0
      local a, b = wait(function(attempt)
        calls = calls + 1
        assert.are.equal(calls, attempt)
        if calls < 3 then return false, "not yet" end
        return "ready", 42
      end, { interval = 0.01 })
      assert.are.equal("ready", a)
      assert.are.equal(42, b)
      assert.are.equal(3, calls)
      assert.are.equal("the condition: held after", audit.logs[1].message:match("^(.-) %d"))
    end)

    it("is reachable as wait['until'], wait.until_ and wait(...)", function()
      assert.are.equal(wait.until_, wait["until"])
      assert.are.equal(1, wait["until"](function() return 1 end))
    end)

    it("times out naming what it waited for and the last observation", function()
      local n = 0
      local t0 = host.monotime()
      local err = raised(wait, function()
        n = n + 1
        return false, "status " .. (500 + n)
      end, { timeout = 0.3, interval = 0.05, what = "the API to report healthy" })
      local took = host.monotime() - t0
      assert.is_true(took >= 0.3 and took < 0.8, "took " .. took)
      assert.are.equal("wait", err.kind)
      assert.are.equal("timeout", err.code)
      assert.are.equal(string.format("timed out after 0.3 s waiting for the API to report healthy (%d checks); last observed: status %d",
        n, 500 + n), err.message)
      assert.are.equal(n, err.details.attempts)
      assert.are.equal("status " .. (500 + n), err.details.last)
    end)

    it("says when nothing was observed", function()
      local err = raised(wait, function() return false end, { timeout = 0, interval = 0.01 })
      assert.are.equal("timed out after 0 s waiting for the condition (1 check); the check never passed", err.message)
    end)

    it("takes structured errors raised by fn as observations", function()
      local err = raised(wait, function()
        errors.raise { kind = "net", code = "refused", message = "tcp db:5432: Connection refused" }
      end, { timeout = 0.1, interval = 0.02, what = "db" })
      assert.matches("; last observed: tcp db:5432: Connection refused$", err.message)
    end)

    it("raises any other error from fn at once (a bug is not an observation)", function()
      local calls = 0
      local err = raised(wait, function()
        calls = calls + 1
        local t = nil
        return t.field
      end, { timeout = 5 })
      assert.are.equal(1, calls)
      assert.matches("attempt to index a nil value", tostring(err))
    end)

    -- The sleeps the wait asks for, exactly, and the gaps it really left
    -- (never shorter; a busy machine may make them longer).
    local function recording_sleeps(fn)
      local asked, real = {}, host.sleep
      host.sleep = function(d) asked[#asked + 1] = d; return real(d) end
      local ok, err = pcall(fn)
      host.sleep = real
      if not ok then error(err, 0) end
      return asked
    end

    it("sleeps interval, multiplied by backoff, capped by max_interval", function()
      local times = {}
      local asked = recording_sleeps(function()
        raised(wait, function()
          times[#times + 1] = host.monotime()
          return false
        end, { timeout = 1.5, interval = 0.05, backoff = 2, max_interval = 0.2 })
      end)
      assert.is_true(#asked >= 4, "sleeps " .. #asked)
      local want = { 0.05, 0.1, 0.2, 0.2 }
      for i, w in ipairs(want) do
        assert.is_true(math.abs(asked[i] - w) < 1e-9, string.format("sleep %d: %.3f, want %.2f", i, asked[i], w))
        local gap = times[i + 1] - times[i]
        assert.is_true(gap >= w - 0.01, string.format("gap %d: %.3f, want %.2f", i, gap, w))
      end
    end)

    it("varies the interval by the jitter fraction", function()
      local times = {}
      local asked = recording_sleeps(function()
        raised(wait, function()
          times[#times + 1] = host.monotime()
          return false
        end, { timeout = 1.2, interval = 0.1, jitter = 0.5 })
      end)
      assert.is_true(#asked >= 3, "sleeps " .. #asked)
      local lo, hi = math.huge, 0
      for i = 1, #asked - 1 do -- the last one is cut short by the timeout
        lo, hi = math.min(lo, asked[i]), math.max(hi, asked[i])
        assert.is_true(times[i + 1] - times[i] >= asked[i] - 0.005, "gap " .. i)
      end
      assert.is_true(lo >= 0.05, "shortest " .. lo)
      assert.is_true(hi <= 0.15, "longest " .. hi)
      assert.is_true(hi - lo > 0.001, "no variation: " .. lo .. " .. " .. hi)
      assert.is_true(hi - lo > 0.01, "no variation: " .. lo .. ".." .. hi)
    end)

    it("reports progress with the last observation", function()
      local seen = {}
      audit.set_sink { action = function() end, log = function() end,
        progress = function(done, total, note) seen[#seen + 1] = { done, total, note } end }
      local n = 0
      local ok = pcall(wait, function()
        n = n + 1
        if n == 3 then return true end
        return false, "replicas " .. n .. "/3"
      end, { timeout = 5, interval = 0.01, what = "the rollout" })
      audit.set_sink(nil)
      assert.is_true(ok)
      assert.are.same({ 0, 5, "waiting for the rollout: replicas 1/3" }, seen[1])
      assert.are.same({ 0, 5, "waiting for the rollout: replicas 2/3" }, seen[2])
      assert.are.equal(2, #seen)
    end)

    it("stops at once on Ctrl-C", function()
      -- Ctrl-C once the wait has made its first check; it checks every 5 s
      local marker = rbtest.tmpdir("ctrlc") .. "/checked"
      local checked
      local ok, err = interrupt.run({ file = marker }, function()
        return wait(function()
          if not checked then checked = host.monotime(); rbtest.write(marker, "1") end
          return false, "never"
        end, { timeout = 30, interval = 5 })
      end)
      local took = host.monotime() - checked
      rbtest.rmtree(marker:match("^(.*)/"))
      assert.is_false(ok)
      assert.are.equal("interrupted", err.kind)
      assert.is_true(took < 1, "took " .. took)
    end)

    it("stops at the step's deadline", function()
      local ok, err = host.guarded(0.3, function()
        return wait(function() return false end, { timeout = 30, interval = 5 })
      end)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
    end)

    it("checks its arguments", function()
      assert.matches("wait: function expected, got nil", tostring(raised(wait)))
      assert.matches("wait: unknown option 'timout'", tostring(raised(wait, function() end, { timout = 1 })))
      assert.matches("wait: interval must be a non%-negative number", tostring(raised(wait, function() end, { interval = -1 })))
      assert.matches("wait: jitter is a fraction from 0 to 1", tostring(raised(wait, function() end, { jitter = 2 })))
      assert.matches("wait: backoff is a factor of 1 or more", tostring(raised(wait, function() end, { backoff = 0.5 })))
    end)
  end)

  describe("tcp", function()
    it("waits for a listener that comes up late", function()
      local port = rbtest.free_port()
      local p = listen_later(port, 0.5)
      local t0 = host.monotime()
      local addr = wait.tcp("127.0.0.1", port, { timeout = 10, interval = 0.05 })
      local took = host.monotime() - t0
      stop(p)
      assert.are.equal("127.0.0.1:" .. port, addr)
      assert.is_true(took >= 0.4 and took < 5, "took " .. took)
    end)

    it("resolves names (localhost from /etc/hosts)", function()
      local port = rbtest.free_port()
      local p = listen_later(port, 0)
      local addr = wait.tcp("localhost", port, { timeout = 10, interval = 0.05 })
      stop(p)
      assert.are.equal("127.0.0.1:" .. port, addr)
    end)

    it("times out with the last connection error", function()
      local port = rbtest.free_port()
      local err = raised(wait.tcp, "127.0.0.1", port, { timeout = 0.3, interval = 0.05 })
      assert.matches(string.format("^timed out after 0%%.3 s waiting for 127%%.0%%.0%%.1:%d to accept connections %%(%%d+ checks?%%); last observed: tcp 127%%.0%%.0%%.1:%d: Connection refused$", port, port), err.message)
    end)

    it("checks its arguments", function()
      assert.matches("wait.tcp: port must be an integer from 1 to 65535", tostring(raised(wait.tcp, "h", 0)))
      assert.matches("wait.tcp: host name expected", tostring(raised(wait.tcp, nil, 80)))
      assert.matches("wait.tcp: unknown option 'foo'", tostring(raised(wait.tcp, "h", 80, { foo = 1 })))
    end)
  end)

  describe("the TCP core", function()
    it("connects, or says why not", function()
      local port = rbtest.free_port()
      local addr, err = net.tcp_connect("127.0.0.1", port, 1)
      assert.is_nil(addr)
      assert.are.equal("net", err.kind)
      assert.are.equal("refused", err.code)
      assert.are.equal(string.format("tcp 127.0.0.1:%d: Connection refused", port), err.message)
      local p = listen_later(port, 0)
      local ok = wait.tcp("127.0.0.1", port, { timeout = 10, interval = 0.05 })
      assert.is_truthy(ok)
      assert.are.equal("127.0.0.1:" .. port, net.tcp_connect("127.0.0.1", port, 1))
      stop(p)
    end)

    it("times out a connection that is not accepted", function()
      -- a listener whose backlog is full: the kernel drops further SYNs,
      -- so the connect neither succeeds nor is refused
      local port = rbtest.free_port()
      local p = assert(proc.spawn { argv = { "python3", "-c", string.format(
        "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',%d))\ns.listen(0)\nc=[]\n" ..
        "for i in range(8):\n  t=socket.socket();t.setblocking(False)\n  try: t.connect(('127.0.0.1',%d))\n  except BlockingIOError: pass\n  c.append(t)\n" ..
        "print('ready',flush=True)\ntime.sleep(30)", port, port) } })
      assert.matches("^ready", p:read(100, 10))
      local t0 = host.monotime()
      local addr, err = net.tcp_connect("127.0.0.1", port, 0.4)
      local took = host.monotime() - t0
      stop(p)
      assert.is_nil(addr)
      assert.are.equal("timeout", err.code)
      assert.are.equal(string.format("tcp 127.0.0.1:%d: no connection within 0.4 s", port), err.message)
      assert.is_true(took >= 0.35 and took < 1.5, "took " .. took)
    end)
  end)

  describe("http", function()
    -- the real local server of tests/harness/httpserver, plain HTTP (TLS is
    -- in wait_http_tls_spec)
    local srv
    setup(function() srv = httpserver.start { plain = true } end)
    teardown(function() if srv then srv:stop() end end)

    local function hits(key)
      return http.get(srv:url("/hits"), { query = { of = key } }).json.hits
    end

    -- runs fn with a sink that keeps the progress notes and log lines
    local function watched(fn)
      local notes, logs = {}, {}
      audit.set_sink { action = function() end,
        log = function(level, msg) logs[#logs + 1] = level .. ": " .. msg end,
        progress = function(_, _, note) notes[#notes + 1] = note end }
      local ok, res = pcall(fn)
      audit.set_sink(nil)
      return ok, res, notes, logs
    end

    it("polls until the expected status and body", function()
      -- /starting answers 404 {"status": "unavailable"}, then {"status": "starting"}, then {"status": "healthy"}
      local url = srv:url("/starting?key=poll&first=404")
      local ok, res, notes, logs = watched(function()
        return wait.http(url, { match = '"status": "healthy"', interval = 0.01, timeout = 10 })
      end)
      assert.is_true(ok, tostring(res))
      assert.are.equal(200, res.status)
      assert.are.equal("healthy", res.json.status)
      local what = "waiting for GET " .. url .. " to answer 2xx: "
      assert.are.same({
        what .. 'status 404 (want 2xx): {"status": "unavailable"}',
        what .. 'status 200 but the body does not match "\\"status\\": \\"healthy\\"": {"status": "starting"}',
      }, notes)
      assert.are.equal(1, #logs)
      assert.matches("^info: GET " .. url:gsub("%p", "%%%0") .. " to answer 2xx: held after %d+%.%d s %(3 checks%)$", logs[1])
      assert.are.equal(3, hits("poll"))
    end)

    it("sees a 503 itself: inside a wait, runbook.http does not retry", function()
      -- /starting answers 503 first; the wait is the retry loop, so each
      -- check is one request and every answer is observed
      local url = srv:url("/starting?key=retried")
      local ok, res, notes, logs = watched(function()
        return wait.http(url, { match = '"status": "healthy"', interval = 0.01, timeout = 10 })
      end)
      assert.is_true(ok, tostring(res))
      assert.are.equal("healthy", res.json.status)
      local what = "waiting for GET " .. url .. " to answer 2xx: "
      assert.are.same({
        what .. 'status 503 (want 2xx): {"status": "unavailable"}',
        what .. 'status 200 but the body does not match "\\"status\\": \\"healthy\\"": {"status": "starting"}',
      }, notes)
      assert.are.equal(1, #logs)
      assert.matches("held after %d+%.%d s %(3 checks%)$", logs[1])
      assert.are.equal(3, hits("retried"))
    end)

    it("sends the headers it is given", function()
      local res = wait.http(srv:url("/admin"), { headers = { Authorization = "Bearer " .. srv.token }, timeout = 5 })
      assert.are.same({ metrics = { requests = 42 } }, res.json)
      local err = raised(wait.http, srv:url("/admin"), { headers = { Authorization = "Bearer wrong" }, timeout = 0, status = 200 })
      assert.are.equal(string.format('timed out after 0 s waiting for GET %s to answer 200 (1 check); last observed: status 401 (want 200): '
        .. '{"detail": "Authentication credentials were not provided."}', srv:url("/admin")), err.message)
    end)

    it("waits through connection refused until the server comes up", function()
      -- nothing listens on the port until the server starts 2 s later, after
      -- the first checks failed
      local port = rbtest.free_port()
      local late = assert(proc.spawn { argv = { "sh", "-c", string.format("sleep 2; exec python3 %s/tests/harness/httpserver.py --plain --port %d",
        rbtest.source_dir, port) }, stdout = "null", stderr = "null" })
      local url = string.format("http://127.0.0.1:%d/health", port)
      local t0 = host.monotime()
      local ok, res, notes = watched(function()
        return wait.http(url, { interval = 0.05, timeout = 20, match = '"healthy"' })
      end)
      local took = host.monotime() - t0
      stop(late)
      assert.is_true(ok, tostring(res))
      assert.are.equal("healthy", res.json.status)
      assert.is_true(took >= 2, "took " .. took)
      assert.is_true(#notes >= 1)
      assert.matches(string.format("^waiting for GET http://127%%.0%%.0%%.1:%d/health to answer 2xx: GET http://127%%.0%%.0%%.1:%d/health: "
        .. "could not connect: Failed to connect to 127%%.0%%.0%%.1 port %d after %%d+ ms: Couldn't connect to server$",
        port, port, port), notes[1])
    end)

    it("times out naming the last connection error", function()
      local port = rbtest.free_port()
      local url = string.format("http://127.0.0.1:%d/health", port)
      local t0 = host.monotime()
      local err = raised(wait.http, url, { timeout = 0.3, interval = 0.05 })
      local took = host.monotime() - t0
      -- the deadline holds: no retries with their own pauses inside a check
      assert.is_true(took >= 0.3 and took < 0.8, "took " .. took)
      assert.are.equal("wait", err.kind)
      assert.are.equal("timeout", err.code)
      assert.matches(string.format("^timed out after 0%%.3 s waiting for GET http://127%%.0%%.0%%.1:%d/health to answer 2xx %%(%%d+ checks?%%); "
        .. "last observed: GET http://127%%.0%%.0%%.1:%d/health: could not connect: Failed to connect to 127%%.0%%.0%%.1 port %d after %%d+ ms: "
        .. "Couldn't connect to server$", port, port, port), err.message)
    end)

    it("times out naming the last status and body", function()
      local url = srv:url("/status/404")
      local err = raised(wait.http, url, { timeout = 0.1, interval = 0.02, status = { 200, 204 } })
      assert.are.equal(string.format('timed out after 0.1 s waiting for GET %s to answer 200 or 204 (%d check%s); '
        .. 'last observed: status 404 (want 200 or 204): {"status": 404}', url, err.details.attempts,
        err.details.attempts == 1 and "" or "s"), err.message)
      assert.are.equal('status 404 (want 200 or 204): {"status": 404}', err.details.last)
    end)

    it("times out naming a body that does not match, cut to 120 bytes", function()
      local url = srv:url("/big?n=500")
      local err = raised(wait.http, url, { timeout = 0, match = "^done" })
      assert.are.equal(string.format('timed out after 0 s waiting for GET %s to answer 2xx (1 check); '
        .. 'last observed: status 200 but the body does not match "^done": %s…', url, string.rep("x", 120)), err.message)
    end)

    it("checks its arguments", function()
      assert.matches("wait.http: URL expected", tostring(raised(wait.http, "")))
      assert.matches("wait.http: unknown option 'retries'", tostring(raised(wait.http, srv:url("/json"), { retries = 0 })))
      assert.matches("wait.http: timeout must be a non%-negative number", tostring(raised(wait.http, srv:url("/json"), { timeout = -1 })))
    end)
  end)
end)
