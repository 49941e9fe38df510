-- Step library: a backup restored into a scratch database and compared with
-- the live one, row count by row count, as the Ticolops (T8) and Janua (P6)
-- runbooks check their backups.
--
--   local restore = require "lib.restore"
--   local r = restore.check(ctx, { live = url, scratch = server_url, name = "janua_restore_x",
--     store = store, backup = "janua-....dump", tolerance_pct = 5 })
--   restore.drop(server_url, "janua_restore_x")       -- in the step's undo
--
-- `scratch` is a postgres:// URL of a server where a database may be
-- created (its maintenance database). The scratch database is created if
-- missing, restored into (clean), compared and dropped; on a mismatch it is
-- kept for a look and the step fails naming every table that differs.
local pg = require "runbook.pg"
local secret = require "runbook.secret"
local errors = require "runbook.errors"

local M = {}

--- The server URL `url` with database `db` in its path (a secret).
function M.with_db(url, db)
  local head, tail = secret.reveal(url):match("^(postgres[%a]*://[^/?]+)/?[^?]*(.*)$")
  if not head then
    errors.raise { kind = "usage", message = "scratch_url must be a postgres:// URL (a keyword string cannot be given another database)" }
  end
  return secret.wrap(head .. "/" .. db .. tail)
end

--- Every ordinary and partitioned table outside the system schemas, with
--- its row count: {["schema.table"] = n}.
function M.row_counts(url)
  local db <close> = pg.connect(url, { statement_timeout = 600 })
  local out = {}
  for _, t in ipairs(db:query([[SELECT n.nspname AS schema, c.relname AS name FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
      ORDER BY 1, 2]])) do
    out[t.schema .. "." .. t.name] = db:value("SELECT count(*) FROM " .. db:ident(t.schema) .. "." .. db:ident(t.name))
  end
  return out
end

--- Drops the scratch database `name` on the server `scratch` (if it is there).
function M.drop(scratch, name)
  local admin <close> = pg.connect(scratch)
  admin:exec("DROP DATABASE IF EXISTS " .. admin:ident(name) .. " WITH (FORCE)")
end

--- Restores opts.backup from opts.store into the scratch database
--- opts.name, compares every live table (none missing, at most
--- opts.tolerance_pct percent fewer rows), then drops it. Returns
--- {database=, tables = {{table=, live=, restored=}...}}.
function M.check(ctx, opts)
  local admin <close> = pg.connect(opts.scratch)
  if admin:value("SELECT count(*) FROM pg_database WHERE datname = $1", opts.name) == 0 then
    admin:exec("CREATE DATABASE " .. admin:ident(opts.name))
  end
  local target = M.with_db(opts.scratch, opts.name)
  pg.restore { url = target, store = opts.store, name = opts.backup, clean = true }
  local live, restored = M.row_counts(opts.live), M.row_counts(target)
  local names, problems, report = {}, {}, {}
  for t in pairs(live) do names[#names + 1] = t end
  table.sort(names)
  for _, t in ipairs(names) do
    local l, r = live[t], restored[t]
    report[#report + 1] = { table = t, live = l, restored = r }
    if r == nil then
      problems[#problems + 1] = t .. " is missing from the backup"
    elseif r < l * (1 - (opts.tolerance_pct or 0) / 100) then
      problems[#problems + 1] = string.format("%s: %d rows restored, %d live", t, r, l)
    else
      ctx:log("%s: %d rows restored, %d live", t, r, l)
    end
  end
  if #problems > 0 then
    errors.raise { kind = "drill", code = "mismatch", message = "the restore does not match the live database: "
      .. table.concat(problems, "; ") .. " (scratch database " .. opts.name .. " kept; runbook rollback drops it)" }
  end
  admin:exec("DROP DATABASE IF EXISTS " .. admin:ident(opts.name) .. " WITH (FORCE)")
  return { database = opts.name, tables = report }
end

return M
