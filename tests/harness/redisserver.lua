-- A real redis-server for specs: started as our child on a free loopback
-- port (127.0.0.1 only, no persistence), optionally with --requirepass,
-- and stopped by its pid. redis-cli, a client we did not write, checks
-- what the code under test did.
local proc = require "runbook._proc"
local net = require "runbook._net"
local host = require "runbook._host"
local rbtest = require "rbtest"

local M = {}

local Server = {}
Server.__index = Server

local function wait_listening(port, p, timeout)
  local deadline = host.monotime() + timeout
  while host.monotime() < deadline do
    if net.tcp_connect("127.0.0.1", port, 0.2) then return true end
    local code = p:wait(0)
    if code then return false end
    host.sleep(0.02)
  end
  return false
end

--- Starts redis-server. opts: password (string), port (default: a free one).
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({ password = opts.password }, Server)
  self.dir = rbtest.tmpdir("redis")
  self:launch(opts.port or rbtest.free_port())
  return self
end

function Server:launch(port)
  self.port = port
  local argv = { "redis-server", "--port", tostring(port), "--bind", "127.0.0.1", "--save", "",
    "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--logfile", self.dir .. "/redis.log" }
  if self.password then
    argv[#argv + 1] = "--requirepass"
    argv[#argv + 1] = self.password
  end
  self.proc = assert(proc.spawn { argv = argv, stdout = "null", stderr = "null" })
  if not wait_listening(port, self.proc, 10) then
    error("redis-server did not start on port " .. port .. ": " .. tostring(rbtest.read(self.dir .. "/redis.log")))
  end
  self.url = string.format("redis://127.0.0.1:%d", port)
  self.auth_url = self.password and string.format("redis://:%s@127.0.0.1:%d", self.password, port) or self.url
end

--- Runs redis-cli against the server; returns its stdout without the final newline.
function Server:cli(...)
  local argv = { "redis-cli", "-h", "127.0.0.1", "-p", tostring(self.port) }
  if self.password then
    argv[#argv + 1] = "--no-auth-warning"
    argv[#argv + 1] = "-a"
    argv[#argv + 1] = self.password
  end
  for _, a in ipairs { ... } do argv[#argv + 1] = tostring(a) end
  local p = assert(proc.spawn { argv = argv })
  local r = p:communicate { timeout = 10 }
  assert(r.code == 0, "redis-cli failed: " .. r.stderr)
  return (r.stdout:gsub("\n$", ""))
end

--- Stops the server (SIGTERM, then SIGKILL) and keeps its directory.
function Server:kill()
  if not self.proc then return end
  self.proc:kill("TERM")
  if not self.proc:wait(5) then
    self.proc:kill("KILL")
    self.proc:wait()
  end
  self.proc = nil
end

--- Pauses / resumes the server (SIGSTOP / SIGCONT): the kernel still
--- accepts connections, but nothing answers.
function Server:pause() self.proc:kill("STOP") end
function Server:resume() self.proc:kill("CONT") end

--- Starts it again on the same port.
function Server:restart()
  self:kill()
  self:launch(self.port)
end

function Server:stop()
  self:kill()
  if self.dir then
    rbtest.rmtree(self.dir)
    self.dir = nil
  end
end

return M
