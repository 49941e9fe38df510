-- The commands besides exec and test: reading runs (plan, status, runs,
-- log, audit verify), changing them (confirm, reset, rollback) and reading
-- runbooks (check, doc).
local host = require "runbook._host"
local jcore = require "runbook._journal"
local json = require "runbook._json"
local errors = require "runbook.errors"
local loader = require "runbook._engine.loader"
local state = require "runbook._engine.state"
local actor = require "runbook._engine.actor"
local storemod = require "runbook._engine.store"
local params = require "runbook._engine.params"

local M = {}

local function out(s) host.write(1, s) end
local function printf(fmt, ...) out(string.format(fmt, ...) .. "\n") end

local function open_store(opts)
  local dir = storemod.location(opts.state)
  local store = storemod.open(dir, false)
  if not store then errors.raise { kind = "usage", message = "no state store at " .. storemod.redacted(dir) .. " (nothing has run here yet)" } end
  return store
end

local function short_error(e)
  if type(e) == "table" then return tostring(e.message) end
  return e and tostring(e) or ""
end

local function fmt_ms(ms)
  if not ms then return "" end
  if ms < 1000 then return ms .. "ms" end
  return string.format("%.1fs", ms / 1000)
end

local function approvers_of(s)
  local who = {}
  for _, a in ipairs(s.approvals or {}) do who[#who + 1] = a.actor end
  return table.concat(who, ", ")
end

local function step_note(s)
  if s.status == "confirmed" and (s.approvals_needed or 1) > 1 then
    return "approved by " .. approvers_of(s) .. (s.note and (": " .. s.note) or "")
  elseif s.status == "confirmed" then
    return (s.via == "verify" and "verify passed" or ("by " .. tostring(s.confirmed_by))) .. (s.note and (": " .. s.note) or "")
  elseif s.status == "waiting" and s.approvals and #s.approvals > 0 then
    local more = s.approvals_needed - #s.approvals
    return string.format("approved by %s (%d of %d); %d more needed from someone else", approvers_of(s), #s.approvals,
      s.approvals_needed, more)
  elseif s.status == "failed" or s.status == "retrying" then return short_error(s.error)
  elseif s.status == "skipped" then return tostring(s.reason or "")
  end
  return ""
end

-- ---------------------------------------------------------------------------

-- A run whose journal cannot be shown (HMAC without the key, events
-- lacking the fields a run needs) is an error, in one line.
local function readable(id, info)
  if info.unreadable then
    errors.raise { kind = "store", code = info.needs_key and "audit-key" or "damaged", message = string.format("run %s cannot be shown: %s", id, info.unreadable) }
  end
end

-- --since: a date (2026-12-01), a time (2026-12-01T10:00:00Z) or an age
-- (30m, 12h, 7d); returns the earliest start time, as an ISO string
local function since_of(text)
  if not text then return nil end
  local n, unit = text:match("^(%d+)([smhd])$")
  if n then
    local secs = tonumber(n) * ({ s = 1, m = 60, h = 3600, d = 86400 })[unit]
    return os.date("!%Y-%m-%dT%H:%M:%S", os.time() - secs)
  end
  if text:match("^%d%d%d%d%-%d%d%-%d%d") then return (text:gsub("Z$", "")) end
  errors.raise { kind = "usage", message = "runs: --since must be a date (2026-12-01), a time (2026-12-01T10:00:00Z) or an age (30m, 12h, 7d)" }
end

local function wanted(row, opts, since)
  if opts.runbook and row.runbook ~= opts.runbook then return false end
  if opts.status and row.status ~= opts.status then return false end
  if opts.actor and not (row.by == opts.actor or (row.by or ""):match("^([^@]*)") == opts.actor) then return false end
  if since and (row.started or "") < since then return false end
  return true
end

function M.runs(_, opts)
  local store = open_store(opts)
  local rows, unreadable = {}, {}
  local since = since_of(opts.since)
  for _, id in ipairs(store:list()) do
    -- a run of another runbook by its id is not read at all; the name in
    -- its first event decides for the rest
    local book = opts.runbook and storemod.book_of(id)
    local st, info
    if not (book and book ~= opts.runbook) then st, info = store:state(id) end
    if not st or (opts.runbook and st.runbook ~= opts.runbook) then
      -- not asked for
    elseif info.unreadable then
      unreadable[#unreadable + 1] = string.format("runbook: run %s cannot be shown: %s\n", id, info.unreadable)
    else
      local done, total = #st.completed, #(st.step_order or {})
      rows[#rows + 1] = {
        run = id, runbook = st.runbook, status = info.damaged and "damaged" or st.status,
        started = st.started_at, by = st.started_by, done = done, steps = total, events = info.count,
      }
      if not wanted(rows[#rows], opts, since) then rows[#rows] = nil end
    end
  end
  local code = #unreadable > 0 and 2 or 0
  for _, line in ipairs(unreadable) do host.write(2, line) end
  if opts.output == "json" then
    for _, r in ipairs(rows) do out(json.encode(r) .. "\n") end
    return code
  end
  if #rows == 0 then
    if code == 0 then printf("no runs in %s", store:describe()) end
    return code
  end
  printf("%-48s %-12s %-8s %-20s %s", "RUN", "STATUS", "STEPS", "STARTED", "BY")
  for _, r in ipairs(rows) do
    printf("%-48s %-12s %-8s %-20s %s", r.run, r.status, r.done .. "/" .. r.steps, (r.started or "?"):sub(1, 19), r.by or "?")
  end
  return code
end

function M.status(pos, opts)
  local store = open_store(opts)
  local id = store:resolve(pos[1])
  local st, info, events = store:state(id)
  readable(id, info)
  if opts.output == "json" then
    out(json.encode({ run = id, state = st, journal = info }, { pretty = true }) .. "\n")
    return 0
  end
  local titles = {}
  for _, ev in ipairs(events) do
    if ev.type == "step.started" and ev.title then titles[ev.step] = ev.title end
  end
  printf("Run %s (%s)", id, tostring(st.runbook))
  printf("  file     %s", tostring(st.file))
  printf("  started  %s by %s", tostring(st.started_at), tostring(st.started_by))
  local status = st.status
  if st.status == "failed" then status = "failed at " .. tostring(st.failed_step) end
  if st.status == "waiting" then status = "waiting for " .. tostring(st.waiting_step) end
  printf("  status   %s", status)
  local jstate = info.bad_seq and ("DAMAGED at seq " .. info.bad_seq .. ": " .. info.reason)
    or info.damaged and ("DAMAGED: " .. info.damage)
    or info.torn_bytes and ("torn tail at seq " .. info.torn_seq .. " (cut on the next exec)")
    or "hash chain intact"
  printf("  journal  %d events, %s%s", info.count, jstate, st.resumes > 0 and string.format(", resumed %d time(s)", st.resumes) or "")
  out("\n")
  printf("  %-10s %-11s %-8s %-8s %s", "STEP", "STATUS", "ATTEMPT", "TIME", "NOTE")
  for _, sid in ipairs(st.step_order or {}) do
    local s = state.step(st, sid)
    local note = step_note(s)
    if note == "" and titles[sid] then note = titles[sid] end
    printf("  %-10s %-11s %-8s %-8s %s", sid, s.status, s.attempts > 0 and tostring(s.attempts) or "", fmt_ms(s.ms), note)
  end
  return 0
end

local function describe(ev)
  local t = ev.type
  if t == "run.started" then
    return string.format("%s by %s@%s (pid %s, runbook %s)", tostring(ev.runbook), tostring(ev.user), tostring(ev.host), tostring(ev.pid), tostring(ev.file))
  elseif t == "run.resumed" then
    return string.format("by %s@%s (pid %s)%s", tostring(ev.user), tostring(ev.host), tostring(ev.pid), ev.changed and "; runbook changed" or "")
  elseif t == "step.started" then return string.format("attempt %s: %s", tostring(ev.attempt), tostring(ev.title or ""))
  elseif t == "step.finished" then return "done in " .. fmt_ms(ev.ms)
  elseif t == "step.failed" then return (ev.final and "failed: " or "failed (will retry): ") .. short_error(ev.error)
  elseif t == "step.skipped" then return tostring(ev.reason)
  elseif t == "step.confirmed" then
    return string.format("by %s@%s via %s%s", tostring(ev.by), tostring(ev.host), tostring(ev.via), ev.note and (": " .. ev.note) or "")
  elseif t == "step.reset" or t == "step.undone" then
    return string.format("by %s@%s%s", tostring(ev.by), tostring(ev.host), ev.note and (": " .. ev.note) or "")
  elseif t == "step.memo" or t == "step.checkpoint" then return "key " .. tostring(ev.key)
  elseif t == "action" then
    local parts = {}
    for k, v in pairs(ev) do
      if not jcore.RESERVED[k] and k ~= "kind" and k ~= "summary" then
        parts[#parts + 1] = k .. "=" .. (type(v) == "table" and json.encode(v, { secrets = "redact" }) or tostring(v))
      end
    end
    table.sort(parts)
    return tostring(ev.kind) .. (ev.summary and (": " .. ev.summary) or "") .. (#parts > 0 and ("  " .. table.concat(parts, " ")) or "")
  elseif t == "journal.truncated" then
    return string.format("cut %s torn bytes of seq %s after a crash (sha256 %s)", tostring(ev.bytes), tostring(ev.torn_seq), tostring(ev.sha256))
  elseif t == "run.failed" or t == "run.waiting" or t == "run.interrupted" then return "at " .. tostring(ev.step)
  end
  return ""
end

function M.log(pos, opts)
  local store = open_store(opts)
  local id = store:resolve(pos[1])
  if opts.output == "json" then
    local lines, info = store:read(id, "lines")
    readable(id, info)
    for i, l in ipairs(lines) do
      -- the lines as written (byte for byte), chosen by their decoded
      -- step; with --step, seq 1 (run.started) still comes first, so a
      -- filtered export carries its run and its log_format version
      if not opts.step or i == 1 or (json.decode(l) or {}).step == opts.step then out(l .. "\n") end
    end
    if info.bad_seq or info.torn_bytes then
      host.write(2, string.format("runbook: journal stops being valid at seq %d: %s\n", info.bad_seq or info.torn_seq, info.reason))
      return 1
    elseif info.damaged then
      host.write(2, string.format("runbook: journal damaged: %s\n", info.damage))
      return 1
    end
    return 0
  end
  local events, info = store:read(id)
  readable(id, info)
  for _, ev in ipairs(events) do
    if not opts.step or ev.step == opts.step then
      printf("#%-5d %s  %-8s %-18s %s", ev.seq, ev.ts, ev.step or "", ev.type, describe(ev))
    end
  end
  if info.bad_seq or info.torn_bytes then
    printf("!! journal stops being valid at seq %d: %s", info.bad_seq or info.torn_seq, info.reason)
    return 1
  elseif info.damaged then
    printf("!! journal damaged: %s", info.damage)
    return 1
  end
  return 0
end

local verify_one

function M.audit(pos, opts)
  if pos[1] ~= "verify" then errors.raise { kind = "usage", message = "audit: the only subcommand is verify (runbook audit verify RUN)" } end
  if opts.all and pos[2] then errors.raise { kind = "usage", message = "audit verify: give a RUN or --all, not both" } end
  if not opts.all and not pos[2] then errors.raise { kind = "usage", message = "audit verify: missing RUN (or --all for every run)" } end
  local store = open_store(opts)
  if not opts.all then return verify_one(store, store:resolve(pos[2]), opts) end
  -- every run, one line each; the exit code says whether all held
  local code = 0
  for _, id in ipairs(store:list()) do
    local ok, rc = pcall(verify_one, store, id, opts)
    if not ok then
      host.write(2, string.format("run %s: audit FAILED: %s\n", id, errors.message(rc)))
      rc = 1
    end
    if rc ~= 0 then code = 1 end
  end
  return code
end

function verify_one(store, id, opts)
  local key = storemod.audit_key()
  local _, info = store:read(id, "none")
  local ok, msg = true, nil
  if info.bad_seq then
    ok, msg = false, string.format("seq %d: %s", info.bad_seq, info.reason)
  elseif info.missing then
    ok, msg = false, string.format("seq %d: %s", info.missing_after + 1, info.damage)
  elseif info.damaged then
    ok, msg = false, string.format("seq %d: %s", info.count, info.damage)
  elseif info.torn_bytes then
    ok, msg = false, string.format("seq %d: %s (a torn tail from a crash; the next exec cuts it and records the cut)", info.torn_seq, info.reason)
  elseif key and not info.hmac and info.count > 0 then
    ok, msg = false, "seq 1: the journal carries no HMAC, but RUNBOOK_AUDIT_KEY is set (HMACs stripped, or a run made without the key)"
  end
  if opts.output == "json" then
    out(json.encode({ run = id, ok = ok, events = info.count, hmac = info.hmac and key ~= nil, bad_seq = info.bad_seq or (info.missing and info.missing_after + 1) or info.torn_seq,
      missing = info.missing, reason = msg }) .. "\n")
  elseif ok then
    printf("run %s: %d events, hash chain intact%s", id, info.count,
      info.hmac and (key and ", HMACs verified" or "")
        or (key and "" or string.format(" (no HMAC: anyone who can write %s can recompute the chain; set RUNBOOK_AUDIT_KEY when runs start to prevent that)",
          store.kind == "postgres" and "the events table" or "the file")))
  else
    host.write(2, string.format("run %s: audit FAILED at %s\n", id, msg))
  end
  return ok and 0 or 1
end

function M.report(pos, opts)
  return require("runbook._engine.serve").report(pos, opts)
end

function M.serve(pos, opts)
  return require("runbook._engine.serve").serve(pos, opts)
end

-- ---------------------------------------------------------------------------
-- changing a run

local function with_run(opts, ref, fn)
  local store = open_store(opts)
  local id = store:resolve(ref)
  local ok, r = pcall(store.open_run, store, id)
  if not ok then
    if type(r) == "table" and r.kind == "store" and r.code == "locked" then
      host.write(2, "runbook: " .. errors.message(r) .. "\n")
      return 4
    end
    error(r, 0)
  end
  local okf, res = pcall(fn, { store = store, id = id, state = r.state, journal = r.journal, log = r.log,
    append = function(type_, fields) return r:append(type_, fields).seq end })
  r:close()
  if not okf then error(res, 0) end
  return res
end

local function known_step(st, id, step)
  for _, s in ipairs(st.step_order or {}) do
    if s == step then return true end
  end
  errors.raise { kind = "usage", message = string.format("run %s has no step '%s'", id, step) }
end

function M.confirm(pos, opts)
  return with_run(opts, pos[1], function(r)
    local step = pos[2]
    known_step(r.state, r.id, step)
    local s = state.step(r.state, step)
    if state.COMPLETE[s.status] then
      errors.raise { kind = "usage", message = string.format("step %s of run %s is already %s", step, r.id, s.status) }
    end
    -- the journal does not say which steps are manual; the runbook does
    local okb, book = pcall(loader.load, r.state.file)
    if okb and book.by_id[step] and book.by_id[step].kind ~= "manual" then
      errors.raise { kind = "usage", message = string.format("step %s is not a manual step; only manual steps are confirmed", step) }
    elseif not okb and s.status ~= "waiting" then
      errors.raise { kind = "usage", message = string.format("step %s is not waiting for confirmation (and the runbook %s cannot be read to check it)", step, tostring(r.state.file)) }
    end
    local needed = okb and book.by_id[step] and book.by_id[step].approvers or 1
    local me = actor()
    for _, a in ipairs(s.approvals or {}) do
      if a.actor == me then
        errors.raise { kind = "usage", message = string.format("%s has already approved step %s of run %s (%d of %d); another person must approve it",
          me, step, r.id, #s.approvals, needed) }
      end
    end
    r.append("step.confirmed", { step = step, via = "command", by = host.user(), host = host.hostname(), note = opts.note,
      actor = me, needed = needed > 1 and needed or nil })
    local after = state.step(r.state, step)
    if state.COMPLETE[after.status] then
      printf("confirmed %s in run %s by %s. Run `runbook exec %s` to continue.", step, r.id, me, tostring(r.state.file))
    else
      printf("approved %s in run %s by %s (%d of %d approvals; %d more needed from someone else)", step, r.id, me,
        #after.approvals, after.approvals_needed, after.approvals_needed - #after.approvals)
    end
    return 0
  end)
end

function M.reset(pos, opts)
  return with_run(opts, pos[1], function(r)
    local step = pos[2]
    known_step(r.state, r.id, step)
    local s = state.step(r.state, step)
    if s.status == "pending" then
      errors.raise { kind = "usage", message = string.format("step %s of run %s has not run; nothing to reset", step, r.id) }
    end
    -- s is the live state, which the append folds the reset into
    local was = s.status
    r.append("step.reset", { step = step, by = host.user(), host = host.hostname(), note = opts.note, was = was })
    printf("reset %s in run %s (was %s); it runs again on the next exec. Its ctx:once memos are kept.", step, r.id, was)
    return 0
  end)
end

function M.rollback(pos, opts)
  return require("runbook._engine.rollback").run(pos, opts, with_run)
end

-- ---------------------------------------------------------------------------
-- reading runbooks

-- The key ids a run's sealed memos need, from its lines.
local function kids_of(lines)
  local kids, seen = {}, {}
  for _, l in ipairs(lines) do
    for kid in l:gmatch('"%$secret":{[^}]-"kid":"(%x+)"') do
      if not seen[kid] then seen[kid] = true kids[#kids + 1] = kid end
    end
  end
  return kids
end

--- push RUN --state URL [--from DIR]: moves a local run into the shared
--- store, its chain verified on the way; the local store keeps a note
--- and refuses to drive it after.
function M.push(pos, opts)
  local dest_loc = storemod.location(opts.state)
  if not storemod.is_postgres(dest_loc) then
    errors.raise { kind = "usage", message = "push: --state (or RUNBOOK_STATE) must name the shared store, a postgres:// URL" }
  end
  local from = opts.from or ".runbook"
  local src = storemod.open(from, false)
  if not src or src.kind ~= "file" then
    errors.raise { kind = "usage", message = "push: no local store at " .. storemod.redacted(from) .. " (--from DIR)" }
  end
  local id = src:resolve(pos[1])
  local dest = storemod.open(dest_loc, true)
  -- under the run's lock here: no local exec moves it on meanwhile
  local r <close> = src:open_run(id)
  local lines, info = src:read(id, "lines")
  if info.damaged or info.needs_key or info.torn_bytes then
    errors.raise { kind = "store", code = "damaged", message = string.format("push: run %s does not verify (%s); it is not pushed",
      id, info.damage or info.unreadable or info.reason) }
  end
  local okd, existing = pcall(dest.resolve, dest, id)
  if okd and existing == id then
    errors.raise { kind = "usage", message = string.format("push: run %s is already in %s", id, dest:describe()) }
  end
  dest:import(id, lines, src:log_lines(id))
  local _, dinfo = dest:read(id, "none")
  if dinfo.damaged or dinfo.count ~= #lines then
    errors.raise { kind = "store", code = "damaged", message = string.format("push: run %s did not arrive whole in %s (%s)",
      id, dest:describe(), dinfo.damage or (dinfo.count .. " of " .. #lines .. " events")) }
  end
  src:mark_pushed(id, dest:describe())
  printf("pushed run %s (%d events, chain verified) to %s; drive it there from now on", id, #lines, dest:describe())
  -- sealed memos open only with the key they were sealed with, which
  -- stays with the operator: say which one the run needs
  local kids = kids_of(lines)
  if #kids > 0 then
    local _, have = dest:secret_key(false)
    local _, lkid = src:secret_key(false)
    for _, kid in ipairs(kids) do
      if kid ~= have then
        host.write(2, string.format("runbook: run %s has memos sealed with key %s%s; whoever resumes it needs that key as RUNBOOK_SECRET_KEY or in ~/.config/runbook/secret.key\n",
          id, kid, kid == lkid and (" (this store's " .. from .. "/secret.key)") or ""))
      end
    end
  end
  dest:close()
  return 0
end

function M.check(pos, opts)
  local cli = params.parse_cli(opts.param or {})
  local values = opts.values and params.read_values(opts.values) or nil
  local book, problems = loader.check(pos[1], { cli = cli, values = values })
  if opts.param or opts.values then
    -- an unknown or invalid value given is one more problem (missing ones are listed already)
    local ok, e = pcall(params.resolve, book.params, { cli = cli, values = values })
    if not ok and not errors.message(e):match("^missing required param") then
      problems[#problems + 1] = pos[1] .. ": " .. errors.message(e)
    end
  end
  if #problems > 0 then
    for _, p in ipairs(problems) do host.write(2, p .. "\n") end
    errors.raise { kind = "runbook", message = string.format("%s: %d problem%s", pos[1], #problems, #problems == 1 and "" or "s") }
  end
  local manual = 0
  for _, s in ipairs(book.steps) do
    if s.kind == "manual" then manual = manual + 1 end
  end
  printf("%s: ok — runbook %s, %d steps (%d manual), %d parallel group(s)", pos[1], book.name, #book.steps, manual, #book.groups)
  return 0
end

function M.doc(pos)
  local book = loader.load(pos[1])
  out(require("runbook._engine.doc").render(book))
  return 0
end

function M.plan(pos, opts)
  local book = loader.load(pos[1])
  local store = storemod.open(storemod.location(opts.state), false)
  local id, st
  if store then
    id = store:find_unfinished(book.name)
    if id then st = store:state(id) end
  end
  st = st or state.new()
  local rows, next_marked = {}, false
  for _, s in ipairs(book.order) do
    local ss = state.step(st, s.id)
    local complete = state.COMPLETE[ss.status]
    local row = { step = s.id, title = s.title, kind = s.kind, status = ss.status, group = s.group, needs = s.needs }
    if not complete and not next_marked then
      row.next = true
      next_marked = true
    end
    rows[#rows + 1] = row
  end
  if opts.output == "json" then
    out(json.encode({ runbook = book.name, run = id, steps = rows }, { pretty = true }) .. "\n")
    return 0
  end
  printf("%s: %s", book.name, id and ("resumes run " .. id) or "a new run would start")
  for _, r in ipairs(rows) do
    printf("  %s %-10s %-10s %s%s%s", r.next and "→" or " ", r.step, r.status, r.title,
      r.kind == "manual" and "  (manual)" or "", r.group and ("  [parallel " .. r.group .. "]") or "")
  end
  if not next_marked then printf("nothing left to run") end
  return 0
end

--- `runbook sign FILE --key KEY`
function M.sign(pos, opts)
  if not opts.key then errors.raise { kind = "usage", message = "sign: --key KEY.pem is required (make one with `runbook keygen`)" } end
  local signing = require "runbook._engine.signing"
  local book = loader.load(pos[1])
  local path, kid = signing.sign(book, opts.key)
  printf("signed %s and %d module(s) with key %s: %s", book.file, #book.modules, kid, path)
  return 0
end

--- `runbook keygen [--out PREFIX]`
function M.keygen(_, opts)
  local sign = require "runbook._sign"
  local signing = require "runbook._engine.signing"
  local fs = require "runbook._fs"
  local prefix = opts.out or "runbook-signing"
  for _, p in ipairs { prefix .. ".pem", prefix .. ".pub" } do
    if fs.stat(p) then errors.raise { kind = "usage", message = string.format("keygen: %s exists; choose another --out", p) } end
  end
  local priv, pub = sign.keygen()
  if not priv then errors.raise { kind = "usage", message = "keygen: " .. tostring(pub) } end
  local ok, err = fs.write_file(prefix .. ".pem", priv, 384) -- 0600
  if not ok then errors.raise { kind = "usage", message = "keygen: " .. tostring(err) } end
  ok, err = fs.write_file(prefix .. ".pub", pub, 420)
  if not ok then errors.raise { kind = "usage", message = "keygen: " .. tostring(err) } end
  printf("key %s: %s.pem (private: keep it to yourself) and %s.pub (put it in the --trust folder of those who run your runbooks)",
    signing.key_id(pub), prefix, prefix)
  return 0
end

return M
