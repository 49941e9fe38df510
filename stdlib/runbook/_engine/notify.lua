-- Notifications (`exec --notify URL`, RUNBOOK_NOTIFY): a JSON POST when a
-- run waits for a person, fails or finishes, with the command that goes on
-- from there. The body has a Slack-compatible `text` and structured fields,
-- and is scrubbed like all output. A notification that cannot be delivered
-- never fails the run: it is logged, and the run's outcome stands.
local curl = require "runbook._curl"
local json = require "runbook._json"
local host = require "runbook._host"

local M = {}

M.VERSION = 1

local function quote(s)
  if s:match("^[%w%./_%-=:@]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- What to send for the run's state after an invocation, or nil when there
--- is nothing to say (the run goes on, or nothing changed).
---@param run table  the engine's Run (id, book, state)
---@param before string  the run's status before this invocation
function M.message(run, before)
  local st = run.state
  local status = st.status
  if status == before and status == "finished" then return nil end
  local file = run.book and run.book.file or st.file or "?"
  local base = {
    version = M.VERSION, run = run.id, runbook = run.book and run.book.name or st.runbook, file = file,
    host = host.hostname(), user = host.user(), ts = host.iso_time(),
  }
  local exec = "runbook exec " .. quote(file)
  if status == "waiting" then
    local step = st.waiting_step
    local s = step and st.steps[step]
    base.event, base.step = "waiting", step
    base.command = string.format("runbook confirm %s %s --note '...'", run.id, tostring(step))
    base.next = exec
    local title = run.book and run.book.by_id[step] and run.book.by_id[step].title or step
    local more = ""
    if s and s.approvals and #s.approvals > 0 then
      more = string.format(" (%d of %d approvals)", #s.approvals, s.approvals_needed)
    end
    base.text = string.format("runbook %s is waiting for a person at %s: %s%s. When it is done: %s, then %s",
      base.runbook, tostring(step), tostring(title), more, base.command, exec)
  elseif status == "failed" then
    local step = st.failed_step
    local err = step and st.steps[step] and st.steps[step].error
    base.event, base.step = "failed", step
    base.error = type(err) == "table" and err.message or (err and tostring(err)) or nil
    base.command = exec
    base.text = string.format("runbook %s failed at %s: %s. Fix the cause and run %s to resume.",
      base.runbook, tostring(step), tostring(base.error or "see runbook log " .. run.id), exec)
  elseif status == "finished" then
    base.event = "finished"
    base.text = string.format("runbook %s finished (run %s). Audit: runbook audit verify %s", base.runbook, run.id, run.id)
    base.command = "runbook status " .. run.id
  else
    return nil
  end
  return base
end

--- Posts msg to url. Returns true, or false and why (never raises).
function M.send(url, msg, opts)
  opts = opts or {}
  local ok, res, err = pcall(function()
    local body = json.encode(msg, { secrets = "redact", scrub = true })
    local c = curl.client { timeout = opts.timeout or 10, connect_timeout = opts.connect_timeout or 5 }
    return c:request { method = "POST", url = url, body = body,
      headers = { { "Content-Type", "application/json" }, { "User-Agent", "runbook/" .. host.version() } } }
  end)
  if not ok then return false, tostring(type(res) == "table" and res.message or res) end
  if not res then return false, err and err.message or "no response" end
  if res.status < 200 or res.status >= 300 then return false, "HTTP " .. res.status end
  return true
end

return M
