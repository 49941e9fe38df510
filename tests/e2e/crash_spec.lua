-- Crash tests with real processes: a runbook whose steps have effects
-- through ctx:once is killed with SIGKILL at every journal event (every
-- step boundary and every memo inside steps), with a half-written event,
-- and while a step sleeps; after each kill the resume finishes, every
-- effect happened exactly once, the generated secret is the same
-- everywhere, and `runbook audit verify` passes.
local rb = require "rbtest"
local crypto = require "runbook._crypto"

local RUNBOOK = [[
local secret = require "runbook.secret"
runbook "crash" { params = { dir = { doc = "where effects are written" } } }

-- an effect: one line appended to the effects file
local function effect(ctx, what)
  local f = assert(io.open(ctx.params.dir .. "/effects", "a"))
  f:write(what, "\n")
  f:close()
  return what
end


step "S1" { title = "generate", run = function(ctx)
  local pw = ctx:once("pw", function() return secret.random { bytes = 24, encoding = "base64" } end)
  ctx:once("e1", function() return effect(ctx, "S1-a") end)
  ctx:once("e2", function() return effect(ctx, "S1-b") end)
  return { pw = pw }
end }

step "S2" { title = "use", needs = "S1", run = function(ctx)
  local pw = ctx.outputs.S1.pw
  ctx:once("e", function() return effect(ctx, "S2 " .. pw:reveal()) end)
end }

step "S3" { title = "long", run = function(ctx)
  local start = ctx:cursor("i") or 0
  for i = start + 1, 4 do
    ctx:once("e" .. i, function() return effect(ctx, "S3-" .. i) end)
    ctx:checkpoint("i", i)
    -- a point where the test can kill the step in its middle
    local f = assert(io.open(ctx.params.dir .. "/sleeping-" .. i, "w"))
    f:close()
    if os.getenv("CRASH_SLEEP_AT") == tostring(i) then ctx:sleep(30) end
  end
end }

step "S4" { title = "again", run = function(ctx)
  local pw = ctx:once("pw-copy", function() return ctx.outputs.S1.pw end)
  ctx:once("e", function() return effect(ctx, "S4 " .. pw:reveal()) end)
end }
]]

local EXPECTED = { "S1-a", "S1-b", "S2", "S3-1", "S3-2", "S3-3", "S3-4", "S4" }

local function setup_dir()
  local dir = rb.tmpdir("crash")
  rb.write(dir .. "/crash.lua", RUNBOOK)
  return dir
end

local function exec(dir, env)
  return rb.exec("crash.lua", { cwd = dir, env = env, params = { dir = dir } })
end

-- every effect exactly once, and S2 and S4 saw the same secret
local function check_effects(dir)
  local lines = {}
  for line in (rb.read(dir .. "/effects") or ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
  local names, secrets = {}, {}
  for _, l in ipairs(lines) do
    local name, pw = l:match("^(%S+) (.+)$")
    if name then
      names[#names + 1] = name
      secrets[#secrets + 1] = pw
    else
      names[#names + 1] = l
    end
  end
  table.sort(names)
  local want = { table.unpack(EXPECTED) }
  table.sort(want)
  assert.are.same(want, names)
  assert.are.equal(2, #secrets)
  assert.are.equal(secrets[1], secrets[2])
  assert.are.equal(32, #secrets[1]) -- 24 random bytes in base64
end

local function audit_ok(dir)
  local r = rb.run({ "audit", "verify", "last" }, { cwd = dir })
  assert.are.equal(0, r.code, r.stderr)
  assert.truthy(r.stdout:match("hash chain intact"))
end

local function journal_types(dir)
  local events = rb.journal(dir .. "/.runbook")
  local types = {}
  for _, e in ipairs(events) do types[#types + 1] = e.type end
  return types, events
end

describe("crash and resume", function()
  local total, kinds

  it("runs uninterrupted, recording every event", function()
    local dir = setup_dir()
    local r = exec(dir)
    assert.are.equal(0, r.code, r.stderr)
    check_effects(dir)
    audit_ok(dir)
    local types = journal_types(dir)
    total, kinds = #types, types
    assert.are.equal("run.started", types[1])
    assert.are.equal("run.finished", types[#types])
    rb.rmtree(dir)
  end)

  it("is exactly-once after SIGKILL after every journal event", function()
    assert.truthy(total and total > 20)
    for k = 1, total - 1 do
      local dir = setup_dir()
      local p = rb.exec("crash.lua", { cwd = dir, params = { dir = dir }, start = true, env = { RUNBOOK_FAILPOINT = "after:" .. k } })
      assert.is_true(p:stopped(20), "process did not reach event " .. k)
      p:kill("KILL")
      local code, sig = p:wait(10)
      assert.are.equal(9, sig)
      local r = exec(dir)
      assert.are.equal(0, r.code, "resume after kill at event " .. k .. ": " .. r.stderr)
      check_effects(dir)
      audit_ok(dir)
      local types = journal_types(dir)
      assert.are.equal("run.resumed", types[k + 1], "kill at " .. k)
      rb.rmtree(dir)
    end
  end)

  it("cuts a half-written event, records the cut, and stays exactly-once", function()
    -- a torn memo is a memo never recorded: its fn runs again (at-least-once,
    -- by design), so tear the other events: step boundaries, checkpoints
    local points = {}
    for k = 2, total - 1 do
      if kinds[k] ~= "step.memo" then points[#points + 1] = k end
    end
    assert.truthy(#points >= 8)
    for _, k in ipairs(points) do
      local dir = setup_dir()
      local p = rb.exec("crash.lua", { cwd = dir, params = { dir = dir }, start = true, env = { RUNBOOK_FAILPOINT = "torn:" .. k } })
      assert.is_true(p:stopped(20))
      p:kill("KILL")
      p:wait(10)
      -- before the resume, verify reports the torn tail and fails
      local v = rb.run({ "audit", "verify", "last" }, { cwd = dir })
      assert.are.equal(1, v.code)
      assert.truthy(v.stderr:find("seq " .. k .. " is incomplete", 1, true), v.stderr)
      local r = exec(dir)
      assert.are.equal(0, r.code, r.stderr)
      check_effects(dir)
      audit_ok(dir)
      local types, events = journal_types(dir)
      assert.are.equal("journal.truncated", types[k])
      assert.are.equal(k, events[k].torn_seq)
      rb.rmtree(dir)
    end
  end)

  it("starts the run over a half-written first event (the cut is recorded first)", function()
    local dir = setup_dir()
    local p = rb.start({ "exec", "crash.lua", "--param", "dir=" .. dir }, { cwd = dir, env = { RUNBOOK_FAILPOINT = "torn:1" } })
    assert.is_true(p:stopped(20))
    p:kill("KILL")
    p:wait(10)
    local r = exec(dir)
    assert.are.equal(0, r.code, r.stderr)
    check_effects(dir)
    audit_ok(dir)
    local types = journal_types(dir)
    assert.are.equal("journal.truncated", types[1])
    assert.are.equal("run.started", types[2])
    assert.are.equal("run.finished", types[#types])
    rb.rmtree(dir)
  end)

  it("is exactly-once when killed while a step is in the middle of its work", function()
    for _, i in ipairs { 1, 2, 3 } do
      local dir = setup_dir()
      local env = { CRASH_SLEEP_AT = tostring(i) }
      local p = rb.exec("crash.lua", { cwd = dir, params = { dir = dir }, start = true, env = env })
      rb.wait_for("step " .. i .. " to start sleeping", function() return rb.exists(dir .. "/sleeping-" .. i) end)
      p:kill("KILL")
      p:wait(10)
      local r = exec(dir)
      assert.are.equal(0, r.code, r.stderr)
      check_effects(dir)
      audit_ok(dir)
      local _, events = journal_types(dir)
      -- S3 resumed from its checkpoint: its started event after the resume
      -- is the second one, and the loop did not redo finished iterations
      local started = 0
      for _, e in ipairs(events) do
        if e.type == "step.started" and e.step == "S3" then started = started + 1 end
      end
      assert.are.equal(2, started)
      rb.rmtree(dir)
    end
  end)

  it("keeps generated secrets out of the journal and the log in every form", function()
    local dir = setup_dir()
    local r = exec(dir)
    assert.are.equal(0, r.code)
    local pw = rb.read(dir .. "/effects"):match("S2 (%S+)")
    assert.truthy(pw)
    local forms = { pw, crypto.hex_encode(pw), crypto.base64_encode(pw), crypto.base64_encode(pw, true, false) }
    local _, path, run = rb.journal(dir .. "/.runbook")
    local files = { rb.read(path), rb.read(dir .. "/.runbook/runs/" .. run .. "/log"), r.stdout, r.stderr }
    for _, text in ipairs(files) do
      for _, f in ipairs(forms) do
        assert.is_nil(text:find(f, 1, true))
      end
    end
    rb.rmtree(dir)
  end)
end)
