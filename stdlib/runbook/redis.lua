-- runbook.redis: Redis commands, pipelines, readiness and locks.
--
-- The C core (runbook._redis) connects, formats commands and parses
-- replies, with our own bounded, interruptible waits. This module adds the
-- raising and non-raising forms, audit records for writing commands, the
-- dry-run rule and the lock protocol:
--   take:    SET key value NX PX ttl    (value holds a random token)
--   renew:   compare-and-PEXPIRE        (only while the value is still ours)
--   release: compare-and-DEL           (never someone else's lock)
local core = require "runbook._redis"
local host = require "runbook._host"
local crypto = require "runbook._crypto"
local json = require "runbook._json"
local secretcore = require "runbook._secret"
local errors = require "runbook.errors"
local audit = require "runbook._engine.audit"

local M = {}

-- Conn is a userdata; these methods are implemented in C (runbook._redis):
---@class runbook.redis.Conn
---@field close fun(self:runbook.redis.Conn)  closes; safe twice; also <close> and __gc
---@field set_timeout fun(self:runbook.redis.Conn, seconds:number)  per-command timeout (0: the step's only)
---@field info fun(self:runbook.redis.Conn):{host:string, port:integer, db:integer, timeout:number, open:boolean, lost:string|nil}
local Conn = core.methods

-- Commands that only read. Anything else counts as a write: it is
-- recorded in the journal and not sent under --dry-run.
local READ_ONLY = {}
for name in ([[
  GET MGET EXISTS TTL PTTL EXPIRETIME PEXPIRETIME TYPE KEYS SCAN STRLEN GETRANGE SUBSTR RANDOMKEY DUMP
  HGET HGETALL HMGET HKEYS HVALS HLEN HEXISTS HSCAN HSTRLEN HRANDFIELD
  LRANGE LLEN LINDEX LPOS SMEMBERS SISMEMBER SMISMEMBER SCARD SSCAN SRANDMEMBER SINTER SUNION SDIFF SINTERCARD
  ZRANGE ZRANGEBYSCORE ZRANGEBYLEX ZREVRANGE ZREVRANGEBYSCORE ZREVRANGEBYLEX ZSCORE ZMSCORE ZCARD ZCOUNT
  ZLEXCOUNT ZRANK ZREVRANK ZSCAN ZRANDMEMBER ZINTER ZUNION ZDIFF ZINTERCARD
  XRANGE XREVRANGE XLEN XREAD XPENDING GETBIT BITCOUNT BITPOS BITFIELD_RO PFCOUNT GEODIST GEOHASH GEOPOS
  GEOSEARCH GEORADIUS_RO GEORADIUSBYMEMBER_RO LCS EVAL_RO EVALSHA_RO FCALL_RO SORT_RO
  PING ECHO INFO DBSIZE TIME LASTSAVE ROLE COMMAND MEMORY OBJECT LOLWUT
]]):gmatch("%S+") do READ_ONLY[name] = true end
-- commands whose first argument decides (CONFIG GET reads, CONFIG SET writes)
local READ_SUB = {
  CONFIG = { GET = true }, CLIENT = { LIST = true, INFO = true, GETNAME = true, ID = true },
  SCRIPT = { EXISTS = true }, XINFO = { STREAM = true, GROUPS = true, CONSUMERS = true },
  SLOWLOG = { GET = true, LEN = true }, ACL = { WHOAMI = true, LIST = true, USERS = true, CAT = true },
}

local function upper(v) return type(v) == "string" and v:upper() or tostring(v) end

local function is_write(cmd)
  local name = upper(cmd[1])
  if READ_ONLY[name] then return false end
  local sub = READ_SUB[name]
  if sub and sub[upper(cmd[2])] then return false end
  return true
end

-- "SET app:flag" for the journal: the command and its key, never values
local function describe(cmd)
  local name = upper(cmd[1])
  local key = cmd[2]
  if key == nil or name == "EVAL" or name == "EVALSHA" then return name end
  if secretcore.is(key) then return name .. " [REDACTED]" end
  return name .. " " .. host.scrub(tostring(key))
end

local function check_args(fname, cmd)
  if type(cmd[1]) ~= "string" or cmd[1] == "" then
    error(fname .. ": command name expected (conn:" .. fname .. "(\"GET\", key))", 3)
  end
end

--- Connects to Redis. `url` is `redis://[[user]:password@]host[:port][/db]`,
--- a string or a secret; the password is never printed. AUTH and SELECT are
--- sent at once, so a wrong password or a server that is down fails here,
--- in one line, within `connect_timeout`.
---@param url string|userdata
---@param opts {connect_timeout:number|nil, timeout:number|nil, password:string|userdata|nil, user:string|nil, db:integer|nil}|nil
---@return runbook.redis.Conn
function M.connect(url, opts)
  if type(url) ~= "string" and not secretcore.is(url) then
    error("redis.connect: URL (string or secret) expected, got " .. type(url), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("redis.connect: options must be a table", 2) end
  local conn, err = core.connect(url, opts)
  if not conn then error(err, 0) end
  return conn
end

--- Sends one command; raises on an error reply (a structured error with
--- kind "redis" and the reply's code, e.g. "WRONGTYPE") and on I/O failure.
--- Replies: status and bulk strings -> string, integer -> integer,
--- nil -> nil (false inside arrays), arrays -> tables.
---@param ... string|number|userdata
---@return any
function Conn:call(...)
  local cmd = table.pack(...)
  check_args("call", cmd)
  local write = is_write(cmd)
  if write and audit.dry_run() then
    audit.action { kind = "redis", command = upper(cmd[1]), summary = "would send " .. describe(cmd) }
    return nil
  end
  local reply, err = self:_command(...)
  if err then error(err, 0) end
  if write then audit.action { kind = "redis", command = upper(cmd[1]), summary = describe(cmd) } end
  return reply
end

--- Like call, but an error reply is returned as `nil, err` instead of
--- raised. Connection failures still raise.
---@param ... string|number|userdata
---@return any reply
---@return runbook.Error|nil err
function Conn:pcall(...)
  local cmd = table.pack(...)
  check_args("pcall", cmd)
  local write = is_write(cmd)
  if write and audit.dry_run() then
    audit.action { kind = "redis", command = upper(cmd[1]), summary = "would send " .. describe(cmd) }
    return nil
  end
  local reply, err = self:_command(...)
  if err then
    if err.reply == nil then error(err, 0) end
    return nil, err
  end
  if write then audit.action { kind = "redis", command = upper(cmd[1]), summary = describe(cmd) } end
  return reply
end

local Pipeline = {}
Pipeline.__index = Pipeline

--- Queues a command whose error reply fails the whole pipeline.
function Pipeline:call(...)
  local cmd = table.pack(...)
  check_args("call", cmd)
  self.cmds[#self.cmds + 1] = { ... }
  self.raising[#self.cmds] = true
  return #self.cmds
end

--- Queues a command whose error reply is returned in its slot.
function Pipeline:pcall(...)
  local cmd = table.pack(...)
  check_args("pcall", cmd)
  self.cmds[#self.cmds + 1] = { ... }
  return #self.cmds
end

--- Sends every command queued by fn in one round trip. Returns the
--- replies in order (`n` holds the count; nil replies are false). The
--- first error reply of a command queued with p:call is raised after all
--- replies are read; those queued with p:pcall hold the error value.
---@param fn fun(p:{call:fun(self, ...):integer, pcall:fun(self, ...):integer})
---@return table replies
function Conn:pipeline(fn)
  if type(fn) ~= "function" then error("conn:pipeline: function expected", 2) end
  local p = setmetatable({ cmds = {}, raising = {} }, Pipeline)
  fn(p)
  local n = #p.cmds
  if n == 0 then return { n = 0 } end
  local writes = {}
  for _, cmd in ipairs(p.cmds) do
    if is_write(cmd) then writes[#writes + 1] = describe(cmd) end
  end
  local what = string.format("pipeline of %d command%s", n, n == 1 and "" or "s")
  -- name the first few writes; a long pipeline would flood the trail
  local shown = table.concat(writes, ", ", 1, math.min(#writes, 5))
  if #writes > 5 then shown = shown .. string.format(", … and %d more", #writes - 5) end
  if #writes > 0 and audit.dry_run() then
    audit.action { kind = "redis", command = "PIPELINE", count = n, writes = #writes,
      summary = "would send a " .. what .. ": " .. shown }
    local out = { n = n }
    for i = 1, n do out[i] = false end
    return out
  end
  local res, err = self:_pipeline(p.cmds)
  if not res then error(err, 0) end
  if #writes > 0 then
    audit.action { kind = "redis", command = "PIPELINE", count = n, writes = #writes, summary = what .. ": " .. shown }
  end
  for i = 1, n do
    if p.raising[i] and errors.is(res[i], "redis") then
      local e = res[i]
      e.message = string.format("%s (command %d of %d in a pipeline; the others were sent)", e.message, i, n)
      e.index = i
      error(e, 0)
    end
  end
  return res
end

--- PING: true when the server answers PONG.
function Conn:ping()
  return self:call("PING") == "PONG"
end

-- ---------------------------------------------------------------------------
-- locks

---@class runbook.redis.Lock
---@field key string
---@field owner string   who holds it ("user@host pid N ...")
---@field ttl number     seconds
local Lock = {}
Lock.__index = Lock

local function describe_holder(value)
  if value == nil or value == false then return nil end
  local ok, v = pcall(json.decode, value)
  if ok and type(v) == "table" and type(v.owner) == "string" then
    return v.owner .. (type(v.since) == "string" and (" since " .. v.since) or "")
  end
  local s = host.scrub(tostring(value))
  if #s > 200 then s = s:sub(1, 200) .. "…" end
  return s
end

local function default_owner()
  return string.format("%s@%s pid %d", host.user(), host.hostname(), host.pid())
end

-- Takes the lock without audit (runbook._engine.runlock uses this before any step).
-- Returns a Lock, or nil and a description of the holder.
local function take(conn, key, opts)
  opts = opts or {}
  if type(key) ~= "string" or key == "" then error("lock: key must be a non-empty string", 3) end
  local ttl = opts.ttl or 30
  if type(ttl) ~= "number" or ttl <= 0 then error("lock: ttl must be a positive number of seconds", 3) end
  local wait = opts.wait or 0
  if type(wait) ~= "number" or wait < 0 then error("lock: wait must be a number of seconds", 3) end
  local owner = opts.owner or default_owner()
  local token = crypto.random_hex(16)
  local value = json.encode({ owner = owner, since = host.iso_time(), token = token })
  local ms = math.max(1, math.floor(ttl * 1000 + 0.5))
  local deadline = host.monotime() + wait
  local interval = opts.interval or 0.25
  while true do
    local r, err = conn:_command("SET", key, value, "NX", "PX", ms)
    if err then error(err, 0) end
    if r == "OK" then
      return setmetatable({ conn = conn, key = key, owner = owner, token = token, value = value, ttl = ttl, ms = ms }, Lock)
    end
    local cur, gerr = conn:_command("GET", key)
    if gerr then error(gerr, 0) end
    -- nil: it expired between SET and GET; try again at once
    if cur ~= nil then
      local now = host.monotime()
      if now >= deadline then return nil, describe_holder(cur) end
      host.sleep(math.min(interval, deadline - now))
    end
  end
end
M._take = take

--- Takes a lock: SET key value NX PX ttl, with a random token in the
--- value. Returns the Lock, or nil and who holds it ("user@host pid N
--- since ..."). With `wait`, keeps trying for that many seconds.
---@param key string
---@param opts {ttl:number|nil, owner:string|nil, wait:number|nil}|nil
---@return runbook.redis.Lock|nil lock
---@return string|nil holder
function Conn:lock(key, opts)
  if audit.dry_run() then
    audit.action { kind = "redis", command = "LOCK", key = key, summary = "would take the lock " .. tostring(key) }
    return setmetatable({ conn = self, key = key, owner = default_owner(), dry_run = true, ttl = (opts or {}).ttl or 30 }, Lock)
  end
  local lock, holder = take(self, key, opts)
  if lock then
    audit.action { kind = "redis", command = "LOCK", key = key,
      summary = string.format("took the lock %s (ttl %g s)", host.scrub(key), lock.ttl) }
  end
  return lock, holder
end

local function eval(lock, script, ...)
  local r, err = lock.conn:_command("EVAL", script, 1, lock.key, lock.value, ...)
  if err then error(err, 0) end
  return r
end

--- Extends the lock's expiry to `ttl` seconds from now (default: its ttl),
--- only if it is still ours. Returns false when it was lost.
---@param ttl number|nil
---@return boolean
function Lock:renew(ttl)
  if self.dry_run then return true end
  local ms = ttl and math.max(1, math.floor(ttl * 1000 + 0.5)) or self.ms
  return eval(self, core.RENEW_SCRIPT, ms) == 1
end

--- Deletes the lock if it is still ours. Returns false when it had
--- expired or been taken over. Safe to call twice.
---@return boolean
function Lock:release()
  if self.keeper then
    self.keeper:stop()
    self.keeper = nil
  end
  if self.released then return false end
  self.released = true
  if self.dry_run then return true end
  local released = eval(self, core.RELEASE_SCRIPT) == 1
  if self.quiet then return released end
  audit.action { kind = "redis", command = "UNLOCK", key = self.key,
    summary = released and ("released the lock " .. host.scrub(self.key))
      or ("the lock " .. host.scrub(self.key) .. " was no longer ours (expired or taken over)") }
  return released
end

--- Renews the lock from a background thread every `interval` seconds
--- (default ttl/3), on a connection of its own, until release. Use for
--- steps that may outlast the ttl; check() tells if renewal failed.
---@param interval number|nil
---@return runbook.redis.Lock
function Lock:keep_alive(interval)
  if self.dry_run or self.keeper then return self end
  interval = interval or self.ttl / 3
  if type(interval) ~= "number" or interval <= 0 then error("lock:keep_alive: positive interval expected", 2) end
  self.keeper = core.keeper(self.conn, self.key, self.value, self.ms, interval)
  return self
end

--- Raises when the background renewal found the lock lost.
function Lock:check()
  if self.keeper then
    local st = self.keeper:status()
    if st.lost then
      errors.raise { kind = "redis", code = "lock-lost", message = "redis lock " .. host.scrub(self.key) .. ": " .. st.why }
    end
  end
  return true
end

--- True while the key still holds this lock's value.
function Lock:held()
  if self.dry_run then return not self.released end
  local cur, err = self.conn:_command("GET", self.key)
  if err then error(err, 0) end
  return cur == self.value
end

function Lock:__close()
  if not self.released then pcall(self.release, self) end
end

function Lock:__tostring()
  return string.format("runbook.redis.Lock (%s, %s)", self.key, self.released and "released" or "held")
end

-- ---------------------------------------------------------------------------
-- readiness

--- Waits until Redis at `url` answers PING with PONG. Connection refused,
--- timeouts and LOADING are waited out; a wrong password or a bad URL
--- fails at once. Raises a wait timeout naming what was last seen.
---@param url string|userdata
---@param opts {timeout:number|nil, interval:number|nil, connect_timeout:number|nil}|nil
---@return true
function M.wait_ready(url, opts)
  opts = opts or {}
  local wait = require "runbook.wait"
  local ct = opts.connect_timeout or 2
  -- a wrong password or URL will not get better by waiting: carried out of
  -- the wait as a plain table, which ends it at once
  local ok, res = pcall(wait.until_, function()
    local conn, err = core.connect(url, { connect_timeout = ct, timeout = ct })
    if not conn then
      if err.code == "auth" or err.code == "url" then error({ stop = err }, 0) end
      return false, err.message
    end
    local r, perr = conn:_command("PING")
    conn:close()
    if r == "PONG" then return true end
    return false, perr and perr.message or ("PING answered " .. tostring(r))
  end, { timeout = opts.timeout or 30, interval = opts.interval or 0.2, backoff = opts.backoff,
         what = opts.what or "Redis to answer PING" })
  if ok then return res end
  if type(res) == "table" and getmetatable(res) == nil and res.stop then error(res.stop, 0) end
  error(res, 0)
end

return M
