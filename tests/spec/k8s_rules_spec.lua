-- kubectl's readiness rules as pure functions over objects, the offline
-- plural guess, and how Jobs are built from an image or a CronJob.
local rules = require "runbook.k8s._rules"
local client = require "runbook.k8s._client"
local jobs = require "runbook.k8s._jobs"

local function deploy(t)
  return {
    kind = "Deployment", metadata = { name = "api", generation = t.generation or 2, annotations = t.annotations },
    spec = { replicas = t.replicas },
    status = { observedGeneration = t.observed or 2, replicas = t.status_replicas, updatedReplicas = t.updated,
      availableReplicas = t.available, conditions = t.conditions },
  }
end

describe("rollout status rules (kubectl's, word for word)", function()
  it("Deployment", function()
    assert.are.same({ "wait", "Waiting for deployment spec update to be observed..." },
      { rules.deployment(deploy { generation = 3, observed = 2 }) })
    assert.are.same({ "wait", 'Waiting for deployment "api" rollout to finish: 1 out of 3 new replicas have been updated...' },
      { rules.deployment(deploy { replicas = 3, updated = 1, status_replicas = 3, available = 3 }) })
    assert.are.same({ "wait", 'Waiting for deployment "api" rollout to finish: 2 old replicas are pending termination...' },
      { rules.deployment(deploy { replicas = 3, updated = 3, status_replicas = 5, available = 3 }) })
    assert.are.same({ "wait", 'Waiting for deployment "api" rollout to finish: 1 of 3 updated replicas are available...' },
      { rules.deployment(deploy { replicas = 3, updated = 3, status_replicas = 3, available = 1 }) })
    assert.are.same({ "done", 'deployment "api" successfully rolled out' },
      { rules.deployment(deploy { replicas = 3, updated = 3, status_replicas = 3, available = 3 }) })
    assert.are.same({ "fail", 'deployment "api" exceeded its progress deadline', "ProgressDeadlineExceeded" },
      { rules.deployment(deploy { replicas = 3, updated = 1, conditions = { { type = "Progressing", status = "False", reason = "ProgressDeadlineExceeded" } } }) })
    -- a stale observation hides the deadline, as in kubectl
    assert.are.equal("wait", (rules.deployment(deploy { generation = 3, observed = 2,
      conditions = { { type = "Progressing", status = "False", reason = "ProgressDeadlineExceeded" } } })))
    assert.are.same({ "fail", "desired revision (2) is different from the running revision (3)" },
      { rules.deployment(deploy { annotations = { ["deployment.kubernetes.io/revision"] = "3" } }, { revision = 2 }) })
  end)

  it("StatefulSet", function()
    local function sts(t)
      return { kind = "StatefulSet", metadata = { name = "pg", generation = 1 },
        spec = { replicas = 3, updateStrategy = t.strategy or { type = "RollingUpdate", rollingUpdate = { partition = t.partition or 0 } } },
        status = { observedGeneration = t.observed or 1, readyReplicas = t.ready or 3, updatedReplicas = t.updated or 3,
          currentRevision = t.current, updateRevision = t.update, currentReplicas = 3 } }
    end
    assert.are.same({ "fail", "rollout status is only available for RollingUpdate strategy type", "UnsupportedStrategy" },
      { rules.statefulset(sts { strategy = { type = "OnDelete" } }) })
    assert.are.same({ "wait", "Waiting for statefulset spec update to be observed..." }, { rules.statefulset(sts { observed = 0 }) })
    assert.are.same({ "wait", "Waiting for 2 pods to be ready..." }, { rules.statefulset(sts { ready = 1 }) })
    assert.are.same({ "wait", "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated..." },
      { rules.statefulset(sts { partition = 1, updated = 1 }) })
    assert.are.same({ "done", "partitioned roll out complete: 3 new pods have been updated..." }, { rules.statefulset(sts {}) })
    assert.are.same({ "wait", "waiting for statefulset rolling update to complete 3 pods at revision pg-2..." },
      { rules.statefulset(sts { strategy = { type = "RollingUpdate" }, current = "pg-1", update = "pg-2" }) })
    assert.are.same({ "done", "statefulset rolling update complete 3 pods at revision pg-2..." },
      { rules.statefulset(sts { strategy = { type = "RollingUpdate" }, current = "pg-2", update = "pg-2" }) })
  end)

  it("DaemonSet", function()
    local function ds(t)
      return { kind = "DaemonSet", metadata = { name = "agent", generation = t.generation or 1 },
        spec = { updateStrategy = { type = t.type or "RollingUpdate" } },
        status = { observedGeneration = 1, desiredNumberScheduled = 3, updatedNumberScheduled = t.updated or 3, numberAvailable = t.available or 3 } }
    end
    assert.are.same({ "wait", "Waiting for daemon set spec update to be observed..." }, { rules.daemonset(ds { generation = 2 }) })
    assert.are.same({ "wait", 'Waiting for daemon set "agent" rollout to finish: 1 out of 3 new pods have been updated...' }, { rules.daemonset(ds { updated = 1 }) })
    assert.are.same({ "wait", 'Waiting for daemon set "agent" rollout to finish: 2 of 3 updated pods are available...' }, { rules.daemonset(ds { available = 2 }) })
    assert.are.same({ "done", 'daemon set "agent" successfully rolled out' }, { rules.daemonset(ds {}) })
    assert.are.equal("fail", (rules.daemonset(ds { type = "OnDelete" })))
  end)
end)

describe("kubectl wait rules", function()
  local obj = { kind = "Deployment", metadata = { name = "api", generation = 2 }, status = { observedGeneration = 2, conditions = {
    { type = "Available", status = "True", reason = "MinimumReplicasAvailable" },
    { type = "Progressing", status = "True", reason = "NewReplicaSetAvailable", observedGeneration = 1 } } } }

  it("conditions: type and status case-insensitive, not met for an older generation", function()
    assert.is_true(rules.condition_met(obj, "available"))
    assert.is_true(rules.condition_met(obj, "Available", "true"))
    assert.is_false(rules.condition_met(obj, "Available", "False"))
    assert.is_false(rules.condition_met(obj, "Progressing"))
    assert.is_false(rules.condition_met(obj, "Ready"))
  end)

  it("jsonpath: one scalar compared as trimmed text; a map is an error", function()
    local pvc = { status = { phase = "Bound", capacity = { storage = "1Gi" } }, spec = { list = { "a", "b" } } }
    assert.is_true((rules.jsonpath_met(pvc, "{.status.phase}", "Bound")))
    assert.is_true((rules.jsonpath_met(pvc, ".status.phase", " Bound ")))
    assert.is_true((rules.jsonpath_met(pvc, "{.status.phase}")))
    assert.are.same({ false, "the path {.status.missing} does not exist" }, { rules.jsonpath_met(pvc, "{.status.missing}", "x") })
    assert.are.same({ nil, "jsonpath {.status.capacity} gives a map or a list, not a value" }, { rules.jsonpath_met(pvc, "{.status.capacity}") })
    assert.are.equal("b", rules.jsonpath(pvc, "{.spec.list[1]}"))
  end)

  it("failures that end a wait at once", function()
    local job = { kind = "Job", metadata = { name = "backfill" }, status = { conditions = {
      { type = "Failed", status = "True", reason = "BackoffLimitExceeded", message = "Job has reached the specified backoff limit" } } } }
    assert.are.same({ 'job "backfill" failed: BackoffLimitExceeded: Job has reached the specified backoff limit', "BackoffLimitExceeded" },
      { rules.failure(job, "complete") })
    assert.is_nil(rules.failure(job, "failed"))
    local stuck = { kind = "Deployment", metadata = { name = "api" }, status = { conditions = {
      { type = "Progressing", status = "False", reason = "ProgressDeadlineExceeded", message = 'ReplicaSet "api-1" has timed out progressing.' } } } }
    assert.are.same({ 'deployment "api" exceeded its progress deadline: ReplicaSet "api-1" has timed out progressing.', "ProgressDeadlineExceeded" },
      { rules.failure(stuck, "available") })
    local done_pod = { kind = "Pod", metadata = { name = "p" }, status = { phase = "Succeeded" } }
    assert.are.same({ 'pod "p" has completed (Succeeded) and will never be Ready', "PodCompleted" }, { rules.failure(done_pod, "ready") })
  end)

  it("summarizes what it saw", function()
    assert.are.equal("generation 2, observedGeneration 2; conditions Available=True (MinimumReplicasAvailable), Progressing=True (NewReplicaSetAvailable)",
      rules.summary(obj))
    assert.are.equal("the object does not exist", rules.summary(nil))
  end)
end)

describe("offline mapping", function()
  it("guesses plurals like apimachinery's UnsafeGuessKindToResource", function()
    assert.are.equal("deployments", client.guess_plural("Deployment"))
    assert.are.equal("ingresses", client.guess_plural("Ingress"))
    assert.are.equal("networkpolicies", client.guess_plural("NetworkPolicy"))
    -- the guess is as unsafe as upstream's: discovery knows better
    assert.are.equal("endpointses", client.guess_plural("Endpoints"))
  end)

  it("builds paths", function()
    local dep = { api_version = "apps/v1", plural = "deployments", namespaced = true }
    assert.are.equal("/apis/apps/v1/namespaces/tezca/deployments/api/scale", client.path(dep, "tezca", "api", "scale"))
    assert.are.equal("/api/v1/namespaces/x", client.path({ api_version = "v1", plural = "namespaces", namespaced = false }, "ignored", "x"))
    assert.are.equal("/apis/example.com/v1/widgets", client.path({ api_version = "example.com/v1", plural = "widgets", namespaced = true }))
  end)
end)

describe("Jobs", function()
  it("are built from an image, a command and env like kubectl run", function()
    local m = jobs.job_manifest({ name = "backfill-paving", image = "app:1", command = { "node", "dist/backfill.js" },
      env = { NODE_ENV = "production", POSTGRES_PASSWORD = { secret = "postgres", key = "password" }, MONGO_URI = { secret = "paving", key = "mongoURI" } },
      node_selector = { ["doks.digitalocean.com/node-pool"] = "default-pool" } }, "default")
    local c = m.spec.template.spec.containers[1]
    assert.are.equal("backfill-paving", c.name)
    assert.are.same({ "node", "dist/backfill.js" }, c.command)
    assert.are.same({
      { name = "MONGO_URI", valueFrom = { secretKeyRef = { name = "paving", key = "mongoURI" } } },
      { name = "NODE_ENV", value = "production" },
      { name = "POSTGRES_PASSWORD", valueFrom = { secretKeyRef = { name = "postgres", key = "password" } } },
    }, c.env)
    assert.are.equal("Never", m.spec.template.spec.restartPolicy)
    assert.are.equal(0, m.spec.backoffLimit)
    assert.are.equal("runbook", m.metadata.labels["app.kubernetes.io/managed-by"])
    local ok, e = pcall(jobs.job_manifest, { name = "x", image = "i", env = { P = require("runbook.secret").wrap("hunter2-hunter2") } }, "default")
    assert.is_false(ok)
    assert.matches("env P: a secret value would be stored in the Job's spec in clear", e)
  end)

  it("are made from a CronJob as kubectl create job --from=cronjob/X makes them", function()
    local cj = { apiVersion = "batch/v1", kind = "CronJob", metadata = { name = "pg-backup", namespace = "default", uid = "u-1" },
      spec = { schedule = "0 8 * * *", jobTemplate = { metadata = { labels = { app = "backup" }, annotations = { team = "db" } },
        spec = { backoffLimit = 1, template = { spec = { restartPolicy = "OnFailure", containers = { { name = "dump", image = "pg:16" } } } } } } } }
    local j = jobs.job_from_cronjob(cj, "pg-backup-manual")
    assert.are.same({
      apiVersion = "batch/v1", kind = "Job",
      metadata = { name = "pg-backup-manual", namespace = "default",
        annotations = { ["cronjob.kubernetes.io/instantiate"] = "manual", team = "db" }, labels = { app = "backup" },
        ownerReferences = { { apiVersion = "batch/v1", kind = "CronJob", name = "pg-backup", uid = "u-1", controller = true } } },
      spec = cj.spec.jobTemplate.spec,
    }, j)
    assert.is_nil(j.metadata.ownerReferences[1].blockOwnerDeletion)
  end)
end)
