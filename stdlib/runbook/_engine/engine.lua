-- The engine: opens or resumes a run, then takes its steps in order, each
-- through verify, attempts with retry and timeout, and the journal. Every
-- event is durable before the engine moves past it.
local host = require "runbook._host"
local secret = require "runbook._secret"
local errors = require "runbook.errors"
local loader = require "runbook._engine.loader"
local state = require "runbook._engine.state"
local storemod = require "runbook._engine.store"
local params = require "runbook._engine.params"
-- sealing outputs and running parallel groups: loaded when a run first does it
local function memo() return require "runbook._engine.memo" end
local ctxmod = require "runbook._engine.ctx"
local audit = require "runbook._engine.audit"
local backoffs = require "runbook._engine.backoff"
local consolemod = require "runbook._engine.console"
local actor = require "runbook._engine.actor"
local function parallel() return require "runbook._engine.parallel" end
local notify_outcome

local M = {}

M.EXIT = require("runbook._engine.exits").EXIT -- the one table of exit codes

local Run = {}
Run.__index = Run
M.Run = Run

--- The one way a Run is made (exec, a parallel worker, rollback): fields
--- are book, opts, store, console, id, state, journal, logfile, lock...
function M.new_run(fields)
  local run = setmetatable(fields, Run)
  if not run.keyfn and run.store then
    local store = run.store
    run.keyfn = function(create) return store:secret_key(create) end
  end
  return run
end

-- Takes what store:open_run gathered.
local function attach(run, r)
  run.id, run.lock, run.journal, run.logfile, run.state = r.id, r.lock, r.journal, r.log, r.state
end

-- ---------------------------------------------------------------------------
-- journal, log and state

--- Appends an event, applies it to the state and shows it.
-- lazy: written now, made durable by the next append or Run:sync, for an
-- event the engine writes right before another one with no side effect in
-- between (docs/journal.md, "When an event is durable").
function Run:append(type_, fields, lazy)
  fields = fields or {}
  local seq = self.journal:append(type_, fields, lazy)
  local ev = {}
  for k, v in pairs(fields) do ev[k] = v end
  ev.type, ev.seq, ev.run, ev.ts = type_, seq, self.id, host.iso_time()
  state.apply(self.state, ev)
  if self.console then self.console:event(ev) end
  return seq
end

function Run:log(step, level, msg)
  if self.logfile then
    self.logfile:write(host.scrub(string.format("%s %s %s %s\n", host.iso_time(), step or "-", level, msg)))
    self.logfile:flush()
  end
  if self.console then self.console:log(step, level, msg) end
end

function Run:outputs_of(id)
  local st = self.state.steps[id]
  if not st or st.outputs == nil then return nil end
  return memo().open(st.outputs, self.keyfn, self.id .. "\0" .. id .. "\0outputs\0", "outputs of step " .. id)
end

-- an in-memory journal for --dry-run: nothing reaches the store
local MemoryJournal = {}
MemoryJournal.__index = MemoryJournal
function MemoryJournal:append() self.n = self.n + 1 return self.n end
function MemoryJournal:sync() end
function MemoryJournal:close() end

-- ---------------------------------------------------------------------------
-- calling step functions

local function normalize_error(e) return host.error_of(e, "error", false) end

-- the first line of a traceback that points into the runbook, for "where"
local function where_in(tb, file)
  if not tb then return nil end
  for line in tb:gmatch("[^\n]+") do
    local loc = line:match("^%s*(.-:%d+):")
    if loc and file and loc:find(file, 1, true) then return loc end
  end
  return nil
end

--- Makes every event written so far durable (a lazy one may be pending).
function Run:sync()
  if self.journal and self.journal.sync then self.journal:sync() end
end

--- Calls fn(ctx) under the guard with the audit sink pointed at this step.
function Run:call(s, fn, ctx, timeout)
  local function action_fields(t)
    local f = {}
    for k, v in pairs(t) do f[k] = v end
    f.step = s.id
    if self.dry_run then f.dry_run = true end
    return f
  end
  audit.set_sink {
    ctx = ctx,
    dry_run = self.dry_run,
    action = function(t) self:append("action", action_fields(t)) end,
    -- actions of concurrent writes: one sync for all, before the step goes on
    actions = function(list)
      for i, t in ipairs(list) do self:append("action", action_fields(t), i < #list) end
    end,
    log = function(level, msg) self:log(s.id, level, msg) end,
    progress = function(done, total, note)
      if self.console then self.console:progress_of(s.id, done, total, note) end
    end,
  }
  self:sync() -- user code may have side effects: nothing written may be pending
  local r = table.pack(host.guarded(timeout, fn, ctx))
  audit.set_sink(nil)
  return r
end

local function backoff_delay(retry, attempt)
  return backoffs.delay(retry.backoff, retry.delay, attempt, retry.max_delay)
end

-- An error's details go into the journal, which every resume reads: a
-- 2 MB HTML error page in an HTTP error must not. Strings are cut at 4 KiB
-- and nesting at 8 levels; the live error object keeps everything.
local DETAIL_MAX, DETAIL_DEPTH = 4096, 8

local function bounded(v, depth, seen)
  if type(v) == "string" then
    if #v <= DETAIL_MAX then return v end
    local n = DETAIL_MAX -- never inside a UTF-8 character: the next byte must not continue one
    while n > 0 and v:byte(n + 1) >= 0x80 and v:byte(n + 1) < 0xC0 do n = n - 1 end
    return v:sub(1, n) .. string.format("… (%d bytes in all)", #v)
  end
  if type(v) ~= "table" then return v end
  if depth >= DETAIL_DEPTH or seen[v] then return "…" end
  seen[v] = true
  local out = {}
  for k, x in next, v do out[k] = bounded(x, depth + 1, seen) end
  seen[v] = nil
  -- the metatable marks JSON arrays and objects: keep it
  return setmetatable(out, getmetatable(v))
end

local function error_fields(err, s)
  local e = { message = errors.message(err), kind = err.kind }
  if err.code ~= nil then e.code = err.code end
  if type(err.details) == "table" then e.details = bounded(err.details, 0, {}) end
  e.where = where_in(err.traceback, s.site and s.site.file)
  return e
end

-- ---------------------------------------------------------------------------
-- one step

-- returns "done" | "failed" | "interrupted" | "waiting"
function Run:run_step(s)
  if s.kind == "manual" then return self:run_manual(s) end
  local sst = state.step(self.state, s.id)

  local held = self:verify_before(s, sst, "warn", "verify raised before run (taken as not satisfied): ")
  if held == true then
    self:append("step.skipped", { step = s.id, reason = "verify passed before run: already satisfied" })
    return "done"
  elseif held then
    return held
  end

  local base = sst.attempts
  for i = 1, s.retry.attempts do
    local attempt = base + i
    self:append("step.started", { step = s.id, attempt = attempt, title = s.title })
    local t0 = host.monotime()
    local ctx = ctxmod.new(self, s, attempt)
    local r = self:call(s, s.run, ctx, s.timeout)
    local ok, out, err = r[1], r[2], nil
    if ok and s.verify and self.dry_run then
      -- nothing was written, so a goal that needs the step's writes cannot
      -- hold yet: checking it would fail every dry run of such a step
      self:log(s.id, "info", "dry run: verify after run not checked (nothing was written)")
    elseif ok and s.verify then
      local v = self:call(s, s.verify, ctx, s.timeout)
      if not v[1] then
        ok, err = false, normalize_error(v[2])
        if err.kind ~= "interrupted" then
          err = errors.new { kind = "verify", message = "verify raised after run: " .. errors.message(err), traceback = err.traceback }
        end
      elseif not v[2] then
        ok, err = false, errors.new { kind = "verify", message = "verify did not pass after run" }
      end
    elseif not ok then
      err = normalize_error(out)
      if err.kind == "timeout" then
        err.message = string.format("timed out after %s s", tostring(s.timeout))
      end
    end
    local ms = math.floor((host.monotime() - t0) * 1000 + 0.5)
    if ok then
      -- a step that returns nothing has nothing to seal (memo.seal(nil) is nil)
      local sealed_ok, sealed = true, nil
      if out ~= nil then
        sealed_ok, sealed = pcall(memo().seal, out, self.keyfn, self.id .. "\0" .. s.id .. "\0outputs\0", "the step's return value")
      end
      local appended, aerr = false, sealed
      if sealed_ok then
        -- lazy: the next event (the next step's started, or the run's end)
        -- syncs it, and Run:call syncs before any user code runs
        appended, aerr = pcall(self.append, self, "step.finished", { step = s.id, attempt = attempt, ms = ms, outputs = sealed }, true)
        if appended then return "done" end
        -- the journal itself failed: stop; a value it cannot encode fails the step
        if not (type(aerr) == "table" and aerr.kind == "journal" and aerr.code == "unencodable") then error(aerr, 0) end
      end
      local e = normalize_error(aerr)
      local msg = errors.message(e)
      if e.kind ~= "value" then msg = "the step's return value cannot be recorded: " .. msg end
      ok, err = false, errors.new { kind = "outputs", code = e.code, message = msg }
    end
    if err.kind == "interrupted" then return self:interrupted(s, attempt, ms) end
    if err.traceback then self:log(s.id, "debug", err.traceback) end
    -- a configuration error (a kubeconfig naming an unknown context) will
    -- not fix itself: no retry, and the run ends as a usage error (exit 2)
    local config = err.kind == "config" or err.kind == "usage"
    local final = i == s.retry.attempts or config
    local delay = not final and backoff_delay(s.retry, i) or nil
    self:append("step.failed", { step = s.id, attempt = attempt, ms = ms, error = error_fields(err, s), final = final, retry_in = delay })
    if final then return "failed" end
    if host.interrupted() then return self:interrupted(s, attempt, 0) end
    local slept = pcall(host.sleep, delay)
    if not slept or host.interrupted() then return self:interrupted(s, attempt, 0) end
  end
  return "failed"
end

-- A step's verify before it runs: true when its goal already holds, the
-- outcome "interrupted" on Ctrl-C, else nil (a verify that raises is taken
-- as not holding, and logged).
function Run:verify_before(s, sst, level, prefix)
  if not s.verify then return nil end
  local ctx = ctxmod.new(self, s, sst.attempts)
  local r = self:call(s, s.verify, ctx, s.timeout)
  if r[1] then return r[2] and true or nil end
  local err = normalize_error(r[2])
  if err.kind == "interrupted" then return self:interrupted(s, sst.attempts, 0) end
  self:log(s.id, level, prefix .. errors.message(err))
  return nil
end

function Run:interrupted(s, attempt, ms)
  self:append("step.interrupted", { step = s.id, attempt = attempt, ms = ms })
  return "interrupted"
end

function Run:run_manual(s)
  self:sync() -- a person is about to act on what the journal says
  local sst = state.step(self.state, s.id)
  local held = self:verify_before(s, sst, "info", "verify: ")
  if held == true then
    self:append("step.confirmed", { step = s.id, via = "verify", by = host.user(), host = host.hostname(), actor = actor() })
    return "done"
  elseif held then
    return held
  end
  if self.dry_run then
    self.console:note(string.format("%s (manual) would wait for a person: %s", s.id, s.title))
    self:append("step.confirmed", { step = s.id, via = "dry-run", by = host.user(), host = host.hostname(), actor = actor() })
    return "done"
  end
  local interactive = not self.opts.yes and host.isatty(0) and host.isatty(2) and self.console.mode ~= "json"
  if interactive then
    self.console:clear()
    local bar = string.rep("─", 60)
    host.write(2, string.format("\n%s\n%s  %s%s\n\n%s\n%s\n", bar, s.id, s.title,
      s.owner and ("  (owner: " .. s.owner .. ")") or "", s.instructions, bar))
    local me = actor()
    local already = false
    for _, a in ipairs(sst.approvals or {}) do
      if a.actor == me then already = true end
    end
    local answer = not already and host.read_line("Type 'done' once this is complete, or press Enter to stop here: ")
    if answer and answer:lower():match("^%s*done%s*$") then
      local note = host.read_line("Note for the audit trail (optional): ")
      if note and note:match("^%s*$") then note = nil end
      self:append("step.confirmed", { step = s.id, via = "terminal", by = host.user(), host = host.hostname(), note = note,
        actor = me, needed = s.approvers > 1 and s.approvers or nil })
      self.console:draw(true)
      if state.COMPLETE[state.step(self.state, s.id).status] then return "done" end
    end
    self.console:draw(true)
  end
  if sst.status ~= "waiting" then
    self:append("step.waiting", { step = s.id })
  end
  return "waiting"
end

-- ---------------------------------------------------------------------------
-- change detection on resume

-- Completed steps must still exist and keep their relative order.
local function check_changes(book, st)
  local problems = {}
  local old_pos = {}
  for i, id in ipairs(st.step_order or {}) do old_pos[id] = i end
  local done = {}
  for _, id in ipairs(st.completed) do
    if not book.by_id[id] then
      problems[#problems + 1] = string.format("step %s already ran in this run but is no longer in the runbook (removed or renamed)", id)
    else
      done[#done + 1] = id
    end
  end
  table.sort(done, function(a, b) return (old_pos[a] or 0) < (old_pos[b] or 0) end)
  for i = 2, #done do
    local a, b = done[i - 1], done[i]
    if book.by_id[a].position > book.by_id[b].position then
      problems[#problems + 1] = string.format("step %s was moved before %s; both already ran in the other order", b, a)
    end
  end
  return problems
end

-- ---------------------------------------------------------------------------
-- the run

local function ids_of(book)
  local ids = {}
  for i, s in ipairs(book.order) do ids[i] = s.id end
  return ids
end

-- The local modules the runbook loaded (step libraries and helpers), with
-- the sha256 of each: paths relative to the runbook's folder when inside it.
local function modules_of(book)
  local out = {}
  for i, m in ipairs(book.modules or {}) do
    local rel = m.path:sub(1, #book.dir + 1) == book.dir .. "/" and m.path:sub(#book.dir + 2) or m.path
    out[i] = { name = m.name, path = rel, sha256 = m.sha256 }
  end
  return out
end

-- The steps that local modules declared (step libraries): id -> {module,
-- title}, so a resume can tell when a library now declares a completed
-- step differently (its numbering shifted) or no longer declares it.
local function declared_by_modules(book)
  local by_path = {}
  for _, m in ipairs(book.modules or {}) do by_path[m.path] = m.name end
  local out, any = {}, false
  for _, s in ipairs(book.steps) do
    local mod = s.site and by_path[s.site.file]
    if mod then
      out[s.id] = { module = mod, title = s.title }
      any = true
    end
  end
  return any and out or nil
end

-- What changed among the loaded modules since the run started: one line
-- each, or an empty list.
local function module_changes(recorded, now)
  local before, lines = {}, {}
  for _, m in ipairs(recorded or {}) do before[m.name] = m end
  local seen = {}
  for _, m in ipairs(now) do
    seen[m.name] = true
    local b = before[m.name]
    if not b then
      lines[#lines + 1] = string.format("module %s (%s) is new since this run started", m.name, m.path)
    elseif b.sha256 ~= m.sha256 then
      lines[#lines + 1] = string.format("module %s (%s) changed since this run started (sha256 %s… → %s…)", m.name, m.path,
        tostring(b.sha256):sub(1, 12), m.sha256:sub(1, 12))
    end
  end
  for _, m in ipairs(recorded or {}) do
    if not seen[m.name] then lines[#lines + 1] = string.format("module %s (%s) is no longer loaded", m.name, tostring(m.path)) end
  end
  return lines
end

--- Which steps this invocation takes, in order, honouring --from / --only.
--- Raises a usage error when a selected step needs one that has not completed.
local function selection(book, opts, st)
  local sel = {}
  if opts.only then
    local s = book.by_id[opts.only]
    if not s then errors.raisef("usage", nil, "--only: no step '%s' in %s", opts.only, book.name) end
    sel = { s }
  elseif opts.from then
    local s = book.by_id[opts.from]
    if not s then errors.raisef("usage", nil, "--from: no step '%s' in %s", opts.from, book.name) end
    for i = s.position, #book.order do sel[#sel + 1] = book.order[i] end
  else
    sel = book.order
  end
  local chosen = {}
  for _, s in ipairs(sel) do chosen[s.id] = true end
  for _, s in ipairs(sel) do
    for _, n in ipairs(s.needs) do
      if not chosen[n] and not state.COMPLETE[state.step(st, n).status] then
        errors.raisef("usage", nil, "step %s needs %s, which has not completed in this run; run it first", s.id, n)
      end
    end
  end
  return sel
end

-- A store's refusal the operator must act on (a lock held, a damaged
-- journal, a missing audit key): one line, and its exit code.
local function refused(console, err)
  if type(err) == "table" and err.kind == "store" then
    if err.code == "locked" then
      console:note(errors.message(err), "error")
      return nil, M.EXIT.locked
    elseif err.code == "damaged" or err.code == "audit-key" then
      console:note(errors.message(err), "error")
      return nil, M.EXIT.usage
    end
  end
  error(err, 0)
end

-- Continues run r (opened by the store): checks the runbook's changes and
-- the params, records the resume.
local function resume(run, r, book, opts, console, cli_params, values)
  attach(run, r)
  local st = r.state
  local modules = modules_of(book)
  -- runs from before modules were recorded have none to compare
  local mod_changes = st.modules and module_changes(st.modules, modules) or {}
  local file_changed = st.sha256 ~= book.sha256
  local changed = file_changed or #mod_changes > 0
  local problems = changed and check_changes(book, st) or {}
  if changed and st.declared then
    local now = declared_by_modules(book) or {}
    for _, id in ipairs(st.completed) do
      local was, is = st.declared[id], now[id]
      if was and book.by_id[id] and (not is or is.module ~= was.module or is.title ~= was.title) then
        problems[#problems + 1] = string.format("step %s already ran as '%s' (declared by %s) but is now %s: the library's steps moved",
          id, tostring(was.title), tostring(was.module), is and string.format("'%s' (declared by %s)", is.title, is.module) or "declared by the runbook itself")
      end
    end
  end
  if #problems > 0 and not opts.accept_changes then
    console:note("the runbook changed since this run started, and the resume would not be safe:\n  - "
      .. table.concat(problems, "\n  - ")
      .. "\nPass --accept-changes to resume anyway, or --new to start a new run.", "error")
    return nil, M.EXIT.usage
  end
  run.params = params.resolve(book.params, { cli = cli_params, values = values, recorded = st.params })
  selection(book, opts, st)
  run.resumed = true
  local changed_params = {}
  local recordable = params.recordable(book.params, run.params)
  for k, v in pairs(recordable) do
    if st.params[k] ~= v then changed_params[k] = v end
  end
  local old_sha = st.sha256 -- the fold of run.resumed moves it to the new file's
  run:append("run.resumed", {
    user = host.user(), host = host.hostname(), pid = host.pid(), version = host.version(),
    sha256 = changed and book.sha256 or nil, steps = changed and ids_of(book) or nil,
    changed = changed or nil, accepted_changes = (#problems > 0) and problems or nil,
    params = next(changed_params) and changed_params or nil,
    modules = #mod_changes > 0 and modules or nil, modules_changed = #mod_changes > 0 and mod_changes or nil,
    declared = #mod_changes > 0 and declared_by_modules(book) or nil, signer = book.signer,
  })
  if file_changed then
    console:note(string.format("the runbook changed since this run started (sha256 %s… → %s…)%s",
      tostring(old_sha):sub(1, 12), book.sha256:sub(1, 12), #problems > 0 and "; changes accepted" or ""), "warn")
  end
  for _, line in ipairs(mod_changes) do console:note(line, "warn") end
  return run
end

-- Records run.started in the run just opened (new, or made by a process
-- that died before it could record it).
local function begin(run, book, cli_params, values, opts)
  run.params = params.resolve(book.params, { cli = cli_params, values = values })
  selection(book, opts, run.state)
  run.resumed = false
  local akey = storemod.audit_key()
  run:append("run.started", {
    runbook = book.name, file = book.file, sha256 = book.sha256, user = host.user(), host = host.hostname(),
    pid = host.pid(), version = host.version(), hmac = akey ~= nil, steps = ids_of(book),
    params = params.recordable(book.params, run.params), anchor = true, modules = modules_of(book),
    declared = declared_by_modules(book), signer = book.signer,
    log_format = 1, -- the export's version (docs/teams.md, "The SIEM export")
  })
  return run
end

-- Starts a new run of the book in the store.
local function start(run, store, book, opts, cli_params, values)
  params.resolve(book.params, { cli = cli_params, values = values }) -- refuse bad params before making a run
  selection(book, opts, state.new())
  attach(run, store:open_run(store:new_id(book.name), { create = true }))
  return begin(run, book, cli_params, values, opts)
end

--- Opens a run for the book: resumes the newest unfinished one unless
--- opts.new, or starts one. Returns the Run, or nil and an exit code after
--- printing why (locked, damaged journal, refused changes).
function M.open_run(book, opts, console)
  local dry = opts.dry_run
  local store = storemod.open(storemod.location(opts.state), not dry)
  local run = M.new_run { book = book, opts = opts, dry_run = dry, console = console, store = store }
  local cli_params = params.parse_cli(opts.params or {})
  local values = opts.values and params.read_values(opts.values) or nil

  if dry then
    local id, events, st
    if store and not opts.new then id = store:find_unfinished(book.name) end
    if id then
      events = store:read(id)
      st = state.fold(events)
    end
    run.id = id or (book.name .. "-dry-run")
    run.state = st or state.new()
    run.journal = setmetatable({ n = run.state.last_seq or 0 }, MemoryJournal)
    local k = secret.random(32, "raw")
    run.keyfn = function()
      if id and store then
        local key, kid = store:secret_key(false)
        if key then return key, kid end
      end
      return k, "dry-run"
    end
    run.params = params.resolve(book.params, { cli = cli_params, values = values, recorded = st and st.params })
    selection(book, opts, run.state)
    run.resumed = id ~= nil
    return run
  end

  -- Finding or making the run happens under the runbook's lock in the
  -- store, so two fresh execs cannot both make one: the second finds the
  -- first's run, locked.
  local ok, res, code = pcall(function()
    if not os.getenv("RUNBOOK_SECRET_KEY") then store:check_key_file() end
    local choosing <close> = store:choose(book.name)
    local id, damaged, why = store:find_unfinished(book.name)
    if id and opts.new then
      -- passed over for a new run: still say when it is damaged
      local okr, _, info = pcall(store.read, store, id, "none")
      if okr and info.damaged then damaged, why = id, info.damage end
      id = nil
    end
    if id then
      local r = store:open_run(id)
      local go = resume
      if r.state.status == "new" then -- its maker died before recording run.started
        go = function() attach(run, r) return begin(run, book, cli_params, values, opts) end
      end
      local okr, rr, rc = pcall(go, run, r, book, opts, console, cli_params, values)
      if not okr or not rr then r:close() run.journal, run.logfile, run.lock = nil, nil, nil end
      if not okr then error(rr, 0) end
      return rr, rc
    end
    if damaged then
      console:note(string.format("the newest run of %s, %s, is damaged (%s); it is left as it is (see `runbook audit verify %s`). Starting a new run.",
        book.name, damaged, why, damaged), "warn")
    end
    return start(run, store, book, opts, cli_params, values)
  end)
  if not ok then
    if run.journal then run:close() end
    return refused(console, res)
  end
  return res, code
end

function Run:close()
  if self.journal then
    pcall(self.sync, self)
    self.journal:close()
  end
  if self.logfile then self.logfile:close() self.logfile = nil end
  if self.lock then self.lock:release() self.lock = nil end
end

--- Runs the selected steps. Returns the exit code.
function Run:execute()
  local console = self.console
  local sel = selection(self.book, self.opts, self.state)
  local t0 = host.monotime()
  local ran = 0
  local i = 1
  while i <= #sel do
    local s = sel[i]
    if self.runlock then
      self:sync() -- the lock check talks to the outside world
      local held, lerr = pcall(self.runlock.check, self.runlock)
      if not held then
        self:append("run.interrupted", { step = s.id, reason = "run lock lost: " .. errors.message(lerr) })
        console:finish("the run lock was lost (" .. errors.message(lerr) .. "); stopped before " .. s.id, "error")
        return M.EXIT.locked
      end
    end
    if host.interrupted() then
      self:append("run.interrupted", { step = s.id })
      console:finish(string.format("interrupted before %s; %s to resume", s.id, consolemod.resume_phrase(self.opts, self.book)), "warn")
      return M.EXIT.interrupted
    end
    local batch = { s }
    if s.group and not self.dry_run then
      -- the pending members of this parallel group that come next
      batch = {}
      local j = i
      while j <= #sel and sel[j].group == s.group do
        batch[#batch + 1] = sel[j]
        j = j + 1
      end
    end
    local pending = {}
    for _, b in ipairs(batch) do
      if not state.COMPLETE[state.step(self.state, b.id).status] then pending[#pending + 1] = b end
    end
    local outcome, failed_step = "done", nil
    if #pending == 1 or (#pending > 1 and not parallel().available(self)) then
      for _, p in ipairs(pending) do
        outcome = self:run_step(p)
        ran = ran + 1
        if outcome ~= "done" then failed_step = p break end
      end
    elseif #pending > 1 then
      self:sync()
      outcome, failed_step = parallel().run(self, pending)
      ran = ran + #pending
    end
    if outcome == "failed" then
      self:append("run.failed", { step = failed_step.id })
      local last = state.step(self.state, failed_step.id).error
      if type(last) == "table" and (last.kind == "config" or last.kind == "usage") then
        console:finish(string.format("%s: configuration error: %s. Fix it and %s.", failed_step.id, tostring(last.message), consolemod.resume_phrase(self.opts, self.book)), "error")
        return M.EXIT.usage
      end
      console:finish(string.format("%s failed. Fix the cause and %s to resume at %s.", failed_step.id, consolemod.resume_phrase(self.opts, self.book), failed_step.id), "error")
      return M.EXIT.failed
    elseif outcome == "interrupted" then
      self:append("run.interrupted", { step = failed_step.id })
      console:finish(string.format("interrupted during %s; %s to resume", failed_step.id, consolemod.resume_phrase(self.opts, self.book)), "warn")
      return M.EXIT.interrupted
    elseif outcome == "waiting" then
      self:append("run.waiting", { step = failed_step.id })
      console:finish(string.format("waiting for %s (%s). When it is done: runbook confirm %s %s --note '...'  then %s.",
        failed_step.id, failed_step.title, self.id, failed_step.id, consolemod.resume_phrase(self.opts, self.book)), "warn")
      return M.EXIT.waiting
    end
    i = i + #batch
  end
  local remaining = 0
  for _, s in ipairs(self.book.order) do
    if not state.COMPLETE[state.step(self.state, s.id).status] then remaining = remaining + 1 end
  end
  local ms = math.floor((host.monotime() - t0) * 1000 + 0.5)
  if remaining > 0 then
    console:finish(string.format("%d step(s) ran; %d step(s) remain in run %s", ran, remaining, self.id), "warn")
    return M.EXIT.ok
  end
  if self.state.status ~= "finished" then self:append("run.finished", { ms = ms }) end
  if self.dry_run then
    console:finish(string.format("dry run complete: %d step(s) would run; nothing was written", ran))
  else
    console:finish(string.format("run %s finished (%d step(s) this time, %s)", self.id, ran,
      ms < 1000 and (ms .. "ms") or string.format("%.1fs", ms / 1000)))
  end
  return M.EXIT.ok
end

-- The cross-machine lock (`--lock redis://...` or RUNBOOK_LOCK): taken
-- before the run is opened, so two operators on two machines cannot both
-- start or continue this runbook. Returns the handle, or nil and an exit code.
local function take_runlock(book, opts, console)
  local url = opts.lock or os.getenv("RUNBOOK_LOCK")
  if url == nil or url == "" or opts.dry_run then return nil end
  url = secret.new(url) -- its password is scrubbed wherever the URL is echoed
  local ok, handle, holder = pcall(require("runbook._engine.runlock").acquire, url, book.name, {})
  if not ok then
    console:note("cannot take the run lock: " .. errors.message(handle), "error")
    return nil, M.EXIT.usage
  end
  if not handle then
    console:note(string.format("runbook %s is locked by %s", book.name, holder), "error")
    return nil, M.EXIT.locked
  end
  if handle.took_over then
    console:note(string.format("took over the run lock of %s: that process is gone from this machine", handle.took_over), "warn")
  end
  return handle
end

-- `--notify URL` (RUNBOOK_NOTIFY): tell a webhook the run waits, failed or
-- finished. The URL (a webhook's token is in it) is registered as a secret,
-- so it is never printed; a failed delivery is logged and changes nothing.
notify_outcome = function(run, opts, before)
  local url = opts.notify or os.getenv("RUNBOOK_NOTIFY")
  if url == nil or url == "" or run.dry_run then return end
  secret.register(url)
  local notify = require "runbook._engine.notify"
  local msg = notify.message(run, before)
  if not msg then return end
  local sent, why = notify.send(url, msg)
  if not sent then
    local line = string.format("notification (%s) not delivered: %s", msg.event, tostring(why))
    run:log(nil, "warn", line) -- to the run log and the console
  end
end

--- `runbook exec`: load, open or resume, run. Returns the exit code.
function M.exec(opts)
  local signer
  local require_sig = opts.require_signature or os.getenv("RUNBOOK_REQUIRE_SIGNATURE") == "1"
  local book
  if require_sig then
    local chk = require("runbook._engine.signing").check(opts.file, opts.trust or os.getenv("RUNBOOK_TRUST"))
    book = loader.load(opts.file, { check_module = chk.module, expect_sha256 = chk.sha256 })
    signer = chk.key_id
  else
    book = loader.load(opts.file)
  end
  book.signer = signer
  local console = consolemod.new { output = opts.output }
  local runlock, lcode = take_runlock(book, opts, console)
  if lcode then return lcode end
  local okr, run, code = pcall(M.open_run, book, opts, console)
  if not okr or not run then
    if runlock then pcall(runlock.release, runlock) end
    if not okr then error(run, 0) end
    return code
  end
  run.runlock = runlock
  host.trap_signals()
  console:begin({ run = run.id, runbook = book.name, resumed = run.resumed, dry_run = run.dry_run }, book.order, run.state)
  local before = run.state.status
  local ok, res = pcall(run.execute, run)
  if ok then notify_outcome(run, opts, before) end
  run:close()
  if runlock then pcall(runlock.release, runlock) end
  if not ok then error(res, 0) end
  return res
end

return M
