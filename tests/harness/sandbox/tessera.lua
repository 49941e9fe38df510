-- The sandbox's part for Tessera (runbooks/tessera-bootstrap.lua): its
-- namespace with the guide's manifests applied, the bootstrap key and the
-- values. See tests/harness/sandbox.lua for what a profile holds.
local P = { runbook = "tessera-bootstrap" }

P.TESSERA_DATABASE_URL = "postgresql+asyncpg://tessera:db-pw-e2e-1234@postgres:5432/tessera"
P.namespaces = { "tessera" }

function P.seed_k8s(sb)
  local tessera = sb:cluster("tessera")
  if sb.secrets.https_tessera_token and not tessera:get { kind = "Secret", name = "tessera-secrets" } then
    tessera:secret { name = "tessera-secrets", data = {
      DATABASE_URL = P.TESSERA_DATABASE_URL,
      REDIS_URL = sb.services.redis and sb.services.redis.url or "redis://redis:6379/0",
      BOOTSTRAP_API_KEY = sb.secrets.https_tessera_token } }
  end
  tessera:apply { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "tessera", labels = { app = "tessera" } },
    spec = { replicas = 3, selector = { matchLabels = { app = "tessera" } },
      template = { metadata = { labels = { app = "tessera" } }, spec = { containers = { {
        name = "tessera", image = "your-registry/tessera:0.1.0", ports = { { containerPort = 8000 } },
        envFrom = { { configMapRef = { name = "tessera-config" } }, { secretRef = { name = "tessera-secrets" } } },
        livenessProbe = { httpGet = { path = "/health/live", port = 8000 } } } } } } } }
  tessera:close()
end

function P.env(sb, e)
  if sb.https.tessera then e.BOOTSTRAP_API_KEY = sb.https.tessera.token end
end

function P.values(sb)
  if not sb.https.tessera then return nil end
  return { kubeconfig = sb.dir .. "/kubeconfig", api_url = sb:site_url("tessera"), ca_file = sb:ca_file() }
end

return P
