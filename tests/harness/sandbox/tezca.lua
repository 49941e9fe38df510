-- The sandbox's part for Tezca's first deploy (runbooks/first-deploy.lua):
-- the Deployments ArgoCD syncs from k8s/production/, the one-off Jobs'
-- logs, the credentials the runbook reads, its values and the people its
-- guide needs. See tests/harness/sandbox.lua for what a profile holds.
local json = require "runbook._json"
local fs = require "runbook._fs"

local P = { runbook = "first-deploy" }

P.TEZCA_API_IMAGE = "ghcr.io/madfam-org/tezca/api@sha256:" .. string.rep("ab", 32)
P.TEZCA_TUNNEL = "tunnel.enclii.dev"

local function deployment(name, image, extra)
  local container = { name = name:gsub("^tezca%-", ""), image = image }
  for k, v in pairs(extra or {}) do container[k] = v end
  return { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = name },
    spec = { replicas = 2, selector = { matchLabels = { app = name } },
      template = { metadata = { labels = { app = name } }, spec = { containers = { container } } } } }
end

--- k8s/production/ of Tezca as ArgoCD would sync it: the seven Deployments.
function P.tezca_manifests()
  local out = { deployment("tezca-api", P.TEZCA_API_IMAGE, {
    envFrom = { { secretRef = { name = "tezca-secrets" } } }, ports = { { containerPort = 8000 } },
    readinessProbe = { httpGet = { path = "/api/v1/admin/health/", port = 8000 } } }) }
  for _, name in ipairs { "tezca-web", "tezca-admin", "tezca-worker", "tezca-beat", "tezca-redis", "tezca-es" } do
    out[#out + 1] = deployment(name, "ghcr.io/madfam-org/tezca/" .. name:gsub("^tezca%-", "") .. ":sha-1")
  end
  return out
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
end

P.R2_BUCKET = "tezca-documents"

-- before the run's first step: no R2 bucket yet (moto keeps it otherwise)
function P.reset(sb)
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
  M2 = { role = "Repo Admin", note = "the sandbox played Repo Admin (gh secret set x3, recorded in logs/cli.log)",
    act = function(sb)
      for _, name in ipairs { "MADFAM_BOT_PAT", "ENCLII_CALLBACK_TOKEN", "NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY" } do
        sb:cli({ "gh", "secret", "set", name, "--repo", "madfam-org/tezca" }, "sandbox-value\n")
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
