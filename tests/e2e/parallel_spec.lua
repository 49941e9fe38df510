-- Parallel groups: steps run concurrently on threads, share the journal
-- and secrets, fail and resume like any other step.
local rb = require "rbtest"

local BOOK = [[
local secret = require "runbook.secret"
runbook "par" { params = { dir = {}, fail = { default = "" } } }
local function effect(ctx, what)
  local f = assert(io.open(ctx.params.dir .. "/effects", "a"))
  f:write(what, "\n")
  f:close()
  return true
end
step "A" { run = function(ctx)
  return { pw = ctx:once("pw", function() return secret.random { bytes = 12 } end) }
end }
parallel "work" {
  step "P1" { needs = "A", run = function(ctx)
    ctx:once("e", function() return effect(ctx, "P1 " .. ctx.outputs.A.pw:reveal()) end)
    ctx:sleep(tonumber(os.getenv("PAR_SLEEP") or "0.4"))
    return 1
  end },
  step "P2" { needs = "A", run = function(ctx)
    ctx:once("e", function() return effect(ctx, "P2 " .. ctx.outputs.A.pw:reveal()) end)
    ctx:sleep(tonumber(os.getenv("PAR_SLEEP") or "0.4"))
    if ctx.params.fail == "P2" then error("P2 broke") end
    return 2
  end },
  step "P3" { needs = "A", run = function(ctx)
    ctx:once("e", function() return effect(ctx, "P3 " .. ctx.outputs.A.pw:reveal()) end)
    ctx:sleep(tonumber(os.getenv("PAR_SLEEP") or "0.4"))
    return 3
  end },
}
step "Z" { needs = { "P1", "P2", "P3" }, run = function(ctx)
  ctx:once("e", function() return effect(ctx, "Z " .. (ctx.outputs.P1 + ctx.outputs.P2 + ctx.outputs.P3)) end)
end }
]]

local dir
before_each(function()
  dir = rb.tmpdir("par")
  rb.write(dir .. "/par.lua", BOOK)
end)
after_each(function() rb.rmtree(dir) end)

local function exec(args, env)
  local a = { "par.lua" }
  for _, x in ipairs(args or {}) do a[#a + 1] = x end
  return rb.exec(a, { cwd = dir, env = env, params = { dir = dir } })
end

local function effects()
  local out = {}
  for l in (rb.read(dir .. "/effects") or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  table.sort(out)
  return out
end

local function same_secret(lines)
  local pw
  for _, l in ipairs(lines) do
    local s = l:match("^P%d (.+)$")
    if s then
      if pw then assert.are.equal(pw, s) end
      pw = s
    end
  end
  assert.truthy(pw and #pw == 24)
end

describe("parallel groups", function()
  it("run their steps at the same time", function()
    local r = exec()
    assert.are.equal(0, r.code, r.stderr)
    -- all three started before any of them finished (each sleeps 0.4 s): the
    -- journal's order proves they overlapped, however slow the machine
    local started, first_finish = {}, nil
    for i, ev in ipairs(rb.journal(dir .. "/.runbook")) do
      if ev.step and ev.step:match("^P%d$") then
        if ev.type == "step.started" then started[#started + 1] = i end
        if ev.type == "step.finished" and not first_finish then first_finish = i end
      end
    end
    assert.are.equal(3, #started)
    assert.truthy(first_finish and started[3] < first_finish, "the P steps ran one after another")
    local e = effects()
    assert.are.equal(4, #e)
    assert.are.equal("Z 6", e[4])
    same_secret(e)
    assert.are.equal(0, rb.run({ "audit", "verify", "last" }, { cwd = dir }).code)
  end)

  it("fail the run when one step fails; the resume runs only that step", function()
    local r = exec { "--param", "fail=P2" }
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("P2 failed. Fix the cause", 1, true), r.stderr)
    r = exec { "--param", "fail=" }
    assert.are.equal(0, r.code, r.stderr)
    local started = {}
    for _, ev in ipairs(rb.journal(dir .. "/.runbook")) do
      if ev.type == "step.started" then started[ev.step] = (started[ev.step] or 0) + 1 end
    end
    assert.are.same({ A = 1, P1 = 1, P2 = 2, P3 = 1, Z = 1 }, started)
    local e = effects()
    assert.are.equal(4, #e) -- P2's effect happened once: its memo held
    same_secret(e)
  end)

  it("resume exactly-once after SIGKILL in the middle of the group", function()
    local p = rb.start({ "exec", "par.lua", "--param", "dir=" .. dir }, { cwd = dir, env = { PAR_SLEEP = "30" } })
    -- each step journals its memo right after its effect: kill once all three are there
    rb.wait_for("the three P steps' memos", function()
      local n = 0
      for _, ev in ipairs(rb.journal_so_far(dir .. "/.runbook")) do
        if ev.type == "step.memo" and ev.key == "e" then n = n + 1 end
      end
      return n >= 3, n .. " memos"
    end)
    assert.are.equal(3, #effects())
    p:kill("KILL")
    p:wait(10)
    local r = exec({}, { PAR_SLEEP = "0" })
    assert.are.equal(0, r.code, r.stderr)
    local e = effects()
    assert.are.equal(4, #e)
    same_secret(e)
    assert.are.equal(0, rb.run({ "audit", "verify", "last" }, { cwd = dir }).code)
  end)

  it("stop on Ctrl-C with exit 130", function()
    local p = rb.start({ "exec", "par.lua", "--param", "dir=" .. dir }, { cwd = dir, env = { PAR_SLEEP = "30" } })
    rb.wait_for("the three P steps' effects", function() return #effects() >= 3 end)
    p:kill("INT")
    assert.are.equal(130, p:wait(10))
    local evs = rb.journal(dir .. "/.runbook")
    local interrupted = 0
    for _, ev in ipairs(evs) do
      if ev.type == "step.interrupted" then interrupted = interrupted + 1 end
    end
    assert.are.equal(3, interrupted)
    assert.are.equal("run.interrupted", evs[#evs].type)
  end)
end)
