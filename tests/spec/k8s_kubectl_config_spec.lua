-- runbook's reading of a kubeconfig held against the real kubectl's: for
-- every kind of kubeconfig the suite uses, the context, namespace, server,
-- user and TLS settings runbook picks are the ones `kubectl config view
-- --minify --raw` shows. And a real connection with tls-server-name to the
-- fake API server, whose certificate names a host that is not the address
-- it listens on, by runbook and by kubectl.
local rbtest = require "rbtest"
local k8sfake = require "k8sfake"
local config = require "runbook.k8s._config"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local json = require "runbook._json"
local proc = require "runbook._proc"
local fs = require "runbook._fs"

-- The versioned kubectl behind the google-cloud-sdk dispatcher (the
-- dispatcher asks the server for its version first), else kubectl on PATH.
local function kubectl_bin()
  local target = fs.realpath("/usr/bin/kubectl")
  if target then
    local dir = target:match("^(.*)/[^/]*$")
    for minor = 40, 20, -1 do
      local p = dir .. "/kubectl.1." .. minor
      if fs.stat(p) then return p end
    end
    return target
  end
  return "kubectl"
end
local KUBECTL = kubectl_bin()

local function run(argv, env, cwd)
  local p = assert(proc.spawn { argv = argv, env = env, cwd = cwd })
  return p:communicate { timeout = 60 }
end

local function v(x)
  if x == nil or json.is_null(x) then return nil end
  return x
end

local function dirname(p) return p:match("^(.*)/[^/]*$") end

-- A path as kubectl would use it: relative ones against the folder of the
-- kubeconfig file the entry came from.
local function resolved(p, base)
  if p == nil or p:sub(1, 1) == "/" then return p end
  return base .. "/" .. p
end

-- kubectl's view of the configuration: context, namespace, server, user and
-- the cluster and user bodies (--raw), and the CA bytes (--flatten inlines
-- the file kubectl resolved).
local function kubectl_view(o)
  local function view(mode)
    local argv = { KUBECTL, "config", "view", "--minify", mode, "-o", "json" }
    if o.kubeconfig then argv[#argv + 1] = "--kubeconfig=" .. o.kubeconfig end
    if o.context then argv[#argv + 1] = "--context=" .. o.context end
    local env = { HOME = o.home, KUBECONFIG = o.KUBECONFIG or "" }
    local r = run(argv, env, o.cwd)
    assert(r.code == 0, "kubectl config view failed: " .. r.stderr)
    return json.decode(r.stdout)
  end
  local doc, flat = view("--raw"), view("--flatten")
  local ctx = doc.contexts[1]
  local cl = doc.clusters[1].cluster
  local user = v(ctx.context.user)
  local ub
  for _, u in ipairs(v(doc.users) or {}) do if u.name == user then ub = v(u.user) end end
  local ca = v(flat.clusters[1].cluster["certificate-authority-data"])
  return {
    context = doc["current-context"],
    namespace = v(ctx.context.namespace) or "default",
    server = (cl.server:gsub("/+$", "")),
    user = user ~= "" and user or nil,
    cluster = cl,
    user_body = ub or {},
    ca = ca and require("runbook._crypto").base64_decode(ca),
  }
end

local function runbook_view(o)
  local env = { HOME = o.home, KUBECONFIG = o.KUBECONFIG }
  local cfg = config.load { kubeconfig = o.kubeconfig, context = o.context, getenv = function(k) return env[k] end }
  return cfg
end

-- o.user_dir: the folder of the file the user entry comes from (default:
-- that of o.kubeconfig), for kubectl's relative tokenFile and exec command.
local function same(o)
  local want = kubectl_view(o)
  local got = runbook_view(o)
  local user_dir = o.user_dir or (o.kubeconfig and dirname(o.kubeconfig))
  assert.are.equal(want.context, got.context)
  assert.are.equal(want.namespace, got.namespace)
  assert.are.equal(want.server, got.server)
  assert.are.equal(want.user, got.user_name)
  assert.are.equal(v(want.cluster["tls-server-name"]), got.tls_server_name)
  assert.are.equal(v(want.cluster["insecure-skip-tls-verify"]) == true, got.insecure == true)
  assert.are.equal(v(want.cluster["proxy-url"]), got.proxy)
  assert.are.equal(want.ca, got.ca_data or (got.ca_file and rbtest.read(got.ca_file)))
  assert.are.equal(resolved(v(want.user_body.tokenFile), user_dir), got.auth.token_file)
  assert.are.equal(v(want.user_body.token) ~= nil, got.auth.token ~= nil)
  if v(want.user_body.exec) then
    local cmd = want.user_body.exec.command
    assert.are.equal(cmd:find("/", 1, true) and resolved(cmd, user_dir) or cmd, got.auth.exec.command)
  else
    assert.is_nil(got.auth.exec)
  end
  return want, got
end

describe("kubeconfig read as kubectl reads it (" .. KUBECTL .. ")", function()
  local dir
  before_each(function()
    dir = rbtest.tmpdir("kcv")
    fs.mkdir_p(dir .. "/home/.kube", 448)
    fs.mkdir_p(dir .. "/conf/certs", 448)
    rbtest.write(dir .. "/conf/certs/ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    rbtest.write(dir .. "/conf/token", "t0ken-from-a-file\n")
    audit.reset()
  end)
  after_each(function() rbtest.rmtree(dir) end)

  local function write(name, text)
    rbtest.write(dir .. "/" .. name, text)
    return dir .. "/" .. name
  end

  it("picks the current context, its cluster, user and namespace", function()
    local kc = write("conf/one", [[
apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: prod-cluster
  cluster: {server: "https://10.0.0.1:6443/", certificate-authority: certs/ca.crt}
contexts:
- name: prod
  context: {cluster: prod-cluster, user: admin, namespace: tezca}
- name: dev
  context: {cluster: prod-cluster, user: admin}
users:
- name: admin
  user: {token: abc}
]])
    same { kubeconfig = kc, home = dir .. "/home" }
    local _, got = same { kubeconfig = kc, context = "dev", home = dir .. "/home" }
    assert.are.equal("default", got.namespace)
    -- relative paths resolve against the kubeconfig's folder, for both
    assert.are.equal(dir .. "/conf/certs/ca.crt", got.ca_file)
  end)

  it("merges KUBECONFIG files: the first to set a name or current-context wins", function()
    local a = write("conf/a", [[
apiVersion: v1
kind: Config
clusters:
- name: shared
  cluster: {server: "https://first.example:6443", tls-server-name: api.first.example, certificate-authority: certs/ca.crt}
users:
- name: me
  user: {tokenFile: token}
contexts:
- name: work
  context: {cluster: shared, user: me, namespace: from-a}
]])
    fs.mkdir_p(dir .. "/other", 448)
    local b = write("other/b", [[
apiVersion: v1
kind: Config
current-context: work
clusters:
- name: shared
  cluster: {server: "https://second.example:6443"}
- name: edge
  cluster: {server: "https://edge.example:443", proxy-url: "http://proxy.example:3128", insecure-skip-tls-verify: true}
users:
- name: me
  user: {token: from-b}
- name: plugin
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: ./bin/get-token, args: [--region, mx]}
contexts:
- name: work
  context: {cluster: edge, user: plugin}
- name: edge
  context: {cluster: edge, user: plugin, namespace: edge-ns}
]])
    local kcenv = a .. ":" .. dir .. "/missing:" .. b
    local _, got = same { KUBECONFIG = kcenv, home = dir .. "/home", user_dir = dir .. "/conf" }
    assert.are.equal("work", got.context)
    assert.are.equal("https://first.example:6443", got.server)
    assert.are.equal("api.first.example", got.tls_server_name)
    assert.are.equal(dir .. "/conf/token", got.auth.token_file)
    _, got = same { KUBECONFIG = kcenv, context = "edge", home = dir .. "/home", user_dir = dir .. "/other" }
    assert.is_true(got.insecure)
    assert.are.equal("http://proxy.example:3128", got.proxy)
    assert.are.equal(dir .. "/other/./bin/get-token", got.auth.exec.command)
  end)

  it("falls back to ~/.kube/config, and --kubeconfig beats KUBECONFIG", function()
    write("home/.kube/config", [[
apiVersion: v1
kind: Config
current-context: home
clusters:
- name: c
  cluster: {server: "https://home.example"}
users:
- name: u
  user: {username: admin, password: pw}
contexts:
- name: home
  context: {cluster: c, user: u, namespace: homens}
]])
    local _, got = same { home = dir .. "/home" }
    assert.are.equal("https://home.example", got.server)
    local kc = write("conf/explicit", [[
apiVersion: v1
kind: Config
current-context: x
clusters:
- name: c
  cluster: {server: "https://explicit.example"}
contexts:
- name: x
  context: {cluster: c}
]])
    _, got = same { kubeconfig = kc, KUBECONFIG = dir .. "/home/.kube/config", home = dir .. "/home" }
    assert.are.equal("https://explicit.example", got.server)
  end)

end)

describe("tls-server-name against the fake API server", function()
  local fake
  setup(function() fake = k8sfake.start { cert = "named-server" } end)
  teardown(function() fake:stop() end)
  before_each(function() audit.reset() end)

  it("verifies the certificate against tls-server-name while connecting to the server's address", function()
    -- the certificate names kube.internal.test only: without tls-server-name it fails
    local ok, e = pcall(function()
      return k8s.connect { kubeconfig = fake.kubeconfig }:get { kind = "Namespace", name = "default" }
    end)
    assert.is_false(ok)
    assert.are.equal("tls", e.code)
    local kc = fake:write_kubeconfig { path = fake.dir .. "/sn.kubeconfig", cluster = { ["tls-server-name"] = "kube.internal.test" } }
    local c = k8s.connect { kubeconfig = kc }
    assert.are.equal("default", c:get { kind = "Namespace", name = "default" }.metadata.name)
    assert.are.equal(0, #audit.logs) -- no "not supported" warning any more
    -- a name the certificate does not carry still fails, naming the server
    local bad = fake:write_kubeconfig { path = fake.dir .. "/bad.kubeconfig", cluster = { ["tls-server-name"] = "other.internal.test" } }
    ok, e = pcall(function() return k8s.connect { kubeconfig = bad }:get { kind = "Namespace", name = "default" } end)
    assert.is_false(ok)
    assert.are.equal("tls", e.code)
    assert.matches("^TLS verification of the Kubernetes API server " .. fake.server:gsub("%p", "%%%0"), e.message)
    -- the real kubectl agrees on both
    local cache = fake.dir .. "/kubectl-cache"
    local r = run { KUBECTL, "--kubeconfig=" .. kc, "--cache-dir=" .. cache, "get", "namespace", "default", "-o", "name" }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("namespace/default\n", r.stdout)
    r = run { KUBECTL, "--kubeconfig=" .. bad, "--cache-dir=" .. cache, "get", "namespace", "default", "-o", "name" }
    assert.are_not.equal(0, r.code)
    assert.matches("certificate", r.stderr)
  end)

  it("reads the kubeconfigs the fake API server's specs write", function()
    fs.mkdir_p(fake.dir .. "/home", 448)
    rbtest.write(fake.dir .. "/token", "t0ken\n")
    for _, o in ipairs {
      {},
      { user = "none", ca = "file" },
      { user = "cert", context = "other", namespace = "ns2" },
      { user = { tokenFile = "token" }, namespace = "ns1" },
      { ca = "none", cluster = { ["insecure-skip-tls-verify"] = true } },
      { cluster = { ["tls-server-name"] = "kube.internal.test" } },
      { cluster = { ["proxy-url"] = "http://127.0.0.1:3128" } },
      { user = { exec = { apiVersion = "client.authentication.k8s.io/v1", command = "./plugin.sh", interactiveMode = "Never" } } },
    } do
      o.path = fake.dir .. "/variant.kubeconfig"
      same { kubeconfig = fake:write_kubeconfig(o), home = fake.dir .. "/home" }
    end
  end)

  it("gives an exec plugin the cluster as kubectl does: the CA read from its file, tls-server-name and config", function()
    local log = fake.dir .. "/info.json"
    rbtest.write(fake.dir .. "/plugin.sh", ([[#!/bin/sh
printf '%%s' "$KUBERNETES_EXEC_INFO" > %s
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}'
]]):format(log, k8sfake.TOKEN), 448)
    local kc = fake:write_kubeconfig { path = fake.dir .. "/exec.kubeconfig", ca = "file",
      cluster = { ["tls-server-name"] = "kube.internal.test",
        extensions = { { name = "client.authentication.k8s.io/exec", extension = { audience = "runbook", n = 3 } } } },
      user = { exec = { apiVersion = "client.authentication.k8s.io/v1", command = "./plugin.sh",
        interactiveMode = "Never", provideClusterInfo = true } } }
    require("runbook.k8s._exec").clear_cache()
    local c = k8s.connect { kubeconfig = kc }
    assert.are.equal("default", c:get { kind = "Namespace", name = "default" }.metadata.name)
    local ours = json.decode(rbtest.read(log))
    -- the same plugin run by kubectl
    os.remove(log)
    local r = run { KUBECTL, "--kubeconfig=" .. kc, "--cache-dir=" .. fake.dir .. "/kubectl-cache", "get", "namespace", "default", "-o", "name" }
    assert.are.equal(0, r.code, r.stderr)
    local theirs = json.decode(rbtest.read(log))
    assert.are.equal(rbtest.read(fake.ca_file), require("runbook._crypto").base64_decode(ours.spec.cluster["certificate-authority-data"]))
    for _, k in ipairs { "server", "certificate-authority-data", "tls-server-name" } do
      assert.are.equal(theirs.spec.cluster[k], ours.spec.cluster[k], k)
    end
    assert.are.same(theirs.spec.cluster.config, json.decode(json.encode(ours.spec.cluster.config)))
    assert.are.equal(theirs.apiVersion, ours.apiVersion)
    assert.are.equal(theirs.kind, ours.kind)
  end)
end)
