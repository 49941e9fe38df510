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
--   fake:reset()                            -- store, faults and log back to the start
--   fake:stop()
local proc = require "runbook._proc"
local curl = require "runbook._curl"
local json = require "runbook._json"
local rbtest = require "rbtest"

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
  local out, deadline = "", os.time() + 20
  while not out:find("\n") do
    local chunk = p:read(256, 0.5)
    if chunk == nil or os.time() > deadline then
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

-- Runs control calls from another process, each after its delay (seconds
-- since the previous one), while the spec's own call is blocked in a wait.
-- Prints "AT <epoch seconds>" after each call, for timing measurements.
local LATER = [[
import json, ssl, sys, time, urllib.request
base, ca, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
for s in steps:
    time.sleep(s.get("delay", 0))
    body = json.dumps(s["body"]).encode() if "body" in s else None
    req = urllib.request.Request(base + s["path"], data=body, method=s.get("method", "POST"),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, context=ctx).read()
    print("AT %.6f" % time.time(), flush=True)
]]

--- Starts the steps {{delay=, method=, path=, body=}, ...} in a child
--- process; returns it (p:communicate{} collects the "AT" lines).
function Fake:later(steps)
  return assert(proc.spawn { argv = { "python3", "-c", LATER, self.server, self.ca_file, json.encode(steps) } })
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
