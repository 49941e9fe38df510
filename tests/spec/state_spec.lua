-- runbook._engine.state: a run's state is a fold over its journal's events.
-- These specs fold hand-written event lists, without a process or a file,
-- so each rule of the fold is pinned where it is written.
local state = require "runbook._engine.state"

local seq = 0
local function ev(t)
  seq = seq + 1
  t.seq = t.seq or seq
  t.ts = t.ts or string.format("2026-12-04T10:00:%02d.000Z", seq % 60)
  return t
end

local function started(steps)
  return ev { type = "run.started", run = "book-1", runbook = "book", file = "/x/book.lua", sha256 = "aa",
    params = { ns = "demo" }, user = "ana", host = "lap", steps = steps or { "a", "b" } }
end

describe("runbook._engine.state.fold", function()
  before_each(function() seq = 0 end)

  it("starts empty", function()
    local st = state.fold {}
    assert.are.equal("new", st.status)
    assert.are.same({}, st.completed)
    assert.are.equal(0, st.events)
    assert.are.equal(0, st.last_seq)
    assert.are.equal("pending", state.step(st, "a").status)
  end)

  it("records who started the run, with what, and its step order", function()
    local st = state.fold { started() }
    assert.are.equal("book-1", st.id)
    assert.are.equal("book", st.runbook)
    assert.are.equal("ana@lap", st.started_by)
    assert.are.same({ ns = "demo" }, st.params)
    assert.are.same({ "a", "b" }, st.step_order)
    assert.are.equal("running", st.status)
    assert.are.equal(1, st.last_seq)
  end)

  it("counts attempts, keeps memos and checkpoints, and completes a finished step", function()
    local st = state.fold {
      started(),
      ev { type = "step.started", step = "a", attempt = 1 },
      ev { type = "step.memo", step = "a", key = "pw", value = { sealed = "x" } },
      ev { type = "step.checkpoint", step = "a", key = "cur", value = 10 },
      ev { type = "step.failed", step = "a", error = { message = "boom" }, ms = 5 },
      ev { type = "step.started", step = "a", attempt = 2 },
      ev { type = "step.checkpoint", step = "a", key = "cur", value = 20 },
      ev { type = "action", step = "a", kind = "k8s" },
      ev { type = "step.finished", step = "a", outputs = { n = 1 }, ms = 7 },
    }
    local a = state.step(st, "a")
    assert.are.equal("done", a.status)
    assert.are.equal(2, a.attempts)
    assert.are.same({ sealed = "x" }, a.memos.pw.value)
    assert.are.equal(20, a.checkpoints.cur.value)
    assert.are.equal(1, a.actions)
    assert.are.same({ n = 1 }, a.outputs)
    assert.is_nil(a.error, "a new attempt clears the last error")
    assert.are.same({ "a" }, st.completed)
  end)

  it("tells a failure that will be retried from a final one", function()
    local st = state.fold { started(), ev { type = "step.started", step = "a" },
      ev { type = "step.failed", step = "a", error = { message = "x" } } }
    assert.are.equal("retrying", state.step(st, "a").status)
    st = state.fold { started(), ev { type = "step.started", step = "a" },
      ev { type = "step.failed", step = "a", final = true, error = { message = "x" } },
      ev { type = "run.failed", step = "a" } }
    assert.are.equal("failed", state.step(st, "a").status)
    assert.are.equal("failed", st.status)
    assert.are.equal("a", st.failed_step)
  end)

  it("completes skipped and confirmed steps, and records who confirmed", function()
    local st = state.fold {
      started(),
      ev { type = "step.skipped", step = "a", reason = "verify held" },
      ev { type = "step.waiting", step = "b" },
      ev { type = "run.waiting", step = "b" },
    }
    assert.are.equal("waiting", st.status)
    assert.are.equal("b", st.waiting_step)
    assert.are.equal("waiting", state.step(st, "b").status)
    state.apply(st, ev { type = "step.confirmed", step = "b", by = "bo", host = "desk", note = "done", via = "confirm" })
    assert.are.equal("confirmed", state.step(st, "b").status)
    assert.are.equal("bo@desk", state.step(st, "b").confirmed_by)
    assert.are.equal("done", state.step(st, "b").note)
    assert.are.same({ "a", "b" }, st.completed)
    assert.is_true(state.COMPLETE.skipped and state.COMPLETE.confirmed and state.COMPLETE.done)
  end)

  it("makes a reset or undone step pending again and takes it out of the completed list", function()
    local st = state.fold {
      started(),
      ev { type = "step.started", step = "a" },
      ev { type = "step.checkpoint", step = "a", key = "k", value = 1 },
      ev { type = "step.finished", step = "a", outputs = { x = 1 } },
      ev { type = "step.started", step = "b" },
      ev { type = "step.finished", step = "b" },
      ev { type = "run.finished" },
      ev { type = "step.reset", step = "a", by = "ana" },
    }
    local a = state.step(st, "a")
    assert.are.equal("pending", a.status)
    assert.is_nil(a.outputs)
    assert.are.same({}, a.checkpoints)
    assert.are.equal("ana", a.reset_by)
    assert.are.same({ "b" }, st.completed)
    assert.are.equal("running", st.status, "a reset reopens a finished run")
    state.apply(st, ev { type = "step.undone", step = "b" })
    assert.are.equal("pending", state.step(st, "b").status)
    assert.is_true(state.step(st, "b").undone)
    assert.are.same({}, st.completed)
  end)

  it("keeps a completed step's place when it completes again", function()
    local st = state.fold {
      started(),
      ev { type = "step.finished", step = "a" },
      ev { type = "step.finished", step = "b" },
      ev { type = "step.finished", step = "a" },
    }
    assert.are.same({ "b", "a" }, st.completed)
  end)

  it("counts resumes and truncations, and takes the new file hash and params of a resume", function()
    local st = state.fold {
      started(),
      ev { type = "run.interrupted" },
      ev { type = "journal.truncated" },
      ev { type = "run.resumed", sha256 = "bb", steps = { "a", "b", "c" }, params = { extra = "1" } },
    }
    assert.are.equal(1, st.resumes)
    assert.are.equal(1, st.truncations)
    assert.are.equal("bb", st.sha256)
    assert.are.same({ "a", "b", "c" }, st.step_order)
    assert.are.same({ ns = "demo", extra = "1" }, st.params)
    assert.are.equal("running", st.status)
  end)

  it("passes over event types it does not know, still counting them", function()
    local st = state.fold { started(), ev { type = "something.new", step = "a" } }
    assert.are.equal(2, st.events)
    assert.are.equal(2, st.last_seq)
    assert.is_nil(st.steps.a)
  end)

  it("finishes only on run.finished", function()
    local st = state.fold { started(), ev { type = "step.finished", step = "a" }, ev { type = "step.finished", step = "b" } }
    assert.is_false(state.finished(st))
    state.apply(st, ev { type = "run.finished" })
    assert.is_true(state.finished(st))
    assert.is_string(st.finished_at)
  end)
end)

describe("runbook._engine.state.check", function()
  before_each(function() seq = 0 end)

  local function step_ev(t)
    t.run = "book-1"
    return ev(t)
  end

  it("accepts a run's journal, a cut recorded before run.started included", function()
    assert.is_nil(state.check {})
    assert.is_nil(state.check { started(), step_ev { type = "step.started", step = "a", attempt = 1 } })
    seq = 0
    assert.is_nil(state.check { step_ev { type = "journal.truncated", torn_seq = 1 }, started() })
  end)

  it("names the first event a fold cannot make sense of", function()
    local s, why = state.check { step_ev { type = "step.started", step = "a" } }
    assert.are.equal(1, s)
    assert.are.equal("seq 1 is step.started, not run.started: a run's journal begins with run.started", why)
    seq = 0
    local first = started()
    first.user = nil
    s, why = state.check { first }
    assert.are.same({ 1, "seq 1 (run.started) lacks its 'user'" }, { s, why })
    seq = 0
    s, why = state.check { started(), step_ev { type = "step.memo", step = "a" } }
    assert.are.same({ 2, "seq 2 (step.memo) lacks its 'key'" }, { s, why })
    seq = 0
    local e = step_ev { type = "step.finished", step = "a" }
    e.ts = nil
    s, why = state.check { started(), e }
    assert.are.same({ 2, "seq 2 lacks its 'ts'" }, { s, why })
  end)
end)
