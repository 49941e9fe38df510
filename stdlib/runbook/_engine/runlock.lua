-- runbook._engine.runlock: the lock behind `runbook exec --lock redis://...`, so two
-- operators on two machines cannot drive the same runbook at once. The
-- journal's file lock guards one machine; this one lives in a Redis both
-- machines reach. It is a runbook.redis lock on "runbook:lock:<name>",
-- renewed from a background thread for as long as the run lasts, and
-- released (only by its holder) when the run ends. A run that dies without
-- releasing it frees it after the ttl, or at once for an exec on the same
-- machine that finds the holder's process gone.
local host = require "runbook._host"
local json = require "runbook._json"
local core = require "runbook._redis"
local redis = require "runbook.redis"
local errors = require "runbook.errors"

local M = {}

M.PREFIX = "runbook:lock:"

---@class runbook._engine.runlock.Handle
---@field key string
---@field owner string  what the lock names as its holder
local Handle = {}
Handle.__index = Handle

-- A holder on this machine whose process is gone (SIGKILL, a crash)
-- cannot release its lock, and waiting for the ttl would only hold up the
-- resume. Its lock is deleted, only if it is still that very value, and
-- its owner returned. A holder named on another host, or whose pid is
-- alive (even a reused one), is left to its ttl.
local function clear_stale(conn, key)
  local cur = conn:_command("GET", key)
  if type(cur) ~= "string" then return nil end
  local ok, v = pcall(json.decode, cur)
  if not ok or type(v) ~= "table" or type(v.owner) ~= "string" then return nil end
  local at, pid = v.owner:match("^[^@]*@(%S+) pid (%d+)")
  if at ~= host.hostname() or not pid or host.pid_alive(tonumber(pid)) then return nil end
  if conn:_command("EVAL", core.RELEASE_SCRIPT, 1, key, cur) ~= 1 then return nil end
  return v.owner
end

--- Takes the run lock for runbook `name` in the Redis at `url` (a string
--- or a secret). Returns a handle, or nil and a description of the holder
--- ("alice@laptop pid 4242 run first-deploy-2026... since 2026-..."). A lock
--- whose holder was a process of this machine that is gone is taken over:
--- the handle's `took_over` names that holder.
--- Raises a structured error (kind "redis") when Redis cannot be reached
--- or refuses the password.
---@param url string|userdata
---@param name string  the runbook's name
---@param opts {ttl:number|nil, run:string|nil, wait:number|nil, connect_timeout:number|nil, timeout:number|nil}|nil
---@return runbook._engine.runlock.Handle|nil
---@return string|nil holder
function M.acquire(url, name, opts)
  if type(name) ~= "string" or name == "" then error("runlock.acquire: runbook name expected", 2) end
  opts = opts or {}
  local ttl = opts.ttl or 60
  if type(ttl) ~= "number" or ttl < 1 then error("runlock.acquire: ttl must be at least 1 second", 2) end
  local conn = redis.connect(url, { connect_timeout = opts.connect_timeout or 5, timeout = opts.timeout or 5 })
  local owner = string.format("%s@%s pid %d%s", host.user(), host.hostname(), host.pid(),
    opts.run and (" run " .. opts.run) or "")
  local stale
  local ok, lock, holder = pcall(redis._take, conn, M.PREFIX .. name, { ttl = ttl, owner = owner, wait = opts.wait })
  if ok and not lock then
    local cleared, found = pcall(clear_stale, conn, M.PREFIX .. name)
    if not cleared then ok, lock = false, found
    elseif found then
      stale = found
      ok, lock, holder = pcall(redis._take, conn, M.PREFIX .. name, { ttl = ttl, owner = owner, wait = opts.wait })
    end
  end
  if not ok then
    conn:close()
    error(lock, 0)
  end
  if not lock then
    conn:close()
    return nil, holder
  end
  lock.quiet = true -- the engine records the run lock itself, outside any step
  lock:keep_alive()
  return setmetatable({ key = lock.key, owner = owner, lock = lock, conn = conn, name = name, took_over = stale }, Handle)
end

--- Renews the lock now (the background thread also does, every ttl/3).
---@return boolean  false when the lock was lost
function Handle:renew()
  return self.lock:renew()
end

--- Raises {kind="redis", code="lock-lost"} when the lock could not be
--- renewed or was taken over; the engine calls it between steps.
function Handle:check()
  self.lock:check()
  return true
end

--- Releases the lock (if still ours) and closes the connection. Returns
--- false when it had already been lost. Safe to call twice.
---@return boolean
function Handle:release()
  if self.released then return false end
  self.released = true
  local ok, res = pcall(self.lock.release, self.lock)
  self.conn:close()
  if not ok then
    errors.raise { kind = "redis", code = "unlock", message = "could not release the run lock " .. self.key .. ": " .. errors.message(res) }
  end
  return res
end

Handle.__close = function(self) if not self.released then pcall(self.release, self) end end
Handle.__tostring = function(self) return "runbook._engine.runlock (" .. self.key .. ", " .. self.owner .. ")" end

return M
