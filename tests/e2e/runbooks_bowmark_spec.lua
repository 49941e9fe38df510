-- runbooks/bowmark-first-deploy.lua end to end with the real binary against
-- the fake Kubernetes API server of the rehearsal sandbox
-- (tests/harness/sandbox.lua): Secrets (hex passwords generated once),
-- the shipped StatefulSets and CronJob, the infrastructure checks (which
-- fail once when a vhost is missing, and pass after the fix), CI played by
-- the sandbox's B5 player, the two backfills side by side with the server's
-- image, and the final verification with a Job from the pg-backup CronJob.
local rb = require "rbtest"
local sandbox = require "sandbox"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local crypto = require "runbook._crypto"

local RUNBOOK = rb.source_dir .. "/runbooks/bowmark-first-deploy.lua"
local SERVER_IMAGE = "itsdevin/bow-mark-server:3f9c2e1"

local SECRETS = {
  BOWMARK_PAVING_MONGO_URI = "mongodb+srv://bowmark:atlas-pw-paving-81@paving.x1y2z.mongodb.net/paving",
  BOWMARK_CONCRETE_MONGO_URI = "mongodb+srv://bowmark:atlas-pw-concrete-82@concrete.x1y2z.mongodb.net/concrete",
  BOWMARK_JWT_SECRET = "jwt-secret-for-e2e-0f0f0f0f",
  SPACES_KEY = "DO00SPACESKEYE2E1234", SPACES_SECRET = "spaces-secret-e2e-abcdefabcdef",
  SMTP_PASSWORD = "smtp-password-e2e-5555", MEILISEARCH_API_KEY = "meili-master-key-e2e-7777",
}
local PLAIN = {
  SPACES_NAME = "bowmark-backups", SPACES_REGION = "nyc3", BOWMARK_EMAIL_FROM = "reports@bowmark.ca",
  SMTP_USER = "apikey", SMTP_HOST = "smtp.sendgrid.net", MEILISEARCH_HOST = "https://search.bowmark.ca",
}

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

describe("runbooks/bowmark-first-deploy.lua", function()
  local sb, fake, dir, c, env

  setup(function()
    dir = rb.tmpdir("bowmark")
    -- the sandbox's cluster has the bowmark namespace and the Jobs' output
    -- and moto plays the Space (its keys are the Spaces keys of the run)
    sb = sandbox.up(dir, { services = { "k8s", "s3" }, quiet = true })
    SECRETS.SPACES_KEY, SECRETS.SPACES_SECRET = sb.services.s3.access_key, sb.services.s3.secret_key
    fake = sb.fake
    c = sb:cluster("bowmark")
    env = {}
    for k, v in pairs(SECRETS) do env[k] = v end
    for k, v in pairs(PLAIN) do env[k] = v end
  end)
  teardown(function()
    if c then c:close() end
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  local function exec(extra)
    return sb:exec(RUNBOOK, extra, { env = env, timeout = 120 })
  end
  local function cmd(...)
    return sb:runbook { ... }
  end

  it("checks and renders as the guide's seven steps", function()
    local r = rb.run { "check", RUNBOOK }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("missing required param 'jwt_secret' (set --param jwt_secret=... or the environment variable BOWMARK_JWT_SECRET)", 1, true), r.stderr)
    r = rb.run({ "check", RUNBOOK }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook bowmark-first-deploy, 10 steps (2 manual), 1 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.are.equal(0, d.code, d.stderr)
    for _, line in ipairs {
      "- [ ] **B1** Generate and Store Passwords",
      "- [ ] **B2** Create All Secrets",
      "- [ ] **B3** Deploy Infrastructure",
      "- [ ] **B4** Verify Infrastructure",
      "- [ ] **B5** Merge to Master *(manual)*",
      "The following steps of group `backfill` may run at the same time.",
      "- [ ] **B6-paving** Run Initial Backfill (paving)",
      "- [ ] **B7** Verify Everything",
      "| `spaces_secret` | (required) | `SPACES_SECRET` | yes |  |",
    } do
      assert.truthy(d.stdout:find(line, 1, true), "missing: " .. line)
    end
  end)

  it("runs dry from nothing and writes nothing", function()
    local r = exec { "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    for _, line in ipairs {
      "B2       action k8s: create v1 Secret bowmark/postgres: created (dry run)",
      "B3       action k8s: apply apps/v1 StatefulSet bowmark/postgres: created (dry run)",
      "B3       action k8s: apply batch/v1 CronJob bowmark/pg-backup: created (dry run)",
      "B6-paving dry run: would run the paving backfill with server-deployment's image, once CI has deployed it",
      "B3-spaces action s3: would set lifecycle of s3://bowmark-backups: pg-backups-35d (pg-backups/: expire after 35 d, abort uploads after 1 d)",
      "dry run complete: 10 step(s) would run; nothing was written",
    } do
      assert.truthy(r.stderr:find(line, 1, true), "missing: " .. line .. "\n" .. r.stderr)
    end
    assert.is_nil(c:get { kind = "Secret", name = "postgres" })
    assert.is_nil(c:get { kind = "StatefulSet", name = "postgres" })
    assert.is_false(rb.exists(dir .. "/state/runs"))
  end)

  it("deploys Bow-Mark from nothing to a verified backup", function()
    local r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for B2-vault (Save the passwords to 1Password)", 1, true), r.stderr)
    local _, _, run_id = rb.journal(dir .. "/state")
    local suffix = run_id:match("%-(%d%d%d%d%d%d%-%x+)$")
    local function job(base) return base .. "-" .. suffix end

    -- the Secrets of the guide, passwords as 64 hex digits
    local pg = c:get_secret("postgres")
    local rmq = c:get_secret("rabbitmq")
    local pg_pw, rmq_pw = pg.data.password:reveal(), rmq.data.password:reveal()
    assert.truthy(#pg_pw == 64 and pg_pw:match("^%x+$") and #rmq_pw == 64 and rmq_pw:match("^%x+$"))
    assert.is_true(pg_pw ~= rmq_pw)
    assert.are.same({ "bowmark", "postgres", "5432", "bowmark_reports_paving", "bowmark_reports_concrete" },
      { pg.data.user:reveal(), pg.data.host:reveal(), pg.data.port:reveal(), pg.data.dbPaving:reveal(), pg.data.dbConcrete:reveal() })
    assert.are.same({ "rabbitmq", "5672", "bowmark", "bowmark-concrete" },
      { rmq.data.host:reveal(), rmq.data.port:reveal(), rmq.data.vhost:reveal(), rmq.data.vhostConcrete:reveal() })
    assert.is_true(c:get_secret("paving").data.mongoURI:reveal() == SECRETS.BOWMARK_PAVING_MONGO_URI)
    assert.is_true(c:get_secret("concrete").data.mongoURI:reveal() == SECRETS.BOWMARK_CONCRETE_MONGO_URI)
    assert.is_true(c:get_secret("general").data.jwtSecret:reveal() == SECRETS.BOWMARK_JWT_SECRET)
    local spaces = c:get_secret("spaces")
    assert.is_true(spaces.data.key:reveal() == SECRETS.SPACES_KEY and spaces.data.secret:reveal() == SECRETS.SPACES_SECRET)
    assert.are.same({ "bowmark-backups", "nyc3" }, { spaces.data.name:reveal(), spaces.data.region:reveal() })
    local email = c:get_secret("email")
    assert.are.same({ "reports@bowmark.ca", "apikey", "smtp.sendgrid.net", "587" },
      { email.data.email:reveal(), email.data.username:reveal(), email.data.host:reveal(), email.data.port:reveal() })
    assert.is_true(c:get_secret("search").data.apiKey:reveal() == SECRETS.MEILISEARCH_API_KEY)

    -- the infrastructure checks read the Jobs' output; RabbitMQ lacks a vhost the first time
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("verify-postgres"),
      logs = "bowmark_reports_concrete\nbowmark_reports_paving" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("verify-rabbitmq"), logs = "bowmark" })
    assert.are.equal(0, cmd("confirm", run_id, "B2-vault", "--note", "op item 'Bow-Mark Production K8s'").code)
    r = exec()
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("B4       FAILED: RabbitMQ lacks vhost(s) bowmark-concrete", 1, true), r.stderr)

    -- the StatefulSets and the CronJob from runbooks/bowmark/k8s/
    for _, name in ipairs { "postgres", "rabbitmq" } do
      local ss = c:get { kind = "StatefulSet", name = name }
      assert.are.equal(1, ss.status.readyReplicas)
      assert.are.equal("None", c:get({ kind = "Service", name = name }).spec.clusterIP)
      assert.are.equal("Bound", c:get({ kind = "PersistentVolumeClaim", name = "data-" .. name .. "-0" }).status.phase)
    end
    local ss = c:get { kind = "StatefulSet", name = "postgres" }
    assert.are.equal("10Gi", ss.spec.volumeClaimTemplates[1].spec.resources.requests.storage)
    assert.truthy(c:get { kind = "ConfigMap", name = "rabbitmq-config" }.data["definitions.template.json"]:find('"bowmark-concrete"', 1, true))
    local cj = c:get { kind = "CronJob", name = "pg-backup" }
    assert.are.same({ "0 8 * * *", "Forbid" }, { cj.spec.schedule, cj.spec.concurrencyPolicy })

    -- fixed: B4 runs its Jobs again and passes; B5 waits for CI
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("verify-rabbitmq"), logs = "bowmark\nbowmark-concrete" })
    r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for B5 (Merge to Master)", 1, true), r.stderr)
    local evs = rb.journal(dir .. "/state")
    assert.are.equal(2, #of_type(evs, "step.started", "B4"))
    assert.are.equal(1, #of_type(evs, "step.started", "B3"))
    assert.is_nil(c:get { kind = "Job", name = job("verify-rabbitmq") }) -- deleted once complete

    -- the release is merged; CI applies the pg-migrations ConfigMap and the eight Deployments
    sandbox.PLAYERS["bowmark-first-deploy"].B5.act(sb)
    assert.are.equal(SERVER_IMAGE, sandbox.BOWMARK_SERVER_IMAGE)
    assert.truthy(c:get { kind = "ConfigMap", name = "pg-migrations" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("backfill-paving"),
      logs = "backfill: 1200 jobsites\nbackfill: 48211 material shipments\nbackfill done" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("backfill-concrete"),
      logs = "backfill: 310 jobsites\nbackfill done" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("verify-backfill"), logs = "48211" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("pg-backup-verify"),
      logs = "uploaded s3://bowmark-backups/pg-backups/bowmark_reports_paving/bowmark_reports_paving-20260301T080000Z.pgdump\n"
        .. "uploaded s3://bowmark-backups/pg-backups/bowmark_reports_concrete/bowmark_reports_concrete-20260301T080000Z.pgdump" })

    r = exec()
    assert.are.equal(0, r.code, r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal("verify", of_type(evs, "step.confirmed", "B5")[1].via)

    -- the backfills ran side by side, with the server's image and the guide's environment
    local p0, c0 = of_type(evs, "step.started", "B6-paving")[1], of_type(evs, "step.started", "B6-concrete")[1]
    local p1, c1 = of_type(evs, "step.finished", "B6-paving")[1], of_type(evs, "step.finished", "B6-concrete")[1]
    assert.truthy(p0.seq < c1.seq and c0.seq < p1.seq, "the backfills did not overlap")
    for app, db in pairs { paving = "bowmark_reports_paving", concrete = "bowmark_reports_concrete" } do
      local j = c:get { kind = "Job", name = job("backfill-" .. app) }
      local pod = j.spec.template.spec
      local ct = pod.containers[1]
      assert.are.same({ SERVER_IMAGE, "backfill-" .. app, "Never", "default-pool" },
        { ct.image, ct.name, pod.restartPolicy, pod.nodeSelector["doks.digitalocean.com/node-pool"] })
      assert.are.same({ "node", "dist/scripts/backfill-postgres.js" }, ct.command)
      local envs = {}
      for _, e in ipairs(ct.env) do
        envs[e.name] = e.value or (e.valueFrom.secretKeyRef.name .. "/" .. e.valueFrom.secretKeyRef.key)
      end
      assert.are.same({ NODE_ENV = "production", MONGO_URI = app .. "/mongoURI", POSTGRES_HOST = "postgres/host",
        POSTGRES_PORT = "postgres/port", POSTGRES_USER = "postgres/user", POSTGRES_PASSWORD = "postgres/password", POSTGRES_DB = db }, envs)
      assert.are.equal("Complete", j.status.conditions[#j.status.conditions].type)
    end

    -- B7: consumer logs and job output in the run log; the verification backup Job is gone
    local log = rb.read(dir .. "/state/runs/" .. run_id .. "/log")
    assert.truthy(log:find("B7 info [pod/consumer-concrete-deployment-", 1, true))
    assert.truthy(log:find("] Connected to RabbitMQ vhost bowmark-concrete", 1, true))
    assert.truthy(log:find("B6-paving info [job/" .. job("backfill-paving"), 1, true))
    assert.truthy(log:find("] backfill: 48211 material shipments", 1, true))
    local b7 = of_type(evs, "step.finished", "B7")[1]
    assert.are.equal(48211, b7.outputs.fact_material_shipment)
    assert.are.equal(job("pg-backup-verify"), b7.outputs.backup_job)
    assert.truthy(b7.outputs.backup_log:find("bowmark_reports_concrete-20260301T080000Z.pgdump", 1, true))
    assert.is_nil(c:get { kind = "Job", name = job("pg-backup-verify") })
    local made = {}
    for _, a in ipairs(of_type(evs, "action", "B7")) do made[#made + 1] = a.verb .. " " .. a.object_kind .. " " .. a.name end
    assert.are.same({ "create Job " .. job("verify-backfill"), "delete Job " .. job("verify-backfill"),
      "create Job " .. job("pg-backup-verify"), "delete Job " .. job("pg-backup-verify") }, made)
    local from_cj = of_type(evs, "action", "B7")[3]
    assert.are.equal(201, from_cj.code)

    -- the passwords were generated once, and nothing secret is in clear anywhere
    pg = c:get_secret("postgres")
    assert.is_true(pg.data.password:reveal() == pg_pw)
    local files = { rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"), log, r.stdout, r.stderr }
    local values = { pg_pw, rmq_pw }
    for _, v in pairs(SECRETS) do values[#values + 1] = v end
    for _, value in ipairs(values) do
      for i, text in ipairs(files) do
        assert.is_nil(text:find(value, 1, true), "a secret in clear in file " .. i)
        assert.is_nil(text:find(crypto.base64_encode(value), 1, true), "a secret in base64 in file " .. i)
      end
    end
    -- and the plain names stay readable in the audit trail
    assert.truthy(files[1]:find('"summary":"apply apps/v1 StatefulSet bowmark/postgres: created"', 1, true))
    -- the Space deletes pg-backups/ objects after 35 days by itself
    local m = sb.services.s3
    local spaces <close> = s3.connect { endpoint = m.endpoint, access_key = m.access_key, secret_key = secret.wrap(m.secret_key) }
    local rules = spaces:lifecycle(PLAIN.SPACES_NAME)
    assert.are.same({ { "pg-backups-35d", "pg-backups/", 35, 1 } },
      { { rules[1].id, rules[1].prefix, rules[1].expire_days, rules[1].abort_incomplete_days } })
    assert.are.equal(0, cmd("audit", "verify", run_id).code)
  end)
end)
