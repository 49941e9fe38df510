-- The sandbox's part for Tessera (runbooks/tessera-bootstrap.lua): only
-- what exists before its guide starts. The runbook creates the namespace,
-- the Secret and the guide's manifests itself; here are the managed
-- database's and Redis' URLs, the image in the registry, the bootstrap key
-- the HTTPS stand-in for Tessera (tessera.your-domain.com) was started
-- with, the values, and the people its checklist's manual steps need. See
-- tests/harness/sandbox.lua for what a profile holds.
local P = { runbook = "tessera-bootstrap" }

P.TESSERA_DATABASE_URL = "postgresql+asyncpg://tessera:db-pw-e2e-1234@postgres:5432/tessera"
P.TESSERA_IMAGE = "your-registry/tessera:0.1.0"

function P.env(sb, e)
  if sb.https.tessera then e.BOOTSTRAP_API_KEY = sb.https.tessera.token end
  e.TESSERA_DATABASE_URL = P.TESSERA_DATABASE_URL
  e.TESSERA_REDIS_URL = sb.services.redis and sb.services.redis.url or "redis://redis:6379/0"
  e.TESSERA_IMAGE = P.TESSERA_IMAGE
end

function P.values(sb)
  if not sb.https.tessera then return nil end
  return { kubeconfig = sb.dir .. "/kubeconfig", api_url = sb:site_url("tessera"), ca_file = sb:ca_file(),
    cors_origins = "https://tessera.your-domain.com" }
end

P.players = {
  ["M1-secret-manager"] = { role = "Platform", note = "the sandbox played Platform (admin API key copied into the secret manager)" },
  ["M2-db-private"] = { role = "Platform", note = "the sandbox played Platform (the database accepts the cluster's subnet only)" },
  ["M3-redis-private"] = { role = "Platform", note = "the sandbox played Platform (Redis on the internal network only)" },
  ["M4-waf"] = { role = "Platform", note = "the sandbox played Platform (WAF in front of the Ingress)" },
  ["M5-metrics"] = { role = "Platform", note = "the sandbox played Platform (Prometheus scrapes /metrics)" },
  ["M6-audit-log"] = { role = "Platform", note = "the sandbox played Platform (audit trail shipped with the logs)" },
  ["M7-alerts"] = { role = "Platform", note = "the sandbox played Platform (alerts routed to on-call)" },
}

return P
