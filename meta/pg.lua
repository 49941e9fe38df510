---@meta
-- Type stubs for the parts of runbook.pg implemented in C (src/lua_pg.c,
-- src/pg_sink.c). The Lua-implemented methods are annotated in
-- stdlib/runbook/pg.lua and stdlib/runbook/pg/*.lua.

---@class runbook.pg.Conn
local Conn = {}

--- "idle", "active", "transaction", "failed-transaction", "broken" or "closed".
---@return "idle"|"active"|"transaction"|"failed-transaction"|"broken"|"closed"
function Conn:status() end

--- Where the connection goes and who it is.
---@return {host:string, port:string, database:string, user:string, server_version:integer, backend_pid:integer, label:string}
function Conn:info() end

--- True once closed.
---@return boolean
function Conn:is_closed() end

--- Quotes a value as an SQL literal, with the server's rules (PQescapeLiteral).
---@param s string
---@return string
function Conn:escape_literal(s) end

--- Quotes an SQL identifier (PQescapeIdentifier).
---@param s string
---@return string
function Conn:escape_identifier(s) end

---@class runbook.pg.Hasher
local Hasher = {}
--- Adds bytes; returns the hasher.
---@param data string
---@return runbook.pg.Hasher
function Hasher:update(data) end
--- The lowercase hex sha256 of everything added (repeatable; no more updates after).
---@return string
function Hasher:hex() end
--- Bytes added so far.
---@return integer
function Hasher:size() end
