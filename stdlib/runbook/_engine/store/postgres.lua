-- The PostgreSQL store (--state postgres://...): the shared store of a
-- team. It implements the operations runbook._engine.store names, over
-- these tables (created and upgraded by the tool; see docs/journal.md):
--
--   runbook_schema  the schema's version
--   runbook_runs    one row a run: its runbook, who started it, and the
--                   tip anchor (last_seq, last_hash), updated in the same
--                   statement as each insert, so deleted rows are caught
--   runbook_events  (run, seq, type, step, body, prev, hash, hmac), UNIQUE
--                   (run, seq); body is the exact line the file store writes
--   runbook_locks   who holds a run's (or a runbook's) advisory lock
--   runbook_log     the run logs' lines
--
-- A run's lock is a session advisory lock held by the driving exec's
-- session for as long as the run is open (the session that appends: when
-- it ends, the lock goes with it); a runbook's lock the same while a run
-- is chosen. Appends are committed with synchronous_commit on before they
-- return. The key that seals secret memos stays with each operator
-- (RUNBOOK_SECRET_KEY or a key file), never in the database.
local pgconn = require "runbook.pg._conn"
local jcore = require "runbook._journal"
local json = require "runbook._json"
local fs = require "runbook._fs"
local host = require "runbook._host"
local crypto = require "runbook._crypto"
local secret = require "runbook._secret"
local errors = require "runbook.errors"
local state = require "runbook._engine.state"

local M = {}

--- The schema this binary writes; a store with a newer one is refused,
--- an older one is upgraded (UPGRADES) by the first command that opens it.
M.SCHEMA_VERSION = 2

local GENESIS = string.rep("0", 64)
local LOCK_RUN, LOCK_BOOK = 1380073473, 1380073474 -- advisory lock classes ("RB" 1, 2)

local Store = {}
Store.__index = Store

local function raise(code, fmt, ...)
  errors.raise { kind = "store", code = code, message = string.format(fmt, ...) }
end

local function storemod() return require "runbook._engine.store" end

local function pg_message(err)
  if type(err) == "table" then return tostring(err.message or err.code) end
  return tostring(err)
end

-- Runs one statement; raises a store error naming the store on failure.
local function q(self, conn, sql, ...)
  local rows, info = conn:_query(sql, ...)
  if not rows then
    raise("io", "the PostgreSQL store %s: %s", self.location_text, pg_message(info))
  end
  return rows, info
end

-- A session of its own (the store's, or a lock's). The store's session
-- sets synchronous_commit in its first query (ensure_schema), so an
-- append is durable before the engine moves on, whatever the server's
-- default; a lock's session writes nothing that needs it.
local function connect(self)
  local ok, c = pcall(pgconn._open, self.url, { connect_timeout = 10, application_name = "runbook" })
  if not ok then
    raise("unreachable", "cannot reach the PostgreSQL store %s: %s", self.location_text, pg_message(c))
  end
  return c
end

local SCHEMA_V1 = [[
CREATE TABLE IF NOT EXISTS runbook_schema (
  version integer NOT NULL,
  by_runbook text NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS runbook_runs (
  id text PRIMARY KEY,
  runbook text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  created_by text NOT NULL,
  last_seq bigint NOT NULL DEFAULT 0,
  last_hash text NOT NULL DEFAULT ']] .. GENESIS .. [[',
  last_type text,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS runbook_runs_runbook ON runbook_runs (runbook, created_at);
CREATE TABLE IF NOT EXISTS runbook_events (
  run text NOT NULL REFERENCES runbook_runs (id),
  seq bigint NOT NULL,
  type text NOT NULL,
  step text,
  body text NOT NULL,
  prev text NOT NULL,
  hash text NOT NULL,
  hmac text,
  UNIQUE (run, seq)
);
CREATE UNLOGGED TABLE IF NOT EXISTS runbook_locks (
  name text PRIMARY KEY,
  holder text NOT NULL,
  backend integer NOT NULL,
  since timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS runbook_log (
  run text NOT NULL,
  n bigserial,
  line text NOT NULL,
  PRIMARY KEY (run, n)
);
]]

-- From version N - 1 to N, applied in order in one transaction.
local UPGRADES = {
  -- the tip's HMAC (with the run's audit key, where it has one), so the
  -- tip cannot be moved back over deleted events without the key
  [2] = { "ALTER TABLE runbook_runs ADD COLUMN IF NOT EXISTS last_hmac text" },
}

-- Creates the schema, or upgrades it, or checks that this binary can use
-- the one there.
local function ensure_schema(self, conn)
  local function version()
    -- (with the session's synchronous_commit = on: one round trip for both)
    local rows, info = conn:_query("SELECT set_config('synchronous_commit', 'on', false) AS sc, max(version) AS v FROM runbook_schema")
    if not rows then
      if type(info) == "table" and info.code == "42P01" then return nil end -- no such table
      raise("io", "the PostgreSQL store %s: %s", self.location_text, pg_message(info))
    end
    return math.tointeger(rows[1].v)
  end
  local v = version()
  if v == nil or v < M.SCHEMA_VERSION then
    if v == nil then q(self, conn, "SET synchronous_commit = on") end
    -- made or upgraded once, under a lock, so two first users do not race
    q(self, conn, "BEGIN")
    local ok, err = pcall(function()
      q(self, conn, "SELECT pg_advisory_xact_lock($1, 0)", LOCK_BOOK)
      -- (not version(): an error would end this transaction)
      local have
      if q(self, conn, "SELECT to_regclass('runbook_schema') IS NOT NULL AS present")[1].present then
        have = math.tointeger(q(self, conn, "SELECT max(version) AS v FROM runbook_schema")[1].v) or 0
      else
        for stmt in SCHEMA_V1:gmatch("[^;]+") do
          if stmt:match("%S") then q(self, conn, stmt) end
        end
        have = 1
      end
      if have >= M.SCHEMA_VERSION then return end
      for n = have + 1, M.SCHEMA_VERSION do
        for _, stmt in ipairs(UPGRADES[n] or {}) do
          local rows, info = conn:_query(stmt)
          if not rows then
            raise("schema", "the PostgreSQL store %s has schema version %d and this runbook (%s) needs version %d, but cannot upgrade it as this user: %s. Run any runbook command on it once as the owner of its tables",
              self.location_text, n - 1, host.version(), M.SCHEMA_VERSION, pg_message(info))
          end
        end
      end
      q(self, conn, "INSERT INTO runbook_schema (version, by_runbook) VALUES ($1, $2)", M.SCHEMA_VERSION, host.version())
    end)
    if not ok then
      conn:_exec("ROLLBACK")
      error(err, 0)
    end
    q(self, conn, "COMMIT")
    v = version()
  end
  if v and v > M.SCHEMA_VERSION then
    raise("schema", "the PostgreSQL store %s has schema version %d, newer than this runbook (%s) understands (version %d): upgrade runbook to use it",
      self.location_text, v, host.version(), M.SCHEMA_VERSION)
  end
end

--- Opens the store at url (creating its schema when it has none).
function M.open(url, _create)
  local self = setmetatable({ url = url, location = url, kind = "postgres",
    location_text = storemod().redacted(url), prepared = {} }, Store)
  self.conn = connect(self)
  ensure_schema(self, self.conn)
  return self
end

function Store:close()
  if self.conn then self.conn:close() self.conn = nil end
end

function Store:describe() return self.location_text end

-- ---------------------------------------------------------------------------
-- locks

local function holder_text()
  return string.format("pid %d on %s (user %s)", host.pid(), host.hostname(), host.user())
end

local Lock = {}
Lock.__index = Lock
function Lock:release()
  if not self.conn then return end
  if self.shared then
    -- on the store's own session: let go of it explicitly
    pcall(self.conn._query, self.conn, "SELECT pg_advisory_unlock($1, hashtext($2))", self.class, self.name)
  else
    self.conn:close() -- ends the session: the lock goes with it
  end
  self.conn = nil
end
Lock.__close = Lock.release
Lock.__gc = Lock.release

-- Takes the advisory lock (class, name) on a session of its own and
-- records who holds it; raises kind "store" code "locked" naming the
-- holder when another session has it.
local function take_lock(self, class, name, what, shared)
  local conn = shared and self.conn or connect(self)
  local lock = setmetatable({ conn = conn, shared = shared, class = class, name = name }, Lock)
  local holder
  local t0 = host.monotime()
  repeat
    -- the lock and the holder's row in one statement (the table is
    -- unlogged: a holder row is worth no WAL flush)
    local _, info = q(self, conn, [[INSERT INTO runbook_locks (name, holder, backend)
      SELECT $2, $3, pg_backend_pid() WHERE pg_try_advisory_lock($1, hashtext($2))
      ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, backend = excluded.backend, since = now()]],
      class, name, holder_text())
    if info.affected == 1 then return lock end
    -- the holder writes its row just after taking the lock; a holder that
    -- let go meanwhile leaves the lock free to try again
    local h = q(self, conn, [[SELECT l.holder FROM runbook_locks l JOIN pg_locks p
        ON p.locktype = 'advisory' AND p.pid = l.backend AND p.granted
       AND p.classid::bigint = ($1::bigint & 4294967295) AND p.objid::bigint = (hashtext($2)::bigint & 4294967295)
      WHERE l.name = $2]], class, name)
    holder = h[1] and h[1].holder
    if not holder then host.sleep(0.02) end
  until holder or host.monotime() - t0 > 10
  lock:release()
  errors.raise { kind = "store", code = "locked", message = string.format("%s is locked by %s", what, holder or "another session (who is not recorded)"),
    details = { holder = holder } }
end

--- The lock held while a run of runbook `name` is found or made.
function Store:choose(name)
  return take_lock(self, LOCK_BOOK, "book:" .. name, "runbook " .. name .. " (another exec is choosing its run)", true)
end

-- ---------------------------------------------------------------------------
-- runs

local function text_or_nil(v)
  if v == nil or v == pgconn.null then return nil end
  return v
end

--- The tip's HMAC with the run's audit key: the file store's tip record
--- MACs the same text (docs/journal.md, "The tip anchor").
function M.tip_mac(key, run, seq, hash)
  return crypto.hmac_sha256(key, string.format("runbook-tip 1 %s %d %s", run, seq, hash))
end

local function run_row(self, id)
  local rows = q(self, self.conn, "SELECT id, runbook, last_seq, last_hash, last_hmac, last_type FROM runbook_runs WHERE id = $1", id)
  return rows[1]
end

function Store:list()
  local rows = q(self, self.conn, "SELECT id FROM runbook_runs ORDER BY created_at, id")
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.id end
  return out
end

function Store:new_id(name)
  for _ = 1, 10 do
    local id = storemod().run_id(name)
    if not run_row(self, id) then return id end
  end
  raise("io", "cannot find a free run id")
end

function Store:resolve(ref)
  if ref == nil or ref == "last" or ref == "latest" then
    local rows = q(self, self.conn, "SELECT id FROM runbook_runs ORDER BY updated_at DESC, id DESC LIMIT 1")
    if not rows[1] then raise("not-found", "no runs in %s", self.location_text) end
    return rows[1].id
  end
  local exact = run_row(self, ref)
  if exact then return exact.id end
  local rows = q(self, self.conn, "SELECT id FROM runbook_runs WHERE starts_with(id, $1) ORDER BY id LIMIT 10", ref)
  if #rows == 1 then return rows[1].id end
  if #rows == 0 then raise("not-found", "no run '%s' in %s (see `runbook runs`)", ref, self.location_text) end
  local found = {}
  for i, r in ipairs(rows) do found[i] = r.id end
  raise("ambiguous", "run '%s' is ambiguous: %s", ref, table.concat(found, ", "))
end

--- A stamp that changes whenever the run moves on, or nil when there is
--- no such run (an edit behind runbook's back is seen by a fresh read).
function Store:stamp(id)
  local r = run_row(self, id)
  return r and (tostring(r.last_seq) .. ":" .. r.last_hash) or nil
end

function Store:anchor(id)
  local r = run_row(self, id)
  if not r then return nil, "missing" end
  return { seq = math.tointeger(r.last_seq), hash = r.last_hash, hmac = text_or_nil(r.last_hmac), verified = true }
end

local function damage(info, text)
  info.damaged = true
  info.damage = info.damage or text
end

-- A run's tip and every line of it in one value, in seq order, each
-- ending in its newline (the journal core checks and folds it in C,
-- jcore.scan_text, as it does the file store's journal): one statement,
-- so one snapshot holds the tip and the lines alike.
local TIP_AND_LINES = [[SELECT r.last_seq, r.last_hash, r.last_hmac,
  (SELECT string_agg(e.body || E'\n', '' ORDER BY e.seq) FROM runbook_events e WHERE e.run = r.id) AS text
  FROM runbook_runs r WHERE r.id = $1]]

-- The first row whose seq is not its place: a deleted row (seq 4 where
-- 3 belongs) shows here before the chain check says so its own way.
local SEQ_GAP = [[SELECT n, seq FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS n
  FROM runbook_events WHERE run = $1) x WHERE seq <> n ORDER BY n LIMIT 1]]

-- An HMAC-protected run read without the key: the chain of hashes is
-- followed line by line in Lua with the HMACs left out (the journal core
-- stops at a line whose HMAC it cannot check).
local function read_unkeyed(self, id, mode, mark_seq)
  local rows = q(self, self.conn, "SELECT seq, body FROM runbook_events WHERE run = $1 ORDER BY seq", id)
  local items, info = {}, { count = 0, hmac = true, last_hash = GENESIS, mark_hash = mark_seq == 0 and GENESIS or nil }
  local prev = GENESIS
  for i, row in ipairs(rows) do
    local hash, why
    if math.tointeger(row.seq) ~= i then
      why = string.format("expected seq %d, found seq %d (an event was deleted or reordered)", i, math.tointeger(row.seq))
    else
      hash, why = jcore.check_line(row.body:gsub('","hmac":"%x+"}$', '"}'), i, prev, false)
    end
    if not hash then
      info.bad_seq, info.reason = i, why
      break
    end
    if mode == "lines" then
      items[i] = row.body
    elseif mode == "events" or mode == "fold" then
      items[i] = json.decode(row.body)
    end
    prev = hash
    info.count = i
    if i == mark_seq then info.mark_hash = hash end
  end
  info.last_hash = prev
  return items, info
end

--- Reads a run's events as the file store does (same modes, same info
--- fields), each line verified by the journal core, and checked against
--- the runs row.
function Store:read(id, mode)
  mode = mode or "events"
  local key = storemod().audit_key()
  local r = q(self, self.conn, TIP_AND_LINES, id)[1]
  if not r then raise("not-found", "no run '%s' in %s", id, self.location_text) end
  local tip = { seq = math.tointeger(r.last_seq), hash = r.last_hash, hmac = text_or_nil(r.last_hmac) }
  local text = text_or_nil(r.text) or ""
  local items, info
  if not key and text:match("^[^\n]*"):find('","hmac":"%x+"}$') then
    items, info = read_unkeyed(self, id, mode, tip.seq)
  else
    items, info = jcore.scan_text(text, key, mode, tip.seq)
    if info.bad_seq then
      local gap = q(self, self.conn, SEQ_GAP, id)[1]
      if gap and math.tointeger(gap.n) <= info.bad_seq then
        info.bad_seq, info.count = math.tointeger(gap.n), math.tointeger(gap.n) - 1
        info.reason = string.format("expected seq %d, found seq %d (an event was deleted or reordered)", info.bad_seq, math.tointeger(gap.seq))
      end
    end
  end
  local mark_hash = info.mark_hash
  if info.hmac and not key then
    info.needs_key = true
    info.unreadable = "it is HMAC-protected: set RUNBOOK_AUDIT_KEY to read it"
  end
  if (mode == "events" or mode == "fold") and not info.needs_key then
    local seq, why = state.check(items, info.at)
    if seq and not (info.bad_seq and info.bad_seq <= seq) then
      info.bad_seq, info.reason = seq, why
      info.unreadable = "the journal is damaged at seq " .. seq .. " (" .. why .. ")"
    end
  end
  if info.needs_key and not info.bad_seq then
    -- not damage: the chain cannot be checked without the key
  elseif info.bad_seq then
    damage(info, string.format("seq %d: %s", info.bad_seq, info.reason))
  elseif info.count < tip.seq then
    info.missing, info.missing_after = tip.seq - info.count, info.count
    damage(info, string.format("%d %s missing after seq %d (the runs table says seq %d was written; rows were deleted)",
      info.missing, info.missing == 1 and "event" or "events", info.count, tip.seq))
  elseif mark_hash ~= tip.hash then
    info.bad_seq, info.reason = tip.seq, string.format("seq %d is not the event the runs table names (the events were rewritten)", tip.seq)
    damage(info, string.format("seq %d: %s", info.bad_seq, info.reason))
  elseif info.count > tip.seq then
    info.bad_seq, info.reason = tip.seq + 1, string.format("seq %d is past the tip the runs table records (seq %d): inserted outside runbook", tip.seq + 1, tip.seq)
    damage(info, string.format("seq %d: %s", info.bad_seq, info.reason))
  elseif info.hmac and key and tip.seq > 0 and tip.hmac ~= M.tip_mac(key, id, tip.seq, tip.hash) then
    -- the events verify, but the tip naming their end was not written with
    -- the run's key: it was moved (back over deleted events) or forged
    info.bad_seq = tip.seq
    info.reason = tip.hmac and string.format("the runs table's tip (seq %d) has a wrong HMAC: it was rewritten without the run's key", tip.seq)
      or string.format("the runs table's tip (seq %d) has no HMAC: it was rewritten without the run's key (or by a runbook before schema version 2)", tip.seq)
    damage(info, string.format("seq %d: %s", info.bad_seq, info.reason))
  end
  return items, info
end

function Store:state(id)
  local events, info = self:read(id)
  return state.fold(events), info, events
end

local DONE = { ["run.finished"] = true, ["run.rolled_back"] = true }

-- the newest unfinished run of a runbook and its newest run: at most two
-- rows, however many runs it has had (runbook_runs_runbook serves both).
-- Whether a run is over is read from its last event's row, not from the
-- runs row's last_type: operators may update the tip columns (they must,
-- to append), never an event, so a last_type set to run.finished by hand
-- cannot make exec pass over a run that is not over.
local FIND_UNFINISHED = [[
(SELECT r.id, e.type AS last_type FROM runbook_runs r
   LEFT JOIN runbook_events e ON e.run = r.id AND e.seq = r.last_seq
  WHERE r.runbook = $1 AND e.type IS DISTINCT FROM 'run.finished' AND e.type IS DISTINCT FROM 'run.rolled_back'
  ORDER BY r.created_at DESC, r.id DESC LIMIT 1)
UNION ALL
(SELECT r.id, e.type AS last_type FROM runbook_runs r
   LEFT JOIN runbook_events e ON e.run = r.id AND e.seq = r.last_seq
  WHERE r.runbook = $1 ORDER BY r.created_at DESC, r.id DESC LIMIT 1)]]

function Store:find_unfinished(name)
  local rows = q(self, self.conn, FIND_UNFINISHED, name)
  local newest
  for _, r in ipairs(rows) do
    if not DONE[r.last_type or ""] then return r.id end
    newest = newest or r.id
  end
  if newest then
    local ok, _, info = pcall(self.read, self, newest, "none")
    if ok and info.damaged then return nil, newest, info.damage end
  end
  return nil
end

function Store:pushed(_) return nil end

-- ---------------------------------------------------------------------------
-- appending

local Journal = {}
Journal.__index = Journal

-- One statement moves the tip and inserts the event: it matches only when
-- the tip is the one this line follows, so a line can never fork the
-- chain, and a deleted row leaves the tip ahead of the events. It is
-- prepared once per session (parsed and planned once, not per event).
local APPEND = [[
WITH tip AS (
  UPDATE runbook_runs SET last_seq = $2, last_hash = $7, last_hmac = $9, last_type = $3, updated_at = clock_timestamp()
   WHERE id = $1 AND last_seq = $2 - 1 AND last_hash = $6
  RETURNING id)
INSERT INTO runbook_events (run, seq, type, step, body, prev, hash, hmac)
SELECT id, $2, $3, $4, $5, $6, $7, $8 FROM tip]]

-- The same for an event the engine writes lazily (a step's step.finished,
-- right before its next event with no side effect in between; see
-- docs/journal.md, "Durability"): committed before it returns, so a
-- killed runbook loses nothing, but without a WAL flush of its own
-- (synchronous_commit off for this one transaction). The next event's
-- commit, which is synchronous, flushes the WAL through both, as the file
-- store's next fdatasync covers both lines; Journal:sync flushes it when
-- code comes first.
local APPEND_LAZY = APPEND .. [[ WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL]]

-- A synchronous commit that writes WAL (a row version), so its flush
-- covers every commit of this session before it.
local FLUSH = "UPDATE runbook_runs SET updated_at = clock_timestamp() WHERE id = $1"

-- Runs the named statement, preparing it on the store's session the first
-- time; rows, info | nil, err like _query.
local function run_prepared(store, name, sql, ...)
  local conn = store.conn
  if not store.prepared[name] then
    local ok, err = conn:_prepare(name, sql)
    if not ok then return nil, err end
    store.prepared[name] = true
  end
  return conn:_query_prepared(name, ...)
end

local function tip_of(self, id)
  local rows = q(self, self.conn, "SELECT last_seq, last_hash FROM runbook_runs WHERE id = $1", id)
  if not rows[1] then raise("io", "run %s is gone from %s", id, self.location_text) end
  return math.tointeger(rows[1].last_seq), rows[1].last_hash
end

local function cannot_record(store, what, info)
  errors.raise { kind = "journal", code = "io", message = string.format(
    "cannot record %s in the PostgreSQL store %s: %s; it is not recorded, and the run stops here (run the same command again when the store is back)",
    what, store.location_text, pg_message(info)) }
end

--- Appends an event; returns its seq once it is committed, and durable
--- (a lazy one: once the next event or sync returns). Another writer on
--- the run (a parallel step) may have moved the tip: the line is then
--- made again after the new tip.
function Journal:append(type_, fields, lazy)
  if not self.store then error("attempt to use a closed journal", 2) end
  local store = self.store
  local name, sql = "runbook_append", APPEND
  if lazy then name, sql = "runbook_append_lazy", APPEND_LAZY end
  for _ = 1, 1000 do
    local seq = self.seq + 1
    local line, hash = jcore.format(self.id, seq, self.prev, type_, fields, self.key)
    local body = line:sub(1, -2)
    local rows, info = run_prepared(store, name, sql, self.id, seq, type_, fields and type(fields.step) == "string" and fields.step or nil,
      body, self.prev, hash, body:match('","hmac":"(%x+)"}$') or pgconn.null,
      self.key and M.tip_mac(self.key, self.id, seq, hash) or pgconn.null)
    if not rows then cannot_record(store, type_, info) end
    if info.affected == 1 then
      self.seq, self.prev = seq, hash
      -- a durable commit on this session covers every lazy one before it
      self.unsynced = lazy and true or nil
      jcore.after_append(seq)
      return seq
    end
    self.seq, self.prev = tip_of(store, self.id)
  end
  raise("io", "cannot append to run %s: its tip keeps moving", self.id)
end

--- Makes a lazy event durable: one synchronous commit on the session that
--- committed it.
function Journal:sync()
  if not (self.unsynced and self.store) then return end
  local rows, info = run_prepared(self.store, "runbook_flush", FLUSH, self.id)
  if not rows then
    errors.raise { kind = "journal", code = "io", message = string.format(
      "cannot make seq %d durable in the PostgreSQL store %s: %s; the run stops here (run the same command again when the store is back)",
      self.seq, self.store.location_text, pg_message(info)) }
  end
  self.unsynced = nil
end

function Journal:close()
  -- nothing this run wrote stays without its flush (the file store's
  -- release syncs too)
  if self.unsynced and self.store then pcall(self.sync, self) end
  self.store = nil
end
Journal.__close = Journal.close

-- A run log line: the log is a convenience beside the journal (a lost
-- line is no lost event), so, like the file store's run log, it is not
-- flushed on its own; the journal's next synchronous commit flushes it.
local LOG_LINE = [[INSERT INTO runbook_log (run, line)
  SELECT $1, $2 WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL]]

local Log = {}
Log.__index = Log
function Log:write(text)
  if not self.store then return end
  for line in tostring(text):gmatch("[^\n]+") do
    pcall(run_prepared, self.store, "runbook_log_line", LOG_LINE, self.id, line)
  end
end
function Log:flush() end
function Log:close() self.store = nil end
Log.__close = Log.close

function Store:open_log(id) return setmetatable({ store = self, id = id }, Log) end

function Store:log_lines(id)
  local rows = q(self, self.conn, "SELECT line FROM runbook_log WHERE run = $1 ORDER BY n", id)
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.line end
  return out
end

local OpenRun = {}
OpenRun.__index = OpenRun

function OpenRun:append(type_, fields, lazy)
  fields = fields or {}
  local seq = self.journal:append(type_, fields, lazy)
  local ev = {}
  for k, v in pairs(fields) do ev[k] = v end
  ev.type, ev.seq, ev.run = type_, seq, self.id
  state.apply(self.state, ev)
  return ev
end

function OpenRun:close()
  if self.log then self.log:close() self.log = nil end
  if self.journal then self.journal:close() self.journal = nil end
  if self.lock then self.lock:release() self.lock = nil end
end
OpenRun.__close = OpenRun.close

local function book_of(id)
  return storemod().book_of(id) or id
end

--- A journal writer on a run that some session of this process has
--- locked (a parallel step's own connection).
function Store:attach_journal(id)
  local seq, prev = tip_of(self, id)
  local rows = q(self, self.conn, "SELECT body FROM runbook_events WHERE run = $1 AND seq = 1", id)
  local key = rows[1] and rows[1].body:find('","hmac":"%x+"}$') and storemod().audit_key() or nil
  return setmetatable({ store = self, id = id, seq = seq, prev = prev, key = key, shared = true }, Journal)
end

--- Opens one run to drive or change it, as the file store does: locks it
--- (exit 4 naming the holder), reads and checks its events, folds them.
--- opts.create makes the run's row first (atomically: the id is unique).
function Store:open_run(id, opts)
  opts = opts or {}
  if opts.create then
    -- without a WAL flush of its own: run.started, the first event, is
    -- synchronous and flushes both before anything follows
    local rows, info = self.conn:_query([[INSERT INTO runbook_runs (id, runbook, created_by)
      SELECT $1, $2, $3 WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
      ON CONFLICT (id) DO NOTHING]], id, book_of(id), holder_text())
    if not rows then raise("io", "the PostgreSQL store %s: %s", self.location_text, pg_message(info)) end
    if info.affected ~= 1 then raise("io", "run %s exists already in %s", id, self.location_text) end
  end
  local lock = take_lock(self, LOCK_RUN, "run:" .. id, "run " .. id, true)
  local ok, res = pcall(function()
    local key = storemod().audit_key()
    local events, info = {}, { count = 0, last_hash = GENESIS }
    if not opts.create then
      -- only the events the fold needs are decoded (src/journal_fold.c)
      events, info = self:read(id, "fold")
      if info.needs_key then
        errors.raise { kind = "store", code = "audit-key", message = string.format("run %s is HMAC-protected: set RUNBOOK_AUDIT_KEY to continue it", id) }
      end
      if info.damaged then
        local what = info.bad_seq and string.format(" at seq %d (%s)", info.bad_seq, info.reason) or (": " .. info.damage)
        errors.raise { kind = "store", code = "damaged", message = string.format(
          "run %s: the journal is damaged%s; it will not be continued. See `runbook audit verify %s` and `runbook log %s`, or start a new run with --new.",
          id, what, id, id),
          details = { run = id, seq = info.bad_seq, missing = info.missing, after = info.missing_after, reason = info.damage } }
      end
    end
    local st = opts.create and state.new() or state.fold_scanned(events, info)
    if st.hmac and not key then
      errors.raise { kind = "store", code = "audit-key", message = string.format("run %s is HMAC-protected: set RUNBOOK_AUDIT_KEY to continue it", id) }
    end
    -- a run continues with the key it has: HMACs when its first event has one
    local jkey = key
    if info.count > 0 and not info.hmac then jkey = nil end
    local journal = setmetatable({ store = self, id = id, seq = info.count, prev = info.last_hash, key = jkey,
      shared = true }, Journal)
    return setmetatable({ id = id, store = self, lock = lock, journal = journal, log = self:open_log(id),
      info = info, events = events, state = st }, OpenRun)
  end)
  if not ok then
    lock:release()
    error(res, 0)
  end
  return res
end

--- Moves a run's verified lines into this store (runbook push): the run's
--- row and every event in one transaction, so it arrives whole or not at
--- all. lines are the file store's lines, already verified.
function Store:import(id, lines, log_lines)
  local conn = self.conn
  -- an HMAC-protected run (push has checked its HMACs with this key) gets
  -- its tip HMAC'd too
  local key = lines[1] and lines[1]:find('","hmac":"%x+"}$') and storemod().audit_key() or nil
  q(self, conn, "BEGIN")
  local ok, err = pcall(function()
    q(self, conn, "INSERT INTO runbook_runs (id, runbook, created_by) VALUES ($1, $2, $3)", id, book_of(id), holder_text())
    local prev = GENESIS
    for i, body in ipairs(lines) do
      local hash = body:match(',"hash":"(%x+)"')
      local ev = json.decode(body)
      q(self, conn, [[INSERT INTO runbook_events (run, seq, type, step, body, prev, hash, hmac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)]],
        id, i, ev.type, type(ev.step) == "string" and ev.step or pgconn.null, body, prev, hash,
        body:match('","hmac":"(%x+)"}$') or pgconn.null)
      prev = hash
      q(self, conn, "UPDATE runbook_runs SET last_seq = $2, last_hash = $3, last_hmac = $5, last_type = $4, updated_at = clock_timestamp() WHERE id = $1",
        id, i, hash, ev.type, key and M.tip_mac(key, id, i, hash) or pgconn.null)
    end
    for _, line in ipairs(log_lines or {}) do
      q(self, conn, "INSERT INTO runbook_log (run, line) VALUES ($1, $2)", id, line)
    end
  end)
  if not ok then
    conn:_exec("ROLLBACK")
    error(err, 0)
  end
  q(self, conn, "COMMIT")
end

-- ---------------------------------------------------------------------------
-- the sealing key: each operator's own, never in the database

local function key_path()
  local p = os.getenv("RUNBOOK_SECRET_KEY_FILE")
  if p and p ~= "" then return p end
  local base = os.getenv("XDG_CONFIG_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or ".") .. "/.config" end
  return base .. "/runbook/secret.key"
end

function Store:check_key_file()
  return storemod().check_key_file(key_path(), "your runs' secrets")
end

--- RUNBOOK_SECRET_KEY, else the operator's key file (RUNBOOK_SECRET_KEY_FILE,
--- else ~/.config/runbook/secret.key), created when `create` is set.
--- Returns the key, its id, and the key file's path (for messages).
function Store:secret_key(create)
  if not self._key then
    self._key, self._kid = storemod().sealing_key(key_path(), "your runs' secrets", create)
  end
  return self._key, self._kid, key_path()
end

return M
