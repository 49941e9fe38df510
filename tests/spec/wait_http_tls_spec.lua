-- wait.http against the real local HTTPS server, whose certificate a test
-- CA signed: the TLS options reach each request.
local httpserver = require "httpserver"
local wait = require "runbook.wait"

describe("wait.http over TLS", function()
  local srv
  setup(function() srv = httpserver.start() end)
  teardown(function() srv:stop() end)

  it("trusts the CA it is given", function()
    local res = wait.http(srv:url("/flaky?key=tls-ready&fail=2"), { ca_file = srv.ca_file, interval = 0.01, timeout = 10,
      match = '"status": "ok"' })
    assert.are.equal(200, res.status)
    assert.are.equal(3, res.json.attempt)
  end)

  it("presents a client certificate", function()
    local res = wait.http(srv:url("/clientcert"), { ca_file = srv.ca_file, cert_file = srv.client_cert, key_file = srv.client_key,
      timeout = 5 })
    assert.are.equal("runbook-client", res.json.cn)
  end)

  it("without the CA, times out saying the certificate is not trusted", function()
    -- 2 s: time for a TLS handshake (which fails) on a busy machine
    local ok, err = pcall(wait.http, srv:url("/json"), { timeout = 2, interval = 0.05 })
    assert.is_false(ok)
    assert.are.equal("timeout", err.code)
    assert.matches("^timed out after 2 s waiting for GET https://127%.0%.0%.1:%d+/json to answer 2xx %(%d+ checks?%); last observed: .*certificate", err.message)
  end)

  it("refuses an option it does not know", function()
    local ok, err = pcall(wait.http, srv:url("/json"), { cafile = srv.ca_file })
    assert.is_false(ok)
    assert.matches("wait.http: unknown option 'cafile'$", err)
  end)
end)
