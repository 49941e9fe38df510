-- The sandbox's part for Janua's production setup
-- (runbooks/janua-production.lua): its database on the sandbox's PostgreSQL
-- (a few rows for the backup and the restore check), the registry
-- credentials and the other variables it reads, the migration Job's log and
-- the people its checklists need. The Deployment it checks is the one
-- sandbox/janua.lua seeds for the release. See tests/harness/sandbox.lua
-- for what a profile holds.
local P = { runbook = "janua-production" }

P.JANUA = { db = "janua", registry_user = "janua-ci", registry_password = "sandbox-registry-token-5e1f",
  redis_url = "redis://redis.janua.internal:6379/0" }

P.job_logs = {
  { "janua", "janua-migrate-", "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\n"
    .. "INFO  [alembic.runtime.migration] Running upgrade 7c1d2e0a9b31 -> 9f4b6a2c8d15, add organizations.plan" },
}

-- seeded afresh whenever PostgreSQL started
function P.seed(sb, fresh)
  if not (fresh.pg and sb.services.pg) then return end
  local db = P.JANUA.db
  sb:psql { string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', db), string.format('CREATE DATABASE "%s"', db) }
  sb:psql([[
    CREATE TABLE organizations (id bigserial PRIMARY KEY, name text NOT NULL);
    CREATE TABLE users (id bigserial PRIMARY KEY, org bigint REFERENCES organizations, email text NOT NULL);
    CREATE TABLE sessions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id bigint REFERENCES users);
    INSERT INTO organizations (name) SELECT 'org ' || g FROM generate_series(1, 12) g;
    INSERT INTO users (org, email) SELECT 1 + g % 12, 'user' || g || '@janua.dev' FROM generate_series(1, 90) g;
    INSERT INTO sessions (user_id) SELECT 1 + g % 90 FROM generate_series(1, 250) g;]], db)
end

function P.env(sb, e)
  local s3, pg = sb.services.s3, sb.services.pg
  if pg then
    e.JANUA_DATABASE_URL = sb:pg_url(P.JANUA.db)
    e.JANUA_SCRATCH_DATABASE_URL = sb:pg_url("postgres")
  end
  e.JANUA_REDIS_URL = P.JANUA.redis_url
  e.DOCKER_USERNAME, e.DOCKER_PASSWORD = P.JANUA.registry_user, P.JANUA.registry_password
  if s3 and s3.access_key then
    e.BACKUP_S3_ENDPOINT = s3.endpoint
    e.AWS_ACCESS_KEY_ID, e.AWS_SECRET_ACCESS_KEY = s3.access_key, s3.secret_key
  end
end

function P.values(sb)
  if not sb.https.janua then return nil end
  return { kubeconfig = sb.dir .. "/kubeconfig", api_url = sb:site_url("janua"), ca_file = sb:ca_file() }
end

P.players = {
  P4 = { role = "Release manager", note = "the sandbox played the release manager (CI tests, bandit scan and load test green)" },
  P9 = { role = "Platform", note = "the sandbox played Platform (alerts loaded, baseline noted, team notified)" },
}

return P
