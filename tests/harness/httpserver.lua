-- The real local HTTPS server for HTTP specs: a test CA made with the
-- openssl CLI, tests/harness/httpserver.py on a free loopback port.
--
--   local httpserver = require "httpserver"
--   local srv = httpserver.start()          -- or start{ plain = true, token = "t" }
--   srv.base, srv:url("/json"), srv.ca_file, srv.client_cert, srv.client_key, srv.other_ca
--   srv:stop()
local proc = require "runbook._proc"
local rbtest = require "rbtest"
local host = require "runbook._host"

local M = {}

local function run(argv, cwd)
  local p = assert(proc.spawn { argv = argv, cwd = cwd })
  local r = p:communicate { timeout = 30 }
  if r.code ~= 0 then
    error(table.concat(argv, " ") .. " failed: " .. r.stderr, 2)
  end
  return r
end

local EC = { "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes" }

local function req(dir, key, out, subj, x509)
  local argv = { "openssl", "req" }
  if x509 then argv[#argv + 1] = "-x509"; argv[#argv + 1] = "-days"; argv[#argv + 1] = "2" end
  for _, a in ipairs(EC) do argv[#argv + 1] = a end
  for _, a in ipairs { "-keyout", key, "-out", out, "-subj", subj } do argv[#argv + 1] = a end
  run(argv, dir)
end

local function sign(dir, csr, out, ext)
  rbtest.write(dir .. "/" .. out .. ".ext", ext)
  run({ "openssl", "x509", "-req", "-in", csr, "-CA", "ca.pem", "-CAkey", "ca.key",
    "-CAcreateserial", "-days", "2", "-out", out, "-extfile", out .. ".ext" }, dir)
end

--- Makes a test CA, a server certificate for 127.0.0.1/localhost (and the
--- host names in `names`, if given), a client certificate (CN
--- runbook-client) and an unrelated CA, in dir.
function M.certs(dir, names)
  req(dir, "ca.key", "ca.pem", "/CN=runbook test CA", true)
  req(dir, "other-ca.key", "other-ca.pem", "/CN=some other CA", true)
  req(dir, "server.key", "server.csr", "/CN=127.0.0.1")
  sign(dir, "server.csr", "server.pem",
    "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost"
    .. (names and #names > 0 and (",DNS:" .. table.concat(names, ",DNS:")) or "") .. "\nextendedKeyUsage=serverAuth\n")
  req(dir, "client.key", "client.csr", "/CN=runbook-client")
  sign(dir, "client.csr", "client.pem", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
  return {
    ca_file = dir .. "/ca.pem", other_ca = dir .. "/other-ca.pem",
    server_cert = dir .. "/server.pem", server_key = dir .. "/server.key",
    client_cert = dir .. "/client.pem", client_key = dir .. "/client.key",
  }
end

local Server = {}
Server.__index = Server

function Server:url(path) return self.base .. (path or "/") end

function Server:stop()
  if self.proc then
    self.proc:kill("TERM")
    self.proc:wait()
    self.proc = nil
  end
  if self.dir then rbtest.rmtree(self.dir); self.dir = nil end
end

--- Starts the server. opts.plain = true serves http:// (no TLS);
--- opts.token is the bearer token /admin accepts (default "test-token").
function M.start(opts)
  opts = opts or {}
  local dir = rbtest.tmpdir("https")
  local certs = M.certs(dir)
  local argv = { "python3", rbtest.source_dir .. "/tests/harness/httpserver.py",
    "--cert", certs.server_cert, "--key", certs.server_key, "--client-ca", certs.ca_file,
    "--token", opts.token or "test-token" }
  if opts.plain then argv[#argv + 1] = "--plain" end
  local p = assert(proc.spawn { argv = argv, stdout = "pipe", stderr = "null" })
  local out, deadline = "", host.monotime() + 30
  while not out:find("\n") do
    local chunk = p:read(256, 0.5)
    if chunk == nil or host.monotime() > deadline then
      p:kill(9); p:wait()
      rbtest.rmtree(dir)
      error("httpserver.py did not start: " .. out)
    end
    out = out .. chunk
  end
  local port = assert(math.tointeger(tonumber(out:match("^READY (%d+)"))), "bad READY line: " .. out)
  local srv = setmetatable({ proc = p, dir = dir, port = port, token = opts.token or "test-token" }, Server)
  for k, v in pairs(certs) do srv[k] = v end
  srv.base = string.format("%s://127.0.0.1:%d", opts.plain and "http" or "https", port)
  return srv
end

return M
