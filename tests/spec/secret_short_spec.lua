-- A short secret (moto's "test") turns every occurrence of the word into
-- [REDACTED], step titles included. It stays redacted, but a real run of
-- `runbook exec` warns once per secret, without showing it: on stderr for
-- a parameter (read before the first step), in the step's log and on the
-- console for one made inside a step.
local rbtest = require "rbtest"

local BOOK = [==[
local secret = require "runbook.secret"

runbook "short" {
  params = { token = { secret = true, env = "SHORT_TOKEN" } },
}

step "deploy" {
  title = "test the deploy",
  run = function(ctx)
    -- the same value again: already warned about
    local again = secret.wrap(ctx.params.token:reveal())
    secret.register(ctx.params.token:reveal())
    -- a new short one, made inside the step, twice
    local pin = secret.wrap("q7z2x")
    local pin2 = secret.wrap("q7z2x")
    ctx:log("made " .. tostring(again) .. " " .. tostring(pin) .. " " .. tostring(pin2) .. "; a test value")
  end,
}
]==]

local LONG = [==[
runbook "long" {
  params = { token = { secret = true, env = "SHORT_TOKEN" } },
}

step "deploy" {
  title = "test the deploy",
  run = function(ctx) ctx:log("ran") end,
}
]==]

local function count(text, plain)
  local n, at = 0, 1
  while true do
    local s, e = text:find(plain, at, true)
    if not s then return n end
    n, at = n + 1, e + 1
  end
end

local PARAM_WARNING = "runbook: warning: a secret of 4 characters is shorter than 8: it is still redacted, "
  .. "so every occurrence of the same text, even inside other words and step titles, shows as [REDACTED]; "
  .. "use a longer secret to avoid this"
local STEP_WARNING = "a secret of 5 characters (registered at "

describe("a short secret", function()
  local dir

  setup(function()
    dir = rbtest.tmpdir("secret-short")
    rbtest.write(dir .. "/short.lua", BOOK)
    rbtest.write(dir .. "/long.lua", LONG)
  end)
  teardown(function()
    if dir then rbtest.rmtree(dir) end
  end)

  local function exec(book, state, token, extra)
    local args = { "exec", dir .. "/" .. book, "--state", dir .. "/" .. state, "--new" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return rbtest.run(args, { env = { SHORT_TOKEN = token }, timeout = 60 })
  end

  it("is redacted, with one warning per secret that does not show it", function()
    local r = exec("short.lua", "state", "test")
    assert.are.equal(0, r.code, r.stderr)
    local console = r.stdout .. r.stderr
    -- still redacted everywhere, the step title too
    assert.is_nil(console:find("test", 1, true), console)
    assert.is_truthy(console:find("made [REDACTED] [REDACTED] [REDACTED]; a [REDACTED] value", 1, true), console)
    -- the parameter: once, on stderr, before the run
    assert.are.equal(1, count(r.stderr, PARAM_WARNING), r.stderr)
    assert.are.equal(1, count(r.stderr, "runbook: warning: a secret of 4 characters"), r.stderr)
    -- the one made in the step: once, in the step's log line
    assert.are.equal(1, count(r.stderr, STEP_WARNING), r.stderr)
    assert.is_nil(r.stderr:find("q7z2x", 1, true), r.stderr)
    local line = r.stderr:match("[^\n]*" .. STEP_WARNING:gsub("%p", "%%%0") .. "[^\n]*")
    assert.is_truthy(line:find("deploy", 1, true), line)
    assert.is_truthy(line:find(") is shorter than 8: it is still redacted", 1, true), line)

    -- what the operator saw in `runbook status`, and now has a reason for
    local st = rbtest.run { "status", "--state", dir .. "/state" }
    assert.are.equal(0, st.code, st.stderr)
    assert.is_truthy(st.stdout:find("deploy     done        1        %d+ms      %[REDACTED%] the deploy\n"), st.stdout)

    local runs = require("runbook._fs").listdir(dir .. "/state/runs")
    local log = rbtest.read(dir .. "/state/runs/" .. runs[1] .. "/log")
    assert.are.equal(1, count(log, STEP_WARNING), log)
    assert.is_truthy(log:find("deploy warn " .. STEP_WARNING, 1, true), log)
    assert.is_nil(log:find("test", 1, true), log)
    assert.is_nil(log:find("q7z2x", 1, true), log)
  end)

  it("warns in the JSON console as a log line of the step", function()
    local r = exec("short.lua", "state-json", "test", { "--output", "json" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(1, count(r.stderr, PARAM_WARNING), r.stderr)
    local json = require "runbook._json"
    local warnings = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev and ev.type == "log" and ev.level == "warn" then warnings[#warnings + 1] = ev end
    end
    assert.are.equal(1, #warnings, r.stdout)
    assert.are.equal("deploy", warnings[1].step)
    assert.is_truthy(warnings[1].message:find(STEP_WARNING, 1, true), warnings[1].message)
    assert.is_nil(r.stdout:find("q7z2x", 1, true))
  end)

  it("of 8 characters or more gives no warning", function()
    local r = exec("long.lua", "state-long", "test-long-enough")
    assert.are.equal(0, r.code, r.stderr)
    assert.is_nil(r.stderr:find("warning", 1, true), r.stderr)
    local st = rbtest.run { "status", "--state", dir .. "/state-long" }
    assert.are.equal(0, st.code, st.stderr)
    assert.is_truthy(st.stdout:find("test the deploy", 1, true), st.stdout)
  end)
end)
