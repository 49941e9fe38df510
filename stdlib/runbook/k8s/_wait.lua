-- runbook.k8s._wait: waits driven by watch, as kubectl's: list by name, then
-- watch from the list's resourceVersion (with bookmarks), watch again when
-- the server ends the stream, list again on 410 Expired. Each event is
-- judged the moment it arrives, so a wait ends as soon as the object is
-- ready, or fails, and never polls. On timeout the error says what was
-- last seen. Also rollout status, rollout restart and scale.
local json = require "runbook._json"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local client = require "runbook.k8s._client"
local objects = require "runbook.k8s._objects"
local rules = require "runbook.k8s._rules"

local M = {}
---@class runbook.k8s.Cluster
local Cluster = {}
M.methods = Cluster

local v = objects.value
local display = objects.display

local function usage(fmt, ...) error(string.format(fmt, ...), 3) end

-- Splits a chunked watch body into events; keeps partial lines between chunks.
local function line_reader(on_line)
  local buf = ""
  return function(chunk)
    buf = buf .. chunk
    local start = 1
    while true do
      local nl = buf:find("\n", start, true)
      if not nl then break end
      local line = buf:sub(start, nl - 1)
      start = nl + 1
      if line:find("%S") and on_line(line) == false then
        buf = buf:sub(start)
        return false
      end
    end
    buf = buf:sub(start)
    return true
  end, function() return buf end
end

--- Watches one object (or a selection) until judge says "done" or "fail".
--- judge(obj|nil, event_type) -> "done"|"fail"|"wait", message[, code].
--- opts: timeout (seconds, default 300), label_selector, on_event,
--- watch_timeout (the longest one watch request lasts before the server ends
--- it and it is made again from the last version seen; 300).
--- Returns the last object and the judge's message; raises on failure and timeout.
function Cluster:watch_until(r, judge, opts)
  opts = opts or {}
  local timeout = opts.timeout or 300
  local deadline = host.monotime() + timeout
  local what = opts.what or display(r)
  local fsel = r.name and ("metadata.name=" .. r.name) or nil
  local last_obj, last_msg, rv = nil, nil, nil
  local relist, backoff = true, 0.1
  local events = 0

  local function verdict(obj, etype)
    last_obj = obj
    local state, msg, code = judge(obj, etype)
    if msg and msg ~= last_msg then
      last_msg = msg
      if state == "wait" then audit.log("debug", what .. ": " .. msg) end
    end
    return state, msg, code
  end

  local function finish(state, msg, code)
    if state == "done" then return last_obj, msg end
    errors.raise { kind = "k8s", code = code or "WaitFailed", message = string.format("%s: %s", what, msg),
      details = { last_seen = rules.summary(last_obj) }, object = last_obj }
  end

  while true do
    if relist then
      local items, lm = self:list { kind = r.kind, api_version = r.api_version, namespace = r.namespace,
        field_selector = fsel, label_selector = opts.label_selector }
      local state, msg, code
      if opts.label_selector then
        opts.seen = {}
        for _, it in ipairs(items) do opts.seen[it.metadata.name] = it end
        state, msg, code = verdict(items, "LIST")
      else
        state, msg, code = verdict(items[1], "LIST")
      end
      if state ~= "wait" then return finish(state, msg, code) end
      rv = lm.resource_version
      relist = false
    end
    local remaining = deadline - host.monotime()
    if remaining <= 0 then break end
    local outcome, expired, status_body
    local on_line = function(line)
      local ev = json.decode(line)
      if type(ev) ~= "table" then return true end
      if ev.type == nil and ev.kind == "Status" then status_body = line return true end
      local obj = v(ev.object)
      if ev.type == "BOOKMARK" then
        rv = obj and obj.metadata and v(obj.metadata.resourceVersion) or rv
        return true
      elseif ev.type == "ERROR" then
        if type(obj) == "table" and (obj.code == 410 or obj.reason == "Expired" or obj.reason == "Gone") then
          expired = true
          return false
        end
        audit.log("warn", string.format("%s: watch error: %s", what, tostring(obj and obj.message)))
        return true
      end
      if type(obj) ~= "table" then return true end
      events = events + 1
      rv = obj.metadata and v(obj.metadata.resourceVersion) or rv
      objects.decode_object(obj)
      if opts.on_event then opts.on_event(ev.type, obj) end
      local state, msg, code
      if opts.label_selector then
        opts.seen[obj.metadata.name] = ev.type ~= "DELETED" and obj or nil
        local list = {}
        for _, o in pairs(opts.seen) do list[#list + 1] = o end
        state, msg, code = verdict(list, ev.type)
      else
        state, msg, code = verdict(ev.type ~= "DELETED" and obj or nil, ev.type)
      end
      if state ~= "wait" then
        outcome = { state, msg, code }
        return false
      end
      return true
    end
    local feed = line_reader(on_line)
    local function restart() feed, status_body = line_reader(on_line), nil end
    local q = { watch = "true", resourceVersion = rv, allowWatchBookmarks = "true", fieldSelector = fsel,
      labelSelector = opts.label_selector and objects.selector(opts.label_selector) or nil,
      timeoutSeconds = math.max(1, math.min(math.ceil(remaining) + 1, opts.watch_timeout or 300)) }
    local res, err = self.client:try {
      method = "GET", path = client.path(r.info, r.namespace), query = q,
      on_data = function(chunk) return feed(chunk) end, on_retry = restart,
      timeout = remaining, policy = "none", raw = true, verb = "watch", resource = r.info.plural, namespace = r.namespace,
    }
    if outcome then return finish(table.unpack(outcome)) end
    if expired then
      relist = true
    elseif res and res.status == 410 then
      relist = true
    elseif res and res.status ~= 200 then
      local e = self.client:status_error({ status = res.status, headers = res.headers, body = status_body }, {
        method = "GET", path = client.path(r.info, r.namespace), verb = "watch", resource = r.info.plural, namespace = r.namespace })
      if res.status ~= 429 and res.status < 500 then error(e, 0) end
      local delay = require("runbook.http").retry_after(res.headers["retry-after"]) or backoff
      audit.log("warn", string.format("%s: watch answered %d; watching again in %g s", what, res.status, delay))
      host.sleep(math.min(delay, math.max(0, deadline - host.monotime())))
      backoff = math.min(backoff * 2, 2)
    elseif err then
      if err.kind == "interrupted" or err.kind == "timeout" then error(err, 0) end
      if host.monotime() >= deadline - 0.01 then break end
      if err.code == "tls" then error(err, 0) end
      audit.log("warn", string.format("%s: watch stream broke (%s); watching again", what, err.code))
      host.sleep(math.min(backoff, math.max(0, deadline - host.monotime())))
      backoff = math.min(backoff * 2, 2)
    else
      backoff = 0.1 -- the server ended the stream cleanly: watch again from rv
    end
  end
  errors.raise {
    kind = "k8s", code = "WaitTimeout",
    message = string.format("timed out after %g s waiting for %s; last seen: %s", timeout, what,
      opts.label_selector and (last_msg or "nothing")
        or ((last_msg and (last_msg .. " ") or "") .. "(" .. rules.summary(last_obj) .. ")")),
    details = { last_seen = opts.label_selector and last_msg or rules.summary(last_obj), events = events }, object = last_obj,
  }
end

-- Dry runs change nothing, so waiting for their effect would wait forever:
-- look once and say what would be waited for.
local function dry_wait(self, r, judge, what)
  local obj = r.name and self:get(r) or nil
  local _, msg = judge(obj, "LIST")
  audit.log("info", string.format("dry run: would wait for %s (now: %s)", what, msg or rules.summary(obj)))
  return obj, msg
end

--- Waits until an object meets a condition, a jsonpath value, a match
--- table, a predicate, or is deleted. Ends at once on a failure (a Job's
--- Failed condition, ProgressDeadlineExceeded, a failed Pod).
---@param opts {kind:string, name:string|nil, namespace:string|nil, api_version:string|nil, label_selector:string|table|nil, condition:string|nil, status:string|nil, jsonpath:string|nil, value:any, match:table|nil, predicate:(fun(obj:table):boolean, string?)|nil, fail:(fun(obj:table):string?)|nil, deleted:boolean|nil, timeout:number|nil, watch_timeout:number|nil}
---@return table|table[]|nil object
function Cluster:wait(opts)
  if type(opts) ~= "table" then usage("wait: options table expected") end
  local r = self:ref(opts, opts.label_selector == nil)
  local want, what_for
  local cond = opts.condition
  if cond then
    want = opts.status or "True"
    what_for = string.format("condition %s=%s", cond, want)
  elseif opts.jsonpath then
    what_for = string.format("jsonpath %s%s", opts.jsonpath, opts.value ~= nil and ("=" .. tostring(opts.value)) or "")
  elseif opts.match then
    what_for = "a match of " .. json.encode(opts.match, { secrets = "redact" })
  elseif opts.predicate then
    if type(opts.predicate) ~= "function" then usage("wait: predicate must be a function") end
    what_for = "the predicate"
  elseif opts.deleted then
    what_for = "deletion"
  else
    usage("wait: give condition=, jsonpath=, match=, predicate= or deleted=true")
  end
  local what = string.format("%s (%s)", display(r), what_for)
  local ctype = cond and cond:lower() or nil

  local function judge_one(obj)
    if opts.deleted then
      if obj == nil then return "done", "deleted" end
      return "wait", "still exists" .. (v(obj.metadata.deletionTimestamp) and " (terminating)" or "")
    end
    if obj == nil then return "wait", "the object does not exist (yet)" end
    local reason, code = rules.failure(obj, ctype)
    if not reason and opts.fail then reason = opts.fail(obj) end
    if reason then return "fail", reason, code or "WaitFailed" end
    if cond then
      if rules.condition_met(obj, cond, want) then return "done", what_for .. " is met" end
      local c = rules.condition(obj, cond)
      return "wait", c and string.format("%s=%s%s", c.type, tostring(c.status), v(c.reason) and (" (" .. c.reason .. ")") or "")
        or ("no " .. cond .. " condition yet")
    elseif opts.jsonpath then
      local ok, msg = rules.jsonpath_met(obj, opts.jsonpath, opts.value)
      if ok == nil then return "fail", msg, "BadJSONPath" end
      return ok and "done" or "wait", msg or (opts.jsonpath .. " matches")
    elseif opts.match then
      return objects.subset(opts.match, obj) and "done" or "wait", objects.subset(opts.match, obj) and "matched" or rules.summary(obj)
    else
      local ok, note = opts.predicate(obj)
      if ok then return "done", "the predicate holds" end
      return "wait", note and tostring(note) or rules.summary(obj)
    end
  end

  local judge = judge_one
  if opts.label_selector then
    -- every selected object must pass (and at least one must exist)
    judge = function(list)
      if #list == 0 then return opts.deleted and "done" or "wait", "no object matches " .. objects.selector(opts.label_selector) end
      local waiting = 0
      for _, o in ipairs(list) do
        local state, msg, code = judge_one(o)
        if state == "fail" then return state, msg, code end
        if state == "wait" then waiting = waiting + 1 end
      end
      if waiting == 0 then return "done", string.format("all %d objects are ready", #list) end
      return "wait", string.format("%d of %d objects are not there yet", waiting, #list)
    end
    what = string.format("%s %s matching %s (%s)", r.api_version, r.kind, objects.selector(opts.label_selector), what_for)
  end
  if self:dry(opts) then return dry_wait(self, r, judge, what) end
  return self:watch_until(r, judge, { timeout = opts.timeout, what = what, label_selector = opts.label_selector,
    watch_timeout = opts.watch_timeout })
end

--- kubectl rollout status for a Deployment, StatefulSet or DaemonSet.
--- opts: kind, name, namespace, timeout (300), revision.
--- Returns kubectl's closing message.
---@param opts {kind:"Deployment"|"StatefulSet"|"DaemonSet", name:string, namespace:string|nil, timeout:number|nil, revision:integer|nil, watch_timeout:number|nil}
---@return string message
function Cluster:rollout_status(opts)
  local r = self:ref(opts, true)
  local rule = rules.ROLLOUT[r.kind]
  if not rule then usage("rollout_status: %s is not a Deployment, StatefulSet or DaemonSet", r.kind) end
  local judge = function(obj)
    if obj == nil then return "wait", string.format("%s %q does not exist (yet)", r.kind:lower(), r.name) end
    return rule(obj, opts)
  end
  local what = display(r) .. " rollout"
  if self:dry(opts) then
    local _, msg = dry_wait(self, r, judge, what)
    return msg
  end
  local _, msg = self:watch_until(r, judge, { timeout = opts.timeout, what = what, watch_timeout = opts.watch_timeout })
  audit.log("info", msg)
  return msg
end

local RESTARTABLE = { Deployment = true, StatefulSet = true, DaemonSet = true }

--- kubectl rollout restart: a strategic merge patch of the pod template's
--- kubectl.kubernetes.io/restartedAt annotation (field manager
--- "runbook-rollout"). opts.wait = true then waits for the rollout.
---@param opts {kind:"Deployment"|"StatefulSet"|"DaemonSet", name:string, namespace:string|nil, wait:boolean|nil, timeout:number|nil, field_manager:string|nil}
---@return table object
function Cluster:rollout_restart(opts)
  local r = self:ref(opts, true)
  if not RESTARTABLE[r.kind] then usage("rollout_restart: %s cannot be restarted (Deployment, StatefulSet or DaemonSet)", r.kind) end
  local obj = self:get(r)
  if not obj then
    errors.raise { kind = "k8s", code = "NotFound", status = 404, message = string.format("%s not found", display(r)) }
  end
  if r.kind == "Deployment" and v(obj.spec.paused) then
    errors.raise { kind = "k8s", code = "Paused", message = string.format("%s is paused; resume it before restarting", display(r)) }
  end
  local ann = (((obj.spec.template or {}).metadata or {}).annotations) or {}
  local stamp = os.date("%Y-%m-%dT%H:%M:%S%z"):gsub("(%d%d)(%d%d)$", "%1:%2")
  if v(ann["kubectl.kubernetes.io/restartedAt"]) == stamp then
    -- a second restart within the same second would be an empty patch
    host.sleep(1 - (host.now() % 1) + 0.01)
    stamp = os.date("%Y-%m-%dT%H:%M:%S%z"):gsub("(%d%d)(%d%d)$", "%1:%2")
  end
  local patch = { spec = { template = { metadata = { annotations = { ["kubectl.kubernetes.io/restartedAt"] = stamp } } } } }
  local out = self:patch(r, patch, { type = "strategic", field_manager = opts.field_manager or "runbook-rollout",
    dry_run = opts.dry_run, result = "restarted", verb = "restart" })
  if opts.wait then self:rollout_status { kind = r.kind, api_version = r.api_version, name = r.name, namespace = r.namespace, timeout = opts.timeout } end
  return out
end

--- Sets the replicas of a Deployment, StatefulSet, ReplicaSet (anything
--- with a scale subresource). opts: kind, name, namespace, replicas, wait.
--- Returns "scaled" or "unchanged".
---@param opts {kind:string, name:string, namespace:string|nil, replicas:integer, wait:boolean|nil, timeout:number|nil}
---@return "scaled"|"unchanged" result
function Cluster:scale(opts)
  local r = self:ref(opts, true)
  local n = opts.replicas
  if math.type(n) ~= "integer" or n < 0 then usage("scale: replicas must be an integer >= 0") end
  local has_scale = r.info.subresources and r.info.subresources.scale
  local path = client.path(r.info, r.namespace, r.name, has_scale and "scale" or nil)
  local cur = self.client:request { method = "GET", path = path, verb = "get", resource = r.info.plural,
    subresource = has_scale and "scale" or nil, namespace = r.namespace, name = r.name }.json
  local have = v(((cur or {}).spec or {}).replicas)
  local result
  if have == n then
    result = "unchanged"
    self:record("scale", r, 200, result, self:dry(opts), { replicas = n })
  else
    self:patch(r, { spec = { replicas = n } }, { type = "merge", subresource = has_scale and "scale" or nil,
      dry_run = opts.dry_run, result = "scaled", verb = "scale", field_manager = opts.field_manager, record = { replicas = n } })
    result = "scaled"
  end
  if opts.wait and RESTARTABLE[r.kind] then
    self:rollout_status { kind = r.kind, api_version = r.api_version, name = r.name, namespace = r.namespace, timeout = opts.timeout }
  end
  return result
end

return M
