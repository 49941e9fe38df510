-- The sandbox's part for Tezca's first deploy (runbooks/first-deploy.lua):
-- the Deployments ArgoCD syncs from k8s/production/, the one-off Jobs'
-- logs, the credentials the runbook reads, its values and the people its
-- guide needs. See tests/harness/sandbox.lua for what a profile holds.
local json = require "runbook._json"
local fs = require "runbook._fs"

local P = { runbook = "first-deploy" }

P.TEZCA_REPO = "madfam-org/tezca"
P.TEZCA_REGISTRY = "ghcr.io/madfam-org/tezca"
-- the digests CI pushed and committed to main's kustomization.yaml, and main's head
P.TEZCA_DIGESTS = { api = "sha256:" .. string.rep("ab", 32), web = "sha256:" .. string.rep("cd", 32),
  admin = "sha256:" .. string.rep("ef", 32) }
P.TEZCA_MAIN_SHA = "5e1f0c2d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
P.TEZCA_API_IMAGE = P.TEZCA_REGISTRY .. "/api@" .. P.TEZCA_DIGESTS.api
P.TEZCA_TUNNEL = "tunnel.enclii.dev"
P.TEZCA_WORKFLOWS = { "deploy-api.yml", "deploy-web.yml", "deploy-admin.yml" }
P.TEZCA_GITHUB_SECRETS = { "MADFAM_BOT_PAT", "ENCLII_CALLBACK_TOKEN", "NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY" }

local function deployment(name, image, extra)
  local container = { name = name:gsub("^tezca%-", ""), image = image }
  for k, v in pairs(extra or {}) do container[k] = v end
  return { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = name },
    spec = { replicas = 2, selector = { matchLabels = { app = name } },
      template = { metadata = { labels = { app = name } }, spec = { containers = { container } } } } }
end

local function image(svc) return P.TEZCA_REGISTRY .. "/" .. svc .. "@" .. P.TEZCA_DIGESTS[svc] end

--- k8s/production/ of Tezca as ArgoCD would sync it: the seven Deployments,
--- at the digests main's kustomization.yaml pins (worker and beat run the
--- API's image).
function P.tezca_manifests()
  local out = { deployment("tezca-api", P.TEZCA_API_IMAGE, {
    envFrom = { { secretRef = { name = "tezca-secrets" } } }, ports = { { containerPort = 8000 } },
    readinessProbe = { httpGet = { path = "/api/v1/admin/health/", port = 8000 } } }) }
  for _, d in ipairs { { "tezca-web", image("web") }, { "tezca-admin", image("admin") }, { "tezca-worker", image("api") },
      { "tezca-beat", image("api") }, { "tezca-redis", "redis:7-alpine" }, { "tezca-es", "elasticsearch:7.17.9" } } do
    out[#out + 1] = deployment(d[1], d[2])
  end
  return out
end

--- main's k8s/production/kustomization.yaml, as the deploy workflows leave it.
function P.tezca_kustomization()
  local lines = { "apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "namespace: tezca", "resources:",
    "  - namespace.yaml" }
  for _, n in ipairs { "api", "web", "admin", "worker", "beat", "redis", "es" } do
    lines[#lines + 1] = "  - tezca-" .. n .. "-deployment.yaml"
  end
  lines[#lines + 1] = "images:"
  for _, svc in ipairs { "api", "web", "admin" } do
    lines[#lines + 1] = "  - name: " .. P.TEZCA_REGISTRY .. "/" .. svc
    lines[#lines + 1] = "    newName: " .. P.TEZCA_REGISTRY .. "/" .. svc
    lines[#lines + 1] = "    digest: " .. P.TEZCA_DIGESTS[svc]
  end
  return table.concat(lines, "\n") .. "\n"
end

--- GitHub as the gh stub answers it (DIR/stubs/gh/, see sandbox/stubs.lua):
--- no Actions secrets yet, each deploy workflow's newest run on main a
--- success (conclusion: another one, for a spec), main's kustomization.yaml.
function P.tezca_github(sb, conclusion)
  local d = sb.dir .. "/stubs/gh"
  local secrets = d .. "/secrets/" .. P.TEZCA_REPO
  for _, name in ipairs(fs.listdir(secrets) or {}) do assert(fs.remove(secrets .. "/" .. name)) end
  assert(fs.mkdir_p(d .. "/runs/" .. P.TEZCA_REPO, 493))
  for i, w in ipairs(P.TEZCA_WORKFLOWS) do
    local run = { databaseId = 7100000 + i, status = "completed", conclusion = conclusion or "success", headSha = P.TEZCA_MAIN_SHA,
      headBranch = "main", createdAt = "2026-02-07T10:0" .. i .. ":00Z", displayTitle = "Deploy " .. w:match("deploy%-(%a+)"),
      url = "https://github.com/" .. P.TEZCA_REPO .. "/actions/runs/" .. (7100000 + i) }
    assert(fs.write_file(d .. "/runs/" .. P.TEZCA_REPO .. "/" .. w .. ".json", json.encode { run } .. "\n", 420))
  end
  assert(fs.mkdir_p(d .. "/repos/" .. P.TEZCA_REPO .. "/k8s/production", 493))
  assert(fs.write_file(d .. "/repos/" .. P.TEZCA_REPO .. "/k8s/production/kustomization.yaml", P.tezca_kustomization(), 420))
end

--- The Application the infra repository's root application gains (M6).
function P.tezca_application()
  return { apiVersion = "argoproj.io/v1alpha1", kind = "Application", metadata = { name = "tezca", namespace = "argocd" },
    spec = { project = "default", source = { repoURL = "https://github.com/madfam-org/tezca", path = "k8s/production" },
      destination = { server = "https://kubernetes.default.svc", namespace = "tezca" },
      syncPolicy = { automated = { prune = true, selfHeal = true }, syncOptions = { "CreateNamespace=true" } } } }
end

-- what the one-off Jobs print, by name prefix (the newest matching rule wins)
P.job_logs = {
  { "tezca", "tezca-migrate-", "Operations to perform:\n  Apply all migrations: admin, api, auth, contenttypes, sessions\nRunning migrations:\n  Applying api.0001_initial... OK" },
  { "tezca", "tezca-migrate-to-r2-", "Uploaded 842 documents to tezca-documents" },
  { "tezca", "tezca-migrate-to-r2-dry-run-", "DRY RUN: 842 documents would be uploaded to tezca-documents" },
  { "tezca", "tezca-collectstatic-", "1287 static files copied to '/app/staticfiles'." },
  { "tezca", "tezca-index-laws-", "Creating index laws\nIndexed 11234 laws" },
  { "tezca", "tezca-check-deploy-", "System check identified no issues (0 silenced)." },
}

function P.seed_k8s(sb)
  assert(fs.mkdir_p(sb.dir .. "/argocd", 493))
  assert(fs.write_file(sb.dir .. "/argocd/tezca.json", json.encode(P.tezca_manifests()) .. "\n", 420))
  assert(fs.write_file(sb.dir .. "/argocd/tezca.rev", P.TEZCA_MAIN_SHA .. "\n", 420))
end

-- GitHub's state the first time; a later `up` keeps what was done since
function P.seed(sb)
  if not fs.stat(sb.dir .. "/stubs/gh/runs") then P.tezca_github(sb) end
end

P.R2_BUCKET = "tezca-documents"

-- the role and database M3-db makes on the shared PostgreSQL
P.TEZCA_DB = "tezca"

-- before the run's first step: no GitHub secrets, no tezca role or
-- database, no R2 bucket yet (moto keeps it otherwise)
function P.reset(sb)
  P.tezca_github(sb)
  if sb.services.pg and sb:running("pg") then
    sb:psql { "DROP DATABASE IF EXISTS " .. P.TEZCA_DB .. " WITH (FORCE)", "DROP ROLE IF EXISTS " .. P.TEZCA_DB }
  end
  local s = sb.services.s3
  if not (s and s.access_key) then return end
  local s3 = require "runbook.s3"
  local secret = require "runbook.secret"
  local client <close> = s3.connect { endpoint = s.endpoint, region = s.region, access_key = s.access_key,
    secret_key = secret.wrap(s.secret_key) }
  if not client:bucket_exists(P.R2_BUCKET) then return end
  for _, o in ipairs(client:list { bucket = P.R2_BUCKET }) do client:delete { bucket = P.R2_BUCKET, key = o.key } end
  client:delete_bucket(P.R2_BUCKET)
end

function P.env(sb, e)
  local s3, h = sb.services.s3, sb.https
  if h.tezca and h.janua then
    e.TEZCA_DB_HOST = "127.0.0.1"
    e.JANUA_ADMIN_TOKEN = h.janua.token
    e.TEZCA_ADMIN_JWT = h.tezca.token
    e.JANUA_API_KEY = "sk_live_sandbox_janua_api_key"
    e.JANUA_PUBLISHABLE_KEY = "pk_live_sandbox_janua_publishable_key"
    e.JANUA_SECRET_KEY = "sk_live_sandbox_janua_secret_key"
    e.SENTRY_DSN = "https://sandbox0key@o4242.ingest.sentry.io/1717"
  end
  if sb.services.pg then e.TEZCA_PG_ADMIN_URL = sb:pg_url("postgres") end
  if s3 and s3.access_key then
    e.R2_ENDPOINT_URL = s3.endpoint
    e.R2_ACCESS_KEY_ID, e.R2_SECRET_ACCESS_KEY = s3.access_key, s3.secret_key
  end
end

function P.values(sb)
  if not (sb.https.tezca and sb.https.janua) then return nil end
  return { kubeconfig = sb.dir .. "/kubeconfig", web_url = sb:site_url("tezca", "tezca.mx"),
    api_url = sb:site_url("tezca", "api.tezca.mx"), admin_url = sb:site_url("tezca", "admin.tezca.mx"),
    janua_url = sb:site_url("janua"), ca_file = sb:ca_file(), www_host = sb.dns and "www.tezca.mx" or "localhost",
    -- moto refuses R2's region "auto" (IllegalLocationConstraintException)
    r2_region = "us-east-1" }
end

P.players = {
  M1 = { role = "Dev", note = "the sandbox played Dev (@janua/nextjs installed in admin)" },
  -- the three `gh secret set` land in the gh stub's state, which M2's
  -- verify lists with `gh secret list`
  M2 = { role = "Repo Admin", self_confirms = true,
    act = function(sb)
      for _, name in ipairs(P.TEZCA_GITHUB_SECRETS) do
        sb:cli({ "gh", "secret", "set", name, "--repo", P.TEZCA_REPO }, "sandbox-value\n")
      end
    end },
  M6 = { role = "DevOps and ArgoCD", self_confirms = true,
    act = function(sb)
      sb:cli { "gh", "pr", "merge", "--repo", "madfam-org/infra", "--squash", "add-tezca-to-root-application" }
      local c = sb:cluster()
      c:apply(P.tezca_application())
      c:close()
      -- the ArgoCD stand-in syncs k8s/production/
      sb:await_deployments("tezca", { "tezca-api", "tezca-web", "tezca-admin", "tezca-worker", "tezca-beat", "tezca-redis", "tezca-es" })
    end },
  ["M10-login"] = { role = "QA", note = "the sandbox played QA (admin login flow)" },
  ["M14-approve"] = { role = "DevOps", note = "the sandbox played DevOps, approving the R2 migration's dry run" },
}

return P
