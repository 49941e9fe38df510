-- runbook._curl, the shared libcurl core, against a real local HTTPS server.
local curl = require "runbook._curl"
local json = require "runbook._json"
local host = require "runbook._host"
local secret = require "runbook.secret"
local proc = require "runbook._proc"
local httpserver = require "httpserver"
local rbtest = require "rbtest"

describe("runbook._curl", function()
  local srv, c

  setup(function()
    srv = httpserver.start()
    c = curl.client { ca_file = srv.ca_file, timeout = 10 }
  end)

  teardown(function()
    if c then c:close() end
    if srv then srv:stop() end
  end)

  describe("client", function()
    it("is a runbook.curl.Client with liolib's lifecycle", function()
      local k = curl.client { ca_file = srv.ca_file }
      assert.matches("^runbook%.curl%.Client %(0x%x+%)$", tostring(k))
      k:close()
      k:close() -- twice is fine
      assert.are.equal("runbook.curl.Client (closed)", tostring(k))
      local ok, err = pcall(k.request, k, { url = srv:url("/json") })
      assert.is_false(ok)
      assert.matches("attempt to use a closed HTTP client", err, 1, true)
    end)

    it("closes at the end of a <close> scope", function()
      local held
      do
        local k <close> = curl.client { ca_file = srv.ca_file }
        held = k
        assert.are.equal(200, k:request { url = srv:url("/json") }.status)
      end
      assert.are.equal("runbook.curl.Client (closed)", tostring(held))
    end)

    it("rejects options of the wrong type", function()
      local ok, err = pcall(curl.client, { ca_file = 42 })
      assert.is_false(ok)
      assert.matches("curl.client: ca_file must be a string, got number", err, 1, true)
      ok, err = pcall(curl.client, { timeout = -1 })
      assert.is_false(ok)
      assert.matches("curl.client: timeout must be a number of seconds >= 0", err, 1, true)
    end)

    it("reports the libcurl version", function()
      local v, features = curl.version()
      assert.matches("^%d+%.%d+%.%d+", v)
      assert.are.equal("boolean", type(features.http2))
    end)
  end)

  describe("request", function()
    it("returns status, headers, header_list, body, version, url and time", function()
      local res = assert(c:request { url = srv:url("/json") })
      assert.are.equal(200, res.status)
      assert.are.equal("application/json", res.headers["content-type"])
      assert.matches("^rbtest/1 Python/%d", res.headers.server)
      local names = {}
      for _, h in ipairs(res.header_list) do names[#names + 1] = h[1] end
      assert.is_true(#res.header_list >= 4)
      assert.truthy(table.concat(names, ","):find("Content-Type", 1, true))
      assert.are.same({ status = "ok", items = { 1, 2, 3 }, nested = { name = "tezca" } }, json.decode(res.body))
      assert.are.equal("1.1", res.http_version)
      assert.are.equal(srv:url("/json"), res.effective_url)
      assert.are.equal("number", type(res.time))
      assert.is_true(res.time > 0 and res.time < 5)
    end)

    it("reuses one connection across requests", function()
      local k <close> = curl.client { ca_file = srv.ca_file }
      local a = json.decode(k:request { url = srv:url("/echo") }.body)
      local b = json.decode(k:request { url = srv:url("/echo"), method = "POST", body = "x" }.body)
      -- the same client port: the second request went over the first's connection
      assert.are.equal(a.client_port, b.client_port)
      local other <close> = curl.client { ca_file = srv.ca_file }
      local d = json.decode(other:request { url = srv:url("/echo") }.body)
      assert.are_not.equal(a.client_port, d.client_port)
    end)

    it("sends headers as pairs or as a map, and secrets revealed on the wire", function()
      local token = secret.wrap("s3cr3t-header-value")
      local res = assert(c:request { url = srv:url("/echo"), headers = { { "X-One", "1" }, { "Authorization", token } } })
      local seen = json.decode(res.body).headers
      assert.are.equal("1", seen["x-one"])
      assert.are.equal("s3cr3t-header-value", seen.authorization)
      res = assert(c:request { url = srv:url("/echo"), headers = { ["X-Two"] = "2", ["X-Empty"] = "" } })
      seen = json.decode(res.body).headers
      assert.are.equal("2", seen["x-two"])
      assert.are.equal("", seen["x-empty"])
      assert.is_nil(seen.expect)
    end)

    it("refuses header injection and bad names", function()
      local ok, err = pcall(c.request, c, { url = srv:url("/echo"), headers = { ["X-A"] = "a\r\nX-B: b" } })
      assert.is_false(ok)
      assert.matches("request: header X-A holds a line break or NUL", err, 1, true)
      ok, err = pcall(c.request, c, { url = srv:url("/echo"), headers = { { "Bad Name", "x" } } })
      assert.is_false(ok)
      assert.matches("request: invalid header name 'Bad Name'", err, 1, true)
      ok, err = pcall(c.request, c, { url = srv:url("/echo"), method = "GET /x" })
      assert.is_false(ok)
      assert.matches('request: method must be an HTTP method name such as "GET"', err, 1, true)
      -- the client is still usable after a refused request
      assert.are.equal(200, c:request { url = srv:url("/json") }.status)
    end)

    it("sends a string body, a secret body, and an empty POST", function()
      local res = assert(c:request { url = srv:url("/echo"), method = "POST", body = "a=1&b=2",
        headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
      local e = json.decode(res.body)
      assert.are.equal("POST", e.method)
      assert.are.equal("a=1&b=2", e.body)
      assert.are.equal("7", e.headers["content-length"])
      res = assert(c:request { url = srv:url("/echo"), method = "PUT", body = secret.wrap("body-secret-xyz") })
      e = json.decode(res.body)
      assert.are.equal("PUT", e.method)
      assert.are.equal("body-secret-xyz", e.body)
      res = assert(c:request { url = srv:url("/echo"), method = "POST" })
      assert.are.equal("0", json.decode(res.body).headers["content-length"])
      res = assert(c:request { url = srv:url("/echo"), method = "DELETE" })
      assert.are.equal("DELETE", json.decode(res.body).method)
    end)

    it("request_many sends bodies whole, with the Content-Type given or none", function()
      local big = string.rep("x", 200000) -- past what goes out with the request head
      local res, errs = c:request_many({
        { method = "PATCH", url = srv:url("/echo"), body = '{"a":1}',
          headers = { { "Content-Type", "application/apply-patch+yaml" } } },
        { method = "POST", url = srv:url("/echo"), body = "plain" },
        { method = "PUT", url = srv:url("/echo") },
        { method = "POST", url = srv:url("/echo"), body = big, headers = { ["content-type"] = "text/plain" } },
      }, 2)
      for i = 1, 4 do assert.is_nil(errs[i]) end
      local e = json.decode(res[1].body)
      assert.are.equal("PATCH", e.method)
      assert.are.equal('{"a":1}', e.body)
      assert.are.equal("application/apply-patch+yaml", e.headers["content-type"])
      assert.are.equal("7", e.headers["content-length"])
      e = json.decode(res[2].body)
      assert.are.equal("plain", e.body)
      assert.is_nil(e.headers["content-type"]) -- not made form data
      assert.is_nil(e.headers["expect"])
      e = json.decode(res[3].body)
      assert.are.equal("PUT", e.method)
      assert.are.equal("0", e.headers["content-length"])
      e = json.decode(res[4].body)
      assert.are.equal(#big, #e.body)
      assert.are.equal("text/plain", e.headers["content-type"])
    end)

    it("request_many starts the next request as soon as one finishes", function()
      -- with one in flight, every request finishes alone; waiting on the poll
      -- before starting the next would cost its full 100 ms timeout each time
      local reqs = {}
      for i = 1, 20 do reqs[i] = { url = srv:url("/json") } end
      local t0 = host.monotime()
      local res, errs = c:request_many(reqs, 1)
      local elapsed = host.monotime() - t0
      for i = 1, 20 do
        assert.is_nil(errs[i])
        assert.are.equal(200, res[i].status)
      end
      assert.is_true(elapsed < 1.5, string.format("20 requests took %.2f s (19 polls would be 1.9 s)", elapsed))
    end)

    it("resumes its TLS session on the connections after the first", function()
      local k <close> = curl.client { ca_file = srv.ca_file }
      local first = json.decode(assert(k:request { url = srv:url("/echo") }).body)
      assert.is_false(first.tls_resumed)
      local reqs = {}
      for i = 1, 4 do reqs[i] = { url = srv:url("/echo") } end
      local res, errs = k:request_many(reqs, 4)
      local resumed, ports = 0, {}
      for i = 1, 4 do
        assert.is_nil(errs[i])
        local e = json.decode(res[i].body)
        ports[e.client_port] = true
        if e.tls_resumed then resumed = resumed + 1 end
      end
      assert.is_true(next(ports) ~= nil)
      assert.is_true(resumed >= 1, "no connection of request_many resumed the session of the first")
    end)

    it("HEAD has no body", function()
      local res = assert(c:request { url = srv:url("/json"), method = "HEAD" })
      assert.are.equal(200, res.status)
      assert.are.equal("", res.body)
      assert.are.equal("65", res.headers["content-length"])
    end)

    it("streams an upload from a function, chunked when the size is unknown", function()
      local parts, i = { "abc", "", "defg", secret.wrap("hij") }, 0
      local res = assert(c:request { url = srv:url("/upload"), method = "PUT",
        upload = function(max)
          assert.is_true(max > 0)
          i = i + 1
          return parts[i]
        end })
      local u = json.decode(res.body)
      assert.are.equal(10, u.size)
      assert.are.equal(require("runbook._crypto").sha256("abcdefghij"), u.sha256)
      assert.is_true(u.chunked)
    end)

    it("sends Content-Length when upload_size is given, and checks it", function()
      local big = string.rep("0123456789", 30000) -- larger than curl's buffer
      local off = 0
      local res = assert(c:request { url = srv:url("/upload"), method = "PUT", upload_size = #big,
        upload = function(max)
          if off >= #big then return nil end
          -- hand out more than asked: the core keeps the rest for later
          local chunk = big:sub(off + 1, off + max + 100)
          off = off + #chunk
          return chunk
        end })
      local u = json.decode(res.body)
      assert.are.equal(#big, u.size)
      assert.is_false(u.chunked)
    end)

    it("stops at once when the upload function ends before upload_size", function()
      local t0 = host.monotime()
      local done = false
      local res, err = c:request { url = srv:url("/upload"), method = "PUT", upload_size = 1000, upload = function()
        if done then return nil end
        done = true
        return "short"
      end }
      assert.is_nil(res)
      assert.are.equal("protocol", err.code)
      assert.are.equal("PUT " .. srv:url("/upload") .. ": the upload function gave 5 bytes, upload_size said 1000", err.message)
      assert.is_true(host.monotime() - t0 < 2)
    end)

    it("raises when the upload function returns something else", function()
      local ok, err = pcall(c.request, c, { url = srv:url("/upload"), method = "PUT", upload = function() return 42 end })
      assert.is_false(ok)
      assert.matches("upload function must return a string, a secret or nil, got number", err, 1, true)
      ok, err = pcall(c.request, c, { url = srv:url("/upload"), method = "PUT", body = "x", upload = function() end })
      assert.is_false(ok)
      assert.matches("give either body or upload, not both", err, 1, true)
    end)

    it("streams the response to on_data without keeping the body", function()
      local n, calls = 0, 0
      local res = assert(c:request { url = srv:url("/big?n=1000000"), on_data = function(chunk)
        n = n + #chunk
        calls = calls + 1
      end })
      assert.are.equal(200, res.status)
      assert.is_nil(res.body)
      assert.are.equal(1000000, n)
      assert.is_true(calls > 1)
    end)

    it("aborts when on_data returns false", function()
      local res, err = c:request { url = srv:url("/big?n=1000000"), on_data = function() return false end }
      assert.is_nil(res)
      assert.are.equal("http", err.kind)
      assert.are.equal("aborted", err.code)
      assert.are.equal("GET " .. srv:url("/big?n=1000000") .. ": aborted: on_data returned false", err.message)
      assert.are.equal(srv:url("/big?n=1000000"), err.details.url)
      assert.are.equal("number", type(err.details.curl_code))
      -- the cause alone, for callers that word their own message
      assert.are.equal("aborted: on_data returned false", err.details.cause)
    end)

    it("re-raises an error from on_data after curl returns, and stays usable", function()
      local marker = setmetatable({}, { __tostring = function() return "marker" end })
      local ok, err = pcall(c.request, c, { url = srv:url("/big?n=1000000"), on_data = function() error(marker) end })
      assert.is_false(ok)
      assert.are.equal(marker, err)
      ok, err = pcall(c.request, c, { url = srv:url("/upload"), method = "POST", upload = function() error("upload broke") end })
      assert.is_false(ok)
      assert.matches("upload broke", err, 1, true)
      assert.are.equal(200, c:request { url = srv:url("/json") }.status)
    end)

    it("refuses to run a request or close the client from inside a callback", function()
      local inner
      local ok, err = pcall(c.request, c, { url = srv:url("/big?n=100"), on_data = function()
        inner = { pcall(c.close, c) }
        c:request { url = srv:url("/json") }
      end })
      assert.is_false(ok)
      assert.matches("this HTTP client is already running a request", err, 1, true)
      assert.is_false(inner[1])
      assert.matches("cannot close an HTTP client while its request is running", inner[2], 1, true)
      assert.are.equal(200, c:request { url = srv:url("/json") }.status)
    end)
  end)

  describe("failures", function()
    it("times out naming the URL", function()
      local t0 = host.monotime()
      local res, err = c:request { url = srv:url("/sleep?s=3"), timeout = 0.5 }
      assert.is_nil(res)
      assert.is_true(host.monotime() - t0 < 2)
      assert.are.equal("http", err.kind)
      assert.are.equal("timeout", err.code)
      assert.matches("^GET " .. srv:url("/sleep?s=3"):gsub("%p", "%%%0") .. ": timed out after 0%.5 s %(Operation timed out", err.message)
      assert.are.equal(err.message, tostring(err))
    end)

    it("reports a refused connection", function()
      local port = rbtest.free_port()
      local url = "http://127.0.0.1:" .. port .. "/"
      local res, err = c:request { url = url }
      assert.is_nil(res)
      assert.are.equal("connect", err.code)
      assert.matches("^GET " .. url:gsub("%p", "%%%0") .. ": could not connect: ", err.message)
    end)

    it("fails TLS against a CA it does not trust", function()
      local k <close> = curl.client {}
      local res, err = k:request { url = srv:url("/json") }
      assert.is_nil(res)
      assert.are.equal("tls", err.code)
      assert.matches("^GET " .. srv:url("/json"):gsub("%p", "%%%0") .. ": TLS failure: SSL certificate problem", err.message)
      local other <close> = curl.client { ca_file = srv.other_ca }
      res, err = other:request { url = srv:url("/json") }
      assert.is_nil(res)
      assert.are.equal("tls", err.code)
    end)

    it("trusts a CA given as PEM data, or nothing when insecure", function()
      local k <close> = curl.client { ca_data = rbtest.read(srv.ca_file) }
      assert.are.equal(200, assert(k:request { url = srv:url("/json") }).status)
      local wrong <close> = curl.client { ca_data = rbtest.read(srv.other_ca) }
      local res, err = wrong:request { url = srv:url("/json") }
      assert.is_nil(res)
      assert.are.equal("tls", err.code)
      local any <close> = curl.client { insecure = true }
      assert.are.equal(200, assert(any:request { url = srv:url("/json") }).status)
    end)

    it("checks the certificate against tls_server_name while connecting to the URL's host", function()
      local k <close> = curl.client { ca_file = srv.ca_file, tls_server_name = "localhost" }
      local res = assert(k:request { url = srv:url("/echo?x=1") })
      assert.are.equal(200, res.status)
      local echo = json.decode(res.body)
      -- the server sees the URL's authority and path, not the name
      assert.are.equal(srv.base:match("^https://(.*)$"), echo.headers.Host or echo.headers.host)
      assert.are.equal("/echo", echo.path)
      assert.are.equal(srv:url("/echo?x=1"), res.effective_url)
      local wrong <close> = curl.client { ca_file = srv.ca_file, tls_server_name = "elsewhere.test" }
      local err
      res, err = wrong:request { url = srv:url("/json") }
      assert.is_nil(res)
      assert.are.equal("tls", err.code)
      assert.matches("^GET " .. srv:url("/json"):gsub("%p", "%%%0") .. ": TLS failure: .*elsewhere%.test", err.message)
      local ok, e = pcall(curl.client, { tls_server_name = "a:1" })
      assert.is_false(ok)
      assert.matches("curl.client: tls_server_name must be a host name or an IPv4 address, got 'a:1'", e, 1, true)
    end)

    it("presents a client certificate from files or from memory", function()
      assert.are.equal(403, c:request { url = srv:url("/clientcert") }.status)
      local f <close> = curl.client { ca_file = srv.ca_file, cert_file = srv.client_cert, key_file = srv.client_key }
      local res = assert(f:request { url = srv:url("/clientcert") })
      assert.are.equal(200, res.status)
      assert.are.equal("runbook-client", json.decode(res.body).cn)
      local m <close> = curl.client { ca_data = rbtest.read(srv.ca_file), cert_data = rbtest.read(srv.client_cert),
        key_data = secret.wrap(rbtest.read(srv.client_key)) }
      res = assert(m:request { url = srv:url("/clientcert") })
      assert.are.equal(200, res.status)
      assert.are.equal("runbook-client", json.decode(res.body).cn)
    end)

    it("reports a reset connection", function()
      local res, err = c:request { url = srv:url("/reset") }
      assert.is_nil(res)
      assert.are.equal("http", err.kind)
      assert.are.equal("reset", err.code)
      assert.matches("^GET " .. srv:url("/reset"):gsub("%p", "%%%0") .. ": the connection was reset or closed early", err.message)
    end)

    it("does not follow redirects unless asked", function()
      local res = assert(c:request { url = srv:url("/redirect") })
      assert.are.equal(302, res.status)
      assert.are.equal("/json", res.headers.location)
      res = assert(c:request { url = srv:url("/redirect"), follow = true })
      assert.are.equal(200, res.status)
      assert.are.equal(srv:url("/json"), res.effective_url)
      local err
      res, err = c:request { url = srv:url("/redirect-loop"), follow = true, max_redirs = 2 }
      assert.is_nil(res)
      assert.are.equal("protocol", err.code)
      assert.matches("Maximum (2) redirects followed", err.message, 1, true)
    end)

    it("scrubs secrets from the URL in messages", function()
      local tok = secret.wrap("query-token-123456")
      local res, err = c:request { url = srv:url("/sleep?s=3&token=") .. tok, timeout = 0.3 }
      assert.is_nil(res)
      assert.are.equal(1, err.message:find("GET [REDACTED]: timed out after 0.3 s (", 1, true))
      res, err = c:request { url = srv:url("/sleep?s=2&token=" .. tok:reveal()), timeout = 0.3 }
      assert.is_nil(res)
      assert.is_nil(err.message:find("query-token-123456", 1, true))
      assert.truthy(err.message:find("token=[REDACTED]", 1, true))
      res, err = c:request { url = srv:url("/sleep?s=3&token=" .. tok:reveal()), display_url = srv:url("/sleep?token=***"), timeout = 0.3 }
      assert.is_nil(res)
      assert.are.equal(srv:url("/sleep?token=***"), err.details.url)
    end)

    it("stops at the step's deadline with kind timeout", function()
      local got
      local t0 = host.monotime()
      local ok, e = host.guarded(0.5, function()
        local r, err = c:request { url = srv:url("/sleep?s=3") }
        got = err
        return r
      end)
      assert.is_true(host.monotime() - t0 < 2)
      -- the guard may also raise its own timeout right after the call returns
      if got then
        assert.are.equal("timeout", got.kind)
        assert.are.equal("timeout", got.code)
        assert.matches("^GET " .. srv:url("/sleep?s=3"):gsub("%p", "%%%0") .. ": the step's time limit ran out", got.message)
      else
        assert.is_false(ok)
        assert.are.equal("timeout", e.kind)
      end
    end)

    it("stops at Ctrl-C with kind interrupted", function()
      host.trap_signals()
      local killer = assert(proc.spawn { argv = { "sh", "-c", "sleep 0.4; kill -INT " .. host.pid() } })
      local t0 = host.monotime()
      local res, err = c:request { url = srv:url("/sleep?s=4") }
      local took = host.monotime() - t0
      host.clear_interrupt()
      killer:wait()
      assert.is_nil(res)
      assert.is_true(took < 2.5)
      assert.are.equal("interrupted", err.kind)
      assert.are.equal("interrupted", err.code)
      assert.are.equal("GET " .. srv:url("/sleep?s=4") .. ": interrupted", err.message)
    end)
  end)

  describe("HTTP/2", function()
    local h2server = require "h2server"

    it("is used when the server offers it, and not asked for when http2 = false", function()
      if not h2server.available() then
        pending("nghttpd is not installed (Debian package nghttp2-server)")
        return
      end
      local h2 = h2server.start { files = { ["hello.json"] = '{"hello":"h2"}' } }
      local ok, err = pcall(function()
        local k <close> = curl.client { ca_file = h2.ca_file }
        local res = assert(k:request { url = h2:url("/hello.json") })
        assert.are.equal(200, res.status)
        assert.are.equal("2", res.http_version)
        assert.are.same({ hello = "h2" }, json.decode(res.body))
        res = assert(k:request { url = h2:url("/missing") })
        assert.are.equal(404, res.status)
        assert.are.equal("2", res.http_version)
        -- nghttpd speaks only HTTP/2: a client told to stay on 1.1 gets nothing back
        local old <close> = curl.client { ca_file = h2.ca_file, http2 = false }
        local none, e = old:request { url = h2:url("/hello.json") }
        assert.is_nil(none)
        assert.are.equal("reset", e.code)
      end)
      h2:stop()
      assert(ok, err)
    end)
  end)

  describe("debug output", function()
    it("prints request lines and statuses only, scrubbed", function()
      local dir = rbtest.tmpdir("curldebug")
      rbtest.write(dir .. "/debug_spec.lua", [[
        local curl = require "runbook._curl"
        local secret = require "runbook.secret"
        it("requests", function()
          local c = curl.client { ca_file = os.getenv("CA") }
          local tok = secret.wrap("debug-secret-abcdef")
          local r = assert(c:request { url = os.getenv("BASE") .. "/echo?t=" .. tok:reveal(), method = "POST",
            headers = { Authorization = "Bearer " .. tok:reveal() }, body = "body-" .. tok:reveal() })
          assert.are.equal(200, r.status)
        end)
      ]])
      local r = rbtest.run({ "test", dir .. "/debug_spec.lua" },
        { env = { RUNBOOK_HTTP_DEBUG = "1", CA = srv.ca_file, BASE = srv.base } })
      rbtest.rmtree(dir)
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      assert.truthy(r.stderr:find("http> POST " .. srv.base .. "/echo?t=[REDACTED]\n", 1, true))
      assert.truthy(r.stderr:find("http< 200 HTTP/1.1 POST " .. srv.base .. "/echo?t=[REDACTED] (", 1, true))
      local all = r.stdout .. r.stderr
      assert.is_nil(all:find("debug-secret-abcdef", 1, true))
      assert.is_nil(all:find("Authorization", 1, true))
      assert.is_nil(all:find("body-", 1, true))
    end)
  end)
end)
