-- `runbook exec --lock redis://...`: two operators on two machines (here:
-- two processes with their own state stores) cannot drive one runbook at
-- the same time; the second is told who holds it and exits 4.
local rb = require "rbtest"
local host = require "runbook._host"
local redisserver = require "redisserver"

local BOOK = [[
runbook "shared-deploy" {}
step "A" { run = function(ctx)
  local f = io.open(os.getenv("MARK"), "w") f:close()
  while not io.open(os.getenv("GO")) do ctx:sleep(0.02) end
end }
]]

describe("exec --lock", function()
  local srv, dir
  setup(function() srv = redisserver.start { password = "lock-pass-123" } end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function()
    dir = rb.tmpdir("xlock")
    rb.write(dir .. "/s.lua", BOOK)
  end)
  after_each(function() rb.rmtree(dir) end)

  it("refuses a second machine while the first holds the lock, then lets it run", function()
    local env1 = { MARK = dir .. "/m1", GO = dir .. "/go", RUNBOOK_STATE = dir .. "/state1" }
    local p = rb.start({ "exec", "s.lua", "--lock", srv.auth_url }, { cwd = dir, env = env1, stderr = "pipe" })
    rb.wait_for("the first run's step", function() return rb.exists(dir .. "/m1") end)
    -- the second "machine" has its own store: only the Redis lock stands between them
    local r = rb.run({ "exec", "s.lua" }, { cwd = dir, env = { MARK = dir .. "/m2", GO = dir .. "/go",
      RUNBOOK_STATE = dir .. "/state2", RUNBOOK_LOCK = srv.auth_url } })
    assert.are.equal(4, r.code, r.stderr)
    assert.truthy(r.stderr:find("runbook shared-deploy is locked by " .. host.user() .. "@" .. host.hostname() .. " pid " .. p:pid(), 1, true), r.stderr)
    assert.is_nil(r.stderr:find("lock-pass-123", 1, true))
    rb.write(dir .. "/go", "")
    local res = p:communicate { timeout = 20 }
    assert.are.equal(0, res.code, res.stderr)
    r = rb.run({ "exec", "s.lua" }, { cwd = dir, env = { MARK = dir .. "/m2", GO = dir .. "/go",
      RUNBOOK_STATE = dir .. "/state2", RUNBOOK_LOCK = srv.auth_url } })
    assert.are.equal(0, r.code, r.stderr)
  end)

  it("says clearly when Redis refuses the password, without printing it", function()
    local bad = srv.auth_url:gsub("lock%-pass%-123", "wrong-pass-456")
    local r = rb.run({ "exec", "s.lua", "--lock", bad }, { cwd = dir, env = { MARK = dir .. "/m", GO = dir .. "/m" } })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("cannot take the run lock: ", 1, true), r.stderr)
    assert.is_nil(r.stderr:find("wrong-pass-456", 1, true))
  end)
end)
