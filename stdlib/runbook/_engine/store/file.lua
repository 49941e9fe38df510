-- The file store: a directory (.runbook/, --state DIR or RUNBOOK_STATE)
-- holding one folder per run (journal.jsonl, tip, log, lock), a lock per
-- runbook name (locks/NAME) and the key file that seals memos. Directories
-- are 0700 and files 0600; no file in it is opened through a symbolic link.
-- It implements the operations runbook._engine.store names.
local fs = require "runbook._fs"
local jcore = require "runbook._journal"
local secret = require "runbook._secret"
local errors = require "runbook.errors"
local state = require "runbook._engine.state"

local M = {}
local Store = {}
Store.__index = Store

--- Opens (creating when asked) the store at dir.
---@param dir string
---@param create boolean
function M.open(dir, create)
  local st = fs.stat(dir)
  if not st then
    if not create then return nil end
    local ok, err = fs.mkdir_p(dir .. "/runs", 448) -- 0700
    if not ok then errors.raisef("store", "io", "cannot create the state directory: %s", err) end
  elseif st.type ~= "directory" then
    errors.raisef("store", "io", "state path %s is not a directory", dir)
  else
    if st.mode & 63 ~= 0 then fs.chmod(dir, 448) end -- tighten a loose store
    fs.mkdir_p(dir .. "/runs", 448)
  end
  return setmetatable({ root = dir, runs = dir .. "/runs", location = dir, kind = "file" }, Store)
end

-- a run's files, known to this file alone
local function run_dir(self, id) return self.runs .. "/" .. id end
local function journal_path(self, id) return self.runs .. "/" .. id .. "/journal.jsonl" end
local function log_path(self, id) return self.runs .. "/" .. id .. "/log" end
local function lock_path(self, id) return self.runs .. "/" .. id .. "/lock" end
local function tip_path(self, id) return self.runs .. "/" .. id .. "/tip" end

function Store:close() end

--- What the store is, for messages: its directory.
function Store:describe() return self.root end

--- Opens the run's log for appending lines (a parallel worker's own
--- handle on it): :write(text), :flush(), :close().
function Store:open_log(id)
  local log, err = jcore.open_log(log_path(self, id))
  if not log then errors.raisef("store", "io", "%s", err) end
  return log
end

--- A stamp that changes whenever the run's journal or tip does (for
--- readers that cache a run), or nil when there is no such run.
function Store:stamp(id)
  local j, t = fs.stat(journal_path(self, id)), fs.stat(tip_path(self, id))
  if not j then return nil end
  return j.size .. ":" .. tostring(j.mtime) .. "/" .. (t and (t.size .. ":" .. tostring(t.mtime)) or "-")
end

--- The run's log lines, oldest first ({} when it has none).
function Store:log_lines(id)
  local f = io.open(log_path(self, id), "rb")
  if not f then return {} end
  local out = {}
  for line in f:lines() do out[#out + 1] = line end
  f:close()
  return out
end

--- Set when the run was moved to another store by `runbook push`: the
--- destination, which is then where it is driven from.
function Store:pushed(id)
  local f = io.open(run_dir(self, id) .. "/pushed", "rb")
  if not f then return nil end
  local dest = f:read("l")
  f:close()
  return dest or "another store"
end

--- Records that the run now lives in dest (`runbook push`).
function Store:mark_pushed(id, dest)
  local ok, err = fs.write_file(run_dir(self, id) .. "/pushed", dest .. "\n", 384)
  if not ok then errors.raisef("store", "io", "cannot write %s/pushed: %s", run_dir(self, id), err) end
end

-- The time a run started, from its journal's first event (read alone).
local function started_at(path)
  local first = jcore.head(path)
  return first and first.seq == 1 and type(first.ts) == "string" and first.ts or ""
end

--- All run ids, oldest first: by the time each started (ids carry only
--- the second, so two runs started within one second are told apart by
--- their first event's milliseconds).
function Store:list()
  local names = fs.listdir(self.runs) or {}
  local out, when = {}, {}
  for _, n in ipairs(names) do
    local path = journal_path(self, n)
    if fs.stat(path) then
      out[#out + 1] = n
      when[n] = started_at(path)
    end
  end
  table.sort(out, function(a, b)
    if when[a] ~= when[b] then return when[a] < when[b] end
    return a < b
  end)
  return out
end

--- A new run id: NAME-YYYYMMDD-HHMMSS-xxxx (UTC).
function Store:new_id(name)
  for _ = 1, 10 do
    local id = require("runbook._engine.store").run_id(name)
    if not fs.stat(run_dir(self, id)) then return id end
  end
  errors.raisef("store", "io", "cannot find a free run id")
end

local function audit_key() return require("runbook._engine.store").audit_key() end

--- The run's tip anchor: {seq, hash, hmac, verified}, or nil and
--- "missing" | "bad" and why. It may lag the journal, never lead it.
function Store:anchor(id)
  return jcore.tip(tip_path(self, id), id, audit_key())
end

local function damage(info, text)
  info.damaged = true
  info.damage = info.damage or text
end

--- Reads a run's journal: events (or lines, or none, or in "fold" mode the
--- events state.fold_scanned needs) and scan info.
--- info.damaged and info.damage (one line) say what is wrong: a bad line
--- (info.bad_seq, info.reason), or events missing after the last one the
--- tip says was durable (info.missing events after seq info.missing_after).
--- info.needs_key: HMAC-protected and RUNBOOK_AUDIT_KEY unset. Raises
--- when it cannot be read.
function Store:read(id, mode)
  local key = audit_key()
  -- the tip first: read after the journal, it could name an event
  -- appended in between
  local tip, tip_state, tip_err = self:anchor(id)
  local items, info = jcore.scan(journal_path(self, id), key, mode or "events", tip and tip.seq or nil)
  if not items then errors.raisef("store", "io", "%s", info) end
  if info.hmac and not key then
    info.needs_key = true
    info.unreadable = "it is HMAC-protected: set RUNBOOK_AUDIT_KEY to read it"
  end
  if (mode == nil or mode == "events" or mode == "fold") and not info.needs_key then
    local seq, why = state.check(items, info.at)
    if seq and not (info.bad_seq and info.bad_seq <= seq) then
      info.bad_seq, info.reason = seq, why
      info.unreadable = "the journal is damaged at seq " .. seq .. " (" .. why .. ")"
    end
  end
  if info.needs_key then
    -- not damage: the chain cannot be checked without the key
  elseif info.bad_seq then
    damage(info, string.format("seq %d: %s", info.bad_seq, info.reason))
  elseif tip then
    if info.count < tip.seq then
      info.missing, info.missing_after = tip.seq - info.count, info.count
      damage(info, string.format("%d %s missing after seq %d (the tip record says seq %d was written; the journal's tail was cut or deleted)",
        info.missing, info.missing == 1 and "event" or "events", info.count, tip.seq))
    elseif info.mark_hash ~= tip.hash then
      info.bad_seq, info.reason = tip.seq, string.format("seq %d is not the event the tip record names (the journal was rewritten)", tip.seq)
      damage(info, string.format("seq %d: %s", info.bad_seq, info.reason))
    elseif key and info.hmac and not tip.verified then
      damage(info, "the tip record carries no HMAC though the journal does (rewritten without the audit key)")
    end
  elseif tip_state == "bad" then
    damage(info, tip_err)
  elseif info.count > 0 then
    -- runs made since the tip exists say so in run.started: a missing tip
    -- there is a deleted one
    local first = jcore.head(journal_path(self, id))
    if first and first.anchor then damage(info, "the tip record is missing (deleted?)") end
  end
  return items, info
end

--- The run's folded state and scan info.
function Store:state(id)
  local events, info = self:read(id)
  return state.fold(events), info, events
end

--- Resolves a run reference: a full id, a unique prefix or "last".
function Store:resolve(ref)
  local ids = self:list()
  if ref == nil or ref == "last" or ref == "latest" then
    local newest, newest_ts
    for _, id in ipairs(ids) do
      local st = fs.stat(journal_path(self, id))
      if st and (not newest_ts or st.mtime > newest_ts) then newest, newest_ts = id, st.mtime end
    end
    if not newest then errors.raisef("store", "not-found", "no runs in %s", self.root) end
    return newest
  end
  local found = {}
  for _, id in ipairs(ids) do
    if id == ref then return id end
    if id:sub(1, #ref) == ref then found[#found + 1] = id end
  end
  if #found == 1 then return found[1] end
  if #found == 0 then errors.raisef("store", "not-found", "no run '%s' in %s (see `runbook runs`)", ref, self.root) end
  errors.raisef("store", "ambiguous", "run '%s' is ambiguous: %s", ref, table.concat(found, ", "))
end

-- The type of a journal's last complete event, or nil when the file ends in
-- a torn line (a crash: that run is unfinished). Reads only the tail, so
-- finding the run to resume costs the same whatever the journals' length.
local function last_type(path)
  local last = jcore.last(path)
  return last and last.type
end

local DONE = { ["run.finished"] = true, ["run.rolled_back"] = true }

--- The newest unfinished run of the named runbook, or nil; and, when the
--- newest run of that runbook is finished but damaged, its id and what is
--- wrong (so starting a new run does not pass over it in silence). The
--- caller reads (and, to continue it, locks) the run.
function Store:find_unfinished(name)
  local ids = self:list()
  local prefix = name .. "-"
  local newest
  for i = #ids, 1, -1 do
    local id = ids[i]
    local rest = id:sub(#prefix + 1)
    if id:sub(1, #prefix) == prefix and rest:match("^%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-%x%x%x%x$") then
      if not DONE[last_type(journal_path(self, id)) or ""] then return id end
      if not newest then newest = id end
    end
  end
  if newest then
    local ok, _, info = pcall(self.read, self, newest, "none")
    if ok and info.damaged then return nil, newest, info.damage end
  end
  return nil
end

local function locked(what, holder, busy)
  errors.raise { kind = "store", code = busy and "locked" or "io", message = string.format("%s is locked by %s", what, holder),
    details = { holder = holder } }
end

--- The lock held while a run of runbook `name` is found or made, so two
--- fresh `exec`s cannot both start one. Raises kind "store" code "locked".
function Store:choose(name)
  local dir = self.root .. "/locks"
  fs.mkdir_p(dir, 448)
  local lock, holder, busy = jcore.lock(dir .. "/" .. name)
  if not lock then locked("runbook " .. name .. " (another exec is choosing its run)", holder, busy) end
  return lock
end

-- Releases what an open_run gathered, unless it was handed over.
local Gathered = { __close = function(g)
  if g.kept then return end
  if g.log then g.log:close() end
  if g.journal then g.journal:close() end
  if g.lock then g.lock:release() end
end }

local OpenRun = {}
OpenRun.__index = OpenRun

--- Appends an event and applies it to the state. Returns the event.
function OpenRun:append(type_, fields)
  fields = fields or {}
  local seq = self.journal:append(type_, fields)
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

--- Opens one run to drive or change it: takes its lock, reads and checks
--- the journal (against its tip), folds it, opens it for appending (a
--- torn tail is cut here, and the cut recorded) and opens the run log.
--- opts.create makes a new run with id (its folder, journal, tip, log).
--- Returns an OpenRun {id, lock, journal, log, state, info, events} with
--- :append and :close; its events are those the fold read (a "fold" read:
--- replaced checkpoints and memos, and actions, are left out). Raises kind "store" with code "locked" (details.holder),
--- "damaged" (details: seq, missing, after, reason), "audit-key" or "io";
--- nothing stays locked or open when it raises.
function Store:open_run(id, opts)
  opts = opts or {}
  local create = opts.create
  if create then
    local ok, err = fs.mkdir_p(run_dir(self, id), 448)
    if not ok then errors.raisef("store", "io", "cannot create the run folder: %s", err) end
  end
  local dest = not create and self:pushed(id)
  if dest then
    errors.raise { kind = "store", code = "pushed", message = string.format(
      "run %s was pushed to %s; it is driven there now (use --state with that store), not from %s", id, dest, self.root) }
  end
  local g <close> = setmetatable({}, Gathered)
  local lock, holder, busy = jcore.lock(lock_path(self, id))
  if not lock then locked("run " .. id, holder, busy) end
  g.lock = lock
  local key = audit_key()
  local events, info
  if create then
    events, info = {}, nil
  else
    -- read under the lock: no other process moves it on from here; only
    -- the events the fold needs are decoded (checkpoints a later one
    -- replaces and actions are counted, not read: src/journal_fold.c)
    events, info = self:read(id, "fold")
    if info.needs_key then
      errors.raise { kind = "store", code = "audit-key", message = string.format("run %s is HMAC-protected: set RUNBOOK_AUDIT_KEY to continue it", id) }
    end
    if info.damaged then
      local what = info.bad_seq and string.format("at seq %d (%s)", info.bad_seq, info.reason) or (": " .. info.damage)
      errors.raise { kind = "store", code = "damaged", message = string.format(
        "run %s: the journal is damaged%s; it will not be continued. See `runbook audit verify %s` and `runbook log %s`, or start a new run with --new.",
        id, info.bad_seq and (" " .. what) or what, id, id),
        details = { run = id, seq = info.bad_seq, missing = info.missing, after = info.missing_after, reason = info.damage } }
    end
  end
  local st = create and state.new() or state.fold_scanned(events, info)
  if st.hmac and not key then
    errors.raise { kind = "store", code = "audit-key", message = string.format("run %s is HMAC-protected: set RUNBOOK_AUDIT_KEY to continue it", id) }
  end
  local journal, jerr = jcore.open(journal_path(self, id), id, key, info, create, tip_path(self, id))
  if not journal then errors.raisef("store", "io", "%s", jerr) end
  g.journal = journal
  local log, lerr = jcore.open_log(log_path(self, id))
  if not log then errors.raisef("store", "io", "%s", lerr) end
  g.log = log
  local r = setmetatable({ id = id, store = self, lock = lock, journal = journal, log = log, info = info or { count = 0 },
    events = events, state = st }, OpenRun)
  if info and info.torn_bytes then
    r:append("journal.truncated", { torn_seq = info.torn_seq, bytes = info.torn_bytes, sha256 = info.torn_sha256, reason = info.reason })
  end
  g.kept = true
  return r
end

--- Refuses a key file others may read (or one that is a symbolic link).
--- Returns its path.
function Store:check_key_file()
  return require("runbook._engine.store").check_key_file(self.root .. "/secret.key", "this store's secrets")
end

--- The key that seals secret memos: RUNBOOK_SECRET_KEY, else the store's
--- 0600 key file, created with 32 random bytes when `create` is set.
--- Returns a secret (32 bytes) and its id (a fingerprint), or nil.
function Store:secret_key(create)
  if not self._key then
    self._key, self._kid = require("runbook._engine.store").sealing_key(self.root .. "/secret.key", "this store's secrets", create)
  end
  return self._key, self._kid
end

return M
