-- Waits driven by watch against the fake: conditions, predicates, jsonpath,
-- deletion, failures that end a wait at once, timeouts that say what was
-- last seen, 410 Expired, bookmarks and re-watching; rollout status,
-- restart and scale. The fake's request log proves that waits watch
-- instead of polling.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local host = require "runbook._host"

local function deployment(name, replicas)
  return { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = name },
    spec = { replicas = replicas or 2, selector = { matchLabels = { app = name } },
      template = { metadata = { labels = { app = name } }, spec = { containers = { { name = "app", image = "nginx:1" } } } } } }
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

-- The requests on one collection path: lists (GET without watch) and watches.
local function traffic(fake, path)
  local lists, watches, gets = {}, {}, {}
  for _, r in ipairs(fake:requests()) do
    if r.method == "GET" and r.path == path then
      if r.watch then watches[#watches + 1] = r else lists[#lists + 1] = r end
    elseif r.method == "GET" and r.path:sub(1, #path + 1) == path .. "/" then
      gets[#gets + 1] = r
    end
  end
  return lists, watches, gets
end

-- Body of a /_fake/status call for Deployment `name` in default.
local function dstatus(name, status, freeze)
  return { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = name, status = status, freeze = freeze }
end

describe("k8s waits", function()
  local fake, c
  local DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
  setup(function()
    fake = k8sfake.start { bookmark_interval = 0.2 }
    c = k8s.connect { kubeconfig = fake.kubeconfig }
  end)
  teardown(function() fake:stop() end)
  before_each(function()
    fake:reset()
    audit.reset()
  end)

  it("waits for a condition through one list and one watch, not by polling", function()
    -- held unavailable until the wait watches: the controllers alone may finish
    -- before the wait lists on a busy machine, and then it never watches
    c:apply(deployment("web"))
    fake:set_status(dstatus("web", { observedGeneration = 1,
      conditions = { { type = "Available", status = "False", reason = "MinimumReplicasUnavailable" } } }, true))
    fake:clear_requests()
    local p = fake:later { { after = { path = "deployments$", watch = true }, path = "/_fake/status", body = dstatus("web",
      { observedGeneration = 1, conditions = { { type = "Available", status = "True", reason = "MinimumReplicasAvailable" } } }) } }
    local obj = c:wait { kind = "Deployment", name = "web", condition = "Available", timeout = 20 }
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    assert.are.equal("web", obj.metadata.name)
    local lists, watches, gets = traffic(fake, DEPLOYS)
    assert.are.equal(1, #lists)
    assert.are.equal("metadata.name=web", lists[1].params.fieldSelector)
    assert.are.equal(1, #watches)
    assert.are.equal("true", watches[1].params.allowWatchBookmarks)
    assert.matches("^%d+$", watches[1].params.resourceVersion) -- from the list's version, not from the start
    assert.are.equal(0, #gets)
  end)

  it("ends at once when a Job fails, with the reason", function()
    fake:control("POST", "/_fake/fail-job", { name = "doomed" })
    c:create { apiVersion = "batch/v1", kind = "Job", metadata = { name = "doomed" }, spec = { backoffLimit = 0,
      template = { spec = { restartPolicy = "Never", containers = { { name = "x", image = "busybox" } } } } } }
    local t0 = host.monotime()
    local e = err_of(c.wait, c, { kind = "Job", name = "doomed", condition = "Complete", timeout = 60 })
    assert.is_true(host.monotime() - t0 < 10)
    assert.are.equal("k8s", e.kind)
    assert.are.equal("BackoffLimitExceeded", e.code)
    assert.matches('^batch/v1 Job default/doomed %(condition Complete=True%): job "doomed" failed: BackoffLimitExceeded', e.message)
  end)

  it("ends at once on ProgressDeadlineExceeded, in wait and in rollout_status", function()
    c:apply(deployment("stuck"))
    fake:control("POST", "/_fake/stuck", { kind = "Deployment", namespace = "default", name = "stuck" })
    local t0 = host.monotime()
    local e = err_of(c.rollout_status, c, { kind = "Deployment", name = "stuck", timeout = 60 })
    assert.is_true(host.monotime() - t0 < 10)
    assert.are.equal("ProgressDeadlineExceeded", e.code)
    assert.are.equal('apps/v1 Deployment default/stuck rollout: deployment "stuck" exceeded its progress deadline', e.message)
    e = err_of(c.wait, c, { kind = "Deployment", name = "stuck", condition = "Available", timeout = 60 })
    assert.are.equal("ProgressDeadlineExceeded", e.code)
  end)

  it("says what it saw last when it times out", function()
    c:apply(deployment("frozen"))
    fake:set_status { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "frozen", freeze = true,
      status = { observedGeneration = 1, replicas = 2, updatedReplicas = 2, availableReplicas = 1,
        conditions = { { type = "Available", status = "False", reason = "MinimumReplicasUnavailable" } } } }
    local t0 = host.monotime()
    local e = err_of(c.rollout_status, c, { kind = "Deployment", name = "frozen", timeout = 1 })
    local took = host.monotime() - t0
    assert.is_true(took >= 1 and took < 3, "took " .. took)
    assert.are.equal("WaitTimeout", e.code)
    assert.are.equal('timed out after 1 s waiting for apps/v1 Deployment default/frozen rollout; last seen: Waiting for deployment "frozen" rollout to finish: 1 of 2 updated replicas are available... (generation 1, observedGeneration 1; replicas 2, updatedReplicas 2, availableReplicas 1; conditions Available=False (MinimumReplicasUnavailable))', e.message)
    e = err_of(c.wait, c, { kind = "Deployment", name = "frozen", condition = "Available", timeout = 0.5 })
    assert.matches("^timed out after 0%.5 s waiting for apps/v1 Deployment default/frozen %(condition Available=True%); last seen: Available=False %(MinimumReplicasUnavailable%) ", e.message)
  end)

  it("reacts to a change made while it waits", function()
    c:apply(deployment("later"))
    fake:set_status { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "later", freeze = true,
      status = { observedGeneration = 1, replicas = 2, updatedReplicas = 2, availableReplicas = 0 } }
    fake:clear_requests()
    -- the change comes once the wait is watching
    local p = fake:later { { after = { path = "deployments$", watch = true }, path = "/_fake/status", body = { apiVersion = "apps/v1", kind = "Deployment",
      namespace = "default", name = "later", status = { observedGeneration = 1, replicas = 2, updatedReplicas = 2, availableReplicas = 2 } } } }
    local msg = c:rollout_status { kind = "Deployment", name = "later", timeout = 20 }
    local done = host.now()
    local at = k8sfake.times(p)[1]
    assert.are.equal('deployment "later" successfully rolled out', msg)
    assert.is_true(done - at < 0.5, "reacted after " .. (done - at) .. " s")
  end)

  it("waits with a predicate, a match table or a jsonpath, and for deletion", function()
    c:apply { apiVersion = "v1", kind = "PersistentVolumeClaim", metadata = { name = "data" },
      spec = { accessModes = { "ReadWriteOnce" }, resources = { requests = { storage = "1Gi" } } } }
    local pvc = c:wait { kind = "PersistentVolumeClaim", name = "data", jsonpath = "{.status.phase}", value = "Bound", timeout = 20 }
    assert.are.equal("Bound", pvc.status.phase)
    c:apply(deployment("pred", 3))
    local seen = 0
    local d = c:wait { kind = "Deployment", name = "pred", timeout = 20, predicate = function(o)
      seen = seen + 1
      return (o.status and o.status.readyReplicas or 0) >= 3, "ready " .. tostring(o.status and o.status.readyReplicas)
    end }
    assert.are.equal(3, d.status.readyReplicas)
    assert.is_true(seen >= 2)
    d = c:wait { kind = "Deployment", name = "pred", match = { status = { availableReplicas = 3 } }, timeout = 20 }
    assert.are.equal(3, d.status.availableReplicas)
    c:delete { kind = "PersistentVolumeClaim", name = "data" }
    assert.is_nil(c:wait { kind = "PersistentVolumeClaim", name = "data", deleted = true, timeout = 20 })
  end)

  it("waits for every object a label selector picks", function()
    c:apply(deployment("sel", 3))
    local pods = c:wait { kind = "Pod", label_selector = { app = "sel" }, condition = "Ready", timeout = 20 }
    assert.are.equal(3, #pods)
    for _, p in ipairs(pods) do assert.is_true(k8s.rules.condition_met(p, "Ready")) end
  end)

  it("a predicate that raises ends the wait with its error", function()
    c:apply(deployment("boom", 1))
    local e = err_of(c.wait, c, { kind = "Deployment", name = "boom", timeout = 20, predicate = function() error("bad state", 0) end })
    assert.are.equal("bad state", e)
  end)

  it("lists again after 410 Expired, as an HTTP status or inside the stream", function()
    c:apply(deployment("expire"))
    c:wait { kind = "Deployment", name = "expire", condition = "Available", timeout = 20 }
    fake:set_status { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "expire", freeze = true,
      status = { observedGeneration = 1, conditions = { { type = "Available", status = "False", reason = "MinimumReplicasUnavailable" } } } }
    fake:faults { fail = { code = 410 }, watch = true, path = "deployments$" }
    fake:clear_requests()
    -- Available once the wait watches again (after the 410, a list and a second watch)
    local p = fake:later { { after = { path = "deployments$", watch = true, count = 2 }, path = "/_fake/status", body = { apiVersion = "apps/v1", kind = "Deployment",
      namespace = "default", name = "expire", status = { observedGeneration = 1, conditions = { { type = "Available", status = "True", reason = "MinimumReplicasAvailable" } } } } } }
    c:wait { kind = "Deployment", name = "expire", condition = "Available", timeout = 20 }
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    local lists, watches = traffic(fake, DEPLOYS)
    assert.are.equal(2, #lists)
    assert.are.equal(2, #watches)
    assert.are.equal(410, watches[1].status)

    -- in the stream: the watch starts from a version the server has forgotten
    fake:set_status { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "expire", freeze = true,
      status = { observedGeneration = 1, conditions = { { type = "Available", status = "False", reason = "MinimumReplicasUnavailable" } } } }
    -- The first watch is held back (slow) while a write and a compaction
    -- move the history past the list's version; the hold is long so that
    -- both land inside it on a busy machine, and the status change waits
    -- for the second watch.
    fake:faults { slow = { ms = 3000 }, watch = true, path = "deployments$" }
    fake:clear_requests()
    p = fake:later {
      { after = { path = "deployments$", watch = true }, path = "/_fake/objects", body = { objects = { { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "bump" } } } } },
      { path = "/_fake/compact", body = {} },
      { after = { path = "deployments$", watch = true, count = 2 }, path = "/_fake/status", body = { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "expire",
        status = { observedGeneration = 1, conditions = { { type = "Available", status = "True", reason = "MinimumReplicasAvailable" } } } } },
    }
    c:wait { kind = "Deployment", name = "expire", condition = "Available", timeout = 20 }
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    lists, watches = traffic(fake, DEPLOYS)
    assert.are.equal(2, #lists)
    assert.are.equal(2, #watches)
    assert.are.equal(200, watches[1].status)
  end)

  it("watches again from the last bookmark when the server ends the stream", function()
    c:apply(deployment("bm"))
    fake:set_status { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "bm", freeze = true,
      status = { observedGeneration = 1, replicas = 2, updatedReplicas = 2, availableReplicas = 0 } }
    -- An unrelated write while the first watch is held back (so the
    -- bookmarks it then sends carry a newer version than the list's), the
    -- rollout's end once the wait watches again. The hold gives the write
    -- time to land however busy the machine.
    fake:faults { slow = { ms = 3000 }, watch = true, path = "deployments$" }
    fake:clear_requests()
    local p = fake:later {
      { after = { path = "deployments$", watch = true }, path = "/_fake/objects", body = { objects = { { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "unrelated" } } } } },
      { after = { path = "deployments$", watch = true, count = 2 }, path = "/_fake/status", body = { apiVersion = "apps/v1", kind = "Deployment", namespace = "default", name = "bm",
        status = { observedGeneration = 1, replicas = 2, updatedReplicas = 2, availableReplicas = 2 } } },
    }
    c:rollout_status { kind = "Deployment", name = "bm", timeout = 20, watch_timeout = 2 }
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    local lists, watches = traffic(fake, DEPLOYS)
    assert.are.equal(1, #lists)
    assert.is_true(#watches >= 2, #watches .. " watches")
    assert.are.equal("2", watches[1].params.timeoutSeconds)
    -- the deployment did not change between the watches: the newer version came from a bookmark
    assert.is_true(tonumber(watches[2].params.resourceVersion) > tonumber(watches[1].params.resourceVersion))
  end)

  it("waits out a 429 on the watch as Retry-After says", function()
    c:apply(deployment("throttled", 1))
    c:rollout_status { kind = "Deployment", name = "throttled", timeout = 20 }
    -- the new generation is observed only once the wait watches again after the 429
    fake:set_status(dstatus("throttled", { observedGeneration = 1, replicas = 1, updatedReplicas = 1, availableReplicas = 1 }, true))
    fake:faults { throttle = { retry_after = 1 }, watch = true, path = "deployments$" }
    c:patch({ kind = "Deployment", name = "throttled" }, { spec = { replicas = 2 } })
    fake:clear_requests()
    local p = fake:later { { after = { path = "deployments$", watch = true, count = 2 }, path = "/_fake/status",
      body = dstatus("throttled", { observedGeneration = 2, replicas = 2, updatedReplicas = 2, availableReplicas = 2 }) } }
    c:rollout_status { kind = "Deployment", name = "throttled", timeout = 20 }
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    local _, watches = traffic(fake, DEPLOYS)
    assert.are.equal(429, watches[1].status)
    assert.is_true(watches[2].time - watches[1].time >= 0.95)
    local warned
    for _, l in ipairs(audit.logs) do
      if l.message:match("watch answered 429; watching again in 1 s") then warned = true end
    end
    assert.is_true(warned)
  end)

  it("watches again when the stream breaks", function()
    c:apply(deployment("flaky"))
    -- rolled out only once the wait watches again after the dropped stream
    fake:set_status(dstatus("flaky", { observedGeneration = 1, replicas = 2, updatedReplicas = 2, availableReplicas = 0 }, true))
    fake:faults { drop = {}, watch = true, path = "deployments$" }
    fake:clear_requests()
    local p = fake:later { { after = { path = "deployments$", watch = true, count = 2 }, path = "/_fake/status",
      body = dstatus("flaky", { observedGeneration = 1, replicas = 2, updatedReplicas = 2, availableReplicas = 2 }) } }
    c:rollout_status { kind = "Deployment", name = "flaky", timeout = 20 }
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    local _, watches = traffic(fake, DEPLOYS)
    assert.are.equal(0, watches[1].status)
    assert.is_true(#watches >= 2)
    local warned = false
    for _, l in ipairs(audit.logs) do
      if l.message:match("watch stream broke") then warned = true end
    end
    assert.is_true(warned)
  end)

  it("follows StatefulSets and DaemonSets with kubectl's rules", function()
    c:apply { apiVersion = "apps/v1", kind = "StatefulSet", metadata = { name = "pg" }, spec = { replicas = 2, serviceName = "pg",
      selector = { matchLabels = { app = "pg" } }, template = { metadata = { labels = { app = "pg" } },
        spec = { containers = { { name = "pg", image = "postgres:16" } } } } } }
    assert.are.equal("partitioned roll out complete: 2 new pods have been updated...",
      c:rollout_status { kind = "StatefulSet", name = "pg", timeout = 30 })
    c:apply { apiVersion = "apps/v1", kind = "DaemonSet", metadata = { name = "agent" }, spec = {
      selector = { matchLabels = { app = "agent" } }, template = { metadata = { labels = { app = "agent" } },
        spec = { containers = { { name = "a", image = "agent:1" } } } } } }
    assert.are.equal('daemon set "agent" successfully rolled out', c:rollout_status { kind = "DaemonSet", name = "agent", timeout = 30 })
  end)

  it("restarts a rollout like kubectl rollout restart", function()
    c:apply(deployment("rs"))
    c:rollout_status { kind = "Deployment", name = "rs", timeout = 20 }
    local before = c:get { kind = "Deployment", name = "rs" }
    local out = c:rollout_restart { kind = "Deployment", name = "rs", wait = true, timeout = 20 }
    local stamp = out.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[+-]%d%d:%d%d$", stamp)
    assert.are.equal(before.metadata.generation + 1, out.metadata.generation)
    local patches = fake:matching("PATCH", "deployments/rs$")
    local last = patches[#patches]
    assert.are.equal("application/strategic-merge-patch+json", last.contentType)
    assert.are.equal("runbook-rollout", last.params.fieldManager)
    local rec = audit.recorded[#audit.recorded]
    assert.are.same({ "restart", "restarted" }, { rec.verb, rec.result })
    -- twice in one second still changes the annotation
    local again = c:rollout_restart { kind = "Deployment", name = "rs" }
    assert.are_not.equal(stamp, again.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"])
    c:patch({ kind = "Deployment", name = "rs" }, { spec = { paused = true } })
    local e = err_of(c.rollout_restart, c, { kind = "Deployment", name = "rs" })
    assert.are.equal("apps/v1 Deployment default/rs is paused; resume it before restarting", e.message)
  end)

  it("scales through the scale subresource", function()
    c:apply(deployment("sc", 1))
    assert.are.equal("scaled", c:scale { kind = "Deployment", name = "sc", replicas = 3, wait = true, timeout = 20 })
    assert.are.equal(3, c:get({ kind = "Deployment", name = "sc" }).status.availableReplicas)
    assert.are.equal("unchanged", c:scale { kind = "Deployment", name = "sc", replicas = 3 })
    local p = fake:matching("PATCH", "deployments/sc/scale$")
    assert.are.equal(1, #p)
    assert.are.same({ "scale", "scaled", 3 }, { audit.recorded[2].verb, audit.recorded[2].result, audit.recorded[2].replicas })
  end)

  it("under --dry-run looks once instead of waiting", function()
    audit.set_sink { action = function() end, log = function(level, msg) audit.logs[#audit.logs + 1] = { level = level, message = msg } end,
      progress = function() end, dry_run = true }
    local ok, res = pcall(c.rollout_status, c, { kind = "Deployment", name = "not-there", timeout = 600 })
    audit.set_sink(nil)
    assert(ok, res)
    assert.are.equal('deployment "not-there" does not exist (yet)', res)
    assert.are.equal('dry run: would wait for apps/v1 Deployment default/not-there rollout (now: deployment "not-there" does not exist (yet))', audit.logs[1].message)
  end)
end)
