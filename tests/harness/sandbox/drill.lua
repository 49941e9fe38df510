-- The sandbox's part for the restore drill (runbooks/pg-restore-drill.lua):
-- a live database, yesterday's dump (100 shipments) and today's (1000) in
-- the bucket, another database's dump beside them, and 2% more rows
-- written since. See tests/harness/sandbox.lua for what a profile holds.
local fs = require "runbook._fs"

local P = { runbook = "pg-restore-drill" }

-- its live database is not named bowmark_reports_paving: that one is
-- production's in bowmark-first-deploy's world, on the same server
P.DRILL = { bucket = "bowmark-backups", prefix = "bowmark_reports_paving-", db = "drill_reports_paving" }

-- seeded afresh whenever PostgreSQL or moto (which keeps nothing) started
function P.seed(sb, fresh)
  if not ((fresh.pg or fresh.s3) and sb.services.pg and sb.services.s3) then return end
  local pg = require "runbook.pg"
  local s3 = require "runbook.s3"
  local secret = require "runbook.secret"
  local db = P.DRILL.db
  sb:psql { string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', db), string.format('CREATE DATABASE "%s"', db) }
  sb:psql([[
    CREATE TABLE fact_material_shipment (id bigserial PRIMARY KEY, tons numeric NOT NULL);
    CREATE TABLE dim_jobsite (id int PRIMARY KEY, name text);
    CREATE SCHEMA audit;
    CREATE TABLE audit.sync_log (id bigserial PRIMARY KEY, note text);
    INSERT INTO dim_jobsite SELECT g, 'site ' || g FROM generate_series(1, 50) g;
    INSERT INTO fact_material_shipment (tons) SELECT g % 40 FROM generate_series(1, 100) g;
    INSERT INTO audit.sync_log (note) VALUES ('first');]], db)
  local s = sb.services.s3
  local client <close> = s3.connect { endpoint = s.endpoint, region = s.region, access_key = s.access_key,
    secret_key = secret.wrap(s.secret_key) }
  client:ensure_bucket(P.DRILL.bucket)
  local seeds = sb.dir .. "/seed"
  assert(fs.mkdir_p(seeds, 448))
  for i, day in ipairs { "20260301T080000Z", "20260302T080000Z" } do
    if i == 2 then sb:psql("INSERT INTO fact_material_shipment (tons) SELECT g % 40 FROM generate_series(1, 900) g", db) end
    pg.backup { url = sb:pg_url(db), path = seeds .. "/" .. day .. ".dump" }
    client:put { bucket = P.DRILL.bucket, key = P.DRILL.prefix .. day .. ".pgdump", file = seeds .. "/" .. day .. ".dump" }
  end
  client:put { bucket = P.DRILL.bucket, key = "other_db-20260303T080000Z.pgdump", body = "not ours" }
  sb:psql("INSERT INTO fact_material_shipment (tons) SELECT 1 FROM generate_series(1, 20)", db)
end

function P.env(sb, e)
  local s3, pg = sb.services.s3, sb.services.pg
  if s3 and s3.access_key then
    e.AWS_ACCESS_KEY_ID, e.AWS_SECRET_ACCESS_KEY = s3.access_key, s3.secret_key
    e.BACKUP_S3_ENDPOINT, e.BACKUP_BUCKET = s3.endpoint, P.DRILL.bucket
  end
  if pg then
    e.SOURCE_DATABASE_URL = sb:pg_url(P.DRILL.db)
    e.SCRATCH_DATABASE_URL = sb:pg_url("postgres")
  end
end

function P.values(sb)
  if not sb.services.s3 then return nil end
  return { endpoint = sb.services.s3.endpoint, bucket = P.DRILL.bucket, prefix = P.DRILL.prefix,
    work_dir = sb.dir .. "/restore-drill" }
end

return P
