-- The sandbox's part for Bow-Mark's first deploy
-- (runbooks/bowmark-first-deploy.lua): its namespace, its Space (moto),
-- the one-off Jobs' logs, what CircleCI applies when the release merges,
-- the credentials it reads and the people its guide needs. See
-- tests/harness/sandbox.lua for what a profile holds.
--
-- Its repository's k8s/ is bowmark-repo/k8s/ here (the `manifests` param).
-- Production's PostgreSQL is the sandbox's real one: a port-forward to
-- postgres-0:5432 reaches it, and at B5 the sandbox plays what the
-- postgres image does on its first start (user and databases from the
-- postgres Secret) and what the consumers' init containers do (the real
-- dbmate up with the pg-migrations ConfigMap's files).
local rbtest = require "rbtest"

local P = { runbook = "bowmark-first-deploy" }

P.BOWMARK_SERVER_IMAGE = "itsdevin/bow-mark-server:3f9c2e1"
P.SPACE = "bowmark-backups"
P.BOWMARK_REPO = rbtest.source_dir .. "/tests/harness/sandbox/bowmark-repo"
-- the old cluster's last paving backup, which B8 restores into production
P.BOWMARK_DUMP = "pg-backups/bowmark_reports_paving/bowmark_reports_paving-20260228T080000Z.pgdump"
P.BOWMARK_DUMP_ROWS = { fact_material_shipment = 250, dim_jobsite = 12, schema_migrations = 1 }
P.BOWMARK_MIGRATIONS = {
  ["20250101000000_create_facts.sql"] = "-- migrate:up\nCREATE TABLE fact_material_shipment (id bigint PRIMARY KEY, tons numeric);\n"
    .. "CREATE TABLE dim_jobsite (id int PRIMARY KEY, name text);\n-- migrate:down\nDROP TABLE dim_jobsite;\nDROP TABLE fact_material_shipment;\n",
}
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
    data = P.BOWMARK_MIGRATIONS } }
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

-- the Space, made in DigitalOcean's control panel, with the old cluster's
-- dump (moto keeps nothing, so whenever moto started); the port-forward to
-- postgres-0 (the fake keeps it until a reset)
local function forward_postgres(sb)
  local pgs = sb.services.pg
  if sb.fake and pgs then
    sb.fake:control("POST", "/_fake/pod-ports", { namespace = "bowmark", pod = "postgres-0", port = 5432, local_port = pgs.port })
  end
end

function P.seed(sb, fresh)
  local pgs = sb.services.pg
  forward_postgres(sb)
  if not (fresh.s3 and sb.services.s3) then return end
  local s3 = require "runbook.s3"
  local secret = require "runbook.secret"
  local s = sb.services.s3
  local client <close> = s3.connect { endpoint = s.endpoint, region = s.region, access_key = s.access_key,
    secret_key = secret.wrap(s.secret_key) }
  client:ensure_bucket(P.SPACE)
  if not pgs then return end
  local pg = require "runbook.pg"
  local fs = require "runbook._fs"
  local old = "bowmark_old_cluster"
  sb:psql { string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', old), string.format('CREATE DATABASE "%s"', old) }
  sb:psql([[
    CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);
    INSERT INTO schema_migrations VALUES ('20250101000000');
    CREATE TABLE fact_material_shipment (id bigint PRIMARY KEY, tons numeric);
    CREATE TABLE dim_jobsite (id int PRIMARY KEY, name text);
    INSERT INTO fact_material_shipment SELECT g, g % 40 FROM generate_series(1, 250) g;
    INSERT INTO dim_jobsite SELECT g, 'site ' || g FROM generate_series(1, 12) g;]], old)
  assert(fs.mkdir_p(sb.dir .. "/seed", 448))
  local file = sb.dir .. "/seed/bowmark-old-cluster.pgdump"
  pg.backup { url = sb:pg_url(old), path = file }
  client:put { bucket = P.SPACE, key = P.BOWMARK_DUMP, file = file }
  sb:psql(string.format('DROP DATABASE "%s" WITH (FORCE)', old))
end

--- What postgres-0 does on its first start with an empty volume (the
--- postgres image's entrypoint with POSTGRES_USER, POSTGRES_PASSWORD and
--- POSTGRES_DB from the Secret, and the postgres-init script), played on
--- the sandbox's PostgreSQL the port-forward reaches.
function P.bowmark_postgres_boot(sb)
  local c = sb:cluster("bowmark")
  -- the plain keys declared, so that only the password is a secret here
  local s = c:secret { name = "postgres", if_exists = "keep", data = { user = "bowmark", host = "postgres", port = "5432",
    dbPaving = "bowmark_reports_paving", dbConcrete = "bowmark_reports_concrete" } }
  local pw = s.data.password:reveal()
  c:close()
  sb:psql(string.format("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bowmark') THEN "
    .. "CREATE ROLE bowmark LOGIN; END IF; END $$; ALTER ROLE bowmark PASSWORD '%s'", pw))
  for _, db in ipairs { "bowmark_reports_paving", "bowmark_reports_concrete" } do
    sb:psql { string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', db), string.format('CREATE DATABASE "%s" OWNER bowmark', db) }
  end
  return pw
end

--- The consumers' init containers: the real dbmate up, with the
--- pg-migrations ConfigMap's files, into both databases.
function P.bowmark_dbmate_up(sb, pw)
  local dbmate = require "dbmate"
  local fs = require "runbook._fs"
  local dir = sb.dir .. "/bowmark-migrations"
  assert(fs.mkdir_p(dir, 448))
  for file, text in pairs(P.BOWMARK_MIGRATIONS) do assert(fs.write_file(dir .. "/" .. file, text, 420)) end
  for _, db in ipairs { "bowmark_reports_paving", "bowmark_reports_concrete" } do
    local url = string.format("postgres://bowmark:%s@127.0.0.1:%d/%s?sslmode=disable", pw, sb.services.pg.port, db)
    local r = dbmate.run(url, dir, { "up" })
    assert(r.code == 0, "dbmate up " .. db .. ": " .. (r.stdout or "") .. (r.stderr or ""))
  end
end

-- a world reset (Sandbox:reset_world) empties the fake, the forward with it
function P.reset(sb) forward_postgres(sb) end

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
    spaces_endpoint = sb.services.s3 and sb.services.s3.endpoint or nil,
    manifests = P.BOWMARK_REPO .. "/k8s", work_dir = sb.dir .. "/bowmark-restore",
    restore_from = sb.services.pg and sb.services.s3 and P.BOWMARK_DUMP or nil,
    rotate_postgres_password = sb.services.pg and true or nil }
end

P.players = {
  B5 = { role = "DevOps and CircleCI", self_confirms = true,
    act = function(sb)
      sb:cli { "gh", "pr", "merge", "--repo", "bowmark/bow-mark", "--merge", "release" }
      local pw = sb.services.pg and P.bowmark_postgres_boot(sb)
      local c = sb:cluster("bowmark")
      for _, obj in ipairs(P.bowmark_ci_objects()) do c:apply(obj) end
      c:apply(P.BOWMARK_REPO .. "/k8s/pg-backup-cronjob.yaml")
      c:close()
      if pw then P.bowmark_dbmate_up(sb, pw) end
    end },
}

return P
