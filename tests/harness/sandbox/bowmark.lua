-- The sandbox's part for Bow-Mark's first deploy
-- (runbooks/bowmark-first-deploy.lua): its namespace, its Space (moto),
-- the one-off Jobs' logs, what CircleCI applies when the release merges,
-- the credentials it reads and the people its guide needs. See
-- tests/harness/sandbox.lua for what a profile holds.
local P = { runbook = "bowmark-first-deploy" }

P.BOWMARK_SERVER_IMAGE = "itsdevin/bow-mark-server:3f9c2e1"
P.SPACE = "bowmark-backups"
P.namespaces = { "bowmark" }

P.job_logs = {
  { "bowmark", "verify-postgres-", "bowmark_reports_concrete\nbowmark_reports_paving" },
  { "bowmark", "verify-rabbitmq-", "bowmark\nbowmark-concrete" },
  { "bowmark", "backfill-paving-", "backfill: 1200 jobsites\nbackfill: 48211 material shipments\nbackfill done" },
  { "bowmark", "backfill-concrete-", "backfill: 310 jobsites\nbackfill done" },
  { "bowmark", "verify-backfill-", "48211" },
  { "bowmark", "pg-backup-verify-", "uploaded s3://bowmark-backups/pg-backups/bowmark_reports_paving/bowmark_reports_paving-20260301T080000Z.pgdump\n"
    .. "uploaded s3://bowmark-backups/pg-backups/bowmark_reports_concrete/bowmark_reports_concrete-20260301T080000Z.pgdump" },
}

local function deployment(name, image, component, logs)
  local meta = { labels = { app = name, component = component } }
  if logs then meta.annotations = { ["fake.runbook.dev/logs"] = logs } end
  return { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = name, namespace = "bowmark" },
    spec = { replicas = name:match("^server") and 2 or 1, selector = { matchLabels = { app = name } },
      template = { metadata = meta, spec = { containers = { { name = component, image = image } } } } } }
end

--- What CircleCI applies when Bow-Mark's release is merged (B5): the
--- pg-migrations ConfigMap and the eight Deployments.
function P.bowmark_ci_objects()
  local img = P.BOWMARK_SERVER_IMAGE
  local out = { { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "pg-migrations", namespace = "bowmark" },
    data = { ["20250101000000_create_facts.sql"] = "-- migrate:up\nCREATE TABLE fact_material_shipment (id bigint);\n-- migrate:down\n" } } }
  for _, name in ipairs { "server-deployment", "server-concrete-deployment", "worker-deployment", "worker-concrete-deployment" } do
    out[#out + 1] = deployment(name, img, (name:gsub("%-deployment$", "")))
  end
  out[#out + 1] = deployment("consumer-deployment", img, "consumer", "Connected to RabbitMQ vhost bowmark\nWaiting for messages")
  out[#out + 1] = deployment("consumer-concrete-deployment", img, "consumer-concrete",
    "Connected to RabbitMQ vhost bowmark-concrete\nWaiting for messages")
  out[#out + 1] = deployment("client-deployment", "itsdevin/bow-mark-client:3f9c2e1", "client")
  out[#out + 1] = deployment("client-concrete-deployment", "itsdevin/bow-mark-concrete-client:3f9c2e1", "client-concrete")
  return out
end

-- the Space, made in DigitalOcean's control panel (moto keeps nothing, so
-- whenever moto started)
function P.seed(sb, fresh)
  if not (fresh.s3 and sb.services.s3) then return end
  local s3 = require "runbook.s3"
  local secret = require "runbook.secret"
  local s = sb.services.s3
  local client <close> = s3.connect { endpoint = s.endpoint, region = s.region, access_key = s.access_key,
    secret_key = secret.wrap(s.secret_key) }
  client:ensure_bucket(P.SPACE)
end

function P.env(sb, e)
  local s3 = sb.services.s3
  e.BOWMARK_PAVING_MONGO_URI = "mongodb+srv://bowmark:sandbox-paving@paving.sandbox.mongodb.net/paving"
  e.BOWMARK_CONCRETE_MONGO_URI = "mongodb+srv://bowmark:sandbox-concrete@concrete.sandbox.mongodb.net/concrete"
  e.BOWMARK_JWT_SECRET = "sandbox-jwt-secret"
  e.SPACES_NAME, e.SPACES_REGION = P.SPACE, "nyc3"
  e.SPACES_KEY, e.SPACES_SECRET = "DO00SANDBOXSPACESKEY", "sandbox-spaces-secret"
  -- moto plays the Space (B3-spaces sets its lifecycle rule)
  if s3 and s3.access_key then e.SPACES_KEY, e.SPACES_SECRET = s3.access_key, s3.secret_key end
  e.BOWMARK_EMAIL_FROM, e.SMTP_USER, e.SMTP_HOST = "reports@bowmark.ca", "apikey", "smtp.sendgrid.net"
  e.SMTP_PASSWORD = "sandbox-smtp-password"
  e.MEILISEARCH_HOST, e.MEILISEARCH_API_KEY = "https://search.bowmark.ca", "sandbox-meili-key"
end

function P.values(sb)
  return { kubeconfig = sb.dir .. "/kubeconfig", namespace = "bowmark",
    spaces_endpoint = sb.services.s3 and sb.services.s3.endpoint or nil }
end

P.players = {
  ["B2-vault"] = { role = "DevOps", note = "the sandbox played DevOps (op item create, recorded in logs/cli.log)",
    act = function(sb)
      sb:cli { "op", "item", "create", "--category", "login", "--title", "Bow-Mark Production K8s", "--vault", "Private",
        "postgres-password[password]=(from the postgres Secret)", "rabbitmq-password[password]=(from the rabbitmq Secret)" }
    end },
  B5 = { role = "DevOps and CircleCI", self_confirms = true,
    act = function(sb)
      sb:cli { "gh", "pr", "merge", "--repo", "bowmark/bow-mark", "--merge", "release" }
      local c = sb:cluster("bowmark")
      for _, obj in ipairs(P.bowmark_ci_objects()) do c:apply(obj) end
      c:close()
    end },
}

return P
