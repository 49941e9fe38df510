-- runbook.sh: commands as argv, never through a shell unless the author
-- asks for sh.shell. Each command runs in its own process group (a timeout
-- kills the whole tree: SIGTERM, then SIGKILL after a grace period), its
-- output streams to the run log line by line with secrets scrubbed, and it
-- is recorded as an audited action. Under --dry-run commands are shown,
-- not run, unless marked read_only.
local proc = require "runbook._proc"
local host = require "runbook._host"
local fs = require "runbook._fs"
local secretcore = require "runbook._secret"
local errors = require "runbook.errors"
local audit = require "runbook._engine.audit"

local M = {}

local ENOENT, EACCES = 2, 13

local OPTS = {
  env = "table", replace_env = "boolean", cwd = "string", stdin = "bytes", timeout = "number",
  grace = "number", check = "boolean", read_only = "boolean", log = "boolean", secret_output = "boolean",
}

local function check_opts(fname, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fname .. ": options must be a table", 3) end
  for k, v in pairs(opts) do
    local want = OPTS[k]
    if not want then error(string.format("%s: unknown option '%s'", fname, tostring(k)), 3) end
    if want == "bytes" then
      if type(v) ~= "string" and not secretcore.is(v) then
        error(string.format("%s: %s must be a string or a secret", fname, k), 3)
      end
    elseif type(v) ~= want then
      error(string.format("%s: %s must be a %s, got %s", fname, k, want, type(v)), 3)
    end
  end
  if opts.timeout and opts.timeout <= 0 then error(fname .. ": timeout must be positive", 3) end
  if opts.env then
    for k, v in pairs(opts.env) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number" and not secretcore.is(v)) then
        error(fname .. ": env must map names to strings or secrets", 3)
      end
    end
  end
  return opts
end

-- one argument as shown in logs and the journal: secrets redacted, other
-- text scrubbed, quoted when a shell would split or expand it
local function shown_arg(a)
  if secretcore.is(a) then return "[REDACTED]" end
  a = host.scrub(tostring(a))
  if a == "" or a:find("[%s'\"\\$`|&;<>()*?#~{}%[%]!]") then
    return "'" .. a:gsub("'", "'\\''") .. "'"
  end
  return a
end

local function scrubbed_argv(argv)
  local out = {}
  for i, a in ipairs(argv) do
    out[i] = secretcore.is(a) and "[REDACTED]" or host.scrub(tostring(a))
  end
  return out
end

local function shown_argv(argv)
  local t = {}
  for i, a in ipairs(argv) do t[i] = shown_arg(a) end
  return table.concat(t, " ")
end

local function check_argv(fname, argv)
  if type(argv) ~= "table" then error(fname .. ": argv must be a table ({\"prog\", \"arg\", ...})", 3) end
  if #argv == 0 then error(fname .. ": argv is empty", 3) end
  for i, a in ipairs(argv) do
    if type(a) ~= "string" and type(a) ~= "number" and not secretcore.is(a) then
      error(string.format("%s: argv[%d] must be a string, number or secret, got %s", fname, i, type(a)), 3)
    end
  end
  if type(argv[1]) ~= "string" or argv[1] == "" then error(fname .. ": argv[1] must name the program", 3) end
end

local function tail_lines(text, n)
  local lines = {}
  for line in tostring(text):gmatch("[^\n]+") do
    if line:find("%S") then
      lines[#lines + 1] = #line > 200 and (line:sub(1, 200) .. "…") or line
      if #lines > n then table.remove(lines, 1) end
    end
  end
  return lines
end

local function duration(s)
  if s < 1 then return string.format("%dms", math.floor(s * 1000 + 0.5)) end
  return string.format("%.1fs", s)
end

--- The full path of an executable found on PATH (or opts.path), or nil.
---@param name string
---@param path string|nil  a PATH-style list (default: $PATH)
---@return string|nil
function M.which(name, path)
  if type(name) ~= "string" or name == "" then error("sh.which: program name expected", 2) end
  local function executable(p)
    local st = fs.stat(p)
    return st and st.type == "file" and (st.mode & 73) ~= 0
  end
  if name:find("/", 1, true) then return executable(name) and name or nil end
  for dir in (path or os.getenv("PATH") or ""):gmatch("[^:]+") do
    local p = dir .. "/" .. name
    if executable(p) then return p end
  end
  return nil
end

--- Runs argv (a list: program and arguments; strings, numbers or secrets)
--- without a shell and returns {code, signal, stdout, stderr, duration,
--- timed_out}. Raises {kind="command"} when the program is not found, on
--- a timeout and on a non-zero exit (unless check = false).
---@param argv (string|number|userdata)[]
---@param opts {env:table|nil, replace_env:boolean|nil, cwd:string|nil, stdin:string|userdata|nil, timeout:number|nil, grace:number|nil, check:boolean|nil, read_only:boolean|nil, log:boolean|nil, secret_output:boolean|nil}|nil
---@return {code:integer|nil, signal:integer|nil, stdout:string|userdata, stderr:string, duration:number, timed_out:boolean, dry_run:boolean|nil}
function M.run(argv, opts)
  check_argv("sh.run", argv)
  opts = check_opts("sh.run", opts)
  return M._run(argv, opts, shown_argv(argv))
end

function M._run(argv, opts, shown)
  local scrubbed = scrubbed_argv(argv)
  local envkeys
  if opts.env then
    envkeys = {}
    for k in pairs(opts.env) do envkeys[#envkeys + 1] = k end
    table.sort(envkeys)
  end
  if audit.dry_run() and not opts.read_only then
    audit.log("info", "would run: " .. shown)
    audit.action { kind = "command", argv = scrubbed, env = envkeys, cwd = opts.cwd, summary = "would run: " .. shown }
    return { code = 0, stdout = opts.secret_output and secretcore.new("") or "", stderr = "", duration = 0,
      timed_out = false, dry_run = true }
  end

  local p, msg, eno = proc.spawn {
    argv = argv, env = opts.env, replace_env = opts.replace_env, cwd = opts.cwd,
    stdin = opts.stdin ~= nil and "pipe" or "null", stdout = "pipe", stderr = "pipe",
  }
  if not p then
    local prog = host.scrub(tostring(argv[1]))
    if eno == ENOENT and msg:find("^cannot change directory") == nil then
      local where = prog:find("/", 1, true) and "no such file"
        or ("not on PATH: " .. ((opts.env and opts.env.PATH) or os.getenv("PATH") or ""))
      errors.raise { kind = "command", code = "not-found", message = string.format("command not found: %s (%s)", prog, where),
        details = { argv = scrubbed } }
    end
    local code = msg:find("^cannot change directory") and "cwd" or eno == EACCES and "not-executable" or "spawn"
    errors.raise { kind = "command", code = code,
      message = host.scrub(msg), details = { argv = scrubbed } }
  end

  local name = tostring(argv[1]):match("([^/]+)$") or tostring(argv[1])
  local on_line
  if opts.log ~= false then
    on_line = function(stream, line)
      if stream == "stdout" then
        if not opts.secret_output then audit.log("info", name .. ": " .. line) end
      else
        audit.log("info", name .. " (stderr): " .. line)
      end
    end
  end
  local r = p:communicate { input = opts.stdin, timeout = opts.timeout, grace = opts.grace or 5, on_line = on_line }
  -- Ctrl-C or the step's own timeout: the child is gone, now stop the step
  host.check_interrupt()

  local result = {
    code = r.code, signal = r.signal, stdout = r.stdout, stderr = r.stderr, duration = r.duration,
    timed_out = r.timed_out,
  }
  if opts.secret_output then result.stdout = secretcore.new(r.stdout) end
  local outcome
  if r.timed_out then
    outcome = r.signal == 9 and "timed out, killed with SIGKILL" or "timed out, stopped with SIGTERM"
  elseif r.code then
    outcome = "exit " .. r.code
  else
    outcome = "killed by signal " .. tostring(r.signal)
  end
  audit.action {
    kind = "command", argv = scrubbed, env = envkeys, cwd = opts.cwd, code = r.code, signal = r.signal,
    timed_out = r.timed_out or nil, duration_ms = math.floor(r.duration * 1000 + 0.5),
    summary = string.format("%s → %s (%s)", shown, outcome, duration(r.duration)),
  }
  if opts.check == false then return result end

  local tail = tail_lines(r.stderr, 5)
  local tail_text = #tail > 0 and ("\n  stderr: " .. host.scrub(table.concat(tail, "\n          "))) or ""
  if r.timed_out then
    local how = r.signal == 9
      and string.format("it ignored SIGTERM and was killed with SIGKILL after %s s", tostring(opts.grace or 5))
      or "it was stopped with SIGTERM"
    errors.raise { kind = "command", code = "timeout",
      message = string.format("command timed out after %s s: %s (%s)%s", tostring(opts.timeout), shown, how, tail_text),
      details = { argv = scrubbed, signal = r.signal, stderr_tail = tail } }
  elseif r.code ~= 0 then
    local what = r.code and ("exited with code " .. r.code) or ("was killed by signal " .. tostring(r.signal))
    errors.raise { kind = "command", code = r.code or "signal",
      message = string.format("command %s: %s%s", what, shown, tail_text),
      details = { argv = scrubbed, code = r.code, signal = r.signal, stderr_tail = tail } }
  end
  return result
end

--- Runs a shell script with /bin/sh -c: only when the author wants a
--- shell (pipes, globbing). Prefer sh.run with argv.
---@param script string|userdata
---@param opts table|nil  as for sh.run
---@return table result
function M.shell(script, opts)
  if type(script) ~= "string" and not secretcore.is(script) then error("sh.shell: script string expected", 2) end
  opts = check_opts("sh.shell", opts)
  return M._run({ "/bin/sh", "-c", script }, opts, "sh -c " .. shown_arg(script))
end

--- Runs argv and returns its stdout without the trailing newline (a
--- secret with secret_output = true). Raises as sh.run does.
---@param argv (string|number|userdata)[]
---@param opts table|nil  as for sh.run
---@return string|userdata
function M.output(argv, opts)
  check_argv("sh.output", argv)
  opts = check_opts("sh.output", opts)
  local r = M._run(argv, opts, shown_argv(argv))
  if opts.secret_output then
    local s = r.stdout:reveal():gsub("\r?\n$", "")
    return secretcore.new(s)
  end
  return (r.stdout:gsub("\r?\n$", ""))
end

return M
