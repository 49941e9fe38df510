-- `runbook init`: the starter project checks, runs its first steps without
-- a cluster (the k8s step skipped by its param), and its own spec passes
-- under `runbook test`.
local rb = require "rbtest"
local json = require "runbook._json"

local dir

before_each(function() dir = rb.tmpdir("init") end)
after_each(function() rb.rmtree(dir) end)

local function run(args, env) return rb.run(args, { cwd = dir, env = env }) end

describe("runbook init", function()
  it("writes a runbook that checks, runs on a laptop and has a passing spec", function()
    local r = run { "init", "shop" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("^wrote shop%.lua, spec/shop_spec%.lua, db/migrations/%d+_create_example%.sql, %.luarc%.json, %.gitignore\n"), r.stdout)
    local book = rb.read(dir .. "/shop.lua")
    for _, want in ipairs { 'runbook "shop"', "params = {", "ctx:once(", 'manual "dns"', "verify = function",
      "cluster:apply", "pg.migrate", "k8s = { type = \"boolean\"" } do
      assert.truthy(book:find(want, 1, true), want)
    end
    assert.are.equal(".runbook/\n", rb.read(dir .. "/.gitignore"))
    local luarc = json.decode(rb.read(dir .. "/.luarc.json"))
    assert.are.equal("Lua 5.4", luarc["runtime.version"])
    -- a build tree points at the source tree's stubs
    assert.are.equal(rb.source_dir .. "/meta", luarc["workspace.library"][1])
    assert.truthy(rb.exists(luarc["workspace.library"][1] .. "/runbook.lua"))

    r = run { "check", "shop.lua" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("shop.lua: ok", 1, true), r.stdout)

    -- without a cluster: password made, k8s skipped, the manual step waits
    r = run { "exec", "shop.lua", "--param", "k8s=false", "--output", "json" }
    assert.are.equal(3, r.code, r.stderr)
    local finished, waiting = {}, nil
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev.type == "step.finished" then finished[#finished + 1] = ev.step end
      if ev.type == "step.waiting" then waiting = ev.step end
    end
    assert.are.same({ "password", "apply" }, finished)
    assert.are.equal("dns", waiting)
    -- after the confirmation the migration step runs (no database given: it says so)
    assert.are.equal(0, run({ "confirm", "last", "dns", "--note", "done" }).code)
    r = run({ "exec", "shop.lua", "--param", "k8s=false" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("no db_url (or DATABASE_URL): migrations not run", 1, true), r.stderr)

    r = run { "test", "spec/" }
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.truthy(r.stdout:find("\n2 passed, 0 failed, 0 skipped\n", 1, true), r.stdout)
  end)

  it("names the runbook after the directory, and writes nothing over existing files", function()
    local sub = dir .. "/billing-api"
    assert(require("runbook._fs").mkdir_p(sub))
    rb.write(sub .. "/.gitignore", "node_modules/")
    local r = rb.run({ "init" }, { cwd = sub })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(rb.exists(sub .. "/billing-api.lua"))
    assert.truthy(rb.read(sub .. "/billing-api.lua"):find('runbook "billing-api"', 1, true))
    assert.are.equal("node_modules/\n.runbook/\n", rb.read(sub .. "/.gitignore"))
    rb.write(sub .. "/billing-api.lua", "-- mine\n")
    r = rb.run({ "init" }, { cwd = sub })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("^runbook: init: billing%-api%.lua, spec/billing%-api_spec%.lua, db/migrations/%d+_create_example%.sql, %.luarc%.json already exist in %.; nothing was written %(%-%-force overwrites%)\n$"), r.stderr)
    assert.are.equal("-- mine\n", rb.read(sub .. "/billing-api.lua"))
    r = rb.run({ "init", "--force" }, { cwd = sub })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("node_modules/\n.runbook/\n", rb.read(sub .. "/.gitignore"))
    assert.are.equal(1, #require("runbook._fs").listdir(sub .. "/db/migrations"))
    r = run { "init", "--dir", sub .. "/x", "bad name" }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("'bad name' is not a usable name", 1, true), r.stderr)
    r = run { "init", "--dir", "new/place", "svc" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(rb.exists(dir .. "/new/place/svc.lua"))
    assert.truthy(r.stdout:find("cd new/place && runbook check svc.lua", 1, true), r.stdout)
  end)
end)
