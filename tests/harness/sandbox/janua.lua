-- The sandbox's part for Janua's release (runbooks/janua-rollout.lua): the
-- running release it upgrades and its values. See tests/harness/sandbox.lua
-- for what a profile holds.
local P = { runbook = "janua-rollout" }

P.namespaces = { "janua" }

function P.seed_k8s(sb)
  local janua = sb:cluster("janua")
  if not janua:get { api_version = "apps/v1", kind = "Deployment", name = "janua-api" } then
    janua:apply { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "janua-api", labels = { app = "janua-api" } },
      spec = { replicas = 3, selector = { matchLabels = { app = "janua-api" } },
        strategy = { type = "RollingUpdate", rollingUpdate = { maxUnavailable = 0, maxSurge = 1 } },
        template = { metadata = { labels = { app = "janua-api" } }, spec = { containers = {
          { name = "api", image = "janua/api:2026.02.3", ports = { { containerPort = 8000 } } },
          { name = "metrics-sidecar", image = "prom/statsd-exporter:v0.26.0" } } } } } }
  end
  janua:close()
end

function P.values(sb)
  if not sb.https.janua then return nil end
  return { kubeconfig = sb.dir .. "/kubeconfig", image_tag = "2026.03.0", api_url = sb:site_url("janua"),
    ca_file = sb:ca_file(), rollout_timeout = 120 }
end

return P
