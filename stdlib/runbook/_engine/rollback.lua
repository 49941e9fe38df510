-- `runbook rollback RUN [--to STEP]`: the undo functions of completed steps,
-- newest first, each recorded. A step without undo that recorded actions
-- stops the rollback, since what comes before it may depend on it (one
-- that recorded none changed nothing and is passed over); confirmed manual steps and
-- steps skipped because their verify held are passed over (nothing of
-- theirs was done by this run).
local host = require "runbook._host"
local errors = require "runbook.errors"
local loader = require "runbook._engine.loader"
local state = require "runbook._engine.state"
local storemod = require "runbook._engine.store"
local params = require "runbook._engine.params"
local consolemod = require "runbook._engine.console"
local engine = require "runbook._engine.engine"
local ctxmod = require "runbook._engine.ctx"

local M = {}

function M.run(pos, opts, with_run)
  return with_run(opts, pos[1], function(r)
    local book = loader.load(r.state.file)
    if opts.to and not book.by_id[opts.to] then
      errors.raise { kind = "usage", message = string.format("--to: no step '%s' in %s", opts.to, book.name) }
    end
    local console = consolemod.new { output = opts.output, run = r.id }
    local run = engine.new_run {
      book = book, opts = opts, id = r.id, state = r.state, console = console, store = r.store,
      params = params.resolve(book.params, { recorded = r.state.params }),
      journal = r.journal, logfile = r.log,
    }
    host.trap_signals()
    local undone, code = 0, 0
    local completed = { table.unpack(r.state.completed) }
    for i = #completed, 1, -1 do
      local id = completed[i]
      if id == opts.to then break end
      local s = book.by_id[id]
      local ss = state.step(r.state, id)
      if ss.status == "done" and (not s or not s.undo) and ss.actions == 0 then
        -- a step that recorded no action changed nothing: nothing to undo
        console:note(string.format("%s recorded no action; nothing to undo", id))
      elseif ss.status == "done" then
        if not s or not s.undo then
          console:note(string.format("%s has no undo; rollback stops here (%d step(s) undone)", id, undone), "error")
          code = 1
          break
        end
        local ctx = ctxmod.new(run, s, ss.attempts)
        local res = run:call(s, s.undo, ctx, s.timeout)
        if not res[1] then
          local msg = errors.message(res[2])
          run:append("step.undo_failed", { step = id, error = { message = msg } })
          console:note(string.format("undo of %s failed: %s", id, msg), "error")
          code = 1
          break
        end
        run:append("step.undone", { step = id, by = host.user(), host = host.hostname() })
        console:note(string.format("undid %s (%s)", id, s.title))
        undone = undone + 1
      else
        console:note(string.format("%s was %s; nothing to undo", id, ss.status))
      end
      if host.interrupted() then code = 130 break end
    end
    if code == 0 then
      run:append("run.rolled_back", { to = opts.to, steps = undone, by = host.user(), host = host.hostname() })
      console:finish(string.format("rolled back %d step(s) of run %s", undone, r.id))
    end
    return code -- with_run closes the log, the journal and the lock
  end)
end

return M
