-- What a memo or a step's outputs hold comes back byte for byte on every
-- resume, secrets included (sealed, never scrubbed); what cannot be
-- recorded (a function, a userdata) fails the step with a clear message.
local rb = require "rbtest"

local dir
before_each(function() dir = rb.tmpdir("recorded") end)
after_each(function() rb.rmtree(dir) end)

local function exec(env)
  return rb.run({ "exec", "r.lua" }, { cwd = dir, env = env })
end

local function of_type(evs, t, key)
  for _, e in ipairs(evs) do
    if e.type == t and (key == nil or e.key == key) then return e end
  end
end

describe("a plain string holding a secret", function()
  it("comes back the same from ctx:once and ctx.outputs on resume, sealed in the journal", function()
    rb.write(dir .. "/r.lua", [[
local secret = require "runbook.secret"
runbook "plain" {}
local function note(line)
  local f = assert(io.open(os.getenv("OUT"), "a")) f:write(line, "\n") f:close()
end
step "a" { run = function(ctx)
  local s = ctx:once("s", function() return secret.random { bytes = 16, encoding = "hex" } end)
  local plain = ctx:once("plain", function() return "conn=" .. s:reveal() end)
  note("a " .. tostring(plain == "conn=" .. s:reveal()) .. " " .. type(plain))
  local f = assert(io.open(os.getenv("EXPECT"), "w")) f:write("conn=" .. s:reveal()) f:close()
  if not io.open(os.getenv("GO1")) then error("first attempt stops here") end
  return { plain = plain, list = { "x", plain } }
end }
step "b" { needs = "a", run = function(ctx)
  local want = assert(io.open(os.getenv("EXPECT"))):read("a")
  local o = ctx.outputs.a
  note("b " .. tostring(o.plain == want) .. " " .. tostring(o.list[2] == want) .. " " .. type(o.plain))
  if not io.open(os.getenv("GO2")) then error("first attempt stops here") end
end }
]])
    local env = { OUT = dir .. "/out", EXPECT = dir .. "/expect", GO1 = dir .. "/go1", GO2 = dir .. "/go2" }
    assert.are.equal(1, exec(env).code)            -- a records its memos, then fails
    rb.write(dir .. "/go1", "")
    assert.are.equal(1, exec(env).code)            -- a resumes from the memos; b fails
    rb.write(dir .. "/go2", "")
    local r = exec(env)                             -- b reads a's outputs back from the journal
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("a true string\na true string\nb true true string\nb true true string\n", rb.read(dir .. "/out"))
    local evs, path = rb.journal(dir .. "/.runbook")
    local memo = of_type(evs, "step.memo", "plain")
    assert.are.equal(true, memo.value["$secret"].plain)
    local fin = of_type(evs, "step.finished")
    assert.truthy(fin.outputs.plain["$secret"])
    local text = rb.read(path)
    assert.is_nil(text:find(rb.read(dir .. "/expect"), 1, true))
    assert.is_nil(text:find("[REDACTED]", 1, true))
  end)
end)

describe("a value that cannot be recorded", function()
  it("in a step's outputs fails the step (exit 1) with a clear message, no traceback", function()
    rb.write(dir .. "/r.lua", [[
runbook "fnout" {}
step "a" { run = function() return { ok = true, f = function() end } end }
]])
    local r = exec()
    assert.are.equal(1, r.code, r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
    local evs = rb.journal(dir .. "/.runbook")
    local failed = of_type(evs, "step.failed")
    assert.truthy(failed, "no step.failed")
    assert.are.equal("the step's return value (at f) is a function, which cannot be recorded (only JSON data, secrets or nil)", failed.error.message)
    assert.are.equal("run.failed", evs[#evs].type)
  end)

  it("from ctx:once fails the step and records no memo", function()
    rb.write(dir .. "/r.lua", [[
runbook "udmemo" {}
-- io.stdout is nil inside the sandbox; an open file is a userdata too
step "a" { run = function(ctx) ctx:once("out", function() return io.open(os.getenv("OUT"), "w") end) end }
]])
    local r = exec { OUT = dir .. "/out" }
    assert.are.equal(1, r.code, r.stderr)
    local evs = rb.journal(dir .. "/.runbook")
    assert.is_nil(of_type(evs, "step.memo"))
    local failed = of_type(evs, "step.failed")
    assert.are.equal("ctx:once('out'): the result is a userdata, which cannot be recorded (only JSON data, secrets or nil)", failed.error.message)
  end)
end)
