-- runbook.k8s._jobs: one-off Jobs (from a spec, or an image, command and env
-- like `kubectl run backfill-... --restart=Never`), Jobs made from a CronJob
-- the way `kubectl create job --from=cronjob/X` makes them, waiting for them
-- to complete or fail while their pods' logs stream into the run log, and
-- pod logs (with follow).
--
-- A Job is named by the runbook, so a step that runs again after a crash
-- finds the Job it created before and follows it instead of starting a
-- second one.
local json = require "runbook._json"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local secret = require "runbook.secret"
local client = require "runbook.k8s._client"
local objects = require "runbook.k8s._objects"
local rules = require "runbook.k8s._rules"

local M = {}
---@class runbook.k8s.Cluster
local Cluster = {}
M.methods = Cluster

local v = objects.value
local TAIL = 20

---@class runbook.k8s.JobOutcome
---@field name string
---@field namespace string
---@field status "Complete"|"Failed"|nil
---@field succeeded integer
---@field failed integer
---@field reason string|nil     the terminal condition's reason (BackoffLimitExceeded, ...)
---@field message string|nil
---@field logs_tail string      the last 20 log lines
---@field pods string[]         the pods whose logs were read, oldest first
---@field dry_run boolean|nil

local function usage(fmt, ...) error(string.format(fmt, ...), 3) end

-- ---------------------------------------------------------------------------
-- pod logs

-- The container to read: the one asked for, else the
-- kubectl.kubernetes.io/default-container annotation, else the first.
local function default_container(pod)
  local ann = v(pod.metadata.annotations) or {}
  local d = v(ann["kubectl.kubernetes.io/default-container"])
  if d then return d end
  local c = (v(pod.spec.containers) or {})[1]
  return c and c.name
end

-- Keeps the last n lines.
local function tail_keeper(n)
  local lines, count = {}, 0
  return function(line)
    count = count + 1
    lines[#lines + 1] = line
    if #lines > n then table.remove(lines, 1) end
  end, function() return lines, count end
end

--- Pod logs. opts: pod (name), namespace, container, follow (stream until the
--- container ends, waiting for it to start), tail_lines, since_seconds,
--- timestamps, previous, limit_bytes, on_line (function(line)), log (true:
--- each line goes to the run log, redacted; default when following),
--- prefix (for those log lines), timeout (600, for follow).
--- Returns the text read (at most its last MiB when following).
---@param opts string|{pod:string, namespace:string|nil, container:string|nil, follow:boolean|nil, tail_lines:integer|nil, since_seconds:integer|nil, timestamps:boolean|nil, previous:boolean|nil, limit_bytes:integer|nil, on_line:fun(line:string)|nil, log:boolean|nil, prefix:string|nil, timeout:number|nil}
---@return string text
function Cluster:logs(opts)
  if type(opts) == "string" then opts = { pod = opts } end
  local name = opts.pod or opts.name
  if type(name) ~= "string" then usage("logs: pod is required") end
  local r = self:ref { kind = "Pod", api_version = "v1", name = name, namespace = opts.namespace }
  local pod = self:get(r)
  if not pod then
    errors.raise { kind = "k8s", code = "NotFound", status = 404, message = string.format("pods %q not found", name) }
  end
  local container = opts.container or default_container(pod)
  if opts.follow and v(pod.status and pod.status.phase) == "Pending" then
    pod = self:watch_until(r, function(p)
      if p == nil then return "fail", string.format("pod %q was deleted before it started", name), "NotFound" end
      local phase = v(p.status and p.status.phase)
      if phase and phase ~= "Pending" then return "done", "started" end
      return "wait", rules.summary(p)
    end, { timeout = opts.timeout or 600, what = string.format("pod %s/%s to start", r.namespace, name) })
  end
  local to_log = opts.log
  if to_log == nil then to_log = opts.follow == true end
  local prefix = opts.prefix or string.format("[pod/%s] ", name)
  local function emit(line)
    if opts.on_line then opts.on_line(line) end
    if to_log then audit.log("info", prefix .. line) end
  end
  local path = client.path(r.info, r.namespace, name, "log")
  local q = { container = container, follow = opts.follow and "true" or nil, tailLines = opts.tail_lines,
    sinceSeconds = opts.since_seconds, timestamps = opts.timestamps and "true" or nil,
    previous = opts.previous and "true" or nil, limitBytes = opts.limit_bytes }
  local req = { method = "GET", path = path, query = q, accept = "*/*",
    verb = "get", resource = "pods", subresource = "log", namespace = r.namespace, name = name }
  if not opts.follow then
    local text = self.client:request(req).body or ""
    for line in text:gmatch("([^\n]*)\n") do emit(line) end
    local last = text:match("[^\n]+$")
    if last then emit(last) end
    return text
  end
  -- following: lines are emitted as they arrive. An error answer (a Status
  -- body) comes through the same callback as log text, so text that starts
  -- like one is held back until the status is known.
  local chunks, size, partial, held = {}, 0, "", nil
  req.on_data = function(chunk)
    chunks[#chunks + 1] = chunk
    size = size + #chunk
    if size > 2 * 1048576 then
      local all = table.concat(chunks)
      chunks, size = { all:sub(-1048576) }, 1048576
    end
    partial = partial .. chunk
    if held == nil then held = partial:match('^{"kind":"Status"') ~= nil or partial:match('^{"apiVersion":"v1","kind":"Status"') ~= nil end
    if held then return true end
    for line in partial:gmatch("([^\n]*)\n") do emit(line) end
    partial = partial:match("[^\n]*$")
    return true
  end
  req.on_retry = function() chunks, size, partial, held = {}, 0, "", nil end
  req.raw, req.policy, req.timeout = true, "none", opts.timeout or 600
  local res, err = self.client:try(req)
  if not res then error(err, 0) end
  if res.status ~= 200 then
    error(self.client:status_error({ status = res.status, headers = res.headers, body = table.concat(chunks) }, req), 0)
  end
  if held then
    for line in partial:gmatch("([^\n]*)\n") do emit(line) end
    partial = partial:match("[^\n]*$")
  end
  if partial ~= "" then emit(partial) end
  return table.concat(chunks)
end

-- ---------------------------------------------------------------------------
-- building Jobs

-- env = {NAME = "value" | {secret = "name", key = "k"} | {config_map = "name", key = "k"}}
-- or a list in the API's form.
local function env_list(env)
  if env == nil then return nil end
  if type(env) ~= "table" then usage("env must be a table") end
  if #env > 0 then return env end
  local names, out = {}, {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local val = env[k]
    if secret.is(val) then
      usage("env %s: a secret value would be stored in the Job's spec in clear; put it in a Kubernetes Secret (cluster:secret) and use {secret = NAME, key = KEY}", k)
    elseif type(val) == "table" and val.secret then
      out[#out + 1] = { name = k, valueFrom = { secretKeyRef = { name = val.secret, key = val.key or k, optional = val.optional } } }
    elseif type(val) == "table" and val.config_map then
      out[#out + 1] = { name = k, valueFrom = { configMapKeyRef = { name = val.config_map, key = val.key or k, optional = val.optional } } }
    elseif type(val) == "table" then
      out[#out + 1] = { name = k, valueFrom = val.valueFrom or val }
    else
      out[#out + 1] = { name = k, value = tostring(val) }
    end
  end
  return out
end
M.env_list = env_list

local function strings(list, what)
  if list == nil then return nil end
  if type(list) == "string" then return json.array { list } end
  if type(list) ~= "table" then usage("%s must be a list of strings", what) end
  local out = {}
  for i, s in ipairs(list) do
    if type(s) ~= "string" and type(s) ~= "number" then usage("%s[%d] must be a string", what, i) end
    out[i] = tostring(s)
  end
  return json.array(out)
end

--- The Job a run_job call describes (without sending it).
function M.job_manifest(opts, namespace)
  if opts.spec then
    local spec = objects.copy(opts.spec)
    if spec.kind == "Job" then
      spec.metadata = spec.metadata or {}
      spec.metadata.name = spec.metadata.name or opts.name
      spec.metadata.namespace = spec.metadata.namespace or namespace
      return spec
    end
    return { apiVersion = "batch/v1", kind = "Job",
      metadata = { name = opts.name, namespace = namespace, labels = opts.labels, annotations = opts.annotations }, spec = spec }
  end
  if type(opts.image) ~= "string" or opts.image == "" then usage("run_job: give image= (and command=), spec= or from_cronjob=") end
  local labels = { ["app.kubernetes.io/managed-by"] = "runbook", ["runbook.dev/job"] = opts.name }
  for k, val in pairs(opts.labels or {}) do labels[k] = val end
  local container = {
    name = opts.container or opts.name, image = opts.image,
    command = strings(opts.command, "command"), args = strings(opts.args, "args"),
    env = env_list(opts.env), resources = opts.resources, workingDir = opts.working_dir,
  }
  return {
    apiVersion = "batch/v1", kind = "Job",
    metadata = { name = opts.name, namespace = namespace, labels = labels, annotations = opts.annotations },
    spec = {
      backoffLimit = opts.backoff_limit or 0,
      activeDeadlineSeconds = opts.active_deadline,
      ttlSecondsAfterFinished = opts.ttl,
      template = {
        metadata = { labels = labels },
        spec = {
          restartPolicy = "Never", nodeSelector = opts.node_selector, serviceAccountName = opts.service_account,
          containers = { container },
        },
      },
    },
  }
end

--- The Job `kubectl create job NAME --from=cronjob/X` makes from a CronJob.
function M.job_from_cronjob(cj, name)
  local tmpl = v(cj.spec.jobTemplate) or {}
  local tm = v(tmpl.metadata) or {}
  local annotations = { ["cronjob.kubernetes.io/instantiate"] = "manual" }
  for k, val in pairs(v(tm.annotations) or {}) do annotations[k] = val end
  return {
    apiVersion = "batch/v1", kind = "Job",
    metadata = {
      name = name, namespace = cj.metadata.namespace, annotations = annotations, labels = v(tm.labels),
      ownerReferences = { { apiVersion = "batch/v1", kind = "CronJob", name = cj.metadata.name, uid = cj.metadata.uid, controller = true } },
    },
    spec = objects.copy(v(tmpl.spec) or {}),
  }
end

--- Creates a Job from a CronJob (kubectl create job NAME --from=cronjob/X).
--- opts: cronjob, name, namespace. Returns the Job.
---@param opts {cronjob:string, name:string, namespace:string|nil, dry_run:boolean|nil}
---@return table job
function Cluster:create_job_from_cronjob(opts)
  if type(opts.cronjob) ~= "string" then usage("create_job_from_cronjob: cronjob is required") end
  if type(opts.name) ~= "string" then usage("create_job_from_cronjob: name is required") end
  local cj = self:get { kind = "CronJob", api_version = "batch/v1", name = opts.cronjob, namespace = opts.namespace }
  if not cj then
    errors.raise { kind = "k8s", code = "NotFound", status = 404, message = string.format("cronjobs.batch %q not found", opts.cronjob) }
  end
  return self:create(M.job_from_cronjob(cj, opts.name), { dry_run = opts.dry_run })
end

-- ---------------------------------------------------------------------------
-- waiting for Jobs

local function terminal(job)
  local c = rules.condition(job, "Complete")
  if c and c.status == "True" then return "Complete", c end
  c = rules.condition(job, "Failed")
  if c and c.status == "True" then return "Failed", c end
  return nil
end

local function counts(job)
  local st = v(job.status) or {}
  return tonumber(v(st.active)) or 0, tonumber(v(st.succeeded)) or 0, tonumber(v(st.failed)) or 0
end

local function job_selector(job)
  local ml = v((v(job.spec.selector) or {}).matchLabels)
  if ml then return objects.selector(ml) end
  return "job-name=" .. job.metadata.name
end

--- Waits for a Job to complete or fail. opts: name, namespace, follow (stream
--- its pods' logs into the run log, default true), timeout (3600), check
--- (default true: a failed Job raises). Returns the outcome {name=,
--- namespace=, status="Complete"|"Failed", succeeded=, failed=, reason=,
--- message=, logs_tail=, pods=}.
---@param opts {name:string, namespace:string|nil, follow:boolean|nil, timeout:number|nil, check:boolean|nil}
---@return runbook.k8s.JobOutcome outcome
function Cluster:wait_job(opts)
  local r = self:ref { kind = "Job", api_version = "batch/v1", name = opts.name, namespace = opts.namespace }
  local deadline = host.monotime() + (opts.timeout or 3600)
  local follow = opts.follow ~= false
  local keep_tail, get_tail = tail_keeper(TAIL)
  local followed, order = {}, {}
  local what = string.format("job %s/%s", r.namespace, r.name)
  local job = self:get(r)
  if not job then
    errors.raise { kind = "k8s", code = "NotFound", status = 404, message = string.format("jobs.batch %q not found", r.name) }
  end
  local function remaining()
    local left = deadline - host.monotime()
    if left <= 0 then
      errors.raise { kind = "k8s", code = "WaitTimeout", message = string.format("timed out after %g s waiting for %s; last seen: %s",
        opts.timeout or 3600, what, rules.summary(job)), object = job }
    end
    return left
  end
  while true do
    local state = terminal(job)
    local pods = {}
    if follow then
      pods = self:list { kind = "Pod", api_version = "v1", namespace = r.namespace, label_selector = job_selector(job) }
      table.sort(pods, function(a, b)
        local ta, tb = v(a.metadata.creationTimestamp) or "", v(b.metadata.creationTimestamp) or ""
        if ta ~= tb then return ta < tb end
        return a.metadata.name < b.metadata.name
      end)
    end
    local next_pod
    for _, p in ipairs(pods) do
      if not followed[p.metadata.name] then next_pod = p break end
    end
    if next_pod then
      local pname = next_pod.metadata.name
      followed[pname] = true
      order[#order + 1] = pname
      local ok, err = pcall(self.logs, self, { pod = pname, namespace = r.namespace, follow = true, timeout = remaining(),
        on_line = keep_tail, prefix = string.format("[job/%s %s] ", r.name, pname) })
      if not ok then
        if errors.is(err) and (err.kind == "interrupted" or err.kind == "timeout") then error(err, 0) end
        audit.log("warn", string.format("%s: logs of pod %s: %s", what, pname, errors.message(err)))
      end
      job = self:get(r) or job
    elseif state then
      break
    else
      -- wait for the Job to end, or to start a pod not followed yet
      local seen = #order
      job = self:watch_until(r, function(j)
        if j == nil then return "fail", "the Job was deleted", "NotFound" end
        if terminal(j) then return "done", "finished" end
        local a, s, f = counts(j)
        if follow and a + s + f > seen then return "done", "a new pod" end
        return "wait", rules.summary(j)
      end, { timeout = remaining(), what = what })
    end
  end
  local state, cond = terminal(job)
  local _, succeeded, failed = counts(job)
  local lines = get_tail()
  if not follow or #lines == 0 then
    -- not followed: the last lines of the newest pod
    local pods = self:list { kind = "Pod", api_version = "v1", namespace = r.namespace, label_selector = job_selector(job) }
    table.sort(pods, function(a, b) return (v(a.metadata.creationTimestamp) or "") < (v(b.metadata.creationTimestamp) or "") end)
    local last = pods[#pods]
    if last then
      local ok, text = pcall(self.logs, self, { pod = last.metadata.name, namespace = r.namespace, tail_lines = TAIL, log = false })
      if ok then
        lines = {}
        for line in text:gmatch("([^\n]*)\n?") do if line ~= "" then lines[#lines + 1] = line end end
      end
      for _, p in ipairs(pods) do
        if not followed[p.metadata.name] then order[#order + 1] = p.metadata.name end
      end
    end
  end
  local outcome = {
    name = r.name, namespace = r.namespace, status = state, succeeded = succeeded, failed = failed,
    reason = cond and v(cond.reason), message = cond and v(cond.message), logs_tail = table.concat(lines, "\n"),
    pods = order,
  }
  audit.log(state == "Complete" and "info" or "warn", string.format("%s: %s (succeeded %d, failed %d)%s", what,
    state, succeeded, failed, outcome.reason and (": " .. outcome.reason) or ""))
  if state == "Failed" and opts.check ~= false then
    errors.raise { kind = "k8s", code = "JobFailed", message = string.format("%s failed: %s%s", what,
      tostring(outcome.reason or "Failed"), outcome.message and (": " .. outcome.message) or ""), details = { outcome = outcome } }
  end
  return outcome
end

--- Runs a one-off Job and waits for it. opts: name (required), namespace;
--- what to run: spec (a Job manifest or a Job spec), or image, command,
--- args, env, backoff_limit (0), node_selector, service_account, labels,
--- resources, active_deadline, ttl; or from_cronjob = "name". Then wait
--- (true), follow (true: logs into the run log), timeout (3600), check (true),
--- delete (true: delete the Job after it completed). Returns the outcome
--- (see wait_job); an existing Job of that name is followed, not re-created,
--- unless it failed and rerun_failed is true: then it is deleted (with its
--- pods) and created again, so that a step's retry really runs it again.
---@param opts table  see docs/api/k8s.md
---@return runbook.k8s.JobOutcome outcome
function Cluster:run_job(opts)
  if type(opts) ~= "table" then usage("run_job: options table expected") end
  if type(opts.name) ~= "string" or opts.name == "" then usage("run_job: name is required") end
  local r = self:ref { kind = "Job", api_version = "batch/v1", name = opts.name, namespace = opts.namespace }
  local dry = self:dry(opts)
  local existing = self:get(r)
  if existing and opts.rerun_failed and not dry and terminal(existing) == "Failed" then
    local _, cond = terminal(existing)
    audit.log("info", string.format("job %s/%s failed in an earlier attempt (%s); deleting it and running it again",
      r.namespace, r.name, tostring(v(cond.reason) or "Failed")))
    -- Foreground: the Job goes only once its pods are gone, so the new
    -- Job's pods are the only ones its selector finds
    self:delete(r, { propagation = "Foreground", wait = true, timeout = opts.timeout and math.min(opts.timeout, 300) or 300 })
    existing = nil
  end
  if existing then
    audit.log("info", string.format("job %s/%s exists already (created by an earlier attempt?); following it instead of creating another",
      r.namespace, r.name))
    self:record("run_job", r, 200, "existing", dry)
  else
    local manifest
    if opts.from_cronjob then
      local cj = self:get { kind = "CronJob", api_version = "batch/v1", name = opts.from_cronjob, namespace = r.namespace }
      if not cj then
        errors.raise { kind = "k8s", code = "NotFound", status = 404, message = string.format("cronjobs.batch %q not found", opts.from_cronjob) }
      end
      manifest = M.job_from_cronjob(cj, opts.name)
    else
      manifest = M.job_manifest(opts, r.namespace)
    end
    self:create(manifest, { dry_run = opts.dry_run })
  end
  if dry then
    audit.log("info", string.format("dry run: would wait for job %s/%s", r.namespace, r.name))
    return { name = r.name, namespace = r.namespace, dry_run = true }
  end
  if opts.wait == false then return { name = r.name, namespace = r.namespace } end
  local outcome = self:wait_job { name = r.name, namespace = r.namespace, follow = opts.follow, timeout = opts.timeout, check = opts.check }
  if opts.delete and outcome.status == "Complete" then
    self:delete({ kind = "Job", api_version = "batch/v1", name = r.name, namespace = r.namespace }, { propagation = "Background" })
  end
  return outcome
end

return M
