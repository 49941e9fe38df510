-- The fake Kubernetes API server for k8s specs: certificates from
-- tests/k8s/gen_certs.sh, tests/k8s/fake_apiserver.py on a free loopback
-- port (it prints READY <port>), a kubeconfig in a temporary folder, and
-- its control API (/_fake/...) over the same HTTPS port.
--
--   local k8sfake = require "k8sfake"
--   local fake = k8sfake.start()            -- or start{ controller_delay = 0.05, args = {...} }
--   fake.server, fake.kubeconfig, fake.dir, fake.ca_file, fake.token
--   fake:control("POST", "/_fake/faults", { fail = { code = 500 } })
--   fake:requests()                         -- the request log (list of entries)
--   fake:await("GET", "deployments$", 2)    -- waits for requests to appear in it
--   fake:reset()                            -- store, faults and log back to the start
--   fake:stop()
local proc = require "runbook._proc"
local curl = require "runbook._curl"
local json = require "runbook._json"
local rbtest = require "rbtest"
local host = require "runbook._host"

local M = {}

M.TOKEN = "runbook-test-token-0123456789abcdef"
M.OTHER_TOKEN = "limited-user-token-0123456789abcdef"

--- The folder holding fake_apiserver.py and gen_certs.sh.
function M.fake_dir()
  return os.getenv("RUNBOOK_FAKE_K8S_DIR") or (rbtest.source_dir .. "/tests/k8s")
end

local Fake = {}
Fake.__index = Fake

local function run(argv)
  local p = assert(proc.spawn { argv = argv })
  local r = p:communicate { timeout = 60 }
  if r.code ~= 0 then error(table.concat(argv, " ") .. " failed: " .. r.stderr, 2) end
  return r
end


--- Writes a kubeconfig. o: path (default DIR/kubeconfig), server, user =
--- "token" (default) | "cert" | "none" | a table (the users[].user body,
--- written as JSON), cluster (extra fields of the cluster body as a table),
--- context name ("fake"), namespace, ca ("data" default | "file" | "none" | "other").
function Fake:write_kubeconfig(o)
  o = o or {}
  local path = o.path or (self.dir .. "/kubeconfig")
  local cluster = { server = o.server or self.server }
  local ca = o.ca or "data"
  if ca == "data" then
    cluster["certificate-authority-data"] = require("runbook._crypto").base64_encode(rbtest.read(self.ca_file))
  elseif ca == "file" then
    cluster["certificate-authority"] = self.ca_file
  elseif ca == "other" then
    cluster["certificate-authority"] = self.dir .. "/other-ca.crt"
  end
  for k, v in pairs(o.cluster or {}) do cluster[k] = v end
  local user
  if o.user == nil or o.user == "token" then
    user = { token = o.token or self.token }
  elseif o.user == "cert" then
    user = { ["client-certificate"] = self.dir .. "/client.crt", ["client-key"] = self.dir .. "/client.key" }
  elseif o.user == "none" then
    user = {}
  else
    user = o.user
  end
  local ctx = o.context or "fake"
  local doc = {
    apiVersion = "v1", kind = "Config", ["current-context"] = ctx,
    clusters = { { name = "fake-cluster", cluster = cluster } },
    users = { { name = o.user_name or "fake-user", user = user } },
    contexts = { { name = ctx, context = { cluster = "fake-cluster", user = o.user_name or "fake-user", namespace = o.namespace } } },
  }
  rbtest.write(path, json.encode(doc, { pretty = true }), 384)
  return path
end

--- Starts the fake. opts: controller_delay (0.05), log_interval (0.02),
--- bookmark_interval, args (extra command-line arguments), tokens (extra
--- --token values), cert (the server certificate pair from gen_certs.sh:
--- "server" by default, "named-server" for one that names only
--- kube.internal.test).
function M.start(opts)
  opts = opts or {}
  local dir = rbtest.tmpdir("k8s")
  run { "sh", M.fake_dir() .. "/gen_certs.sh", dir }
  local argv = { "python3", M.fake_dir() .. "/fake_apiserver.py", "--port", "0",
    "--cert", dir .. "/" .. (opts.cert or "server") .. ".crt", "--key", dir .. "/" .. (opts.cert or "server") .. ".key",
    "--client-ca", dir .. "/ca.crt",
    "--token", M.TOKEN, "--token", M.OTHER_TOKEN .. ",limited",
    "--controller-delay", tostring(opts.controller_delay or 0.05),
    "--log-interval", tostring(opts.log_interval or 0.02) }
  if opts.bookmark_interval then
    argv[#argv + 1] = "--bookmark-interval"
    argv[#argv + 1] = tostring(opts.bookmark_interval)
  end
  for _, t in ipairs(opts.tokens or {}) do argv[#argv + 1] = "--token"; argv[#argv + 1] = t end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local p = assert(proc.spawn { argv = argv, stdout = "pipe", stderr = opts.stderr or "null" })
  local out, deadline = "", host.monotime() + 30
  while not out:find("\n") do
    local chunk = p:read(256, 0.5)
    if chunk == nil or host.monotime() > deadline then
      p:kill("KILL"); p:wait()
      rbtest.rmtree(dir)
      error("fake_apiserver.py did not start: " .. out)
    end
    out = out .. chunk
  end
  local port = assert(math.tointeger(tonumber(out:match("^READY (%d+)"))), "bad READY line: " .. out)
  local fake = setmetatable({
    proc = p, dir = dir, port = port, token = M.TOKEN,
    server = "https://127.0.0.1:" .. port, ca_file = dir .. "/ca.crt",
  }, Fake)
  fake.http = curl.client { ca_file = fake.ca_file, timeout = 30 }
  fake.kubeconfig = fake:write_kubeconfig()
  return fake
end

--- A fake started elsewhere (scripts/sandbox.sh runs one as a daemon, with
--- the command line M.start uses): o = {server=, ca_file=, dir=, token=}.
--- Everything but stop() works on it; the caller stops the process.
function M.attach(o)
  local fake = setmetatable(o, Fake)
  fake.token = fake.token or M.TOKEN
  fake.http = curl.client { ca_file = fake.ca_file, timeout = 30 }
  return fake
end

--- Calls the control API: returns the decoded answer (raises on a non-2xx).
function Fake:control(method, path, body)
  local res, err = self.http:request {
    method = method, url = self.server .. path,
    headers = { { "Content-Type", "application/json" } },
    body = body ~= nil and json.encode(body) or nil,
  }
  if not res then error("fake control " .. method .. " " .. path .. ": " .. err.message, 2) end
  if res.status >= 300 then error("fake control " .. method .. " " .. path .. ": " .. res.status .. " " .. res.body, 2) end
  if res.body == "" then return nil end
  return json.decode(res.body)
end

--- The request log entries (after seq `since`, if given).
function Fake:requests(since)
  return self:control("GET", "/_fake/requests" .. (since and ("?since=" .. since) or "")).items
end

--- The entries of the request log that match a method and a path pattern.
function Fake:matching(method, pattern, since)
  local out = {}
  for _, e in ipairs(self:requests(since)) do
    if (method == nil or e.method == method) and e.path:match(pattern) then out[#out + 1] = e end
  end
  return out
end

--- Waits until the request log holds at least `n` (default 1) entries of
--- `method` (nil = any) whose path matches the Lua pattern `pattern`;
--- returns them. opts: watch (true/false to pick watches or not), since
--- (seq), timeout (default 30 s, see rbtest.wait_for).
function Fake:await(method, pattern, n, opts)
  opts = opts or {}
  n = n or 1
  local got
  return rbtest.wait_for(string.format("%d %s request(s) on %s", n, method or "any", pattern), function()
    got = {}
    for _, e in ipairs(self:matching(method, pattern, opts.since)) do
      if opts.watch == nil or e.watch == opts.watch then got[#got + 1] = e end
    end
    return #got >= n and got, #got .. " so far"
  end, opts)
end

-- Runs control calls from another process while the spec's own call is
-- blocked in a wait. Each step first waits for its event: `after` = {method,
-- path (a Python regex searched in the path), watch (bool), count (default
-- 1)} is the request log holding that many matching entries; a step without
-- it follows the previous step at once. There is no fixed delay: on a busy
-- machine a step happens after the request it depends on, however late.
-- A step may also call the API itself: auth = true sends the fake's token,
-- content_type replaces application/json (for a PATCH).
-- Prints "AT <epoch seconds>" after each call, for timing measurements.
local LATER = [[
import http.client, json, re, ssl, sys, time
port, ca, steps, token = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
conn = None
def call(method, path, body=None, step={}):
    # one kept-alive connection: a poll costs a request, not a TLS handshake
    global conn
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": step.get("content_type", "application/json")}
    if step.get("auth"):
        headers["Authorization"] = "Bearer " + token
    for attempt in (1, 2):
        try:
            if conn is None:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            out = r.read()
            if r.status >= 300:
                sys.exit("later: %s %s: %d %s" % (method, path, r.status, out[:300]))
            return out
        except (http.client.HTTPException, OSError):
            conn = None
            if attempt == 2:
                raise
call("GET", "/_fake/health")
print("READY", flush=True)
def seen(after):
    items = json.loads(call("GET", "/_fake/requests"))["items"]
    return len([e for e in items if after.get("method") in (None, e["method"])
                and re.search(after.get("path", ""), e["path"])
                and after.get("watch") in (None, e["watch"])]) >= after.get("count", 1)
for s in steps:
    if "after" in s:
        deadline = time.time() + 30
        while not seen(s["after"]):
            if time.time() > deadline:
                sys.exit("later: no %s in the request log after 30 s" % json.dumps(s["after"]))
            time.sleep(0.01)
    call(s.get("method", "POST"), s["path"], s.get("body"), s)
    print("AT %.6f" % time.time(), flush=True)
]]

-- The child of Fake:later: p:communicate{} as for a process, its output
-- including what came with the READY line.
local Later = {}
Later.__index = Later
function Later:communicate(o)
  local r = self.proc:communicate(o)
  r.stdout = self.early .. (r.stdout or "")
  return r
end

--- Starts the steps {{after=, method=, path=, body=, auth=, content_type=}, ...} in a child
--- process and returns it once it is running and connected (a python3 that
--- starts slowly on a busy machine would otherwise eat into the time a step
--- has); p:communicate{} collects the "AT" lines.
function Fake:later(steps)
  local p = assert(proc.spawn { argv = { "python3", "-c", LATER, tostring(self.port), self.ca_file, json.encode(steps), self.token } })
  local out = ""
  rbtest.wait_for("the later child to start", function()
    local chunk = p:read(64, 0.1)
    if chunk == nil then error("the later child exited: " .. out .. tostring(p:communicate({ timeout = 5 }).stderr)) end
    out = out .. chunk
    return out:find("READY\n", 1, true)
  end)
  return setmetatable({ proc = p, early = out:match("READY\n(.*)$") }, Later)
end

--- The epoch times the steps of a `later` child ran at.
function M.times(p)
  local r = p:communicate { timeout = 60 }
  assert(r.code == 0, "later: " .. tostring(r.stderr))
  local out = {}
  for t in r.stdout:gmatch("AT ([%d%.]+)") do out[#out + 1] = tonumber(t) end
  return out
end

function Fake:clear_requests() self:control("DELETE", "/_fake/requests") end
function Fake:reset() self:control("POST", "/_fake/reset") end
function Fake:faults(rules) return self:control("POST", "/_fake/faults", rules) end
function Fake:seed(objs) return self:control("POST", "/_fake/objects", { objects = objs }) end
function Fake:set_status(t) return self:control("POST", "/_fake/status", t) end
function Fake:config(t) return self:control("POST", "/_fake/config", t) end

-- A small HTTP server for port-forward tests: GET answers "PATH #N" (N
-- counts requests), POST echoes the body.
local BACKEND = [[
import sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
count = 0
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global count
        with lock:
            count += 1
            n = count
        body = ("%s #%d" % (self.path, n)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
]]

--- Starts the HTTP backend on a free loopback port: returns its process
--- and port (register it with POST /_fake/pod-ports; kill it when done).
function M.http_backend()
  local p = assert(proc.spawn { argv = { "python3", "-c", BACKEND }, stdout = "pipe" })
  local line = ""
  local deadline = host.monotime() + 30
  while not line:find("\n") and host.monotime() < deadline do
    local chunk = p:read(256, 1)
    if chunk == nil then break end
    line = line .. chunk
  end
  local port = math.tointeger(tonumber(line:match("%d+") or ""))
  if not port then p:kill("KILL"); p:wait(); error("the HTTP backend printed no port", 2) end
  return p, port
end

function Fake:stop()
  if self.http then self.http:close(); self.http = nil end
  if self.proc then
    self.proc:kill("TERM")
    local code = self.proc:wait(5)
    if code == nil then self.proc:kill("KILL"); self.proc:wait() end
    self.proc = nil
  end
  if self.dir then rbtest.rmtree(self.dir); self.dir = nil end
end

return M
