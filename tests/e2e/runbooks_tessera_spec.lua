-- runbooks/tessera-bootstrap.lua with the real binary in the rehearsal
-- sandbox (tests/harness/sandbox.lua): its fake cluster holds Tessera's
-- manifests as applied and runs the migration Job and the restart; its
-- HTTPS stand-in for Tessera (tessera.your-domain.com) answers the API
-- (teams, API keys, probes). A second run finds the stored admin key and
-- creates nothing again, without the bootstrap key.
local rb = require "rbtest"
local sandbox = require "sandbox"
local curl = require "runbook._curl"
local json = require "runbook._json"
local crypto = require "runbook._crypto"

local RUNBOOK = rb.source_dir .. "/runbooks/tessera-bootstrap.lua"
local DATABASE_URL = sandbox.TESSERA_DATABASE_URL

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

describe("runbooks/tessera-bootstrap.lua", function()
  local sb, srv, dir, c, web

  setup(function()
    dir = rb.tmpdir("tessera")
    -- the sandbox seeds namespace tessera: tessera-secrets (with the
    -- stand-in's bootstrap key) and the tessera Deployment
    sb = sandbox.up(dir, { services = { "k8s", "https" }, quiet = true })
    srv = sb.https.tessera
    web = curl.client { ca_file = sb:ca_file() }
    c = sb:cluster("tessera")
  end)
  teardown(function()
    if web then web:close() end
    if c then c:close() end
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  -- with_key: BOOTSTRAP_API_KEY in the environment (the sandbox's), or not
  local function exec(with_key, extra)
    return sb:exec(RUNBOOK, extra, { unset = not with_key and { "BOOTSTRAP_API_KEY" } or nil, timeout = 120 })
  end
  local function get(path, key)
    local res = assert(web:request { url = srv.local_base .. path, headers = { { "X-API-Key", key } } })
    return res.status, res.status == 200 and json.decode(res.body) or nil
  end

  it("checks and renders", function()
    local r = rb.run { "check", RUNBOOK, "--param", "api_url=https://x" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook tessera-bootstrap, 6 steps (0 manual), 0 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.truthy(d.stdout:find("- [ ] **T5** Remove BOOTSTRAP_API_KEY from production config", 1, true), d.stdout)
  end)

  it("runs dry and changes nothing", function()
    local r = exec(true, { "--dry-run" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("T3       action http: would POST " .. sb:site_url("tessera") .. "/api/v1/teams", 1, true), r.stderr)
    assert.truthy(r.stderr:find("dry run complete: 6 step(s) would run; nothing was written", 1, true), r.stderr)
    assert.are.same({}, select(2, get("/api/v1/teams", srv.token)).items)
    assert.truthy(c:get_secret("tessera-secrets").data.BOOTSTRAP_API_KEY)
    assert.are.equal(0, #c:list { kind = "Job" })
  end)

  it("migrates, bootstraps the admin team and key, and retires the bootstrap key", function()
    local r = exec(true)
    assert.are.equal(0, r.code, r.stderr)
    local evs, _, run_id = rb.journal(dir .. "/state")
    local job = c:get { kind = "Job", name = of_type(evs, "step.finished", "T1")[1].outputs.job }
    local ct = job.spec.template.spec.containers[1]
    assert.are.same({ { "alembic", "upgrade", "head" }, "your-registry/tessera:0.1.0", "tessera-secrets" },
      { ct.command, ct.image, ct.envFrom[2].secretRef.name })
    assert.is_nil(ct.livenessProbe)

    -- the team, and a key that Tessera accepts, stored in the cluster
    local _, teams = get("/api/v1/teams", srv.token)
    assert.are.same({ { id = 1, name = "Platform" } }, teams.items)
    local stored = c:get_secret("tessera-admin-api-key")
    local admin_key = stored.data.API_KEY:reveal()
    assert.truthy(admin_key:match("^tess_%x+$"))
    assert.are.equal(200, (get("/api/v1/teams", admin_key)))
    local _, keys = get("/api/v1/api-keys", admin_key)
    assert.are.same({ { name = "admin" } }, keys.items)
    assert.are.same({ id = 1, name = "Platform" }, of_type(evs, "step.finished", "T3")[1].outputs)

    -- the bootstrap key is gone from the config, the rest stays, the pods restarted
    local cfg = c:get_secret("tessera-secrets")
    assert.is_nil(cfg.data.BOOTSTRAP_API_KEY)
    assert.is_true(cfg.data.DATABASE_URL:reveal() == DATABASE_URL)
    local d = c:get { kind = "Deployment", name = "tessera" }
    assert.truthy(d.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"])
    local t5 = {}
    for _, a in ipairs(of_type(evs, "action", "T5")) do t5[#t5 + 1] = a.verb .. ":" .. a.object_kind end
    assert.are.same({ "patch:Secret", "restart:Deployment" }, t5)
    local checks = of_type(evs, "action", "T6")[1]
    assert.are.same({ 4, 0 }, { checks.passed, checks.failed })

    local files = { rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"), rb.read(dir .. "/state/runs/" .. run_id .. "/log"),
      r.stdout, r.stderr }
    for _, value in ipairs { admin_key, srv.token, DATABASE_URL } do
      for i, text in ipairs(files) do
        assert.is_nil(text:find(value, 1, true), "a secret in clear in file " .. i)
        assert.is_nil(text:find(crypto.base64_encode(value), 1, true), "a secret in base64 in file " .. i)
      end
    end
    assert.are.equal(0, rb.run({ "audit", "verify", run_id, "--state", dir .. "/state" }, { cwd = dir }).code)
  end)

  it("run again without the bootstrap key, creates nothing twice", function()
    local r = exec(false, { "--new" })
    assert.are.equal(0, r.code, r.stderr)
    local runs = require("runbook._fs").listdir(dir .. "/state/runs")
    assert.are.equal(2, #runs)
    -- the second run is the one with skipped steps (two runs of one second sort by their random part)
    local second
    for _, id in ipairs(runs) do
      local evs = {}
      for line in io.lines(dir .. "/state/runs/" .. id .. "/journal.jsonl") do evs[#evs + 1] = json.decode(line) end
      if #of_type(evs, "step.skipped") > 0 then second = evs end
    end
    assert.are.equal(1, #of_type(second, "run.finished"))
    local skipped = {}
    for _, e in ipairs(of_type(second, "step.skipped")) do skipped[#skipped + 1] = e.step end
    assert.are.same({ "T3", "T4", "T5" }, skipped)
    local admin_key = c:get_secret("tessera-admin-api-key").data.API_KEY
    local _, teams = get("/api/v1/teams", admin_key:reveal())
    local _, keys = get("/api/v1/api-keys", admin_key:reveal())
    assert.are.same({ 1, 1 }, { #teams.items, #keys.items })
  end)
end)
