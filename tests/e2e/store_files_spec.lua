-- The store's files: a key file others can read is refused with the fix,
-- a run log made again on resume is 0600, and a symbolic link in a run's
-- folder is never followed.
local rb = require "rbtest"
local fs = require "runbook._fs"

local BOOK = [[
local secret = require "runbook.secret"
runbook "files" {}
step "a" { run = function(ctx)
  ctx:once("pw", function() return secret.random { bytes = 16, encoding = "hex" } end)
  if not io.open(os.getenv("GO")) then error("stops here until GO exists") end
end }
]]

local dir, env
before_each(function()
  dir = rb.tmpdir("files")
  rb.write(dir .. "/f.lua", BOOK)
  env = { GO = dir .. "/go" }
end)
after_each(function() rb.rmtree(dir) end)

local function exec() return rb.run({ "exec", "f.lua" }, { cwd = dir, env = env }) end

local function run_dir()
  local runs = fs.listdir(dir .. "/.runbook/runs")
  return dir .. "/.runbook/runs/" .. runs[1]
end

describe("store files", function()
  it("refuses a secret.key others can read, saying how to fix it", function()
    assert.are.equal(1, exec().code)
    local key = dir .. "/.runbook/secret.key"
    assert.are.equal(384, fs.stat(key).mode)
    assert(fs.chmod(key, 420)) -- 0644
    rb.write(dir .. "/go", "")
    local r = exec()
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("secret.key has mode 0644: others may read the key that seals this store's secrets. Run `chmod 600 ", 1, true), r.stderr)
    assert(fs.chmod(key, 384))
    r = exec()
    assert.are.equal(0, r.code, r.stderr)
  end)

  it("makes a run log deleted before a resume again with mode 0600", function()
    assert.are.equal(1, exec().code)
    local log = run_dir() .. "/log"
    assert.are.equal(384, fs.stat(log).mode)
    assert(os.remove(log))
    assert.are.equal(1, exec().code)
    assert.are.equal(384, fs.stat(log).mode)
  end)

  it("refuses a journal.jsonl that is a symbolic link, and leaves its target alone", function()
    assert.are.equal(1, exec().code)
    local journal = run_dir() .. "/journal.jsonl"
    local outside = dir .. "/outside.jsonl"
    assert(os.rename(journal, outside))
    -- cut the last line in half: a followed link would be "repaired" (cut) and appended to
    local text = rb.read(outside)
    rb.write(outside, text:sub(1, #text - 20), 384)
    local before = rb.read(outside)
    local ln = require("runbook._proc").spawn { argv = { "ln", "-s", outside, journal } }
    assert.are.equal(0, ln:communicate {}.code)
    rb.write(dir .. "/go", "")
    local r = exec()
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("journal.jsonl: a symbolic link; store files are never followed", 1, true), r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true))
    assert.are.equal(before, rb.read(outside))
  end)
end)
