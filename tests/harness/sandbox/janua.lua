-- The sandbox's part for Janua's release (runbooks/janua-rollout.lua): the
-- running release it upgrades (the Deployment janua-production.lua checks
-- too, see sandbox/janua_production.lua) and its values. See
-- tests/harness/sandbox.lua for what a profile holds.
local P = { runbook = "janua-rollout", rehearse_after = "janua-production" }

P.namespaces = { "janua" }

local function secret_env(name, key) return { name = name, valueFrom = { secretKeyRef = { name = "janua-secrets", key = key } } } end

--- The guide's k8s/deployment.yaml (3 replicas, the janua-secrets keys,
--- imagePullSecrets regcred) with the rolling update J2 relies on, and a
--- sidecar the release leaves alone.
function P.deployment(name, strategy)
  return { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = name, labels = { app = name } },
    spec = { replicas = 3, selector = { matchLabels = { app = name } },
      strategy = strategy or { type = "RollingUpdate", rollingUpdate = { maxUnavailable = 0, maxSurge = 1 } },
      template = { metadata = { labels = { app = name } }, spec = {
        imagePullSecrets = { { name = "regcred" } },
        containers = {
          { name = "api", image = "janua/api:2026.02.3", ports = { { containerPort = 8000 } }, env = {
            secret_env("DATABASE_URL", "database-url"), secret_env("REDIS_URL", "redis-url"),
            secret_env("JWT_SECRET_KEY", "jwt-secret"), secret_env("SECRET_KEY", "secret-key") } },
          { name = "metrics-sidecar", image = "prom/statsd-exporter:v0.26.0" } } } } } }
end

function P.seed_k8s(sb)
  local janua = sb:cluster("janua")
  if not janua:get { api_version = "apps/v1", kind = "Deployment", name = "janua-api" } then
    janua:apply(P.deployment("janua-api"))
  end
  janua:close()
end

function P.values(sb)
  if not sb.https.janua then return nil end
  return { kubeconfig = sb.dir .. "/kubeconfig", image_tag = "2026.03.0", api_url = sb:site_url("janua"),
    ca_file = sb:ca_file(), rollout_timeout = 120 }
end

return P
