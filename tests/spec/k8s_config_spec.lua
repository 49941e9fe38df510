-- kubeconfig, exec plugins and in-cluster configuration: read like kubectl
-- reads them, and every mistake in them named by file and field.
local rbtest = require "rbtest"
local k8sfake = require "k8sfake"
local config = require "runbook.k8s._config"
local exec = require "runbook.k8s._exec"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local crypto = require "runbook._crypto"
local host = require "runbook._host"
local secret = require "runbook.secret"

local function env(t)
  return function(name) return t[name] end
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

local PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

describe("kubeconfig (offline)", function()
  local dir
  before_each(function()
    dir = rbtest.tmpdir("kcfg")
    audit.reset()
  end)
  after_each(function() rbtest.rmtree(dir) end)

  local function write(name, text)
    rbtest.write(dir .. "/" .. name, text)
    return dir .. "/" .. name
  end

  it("reads the current context, its cluster, user and namespace", function()
    local p = write("config", ([[
apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: prod-cluster
  cluster:
    server: https://10.0.0.1:6443/
    certificate-authority-data: %s
contexts:
- name: prod
  context: {cluster: prod-cluster, user: admin, namespace: tezca}
- name: dev
  context: {cluster: prod-cluster, user: admin}
users:
- name: admin
  user:
    token: abc-secret-token-123
]]):format(crypto.base64_encode(PEM)))
    local cfg = config.load { kubeconfig = p }
    assert.are.equal("https://10.0.0.1:6443", cfg.server)
    assert.are.equal(PEM, cfg.ca_data)
    assert.are.equal("prod", cfg.context)
    assert.are.equal("tezca", cfg.namespace)
    assert.is_true(secret.is(cfg.auth.token))
    assert.are.equal("abc-secret-token-123", cfg.auth.token:reveal())
    assert.are.equal('kubeconfig user "admin" (context "prod")', cfg.who)
    -- the token is registered: it never prints in clear
    assert.are.equal("token [REDACTED]", host.scrub("token abc-secret-token-123"))
    local dev = config.load { kubeconfig = p, context = "dev" }
    assert.are.equal("default", dev.namespace)
    assert.are.equal("other", config.load { kubeconfig = p, namespace = "other" }.namespace)
  end)

  it("merges KUBECONFIG files: the first file to set a name or current-context wins", function()
    local a = write("a", [[
current-context: ctx-a
clusters:
- name: shared
  cluster: {server: https://first.example:6443, insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: first-token-aaaa}
contexts:
- name: ctx-a
  context: {cluster: shared, user: u}
]])
    local b = write("b", [[
current-context: ctx-b
clusters:
- name: shared
  cluster: {server: https://second.example:6443}
- name: only-b
  cluster: {server: https://only-b.example, certificate-authority: ca.pem}
users:
- name: u
  user: {token: second-token-bbbb}
- name: ub
  user: {tokenFile: tok}
contexts:
- name: ctx-b
  context: {cluster: only-b, user: ub, namespace: bns}
]])
    write("ca.pem", PEM)
    write("tok", "file-token\n")
    local kc = table.concat({ a, dir .. "/missing", b }, ":")
    local cfg = config.load { getenv = env { KUBECONFIG = kc } }
    assert.are.equal("ctx-a", cfg.context)
    assert.are.equal("https://first.example:6443", cfg.server)
    assert.is_true(cfg.insecure)
    assert.are.equal("first-token-aaaa", cfg.auth.token:reveal())
    -- a name only the second file has comes from it, with paths relative to it
    local cb = config.load { getenv = env { KUBECONFIG = kc }, context = "ctx-b" }
    assert.are.equal("https://only-b.example", cb.server)
    assert.are.equal(dir .. "/ca.pem", cb.ca_file)
    assert.are.equal(dir .. "/tok", cb.auth.token_file)
    assert.are.equal("bns", cb.namespace)
  end)

  it("falls back to ~/.kube/config", function()
    require("runbook._fs").mkdir_p(dir .. "/.kube")
    write(".kube/config", "current-context: c\nclusters: [{name: k, cluster: {server: 'https://home.example'}}]\ncontexts: [{name: c, context: {cluster: k}}]\n")
    local cfg = config.load { getenv = env { HOME = dir } }
    assert.are.equal("https://home.example", cfg.server)
    assert.are.equal("no credentials", cfg.auth.how)
  end)

  it("names the file and the field of every mistake, as a config error", function()
    local e = err_of(config.load, { kubeconfig = dir .. "/nope" })
    assert.are.equal("config", e.kind)
    assert.are.equal("kubeconfig " .. dir .. "/nope: no such file", e.message)

    e = err_of(config.load, { getenv = env { HOME = dir } })
    assert.are.equal("no kubeconfig: " .. dir .. "/.kube/config does not exist; pass kubeconfig= or set KUBECONFIG", e.message)

    local bad = write("bad", "clusters: [\n  - name: x\n")
    e = err_of(config.load, { kubeconfig = bad })
    assert.are.equal("config", e.kind)
    assert.matches("^kubeconfig " .. bad:gsub("%p", "%%%0") .. ": not valid YAML: line %d+ column %d+: ", e.message)

    local p = write("c", [[
current-context: gone
clusters:
- name: k
  cluster: {server: https://x.example, certificate-authority: missing-ca.crt}
- name: noserver
  cluster: {}
users:
- name: u
  user: {client-certificate: c.crt}
- name: u2
  user: {client-key-data: "not base64!"}
contexts:
- name: a
  context: {cluster: k, user: u}
- name: b
  context: {cluster: nowhere}
- name: c
  context: {cluster: noserver}
- name: d
  context: {cluster: k, user: nobody}
]])
    e = err_of(config.load, { kubeconfig = p })
    assert.are.equal("kubeconfig " .. p .. ': current-context (' .. p .. ') "gone" not found (contexts: a, b, c, d)', e.message)
    e = err_of(config.load, { kubeconfig = p, context = "zzz" })
    assert.are.equal("kubeconfig " .. p .. ': context "zzz" not found (contexts: a, b, c, d)', e.message)
    e = err_of(config.load, { kubeconfig = p, context = "a" })
    assert.are.equal("kubeconfig " .. p .. ': clusters["k"].certificate-authority: ' .. dir .. "/missing-ca.crt: no such file", e.message)
    e = err_of(config.load, { kubeconfig = p, context = "b" })
    assert.are.equal("kubeconfig " .. p .. ': contexts["b"].cluster refers to cluster "nowhere", which is not in clusters (k, noserver)', e.message)
    e = err_of(config.load, { kubeconfig = p, context = "c" })
    assert.are.equal("kubeconfig " .. p .. ': clusters["noserver"].server is missing', e.message)
    write("ca2", PEM)
    local p2 = write("d", [[
current-context: a
clusters: [{name: k, cluster: {server: "https://x.example"}}]
users:
- {name: u, user: {client-certificate: ca2}}
- {name: u2, user: {client-key-data: "not base64!"}}
contexts:
- {name: a, context: {cluster: k, user: u}}
- {name: b, context: {cluster: k, user: u2}}
- {name: c, context: {cluster: k, user: nobody}}
]])
    e = err_of(config.load, { kubeconfig = p2 })
    assert.are.equal("kubeconfig " .. p2 .. ': users["u"].user has a client certificate but no client-key or client-key-data', e.message)
    e = err_of(config.load, { kubeconfig = p2, context = "b" })
    assert.are.equal("kubeconfig " .. p2 .. ': users["u2"].client-key-data is not valid base64', e.message)
    e = err_of(config.load, { kubeconfig = p2, context = "c" })
    assert.are.equal("kubeconfig " .. p2 .. ': contexts["c"].user refers to user "nobody", which is not in users (u, u2)', e.message)
  end)

  it("honours insecure-skip-tls-verify only when the file says so, with a loud warning; never with a CA", function()
    local p = write("i", "current-context: a\nclusters: [{name: k, cluster: {server: 'https://x.example', insecure-skip-tls-verify: true}}]\ncontexts: [{name: a, context: {cluster: k}}]\n")
    local cfg = config.load { kubeconfig = p }
    assert.is_true(cfg.insecure)
    assert.are.equal(1, #audit.logs)
    assert.are.equal("warn", audit.logs[1].level)
    assert.are.equal("WARNING: kubeconfig " .. p .. ': cluster "k" sets insecure-skip-tls-verify: the certificate of https://x.example is NOT verified, so anyone on the network path can impersonate the API server and read every credential and Secret sent to it', audit.logs[1].message)
    local q = write("j", ("current-context: a\nclusters: [{name: k, cluster: {server: 'https://x.example', insecure-skip-tls-verify: true, certificate-authority-data: %s}}]\ncontexts: [{name: a, context: {cluster: k}}]\n"):format(crypto.base64_encode(PEM)))
    local e = err_of(config.load, { kubeconfig = q })
    assert.are.equal("kubeconfig " .. q .. ': clusters["k"].insecure-skip-tls-verify: specifying a root certificates file with the insecure flag is not allowed', e.message)
    local plain = write("k", "current-context: a\nclusters: [{name: k, cluster: {server: 'https://x.example'}}]\ncontexts: [{name: a, context: {cluster: k}}]\n")
    assert.is_nil(config.load { kubeconfig = plain }.insecure)
  end)

  it("checks exec plugin settings as client-go does", function()
    local p = write("e", [[
current-context: a
clusters: [{name: k, cluster: {server: "https://x.example"}}]
users:
- name: v1-no-mode
  user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: ./bin/plugin}}
- name: beta
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: ./bin/plugin
      args: [get-token, --cluster, prod]
      env: [{name: REGION, value: mx}]
- name: alpha
  user: {exec: {apiVersion: client.authentication.k8s.io/v1alpha1, command: p}}
contexts:
- {name: a, context: {cluster: k, user: v1-no-mode}}
- {name: b, context: {cluster: k, user: beta}}
- {name: c, context: {cluster: k, user: alpha}}
]])
    local e = err_of(config.load, { kubeconfig = p })
    assert.are.equal("kubeconfig " .. p .. ': users["v1-no-mode"].user.exec.interactiveMode must be specified for client.authentication.k8s.io/v1 (Never, IfAvailable or Always)', e.message)
    local cfg = config.load { kubeconfig = p, context = "b" }
    assert.are.equal(dir .. "/./bin/plugin", cfg.auth.exec.command)
    assert.are.same({ "get-token", "--cluster", "prod" }, cfg.auth.exec.args)
    assert.are.same({ REGION = "mx" }, cfg.auth.exec.env)
    assert.are.equal("IfAvailable", cfg.auth.exec.interactive_mode)
    e = err_of(config.load, { kubeconfig = p, context = "c" })
    assert.are.equal("kubeconfig " .. p .. ': users["alpha"].user.exec.apiVersion must be client.authentication.k8s.io/v1 or v1beta1, got client.authentication.k8s.io/v1alpha1', e.message)
  end)

  it("reads RFC 3339 times without the local zone", function()
    assert.are.equal(0, exec.parse_time("1970-01-01T00:00:00Z"))
    assert.are.equal(1767225600, exec.parse_time("2026-01-01T00:00:00Z"))
    assert.are.equal(1767225600, exec.parse_time("2025-12-31T18:00:00.123-06:00"))
    assert.is_nil(exec.parse_time("yesterday"))
  end)

  it("reads the in-cluster service account", function()
    write("token", "sa-token-value-xyz\n")
    write("ca.crt", PEM)
    write("namespace", "payments\n")
    local cfg = config.load { in_cluster = { dir = dir }, getenv = env { KUBERNETES_SERVICE_HOST = "10.96.0.1", KUBERNETES_SERVICE_PORT = "443" } }
    assert.are.equal("https://10.96.0.1:443", cfg.server)
    assert.are.equal(dir .. "/ca.crt", cfg.ca_file)
    assert.are.equal("payments", cfg.namespace)
    assert.are.equal(dir .. "/token", cfg.auth.token_file)
    local ns = config.in_cluster { dir = dir, getenv = env { KUBERNETES_SERVICE_HOST = "fd00::1", KUBERNETES_SERVICE_PORT = "6443", POD_NAMESPACE = "from-env" } }
    assert.are.equal("https://[fd00::1]:6443", ns.server)
    assert.are.equal("from-env", ns.namespace)
    local e = err_of(config.in_cluster, { dir = dir, getenv = env {} })
    assert.are.equal("in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (not running in a pod?)", e.message)
    os.remove(dir .. "/ca.crt")
    e = err_of(config.in_cluster, { dir = dir, getenv = env { KUBERNETES_SERVICE_HOST = "h", KUBERNETES_SERVICE_PORT = "1" } })
    assert.are.equal("in-cluster configuration: " .. dir .. "/ca.crt: no such file", e.message)
  end)
end)

describe("credentials against the fake API server", function()
  local fake
  setup(function() fake = k8sfake.start() end)
  teardown(function() fake:stop() end)
  before_each(function()
    audit.reset()
    exec.clear_cache()
  end)

  local function can_read(c)
    return c:get { kind = "Namespace", name = "default" }.metadata.name == "default"
  end

  it("authenticates with a bearer token, a client certificate, or a token file re-read when it changes", function()
    assert.is_true(can_read(k8s.connect { kubeconfig = fake.kubeconfig }))
    local cert = fake:write_kubeconfig { path = fake.dir .. "/cert.kubeconfig", user = "cert", ca = "file" }
    assert.is_true(can_read(k8s.connect { kubeconfig = cert }))
    rbtest.write(fake.dir .. "/tok", "wrong-token-000000")
    local tf = fake:write_kubeconfig { path = fake.dir .. "/tf.kubeconfig", user = { tokenFile = "tok" } }
    local c = k8s.connect { kubeconfig = tf }
    local ok, e = pcall(can_read, c)
    assert.is_false(ok)
    assert.are.equal(401, e.status)
    assert.are.equal("Unauthorized", e.code)
    assert.are.equal("unauthorized: " .. fake.server .. ' rejected the credentials of kubeconfig user "fake-user" (context "fake") (bearer token from ' .. fake.dir .. '/tok) to get namespaces "default": Unauthorized', e.message)
    rbtest.write(fake.dir .. "/tok", k8sfake.TOKEN .. "\n")
    assert.is_true(can_read(c))
  end)

  it("connects in-cluster with the service account's token and CA", function()
    local sa = fake.dir .. "/sa"
    require("runbook._fs").mkdir_p(sa)
    rbtest.write(sa .. "/token", k8sfake.TOKEN .. "\n")
    rbtest.write(sa .. "/ca.crt", rbtest.read(fake.ca_file))
    rbtest.write(sa .. "/namespace", "kube-system\n")
    local c = k8s.connect { in_cluster = { dir = sa }, getenv = env { KUBERNETES_SERVICE_HOST = "127.0.0.1", KUBERNETES_SERVICE_PORT = tostring(fake.port) } }
    assert.are.equal("kube-system", c.namespace)
    assert.is_true(can_read(c))
    -- the token is read again when the file changes (service account tokens rotate)
    rbtest.write(sa .. "/token", "rotated-but-wrong-token-000\n")
    local ok, e = pcall(can_read, c)
    assert.is_false(ok)
    assert.are.equal(401, e.status)
    assert.matches("the pod's service account %(service account token from " .. sa:gsub("%p", "%%%0") .. "/token%)", e.message)
  end)

  it("says who could not do what where on 403", function()
    local kc = fake:write_kubeconfig { path = fake.dir .. "/limited.kubeconfig", token = k8sfake.OTHER_TOKEN, user_name = "limited-user", namespace = "tezca" }
    fake:control("POST", "/_fake/forbid", { user = "limited", verb = "create", resource = "secrets", namespace = "*" })
    local c = k8s.connect { kubeconfig = kc }
    local ok, e = pcall(c.create, c, { apiVersion = "v1", kind = "Secret", metadata = { name = "s" }, stringData = { a = "b" } })
    assert.is_false(ok)
    assert.are.equal(403, e.status)
    assert.are.equal("Forbidden", e.code)
    assert.matches('^forbidden: kubeconfig user "limited%-user" %(context "fake"%) may not create secrets "s" in namespace "tezca" on https://127%.0%.0%.1:%d+: ', e.message)
    assert.matches('User "limited" cannot create resource "secrets"', e.message)
  end)

  it("fails TLS verification with the wrong CA, naming the server and the cause, and never falls back", function()
    local kc = fake:write_kubeconfig { path = fake.dir .. "/other.kubeconfig", ca = "other" }
    local c = k8s.connect { kubeconfig = kc }
    local ok, e = pcall(can_read, c)
    assert.is_false(ok)
    assert.are.equal("k8s", e.kind)
    assert.are.equal("tls", e.code)
    assert.matches("^TLS verification of the Kubernetes API server " .. fake.server:gsub("%p", "%%%0")
      .. " failed %(CA from kubeconfig " .. kc:gsub("%p", "%%%0") .. ' clusters%["fake%-cluster"%]%.certificate%-authority%): .*certificate', e.message)
    -- the system trust store does not know the test CA either
    local none = fake:write_kubeconfig { path = fake.dir .. "/none.kubeconfig", ca = "none" }
    ok, e = pcall(can_read, k8s.connect { kubeconfig = none })
    assert.is_false(ok)
    assert.are.equal("tls", e.code)
    assert.matches("the system's trust store", e.message)
  end)

  it("connects without verification only when the kubeconfig says insecure-skip-tls-verify", function()
    local kc = fake:write_kubeconfig { path = fake.dir .. "/insecure.kubeconfig", ca = "none", cluster = { ["insecure-skip-tls-verify"] = true } }
    local c = k8s.connect { kubeconfig = kc }
    assert.is_true(can_read(c))
    assert.are.equal("warn", audit.logs[1].level)
    assert.matches("is NOT verified", audit.logs[1].message)
  end)

  it("names an unreachable server and the cause", function()
    local port = rbtest.free_port()
    local kc = fake:write_kubeconfig { path = fake.dir .. "/down.kubeconfig", server = "https://127.0.0.1:" .. port }
    local c = k8s.connect { kubeconfig = kc, retries = 1, retry_delay = 0.01 }
    local ok, e = pcall(can_read, c)
    assert.is_false(ok)
    assert.are.equal("unreachable", e.code)
    assert.matches("^cannot reach the Kubernetes API server https://127%.0%.0%.1:" .. port .. ": could not connect: ", e.message)
  end)

  it("runs an exec plugin with KUBERNETES_EXEC_INFO and caches its token until it expires", function()
    local plugin = fake.dir .. "/plugin.sh"
    -- the plugin logs each run and its input, and answers with the token in $TOKEN_FILE
    rbtest.write(plugin, [[#!/bin/sh
echo "run $REGION" >> "$LOG"
printf '%s\n' "$KUBERNETES_EXEC_INFO" > "$LOG.info"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}' "$(cat "$TOKEN_FILE")" "$EXPIRES"
]], 448)
    local log = fake.dir .. "/plugin.log"
    rbtest.write(fake.dir .. "/plugin-token", k8sfake.TOKEN)
    local function kubeconfig(expires)
      return fake:write_kubeconfig { path = fake.dir .. "/exec.kubeconfig", user = { exec = {
        apiVersion = "client.authentication.k8s.io/v1", command = "./plugin.sh", interactiveMode = "Never",
        provideClusterInfo = true,
        env = { { name = "REGION", value = "mx" }, { name = "LOG", value = log }, { name = "TOKEN_FILE", value = fake.dir .. "/plugin-token" },
          { name = "EXPIRES", value = expires } } } } }
    end
    local c = k8s.connect { kubeconfig = kubeconfig("2099-01-01T00:00:00Z") }
    assert.is_true(can_read(c))
    assert.is_true(can_read(c))
    assert.are.equal("run mx\n", rbtest.read(log))
    local info = require("runbook._json").decode(rbtest.read(log .. ".info"))
    assert.are.equal("ExecCredential", info.kind)
    assert.are.equal("client.authentication.k8s.io/v1", info.apiVersion)
    assert.is_false(info.spec.interactive)
    assert.are.equal(fake.server, info.spec.cluster.server)
    assert.are.equal(rbtest.read(fake.ca_file), crypto.base64_decode(info.spec.cluster["certificate-authority-data"]))
    -- an expired credential is not reused
    exec.clear_cache()
    rbtest.write(log, "")
    c = k8s.connect { kubeconfig = kubeconfig("2001-01-01T00:00:00Z") }
    assert.is_true(can_read(c))
    assert.is_true(can_read(c))
    assert.are.equal("run mx\nrun mx\n", rbtest.read(log))
  end)

  it("re-runs the exec plugin when the server answers 401", function()
    local plugin = fake.dir .. "/plugin2.sh"
    local log = fake.dir .. "/plugin2.log"
    -- first run: a token the server rejects; later runs: the good one
    rbtest.write(plugin, ([[#!/bin/sh
echo run >> "%s"
if [ "$(wc -l < "%s")" -le 1 ]; then tok=rejected-token-000; else tok=%s; fi
printf '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"%%s"}}' "$tok"
]]):format(log, log, k8sfake.TOKEN), 448)
    local kc = fake:write_kubeconfig { path = fake.dir .. "/exec2.kubeconfig", user = { exec = {
      apiVersion = "client.authentication.k8s.io/v1beta1", command = plugin } } }
    local c = k8s.connect { kubeconfig = kc }
    assert.is_true(can_read(c))
    assert.are.equal("run\nrun\n", rbtest.read(log))
    local gets = fake:matching("GET", "^/api/v1/namespaces/default$")
    assert.are.equal(401, gets[#gets - 1].status)
    assert.are.equal(200, gets[#gets].status)
  end)

  it("refuses an interactive-only exec plugin without a terminal", function()
    local kc = fake:write_kubeconfig { path = fake.dir .. "/tty.kubeconfig", user = { exec = {
      apiVersion = "client.authentication.k8s.io/v1", command = "/bin/true", interactiveMode = "Always" } } }
    local ok, e = pcall(can_read, k8s.connect { kubeconfig = kc })
    assert.is_false(ok)
    assert.are.equal("kubeconfig " .. kc .. ': users["fake-user"].user.exec: exec plugin /bin/true needs a terminal (interactiveMode: Always) and there is none', e.message)
  end)

  it("reports a failing exec plugin with its stderr and the kubeconfig field", function()
    local plugin = fake.dir .. "/bad.sh"
    rbtest.write(plugin, "#!/bin/sh\necho 'login expired, run: sso login' >&2\nexit 3\n", 448)
    local kc = fake:write_kubeconfig { path = fake.dir .. "/bad.kubeconfig", user = { exec = {
      apiVersion = "client.authentication.k8s.io/v1", command = plugin, interactiveMode = "Never" } } }
    local ok, e = pcall(can_read, k8s.connect { kubeconfig = kc })
    assert.is_false(ok)
    assert.are.equal("exec-plugin", e.code)
    assert.are.equal("kubeconfig " .. kc .. ': users["fake-user"].user.exec: exec plugin ' .. plugin .. " failed (exit 3): login expired, run: sso login", e.message)
  end)
end)
