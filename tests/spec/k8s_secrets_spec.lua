-- Secrets against the fake: ensured from values that stay opaque, with
-- if_exists keep / replace / merge; read back as secret values registered
-- with the redactor; nothing of a value in action records or logs.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local secret = require "runbook.secret"
local host = require "runbook._host"
local json = require "runbook._json"
local crypto = require "runbook._crypto"

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

-- Everything recorded outside a run, as one text.
local function recorded_text()
  return json.encode({ actions = audit.recorded, logs = audit.logs }, { secrets = "redact" })
end

describe("k8s secrets", function()
  local fake, c
  setup(function()
    fake = k8sfake.start()
    c = k8s.connect { kubeconfig = fake.kubeconfig }
  end)
  teardown(function() fake:stop() end)
  before_each(function()
    fake:reset()
    audit.reset()
  end)

  it("creates a Secret from secret and plain values, like kubectl create secret generic", function()
    local pw = secret.random { bytes = 32, encoding = "hex" }
    local s, result = c:secret { name = "postgres", data = { user = "bowmark", password = pw, port = 5432 } }
    assert.are.equal("created", result)
    assert.is_true(secret.is(s.data.password))
    assert.is_true(crypto.equal(pw, s.data.password))
    -- declared plain, so returned plain: never registered with the redactor
    assert.are.same({ "bowmark", "5432" }, { s.data.user, s.data.port })
    assert.are.equal("Opaque", s.type)
    -- on the wire: base64 in data, as the API wants
    local posts = fake:matching("POST", "/secrets$")
    assert.are.equal(1, #posts)
    assert.are.equal("runbook", posts[1].params.fieldManager)
    local a = audit.recorded[1]
    assert.are.same({ "create", "created", "Secret", "postgres" }, { a.verb, a.result, a.object_kind, a.name })
    assert.are.same({ "password", "port", "user" }, a.keys)
    assert.is_nil(recorded_text():find(pw:reveal(), 1, true))
    assert.is_nil(recorded_text():find(crypto.base64_encode(pw:reveal()), 1, true))
  end)

  it("does not make the plain values it writes or keeps redaction patterns, only the others", function()
    local pw = secret.wrap("pg-password-0123456789")
    c:secret { name = "pg-plain", data = { user = "plainuser", host = "plainhost", password = pw } }
    assert.are.equal("user plainuser on plainhost", host.scrub("user plainuser on plainhost"))
    -- kept: the existing values it reads back are checked against the declared ones
    local s, result = c:secret { name = "pg-plain", data = { user = "plainuser", host = "otherhost", password = secret.wrap("pg-password-9999999999") } }
    assert.are.equal("kept", result)
    assert.are.equal("plainuser", s.data.user)
    assert.is_true(secret.is(s.data.host))            -- differs from what was declared: a secret
    assert.are.equal("user plainuser on [REDACTED]", host.scrub("user plainuser on plainhost"))
    assert.are.equal("pg-password-0123456789", s.data.password:reveal())
    -- merge: the declared plain value written comes back plain; the keys
    -- this call did not declare are unknown to it, so they are secrets
    s, result = c:secret { name = "pg-plain", data = { port = "6543" }, if_exists = "merge" }
    assert.are.equal("configured", result)
    assert.are.equal("6543", s.data.port)
    assert.is_true(secret.is(s.data.user))
    assert.are.equal("port 6543", host.scrub("port 6543"))
    -- reading a Secret without declaring anything: every value is a secret
    assert.is_true(secret.is(c:get_secret("pg-plain").data.port))
    assert.are.equal("port [REDACTED]", host.scrub("port 6543"))
  end)

  it("keeps an existing Secret by default, and says which keys differ", function()
    c:secret { name = "rabbitmq", data = { password = secret.wrap("first-password-1111") } }
    audit.reset()
    local s, result = c:secret { name = "rabbitmq", data = { password = secret.wrap("second-password-2222"), vhost = "bowmark" } }
    assert.are.equal("kept", result)
    assert.are.equal("first-password-1111", s.data.password:reveal())
    assert.are.same({ "ensure", "kept" }, { audit.recorded[1].verb, audit.recorded[1].result })
    assert.are.equal('Secret default/rabbitmq exists and is kept as it is (if_exists = "keep"); keys that differ from the declared ones: password, vhost', audit.logs[1].message)
    assert.are.equal(0, #fake:matching("PUT", "/secrets/rabbitmq$"))
  end)

  it("replaces or merges, writing only when something changes", function()
    c:secret { name = "app", data = { a = "1", b = "2" } }
    local s, r = c:secret { name = "app", data = { a = "1", c = "3" }, if_exists = "merge" }
    assert.are.equal("configured", r)
    assert.are.same({ "1", "2", "3" }, { secret.reveal(s.data.a), secret.reveal(s.data.b), secret.reveal(s.data.c) })
    -- a and c were declared plain in this call; b was not
    assert.are.same({ false, true, false }, { secret.is(s.data.a), secret.is(s.data.b), secret.is(s.data.c) })
    assert.are.same({ "c" }, audit.recorded[2].changed_keys)
    _, r = c:secret { name = "app", data = { c = "3" }, if_exists = "merge" }
    assert.are.equal("unchanged", r)
    s, r = c:secret { name = "app", data = { z = "26" }, if_exists = "replace" }
    assert.are.equal("configured", r)
    assert.are.same({ "z" }, (function() local k = {} for key in pairs(s.data) do k[#k + 1] = key end return k end)())
    _, r = c:secret { name = "app", data = { z = "26" }, if_exists = "replace" }
    assert.are.equal("unchanged", r)
    assert.are.equal(2, #fake:matching("PUT", "/secrets/app$"))
    local e = err_of(c.secret, c, { name = "app", data = { z = "26" }, type = "kubernetes.io/tls", if_exists = "replace" })
    assert.are.equal("Secret default/app has type Opaque, not kubernetes.io/tls; a Secret's type cannot change: delete it first", e.message)
  end)

  it("reads a Secret as secret values, registered with the redactor", function()
    fake:seed { { apiVersion = "v1", kind = "Secret", metadata = { name = "external" }, type = "Opaque",
      data = { token = crypto.base64_encode("tok-from-elsewhere-9876") } } }
    local s = c:get_secret { name = "external" }
    assert.is_true(secret.is(s.data.token))
    assert.are.equal("tok-from-elsewhere-9876", s.data.token:reveal())
    assert.are.equal("token [REDACTED]", host.scrub("token tok-from-elsewhere-9876"))
    -- a get of kind Secret, and a list of Secrets, give the same
    assert.is_true(secret.is(c:get({ kind = "Secret", name = "external" }).data.token))
    local items = c:list { kind = "Secret" }
    assert.is_true(secret.is(items[1].data.token))
    assert.is_nil(c:get_secret "missing")
  end)

  it("applies Secret manifests whose data holds secret values", function()
    local key = secret.wrap("django-secret-key-abcdefghijklmnop")
    local obj, r = c:apply { apiVersion = "v1", kind = "Secret", metadata = { name = "tezca-secrets" }, data = { DJANGO_SECRET_KEY = key } }
    assert.are.equal("created", r)
    assert.is_true(crypto.equal(key, obj.data.DJANGO_SECRET_KEY))
    _, r = c:apply { apiVersion = "v1", kind = "Secret", metadata = { name = "tezca-secrets" }, data = { DJANGO_SECRET_KEY = key } }
    assert.are.equal("unchanged", r)
    assert.is_nil(recorded_text():find(key:reveal(), 1, true))
  end)

  it("checks keys and values before sending anything", function()
    local e = err_of(c.secret, c, { name = "bad", data = { ["no spaces"] = "x" } })
    assert.matches("secret: key no spaces is not valid", e)
    e = err_of(c.secret, c, { name = "bad", data = { k = {} } })
    assert.matches("secret: value of k must be a string or a secret, got table", e)
    e = err_of(c.secret, c, { name = "bad", data = { k = "v" }, if_exists = "overwrite" })
    assert.matches("secret: if_exists must be keep, replace or merge, got overwrite", e)
    assert.are.equal(0, #fake:matching("POST", "/secrets$"))
  end)
end)
