-- Backups with pg_dump -Fc streamed straight into a writer (no temporary
-- file), hashed on the way, recorded with size and sha256; a check with
-- pg_restore --list (or, for a plain SQL dump, its header and trailer);
-- restore into a database with pg_restore or psql (the restore drill); and
-- retention by age under a prefix. Destinations are writers and stores
-- (runbook.pg._store): a local directory now, object storage through the
-- same interface.
--
-- The password never appears in argv (where `ps` would show it): the
-- tools get a connection string without it and PGPASSWORD in their
-- environment.
local core = require "runbook._pg"
local proc = require "runbook._proc"
local host = require "runbook._host"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local storemod = require "runbook.pg._store"
local pgconn = require "runbook.pg._conn"

local M = {}

local CHUNK = 1048576

-- conninfo without the password, and the environment that carries it
local function tool_target(url)
  if url == nil then error("url required", 4) end
  local o, err = core.conninfo_parse(url)
  if not o then error(err, 0) end
  local env = {}
  if o.password then env.PGPASSWORD = o.password end
  return pgconn.conninfo_text(o, { password = true }), env, o.dbname or o.user or "postgres"
end

local function mb(n) return string.format("%.1f MB", n / 1048576) end

-- the line of a tool's output that says what went wrong: its first
-- "error:" line (pg_restore follows it with the failing SQL), else the last
local function error_line(s)
  local last
  for line in tostring(s or ""):gmatch("[^\n]+") do
    if line:match("error: ") then return line end
    if not line:match("^%s*$") then last = line end
  end
  return last or ""
end

local function default_name(prefix, db)
  return (prefix or "") .. db .. "-" .. os.date("!%Y%m%dT%H%M%SZ") .. ".dump"
end

local function check(fname, opts)
  if type(opts) ~= "table" then error(fname .. ": options table expected", 3) end
  return opts
end

-- ---------------------------------------------------------------------------
-- backup

--- Streams `pg_dump -Fc` of a database into a writer: opts.to (any
--- writer), or opts.store with opts.name (default
--- "<prefix><db>-<UTC time>.dump"), or opts.path (a local file). Records
--- an action with size and sha256. A failed dump aborts the writer, so
--- nothing is left that looks like a complete backup.
---@param opts {url:string|userdata, to:runbook.pg.Writer|nil, store:runbook.pg.Store|nil, name:string|nil, prefix:string|nil, path:string|nil, args:string[]|nil, pg_dump:string|nil}
---@return {location:string, size:integer, sha256:string, name:string|nil, database:string, seconds:number}
function M.backup(opts)
  check("pg.backup", opts)
  local target, env, db = tool_target(opts.url)
  local name, location
  if opts.to then
    location = opts.to.location or "(writer)"
  elseif opts.store then
    name = opts.name or default_name(opts.prefix, db)
    location = opts.store:location(name)
  elseif opts.path then
    location = opts.path
  else
    error("pg.backup: give to (a writer), store (with name or prefix) or path", 2)
  end
  local argv = { opts.pg_dump or "pg_dump", "--format=custom", "--no-password", "--dbname=" .. target }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end

  if audit.dry_run() then
    audit.log("info", string.format("dry run: would stream pg_dump -Fc of %s to %s", db, location))
    audit.action { kind = "backup", verb = "pg_dump", database = db, location = location,
      summary = string.format("would back up %s to %s", db, location) }
    return { dry_run = true, location = location, name = name, database = db }
  end

  local t0 = host.monotime()
  local p, perr = proc.spawn { argv = argv, env = env, stdin = "null", stdout = "pipe", stderr = "pipe" }
  if not p then errors.raisef("backup", "spawn", "cannot run %s: %s", argv[1], perr) end
  local w = opts.to or (opts.store and opts.store:writer(name)) or storemod.file_writer(opts.path)
  local bytes, next_report = 0, 0
  local ok, err = pcall(function()
    while true do
      local chunk = p:read(CHUNK)
      if chunk == nil then break end
      if #chunk > 0 then
        w:write(chunk)
        bytes = bytes + #chunk
        if bytes >= next_report then
          local el = host.monotime() - t0
          audit.progress(bytes, nil, string.format("%s of %s, %s/s", mb(bytes), db, mb(el > 0 and bytes / el or 0)))
          next_report = bytes + 16 * CHUNK
        end
      end
    end
  end)
  if not ok then
    w:abort()
    p:kill("TERM", true)
    p:communicate { timeout = 10 }
    error(err, 0)
  end
  local r = p:communicate { timeout = 60 }
  if r.code ~= 0 then
    w:abort()
    if r.interrupted then host.check_interrupt() end
    errors.raisef("backup", "pg_dump", "pg_dump of %s failed (%s): %s; nothing was kept at %s", db,
      r.code and ("exit " .. r.code) or ("signal " .. tostring(r.signal)), host.scrub(error_line(r.stderr)), location)
  end
  local res = w:finish()
  local secs = host.monotime() - t0
  res.name, res.database, res.seconds = name, db, secs
  audit.action {
    kind = "backup", verb = "pg_dump", database = db, location = res.location, size = res.size,
    sha256 = res.sha256, ms = math.floor(secs * 1000 + 0.5),
    summary = string.format("backed up %s to %s: %s, sha256 %s…", db, res.location, mb(res.size), res.sha256:sub(1, 12)),
  }
  return res
end

-- ---------------------------------------------------------------------------
-- reading a backup into a tool

-- Runs a pg_restore command on a backup: the file path when the store has
-- one, else the object streamed into its stdin. stdout and stderr are
-- merged and drained between chunks so the tool never blocks on output
-- while we block on its input. Returns the communicate result and, when
-- hashing, the sha256 of what was streamed.
local function hash_file(path)
  local f, err = io.open(path, "rb")
  if not f then errors.raisef("backup", "not-found", "cannot open %s: %s", path, err) end
  local h = core.hasher()
  while true do
    local chunk = f:read(CHUNK)
    if not chunk then break end
    h:update(chunk)
  end
  f:close()
  return h:hex()
end

local function run_on_backup(argv, env, opts, want_hash, opened)
  local path = opts.path or (opts.store and opts.store.path and opts.store:path(opts.name))
  if path then
    if opened then opened:close() end
    local sha = want_hash and hash_file(path) or nil
    argv[#argv + 1] = path
    local p, err = proc.spawn { argv = argv, env = env, stdin = "null", stdout = "pipe", stderr = "stdout" }
    if not p then errors.raisef("backup", "spawn", "cannot run %s: %s", argv[1], err) end
    return p:communicate {}, sha
  end
  local reader = opened or opts.store:open(opts.name)
  local hasher = want_hash and core.hasher() or nil
  local p, err = proc.spawn { argv = argv, env = env, stdin = "pipe", stdout = "pipe", stderr = "stdout" }
  if not p then
    reader:close()
    errors.raisef("backup", "spawn", "cannot run %s: %s", argv[1], err)
  end
  local out = {}
  local ok, e = pcall(function()
    local feeding = true
    while true do
      local chunk = reader:read(65536)
      if chunk == nil then break end
      if hasher then hasher:update(chunk) end
      if feeding then
        -- a tool that has read all it needs (pg_restore --list stops after
        -- the table of contents) closes its input: its exit code says how
        -- it went, and the rest is only read for the hash
        feeding = p:write(chunk) ~= nil
        local o = p:read(65536, 0)
        while o and #o > 0 do
          out[#out + 1] = o
          o = p:read(65536, 0)
        end
        if not feeding and not hasher then break end
      end
    end
  end)
  reader:close()
  if not ok then
    p:kill("TERM", true)
    p:communicate { timeout = 10 }
    error(e, 0)
  end
  local r = p:communicate {}
  r.stdout = table.concat(out) .. (r.stdout or "")
  return r, hasher and hasher:hex()
end

local function source_of(fname, opts)
  check(fname, opts)
  if opts.path then return opts.path end
  if not (opts.store and opts.name) then error(fname .. ": give path, or store and name", 3) end
  return opts.store:location(opts.name)
end

-- ---------------------------------------------------------------------------
-- the two formats: pg_dump -Fc (custom) and plain SQL (pg_dump > backup.sql)

local function open_reader(opts)
  local path = opts.path or (opts.store and opts.store.path and opts.store:path(opts.name))
  if not path then return opts.store:open(opts.name) end
  local f, err = io.open(path, "rb")
  if not f then errors.raisef("backup", "not-found", "cannot open %s: %s", path, err) end
  return { read = function(_, n) return f:read(n) end, close = function() f:close() end }
end

-- "custom" (the archive's magic "PGDMP"), "plain" (text), or an error for
-- anything else (a tar-format dump, a compressed file, garbage with NULs).
-- Also returns the backup opened, its first bytes read again first, so that
-- an object in a bucket is not fetched twice; the caller closes it.
local function detect(opts, location)
  local r = open_reader(opts)
  local parts, n = {}, 0
  local ok, err = pcall(function()
    while n < 512 do
      local chunk = r:read(512 - n)
      if chunk == nil or chunk == "" then break end
      parts[#parts + 1], n = chunk, n + #chunk
    end
  end)
  if not ok then
    r:close()
    error(err, 0)
  end
  local head = table.concat(parts)
  local format = head:sub(1, 5) == "PGDMP" and "custom"
    or (head ~= "" and not head:find("[%z\1-\8\14-\31]") and "plain") or nil
  if not format then
    r:close()
    errors.raisef("backup", "invalid", "%s is neither a pg_dump custom-format archive (it would start with PGDMP) nor a plain SQL dump%s",
      location, head == "" and " (it is empty)" or head:sub(1, 2) == "\31\139" and " (it is gzip-compressed: gunzip it first)" or "")
  end
  local pending = head
  return format, {
    read = function(_, max)
      if pending then
        local h = pending
        pending = nil
        return h
      end
      return r:read(max)
    end,
    close = function() r:close() end,
  }
end

--- The format of a backup from its first bytes: "custom" or "plain".
---@param opts {path:string|nil, store:runbook.pg.Store|nil, name:string|nil}
---@return "custom"|"plain"
function M.format(opts)
  local format, reader = detect(opts, source_of("pg.backup_format", opts))
  reader:close()
  return format
end

-- Reads a plain dump line by line: `line(l)` sees each line outside COPY
-- data (a COPY ... FROM stdin; line, then its rows up to \. pass as they
-- are) and returns false to leave it out. Returns a function of
-- a chunk giving what to keep (and of nil at the end: the remainder).
local function line_filter(line)
  local rest, in_copy = "", false
  return function(chunk)
    if chunk == nil then
      local last = rest
      rest = ""
      if last ~= "" and not in_copy and line(last) == false then return "" end
      return last
    end
    rest = rest .. chunk
    local out, start = {}, 1
    while true do
      local nl = rest:find("\n", start, true)
      if not nl then break end
      local l = rest:sub(start, nl - 1)
      local keep = true
      if in_copy then
        if l == "\\." then in_copy = false end
      else
        keep = line(l) ~= false
        in_copy = l:match("^COPY .* FROM stdin;$") ~= nil
      end
      if keep then out[#out + 1] = rest:sub(start, nl) end
      start = nl + 1
    end
    rest = rest:sub(start)
    return table.concat(out)
  end
end

local PLAIN_HEADER = "-- PostgreSQL database dump"
local PLAIN_TRAILER = "-- PostgreSQL database dump complete"

-- A plain dump is pg_dump's when it says so in its first lines, whole when
-- it ends with pg_dump's trailer; its tables are its CREATE TABLE
-- statements, their data its COPY blocks.
local function verify_plain(opts, location, r)
  local h = core.hasher()
  local res = { entries = 0, tables = 0, table_data = 0, location = location, format = "PLAIN" }
  local first, complete = {}, false
  local filter = line_filter(function(l)
    if #first < 8 then first[#first + 1] = l end
    if l:match("^CREATE TABLE ") then res.tables = res.tables + 1 end
    if l:match("^%u") then res.entries = res.entries + 1 end -- a statement starts
    if l:match("^COPY .* FROM stdin;$") then res.table_data = res.table_data + 1 end
    complete = complete or l == PLAIN_TRAILER
    local db = l:match("^\\connect %-reuse%-previous=on \"dbname='(.-)'\"") or l:match("^\\connect (%S+)")
    if db then res.database = db end
  end)
  local ok, err = pcall(function()
    while true do
      local chunk = r:read(CHUNK)
      if chunk == nil then break end
      h:update(chunk)
      filter(chunk)
    end
    filter(nil)
  end)
  r:close()
  if not ok then error(err, 0) end
  local header = false
  for _, l in ipairs(first) do header = header or l == PLAIN_HEADER end
  if not header then
    errors.raisef("backup", "invalid", "%s is neither a pg_dump custom-format archive nor a plain pg_dump: it starts with neither \"PGDMP\" nor \"%s\"",
      location, PLAIN_HEADER)
  end
  if not complete then
    errors.raisef("backup", "invalid", "%s is cut short: a plain pg_dump ends with \"%s\"", location, PLAIN_TRAILER)
  end
  return res, h:hex()
end

--- Checks a backup. A custom-format archive (its first bytes "PGDMP") must
--- be read by `pg_restore --list`; a plain SQL dump must start with
--- pg_dump's header and end with its "dump complete" line. With
--- opts.sha256, the bytes must also hash to it. Returns what it holds.
---@param opts {path:string|nil, store:runbook.pg.Store|nil, name:string|nil, sha256:string|nil, pg_restore:string|nil}
---@return {entries:integer, tables:integer, table_data:integer, database:string|nil, format:string, location:string, sha256:string|nil}
function M.verify(opts)
  local location = source_of("pg.verify_backup", opts)
  local res, sha
  local format, reader = detect(opts, location)
  if format == "plain" then
    res, sha = verify_plain(opts, location, reader)
    if not opts.sha256 then sha = nil end
  else
    local r
    r, sha = run_on_backup({ opts.pg_restore or "pg_restore", "--list" }, nil, opts, opts.sha256 ~= nil, reader)
    if r.code ~= 0 then
      errors.raisef("backup", "invalid", "%s is not a readable pg_dump archive: %s", location, error_line(r.stdout))
    end
    res = { entries = 0, tables = 0, table_data = 0, location = location }
    local listed
    for line in r.stdout:gmatch("[^\n]+") do
      local db = line:match("^;%s+dbname: (.+)$")
      if db then res.database = db end
      listed = listed or line:match("^;%s+Format: (%u+)")
      if line:match("^%d+;") then
        res.entries = res.entries + 1
        if line:match("^%d+; %d+ %d+ TABLE DATA ") then
          res.table_data = res.table_data + 1
        elseif line:match("^%d+; %d+ %d+ TABLE ") then
          res.tables = res.tables + 1
        end
      end
    end
    -- an empty database lists no entries, but every archive has its header
    if not listed then
      errors.raisef("backup", "invalid", "%s is not a readable pg_dump archive: pg_restore --list printed no header", location)
    end
    res.format = listed
  end
  res.sha256 = sha
  if opts.sha256 and sha ~= opts.sha256 then
    errors.raisef("backup", "checksum", "%s has sha256 %s, expected %s: the backup was altered or damaged", location, sha, opts.sha256)
  end
  audit.action {
    kind = "backup", verb = "verify", location = location, format = res.format, entries = res.entries, tables = res.tables, sha256 = sha,
    summary = string.format("verified %s (%s): %d entries, %d tables%s", location, res.format:lower(), res.entries, res.tables,
      sha and ", sha256 matches" or ""),
  }
  return res
end

-- psql's reason for stopping: its first ERROR line, else the last line
local function psql_error(s)
  local last
  for line in tostring(s or ""):gmatch("[^\n]+") do
    if line:match("ERROR: ") or line:match("FATAL: ") or line:match("^psql: error: ") then return line end
    if not line:match("^%s*$") then last = line end
  end
  return last or ""
end

-- A plain dump streamed into psql's stdin, as `psql < backup.sql` would
-- run it, but stopping at the first error; without its ALTER ... OWNER TO
-- statements unless no_owner is false (pg_restore --no-owner's
-- counterpart). Query output goes nowhere; errors and notices are kept.
local function restore_plain(opts, target, env, reader)
  local argv = { opts.psql or "psql", "--no-password", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
    "--output=/dev/null", "--dbname=" .. target }
  if opts.single_transaction then argv[#argv + 1] = "--single-transaction" end
  local skipped = 0
  local filter = line_filter(function(l)
    if opts.no_owner ~= false and l:match("^ALTER [%u ]+ .+ OWNER TO .+;$") then
      skipped = skipped + 1
      return false
    end
  end)
  local p, err = proc.spawn { argv = argv, env = env, stdin = "pipe", stdout = "pipe", stderr = "stdout" }
  if not p then
    reader:close()
    errors.raisef("backup", "spawn", "cannot run %s: %s", argv[1], err)
  end
  local out = {}
  local function drain()
    local o = p:read(65536, 0)
    while o and #o > 0 do
      out[#out + 1] = o
      o = p:read(65536, 0)
    end
  end
  local ok, e = pcall(function()
    while true do
      local chunk = reader:read(CHUNK)
      local data = filter(chunk)
      -- psql stopped (ON_ERROR_STOP): its exit code and output say why
      if #data > 0 and p:write(data) == nil then break end
      drain()
      if chunk == nil then break end
    end
  end)
  reader:close()
  if not ok then
    p:kill("TERM", true)
    p:communicate { timeout = 10 }
    error(e, 0)
  end
  local r = p:communicate {}
  r.stdout = table.concat(out) .. (r.stdout or "")
  r.skipped = skipped
  return r
end

--- Restores a backup into a database (the restore drill), by its format
--- (pg.backup_format): a custom-format archive with pg_restore, a plain SQL
--- dump with psql. By default objects are restored without owners, and the
--- first error stops it; clean drops existing objects first (custom only:
--- a plain dump runs as it was written).
---@param opts {url:string|userdata, path:string|nil, store:runbook.pg.Store|nil, name:string|nil, clean:boolean|nil, no_owner:boolean|nil, jobs:integer|nil, single_transaction:boolean|nil, args:string[]|nil, pg_restore:string|nil, psql:string|nil}
---@return {location:string, database:string, seconds:number, format:string, owner_statements_skipped:integer|nil}
function M.restore(opts)
  local location = source_of("pg.restore", opts)
  local target, env, db = tool_target(opts.url)
  if audit.dry_run() then
    audit.action { kind = "backup", verb = "restore", database = db, location = location,
      summary = string.format("would restore %s into %s", location, db) }
    return { dry_run = true, location = location, database = db }
  end
  local format, reader = detect(opts, location)
  local t0 = host.monotime()
  local r, tool
  if format == "plain" then
    tool = opts.psql or "psql"
    r = restore_plain(opts, target, env, reader)
  else
    tool = opts.pg_restore or "pg_restore"
    local argv = { tool, "--no-password", "--exit-on-error", "--dbname=" .. target }
    if opts.clean then argv[#argv + 1] = "--clean" argv[#argv + 1] = "--if-exists" end
    if opts.no_owner ~= false then argv[#argv + 1] = "--no-owner" end
    if opts.single_transaction then argv[#argv + 1] = "--single-transaction" end
    if opts.jobs then argv[#argv + 1] = "--jobs=" .. math.floor(opts.jobs) end
    for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
    r = run_on_backup(argv, env, opts, false, reader)
  end
  if r.interrupted then host.check_interrupt() end
  if r.code ~= 0 then
    errors.raisef("backup", tool:match("[^/]*$"), "restore of %s into %s failed (%s): %s", location, db,
      r.code and ("exit " .. r.code) or ("signal " .. tostring(r.signal)),
      host.scrub(format == "plain" and psql_error(r.stdout) or error_line(r.stdout)))
  end
  local secs = host.monotime() - t0
  audit.action {
    kind = "backup", verb = "restore", database = db, location = location, format = format, tool = tool:match("[^/]*$"),
    owner_statements_skipped = r.skipped, ms = math.floor(secs * 1000 + 0.5),
    summary = string.format("restored %s into %s (%.1f s)", location, db, secs),
  }
  return { location = location, database = db, seconds = secs, format = format, owner_statements_skipped = r.skipped }
end

-- ---------------------------------------------------------------------------
-- retention

--- Deletes the backups under prefix older than keep_days (by modification
--- time), never the newest keep_min (default 1) of them. On object storage
--- it also aborts the unfinished uploads under the store's prefix started
--- more than abandon_after seconds ago (default a day): what a backup
--- killed mid-upload left, invisible as an object but billed.
---@param opts {store:runbook.pg.Store, prefix:string|nil, keep_days:number, keep_min:integer|nil, now:number|nil, abandon_after:number|nil}
---@return {deleted:string[], kept:string[], aborted:string[]}
function M.retention(opts)
  check("pg.retention", opts)
  if not opts.store then error("pg.retention: store required", 2) end
  if type(opts.keep_days) ~= "number" or opts.keep_days < 0 then error("pg.retention: keep_days must be a number >= 0", 2) end
  local keep_min = opts.keep_min or 1
  local now = opts.now or host.now()
  local cutoff = now - opts.keep_days * 86400
  local objs = opts.store:list(opts.prefix or "")
  table.sort(objs, function(a, b) return a.mtime > b.mtime end) -- newest first
  local newest = {}
  for i = 1, math.min(keep_min, #objs) do newest[objs[i].name] = true end
  table.sort(objs, function(a, b) return a.mtime < b.mtime end) -- delete oldest first
  local out = { deleted = {}, kept = {} }
  local dry = audit.dry_run()
  for _, o in ipairs(objs) do
    if not newest[o.name] and o.mtime < cutoff then
      if not dry then opts.store:delete(o.name) end
      out.deleted[#out.deleted + 1] = o.name
      audit.action {
        kind = "backup", verb = "delete", location = opts.store:location(o.name), size = o.size,
        age_days = math.floor((now - o.mtime) / 86400),
        summary = string.format("%s %s (%d days old)", dry and "would delete" or "deleted",
          opts.store:location(o.name), math.floor((now - o.mtime) / 86400)),
      }
    else
      out.kept[#out.kept + 1] = o.name
    end
  end
  table.sort(out.deleted)
  table.sort(out.kept)
  out.aborted = {}
  if opts.store.stale_uploads then
    local before = now - (opts.abandon_after or 86400)
    for _, u in ipairs(opts.store:stale_uploads(before)) do
      if not dry then opts.store:abort_upload(u) end
      out.aborted[#out.aborted + 1] = u.name
      local hours = math.floor((now - u.initiated) / 3600)
      audit.action {
        kind = "backup", verb = "abort-upload", location = opts.store:location(u.name), age_hours = hours,
        summary = string.format("%s the unfinished upload of %s (started %d hours ago)",
          dry and "would abort" or "aborted", opts.store:location(u.name), hours),
      }
    end
    table.sort(out.aborted)
  end
  return out
end

return M
