-- runbook.k8s._streams: the pod subresources that stream over WebSocket,
-- as kubectl exec and kubectl port-forward use them.
--
-- exec speaks the channel protocol v5.channel.k8s.io (v4 as a fallback):
-- every binary message starts with its channel byte, 0 stdin, 1 stdout,
-- 2 stderr, 3 the outcome (a Status: Success, or Failure with reason
-- NonZeroExitCode and the code in details.causes[reason=ExitCode]), and in
-- v5 only, 255 to close a stream (stdin's end). The connection is libcurl's
-- (TLS, client certificates, proxy) and the framing runbook's own
-- (src/ws.c).
local json = require "runbook._json"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local secret = require "runbook.secret"
local url = require "runbook.http.url"
local client = require "runbook.k8s._client"
local objects = require "runbook.k8s._objects"

local M = { methods = {} }
local Cluster = M.methods
local v = objects.value

local function usage(fmt, ...) error(string.format(fmt, ...), 3) end

-- The pod a call names: pod = name, or selector = a label selector whose
-- first Running pod (by name) is chosen, as kubectl exec does with a
-- resource/name.
function M.pick_pod(self, opts, what)
  local ns = opts.namespace or self.namespace
  if type(opts.pod) == "string" then return opts.pod, ns end
  if opts.selector == nil then usage("%s: pod or selector is required", what) end
  local items = self:list { kind = "Pod", api_version = "v1", namespace = ns, label_selector = opts.selector }
  local names = {}
  for _, p in ipairs(items) do
    if v(p.status and p.status.phase) == "Running" and not v(p.metadata.deletionTimestamp) then
      names[#names + 1] = p.metadata.name
    end
  end
  table.sort(names)
  if not names[1] then
    local sel = type(opts.selector) == "string" and opts.selector or json.encode(opts.selector)
    errors.raise { kind = "k8s", code = "NotFound", status = 404,
      message = string.format("%s: no running pod in namespace %q matches the selector %s", what, ns, sel) }
  end
  return names[1], ns
end

-- The WebSocket to a pod subresource, or a structured error raised.
function M.open(self, path, protocols, req, timeout)
  local c = self.client
  local server = c.server:gsub("/+$", "")
  local hostport, prefix = server:match("^https?://([^/]+)(.*)$")
  local auth = c:authorization(false)
  local curl = c:curl_for(true)
  local full = prefix .. path
  local ws, err = curl:websocket { url = server, path = full, host = hostport, protocols = protocols,
    authorization = auth, timeout = timeout }
  if not ws and err.details and err.details.status == 401 and select(2, c:authorization(false)) then
    ws, err = curl:websocket { url = server, path = full, host = hostport, protocols = protocols,
      authorization = c:authorization(true), timeout = timeout }
  end
  if ws then return ws end
  local st = err.details and err.details.status
  if st and st > 0 then
    error(c:status_error({ status = st, headers = { ["content-type"] = "application/json" }, body = err.details.body },
      req), 0)
  end
  if st then error(errors.new { kind = "k8s", code = "protocol", message = err.message, server = c.server }, 0) end
  error(c:transport_error(err, req), 0)
end

local function exit_code(status)
  if v(status.status) == "Success" then return 0 end
  if v(status.reason) == "NonZeroExitCode" then
    for _, cause in ipairs(v(status.details and status.details.causes) or {}) do
      if v(cause.reason) == "ExitCode" then return math.tointeger(tonumber(cause.message)) end
    end
  end
  return nil
end

--- Runs a command in a pod's container, like kubectl exec. opts:
--- namespace, pod (or selector), container, command (the argv; an element
--- may be a Secret, shown redacted), stdin (a
--- string or Secret, sent then closed), timeout (300 s), expect_code (an
--- exit code, or true for 0: anything else raises), dry_run.
--- Returns {code=, stdout=, stderr=}, redacted.
---@param opts {namespace:string|nil, pod:string|nil, selector:string|table|nil, container:string|nil, command:(string|runbook.Secret)[], stdin:string|runbook.Secret|nil, timeout:number|nil, expect_code:integer|boolean|nil, dry_run:boolean|nil}
---@return {code:integer, stdout:string, stderr:string, dry_run:boolean|nil}
function Cluster:exec(opts)
  if type(opts) ~= "table" then usage("exec: options table expected") end
  local argv = opts.command
  if type(argv) ~= "table" or #argv == 0 then usage("exec: command must be a non-empty list of strings") end
  for i, a in ipairs(argv) do
    if type(a) ~= "string" and not secret.is(a) then usage("exec: command[%d] must be a string or a secret, got %s", i, type(a)) end
  end
  if opts.stdin ~= nil and type(opts.stdin) ~= "string" and not secret.is(opts.stdin) then
    usage("exec: stdin must be a string or a secret")
  end
  local name, ns = M.pick_pod(self, opts, "exec")
  local shown = {}
  for i, a in ipairs(argv) do shown[i] = secret.is(a) and "[REDACTED]" or host.scrub(a) end
  local object = string.format("v1 Pod %s/%s", ns, name)
  local action = { kind = "k8s", verb = "exec", object = object, namespace = ns, name = name,
    container = opts.container, argv = shown, server = self.client.server }
  local summary = string.format("exec %s%s: %s", object, opts.container and (" -c " .. opts.container) or "",
    table.concat(shown, " "))
  if self:dry(opts) then
    action.dry_run, action.result, action.summary = true, "skipped", summary .. " (dry run)"
    audit.action(action)
    return { code = 0, stdout = "", stderr = "", dry_run = true }
  end
  local q = { "stdout=true", "stderr=true" }
  for _, a in ipairs(argv) do q[#q + 1] = "command=" .. url.encode(secret.is(a) and secret.reveal(a) or a) end
  if opts.container then q[#q + 1] = "container=" .. url.encode(opts.container) end
  if opts.stdin ~= nil then q[#q + 1] = "stdin=true" end
  local path = client.path({ plural = "pods", namespaced = true, api_version = "v1" }, ns, name, "exec")
    .. "?" .. table.concat(q, "&")
  local req = { method = "GET", path = path, verb = "create", resource = "pods", subresource = "exec",
    namespace = ns, name = name }
  local timeout = opts.timeout or 300
  local deadline = host.monotime() + timeout
  local ws <close> = M.open(self, path, "v5.channel.k8s.io, v4.channel.k8s.io", req, timeout)
  local v5 = ws:protocol() == "v5.channel.k8s.io"
  local function check(ok, why)
    if ok then return end
    errors.raise { kind = "k8s", code = why == "timeout" and "Timeout" or "StreamError",
      message = string.format("exec in pod %s/%s: %s", ns, name, why == "timeout"
        and string.format("no outcome within %gs", timeout) or why), server = self.client.server }
  end
  if opts.stdin ~= nil then
    local data = secret.is(opts.stdin) and secret.reveal(opts.stdin) or opts.stdin
    local chunk = 32768
    for i = 1, #data, chunk do check(ws:send("\0" .. data:sub(i, i + chunk - 1), "binary", timeout)) end
    if v5 then check(ws:send("\255\0", "binary", timeout)) end
  end
  local out, errs, status = {}, {}, nil
  while true do
    local left = deadline - host.monotime()
    if left <= 0 then check(nil, "timeout") end
    -- in slices, so Ctrl-C and the step's time limit stop a long command
    local kind, data = ws:recv(math.min(left, 0.5))
    if kind == nil and data == "timeout" then
      host.check_interrupt()
      goto continue
    end
    if kind == nil then
      if status then break end -- closed without a close frame, after the outcome
      check(nil, data)
    end
    if kind == "close" then break end
    local ch, payload = data:byte(1), data:sub(2)
    if ch == 1 then out[#out + 1] = payload
    elseif ch == 2 then errs[#errs + 1] = payload
    elseif ch == 3 and payload ~= "" then status = json.decode(payload) end
    ::continue::
  end
  if type(status) ~= "table" then
    errors.raise { kind = "k8s", code = "StreamError", server = self.client.server,
      message = string.format("exec in pod %s/%s: the stream ended without an outcome", ns, name) }
  end
  local code = exit_code(status)
  if code == nil then
    errors.raise { kind = "k8s", code = v(status.reason) or "InternalError", server = self.client.server,
      message = string.format("exec in pod %s/%s: %s", ns, name, host.scrub(tostring(v(status.message) or "failed"))),
      details = v(status.details) }
  end
  local res = { code = code, stdout = host.scrub(table.concat(out)), stderr = host.scrub(table.concat(errs)) }
  action.code, action.result, action.summary = code, code == 0 and "ok" or "exit " .. code, summary .. ": exit " .. code
  audit.action(action)
  local want = opts.expect_code
  if want == true then want = 0 end
  if want ~= nil and want ~= false and code ~= want then
    errors.raise { kind = "k8s", code = "NonZeroExitCode", status = code, server = self.client.server,
      message = string.format("exec in pod %s/%s: %s exited with %d, expected %d%s", ns, name, shown[1], code, want,
        res.stderr ~= "" and (": " .. res.stderr:sub(-500)) or ""),
      details = { code = code, stdout = res.stdout, stderr = res.stderr } }
  end
  return res
end

-- A Service's port to the chosen pod's port: targetPort as a number, a
-- named container port, or the same number when targetPort is absent.
local function service_target(svc, pod, port)
  for _, sp in ipairs(v(svc.spec and svc.spec.ports) or {}) do
    if v(sp.port) == port or v(sp.name) == port then
      local tp = v(sp.targetPort)
      if tp == nil then return v(sp.port) end
      if math.type(tp) == "integer" then return tp end
      for _, c in ipairs(v(pod.spec and pod.spec.containers) or {}) do
        for _, cp in ipairs(v(c.ports) or {}) do
          if v(cp.name) == tp then return v(cp.containerPort) end
        end
      end
      errors.raise { kind = "k8s", code = "NotFound", message = string.format(
        "port_forward: pod %s has no container port named %q (targetPort of service %s)", pod.metadata.name, tp,
        svc.metadata.name) }
    end
  end
  errors.raise { kind = "k8s", code = "NotFound", message = string.format(
    "port_forward: service %s/%s has no port %s", svc.metadata.namespace, svc.metadata.name, tostring(port)) }
end

--- Forwards a loopback port to a pod's port for the length of fn, like
--- kubectl port-forward. opts: namespace, pod (or service: one of its ready
--- pods through its selector), port (the pod's, or the Service's), local_port
--- (0: a free one), timeout (per connection's handshake). fn(local_port)
--- runs while C threads carry each accepted connection over its own
--- WebSocket; its results are returned, and everything is closed when it
--- returns or raises.
---@param opts {namespace:string|nil, pod:string|nil, service:string|nil, port:integer|string, local_port:integer|nil, timeout:number|nil}
---@param fn fun(local_port:integer):any
---@return any ...
function Cluster:port_forward(opts, fn)
  if type(opts) ~= "table" then usage("port_forward: options table expected") end
  if type(fn) ~= "function" then usage("port_forward: a function to run while forwarding is required") end
  if opts.port == nil then usage("port_forward: port is required") end
  local ns = opts.namespace or self.namespace
  local name, port = opts.pod, opts.port
  local pod
  if opts.service then
    local svc = self:get { kind = "Service", api_version = "v1", name = opts.service, namespace = ns }
    if not svc then
      errors.raise { kind = "k8s", code = "NotFound", status = 404, message = string.format("services %q not found", opts.service) }
    end
    local sel = v(svc.spec and svc.spec.selector)
    if type(sel) ~= "table" or next(sel) == nil then
      errors.raise { kind = "k8s", code = "BadRequest", message = string.format(
        "port_forward: service %s/%s has no selector, so no pod to forward to", ns, opts.service) }
    end
    name = M.pick_pod(self, { namespace = ns, selector = sel }, "port_forward")
    pod = self:get { kind = "Pod", api_version = "v1", name = name, namespace = ns }
    port = service_target(svc, pod, port)
  elseif type(name) ~= "string" then
    usage("port_forward: pod or service is required")
  end
  if math.type(port) ~= "integer" then
    pod = pod or self:get { kind = "Pod", api_version = "v1", name = name, namespace = ns }
    port = pod and service_target({ metadata = { name = "-", namespace = ns }, spec = { ports = { { port = port, targetPort = port } } } }, pod, port)
  end
  local path = client.path({ plural = "pods", namespaced = true, api_version = "v1" }, ns, name, "portforward")
    .. "?ports=" .. port
  -- the pod is checked first, so a missing or stopped one raises here
  -- rather than in the threads, where only fwd:status() would tell
  pod = pod or self:get { kind = "Pod", api_version = "v1", name = name, namespace = ns }
  if not pod then
    errors.raise { kind = "k8s", code = "NotFound", status = 404, message = string.format("pods %q not found", name),
      request = "GET " .. path, server = self.client.server }
  end
  local phase = v(pod.status and pod.status.phase) or "Pending"
  if phase ~= "Running" then
    errors.raise { kind = "k8s", code = "BadRequest", status = 400, server = self.client.server, message = string.format(
      "port_forward: pod %s/%s is not running (phase %s)", ns, name, phase) }
  end
  local c = self.client
  local server = c.server:gsub("/+$", "")
  local hostport, prefix = server:match("^https?://([^/]+)(.*)$")
  local fwd <close> = c:curl_for(true):port_forward { url = server, path = prefix .. path, host = hostport,
    authorization = c:authorization(false), local_port = opts.local_port or 0, timeout = opts.timeout or 30 }
  audit.action { kind = "k8s", verb = "port-forward", object = string.format("v1 Pod %s/%s", ns, name),
    namespace = ns, name = name, port = port, local_port = fwd:port(), server = c.server,
    summary = string.format("port-forward 127.0.0.1:%d -> pod %s/%s:%d", fwd:port(), ns, name, port) }
  -- fwd is closed (its threads joined) on the way out, even when fn raises;
  -- a connection that failed on the pod's side is reported in the run log
  local function finish(...)
    local _, last = fwd:status()
    if last then audit.log("warn", string.format("port-forward to pod %s/%s:%d: %s", ns, name, port, last)) end
    return ...
  end
  return finish(fn(fwd:port()))
end

return M
