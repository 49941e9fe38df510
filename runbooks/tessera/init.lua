-- Files shipped with tessera-bootstrap.lua: the Kubernetes section of
-- Tessera's deployment guide (namespace.yaml, configmap.yaml,
-- deployment.yaml, service.yaml, ingress.yaml, hpa.yaml) in k8s/, found
-- next to this file whatever the working directory. secrets.yaml is not
-- shipped: its values are the runbook's secret params, written with
-- cluster:secret (never into a file).
local _, path = ...
local dir = path:match("^(.*)/[^/]*$")

return {
  dir = dir,
  --- The folder of manifests, applied together (namespace first, Ingress last).
  k8s = dir .. "/k8s",
  --- The namespace alone (applied before the Secret goes into it).
  namespace = dir .. "/k8s/namespace.yaml",
}
