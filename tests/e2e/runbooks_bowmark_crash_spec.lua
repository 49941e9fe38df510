-- runbooks/bowmark-first-deploy.lua killed with SIGKILL around the one
-- command of the guide that must run once, `op item create` (B1-vault
-- saves the generated passwords to 1Password before any Secret holds
-- them), and around B1 and B2, then resumed by the sandbox's rehearsal:
-- the recording `op` stub was called once, as in an uninterrupted run, the
-- item id the run recorded is the one op made, and that item holds the
-- passwords of the postgres Secret as they were at the kill.
--
-- The kill is exact: RUNBOOK_FAILPOINT=after:N stops the process (SIGSTOP)
-- right after journal event N is durable, and the test SIGKILLs it there.
-- The documented window (the process dies after op answered and before
-- its answer is in the journal) cannot be hit this way: there is no event
-- between the two.
local rb = require "rbtest"
local sandbox = require "sandbox"
local json = require "runbook.json"

local RUNBOOK = rb.source_dir .. "/runbooks/bowmark-first-deploy.lua"
-- the steps whose every event is a kill point, besides their boundaries
local AROUND = { B1 = true, ["B1-vault"] = true, B2 = true }

local function op_calls(lines)
  local out = {}
  for _, l in ipairs(lines) do
    if l:find("op item create", 1, true) then out[#out + 1] = l end
  end
  return out
end

describe("runbooks/bowmark-first-deploy.lua killed with SIGKILL around op item create", function()
  local sb, dir, cluster
  local baseline

  setup(function()
    dir = rb.tmpdir("bmcrash")
    sb = sandbox.up(dir, { quiet = true })
    cluster = sb:cluster("bowmark")
  end)
  teardown(function()
    if cluster then cluster:close() end
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  local function password()
    local s = cluster:get { kind = "Secret", name = "postgres" }
    local v = s and s.data and s.data.password
    if v == nil then return nil end
    return type(v) == "string" and v or v:reveal()
  end

  local function vault_item(events)
    for _, e in ipairs(events) do
      if e.type == "step.finished" and e.step == "B1-vault" then return e.outputs and e.outputs.item end
    end
  end

  local function trial(label, kill_after)
    sb:reset_world()
    local state = dir .. "/state-" .. label
    local at_kill
    local r = sb:rehearse(RUNBOOK, { quiet = true, env = { RUNBOOK_STATE = state }, kill_after = kill_after,
      on_kill = function() at_kill = password() end })
    return r, rb.journal(state), at_kill
  end

  it("runs uninterrupted and calls op item create once", function()
    local r, events = trial("baseline")
    assert.is_nil(r.killed)
    assert.are.equal("run.finished", events[#events].type)
    local calls = op_calls(sb:cli_log())
    assert.are.equal(1, #calls, table.concat(sb:cli_log(), "\n"))
    assert.truthy(vault_item(events), "B1-vault recorded no item id")
    assert.truthy(password(), "no postgres Secret")
    baseline = { events = events, calls = calls }
  end)

  it("calls it once, and keeps the passwords, across a SIGKILL at every event around it", function()
    assert.truthy(baseline, "the uninterrupted run failed")
    local events = baseline.events
    local points = {}
    for k = 1, #events - 1 do
      local e, nxt = events[k], events[k + 1]
      if (e.step and AROUND[e.step]) or (nxt.step and AROUND[nxt.step] and nxt.type == "step.started") then
        points[#points + 1] = k
      end
    end
    -- B1's generated passwords, B1-vault's start, op's memo, its finish...
    assert.truthy(#points >= 7, #points .. " kill points")
    for _, k in ipairs(points) do
      local label = string.format("kill after event %d (%s %s)", k, events[k].type, tostring(events[k].step))
      local r, evs, at_kill = trial("k" .. k, k)
      assert.truthy(r.killed, label .. ": the process never stopped there")
      assert.are.equal("run.finished", evs[#evs].type, label)
      local calls = op_calls(sb:cli_log())
      assert.are.equal(1, #calls, label .. ": op item create ran " .. #calls .. " times:\n" .. table.concat(calls, "\n"))
      -- the item op made is the item the run recorded (the stub answers a new id per call)
      assert.truthy(vault_item(evs), label .. ": no item id recorded")
      -- and holds the passwords B1 generated: those of the postgres Secret
      -- when the kill came after B2 made it (B9 rotates it later)
      local item = json.decode(assert(rb.read(dir .. "/stubs/op/" .. vault_item(evs) .. ".json")))
      local fields = {}
      for _, f in ipairs(item.fields) do fields[f.label] = f.value end
      assert.truthy(fields["postgres-password"] and fields["rabbitmq-password"], label)
      if at_kill then
        assert.are.equal(at_kill, fields["postgres-password"], label .. ": the postgres password changed across the kill")
      end
    end
  end)
end)
