-- Jobs and logs against the fake: one-off Jobs from an image (like
-- `kubectl run backfill-...`) or a spec, Jobs from a CronJob (like
-- `kubectl create job --from=cronjob/pg-backup`), logs streamed into the
-- run log with secrets redacted, outcomes, failures, and resuming.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"
local secret = require "runbook.secret"

local LOGS = "fake.runbook.dev/logs"

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

local function log_lines(prefix)
  local out = {}
  for _, l in ipairs(audit.logs) do
    if l.message:sub(1, #prefix) == prefix then out[#out + 1] = l.message:sub(#prefix + 1) end
  end
  return out
end

describe("k8s jobs", function()
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

  it("runs a one-off Job from an image, streams its logs into the run log, and returns the outcome", function()
    local pw = secret.wrap("s3cr3t-db-password-42")
    c:secret { name = "postgres", data = { password = pw } }
    local out = c:run_job {
      name = "backfill-paving", image = "bow-mark-server:abc", command = { "node", "dist/scripts/backfill-postgres.js" },
      env = { NODE_ENV = "production", POSTGRES_PASSWORD = { secret = "postgres", key = "password" } },
      labels = { component = "backfill" }, timeout = 60,
      node_selector = { ["doks.digitalocean.com/node-pool"] = "default-pool" },
    }
    assert.are.same({ "Complete", 1, 0 }, { out.status, out.succeeded, out.failed })
    assert.are.equal("backfill-paving", out.name)
    local job = c:get { kind = "Job", name = "backfill-paving" }
    local ct = job.spec.template.spec.containers[1]
    assert.are.equal("bow-mark-server:abc", ct.image)
    assert.are.same({ name = "POSTGRES_PASSWORD", valueFrom = { secretKeyRef = { name = "postgres", key = "password" } } }, ct.env[2])
    assert.are.equal("default-pool", job.spec.template.spec.nodeSelector["doks.digitalocean.com/node-pool"])
    assert.are.equal(1, #out.pods)
  end)

  it("streams the pods' log lines (redacted) and keeps the tail", function()
    local pw = secret.wrap("hunter2-but-longer")
    local lines = {}
    for i = 1, 30 do lines[#lines + 1] = "batch " .. i .. " done" end
    lines[#lines + 1] = "connected with password hunter2-but-longer"
    local out = c:run_job { name = "logger", timeout = 60, spec = {
      backoffLimit = 0,
      template = { metadata = { annotations = { [LOGS] = table.concat(lines, "\n") } },
        spec = { restartPolicy = "Never", containers = { { name = "main", image = "busybox" } } } } } }
    assert.are.equal("Complete", out.status)
    local pod = out.pods[1]
    local got = log_lines("[job/logger " .. pod .. "] ")
    assert.are.equal(31, #got)
    assert.are.equal("batch 1 done", got[1])
    assert.are.equal("connected with password [REDACTED]", got[31])
    local tail = {}
    for l in out.logs_tail:gmatch("[^\n]+") do tail[#tail + 1] = l end
    assert.are.equal(20, #tail)
    assert.are.equal("batch 12 done", tail[1])
    assert.are.equal(pw:reveal(), tail[20]:match("password (.*)$"))
  end)

  it("ends with the reason when the Job fails, or returns the outcome with check = false", function()
    fake:control("POST", "/_fake/fail-job", { name = "migrate" })
    local spec = { backoffLimit = 0, template = { metadata = { annotations = { [LOGS] = "starting\nERROR relation laws does not exist" } },
      spec = { restartPolicy = "Never", containers = { { name = "m", image = "app" } } } } }
    local e = err_of(c.run_job, c, { name = "migrate", spec = spec, timeout = 60 })
    assert.are.equal("JobFailed", e.code)
    assert.matches("^job default/migrate failed: BackoffLimitExceeded", e.message)
    local o = e.details.outcome
    assert.are.same({ "Failed", 0, 1, "BackoffLimitExceeded" }, { o.status, o.succeeded, o.failed, o.reason })
    assert.are.equal(1, #o.pods)
    assert.matches("ERROR relation laws does not exist$", o.logs_tail)
    -- the same name again: the Job is followed, not created twice
    audit.reset()
    local again = c:run_job { name = "migrate", spec = spec, timeout = 60, check = false }
    assert.are.same({ "Failed", "BackoffLimitExceeded" }, { again.status, again.reason })
    assert.are.same({ "run_job", "existing" }, { audit.recorded[1].verb, audit.recorded[1].result })
    assert.are.equal(1, #fake:matching("POST", "/jobs$"))
  end)

  it("creates a Job from a CronJob the way kubectl create job --from does, and runs it", function()
    c:apply { apiVersion = "batch/v1", kind = "CronJob", metadata = { name = "pg-backup" }, spec = { schedule = "0 8 * * *",
      concurrencyPolicy = "Forbid", jobTemplate = { metadata = { labels = { app = "pg-backup" }, annotations = { owner = "db" } },
        spec = { backoffLimit = 0, template = { metadata = { annotations = { [LOGS] = "pg_dump bowmark_reports_paving\nuploaded 12 MB" } },
          spec = { restartPolicy = "Never", containers = { { name = "backup", image = "postgres:16" } } } } } } } }
    local cj = c:get { kind = "CronJob", name = "pg-backup" }
    local job = c:create_job_from_cronjob { cronjob = "pg-backup", name = "pg-backup-manual" }
    assert.are.same({ ["cronjob.kubernetes.io/instantiate"] = "manual", owner = "db" }, job.metadata.annotations)
    assert.are.equal("pg-backup", job.metadata.labels.app)
    local ref = job.metadata.ownerReferences[1]
    assert.are.same({ "batch/v1", "CronJob", "pg-backup", cj.metadata.uid, true }, { ref.apiVersion, ref.kind, ref.name, ref.uid, ref.controller })
    assert.is_nil(ref.blockOwnerDeletion)
    local out = c:wait_job { name = "pg-backup-manual", timeout = 60 }
    assert.are.equal("Complete", out.status)
    assert.are.equal("pg_dump bowmark_reports_paving\nuploaded 12 MB", out.logs_tail)
    -- run_job does both, and deletes the Job afterwards when asked
    local out2 = c:run_job { name = "pg-backup-verify", from_cronjob = "pg-backup", timeout = 60, delete = true }
    assert.are.equal("Complete", out2.status)
    assert.is_nil(c:get { kind = "Job", name = "pg-backup-verify" })
    local e = err_of(c.create_job_from_cronjob, c, { cronjob = "nope", name = "x" })
    assert.are.equal('cronjobs.batch "nope" not found', e.message)
  end)

  it("waits without following logs and still reports the tail", function()
    c:run_job { name = "quiet", wait = false, spec = { backoffLimit = 0, template = {
      metadata = { annotations = { [LOGS] = "one\ntwo" } },
      spec = { restartPolicy = "Never", containers = { { name = "q", image = "busybox" } } } } } }
    local out = c:wait_job { name = "quiet", follow = false, timeout = 60 }
    assert.are.equal("Complete", out.status)
    assert.are.equal("one\ntwo", out.logs_tail)
    assert.are.same({}, log_lines("[job/quiet "))
  end)

  it("reads pod logs, and follows them from before the container starts", function()
    c:create { apiVersion = "v1", kind = "Pod", metadata = { name = "talker", annotations = { [LOGS] = "a\nb\nc" } },
      spec = { restartPolicy = "Never", containers = { { name = "t", image = "busybox" } } } }
    local text = c:logs { pod = "talker", follow = true, timeout = 30 }
    assert.are.equal("a\nb\nc\n", text)
    assert.are.same({ "a", "b", "c" }, log_lines("[pod/talker] "))
    assert.are.equal("c\n", c:logs { pod = "talker", tail_lines = 1 })
    local logs = fake:matching("GET", "/pods/talker/log$")
    assert.are.equal("t", logs[1].params.container)
    assert.are.equal("true", logs[1].params.follow)
    local e = err_of(c.logs, c, { pod = "nobody" })
    assert.are.equal('pods "nobody" not found', e.message)
  end)

  it("does not run anything under --dry-run", function()
    audit.set_sink { action = function(t) audit.recorded[#audit.recorded + 1] = t end,
      log = function(level, msg) audit.logs[#audit.logs + 1] = { level = level, message = msg } end,
      progress = function() end, dry_run = true }
    local ok, out = pcall(c.run_job, c, { name = "dry-job", image = "busybox", command = { "true" } })
    audit.set_sink(nil)
    assert(ok, out)
    assert.are.same({ name = "dry-job", namespace = "default", dry_run = true }, out)
    assert.is_nil(c:get { kind = "Job", name = "dry-job" })
    assert.are.equal("All", fake:matching("POST", "/jobs$")[1].params.dryRun)
  end)
end)
