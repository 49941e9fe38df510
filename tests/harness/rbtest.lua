-- Shared helpers for specs: temporary directories, running the runbook
-- binary as a real process, free loopback ports, files.
local proc = require "runbook._proc"
local fs = require "runbook._fs"
local crypto = require "runbook._crypto"
local host = require "runbook._host"

local M = {}

M.bin = os.getenv("RUNBOOK_BIN") or "build/runbook"
M.bin = fs.realpath(M.bin) or M.bin
M.source_dir = os.getenv("RUNBOOK_SOURCE_DIR") or fs.cwd()

local tmp_root = os.getenv("TMPDIR") or "/tmp"

--- A fresh temporary directory (0700), removed by M.rmtree when done.
function M.tmpdir(tag)
  local dir = string.format("%s/rbtest-%s-%s", tmp_root, tag or "x", crypto.random_hex(6))
  assert(fs.mkdir_p(dir, 448))
  return dir
end

--- Removes a directory tree (only under the temporary root, as a guard).
function M.rmtree(dir)
  assert(dir:sub(1, #tmp_root + 8) == tmp_root .. "/rbtest-", "refusing to remove " .. dir)
  local p = assert(proc.spawn { argv = { "rm", "-rf", dir } })
  p:communicate {}
end

function M.write(path, text, mode)
  assert(fs.write_file(path, text, mode or 420))
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.exists(path) return fs.stat(path) ~= nil end

--- Polls `fn` until it returns a truthy value, and returns what it returned.
--- For a test that needs an event (a request in a fake's log, a file, a
--- row, a state) instead of sleeping a fixed time: the deadline is generous
--- because machines running the suite are shared and busy.
--- opts: timeout (seconds, default 30), interval (default 0.02).
--- Raises "timed out after N s waiting for <what>" (plus fn's second result,
--- if it gave one, as the last thing it saw).
function M.wait_for(what, fn, opts)
  opts = opts or {}
  local timeout = opts.timeout or 30
  local deadline = host.monotime() + timeout
  while true do
    local value, seen = fn()
    if value then return value end
    if host.monotime() > deadline then
      error(string.format("timed out after %g s waiting for %s%s", timeout, what,
        seen ~= nil and ("; last seen: " .. tostring(seen)) or ""), 2)
    end
    host.sleep(opts.interval or 0.02)
  end
end

--- Runs the runbook binary to completion.
--- opts: cwd, env (merged over ours), input, timeout (default 60).
--- Returns {code=, signal=, stdout=, stderr=}.
function M.run(args, opts)
  opts = opts or {}
  local argv = { M.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local env = { NO_COLOR = "1" }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local p = assert(proc.spawn { argv = argv, cwd = opts.cwd, env = env, stdin = opts.input and "pipe" or "null" })
  return p:communicate { input = opts.input, timeout = opts.timeout or 60 }
end

--- Starts the runbook binary without waiting (for crash tests).
function M.start(args, opts)
  opts = opts or {}
  local argv = { M.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local env = { NO_COLOR = "1" }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  return assert(proc.spawn { argv = argv, cwd = opts.cwd, env = env, stdout = "null", stderr = opts.stderr or "null" })
end

--- Runs `runbook exec` the way the e2e specs do, so none redefines it.
--- args: what follows "exec" (a list, or the runbook's path alone).
--- opts: state (--state DIR), params ({k = v}: --param k=v, in key order),
--- new (--new), yes (--yes), and cwd, env, input, timeout as for M.run;
--- start = true spawns it without waiting (M.start) and returns the process.
function M.exec(args, opts)
  opts = opts or {}
  local a = { "exec" }
  for _, x in ipairs(type(args) == "table" and args or { args }) do a[#a + 1] = x end
  if opts.state then a[#a + 1] = "--state"; a[#a + 1] = opts.state end
  if opts.new then a[#a + 1] = "--new" end
  if opts.yes then a[#a + 1] = "--yes" end
  local keys = {}
  for k in pairs(opts.params or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    a[#a + 1] = "--param"
    a[#a + 1] = k .. "=" .. tostring(opts.params[k])
  end
  if opts.start then return M.start(a, opts) end
  return M.run(a, opts)
end

--- The events of one type (all when t is nil) of the newest run in a store.
function M.events(state_dir, t)
  local out = {}
  for _, ev in ipairs((M.journal(state_dir))) do
    if t == nil or ev.type == t then out[#out + 1] = ev end
  end
  return out
end

--- A free TCP port on 127.0.0.1 (asks the kernel through python3).
function M.free_port()
  local p = assert(proc.spawn { argv = { "python3", "-c",
    "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1]);s.close()" } })
  local r = p:communicate { timeout = 10 }
  return assert(math.tointeger(tonumber(r.stdout)), "no free port: " .. r.stderr)
end

--- Reads a run's journal as a list of decoded events.
function M.journal(state_dir)
  local runs = fs.listdir(state_dir .. "/runs") or {}
  assert(#runs >= 1, "no run in " .. state_dir)
  local path = state_dir .. "/runs/" .. runs[#runs] .. "/journal.jsonl"
  local json = require "runbook._json"
  local out = {}
  for line in io.lines(path) do out[#out + 1] = json.decode(line) end
  return out, path, runs[#runs]
end

--- The events a running process has written to its newest journal so far
--- (complete lines only; none before the run has started), for waiting on
--- one with M.wait_for.
function M.journal_so_far(state_dir)
  local runs = fs.listdir(state_dir .. "/runs") or {}
  if #runs == 0 then return {} end
  local json = require "runbook._json"
  local out = {}
  for line in (M.read(state_dir .. "/runs/" .. runs[#runs] .. "/journal.jsonl") or ""):gmatch("([^\n]*)\n") do
    out[#out + 1] = json.decode(line)
  end
  return out
end

--- Deep equality that also holds metatables (json.null, marked empty
--- arrays) to the same identity: true, or false and where a and b differ
--- ("state.steps.B.status: done vs failed").
function M.same(a, b, path, seen)
  path, seen = path or "state", seen or {}
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) ~= "table" then
    if a == b then return true end
    return false, string.format("%s: %s vs %s", path, tostring(a), tostring(b))
  end
  if seen[a] == b then return true end
  seen[a] = b
  if getmetatable(a) ~= getmetatable(b) then return false, path .. ": metatables differ" end
  for k, v in pairs(a) do
    local ok, where = M.same(v, b[k], path .. "." .. tostring(k), seen)
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": only in the second" end
  end
  return true
end

return M
