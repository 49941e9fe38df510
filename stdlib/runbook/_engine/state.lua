-- Run state is a fold over the journal's events; there is no second state
-- file to drift. apply() is the step function, used both when a journal is
-- read and as each new event is appended.
local M = {}

-- step statuses that count as complete: never run again on resume
M.COMPLETE = { done = true, skipped = true, confirmed = true }

local function new_step(id)
  return { id = id, status = "pending", attempts = 0, memos = {}, checkpoints = {}, actions = 0 }
end

--- A fresh, empty run state.
function M.new()
  return {
    status = "new", steps = {}, completed = {}, resumes = 0, events = 0, last_seq = 0,
    truncations = 0, step_order = {},
  }
end

local function step(st, id)
  local s = st.steps[id]
  if not s then
    s = new_step(id)
    st.steps[id] = s
  end
  return s
end

local function uncomplete(st, id)
  for i, c in ipairs(st.completed) do
    if c == id then
      table.remove(st.completed, i)
      return
    end
  end
end

local function complete(st, id)
  uncomplete(st, id)
  st.completed[#st.completed + 1] = id
end

local handlers = {}

handlers["run.started"] = function(st, ev)
  st.id = ev.run
  st.runbook = ev.runbook
  st.file = ev.file
  st.sha256 = ev.sha256
  st.params = ev.params or {}
  st.started_at = ev.ts
  st.started_by = ev.user and (ev.user .. "@" .. tostring(ev.host)) or nil
  st.hmac = ev.hmac
  st.step_order = ev.steps or {}
  st.dry_run = ev.dry_run
  st.modules = ev.modules
  st.declared = ev.declared
  st.status = "running"
end

handlers["run.resumed"] = function(st, ev)
  st.resumes = st.resumes + 1
  st.status = "running"
  if ev.sha256 then st.sha256 = ev.sha256 end
  if ev.steps then st.step_order = ev.steps end
  if ev.modules then st.modules = ev.modules end
  if ev.declared then st.declared = ev.declared end
  if ev.params then
    for k, v in pairs(ev.params) do st.params[k] = v end
  end
end

handlers["journal.truncated"] = function(st) st.truncations = st.truncations + 1 end

handlers["step.started"] = function(st, ev)
  local s = step(st, ev.step)
  s.status = "running"
  s.attempts = ev.attempt or (s.attempts + 1)
  s.started_at = ev.ts
  s.error = nil
end

handlers["step.memo"] = function(st, ev) step(st, ev.step).memos[ev.key] = { value = ev.value } end

handlers["step.checkpoint"] = function(st, ev) step(st, ev.step).checkpoints[ev.key] = { value = ev.value } end

handlers["action"] = function(st, ev)
  if ev.step then
    local s = step(st, ev.step)
    s.actions = s.actions + 1
  end
end

handlers["step.finished"] = function(st, ev)
  local s = step(st, ev.step)
  s.status = "done"
  s.outputs = ev.outputs
  s.ms = ev.ms
  s.finished_at = ev.ts
  complete(st, ev.step)
end

handlers["step.failed"] = function(st, ev)
  local s = step(st, ev.step)
  s.status = ev.final and "failed" or "retrying"
  s.error = ev.error
  s.ms = ev.ms
end

handlers["step.skipped"] = function(st, ev)
  local s = step(st, ev.step)
  s.status = "skipped"
  s.reason = ev.reason
  s.finished_at = ev.ts
  complete(st, ev.step)
end

handlers["step.waiting"] = function(st, ev)
  step(st, ev.step).status = "waiting"
end

-- A manual step may need more than one person (manual "X" { approvers = 2 }):
-- each confirmation is its own event naming its actor and how many are
-- needed; the same actor twice counts once, and the step is confirmed
-- (complete) when enough different people have confirmed it.
handlers["step.confirmed"] = function(st, ev)
  local s = step(st, ev.step)
  local actor = ev.actor or (ev.by and (ev.by .. "@" .. tostring(ev.host))) or "?"
  s.approvals = s.approvals or {}
  local seen = false
  for _, a in ipairs(s.approvals) do
    if a.actor == actor then seen = true end
  end
  if not seen then s.approvals[#s.approvals + 1] = { actor = actor, note = ev.note, ts = ev.ts, via = ev.via } end
  s.approvals_needed = math.max(math.tointeger(ev.needed) or 1, 1)
  s.confirmed_by = ev.by and (ev.by .. "@" .. tostring(ev.host)) or nil
  s.note = ev.note
  s.via = ev.via
  if #s.approvals >= s.approvals_needed or ev.via == "verify" or ev.via == "dry-run" then
    s.status = "confirmed"
    s.finished_at = ev.ts
    complete(st, ev.step)
  else
    s.status = "waiting"
  end
end

handlers["step.interrupted"] = function(st, ev)
  step(st, ev.step).status = "interrupted"
end

handlers["step.reset"] = function(st, ev)
  local s = step(st, ev.step)
  s.status = "pending"
  s.approvals = nil
  s.outputs = nil
  s.checkpoints = {}
  s.error = nil
  s.reset_by = ev.by
  uncomplete(st, ev.step)
  st.status = "running"
end

handlers["step.undone"] = function(st, ev)
  local s = step(st, ev.step)
  s.status = "pending"
  s.outputs = nil
  s.checkpoints = {}
  s.undone = true
  uncomplete(st, ev.step)
  st.status = "running"
end

handlers["step.undo_failed"] = function(st, ev)
  step(st, ev.step).undo_error = ev.error
end

handlers["run.finished"] = function(st, ev)
  st.status = "finished"
  st.finished_at = ev.ts
end
handlers["run.failed"] = function(st, ev)
  st.status = "failed"
  st.failed_step = ev.step
end
handlers["run.interrupted"] = function(st) st.status = "interrupted" end
handlers["run.waiting"] = function(st, ev)
  st.status = "waiting"
  st.waiting_step = ev.step
end
handlers["run.rolled_back"] = function(st) st.status = "rolled back" end

--- Applies one event to the state.
function M.apply(st, ev)
  local h = handlers[ev.type]
  if h then h(st, ev) end
  st.events = st.events + 1
  if ev.seq then st.last_seq = ev.seq end
  st.last_ts = ev.ts or st.last_ts
  return st
end

-- The fields every event of a type must carry for the fold (and the
-- commands that show a run) to make sense of it.
local NEEDS = {
  ["run.started"] = { "runbook", "file", "sha256", "steps", "user", "host" },
}
local STEP_TYPES = {
  ["step.started"] = true, ["step.memo"] = true, ["step.checkpoint"] = true, ["step.finished"] = true,
  ["step.failed"] = true, ["step.skipped"] = true, ["step.waiting"] = true, ["step.confirmed"] = true,
  ["step.interrupted"] = true, ["step.reset"] = true, ["step.undone"] = true, ["step.undo_failed"] = true,
}

local BASE, KEYED, STEPPED, NONE = { "ts", "run", "type" }, { "step", "key" }, { "step" }, {}

--- Checks that the events can be folded: the first is run.started, and
--- each carries the fields its type needs. Returns nil, or the seq of the
--- first event that cannot and why. at, when given, holds each event's seq
--- (a scan in "fold" mode leaves out events known to pass).
function M.check(events, at)
  local started = false
  for n, ev in ipairs(events) do
    local i = at and at[n] or n
    -- a crash while run.started was written leaves its cut recorded first
    if not started and ev.type ~= "journal.truncated" then
      if ev.type ~= "run.started" then
        return i, string.format("seq %d is %s, not run.started: a run's journal begins with run.started", i, tostring(ev.type))
      end
      started = true
    end
    for _, f in ipairs(BASE) do
      if type(ev[f]) ~= "string" then return i, string.format("seq %d lacks its '%s'", i, f) end
    end
    local need = NEEDS[ev.type] or NONE
    if ev.type == "step.memo" or ev.type == "step.checkpoint" then
      need = KEYED
    elseif STEP_TYPES[ev.type] then
      need = STEPPED
    end
    for _, f in ipairs(need) do
      if ev[f] == nil then return i, string.format("seq %d (%s) lacks its '%s'", i, ev.type, f) end
    end
  end
  return nil
end

--- Folds a list of events into a run state.
function M.fold(events)
  local st = M.new()
  for i = 1, #events do M.apply(st, events[i]) end
  return st
end

--- Folds what a scan in "fold" mode returned into the run state: the same
--- state as M.fold over every event (src/journal_fold.c says why each
--- event it leaves out changes nothing but the count, and tests/spec/
--- fold_scan_spec.lua compares the two).
function M.fold_scanned(events, info)
  -- the last event is always among them, so last_seq and last_ts are its
  local st = M.new()
  for n = 1, #events do M.apply(st, events[n]) end
  for id, count in pairs(info.actions) do
    local s = step(st, id)
    s.actions = s.actions + count
  end
  st.events = st.events + info.skipped
  return st
end

--- The state of one step (pending when it never ran).
function M.step(st, id)
  return st.steps[id] or new_step(id)
end

--- True when the run has nothing left to do.
function M.finished(st)
  return st.status == "finished"
end

return M
