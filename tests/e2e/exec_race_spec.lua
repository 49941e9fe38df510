-- Two fresh `runbook exec`s of one runbook started at the same moment:
-- finding or making the run happens under a per-runbook lock in the store,
-- so exactly one run is made; the other process exits 4 naming the
-- holder's pid, host and user.
local rb = require "rbtest"
local host = require "runbook._host"
local fs = require "runbook._fs"

local BOOK = [[
runbook "race" {}
step "A" { run = function(ctx)
  local f = io.open(os.getenv("MARK"), "w") f:close()
  while not io.open(os.getenv("GO")) do ctx:sleep(0.02) end
end }
]]

-- the first of the processes to end, polling with a deadline
local function first_exit(procs, deadline)
  local t0 = host.monotime()
  while host.monotime() - t0 < deadline do
    for i, p in ipairs(procs) do
      if p:wait(0.01) ~= nil then return i end
    end
  end
  return nil
end

describe("two fresh execs at once", function()
  it("make exactly one run, 30 times out of 30; the loser names the winner", function()
    local holder_tail = string.format(" on %s (user %s)", host.hostname(), host.user())
    for round = 1, 30 do
      local dir = rb.tmpdir("race")
      rb.write(dir .. "/r.lua", BOOK)
      local env = { MARK = dir .. "/mark", GO = dir .. "/go" }
      local procs = {
        rb.start({ "exec", "r.lua" }, { cwd = dir, env = env, stderr = "pipe" }),
        rb.start({ "exec", "r.lua" }, { cwd = dir, env = env, stderr = "pipe" }),
      }
      local i = first_exit(procs, 30)
      assert.truthy(i, "round " .. round .. ": neither exec ended")
      local loser, winner = procs[i], procs[3 - i]
      local lr = loser:communicate { timeout = 10 }
      assert.are.equal(4, lr.code, "round " .. round .. ": " .. lr.stderr)
      assert.truthy(lr.stderr:find("is locked by pid " .. winner:pid() .. holder_tail, 1, true),
        "round " .. round .. ": " .. lr.stderr)
      rb.write(dir .. "/go", "")
      local wr = winner:communicate { timeout = 30 }
      assert.are.equal(0, wr.code, "round " .. round .. ": " .. wr.stderr)
      local runs = fs.listdir(dir .. "/.runbook/runs")
      assert.are.equal(1, #runs, "round " .. round .. ": " .. table.concat(runs, " "))
      rb.rmtree(dir)
    end
  end)
end)
