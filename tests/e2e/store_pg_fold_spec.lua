-- The PostgreSQL store reads a run as the file store does: its rows go to
-- the journal core in one piece (jcore.scan_text, the C checks and the
-- resume's fold of src/journal_fold.c) instead of being checked and
-- decoded row by row in Lua. Over real runs on a real server (checkpoints
-- a later one replaces, memos, actions, a failure and its retry from the
-- cursor, a parallel group, two approvals), the fold a resume uses gives
-- the state of the full fold, the scan info agrees, the replaced events
-- are really left out, and every line comes back byte for byte as stored.
local rb = require "rbtest"
local pgserver = require "pgserver"
local state = require "runbook._engine.state"
local pgstore = require "runbook._engine.store.postgres"

local srv
setup(function() srv = pgserver.start {} end)
teardown(function() if srv then srv:stop() end end)

local BOOK = [[
local sh = require "runbook.sh"
runbook "pgfold" {}
step "A" { run = function(ctx)
  ctx:once("n", function() return 41 end)
  sh.run { "true" }
  sh.run { "true" }
  return 1
end }
step "B" { run = function(ctx)
  local i = ctx:cursor("i") or 0
  for k = i + 1, 40 do
    ctx:checkpoint("i", k)
    if k % 10 == 0 then ctx:checkpoint("tens", { at = k, empty = {} }) end
    if k == i + 7 and os.getenv("FAIL_B") then error("B stops 7 checkpoints on") end
  end
  return i
end }
parallel "work" {
  step "P1" { needs = "B", run = function(ctx) for k = 1, 12 do ctx:checkpoint("p", k) end sh.run { "true" } end },
  step "P2" { needs = "B", run = function(ctx) for k = 1, 9 do ctx:checkpoint("p", k) end end },
}
manual "M" { title = "two people", instructions = "confirm", approvers = 2 }
step "C" { needs = { "P1", "P2", "M" }, run = function() end }
]]

local INFO = { "count", "hmac", "last_hash", "bad_seq", "reason", "mark_hash", "damaged", "damage" }

describe("the PostgreSQL store's reads through the journal core", function()
  local dir, url, store
  before_each(function()
    dir = rb.tmpdir("pgfold")
    rb.write(dir .. "/f.lua", BOOK)
    url = srv:store_db("pgfold")
    -- this process opens the store itself: the password in its URL
    store = pgstore.open((url:gsub("^postgres://([^@]+)@", "postgres://%1:" .. pgserver.PASSWORD .. "@")))
  end)
  after_each(function()
    if store then store:close() end
    rb.rmtree(dir)
  end)

  local function run(args, env)
    return rb.run(args, { cwd = dir, env = pgserver.password_env(env) })
  end

  it("folds as the full fold does at every stage, leaving replaced events out", function()
    local left_out, id = 0, nil
    local function stage(want, args, env)
      env = env or {}
      env.RUNBOOK_STATE = url
      local r = run(args, env)
      assert.are.equal(want, r.code, table.concat(args, " ") .. ": " .. r.stdout .. r.stderr)
      id = id or store:resolve("last")
      local events, info = store:read(id, "events")
      local fast, finfo = store:read(id, "fold")
      for _, f in ipairs(INFO) do assert.are.equal(info[f], finfo[f], "info." .. f) end
      assert.is_nil(info.damaged, info.damage)
      assert.are.equal(info.count, #events)
      assert.are.equal(info.count, #fast + finfo.skipped)
      local ok, where = rb.same(state.fold(events), state.fold_scanned(fast, finfo))
      assert(ok, where)
      -- the lines, byte for byte as the rows hold them
      local lines = store:read(id, "lines")
      local rows = store.conn:_query("SELECT body FROM runbook_events WHERE run = $1 ORDER BY seq", id)
      assert.are.equal(#rows, #lines)
      for i, row in ipairs(rows) do assert.are.equal(row.body, lines[i]) end
      left_out = left_out + finfo.skipped
    end
    stage(1, { "exec", "f.lua" }, { FAIL_B = "1" })
    stage(1, { "exec", "f.lua" }, { FAIL_B = "1" })
    stage(3, { "exec", "f.lua" })
    stage(0, { "confirm", "last", "M" }, { RUNBOOK_ACTOR = "ana" })
    stage(0, { "confirm", "last", "M" }, { RUNBOOK_ACTOR = "bo" })
    stage(0, { "exec", "f.lua" })
    local st = state.fold((store:read(id, "events")))
    assert.are.equal("finished", st.status)
    assert.are.equal(40, st.steps.B.checkpoints.i.value)
    assert.are.equal(2, st.steps.A.actions)
    assert.is_true(left_out > 60, "left out " .. left_out)
  end)

  it("names a deleted row by its place and a past-the-tip row as before", function()
    local env = { RUNBOOK_STATE = url }
    assert.are.equal(3, run({ "exec", "f.lua" }, env).code) -- waits at M
    local id = store:resolve("last")
    assert(store.conn:_query("DELETE FROM runbook_events WHERE run = $1 AND seq = 3", id))
    local _, info = store:read(id, "fold")
    assert.are.equal(3, info.bad_seq)
    assert.are.equal(2, info.count)
    assert.are.equal("expected seq 3, found seq 4 (an event was deleted or reordered)", info.reason)
    assert.are.equal(info.reason, select(2, store:read(id, "events")).reason)
  end)
end)
