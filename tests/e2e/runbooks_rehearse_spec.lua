-- scripts/sandbox.sh as a user runs it: `up` starts every stand-in the
-- shipped runbooks touch and a second `up` finds them running; every
-- shipped runbook (runbooks/*.lua) rehearses green through
-- `scripts/sandbox.sh rehearse`, its manual steps confirmed as the sandbox
-- with a "rehearsal" note and its audit trail verified; `down` stops exactly
-- the recorded processes, by pid, and keeps the folder.
local rb = require "rbtest"
local sandbox = require "sandbox"
local proc = require "runbook._proc"
local fs = require "runbook._fs"
local json = require "runbook._json"

local SCRIPT = rb.source_dir .. "/scripts/sandbox.sh"
local PROCS = { "argocd", "https-janua", "https-tessera", "https-tezca", "k8s", "pg", "redis", "s3" }

local function sandbox_sh(...)
  local argv = { "sh", SCRIPT, ... }
  local p = assert(proc.spawn { argv = argv, cwd = rb.source_dir, env = { RUNBOOK_BIN = rb.bin, NO_COLOR = "1" } })
  return p:communicate { timeout = 300 }
end

local function shipped()
  local out = {}
  for _, f in ipairs(fs.listdir(rb.source_dir .. "/runbooks") or {}) do
    if f:match("%.lua$") then out[#out + 1] = f end
  end
  table.sort(out)
  return out
end

local function names(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("scripts/sandbox.sh", function()
  local dir

  setup(function() dir = rb.tmpdir("sandbox") end)
  teardown(function()
    if dir then
      sandbox.down(dir, { quiet = true }) -- in case a test failed before its own down
      rb.rmtree(dir)
    end
  end)

  it("up starts every stand-in, and a second up finds them running and says so", function()
    local r = sandbox_sh("up", dir)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.truthy(r.stdout:find("sandbox in " .. dir .. ": up in ", 1, true), r.stdout)
    local pids = sandbox.pids(dir)
    assert.are.same(PROCS, names(pids))
    local sb = sandbox.load(dir)
    for name in pairs(pids) do assert.truthy(sb:running(name), name .. " is not running") end
    -- what a person sources and passes, one values file per shipped runbook
    for _, f in ipairs { "env", "kubeconfig", "hosts", "bin/runbook", "bin/enclii", "bin/gh", "bin/op", "bin/doctl", "bin/helm" } do
      assert.is_true(rb.exists(dir .. "/" .. f), f)
    end
    for _, f in ipairs(shipped()) do
      assert.is_true(rb.exists(dir .. "/values/" .. f:gsub("%.lua$", ".yaml")), "no values file for " .. f)
    end
    assert.truthy(rb.read(dir .. "/env"):find("export KUBECONFIG=", 1, true))

    local again = sandbox_sh("up", dir)
    assert.are.equal(0, again.code, again.stdout .. again.stderr)
    assert.truthy(again.stdout:find("already up, everything was running (nothing started)", 1, true), again.stdout)
    assert.are.same(pids, sandbox.pids(dir))
  end)

  it("rehearses every shipped runbook green, playing the people its guide needs", function()
    local list = shipped()
    assert.truthy(#list >= 5, "shipped runbooks: " .. table.concat(list, ", "))
    for _, f in ipairs(list) do
      local r = sandbox_sh("rehearse", "runbooks/" .. f, dir)
      assert.are.equal(0, r.code, f .. ":\n" .. r.stdout .. r.stderr)
      assert.truthy(r.stdout:find("rehearsal of " .. f:gsub("%.lua$", "") .. ": green", 1, true), r.stdout)
      assert.truthy(r.stdout:find("hash chain intact", 1, true), r.stdout)
    end
    -- the sandbox confirmed the manual steps nobody's verify could see, and said so
    local notes = {}
    for _, id in ipairs(fs.listdir(dir .. "/state/runs")) do
      for line in io.lines(dir .. "/state/runs/" .. id .. "/journal.jsonl") do
        local ev = json.decode(line)
        if ev.type == "step.confirmed" and ev.via == "command" then
          notes[ev.step] = ev.note
          assert.are.equal("sandbox", ev.actor, "confirmed as the sandbox (RUNBOOK_ACTOR)")
        end
      end
    end
    -- (Bow-Mark saves to 1Password in its step B1-vault, with op, before the
    -- Secrets; Tezca's M2 confirms itself once gh lists the secrets)
    assert.are.same({ "M1", "M1-secret-manager", "M10-login", "M14-approve", "M2-db-private",
      "M3-redis-private", "M4-waf", "M5-metrics", "M6-audit-log", "M7-alerts", "P4", "P9", "T4", "T5" }, names(notes))
    for step, note in pairs(notes) do assert.truthy(note:match("^rehearsal: "), step .. ": " .. tostring(note)) end
    -- and the people's commands went to the recording stubs
    local cli = rb.read(dir .. "/logs/cli.log")
    assert.truthy(cli:find("gh secret set MADFAM_BOT_PAT --repo madfam-org/tezca\n", 1, true), cli)
    assert.truthy(cli:find("gh secret list --repo madfam-org/tezca --json name\n", 1, true), cli)
    assert.truthy(cli:find("op item create --category login --title Bow-Mark Production K8s", 1, true), cli)
  end)

  it("down stops exactly what up started, by pid, and keeps the folder", function()
    local pids = sandbox.pids(dir)
    local sb = sandbox.load(dir)
    local markers = {}
    for name, p in pairs(sb.procs) do markers[name] = p.marker end
    local r = sandbox_sh("down", dir)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    for name, pid in pairs(pids) do
      assert.is_false(sandbox.alive(pid, markers[name]), name .. " (pid " .. pid .. ") still runs")
      assert.truthy(r.stdout:find(name:gsub("%-", "%%-") .. "%s+pid " .. pid .. "%s+stopped"), r.stdout)
    end
    assert.are.same({}, sandbox.pids(dir))
    assert.is_true(rb.exists(dir .. "/state/runs"))
    assert.is_true(rb.exists(dir .. "/env"))
    local again = sandbox_sh("down", dir)
    assert.are.equal(0, again.code, again.stderr)
    assert.truthy(again.stdout:find("down (0 process(es) stopped; files kept)", 1, true), again.stdout)
  end)
end)
