-- An HTTP/2 server for the spec that proves runbook._curl speaks HTTP/2
-- when a server offers it: nghttpd (Debian package nghttp2-server) over
-- TLS with the test CA of httpserver.lua, serving a folder.
--
--   local h2server = require "h2server"
--   if h2server.available() then local srv = h2server.start(); ...; srv:stop() end
local proc = require "runbook._proc"
local curl = require "runbook._curl"
local host = require "runbook._host"
local rbtest = require "rbtest"
local httpserver = require "httpserver"

local M = {}

local function find()
  for dir in ((os.getenv("PATH") or "") .. ":/usr/sbin:/usr/bin"):gmatch("[^:]+") do
    if rbtest.exists(dir .. "/nghttpd") then return dir .. "/nghttpd" end
  end
end

--- True when nghttpd is installed.
function M.available() return find() ~= nil end

local Server = {}
Server.__index = Server

function Server:url(path) return self.base .. (path or "/") end

function Server:stop()
  if self.proc then
    self.proc:kill("TERM")
    self.proc:wait(10)
    self.proc = nil
  end
  if self.dir then rbtest.rmtree(self.dir); self.dir = nil end
end

--- Starts nghttpd on a free loopback port; files in opts.files ({name = text}) are served.
function M.start(opts)
  opts = opts or {}
  local dir = rbtest.tmpdir("h2")
  local certs = httpserver.certs(dir)
  local docs = dir .. "/htdocs"
  require("runbook._fs").mkdir_p(docs, 493)
  for name, text in pairs(opts.files or { ["hello.json"] = '{"hello":"h2"}' }) do rbtest.write(docs .. "/" .. name, text) end
  local port = rbtest.free_port()
  local p = assert(proc.spawn { argv = { find(), "-a", "127.0.0.1", "-d", docs, tostring(port), certs.server_key, certs.server_cert },
    stdout = "null", stderr = "null" })
  local srv = setmetatable({ proc = p, dir = dir, port = port, base = "https://127.0.0.1:" .. port }, Server)
  for k, v in pairs(certs) do srv[k] = v end
  local c = curl.client { ca_file = certs.ca_file, timeout = 2, connect_timeout = 1 }
  local deadline = host.monotime() + 30 -- a busy machine starts it slowly
  while not c:request { url = srv.base .. "/" } do
    if host.monotime() > deadline then
      c:close()
      srv:stop()
      error("nghttpd did not start on port " .. port)
    end
    host.sleep(0.05)
  end
  c:close()
  return srv
end

return M
