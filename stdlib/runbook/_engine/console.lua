-- The console. On a terminal: a live checklist (each step, its state and
-- elapsed time, the current step's progress) with log lines scrolling
-- above it. Elsewhere: plain timestamped lines. With --output json: one
-- JSON object a line, in the versioned format of docs/events.md (every
-- record has v, type, ts and run). Everything goes through host.write,
-- which scrubs.
local host = require "runbook._host"
local json = require "runbook._json"

local M = {}

--- The version of the --output json stream (docs/events.md). A change that
--- removes or renames a field, or changes what one means, bumps it; new
--- fields and record types do not.
M.STREAM_VERSION = 1

local Console = {}
Console.__index = Console

local SYMBOL = {
  pending = "·", running = "▶", done = "✔", skipped = "↷", confirmed = "✔", failed = "✘",
  retrying = "↻", waiting = "⏸", interrupted = "■",
}
local COLOR = {
  done = "32", confirmed = "32", skipped = "36", failed = "31", retrying = "33", waiting = "33",
  running = "34", interrupted = "33",
}

--- Picks the mode: json when asked, tty when stderr is a terminal, else plain.
--- opts: output, plain, run (the run's id, when known before begin).
function M.new(opts)
  opts = opts or {}
  local mode = opts.output == "json" and "json" or (host.isatty(2) and not opts.plain) and "tty" or "plain"
  local c = setmetatable({
    mode = mode,
    color = mode == "tty" and (os.getenv("NO_COLOR") or "") == "" and os.getenv("TERM") ~= "dumb",
    rows = {}, order = {}, drawn = 0, last_draw = 0, progress = {},
    info = opts.run and { run = opts.run } or nil,
  }, Console)
  return c
end

function Console:paint(code, s)
  if self.color and code then return "\27[" .. code .. "m" .. s .. "\27[0m" end
  return s
end

local function stamp()
  return host.iso_time():sub(1, 19) .. "Z"
end

local function elapsed(ms)
  if not ms then return "" end
  if ms < 1000 then return string.format("%dms", ms) end
  if ms < 60000 then return string.format("%.1fs", ms / 1000) end
  return string.format("%dm%02ds", ms // 60000, (ms // 1000) % 60)
end

--- Declares the steps of the run (for the checklist) and prints the header.
function Console:begin(info, steps, st)
  self.info = info
  self.t0 = host.monotime()
  for _, s in ipairs(steps) do
    local ss = st and st.steps[s.id]
    self.rows[s.id] = { id = s.id, title = s.title, status = ss and ss.status or "pending", ms = ss and ss.ms }
    self.order[#self.order + 1] = s.id
  end
  local head = string.format("%s %s (%s)", info.resumed and "Resuming" or "Starting", info.run, info.runbook)
  if info.dry_run then head = head .. " — dry run: nothing is written" end
  if self.mode == "json" then
    local list = {}
    for i, id in ipairs(self.order) do
      local r = self.rows[id]
      list[i] = { id = id, title = r.title, status = r.status }
    end
    self:json_line { type = "console.begin", runbook = info.runbook, resumed = info.resumed == true,
      dry_run = info.dry_run == true, steps = json.array(list) }
  elseif self.mode == "plain" then
    host.write(2, stamp() .. " " .. head .. "\n")
  else
    host.write(2, self:paint("1", head) .. "\n")
    self:draw(true)
  end
end

-- One record of the stream: a copy of t with the fields every record has.
-- run is null only on a note printed before a run was opened.
function Console:json_line(t)
  local rec = {}
  for k, v in pairs(t) do rec[k] = v end
  rec.v = M.STREAM_VERSION
  rec.ts = rec.ts or host.iso_time()
  if rec.run == nil then rec.run = self.info and self.info.run or json.null end
  host.write(1, json.encode(rec, { secrets = "redact", scrub = true }) .. "\n")
end

-- erases the checklist so text can be printed above it
function Console:clear()
  if self.mode == "tty" and self.drawn > 0 then
    host.footer() -- the clock thread must not paint over what comes next
    host.write(2, string.format("\27[%dA\27[J", self.drawn))
    self.drawn = 0
  end
end

function Console:draw(force)
  if self.mode ~= "tty" or not self.t0 then return end -- nothing to draw before begin
  local now = host.monotime()
  if not force and now - self.last_draw < 0.1 then return end
  self.last_draw = now
  local width = host.term_width(2)
  local lines = {}
  for _, id in ipairs(self.order) do
    local r = self.rows[id]
    local sym = SYMBOL[r.status] or "?"
    local t = r.ms and elapsed(r.ms) or (r.started and elapsed(math.floor((now - r.started) * 1000))) or ""
    local text = string.format("%s %-8s %s", sym, id, r.title)
    local extra = t
    local p = self.progress[id]
    if r.status == "running" and p then
      local frac = p.total and p.total > 0 and string.format(" %d/%d (%d%%)", p.done, p.total, math.floor(p.done * 100 / p.total)) or (p.done and (" " .. tostring(p.done)) or "")
      extra = extra .. frac .. (p.note and ("  " .. p.note) or "")
    end
    if r.status == "retrying" and r.note then extra = extra .. "  " .. r.note end
    local line = text .. "  " .. extra
    if #line > width - 1 then line = line:sub(1, width - 2) .. "…" end
    lines[#lines + 1] = self:paint(COLOR[r.status], line)
  end
  local before, after = self:footer()
  lines[#lines + 1] = self:paint("2", before .. elapsed(math.floor((now - self.t0) * 1000)) .. after)
  self:clear()
  host.write(2, table.concat(lines, "\n") .. "\n")
  self.drawn = #lines
  -- between redraws a thread keeps the elapsed time of the last line moving
  if self.color then before, after = "\27[2m" .. before, after .. "\27[0m" end
  host.footer(2, host.scrub(before), self.t0, host.scrub(after))
end

-- the checklist's last line, around its clock: how long this invocation
-- has run, and how far the run is
function Console:footer()
  local complete = 0
  for _, id in ipairs(self.order) do
    local st = self.rows[id].status
    if st == "done" or st == "skipped" or st == "confirmed" then complete = complete + 1 end
  end
  return "elapsed ", string.format(" · %d of %d steps complete", complete, #self.order)
end

-- prints a line above the checklist (tty) or as a plain line
function Console:say(text, code)
  if self.mode == "json" then return end
  if self.mode == "tty" then
    self:clear()
    host.write(2, self:paint(code, text) .. "\n")
    self:draw(true)
  else
    host.write(2, stamp() .. " " .. text .. "\n")
  end
end

local function describe(ev)
  local t = ev.type
  if t == "step.started" then
    return (ev.attempt and ev.attempt > 1) and string.format("attempt %d", ev.attempt) or "started"
  elseif t == "step.finished" then return "done in " .. elapsed(ev.ms)
  elseif t == "step.failed" then
    local msg = type(ev.error) == "table" and ev.error.message or tostring(ev.error)
    if ev.final then return "FAILED: " .. msg end
    return string.format("failed (attempt %d), retrying in %.1fs: %s", ev.attempt or 0, ev.retry_in or 0, msg)
  elseif t == "step.skipped" then return "skipped: " .. tostring(ev.reason)
  elseif t == "step.waiting" then return "waiting for a person to confirm"
  elseif t == "step.confirmed" then
    return string.format("confirmed by %s@%s%s", tostring(ev.by), tostring(ev.host), ev.note and (": " .. ev.note) or "")
  elseif t == "step.interrupted" then return "interrupted"
  elseif t == "action" then
    return "action " .. tostring(ev.kind) .. (ev.summary and (": " .. ev.summary) or "")
  end
end

--- Shows one journal event.
function Console:event(ev)
  -- the run is known from its first event on, even before begin
  if ev.run and not (self.info and self.info.run) then
    self.info = self.info or {}
    self.info.run = ev.run
  end
  if self.mode == "json" then return self:json_line(ev) end
  local r = ev.step and self.rows[ev.step]
  if r then
    if ev.type == "step.started" then
      r.status, r.started, r.ms = "running", host.monotime(), nil
    elseif ev.type == "step.finished" then r.status, r.ms = "done", ev.ms
    elseif ev.type == "step.failed" then
      r.status, r.ms = ev.final and "failed" or "retrying", ev.ms
      r.note = not ev.final and string.format("retry in %.1fs", ev.retry_in or 0) or nil
    elseif ev.type == "step.skipped" then r.status = "skipped"
    elseif ev.type == "step.waiting" then r.status = "waiting"
    elseif ev.type == "step.confirmed" then r.status = "confirmed"
    elseif ev.type == "step.interrupted" then r.status = "interrupted"
    end
  end
  local d = describe(ev)
  if not d then return end
  if self.mode == "plain" then
    host.write(2, string.format("%s %-8s %s\n", stamp(), ev.step or "", d))
  elseif ev.type == "step.failed" or ev.type == "step.confirmed" or ev.type == "action" then
    self:say(string.format("%-8s %s", ev.step or "", d), ev.type == "step.failed" and "31" or "2")
  else
    self:draw(true)
  end
end

--- A log line from a step.
function Console:log(step, level, msg)
  if self.mode == "json" then
    return self:json_line { type = "log", step = step or json.null, level = level, message = msg }
  end
  if level == "debug" and not os.getenv("RUNBOOK_VERBOSE") then return end
  local prefix = string.format("%-8s ", step or "")
  local code = level == "error" and "31" or level == "warn" and "33" or nil
  for line in (msg .. "\n"):gmatch("(.-)\n") do
    if self.mode == "plain" then
      host.write(2, string.format("%s %s%s%s\n", stamp(), prefix, level ~= "info" and (level .. ": ") or "", line))
    else
      self:clear()
      host.write(2, self:paint(code or "2", prefix .. line) .. "\n")
    end
  end
  -- the lines went where the checklist was: it comes back at once
  self:draw(self.mode == "tty")
end

--- Progress of a running step.
function Console:progress_of(step, done, total, note)
  self.progress[step] = { done = done, total = total, note = note }
  if self.mode == "json" then
    return self:json_line { type = "progress", step = step, done = done, total = total or json.null, note = note or json.null }
  elseif self.mode == "tty" then
    self:draw(false)
  else
    -- plain: at most one progress line every 5 s per step, so logs stay readable
    local now = host.monotime()
    local last = self.progress_printed and self.progress_printed[step] or 0
    if now - last >= 5 or (total and done == total) then
      self.progress_printed = self.progress_printed or {}
      self.progress_printed[step] = now
      local pct = total and total > 0 and string.format(" (%d%%)", math.floor(done * 100 / total)) or ""
      host.write(2, string.format("%s %-8s progress %s%s%s%s\n", stamp(), step, tostring(done),
        total and ("/" .. tostring(total)) or "", pct, note and ("  " .. note) or ""))
    end
  end
end

--- A message from the engine (not tied to a step).
function Console:note(text, level)
  if self.mode == "json" then
    return self:json_line { type = "note", level = level or "info", message = text }
  end
  self:say(text, level == "error" and "31" or level == "warn" and "33" or nil)
end

local function quote(a)
  if a:match("^[%w@%%+=:,./_-]+$") then return a end
  return "'" .. a:gsub("'", "'\\''") .. "'"
end

--- The command that continues this run: exec's own arguments without
--- --new (which would start yet another run). Secret params given with
--- --param are shown as NAME=... (they are never recorded: give them
--- again); other params are recorded by the run and need not be repeated.
---@param opts table exec's options
---@param book table|nil the loaded runbook (for which params are secret)
function M.resume_command(opts, book)
  local argv = { "runbook", "exec", quote(opts.file) }
  local function add(...) for _, a in ipairs { ... } do argv[#argv + 1] = a end end
  if opts.state then add("--state", quote(opts.state)) end
  if opts.values then add("--values", quote(opts.values)) end
  for _, kv in ipairs(opts.params or {}) do
    local k = kv:match("^([^=]+)=")
    local spec = k and book and book.params[k]
    if spec and spec.secret then add("--param", quote(k .. "=...")) end
  end
  if opts.from then add("--from", quote(opts.from)) end
  if opts.only then add("--only", quote(opts.only)) end
  if opts.yes then add("--yes") end
  if opts.lock then add("--lock", quote(tostring(opts.lock))) end
  if opts.jobs then add("--jobs", tostring(opts.jobs)) end
  if opts.output then add("--output", opts.output) end
  return table.concat(argv, " ")
end

--- How to continue the run, for the closing line: "run the same command
--- again", or after --new the command itself.
function M.resume_phrase(opts, book)
  if not opts.new or opts.dry_run then return "run the same command again" end
  return "run `" .. M.resume_command(opts, book) .. "`"
end

--- Final redraw and the summary line.
function Console:finish(text, level)
  if self.mode == "json" then
    return self:json_line { type = "console.end", message = text or "", level = level or "info" }
  end
  if self.mode == "tty" then
    self:draw(true)
    host.footer() -- the checklist stays as it is: its clock stops
  end
  self.drawn = 0
  if text then
    if self.mode == "plain" then
      host.write(2, stamp() .. " " .. text .. "\n")
    else
      host.write(2, self:paint(level == "error" and "1;31" or level == "warn" and "1;33" or "1;32", text) .. "\n")
    end
  end
end

return M
