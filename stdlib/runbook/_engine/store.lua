-- The store: where runs live. One interface, two implementations, chosen
-- by the location (--state, RUNBOOK_STATE, else .runbook):
--   a directory          runbook._engine.store.file      (the default)
--   postgres://...       runbook._engine.store.postgres  (shared, for teams)
-- Callers hold a store and use only these operations, never a path or a
-- connection of one implementation:
--
--   describe()            what the store is, for messages (no password)
--   list()                run ids, oldest first
--   resolve(ref)          a full id, a unique prefix or "last"
--   new_id(name)          a fresh run id
--   find_unfinished(name) the newest unfinished run of a runbook
--   read(id, mode)        events ("events"), lines ("lines") or nothing
--                         ("none"), and scan info, checked against the tip
--   state(id)             the folded state, scan info and events
--   anchor(id)            the tip: the last durable seq and its hash
--   choose(name)          the lock held while a run of `name` is found or made
--   open_run(id, opts)    lock, check, fold and open one run to append to:
--                         an OpenRun {id, lock, journal, log, state, info,
--                         events} whose journal:append(type, fields) is
--                         durable when it returns and log:write(text) keeps
--                         the run log; opts.create makes the run atomically
--   open_log(id)          another writer on the run log (parallel workers)
--   log_lines(id)         the run log, oldest first
--   stamp(id)             changes whenever the run does (nil: no such run)
--   secret_key(create)    the key sealing secret memos (never in a shared store)
--   check_key_file()      refuses a key file others may read
--   pushed(id)            the store a run was pushed to, if it was
--   close()               releases connections
local errors = require "runbook.errors"
local secret = require "runbook._secret"

local M = {}

--- Where the store lives: the flag, then RUNBOOK_STATE, then .runbook.
--- A password in a --state URL is refused: the command line shows in `ps`.
function M.location(flag)
  -- (the command line parser fills the flag from RUNBOOK_STATE too)
  if flag and flag ~= os.getenv("RUNBOOK_STATE") and M.is_postgres(flag) and flag:match("^postgres[%a]*://[^:/@]*:[^@]*@") then
    errors.raise { kind = "usage", message = string.format(
      "--state %s: a password on the command line shows in `ps` to every user of this machine; give it through PGPASSWORD, ~/.pgpass or RUNBOOK_STATE instead",
      M.redacted(flag)) }
  end
  local loc = flag or os.getenv("RUNBOOK_STATE")
  if loc == nil or loc == "" then loc = ".runbook" end
  return loc
end

--- True when the location names the PostgreSQL store.
function M.is_postgres(loc)
  return type(loc) == "string" and (loc:match("^postgres://") or loc:match("^postgresql://")) ~= nil
end

--- The location with any password in it replaced by ***, for messages.
function M.redacted(loc)
  return (tostring(loc):gsub("^(postgres[%a]*://[^:/@]*):[^@]*@", "%1:***@"))
end

--- Opens (creating when asked) the store at loc. Returns nil when there is
--- no store there and create is false.
function M.open(loc, create)
  if M.is_postgres(loc) then
    return require("runbook._engine.store.postgres").open(loc, create)
  end
  if tostring(loc):match("^%a[%w+.-]*://") then
    errors.raise { kind = "usage", message = string.format("--state %s: not a directory or a postgres:// URL", M.redacted(loc)) }
  end
  return require("runbook._engine.store.file").open(loc, create)
end

--- The audit key (RUNBOOK_AUDIT_KEY), as a secret, or nil.
function M.audit_key()
  local k = os.getenv("RUNBOOK_AUDIT_KEY")
  if k and k ~= "" then return secret.new(k) end
  return nil
end

return M
