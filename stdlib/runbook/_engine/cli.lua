-- The command line: parsing, help, dispatch and the mapping of outcomes to
-- exit codes. main() is called by src/main.c inside a protected call.
local host = require "runbook._host"
local errors = require "runbook.errors"

local M = {}

local EXIT_TEXT = [[
Exit codes: 0 finished, 1 a step failed, 2 usage or runbook error,
3 waiting for a manual step, 4 run locked by another process, 130 interrupted.
]]

local COMMON = {
  ["--state"] = { value = true, help = "the state store directory (default .runbook, or RUNBOOK_STATE)" },
  ["--help"] = { help = "show this help" },
}

-- name -> { args = {...names}, min = n, max = n, opts = {...}, summary, help }
local COMMANDS = {
  exec = {
    usage = "runbook exec FILE [options]",
    summary = "run a runbook, resuming its newest unfinished run",
    args = { "FILE" }, min = 1, max = 1,
    opts = {
      ["--param"] = { value = true, multi = true, help = "set a param: NAME=VALUE (repeatable)" },
      ["--values"] = { value = true, help = "params from a YAML file of NAME: VALUE" },
      ["--new"] = { help = "start a new run even if one is unfinished" },
      ["--from"] = { value = true, help = "start at STEP (earlier pending steps are left for later)" },
      ["--only"] = { value = true, help = "run only STEP" },
      ["--dry-run"] = { help = "run steps with every writing primitive in dry mode; record nothing" },
      ["--yes"] = { help = "never prompt: manual steps wait for `runbook confirm`" },
      ["--accept-changes"] = { help = "resume even though completed steps were removed, renamed or reordered" },
      ["--output"] = { value = true, help = "json: stream events as JSON lines on stdout" },
      ["--jobs"] = { value = true, help = "how many steps of a parallel group run at once (default 4)" },
      ["--lock"] = { value = true, help = "redis://...: hold a Redis lock on this runbook while it runs, so no other machine drives it (exit 4 if held); or RUNBOOK_LOCK" },
    },
    help = [[
Runs FILE. When the store holds an unfinished run of this runbook, it is
resumed: done, skipped and confirmed steps are not run again, and an
interrupted step runs again with its memos and checkpoints.]],
  },
  plan = {
    usage = "runbook plan FILE [options]",
    summary = "list the steps, their status in the current run and what would run next",
    args = { "FILE" }, min = 1, max = 1,
    opts = { ["--output"] = { value = true, help = "json: the plan as JSON" } },
  },
  status = {
    usage = "runbook status [RUN] [options]",
    summary = "show one run step by step (default: the newest)",
    args = { "RUN" }, min = 0, max = 1,
    opts = { ["--output"] = { value = true, help = "json: the folded state as JSON" } },
  },
  runs = {
    usage = "runbook runs [options]",
    summary = "list all runs in the store",
    min = 0, max = 0,
    opts = { ["--output"] = { value = true, help = "json: one object per run" } },
  },
  log = {
    usage = "runbook log RUN [options]",
    summary = "show a run's audit trail",
    args = { "RUN" }, min = 0, max = 1,
    opts = {
      ["--output"] = { value = true, help = "json: the journal's lines as stored" },
      ["--step"] = { value = true, help = "only events of STEP" },
    },
  },
  audit = {
    usage = "runbook audit verify RUN",
    summary = "verify a run's hash chain (and HMACs with RUNBOOK_AUDIT_KEY)",
    args = { "verify", "RUN" }, min = 2, max = 2,
    opts = { ["--output"] = { value = true, help = "json: the result as JSON" } },
    help = [[
Checks every event's seq, prev and hash (and HMAC when the journal has
them). Exits 0 when the chain holds; otherwise exits 1 and names the first
bad seq.]],
  },
  report = {
    usage = "runbook report RUN [--output FILE.html]",
    summary = "write one run as a self-contained HTML page",
    args = { "RUN" }, min = 1, max = 1, output_file = true,
    opts = { ["--output"] = { value = true, help = "write the page to FILE (mode 0600) instead of stdout" } },
    help = [[
The page has the run's header (chain and HMAC state), a timeline of its
attempts, each step with its actions, confirmations and run log lines, and
the whole audit trail with a filter. It loads nothing from anywhere: every
value is escaped and scrubbed, and its only script is its own.]],
  },
  serve = {
    usage = "runbook serve [--listen 127.0.0.1:8080]",
    summary = "a read-only web view of the store's runs (live while they run)",
    min = 0, max = 0,
    opts = { ["--listen"] = { value = true, help = "ADDRESS:PORT to listen on (default 127.0.0.1:8080; port 0 picks one)" } },
    help = [[
Serves the runs, each run's report page (updated as events arrive), the
runs waiting for a person with the command that confirms them, and audit
verification, with the JSON API behind them (docs/serve.md). It changes
nothing in the store. Any address but loopback needs RUNBOOK_SERVE_TOKEN:
clients then send it as "Authorization: Bearer TOKEN", or open
/?token=TOKEN once to get a cookie.]],
  },
  confirm = {
    usage = "runbook confirm RUN STEP [--note TEXT]",
    summary = "record that a person completed a manual step",
    args = { "RUN", "STEP" }, min = 2, max = 2,
    opts = { ["--note"] = { value = true, help = "a note for the audit trail" } },
  },
  reset = {
    usage = "runbook reset RUN STEP",
    summary = "make a completed step run again on the next exec (recorded)",
    args = { "RUN", "STEP" }, min = 2, max = 2,
    opts = { ["--note"] = { value = true, help = "why, for the audit trail" } },
  },
  rollback = {
    usage = "runbook rollback RUN [--to STEP]",
    summary = "run the undo of completed steps, newest first (recorded)",
    args = { "RUN" }, min = 1, max = 1,
    opts = {
      ["--to"] = { value = true, help = "stop at STEP (it stays done)" },
      ["--output"] = { value = true, help = "json: stream events as JSON lines" },
    },
  },
  check = {
    usage = "runbook check FILE [--param NAME=VALUE]...",
    summary = "static checks: syntax, unique ids, unknown needs, cycles, params",
    args = { "FILE" }, min = 1, max = 1,
    opts = {
      ["--param"] = { value = true, multi = true, help = "check these params against the declaration" },
      ["--values"] = { value = true, help = "check a values file against the declaration" },
    },
  },
  doc = {
    usage = "runbook doc FILE",
    summary = "print the runbook as a Markdown checklist",
    args = { "FILE" }, min = 1, max = 1, opts = {},
  },
  test = {
    usage = "runbook test [PATH...] [busted options]",
    summary = "run busted specs inside runbook, with every module available",
    passthrough = true,
  },
  version = { usage = "runbook version", summary = "print the version", min = 0, max = 0, opts = {} },
}

local ORDER = { "exec", "plan", "status", "runs", "log", "audit", "report", "serve", "confirm", "reset", "rollback", "check", "doc", "test", "version" }

local function usage_error(fmt, ...)
  errors.raise { kind = "usage", message = string.format(fmt, ...) }
end

local function main_help()
  local lines = { "runbook — resumable, audited deploy runbooks", "", "Usage: runbook COMMAND [ARGS] [OPTIONS]", "", "Commands:" }
  for _, name in ipairs(ORDER) do
    lines[#lines + 1] = string.format("  %-10s %s", name, COMMANDS[name].summary)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Run `runbook COMMAND --help` for a command's options."
  lines[#lines + 1] = ""
  return table.concat(lines, "\n") .. "\n" .. EXIT_TEXT
end

local function command_help(name)
  local c = COMMANDS[name]
  local lines = { "Usage: " .. c.usage, "", c.summary .. "." }
  if c.help then
    lines[#lines + 1] = ""
    lines[#lines + 1] = c.help
  end
  local names = {}
  for k in pairs(c.opts or {}) do names[#names + 1] = k end
  if not c.passthrough then
    for k in pairs(COMMON) do names[#names + 1] = k end
  end
  table.sort(names)
  if #names > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Options:"
    for _, k in ipairs(names) do
      local o = (c.opts or {})[k] or COMMON[k]
      lines[#lines + 1] = string.format("  %-22s %s", k .. (o.value and " VALUE" or ""), o.help)
    end
  end
  lines[#lines + 1] = ""
  return table.concat(lines, "\n") .. "\n" .. EXIT_TEXT
end

--- Parses argv for a command: returns positional args and an options table
--- keyed by option name without dashes ("dry_run" for --dry-run).
function M.parse(name, argv)
  local c = COMMANDS[name]
  local pos, opts = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do pos[#pos + 1] = argv[j] end
      break
    elseif a == "-h" then
      opts.help = true
    elseif a:sub(1, 2) == "--" then
      local key, val = a:match("^(%-%-[^=]+)=(.*)$")
      key = key or a
      local spec = (c.opts or {})[key] or COMMON[key]
      if not spec then usage_error("%s: unknown option %s (see runbook %s --help)", name, key, name) end
      local field = key:sub(3):gsub("%-", "_")
      if spec.value then
        if val == nil then
          i = i + 1
          val = argv[i]
          if val == nil then usage_error("%s: option %s needs a value", name, key) end
        end
        if spec.multi then
          opts[field] = opts[field] or {}
          table.insert(opts[field], val)
        else
          opts[field] = val
        end
      else
        if val ~= nil then usage_error("%s: option %s takes no value", name, key) end
        opts[field] = true
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  if opts.help then return pos, opts end
  if c.min and #pos < c.min then
    usage_error("%s: missing %s (usage: %s)", name, table.concat(c.args or {}, " "), c.usage)
  end
  if c.max and #pos > c.max then usage_error("%s: unexpected argument '%s' (usage: %s)", name, pos[c.max + 1], c.usage) end
  if opts.output and not c.output_file and opts.output ~= "json" and opts.output ~= "text" then
    usage_error("%s: --output must be json or text", name)
  end
  if opts.output == "text" and not c.output_file then opts.output = nil end
  return pos, opts
end

local function dispatch(argv)
  local name = argv[1]
  if name == nil or name == "--help" or name == "-h" or name == "help" then
    if name == "help" and argv[2] and COMMANDS[argv[2]] then
      host.write(1, command_help(argv[2]))
      return 0
    end
    host.write(name and 1 or 2, main_help())
    return name and 0 or 2
  end
  if name == "--version" then name = "version" end
  local c = COMMANDS[name]
  if not c then usage_error("unknown command '%s' (see runbook --help)", name) end
  local rest = { table.unpack(argv, 2) }
  if c.passthrough then
    if rest[1] == "--help" or rest[1] == "-h" then
      host.write(1, command_help(name) .. "\nOther options are busted's (see busted --help).\n")
      return 0
    end
    return require("runbook._engine.testing").run(rest)
  end
  local pos, opts = M.parse(name, rest)
  if opts.help then
    host.write(1, command_help(name))
    return 0
  end
  if name == "version" then
    host.write(1, "runbook " .. host.version() .. " (" .. _VERSION .. ")\n")
    return 0
  elseif name == "exec" then
    opts.file = pos[1]
    opts.params = opts.param
    if opts.jobs then
      opts.jobs = math.tointeger(tonumber(opts.jobs))
      if not opts.jobs or opts.jobs < 1 then usage_error("exec: --jobs must be a positive integer") end
    end
    if opts.only and opts.from then usage_error("exec: --only and --from cannot be combined") end
    return require("runbook._engine.engine").exec(opts)
  end
  return require("runbook._engine.commands")[name](pos, opts)
end

local USAGE_KINDS = { usage = true, runbook = true, store = true, secret = true }

--- Entry point: returns the process exit code.
function M.main(argv)
  local ok, res = xpcall(dispatch, function(e) return host.error_of(e, "internal") end, argv)
  if ok then return res end
  local msg = errors.message(res)
  host.write(2, "runbook: " .. msg .. "\n")
  if os.getenv("RUNBOOK_DEBUG") and res.traceback then host.write(2, res.traceback .. "\n") end
  if res.kind == "internal" then
    host.write(2, (res.traceback or "") .. "\n")
    return 2
  end
  return USAGE_KINDS[res.kind] and 2 or 1
end

return M
