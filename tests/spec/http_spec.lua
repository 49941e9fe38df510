-- runbook.http against a real local HTTPS server (tests/harness/httpserver.py).
local http = require "runbook.http"
local url_lib = require "runbook.http.url"
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local secret = require "runbook.secret"
local httpserver = require "httpserver"

local function esc(s) return (s:gsub("%p", "%%%0")) end


-- The pauses runbook.http asked host.sleep for while fn ran.
local function sleeps(fn)
  local asked, real = {}, host.sleep
  host.sleep = function(d) asked[#asked + 1] = d; return real(d) end
  local ok, err = pcall(fn)
  host.sleep = real
  if not ok then error(err, 0) end
  return asked
end

describe("runbook.http", function()
  local srv, tls

  setup(function()
    srv = httpserver.start { token = "admin-token-7f3a9c" }
    tls = { ca_file = srv.ca_file }
  end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() audit.reset() end)

  local function get(path, opts)
    opts = opts or {}
    opts.ca_file = opts.ca_file or srv.ca_file
    return http.get(srv:url(path), opts)
  end

  local function hits(key)
    return get("/hits", { query = { of = key } }).json.hits
  end

  describe("requests", function()
    it("returns status, headers and a lazily decoded JSON body", function()
      local res = get("/json")
      assert.are.equal(200, res.status)
      assert.are.equal("application/json", res:header("Content-Type"))
      assert.is_true(res:ok())
      assert.is_nil(rawget(res, "json"))
      assert.are.same({ status = "ok", items = { 1, 2, 3 }, nested = { name = "tezca" } }, res.json)
      assert.is_not_nil(rawget(res, "json"))
      assert.are.equal(1, res.attempts)
      assert.are.equal(srv:url("/json"), res.url)
      assert.are.equal("GET", res.method)
    end)

    it("encodes a query table, secrets sent but masked in the URL shown", function()
      local tok = secret.wrap("query-secret-4242")
      local res = get("/echo", { query = { b = "x y/z", a = 1, list = { "1", "2" }, tok = tok } })
      assert.are.equal("a=1&b=x%20y%2Fz&list=1&list=2&tok=query-secret-4242", res.json.query)
      assert.are.equal(srv:url("/echo") .. "?a=1&b=x%20y%2Fz&list=1&list=2&tok=[REDACTED]", res.url)
    end)

    it("sends JSON bodies, revealing secrets on the wire only", function()
      local pw = secret.wrap("json-body-secret-99")
      local res = http.post(srv:url("/echo"), { ca_file = srv.ca_file, json = { user = "app", password = pw } })
      local sent = res.json
      assert.are.equal("application/json", sent.headers["content-type"])
      assert.are.same({ user = "app", password = "json-body-secret-99" }, json.decode(sent.body))
      res = http.put(srv:url("/echo"), { ca_file = srv.ca_file, form = { a = "1 2", b = "&" } })
      assert.are.equal("a=1%202&b=%26", res.json.body)
      assert.are.equal("application/x-www-form-urlencoded", res.json.headers["content-type"])
    end)

    it("refuses unknown options and conflicting bodies", function()
      local ok, err = pcall(http.get, srv:url("/json"), { ca_flie = "x" })
      assert.is_false(ok)
      assert.matches("http.request: unknown option 'ca_flie'", err, 1, true)
      ok, err = pcall(http.post, srv:url("/json"), { body = "x", json = {} })
      assert.is_false(ok)
      assert.matches("http.request: give only one of body, json, form and upload", err, 1, true)
      ok, err = pcall(http.get, "ftp://example/")
      assert.is_false(ok)
      assert.matches("http.request: url must start with http:// or https:// (got ftp://example/)", err, 1, true)
    end)

    it("has a function per method, streams bodies both ways", function()
      assert.are.equal("PATCH", http.patch(srv:url("/echo"), { ca_file = srv.ca_file, body = "p" }).json.method)
      assert.are.equal("OPTIONS", http.options(srv:url("/echo"), { ca_file = srv.ca_file }).json.method)
      local head = http.head { url = srv:url("/json"), ca_file = srv.ca_file }
      assert.are.equal(200, head.status)
      assert.are.equal("", head.body)
      local n = 0
      local res = get("/big?n=300000", { on_data = function(chunk) n = n + #chunk end })
      assert.is_nil(res.body)
      assert.are.equal(300000, n)
      local sent = false
      res = http.put(srv:url("/upload"), { ca_file = srv.ca_file, upload_size = 5, upload = function()
        if sent then return nil end
        sent = true
        return "12345"
      end })
      assert.are.equal(5, res.json.size)
      assert.is_false(res.json.chunked)
    end)

    it("does not follow redirects unless asked", function()
      local res = get("/redirect")
      assert.are.equal(302, res.status)
      assert.are.equal("/json", res.headers.location)
      res = get("/redirect", { follow = true })
      assert.are.equal(200, res.status)
      assert.are.equal(srv:url("/json"), res.effective_url)
    end)

    it("authenticates with a client certificate", function()
      assert.are.equal(403, get("/clientcert").status)
      local res = get("/clientcert", { cert_file = srv.client_cert, key_file = srv.client_key })
      assert.are.equal(200, res.status)
      assert.are.equal("runbook-client", res.json.cn)
    end)

    it("checks an expected status", function()
      assert.are.equal(404, get("/status/404", { status = 404 }).status)
      local ok, err = pcall(get, "/status/404", { status = { 200, 204 } })
      assert.is_false(ok)
      assert.are.equal("status", err.code)
      assert.are.equal("GET " .. srv:url("/status/404") .. ': expected status 200 or 204, got 404: "{\\"status\\": 404}"', err.message)
      local res, e2 = http.try { url = srv:url("/status/500"), ca_file = srv.ca_file, status = 200, retries = 0 }
      assert.is_nil(res)
      assert.are.equal(500, e2.details.status)
    end)
  end)

  describe("failures", function()
    it("names the URL on a timeout", function()
      local ok, err = pcall(get, "/sleep?s=3", { timeout = 0.5, retries = 0 })
      assert.is_false(ok)
      assert.are.equal("http", err.kind)
      assert.are.equal("timeout", err.code)
      assert.matches("^GET " .. esc(srv:url("/sleep?s=3")) .. ": timed out after 0%.5 s %(", err.message)
    end)

    it("fails TLS against a server whose CA is not trusted, without retrying", function()
      local ok, err
      local slept = sleeps(function() ok, err = pcall(http.get, srv:url("/json")) end)
      assert.is_false(ok)
      assert.are.equal("tls", err.code)
      assert.are.equal(1, err.details.attempts)
      assert.matches("^GET " .. esc(srv:url("/json")) .. ": TLS failure: SSL certificate problem: ", err.message)
      assert.are.same({}, slept) -- no pause before a retry (a stopwatch says the same, unless the machine is busy)
    end)

    it("names the URL and what was received when JSON was expected", function()
      local res = get("/text")
      local ok, err = pcall(function() return res.json end)
      assert.is_false(ok)
      assert.are.equal("not-json", err.code)
      assert.are.equal("GET " .. srv:url("/text") .. ': expected a JSON body, got text/html (status 200, 52 bytes): '
        .. '"<html><body>Bad gateway from the proxy</body></html>"', err.message)
      res = get("/big?n=1000")
      ok, err = pcall(function() return res.json end)
      assert.is_false(ok)
      assert.are.equal("GET " .. srv:url("/big?n=1000") .. ": expected a JSON body, got application/octet-stream (status 200, 1000 bytes): \""
        .. string.rep("x", 200) .. "\" ... (1000 bytes in all)", err.message)
    end)

    it("scrubs secrets from bodies quoted in errors", function()
      local tok = secret.wrap("echoed-secret-31337")
      local res = http.post(srv:url("/echo"), { ca_file = srv.ca_file, body = tok })
      local ok, err = pcall(http.request, { url = srv:url("/echo"), method = "POST", ca_file = srv.ca_file, body = tok, status = 201 })
      assert.is_false(ok)
      assert.is_nil(err.message:find("echoed-secret-31337", 1, true))
      assert.truthy(err.message:find('\\"body\\": \\"[REDACTED]\\"', 1, true))
      assert.are.equal("echoed-secret-31337", res.json.body)
    end)

    it("retries a reset connection and then succeeds", function()
      -- a fresh client: curl itself silently retries a request whose reused
      -- connection died, which would hide one of the resets counted here
      local fresh <close> = require("runbook._curl").client { ca_file = srv.ca_file }
      local res = get("/reset", { query = { key = "reset-1", times = 2 }, retry_delay = 0.05, client = fresh })
      assert.are.equal(200, res.status)
      assert.are.equal(3, res.attempts)
      assert.are.equal(3, res.json.attempt)
      assert.are.equal(2, #audit.logs)
      assert.are.equal("warn", audit.logs[1].level)
      assert.are.equal("GET " .. srv:url("/reset") .. "?key=reset-1&times=2: reset, trying again in 0.05 s (attempt 2 of 3)", audit.logs[1].message)
    end)

    it("gives up after the retries with the last error", function()
      local ok, err = pcall(get, "/reset", { query = { key = "reset-2", times = 9 }, retries = 1, retry_delay = 0.05 })
      assert.is_false(ok)
      assert.are.equal("reset", err.code)
      assert.are.equal(2, err.details.attempts)
      assert.matches("%(after 2 attempts%)$", err.message)
    end)

    it("retries 5xx on GET but not on POST", function()
      local res = get("/flaky", { query = { key = "flaky-get", fail = 2 }, retry_delay = 0.05 })
      assert.are.equal(200, res.status)
      assert.are.equal(3, res.attempts)
      res = http.post(srv:url("/flaky"), { ca_file = srv.ca_file, query = { key = "flaky-post", fail = 2 }, retry_delay = 0.05 })
      assert.are.equal(503, res.status)
      assert.are.equal(1, res.attempts)
      assert.are.equal(1, hits("flaky-post"))
      assert.are.equal(3, hits("flaky-get"))
    end)

    it("honours Retry-After on 429", function()
      local t0 = host.monotime()
      local res = get("/retry-after", { query = { key = "ra-1", after = 1 } })
      assert.are.equal(200, res.status)
      assert.are.equal(2, res.attempts)
      assert.is_true(host.monotime() - t0 >= 0.95)
      -- a wait longer than allowed returns the 429 at once
      local slept = sleeps(function() res = get("/retry-after", { query = { key = "ra-2", after = 30 }, max_retry_after = 5 }) end)
      assert.are.equal(429, res.status)
      assert.are.equal("30", res.headers["retry-after"])
      assert.are.same({}, slept)
    end)

    it("reads Retry-After as seconds or an HTTP date", function()
      assert.are.equal(7, http.retry_after("7"))
      assert.is_nil(http.retry_after("soon"))
      local now = os.time { year = 2026, month = 11, day = 22, hour = 10, min = 0, sec = 0 }
      local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", now + 90)
      assert.are.equal(90, http.retry_after(date, now))
    end)
  end)

  describe("audit", function()
    it("records requests that change things, not reads", function()
      get("/json")
      assert.are.equal(0, #audit.recorded)
      http.delete(srv:url("/echo"), { ca_file = srv.ca_file, query = { token = secret.wrap("delete-secret-77") } })
      assert.are.equal(1, #audit.recorded)
      local a = audit.recorded[1]
      assert.are.equal("http", a.kind)
      assert.are.equal("DELETE", a.method)
      assert.are.equal(srv:url("/echo") .. "?token=[REDACTED]", a.url)
      assert.are.equal(200, a.status)
      assert.are.equal("DELETE " .. srv:url("/echo") .. "?token=[REDACTED] -> 200", a.summary)
    end)

    it("reports instead of sending in a dry run, unless read_only", function()
      local actions = {}
      audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
      local ok, err = pcall(function()
        local res = http.post(srv:url("/echo"), { ca_file = srv.ca_file, query = { key = "dry-1" }, json = { a = 1 } })
        assert.is_true(res.dry_run)
        assert.is_nil(res.status)
        local ok2, e2 = pcall(function() return res.json end)
        assert.is_false(ok2)
        assert.are.equal("dry-run", e2.code)
        assert.are.equal("POST " .. srv:url("/echo") .. "?key=dry-1: the request was not sent (dry run), so there is no body; check res.dry_run before reading it", e2.message)
        assert.are.equal(200, get("/json").status) -- reads still go out
        local sent = http.post(srv:url("/echo"), { ca_file = srv.ca_file, query = { key = "dry-2" }, read_only = true })
        assert.are.equal(200, sent.status)
      end)
      audit.set_sink(nil)
      assert(ok, err)
      assert.are.equal(0, hits("dry-1"))
      assert.are.equal(1, hits("dry-2"))
      assert.are.equal(2, #actions)
      assert.is_true(actions[1].dry_run)
      assert.are.equal("would POST " .. srv:url("/echo") .. "?key=dry-1", actions[1].summary)
      assert.are.equal(200, actions[2].status)
    end)

    it("never lets secrets sent in headers, bodies or queries reach logs or actions", function()
      local s = secret.wrap("leak-check-secret-5a5a5a")
      http.post(srv:url("/flaky"), { ca_file = srv.ca_file, headers = { Authorization = "Bearer " .. s },
        query = { key = "leak", fail = 0, t = s }, body = s })
      http.put(srv:url("/echo"), { ca_file = srv.ca_file, json = { s = s }, headers = { { "X-Key", s } } })
      pcall(http.get, srv:url("/flaky"), { ca_file = srv.ca_file, query = { key = "leak2", fail = 9, t = s }, retry_delay = 0.01, status = 200, headers = { Authorization = s } })
      assert.is_true(#audit.logs >= 2)
      local text = json.encode({ audit.logs, audit.recorded }, { secrets = "redact" })
      for _, form in ipairs { "leak-check-secret-5a5a5a", crypto.base64_encode("leak-check-secret-5a5a5a"),
        crypto.hex_encode("leak-check-secret-5a5a5a"), url_lib.encode("leak-check-secret-5a5a5a") } do
        assert.is_nil(text:find(form, 1, true), form)
      end
    end)
  end)

  describe("expect", function()
    it("passes when status, JSON fields and body pattern hold", function()
      local res = http.expect({ url = srv:url("/health"), ca_file = srv.ca_file },
        { status = 200, json = { status = "healthy", database = "connected" }, body = '"healthy"' })
      assert.are.equal(200, res.status)
      res = http.expect({ url = srv:url("/json"), ca_file = srv.ca_file }, { json = { ["nested.name"] = "tezca", ["items.2"] = 2, items = { 1, 2, 3 } } })
      assert.are.equal(200, res.status)
    end)

    it("lists every mismatch with the URL", function()
      local ok, err = pcall(http.expect, { url = srv:url("/health"), ca_file = srv.ca_file },
        { status = 201, json = { status = "ok", version = "2" }, body = "^nope" })
      assert.is_false(ok)
      assert.are.equal("expectation", err.code)
      assert.are.equal("GET " .. srv:url("/health") .. ": expected status 201, got 200; "
        .. 'expected json.status = "ok", got "healthy"; expected json.version = "2", got nothing; '
        .. 'expected the body to match "^nope", got "{\\"status\\": \\"healthy\\", \\"database\\": \\"connected\\"}"', err.message)
    end)

    it("reports a non-JSON body and transport failures", function()
      local ok, err = pcall(http.expect, { url = srv:url("/text"), ca_file = srv.ca_file }, { json = { status = "ok" } })
      assert.is_false(ok)
      assert.are.equal("GET " .. srv:url("/text") .. ': expected a JSON body, got text/html: "<html><body>Bad gateway from the proxy</body></html>"', err.message)
      ok, err = pcall(http.expect, srv:url("/json")) -- CA not trusted
      assert.is_false(ok)
      assert.are.equal("expectation", err.code)
      assert.matches("^GET " .. esc(srv:url("/json")) .. ": TLS failure", err.message)
    end)
  end)

  describe("check", function()
    local function rows(token)
      return {
        { name = "API health", url = srv:url("/health"), json = { status = "healthy", database = "connected" } },
        { name = "Public API", url = srv:url("/json"), status = 200, body = "items" },
        { name = "Admin API (no auth)", url = srv:url("/admin"), status = 401 },
        { name = "Admin API (valid JWT)", url = srv:url("/admin"), headers = { Authorization = "Bearer " .. token }, status = 200,
          json = { ["metrics.requests"] = 42 } },
      }
    end

    it("runs the whole checklist and reports every row", function()
      local results = http.check(rows(secret.wrap("admin-token-7f3a9c")), tls)
      assert.are.equal(4, #results)
      for _, r in ipairs(results) do assert.is_true(r.ok, r.name) end
      assert.are.equal(401, results[3].status)
      assert.are.equal(4, #audit.logs)
      assert.are.equal("http.check [ok] Admin API (no auth): GET " .. srv:url("/admin") .. " -> 401", audit.logs[3].message)
      assert.are.equal(1, #audit.recorded)
      local a = audit.recorded[1]
      assert.are.equal("http-check", a.kind)
      assert.are.equal(4, a.passed)
      assert.are.equal(0, a.failed)
      assert.are.equal("http.check: 4 of 4 rows passed", a.summary)
      assert.are.equal("Admin API (valid JWT)", a.rows[4].name)
      assert.are.equal(200, a.rows[4].status)
    end)

    it("fails the step listing every failing row, after running them all", function()
      local ok, err = pcall(http.check, rows(secret.wrap("wrong-token-000000")), tls)
      assert.is_false(ok)
      assert.are.equal("check-failed", err.code)
      assert.are.equal("http.check: 1 of 4 rows failed:\n  - Admin API (valid JWT): GET " .. srv:url("/admin")
        .. ': expected status 200, got 401; expected json.metrics.requests = 42, got nothing', err.message)
      assert.are.equal(4, #audit.logs)
      assert.are.equal("error", audit.logs[4].level)
      assert.are.equal("http.check [FAIL] Admin API (valid JWT): GET " .. srv:url("/admin") .. " -> expected status 200, got 401; expected json.metrics.requests = 42, got nothing", audit.logs[4].message)
      local a = audit.recorded[1]
      assert.are.equal(3, a.passed)
      assert.are.equal(1, a.failed)
      assert.is_false(a.rows[4].ok)
      local text = json.encode({ audit.logs, audit.recorded, err.message }, { secrets = "redact" })
      assert.is_nil(text:find("wrong-token-000000", 1, true))
    end)

    it("reports a row whose request fails with what happened", function()
      local ok, err = pcall(http.check, {
        { name = "slow", url = srv:url("/sleep?s=3"), request = { timeout = 0.3, retries = 0 } },
        { name = "fine", url = srv:url("/json") },
      }, tls)
      assert.is_false(ok)
      assert.matches("^http%.check: 1 of 2 rows failed:\n  %- slow: GET " .. esc(srv:url("/sleep?s=3")) .. ": timed out after 0%.3 s", err.message)
      assert.are.equal(2, #audit.logs)
      assert.are.equal("http.check [ok] fine: GET " .. srv:url("/json") .. " -> 200", audit.logs[2].message)
    end)
  end)
end)
