-- Renders the command table of runbook._engine.cli three ways: --help text,
-- man pages (roff) and the command reference of docs/cli.md (Markdown).
-- One source, so the three cannot disagree; tests/spec/cli_docs_spec.lua
-- fails when the committed docs/cli.md is stale.
local host = require "runbook._host"
local errors = require "runbook.errors"
local cli = require "runbook._engine.cli"

local M = {}

local WIDTH = 79

local function capital(s) return s:sub(1, 1):upper() .. s:sub(2) end

-- Words of text refilled to width, every line prefixed by indent (the first
-- by first, when given).
local function wrap(text, width, indent, first)
  local lines, line = {}, first or indent
  local empty = true
  for word in text:gmatch("%S+") do
    if not empty and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line, empty = indent, true
    end
    line = line .. (empty and "" or " ") .. word
    empty = false
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

local function paragraphs(text)
  local out = {}
  for p in (text .. "\n\n"):gmatch("(.-)\n%s*\n") do
    if p:match("%S") then out[#out + 1] = p end
  end
  return out
end

local function option_label(o) return o[1] .. (o.arg and (" " .. o.arg) or "") end

local BY_CODE = {}
for _, e in ipairs(cli.EXIT_CODES) do BY_CODE[e.code] = e end

-- The exit codes that apply to a command: { code, text } pairs.
local function exits_of(c)
  local out = {}
  for _, x in ipairs(c.exits or {}) do
    if type(x) == "table" then
      out[#out + 1] = { x[1], x[2] }
    else
      out[#out + 1] = { x, BY_CODE[x].short }
    end
  end
  return out
end

local function exit_footer(c)
  local list = exits_of(c)
  if #list == 0 then return "" end
  local out = { "", "Exit codes:" }
  for _, x in ipairs(list) do out[#out + 1] = string.format("  %-4d %s", x[1], x[2]) end
  return table.concat(out, "\n") .. "\n"
end

--- `runbook COMMAND --help`.
function M.help(c)
  local out = { "Usage: " .. c.usage, "", capital(c.summary) .. "." }
  if c.description then
    for _, p in ipairs(paragraphs(c.description)) do
      out[#out + 1] = ""
      out[#out + 1] = wrap(p, WIDTH, "")
    end
  end
  if #c.options > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Options:"
    local col = 0
    for _, o in ipairs(c.options) do col = math.max(col, #option_label(o)) end
    col = math.min(col, 24)
    for _, o in ipairs(c.options) do
      local label = "  " .. option_label(o)
      local text = o.help .. (o.env and (" [env: " .. o.env .. "]") or "")
      local pad = col + 4
      if #label + 2 > pad then
        out[#out + 1] = label
        out[#out + 1] = wrap(text, WIDTH, string.rep(" ", pad))
      else
        out[#out + 1] = wrap(text, WIDTH, string.rep(" ", pad), label .. string.rep(" ", pad - #label))
      end
    end
  end
  if c.examples and #c.examples > 0 then
    out[#out + 1] = ""
    out[#out + 1] = #c.examples > 1 and "Examples:" or "Example:"
    for _, e in ipairs(c.examples) do
      out[#out + 1] = "  " .. e[1]
      out[#out + 1] = wrap(e[2], WIDTH, "      ")
    end
  end
  return table.concat(out, "\n") .. "\n" .. exit_footer(c)
end

--- `runbook --help`.
function M.main_help()
  local out = { "runbook — resumable, audited deploy runbooks", "", "Usage: runbook COMMAND [ARGS] [OPTIONS]", "", "Commands:" }
  for _, c in ipairs(cli.COMMANDS) do
    if not c.hidden then out[#out + 1] = string.format("  %-10s %s", c.name, c.summary) end
  end
  out[#out + 1] = ""
  out[#out + 1] = "Run `runbook COMMAND --help` for a command's options, `man runbook` for the"
  out[#out + 1] = "environment variables (every option has one)."
  out[#out + 1] = ""
  out[#out + 1] = "Exit codes:"
  for _, e in ipairs(cli.EXIT_CODES) do
    out[#out + 1] = string.format("  %-4d %s", e.code, e.short)
  end
  return table.concat(out, "\n") .. "\n"
end

-- Every environment variable: { name, text } in order, options' first.
function M.environment()
  local out, seen = {}, {}
  for _, c in ipairs(cli.COMMANDS) do
    if not c.hidden then
      for _, o in ipairs(c.options) do
        if o.env and not seen[o.env] then
          seen[o.env] = { o.env, "as `" .. option_label(o) .. "`", cmds = { c.name } }
          out[#out + 1] = seen[o.env]
        elseif o.env then
          table.insert(seen[o.env].cmds, c.name)
        end
      end
    end
  end
  for _, e in ipairs(out) do
    if #e.cmds < 4 then e[2] = e[2] .. " (" .. table.concat(e.cmds, ", ") .. ")" end
  end
  for _, e in ipairs(cli.ENVIRONMENT) do out[#out + 1] = { e[1], e[2] } end
  return out
end

-- ---------------------------------------------------------------------------
-- man pages

local function roff(s)
  s = s:gsub("\\", "\\e"):gsub("%-", "\\-")
  s = s:gsub("`([^`]*)`", "\\fB%1\\fR")
  s = s:gsub("\n([.'])", "\n\\&%1")
  if s:match("^[.']") then s = "\\&" .. s end
  return s
end

local function th(name, version)
  -- no hyphenation or justification: option and variable names stay whole
  return string.format('.TH "%s" "1" "" "runbook %s" "runbook manual"\n.nh\n.ad l', name:upper(), version)
end

local function man_exit(lines, list)
  lines[#lines + 1] = ".SH EXIT STATUS"
  for _, x in ipairs(list) do
    lines[#lines + 1] = ".TP"
    lines[#lines + 1] = ".B " .. x[1]
    lines[#lines + 1] = roff(x[2])
  end
end

--- The man page of one command (runbook-exec(1)), or runbook(1) without c.
function M.man(c, version)
  version = version or host.version()
  local L = {}
  if not c then
    L[1] = th("runbook", version)
    L[#L + 1] = ".SH NAME\nrunbook \\- resumable, audited deploy runbooks"
    L[#L + 1] = ".SH SYNOPSIS\n.B runbook\n.I COMMAND\n[\\fIARGS\\fR] [\\fIOPTIONS\\fR]"
    L[#L + 1] = ".SH DESCRIPTION"
    L[#L + 1] = roff("runbook turns a deploy checklist into a resumable, audited script: a runbook is a Lua file of named steps; `runbook exec` runs them, and running the same command again after a failure resumes where the run stopped. Every step and side effect is recorded in a hash-chained journal.")
    L[#L + 1] = ".SH COMMANDS"
    for _, cc in ipairs(cli.COMMANDS) do
      if not cc.hidden then
        L[#L + 1] = ".TP"
        L[#L + 1] = ".B " .. roff(cc.usage)
        L[#L + 1] = roff(capital(cc.summary) .. ".") .. " See \\fBrunbook\\-" .. roff(cc.name) .. "\\fR(1)."
      end
    end
    L[#L + 1] = ".SH ENVIRONMENT"
    L[#L + 1] = "Every option has an environment variable, used when the option is not given; flags take 1 or 0."
    for _, e in ipairs(M.environment()) do
      L[#L + 1] = ".TP"
      L[#L + 1] = ".B " .. roff(e[1])
      L[#L + 1] = roff(e[2])
    end
    local all = {}
    for _, e in ipairs(cli.EXIT_CODES) do all[#all + 1] = { e.code, e.meaning } end
    man_exit(L, all)
    L[#L + 1] = ".SH FILES\n.TP\n.B .runbook/\n" .. roff("the default state store: one folder per run, its journal, and secret.key")
    local see = {}
    for _, cc in ipairs(cli.COMMANDS) do
      if not cc.hidden then see[#see + 1] = "\\fBrunbook\\-" .. roff(cc.name) .. "\\fR(1)" end
    end
    L[#L + 1] = ".SH SEE ALSO\n" .. table.concat(see, ", ")
    return table.concat(L, "\n") .. "\n"
  end
  L[1] = th("runbook-" .. c.name, version)
  L[#L + 1] = ".SH NAME\nrunbook\\-" .. roff(c.name) .. " \\- " .. roff(c.summary)
  L[#L + 1] = ".SH SYNOPSIS\n.B " .. roff(c.usage)
  L[#L + 1] = ".SH DESCRIPTION"
  L[#L + 1] = roff(capital(c.summary) .. ".")
  for _, p in ipairs(paragraphs(c.description or "")) do
    L[#L + 1] = ".PP"
    L[#L + 1] = roff(p)
  end
  if #c.options > 0 then
    L[#L + 1] = ".SH OPTIONS"
    for _, o in ipairs(c.options) do
      L[#L + 1] = ".TP"
      L[#L + 1] = "\\fB" .. roff(o[1]) .. "\\fR" .. (o.arg and (" \\fI" .. roff(o.arg) .. "\\fR") or "")
      L[#L + 1] = roff(capital(o.help) .. ".") .. (o.env and (" Also \\fB" .. roff(o.env) .. "\\fR.") or "")
    end
  end
  if c.passthrough and c.name == "test" then
    L[#L + 1] = ".PP\nOther options are busted's (see \\fBbusted\\fR(1))."
  end
  local env = {}
  for _, o in ipairs(c.options) do
    if o.env then env[#env + 1] = o end
  end
  if #env > 0 then
    L[#L + 1] = ".SH ENVIRONMENT"
    for _, o in ipairs(env) do
      L[#L + 1] = ".TP\n.B " .. roff(o.env) .. "\nas \\fB" .. roff(o[1]) .. "\\fR" .. (o.arg and "" or " (1 or 0)")
    end
  end
  if c.examples then
    L[#L + 1] = ".SH EXAMPLES"
    for _, e in ipairs(c.examples) do
      L[#L + 1] = ".PP\n" .. roff(capital(e[2]) .. ":") .. "\n.PP\n.RS\n.nf\n" .. roff(e[1]) .. "\n.fi\n.RE"
    end
  end
  local list = exits_of(c)
  if #list > 0 then man_exit(L, list) end
  L[#L + 1] = ".SH SEE ALSO\n\\fBrunbook\\fR(1)"
  return table.concat(L, "\n") .. "\n"
end

local function write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then errors.raise { kind = "usage", message = "cannot write " .. tostring(err) } end
  f:write(text)
  f:close()
end

--- `runbook __man [CMD]` prints a page; `runbook __man --dir DIR` writes
--- runbook.1 and runbook-CMD.1 for every command into DIR.
function M.man_command(args)
  if args[1] == "--dir" and args[2] then
    write_file(args[2] .. "/runbook.1", M.man(nil))
    for _, c in ipairs(cli.COMMANDS) do
      if not c.hidden then write_file(args[2] .. "/runbook-" .. c.name .. ".1", M.man(c)) end
    end
    return 0
  end
  local c = args[1] and cli.BY_NAME[args[1]]
  if args[1] and (not c or c.hidden) then
    errors.raise { kind = "usage", message = "__man: unknown command '" .. args[1] .. "'" }
  end
  host.write(1, M.man(c))
  return 0
end

-- ---------------------------------------------------------------------------
-- docs/cli.md

M.BEGIN = "<!-- BEGIN reference: generated from stdlib/runbook/_engine/cli.lua by `runbook __doc docs/cli.md`; edit it there -->"
M.END = "<!-- END reference -->"

local function md_cell(s) return (s:gsub("|", "\\|")) end

--- The Markdown table of every exit code, as docs/cli.md shows it (and as
--- any docs page that has an exit-code table must show it).
function M.exit_table()
  local out = { "| code | meaning |", "| --- | --- |" }
  for _, e in ipairs(cli.EXIT_CODES) do out[#out + 1] = string.format("| %d | %s |", e.code, md_cell(e.meaning)) end
  return table.concat(out, "\n")
end

--- docs/cli.md's command reference, between M.BEGIN and M.END.
function M.markdown()
  local out = { M.BEGIN, "", "## Command reference", "", "```" }
  for _, c in ipairs(cli.COMMANDS) do
    if not c.hidden then out[#out + 1] = string.format("%-42s %s", c.usage, c.summary) end
  end
  out[#out + 1] = "```"
  out[#out + 1] = ""
  out[#out + 1] = "Every command takes `--help`; `man runbook-COMMAND` says the same at more length."
  out[#out + 1] = "`RUN` is a run id, a unique prefix of one, or `last`."
  out[#out + 1] = ""
  out[#out + 1] = "## Exit codes"
  out[#out + 1] = ""
  out[#out + 1] = M.exit_table()
  for _, c in ipairs(cli.COMMANDS) do
    if not c.hidden then
      out[#out + 1] = ""
      out[#out + 1] = "### `runbook " .. c.name .. "`"
      out[#out + 1] = ""
      out[#out + 1] = "`" .. c.usage .. "`: " .. c.summary .. "."
      for _, p in ipairs(paragraphs(c.description or "")) do
        out[#out + 1] = ""
        out[#out + 1] = (p:gsub("\n", " "))
      end
      if #c.options > 0 then
        out[#out + 1] = ""
        out[#out + 1] = "| option | environment | |"
        out[#out + 1] = "| --- | --- | --- |"
        for _, o in ipairs(c.options) do
          if o ~= cli.HELP_OPTION then out[#out + 1] = string.format("| `%s` | %s | %s |", option_label(o), o.env and ("`" .. o.env .. "`") or "",
            md_cell(o.help)) end
        end
      end
      for _, e in ipairs(c.examples or {}) do
        out[#out + 1] = ""
        out[#out + 1] = "```"
        out[#out + 1] = e[1] .. "   # " .. e[2]:gsub("`", "")
        out[#out + 1] = "```"
      end
      local list = exits_of(c)
      if #list > 0 then
        local parts = {}
        for i, x in ipairs(list) do parts[i] = x[1] .. " " .. x[2] end
        out[#out + 1] = ""
        out[#out + 1] = "Exit codes: " .. table.concat(parts, ", ") .. "."
      end
    end
  end
  out[#out + 1] = ""
  out[#out + 1] = "## Environment"
  out[#out + 1] = ""
  out[#out + 1] = "Every option has an environment variable, used when the option is not given"
  out[#out + 1] = "(flags take `1` or `0`): no configuration file is needed."
  out[#out + 1] = ""
  out[#out + 1] = "| variable | |"
  out[#out + 1] = "| --- | --- |"
  for _, e in ipairs(M.environment()) do out[#out + 1] = string.format("| `%s` | %s |", e[1], md_cell(e[2])) end
  out[#out + 1] = ""
  out[#out + 1] = M.END
  return table.concat(out, "\n") .. "\n"
end

--- Replaces the reference section of a Markdown text; nil when the text
--- has no markers.
function M.splice(text)
  local b = text:find(M.BEGIN, 1, true)
  local e = text:find(M.END, 1, true)
  if not b or not e or e < b then return nil end
  local after = text:sub(e + #M.END)
  return text:sub(1, b - 1) .. M.markdown() .. after:gsub("^\n", "")
end

--- `runbook __doc` prints the reference; `runbook __doc FILE` rewrites the
--- reference section of FILE in place.
function M.doc_command(args)
  if not args[1] then
    host.write(1, M.markdown())
    return 0
  end
  local f, err = io.open(args[1], "rb")
  if not f then errors.raise { kind = "usage", message = "__doc: " .. tostring(err) } end
  local text = f:read("a")
  f:close()
  local new = M.splice(text)
  if not new then
    errors.raise { kind = "usage", message = "__doc: " .. args[1] .. " has no reference markers (" .. M.BEGIN .. " ... " .. M.END .. ")" }
  end
  if new ~= text then write_file(args[1], new) end
  return 0
end

return M
