-- cluster:port_forward against the fake: a local HTTP client talks through
-- the forwarded loopback port to a real TCP server behind the fake pod
-- (registered with POST /_fake/pod-ports), over several connections, and
-- everything is closed after the function, on error too.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local curl = require "runbook._curl"


local function pod(name, labels, ports)
  return { apiVersion = "v1", kind = "Pod", metadata = { name = name, namespace = "default", labels = labels },
    spec = { containers = { { name = "app", image = "nginx:1", ports = ports } } }, status = { phase = "Running" } }
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

describe("k8s port_forward", function()
  local fake, c, backend, backend_port
  setup(function()
    fake = k8sfake.start()
    c = k8s.connect { kubeconfig = fake.kubeconfig }
    backend, backend_port = k8sfake.http_backend()
  end)
  teardown(function()
    if backend then backend:kill("KILL"); backend:wait() end
    fake:stop()
  end)
  before_each(function()
    fake:reset()
    fake:control("POST", "/_fake/objects", { reconcile = false, objects = {
      pod("api-1", { app = "api" }, { { name = "http", containerPort = 8080 } }),
      -- running, first by name, and not the Service's: never picked for it
      pod("aaa-db-0", { app = "db" }, { { name = "http", containerPort = 8080 } }),
      { apiVersion = "v1", kind = "Service", metadata = { name = "api", namespace = "default" },
        spec = { selector = { app = "api" }, ports = { { port = 80, targetPort = "http" } } } } } })
    fake:control("POST", "/_fake/pod-ports", { namespace = "default", pod = "api-1", port = 8080, local_port = backend_port })
  end)

  local function get(port, path)
    local h <close> = curl.client { timeout = 20 }
    return h:request { method = "GET", url = string.format("http://127.0.0.1:%d%s", port, path) }
  end

  it("forwards several connections to the pod's port and returns the function's results", function()
    local a, b = c:port_forward({ pod = "api-1", port = 8080 }, function(lp)
      local bodies = {}
      for i = 1, 3 do
        local res = get(lp, "/hello/" .. i)
        assert.are.equal(200, res.status)
        bodies[i] = res.body:match("^(%S+)")
      end
      local h <close> = curl.client { timeout = 20 }
      local big = string.rep("0123456789", 20000)
      local res = h:request { method = "POST", url = string.format("http://127.0.0.1:%d/echo", lp), body = big }
      assert.are.equal(big, res.body)
      return bodies, lp
    end)
    assert.are.same({ "/hello/1", "/hello/2", "/hello/3" }, a)
    assert.is_true(b > 0)
    -- closed after the function: nothing listens on the port any more
    local h <close> = curl.client { timeout = 5, connect_timeout = 5 }
    local res, err = h:request { method = "GET", url = string.format("http://127.0.0.1:%d/", b) }
    assert.is_nil(res)
    assert.are.equal("connect", err.code)
    local sessions = fake:control("GET", "/_fake/execs").items
    assert.are.equal(4, #sessions)
    assert.are.same({ 8080 }, sessions[1].portforward)
  end)

  it("carries concurrent connections, each over its own WebSocket", function()
    fake:control("DELETE", "/_fake/requests")
    local bodies = c:port_forward({ pod = "api-1", port = 8080 }, function(lp)
      local h <close> = curl.client { timeout = 20 }
      local reqs = {}
      for i = 1, 6 do reqs[i] = { method = "GET", url = string.format("http://127.0.0.1:%d/c%d", lp, i) } end
      local res, errs = h:request_many(reqs, 6)
      local out = {}
      for i = 1, 6 do
        assert.is_nil(errs[i])
        out[i] = res[i].body:match("^(%S+)")
      end
      return out
    end)
    assert.are.same({ "/c1", "/c2", "/c3", "/c4", "/c5", "/c6" }, bodies)
    -- request_many keeps connections alive, so a connection may carry
    -- more than one request; several connections were opened
    local sessions = fake:control("GET", "/_fake/execs").items
    assert.is_true(#sessions >= 2 and #sessions <= 6, tostring(#sessions))
  end)

  it("warns in the run log about a connection the pod side refused", function()
    local audit = require "runbook._engine.audit"
    audit.reset()
    fake:control("POST", "/_fake/objects", { reconcile = false, objects = { pod("lonely", { app = "x" }) } })
    c:port_forward({ pod = "lonely", port = 9999 }, function(lp)
      local h <close> = curl.client { timeout = 20 }
      local res, err = h:request { method = "GET", url = string.format("http://127.0.0.1:%d/", lp) }
      assert.is_nil(res)
      assert.is_table(err)
    end)
    local warned
    for _, l in ipairs(audit.logs) do
      if l.level == "warn" and l.message:find("no local port registered", 1, true) then warned = l.message end
    end
    assert.are.equal("port-forward to pod default/lonely:9999: port-forward: error forwarding port 9999 to pod lonely: "
      .. "no local port registered for it", warned)
  end)

  it("resolves a Service to a ready pod and its named targetPort", function()
    local body = c:port_forward({ service = "api", port = 80 }, function(lp) return get(lp, "/via-service").body end)
    assert.truthy(body:find("^/via%-service #"))
    local sessions = fake:control("GET", "/_fake/execs").items
    assert.are.equal("api-1", sessions[#sessions].pod)
  end)

  it("closes everything when the function raises", function()
    local port
    local e = err_of(c.port_forward, c, { pod = "api-1", port = 8080 }, function(lp)
      port = lp
      assert.are.equal(200, get(lp, "/once").status)
      error("boom", 0)
    end)
    assert.are.equal("boom", e)
    local h <close> = curl.client { timeout = 5, connect_timeout = 5 }
    local res, err = h:request { method = "GET", url = string.format("http://127.0.0.1:%d/", port) }
    assert.is_nil(res)
    assert.are.equal("connect", err.code)
  end)

  it("raises for a missing pod or service", function()
    local e = err_of(c.port_forward, c, { pod = "nope", port = 80 }, function() end)
    assert.are.equal("NotFound", e.code)
    assert.are.equal('pods "nope" not found', e.message)
    e = err_of(c.port_forward, c, { service = "nope", port = 80 }, function() end)
    assert.are.equal('services "nope" not found', e.message)
  end)
end)
