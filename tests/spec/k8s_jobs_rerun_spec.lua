-- run_job{rerun_failed = true}: a step that is retried (or resumed) after
-- its Job failed runs the Job again, instead of following the failed one
-- and failing at once on every attempt.
local k8sfake = require "k8sfake"
local k8s = require "runbook.k8s"
local audit = require "runbook._engine.audit"

local LOGS = "fake.runbook.dev/logs"

local function job_spec(lines)
  return { backoffLimit = 0, template = { metadata = { annotations = { [LOGS] = lines } },
    spec = { restartPolicy = "Never", containers = { { name = "m", image = "app" } } } } }
end

local function actions()
  local out = {}
  for _, a in ipairs(audit.recorded) do out[#out + 1] = a.verb .. ":" .. a.result end
  return out
end

describe("k8s run_job rerun_failed", function()
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

  it("deletes a failed Job of that name with its pods and runs it again", function()
    fake:control("POST", "/_fake/fail-job", { name = "migrate" })
    local ok, e = pcall(c.run_job, c, { name = "migrate", spec = job_spec("ERROR relation laws does not exist"), timeout = 60 })
    assert.is_false(ok)
    assert.are.equal("JobFailed", e.code)
    local failed_pod = e.details.outcome.pods[1]
    fake:control("DELETE", "/_fake/fail-job")
    audit.reset()
    local out = c:run_job { name = "migrate", spec = job_spec("Applying laws.0001"), timeout = 60, rerun_failed = true }
    assert.are.same({ "Complete", 1, 0 }, { out.status, out.succeeded, out.failed })
    assert.are.equal("Applying laws.0001", out.logs_tail)
    assert.are.equal(1, #out.pods)
    assert.are_not.equal(failed_pod, out.pods[1])
    assert.are.same({ "delete:deleted", "create:created" }, actions())
    assert.are.equal("Foreground", audit.recorded[1].propagation)
    assert.are.equal(1, #c:list { kind = "Pod", label_selector = { ["job-name"] = "migrate" } })
    local said
    for _, l in ipairs(audit.logs) do
      if l.message == "job default/migrate failed in an earlier attempt (BackoffLimitExceeded); deleting it and running it again" then said = true end
    end
    assert.is_true(said)
    assert.are.equal(2, #fake:matching("POST", "/jobs$"))
  end)

  it("still follows a Job that completed, or one that is running, without creating another", function()
    c:run_job { name = "collectstatic", spec = job_spec("123 static files copied"), timeout = 60 }
    audit.reset()
    local out = c:run_job { name = "collectstatic", spec = job_spec("123 static files copied"), timeout = 60, rerun_failed = true }
    assert.are.equal("Complete", out.status)
    assert.are.same({ "run_job:existing" }, actions())
    assert.are.equal(1, #fake:matching("POST", "/jobs$"))
  end)

  it("without rerun_failed, follows the failed Job as before", function()
    fake:control("POST", "/_fake/fail-job", { name = "index" })
    pcall(c.run_job, c, { name = "index", spec = job_spec("boom"), timeout = 60 })
    fake:control("DELETE", "/_fake/fail-job")
    audit.reset()
    local out = c:run_job { name = "index", spec = job_spec("boom"), timeout = 60, check = false }
    assert.are.same({ "Failed", "BackoffLimitExceeded" }, { out.status, out.reason })
    assert.are.same({ "run_job:existing" }, actions())
  end)

  it("in a dry run, deletes nothing", function()
    fake:control("POST", "/_fake/fail-job", { name = "dry" })
    pcall(c.run_job, c, { name = "dry", spec = job_spec("boom"), timeout = 60 })
    audit.reset()
    local out = c:run_job { name = "dry", spec = job_spec("boom"), timeout = 60, rerun_failed = true, dry_run = true }
    assert.is_true(out.dry_run)
    assert.are.same({ "run_job:existing" }, actions())
    assert.are.equal(0, #fake:matching("DELETE", "/jobs/dry$"))
    assert.is_table(c:get { kind = "Job", name = "dry" })
  end)
end)
