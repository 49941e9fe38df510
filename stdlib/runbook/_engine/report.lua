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
function M.escape(s)
  s = host.scrub(tostring(s))
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end
local esc = M.escape

-- milliseconds since the epoch of a journal timestamp
local function ms_of(ts)
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
        local w = s.waits[#s.waits]
        if w and not w.to then w.to = t end
        s.confirmations[#s.confirmations + 1] = ev
        s.status = "confirmed"
      elseif ty == "step.skipped" then s.status = "skipped"
      elseif ty == "step.reset" or ty == "step.undone" then s.status = "pending"
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
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:.25em .5em;text-align:left;vertical-align:top}
svg text{font:11px system-ui,sans-serif}rect.done{fill:#2e8b57}rect.failed{fill:#c62828}rect.interrupted{fill:#ef6c00}
rect.running{fill:#1e88e5}rect.wait{fill:#bdbdbd}rect.retrying{fill:#c62828}.step{margin:1em 0}.step h3{font-size:1em;margin:.2em 0}
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
    "; img-src data:; connect-src " .. (opts.connect_src or "'none'") .. "; base-uri 'none'; form-action 'none'"
end

local function timeline(run, out)
  local first, last = run.first, run.last
  if not first or #run.order == 0 then
    out[#out + 1] = "<p>No step has run yet.</p>"
    return
  end
  local span = math.max(last - first, 1)
  local W, LABEL, ROW = 900, 160, 22
  local h = ROW * #run.order + 24
  out[#out + 1] = string.format('<svg id="timeline" role="img" aria-label="timeline of the run" width="%d" height="%d" viewBox="0 0 %d %d">',
    W + LABEL + 10, h, W + LABEL + 10, h)
  local function x(t) return LABEL + (t - first) * W / span end
  for i, id in ipairs(run.order) do
    local s = run.steps[id]
    local y = (i - 1) * ROW + 4
    out[#out + 1] = string.format('<text x="0" y="%d">%s</text>', y + 13, esc(id))
    for _, w in ipairs(s.waits) do
      local x1, x2 = x(w.from or first), x(w.to or last)
      out[#out + 1] = string.format('<rect class="wait" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s waited for a person, %s</title></rect>',
        x1, y, math.max(x2 - x1, 2), ROW - 6, esc(id), esc(fmt_ms((w.to or last) - (w.from or first))))
    end
    for n, a in ipairs(s.attempts) do
      local x1, x2 = x(a.from or first), x(a.to or last)
      local outcome = a.outcome or "running"
      out[#out + 1] = string.format('<rect class="bar %s" data-step="%s" data-attempt="%d" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s attempt %d: %s, %s</title></rect>',
        outcome, esc(id), n, x1, y, math.max(x2 - x1, 2), ROW - 6, esc(id), n, outcome, esc(fmt_ms((a.to or last) - (a.from or first))))
    end
  end
  out[#out + 1] = string.format('<text x="%d" y="%d">0</text><text x="%d" y="%d" text-anchor="end">%s</text>',
    LABEL, h - 4, LABEL + W, h - 4, esc(fmt_ms(span)))
  out[#out + 1] = "</svg>"
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
    add(string.format('<section class="step" data-step="%s" data-status="%s" data-attempts="%d"><h3>%s <span class="mono">%s</span>: %s</h3>',
      esc(id), esc(s.status), #s.attempts, esc(s.title or id), esc(id), esc(s.status)))
    if #s.attempts > 0 then add(string.format("<p>%d attempt%s</p>", #s.attempts, #s.attempts == 1 and "" or "s")) end
    if s.error and s.status ~= "done" then add('<p class="bad">' .. esc(show(s.error)) .. "</p>") end
    if #s.actions > 0 then
      add("<table class=\"actions\"><thead><tr><th>action</th><th>summary</th><th>facts</th></tr></thead><tbody>")
      for _, a in ipairs(s.actions) do add(action_row(a)) end
      add("</tbody></table>")
    end
    for _, c in ipairs(s.confirmations) do
      add(string.format('<p class="confirmation">confirmed by %s@%s via %s at %s%s</p>', esc(show(c.by)), esc(show(c.host)),
        esc(show(c.via)), esc(show(c.ts)), c.note and (": " .. esc(show(c.note))) or ""))
    end
    add("</section>")
  end
  add("</div>")

  add('<h2>Audit trail</h2><input id="filter" type="search" placeholder="filter events" aria-label="filter events">')
  add('<table id="trail"><thead><tr><th>seq</th><th>time</th><th>event</th><th>step</th><th>what</th></tr></thead><tbody>')
  for _, ev in ipairs(events) do
    add(string.format('<tr data-seq="%s"><td>%s</td><td class="mono">%s</td><td>%s</td><td>%s</td><td>%s</td></tr>',
      esc(ev.seq or ""), esc(ev.seq or ""), esc(ev.ts or ""), esc(ev.type or ""), esc(ev.step or ""), esc(summary(ev))))
  end
  add("</tbody></table>")
  add("<script>" .. SCRIPT .. "</script>")
  if opts.live and opts.live.script then add(opts.live.script) end
  add("</body></html>\n")
  return table.concat(out, "\n")
end

return M
