-- The pages of `runbook serve` besides a run's (which is the report): the
-- runs with their filter, the runs waiting for a person with the command
-- that confirms them, and a run's audit verification. Every value from the
-- journal goes through report.escape (scrubbed, then HTML-escaped); the
-- pages carry no script.
local report = require "runbook._engine.report"
local state = require "runbook._engine.state"

local M = {}
local esc = report.escape

--- The policy of these pages: the report's stylesheet, no script, forms
--- that submit only here.
function M.csp()
  return report.csp { form_action = "'self'", frame_ancestors = "'none'" }
end

function M.nav()
  return '<nav><a href="/">Runs</a><a href="/waiting">Waiting for a person</a></nav>'
end

local function page(title, body)
  return table.concat {
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>', esc(title),
    "</title><style>", report.CSS, "</style></head><body>", M.nav(), body, "</body></html>\n",
  }
end

local function user_of(by)
  return type(by) == "string" and by:match("^([^@]*)") or nil
end

-- who acted in a run: who started or resumed it, confirmed, reset or undid a step
local function actors(events)
  local set = {}
  for _, ev in ipairs(events) do
    local who = ev.user or ev.by
    if type(who) == "string" then set[who] = true end
  end
  return set
end

--- One row per run, newest first, filtered by query fields runbook,
--- status, actor (anyone who started, resumed or confirmed) and from/to
--- (dates YYYY-MM-DD the run started, inclusive).
function M.rows(src, q)
  q = q or {}
  local ids = src:list()
  local rows = {}
  for i = #ids, 1, -1 do
    local id = ids[i]
    local ok, st, info = pcall(src.state, src, id)
    if ok then
      local events = src:events(id)
      local waiting, approvals = {}, nil
      for _, sid in ipairs(st.step_order or {}) do
        local ss = state.step(st, sid)
        if ss.status == "waiting" then
          waiting[#waiting + 1] = sid
          if ss.approvals and #ss.approvals > 0 then
            approvals = approvals or {}
            approvals[sid] = string.format("%d of %d approvals so far, by %s: the next must be someone else", #ss.approvals,
              ss.approvals_needed or 1, table.concat((function()
                local who = {}
                for i, a in ipairs(ss.approvals) do who[i] = a.actor end
                return who
              end)(), ", "))
          end
        end
      end
      local row = {
        run = id, runbook = st.runbook, status = info.bad_seq and "damaged" or st.status,
        started = st.started_at, by = st.started_by, done = #st.completed, steps = #(st.step_order or {}),
        events = info.count, waiting = waiting, approvals = approvals,
      }
      local day = type(row.started) == "string" and row.started:sub(1, 10) or ""
      local keep = (not q.runbook or q.runbook == "" or q.runbook == row.runbook)
        and (not q.status or q.status == "" or q.status == row.status)
        and (not q.actor or q.actor == "" or actors(events)[q.actor] or user_of(row.by) == q.actor)
        and (not q.from or q.from == "" or day >= q.from)
        and (not q.to or q.to == "" or day <= q.to)
      if keep then rows[#rows + 1] = row end
    end
  end
  return rows
end

local STATUSES = { "running", "waiting", "finished", "failed", "interrupted", "rolled back", "damaged" }

function M.runs(src, q)
  q = q or {}
  local rows = M.rows(src, q)
  local out = { "<h1>Runs</h1>", '<form class="filter" method="get" action="/">' }
  local function field(name, label, kind)
    out[#out + 1] = string.format('<label>%s <input name="%s" type="%s" value="%s"></label>', label, name, kind, esc(q[name] or ""))
  end
  field("runbook", "runbook", "text")
  out[#out + 1] = '<label>status <select name="status"><option value="">any</option>'
  for _, s in ipairs(STATUSES) do
    out[#out + 1] = string.format('<option%s>%s</option>', q.status == s and " selected" or "", esc(s))
  end
  out[#out + 1] = "</select></label>"
  field("actor", "actor", "text")
  field("from", "from", "date")
  field("to", "to", "date")
  out[#out + 1] = '<button type="submit">filter</button></form>'
  out[#out + 1] = string.format('<p id="count">%d run%s</p>', #rows, #rows == 1 and "" or "s")
  out[#out + 1] = '<table id="runs"><thead><tr><th>run</th><th>runbook</th><th>status</th><th>steps</th><th>started</th><th>by</th><th>events</th><th></th></tr></thead><tbody>'
  for _, r in ipairs(rows) do
    out[#out + 1] = string.format(
      '<tr data-run="%s" data-status="%s"><td class="mono"><a href="/runs/%s">%s</a></td><td>%s</td><td>%s</td><td>%d/%d</td><td class="mono">%s</td><td>%s</td><td>%d</td><td><a href="/runs/%s/verify">verify</a></td></tr>',
      esc(r.run), esc(r.status), esc(r.run), esc(r.run), esc(r.runbook or ""), esc(r.status .. (#r.waiting > 0 and (" for " .. table.concat(r.waiting, ", ")) or "")),
      r.done, r.steps, esc(r.started or ""), esc(r.by or ""), r.events, esc(r.run))
  end
  out[#out + 1] = "</tbody></table>"
  return page("runbook: runs", table.concat(out, "\n"))
end

-- a shell word, quoted only when it needs to be
local function sh(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- The exact command that confirms a waiting step.
function M.confirm_command(src, run, step)
  local state_flag = ""
  if src.root ~= ".runbook" then state_flag = " --state " .. sh(src.root) end
  return string.format("runbook confirm %s %s --note '...'%s", sh(run), sh(step), state_flag)
end

function M.waiting(src)
  local out = { "<h1>Waiting for a person</h1>" }
  local n = 0
  for _, r in ipairs(M.rows(src, {})) do
    for _, step in ipairs(r.waiting) do
      n = n + 1
      local so_far = r.approvals and r.approvals[step]
      out[#out + 1] = string.format('<section class="waiting" data-run="%s" data-step="%s"><h3><a href="/runs/%s">%s</a>: step <span class="mono">%s</span> (%s)</h3>%s<pre class="cmd">%s</pre></section>',
        esc(r.run), esc(step), esc(r.run), esc(r.run), esc(step), esc(r.runbook or ""),
        so_far and ('<p class="approvals">' .. esc(so_far) .. "</p>") or "", esc(M.confirm_command(src, r.run, step)))
    end
  end
  if n == 0 then out[#out + 1] = '<p id="none">No run is waiting for a person.</p>' end
  return page("runbook: waiting", table.concat(out, "\n"))
end

function M.verify(id, v)
  local out = { string.format('<h1>Audit of run <a class="mono" href="/runs/%s">%s</a></h1>', esc(id), esc(id)) }
  if v.ok then
    out[#out + 1] = string.format('<p id="verdict" class="ok" data-ok="true">%d events, hash chain intact%s</p>', v.events,
      v.hmac and ", HMACs verified" or (v.hmac_present and " (HMACs present, not checked: RUNBOOK_AUDIT_KEY is not set here)" or " (no HMAC)"))
  else
    out[#out + 1] = string.format('<p id="verdict" class="bad" data-ok="false">audit FAILED at seq %s: %s</p>', esc(v.bad_seq or "?"), esc(v.reason or ""))
  end
  out[#out + 1] = "<p>Checked now, from the journal as stored: every event's seq, prev and hash" ..
    " (and its HMAC with the audit key).</p>"
  return page("runbook: audit " .. id, table.concat(out, "\n"))
end

function M.not_found(what)
  return page("runbook: not found", '<h1>Not found</h1><p>No run <span class="mono">' .. esc(what) .. "</span> in this store.</p>")
end

return M
