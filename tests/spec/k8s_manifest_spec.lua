-- Manifests: from Lua tables, YAML text, files and folders (multi-document),
-- ${VAR} substitution, checks that name the file and document, the apply
-- order (Namespaces, CRDs, ..., custom resources once established), and
-- the created / configured / unchanged report.
local rbtest = require "rbtest"
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local manifest = require "runbook.k8s._manifest"
local audit = require "runbook._engine.audit"

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

local function kinds(docs)
  local out = {}
  for _, d in ipairs(docs) do out[#out + 1] = d.obj.kind .. "/" .. d.obj.metadata.name end
  return out
end

describe("manifests (offline)", function()
  local dir
  before_each(function() dir = rbtest.tmpdir("manifests") end)
  after_each(function() rbtest.rmtree(dir) end)

  it("substitutes ${VAR} and ${VAR:-default}; a missing variable is an error naming the line", function()
    assert.are.equal("image: app:abc123\nreplicas: 2\nshell: $PGPASSWORD ${literal}",
      k8s.substitute("image: app:${COMMIT_SHA1}\nreplicas: ${REPLICAS:-2}\nshell: $PGPASSWORD $${literal}", { COMMIT_SHA1 = "abc123" }, "x.yaml"))
    local e = err_of(k8s.substitute, "a: 1\nb: ${MISSING}\n", {}, "k8s/deploy.yaml")
    assert.are.equal("config", e.kind)
    assert.are.equal("k8s/deploy.yaml line 2: ${MISSING} is not set (pass it in vars, or write ${MISSING:-default})", e.message)
    e = err_of(k8s.substitute, "a: ${bad-name}", {}, "f.yaml")
    assert.are.equal("f.yaml line 1: ${bad-name} is not a valid variable reference (use ${NAME} or ${NAME:-default})", e.message)
    e = err_of(k8s.substitute, "a: ${PW}", { PW = require("runbook.secret").wrap("pw-pw-pw-pw") }, "f.yaml")
    assert.matches("is a secret value; manifests are not secret", e.message)
    assert.are.equal("v=from-fn", k8s.substitute("v=${X}", function(n) return n == "X" and "from-fn" or nil end, "t"))
  end)

  it("loads files and folders of multi-document YAML, in name order, and sorts them for applying", function()
    rbtest.write(dir .. "/20-app.yaml", [[
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
---
# an empty document is skipped
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: shop}
]])
    rbtest.write(dir .. "/10-base.yml", [[
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: settings, namespace: shop}}
- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
]])
    rbtest.write(dir .. "/30-crd.json", [[{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"}}]])
    rbtest.write(dir .. "/README.md", "not a manifest")
    local docs = k8s.manifests(dir)
    assert.are.same({ "ConfigMap/settings", "Namespace/shop", "Deployment/api", "Service/api", "Widget/w1", "CustomResourceDefinition/widgets.example.com" }, kinds(docs))
    assert.are.equal(dir .. "/20-app.yaml", docs[5].file)
    assert.are.equal(4, docs[5].index)
    k8s.order(docs)
    assert.are.same({ "Namespace/shop", "CustomResourceDefinition/widgets.example.com", "ConfigMap/settings", "Service/api", "Deployment/api", "Widget/w1" }, kinds(docs))
  end)

  it("names the file and document of a manifest without apiVersion, kind or name", function()
    rbtest.write(dir .. "/bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    local e = err_of(k8s.manifests, dir .. "/bad.yaml")
    assert.are.equal("config", e.kind)
    assert.are.equal(dir .. "/bad.yaml document 2: metadata.name is missing (v1 ConfigMap)", e.message)
    e = err_of(k8s.manifests, "metadata: {name: x}\nkind: Pod\n")
    assert.are.equal("manifest text document 1: apiVersion is missing", e.message)
    e = err_of(k8s.manifests, { { apiVersion = "v1", metadata = { name = "x" } } })
    assert.are.equal("manifest table #1: kind is missing", e.message)
    rbtest.write(dir .. "/broken.yaml", "a: [1,\n")
    e = err_of(k8s.manifests, dir .. "/broken.yaml")
    assert.matches("^" .. (dir .. "/broken.yaml"):gsub("%p", "%%%0") .. ": not valid YAML: line 2 column 1: ", e.message)
    e = err_of(k8s.manifests, dir .. "/nothing-here")
    assert.are.equal(dir .. "/nothing-here: no such file or folder", e.message)
  end)
end)

describe("applying manifests", function()
  local fake, c, dir
  setup(function()
    fake = k8sfake.start()
    c = k8s.connect { kubeconfig = fake.kubeconfig }
  end)
  teardown(function() fake:stop() end)
  before_each(function()
    fake:reset()
    audit.reset()
    dir = rbtest.tmpdir("apply")
  end)
  after_each(function() rbtest.rmtree(dir) end)

  local APP = [[
apiVersion: apps/v1
kind: Deployment
metadata: {name: server, namespace: bowmark}
spec:
  replicas: ${REPLICAS:-1}
  selector: {matchLabels: {app: server}}
  template:
    metadata: {labels: {app: server}}
    spec:
      containers:
      - name: server
        image: itsdevin/bow-mark-server:${COMMIT_SHA1}
        command: [sh, -c, 'echo $PGPASSWORD']
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: bowmark}
data: {mode: production}
---
apiVersion: v1
kind: Namespace
metadata: {name: bowmark}
]]

  it("applies a folder in order with substitution and reports created, configured, unchanged", function()
    rbtest.write(dir .. "/app.yaml", APP)
    local report = c:apply(dir, { vars = { COMMIT_SHA1 = "c0ffee" } })
    assert.are.same({ 3, 0, 0 }, { report.created, report.configured, report.unchanged })
    assert.are.same({ "Namespace", "ConfigMap", "Deployment" }, { report[1].kind, report[2].kind, report[3].kind })
    assert.are.same({ "created", "created", "created" }, { report[1].result, report[2].result, report[3].result })
    assert.are.equal(dir .. "/app.yaml", report[3].file)
    assert.are.equal(1, report[3].index)
    local d = c:get { kind = "Deployment", name = "server", namespace = "bowmark" }
    assert.are.equal("itsdevin/bow-mark-server:c0ffee", d.spec.template.spec.containers[1].image)
    assert.are.same({ "sh", "-c", "echo $PGPASSWORD" }, d.spec.template.spec.containers[1].command)
    report = c:apply(dir, { vars = { COMMIT_SHA1 = "c0ffee" } })
    assert.are.same({ 0, 0, 3 }, { report.created, report.configured, report.unchanged })
    report = c:apply(dir, { vars = { COMMIT_SHA1 = "beef00", REPLICAS = 2 } })
    assert.are.same({ 0, 1, 2 }, { report.created, report.configured, report.unchanged })
    assert.are.equal("configured", report[3].result)
    local summaries = {}
    for _, a in ipairs(audit.recorded) do summaries[#summaries + 1] = a.summary end
    assert.are.equal("apply v1 Namespace bowmark: created", summaries[1])
    assert.are.equal("apply apps/v1 Deployment bowmark/server: configured", summaries[9])
  end)

  it("applies CRDs before their custom resources, once established", function()
    local text = [[
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1}
spec: {size: 2}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
]]
    local report = c:apply(text)
    assert.are.same({ "CustomResourceDefinition", "Widget" }, { report[1].kind, report[2].kind })
    assert.are.same({ "created", "created" }, { report[1].result, report[2].result })
    assert.are.equal(2, c:get({ api_version = "example.com/v1", kind = "Widget", name = "w1" }).spec.size)
    local crd_wait = fake:matching("GET", "^/apis/apiextensions.k8s.io/v1/customresourcedefinitions$")
    assert.is_true(#crd_wait >= 1)
  end)

  it("refuses the whole set before writing when a kind is unknown, naming file and document", function()
    rbtest.write(dir .. "/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n---\napiVersion: example.com/v9\nkind: Gadget\nmetadata: {name: g}\n")
    local e = err_of(c.apply, c, dir .. "/a.yaml")
    assert.are.equal("config", e.kind)
    assert.are.equal("UnknownKind", e.code)
    assert.are.equal(dir .. "/a.yaml document 2: unknown kind Gadget: apiVersion example.com/v9 is not served by " .. fake.server, e.message)
    assert.is_nil(c:get { kind = "ConfigMap", name = "fine" })
    assert.are.equal(0, #audit.recorded)
  end)

  it("under --dry-run reports what would be created, even inside a namespace that does not exist yet", function()
    rbtest.write(dir .. "/app.yaml", APP)
    audit.set_sink { action = function(t) audit.recorded[#audit.recorded + 1] = t end,
      log = function() end, progress = function() end, dry_run = true }
    local ok, report = pcall(c.apply, c, dir, { vars = { COMMIT_SHA1 = "c0ffee" } })
    audit.set_sink(nil)
    assert(ok, report)
    assert.are.same({ "created", "created", "created" }, { report[1].result, report[2].result, report[3].result })
    assert.is_nil(c:get { kind = "Namespace", name = "bowmark" })
    assert.are.equal("its namespace would be created first", audit.recorded[2].note)
    assert.is_true(audit.recorded[3].dry_run)
  end)

  it("applies Lua tables and lists of them", function()
    local report = c:apply_manifests {
      { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "t1" }, data = { x = "${X}" } },
      { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "t2" } },
    }
    assert.are.equal(2, report.created)
    local obj, r = c:apply({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "t3" }, data = { x = "${X}" } }, { vars = { X = "42" } })
    assert.are.equal("created", r)
    assert.are.equal("42", obj.data.x)
    assert.are.equal("${X}", c:get({ kind = "ConfigMap", name = "t1" }).data.x) -- no vars: no substitution
  end)
end)
