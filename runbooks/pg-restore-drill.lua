-- A PostgreSQL restore drill, as Bow-Mark's and Ticolops' guides ask for
-- ("periodically test snapshot restores"): the newest pg_dump in object
-- storage (DigitalOcean Spaces, R2, S3) is downloaded, checked, restored
-- into a scratch database, and its tables' row counts are compared with the
-- live database; then the scratch database is dropped. The journal is the
-- evidence that the backup restores.
--
--   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... SOURCE_DATABASE_URL=... SCRATCH_DATABASE_URL=... \
--   runbook exec runbooks/pg-restore-drill.lua --new --param endpoint=https://nyc3.digitaloceanspaces.com \
--     --param region=nyc3 --param bucket=bowmark-backups --param prefix=pg-backups/bowmark_reports_paving/
local pg = require "runbook.pg"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local errors = require "runbook.errors"

runbook "pg-restore-drill" {
  description = "Restore the newest backup into a scratch database and compare it with the source",
  owner = "DevOps",
  doc = [[
The dump is downloaded to `work_dir` (its size and sha256 recorded, and
checked) and restored from there, a custom-format dump (pg_dump -Fc, its
first bytes "PGDMP") with pg_restore, a plain SQL one (pg_dump > backup.sql)
with psql, stopping at the first error. The file is restored rather than
streamed from the bucket through an S3 store, so it stays as evidence when
the comparison fails. Start each drill with
`--new`. If the comparison fails, the scratch database is left for a look;
`runbook rollback <run>` drops it and the downloaded file.]],
  params = {
    endpoint = { env = "BACKUP_S3_ENDPOINT", doc = "https://<region>.digitaloceanspaces.com, https://<account>.r2.cloudflarestorage.com, ..." },
    region = { default = "us-east-1", doc = "the Spaces region (nyc3), auto for R2" },
    bucket = { env = "BACKUP_BUCKET" },
    prefix = { default = "pg-backups/", doc = "where the dumps of one database are (pg-backups/<db_name>/)" },
    access_key = { secret = true, env = "AWS_ACCESS_KEY_ID" },
    secret_key = { secret = true, env = "AWS_SECRET_ACCESS_KEY" },
    source_url = { secret = true, env = "SOURCE_DATABASE_URL", doc = "the live database, read only: its row counts" },
    scratch_url = { secret = true, env = "SCRATCH_DATABASE_URL",
      doc = "postgres://... of a server where the scratch database may be created (its maintenance database)" },
    work_dir = { default = "restore-drill", doc = "a local folder for the downloaded dump" },
    tolerance_pct = { default = 5, doc = "how many percent fewer rows than the live table a restored table may have (writes since the backup)" },
    ca_file = { required = false },
  },
}

local function store(ctx)
  local p = ctx.params
  return s3.connect { endpoint = p.endpoint, region = p.region, access_key = p.access_key, secret_key = p.secret_key, ca_file = p.ca_file }
end

-- The scratch database's name: one per run.
local function scratch_name(ctx)
  return "restore_drill_" .. (ctx.run_id:match("%-(%d%d%d%d%d%d%-%x+)$") or "dry_run"):gsub("%-", "_")
end

-- The scratch server's URL with another database in its path.
local function with_db(url, db)
  local raw = secret.reveal(url)
  local head, tail = raw:match("^(postgres[%a]*://[^/?]+)/?[^?]*(.*)$")
  if not head then
    errors.raise { kind = "usage", message = "scratch_url must be a postgres:// URL (a keyword string cannot be given another database)" }
  end
  return secret.wrap(head .. "/" .. db .. tail)
end

-- Every ordinary and partitioned table outside the system schemas, with its exact row count.
local function row_counts(url)
  local db <close> = pg.connect(url, { statement_timeout = 600 })
  local out = {}
  local tables = db:query([[SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
    ORDER BY 1, 2]])
  for _, t in ipairs(tables) do
    out[t.schema .. "." .. t.name] = db:value("SELECT count(*) FROM " .. db:ident(t.schema) .. "." .. db:ident(t.name))
  end
  return out
end

local function basename(key) return key:match("([^/]+)$") end

-- A dry run finds the backup and stops there: everything after it writes
-- (a file, a database) or reads what those writes would have made.
local function dry(ctx, what)
  if not ctx.dry_run then return false end
  ctx:log("dry run: would %s", what)
  return true
end

step "R1" {
  title = "Find the latest backup",
  run = function(ctx)
    local p = ctx.params
    local client <close> = store(ctx)
    local newest
    for _, o in ipairs(client:list { bucket = p.bucket, prefix = p.prefix }) do
      if o.size > 0 and (not newest or o.last_modified > newest.last_modified
          or (o.last_modified == newest.last_modified and o.key > newest.key)) then
        newest = o
      end
    end
    if not newest then
      errors.raise { kind = "drill", code = "no-backup", message = string.format("no backup under s3://%s/%s", p.bucket, p.prefix) }
    end
    ctx:log("newest backup: s3://%s/%s (%d bytes, %s)", p.bucket, newest.key, newest.size, newest.last_modified)
    return { key = newest.key, size = newest.size, last_modified = newest.last_modified }
  end,
  undo = function() end,
}

step "R2" {
  title = "Download and check it",
  needs = "R1",
  doc = [[The object is streamed to work_dir; its format comes from its first bytes. A
custom-format dump (pg_dump -Fc, "PGDMP") must be read by `pg_restore --list`; a
plain SQL one (pg_dump > backup.sql) must start with pg_dump's header and end with
its "dump complete" line.]],
  timeout = 3600,
  run = function(ctx)
    local p, name = ctx.params, basename(ctx.outputs.R1.key)
    if dry(ctx, string.format("download s3://%s/%s to %s and check it", p.bucket, ctx.outputs.R1.key, p.work_dir)) then
      return { file = name, dry_run = true }
    end
    local dir = pg.local_store(p.work_dir)
    local client <close> = store(ctx)
    local got = client:get { bucket = p.bucket, key = ctx.outputs.R1.key, file = dir:path(name) }
    -- the format from the file's first bytes: "PGDMP" is pg_dump -Fc's, text is plain SQL
    local info = pg.verify_backup { path = dir:path(name), sha256 = got.sha256 }
    return { file = name, size = got.size, sha256 = got.sha256, tables = info.tables, entries = info.entries,
      format = info.format == "PLAIN" and "plain" or "custom" }
  end,
  undo = function(ctx) pg.local_store(ctx.params.work_dir):delete(ctx.outputs.R2.file) end,
}

step "R3" {
  title = "Create the scratch database",
  needs = "R2",
  run = function(ctx)
    local name = scratch_name(ctx)
    if dry(ctx, "create the database " .. name) then return { database = name, dry_run = true } end
    local admin <close> = pg.connect(ctx.params.scratch_url)
    if admin:value("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0 then
      admin:exec("CREATE DATABASE " .. admin:ident(name))
    end
    return { database = name }
  end,
  undo = function(ctx)
    local admin <close> = pg.connect(ctx.params.scratch_url)
    admin:exec("DROP DATABASE IF EXISTS " .. admin:ident(ctx.outputs.R3.database) .. " WITH (FORCE)")
  end,
}

step "R4" {
  title = "Restore into it",
  needs = "R3",
  timeout = 4 * 3600,
  run = function(ctx)
    if dry(ctx, "restore " .. ctx.outputs.R2.file .. " into " .. ctx.outputs.R3.database) then return { dry_run = true } end
    -- pg_restore for a custom-format archive, psql for plain SQL (pg.restore tells them apart)
    local r = pg.restore { url = with_db(ctx.params.scratch_url, ctx.outputs.R3.database),
      path = pg.local_store(ctx.params.work_dir):path(ctx.outputs.R2.file), clean = true, single_transaction = true }
    if r.owner_statements_skipped then
      ctx:log("restored the plain dump with psql (%d OWNER TO statement(s) left out)", r.owner_statements_skipped)
    end
    return { seconds = r.seconds, format = r.format }
  end,
  undo = function() end, -- R3's undo drops the database
}

step "R5" {
  title = "Compare row counts with the source",
  needs = "R4",
  doc = [[Fails when a live table is missing from the restore, or the restore has more
than tolerance_pct percent fewer rows than the live table. Tables with more
rows restored than live (deletions since the backup), or restored but gone
live, are reported.]],
  timeout = 3600,
  run = function(ctx)
    if dry(ctx, "compare the row counts of every table with the source") then return { dry_run = true } end
    local live = row_counts(ctx.params.source_url)
    local restored = row_counts(with_db(ctx.params.scratch_url, ctx.outputs.R3.database))
    local tol = ctx.params.tolerance_pct
    local problems, report = {}, {}
    local names = {}
    for t in pairs(live) do names[#names + 1] = t end
    for t in pairs(restored) do if live[t] == nil then names[#names + 1] = t end end
    table.sort(names)
    for _, t in ipairs(names) do
      local l, r = live[t], restored[t]
      report[#report + 1] = { table = t, live = l, restored = r }
      if r == nil then
        problems[#problems + 1] = t .. " is missing from the backup"
      elseif l == nil then
        ctx:warn("%s: %d rows restored; the table no longer exists live", t, r)
      elseif r < l * (1 - tol / 100) then
        problems[#problems + 1] = string.format("%s: %d rows restored, %d live (more than %g%% fewer)", t, r, l, tol)
      else
        ctx:log("%s: %d rows restored, %d live", t, r, l)
      end
    end
    if #problems > 0 then
      errors.raise { kind = "drill", code = "mismatch", message = "the restore does not match the source: " .. table.concat(problems, "; ")
        .. string.format(" (scratch database %s kept for a look; runbook rollback drops it)", ctx.outputs.R3.database) }
    end
    return { tables = report }
  end,
  undo = function() end,
}

step "R6" {
  title = "Drop the scratch database",
  needs = "R5",
  run = function(ctx)
    if dry(ctx, "drop " .. ctx.outputs.R3.database .. " and delete " .. ctx.outputs.R2.file) then return end
    local admin <close> = pg.connect(ctx.params.scratch_url)
    admin:exec("DROP DATABASE IF EXISTS " .. admin:ident(ctx.outputs.R3.database) .. " WITH (FORCE)")
    pg.local_store(ctx.params.work_dir):delete(ctx.outputs.R2.file)
  end,
}
