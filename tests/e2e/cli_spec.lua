-- The command line as a user meets it: did-you-mean, options from the
-- environment, exit codes, version, the completion helper.
local rb = require "rbtest"

local dir

local BOOK = [[
runbook "envs" { params = { who = { default = "nobody" }, n = { default = 1 } } }
step "A" { run = function(ctx) ctx:log("who=%s n=%s", ctx.params.who, ctx.params.n) end }
manual "B" { instructions = "do it" }
step "C" { needs = "B", run = function() end }
]]

local function run(args, env) return rb.run(args, { cwd = dir, env = env }) end

before_each(function()
  dir = rb.tmpdir("cli")
  rb.write(dir .. "/envs.lua", BOOK)
end)
after_each(function() rb.rmtree(dir) end)

describe("a mistyped command or option", function()
  it("is refused with the nearest one", function()
    local r = run { "exce", "envs.lua" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: unknown command 'exce' (did you mean 'exec'?) (see runbook --help)\n", r.stderr)
    r = run { "exec", "envs.lua", "--dryrun" }
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: exec: unknown option --dryrun (did you mean '--dry-run'?) (see runbook exec --help)\n", r.stderr)
    r = run { "status", "--outptu=json" }
    assert.are.equal("runbook: status: unknown option --outptu (did you mean '--output'?) (see runbook status --help)\n", r.stderr)
    r = run { "frobnicate" }
    assert.are.equal("runbook: unknown command 'frobnicate' (see runbook --help)\n", r.stderr)
    r = run { "audit", "verfy", "last" }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("audit: unknown subcommand 'verfy' (did you mean 'verify'?)", 1, true), r.stderr)
    r = run { "exec", "envs.lua", "--from" }
    assert.are.equal("runbook: exec: option --from needs a value (--from STEP)\n", r.stderr)
  end)
end)

describe("options from the environment", function()
  it("are used when the command line does not give them, which wins", function()
    local state = dir .. "/elsewhere"
    local r = run({ "exec", "envs.lua" }, { RUNBOOK_STATE = state, RUNBOOK_PARAM_who = "env", RUNBOOK_YES = "1",
      RUNBOOK_OUTPUT = "json" })
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(rb.exists(state .. "/runs"), "RUNBOOK_STATE was not used")
    assert.truthy(r.stdout:find("who=env n=1", 1, true), r.stdout)
    assert.truthy(r.stdout:find('^{'), "RUNBOOK_OUTPUT=json was not used")
    -- the command line beats the environment, param by param
    r = run({ "exec", "envs.lua", "--new", "--param", "who=flag" },
      { RUNBOOK_STATE = state, RUNBOOK_PARAM_who = "env", RUNBOOK_PARAM_n = "7" })
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("who=flag n=7", 1, true), r.stderr)
    -- flags take 1 or 0; anything else is a usage error naming the variable
    r = run({ "exec", "envs.lua" }, { RUNBOOK_STATE = state, RUNBOOK_NEW = "0", RUNBOOK_DRY_RUN = "perhaps" })
    assert.are.equal(2, r.code)
    assert.are.equal("runbook: RUNBOOK_DRY_RUN=perhaps: expected 1 or 0 (for --dry-run)\n", r.stderr)
    r = run({ "exec", "envs.lua" }, { RUNBOOK_STATE = state, RUNBOOK_ONLY = "Z" })
    assert.are.equal(2, r.code)
    r = run({ "runs" }, { RUNBOOK_STATE = state, RUNBOOK_OUTPUT = "yaml" })
    assert.are.equal("runbook: runs: --output must be text or json, not 'yaml'\n", r.stderr)
    r = run({ "log", "last", "--output", "text" }, { RUNBOOK_STATE = state, RUNBOOK_STEP = "A" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("step.started", 1, true), r.stdout)
    assert.falsy(r.stdout:find("run.started", 1, true), r.stdout)
  end)
end)

describe("exit codes", function()
  it("are 2 for a configuration error, in a step or at load", function()
    rb.write(dir .. "/cfg.lua", [[
local errors = require "runbook.errors"
runbook "cfg" {}
step "K" { retry = 3, run = function() errors.raise { kind = "config", code = "kubeconfig", message = "context \"prod\" not found" } end }
]])
    local r = run { "exec", "cfg.lua" }
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("K: configuration error", 1, true), r.stderr)
    rb.write(dir .. "/cfg2.lua", [[
require("runbook.errors").raise { kind = "config", message = "no kubeconfig" }
]])
    r = run { "check", "cfg2.lua" }
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("no kubeconfig", 1, true), r.stderr)
  end)
end)

describe("runbook version", function()
  it("names the commit and the libraries, loading the dlopen'ed ones", function()
    local r = run { "version" }
    assert.are.equal(0, r.code, r.stderr)
    local first = r.stdout:match("^[^\n]+")
    assert.truthy(first:match("^runbook %d+%.%d+%.%d+ %(commit [%x]+[%+%w]*%)$") or first:match("%(commit unknown%)$"), first)
    for _, lib in ipairs { "Lua", "OpenSSL", "jansson", "libyaml" } do
      assert.truthy(r.stdout:find("\n  " .. lib .. " +%S"), lib)
    end
    assert.truthy(r.stdout:find("\n  Lua       Lua 5%.4%.%d+\n"), r.stdout)
    assert.truthy(r.stdout:find("\n  libcurl   %d+%.%d+%.%d+ %(libcurl%.so%.4, loaded on demand%)\n"), r.stdout)
    assert.truthy(r.stdout:find("\n  libpq     %d+%.%d+ %(libpq%.so%.5, loaded on demand%)\n"), r.stdout)
    assert.truthy(r.stdout:find("\n  hiredis   0%.14%.%d+ %(libhiredis%.so%.0%.14, loaded on demand%)\n"), r.stdout)
    local j = require("runbook._json").decode(run({ "version", "--output", "json" }).stdout)
    assert.are.equal("libpq5", j.libraries.libpq.package)
    assert.is_true(j.libraries.libcurl.loaded)
    assert.are.equal(first:match("commit ([^)]+)"), j.commit)
  end)

  it("says which package to install when a library cannot be loaded", function()
    -- an empty library path cannot hide a system library; a preloaded
    -- shim cannot either. Point the loader at a broken copy instead: a
    -- directory holding a file named like the soname that is not a library.
    local libdir = dir .. "/lib"
    assert(require("runbook._fs").mkdir_p(libdir))
    rb.write(libdir .. "/libpq.so.5", "not a library")
    local r = run({ "version" }, { LD_LIBRARY_PATH = libdir })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("\n  libpq     not loaded: cannot load libpq.so.5 (install the Debian package libpq5): ", 1, true), r.stdout)
  end)
end)

describe("runbook __complete", function()
  it("lists run ids, a run's steps and a runbook's steps, and nothing on error", function()
    assert.are.equal(3, run({ "exec", "envs.lua" }).code)
    local runs = run { "__complete", "runs" }
    local id = runs.stdout:match("^(envs%-%S+)\nlast\n$")
    assert.truthy(id, runs.stdout)
    assert.are.equal("A\nB\nC\n", run({ "__complete", "steps", "last" }).stdout)
    assert.are.equal("A\nB\nC\n", run({ "__complete", "steps", id:sub(1, 12) }).stdout)
    assert.are.equal("A\nB\nC\n", run({ "__complete", "file-steps", "envs.lua" }).stdout)
    local none = run { "__complete", "runs", "--state", dir .. "/nothing-here" }
    assert.are.equal(0, none.code)
    assert.are.equal("", none.stdout .. none.stderr)
    none = run { "__complete", "file-steps", "missing.lua" }
    assert.are.equal("", none.stdout .. none.stderr)
  end)
end)
