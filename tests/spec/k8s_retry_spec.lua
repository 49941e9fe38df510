-- Retries against the fake's fault switches: 5xx, 429 with Retry-After,
-- dropped connections and slow answers; what is retried for which verb,
-- proven from the fake's request log.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local host = require "runbook._host"

local function cm(name, data)
  return { apiVersion = "v1", kind = "ConfigMap", metadata = { name = name }, data = data or { a = "1" } }
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

local function statuses(entries)
  local out = {}
  for _, e in ipairs(entries) do out[#out + 1] = e.status end
  return out
end

describe("k8s retries", function()
  local fake, c
  setup(function()
    fake = k8sfake.start()
    c = k8s.connect { kubeconfig = fake.kubeconfig, retry_delay = 0.05 }
    c:get { kind = "ConfigMap", name = "warm-up" } -- discovery done before faults
  end)
  teardown(function() fake:stop() end)
  before_each(function()
    fake:reset()
    audit.reset()
  end)

  it("retries a GET after 500s and says so in the log", function()
    c:create(cm("g"))
    fake:faults { fail = { code = 500 }, count = 2, method = "GET", path = "/configmaps/g$" }
    assert.are.equal("g", c:get({ kind = "ConfigMap", name = "g" }).metadata.name)
    assert.are.same({ 500, 500, 200 }, statuses(fake:matching("GET", "/configmaps/g$")))
    local warns = {}
    for _, l in ipairs(audit.logs) do if l.level == "warn" then warns[#warns + 1] = l.message end end
    assert.are.same({
      "GET " .. fake.server .. "/api/v1/namespaces/default/configmaps/g: 500 InternalError; retrying in 0.05 s (attempt 2 of 5)",
      "GET " .. fake.server .. "/api/v1/namespaces/default/configmaps/g: 500 InternalError; retrying in 0.1 s (attempt 3 of 5)",
    }, warns)
  end)

  it("honours Retry-After on 429, for every verb", function()
    fake:faults { throttle = { retry_after = 1 }, method = "POST" }
    local t0 = host.monotime()
    c:create(cm("throttled"))
    local elapsed = host.monotime() - t0
    assert.is_true(elapsed >= 0.95, "waited " .. elapsed)
    assert.is_true(elapsed < 3, "waited " .. elapsed)
    local posts = fake:matching("POST", "/configmaps$")
    assert.are.same({ 429, 201 }, statuses(posts))
    assert.is_true(posts[2].time - posts[1].time >= 0.95)
    assert.are.equal("throttle", posts[1].fault)
  end)

  it("retries after a dropped connection", function()
    c:create(cm("dropped"))
    fake:faults { drop = {}, method = "GET", path = "/configmaps/dropped$" }
    c:close() -- a fresh connection, so libcurl does not resend on its own
    assert.are.equal("1", c:get({ kind = "ConfigMap", name = "dropped" }).data.a)
    assert.are.same({ 0, 200 }, statuses(fake:matching("GET", "/configmaps/dropped$")))
    assert.are.equal("GET " .. fake.server .. "/api/v1/namespaces/default/configmaps/dropped: connection dropped; retrying in 0.05 s (attempt 2 of 5)",
      audit.logs[#audit.logs].message)
  end)

  it("retries apply and delete (idempotent) after 503", function()
    fake:faults { fail = { code = 503 }, method = "PATCH" }
    local _, r = c:apply(cm("app"))
    assert.are.equal("created", r)
    assert.are.same({ 503, 201 }, statuses(fake:matching("PATCH", "/configmaps/app$")))
    fake:faults { fail = { code = 503 }, method = "DELETE" }
    assert.are.equal("deleted", c:delete { kind = "ConfigMap", name = "app" })
    assert.are.same({ 503, 200 }, statuses(fake:matching("DELETE", "/configmaps/app$")))
  end)

  it("retries a create whose answer was lost, and takes AlreadyExists with the same content as created", function()
    -- the first POST's outcome is unknown (dropped); the object is there already
    -- (on a fresh connection: on a reused one, libcurl itself sends the
    -- request again when the connection dies before any answer)
    fake:seed { cm("landed", { a = "1" }) }
    fake:faults { drop = {}, method = "POST" }
    c:close()
    local o = c:create(cm("landed", { a = "1" }))
    assert.are.equal("landed", o.metadata.name)
    assert.are.same({ 0, 409 }, statuses(fake:matching("POST", "/configmaps$")))
    assert.are.equal("created", audit.recorded[1].result)
    assert.are.equal("created by an attempt whose answer was lost", audit.recorded[1].note)
    -- with different content it is somebody else's object: an error
    fake:faults { drop = {}, method = "POST" }
    c:close()
    local e = err_of(c.create, c, cm("landed", { a = "other" }))
    assert.are.equal("AlreadyExists", e.code)
    -- without an earlier lost attempt, AlreadyExists is never taken as success
    e = err_of(c.create, c, cm("landed", { a = "1" }))
    assert.are.equal("AlreadyExists", e.code)
  end)

  it("does not retry a JSON patch after a 500 (it may not be idempotent)", function()
    c:create(cm("jp"))
    fake:faults { fail = { code = 500 }, method = "PATCH" }
    local e = err_of(c.patch, c, { kind = "ConfigMap", name = "jp" }, { { op = "add", path = "/data/b", value = "2" } }, { type = "json" })
    assert.are.equal("InternalError", e.code)
    assert.are.equal(500, e.status)
    assert.are.equal(1, e.attempts)
    assert.are.equal(1, #fake:matching("PATCH", "/configmaps/jp$"))
  end)

  it("gives up after its attempts with the server's Status", function()
    fake:faults { fail = { code = 500, message = "etcdserver: request timed out" }, count = -1, method = "GET", path = "/configmaps/never$" }
    local e = err_of(c.get, c, { kind = "ConfigMap", name = "never" })
    assert.are.equal("InternalError", e.code)
    assert.are.equal(500, e.status)
    assert.are.equal(5, e.attempts)
    assert.are.equal("etcdserver: request timed out", e.message)
    assert.are.equal(5, #fake:matching("GET", "/configmaps/never$"))
  end)

  it("times out slow answers, names the server, and retries a GET", function()
    -- the limit leaves a busy machine time for a normal answer; the slow one is well past it
    local quick = k8s.connect { kubeconfig = fake.kubeconfig, timeout = 1, retries = 1, retry_delay = 0.01 }
    quick:create(cm("slow"))
    fake:faults { slow = { ms = 4000 }, method = "GET", path = "/configmaps/slow$" }
    assert.are.equal("slow", quick:get({ kind = "ConfigMap", name = "slow" }).metadata.name)
    fake:faults { slow = { ms = 4000 }, count = -1, method = "GET", path = "/configmaps/slow$" }
    local e = err_of(quick.get, quick, { kind = "ConfigMap", name = "slow" })
    assert.are.equal("timeout", e.code)
    assert.matches("^the Kubernetes API server " .. fake.server:gsub("%p", "%%%0") .. " did not answer GET /api/v1/namespaces/default/configmaps/slow in time: ", e.message)
  end)
end)
