-- The body of a parallel step's thread (src/lua_thread.c requires this
-- module in the worker's own Lua state): it loads the runbook again, builds
-- a Run through the engine and runs its one step, forwarding what the
-- engine shows to the main thread. Kept apart from runbook._engine.parallel,
-- which the engine requires, so no module of the engine requires it back.
local thread = require "runbook._thread"
local json = require "runbook._json"
local jcore = require "runbook._journal"
local loader = require "runbook._engine.loader"
local state = require "runbook._engine.state"
local storemod = require "runbook._engine.store"
local memo = require "runbook._engine.memo"
local engine = require "runbook._engine.engine"
local TRANSFER = require("runbook._engine.parallel").TRANSFER

local M = {}

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
  -- the file journal is shared in memory; a store whose writers are
  -- connections gives this worker its own
  run.journal = journal_handle and jcore.attach(journal_handle) or store:attach_journal(run.id)
  run.logfile = store:open_log(run.id)
  local ok, res = pcall(run.run_step, run, s)
  if run.logfile then run.logfile:close() end
  run.journal:close()
  store:close()
  if not ok then error(res, 0) end
  return res
end

return M
