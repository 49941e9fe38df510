-- runbooks/first-deploy.lua (Tezca, M1-M14) end to end with the real
-- binary, in the rehearsal sandbox (tests/harness/sandbox.lua, the code of
-- scripts/sandbox.sh): the fake Kubernetes API server (its Job controller
-- completes the one-off Jobs; the sandbox's ArgoCD stand-in syncs the
-- Application the sandbox's M6 player adds), the HTTPS stand-ins for Tezca
-- and Janua under their own host names, moto for R2, the sandbox's
-- PostgreSQL as the shared cluster, its gh stub as GitHub. Manual steps are
-- confirmed with `runbook confirm` (M2 by its verify, once gh lists the
-- secrets); the migrate Job fails once through the sandbox's fault switch
-- and the run resumes at M7 with M3's generated secrets unchanged; a failed
-- CI build stops M10-images until it is fixed.
local rb = require "rbtest"
local sandbox = require "sandbox"
local k8s = require "runbook.k8s"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local curl = require "runbook._curl"
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local pg = require "runbook.pg"

local RUNBOOK = rb.source_dir .. "/runbooks/first-deploy.lua"

local JANUA = {
  JANUA_API_KEY = "sk_live_e2e_janua_api_key_4f1c",
  JANUA_PUBLISHABLE_KEY = "pk_live_e2e_janua_publishable_9a2b",
  JANUA_SECRET_KEY = "sk_live_e2e_janua_secret_key_77d0",
}
local SENTRY_DSN = "https://e2e0sentry0key@o4242.ingest.sentry.io/1717"

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

describe("runbooks/first-deploy.lua", function()
  local sb, fake, janua, tezca, store, dir, cluster, http
  local env

  setup(function()
    dir = rb.tmpdir("firstdeploy")
    sb = sandbox.up(dir, { services = { "k8s", "https", "s3", "argocd", "pg" }, quiet = true })
    fake, janua, tezca, store = sb.fake, sb.https.janua, sb.https.tezca, sb.services.s3
    cluster = sb:cluster()
    http = curl.client { ca_file = sb:ca_file() }
    -- the sandbox's credentials, with values this spec looks for
    env = { TEZCA_DB_HOST = "pg.madfam.internal", SENTRY_DSN = SENTRY_DSN }
    for k, v in pairs(JANUA) do env[k] = v end
  end)
  teardown(function()
    if http then http:close() end
    if cluster then cluster:close() end
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
  local function oauth_client()
    return assert(http:request { url = janua.local_base .. "/api/v1/oauth/clients/tezca-admin",
      headers = { { "Authorization", "Bearer " .. janua.token } } })
  end

  it("checks and renders as the checklist it replaces", function()
    -- without its environment, check names what exec would miss
    local r = rb.run { "check", RUNBOOK }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("missing required param 'db_host' (set --param db_host=... or the environment variable TEZCA_DB_HOST)", 1, true), r.stderr)
    -- with the sandbox's values file and environment, as exec runs it
    r = sb:runbook({ "check", RUNBOOK, "--values", sb:values_file("first-deploy") }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook tezca-first-deploy, 21 steps (6 manual), 2 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.are.equal(0, d.code, d.stderr)
    for _, line in ipairs {
      "# tezca-first-deploy",
      "- [ ] **M1** Install @janua/nextjs in admin *(manual)*",
      "- [ ] **M3** Create K8s tezca-secrets",
      "- [ ] **M3-db** Create the tezca role and database on the shared PostgreSQL",
      "- [ ] **M10-images** Docker images build in CI (verification check 1)",
      "- [ ] **M10-ci** CI/CD pipeline: digests committed, ArgoCD synced (verification check 10)",
      "- [ ] **M6** Add to ArgoCD root application *(manual)*",
      "The following steps of group `after-migrate` may run at the same time.",
      "- [ ] **M9** Build Elasticsearch indices",
      "  <br>owner: DevOps; after M7; up to 3 attempts (exponential backoff); timeout 14400 s",
      "- [ ] **M14** Run R2 data migration",
      "| `janua_admin_token` | (required) | `JANUA_ADMIN_TOKEN` | yes | a Janua admin access token (M4) |",
    } do
      assert.truthy(d.stdout:find(line, 1, true), "missing: " .. line)
    end
  end)

  it("runs dry from nothing to the end and writes nothing anywhere", function()
    local r = exec { "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    for _, line in ipairs {
      "M1 (manual) would wait for a person: Install @janua/nextjs in admin",
      "M3       action k8s: apply v1 Namespace tezca: created (dry run)",
      "M3       dry run: Secret tezca-secrets would be created in the new namespace tezca",
      "M3-db    dry run: role tezca would get DB_PASSWORD of tezca-secrets, once M3 has made it",
      "M4       action http: would POST " .. sb:site_url("janua") .. "/api/v1/oauth/clients",
      "M7       dry run: would run python apps/manage.py migrate --noinput in a Job from tezca-api's pod template, once ArgoCD has created it",
      "M10      http.check [ok] 7 Admin API (valid JWT)",
      "deploy-admin.yml: run 7100003 on main succeeded (commit 5e1f0c2d9a8b)",
      "M10-ci   dry run: not waited for: ArgoCD Application tezca is not synced yet",
      "M14-dry  dry run: would run python scripts/migrate_to_r2.py --dry-run in a Job",
      "M14-approve (manual) would wait for a person: Approve the R2 data migration after its dry run",
      "M14      dry run: would run python scripts/migrate_to_r2.py in a Job",
      "dry run complete: 21 step(s) would run; nothing was written",
    } do
      assert.truthy(r.stderr:find(line, 1, true), "missing: " .. line .. "\n" .. r.stderr)
    end
    assert.is_nil(cluster:get { kind = "Namespace", name = "tezca" })
    assert.is_false(rb.exists(dir .. "/state/runs"))
    local bucket <close> = s3.connect { endpoint = store.endpoint, access_key = store.access_key, secret_key = secret.wrap(store.secret_key) }
    assert.is_false(bucket:bucket_exists("tezca-documents"))
    assert.are.equal(404, oauth_client().status)
    assert.are.equal("", sb:psql("SELECT rolname FROM pg_roles WHERE rolname = 'tezca'"))
  end)

  it("runs M1-M14: waits for people, fails at M7, resumes there, and leaves an audit trail that verifies", function()
    -- M1, M2: people
    local r = exec()
    assert.are.equal(3, r.code, r.stderr)
    local evs, _, run_id = rb.journal(dir .. "/state")
    assert.truthy(r.stderr:find("waiting for M1 (Install @janua/nextjs in admin)", 1, true), r.stderr)
    local suffix = run_id:match("%-(%d%d%d%d%d%d%-%x+)$")
    local function job(base) return base .. "-" .. suffix end
    assert.are.equal(0, cmd("confirm", run_id, "M1", "--note", "@janua/nextjs 1.4.0 in a1b2c3d").code)
    r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for M2 (Set GitHub secrets)", 1, true), r.stderr)
    assert.truthy(r.stderr:find("madfam-org/tezca has no Actions secret MADFAM_BOT_PAT, ENCLII_CALLBACK_TOKEN, "
      .. "NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY yet", 1, true), r.stderr)
    -- the Repo Admin sets two of the three: M2 still waits, naming the third
    sb:cli({ "gh", "secret", "set", "MADFAM_BOT_PAT", "--repo", "madfam-org/tezca" }, "ghp_e2e\n")
    sb:cli({ "gh", "secret", "set", "ENCLII_CALLBACK_TOKEN", "--repo", "madfam-org/tezca" }, "cb_e2e\n")
    r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("madfam-org/tezca has no Actions secret NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY yet", 1, true), r.stderr)
    assert.are.equal(0, #of_type(rb.journal(dir .. "/state"), "step.confirmed", "M2"))
    sb:cli({ "gh", "secret", "set", "NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY", "--repo", "madfam-org/tezca" }, "pk_e2e\n")

    -- DNS-only records here: M5 checks each of the four names is a CNAME to
    -- the tunnel (the sandbox's hosts file plays it; without a private mount
    -- namespace the names are localhost). M3, M4 run; M5 waits while the
    -- names point elsewhere
    local tunnel = sb.dns and sandbox.TEZCA_TUNNEL or "localhost"
    r = exec { "--param", "dns_proxied=false", "--param", "tunnel_host=elsewhere.example.net" }
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for M5 (Configure Cloudflare DNS)", 1, true), r.stderr)
    -- M5 confirms itself (the names are CNAMEs to the tunnel); M6 waits for ArgoCD
    r = exec { "--param", "dns_proxied=false", "--param", "tunnel_host=" .. tunnel }
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for M6 (Add to ArgoCD root application)", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    local m5 = of_type(evs, "step.confirmed", "M5")
    assert.are.same({ "verify" }, { m5[1] and m5[1].via })
    -- M2 confirmed itself once gh listed the three secrets
    local m2 = of_type(evs, "step.confirmed", "M2")
    assert.are.same({ "verify" }, { m2[1] and m2[1].via })

    local s = cluster:get_secret { name = "tezca-secrets", namespace = "tezca" }
    local keys = {}
    for k in pairs(s.data) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ "DB_HOST", "DB_PASSWORD", "DB_USER", "DJANGO_SECRET_KEY", "JANUA_API_KEY", "JANUA_PUBLISHABLE_KEY", "JANUA_SECRET_KEY" }, keys)
    local django_key, db_password = s.data.DJANGO_SECRET_KEY:reveal(), s.data.DB_PASSWORD:reveal()
    -- openssl rand -base64 50 / 32: 68 and 44 characters of base64
    assert.are.equal(68, #django_key)
    assert.truthy(django_key:match("^[%w+/]+=*$"))
    assert.are.equal(50, #crypto.base64_decode(django_key))
    assert.are.equal(44, #db_password)
    assert.are.equal(32, #crypto.base64_decode(db_password))
    assert.are.same({ "tezca", "pg.madfam.internal" }, { s.data.DB_USER:reveal(), s.data.DB_HOST:reveal() })
    for k, v in pairs(JANUA) do assert.is_true(s.data[k]:reveal() == v, k) end

    -- M3-db: role tezca logs in to its own database with the Secret's
    -- DB_PASSWORD; the database is closed to other roles
    local m3db = of_type(evs, "step.finished", "M3-db")[1].outputs
    assert.are.same({ "created", "created" }, { m3db.role_result, m3db.database_result })
    local as_tezca <close> = pg.connect(pg.conninfo(sb:pg_url("tezca"), { user = "tezca", password = db_password }))
    assert.are.same({ "tezca", "tezca" }, { as_tezca:value("SELECT current_user"),
      as_tezca:value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'tezca'") })
    as_tezca:close()
    local wrong = pg.try_connect(pg.conninfo(sb:pg_url("tezca"), { user = "tezca", password = "not-" .. db_password }))
    assert.is_nil(wrong)
    sb:psql("DROP ROLE IF EXISTS e2e_other; CREATE ROLE e2e_other LOGIN")
    assert.are.equal("f", sb:psql("SELECT has_database_privilege('e2e_other', 'tezca', 'CONNECT')"))
    -- the password went over as a SCRAM verifier, which the journal does not show either
    assert.are.equal("SCRAM-SHA-256", sb:psql("SELECT split_part(rolpassword, '$', 1) FROM pg_authid WHERE rolname = 'tezca'"))
    local verifier = sb:psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'tezca'")
    local create = of_type(evs, "action", "M3-db")[1]
    assert.are.equal('CREATE ROLE "tezca" LOGIN PASSWORD \'[REDACTED]\'', create.statement)
    assert.is_nil(rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"):find(verifier:match("%$(.+)$"), 1, true))

    -- M4 registered the OAuth client through Janua's admin API
    local got = oauth_client()
    assert.are.equal(200, got.status)
    local client = json.decode(got.body)
    assert.are.same({ "tezca-admin", { sb:site_url("tezca", "admin.tezca.mx") .. "/auth/callback" }, { "openid", "email", "profile" } },
      { client.client_id, client.redirect_uris, client.allowed_scopes })

    -- DevOps adds the Application; ArgoCD (the sandbox's stand-in) syncs
    -- k8s/production/: seven Deployments
    sandbox.PLAYERS["first-deploy"].M6.act(sb)
    local api_image = sandbox.TEZCA_API_IMAGE
    assert.are.equal(api_image, cluster:get { kind = "Deployment", name = "tezca-api", namespace = "tezca" }
      .spec.template.spec.containers[1].image)
    -- the migration fails this time
    sb:fault("migration")

    r = exec()
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.truthy(r.stderr:find("M7 failed. Fix the cause and run the same command again to resume at M7.", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal("verify", of_type(evs, "step.confirmed", "M6")[1].via)
    local failed = of_type(evs, "step.failed", "M7")
    assert.are.equal(1, #failed)
    assert.are.equal("job tezca/" .. job("tezca-migrate") .. " failed: BackoffLimitExceeded: Job has reached the specified backoff limit",
      failed[1].error.message)
    assert.are.equal("JobFailed", failed[1].error.code)

    -- fixed: the same command resumes at M7; this time CI's newest web
    -- build failed, and M10-images stops there
    sb:fault("clear")
    local web_runs = dir .. "/stubs/gh/runs/madfam-org/tezca/deploy-web.yml.json"
    local good = rb.read(web_runs)
    rb.write(web_runs, (good:gsub('"conclusion":"success"', '"conclusion":"failure"')))
    r = exec()
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("the newest deploy-web.yml run on main (7100002, commit 5e1f0c2d9a8b) ended failure: "
      .. "https://github.com/madfam-org/tezca/actions/runs/7100002", 1, true), r.stderr)
    assert.truthy(r.stderr:find("M10-images failed. Fix the cause and run the same command again to resume at M10-images.", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    local resumed_at
    for i, e in ipairs(evs) do if e.type == "run.resumed" then resumed_at = i end end
    local first_started
    for i = resumed_at, #evs do
      if evs[i].type == "step.started" then first_started = evs[i].step break end
    end
    assert.are.equal("M7", first_started)
    -- M7's failed Job was deleted and run again
    local m7 = {}
    for _, a in ipairs(of_type(evs, "action", "M7")) do m7[#m7 + 1] = a.verb .. ":" .. a.result end
    assert.are.same({ "create:created", "delete:deleted", "create:created" }, m7)
    -- M3 ran once, and its values are the ones written the first time
    assert.are.equal(1, #of_type(evs, "step.started", "M3"))
    s = cluster:get_secret { name = "tezca-secrets", namespace = "tezca" }
    assert.is_true(s.data.DJANGO_SECRET_KEY:reveal() == django_key)
    assert.is_true(s.data.DB_PASSWORD:reveal() == db_password)

    -- the Jobs ran with the API's image and environment, their logs in the run log
    for _, base in ipairs { "tezca-migrate", "tezca-collectstatic", "tezca-index-laws", "tezca-check-deploy" } do
      local j = cluster:get { kind = "Job", name = job(base), namespace = "tezca" }
      assert.is_table(j, base)
      local ct = j.spec.template.spec.containers[1]
      assert.are.same({ api_image, "tezca-secrets", "Never" }, { ct.image, ct.envFrom[1].secretRef.name, j.spec.template.spec.restartPolicy })
      assert.is_nil(ct.readinessProbe)
      assert.is_nil(j.spec.template.metadata.labels.app)
      assert.are.equal("Complete", j.status.conditions[#j.status.conditions].type)
    end
    local ran = cluster:get { kind = "Job", name = job("tezca-index-laws"), namespace = "tezca" }.spec.template.spec.containers[1].command
    assert.are.same({ "python", "apps/manage.py", "index_laws", "--all", "--create-indices" }, ran)
    local log = rb.read(dir .. "/state/runs/" .. run_id .. "/log")
    assert.truthy(log:find("] Indexed 11234 laws", 1, true))
    assert.truthy(log:find("] 1287 static files copied to '/app/staticfiles'.", 1, true))
    assert.truthy(log:find("] django.db.utils.OperationalError: password authentication failed for user \"tezca\"", 1, true))
    assert.truthy(log:find("http.check [ok] 7 Admin API (valid JWT): GET " .. sb:site_url("tezca", "api.tezca.mx")
      .. "/api/v1/admin/metrics/ -> 200", 1, true), log)
    -- M8 and M9 ran side by side after M7
    local m8 = of_type(evs, "step.started", "M8")[1]
    local m9 = of_type(evs, "step.started", "M9")[1]
    local m8_done = of_type(evs, "step.finished", "M8")[1]
    local m9_done = of_type(evs, "step.finished", "M9")[1]
    assert.truthy(m9.seq < m8_done.seq and m8.seq < m9_done.seq, "M8 and M9 did not overlap")
    assert.truthy(of_type(evs, "step.finished", "M7")[1].seq < math.min(m8.seq, m9.seq))
    local check = of_type(evs, "action", "M10")
    local http_check
    for _, a in ipairs(check) do if a.kind == "http-check" then http_check = a end end
    assert.are.same({ 6, 0 }, { http_check.passed, http_check.failed })
    assert.are.same({ 200, 200, 200, 200, 401, 200 }, (function()
      local st = {}
      for i, row in ipairs(http_check.rows) do st[i] = row.status end
      return st
    end)())

    -- the build fixed, the same command resumes at M10-images: the three
    -- builds passed, main pins each image's digest, ArgoCD synced them; it
    -- stops at the login check
    rb.write(web_runs, good)
    r = exec()
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for M10-login (Admin login flow (verification check 8))", 1, true), r.stderr)
    evs = rb.journal(dir .. "/state")
    assert.are.equal(2, #of_type(evs, "step.started", "M10-images"))
    local images = of_type(evs, "step.finished", "M10-images")[1].outputs
    assert.are.same({ run = 7100002, sha = sandbox.TEZCA_MAIN_SHA }, images["deploy-web.yml"])
    local ci = of_type(evs, "step.finished", "M10-ci")[1].outputs
    assert.are.same({ sandbox.TEZCA_API_IMAGE, "ghcr.io/madfam-org/tezca/admin@" .. sandbox.TEZCA_DIGESTS.admin, sandbox.TEZCA_MAIN_SHA },
      { ci.api, ci.admin, ci.revision })

    -- a person checks the login flow; the rest runs to the end
    assert.are.equal(0, cmd("confirm", run_id, "M10-login", "--note", "signed in as qa@madfam.io, Firefox").code)
    r = exec()
    -- M14's dry run ran; a person reads it and approves before the real migration
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("waiting for M14-approve (Approve the R2 data migration after its dry run)", 1, true), r.stderr)
    assert.is_nil(cluster:get { kind = "Job", name = job("tezca-migrate-to-r2"), namespace = "tezca" }, "migrated before the approval")
    assert.are.equal(0, cmd("confirm", run_id, "M14-approve", "--note", "1,204 files, 3.1 GB, as expected").code)
    r = exec()
    assert.are.equal(0, r.code, r.stderr)
    local r2 = cluster:get_secret { name = "tezca-r2-credentials", namespace = "tezca" }
    assert.are.same({ store.endpoint, "tezca-documents", "r2" },
      { r2.data.R2_ENDPOINT_URL:reveal(), r2.data.R2_BUCKET_NAME:reveal(), r2.data.STORAGE_BACKEND:reveal() })
    assert.is_true(r2.data.R2_SECRET_ACCESS_KEY:reveal() == store.secret_key)
    local sentry = cluster:get_secret { name = "tezca-sentry", namespace = "tezca" }
    assert.is_true(sentry.data.SENTRY_DSN:reveal() == SENTRY_DSN and sentry.data.NEXT_PUBLIC_SENTRY_DSN:reveal() == SENTRY_DSN)
    assert.are.equal("production", sentry.data.SENTRY_ENVIRONMENT:reveal())
    local bucket <close> = s3.connect { endpoint = store.endpoint, access_key = store.access_key, secret_key = secret.wrap(store.secret_key) }
    assert.is_true(bucket:bucket_exists("tezca-documents"))
    local dry = cluster:get { kind = "Job", name = job("tezca-migrate-to-r2-dry-run"), namespace = "tezca" }
    local real = cluster:get { kind = "Job", name = job("tezca-migrate-to-r2"), namespace = "tezca" }
    assert.are.same({ "python", "scripts/migrate_to_r2.py", "--dry-run" }, dry.spec.template.spec.containers[1].command)
    assert.are.same({ "python", "scripts/migrate_to_r2.py" }, real.spec.template.spec.containers[1].command)
    assert.are.equal("tezca-r2-credentials", real.spec.template.spec.containers[1].envFrom[2].secretRef.name)
    assert.truthy(dry.metadata.creationTimestamp <= real.metadata.creationTimestamp)

    evs = rb.journal(dir .. "/state")
    local bucket_action = of_type(evs, "action", "M13")[1]
    assert.are.same({ "s3", "create-bucket", "tezca-documents" }, { bucket_action.kind, bucket_action.verb, bucket_action.bucket })
    local finished = {}
    for _, e in ipairs(of_type(evs, "step.finished")) do finished[#finished + 1] = e.step end
    table.sort(finished)
    assert.are.same({ "M10", "M10-ci", "M10-images", "M11", "M12", "M12-restart", "M13", "M14", "M14-dry", "M3", "M3-db",
      "M4", "M7", "M8", "M9" }, finished)
    -- the pods were restarted after the R2 and Sentry Secrets, so they see them
    local restarted = of_type(evs, "step.finished", "M12-restart")[1].outputs.restarted
    assert.are.same({ "tezca-api", "tezca-worker", "tezca-beat", "tezca-web", "tezca-admin" }, restarted)
    for _, name in ipairs(restarted) do
      local d = cluster:get { api_version = "apps/v1", kind = "Deployment", name = name, namespace = "tezca" }
      assert.truthy(d.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"], name)
    end
    local m12r, m12 = of_type(evs, "step.started", "M12-restart")[1], of_type(evs, "step.finished", "M12")[1]
    assert.truthy(m12.seq < m12r.seq)
    assert.are.equal(1, #of_type(evs, "run.finished"))

    -- nothing secret in clear anywhere the run wrote
    log = rb.read(dir .. "/state/runs/" .. run_id .. "/log")
    local files = { rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"), log, r.stdout, r.stderr }
    for _, value in ipairs { django_key, db_password, JANUA.JANUA_SECRET_KEY, JANUA.JANUA_API_KEY, janua.token, tezca.token,
      store.secret_key, SENTRY_DSN } do
      for i, text in ipairs(files) do
        assert.is_nil(text:find(value, 1, true), "a secret in clear in file " .. i)
        assert.is_nil(text:find(crypto.base64_encode(value), 1, true), "a secret in base64 in file " .. i)
      end
    end
    -- plain values the runbook wrote stay readable
    assert.truthy(log:find("job tezca/" .. job("tezca-migrate"), 1, true))

    local v = cmd("audit", "verify", run_id)
    assert.are.equal(0, v.code, v.stderr)
  end)
end)
