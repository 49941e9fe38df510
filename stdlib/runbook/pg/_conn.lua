-- The connection layer of runbook.pg: connections and queries with typed
-- rows, transactions, COPY, readiness. runbook.pg re-exports it beside the
-- operations built on it (migrations, backfills, backups), which require
-- this module, not runbook.pg, so the dependency runs one way.
--
-- Connections raise structured errors ({kind="pg", code=SQLSTATE, ...});
-- every method has a non-raising p-variant (pquery, pexec) for branching.
local core = require "runbook._pg"
local host = require "runbook._host"
local json = require "runbook._json"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local secret = require "runbook.secret"

local M = {}

--- The SQL NULL value in rows and parameters (the JSON null sentinel).
M.null = json.decode("null")

---@class runbook.pg.Conn
local Conn = core.methods
local close = Conn.close -- the C close, before the Lua one below wraps it

-- per connection: transaction depth, dry-run wrapping
local state = setmetatable({}, { __mode = "k" })

core.on_notice(function(level, msg) audit.log(level, "postgres: " .. msg) end)

local function raise(err) error(err, 0) end

local function check_opts(fname, opts)
  if opts ~= nil and type(opts) ~= "table" then error(fname .. ": options table expected", 3) end
  return opts or {}
end

--- Opens a connection without the dry-run wrapping (for the primitives
--- that handle --dry-run themselves). Raises on failure.
---@param url string|userdata
---@param opts table|nil
---@return runbook.pg.Conn
function M._open(url, opts)
  if url == nil then error("runbook.pg: url required (a connection URL or a secret holding one)", 3) end
  local c, err = core.connect(url, opts)
  if not c then raise(err) end
  state[c] = { depth = 0 }
  return c
end

--- Connects from a URL (`postgres://user:pass@host:port/db?sslmode=require`)
--- or a keyword/value string, given as a string or a secret. Under
--- `--dry-run` the connection runs everything inside one transaction that
--- is rolled back when it closes.
---@param url string|userdata
---@param opts {connect_timeout:number|nil, statement_timeout:number|nil, application_name:string|nil}|nil
---@return runbook.pg.Conn
function M.connect(url, opts)
  opts = check_opts("pg.connect", opts)
  local c = M._open(url, opts)
  if audit.dry_run() then
    local ok, err = c:_exec("BEGIN")
    if not ok then c:close() raise(err) end
    state[c].dry = true
  end
  return c
end

--- A parsed connection string (keyword -> string or secret, as
--- core.conninfo_parse gives it) as keyword/value text, keywords sorted,
--- each value quoted; empty values and the keywords in `skip` left out.
--- Secrets are revealed: the caller wraps or hands on the text with care.
---@param o table
---@param skip table|nil  keyword -> true
---@return string
function M.conninfo_text(o, skip)
  local keys = {}
  for k in pairs(o) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = o[k]
    if secret.is(v) then v = v:reveal() else v = tostring(v) end
    if v ~= "" and not (skip and skip[k]) then
      parts[#parts + 1] = k .. "='" .. v:gsub("\\", "\\\\"):gsub("'", "\\'") .. "'"
    end
  end
  return table.concat(parts, " ")
end

--- The server `url` names, with some of its parameters changed (libpq's
--- keywords: `{user=, password=, dbname=, ...}`, a value a string, a
--- number or a secret): a keyword/value connection string, as a secret.
---@param url string|userdata
---@param changes table|nil
---@return userdata
function M.conninfo(url, changes)
  if url == nil then error("pg.conninfo: url required (a connection URL or a secret holding one)", 2) end
  if changes ~= nil and type(changes) ~= "table" then error("pg.conninfo: changes must be a table", 2) end
  local o, err = core.conninfo_parse(url)
  if not o then
    errors.raise { kind = "usage", code = "conninfo", message = "pg.conninfo: " .. errors.message(err) }
  end
  for k, v in pairs(changes or {}) do o[k] = v end
  return secret.wrap(M.conninfo_text(o))
end

--- True when v is a connection made by runbook.pg.
function M.is_conn(v) return core.is_conn(v) end

--- Like connect, but returns nil and the error instead of raising.
---@return runbook.pg.Conn|nil, runbook.Error|nil
function M.try_connect(url, opts)
  local ok, c = pcall(M.connect, url, opts)
  if ok then return c end
  return nil, c
end

-- ---------------------------------------------------------------------------
-- queries

--- Runs one statement with `$1`, `$2`... parameters and returns its rows
--- (tables keyed by column name) and an info table {command, affected, fields}.
--- Parameters: nil/pg.null → NULL, booleans, numbers, strings (binary-safe),
--- secrets, tables (sent as JSON).
---@param sql string
---@return table[] rows, table info
function Conn:query(sql, ...)
  local rows, info = self:_query(sql, ...)
  if rows == nil then raise(info) end
  return rows, info
end

--- query without raising: rows, info | nil, err
function Conn:pquery(sql, ...)
  return self:_query(sql, ...)
end

--- The first row, or nil when there is none.
---@return table|nil
function Conn:query_one(sql, ...)
  local rows = self:query(sql, ...)
  return rows[1]
end

--- The first column of the first row, or nil when there is no row.
function Conn:value(sql, ...)
  local rows, info = self:query(sql, ...)
  if not rows[1] then return nil end
  return rows[1][info.fields[1]]
end

local function summarize(sql)
  local s = sql:gsub("%s+", " "):gsub("^ ", "")
  if #s > 200 then s = s:sub(1, 197) .. "..." end
  return s
end

--- Runs SQL that changes something and returns the number of rows it
--- affected (nil for commands that report none) and the info table.
--- Without parameters several statements may be given at once. Recorded
--- as an audited `pg` action.
---@param sql string
---@return integer|nil affected, table info
function Conn:exec(sql, ...)
  local info, err
  if select("#", ...) > 0 then
    local rows, i = self:_query(sql, ...)
    if rows then info = i else err = i end
  else
    info, err = self:_exec(sql)
  end
  if not info then raise(err) end
  local where = self:info()
  audit.action {
    kind = "pg", verb = "exec", server = where.label, statement = summarize(sql),
    command = info.command, affected = info.affected,
    summary = string.format("%s%s on %s", info.command or "SQL",
      info.affected and (" " .. info.affected) or "", where.database),
  }
  return info.affected, info
end

--- exec without raising: affected, info | nil, err
function Conn:pexec(sql, ...)
  local ok, a, info = pcall(self.exec, self, sql, ...)
  if ok then return a, info end
  return nil, a
end

--- Runs fn(conn) in a transaction: committed when fn returns, rolled back
--- when it raises (the error is raised again). Nested calls use savepoints.
--- Returns what fn returns.
---@param fn fun(conn:runbook.pg.Conn):any
---@param opts {isolation:"read committed"|"repeatable read"|"serializable"|nil, read_only:boolean|nil}|nil
function Conn:tx(fn, opts)
  if type(fn) ~= "function" then error("tx: function expected", 2) end
  opts = check_opts("tx", opts)
  local st = state[self] or { depth = 0 }
  state[self] = st
  local sp = (st.depth > 0 or st.dry) and ("runbook_sp_" .. (st.depth + 1)) or nil
  local begin = "BEGIN"
  if sp then
    begin = "SAVEPOINT " .. sp
  else
    if opts.isolation then
      local iso = ({ ["read committed"] = true, ["repeatable read"] = true, serializable = true })[opts.isolation]
      if not iso then error("tx: isolation must be 'read committed', 'repeatable read' or 'serializable'", 2) end
      begin = begin .. " ISOLATION LEVEL " .. opts.isolation:upper()
    end
    if opts.read_only then begin = begin .. " READ ONLY" end
  end
  local ok, err = self:_exec(begin)
  if not ok then raise(err) end
  st.depth = st.depth + 1
  local r = table.pack(pcall(fn, self))
  st.depth = st.depth - 1
  if not r[1] then
    local ok_call, rolled = false, nil
    if not self:is_closed() then
      ok_call, rolled = pcall(self._exec, self, sp and ("ROLLBACK TO SAVEPOINT " .. sp) or "ROLLBACK")
    end
    if not (ok_call and rolled) and not sp then
      -- the rollback itself failed (interrupted, connection lost): never
      -- leave a half transaction on a connection someone may use again
      close(self)
    end
    error(r[2], 0)
  end
  ok, err = self:_exec(sp and ("RELEASE SAVEPOINT " .. sp) or "COMMIT")
  if not ok then raise(err) end
  return table.unpack(r, 2, r.n)
end

--- COPY ... FROM STDIN: sends source (a string, an array of strings, or a
--- function returning the next chunk and nil at the end). Returns the
--- number of rows copied.
---@param sql string
---@param source string|string[]|fun():string|nil
---@return integer rows
function Conn:copy_in(sql, source)
  local rows, bytes = self:_copy_in(sql, source)
  if rows == nil then raise(bytes) end
  return rows, bytes
end

--- COPY ... TO STDOUT: calls fn(chunk) with whole rows (chunks of about
--- chunk_bytes, default 256 KiB). Returns the number of rows.
---@param sql string
---@param fn fun(chunk:string)
---@param chunk_bytes integer|nil
---@return integer rows
function Conn:copy_out(sql, fn, chunk_bytes)
  local rows, bytes = self:_copy_out(sql, fn, chunk_bytes)
  if rows == nil then raise(bytes) end
  return rows, bytes
end

--- Quotes a value as an SQL literal / identifier.
---@param s string
function Conn:literal(s) return self:escape_literal(tostring(s)) end
function Conn:ident(s) return self:escape_identifier(s) end

--- Closes the connection (a dry-run connection rolls back first). Safe to
--- call twice; `local db <close> = pg.connect(url)` closes it on scope exit.
function Conn:close()
  local st = state[self]
  if st and st.dry and not self:is_closed() then pcall(self._exec, self, "ROLLBACK") end
  return close(self)
end

--- Streams COPY ... TO STDOUT on src into COPY ... FROM STDIN on dst
--- without passing rows through Lua. Returns rows and bytes.
function M.copy(src, out_sql, dst, in_sql)
  local rows, bytes = core.copy_pipe(src, out_sql, dst, in_sql)
  if rows == nil then raise(bytes) end
  return rows, bytes
end

-- ---------------------------------------------------------------------------
-- readiness

local PERMANENT = { ["28P01"] = true, ["28000"] = true, ["3D000"] = true, ["08P01"] = true }

--- Waits until the server accepts connections and answers `SELECT 1`.
--- Retries refused connections and "starting up"; a wrong password, a
--- missing database or a bad URL fail at once. Returns the seconds waited.
---@param opts {url:string|userdata, timeout:number|nil, interval:number|nil}
---@return number seconds
function M.wait_ready(opts)
  opts = check_opts("pg.wait_ready", opts)
  if opts.url == nil then error("pg.wait_ready: url required", 2) end
  local timeout, interval = opts.timeout or 60, opts.interval or 0.5
  local t0 = host.monotime()
  local last, told
  while true do
    local left = timeout - (host.monotime() - t0)
    local c, err = core.connect(opts.url, { connect_timeout = math.max(0.5, math.min(5, left)) })
    if c then
      local rows
      rows, err = c:_query("SELECT 1 AS ok")
      c:close()
      if rows then return host.monotime() - t0 end
    end
    last = err
    if PERMANENT[err.code] then raise(err) end
    if host.monotime() - t0 + interval > timeout then
      errors.raise { kind = "pg", code = "timeout", details = err.details,
        message = string.format("PostgreSQL not ready after %g s: %s", timeout, errors.message(last)) }
    end
    if not told then
      audit.log("info", "waiting for PostgreSQL: " .. errors.message(err))
      told = true
    end
    host.sleep(interval)
  end
end

return M
