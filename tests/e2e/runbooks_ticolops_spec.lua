-- runbooks/ticolops-production.lua end to end with the real binary, in
-- the rehearsal sandbox (tests/harness/sandbox.lua, the code of
-- scripts/sandbox.sh): the fake Kubernetes API server, its real PostgreSQL
-- (the "managed" database, seeded by sandbox/ticolops.lua, and the restore
-- drill's scratch server) and moto for the backups. The run waits for the
-- two manual steps, fails at the backup with a wrong storage key, resumes
-- there with the secret key it generated the first time, and leaves a
-- backup that restores and an encrypted configuration copy that decrypts
-- with the passphrase.
local rb = require "rbtest"
local sandbox = require "sandbox"
local s3 = require "runbook.s3"
local sh = require "runbook.sh"
local secret = require "runbook.secret"
local json = require "runbook._json"
local crypto = require "runbook._crypto"

local RUNBOOK = rb.source_dir .. "/runbooks/ticolops-production.lua"
local REDIS_URL = "rediss://:e2e0redis0password0b7d1@redis.ticolops.internal:6380/0"
local PASSPHRASE = "e2e-config-passphrase-3f9a1c77"
local IMAGE = "ghcr.io/ticolops/backend@sha256:" .. string.rep("cd", 32)

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

describe("runbooks/ticolops-production.lua", function()
  local sb, store, dir, cluster, env, app_url

  setup(function()
    dir = rb.tmpdir("ticolops")
    -- the sandbox seeds the database ticolops: 40 users, 120 projects
    sb = sandbox.up(dir, { services = { "k8s", "pg", "s3" }, quiet = true })
    store = sb.services.s3
    cluster = sb:cluster()
    -- the application's SQLAlchemy form of the URL, as the sandbox gives it
    app_url = sb:env().TICOLOPS_DATABASE_URL
    assert.truthy(app_url:match("^postgresql%+asyncpg://"), app_url)
    -- the sandbox's credentials, with values this spec looks for
    env = { TICOLOPS_REDIS_URL = REDIS_URL, TICOLOPS_CONFIG_PASSPHRASE = PASSPHRASE,
      TICOLOPS_HOST = "ticolops.example.test", TICOLOPS_IMAGE = IMAGE }
  end)
  teardown(function()
    if cluster then cluster:close() end
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  local function exec(extra, over)
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(over or {}) do e[k] = v end
    return sb:exec(RUNBOOK, extra, { env = e, timeout = 180 })
  end
  local function cmd(...)
    return sb:runbook { ... }
  end
  local function client()
    return s3.connect { endpoint = store.endpoint, access_key = store.access_key, secret_key = secret.wrap(store.secret_key) }
  end

  it("checks and renders as the guide's steps", function()
    -- without its environment, check names what exec would miss
    local r = rb.run { "check", RUNBOOK }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("missing required param 'database_url' (set --param database_url=... or the environment variable TICOLOPS_DATABASE_URL)", 1, true), r.stderr)
    r = sb:runbook({ "check", RUNBOOK, "--values", sb:values_file("ticolops-production") }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook ticolops-production, 8 steps (2 manual)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.are.equal(0, d.code, d.stderr)
    for _, line in ipairs {
      "# ticolops-production",
      "- [ ] **T1** Prepare secrets",
      "- [ ] **T4** Give the CI runner cluster access and its secrets *(manual)*",
      "- [ ] **T6** Back up the database to object storage",
      "- [ ] **T8** Restore drill",
      "| `keep_days` | `7` |",
    } do
      assert.truthy(d.stdout:find(line, 1, true), "missing: " .. line .. "\n" .. d.stdout)
    end
  end)

  it("runs dry and writes nothing anywhere", function()
    local r = exec { "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    for _, line in ipairs {
      "T1       dry run: Secret ticolops-secrets would be created in the new namespace ticolops",
      "T4 (manual) would wait for a person",
      "dry run complete: 8 step(s) would run; nothing was written",
    } do
      assert.truthy(r.stderr:find(line, 1, true), "missing: " .. line .. "\n" .. r.stderr)
    end
    assert.is_nil(cluster:get { kind = "Namespace", name = "ticolops" })
    assert.is_false(rb.exists(dir .. "/state/runs"))
    local c <close> = client()
    assert.is_false(c:bucket_exists("ticolops-backups"))
  end)

  it("deploys, waits for people, fails at the backup, resumes there, and its backup and configuration copy restore", function()
    local r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for T4", 1, true), r.stderr)
    local evs, _, run_id = rb.journal(dir .. "/state")

    -- T1: the Secret the guide lists, with a generated secret key
    local s = cluster:get_secret { name = "ticolops-secrets", namespace = "ticolops" }
    local keys = {}
    for k in pairs(s.data) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ "database_url", "redis_url", "secret_key" }, keys)
    assert.is_true(s.data.database_url:reveal() == app_url)
    assert.is_true(s.data.redis_url:reveal() == REDIS_URL)
    local secret_key = s.data.secret_key:reveal()
    assert.truthy(#secret_key == 64 and secret_key:match("^%x+$"), "secret_key is not 32 bytes of hex")

    -- T2, T3: the guide's manifests
    local dep = cluster:get { api_version = "apps/v1", kind = "Deployment", name = "ticolops-backend", namespace = "ticolops" }
    assert.are.same({ IMAGE, 2, 0 }, { dep.spec.template.spec.containers[1].image, dep.spec.replicas,
      dep.spec.strategy.rollingUpdate.maxUnavailable })
    assert.are.equal("ticolops-secrets", dep.spec.template.spec.containers[1].env[1].valueFrom.secretKeyRef.name)
    assert.is_table(cluster:get { kind = "Service", name = "ticolops-backend", namespace = "ticolops" })
    local hpa = cluster:get { api_version = "autoscaling/v2", kind = "HorizontalPodAutoscaler", name = "ticolops-backend", namespace = "ticolops" }
    assert.are.same({ "ticolops-backend", 2, 10 }, { hpa.spec.scaleTargetRef.name, hpa.spec.minReplicas, hpa.spec.maxReplicas })
    local ing = cluster:get { api_version = "networking.k8s.io/v1", kind = "Ingress", name = "ticolops", namespace = "ticolops" }
    assert.are.same({ "ticolops.example.test", "ticolops.example.test", "ticolops-tls", "letsencrypt-prod" },
      { ing.spec.rules[1].host, ing.spec.tls[1].hosts[1], ing.spec.tls[1].secretName,
        ing.metadata.annotations["cert-manager.io/cluster-issuer"] })

    -- people: CI access, the managed database's automated backups
    assert.are.equal(0, cmd("confirm", run_id, "T4", "--note", "ci-cd.yml run 4242 deployed").code)
    r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for T5", 1, true), r.stderr)
    assert.are.equal(0, cmd("confirm", run_id, "T5", "--note", "RDS ticolops-prod, retention 7 days").code)

    -- a wrong storage key: the backup fails
    r = exec(nil, { AWS_SECRET_ACCESS_KEY = "not-the-secret-key-at-all" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("T6 failed. Fix the cause and run the same command again to resume at T6.", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal("s3", of_type(evs, "step.failed", "T6")[1].error.kind)
    assert.are.equal(0, #of_type(evs, "step.finished", "T6"))

    -- fixed: it resumes at T6 and runs to the end
    r = exec()
    assert.are.equal(0, r.code, r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal(1, #of_type(evs, "step.started", "T1"))
    s = cluster:get_secret { name = "ticolops-secrets", namespace = "ticolops" }
    assert.is_true(s.data.secret_key:reveal() == secret_key)

    -- T6: a verified dump under the prefix, retention applied to it
    local t6 = of_type(evs, "step.finished", "T6")[1].outputs
    assert.truthy(t6.name:match("^ticolops%-%d+T%d+Z%.dump$"), t6.name)
    local c <close> = client()
    local objs = c:list { bucket = "ticolops-backups", prefix = "pg/daily/" }
    assert.are.same({ "pg/daily/" .. t6.name }, { objs[1] and objs[1].key })
    assert.are.equal(#objs, 1)
    local verbs = {}
    for _, a in ipairs(of_type(evs, "action", "T6")) do verbs[a.verb] = true end
    assert.is_true(verbs.pg_dump and verbs.verify and true or false)
    assert.are.same({}, t6.deleted)
    local rules = c:lifecycle("ticolops-backups")
    assert.are.same({ { "ticolops-pg-backups", "pg/daily/", 14, 1 } },
      { { rules[1].id, rules[1].prefix, rules[1].expire_days, rules[1].abort_incomplete_days } })

    -- T7: the encrypted copy opens with the passphrase and holds the Secret and the manifests
    local copies = c:list { bucket = "ticolops-backups", prefix = "config/" }
    assert.are.equal(1, #copies)
    local enc = c:get { bucket = "ticolops-backups", key = copies[1].key }
    assert.is_nil(enc:find(REDIS_URL, 1, true))
    local dec = sh.run({ "openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-iter", "200000", "-a", "-A",
      "-pass", "env:PASS" }, { env = { PASS = PASSPHRASE }, stdin = enc, log = false })
    local config = json.decode(dec.stdout)
    assert.are.same({ "ticolops", app_url, REDIS_URL, secret_key }, { config.namespace,
      config.secrets["ticolops-secrets"].database_url, config.secrets["ticolops-secrets"].redis_url,
      config.secrets["ticolops-secrets"].secret_key })
    local kinds = {}
    for _, m in ipairs(config.manifests) do kinds[#kinds + 1] = m.kind end
    assert.are.same({ "Deployment", "Service", "HorizontalPodAutoscaler", "Ingress" }, kinds)
    local wrong = sh.run({ "openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-iter", "200000", "-a", "-A",
      "-pass", "env:PASS" }, { env = { PASS = "another passphrase" }, stdin = enc, log = false, check = false })
    assert.are_not.equal(0, wrong.code)

    -- T8: restored, compared, dropped
    local t8 = of_type(evs, "step.finished", "T8")[1].outputs
    local counts = {}
    for _, row in ipairs(t8.tables) do counts[row.table] = { row.live, row.restored } end
    assert.are.same({ ["public.projects"] = { 120, 120 }, ["public.users"] = { 40, 40 } }, counts)
    local left = sb:psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'ticolops_restore_%'", "postgres")
    assert.truthy(left:match("^%s*0%s*$"), left)

    -- nothing secret in clear anywhere the run wrote
    local log = rb.read(dir .. "/state/runs/" .. run_id .. "/log")
    local texts = { rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"), log, r.stdout, r.stderr }
    for _, value in ipairs { secret_key, REDIS_URL, PASSPHRASE, store.secret_key } do
      for i, text in ipairs(texts) do
        assert.is_nil(text:find(value, 1, true), "a secret in clear in file " .. i)
        assert.is_nil(text:find(crypto.base64_encode(value), 1, true), "a secret in base64 in file " .. i)
      end
    end
    local v = cmd("audit", "verify", run_id)
    assert.are.equal(0, v.code, v.stderr)
  end)
end)
