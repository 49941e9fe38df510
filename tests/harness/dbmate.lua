-- The real dbmate for compatibility tests: from DBMATE_BIN, or installed
-- once with `npm install dbmate` (the npm package ships the Go binary)
-- into a cache directory shared by test runs.
local proc = require "runbook._proc"
local rbtest = require "rbtest"

local M = {}

local cache = (os.getenv("RUNBOOK_TEST_CACHE") or "/tmp/runbook-test-cache") .. "/dbmate"

--- The path of the dbmate binary, installing it if needed.
function M.bin()
  local env = os.getenv("DBMATE_BIN")
  if env and env ~= "" then return env end
  local bin = cache .. "/node_modules/.bin/dbmate"
  if rbtest.exists(bin) then return bin end
  assert(require("runbook._fs").mkdir_p(cache, 493))
  local p = assert(proc.spawn { argv = { "npm", "install", "--no-audit", "--no-fund", "--prefix", cache, "dbmate" } })
  local r = p:communicate { timeout = 300 }
  assert(r.code == 0 and rbtest.exists(bin), "npm install dbmate failed: " .. r.stdout .. r.stderr)
  return bin
end

--- Runs dbmate with args against url and migrations dir; returns the result.
function M.run(url, dir, args)
  local argv = { M.bin(), "--url", url, "--migrations-dir", dir, "--no-dump-schema" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = assert(proc.spawn { argv = argv })
  return p:communicate { timeout = 60 }
end

return M
