-- Janua's two runbooks with the real binary in the rehearsal sandbox
-- (tests/harness/sandbox.lua): its fake cluster runs Janua's current
-- release, its HTTPS stand-in answers for api.janua.dev, its PostgreSQL
-- holds Janua's database, moto the backups.
-- runbooks/janua-production.lua: killed right after it wrote janua-secrets,
-- the resumed run writes the very same generated keys; the configuration
-- check refuses a Deployment that could take replicas down; a failed
-- migration Job fails its step and the same command runs it again; the
-- backup restores with the same row counts.
-- runbooks/janua-rollout.lua: a release rolls out and passes its health
-- checks, `runbook rollback` sets the previous image again, and a rollout
-- that cannot progress is reverted at once.
local rb = require "rbtest"
local sandbox = require "sandbox"
local profile = require "sandbox.janua"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local crypto = require "runbook._crypto"

local RUNBOOK = rb.source_dir .. "/runbooks/janua-rollout.lua"
local PRODUCTION = rb.source_dir .. "/runbooks/janua-production.lua"

-- The journal of the run started with this image tag (several runs may
-- start within one second, and run ids of one second sort by their random part)
local function journal_of(dir, tag)
  local fs = require "runbook._fs"
  local json = require "runbook._json"
  for _, id in ipairs(fs.listdir(dir .. "/state/runs") or {}) do
    local evs = {}
    for line in io.lines(dir .. "/state/runs/" .. id .. "/journal.jsonl") do evs[#evs + 1] = json.decode(line) end
    if evs[1].params.image_tag == tag then return evs, id end
  end
  error("no run with image_tag " .. tag)
end

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

describe("runbooks/janua-rollout.lua", function()
  local sb, fake, dir, c

  setup(function()
    dir = rb.tmpdir("janua")
    -- the sandbox seeds namespace janua with janua-api at janua/api:2026.02.3
    sb = sandbox.up(dir, { services = { "k8s", "https", "pg", "s3" }, quiet = true })
    fake = sb.fake
    c = sb:cluster("janua")
    c:rollout_status { kind = "Deployment", name = "janua-api", timeout = 30 }
  end)
  teardown(function()
    if c then c:close() end
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  -- ---------------------------------------------------------------------------
  -- janua-production.lua (its runs come first: they leave janua-api as it is)

  local function production(extra, opts)
    return sb:exec(PRODUCTION, extra, { timeout = 180, env = opts and opts.env })
  end
  local function keys_of(name)
    local out = {}
    for k, v in pairs(c:get_secret({ name = name }).data) do out[k] = secret.reveal(v) end
    return out
  end

  it("janua-production checks and renders as the guide's checklists", function()
    local r = sb:runbook { "check", PRODUCTION, "--values", sb:values_file("janua-production") }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook janua-production, 9 steps (2 manual), 0 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", PRODUCTION }
    for _, line in ipairs {
      "- [ ] **P1** Create janua-secrets",
      "- [ ] **P2** Create the registry credentials (regcred)\n  <br>after P1; verified",
      "- [ ] **P3** Configuration validated\n  <br>after P2; verified",
      "- [ ] **P4** Tests, security scan and performance tests passed *(manual)*",
      "- [ ] **P6** Restore check",
      "- [ ] **P9** Monitoring, documentation and the team *(manual)*",
    } do
      assert.truthy(d.stdout:find(line, 1, true), "missing: " .. line .. "\n" .. d.stdout)
    end
  end)

  it("janua-production runs dry and writes nothing anywhere", function()
    local r = production { "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    for _, line in ipairs {
      "P1       action k8s: create v1 Secret janua/janua-secrets: created (dry run)",
      "P2       action k8s: create v1 Secret janua/regcred: created (dry run)",
      "P3       dry run: the configuration is checked once P1 and P2 wrote the Secrets (now: Secret regcred does not exist;",
      "P5       action s3: would create bucket s3://janua-backups",
      "P7       action k8s: create batch/v1 Job janua/janua-migrate-dry-run: created (dry run)",
      "dry run complete: 9 step(s) would run; nothing was written",
    } do
      assert.truthy(r.stderr:find(line, 1, true), "missing: " .. line .. "\n" .. r.stderr)
    end
    assert.is_nil(c:get { kind = "Secret", name = "janua-secrets" })
    assert.is_nil(c:get { kind = "Secret", name = "regcred" })
    assert.is_nil(c:get { api_version = "batch/v1", kind = "Job", name = "janua-migrate-dry-run" })
    local store = sb.services.s3
    local bucket <close> = s3.connect { endpoint = store.endpoint, access_key = store.access_key, secret_key = secret.wrap(store.secret_key) }
    assert.is_false(bucket:bucket_exists("janua-backups"))
    assert.is_false(rb.exists(dir .. "/state/runs"))
  end)

  it("janua-production keeps its generated keys across a kill, migrates after a backup that restores, and checks the checklists", function()
    local vf = sb:values_file("janua-production")
    -- a reference run (its own state and namespace) numbers the journal events up to janua-secrets' creation
    local ref = production { "--new", "--state", dir .. "/ref-state", "--param", "namespace=janua-ref" }
    assert.are.equal(1, ref.code, ref.stderr) -- P3: no Deployment in janua-ref
    local created
    for _, e in ipairs(rb.journal(dir .. "/ref-state")) do
      if e.type == "action" and e.step == "P1" and e.verb == "create" and e.name == "janua-secrets" then created = e.seq end
    end
    assert.is_number(created)

    -- killed (SIGKILL) right after the Secret's creation is durable, before P1 finished
    local env = sb:env()
    env.RUNBOOK_FAILPOINT = "after:" .. created
    local p = rb.start({ "exec", PRODUCTION, "--yes", "--new", "--values", vf }, { cwd = dir, env = env })
    assert.is_true(p:stopped(60), "the run did not reach event " .. created)
    p:kill("KILL")
    local _, sig = p:wait(10)
    assert.are.equal(9, sig)
    local first = keys_of("janua-secrets")
    assert.truthy(#first["jwt-secret"] == 128 and first["jwt-secret"]:match("^%x+$"), "jwt-secret is not 64 bytes of hex")
    assert.truthy(#first["secret-key"] == 128 and first["jwt-secret"] ~= first["secret-key"])
    assert.are.equal(sb:env().JANUA_DATABASE_URL, first["database-url"])

    -- resumed: P1 runs again with the keys ctx:once recorded, finds the Secret as it wrote it,
    -- then regcred, the configuration check, and the first person
    local r = production()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for P4", 1, true), r.stderr)
    local evs, _, run_id = rb.journal(dir .. "/state")
    assert.are.equal(2, #of_type(evs, "step.started", "P1"))
    -- the Secret is kept, and no key of it differs from what the resumed step declared
    assert.are.equal("kept", of_type(evs, "step.finished", "P1")[1].outputs.result)
    assert.is_nil(rb.read(dir .. "/state/runs/" .. run_id .. "/log"):find("keys that differ from the declared ones", 1, true))
    assert.are.same(first, keys_of("janua-secrets"))
    local reg = c:get_secret { name = "regcred" }
    assert.are.equal("kubernetes.io/dockerconfigjson", reg.type)
    local auths = require("runbook._json").decode(secret.reveal(reg.data[".dockerconfigjson"])).auths
    local hub = auths["https://index.docker.io/v1/"]
    assert.are.same({ sandbox.JANUA.registry_user, sandbox.JANUA.registry_password }, { hub.username, hub.password })
    assert.are.equal(crypto.base64_encode(sandbox.JANUA.registry_user .. ":" .. sandbox.JANUA.registry_password), hub.auth)
    assert.are.equal(1, #of_type(evs, "step.skipped", "P3")) -- its verify held: nothing to say

    -- the migration Job fails: P7 fails after the backup and the restore check, naming the Job
    fake:control("POST", "/_fake/job-logs", { namespace = "janua", prefix = "janua-migrate-",
      logs = "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection refused" })
    fake:control("POST", "/_fake/fail-job", { namespace = "janua" })
    assert.are.equal(0, sb:runbook({ "confirm", run_id, "P4", "--note", "deploy.yml run 812 green" }).code)
    r = production()
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("P7       FAILED: job janua/janua%-migrate%-%d%d%d%d%d%d%-%x+ failed: BackoffLimitExceeded"), r.stderr)
    assert.truthy(r.stderr:find("connection refused", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal(1, #of_type(evs, "step.finished", "P6"))
    assert.are.equal(0, #of_type(evs, "step.started", "P8"))

    -- fixed: the same command runs the Job again, then the health checks, and waits for the last person
    sb:fault("clear") -- the Jobs succeed again, with the sandbox's logs
    r = production()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for P9", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    local p7 = of_type(evs, "step.finished", "P7")[1].outputs
    assert.are.same({ "janua/api:2026.02.3", "Complete" }, { p7.image, p7.status })
    local job = c:get { api_version = "batch/v1", kind = "Job", name = p7.job }
    local pod = job.spec.template.spec
    assert.are.same({ "alembic", "upgrade", "head" }, pod.containers[1].command)
    assert.are.equal("janua/api:2026.02.3", pod.containers[1].image)
    assert.are.same({ { name = "regcred" } }, pod.imagePullSecrets)
    assert.are.same({ name = "janua-secrets", key = "database-url" }, pod.containers[1].env[2].valueFrom.secretKeyRef)
    assert.truthy(rb.read(dir .. "/state/runs/" .. run_id .. "/log"):find("Running upgrade 7c1d2e0a9b31 -> 9f4b6a2c8d15", 1, true))

    -- P5: a verified dump in the bucket; P6: restored with every row, and the scratch database gone
    local p5 = of_type(evs, "step.finished", "P5")[1].outputs
    local store = sb.services.s3
    local bucket <close> = s3.connect { endpoint = store.endpoint, access_key = store.access_key, secret_key = secret.wrap(store.secret_key) }
    local objs = bucket:list { bucket = "janua-backups", prefix = "pg/janua/" }
    assert.are.same({ "pg/janua/" .. p5.name }, { objs[1] and objs[1].key })
    assert.are.equal(3, p5.tables)
    local counts = {}
    for _, row in ipairs(of_type(evs, "step.finished", "P6")[1].outputs.tables) do counts[row.table] = { row.live, row.restored } end
    assert.are.same({ ["public.organizations"] = { 12, 12 }, ["public.users"] = { 90, 90 }, ["public.sessions"] = { 250, 250 } }, counts)
    assert.are.equal("0", sb:psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'janua_restore_%'"))
    -- P8: health, readiness and the metrics Prometheus scrapes
    local checks = of_type(evs, "action", "P8")[1]
    assert.are.same({ "http-check", 3, 0 }, { checks.kind, checks.passed, checks.failed })

    assert.are.equal(0, sb:runbook({ "confirm", run_id, "P9", "--note", "baseline 42 req/s, #releases" }).code)
    r = production()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same(first, keys_of("janua-secrets"))

    -- nothing secret in clear anywhere the run wrote
    local texts = { rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"), rb.read(dir .. "/state/runs/" .. run_id .. "/log") }
    for _, value in ipairs { first["jwt-secret"], first["secret-key"], sandbox.JANUA.registry_password, sb.secrets.pg_password } do
      for i, text in ipairs(texts) do
        assert.is_nil(text:find(value, 1, true), "a secret in clear in file " .. i)
      end
    end
    assert.are.equal(0, sb:runbook({ "audit", "verify", run_id }).code)
  end)

  it("janua-production refuses a Deployment that could take replicas down, or that reads what is not there", function()
    c:apply(profile.deployment("janua-surge", { type = "RollingUpdate", rollingUpdate = { maxUnavailable = 1, maxSurge = 1 } }))
    local r = production { "--new", "--param", "deployment=janua-surge" }
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("P3       FAILED: deployment janua-surge has strategy RollingUpdate with maxUnavailable 1: a zero-downtime rollout needs RollingUpdate with maxUnavailable: 0", 1, true), r.stderr)
    -- a new run generates other keys, and keeps the ones the pods sign with
    local keys = keys_of("janua-secrets")
    assert.truthy(r.stderr:find("Secret janua/janua-secrets exists and is kept as it is (if_exists = \"keep\"); keys that differ from the declared ones: jwt-secret, secret-key", 1, true), r.stderr)
    local evs = rb.journal(dir .. "/state")
    assert.are.equal(0, #of_type(evs, "step.started", "P5"))

    -- Recreate (every pod down at once), no pull Secret, a key janua-secrets lacks: each named
    local d = profile.deployment("janua-old", { type = "Recreate" })
    d.spec.template.spec.imagePullSecrets = nil
    d.spec.template.spec.containers[1].env[3].valueFrom.secretKeyRef.key = "jwt"
    c:apply(d)
    r = production { "--new", "--param", "deployment=janua-old" }
    assert.are.equal(1, r.code, r.stderr)
    for _, part in ipairs {
      "P3       FAILED: deployment janua-old has strategy Recreate, which stops every replica before the new ones start",
      "; deployment janua-old does not pull with imagePullSecrets regcred",
      "; api reads JWT_SECRET_KEY from key jwt of Secret janua-secrets, which has no such key",
    } do
      assert.truthy(r.stderr:find(part, 1, true), "missing: " .. part .. "\n" .. r.stderr)
    end
    assert.are.same(keys, keys_of("janua-secrets"))
  end)

  -- ---------------------------------------------------------------------------
  -- janua-rollout.lua

  -- a release: --new, the image tag, and the values file's api_url and ca_file
  local function release(tag, extra)
    local a = { "--new", "--param", "image_tag=" .. tag }
    for _, x in ipairs(extra or {}) do a[#a + 1] = x end
    return sb:exec(RUNBOOK, a, { timeout = 120 })
  end
  local function exec(tag) return release(tag, { "--param", "rollout_timeout=30" }) end
  local function images()
    local out = {}
    for _, ct in ipairs(c:get { kind = "Deployment", name = "janua-api" }.spec.template.spec.containers) do out[ct.name] = ct.image end
    return out
  end

  it("checks and renders", function()
    local r = sb:runbook { "check", RUNBOOK, "--values", sb:values_file("janua-rollout"), "--param", "image_tag=x" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook janua-rollout, 5 steps (0 manual), 0 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.truthy(d.stdout:find("- [ ] **J1-migrate** Run the new image's migrations\n  <br>after J1-backup; timeout 3600 s; can be rolled back", 1, true), d.stdout)
    assert.truthy(d.stdout:find("- [ ] **J2** Roll out the new image\n  <br>after J1-migrate; timeout 1800 s; verified; can be rolled back", 1, true), d.stdout)
  end)

  it("runs dry and leaves the Deployment as it was", function()
    local r = sb:exec(RUNBOOK, { "--dry-run", "--param", "image_tag=2026.03.0" }, { timeout = 120 })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("J2       action k8s: patch apps/v1 Deployment janua/janua-api: patched (dry run)", 1, true), r.stderr)
    assert.truthy(r.stderr:find("dry run complete: 5 step(s) would run; nothing was written", 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", images().api)
  end)

  it("rolls out, and runbook rollback sets the previous image again", function()
    local r = exec("2026.03.1")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ api = "janua/api:2026.03.1", ["metrics-sidecar"] = "prom/statsd-exporter:v0.26.0" }, images())
    local d = c:get { kind = "Deployment", name = "janua-api" }
    assert.are.equal("2", d.metadata.annotations["deployment.kubernetes.io/revision"])
    assert.truthy(r.stderr:find('J2       deployment "janua-api" successfully rolled out', 1, true), r.stderr)
    local evs, run_id = journal_of(dir, "2026.03.1")
    assert.are.same({ previous_image = "janua/api:2026.02.3", revision = "1" }, of_type(evs, "step.finished", "J1")[1].outputs)
    local patch = of_type(evs, "action", "J2")[1]
    assert.are.same({ "patch", "strategic", "janua-api" }, { patch.verb, patch.patch_type, patch.name })
    local checks = of_type(evs, "action", "J3")[1]
    assert.are.same({ "http-check", 2, 0 }, { checks.kind, checks.passed, checks.failed })
    -- before the rollout: a verified dump, then the new image's migrations, pulled with regcred
    local backup = of_type(evs, "step.finished", "J1-backup")[1].outputs
    assert.truthy(backup.name:match("^janua%-%d+T%d+Z%.dump$") and backup.tables == 3, backup.name)
    local job = c:get { api_version = "batch/v1", kind = "Job", name = of_type(evs, "step.finished", "J1-migrate")[1].outputs.job }
    assert.are.same({ "janua/api:2026.03.1", "alembic", "regcred" }, { job.spec.template.spec.containers[1].image,
      job.spec.template.spec.containers[1].command[1], job.spec.template.spec.imagePullSecrets[1].name })
    assert.truthy(of_type(evs, "step.started", "J1-migrate")[1].seq < patch.seq, "the migrations ran before the patch")

    -- the release is not wanted after all
    local rr = sb:runbook({ "rollback", run_id }, { timeout = 120 })
    assert.are.equal(0, rr.code, rr.stderr)
    assert.truthy(rr.stderr:find("rolled back 5 step(s) of run " .. run_id, 1, true), rr.stderr)
    assert.truthy(rr.stderr:find("the migrations of janua/api:2026.03.1 are not reverted; restore s3://janua-backups/pg/janua/", 1, true), rr.stderr)
    assert.are.equal("janua/api:2026.02.3", images().api)
    evs = journal_of(dir, "2026.03.1")
    local undone = {}
    for _, e in ipairs(of_type(evs, "step.undone")) do undone[#undone + 1] = e.step end
    assert.are.same({ "J3", "J2", "J1-migrate", "J1-backup", "J1" }, undone)
    assert.are.equal("3", c:get({ kind = "Deployment", name = "janua-api" }).metadata.annotations["deployment.kubernetes.io/revision"])
    assert.are.equal(0, rb.run({ "audit", "verify", run_id, "--state", dir .. "/state" }, { cwd = dir }).code)
  end)

  it("reverts a rollout that does not finish in time, and says so", function()
    -- the controller stops here: the new template is never observed
    local d = c:get { kind = "Deployment", name = "janua-api" }
    fake:set_status { apiVersion = "apps/v1", kind = "Deployment", namespace = "janua", name = "janua-api",
      status = d.status, freeze = true }
    local r = release("2026.03.2", { "--param", "rollout_timeout=1" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("J2       FAILED: rollout of janua/api:2026.03.2 failed (timed out after 1 s waiting for apps/v1 Deployment janua/janua-api rollout", 1, true), r.stderr)
    assert.truthy(r.stderr:find("; rolled back to janua/api:2026.02.3, whose own rollout has not finished: timed out after 1 s", 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", images().api)
    local evs = journal_of(dir, "2026.03.2")
    local patches = {}
    for _, a in ipairs(of_type(evs, "action", "J2")) do patches[#patches + 1] = a.verb .. ":" .. a.result end
    assert.are.same({ "patch:patched", "patch:patched" }, patches)
    assert.are.equal(0, #of_type(evs, "step.started", "J3"))
  end)

  it("does not start when the Deployment could take replicas down during the rollout", function()
    c:apply { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "janua-batch" },
      spec = { replicas = 2, selector = { matchLabels = { app = "janua-batch" } },
        strategy = { type = "RollingUpdate", rollingUpdate = { maxUnavailable = "25%", maxSurge = 1 } },
        template = { metadata = { labels = { app = "janua-batch" } }, spec = { containers = { { name = "api", image = "janua/api:2026.02.3" } } } } } }
    c:rollout_status { kind = "Deployment", name = "janua-batch", timeout = 30 }
    local r = release("2026.03.4", { "--param", "deployment=janua-batch" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("J1       FAILED: deployment janua-batch has strategy RollingUpdate with maxUnavailable 25%: a zero-downtime rollout needs RollingUpdate with maxUnavailable: 0", 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", c:get({ kind = "Deployment", name = "janua-batch" }).spec.template.spec.containers[1].image)
  end)

  it("does not roll out when the new image's migrations fail, or when new pods could not start", function()
    -- (janua-api stays frozen by the test above: a Deployment of the guide's own)
    c:apply(profile.deployment("janua-mig"))
    c:rollout_status { kind = "Deployment", name = "janua-mig", timeout = 30 }
    fake:control("POST", "/_fake/fail-job", { namespace = "janua" })
    local r = release("2026.03.5", { "--param", "deployment=janua-mig" })
    sb:fault("clear")
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("J1%-migrate FAILED: job janua/janua%-migrate%-%d%d%d%d%d%d%-%x+ failed: BackoffLimitExceeded"), r.stderr)
    assert.are.equal(0, #of_type(journal_of(dir, "2026.03.5"), "step.started", "J2"))
    assert.are.equal("janua/api:2026.02.3", c:get({ kind = "Deployment", name = "janua-mig" }).spec.template.spec.containers[1].image)

    -- a manifest reading a key janua-secrets does not hold, pulling with a Secret that is not there
    local d = profile.deployment("janua-typo")
    d.spec.template.spec.imagePullSecrets = { { name = "regcred-old" } }
    d.spec.template.spec.containers[1].env[4].valueFrom.secretKeyRef.key = "secret_key"
    c:apply(d)
    c:rollout_status { kind = "Deployment", name = "janua-typo", timeout = 30 }
    r = release("2026.03.6", { "--param", "deployment=janua-typo" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("J1       FAILED: deployment janua-typo pulls with imagePullSecrets regcred-old, which does not exist; "
      .. "api reads SECRET_KEY from key secret_key of Secret janua-secrets, which has no such key (fix the manifest or run janua-production.lua first)", 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", c:get({ kind = "Deployment", name = "janua-typo" }).spec.template.spec.containers[1].image)
  end)

  it("does not start while the running release is stuck", function()
    c:apply { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "janua-worker" },
      spec = { replicas = 1, selector = { matchLabels = { app = "janua-worker" } },
        template = { metadata = { labels = { app = "janua-worker" } }, spec = { containers = { { name = "api", image = "janua/api:2026.02.3" } } } } } }
    fake:control("POST", "/_fake/stuck", { kind = "Deployment", namespace = "janua", name = "janua-worker" })
    local r = release("2026.03.3", { "--param", "deployment=janua-worker" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find('J1       FAILED: apps/v1 Deployment janua/janua-worker rollout: deployment "janua-worker" exceeded its progress deadline', 1, true), r.stderr)
    assert.are.equal("janua/api:2026.02.3", c:get({ kind = "Deployment", name = "janua-worker" }).spec.template.spec.containers[1].image)
  end)
end)
