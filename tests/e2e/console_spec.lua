-- The console as an operator sees it: on a terminal (a pty from
-- util-linux's script) the checklist's last line shows the run's elapsed
-- time and keeps it moving while a step is silent; after an interrupted
-- `exec --new` the closing line gives the command that resumes that run.
local rb = require "rbtest"
local host = require "runbook._host"
local proc = require "runbook._proc"

local dir

local function write(name, text) rb.write(dir .. "/" .. name, text) end

local function wait_for(path)
  local t0 = host.monotime()
  while not rb.exists(path) and host.monotime() - t0 < 30 do host.sleep(0.01) end
  return rb.exists(path)
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

before_each(function() dir = rb.tmpdir("console") end)
after_each(function() rb.rmtree(dir) end)

describe("the live checklist", function()
  it("shows the run's elapsed time, and keeps it moving while a step prints nothing", function()
    write("t.lua", [[
runbook "t" {}
step "A" { title = "quick", run = function() end }
step "B" { title = "silent and slow", run = function(ctx)
  local f = io.open(os.getenv("MARK"), "w") f:close()
  while not io.open(os.getenv("GO")) do ctx:sleep(0.02) end
end }
]])
    local cmd = string.format("cd %s && MARK=%s GO=%s NO_COLOR=1 exec %s exec t.lua", quote(dir), quote(dir .. "/running"),
      quote(dir .. "/go"), quote(rb.bin))
    local p = assert(proc.spawn { argv = { "script", "-qfec", cmd, "/dev/null" }, stdout = "pipe", stderr = "pipe" })
    local out, t0 = "", host.monotime()
    -- the clock moves on its own while B is silent: the thread rewrites the
    -- last line ("\27[1A\r\27[K" goes up one line and clears it) with later times
    local function ticks()
      local seen, list = {}, {}
      for t in out:gmatch("\27%[1A\r\27%[Kelapsed ([%d.]+s) · 1 of 2 steps complete") do
        if not seen[t] then seen[t] = true; list[#list + 1] = t end
      end
      return list
    end
    while #ticks() < 2 and host.monotime() - t0 < 60 do
      local chunk = p:read(4096, 0.5)
      if chunk == nil then break end
      out = out .. chunk
    end
    assert.truthy(rb.exists(dir .. "/running"), out)
    local list = ticks()
    assert.is_true(#list >= 2, out)
    assert.is_true(tonumber(list[2]:sub(1, -2)) > tonumber(list[1]:sub(1, -2)), out)
    assert.is_true(tonumber(list[1]:sub(1, -2)) >= 1, out)
    write("go", "")
    local r = p:communicate { timeout = 60 }
    out = out .. r.stdout
    assert.are.equal(0, r.code, out)
    -- the last checklist: both done, with the time it took in all
    assert.truthy(out:find("elapsed %d+%.%ds · 2 of 2 steps complete\r?\nrun t%-[%d-]+%x+ finished"), out)
  end)

  it("is not drawn, nor ticked, when stderr is not a terminal", function()
    write("p.lua", 'runbook "p" {}\nstep "A" { run = function() end }\n')
    local r = rb.run({ "exec", "p.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.is_nil(r.stderr:find("elapsed", 1, true))
    assert.is_nil(r.stderr:find("\27[", 1, true))
  end)
end)

describe("the resume hint", function()
  local BOOK = [[
runbook "i" { params = { tok = { secret = true, required = false }, ns = { default = "a" } } }
step "A" { run = function(ctx)
  if os.getenv("DONE") then return end
  local f = io.open(os.getenv("MARK"), "w") f:close()
  while true do ctx:sleep(0.01) end
end }
step "B" { run = function() end }
]]

  -- starts exec with args, interrupts it once step A runs; returns the result
  local function interrupted(args)
    os.remove(dir .. "/running")
    local argv = { rb.bin }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local p = assert(proc.spawn { argv = argv, cwd = dir, env = { MARK = dir .. "/running", NO_COLOR = "1" },
      stdout = "pipe", stderr = "pipe" })
    assert.is_true(wait_for(dir .. "/running"))
    p:kill("INT")
    local r = p:communicate { timeout = 60 }
    assert.are.equal(130, r.code, r.stderr)
    return r
  end

  it("after exec --new gives the command that resumes that run, not one that starts another", function()
    write("i.lua", BOOK)
    local state = dir .. "/my state"
    local r = interrupted { "exec", "i.lua", "--new", "--state", state, "--param", "tok=s3cret-t0ken", "--param", "ns=b" }
    local last = r.stderr:match("([^\n]+)\n$")
    local id = r.stderr:match("Starting (i%-[%d-]+%x+)")
    assert.are.equal(" interrupted during A; run `runbook exec i.lua --state '" .. state .. "' --param tok=...` to resume",
      last:match("Z( .*)$"))
    -- the command resumes that very run, with the params it recorded
    local again = rb.run({ "exec", "i.lua", "--state", state, "--param", "tok=s3cret-t0ken" }, { cwd = dir,
      env = { DONE = "1" } })
    assert.are.equal(0, again.code, again.stderr)
    assert.truthy(again.stderr:find("Resuming " .. id, 1, true), again.stderr)
    assert.are.equal(1, #(require("runbook._fs").listdir(state .. "/runs")))
    -- a second --new run interrupted before it ends says the same of itself
    r = interrupted { "exec", "i.lua", "--new", "--state", state, "--yes" }
    last = r.stderr:match("([^\n]+)\n$")
    assert.are.equal(" interrupted during A; run `runbook exec i.lua --state '" .. state .. "' --yes` to resume", last:match("Z( .*)$"))
  end)

  it("without --new still says to run the same command again", function()
    write("i.lua", BOOK)
    local r = interrupted { "exec", "i.lua" }
    assert.truthy(r.stderr:find("interrupted during A; run the same command again to resume\n", 1, true), r.stderr)
  end)
end)
