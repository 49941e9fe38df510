---@meta
-- Type stubs for the C cores behind runbook.http and runbook.s3:
-- runbook._curl (src/lua_curl.c) and runbook._hash (src/lua_hash.c).

---@class runbook.curl.ClientOptions
---@field ca_file string|nil
---@field ca_data string|nil          PEM text
---@field cert_file string|nil
---@field cert_data string|nil        PEM text
---@field key_file string|nil
---@field key_data string|userdata|nil PEM text or a Secret
---@field insecure boolean|nil        false: peer and host are verified
---@field timeout number|nil          30 s (0 = none)
---@field connect_timeout number|nil  10 s
---@field http2 boolean|nil           true
---@field user_agent string|nil       "runbook/<version>"
---@field proxy string|nil

---@class runbook.curl.Request
---@field method string|nil           "GET"
---@field url string|userdata
---@field display_url string|nil      shown in messages instead of url
---@field headers table|nil           {{name, value}} or {Name = value}; values may be Secrets
---@field body string|userdata|nil
---@field upload (fun(max: integer): string|userdata|nil)|nil
---@field upload_size integer|nil
---@field on_data (fun(chunk: string, status: integer): boolean|nil)|nil
---@field timeout number|nil
---@field connect_timeout number|nil
---@field low_speed_time number|nil
---@field low_speed_limit number|nil
---@field follow boolean|nil
---@field max_redirs integer|nil
---@field path_as_is boolean|nil

---@class runbook.curl.Response
---@field status integer
---@field headers table<string, string>
---@field header_list string[][]
---@field body string|nil
---@field http_version string
---@field effective_url string
---@field time number

---@class runbook.curl.Client
local Client = {}

---@param req runbook.curl.Request
---@return runbook.curl.Response|nil res
---@return runbook.Error|nil err
function Client:request(req) end

function Client:close() end

---@class runbook.curl.WebSocket
local WebSocket = {}
---@param data string|userdata
---@param kind "binary"|"text"|"close"|nil
---@param timeout number|nil
---@return boolean|nil ok
---@return string|nil err
function WebSocket:send(data, kind, timeout) end
---@param timeout number|nil
---@return "binary"|"text"|"close"|nil kind
---@return string data_or_error
function WebSocket:recv(timeout) end
---@return string protocol
function WebSocket:protocol() end
function WebSocket:close() end

---@param opts {url:string, path:string, host:string, protocols:string, authorization:string|userdata|nil, timeout:number|nil}
---@return runbook.curl.WebSocket|nil ws
---@return runbook.Error|nil err
function Client:websocket(opts) end

---@class runbook.curl.PortForward
local PortForward = {}
---@return integer port
function PortForward:port() end
---@return integer accepted
---@return string|nil last_error
function PortForward:status() end
function PortForward:close() end

---@param opts {url:string, path:string, host:string, authorization:string|userdata|nil, local_port:integer|nil, timeout:number|nil}
---@return runbook.curl.PortForward
function Client:port_forward(opts) end

---@class runbook.curl
local curl = {}

---@param opts runbook.curl.ClientOptions|nil
---@return runbook.curl.Client
function curl.client(opts) end

---@return string version, {http2: boolean, ssl: string} features
function curl.version() end

---@class runbook.hash.Sha256
local Sha256 = {}
---@param data string|userdata
---@return runbook.hash.Sha256
function Sha256:update(data) end
---@param raw boolean|nil
---@return string
function Sha256:hex(raw) end
---@return integer
function Sha256:size() end

---@class runbook.hash
local hash = {}
---@param data string|userdata|nil
---@return runbook.hash.Sha256
function hash.sha256(data) end
