-- The command line: the one table of commands, options, examples, exit
-- codes and environment variables, argument parsing and dispatch. The same
-- table renders --help, the man pages and docs/cli.md's reference
-- (runbook._engine.clidoc) and the shell completions
-- (runbook._engine.completion). main() is called by src/main.c inside a
-- protected call.
local host = require "runbook._host"
local errors = require "runbook.errors"
-- the spelling suggestions, loaded with the first mistake
local function hint(word, set) return require("runbook._engine.suggest").hint(word, set) end

local M = {}

-- Every exit code the tool returns: the one table (exits.lua), which the
-- engine uses too and the help, man pages and docs render from here.
local exits = require "runbook._engine.exits"
M.EXIT_CODES = exits.CODES
M.EXIT = exits.EXIT

-- Error kinds that end the process as a usage error (exit 2) rather than a
-- failure: nothing ran that retrying would change.
local USAGE_KINDS = { usage = true, runbook = true, store = true, secret = true, config = true, signature = true }

-- Options shared by every command that reads or writes the store.
M.STATE_OPTION = { "--state", arg = "STORE", env = "RUNBOOK_STATE", complete = "dir",
  help = "the state store: a directory (default .runbook) or the shared store postgres://USER@HOST/DB (docs/teams.md); a password is refused here, where `ps` shows it: use PGPASSWORD, ~/.pgpass or the variable" }
M.HELP_OPTION = { "--help", env = false, help = "show this help" }

local OUTPUT = { "--output", arg = "FORMAT", choices = { "text", "json" } }
local function output(help) return { OUTPUT[1], arg = OUTPUT.arg, choices = OUTPUT.choices, help = help } end

-- The commands, in the order help lists them. Fields:
--   name, summary (one line), description (paragraphs; `code` in backquotes)
--   args: positional arguments { NAME, optional=, choices=, literal=, complete= }
--   options: { "--name", arg = VALUE-NAME (absent for a flag), multi=, env=,
--              choices=, complete=, help= }
--   store: takes --state; examples: { { command, what } }; exits: codes that apply
--   complete: "file" (a runbook) | "anyfile" | "run" | "run_step" | "file_step" | "dir" | "none"
--   hidden: not listed (helpers for completion and the build)
local COMMANDS = {
  {
    name = "exec", summary = "run a runbook, resuming its newest unfinished run",
    args = { { "FILE", complete = "file" } }, store = true,
    options = {
      { "--param", arg = "NAME=VALUE", multi = true, env = "RUNBOOK_PARAM_<NAME>", complete = "none",
        help = "set a param (repeatable)" },
      { "--values", arg = "FILE", complete = "anyfile", help = "params from a YAML mapping of NAME: VALUE" },
      { "--new", help = "start a new run even if one is unfinished" },
      { "--from", arg = "STEP", complete = "file_step", help = "start at STEP; earlier pending steps are left for a later invocation" },
      { "--only", arg = "STEP", complete = "file_step", help = "run only STEP (its `needs` must be complete)" },
      { "--dry-run", help = "run the steps with every writing primitive in its dry mode; nothing is recorded" },
      { "--yes", help = "never prompt: manual steps wait for `runbook confirm` (exit 3)" },
      { "--accept-changes", help = "resume even though completed steps were removed, renamed or reordered" },
      { "--jobs", arg = "N", complete = "none", help = "how many steps of a `parallel` group run at once (default 4)" },
      { "--lock", arg = "URL", complete = "none",
        help = "hold a Redis lock (`runbook:lock:NAME`) while the run lasts, so no other machine drives it; the second gets exit 4 naming the holder. The variable keeps the password out of `ps`" },
      { "--require-signature", help = "refuse to run unless FILE.sig is a valid signature, by a key in --trust, of FILE and every local module it loads (checked before any of their code runs)" },
      { "--trust", arg = "DIR", complete = "dir", help = "the folder of trusted public keys (PEM) for --require-signature" },
      { "--notify", arg = "URL", complete = "none",
        help = "POST a JSON message (Slack-compatible `text`, and structured fields) to URL when the run waits for a person, fails or finishes; a failed delivery is logged, never fails the run. The variable keeps a webhook's token out of `ps`" },
      output("`json`: one JSON object per line on stdout: every journal event, log lines, progress"),
    },
    description = [[
Runs FILE. When the store holds an unfinished run of the same runbook (by
its `runbook "name"`), that run continues: done, skipped and confirmed steps
do not run again, and a step that was interrupted or failed runs again with
its memos and checkpoints. Otherwise a new run starts.]],
    examples = { { "runbook exec deploy.lua --param namespace=prod", "run deploy.lua, or resume its unfinished run" } },
    exits = { 0, 1, 2, 3, 4, 130 },
  },
  {
    name = "plan", summary = "list the steps, their status in the current run and what would run next",
    args = { { "FILE", complete = "file" } }, store = true,
    options = { output("`json`: the plan as JSON") },
    examples = { { "runbook plan deploy.lua", "what the next `exec` would do" } },
  },
  {
    name = "status", summary = "show one run step by step (default: the newest)",
    args = { { "RUN", optional = true, complete = "run" } }, store = true,
    options = { output("`json`: the folded state as JSON") },
    examples = { { "runbook status last", "the newest run, step by step" } },
  },
  {
    name = "runs", summary = "list all runs in the store", store = true,
    options = {
      { "--runbook", arg = "NAME", env = false, complete = "none", help = "only runs of this runbook" },
      { "--status", arg = "STATE", env = false, complete = "none", help = "only runs in this state (running, waiting, failed, finished, damaged, ...)" },
      { "--actor", arg = "USER", env = false, complete = "none", help = "only runs started by USER (or USER@HOST)" },
      { "--since", arg = "WHEN", env = false, complete = "none", help = "only runs started since a date (2026-12-01), a time (2026-12-01T10:00:00Z) or an age (30m, 12h, 7d)" },
      output("`json`: one object per run"),
    },
    examples = { { "runbook runs --state /srv/runbook/state", "the runs kept in a shared folder" } },
  },
  {
    name = "log", summary = "show a run's audit trail",
    args = { { "RUN", optional = true, complete = "run" } }, store = true,
    options = {
      { "--step", arg = "STEP", complete = "run_step", help = "only the events of STEP (in json, after seq 1, the run.started line that names the run and the format version)" },
      output("`json`: the journal's lines as stored"),
    },
    examples = { { "runbook log last --step M7", "what happened at M7, attempt by attempt" } },
  },
  {
    name = "audit", summary = "verify a run's hash chain (and HMACs with RUNBOOK_AUDIT_KEY)",
    args = { { "verify", literal = true }, { "RUN", optional = true, complete = "run" } }, store = true,
    options = {
      { "--all", env = false, help = "verify every run in the store, one line each; exit 1 if any fails" },
      output("`json`: the result as JSON"),
    },
    description = [[
Checks every event's seq, prev and hash (and HMAC when the journal has
them). Exits 0 when the chain holds; otherwise exits 1 and names the first
bad seq.]],
    examples = { { "runbook audit verify last", "the newest run's journal is intact" } },
    exits = { { 0, "the chain holds" }, { 1, "damage found (the first bad seq is named)" }, 2 },
  },
  {
    name = "report", summary = "write one run as a self-contained HTML page",
    args = { { "RUN", complete = "run" } }, store = true,
    options = {
      { "--output", arg = "FILE", env = false, complete = "anyfile", help = "write the page to FILE (mode 0600) instead of stdout" },
    },
    description = [[
The page has the run's header (chain and HMAC state), a timeline of its
attempts (parallel steps side by side), each step with its actions,
confirmations and run log lines, and the whole audit trail with a filter.
It loads nothing from anywhere: every value is scrubbed and escaped, and
its only script is its own (docs/serve.md).]],
    examples = { { "runbook report last --output run.html", "the newest run as one page, to attach to a ticket" } },
    exits = { 0, 2 },
  },
  {
    name = "serve", summary = "a read-only web view of the store's runs, live while they run",
    store = true,
    options = {
      { "--listen", arg = "ADDRESS:PORT", env = "RUNBOOK_SERVE_LISTEN", complete = "none",
        help = "where to listen (default 127.0.0.1:8080; [::1]:PORT for IPv6; port 0 picks a free one). Anything but loopback needs RUNBOOK_SERVE_TOKEN" },
    },
    description = [[
Serves the runs (filtered by runbook, status, actor and date), each run's
report page (updated as its events arrive), the runs waiting for a person
with the `runbook confirm` command to copy, and an audit check of any run,
with the JSON API behind them (docs/serve.md). It changes nothing in the
store. Its first line says where it listens; it runs until Ctrl-C or
SIGTERM. With RUNBOOK_SERVE_TOKEN set every request needs the token, as
`Authorization: Bearer TOKEN` or the cookie that opening a page with
`?token=TOKEN` once sets.]],
    examples = { { "runbook serve --listen 127.0.0.1:0", "the runs on a free loopback port, printed at start" } },
    exits = { { 0, "stopped by Ctrl-C or SIGTERM" }, { 2, "a bad --listen, no token for a non-loopback address, or the address is in use" } },
  },
  {
    name = "confirm", summary = "record that a person completed a manual step",
    args = { { "RUN", complete = "run" }, { "STEP", complete = "run_step" } }, store = true,
    options = { { "--note", arg = "TEXT", complete = "none", help = "a note for the audit trail" } },
    examples = { { "runbook confirm last M5 --note 'records created'", "M5 is done; the next `exec` goes on" } },
    exits = { 0, 2, 4 },
  },
  {
    name = "reset", summary = "make a completed step run again on the next exec (recorded)",
    args = { { "RUN", complete = "run" }, { "STEP", complete = "run_step" } }, store = true,
    options = { { "--note", arg = "TEXT", complete = "none", help = "why, for the audit trail" } },
    examples = { { "runbook reset last M9 --note 'index rebuilt by hand'", "M9 runs again on the next `exec`" } },
    exits = { 0, 2, 4 },
  },
  {
    name = "rollback", summary = "run the undo of completed steps, newest first (recorded)",
    args = { { "RUN", complete = "run" } }, store = true,
    options = {
      { "--to", arg = "STEP", complete = "run_step", help = "stop at STEP (it stays done)" },
      output("`json`: stream events as JSON lines"),
    },
    examples = { { "runbook rollback last --to M3", "undo what came after M3" } },
    exits = { 0, { 1, "a step without undo recorded actions, or an undo failed" }, 2, 4, 130 },
  },
  {
    name = "push", summary = "move a local run into the shared PostgreSQL store, its chain verified",
    args = { { "RUN", complete = "run" } }, store = true,
    options = {
      { "--from", arg = "DIR", env = false, complete = "dir", help = "the local store the run is in (default .runbook)" },
    },
    description = [[
Copies the run's events and log into the store --state names (a
postgres:// URL) in one transaction, after checking the chain, checks it
there, and leaves a note in the local store, which then refuses to drive
the run. Sealed memos stay sealed: push names the key id they need.]],
    examples = { { "runbook push last --state postgres://alice@db/runbook", "continue the newest local run in the team's store" } },
    exits = { 0, 2 },
  },
  {
    name = "check", summary = "static checks: syntax, unique ids, unknown needs, cycles, params",
    args = { { "FILE", complete = "file" } },
    options = {
      { "--param", arg = "NAME=VALUE", multi = true, env = "RUNBOOK_PARAM_<NAME>", complete = "none",
        help = "check these params against the declaration (repeatable)" },
      { "--values", arg = "FILE", complete = "anyfile", help = "check a values file against the declaration" },
    },
    examples = { { "runbook check deploy.lua --values prod.yaml", "the runbook loads and prod.yaml fits its params" } },
    exits = { 0, 2 },
  },
  {
    name = "sign", summary = "sign a runbook and the local modules it loads (writes FILE.sig)",
    args = { { "FILE", complete = "file" } },
    options = {
      { "--key", arg = "KEY", complete = "anyfile", help = "the Ed25519 private key (PEM), from `runbook keygen` or `openssl genpkey -algorithm ed25519`" },
    },
    description = [[
Writes FILE.sig: a detached Ed25519 signature over FILE and every local
module it loads, whose paths and sha256s it lists. `exec
--require-signature --trust DIR` then refuses FILE unless the signature
holds, by a key in DIR, and neither FILE nor a module changed.]],
    examples = { { "runbook sign first-deploy.lua --key ~/.config/runbook/signing.pem", "sign a runbook before it ships" } },
    exits = { 0, 2 },
  },
  {
    name = "keygen", summary = "make an Ed25519 key pair for signing runbooks",
    options = {
      { "--out", arg = "PREFIX", complete = "anyfile", help = "write PREFIX.pem (private, 0600) and PREFIX.pub (default runbook-signing)" },
    },
    examples = { { "runbook keygen --out ops-signing", "ops-signing.pem to sign with, ops-signing.pub to trust" } },
    exits = { 0, 2 },
  },
  {
    name = "doc", summary = "print the runbook as a Markdown checklist",
    args = { { "FILE", complete = "file" } },
    examples = { { "runbook doc deploy.lua > DEPLOY.md", "the checklist for people who read rather than run it" } },
  },
  {
    name = "test", summary = "run busted specs inside runbook, with every module available",
    usage = "runbook test [PATH...] [busted options]", passthrough = true,
    examples = { { "runbook test spec/", "every spec under spec/; the last line is `N passed, N failed, N skipped`" } },
    exits = { { 0, "every test passed" }, { 1, "a test failed" }, { 2, "busted is missing or could not start" } },
  },
  {
    name = "init", summary = "write a starter runbook, its spec and editor settings",
    args = { { "NAME", optional = true, complete = "none" } },
    options = {
      { "--dir", arg = "DIR", complete = "dir", help = "write into DIR (default: the current directory)" },
      { "--force", help = "overwrite files that exist" },
    },
    description = [[
Writes NAME.lua (default NAME: the directory's name), a starter runbook with
params, a secret made once, a Kubernetes apply, a manual step with a verify
and a migration; db/migrations/ with its first migration; spec/NAME_spec.lua
for `runbook test`; .luarc.json pointing lua-language-server at the
installed type stubs; and .gitignore (the store holds the key sealing
secrets). Existing files are left alone unless --force.]],
    examples = { { "runbook init shop && runbook check shop.lua", "a runbook to start from" } },
    exits = { 0, 2 },
  },
  {
    name = "completion", summary = "print the shell completion script for bash or zsh",
    args = { { "SHELL", choices = { "bash", "zsh" } } },
    description = [[
Completes commands, options, runbook files, run ids from the store and the
step ids of a run or a runbook. Installed packages put the scripts where
bash-completion and zsh find them; otherwise load it from your shell's rc file.]],
    examples = { { "source <(runbook completion bash)", "completion in this bash session" } },
  },
  {
    name = "version", summary = "print the version, the commit and the libraries in use",
    options = { output("`json`: the same as one JSON object") },
    description = [[
libcurl, libpq, hiredis and libmicrohttpd (for serve) are loaded when first needed;
version loads each to report the version found, or why it cannot be
loaded and which package to install.]],
    examples = { { "runbook version", "what to paste into a bug report" } },
  },
  -- helpers for the completion scripts and the build, not listed
  { name = "__complete", hidden = true, passthrough = true, summary = "completion candidates" },
  { name = "__man", hidden = true, passthrough = true, summary = "print or write the man pages" },
  { name = "__doc", hidden = true, passthrough = true, summary = "print or update docs/cli.md's reference" },
}

local BY_NAME = {}
for _, c in ipairs(COMMANDS) do BY_NAME[c.name] = c end

-- A command's derived fields (the shared options, by_option, each option's
-- variable, usage), filled the first time it is used: a run prepares its
-- one command, not all of them (that loop was most of loading this file).
local function prepare(c)
  if c.by_option then return c end
  c.options = c.options or {}
  c.args = c.args or {}
  if not c.passthrough then
    if c.store then c.options[#c.options + 1] = M.STATE_OPTION end
    c.options[#c.options + 1] = M.HELP_OPTION
  end
  c.by_option = {}
  for _, o in ipairs(c.options) do
    c.by_option[o[1]] = o
    -- the options table's key: "dry_run" for --dry-run
    o.field = o.field or o[1]:sub(3):gsub("%-", "_")
    if o.env == nil then o.env = "RUNBOOK_" .. o.field:upper() end
  end
  if not c.usage then
    local u = { "runbook", c.name }
    for _, a in ipairs(c.args) do u[#u + 1] = a.optional and ("[" .. a[1] .. "]") or a[1] end
    if #c.options > 1 then u[#u + 1] = "[options]" end
    c.usage = table.concat(u, " ")
  end
  return c
end

--- The command NAME, prepared; nil when there is none.
function M.command(name)
  local c = BY_NAME[name]
  return c and prepare(c)
end

-- M.COMMANDS (in help order) and M.BY_NAME, every command prepared, on
-- first use: the help, man pages, docs and completions read them.
setmetatable(M, { __index = function(t, k)
  if k ~= "COMMANDS" and k ~= "BY_NAME" then return nil end
  for _, c in ipairs(COMMANDS) do prepare(c) end
  rawset(t, "COMMANDS", COMMANDS)
  rawset(t, "BY_NAME", BY_NAME)
  return rawget(t, k)
end })

-- Variables that are not an option's.
M.ENVIRONMENT = {
  { "RUNBOOK_SECRET_KEY", "the key sealing secret memos (64 hex digits or base64 of 32 bytes); default: `secret.key` in the store" },
  { "RUNBOOK_SECRET_KEY_FILE", "with the PostgreSQL store: the operator's key file sealing secret memos (default ~/.config/runbook/secret.key); the key never goes into the database" },
  { "RUNBOOK_AUDIT_KEY", "adds an HMAC to every event of new runs; needed to verify them" },
  { "RUNBOOK_SERVE_TOKEN", "the token `runbook serve` requires of every request (at least 16 characters); required to listen beyond loopback" },
  { "RUNBOOK_ACTOR", "who is acting, recorded with each confirmation (default user@host); approvals count distinct actors" },
  { "RUNBOOK_PATH", "extra folders (colon-separated) for `require` in runbooks" },
  { "NO_COLOR", "no colours" },
  { "RUNBOOK_VERBOSE", "show debug log lines" },
  { "RUNBOOK_DEBUG", "print tracebacks of host errors" },
  { "RUNBOOK_STDLIB_DIR", "(development) load the Lua standard library from this folder" },
  { "RUNBOOK_FAILPOINT", "(tests) `after:N` stops the process with SIGSTOP right after journal event N is durable; `torn:N` after writing half of it" },
}

local function visible_names()
  local names = {}
  for _, c in ipairs(COMMANDS) do
    if not c.hidden then names[#names + 1] = c.name end
  end
  return names
end

local TRUE = { ["1"] = true, ["true"] = true, yes = true, on = true }
local FALSE = { ["0"] = true, ["false"] = true, no = true, off = true, [""] = true }

-- Options not given on the command line from their environment variables.
local function from_env(c, opts, given)
  for _, o in ipairs(c.options) do
    local field = o.field
    if o.env and o.env:find("<NAME>", -6, true) then
      -- RUNBOOK_PARAM_<NAME>: each variable is one NAME=VALUE, before the
      -- command line's, so a --param of the same name wins
      local prefix = o.env:sub(1, -7)
      local list = {}
      for k, v in pairs(host.environ(prefix)) do
        if #k > #prefix then list[#list + 1] = k:sub(#prefix + 1) .. "=" .. v end
      end
      table.sort(list)
      if #list > 0 then
        for _, kv in ipairs(opts[field] or {}) do list[#list + 1] = kv end
        opts[field] = list
      end
    elseif o.env and not given[o[1]] then
      local v = os.getenv(o.env)
      if v ~= nil and v ~= "" then
        if not o.arg then
          local lv = v:lower()
          if TRUE[lv] then
            opts[field] = true
          elseif not FALSE[lv] then
            errors.raisef("usage", nil, "%s=%s: expected 1 or 0 (for %s)", o.env, v, o[1])
          end
        elseif o.multi then
          opts[field] = { v }
        else
          opts[field] = v
        end
      end
    end
  end
end

--- Parses argv for a command: returns positional args and an options table
--- keyed by option name without dashes ("dry_run" for --dry-run). Options
--- not on the command line come from their environment variables.
function M.parse(name, argv)
  local c = M.command(name)
  local pos, opts, given = {}, {}, {}
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
      local spec = c.by_option[key]
      if not spec then
        local near = hint(key, c.by_option)
        errors.raisef("usage", nil, "%s: unknown option %s%s (see runbook %s --help)", name, key, near, name)
      end
      given[key] = true
      local field = spec.field
      if spec.arg then
        if val == nil then
          i = i + 1
          val = argv[i]
          if val == nil then errors.raisef("usage", nil, "%s: option %s needs a value (%s %s)", name, key, key, spec.arg) end
        end
        if spec.multi then
          opts[field] = opts[field] or {}
          table.insert(opts[field], val)
        else
          opts[field] = val
        end
      else
        if val ~= nil then errors.raisef("usage", nil, "%s: option %s takes no value", name, key) end
        opts[field] = true
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  if opts.help then return pos, opts end
  from_env(c, opts, given)
  local min, max = 0, #c.args
  for _, a in ipairs(c.args) do
    if not a.optional then min = min + 1 end
  end
  if #pos < min then
    local missing = {}
    for k = #pos + 1, #c.args do
      if not c.args[k].optional then missing[#missing + 1] = c.args[k][1] end
    end
    errors.raisef("usage", nil, "%s: missing %s (usage: %s)", name, table.concat(missing, " "), c.usage)
  end
  if #pos > max then errors.raisef("usage", nil, "%s: unexpected argument '%s' (usage: %s)", name, pos[max + 1], c.usage) end
  for k, a in ipairs(c.args) do
    local v = pos[k]
    if v ~= nil and (a.literal or a.choices) then
      local allowed = a.literal and { a[1] } or a.choices
      local okv = false
      for _, ch in ipairs(allowed) do okv = okv or ch == v end
      if not okv and a.literal then
        errors.raisef("usage", nil, "%s: unknown subcommand '%s'%s (usage: %s)", name, v, hint(v, allowed), c.usage)
      elseif not okv then
        errors.raisef("usage", nil, "%s: %s must be %s, not '%s'%s", name, a[1], table.concat(allowed, " or "), v, hint(v, allowed))
      end
    end
  end
  for _, o in ipairs(c.options) do
    local v = opts[o.field]
    if o.choices and v ~= nil then
      local okv = false
      for _, ch in ipairs(o.choices) do okv = okv or ch == v end
      if not okv then errors.raisef("usage", nil, "%s: %s must be %s, not '%s'", name, o[1], table.concat(o.choices, " or "), v) end
    end
  end
  if opts.output == "text" then opts.output = nil end
  return pos, opts
end

local function version(opts)
  local build = require "runbook._build"
  local info = build.info()
  local libs = {}
  for _, l in ipairs { { "libcurl", "curl" }, { "libpq", "pq" }, { "hiredis", "hiredis" }, { "libmicrohttpd", "mhd", "MHD" } } do
    local v, err = build.load(l[2])
    libs[#libs + 1] = { name = l[1], label = l[3] or l[1], soname = info.sonames[l[2]], package = info.packages[l[2]], version = v, error = err }
  end
  if opts.output == "json" then
    local out = { version = info.version, commit = info.commit, libraries = {
      lua = info.lua, openssl = info.openssl, jansson = info.jansson, libyaml = info.libyaml } }
    for _, l in ipairs(libs) do
      out.libraries[l.name] = { version = l.version or nil, soname = l.soname, package = l.package, loaded = l.version ~= nil, error = l.error }
    end
    host.write(1, require("runbook._json").encode(out) .. "\n")
    return 0
  end
  local lines = {
    string.format("runbook %s (commit %s)", info.version, info.commit),
    string.format("  %-9s %s", "Lua", info.lua),
    string.format("  %-9s %s", "OpenSSL", info.openssl),
    string.format("  %-9s %s", "jansson", info.jansson),
    string.format("  %-9s %s", "libyaml", info.libyaml),
  }
  for _, l in ipairs(libs) do
    if l.version then
      lines[#lines + 1] = string.format("  %-9s %s (%s, loaded on demand)", l.label, l.version, l.soname)
    else
      lines[#lines + 1] = string.format("  %-9s not loaded: %s", l.label, l.error)
    end
  end
  host.write(1, table.concat(lines, "\n") .. "\n")
  return 0
end

-- the help and man page renderer, loaded only by the commands that print
-- them: a run does not pay for undumping it
local function clidoc() return require "runbook._engine.clidoc" end

local function dispatch(argv)
  local name = argv[1]
  if name == nil or name == "--help" or name == "-h" or name == "help" then
    if name == "help" and argv[2] then
      local c = M.command(argv[2])
      if not c or c.hidden then errors.raisef("usage", nil, "help: unknown command '%s'%s", argv[2], hint(argv[2], visible_names())) end
      host.write(1, clidoc().help(c))
      return 0
    end
    host.write(name and 1 or 2, clidoc().main_help())
    return name and 0 or 2
  end
  if name == "--version" then name = "version" end
  local c = M.command(name)
  if not c then
    errors.raisef("usage", nil, "unknown command '%s'%s (see runbook --help)", name, hint(name, visible_names()))
  end
  local rest = { table.unpack(argv, 2) }
  if name == "test" then
    if rest[1] == "--help" or rest[1] == "-h" then
      host.write(1, clidoc().help(c) .. "\nOther options are busted's (see busted --help).\n")
      return 0
    end
    return require("runbook._engine.testing").run(rest)
  elseif name == "__complete" then
    return require("runbook._engine.completion").candidates(rest)
  elseif name == "__man" then
    return clidoc().man_command(rest)
  elseif name == "__doc" then
    return clidoc().doc_command(rest)
  end
  local pos, opts = M.parse(name, rest)
  if opts.help then
    host.write(1, clidoc().help(c))
    return 0
  end
  if name == "version" then
    return version(opts)
  elseif name == "completion" then
    host.write(1, require("runbook._engine.completion").script(pos[1]))
    return 0
  elseif name == "init" then
    return require("runbook._engine.scaffold").init(pos[1], opts)
  elseif name == "exec" then
    opts.file = pos[1]
    opts.params = opts.param
    if opts.jobs then
      opts.jobs = math.tointeger(tonumber(opts.jobs))
      if not opts.jobs or opts.jobs < 1 then errors.raisef("usage", nil, "exec: --jobs must be a positive integer") end
    end
    if opts.only and opts.from then errors.raisef("usage", nil, "exec: --only and --from cannot be combined") end
    return require("runbook._engine.engine").exec(opts)
  end
  return require("runbook._engine.commands")[name](pos, opts)
end

--- Entry point: returns the process exit code.
function M.main(argv)
  local ok, res = xpcall(dispatch, function(e) return host.error_of(e, "internal") end, argv)
  if ok then return res end
  local msg = errors.message(res)
  host.write(2, "runbook: " .. msg .. "\n")
  if os.getenv("RUNBOOK_DEBUG") and res.traceback then host.write(2, res.traceback .. "\n") end
  if res.kind == "internal" then
    host.write(2, (res.traceback or "") .. "\n")
    return M.EXIT.usage
  end
  return USAGE_KINDS[res.kind] and M.EXIT.usage or M.EXIT.failed
end

return M
