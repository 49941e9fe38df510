-- A run as one self-contained HTML page (runbook report, and the run page
-- of runbook serve): its header, a timeline of attempts drawn to scale,
-- each step's actions and confirmations, and the whole audit trail with a
-- filter. Built only from the journal's events, every string scrubbed as
-- the console scrubs and then escaped; sealed memos show as sealed. The
-- page loads nothing: its stylesheet and its one static script are inline
-- and allowed by hash in its Content-Security-Policy, so no script can come
-- from the data.
local host = require "runbook._host"
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local rfc3339 = require "runbook._engine.rfc3339"

local M = {}

local RESERVED = { seq = true, ts = true, run = true, type = true, step = true, prev = true, hash = true, hmac = true }

--- HTML-escapes a string after scrubbing it.
local ENTITIES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
function M.escape(s)
  if math.type(s) == "integer" then return tostring(s) end -- a seq, a count: nothing to scrub or escape
  s = host.scrub(tostring(s))
  if not s:find("[&<>\"']") then return s end
  return (s:gsub("[&<>\"']", ENTITIES))
end
local esc = M.escape

-- milliseconds since the epoch of a journal timestamp. The writer's own
-- layout (2026-12-04T10:00:00.123Z) is read directly, its day computed once
-- per day: a 10,000-event page spent a tenth of its time here.
local day_cache = {}
local function ms_of(ts)
  if type(ts) == "string" and #ts == 24 and ts:byte(24) == 90 and ts:byte(20) == 46 then
    local day = ts:sub(1, 10)
    local base = day_cache[day]
    if not base then
      base = rfc3339.parse(day .. "T00:00:00Z")
      day_cache[day] = base or false
    end
    local h, m, sec, ms = tonumber(ts:sub(12, 13)), tonumber(ts:sub(15, 16)), tonumber(ts:sub(18, 19)), tonumber(ts:sub(21, 23))
    if base and h and m and sec and ms then return (base + h * 3600 + m * 60 + sec) * 1000 + ms end
  end
  local s = rfc3339.parse(ts)
  if not s then return nil end
  local frac = type(ts) == "string" and ts:match("%.(%d+)") or nil
  return s * 1000 + (frac and math.floor(tonumber("0." .. frac) * 1000 + 0.5) or 0)
end

local function is_sealed(v) return type(v) == "table" and type(v["$secret"]) == "table" end

-- a value for people: sealed memos as "sealed", tables as JSON
local function show(v)
  if is_sealed(v) then return "(sealed)" end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v, { secrets = "redact" })
    return ok and s or "(table)"
  end
  return tostring(v)
end

local function fmt_ms(ms)
  if type(ms) ~= "number" then return "" end
  if ms < 1000 then return string.format("%d ms", ms) end
  if ms < 60000 then return string.format("%.1f s", ms / 1000) end
  return string.format("%dm%02ds", ms // 60000, (ms % 60000) // 1000)
end

-- one line saying what an event is about (the audit trail's last column)
local function summary(ev)
  local t = ev.type
  if t == "run.started" then
    return string.format("%s by %s@%s, pid %s", show(ev.runbook), show(ev.user), show(ev.host), show(ev.pid))
  elseif t == "run.resumed" then
    return string.format("by %s@%s, pid %s%s", show(ev.user), show(ev.host), show(ev.pid), ev.changed and "; the runbook changed" or "")
  elseif t == "step.started" then return string.format("attempt %s: %s", show(ev.attempt), show(ev.title or ""))
  elseif t == "step.finished" then return "done in " .. fmt_ms(ev.ms)
  elseif t == "step.failed" then
    local e = type(ev.error) == "table" and ev.error.message or ev.error
    return (ev.final and "failed: " or "failed, will retry: ") .. show(e)
  elseif t == "step.skipped" then return show(ev.reason)
  elseif t == "step.confirmed" then
    return string.format("by %s@%s via %s%s", show(ev.by), show(ev.host), show(ev.via), ev.note and (": " .. show(ev.note)) or "")
  elseif t == "step.memo" then return "key " .. show(ev.key) .. (is_sealed(ev.value) and " (sealed)" or "")
  elseif t == "step.checkpoint" then return "key " .. show(ev.key) .. " = " .. show(ev.value)
  elseif t == "action" then return show(ev.kind) .. (ev.summary and (": " .. show(ev.summary)) or "")
  elseif t == "journal.truncated" then return string.format("cut %s torn bytes of seq %s", show(ev.bytes), show(ev.torn_seq))
  elseif t == "run.failed" or t == "run.waiting" or t == "run.interrupted" then return "at " .. show(ev.step)
  end
  local parts = {}
  for k, v in pairs(ev) do
    if not RESERVED[k] then parts[#parts + 1] = k .. "=" .. show(v) end
  end
  table.sort(parts)
  return table.concat(parts, " ")
end
M.summary = summary

-- Steps in the order the run knows them, with their attempts, waits,
-- actions and confirmations.
local function collect(events)
  local run = { steps = {}, order = {}, first = nil, last = nil }
  local function step(id)
    local s = run.steps[id]
    if not s then
      s = { id = id, attempts = {}, waits = {}, actions = {}, confirmations = {}, status = "pending" }
      run.steps[id] = s
      run.order[#run.order + 1] = id
    end
    return s
  end
  for _, ev in ipairs(events) do
    local t = ms_of(ev.ts)
    if t then
      run.first = run.first and math.min(run.first, t) or t
      run.last = run.last and math.max(run.last, t) or t
    end
    local ty = ev.type
    if ty == "run.started" then
      run.started = ev
      for _, id in ipairs(type(ev.steps) == "table" and ev.steps or {}) do step(id) end
    elseif ty == "run.finished" then run.status = "finished"
    elseif ty == "run.failed" then run.status = "failed"
    elseif ty == "run.waiting" then run.status = "waiting for " .. show(ev.step)
    elseif ty == "run.interrupted" then run.status = "interrupted"
    elseif ty == "run.resumed" then run.status = "running"
    end
    if ev.step and ty:match("^step%.") or (ty == "action" and ev.step) then
      local s = step(ev.step)
      if ty == "step.started" then
        s.title = ev.title or s.title
        s.attempts[#s.attempts + 1] = { from = t, attempt = ev.attempt }
        s.status = "running"
      elseif ty == "step.finished" or ty == "step.failed" or ty == "step.interrupted" then
        local a = s.attempts[#s.attempts]
        if a and not a.to then
          a.to = t
          a.outcome = ty == "step.finished" and "done" or (ty == "step.failed" and "failed" or "interrupted")
        end
        s.status = ty == "step.finished" and "done" or (ty == "step.failed" and (ev.final and "failed" or "retrying") or "interrupted")
        if ty == "step.failed" then s.error = type(ev.error) == "table" and ev.error.message or ev.error end
      elseif ty == "step.waiting" then
        s.waits[#s.waits + 1] = { from = t }
        s.status = "waiting"
      elseif ty == "step.confirmed" then
        -- with approvers = N the step is confirmed once N different people
        -- have (as the fold counts them: by actor, else by user@host)
        s.confirmations[#s.confirmations + 1] = ev
        s.actors = s.actors or {}
        local actor = ev.actor or (tostring(ev.by) .. "@" .. tostring(ev.host))
        if not s.actors[actor] then
          s.actors[actor] = true
          s.approvals = (s.approvals or 0) + 1
        end
        local needed = math.max(math.tointeger(ev.needed) or 1, 1)
        if s.approvals >= needed or ev.via == "verify" or ev.via == "dry-run" then
          local w = s.waits[#s.waits]
          if w and not w.to then w.to = t end
          s.status = "confirmed"
        else
          s.status = string.format("waiting (%d of %d approvals)", s.approvals, needed)
        end
      elseif ty == "step.skipped" then s.status = "skipped"
      elseif ty == "step.reset" or ty == "step.undone" then
        s.status, s.actors, s.approvals = "pending", nil, nil
      elseif ty == "action" then s.actions[#s.actions + 1] = ev
      end
    end
  end
  run.status = run.status or (run.started and "running" or "unknown")
  return run
end
M.collect = collect

local CSS = [[
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1c1c1c;max-width:80em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
dl.head{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{color:#666}dd{margin:0}
.ok{color:#17702d}.bad{color:#b00020}.warn{color:#8a5a00}code,.mono{font-family:ui-monospace,monospace;font-size:.92em}
table{border-collapse:collapse;width:100%}table.trail{table-layout:fixed}
table.trail th:nth-child(1),table.trail td:nth-child(1){width:4em}table.trail th:nth-child(2),table.trail td:nth-child(2){width:14em}
table.trail th:nth-child(3),table.trail td:nth-child(3){width:9em}table.trail th:nth-child(4),table.trail td:nth-child(4){width:8em}
.chunk{content-visibility:auto;contain-intrinsic-size:auto 6500px}td,th{border-bottom:1px solid #eee;padding:.25em .5em;text-align:left;vertical-align:top}
svg text{font:11px system-ui,sans-serif}rect.done{fill:#2e8b57}rect.failed{fill:#c62828}rect.interrupted{fill:#ef6c00}
rect.running{fill:#1e88e5}rect.wait{fill:#bdbdbd}rect.retrying{fill:#c62828}rect.group{fill:#e3f2fd;stroke:#90caf9}
.step{margin:1em 0}.step h3{font-size:1em;margin:.2em 0}
pre.log{background:#f6f6f6;padding:.5em;margin:.3em 0;overflow-x:auto;font-size:.85em;white-space:pre-wrap}
.lvl-warn{color:#8a5a00}.lvl-error{color:#b00020}.lvl-debug{color:#777}
nav{margin-bottom:1em}nav a{margin-right:1em}form.filter{display:flex;gap:.5em;flex-wrap:wrap;margin:.5em 0}
form.filter input,form.filter select{font:inherit;padding:.2em}pre.cmd{background:#f6f6f6;padding:.5em;white-space:pre-wrap}
input#filter{width:100%;padding:.4em;margin:.5em 0;font:inherit}tr.hidden{display:none}
]]

-- the filter of the audit trail: static, allowed by its hash
local SCRIPT = [[
(function(){var f=document.getElementById('filter');if(!f)return;
f.addEventListener('input',function(){var q=f.value.toLowerCase();
var rows=document.querySelectorAll('#trail tbody tr');
for(var i=0;i<rows.length;i++){var r=rows[i];
r.className=(q===''||r.textContent.toLowerCase().indexOf(q)>=0)?'':'hidden';}});})();
]]

M.CSS = CSS

local function csp_hash(s)
  return "'sha256-" .. crypto.base64_encode(crypto.hex_decode(crypto.sha256(s))) .. "'"
end

--- The Content-Security-Policy of a report page: nothing from anywhere,
--- the inline stylesheet and the static script by hash, extra script and
--- connect sources (for the live page of runbook serve) when given.
function M.csp(opts)
  opts = opts or {}
  local script = csp_hash(SCRIPT) .. (opts.script_src and (" " .. opts.script_src) or "")
  return "default-src 'none'; style-src " .. csp_hash(CSS) .. "; script-src " .. script ..
    "; img-src data:; connect-src " .. (opts.connect_src or "'none'") .. "; base-uri 'none'; form-action " ..
    (opts.form_action or "'none'") .. (opts.frame_ancestors and ("; frame-ancestors " .. opts.frame_ancestors) or "")
end

-- Steps that ran at the same time: consecutive steps (in the run's order)
-- whose attempts overlap form one cluster. The journal does not name
-- parallel groups, but a group's members overlap in time, and steps run
-- one after another never do.
local function clusters(run)
  local out, cur = {}, nil
  for i, id in ipairs(run.order) do
    local s = run.steps[id]
    local from, to
    for _, a in ipairs(s.attempts) do
      from = from and math.min(from, a.from or from) or a.from
      local e = a.to or run.last
      to = to and math.max(to, e or to) or e
    end
    if from and to then
      if cur and from < cur.to and i == cur.last + 1 then
        cur.last, cur.from, cur.to = i, math.min(cur.from, from), math.max(cur.to, to)
      else
        if cur and cur.last > cur.first then out[#out + 1] = cur end
        cur = { first = i, last = i, from = from, to = to }
      end
    end
  end
  if cur and cur.last > cur.first then out[#out + 1] = cur end
  return out
end

M.TIMELINE = { width = 900, label = 160, row = 22 }

--- The timeline's geometry, drawn by the page and by /app.js alike:
--- {width, height, span, rows = {{step, y, waits, bars}}, groups}.
function M.timeline(run)
  local T = M.TIMELINE
  local first, last = run.first, run.last
  if not first or #run.order == 0 then return nil end
  local span = math.max(last - first, 1)
  local g = { width = T.width + T.label + 10, height = T.row * #run.order + 24, span = fmt_ms(span), rows = {}, groups = {} }
  local function x(t) return T.label + (t - first) * T.width / span end
  for i, id in ipairs(run.order) do
    local s = run.steps[id]
    local row = { step = id, y = (i - 1) * T.row + 4, waits = {}, bars = {} }
    for _, w in ipairs(s.waits) do
      local x1, x2 = x(w.from or first), x(w.to or last)
      row.waits[#row.waits + 1] = { x = x1, w = math.max(x2 - x1, 2),
        title = id .. " waited for a person, " .. fmt_ms((w.to or last) - (w.from or first)) }
    end
    for n, a in ipairs(s.attempts) do
      local x1, x2 = x(a.from or first), x(a.to or last)
      local outcome = a.outcome or "running"
      row.bars[#row.bars + 1] = { x = x1, w = math.max(x2 - x1, 2), attempt = n, outcome = outcome,
        title = string.format("%s attempt %d: %s, %s", id, n, outcome, fmt_ms((a.to or last) - (a.from or first))) }
    end
    g.rows[i] = row
  end
  for _, c in ipairs(clusters(run)) do
    g.groups[#g.groups + 1] = { x = x(c.from) - 3, w = math.max(x(c.to) - x(c.from), 2) + 6,
      y = (c.first - 1) * T.row + 1, h = (c.last - c.first + 1) * T.row, steps = c.last - c.first + 1 }
  end
  return g
end

local function timeline(run, out)
  local g = M.timeline(run)
  if not g then
    out[#out + 1] = '<p id="timeline-empty">No step has run yet.</p><svg id="timeline" class="empty"></svg>'
    return
  end
  local T = M.TIMELINE
  out[#out + 1] = string.format('<svg id="timeline" role="img" aria-label="timeline of the run" width="%d" height="%d" viewBox="0 0 %d %d">',
    g.width, g.height, g.width, g.height)
  for _, c in ipairs(g.groups) do
    out[#out + 1] = string.format('<rect class="group" x="%.1f" y="%d" width="%.1f" height="%d"><title>%d steps ran in parallel</title></rect>',
      c.x, c.y, c.w, c.h, c.steps)
  end
  for _, row in ipairs(g.rows) do
    out[#out + 1] = string.format('<text x="0" y="%d">%s</text>', row.y + 13, esc(row.step))
    for _, w in ipairs(row.waits) do
      out[#out + 1] = string.format('<rect class="wait" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s</title></rect>',
        w.x, row.y, w.w, T.row - 6, esc(w.title))
    end
    for _, b in ipairs(row.bars) do
      out[#out + 1] = string.format('<rect class="bar %s" data-step="%s" data-attempt="%d" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s</title></rect>',
        b.outcome, esc(row.step), b.attempt, b.x, row.y, b.w, T.row - 6, esc(b.title))
    end
  end
  out[#out + 1] = string.format('<text x="%d" y="%d">0</text><text x="%d" y="%d" text-anchor="end">%s</text>',
    T.label, g.height - 4, T.label + T.width, g.height - 4, esc(g.span))
  out[#out + 1] = "</svg>"
end

--- What a live page needs to redraw itself (GET /api/runs/ID): the run's
--- status, each step's status and attempts, and the timeline's geometry.
--- Strings are scrubbed; the page sets them as text, never as HTML.
function M.view(events)
  local run = collect(events)
  local steps = {}
  for i, id in ipairs(run.order) do
    local s = run.steps[id]
    steps[i] = { id = host.scrub(id), title = host.scrub(tostring(s.title or id)), status = host.scrub(s.status),
      attempts = #s.attempts, attempts_text = M.attempts_text(#s.attempts),
      error = s.error and s.status ~= "done" and host.scrub(show(s.error)) or nil }
  end
  local g = M.timeline(run)
  if g then
    for _, row in ipairs(g.rows) do
      row.step = host.scrub(row.step)
      for _, b in ipairs(row.bars) do b.title = host.scrub(b.title) end
      for _, w in ipairs(row.waits) do w.title = host.scrub(w.title) end
    end
  end
  return { status = host.scrub(run.status), events = #events, last_seq = events[#events] and events[#events].seq or 0,
    steps = steps, timeline = g, bar_height = M.TIMELINE.row - 6, label = M.TIMELINE.label, plot = M.TIMELINE.width }
end

-- A step's section lists its first actions; all of them are in the audit
-- trail, so a step of 10,000 actions does not put them on the page twice.
M.MAX_ACTIONS = 200
M.CHUNK = 250

--- "2 attempts", or "" before the first.
function M.attempts_text(n)
  if n == 0 then return "" end
  return string.format("%d attempt%s", n, n == 1 and "" or "s")
end

local function action_row(ev)
  local facts = {}
  for k, v in pairs(ev) do
    if not RESERVED[k] and k ~= "kind" and k ~= "summary" then facts[#facts + 1] = k .. "=" .. show(v) end
  end
  table.sort(facts)
  return string.format("<tr><td>%s</td><td>%s</td><td class=\"mono\">%s</td></tr>",
    esc(ev.kind or ""), esc(ev.summary or ""), esc(table.concat(facts, " ")))
end

--- The page. opts: events (the journal, in order), run (its id), verify
--- ({ok=, bad_seq=, reason=, missing=, hmac=}, from the journal core),
--- log (the run log's lines by step: {[step] = {{ts=, level=, text=}}}),
--- nav (HTML of links above the title, for served pages),
--- live ({src=, connect=}: the script that keeps a served page current).
---@return string html
function M.render(opts)
  local events = opts.events or {}
  local run = collect(events)
  local st = run.started or {}
  local v = opts.verify or {}
  local out = {}
  local function add(s) out[#out + 1] = s end
  add("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
  add(string.format('<meta http-equiv="Content-Security-Policy" content="%s">',
    esc(M.csp { script_src = opts.live and opts.live.script_src, connect_src = opts.live and opts.live.connect_src })))
  add("<title>runbook: " .. esc(opts.run or st.run or "run") .. "</title>")
  add("<style>" .. CSS .. "</style></head><body>")
  if opts.nav then add(opts.nav) end
  add(string.format('<h1>Run <span class="mono" id="run-id">%s</span></h1>', esc(opts.run or st.run or "?")))
  local chain
  if v.ok then
    chain = '<span class="ok">hash chain intact</span>'
  elseif v.ok == false then
    chain = string.format('<span class="bad">broken at seq %s: %s</span>', esc(v.bad_seq or "?"), esc(v.reason or ""))
  else
    chain = "not checked"
  end
  local hmac = v.hmac and '<span class="ok">HMACs verified</span>' or
    (st.hmac and "HMAC present, not checked (no key)" or '<span class="warn">no HMAC: anyone who can write the journal can recompute its chain</span>')
  add('<dl class="head">')
  local rows = {
    { "runbook", st.runbook }, { "file", st.file }, { "file sha256", st.sha256 },
    { "started by", st.user and (show(st.user) .. "@" .. show(st.host)) or nil }, { "started", st.ts },
    { "status", run.status }, { "events", #events },
  }
  for _, r in ipairs(rows) do
    add(string.format("<dt>%s</dt><dd id=\"head-%s\">%s</dd>", esc(r[1]), esc(r[1]:gsub(" ", "-")), esc(r[2] == nil and "" or show(r[2]))))
  end
  add("<dt>chain</dt><dd id=\"head-chain\">" .. chain .. "</dd>")
  add("<dt>HMAC</dt><dd id=\"head-hmac\">" .. hmac .. "</dd>")
  if st.signer then add("<dt>signed by</dt><dd id=\"head-signer\">" .. esc(show(st.signer)) .. "</dd>") end
  add("</dl>")

  add("<h2>Timeline</h2>")
  timeline(run, out)

  add('<h2>Steps</h2><div id="steps">')
  for _, id in ipairs(run.order) do
    local s = run.steps[id]
    add(string.format('<section class="step" data-step="%s" data-status="%s" data-attempts="%d"><h3><span class="title">%s</span> <span class="mono">%s</span>: <span class="status">%s</span></h3>',
      esc(id), esc(s.status), #s.attempts, esc(s.title or id), esc(id), esc(s.status)))
    add(string.format('<p class="attempts">%s</p>', M.attempts_text(#s.attempts)))
    if s.error and s.status ~= "done" then add('<p class="bad">' .. esc(show(s.error)) .. "</p>") end
    if #s.actions > 0 then
      add("<table class=\"actions\"><thead><tr><th>action</th><th>summary</th><th>facts</th></tr></thead><tbody>")
      for i = 1, math.min(#s.actions, M.MAX_ACTIONS) do add(action_row(s.actions[i])) end
      add("</tbody></table>")
      if #s.actions > M.MAX_ACTIONS then
        add(string.format('<p class="more">and %d more actions: every one is in the audit trail below</p>', #s.actions - M.MAX_ACTIONS))
      end
    end
    local lines = opts.log and opts.log[id]
    if lines and #lines > 0 then
      local l = {}
      for i, line in ipairs(lines) do
        l[i] = string.format('<span class="lvl-%s">%s %s %s</span>', esc(line.level), esc(line.ts), esc(line.level), esc(line.text))
      end
      add('<pre class="log">' .. table.concat(l, "\n") .. "</pre>")
    end
    for _, c in ipairs(s.confirmations) do
      add(string.format('<p class="confirmation">confirmed by %s@%s via %s at %s%s</p>', esc(show(c.by)), esc(show(c.host)),
        esc(show(c.via)), esc(show(c.ts)), c.note and (": " .. esc(show(c.note))) or ""))
    end
    add("</section>")
  end
  add("</div>")

  add('<h2>Audit trail</h2><input id="filter" type="search" placeholder="filter events" aria-label="filter events">')
  -- One table per CHUNK events, all of fixed layout with the same column
  -- widths: chromium took 9 s to lay out 10,000 rows as one table on a
  -- loaded machine, 1.4 s as tables of 250 (and 0.15 s with no trail).
  add('<div id="trail"><table class="trail"><thead><tr><th>seq</th><th>time</th><th>event</th><th>step</th><th>what</th></tr></thead></table>')
  local n = #events
  for from = 1, math.max(n, 1), M.CHUNK do
    add('<div class="chunk"><table class="trail"><tbody>')
    for i = from, math.min(from + M.CHUNK - 1, n) do
      local ev = events[i]
      add(string.format('<tr data-seq="%s"><td>%s</td><td class="mono">%s</td><td>%s</td><td>%s</td><td>%s</td></tr>',
        esc(ev.seq or ""), esc(ev.seq or ""), esc(ev.ts or ""), esc(ev.type or ""), esc(ev.step or ""), esc(summary(ev))))
    end
    add("</tbody></table></div>")
  end
  add("</div>")
  add("<script>" .. SCRIPT .. "</script>")
  if opts.live and opts.live.script then add(opts.live.script) end
  add("</body></html>\n")
  return table.concat(out, "\n")
end

return M
