-- runbook._engine.loader: a runbook file becomes a book (name, params, steps
-- in order) in a sandboxed environment, with every mistake reported at the
-- runbook's file and line. In-process, without running a step.
local loader = require "runbook._engine.loader"
local rbtest = require "rbtest"

local dir
local function book_of(src)
  local path = dir .. "/book.lua"
  rbtest.write(path, src)
  return loader.load(path)
end
local function load_error(src)
  local ok, err = pcall(book_of, src)
  assert.is_false(ok, "the runbook loaded")
  return tostring(err), err
end

describe("runbook._engine.loader", function()
  setup(function() dir = rbtest.tmpdir("loader") end)
  teardown(function() rbtest.rmtree(dir) end)

  it("collects the name, params and steps, with defaults filled in", function()
    local book = book_of [[
runbook "demo" { description = "d", params = { ns = { default = "x" }, n = 3 } }
step "a" { title = "A", run = function() end }
manual "b" { instructions = "do it", needs = "a" }
]]
    assert.are.equal("demo", book.name)
    assert.are.equal("d", book.description)
    assert.are.same({ default = "x" }, book.params.ns)
    assert.are.same({ default = 3 }, book.params.n, "a bare value is the default")
    assert.are.equal(2, #book.steps)
    local a, b = book.by_id.a, book.by_id.b
    assert.are.equal("A", a.title)
    assert.are.equal("b", b.title, "the id is the title when none is given")
    assert.are.same({ "a" }, b.needs, "a single need becomes a list")
    assert.are.same({ attempts = 1, backoff = "exponential", delay = 1, max_delay = 60 }, a.retry)
    assert.are.equal("manual", b.kind)
    assert.are.equal(2, a.site.line)
    assert.are.equal(64, #book.sha256)
  end)

  it("orders steps by declaration, moved only as far as needs require", function()
    local book = book_of [[
runbook "order" {}
step "c" { needs = { "b" }, run = function() end }
step "a" { run = function() end }
step "b" { needs = "a", run = function() end }
step "d" { run = function() end }
]]
    local ids = {}
    for _, s in ipairs(book.order) do ids[#ids + 1] = s.id end
    assert.are.same({ "a", "b", "c", "d" }, ids)
    assert.are.equal(3, book.by_id.c.position)
  end)

  it("normalizes retry: a number of attempts or a table", function()
    local book = book_of [[
runbook "r" {}
step "a" { retry = 3, run = function() end }
step "b" { retry = { attempts = 2, backoff = "linear", delay = 0.5 }, run = function() end }
]]
    assert.are.same({ attempts = 3, backoff = "exponential", delay = 1, max_delay = 60 }, book.by_id.a.retry)
    assert.are.same({ attempts = 2, backoff = "linear", delay = 0.5, max_delay = 60 }, book.by_id.b.retry)
  end)

  it("puts the steps of a parallel group in the group", function()
    local book = book_of [[
runbook "p" {}
parallel "fan" {
  step "x" { run = function() end },
  step "y" { run = function() end },
}
]]
    assert.are.equal(1, #book.groups)
    assert.are.same({ "x", "y" }, book.groups[1].steps)
    assert.are.equal("fan", book.by_id.y.group)
  end)

  it("reports mistakes at the runbook's file and line", function()
    local path = dir .. "/book.lua"
    local cases = {
      { 'runbook "x" {}\nstep "a" { run = function() end }\nstep "a" { run = function() end }',
        path .. ":3: duplicate step id 'a' (first declared at line 2)" },
      { 'runbook "x" {}\nstep "a" { }', path .. ":2: step a: run function required" },
      { 'runbook "x" {}\nmanual "m" { }', path .. ":2: manual m: instructions required" },
      { 'runbook "x" {}\nstep "a" { needs = "zz", run = function() end }', path .. ":2: step a needs unknown step 'zz'" },
      { 'runbook "x" {}\nstep "a" { needs = "a", run = function() end }', path .. ":2: step a needs itself" },
      { 'runbook "x" {}\nstep "a" { retry = { attempts = 0 }, run = function() end }', path .. ":2: step a: retry.attempts must be a positive integer" },
      { 'runbook "x" {}\nstep "a" { retry = { backoff = "random" }, run = function() end }', path .. ":2: step a: retry.backoff must be fixed, linear or exponential" },
      { 'runbook "x" {}\nstep "a" { timeout = -1, run = function() end }', path .. ":2: step a: timeout must be positive" },
      { 'runbook "bad name" {}', path .. ":1: runbook: name 'bad name' may use only letters, digits, '.', '_' and '-'" },
      { 'runbook "x" {}\nrunbook "x" {}\nstep "a" { run = function() end }', path .. ":2: runbook declared twice (first at line 1)" },
      { 'runbook "x" { params = { ["a-b"] = {} } }', path .. ":1: runbook x: param name 'a-b' must be an identifier" },
      { 'runbook "x" { params = { p = { type = "list" } } }', path .. ":1: param p: type must be string, number, integer or boolean" },
    }
    for _, c in ipairs(cases) do
      local msg = load_error(c[1])
      assert.are.equal(c[2], msg:sub(1, #c[2]), c[1])
    end
  end)

  it("finds cycles and names them", function()
    local msg = load_error [[
runbook "cyc" {}
step "a" { needs = "c", run = function() end }
step "b" { needs = "a", run = function() end }
step "c" { needs = "b", run = function() end }
]]
    assert.is_truthy(msg:find("steps form a cycle: a -> c -> b -> a", 1, true), msg)
  end)

  it("refuses a file with no steps", function()
    local msg = load_error 'runbook "empty" {}'
    assert.are.equal(dir .. "/book.lua: no steps declared", msg:sub(-#(dir .. "/book.lua: no steps declared")))
  end)

  it("gives runbooks no way around the primitives", function()
    local book = book_of [[
runbook "sandbox" {}
HAS = { execute = os.execute ~= nil, popen = io.popen ~= nil, package = rawget(_ENV, "package") ~= nil,
        debug = rawget(_ENV, "debug") ~= nil, dofile = rawget(_ENV, "dofile") ~= nil }
step "a" { run = function() end }
]]
    assert.are.same({ execute = false, popen = false, package = false, debug = false, dofile = false }, rawget(book.env, "HAS"))
    local undef = load_error 'runbook "u" {}\nlocal x = stpe\nstep "a" { run = function() end }'
    assert.is_truthy(undef:find("undefined global 'stpe'", 1, true), undef)
    local msg = load_error 'runbook "b" {}\nlocal x = load(string.dump(function() end), "x", "b")\nstep "a" { run = function() end }'
    assert.is_truthy(msg:find("load: only text chunks may be loaded in a runbook", 1, true), msg)
    msg = load_error 'runbook "c" {}\nlocal k = require "runbook._engine.engine"\nstep "a" { run = function() end }'
    assert.is_truthy(msg:find("module 'runbook._engine.engine' is not available to runbooks", 1, true), msg)
  end)

  it("records the local modules a runbook loads, with their hashes", function()
    rbtest.write(dir .. "/mylib.lua", "return { answer = 42 }")
    local book = book_of [[
runbook "mods" {}
local lib = require "mylib"
assert(lib.answer == 42)
step "a" { run = function() end }
]]
    assert.are.equal(1, #book.modules)
    assert.are.equal("mylib", book.modules[1].name)
    assert.are.equal(dir .. "/mylib.lua", book.modules[1].path)
    assert.are.equal(64, #book.modules[1].sha256)
  end)
end)
