-- runbook._engine.store: the operations every store offers, on the file
-- store, in-process. A run is opened (or created) in one place, appends
-- are read back in order, the tip anchor follows them, two openers of one
-- run exclude each other, and a run's damage is reported, not passed over.
local storemod = require "runbook._engine.store"
local rbtest = require "rbtest"

describe("runbook._engine.store", function()
  local dir, store

  before_each(function()
    dir = rbtest.tmpdir("store")
    store = storemod.open(dir .. "/state", true)
  end)
  after_each(function() rbtest.rmtree(dir) end)

  local function new_run(name)
    local id = store:new_id(name or "book")
    local r = store:open_run(id, { create = true })
    r:append("run.started", { runbook = name or "book", file = "/x.lua", sha256 = string.rep("0", 64), steps = { "a" },
      user = "u", host = "h", pid = 1, anchor = true })
    return id, r
  end

  it("makes ids from the runbook's name and lists runs oldest first", function()
    local a = new_run("book")
    local b = new_run("book")
    assert.matches("^book%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-%x%x%x%x$", a)
    assert.are.same({ a, b }, store:list())
    assert.are.equal(b, store:resolve("last"))
    assert.are.equal(a, store:resolve(a))
    local ok, err = pcall(store.resolve, store, "nope")
    assert.is_false(ok)
    assert.are.equal("not-found", err.code)
  end)

  it("reads back what was appended, in order, and the tip follows", function()
    local id, r = new_run()
    local ev = r:append("step.started", { step = "a", attempt = 1 })
    assert.are.equal(2, ev.seq)
    r:append("step.finished", { step = "a", attempt = 1, ms = 3 })
    assert.are.equal("done", r.state.steps.a.status)
    r:close()
    local events, info = store:read(id)
    assert.are.same({ "run.started", "step.started", "step.finished" }, { events[1].type, events[2].type, events[3].type })
    assert.are.same({ 1, 2, 3 }, { events[1].seq, events[2].seq, events[3].seq })
    assert.is_falsy(info.damaged)
    local tip = store:anchor(id)
    assert.are.equal(3, tip.seq)
    local st = store:state(id)
    assert.are.equal("done", st.steps.a.status)
  end)

  it("lets one opener drive a run at a time, and frees the run when it closes", function()
    local id, r = new_run()
    local ok, err = pcall(store.open_run, store, id)
    assert.is_false(ok)
    assert.are.equal("locked", err.code)
    assert.is_truthy(err.message:find("run " .. id .. " is locked by pid ", 1, true), err.message)
    r:close()
    local again = store:open_run(id)
    assert.are.equal("running", again.state.status)
    assert.are.equal(1, #again.events)
    again:close()
  end)

  it("holds the per-runbook lock while a run is chosen", function()
    local lock = store:choose("book")
    local ok, err = pcall(store.choose, store, "book")
    assert.is_false(ok)
    assert.are.equal("locked", err.code)
    lock:release()
    store:choose("book"):release()
  end)

  it("finds the newest unfinished run of a runbook, and none once it finished", function()
    local id, r = new_run("book")
    r:close()
    assert.are.equal(id, (store:find_unfinished("book")))
    assert.is_nil((store:find_unfinished("other")))
    local r2 = store:open_run(id)
    r2:append("run.finished", { ms = 1 })
    r2:close()
    assert.is_nil((store:find_unfinished("book")))
  end)

  it("reports a journal cut short of its tip as damage and refuses to open it", function()
    local id, r = new_run()
    for i = 1, 4 do r:append("step.checkpoint", { step = "a", key = "k", value = i }) end
    r:close()
    local path = dir .. "/state/runs/" .. id .. "/journal.jsonl"
    local lines = {}
    for l in io.lines(path) do lines[#lines + 1] = l end
    rbtest.write(path, table.concat(lines, "\n", 1, 3) .. "\n", 384)
    local _, info = store:read(id)
    assert.is_true(info.damaged)
    assert.are.equal(2, info.missing)
    assert.are.equal(3, info.missing_after)
    local ok, err = pcall(store.open_run, store, id)
    assert.is_false(ok)
    assert.are.equal("damaged", err.code)
    assert.are.equal(2, err.details.missing)
  end)

  it("releases everything when opening fails, so the run can be opened once repaired", function()
    local id, r = new_run()
    r:close()
    local path = dir .. "/state/runs/" .. id .. "/journal.jsonl"
    local good = rbtest.read(path)
    rbtest.write(path, good:gsub('"runbook":"book"', '"runbook":"boo!"'), 384)
    assert.is_false((pcall(store.open_run, store, id)))
    rbtest.write(path, good, 384)
    local again = store:open_run(id)
    again:close()
  end)

  it("makes one sealing key per store and finds it again", function()
    local k, kid = store:secret_key(true)
    assert.is_truthy(k)
    assert.matches("^%x+$", kid)
    local other = storemod.open(dir .. "/state", false)
    local _, kid2 = other:secret_key(false)
    assert.are.equal(kid, kid2)
  end)
end)
