-- What `runbook report` and `runbook serve` read from the store, and the
-- only place they touch it: list runs, read a run's events, verify a run,
-- read its log, through the store interface (file or PostgreSQL). Nothing
-- here writes.
--
-- A served page polls for new events every second or so, and a journal of
-- 10,000 events takes tens of milliseconds to scan; so a run's events are
-- kept while its journal's size and mtime stay the same.
local errors = require "runbook.errors"
local storemod = require "runbook._engine.store"
local state = require "runbook._engine.state"

local M = {}
local Source = {}
Source.__index = Source

--- Opens the store named by --state (or RUNBOOK_STATE, or .runbook) for
--- reading; raises a usage error when there is none.
---@param flag string|nil
function M.open(flag)
  local dir = storemod.location(flag)
  local store = storemod.open(dir, false)
  if not store then errors.raise { kind = "usage", message = "no state store at " .. storemod.redacted(dir) .. " (nothing has run here yet)" } end
  return setmetatable({ store = store, root = store:describe(), cache = {} }, Source)
end

-- the run's scanned journal, from the cache while the file is unchanged
function Source:scan(id)
  -- the tip record too: a tip deleted or rewritten alone changes the verdict
  local key = self.store:stamp(id) or "-"
  local c = self.cache[id]
  if c and c.key == key then
    self.used = (self.used or 0) + 1
    c.used = self.used
    return c
  end
  local events, info = self.store:read(id)
  c = { key = key, events = events, info = info }
  self:remember(id, c)
  return c
end

-- At most M.CACHED runs are kept (the runs list reads every run once; a
-- store of hundreds of long runs must not stay in memory): the one used
-- longest ago goes first.
M.CACHED = 16
function Source:remember(id, c)
  self.used = (self.used or 0) + 1
  c.used = self.used
  self.cache[id] = c
  local n, oldest, oldest_id = 0, math.huge, nil
  for k, v in pairs(self.cache) do
    n = n + 1
    if v.used < oldest then oldest, oldest_id = v.used, k end
  end
  if n > M.CACHED then self.cache[oldest_id] = nil end
end

--- Run ids, oldest first.
function Source:list() return self.store:list() end

--- A full id from a full id, a unique prefix or "last"; raises not-found.
function Source:resolve(ref) return self.store:resolve(ref) end

--- True when the store holds a run with exactly this id.
function Source:has(id)
  -- a run id is a runbook name (the loader allows [%w._-]+) and a suffix:
  -- no slash, never "." or "..", so it names a folder under runs/ only
  return type(id) == "string" and id:match("^[%w._-]+$") ~= nil and not id:match("^%.+$")
    and self.store:stamp(id) ~= nil
end

--- A run's events (all, or those with seq > after) and the scan info.
---@return table[] events, table info
function Source:events(id, after)
  local c = self:scan(id)
  if not after or after <= 0 then return c.events, c.info end
  local out = {}
  -- seq n is at index n while the chain holds; search from there
  local evs = c.events
  local i = math.min(after + 1, #evs + 1)
  while i > 1 and (evs[i - 1].seq or 0) > after do i = i - 1 end
  for j = i, #evs do
    if (evs[j].seq or 0) > after then out[#out + 1] = evs[j] end
  end
  return out, c.info
end

--- fn(events, info) for the run, computed again only when its journal
--- changed (a live page asks for its run's view after every new event).
function Source:derived(id, name, fn)
  local c = self:scan(id)
  c.derived = c.derived or {}
  local v = c.derived[name]
  if v == nil then
    v = fn(c.events, c.info)
    c.derived[name] = v
  end
  return v
end

--- The run's folded state (runbook.state), and the scan info.
function Source:state(id)
  local c = self:scan(id)
  if not c.state then c.state = state.fold(c.events) end
  return c.state, c.info
end

--- Checks the run's chain (and HMACs with RUNBOOK_AUDIT_KEY), as `runbook
--- audit verify` does: {ok, events, hmac, bad_seq, reason}. With `fresh`
--- the journal is read again now; without, the check made when its events
--- were last read (every read verifies) is reported.
function Source:verify(id, fresh)
  local key = storemod.audit_key()
  local info
  if fresh then
    info = select(2, self.store:read(id, "none"))
  else
    info = self:scan(id).info
  end
  local r = { run = id, ok = true, events = info.count, hmac = info.hmac and key ~= nil, hmac_present = info.hmac }
  -- the same verdicts, in the same order, as `runbook audit verify`
  if info.bad_seq then
    r.ok, r.bad_seq, r.reason = false, info.bad_seq, info.reason
  elseif info.missing then
    r.ok, r.bad_seq, r.reason, r.missing = false, info.missing_after + 1, info.damage, info.missing
  elseif info.damaged then
    r.ok, r.bad_seq, r.reason = false, info.count, info.damage
  elseif info.torn_bytes then
    r.ok, r.bad_seq = false, info.torn_seq
    r.reason = info.reason .. " (a torn tail from a crash; the next exec cuts it and records the cut)"
  elseif key and not info.hmac and info.count > 0 then
    r.ok, r.bad_seq = false, 1
    r.reason = "the journal carries no HMAC, but RUNBOOK_AUDIT_KEY is set (HMACs stripped, or a run made without the key)"
  end
  return r
end

--- The run log's lines by step: { [step] = { {ts=, level=, text=}, ... } }.
--- A line is "TS STEP LEVEL TEXT"; a line without that prefix continues
--- the one before it (a multi-line message).
function Source:log(id)
  local by, last = {}, nil
  for _, line in ipairs(self.store:log_lines(id)) do
    local ts, step, level, text = line:match("^(%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z) (%S+) (%a+) (.*)$")
    if ts then
      last = { ts = ts, level = level, text = text }
      local list = by[step]
      if not list then
        list = {}
        by[step] = list
      end
      list[#list + 1] = last
    elseif last then
      last.text = last.text .. "\n" .. line
    end
  end
  return by
end

return M
