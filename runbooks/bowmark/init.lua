-- Files shipped with bowmark-first-deploy.lua. A module is loaded with its
-- own path, which a runbook's steps do not know: the manifests are found
-- next to this file whatever the working directory.
local _, path = ...
local dir = path:match("^(.*)/[^/]*$")

return {
  dir = dir,
  --- The infrastructure manifests (postgres and rabbitmq StatefulSets, the pg-backup CronJob).
  manifests = dir .. "/k8s",
}
