-- The verbs against the fake API server: get, list, create, replace, patch,
-- server-side apply, delete, dry runs, discovery, Status errors and the
-- audited action of every write.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local json = require "runbook._json"

local function cm(name, data, ns)
  return { apiVersion = "v1", kind = "ConfigMap", metadata = { name = name, namespace = ns }, data = data or { a = "1" } }
end

local function deployment(name, replicas, image)
  return { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = name },
    spec = { replicas = replicas or 1, selector = { matchLabels = { app = name } },
      template = { metadata = { labels = { app = name } }, spec = { containers = { { name = "app", image = image or "nginx:1" } } } } } }
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

describe("k8s verbs", function()
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

  it("get returns the object, or nil when absent", function()
    assert.is_nil(c:get { kind = "ConfigMap", name = "nope" })
    assert.is_nil(c:get { kind = "ConfigMap", name = "nope", namespace = "no-such-namespace" })
    c:create(cm("one"))
    local o = c:get { kind = "ConfigMap", name = "one" }
    assert.are.equal("one", o.metadata.name)
    assert.are.equal("default", o.metadata.namespace)
    assert.are.equal("1", o.data.a)
    -- a whole object works as a reference too
    assert.are.equal(o.metadata.uid, c:get(cm("one")).metadata.uid)
  end)

  it("list follows continue through every page, with label and field selectors", function()
    for i = 1, 7 do
      local o = cm(string.format("item-%d", i))
      o.metadata.labels = { tier = i % 2 == 0 and "even" or "odd" }
      c:create(o)
    end
    fake:clear_requests()
    local items, meta = c:list { kind = "ConfigMap", limit = 3 }
    assert.are.equal(7, #items)
    assert.are.equal("ConfigMap", items[1].kind)
    assert.are.equal("v1", items[1].apiVersion)
    assert.is_string(meta.resource_version)
    local pages = fake:matching("GET", "^/api/v1/namespaces/default/configmaps$")
    assert.are.equal(3, #pages)
    assert.are.equal("3", pages[1].params.limit)
    assert.is_nil(pages[1].params.continue)
    assert.is_string(pages[2].params.continue)
    local odd = c:list { kind = "ConfigMap", label_selector = { tier = "odd" } }
    assert.are.equal(4, #odd)
    local one = c:list { kind = "ConfigMap", field_selector = "metadata.name=item-2" }
    assert.are.equal(1, #one)
    assert.are.equal("item-2", one[1].metadata.name)
    local everywhere = c:list { kind = "Namespace" }
    assert.is_true(#everywhere >= 3)
  end)

  it("create returns the object and records the action; AlreadyExists and Invalid are structured errors", function()
    local o = c:create(cm("made"))
    assert.is_string(o.metadata.uid)
    assert.are.same({ kind = "k8s", verb = "create", api_version = "v1", object_kind = "ConfigMap", namespace = "default",
      name = "made", code = 201, result = "created", server = fake.server, summary = "create v1 ConfigMap default/made: created" }, audit.recorded[1])
    local e = err_of(c.create, c, cm("made"))
    assert.are.equal("k8s", e.kind)
    assert.are.equal("AlreadyExists", e.code)
    assert.are.equal(409, e.status)
    assert.are.equal('configmaps "made" already exists', e.message)
    assert.are.equal("configmaps", e.details.kind)
    local bad = deployment("bad")
    bad.spec.selector = nil
    e = err_of(c.create, c, bad)
    assert.are.equal("Invalid", e.code)
    assert.are.equal(422, e.status)
    assert.matches('^Deployment%.apps "bad" is invalid: spec%.selector: Required value', e.message)
    assert.are.equal("FieldValueRequired", e.details.causes[1].reason)
    e = err_of(c.create, c, cm("x", nil, "no-such-ns"))
    assert.are.equal("NotFound", e.code)
    assert.are.equal('namespaces "no-such-ns" not found', e.message)
  end)

  it("replace updates, conditionally on resourceVersion", function()
    local o = c:create(cm("r"))
    local rv = o.metadata.resourceVersion
    o.data.a = "2"
    local o2 = c:replace(o)
    assert.are.equal("2", o2.data.a)
    assert.are_not.equal(rv, o2.metadata.resourceVersion)
    assert.are.equal("configured", audit.recorded[2].result)
    o.metadata.resourceVersion = rv -- stale
    local e = err_of(c.replace, c, o)
    assert.are.equal("Conflict", e.code)
    assert.are.equal('Operation cannot be fulfilled on configmaps "r": the object has been modified; please apply your changes to the latest version and try again', e.message)
  end)

  it("patches with merge, JSON and strategic merge patches", function()
    c:create(deployment("p", 1))
    local o = c:patch({ kind = "Deployment", name = "p" }, { metadata = { labels = { team = "web" } } })
    assert.are.equal("web", o.metadata.labels.team)
    o = c:patch({ kind = "Deployment", name = "p" }, { { op = "replace", path = "/spec/replicas", value = 3 } }, { type = "json" })
    assert.are.equal(3, o.spec.replicas)
    o = c:patch({ kind = "Deployment", name = "p" }, { spec = { template = { spec = { containers = { { name = "sidecar", image = "busybox" } } } } } }, { type = "strategic" })
    local names = {}
    for _, ct in ipairs(o.spec.template.spec.containers) do names[#names + 1] = ct.name end
    table.sort(names)
    assert.are.same({ "app", "sidecar" }, names) -- merged by name, not replaced
    local cts = {}
    for _, r in ipairs(fake:matching("PATCH", "^/apis/apps/v1/namespaces/default/deployments/p$")) do cts[#cts + 1] = r.contentType end
    assert.are.same({ "application/merge-patch+json", "application/json-patch+json", "application/strategic-merge-patch+json" }, cts)
    local e = err_of(c.patch, c, { kind = "Deployment", name = "p" }, { { op = "test", path = "/spec/replicas", value = 9 } }, { type = "json" })
    assert.are.equal(422, e.status)
    assert.are.same({ "patch", "patch", "patch" }, { audit.recorded[2].verb, audit.recorded[3].verb, audit.recorded[4].verb })
  end)

  it("server-side apply reports created, configured and unchanged by resourceVersion", function()
    local o, r = c:apply(deployment("web", 2))
    assert.are.equal("created", r)
    local _, r2 = c:apply(deployment("web", 2))
    assert.are.equal("unchanged", r2)
    local o3, r3 = c:apply(deployment("web", 3))
    assert.are.equal("configured", r3)
    assert.are.equal(3, o3.spec.replicas)
    assert.are_not.equal(o.metadata.resourceVersion, o3.metadata.resourceVersion)
    local patches = fake:matching("PATCH", "^/apis/apps/v1/namespaces/default/deployments/web$")
    assert.are.equal(3, #patches)
    assert.are.equal("application/apply-patch+yaml", patches[1].contentType)
    assert.are.equal("runbook", patches[1].params.fieldManager)
    assert.is_nil(patches[1].params.force)
    local managers = {}
    for _, mf in ipairs(o3.metadata.managedFields) do managers[mf.manager .. "/" .. mf.operation] = true end
    assert.is_true(managers["runbook/Apply"])
    assert.are.same({ "created", "unchanged", "configured" }, { audit.recorded[1].result, audit.recorded[2].result, audit.recorded[3].result })
    assert.are.equal("apply apps/v1 Deployment default/web: unchanged", audit.recorded[2].summary)
  end)

  it("reports apply conflicts with the fields and their manager; force takes them", function()
    c:apply(deployment("owned", 2), { field_manager = "helm" })
    local e = err_of(c.apply, c, deployment("owned", 5))
    assert.are.equal("Conflict", e.code)
    assert.are.equal(409, e.status)
    assert.are.same({ { field = ".spec.replicas", manager = "helm", message = e.conflicts[1].message } }, e.conflicts)
    assert.matches('conflict with "helm"', e.message)
    assert.are.equal("fields owned by another manager: .spec.replicas (owned by helm); apply with force = true to take them", e.hint)
    local o, r = c:apply(deployment("owned", 5), { force = true })
    assert.are.equal("configured", r)
    assert.are.equal(5, o.spec.replicas)
    local last = fake:matching("PATCH", "deployments/owned$")
    assert.are.equal("true", last[#last].params.force)
  end)

  it("deletes with a propagation policy, absent is not an error, and can wait until gone through a watch", function()
    c:create(cm("d1"))
    assert.are.equal("deleted", c:delete { kind = "ConfigMap", name = "d1" })
    assert.are.equal("absent", c:delete { kind = "ConfigMap", name = "d1" })
    assert.are.same({ "deleted", "absent" }, { audit.recorded[2].result, audit.recorded[3].result })
    local e = err_of(c.delete, c, { kind = "ConfigMap", name = "d1" }, { must_exist = true })
    assert.are.equal("NotFound", e.code)
    -- A Deployment deleted in the foreground lingers while its dependents
    -- go; a finalizer of the test's keeps it until the wait is watching (the
    -- controllers alone may finish before the wait starts on a busy machine)
    local fg = deployment("fg", 1)
    fg.metadata.finalizers = { "test.runbook.dev/hold" }
    c:apply(fg)
    c:rollout_status { kind = "Deployment", name = "fg", timeout = 20 }
    fake:clear_requests()
    local p = fake:later { { after = { path = "deployments$", watch = true }, method = "PATCH", auth = true,
      content_type = "application/merge-patch+json", path = "/apis/apps/v1/namespaces/default/deployments/fg",
      body = { metadata = { finalizers = json.null } } } }
    assert.are.equal("deleted", c:delete({ kind = "Deployment", name = "fg" }, { propagation = "Foreground", wait = true, timeout = 20 }))
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    assert.is_nil(c:get { kind = "Deployment", name = "fg" })
    local del = fake:matching("DELETE", "deployments/fg$")
    assert.are.equal(1, #del)
    local watches = 0
    for _, r in ipairs(fake:matching("GET", "^/apis/apps/v1/namespaces/default/deployments$")) do
      if r.watch then watches = watches + 1 end
    end
    assert.is_true(watches >= 1)
  end)

  it("makes every write a server-side dry run under --dry-run, recorded as such", function()
    audit.set_sink { action = function(t) audit.recorded[#audit.recorded + 1] = t end,
      log = function(level, msg) audit.logs[#audit.logs + 1] = { level = level, message = msg } end,
      progress = function() end, dry_run = true }
    local ok, err = pcall(function()
      local o = c:create(cm("dry"))
      assert.are.equal("dry", o.metadata.name)
      local _, r = c:apply(deployment("dryweb", 1))
      assert.are.equal("created", r)
      c:delete { kind = "ConfigMap", name = "kube-root-ca.crt" }
    end)
    audit.set_sink(nil)
    assert(ok, err)
    assert.is_nil(c:get { kind = "ConfigMap", name = "dry" })
    assert.is_nil(c:get { kind = "Deployment", name = "dryweb" })
    for _, r in ipairs(fake:requests()) do
      if r.method ~= "GET" and not r.path:match("^/_fake") then
        assert.are.equal("All", r.params.dryRun, r.method .. " " .. r.path)
      end
    end
    for _, a in ipairs(audit.recorded) do assert.is_true(a.dry_run) end
    assert.are.equal("create v1 ConfigMap default/dry: created (dry run)", audit.recorded[1].summary)
  end)

  it("discovers once per server, maps custom resources after their CRD exists, and names unknown kinds", function()
    fake:clear_requests()
    local c2 = k8s.connect { kubeconfig = fake.kubeconfig }
    c2:get { kind = "Deployment", name = "x" }
    c2:get { kind = "Deployment", name = "y" }
    assert.are.equal(0, #fake:matching("GET", "^/apis/apps/v1$")) -- cached by the connection before
    local e = err_of(c.get, c, { api_version = "example.com/v1", kind = "Widget", name = "w" })
    assert.are.equal("UnknownKind", e.code)
    assert.are.equal("unknown kind Widget: apiVersion example.com/v1 is not served by " .. fake.server, e.message)
    c:apply { apiVersion = "apiextensions.k8s.io/v1", kind = "CustomResourceDefinition", metadata = { name = "widgets.example.com" },
      spec = { group = "example.com", scope = "Namespaced", names = { plural = "widgets", singular = "widget", kind = "Widget" },
        versions = { { name = "v1", served = true, storage = true, schema = { openAPIV3Schema = { type = "object", ["x-kubernetes-preserve-unknown-fields"] = true } } } } } }
    c:wait { kind = "CustomResourceDefinition", name = "widgets.example.com", condition = "Established", timeout = 10 }
    local w, r = c:apply { apiVersion = "example.com/v1", kind = "Widget", metadata = { name = "w" }, spec = { size = 3 } }
    assert.are.equal("created", r)
    assert.are.equal(3, w.spec.size)
    assert.are.equal(3, c:get({ api_version = "example.com/v1", kind = "Widget", name = "w" }).spec.size)
    local info = c:resource("example.com/v1", "Widget")
    assert.are.same({ "widgets", true }, { info.plural, info.namespaced })
    e = err_of(c.get, c, { api_version = "v1", kind = "Gizmo", name = "g" })
    assert.are.equal("unknown kind Gizmo in apiVersion v1 (not served by " .. fake.server .. ")", e.message)
  end)

  it("guesses the plural when discovery is forbidden", function()
    fake:faults { fail = { code = 403 }, count = -1, method = "GET", path = "^/apis/networking.k8s.io/v1$" }
    local ing = { apiVersion = "networking.k8s.io/v1", kind = "Ingress", metadata = { name = "web" },
      spec = { rules = { { host = "tezca.mx", http = { paths = { { path = "/", pathType = "Prefix",
        backend = { service = { name = "web", port = { number = 80 } } } } } } } } } }
    local _, r = c:apply(ing)
    assert.are.equal("created", r)
    assert.are.equal(1, #fake:matching("PATCH", "^/apis/networking.k8s.io/v1/namespaces/default/ingresses/web$"))
    assert.is_true(c:resource("networking.k8s.io/v1", "Ingress").guessed)
  end)

  it("finds kinds without an apiVersion, by kind, plural or short name", function()
    c:apply(deployment("short", 1))
    assert.are.equal("short", c:get({ kind = "deploy", name = "short" }).metadata.name)
    assert.are.equal("short", c:get({ kind = "deployments", name = "short" }).metadata.name)
    assert.are.equal("Deployment", c:resource(nil, "Deployment").kind)
    assert.are.equal("persistentvolumeclaims", c:resource(nil, "pvc").plural)
  end)
end)
