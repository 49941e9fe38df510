-- Messages that suggest the fix, and `runbook check` reporting every
-- problem of a runbook at once: missing params, undefined globals inside
-- step functions, unknown needs and cycles.
local rb = require "rbtest"

local dir

local function write(name, text) rb.write(dir .. "/" .. name, text) end

local function run(args, env)
  return rb.run(args, { cwd = dir, env = env })
end

before_each(function() dir = rb.tmpdir("check") end)
after_each(function() rb.rmtree(dir) end)

describe("did you mean", function()
  it("suggests the module a mistyped require meant", function()
    write("m.lua", 'runbook "m" {}\nlocal k8s = require "runbook.k8"\nstep "A" { run = function() end }\n')
    local r = run { "exec", "m.lua" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: m.lua:2: module 'runbook.k8' is not available to runbooks (did you mean 'runbook.k8s'?)\n", r.stderr)
    write("j.lua", 'runbook "j" {}\nlocal json = require "json"\nstep "A" { run = function() end }\n')
    r = run { "check", "j.lua" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: j.lua:2: module 'json' not found in the runbook's folder or RUNBOOK_PATH (did you mean 'runbook.json'?):\n\t"
      .. dir .. "/json.lua\n\t" .. dir .. "/json/init.lua\n", r.stderr)
    -- a private module gets no hint at its public neighbour's expense
    write("p.lua", 'runbook "p" {}\nlocal c = require "runbook.k8s._client"\nstep "A" { run = function() end }\n')
    r = run { "check", "p.lua" }
    assert.are.equal("runbook: p.lua:2: module 'runbook.k8s._client' is not available to runbooks\n", r.stderr)
  end)

  it("suggests the param a mistyped --param meant", function()
    write("p.lua", 'runbook "p" { params = { namespace = { default = "x" }, replicas = { default = 1 } } }\nstep "A" { run = function() end }\n')
    local r = run { "exec", "p.lua", "--param", "namespce=prod" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: unknown param 'namespce' (did you mean 'namespace'?)\n", r.stderr)
    r = run { "exec", "p.lua", "--param", "zzz=1" }
    assert.are.equal("runbook: unknown param 'zzz' (declared: namespace, replicas)\n", r.stderr)
  end)

  it("suggests the global a typo meant, at load and inside a step", function()
    write("g.lua", 'runbook "g" {}\nstpe "A" { run = function() end }\n')
    local r = run { "exec", "g.lua" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: g.lua:2: undefined global 'stpe' (did you mean 'step'?)\n", r.stderr)
    write("s.lua", 'runbook "s" {}\nstep "A" { run = function(ctx) ctx:log(tostrin(1)) end }\n')
    r = run { "exec", "s.lua", "--state", dir .. "/st" }
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("s.lua:2: undefined global 'tostrin' (did you mean 'tostring'?)", 1, true), r.stderr)
  end)
end)

describe("exec", function()
  it("names every missing param in one message", function()
    write("p.lua", [[
runbook "p" { params = {
  context = {},
  db = { env = "CHECK_SPEC_DB_UNSET", secret = true },
  ns = { default = "x" },
  replicas = { type = "integer" },
  debug = { required = false },
} }
step "A" { run = function() end }
]])
    local r = run { "exec", "p.lua", "--state", dir .. "/st" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: missing required params 'context' (set --param context=...), 'db' (set --param db=... "
      .. "or the environment variable CHECK_SPEC_DB_UNSET) and 'replicas' (set --param replicas=...)\n", r.stderr)
    r = run({ "exec", "p.lua", "--state", dir .. "/st", "--param", "replicas=2" }, { CHECK_SPEC_DB_UNSET = "postgres://u:s3cret@db/app" })
    assert.are.equal("runbook: missing required param 'context' (set --param context=...)\n", r.stderr)
  end)
end)

describe("runbook check", function()
  local BOOK = [[
local shared = require "lib"
runbook "c" { params = {
  namespace = { default = "tezca" },
  db = { env = "CHECK_SPEC_DB_UNSET" },
  context = {},
} }
local helper = function() return 1 end
step "A" { run = function(ctx)
  counter = (counter or 0) + helper()
  return stpe
end }
step "B" { needs = { "a", "C" }, run = function(ctx)
  local _ENV = { x = 1 }
  return x + y
end }
step "C" { needs = "B", run = function(ctx)
  ctx:log(tabel.concat { shared.name, string.format("%d", 1) })
end }
manual "D" { instructions = "x", verify = function() return os.time() > 0 and defined_later end }
step "E" { needs = "D", run = function() return unknown_fn(function() return still_missing end) end }
function defined_later_helper() end
defined_later = true
]]

  it("reports every problem at once, each with its file and line, exit 2", function()
    write("c.lua", BOOK)
    write("lib.lua", "return { name = 'lib', run = function() return libtypo end }\n")
    local r = run { "check", "c.lua", "--param", "namespce=x" }
    assert.are.equal(2, r.code)
    assert.are.equal("", r.stdout)
    assert.are.equal(table.concat({
      "c.lua:12: step B needs unknown step 'a' (did you mean 'A'?)",
      "c.lua:12: steps form a cycle: B -> C -> B",
      "c.lua:10: undefined global 'stpe' (did you mean 'step'?)",
      "c.lua:17: undefined global 'tabel' (did you mean 'table'?)",
      "c.lua:20: undefined global 'unknown_fn'",
      "c.lua:20: undefined global 'still_missing'",
      dir .. "/lib.lua:1: undefined global 'libtypo'",
      "c.lua: missing required param 'context' (set --param context=...)",
      "c.lua: missing required param 'db' (set --param db=... or the environment variable CHECK_SPEC_DB_UNSET)",
      "c.lua: unknown param 'namespce' (did you mean 'namespace'?)",
      "runbook: c.lua: 10 problems",
    }, "\n") .. "\n", r.stderr)
  end)

  it("passes a clean runbook, with the params it needs from the environment", function()
    write("ok.lua", [[
runbook "ok" { params = { db = { env = "CHECK_SPEC_DB" }, ns = { default = "x" } } }
step "A" { run = function(ctx) return string.upper(ctx.params.ns) end }
parallel { step "B" { run = function() end }, step "C" { run = function() end } }
]])
    local r = run({ "check", "ok.lua" }, { CHECK_SPEC_DB = "postgres://x" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("ok.lua: ok — runbook ok, 3 steps (0 manual), 1 parallel group(s)\n", r.stdout)
    r = run { "check", "ok.lua" }
    assert.are.equal(2, r.code)
    assert.are.equal("ok.lua: missing required param 'db' (set --param db=... or the environment variable CHECK_SPEC_DB)\nrunbook: ok.lua: 1 problem\n", r.stderr)
  end)
end)

describe("the static pass over globals", function()
  local globals = require "runbook._engine.globals"

  it("finds reads and writes of the chunk's _ENV only, with their lines, through nested functions", function()
    local src = {}
    src[#src + 1] = "local a = 1"
    src[#src + 1] = "local function f()"
    src[#src + 1] = "  local _ENV = { z = 1 }"
    src[#src + 1] = "  return z, function() return zz end"  -- zz reads the local _ENV: not a global
    src[#src + 1] = "end"
    src[#src + 1] = "g = function() return function() return function() return deep end end end"
    -- a long function: its lines come from the absolute line marks too
    src[#src + 1] = "function long()"
    src[#src + 1] = "  local v = {}"
    for i = 1, 300 do src[#src + 1] = "  v[" .. i .. "] = " .. i end
    src[#src + 1] = "  return far_away"
    src[#src + 1] = "end"
    local acc = assert(globals.accesses(table.concat(src, "\n") .. "\n", "=t"))
    local got = {}
    for _, x in ipairs(acc) do got[#got + 1] = string.format("%s %s %d %s", x.kind, x.name, x.line, tostring(x.in_function)) end
    table.sort(got)
    assert.are.same({
      "get deep 6 true",
      "get far_away 309 true",
      "set g 6 false",
      "set long 7 false",
    }, got)
  end)

  it("finds globals named past the 256th constant, reached through registers", function()
    local src = { "local t = {}", "function many()" }
    for i = 1, 300 do src[#src + 1] = string.format("  t.k%d = 's%d'", i, i) end
    src[#src + 1] = "  t.zname = 1"
    src[#src + 1] = "  far_set = t.zname + far_get"
    src[#src + 1] = "end"
    local acc = assert(globals.accesses(table.concat(src, "\n") .. "\n", "=t"))
    local got = {}
    for _, x in ipairs(acc) do got[#got + 1] = string.format("%s %s %d", x.kind, x.name, x.line) end
    table.sort(got)
    assert.are.same({ "get far_get 304", "set far_set 304", "set many 2" }, got)
  end)

  it("says why when the source does not compile", function()
    local acc, err = globals.accesses("local x = ", "=t")
    assert.is_nil(acc)
    assert.are.equal("t:1: unexpected symbol near <eof>", err)
  end)
end)
