-- Parallel groups: the pending steps of a `parallel { ... }` group run at
-- the same time, each on its own thread in its own Lua state (states are
-- not shared across threads). A worker loads the runbook again, runs its
-- one step through the engine's Run:run_step, and appends to the run's
-- journal directly (appends are serialised and fsync'd in C). Its events,
-- logs and progress come back to the main thread through the host queue,
-- so the main state and the console stay current.
local thread = require "runbook._thread"
local secret = require "runbook._secret"
local json = require "runbook._json"
local host = require "runbook._host"

local M = {}

local DEFAULT_JOBS = 4

function M.available(run)
  return not run.dry_run and run.journal.handle ~= nil
end

local TRANSFER = "parallel-transfer"

-- ---------------------------------------------------------------------------
-- the main thread

local function apply_message(run, text)
  local m = json.decode(text)
  if not m then return end
  if m.kind == "event" then
    local ev = m.event
    require("runbook._engine.state").apply(run.state, ev)
    if run.console then run.console:event(ev) end
  elseif m.kind == "log" then
    if run.console then run.console:log(m.step, m.level, m.message) end
  elseif m.kind == "progress" then
    if run.console then run.console:progress_of(m.step, m.done, m.total, m.note) end
  end
end

local function drain(run)
  for _, text in ipairs(thread.drain()) do apply_message(run, text) end
end

--- Runs the steps concurrently (at most --jobs at a time). Returns the
--- group's outcome: "done", or "failed"/"interrupted" and the step.
function M.run(run, steps)
  local memo = require "runbook._engine.memo"
  run.keyfn(true) -- the key file exists before threads may need it
  local ekey = secret.random(32, "raw")
  local base = {
    file = run.book.file, run_id = run.id, state_dir = run.store.root, dry_run = run.dry_run,
    opts = { yes = run.opts.yes, state = run.opts.state },
    params = memo.seal(run.params, function() return ekey, TRANSFER end, TRANSFER),
  }
  local jobs = run.opts.jobs or DEFAULT_JOBS
  local queue = { table.unpack(steps) }
  local running = {}
  local outcome, culprit = "done", nil
  while #queue > 0 or #running > 0 do
    while #queue > 0 and #running < jobs and outcome == "done" and not host.interrupted() do
      local s = table.remove(queue, 1)
      base.step = s.id
      base.steps = run.state.steps
      local payload = json.encode(base, { secrets = "error" })
      running[#running + 1] = { step = s, t = thread.spawn(payload, run.journal:handle(), ekey) }
    end
    if outcome ~= "done" or host.interrupted() then queue = {} end
    local ok_sleep = pcall(host.sleep, 0.02)
    if not ok_sleep then queue = {} end
    drain(run)
    for i = #running, 1, -1 do
      local r = running[i]
      local ok, res = r.t:join(false)
      if ok ~= nil then
        table.remove(running, i)
        drain(run)
        if not ok then
          run:log(r.step.id, "error", "parallel step crashed: " .. tostring(res))
          res = "failed"
        end
        if res == "interrupted" and outcome ~= "interrupted" then
          outcome, culprit = "interrupted", r.step
        elseif res == "failed" and outcome == "done" then
          outcome, culprit = "failed", r.step
        elseif res == "waiting" and outcome == "done" then
          outcome, culprit = "waiting", r.step
        end
      end
    end
  end
  drain(run)
  if outcome == "done" and host.interrupted() then return "interrupted", steps[1] end
  return outcome, culprit
end

-- ---------------------------------------------------------------------------
-- a worker thread

-- forwards what the engine shows to the main thread
local Forward = {}
Forward.__index = Forward
local function post(t) thread.post(json.encode(t, { secrets = "redact", scrub = true })) end
function Forward:event(ev) post { kind = "event", event = ev } end
function Forward:log(step, level, msg) post { kind = "log", step = step, level = level, message = msg } end
function Forward:progress_of(step, done, total, note) post { kind = "progress", step = step, done = done, total = total, note = note } end
function Forward:note(text, level) post { kind = "log", level = level or "info", message = text } end

--- The body of a worker thread: runs one step of the run. Returns the
--- outcome ("done", "failed", "interrupted").
function M.worker(payload, journal_handle, ekey)
  local jcore = require "runbook._journal"
  local loader = require "runbook._engine.loader"
  local state = require "runbook._engine.state"
  local storemod = require "runbook._engine.store"
  local memo = require "runbook._engine.memo"
  local engine = require "runbook._engine.engine"
  local p = json.decode(payload)
  local book = loader.load(p.file)
  local s = book.by_id[p.step]
  if not s then error("parallel worker: step " .. tostring(p.step) .. " is not in " .. p.file) end
  local store = storemod.open(p.state_dir, false)
  local run = engine.new_run {
    book = book, opts = p.opts, dry_run = p.dry_run, id = p.run_id, store = store, console = setmetatable({}, Forward),
  }
  run.state = state.new()
  run.state.steps = p.steps
  for _, st in pairs(run.state.steps) do
    st.memos = st.memos or {}
    st.checkpoints = st.checkpoints or {}
  end
  run.params = memo.open(p.params, function() return ekey, TRANSFER end, TRANSFER, "params")
  run.journal = jcore.attach(journal_handle)
  run.logfile = jcore.open_log(store:log_path(run.id))
  local ok, res = pcall(run.run_step, run, s)
  if run.logfile then run.logfile:close() end
  run.journal:close()
  if not ok then error(res, 0) end
  return res
end

return M
