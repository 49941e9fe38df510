-- The sandbox's part for Ticolops (runbooks/ticolops-production.lua): its
-- managed database seeded with a few rows for the backup and the drill,
-- its credentials, and the people its guide needs. See
-- tests/harness/sandbox.lua for what a profile holds.
local P = { runbook = "ticolops-production" }

P.TICOLOPS = { db = "ticolops", host = "ticolops.example.com", image = "ghcr.io/ticolops/backend:1.0.0",
  passphrase = "sandbox-config-passphrase" }

function P.seed(sb, fresh)
  if not fresh.pg then return end
  local db = P.TICOLOPS.db
  sb:psql { string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', db), string.format('CREATE DATABASE "%s"', db) }
  sb:psql([[
    CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);
    CREATE TABLE projects (id bigserial PRIMARY KEY, owner bigint REFERENCES users, name text);
    INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 40) g;
    INSERT INTO projects (owner, name) SELECT 1 + g % 40, 'project ' || g FROM generate_series(1, 120) g;]], db)
end

function P.env(sb, e)
  if sb.services.pg then
    e.TICOLOPS_DATABASE_URL = (sb:pg_url(P.TICOLOPS.db):gsub("^postgres://", "postgresql+asyncpg://"))
    e.TICOLOPS_SCRATCH_DATABASE_URL = sb:pg_url("postgres")
  end
  e.TICOLOPS_REDIS_URL = sb.services.redis and sb.services.redis.url or "redis://redis:6379/0"
  e.TICOLOPS_CONFIG_PASSPHRASE = P.TICOLOPS.passphrase
  e.TICOLOPS_HOST, e.TICOLOPS_IMAGE = P.TICOLOPS.host, P.TICOLOPS.image
end

function P.values(sb) return { kubeconfig = sb.dir .. "/kubeconfig" } end

P.players = {
  T4 = { role = "DevOps", note = "the sandbox played DevOps (gh secret set KUBECONFIG, recorded in logs/cli.log)",
    act = function(sb)
      sb:cli({ "gh", "secret", "set", "KUBECONFIG", "--repo", "ticolops/ticolops" }, "sandbox-kubeconfig\n")
    end },
  T5 = { role = "DevOps", note = "the sandbox played DevOps (automated daily backups, 7 days)" },
}

return P
