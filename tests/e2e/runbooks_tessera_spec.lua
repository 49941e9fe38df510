-- runbooks/tessera-bootstrap.lua with the real binary in the rehearsal
-- sandbox (tests/harness/sandbox.lua): the fake cluster starts without
-- Tessera's namespace, and the runbook creates it, the tessera-secrets
-- Secret and the guide's manifests (runbooks/tessera/k8s/), checks the
-- security checklist against them, runs the migration Job and the
-- restart; the HTTPS stand-in for Tessera (tessera.your-domain.com)
-- answers the API (teams, API keys, probes). A check that fails stops the
-- run with its reason; after the fix the run resumes and creates nothing
-- twice. A second run creates nothing again, without the bootstrap key; a
-- hand edit in the cluster (kubectl edit) fails the check it breaks; a run
-- with no bootstrap key in the environment generates one, once.
local rb = require "rbtest"
local sandbox = require "sandbox"
local curl = require "runbook._curl"
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local fs = require "runbook._fs"

local RUNBOOK = rb.source_dir .. "/runbooks/tessera-bootstrap.lua"
local DATABASE_URL = sandbox.TESSERA_DATABASE_URL
local CORS = "https://tessera.your-domain.com"
local CHECKS = { "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C11" }
local MANUAL = { "M1-secret-manager", "M2-db-private", "M3-redis-private", "M4-waf", "M5-metrics", "M6-audit-log", "M7-alerts" }

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

local function read_journal(dir, id)
  local evs = {}
  for line in io.lines(dir .. "/state/runs/" .. id .. "/journal.jsonl") do evs[#evs + 1] = json.decode(line) end
  return evs
end

describe("runbooks/tessera-bootstrap.lua", function()
  local sb, srv, dir, c, web

  setup(function()
    dir = rb.tmpdir("tessera")
    -- nothing of Tessera's in the cluster: the runbook creates it all
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

  -- with_key: BOOTSTRAP_API_KEY in the environment (the stand-in's), or not
  local function exec(with_key, extra)
    return sb:exec(RUNBOOK, extra, { unset = not with_key and { "BOOTSTRAP_API_KEY" } or nil, timeout = 180 })
  end
  local function get(path, key)
    local res = assert(web:request { url = srv.local_base .. path, headers = { { "X-API-Key", key } } })
    return res.status, res.status == 200 and json.decode(res.body) or nil
  end
  -- execs until the run finishes, confirming its manual steps as the sandbox
  local function finish(run_id, with_key, first)
    local confirmed, stderr = {}, { first.stderr }
    local r = first
    for _ = 1, #MANUAL + 1 do
      if r.code == 0 then return r, confirmed, table.concat(stderr) end
      assert.are.equal(3, r.code, r.stderr)
      local waiting = r.stderr:match("waiting for (%S+) %(")
      sb:confirm(run_id, waiting, "checked by the spec")
      confirmed[#confirmed + 1] = waiting
      r = exec(with_key)
      stderr[#stderr + 1] = r.stderr
    end
    error("the run did not finish: " .. r.stderr)
  end
  local function only_run()
    local runs = fs.listdir(dir .. "/state/runs") or {}
    assert.are.equal(1, #runs)
    return runs[1], read_journal(dir, runs[1])
  end

  it("checks and renders", function()
    local r = sb:runbook { "check", RUNBOOK, "--values", sb:values_file("tessera-bootstrap") }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook tessera-bootstrap, 26 steps (7 manual), 0 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.truthy(d.stdout:find("- [ ] **T7** Remove BOOTSTRAP_API_KEY from production config", 1, true), d.stdout)
    assert.truthy(d.stdout:find("- [ ] **C4** CORS restricted", 1, true), d.stdout)
    assert.truthy(d.stdout:find("- [ ] **M4-waf** Ingress has a WAF", 1, true), d.stdout)
  end)

  it("runs dry and creates nothing", function()
    local r = exec(true, { "--dry-run" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("T1       dry run: Secret tessera-secrets would be created in the new namespace tessera", 1, true), r.stderr)
    assert.truthy(r.stderr:find("nothing was written", 1, true), r.stderr)
    assert.is_nil(c:get { kind = "Namespace", name = "tessera" })
    assert.are.same({}, select(2, get("/api/v1/teams", srv.token)).items)
  end)

  it("applies the guide's manifests, and stops at a failing security check with its reason", function()
    local r = exec(true, { "--param", "cors_origins=*" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find('C4       FAILED: CORS restricted: CORS_ORIGINS (from ConfigMap tessera-config) allows any origin ("*"): '
      .. "list the allowed origins (param cors_origins)", 1, true), r.stderr)
    local _, evs = only_run()
    assert.are.equal(1, #of_type(evs, "step.failed", "C4"))
    for _, id in ipairs { "C1", "C2", "C3" } do assert.are.equal(1, #of_type(evs, "step.finished", id), id) end
    -- the database is not touched while the checklist fails
    assert.are.same({}, c:list { kind = "Job" })

    -- the guide's objects, with its fields
    local ns = c:get { kind = "Namespace", name = "tessera" }
    assert.are.equal("baseline", ns.metadata.labels["pod-security.kubernetes.io/enforce"])
    local s = c:get_secret("tessera-secrets")
    assert.are.equal("Opaque", s.type)
    assert.is_true(s.data.DATABASE_URL:reveal() == DATABASE_URL)
    assert.is_true(s.data.REDIS_URL:reveal() == sb:env().TESSERA_REDIS_URL)
    assert.is_true(s.data.BOOTSTRAP_API_KEY:reveal() == srv.token)
    local cm = c:get { kind = "ConfigMap", name = "tessera-config" }
    assert.are.same({ ENVIRONMENT = "production", API_HOST = "0.0.0.0", API_PORT = "8000", RATE_LIMIT_ENABLED = "true",
      RATE_LIMIT_READ = "1000/minute", RATE_LIMIT_WRITE = "100/minute", CORS_ORIGINS = "*", DB_POOL_SIZE = "20",
      DB_MAX_OVERFLOW = "10" }, cm.data)
    local d = c:get { api_version = "apps/v1", kind = "Deployment", name = "tessera" }
    local ct = d.spec.template.spec.containers[1]
    assert.are.same({ 3, "tessera", "your-registry/tessera:0.1.0", 8000 }, { d.spec.replicas, ct.name, ct.image, ct.ports[1].containerPort })
    assert.are.same({ { configMapRef = { name = "tessera-config" } }, { secretRef = { name = "tessera-secrets" } } }, ct.envFrom)
    assert.are.same({ requests = { memory = "256Mi", cpu = "250m" }, limits = { memory = "512Mi", cpu = "500m" } }, ct.resources)
    assert.are.same({ "/health/live", 8000, 10, 15 }, { ct.livenessProbe.httpGet.path, ct.livenessProbe.httpGet.port,
      ct.livenessProbe.initialDelaySeconds, ct.livenessProbe.periodSeconds })
    assert.are.same({ "/health/ready", 8000, 5, 10 }, { ct.readinessProbe.httpGet.path, ct.readinessProbe.httpGet.port,
      ct.readinessProbe.initialDelaySeconds, ct.readinessProbe.periodSeconds })
    assert.are.equal(3, d.status.readyReplicas)
    local svc = c:get { kind = "Service", name = "tessera" }
    assert.are.same({ "ClusterIP", { app = "tessera" }, 80, 8000 }, { svc.spec.type, svc.spec.selector, svc.spec.ports[1].port,
      svc.spec.ports[1].targetPort })
    local ing = c:get { api_version = "networking.k8s.io/v1", kind = "Ingress", name = "tessera" }
    assert.are.same({ "nginx", "true", { { hosts = { "tessera.your-domain.com" }, secretName = "tessera-tls" } } },
      { ing.spec.ingressClassName, ing.metadata.annotations["nginx.ingress.kubernetes.io/ssl-redirect"], ing.spec.tls })
    local rule = ing.spec.rules[1]
    assert.are.same({ "tessera.your-domain.com", "/", "Prefix", "tessera", 80 }, { rule.host, rule.http.paths[1].path,
      rule.http.paths[1].pathType, rule.http.paths[1].backend.service.name, rule.http.paths[1].backend.service.port.number })
    local hpa = c:get { api_version = "autoscaling/v2", kind = "HorizontalPodAutoscaler", name = "tessera" }
    assert.are.same({ "tessera", 2, 10, 70, 80 }, { hpa.spec.scaleTargetRef.name, hpa.spec.minReplicas, hpa.spec.maxReplicas,
      hpa.spec.metrics[1].resource.target.averageUtilization, hpa.spec.metrics[2].resource.target.averageUtilization })
  end)

  it("resumes after the fix: creates nothing twice, keeps the Secret, and bootstraps", function()
    local run_id = only_run()
    local before = c:get_secret("tessera-secrets")
    -- the fix: the ConfigMap applied again with the values file's origins
    assert.are.equal(0, sb:runbook({ "reset", run_id, "T2", "--note", "CORS_ORIGINS fixed" }).code)
    local r, confirmed = finish(run_id, true, exec(true))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same(MANUAL, confirmed)
    local _, evs = only_run()
    -- T1 ran once: the namespace and the Secret were not made again
    assert.are.equal(1, #of_type(evs, "step.started", "T1"))
    local t2 = {}
    for _, a in ipairs(of_type(evs, "action", "T2")) do
      if a.verb == "apply" then t2[#t2 + 1] = a.object_kind .. ":" .. tostring(a.result) end
    end
    -- the first attempt created them (T1 the namespace), the second changed the ConfigMap only
    assert.are.same({ "Namespace:unchanged", "ConfigMap:created", "Service:created", "Deployment:created",
      "HorizontalPodAutoscaler:created", "Ingress:created",
      "Namespace:unchanged", "ConfigMap:configured", "Service:unchanged", "Deployment:unchanged",
      "HorizontalPodAutoscaler:unchanged", "Ingress:unchanged" }, t2)
    -- only the ConfigMap changed: the pods were restarted to read it
    local restarts = 0
    for _, a in ipairs(of_type(evs, "action", "T2")) do
      if a.verb == "restart" and a.object_kind == "Deployment" then restarts = restarts + 1 end
    end
    assert.are.equal(1, restarts)
    assert.are.equal("https://tessera.your-domain.com", c:get { kind = "ConfigMap", name = "tessera-config" }.data.CORS_ORIGINS)
    local after = c:get_secret("tessera-secrets")
    assert.is_true(after.data.DATABASE_URL:reveal() == before.data.DATABASE_URL:reveal())
    assert.is_true(after.data.REDIS_URL:reveal() == before.data.REDIS_URL:reveal())
    assert.are.equal(after.metadata.uid, before.metadata.uid)
    for _, id in ipairs(CHECKS) do assert.are.equal(1, #of_type(evs, "step.finished", id), id) end

    -- one migration Job, with the Deployment's image and environment
    local jobs = c:list { kind = "Job" }
    assert.are.equal(1, #jobs)
    local job = jobs[1]
    assert.are.equal(of_type(evs, "step.finished", "T3")[1].outputs.job, job.metadata.name)
    local jct = job.spec.template.spec.containers[1]
    assert.are.same({ { "alembic", "upgrade", "head" }, "your-registry/tessera:0.1.0", "tessera-secrets" },
      { jct.command, jct.image, jct.envFrom[2].secretRef.name })
    assert.is_nil(jct.livenessProbe)

    -- the team, and a key that Tessera accepts, stored in the cluster
    local _, teams = get("/api/v1/teams", srv.token)
    assert.are.same({ { id = 1, name = "Platform" } }, teams.items)
    local admin_key = c:get_secret("tessera-admin-api-key").data.API_KEY:reveal()
    assert.truthy(admin_key:match("^tess_%x+$"))
    local _, keys = get("/api/v1/api-keys", admin_key)
    assert.are.same({ { name = "admin" } }, keys.items)

    -- the bootstrap key is gone from the config, the pods restarted
    assert.is_nil(after.data.BOOTSTRAP_API_KEY)
    local d = c:get { api_version = "apps/v1", kind = "Deployment", name = "tessera" }
    assert.truthy(d.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"])
    local checks = of_type(evs, "action", "T8")[1]
    assert.are.same({ 4, 0 }, { checks.passed, checks.failed })

    local files = { rb.read(dir .. "/state/runs/" .. run_id .. "/journal.jsonl"), rb.read(dir .. "/state/runs/" .. run_id .. "/log"),
      r.stdout, r.stderr }
    for _, value in ipairs { admin_key, srv.token, DATABASE_URL } do
      for i, text in ipairs(files) do
        assert.is_nil(text:find(value, 1, true), "a secret in clear in file " .. i)
        assert.is_nil(text:find(crypto.base64_encode(value), 1, true), "a secret in base64 in file " .. i)
      end
    end
    assert.are.equal(0, sb:runbook({ "audit", "verify", run_id }).code)
  end)

  it("run again without the bootstrap key, creates nothing twice", function()
    local first = only_run()
    local r = exec(false, { "--new" })
    local runs = fs.listdir(dir .. "/state/runs")
    assert.are.equal(2, #runs)
    local second = runs[1] == first and runs[2] or runs[1]
    local all
    r, _, all = finish(second, false, r)
    assert.are.equal(0, r.code, r.stderr)
    local evs = read_journal(dir, second)
    local skipped = {}
    for _, e in ipairs(of_type(evs, "step.skipped")) do skipped[#skipped + 1] = e.step end
    assert.are.same({ "T5", "T6", "T7" }, skipped)
    for _, a in ipairs(of_type(evs, "action", "T2")) do
      if a.verb == "apply" then assert.are.equal("unchanged", a.result, a.object_kind) end
    end
    assert.truthy(all:find("Secret tessera/tessera-secrets exists and is kept as it is", 1, true), all)
    assert.is_nil(c:get_secret("tessera-secrets").data.BOOTSTRAP_API_KEY)
    local admin_key = c:get_secret("tessera-admin-api-key").data.API_KEY
    local _, teams = get("/api/v1/teams", admin_key:reveal())
    local _, keys = get("/api/v1/api-keys", admin_key:reveal())
    assert.are.same({ 1, 1 }, { #teams.items, #keys.items })
    assert.are.equal(2, #c:list { kind = "Job" }) -- one migration per run
  end)

  it("fails a check on what someone changed in the cluster by hand, naming where it comes from", function()
    -- kubectl edit: authentication off in the Deployment's env, debug logs in the ConfigMap
    c:patch({ api_version = "apps/v1", kind = "Deployment", name = "tessera" },
      { spec = { template = { spec = { containers = { { name = "tessera", env = { { name = "AUTH_DISABLED", value = "true" } } } } } } } },
      { type = "strategic", field_manager = "kubectl-edit" })
    c:patch({ kind = "ConfigMap", name = "tessera-config" }, { data = { LOG_LEVEL = "DEBUG" } }, { field_manager = "kubectl-edit" })
    local r = exec(false, { "--new" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find('C3       FAILED: AUTH_DISABLED=false: AUTH_DISABLED is "true" (from the Deployment\'s env): '
      .. 'authentication is off; remove it or set it to "false"', 1, true), r.stderr)
    -- the runbook's apply left the other manager's fields alone, and its checks saw them
    local ct = c:get { api_version = "apps/v1", kind = "Deployment", name = "tessera" }.spec.template.spec.containers[1]
    assert.are.same({ { name = "AUTH_DISABLED", value = "true" } }, ct.env)
    local id
    for _, run in ipairs(fs.listdir(dir .. "/state/runs")) do
      if #of_type(read_journal(dir, run), "run.failed") > 0 then id = run end
    end
    -- authentication back on: the run resumes at C3 and stops at the next problem
    c:patch({ api_version = "apps/v1", kind = "Deployment", name = "tessera" },
      { { op = "remove", path = "/spec/template/spec/containers/0/env" } }, { type = "json", field_manager = "kubectl-edit" })
    r = exec(false)
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("C6       FAILED: Production mode, debug logging off: LOG_LEVEL is DEBUG (from ConfigMap tessera-config): "
      .. "debug logging is for troubleshooting, remove it", 1, true), r.stderr)
    -- and once that is undone too, it finishes, C3 run twice and T1 once
    c:patch({ kind = "ConfigMap", name = "tessera-config" }, { { op = "remove", path = "/data/LOG_LEVEL" } },
      { type = "json", field_manager = "kubectl-edit" })
    r = finish(id, false, exec(false))
    assert.are.equal(0, r.code, r.stderr)
    local evs = read_journal(dir, id)
    assert.are.same({ 1, 2, 2 }, { #of_type(evs, "step.started", "T1"), #of_type(evs, "step.started", "C3"),
      #of_type(evs, "step.started", "C6") })
  end)

  it("generates BOOTSTRAP_API_KEY once when the environment has none, and a resume keeps it", function()
    local gen = sb:cluster("tessera-gen")
    local r = exec(false, { "--new", "--param", "namespace=tessera-gen" })
    -- the stand-in only knows its own key: Tessera refuses the generated one here
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("T5       FAILED: POST /api/v1/teams answered 401", 1, true), r.stderr)
    local s = gen:get_secret("tessera-secrets")
    local key = s.data.BOOTSTRAP_API_KEY:reveal()
    assert.truthy(key:match("^%x+$") and #key == 64, "not 32 random bytes in hex")
    local r2 = exec(false)
    assert.are.equal(1, r2.code, r2.stderr)
    local s2 = gen:get_secret("tessera-secrets")
    assert.is_true(s2.data.BOOTSTRAP_API_KEY:reveal() == key)
    assert.are.equal(s.metadata.resourceVersion, s2.metadata.resourceVersion)
    assert.are.equal(1, #gen:list { kind = "Job" })
    local id
    for _, run in ipairs(fs.listdir(dir .. "/state/runs")) do
      if rb.read(dir .. "/state/runs/" .. run .. "/journal.jsonl"):find("tessera-gen", 1, true) then id = run end
    end
    local evs = read_journal(dir, id)
    assert.are.equal(1, #of_type(evs, "step.started", "T1"))
    assert.are.equal(2, #of_type(evs, "step.failed", "T5"))
    -- the Secret deleted by hand and T1 run again: the very same key, from the sealed journal
    assert.are.equal("deleted", gen:delete({ kind = "Secret", name = "tessera-secrets" }, { wait = true }))
    assert.are.equal(0, sb:runbook({ "reset", id, "T1", "--note", "tessera-secrets deleted by hand" }).code)
    local r3 = exec(false)
    assert.are.equal(1, r3.code, r3.stderr)
    local s3 = gen:get_secret("tessera-secrets")
    assert.are_not.equal(s.metadata.uid, s3.metadata.uid)
    assert.is_true(s3.data.BOOTSTRAP_API_KEY:reveal() == key)
    evs = read_journal(dir, id)
    assert.are.equal(2, #of_type(evs, "step.started", "T1"))
    for _, text in ipairs { rb.read(dir .. "/state/runs/" .. id .. "/journal.jsonl"), rb.read(dir .. "/state/runs/" .. id .. "/log"),
        r.stderr, r2.stderr, r3.stderr } do
      assert.is_nil(text:find(key, 1, true), "the generated key in clear")
    end
    gen:close()
  end)
end)
