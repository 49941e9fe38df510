-- Migrations in dbmate's format and ledger, so dbmate and runbook can take
-- turns on one database: files `VERSION_name.sql` with `-- migrate:up` and
-- `-- migrate:down` sections (`transaction:false` honoured), applied in
-- file-name order, each recorded in `schema_migrations(version)`, created
-- exactly as dbmate creates it.
--
-- Beyond dbmate: a session advisory lock so two runners never migrate one
-- database at once; each migration and its ledger row commit in one
-- transaction; a sha256 of every applied file, kept in the journal action
-- and in a side table `runbook_migration_checksums` next to the ledger, so
-- an applied file edited later is reported (the side table travels with
-- the database, whoever runs the next migration and from which run);
-- `status`; `down` to a version; a --dry-run that applies the pending
-- migrations inside one transaction and rolls it back.
local fs = require "runbook._fs"
local crypto = require "runbook._crypto"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local sqlsplit = require "runbook.pg._sqlsplit"
local pgconn = require "runbook.pg._conn"

local M = {}

M.CHECKSUM_TABLE = "runbook_migration_checksums"

-- ---------------------------------------------------------------------------
-- files

-- a directive line: "-- migrate:up" or "-- migrate:down", optionally
-- followed by whitespace and options (dbmate's (\s*$|\s+\S+))
local function directive(line)
  local kind, rest = line:match("^%-%-%s*migrate:(%a+)(.*)$")
  if (kind == "up" or kind == "down") and (rest == "" or rest:match("^%s")) then
    return kind, rest
  end
  return nil
end

local function options_of(rest)
  local o = {}
  for pair in rest:gmatch("%S+") do
    local k, v = pair:match("^([^:]+):([^:]*)$")
    if k then o[k] = v end
  end
  return o
end

--- Parses a migration file's text. Returns {up=, down=, up_line=,
--- down_line=, up_tx=, down_tx=} or raises naming the file.
---@param text string
---@param file string  the name used in messages
function M.parse(text, file)
  local lines = {}
  local pos = 1
  while pos <= #text do
    local nl = text:find("\n", pos, true)
    local stop = nl or #text + 1
    lines[#lines + 1] = { start = pos, text = text:sub(pos, stop - 1):gsub("\r$", "") }
    pos = stop + 1
  end
  local up, down, ups, downs = nil, nil, 0, 0
  for i, l in ipairs(lines) do
    local kind, rest = directive(l.text)
    if kind == "up" then
      ups = ups + 1
      up = up or { line = i, start = l.start, opts = options_of(rest) }
    elseif kind == "down" then
      downs = downs + 1
      down = down or { line = i, start = l.start, opts = options_of(rest) }
    end
  end
  if not up then
    errors.raisef("migration", "malformed", "%s: no '-- migrate:up' section; nothing was applied", file)
  end
  for i = 1, up.line - 1 do
    local t = lines[i].text
    if not (t:match("^%s*$") or t:match("^%s*%-%-")) then
      errors.raisef("migration", "malformed", "%s: line %d: statements before '-- migrate:up' (dbmate refuses them too); nothing was applied", file, i)
    end
  end
  if ups > 1 or downs > 1 then
    errors.raisef("migration", "malformed", "%s: more than one '-- migrate:up' or '-- migrate:down' section; dbmate would record the version twice. Split it into separate files; nothing was applied", file)
  end
  if not down then
    errors.raisef("migration", "malformed", "%s: no '-- migrate:down' section (dbmate requires one; leave it empty if there is nothing to undo); nothing was applied", file)
  end
  if down.start < up.start then
    errors.raisef("migration", "malformed", "%s: '-- migrate:down' comes before '-- migrate:up'; nothing was applied", file)
  end
  return {
    up = text:sub(up.start, down.start - 1), up_line = up.line, up_tx = up.opts.transaction ~= "false",
    down = text:sub(down.start), down_line = down.line, down_tx = down.opts.transaction ~= "false",
  }
end

--- The migration files of dir in the order dbmate applies them.
---@return {file:string, path:string, version:string}[]
function M.files(dir)
  local names, err = fs.listdir(dir)
  if not names then errors.raisef("migration", "no-directory", "cannot read migrations directory %s: %s", dir, (tostring(err):gsub("^.*: ", ""))) end
  local out = {}
  for _, name in ipairs(names) do
    local version = name:match("^(%d+).*%.sql$")
    local st = version and fs.stat(dir .. "/" .. name)
    if st and st.type == "file" then
      out[#out + 1] = { file = name, path = dir .. "/" .. name, version = version }
    end
  end
  table.sort(out, function(a, b) return a.file < b.file end)
  return out
end

local function read_file(m)
  if m.text then return m.text end
  local f, err = io.open(m.path, "rb")
  if not f then errors.raisef("migration", "unreadable", "%s: %s", m.file, err) end
  m.text = f:read("a")
  f:close()
  m.sha256 = crypto.sha256(m.text)
  return m.text
end

-- ---------------------------------------------------------------------------
-- the ledger

local function connect(opts)
  if opts.conn then return opts.conn, false end
  return pgconn._open(opts.url, { connect_timeout = opts.connect_timeout, application_name = "runbook migrate" }), true
end

-- schema and table of the ledger, quoted, as dbmate resolves them:
-- "schema.table" when given, otherwise current_schema()
local function ledger_names(db, tname)
  local schema, name = tname:match("^([^.]+)%.(.+)$")
  if not schema then
    name = tname
    schema = db:value("SELECT current_schema()")
    if schema == nil or schema == pgconn.null then schema = "public" end
  end
  return {
    schema = schema,
    ledger = db:ident(schema) .. "." .. db:ident(name),
    sums = db:ident(schema) .. "." .. db:ident(M.CHECKSUM_TABLE),
    raw = schema .. "." .. name,
  }
end

local function exists(db, qualified)
  return db:value("SELECT to_regclass($1) IS NOT NULL", qualified) == true
end

local function ensure_tables(db, names)
  -- checked first so a normal run logs no "already exists, skipping" notices
  if not exists(db, names.ledger) then
    db:query("CREATE TABLE IF NOT EXISTS " .. names.ledger .. " (version varchar primary key)")
  end
  if exists(db, names.sums) then return end
  db:query("CREATE TABLE IF NOT EXISTS " .. names.sums .. [[ (
    version varchar PRIMARY KEY,
    filename text NOT NULL,
    sha256 char(64) NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text,
    run_id text)]])
end

-- {version = true} and {version = {sha256, filename}}
local function read_ledger(db, names)
  local applied, sums = {}, {}
  if exists(db, names.ledger) then
    for _, r in ipairs(db:query("SELECT version FROM " .. names.ledger)) do applied[r.version] = true end
    if exists(db, names.sums) then
      for _, r in ipairs(db:query("SELECT version, filename, sha256 FROM " .. names.sums)) do
        if applied[r.version] then sums[r.version] = r end
      end
    end
  end
  return applied, sums
end

-- a 60-bit key per ledger table, so runners of different ledgers do not
-- wait on each other
local function lock_key(names)
  return math.tointeger(tonumber(crypto.sha256("runbook.pg._migrate\0" .. names.raw):sub(1, 15), 16))
end

local function lock(db, names, opts)
  local key = lock_key(names)
  local timeout = opts.lock_timeout or 600
  local t0 = host.monotime()
  local told = false
  while not db:value("SELECT pg_try_advisory_lock($1)", key) do
    if not told then
      local h = db:query_one([[SELECT a.pid, a.application_name, a.client_addr::text AS addr FROM pg_locks l
        JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted
        AND ((l.classid::bigint << 32) | l.objid::bigint) = $1]], key)
      audit.log("info", string.format("waiting for the migration lock on %s (held by backend pid %s, %s)",
        db:info().database, h and tostring(h.pid) or "?", h and tostring(h.application_name) or "?"))
      told = true
    end
    if host.monotime() - t0 > timeout then
      errors.raise { kind = "migration", code = "55P03",
        message = string.format("another runner has held the migration lock on %s for %d s; giving up (lock_timeout)",
          db:info().database, timeout) }
    end
    host.sleep(0.2)
  end
  return key
end

local function unlock(db, key)
  if key and not db:is_closed() then pcall(db._query, db, "SELECT pg_advisory_unlock($1)", key) end
end

-- ---------------------------------------------------------------------------
-- status

local function changed_list(files, applied, sums)
  local changed = {}
  for _, m in ipairs(files) do
    if applied[m.version] then
      read_file(m)
      local rec = sums[m.version]
      m.recorded_sha256 = rec and rec.sha256 or nil
      if rec and rec.sha256 ~= m.sha256 then
        changed[#changed + 1] = { version = m.version, file = m.file, recorded_sha256 = rec.sha256, sha256 = m.sha256 }
      end
    end
  end
  return changed
end

local function report_changed(changed, on_changed)
  for _, c in ipairs(changed) do
    local msg = string.format("%s was edited after it was applied (sha256 when applied %s…, now %s…); the database did not change: write a new migration instead",
      c.file, c.recorded_sha256:sub(1, 12), c.sha256:sub(1, 12))
    if on_changed == "error" then errors.raisef("migration", "changed", "%s", msg) end
    audit.log("warn", msg)
  end
end

local function check_common(fname, opts)
  if type(opts) ~= "table" then error(fname .. ": options table expected", 3) end
  if opts.url == nil and opts.conn == nil then error(fname .. ": url required", 3) end
  opts.dir = opts.dir or "db/migrations"
  opts.table = opts.table or "schema_migrations"
  return opts
end

--- Lists migration files and which are applied, with checksums.
---@param opts {url:string|userdata|nil, conn:runbook.pg.Conn|nil, dir:string|nil, table:string|nil}
---@return {migrations:table[], applied:integer, pending:integer, changed:table[], missing:string[]}
function M.status(opts)
  opts = check_common("pg.migration_status", opts)
  local files = M.files(opts.dir)
  local db, own = connect(opts)
  local ok, res = pcall(function()
    local names = ledger_names(db, opts.table)
    local applied, sums = read_ledger(db, names)
    local changed = changed_list(files, applied, sums)
    local changed_set = {}
    for _, c in ipairs(changed) do changed_set[c.version] = true end
    local out = { migrations = {}, applied = 0, pending = 0, changed = changed, missing = {} }
    local seen = {}
    for _, m in ipairs(files) do
      seen[m.version] = true
      local a = applied[m.version] == true
      out.migrations[#out.migrations + 1] = {
        version = m.version, file = m.file, applied = a, sha256 = m.sha256 or crypto.sha256(read_file(m)),
        recorded_sha256 = m.recorded_sha256, changed = changed_set[m.version] == true,
      }
      if a then out.applied = out.applied + 1 else out.pending = out.pending + 1 end
    end
    for v in pairs(applied) do
      if not seen[v] then out.missing[#out.missing + 1] = v end
    end
    table.sort(out.missing)
    return out
  end)
  if own then db:close() end
  if not ok then error(res, 0) end
  return res
end

-- ---------------------------------------------------------------------------
-- applying

local function line_of(text, position)
  local byte = utf8.offset(text, position) or position
  local n = 0
  for _ in text:sub(1, byte - 1):gmatch("\n") do n = n + 1 end
  return n
end

-- Runs one section. A transactional section runs statement by statement
-- (inside the caller's transaction), so a failure names its statement even
-- when the server gives no position; a transaction:false section goes as
-- one query, as dbmate sends it. Returns nil, or the error and the line
-- (in the file) it points at, when known.
local function run_section(db, section, first_line, tx)
  local stmts, whole = sqlsplit.split(section)
  if tx and not whole then
    for _, s in ipairs(stmts) do
      local ok, err = db:_exec(s.sql)
      if not ok then
        local pos = type(err.details) == "table" and err.details.position
        return err, first_line + (pos and (s.line + line_of(s.sql, pos)) or s.content_line)
      end
    end
    return nil
  end
  local ok, err = db:_exec(section)
  if ok then return nil end
  local pos = type(err.details) == "table" and err.details.position
  if pos then return err, first_line + line_of(section, pos) end
  if #stmts == 1 then return err, first_line + stmts[1].content_line end
  return err, nil
end

-- the message for a migration whose SQL failed
local function failure(m, err, line, tx)
  local where = line and string.format(" at line %d", line) or ""
  local tail = tx and "nothing was recorded, fix the file and run the same command again"
    or "the version was not recorded; it ran outside a transaction (transaction:false), so statements before the failing one may have taken effect: check them, fix the file and run the same command again"
  return errors.new {
    kind = "migration", code = err.code, details = err.details,
    message = string.format("%s failed%s: %s; %s", m.file, where, errors.message(err), tail),
  }
end

-- runs a plain statement of ours; returns nil or the error
local function run_sql(db, sql)
  local ok, err = db:_exec(sql)
  if ok then return nil end
  return err
end

local function record(db, names, m, who)
  db:query("INSERT INTO " .. names.ledger .. " (version) VALUES ($1)", m.version)
  db:query("INSERT INTO " .. names.sums .. [[ (version, filename, sha256, applied_by, run_id)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO UPDATE SET filename = EXCLUDED.filename,
    sha256 = EXCLUDED.sha256, applied_at = now(), applied_by = EXCLUDED.applied_by, run_id = EXCLUDED.run_id]],
    m.version, m.file, m.sha256, who.by, who.run)
end

local function who()
  local ctx = audit.current()
  return { by = host.user() .. "@" .. host.hostname(), run = ctx and ctx.run_id or nil }
end

-- runs one section; returns nil or the error
local function run_sql(db, sql)
  local ok, err = db:_exec(sql)
  if ok then return nil end
  return err
end

--- Applies the pending migrations of dir, in file-name order.
---@param opts {url:string|userdata|nil, conn:runbook.pg.Conn|nil, dir:string|nil, table:string|nil, lock_timeout:number|nil, on_changed:"warn"|"error"|nil, strict:boolean|nil}
---@return {applied:table[], already:integer, changed:table[], dry_run:boolean, would_apply:table[]|nil}
function M.migrate(opts)
  opts = check_common("pg.migrate", opts)
  local files = M.files(opts.dir)
  -- as dbmate: an empty folder is more likely a wrong path than nothing to do
  if #files == 0 then errors.raisef("migration", "no-files", "no migration files (VERSION_name.sql) in %s", opts.dir) end
  for _, m in ipairs(files) do m.parsed = M.parse(read_file(m), m.file) end
  local dry = audit.dry_run()
  local db, own = connect(opts)
  local key
  local ok, res = pcall(function()
    local names = ledger_names(db, opts.table)
    key = lock(db, names, opts)
    local applied, sums = read_ledger(db, names)
    report_changed(changed_list(files, applied, sums), opts.on_changed)
    local pending, highest = {}, nil
    for _, m in ipairs(files) do
      if applied[m.version] then
        if not highest or m.version > highest then highest = m.version end
      else
        pending[#pending + 1] = m
      end
    end
    if opts.strict and pending[1] and highest and pending[1].version <= highest then
      errors.raisef("migration", "out-of-order", "%s is older than the applied migration %s (strict mode); nothing was applied", pending[1].file, highest)
    end
    local out = { applied = {}, already = #files - #pending, changed = {}, dry_run = dry }
    if dry then return M._dry_run(db, names, pending, out) end
    local w = who()
    ensure_tables(db, names)
    for i, m in ipairs(pending) do
      audit.progress(i - 1, #pending, m.file)
      local t0 = host.monotime()
      local p = m.parsed
      if p.up_tx then
        local err = run_sql(db, "BEGIN")
        if err then error(err, 0) end
        local line
        err, line = run_section(db, p.up, p.up_line, true)
        if err then
          db:_exec("ROLLBACK")
          error(failure(m, err, line, true), 0)
        end
        record(db, names, m, w)
        err = run_sql(db, "COMMIT")
        if err then error(failure(m, err, nil, true), 0) end
      else
        local err, line = run_section(db, p.up, p.up_line, false)
        if err then error(failure(m, err, line, false), 0) end
        db:tx(function() record(db, names, m, w) end)
      end
      local ms = math.floor((host.monotime() - t0) * 1000 + 0.5)
      local entry = { version = m.version, file = m.file, sha256 = m.sha256, ms = ms, transaction = p.up_tx }
      out.applied[#out.applied + 1] = entry
      audit.action {
        kind = "migration", verb = "up", database = db:info().database, ledger = names.raw,
        version = m.version, file = m.file, sha256 = m.sha256, ms = ms, transaction = p.up_tx,
        summary = string.format("applied %s (%d ms)", m.file, ms),
      }
    end
    audit.progress(#pending, #pending, nil)
    return out
  end)
  if not ok and db:is_closed() == false and db:status() ~= "idle" then pcall(db._exec, db, "ROLLBACK") end
  unlock(db, key)
  if own then db:close() end
  if not ok then error(res, 0) end
  return res
end

-- --dry-run: the pending migrations run in one transaction that is rolled
-- back, up to the first transaction:false one (which cannot run inside it)
function M._dry_run(db, names, pending, out)
  out.would_apply = {}
  local err = run_sql(db, "BEGIN")
  if err then error(err, 0) end
  local ok, res = pcall(function()
    ensure_tables(db, names)
    local tried = true
    for _, m in ipairs(pending) do
      local p = m.parsed
      local note
      if tried and not p.up_tx then tried = false end
      if tried then
        local e, line = run_section(db, p.up, p.up_line, true)
        if e then error(failure(m, e, line, true), 0) end
        record(db, names, m, who())
        note = "ran inside a transaction that was rolled back"
      else
        note = "not tried: transaction:false migrations, and those after one, cannot run inside the dry-run transaction"
      end
      out.would_apply[#out.would_apply + 1] = { version = m.version, file = m.file, sha256 = m.sha256, note = note }
      audit.action {
        kind = "migration", verb = "up", database = db:info().database, version = m.version, file = m.file,
        sha256 = m.sha256, summary = string.format("would apply %s (%s)", m.file, note),
      }
    end
    return out
  end)
  db:_exec("ROLLBACK")
  if not ok then error(res, 0) end
  return res
end

--- Rolls back applied migrations, newest (by file name) first: down to
--- (and keeping) version `to`, or the last `steps` (default 1, as
--- `dbmate rollback`). Each down section and the removal of its ledger row
--- commit together.
---@param opts {url:string|userdata|nil, conn:runbook.pg.Conn|nil, dir:string|nil, table:string|nil, to:string|nil, steps:integer|nil, lock_timeout:number|nil}
---@return {rolled_back:table[], dry_run:boolean}
function M.down(opts)
  opts = check_common("pg.migrate_down", opts)
  if opts.to ~= nil and type(opts.to) ~= "string" then error("pg.migrate_down: to must be a version string", 2) end
  local files = M.files(opts.dir)
  local by_version = {}
  for _, m in ipairs(files) do by_version[m.version] = m end
  local dry = audit.dry_run()
  local db, own = connect(opts)
  local key
  local ok, res = pcall(function()
    local names = ledger_names(db, opts.table)
    key = lock(db, names, opts)
    local applied = read_ledger(db, names)
    local versions = {}
    for v in pairs(applied) do versions[#versions + 1] = v end
    -- newest first, in the order of the files (as dbmate picks "latest")
    table.sort(versions, function(a, b)
      local fa, fb = by_version[a], by_version[b]
      return (fa and fa.file or a) > (fb and fb.file or b)
    end)
    local chosen = {}
    for _, v in ipairs(versions) do
      if opts.to ~= nil then
        if v > opts.to or opts.to == "" or opts.to == "0" then chosen[#chosen + 1] = v end
      elseif #chosen < (opts.steps or 1) then
        chosen[#chosen + 1] = v
      end
    end
    for _, v in ipairs(chosen) do
      local m = by_version[v]
      if not m then
        errors.raisef("migration", "missing-file", "version %s is applied but no file in %s has it, so its down section is unknown; nothing was rolled back", v, opts.dir)
      end
      m.parsed = M.parse(read_file(m), m.file)
    end
    local out = { rolled_back = {}, dry_run = dry }
    if dry then run_sql(db, "BEGIN") end
    local tried = true
    for i, v in ipairs(chosen) do
      local m = by_version[v]
      local p = m.parsed
      audit.progress(i - 1, #chosen, m.file)
      if dry and not p.down_tx then tried = false end
      if not tried then
        local note = "not tried: transaction:false sections, and those after one, cannot run inside the dry-run transaction"
        out.rolled_back[#out.rolled_back + 1] = { version = v, file = m.file, note = note }
        audit.action { kind = "migration", verb = "down", database = db:info().database, version = v, file = m.file,
          sha256 = m.sha256, summary = string.format("would roll back %s (%s)", m.file, note) }
      else
        if not p.down:find("[^%s]", (p.down:find("\n") or #p.down) + 1) then
          audit.log("warn", m.file .. ": the down section is empty; only the ledger row is removed")
        end
        local t0 = host.monotime()
        local function body()
          local e, line = run_section(db, p.down, p.down_line, p.down_tx)
          if e then error(failure(m, e, line, p.down_tx), 0) end
          db:query("DELETE FROM " .. names.ledger .. " WHERE version = $1", v)
          if exists(db, names.sums) then db:query("DELETE FROM " .. names.sums .. " WHERE version = $1", v) end
        end
        if dry or not p.down_tx then
          body()
        else
          db:tx(body)
        end
        local ms = math.floor((host.monotime() - t0) * 1000 + 0.5)
        out.rolled_back[#out.rolled_back + 1] = { version = v, file = m.file, ms = ms }
        audit.action {
          kind = "migration", verb = "down", database = db:info().database, version = v, file = m.file,
          sha256 = m.sha256, ms = ms,
          summary = string.format("%s %s (%d ms)", dry and "would roll back" or "rolled back", m.file, ms),
        }
      end
    end
    if dry then run_sql(db, "ROLLBACK") end
    return out
  end)
  if not ok and db:is_closed() == false and db:status() ~= "idle" then pcall(db._exec, db, "ROLLBACK") end
  unlock(db, key)
  if own then db:close() end
  if not ok then error(res, 0) end
  return res
end

return M
