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
  error("moto_server is not on PATH (it comes with the Python package moto)")
end

-- The Python that runs moto_server: its script's interpreter, or the
-- python3 beside a pyenv shim. The harness starts moto through
-- moto_raw_query.py (next to this file), which checks signatures against
-- the query string as sent (see that file).
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local function moto_argv(port)
  local bin = moto_bin()
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

--- Starts moto_server and makes credentials it checks.
function M.start()
  local port = rbtest.free_port()
  local base = "http://127.0.0.1:" .. port
  local p = assert(proc.spawn { argv = moto_argv(port),
    env = { INITIAL_NO_AUTH_ACTION_COUNT = "3", S3_UPLOAD_PART_MIN_SIZE = "1024",
      MOTO_S3_DEFAULT_KEY_BUFFER_SIZE = "1048576" },
    stdout = "null", stderr = "null" })
  local c = curl.client { timeout = 10, connect_timeout = 2 }
  -- /moto-api/ answers without spending one of the unauthenticated actions
  local deadline = host.monotime() + 30
  while true do
    local res = c:request { url = base .. "/moto-api/" }
    if res then break end
    if host.monotime() > deadline or p:wait(0.01) then
      p:kill("KILL"); p:wait()
      error("moto_server did not start on port " .. port)
    end
    host.sleep(0.1)
  end
  iam(c, base, { Action = "CreateUser", UserName = "runbook" })
  local key = iam(c, base, { Action = "CreateAccessKey", UserName = "runbook" })
  iam(c, base, { Action = "PutUserPolicy", UserName = "runbook", PolicyName = "s3-all", PolicyDocument = POLICY })
  c:close()
  local srv = setmetatable({ proc = p, port = port, endpoint = base, region = "us-east-1",
    access_key = assert(key:match("<AccessKeyId>(.-)</AccessKeyId>")),
    secret_key = assert(key:match("<SecretAccessKey>(.-)</SecretAccessKey>")) }, Server)
  return srv
end

return M
