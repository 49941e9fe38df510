-- A real S3-compatible server for specs: moto_server (found on PATH) on a
-- free loopback port, with signature checking turned on. moto verifies
-- SigV4 only once INITIAL_NO_AUTH_ACTION_COUNT unauthenticated actions are
-- spent, so the harness spends exactly three on IAM: a user, its access
-- key and an s3:* policy. From then on a wrong secret gets 403
-- SignatureDoesNotMatch.
--
--   local s3server = require "s3server"
--   local srv = s3server.start()
--   srv.endpoint, srv.access_key, srv.secret_key, srv.region
--   srv:stop()
local proc = require "runbook._proc"
local curl = require "runbook._curl"
local host = require "runbook._host"
local rbtest = require "rbtest"

local M = {}

-- A credential scope naming "iam" routes an unsigned request to moto's IAM
-- (the signature is not checked while the free actions last).
local IAM_AUTH = "AWS4-HMAC-SHA256 Credential=bootstrap/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00"

local POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'

local function iam(c, base, params)
  local url_lib = require "runbook.http.url"
  params.Version = "2010-05-08"
  local body = url_lib.query(params)
  local res, err = c:request { method = "POST", url = base .. "/", body = body,
    headers = { { "Authorization", IAM_AUTH }, { "Content-Type", "application/x-www-form-urlencoded" } } }
  assert(res, err)
  assert(res.status == 200, "moto IAM " .. params.Action .. " answered " .. tostring(res and res.status) .. ": " .. tostring(res and res.body))
  return res.body
end

local Server = {}
Server.__index = Server

function Server:stop()
  if self.proc then
    self.proc:kill("TERM")
    self.proc:wait(10)
    self.proc = nil
  end
end

-- moto_server from PATH, else where pyenv puts its shims
local function moto_bin()
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if rbtest.exists(dir .. "/moto_server") then return dir .. "/moto_server" end
  end
  local home = os.getenv("HOME") or "/root"
  if rbtest.exists(home .. "/.pyenv/shims/moto_server") then return home .. "/.pyenv/shims/moto_server" end
  return nil
end

-- What to say when moto cannot be found: what is missing and how to get it.
M.MISSING = "moto_server not found on PATH: the S3 tests and scripts/sandbox.sh need moto's server, "
  .. "from the Python package moto (`pip install 'moto[server]'`, or run scripts/deps.sh, which installs it)"

--- The moto_server found (PATH, then pyenv's shims), or nil and why not.
function M.find()
  local bin = moto_bin()
  if not bin then return nil, M.MISSING end
  return bin
end

-- The Python that runs moto_server: its script's interpreter, or the
-- python3 beside a pyenv shim. The harness starts moto through
-- moto_raw_query.py (next to this file), which checks signatures against
-- the query string as sent (see that file).
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local function moto_argv(port)
  local bin = moto_bin()
  -- a plain message, not a traceback: the failing spec says what is missing
  if not bin then error(M.MISSING, 0) end
  local f = io.open(bin, "r")
  local first = f and f:read("l") or ""
  if f then f:close() end
  local python = first:match("^#!%s*(%S*python[%d.]*)%s*$")
  if not python then
    python = bin:match("^(.*)/[^/]*$") .. "/python3"
    if not rbtest.exists(python) then python = "python3" end
  end
  return { python, HERE .. "/moto_raw_query.py", "-H", "127.0.0.1", "-p", tostring(port) }
end

--- The command line that serves moto on a loopback port, and the
--- environment it needs (signature checks after three free IAM calls).
function M.argv(port)
  return moto_argv(port), { INITIAL_NO_AUTH_ACTION_COUNT = "3", S3_UPLOAD_PART_MIN_SIZE = "1024",
    MOTO_S3_DEFAULT_KEY_BUFFER_SIZE = "1048576" }
end

--- Waits for a moto started on base (http://127.0.0.1:PORT) to answer;
--- `alive` (optional) says whether its process still runs. Raises if not.
function M.await(base, alive, timeout)
  local c = curl.client { timeout = 10, connect_timeout = 2 }
  -- /moto-api/ answers without spending one of the unauthenticated actions
  local deadline = host.monotime() + (timeout or 30)
  while true do
    local res = c:request { url = base .. "/moto-api/" }
    if res then break end
    if host.monotime() > deadline or (alive and not alive()) then
      c:close()
      error("moto_server did not start on " .. base, 0)
    end
    host.sleep(0.1)
  end
  c:close()
end

--- Spends moto's three unauthenticated actions on a user, its access key
--- and an s3:* policy; returns the access key and its secret.
function M.credentials(base)
  local c = curl.client { timeout = 10, connect_timeout = 2 }
  iam(c, base, { Action = "CreateUser", UserName = "runbook" })
  local key = iam(c, base, { Action = "CreateAccessKey", UserName = "runbook" })
  iam(c, base, { Action = "PutUserPolicy", UserName = "runbook", PolicyName = "s3-all", PolicyDocument = POLICY })
  c:close()
  return assert(key:match("<AccessKeyId>(.-)</AccessKeyId>")), assert(key:match("<SecretAccessKey>(.-)</SecretAccessKey>"))
end

--- Starts moto_server and makes credentials it checks.
function M.start()
  local port = rbtest.free_port()
  local base = "http://127.0.0.1:" .. port
  local argv, env = M.argv(port)
  local p = assert(proc.spawn { argv = argv, env = env, stdout = "null", stderr = "null" })
  local ok, err = pcall(M.await, base, function() return not p:wait(0.01) end)
  if not ok then
    p:kill("KILL"); p:wait()
    error(err, 0)
  end
  local access, secret = M.credentials(base)
  return setmetatable({ proc = p, port = port, endpoint = base, region = "us-east-1",
    access_key = access, secret_key = secret }, Server)
end

return M
