-- runbook.k8s._rules: the readiness rules, as pure functions over objects.
-- kubectl's rollout status (pkg/polymorphichelpers/rollout_status.go) for
-- Deployments, StatefulSets and DaemonSets, word for word; kubectl wait's
-- condition and jsonpath checks (pkg/cmd/wait); and the failures that end
-- a wait at once (a Job's Failed condition, a Deployment past its progress
-- deadline, a failed Pod).
--
-- Each rule returns a state and a message: "done", "wait" or "fail".
local json = require "runbook._json"

local M = {}

local function v(x)
  if x == nil or json.is_null(x) then return nil end
  return x
end

local function num(x) return tonumber(v(x)) or 0 end

local function status_of(obj) return type(v(obj.status)) == "table" and obj.status or {} end
local function spec_of(obj) return type(v(obj.spec)) == "table" and obj.spec or {} end
local function meta_of(obj) return type(v(obj.metadata)) == "table" and obj.metadata or {} end

--- The condition of that type (case-insensitive), or nil.
function M.condition(obj, ctype)
  local want = ctype:lower()
  for _, c in ipairs(v(status_of(obj).conditions) or {}) do
    if type(c) == "table" and type(c.type) == "string" and c.type:lower() == want then return c end
  end
  return nil
end

-- ---------------------------------------------------------------------------
-- rollout status

local REVISION = "deployment.kubernetes.io/revision"

--- Deployment rollout (opts.revision: the revision that must be running).
---@param d table
---@param opts {revision:integer|nil}|nil
---@return "done"|"wait"|"fail" state
---@return string message
function M.deployment(d, opts)
  local name, st, spec, m = meta_of(d).name, status_of(d), spec_of(d), meta_of(d)
  local want = opts and opts.revision
  if want and want > 0 then
    local ann = v(m.annotations) or {}
    local have = tonumber(v(ann[REVISION]) or "")
    if not have then
      return "fail", string.format("cannot get the revision of deployment %q", name)
    end
    if have ~= want then
      return "fail", string.format("desired revision (%d) is different from the running revision (%d)", want, have)
    end
  end
  if num(m.generation) <= num(st.observedGeneration) then
    local cond = M.condition(d, "Progressing")
    if cond and cond.reason == "ProgressDeadlineExceeded" then
      return "fail", string.format("deployment %q exceeded its progress deadline", name), "ProgressDeadlineExceeded"
    end
    local replicas = v(spec.replicas)
    if replicas ~= nil and num(st.updatedReplicas) < replicas then
      return "wait", string.format("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...",
        name, num(st.updatedReplicas), replicas)
    end
    if num(st.replicas) > num(st.updatedReplicas) then
      return "wait", string.format("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...",
        name, num(st.replicas) - num(st.updatedReplicas))
    end
    if num(st.availableReplicas) < num(st.updatedReplicas) then
      return "wait", string.format("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...",
        name, num(st.availableReplicas), num(st.updatedReplicas))
    end
    return "done", string.format("deployment %q successfully rolled out", name)
  end
  return "wait", "Waiting for deployment spec update to be observed..."
end

--- StatefulSet rollout.
---@param s table
---@return "done"|"wait"|"fail" state
---@return string message
function M.statefulset(s)
  local st, spec, m = status_of(s), spec_of(s), meta_of(s)
  local strategy = v(spec.updateStrategy) or {}
  if v(strategy.type) ~= "RollingUpdate" then
    return "fail", "rollout status is only available for RollingUpdate strategy type", "UnsupportedStrategy"
  end
  if num(st.observedGeneration) == 0 or num(m.generation) > num(st.observedGeneration) then
    return "wait", "Waiting for statefulset spec update to be observed..."
  end
  local replicas = v(spec.replicas)
  if replicas ~= nil and num(st.readyReplicas) < replicas then
    return "wait", string.format("Waiting for %d pods to be ready...", replicas - num(st.readyReplicas))
  end
  local ru = v(strategy.rollingUpdate)
  if ru ~= nil then
    local partition = v(ru.partition)
    if replicas ~= nil and partition ~= nil then
      if num(st.updatedReplicas) < replicas - partition then
        return "wait", string.format("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...",
          num(st.updatedReplicas), replicas - partition)
      end
    end
    return "done", string.format("partitioned roll out complete: %d new pods have been updated...", num(st.updatedReplicas))
  end
  if v(st.updateRevision) ~= v(st.currentRevision) then
    return "wait", string.format("waiting for statefulset rolling update to complete %d pods at revision %s...",
      num(st.updatedReplicas), tostring(v(st.updateRevision)))
  end
  return "done", string.format("statefulset rolling update complete %d pods at revision %s...",
    num(st.currentReplicas), tostring(v(st.currentRevision)))
end

--- DaemonSet rollout.
---@param d table
---@return "done"|"wait"|"fail" state
---@return string message
function M.daemonset(d)
  local st, spec, m = status_of(d), spec_of(d), meta_of(d)
  local strategy = v(spec.updateStrategy) or {}
  if v(strategy.type) ~= "RollingUpdate" then
    return "fail", "rollout status is only available for RollingUpdate strategy type", "UnsupportedStrategy"
  end
  if num(m.generation) <= num(st.observedGeneration) then
    if num(st.updatedNumberScheduled) < num(st.desiredNumberScheduled) then
      return "wait", string.format("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...",
        m.name, num(st.updatedNumberScheduled), num(st.desiredNumberScheduled))
    end
    if num(st.numberAvailable) < num(st.desiredNumberScheduled) then
      return "wait", string.format("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...",
        m.name, num(st.numberAvailable), num(st.desiredNumberScheduled))
    end
    return "done", string.format("daemon set %q successfully rolled out", m.name)
  end
  return "wait", "Waiting for daemon set spec update to be observed..."
end

M.ROLLOUT = { Deployment = M.deployment, StatefulSet = M.statefulset, DaemonSet = M.daemonset }

-- ---------------------------------------------------------------------------
-- kubectl wait

--- --for=condition=TYPE[=STATUS]: met when the condition has that status
--- (case-insensitive) and is not about an older generation.
---@param obj table
---@param ctype string
---@param want string|nil  default "True"
---@return boolean
function M.condition_met(obj, ctype, want)
  want = (want or "True"):lower()
  local c = M.condition(obj, ctype)
  if not c or type(c.status) ~= "string" then return false end
  local gen = v(meta_of(obj).generation)
  if gen ~= nil then
    local observed = v(c.observedGeneration) or v(status_of(obj).observedGeneration)
    if observed ~= nil and observed < gen then return false end
  end
  return c.status:lower() == want
end

--- Evaluates a simple JSONPath ({.a.b[0].c} or .a.b) over obj: the value, or nil.
function M.jsonpath(obj, path)
  local p = path:match("^%s*{(.*)}%s*$") or path
  p = p:gsub("^%s+", ""):gsub("%s+$", "")
  if p:sub(1, 1) ~= "." then error("jsonpath must start with '.' (like {.status.phase}), got " .. path, 3) end
  local cur = obj
  for part in p:gmatch("[^%.]+") do
    local name, rest = part:match("^([^%[]*)(.*)$")
    if name ~= "" then
      if type(cur) ~= "table" then return nil end
      cur = v(cur[name])
    end
    for idx in rest:gmatch("%[(%d+)%]") do
      if type(cur) ~= "table" then return nil end
      cur = v(cur[tonumber(idx) + 1])
    end
  end
  return cur
end

--- --for=jsonpath=PATH=VALUE: the path resolves to one scalar equal to value
--- (compared as trimmed text); without value, the path exists.
---@param obj table
---@param path string
---@param value any
---@return boolean|nil met  nil when the path gives a map or a list
---@return string|nil note
function M.jsonpath_met(obj, path, value)
  local got = M.jsonpath(obj, path)
  if got == nil then return false, "the path " .. path .. " does not exist" end
  if type(got) == "table" then
    return nil, string.format("jsonpath %s gives a map or a list, not a value", path)
  end
  if value == nil then return true end
  local s = tostring(got):gsub("^%s+", ""):gsub("%s+$", "")
  return s == tostring(value):gsub("^%s+", ""):gsub("%s+$", ""), string.format("%s is %s", path, s)
end

-- ---------------------------------------------------------------------------
-- failures that end a wait at once

--- A reason the object will not reach what is waited for, or nil.
--- waiting_for: the condition type (lowercase) being waited for, if any.
---@param obj table
---@param waiting_for string|nil
---@return string|nil reason
---@return string|nil code
function M.failure(obj, waiting_for)
  local kind = obj.kind
  local m = meta_of(obj)
  if kind == "Job" then
    for _, t in ipairs { "Failed", "FailureTarget" } do
      local c = M.condition(obj, t)
      if c and c.status == "True" and waiting_for ~= "failed" and waiting_for ~= "failuretarget" then
        return string.format("job %q failed: %s%s", m.name, tostring(v(c.reason) or t),
          v(c.message) and (": " .. c.message) or ""), v(c.reason) or "JobFailed"
      end
    end
    if waiting_for == "failed" then
      local c = M.condition(obj, "Complete")
      if c and c.status == "True" then return string.format("job %q completed instead of failing", m.name), "JobComplete" end
    end
  elseif kind == "Deployment" then
    local c = M.condition(obj, "Progressing")
    if c and c.reason == "ProgressDeadlineExceeded" and c.status ~= "True" then
      return string.format("deployment %q exceeded its progress deadline%s", m.name,
        v(c.message) and (": " .. c.message) or ""), "ProgressDeadlineExceeded"
    end
  elseif kind == "Pod" then
    local phase = v(status_of(obj).phase)
    if phase == "Failed" and waiting_for ~= nil then
      return string.format("pod %q failed%s", m.name, v(status_of(obj).reason) and (": " .. obj.status.reason) or ""), "PodFailed"
    end
    if phase == "Succeeded" and (waiting_for == "ready" or waiting_for == "containersready") then
      return string.format("pod %q has completed (Succeeded) and will never be Ready", m.name), "PodCompleted"
    end
  end
  return nil
end

--- What an object looks like now, in one line (for progress and timeouts).
---@param obj table|nil
---@return string
function M.summary(obj)
  if obj == nil then return "the object does not exist" end
  local st, m, parts = status_of(obj), meta_of(obj), {}
  if v(m.generation) then
    parts[#parts + 1] = string.format("generation %s, observedGeneration %s", tostring(m.generation), tostring(v(st.observedGeneration) or "none"))
  end
  if v(st.phase) then parts[#parts + 1] = "phase " .. tostring(st.phase) end
  local counts = {}
  for _, f in ipairs { "replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "active", "succeeded", "failed" } do
    if v(st[f]) ~= nil then counts[#counts + 1] = f .. " " .. tostring(st[f]) end
  end
  if #counts > 0 then parts[#parts + 1] = table.concat(counts, ", ") end
  local conds = {}
  for _, c in ipairs(v(st.conditions) or {}) do
    if type(c) == "table" then
      conds[#conds + 1] = string.format("%s=%s%s", tostring(c.type), tostring(c.status), v(c.reason) and (" (" .. c.reason .. ")") or "")
    end
  end
  if #conds > 0 then parts[#parts + 1] = "conditions " .. table.concat(conds, ", ") end
  if #parts == 0 then return "no status yet" end
  return table.concat(parts, "; ")
end

return M
