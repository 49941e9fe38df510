-- Tools from the npm registry for the specs that check formats with a
-- validator or renderer nobody here wrote: ajv (JSON Schema, with ajv-cli
-- and ajv-formats) and markdown-it (CommonMark). scripts/deps.sh installs
-- them once into a cache folder shared by test runs; a spec that finds
-- them missing installs them there itself (under a lock, as two suites may
-- start at once).
local proc = require "runbook._proc"
local rbtest = require "rbtest"

local M = {}

--- The packages, pinned to their major versions (scripts/deps.sh has the same list).
M.PACKAGES = { "ajv@8", "ajv-cli@5", "ajv-formats@2", "markdown-it@14" }

M.dir = (os.getenv("RUNBOOK_TEST_CACHE") or "/tmp/runbook-test-cache") .. "/node"

local function installed()
  for _, b in ipairs { "ajv", "markdown-it" } do
    if not rbtest.exists(M.dir .. "/node_modules/.bin/" .. b) then return false end
  end
  return rbtest.exists(M.dir .. "/node_modules/ajv-formats/package.json")
end

--- Makes sure the packages are there; returns the node_modules folder.
function M.ensure()
  if installed() then return M.dir .. "/node_modules" end
  assert(require("runbook._fs").mkdir_p(M.dir, 493))
  local argv = { "flock", M.dir .. "/.lock", "npm", "install", "--no-audit", "--no-fund", "--prefix", M.dir }
  for _, p in ipairs(M.PACKAGES) do argv[#argv + 1] = p end
  local r = assert(proc.spawn { argv = argv }):communicate { timeout = 300 }
  assert(r.code == 0 and installed(), "npm install " .. table.concat(M.PACKAGES, " ") .. " failed: " .. r.stdout .. r.stderr)
  return M.dir .. "/node_modules"
end

--- The path of an installed tool's command (ajv, markdown-it).
function M.bin(name)
  return M.ensure() .. "/.bin/" .. name
end

return M
