-- Parallel groups: the pending steps of a `parallel { ... }` group run at
-- the same time, each on its own thread in its own Lua state (states are
-- not shared across threads). A worker loads the runbook again, runs its
-- one step through the engine's Run:run_step, and appends to the run's
-- journal directly (the file journal's appends are serialised and fsync'd
-- in C; the PostgreSQL store's writers each have a connection, and an
-- append follows whatever tip the other writers left). Its events,
-- logs and progress come back to the main thread through the host queue,
-- so the main state and the console stay current. The worker's body is
-- runbook._engine.worker, so this module needs nothing of the engine's.
local thread = require "runbook._thread"
local secret = require "runbook._secret"
local json = require "runbook._json"
local host = require "runbook._host"

local M = {}

local DEFAULT_JOBS = 4

function M.available(run)
  return not run.dry_run and (run.journal.handle ~= nil or run.journal.shared == true)
end

-- the memo key that carries sealed params to the workers (worker.lua)
local TRANSFER = "parallel-transfer"
M.TRANSFER = TRANSFER

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
    file = run.book.file, run_id = run.id, state_dir = run.store.location, dry_run = run.dry_run,
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
      running[#running + 1] = { step = s, t = thread.spawn(payload, run.journal.handle and run.journal:handle() or nil, ekey) }
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

return M
