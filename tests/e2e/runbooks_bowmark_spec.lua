-- runbooks/bowmark-first-deploy.lua end to end with the real binary against
-- the fake Kubernetes API server of the rehearsal sandbox
-- (tests/harness/sandbox.lua) and its real PostgreSQL behind the
-- port-forward to postgres-0: hex passwords generated once and saved with
-- op before any Secret holds them, the Secrets, the StatefulSets from the
-- repository-shaped k8s/ of the profile, the infrastructure checks (which
-- fail once when a vhost is missing, and pass after the fix), CI played by
-- the sandbox's B5 player (with the real dbmate as the consumers' init
-- containers), the two backfills side by side with the server's image
-- after dbmate's ledger is read, their Jobs deleted, the final
-- verification, the restore of the old cluster's dump through the
-- port-forward, the password rotation (resumed after a failed restart)
-- and its rollback with rollout undo.
local rb = require "rbtest"
local sandbox = require "sandbox"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local crypto = require "runbook._crypto"
local pg = require "runbook.pg"

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
    sb = sandbox.up(dir, { services = { "k8s", "s3", "pg" }, quiet = true })
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
    assert.truthy(r.stdout:find("runbook bowmark-first-deploy, 12 steps (1 manual), 1 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.are.equal(0, d.code, d.stderr)
    for _, line in ipairs {
      "- [ ] **B1** Generate and Store Passwords",
      "- [ ] **B1-vault** Save the passwords to 1Password",
      "- [ ] **B2** Create All Secrets",
      "- [ ] **B3** Deploy Infrastructure",
      "- [ ] **B4** Verify Infrastructure",
      "- [ ] **B5** Merge to Master *(manual)*",
      "The following steps of group `backfill` may run at the same time.",
      "- [ ] **B6-paving** Run Initial Backfill (paving)",
      "- [ ] **B7** Verify Everything",
      "- [ ] **B8** Restore from Backup",
      "- [ ] **B9** Rotate the PostgreSQL password",
      "| `spaces_secret` | (required) | `SPACES_SECRET` | yes |  |",
      "| `manifests` | `k8s` |",
    } do
      assert.truthy(d.stdout:find(line, 1, true), "missing: " .. line)
    end
    -- the guide's order: saved to 1Password before the Secrets are made
    assert.truthy(d.stdout:find("**B1-vault**", 1, true) < d.stdout:find("**B2**", 1, true))
  end)

  it("runs dry from nothing and writes nothing", function()
    local r = exec { "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    for _, line in ipairs {
      "B2       action k8s: create v1 Secret bowmark/postgres: created (dry run)",
      "B3       action k8s: apply apps/v1 StatefulSet bowmark/postgres: created (dry run)",
      "B3       action k8s: apply apps/v1 StatefulSet bowmark/rabbitmq: created (dry run)",
      "B1-vault would run: op item create --category login --title 'Bow-Mark Production K8s' --vault Private --tags runbook/bowmark-first-deploy-",
      "B6-paving dry run: would check dbmate's migrations and run the paving backfill with server-deployment's image, once CI has deployed it",
      "B8       dry run: would download s3://bowmark-backups/" .. sandbox.BOWMARK_DUMP,
      "B9       dry run: would ALTER USER bowmark, update the postgres Secret and restart server-deployment,",
      "B3-spaces action s3: would set lifecycle of s3://bowmark-backups: pg-backups-35d (pg-backups/: expire after 35 d, abort uploads after 1 d)",
      "dry run complete: 12 step(s) would run; nothing was written",
    } do
      assert.truthy(r.stderr:find(line, 1, true), "missing: " .. line .. "\n" .. r.stderr)
    end
    assert.is_nil(c:get { kind = "Secret", name = "postgres" })
    assert.is_nil(c:get { kind = "StatefulSet", name = "postgres" })
    -- B3 applied the two StatefulSet files of the repository's k8s/, not the CronJob (CI's)
    assert.is_nil(r.stderr:find("CronJob bowmark/pg-backup", 1, true), r.stderr)
    assert.is_false(rb.exists(dir .. "/state/runs"))
    assert.is_false(rb.exists(dir .. "/bowmark-restore"))
    assert.is_nil(table.concat(sb:cli_log(), "\n"):find("op item create", 1, true))
    -- outside the repository (the default manifests = k8s, relative), B3 says where it looked
    r = exec { "--dry-run", "--param", "manifests=" .. dir .. "/no-repo/k8s" }
    assert.are.equal(2, r.code, r.stderr) -- a configuration error
    assert.truthy(r.stderr:find("B3       FAILED: " .. dir .. "/no-repo/k8s/postgres-statefulset.yaml does not exist: run from the repository's root,"
      .. " or set the manifests param to its k8s/ folder", 1, true), r.stderr)
  end)

  it("deploys Bow-Mark from nothing to a verified backup, restores the old cluster's dump, rotates and rolls back", function()
    -- RabbitMQ lacks a vhost the first time (newer rules win over the profile's)
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", prefix = "verify-rabbitmq-", logs = "bowmark" })
    local r = exec()
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("B4       FAILED: RabbitMQ lacks vhost(s) bowmark-concrete", 1, true), r.stderr)
    local evs, _, run_id = rb.journal(dir .. "/state")
    local suffix = run_id:match("%-(%d%d%d%d%d%d%-%x+)$")
    local function job(base) return base .. "-" .. suffix end

    -- the Secrets of the guide, passwords as 64 hex digits
    local pg_secret = c:get_secret("postgres")
    local rmq = c:get_secret("rabbitmq")
    local pg_pw, rmq_pw = pg_secret.data.password:reveal(), rmq.data.password:reveal()
    assert.truthy(#pg_pw == 64 and pg_pw:match("^%x+$") and #rmq_pw == 64 and rmq_pw:match("^%x+$"))
    assert.is_true(pg_pw ~= rmq_pw)
    assert.are.same({ "bowmark", "postgres", "5432", "bowmark_reports_paving", "bowmark_reports_concrete" },
      { pg_secret.data.user:reveal(), pg_secret.data.host:reveal(), pg_secret.data.port:reveal(), pg_secret.data.dbPaving:reveal(), pg_secret.data.dbConcrete:reveal() })
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

    -- the passwords went to 1Password (op, once) before any Secret was made
    local ops = {}
    for _, l in ipairs(sb:cli_log()) do if l:find("op item create", 1, true) then ops[#ops + 1] = l end end
    assert.are.equal(1, #ops)
    assert.truthy(ops[1]:find("--title Bow-Mark Production K8s --vault Private --tags runbook/" .. run_id
      .. " --template /dev/stdin", 1, true), ops[1])
    -- the passwords reach op as its item template on stdin, never in its argv
    assert.is_nil(ops[1]:find(pg_pw, 1, true), "the postgres password is in op's command line")
    assert.is_nil(ops[1]:find(rmq_pw, 1, true), "the rabbitmq password is in op's command line")
    local item_id = of_type(evs, "step.finished", "B1-vault")[1].outputs.item
    local item = require("runbook.json").decode(assert(rb.read(dir .. "/stubs/op/" .. item_id .. ".json")))
    local fields = {}
    for _, f in ipairs(item.fields) do fields[f.label] = f end
    assert.are.same({ "LOGIN", "Bow-Mark Production K8s" }, { item.category, item.title })
    assert.are.same({ "CONCEALED", pg_pw }, { fields["postgres-password"].type, fields["postgres-password"].value })
    assert.are.same({ "CONCEALED", rmq_pw }, { fields["rabbitmq-password"].type, fields["rabbitmq-password"].value })
    local op_seq, secret_seq
    for _, e in ipairs(evs) do
      if e.type == "action" and e.step == "B1-vault" and e.kind == "command" then op_seq = op_seq or e.seq end
      if e.type == "action" and e.step == "B2" then secret_seq = secret_seq or e.seq end
    end
    assert.truthy(op_seq and secret_seq and op_seq < secret_seq, "op item create did not come before the Secrets")

    -- the StatefulSets from the repository's k8s/ (the profile's manifests param)
    local b3 = of_type(evs, "step.finished", "B3")[1].outputs
    assert.are.same({ sandbox.BOWMARK_REPO .. "/k8s/postgres-statefulset.yaml", sandbox.BOWMARK_REPO .. "/k8s/rabbitmq-statefulset.yaml" }, b3.files)
    for _, name in ipairs { "postgres", "rabbitmq" } do
      local ss = c:get { kind = "StatefulSet", name = name }
      assert.are.equal(1, ss.status.readyReplicas)
      assert.are.equal("None", c:get({ kind = "Service", name = name }).spec.clusterIP)
      assert.are.equal("Bound", c:get({ kind = "PersistentVolumeClaim", name = "data-" .. name .. "-0" }).status.phase)
    end
    local ss = c:get { kind = "StatefulSet", name = "postgres" }
    assert.are.equal("10Gi", ss.spec.volumeClaimTemplates[1].spec.resources.requests.storage)
    assert.truthy(c:get { kind = "ConfigMap", name = "rabbitmq-config" }.data["definitions.template.json"]:find('"bowmark-concrete"', 1, true))
    assert.is_nil(c:get { kind = "CronJob", name = "pg-backup" }) -- CI's, at B5

    -- fixed: B4 runs its Jobs again and passes; B5 waits for CI
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", prefix = "verify-rabbitmq-", logs = "bowmark\nbowmark-concrete" })
    r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for B5 (Merge to Master)", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal(2, #of_type(evs, "step.started", "B4"))
    assert.are.equal(1, #of_type(evs, "step.started", "B3"))
    assert.are.equal(1, #of_type(evs, "step.started", "B1-vault"))
    assert.is_nil(c:get { kind = "Job", name = job("verify-rabbitmq") }) -- deleted once complete

    -- the release is merged: postgres-0 initialises its databases, CI applies
    -- pg-migrations, the Deployments and the CronJob, the consumers run dbmate up
    sandbox.PLAYERS["bowmark-first-deploy"].B5.act(sb)
    assert.are.equal(SERVER_IMAGE, sandbox.BOWMARK_SERVER_IMAGE)
    assert.truthy(c:get { kind = "ConfigMap", name = "pg-migrations" })
    assert.are.same({ "0 8 * * *", "Forbid" }, { c:get({ kind = "CronJob", name = "pg-backup" }).spec.schedule,
      c:get({ kind = "CronJob", name = "pg-backup" }).spec.concurrencyPolicy })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("backfill-paving"),
      logs = "backfill: 1200 jobsites\nbackfill: 48211 material shipments\nbackfill done" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("backfill-concrete"),
      logs = "backfill: 310 jobsites\nbackfill done" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("verify-backfill"), logs = "48211" })
    fake:control("POST", "/_fake/job-logs", { namespace = "bowmark", name = job("pg-backup-verify"),
      logs = "uploaded s3://bowmark-backups/pg-backups/bowmark_reports_paving/bowmark_reports_paving-20260301T080000Z.pgdump\n"
        .. "uploaded s3://bowmark-backups/pg-backups/bowmark_reports_concrete/bowmark_reports_concrete-20260301T080000Z.pgdump" })

    -- the backfills fail the first time: their Jobs stay for a look
    fake:control("POST", "/_fake/fail-job", { namespace = "bowmark" })
    r = exec()
    assert.are.equal(1, r.code, r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal("verify", of_type(evs, "step.confirmed", "B5")[1].via)
    for app, db in pairs { paving = "bowmark_reports_paving", concrete = "bowmark_reports_concrete" } do
      local j = c:get { kind = "Job", name = job("backfill-" .. app) }
      assert.truthy(j, r.stderr)
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
      assert.are.equal("Failed", j.status.conditions[#j.status.conditions].type)
    end
    fake:control("DELETE", "/_fake/fail-job")

    -- dbmate's ledger is read for real: concrete's lacks the migration
    sb:psql("DELETE FROM schema_migrations", "bowmark_reports_concrete")
    r = exec()
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("B6-concrete FAILED: bowmark_reports_concrete: dbmate has not applied 20250101000000 of the pg-migrations ConfigMap"
      .. " (kubectl logs deployment/consumer-concrete-deployment -c migrate)", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal(1, #of_type(evs, "step.finished", "B6-paving"))
    assert.is_nil(c:get { kind = "Job", name = job("backfill-concrete") }.status.succeeded) -- not run again yet
    sb:psql("INSERT INTO schema_migrations VALUES ('20250101000000')", "bowmark_reports_concrete")

    -- the password rotation's first restart fails after ALTER USER and the Secret
    fake:control("POST", "/_fake/faults", { fail = { code = 500, count = -1 }, method = "PATCH", path = "deployments/server-deployment$" })
    r = exec()
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("B9       FAILED", 1, true), r.stderr)
    fake:control("DELETE", "/_fake/faults")
    local rotated = c:get_secret("postgres").data.password:reveal()
    assert.truthy(#rotated == 64 and rotated:match("^%x+$") and rotated ~= pg_pw)
    r = exec()
    assert.are.equal(0, r.code, r.stderr)
    evs = rb.journal(dir .. "/state")

    -- the backfills ran side by side (their first attempts)
    local function last(list) return list[#list] end
    local p0, c0 = of_type(evs, "step.started", "B6-paving")[1], of_type(evs, "step.started", "B6-concrete")[1]
    local p1, c1 = of_type(evs, "step.failed", "B6-paving")[1], of_type(evs, "step.failed", "B6-concrete")[1]
    assert.truthy(p0.seq < c1.seq and c0.seq < p1.seq, "the backfills did not overlap")
    -- ... and their Jobs are deleted once the result is recorded, pods with them
    for _, step in ipairs { "B6-paving", "B6-concrete" } do
      local app = step:match("B6%-(.*)")
      local out = last(of_type(evs, "step.finished", step)).outputs
      assert.are.same({ job("backfill-" .. app), "Complete", true, 1 }, { out.job, out.status, out.deleted, out.migrations })
      assert.truthy(out.logs_tail:find("backfill done", 1, true))
      assert.is_nil(c:get { kind = "Job", name = job("backfill-" .. app) })
      assert.are.equal(0, #c:list { kind = "Pod", label_selector = { ["job-name"] = job("backfill-" .. app) } })
      local deletes = {}
      for _, a in ipairs(of_type(evs, "action", step)) do
        if a.verb == "delete" and a.name == job("backfill-" .. app) then deletes[#deletes + 1] = a.propagation end
      end
      -- rerun_failed's Foreground delete of the failed Job, then the cleanup
      assert.are.same({ "Foreground", "Background" }, deletes)
    end
    local log = rb.read(dir .. "/state/runs/" .. run_id .. "/log")
    assert.truthy(log:find("bowmark_reports_paving: dbmate's schema_migrations holds all 1 migration(s) of pg-migrations", 1, true))
    assert.truthy(log:find("bowmark_reports_concrete: dbmate's schema_migrations holds all 1 migration(s) of pg-migrations", 1, true))

    -- B7: consumer logs and job output in the run log; the verification backup Job is gone
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

    -- B8: the old cluster's dump restored into production through the port-forward
    local b8 = of_type(evs, "step.finished", "B8")[1].outputs
    assert.are.same({ true, sandbox.BOWMARK_DUMP, "bowmark_reports_paving" }, { b8.restored, b8.dump, b8.database })
    for t, n in pairs(sandbox.BOWMARK_DUMP_ROWS) do
      assert.are.equal(n, b8.rows[t], t)
      assert.are.equal(tostring(n), sb:psql("SELECT count(*) FROM " .. t, "bowmark_reports_paving"), t)
    end
    local restores = {}
    for _, a in ipairs(of_type(evs, "action", "B8")) do restores[#restores + 1] = a.verb end
    assert.truthy(table.concat(restores, " "):find("port-forward restore", 1, true), table.concat(restores, " "))
    local forwards = 0
    for _, e in ipairs(fake:control("GET", "/_fake/execs").items) do
      if e.pod == "postgres-0" and e.portforward and e.portforward[1] == 5432 then forwards = forwards + 1 end
    end
    assert.truthy(forwards >= 4, "port-forwards to postgres-0:5432: " .. forwards)

    -- B9: the password rotated once across the failed attempt and the resume
    assert.are.equal(2, #of_type(evs, "step.started", "B9"))
    local b9 = of_type(evs, "step.finished", "B9")[1].outputs
    assert.are.same({ true, false }, { b9.rotated, b9.altered }) -- the resumed attempt found it altered
    assert.is_true(c:get_secret("postgres").data.password:reveal() == rotated)
    local function login(pw)
      return pg.try_connect(string.format("postgres://bowmark:%s@127.0.0.1:%d/bowmark_reports_paving?sslmode=disable",
        pw, sb.services.pg.port))
    end
    local ok_conn = login(rotated)
    assert.truthy(ok_conn, "the rotated password does not log in")
    ok_conn:close()
    local old_conn, err = login(pg_pw)
    assert.is_nil(old_conn)
    assert.truthy(tostring(err):find("password authentication failed", 1, true), tostring(err))
    local restarted = {}
    for _, a in ipairs(of_type(evs, "action", "B9")) do
      if a.verb == "restart" then restarted[a.name] = (restarted[a.name] or 0) + 1 end
    end
    for _, name in ipairs { "server-deployment", "server-concrete-deployment", "worker-deployment", "worker-concrete-deployment",
      "consumer-deployment", "consumer-concrete-deployment" } do
      local d = c:get { api_version = "apps/v1", kind = "Deployment", name = name }
      assert.truthy(d.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"], name)
      assert.truthy(restarted[name], name .. " was not restarted")
      assert.are.equal(b9.revisions[name], d.metadata.annotations["deployment.kubernetes.io/revision"])
      assert.are.equal(d.status.updatedReplicas, d.spec.replicas)
    end
    assert.is_nil(c:get({ api_version = "apps/v1", kind = "Deployment", name = "client-deployment" }).spec.template.metadata.annotations)

    -- the passwords were generated once, and nothing secret is in clear anywhere
    local files = { rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"), rb.read(dir .. "/state/runs/" .. run_id .. "/log"), r.stdout, r.stderr }
    local values = { pg_pw, rmq_pw, rotated }
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
    local spaces_client <close> = s3.connect { endpoint = m.endpoint, access_key = m.access_key, secret_key = secret.wrap(m.secret_key) }
    local rules = spaces_client:lifecycle(PLAIN.SPACES_NAME)
    assert.are.same({ { "pg-backups-35d", "pg-backups/", 35, 1 } },
      { { rules[1].id, rules[1].prefix, rules[1].expire_days, rules[1].abort_incomplete_days } })
    assert.are.equal(0, cmd("audit", "verify", run_id).code)

    -- the guide's rollback: rollout undo of the six, to the ReplicaSet before the restart
    local before = {}
    for name in pairs(restarted) do
      before[name] = c:get { api_version = "apps/v1", kind = "Deployment", name = name }
    end
    local rb_r = cmd("rollback", run_id, "--to", "B8")
    assert.are.equal(0, rb_r.code, rb_r.stderr)
    for name, d0 in pairs(before) do
      local d = c:get { api_version = "apps/v1", kind = "Deployment", name = name }
      assert.is_nil((d.spec.template.metadata.annotations or {})["kubectl.kubernetes.io/restartedAt"], name)
      assert.are.equal(tostring(tonumber(d0.metadata.annotations["deployment.kubernetes.io/revision"]) + 1),
        d.metadata.annotations["deployment.kubernetes.io/revision"], name)
      -- the first ReplicaSet serves again, the restart's is scaled to zero
      local serving = {}
      for _, rs in ipairs(c:list { api_version = "apps/v1", kind = "ReplicaSet", label_selector = { app = name } }) do
        if (rs.spec.replicas or 0) > 0 then serving[#serving + 1] = rs.metadata.annotations["deployment.kubernetes.io/revision"] end
      end
      assert.are.same({ d.metadata.annotations["deployment.kubernetes.io/revision"] }, serving, name)
      assert.are.equal(d.spec.replicas, d.status.updatedReplicas)
    end
    evs = rb.journal(dir .. "/state")
    local undo_patches = 0
    for _, e in ipairs(evs) do
      if e.type == "action" and e.step == "B9" and e.verb == "patch" and e.patch_type == "json" then undo_patches = undo_patches + 1 end
    end
    assert.are.equal(6, undo_patches)
    assert.truthy(rb.read(dir .. "/state/runs/" .. run_id .. "/log"):find("rollout undo deployment/server-deployment: revision 2 -> the template of revision 1 (rolled back)", 1, true))
    assert.are.equal(0, cmd("audit", "verify", run_id).code)

    -- the backfill's result is recorded before its Job is deleted: run again
    -- (reset), the step finds the result and does not backfill a second time
    local function creates(list)
      local n = 0
      for _, a in ipairs(of_type(list, "action", "B6-paving")) do
        if a.verb == "create" and a.object_kind == "Job" then n = n + 1 end
      end
      return n
    end
    local created = creates(evs)
    assert.are.equal(2, created) -- the failed one and its rerun
    assert.are.equal(0, cmd("reset", run_id, "B6-paving", "--note", "e2e: run the finished backfill step again").code)
    r = exec()
    assert.are.equal(0, r.code, r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal(created, creates(evs))
    local again = last(of_type(evs, "step.finished", "B6-paving")).outputs
    assert.are.same({ job("backfill-paving"), "Complete", true }, { again.job, again.status, again.deleted })
    local cleanup = last(of_type(evs, "action", "B6-paving"))
    assert.are.same({ "delete", "absent" }, { cleanup.verb, cleanup.result })

    assert.are.equal(0, cmd("audit", "verify", run_id).code)
  end)
end)
