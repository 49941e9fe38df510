-- ctx: what a step's run, verify and undo functions receive. It carries the
-- params and earlier outputs, memoizes side effects that must happen once
-- (ctx:once), keeps cursors for long steps (ctx:checkpoint / ctx:cursor),
-- and reports logs and progress.
local host = require "runbook._host"
-- memos and checkpoints: loaded when a step first keeps one
local function memo() return require "runbook._engine.memo" end
local audit = require "runbook._engine.audit"

local M = {}

---@class runbook.Ctx
---@field params table        resolved params (secret params are secret values)
---@field outputs table       outputs of earlier steps, by step id
---@field run_id string
---@field step string         this step's id
---@field attempt integer     1 on the first attempt
---@field dir string          the runbook's folder (for files shipped next to it)
---@field file string         the runbook file
---@field dry_run boolean     true under `runbook exec --dry-run`
local Ctx = {}
Ctx.__index = Ctx

-- the engine's run behind each ctx, out of the runbook's reach
local private = setmetatable({}, { __mode = "k" })

local function aad(run_id, step, what, key)
  return run_id .. "\0" .. step .. "\0" .. what .. "\0" .. key
end

--- Makes the ctx for one attempt of a step.
---@param run table  the engine's run (append, state, keyfn, id, params, dry_run)
function M.new(run, step, attempt)
  local c = setmetatable({
    params = run.params, run_id = run.id, step = step.id, title = step.title,
    dir = run.book and run.book.dir, file = run.book and run.book.file,
    attempt = attempt, dry_run = run.dry_run == true,
  }, Ctx)
  c.outputs = setmetatable({}, {
    __index = function(_, id) return run:outputs_of(id) end,
    __newindex = function() error("ctx.outputs is read-only", 2) end,
  })
  private[c] = run
  return c
end

local function check_key(key, fname)
  if type(key) ~= "string" or key == "" then error(fname .. ": key must be a non-empty string", 3) end
end

--- Runs fn once per run and records its result; every later attempt or
--- resume gets the recorded result without calling fn. A result holding
--- secrets is sealed (AES-256-GCM) in the journal. Only the first return
--- value is kept; it must be JSON data, secrets, or nil.
---@generic T
---@param key string
---@param fn fun():T
---@return T
function Ctx:once(key, fn)
  check_key(key, "ctx:once")
  if type(fn) ~= "function" then error("ctx:once: function expected", 2) end
  local run = private[self]
  local st = run.state.steps[self.step]
  local m = st and st.memos[key]
  local a = aad(self.run_id, self.step, "memo", key)
  if m then
    return memo().open(m.value, run.keyfn, a, string.format("memo '%s' of step %s", key, self.step))
  end
  local v = fn()
  local what = string.format("ctx:once('%s'): the result", key)
  run:append("step.memo", { step = self.step, key = key, value = memo().seal(v, run.keyfn, a, what) })
  return v
end

--- Records progress inside a long step: on resume, ctx:cursor(key) returns it.
---@param key string
---@param value any JSON data or secrets
function Ctx:checkpoint(key, value)
  check_key(key, "ctx:checkpoint")
  local run = private[self]
  run:append("step.checkpoint", {
    step = self.step, key = key,
    value = memo().seal(value, run.keyfn, aad(self.run_id, self.step, "checkpoint", key), string.format("ctx:checkpoint('%s'): the value", key)),
  })
end

--- The last value checkpointed under key in this step, or nil.
---@param key string
function Ctx:cursor(key)
  check_key(key, "ctx:cursor")
  local run = private[self]
  local st = run.state.steps[self.step]
  local c = st and st.checkpoints[key]
  if not c then return nil end
  return memo().open(c.value, run.keyfn, aad(self.run_id, self.step, "checkpoint", key),
    string.format("checkpoint '%s' of step %s", key, self.step))
end

local fmt = require("runbook.log").format

--- Logs a line to the run log and console (secrets scrubbed).
function Ctx:log(...) audit.log("info", fmt(...)) end
function Ctx:info(...) audit.log("info", fmt(...)) end
function Ctx:warn(...) audit.log("warn", fmt(...)) end
function Ctx:error(...) audit.log("error", fmt(...)) end
function Ctx:debug(...) audit.log("debug", fmt(...)) end

--- Shows progress of this step: done of total (total may be nil), a note.
function Ctx:progress(done, total, note) audit.progress(done, total, note) end

--- Records a custom audited action in the journal.
---@param t table with a `kind` and what was done
function Ctx:action(t) audit.action(t) end

--- Sleeps, waking at once on Ctrl-C or the step's timeout.
function Ctx:sleep(seconds) host.sleep(seconds) end

return M
