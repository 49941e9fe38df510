-- The file store: a directory (.runbook/, --state DIR or RUNBOOK_STATE)
-- holding one folder per run (journal.jsonl, log, lock) and the key file
-- that seals memos. Directories are 0700 and files 0600.
local fs = require "runbook._fs"
local jcore = require "runbook._journal"
local crypto = require "runbook._crypto"
local secret = require "runbook._secret"
local errors = require "runbook.errors"
local state = require "runbook._engine.state"

local M = {}
local Store = {}
Store.__index = Store

local function raise(code, fmt, ...)
  errors.raise { kind = "store", code = code, message = string.format(fmt, ...) }
end

--- Where the store lives: the flag, then RUNBOOK_STATE, then .runbook.
function M.location(flag)
  local loc = flag or os.getenv("RUNBOOK_STATE")
  if loc == nil or loc == "" then loc = ".runbook" end
  if loc:match("^postgres") then
    raise("unsupported", "--state %s: the PostgreSQL store is not available in this build; use a directory", loc:gsub("//[^@]*@", "//***@"))
  end
  return loc
end

--- Opens (creating when asked) the store at dir.
---@param dir string
---@param create boolean
function M.open(dir, create)
  local st = fs.stat(dir)
  if not st then
    if not create then return nil end
    local ok, err = fs.mkdir_p(dir .. "/runs", 448) -- 0700
    if not ok then raise("io", "cannot create the state directory: %s", err) end
  elseif st.type ~= "directory" then
    raise("io", "state path %s is not a directory", dir)
  else
    if st.mode & 63 ~= 0 then fs.chmod(dir, 448) end -- tighten a loose store
    fs.mkdir_p(dir .. "/runs", 448)
  end
  return setmetatable({ root = dir, runs = dir .. "/runs" }, Store)
end

function Store:run_dir(id) return self.runs .. "/" .. id end
function Store:journal_path(id) return self.runs .. "/" .. id .. "/journal.jsonl" end
function Store:log_path(id) return self.runs .. "/" .. id .. "/log" end
function Store:lock_path(id) return self.runs .. "/" .. id .. "/lock" end

-- The time a run started, from its journal's first line (read alone).
local function started_at(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local first = f:read("l") or ""
  f:close()
  return first:match('^{"seq":1,"ts":"([^"]+)"') or ""
end

--- All run ids, oldest first: by the time each started (ids carry only
--- the second, so two runs started within one second are told apart by
--- their first event's milliseconds).
function Store:list()
  local names = fs.listdir(self.runs) or {}
  local out, when = {}, {}
  for _, n in ipairs(names) do
    local path = self:journal_path(n)
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
    local id = string.format("%s-%s-%s", name, os.date("!%Y%m%d-%H%M%S"), crypto.random_hex(2))
    if not fs.stat(self:run_dir(id)) then return id end
  end
  raise("io", "cannot find a free run id")
end

--- The audit key (RUNBOOK_AUDIT_KEY), as a secret, or nil.
function M.audit_key()
  local k = os.getenv("RUNBOOK_AUDIT_KEY")
  if k and k ~= "" then return secret.new(k) end
  return nil
end

--- Reads a run's journal: events, scan info. Raises when it cannot be read.
function Store:read(id, mode)
  local items, info = jcore.scan(self:journal_path(id), M.audit_key(), mode or "events")
  if not items then raise("io", "%s", info) end
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
      local st = fs.stat(self:journal_path(id))
      if st and (not newest_ts or st.mtime > newest_ts) then newest, newest_ts = id, st.mtime end
    end
    if not newest then raise("not-found", "no runs in %s", self.root) end
    return newest
  end
  local found = {}
  for _, id in ipairs(ids) do
    if id == ref then return id end
    if id:sub(1, #ref) == ref then found[#found + 1] = id end
  end
  if #found == 1 then return found[1] end
  if #found == 0 then raise("not-found", "no run '%s' in %s (see `runbook runs`)", ref, self.root) end
  raise("ambiguous", "run '%s' is ambiguous: %s", ref, table.concat(found, ", "))
end

-- The type of a journal's last complete event, or nil when the file ends in
-- a torn line (a crash: that run is unfinished). Reads only the tail, so
-- finding the run to resume costs the same whatever the journals' length.
local function last_type(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  local from = math.max(0, size - 65536)
  f:seek("set", from)
  local tail = f:read("a") or ""
  f:close()
  if tail:sub(-1) ~= "\n" then return nil end
  -- walk back to the previous newline (a pattern anchored at $ would try
  -- every start position)
  local i = #tail - 1
  while i > 0 and tail:byte(i) ~= 10 do i = i - 1 end
  local last = tail:sub(i + 1, #tail - 1)
  return last:match('^{"seq":%d+,"ts":"[^"]*","run":"[^"]*","type":"([^"]+)"')
end

local DONE = { ["run.finished"] = true, ["run.rolled_back"] = true }

--- The newest unfinished run of the named runbook, or nil. The caller
--- reads (and, to continue it, locks) the run.
function Store:find_unfinished(name)
  local ids = self:list()
  local prefix = name .. "-"
  for i = #ids, 1, -1 do
    local id = ids[i]
    local rest = id:sub(#prefix + 1)
    if id:sub(1, #prefix) == prefix and rest:match("^%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-%x%x%x%x$") then
      if not DONE[last_type(self:journal_path(id)) or ""] then return id end
    end
  end
  return nil
end

local function parse_key(text, where)
  text = text:gsub("%s+$", "")
  if #text == 64 and text:match("^%x+$") then return crypto.hex_decode(text) end
  local raw = crypto.base64_decode(text)
  if raw and #raw == 32 then return raw end
  raise("bad-key", "%s must be 64 hex digits or the base64 of 32 bytes", where)
end

--- The key that seals secret memos: RUNBOOK_SECRET_KEY, else the store's
--- 0600 key file, created with 32 random bytes when `create` is set.
--- Returns a secret (32 bytes) and its id (a fingerprint), or nil.
function Store:secret_key(create)
  if self._key then return self._key, self._kid end
  local env = os.getenv("RUNBOOK_SECRET_KEY")
  local raw
  if env and env ~= "" then
    raw = parse_key(env, "RUNBOOK_SECRET_KEY")
  else
    local path = self.root .. "/secret.key"
    local f = io.open(path, "rb")
    if f then
      raw = parse_key(f:read("a"), path)
      f:close()
    elseif create then
      local k = secret.random(32, "raw")
      local ok, err = fs.write_file(path, crypto.hex_encode(k), 384) -- 0600
      if not ok then raise("io", "cannot write %s: %s", path, err) end
      raw = k
    else
      return nil
    end
  end
  local key = secret.is(raw) and raw or secret.new(raw)
  self._key, self._kid = key, crypto.sha256(key):sub(1, 16)
  return self._key, self._kid
end

return M
