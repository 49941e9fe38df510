-- Files shipped with ticolops-production.lua: the guide's
-- infra/k8s/deployment.yaml and infra/k8s/ingress.yaml, found next to this
-- file whatever the working directory.
local _, path = ...
local dir = path:match("^(.*)/[^/]*$")

return {
  dir = dir,
  --- Deployment, Service and HorizontalPodAutoscaler (infra/k8s/deployment.yaml).
  deployment = dir .. "/k8s/deployment.yaml",
  --- The nginx Ingress with TLS from cert-manager (infra/k8s/ingress.yaml).
  ingress = dir .. "/k8s/ingress.yaml",
}
