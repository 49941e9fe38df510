-- Backfills that survive a crash without duplicating or skipping a row.
-- Work goes in batches by key range; each batch commits in the target
-- database together with its cursor, a row of a checkpoint table there
-- (runbook_backfill_checkpoints). That row is the truth: a resumed run
-- reads it and goes on after the last committed batch. The journal gets a
-- mirror of the cursor (ctx:checkpoint) after each commit, for the audit
-- trail; it may lag by one batch after a crash, never lead.
--
-- Two forms: backfill() updates a table in place ("add a column, fill it
-- in batches"), copy_rows() streams rows from one database into another
-- with COPY. Both assume keys only grow while they run: a row inserted
-- behind the cursor is not visited.
local crypto = require "runbook._crypto"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"

local M = {}

M.CHECKPOINT_TABLE = "runbook_backfill_checkpoints"

-- SQLSTATEs worth retrying a batch for: lock_timeout, deadlock, serialization
local TRANSIENT = { ["55P03"] = true, ["40P01"] = true, ["40001"] = true }

local pgconn = require "runbook.pg._conn"

local function need(fname, opts, field, kind)
  if type(opts[field]) ~= kind then
    error(string.format("%s: %s must be a %s", fname, field, kind), 3)
  end
end

local function qualified(db, name)
  local out = {}
  for part in name:gmatch("[^.]+") do out[#out + 1] = db:ident(part) end
  return table.concat(out, ".")
end

local function is_null(v) return v == nil or v == pgconn.null end

local function duration(s)
  if s == nil or s ~= s or s == math.huge then return "?" end
  s = math.floor(s + 0.5)
  if s < 60 then return s .. "s" end
  if s < 3600 then return string.format("%dm%02ds", s // 60, s % 60) end
  return string.format("%dh%02dm", s // 3600, (s % 3600) // 60)
end

-- progress: done of total (keys or rows), rows per second and ETA
local function reporter(total, label)
  local t0 = host.monotime()
  return function(done, rows)
    local el = host.monotime() - t0
    local rate = el > 0 and rows / el or 0
    local eta = total and done > 0 and math.max(total - done, 0) * el / done or nil
    audit.progress(done, total, string.format("%s: %d rows, %.0f rows/s, ETA %s", label, rows, rate, eta and duration(eta) or "?"))
  end
end

local function ensure_checkpoints(db, cpt)
  if db:value("SELECT to_regclass($1) IS NOT NULL", cpt) then return end
  db:query("CREATE TABLE IF NOT EXISTS " .. cpt .. [[ (
    name text PRIMARY KEY,
    cursor text,
    rows bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    done boolean NOT NULL DEFAULT false,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now())]])
end

local function save_sql(cpt)
  return "INSERT INTO " .. cpt .. [[ AS c (name, cursor, rows, batches, done) VALUES ($1, $2, $3, 1, $4)
    ON CONFLICT (name) DO UPDATE SET cursor = EXCLUDED.cursor, rows = c.rows + EXCLUDED.rows,
    batches = c.batches + 1, done = EXCLUDED.done, updated_at = now()]]
end

-- the cursor to start from: the target's checkpoint row, compared with
-- the journal's mirror when a run is going
local function start_state(db, cpt, name, restart, jkey)
  if restart then db:query("DELETE FROM " .. cpt .. " WHERE name = $1", name) end
  local row = db:query_one("SELECT cursor, rows, batches, done FROM " .. cpt .. " WHERE name = $1", name)
  local ctx = audit.current()
  local mirrored = ctx and ctx:cursor(jkey)
  local cursor = row and not is_null(row.cursor) and row.cursor or nil
  if mirrored and type(mirrored) == "table" and mirrored.cursor ~= cursor then
    audit.log("info", string.format("%s: the journal's cursor (%s) differs from the database's (%s); going on from the database's",
      name, tostring(mirrored.cursor), tostring(cursor)))
  end
  return row, cursor
end

local function mirror(jkey, cursor, rows, batches, done)
  local ctx = audit.current()
  if ctx and not audit.dry_run() then
    ctx:checkpoint(jkey, { cursor = cursor, rows = rows, batches = batches, done = done })
  end
end

-- a kill between the last batch's commit and its journal mirror leaves the
-- journal one batch behind a finished checkpoint row: the resume that finds
-- the row done records the final mirror, so the journal ends where the
-- database does
local function catch_up_mirror(jkey, row)
  local ctx = audit.current()
  if not ctx or audit.dry_run() then return end
  local m = ctx:cursor(jkey)
  local cursor = not is_null(row.cursor) and row.cursor or nil
  if type(m) ~= "table" or m.done ~= true or m.cursor ~= cursor then
    mirror(jkey, cursor, row.rows, row.batches, true)
  end
end

-- nothing is left after the cursor: the checkpoint row says so, in the
-- target database and in the journal's mirror
local function close_checkpoint(db, cpt, name, cursor, jkey, rows, batches)
  db:query("INSERT INTO " .. cpt .. [[ (name, cursor, done) VALUES ($1, $2, true)
    ON CONFLICT (name) DO UPDATE SET done = true, updated_at = now()]], name, cursor)
  mirror(jkey, cursor, rows, batches, true)
end

-- runs body(attempt) retrying transient errors with backoff
local function with_retries(label, retries, body)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local ok, err = pcall(body)
    if ok then return end
    if not (errors.is(err, "pg") and TRANSIENT[err.code]) or attempt > retries then error(err, 0) end
    local delay = math.min(0.1 * 2 ^ (attempt - 1), 5)
    audit.log("warn", string.format("%s: %s; retrying the batch in %.1f s (%d/%d)", label, errors.message(err), delay, attempt, retries))
    host.sleep(delay)
  end
end

-- a connection given by the caller is used as is; a URL is opened here
local function open(v, what)
  if v == nil then error(what .. " required", 3) end
  if pgconn.is_conn(v) then return v, false end
  return pgconn._open(v, { application_name = "runbook backfill" }), true
end

-- runs fn inside a transaction that is always rolled back (for --dry-run)
local ROLLBACK = setmetatable({}, { __tostring = function() return "dry-run rollback" end })
local function rolled_back(db, fn)
  local ok, err = pcall(db.tx, db, function() fn() error(ROLLBACK, 0) end)
  if not ok and err ~= ROLLBACK then error(err, 0) end
end

-- ---------------------------------------------------------------------------
-- in place

--- Updates a table in place in batches of key ranges. Each batch's UPDATE
--- and its cursor commit together; a rerun after a crash goes on after
--- the last committed batch, and a finished backfill is not run again.
---@param opts {url:string|userdata|nil, conn:runbook.pg.Conn|nil, table:string, key:string|nil, set:string, where:string|nil, batch:integer|nil, throttle:number|nil, max_lock_ms:integer|nil, statement_timeout:number|nil, name:string|nil, restart:boolean|nil, retries:integer|nil, count:boolean|nil, checkpoint_table:string|nil}
---@return {name:string, rows:integer, batches:integer, done:boolean, already_done:boolean, seconds:number, rows_per_second:number}
function M.backfill(opts)
  if type(opts) ~= "table" then error("pg.backfill: options table expected", 2) end
  need("pg.backfill", opts, "table", "string")
  need("pg.backfill", opts, "set", "string")
  local key = opts.key or "id"
  local batch = opts.batch or 10000
  if math.type(batch) ~= "integer" or batch < 1 then error("pg.backfill: batch must be a positive integer", 2) end
  local name = opts.name or (opts.table .. ":" .. crypto.sha256(opts.set .. "\0" .. (opts.where or "")):sub(1, 12))
  local jkey = "pg.backfill:" .. name
  local db, own = open(opts.conn or opts.url, "pg.backfill: url")
  local ok, res = pcall(function()
    local t, k = qualified(db, opts.table), db:ident(key)
    local cpt = qualified(db, opts.checkpoint_table or M.CHECKPOINT_TABLE)
    local filter = opts.where and (" AND (" .. opts.where .. ")") or ""
    local dry = audit.dry_run()
    if not dry then ensure_checkpoints(db, cpt) end
    local row, cursor
    if dry and not db:value("SELECT to_regclass($1) IS NOT NULL", cpt) then
      row, cursor = nil, nil
    else
      row, cursor = start_state(db, cpt, name, opts.restart and not dry, jkey)
    end
    local out = { name = name, rows = 0, batches = 0, done = false, already_done = false }
    if row and row.done then
      out.rows, out.batches, out.done, out.already_done = row.rows, row.batches, true, true
      audit.log("info", string.format("%s: already complete (%d rows in %d batches)", name, row.rows, row.batches))
      catch_up_mirror(jkey, row)
      return out
    end
    -- statements are built by concatenation: set and where are the
    -- caller's SQL and may hold '%'
    local function after() return cursor and (" WHERE " .. k .. " > $1") or "" end
    local function args(...) if cursor then return cursor, ... end return ... end
    local remaining = opts.count ~= false and db:value("SELECT count(*) FROM " .. t .. after(), args()) or nil
    -- the batch's upper key, and whether it is the last batch
    local function upper()
      local rows = db:query("SELECT " .. k .. " AS k FROM " .. t .. after() .. " ORDER BY " .. k
        .. " OFFSET " .. (batch - 1) .. " LIMIT 2", args())
      if rows[2] then return rows[1].k, false end
      if rows[1] then return rows[1].k, true end
      return db:value("SELECT max(" .. k .. ") FROM " .. t .. after(), args()), true
    end
    local function update(hi)
      local lo = cursor and (k .. " > $1 AND ") or ""
      local _, info = db:query("UPDATE " .. t .. " SET " .. opts.set .. " WHERE " .. lo .. k .. " <= $"
        .. (cursor and 2 or 1) .. filter, args(hi))
      return info.affected or 0
    end
    local save = save_sql(cpt)

    if dry then
      -- the first batch runs and is rolled back, so a wrong SET fails here
      local hi = upper()
      if not is_null(hi) then
        rolled_back(db, function() out.first_batch_rows = update(hi) end)
      end
      local batches = remaining and math.ceil(remaining / batch) or nil
      out.planned_batches, out.remaining, out.dry_run = batches, remaining, true
      audit.action {
        kind = "backfill", verb = "update", table = opts.table, name = name, cursor = cursor,
        remaining = remaining, batch = batch, planned_batches = batches,
        summary = string.format("would update %s in %s batches of %d keys from %s (%s keys left)",
          opts.table, tostring(batches or "?"), batch, cursor and ("after " .. tostring(cursor)) or "the start",
          tostring(remaining or "?")),
      }
      return out
    end

    local report = reporter(remaining, opts.table)
    local keys_done = 0
    local total_rows, total_batches = row and row.rows or 0, row and row.batches or 0
    local t0 = host.monotime()
    while true do
      local hi, last = upper()
      if is_null(hi) then
        -- nothing after the cursor: close the backfill
        close_checkpoint(db, cpt, name, cursor, jkey, total_rows, total_batches)
        break
      end
      local n = 0
      with_retries(opts.table, opts.retries or 5, function()
        db:tx(function()
          if opts.max_lock_ms then db:query("SET LOCAL lock_timeout = " .. math.floor(opts.max_lock_ms)) end
          if opts.statement_timeout then
            db:query("SET LOCAL statement_timeout = " .. math.floor(opts.statement_timeout * 1000))
          end
          n = update(hi)
          db:query(save, name, tostring(hi), n, last)
        end)
      end)
      cursor = tostring(hi)
      total_rows, total_batches = total_rows + n, total_batches + 1
      out.rows, out.batches = out.rows + n, out.batches + 1
      keys_done = last and (remaining or keys_done) or keys_done + batch
      mirror(jkey, cursor, total_rows, total_batches, last)
      report(keys_done, out.rows)
      if last then break end
      if (opts.throttle or 0) > 0 then host.sleep(opts.throttle / 1000) end
    end
    out.done = true
    out.seconds = host.monotime() - t0
    out.rows_per_second = out.seconds > 0 and out.rows / out.seconds or 0
    audit.action {
      kind = "backfill", verb = "update", table = opts.table, name = name, rows = out.rows,
      batches = out.batches, total_rows = total_rows, ms = math.floor(out.seconds * 1000 + 0.5),
      summary = string.format("backfilled %s: %d rows in %d batches (%.0f rows/s)", opts.table, out.rows, out.batches, out.rows_per_second),
    }
    return out
  end)
  if own then db:close() end
  if not ok then error(res, 0) end
  return res
end

-- ---------------------------------------------------------------------------
-- between databases

-- First OID of user-defined objects: below it, types are built in and have
-- the same OID and binary form in every database of a server version.
local FIRST_USER_OID = 16384

-- COPY's binary format skips text formatting and parsing on both servers
-- (much faster for timestamps and numerics) but needs every column to
-- have exactly the same built-in type on both sides; "auto" checks that.
local function binary_ok(choice, shape, cols, dst, target)
  if choice == "text" then return false end
  local src_type = {}
  for i, f in ipairs(shape.fields) do src_type[f] = shape.types[i] end
  local dst_type = {}
  for _, r in ipairs(dst:query([[SELECT attname, atttypid::int8 AS oid FROM pg_attribute
    WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped]], target)) do
    dst_type[r.attname] = r.oid
  end
  local same = true
  for _, c in ipairs(cols) do
    local t = src_type[c]
    if not t or t ~= dst_type[c] or t >= FIRST_USER_OID then same = false end
  end
  if choice == "binary" and not same then
    errors.raise { kind = "backfill", code = "format",
      message = "pg.copy_rows: format binary needs the same built-in column types on both sides" }
  end
  return same
end

--- Copies rows from one database into a table of another with COPY,
--- streamed, in batches of key ranges; each batch and its cursor commit
--- together in the target.
---@param opts {from:string|userdata|runbook.pg.Conn, to:string|userdata|runbook.pg.Conn, table:string|nil, query:string|nil, key:string|nil, batch:integer|nil, target_table:string|nil, columns:string[]|nil, name:string|nil, restart:boolean|nil, throttle:number|nil, count:boolean|nil, checkpoint_table:string|nil, format:"auto"|"text"|"binary"|nil}
---@return {name:string, rows:integer, batches:integer, bytes:integer, done:boolean, already_done:boolean, seconds:number, rows_per_second:number, format:string}
function M.copy_rows(opts)
  if type(opts) ~= "table" then error("pg.copy_rows: options table expected", 2) end
  if opts.table == nil and opts.query == nil then error("pg.copy_rows: table or query required", 2) end
  if opts.table ~= nil and opts.query ~= nil then error("pg.copy_rows: give table or query, not both", 2) end
  local target_name = opts.target_table or opts.table
  if type(target_name) ~= "string" then error("pg.copy_rows: target_table required with query", 2) end
  if opts.format ~= nil and opts.format ~= "auto" and opts.format ~= "text" and opts.format ~= "binary" then
    error("pg.copy_rows: format must be auto, text or binary", 2)
  end
  local key = opts.key or "id"
  local batch = opts.batch or 50000
  if math.type(batch) ~= "integer" or batch < 1 then error("pg.copy_rows: batch must be a positive integer", 2) end
  local src, own_src = open(opts.from, "pg.copy_rows: from")
  local dst, own_dst = nil, false
  local ok, res = pcall(function()
    dst, own_dst = open(opts.to, "pg.copy_rows: to")
    local q = opts.query or ("SELECT * FROM " .. qualified(src, opts.table))
    local name = opts.name or ("copy:" .. target_name .. ":" .. crypto.sha256(q):sub(1, 12))
    local jkey = "pg.backfill:" .. name
    local k = src:ident(key)
    local _, shape = src:query("SELECT * FROM (" .. q .. ") s LIMIT 0")
    local cols = opts.columns or shape.fields
    local qcols = {}
    for i, c in ipairs(cols) do qcols[i] = src:ident(c) end
    local collist = table.concat(qcols, ", ")
    local target = qualified(dst, target_name)
    local format = binary_ok(opts.format, shape, cols, dst, target) and "binary" or "text"
    local with = format == "binary" and " WITH (FORMAT binary)" or ""
    local cpt = qualified(dst, opts.checkpoint_table or M.CHECKPOINT_TABLE)
    local dry = audit.dry_run()
    if not dry then ensure_checkpoints(dst, cpt) end
    local row, cursor
    if dry and not dst:value("SELECT to_regclass($1) IS NOT NULL", cpt) then
      row, cursor = nil, nil
    else
      row, cursor = start_state(dst, cpt, name, opts.restart and not dry, jkey)
    end
    local out = { name = name, rows = 0, batches = 0, bytes = 0, done = false, already_done = false, format = format }
    if row and row.done then
      out.rows, out.batches, out.done, out.already_done = row.rows, row.batches, true, true
      audit.log("info", string.format("%s: already complete (%d rows in %d batches)", name, row.rows, row.batches))
      catch_up_mirror(jkey, row)
      return out
    end
    local from = "(" .. q .. ") s"
    local function after() return cursor and (" WHERE " .. k .. " > " .. src:literal(cursor)) or "" end
    local remaining = opts.count ~= false and src:value("SELECT count(*) FROM " .. from .. after()) or nil
    local in_sql = "COPY " .. target .. " (" .. collist .. ") FROM STDIN" .. with
    local function out_sql(hi)
      local lo = cursor and (k .. " > " .. src:literal(cursor) .. " AND ") or ""
      return "COPY (SELECT " .. collist .. " FROM " .. from .. " WHERE " .. lo .. k .. " <= " .. src:literal(tostring(hi)) .. ") TO STDOUT" .. with
    end
    local function upper()
      local rows = src:query("SELECT " .. k .. " AS k FROM " .. from .. after() .. " ORDER BY " .. k
        .. " OFFSET " .. (batch - 1) .. " LIMIT 2")
      if rows[2] then return rows[1].k, false end
      if rows[1] then return rows[1].k, true end
      return src:value("SELECT max(" .. k .. ") FROM " .. from .. after()), true
    end

    if dry then
      local hi = upper()
      local n = 0
      if not is_null(hi) then
        rolled_back(dst, function() n = pgconn.copy(src, out_sql(hi), dst, in_sql) end)
      end
      local batches = remaining and math.ceil(remaining / batch) or nil
      out.planned_batches, out.remaining, out.dry_run, out.first_batch_rows = batches, remaining, true, n
      audit.action {
        kind = "backfill", verb = "copy", target = target_name, name = name, cursor = cursor,
        remaining = remaining, batch = batch, planned_batches = batches,
        summary = string.format("would copy %s rows into %s in %s batches of %d from %s",
          tostring(remaining or "?"), target_name, tostring(batches or "?"), batch,
          cursor and ("after " .. tostring(cursor)) or "the start"),
      }
      return out
    end

    local report = reporter(remaining, target_name)
    local save = save_sql(cpt)
    local total_rows, total_batches = row and row.rows or 0, row and row.batches or 0
    local t0 = host.monotime()
    while true do
      local hi, last = upper()
      if is_null(hi) then
        close_checkpoint(dst, cpt, name, cursor, jkey, total_rows, total_batches)
        break
      end
      local n, bytes
      dst:tx(function()
        n, bytes = pgconn.copy(src, out_sql(hi), dst, in_sql)
        dst:query(save, name, tostring(hi), n, last)
      end)
      cursor = tostring(hi)
      total_rows, total_batches = total_rows + n, total_batches + 1
      out.rows, out.batches, out.bytes = out.rows + n, out.batches + 1, out.bytes + bytes
      mirror(jkey, cursor, total_rows, total_batches, last)
      report(out.rows, out.rows)
      if last then break end
      if (opts.throttle or 0) > 0 then host.sleep(opts.throttle / 1000) end
    end
    out.done = true
    out.seconds = host.monotime() - t0
    out.rows_per_second = out.seconds > 0 and out.rows / out.seconds or 0
    audit.action {
      kind = "backfill", verb = "copy", target = target_name, name = name, rows = out.rows, bytes = out.bytes,
      batches = out.batches, total_rows = total_rows, ms = math.floor(out.seconds * 1000 + 0.5),
      summary = string.format("copied %d rows into %s in %d batches (%.0f rows/s)", out.rows, target_name, out.batches, out.rows_per_second),
    }
    return out
  end)
  if own_dst and dst then dst:close() end
  if own_src then src:close() end
  if not ok then error(res, 0) end
  return res
end

return M
