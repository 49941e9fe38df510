-- The resume's fast fold against the full one. A resume decodes only the
-- journal events its state needs (src/journal_fold.c: checkpoints and memos
-- a later one of the same step and key replaces, and actions, are counted,
-- not read). For varied journals, made by real runs (parallel groups, memos,
-- sealed values, actions, checkpoints over several keys, failures and
-- retries, two approvals, a reset and a rollback) and written by hand
-- (repeated and escaped names, nulls, odd types, an action last, damage),
-- the state from scan(..., "fold") + state.fold_scanned equals the state
-- from scan(..., "events") + state.fold, and the scan info and the checks'
-- verdict (seq and message) are the same.
local rb = require "rbtest"
local jcore = require "runbook._journal"
local state = require "runbook._engine.state"
local crypto = require "runbook._crypto"

local same = rb.same

local INFO = { "count", "valid_bytes", "hmac", "last_hash", "bad_seq", "reason", "mark_hash", "torn_bytes", "torn_sha256", "torn_seq" }

-- the full path and the fast path over one journal file; returns how many
-- events the fast path left out
local function compare(path, key, mark)
  local events, info = jcore.scan(path, key, "events", mark)
  local fast, finfo = jcore.scan(path, key, "fold", mark)
  assert(events and fast, tostring(info))
  for _, f in ipairs(INFO) do
    assert.are.equal(info[f], finfo[f], path .. ": info." .. f)
  end
  assert.are.equal(#fast, #finfo.at)
  assert.are.equal(info.count, #fast + finfo.skipped)
  local seq, why = state.check(events)
  local fseq, fwhy = state.check(fast, finfo.at)
  assert.are.equal(seq, fseq, path .. ": the check's seq")
  assert.are.equal(why, fwhy, path .. ": the check's message")
  if not seq then
    -- a resume folds only events that pass the checks
    local ok, where = same(state.fold(events), state.fold_scanned(fast, finfo))
    assert(ok, path .. ": " .. tostring(where))
  end
  return finfo.skipped, fseq, fwhy
end

describe("the resume's fold over journals of real runs", function()
  local BOOK = [[
local secret = require "runbook.secret"
local sh = require "runbook.sh"
runbook "mix" { params = { who = { default = "ops" } } }
step "A" {
  run = function(ctx)
    local pw = ctx:once("pw", function() return secret.random { bytes = 12 } end)
    ctx:once("n", function() return 41 end)
    sh.run { "true" }
    sh.run { "true" }
    return { pw = pw, n = 1 }
  end,
  undo = function() end,
}
step "B" {
  run = function(ctx)
    local i = ctx:cursor("i") or 0
    for k = i + 1, 30 do
      ctx:checkpoint("i", k)
      if k % 10 == 0 then ctx:checkpoint("tens", { at = k, list = { k, k + 1 }, empty = {} }) end
      if k == i + 7 and os.getenv("FAIL_B") then error("B stops 7 checkpoints on") end
    end
    ctx:checkpoint("s", secret.wrap("sealed-" .. i))
    return i
  end,
  undo = function() end,
}
parallel "work" {
  step "P1" { needs = "B", run = function(ctx)
    for k = 1, 12 do ctx:checkpoint("p", k) end
    sh.run { "true" }
    return 1
  end, undo = function() end },
  step "P2" { needs = "B", run = function(ctx)
    for k = 1, 9 do ctx:checkpoint("p", k) end
    ctx:once("m", function() return { "x", "y" } end)
    return 2
  end, undo = function() end },
}
manual "M" { title = "two people", instructions = "confirm", approvers = 2 }
step "C" { needs = { "P1", "P2", "M" }, run = function(ctx)
  for k = 1, 5 do ctx:checkpoint("c" .. (k % 2), k) end
  sh.run { "true" }
end, undo = function() end }
]]

  local dir
  before_each(function()
    dir = rb.tmpdir("fold")
    rb.write(dir .. "/mix.lua", BOOK)
  end)
  after_each(function() rb.rmtree(dir) end)

  local function run(args, env) return rb.run(args, { cwd = dir, env = env }) end

  it("gives the same state as the full fold at every stage", function()
    local path
    local left_out = 0
    local function stage(want_code, args, env)
      local r = run(args, env)
      assert.are.equal(want_code, r.code, table.concat(args, " ") .. ": " .. r.stderr)
      path = path or select(2, rb.journal(dir .. "/.runbook"))
      left_out = left_out + compare(path)
    end
    stage(1, { "exec", "mix.lua" }, { FAIL_B = "1" })            -- B fails after 7 checkpoints
    stage(1, { "exec", "mix.lua" }, { FAIL_B = "1" })            -- a retry from the cursor, failing 7 on
    stage(3, { "exec", "mix.lua" })                              -- B, the parallel group, then M waits
    stage(0, { "confirm", "last", "M", "--note", "one" }, { RUNBOOK_ACTOR = "ana" })
    stage(3, { "exec", "mix.lua" })                              -- one approval of two: still waiting
    stage(0, { "confirm", "last", "M", "--note", "two" }, { RUNBOOK_ACTOR = "bo" })
    stage(0, { "exec", "mix.lua" })                              -- C, finished
    stage(0, { "reset", "last", "B", "--note", "again" })
    stage(0, { "exec", "mix.lua" })                              -- B runs again, its checkpoints emptied by the reset
    local st = state.fold((jcore.scan(path, nil, "events")))
    assert.are.equal("finished", st.status)
    assert.are.equal(30, st.steps.B.checkpoints.i.value)
    assert.are.equal(2, st.steps.A.actions)
    stage(0, { "rollback", "last", "--to", "A" })                -- C, P2, P1 and B undone: the run is rolled back
    -- most checkpoints were left out, and the runs above resumed through
    -- that path (their exit codes say they went on right)
    assert.is_true(left_out > 100, "left out " .. left_out)
  end)

  it("gives the same state for an HMAC-protected journal, and the same verdict without the key", function()
    local env = { RUNBOOK_AUDIT_KEY = "k3y-for-the-fold-spec", FAIL_B = "1" }
    assert.are.equal(1, run({ "exec", "mix.lua" }, env).code)
    env.FAIL_B = nil
    assert.are.equal(3, run({ "exec", "mix.lua" }, env).code)
    local _, path = rb.journal(dir .. "/.runbook")
    assert.is_true(compare(path, env.RUNBOOK_AUDIT_KEY) > 0)
    assert.is_true(compare(path, "another key") >= 0)
    compare(path, nil, 5)
  end)
end)

-- A journal written by hand: each body gets its seq, prev and hash (and
-- its chain verifies), so what is tested is the fold, not the chain.
local GENESIS = string.rep("0", 64)

local function chain(bodies)
  local out, prev = {}, GENESIS
  for i, b in ipairs(bodies) do
    local body = string.format('{"seq":%d,%s,"prev":"%s"', i, b, prev)
    local hash = crypto.sha256(body .. "}")
    out[#out + 1] = body .. ',"hash":"' .. hash .. '"}\n'
    prev = hash
  end
  return table.concat(out)
end

local function ev(t, extra)
  return string.format('"ts":"2026-01-01T00:00:00.000Z","run":"r1","type":"%s"%s', t, extra and ("," .. extra) or "")
end

local START = ev("run.started", '"runbook":"b","file":"/b.lua","sha256":"00","steps":["a","b"],"user":"u","host":"h","params":{}')

describe("the resume's fold over journals written by hand", function()
  local dir, n
  before_each(function() dir, n = rb.tmpdir("foldhand"), 0 end)
  after_each(function() rb.rmtree(dir) end)

  local function journal(bodies, tail)
    n = n + 1
    local path = string.format("%s/j%d.jsonl", dir, n)
    rb.write(path, chain(bodies) .. (tail or ""), 384)
    return path
  end

  local function cp(step, key, value) return ev("step.checkpoint", string.format('"step":%s,"key":%s,"value":%s', step, key, value)) end

  it("leaves out replaced checkpoints and memos, and counts actions", function()
    local b = { START, ev("step.started", '"step":"a","attempt":1') }
    for i = 1, 50 do b[#b + 1] = cp('"a"', '"i"', i) end
    for i = 1, 5 do b[#b + 1] = ev("step.memo", '"step":"a","key":"m","value":' .. i) end
    -- a memo and a checkpoint of the same key are not the same thing
    b[#b + 1] = ev("step.memo", '"step":"a","key":"i","value":"memo"')
    b[#b + 1] = cp('"a"', '"m"', '"checkpoint"')
    for _ = 1, 7 do b[#b + 1] = ev("action", '"step":"a","kind":"command"') end
    b[#b + 1] = ev("action", '"kind":"stepless"')
    b[#b + 1] = ev("step.finished", '"step":"a","outputs":{"x":[]},"ms":3')
    local skipped = compare(journal(b))
    assert.are.equal(49 + 4 + 8, skipped)
    assert.are.equal(#b, skipped + #(jcore.scan(journal(b), nil, "fold")))
    local fast, info = jcore.scan(journal(b), nil, "fold")
    local st = state.fold_scanned(fast, info)
    assert.are.equal(50, st.steps.a.checkpoints.i.value)
    assert.are.equal(5, st.steps.a.memos.m.value)
    assert.are.equal("memo", st.steps.a.memos.i.value)
    assert.are.equal("checkpoint", st.steps.a.checkpoints.m.value)
    assert.are.equal(7, st.steps.a.actions)
    assert.are.equal(#b, st.events)
    assert.are.equal(#b, st.last_seq)
  end)

  it("keeps the last of each of many keys, as the set grows and the plan compacts", function()
    local b = { START }
    for round = 1, 4 do
      for k = 1, 300 do
        b[#b + 1] = cp('"s' .. (k % 7) .. '"', '"k' .. k .. '"', round * 1000 + k)
        if k % 50 == 0 then b[#b + 1] = ev("step.memo", string.format('"step":"s1","key":"k%d","value":%d', k, round)) end
        if k % 97 == 0 then b[#b + 1] = ev("action", '"step":"s' .. (k % 3) .. '"') end
      end
      b[#b + 1] = ev("step.reset", '"step":"s3","by":"x"')
    end
    b[#b + 1] = cp('"s0"', '"k7"', 7)
    local skipped = compare(journal(b))
    assert.are.equal(3 * 300 + 1 + 3 * 6 + 4 * 3, skipped) -- the last line replaces one of round 4
    local fast, info = jcore.scan(journal(b), nil, "fold")
    local st = state.fold_scanned(fast, info)
    assert.are.equal(4001, st.steps.s1.checkpoints.k1.value)
    assert.are.equal(7, st.steps.s0.checkpoints.k7.value)
    assert.are.equal(4, st.steps.s1.memos.k100.value)
  end)

  it("reads lines longer than the scan's buffer, whole or torn", function()
    local big = '"' .. string.rep("x", 200000) .. '"'
    local b = { START, cp('"a"', '"i"', big), cp('"a"', '"i"', 1), ev("step.finished", '"step":"a","outputs":' .. big), cp('"a"', '"i"', big) }
    compare(journal(b))
    local p = journal(b, '{"seq":6,' .. string.rep("y", 150000))
    compare(p)
    local _, info = jcore.scan(p, nil, "fold")
    assert.are.equal(5, info.count)
    assert.are.equal(150009, info.torn_bytes)
    local text = rb.read(p)
    assert.are.equal(#text - 150009, info.valid_bytes)
  end)

  it("keeps what a reset or an undo empties, in order", function()
    compare(journal { START, cp('"a"', '"i"', 1), cp('"a"', '"j"', 1), ev("step.reset", '"step":"a","by":"x"'), cp('"a"', '"i"', 2),
      ev("step.finished", '"step":"a"'), ev("step.undone", '"step":"a"'), cp('"b"', '"i"', 3), cp('"b"', '"i"', 4), ev("run.finished") })
    compare(journal { START, cp('"a"', '"i"', 1), ev("step.undone", '"step":"a"'), ev("run.failed", '"step":"a"') })
  end)

  it("decodes whatever it cannot read in place", function()
    local b = { START }
    -- repeated names: the last one counts
    b[#b + 1] = cp('"a"', '"i"', 1) .. ',"key":"other"'
    b[#b + 1] = cp('"a"', '"i"', 2) .. ',"step":"b"'
    b[#b + 1] = cp('"a"', '"i"', 3) .. ',"type":"step.memo"'
    b[#b + 1] = cp('"a"', '"i"', 4) .. ',"ts":"2026-01-02T00:00:00.000Z"'
    b[#b + 1] = cp('"a"', '"i"', 5) .. ',"seq":99'
    -- escaped names and values
    b[#b + 1] = cp('"a"', '"i"', 6) .. ',"k\\u0065y":"j"'
    b[#b + 1] = cp('"\\u0061"', '"i"', 7)
    b[#b + 1] = cp('"a"', '"\\u0069"', 8)
    -- not strings
    b[#b + 1] = cp('"a"', "1", 9)
    b[#b + 1] = cp('"a"', "null", 10)
    b[#b + 1] = cp("null", '"i"', 11)
    b[#b + 1] = cp('"a"', '"i"', 12)
    b[#b + 1] = ev("action", '"step":null')
    b[#b + 1] = ev("action", '"step":7')
    b[#b + 1] = ev("action", '"step":"a","step":"b"')
    b[#b + 1] = ev("action", '"step":"\\u0062"')
    b[#b + 1] = cp('"a"', '"i"', 13)
    b[#b + 1] = cp('"a"', '"i"', 14)
    b[#b + 1] = ev("action", '"step":"a"')
    compare(journal(b))
    -- the last event's seq is repeated as null: the decoder keeps json.null
    b[#b + 1] = ev("action", '"step":"a","seq":null')
    compare(journal(b))
  end)

  it("reaches the same verdict on journals that do not fold", function()
    -- an event before run.started
    local _, seq, why = compare(journal { cp('"a"', '"i"', 1), cp('"a"', '"i"', 2), START })
    assert.are.equal(1, seq)
    assert.is_truthy(why:find("not run.started", 1, true))
    -- ... after a cut's record
    _, seq = compare(journal { ev("journal.truncated", '"bytes":3'), cp('"a"', '"i"', 1), cp('"a"', '"i"', 2), START })
    assert.are.equal(2, seq)
    -- a cut recorded first, then run.started
    compare(journal { ev("journal.truncated", '"bytes":3'), START, cp('"a"', '"i"', 1), cp('"a"', '"i"', 2), ev("step.finished", '"step":"a"') })
    -- a checkpoint lacking its key, its ts, its run, its step, between others
    for _, bad in ipairs({
      ev("step.checkpoint", '"step":"a","value":1'),
      '"run":"r1","type":"step.checkpoint","step":"a","key":"i","value":1',
      '"ts":"t","type":"step.checkpoint","step":"a","key":"i","value":1',
      '"ts":"t","run":1,"type":"step.checkpoint","step":"a","key":"i","value":1',
      ev("step.checkpoint", '"key":"i","value":1'),
      ev("action", '"step":"a"') .. ',"ts":[]',
    }) do
      _, seq = compare(journal { START, cp('"a"', '"i"', 1), bad, cp('"a"', '"i"', 2), cp('"a"', '"i"', 3) })
      assert.are.equal(3, seq, bad)
    end
  end)

  it("stops at the same seq on a line that is not JSON, or torn", function()
    local b = { START, cp('"a"', '"i"', 1), cp('"a"', '"i"', 2) .. ',"x":tru', cp('"a"', '"i"', 3) }
    local p = journal(b)
    compare(p)
    local _, info = jcore.scan(p, nil, "fold")
    assert.are.equal(3, info.bad_seq)
    assert.are.equal("seq 3 is not valid JSON", info.reason)
    -- a torn last line
    p = journal({ START, cp('"a"', '"i"', 1), cp('"a"', '"i"', 2) }, '{"seq":4,"ts":"2026')
    compare(p)
    _, info = jcore.scan(p, nil, "fold")
    assert.are.equal(3, info.count)
    assert.are.equal(4, info.torn_seq)
    -- an edited line
    local text = chain { START, cp('"a"', '"i"', 1), cp('"a"', '"i"', 2), cp('"a"', '"i"', 3) }
    p = dir .. "/edited.jsonl"
    rb.write(p, (text:gsub('"value":2', '"value":7')), 384)
    compare(p)
    _, info = jcore.scan(p, nil, "fold")
    assert.are.equal(3, info.bad_seq)
    assert.are.equal("seq 3: hash does not match its content (edited)", info.reason)
    -- empty, and missing
    p = dir .. "/empty.jsonl"
    rb.write(p, "", 384)
    compare(p)
    local none, err = jcore.scan(dir .. "/nope.jsonl", nil, "fold")
    assert.is_nil(none)
    assert.is_truthy(err:find("No such file", 1, true), err)
  end)
end)
