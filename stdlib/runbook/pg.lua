-- runbook.pg: PostgreSQL for runbooks. Connections and queries with typed
-- rows, transactions, COPY, readiness (runbook.pg._conn); and the
-- operations a deploy needs: dbmate-compatible migrations
-- (runbook.pg._migrate), crash-safe backfills (runbook.pg._backfill) and
-- streamed backups (runbook.pg._backup), all exported from here. Each of
-- them requires _conn, never this module: no cycle to hold apart.
local conn = require "runbook.pg._conn"
local migrate = require "runbook.pg._migrate"
local backfill = require "runbook.pg._backfill"
local backup = require "runbook.pg._backup"
local store = require "runbook.pg._store"

local M = {}
for k, v in pairs(conn) do M[k] = v end

M.migrate = migrate.migrate
M.migration_status = migrate.status
M.migrate_down = migrate.down
M.backfill = backfill.backfill
M.copy_rows = backfill.copy_rows
M.backup = backup.backup
M.verify_backup = backup.verify
M.restore = backup.restore
M.backup_format = backup.format
M.retention = backup.retention
M.local_store = store.local_store
M.file_writer = store.file_writer

return M
