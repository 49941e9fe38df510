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
--                         (the file store also has "fold": only the events
--                         state.fold_scanned needs, for open_run)
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
--   secret_key(create)    the key sealing secret memos and its id (never in a
--                         shared store); a third value may name the key file
--   check_key_file()      refuses a key file others may read
--   pushed(id)            the store a run was pushed to, if it was
--   close()               releases connections
local errors = require "runbook.errors"
local secret = require "runbook._secret"
local crypto = require "runbook._crypto"
local fs = require "runbook._fs"

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

--- A fresh run id for runbook `name` (the stores check it is free):
--- NAME-YYYYMMDD-HHMMSS-XXXX, the time in UTC, XXXX four random hex digits.
function M.run_id(name)
  return string.format("%s-%s-%s", name, os.date("!%Y%m%d-%H%M%S"), crypto.random_hex(2))
end

--- The runbook name a run id of that form was made for, or nil.
function M.book_of(id)
  return id:match("^(.*)%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-%x%x%x%x$")
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

-- ---------------------------------------------------------------------------
-- the sealing key, the same for both stores: RUNBOOK_SECRET_KEY, else a key
-- file of the owner's alone (the file store's secret.key, the PostgreSQL
-- store's operator key file)

local function parse_key(text, where)
  text = text:gsub("%s+$", "")
  if #text == 64 and text:match("^%x+$") then return crypto.hex_decode(text) end
  local raw = crypto.base64_decode(text)
  if raw and #raw == 32 then return raw end
  errors.raisef("store", "bad-key", "%s must be 64 hex digits or the base64 of 32 bytes", where)
end

--- Refuses a key file others may read, or one that is a symbolic link;
--- `whose` says whose secrets it seals. Returns path.
function M.check_key_file(path, whose)
  local st = fs.stat(path, true) -- the link itself, not what it points to
  if st and st.type == "link" then
    errors.raisef("store", "key-mode", "%s is a symbolic link; key files are never followed: put the key file itself there (mode 0600)", path)
  elseif st and st.mode & 63 ~= 0 then
    errors.raisef("store", "key-mode", "%s has mode %04o: others may read the key that seals %s. Run `chmod 600 %s` (and, if others could read it, rotate the secrets it sealed), then run the command again",
      path, st.mode & 4095, whose, path)
  end
  return path
end

--- The sealing key: RUNBOOK_SECRET_KEY, else the key file at `path`
--- (checked first), made with 32 random bytes (0600, its folder 0700) when
--- `create` is set. Returns a secret and its id (a fingerprint), or nil.
function M.sealing_key(path, whose, create)
  local env = os.getenv("RUNBOOK_SECRET_KEY")
  local raw
  if env and env ~= "" then
    raw = parse_key(env, "RUNBOOK_SECRET_KEY")
  else
    M.check_key_file(path, whose)
    local f = io.open(path, "rb")
    if f then
      raw = parse_key(f:read("a"), path)
      f:close()
    elseif create then
      local dir = path:match("^(.*)/[^/]*$")
      if dir and dir ~= "" and not fs.stat(dir) then fs.mkdir_p(dir, 448) end
      local k = secret.random(32, "raw")
      local ok, err = fs.write_file(path, crypto.hex_encode(k), 384) -- 0600
      if not ok then errors.raisef("store", "io", "cannot write %s: %s", path, err) end
      raw = k
    else
      return nil
    end
  end
  local key = secret.is(raw) and raw or secret.new(raw)
  return key, crypto.sha256(key):sub(1, 16)
end

return M
