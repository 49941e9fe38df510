-- Tampering: edit, delete and reorder journal lines, and expect
-- `runbook audit verify` to fail at the right seq, the resume to refuse,
-- and an audit key (HMAC) to catch a re-chained edit.
local rb = require "rbtest"
local crypto = require "runbook._crypto"

local RUNBOOK = [[
runbook "tamper" {}
for i = 1, 6 do
  step ("T" .. i) { run = function(ctx) ctx:once("k", function() return i end) return { i = i } end }
end
manual "WAIT" { title = "a person", instructions = "do it" }
]]

local function setup(env)
  local dir = rb.tmpdir("tamper")
  rb.write(dir .. "/t.lua", RUNBOOK)
  local r = rb.run({ "exec", "t.lua", "--yes" }, { cwd = dir, env = env })
  assert.are.equal(3, r.code, r.stderr) -- stops at the manual step
  local _, path = rb.journal(dir .. "/.runbook")
  return dir, path
end

local function lines_of(path)
  local out = {}
  for l in io.lines(path) do out[#out + 1] = l end
  return out
end

local function write_lines(path, lines)
  rb.write(path, table.concat(lines, "\n") .. "\n", 384)
end

local function verify(dir, env)
  return rb.run({ "audit", "verify", "last" }, { cwd = dir, env = env })
end

describe("audit verify", function()
  it("passes on an untouched journal", function()
    local dir = setup()
    local r = verify(dir)
    assert.are.equal(0, r.code)
    assert.truthy(r.stdout:match("^run tamper%-[%d-]+%-%x+: 21 events, hash chain intact %(no HMAC: anyone who can write the file can recompute the chain; set RUNBOOK_AUDIT_KEY when runs start to prevent that%)\n$"), r.stdout)
    rb.rmtree(dir)
  end)

  it("names the edited seq", function()
    local dir, path = setup()
    local lines = lines_of(path)
    lines[5] = lines[5]:gsub('"attempt":1', '"attempt":2')
    write_lines(path, lines)
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("audit FAILED at seq 5: seq 5: hash does not match its content (edited)", 1, true), r.stderr)
    -- and the run will not be continued
    local e = rb.run({ "exec", "t.lua", "--yes" }, { cwd = dir })
    assert.are.equal(2, e.code)
    assert.truthy(e.stderr:find("the journal is damaged at seq 5", 1, true), e.stderr)
    rb.rmtree(dir)
  end)

  it("names a deleted seq", function()
    local dir, path = setup()
    local lines = lines_of(path)
    table.remove(lines, 7)
    write_lines(path, lines)
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("seq 7: expected seq 7, found seq 8 (an event was deleted or reordered)", 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("names the first of two reordered seqs", function()
    local dir, path = setup()
    local lines = lines_of(path)
    lines[10], lines[11] = lines[11], lines[10]
    write_lines(path, lines)
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("at seq 10: expected seq 10, found seq 11", 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("notices an edit whose hash was recomputed, at the next event", function()
    local dir, path = setup()
    local lines = lines_of(path)
    -- forge event 4 and recompute its own hash: the chain breaks at 5
    local body = lines[4]:gsub(',"hash":"%x+"}$', "}"):gsub('"attempt":1', '"attempt":7')
    lines[4] = body:sub(1, -2) .. ',"hash":"' .. crypto.sha256(body) .. '"}'
    write_lines(path, lines)
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("at seq 5: seq 5: prev does not match the hash of seq 4", 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("with an audit key, catches a fully re-chained journal at the forged seq", function()
    local env = { RUNBOOK_AUDIT_KEY = "team-audit-key-1" }
    local dir, path = setup(env)
    local ok = verify(dir, env)
    assert.are.equal(0, ok.code, ok.stderr)
    assert.truthy(ok.stdout:find("HMACs verified", 1, true))
    -- without the key, an HMAC journal cannot be verified
    local nokey = verify(dir)
    assert.are.equal(1, nokey.code)
    assert.truthy(nokey.stderr:find("set RUNBOOK_AUDIT_KEY", 1, true))
    -- forge event 3 and re-chain everything after it with plain hashes
    local lines = lines_of(path)
    local prev
    for i = 3, #lines do
      local body = lines[i]:gsub(',"hash":"%x+","hmac":"%x+"}$', "}")
      if i == 3 then body = body:gsub('"attempt":1', '"attempt":5') end
      if prev then body = body:gsub('"prev":"%x+"', '"prev":"' .. prev .. '"') end
      local h = crypto.sha256(body)
      -- keep the HMAC field but it can only be made with the key
      lines[i] = body:sub(1, -2) .. ',"hash":"' .. h .. '","hmac":"' .. string.rep("0", 64) .. '"}'
      prev = h
    end
    write_lines(path, lines)
    local r = verify(dir, env)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("at seq 3: seq 3: HMAC does not verify", 1, true), r.stderr)
    rb.rmtree(dir)
  end)
end)

-- a tip record as the journal writes it (the checksum is over the text before it)
local function forge_tip(path, seq, hash, mac)
  local text = string.format("runbook-tip 1 %d %s %s", seq, hash, mac or "-")
  rb.write(path, text .. " " .. crypto.sha256(text) .. "\n", 384)
end

local function hash_of(line) return line:match(',"hash":"(%x+)"') end

local function exec(dir, env) return rb.run({ "exec", "t.lua", "--yes" }, { cwd = dir, env = env }) end

describe("the tip anchor", function()
  it("catches a journal whose tail was deleted; exec refuses and re-runs nothing", function()
    local dir, path = setup()
    local all = lines_of(path)
    local kept = { table.unpack(all, 1, #all - 3) }
    write_lines(path, kept)
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("audit FAILED at seq 19: 3 events missing after seq 18 (the tip record says seq 21 was written", 1, true), r.stderr)
    local e = exec(dir)
    assert.are.equal(2, e.code, e.stderr)
    assert.truthy(e.stderr:find("the journal is damaged: 3 events missing after seq 18", 1, true), e.stderr)
    assert.truthy(e.stderr:find("it will not be continued. See `runbook audit verify ", 1, true), e.stderr)
    assert.are.same(kept, lines_of(path)) -- nothing ran again, nothing was written
    -- --new starts another run, saying which one it leaves damaged
    local n = rb.run({ "exec", "t.lua", "--yes", "--new" }, { cwd = dir })
    assert.are.equal(3, n.code, n.stderr)
    assert.truthy(n.stderr:find(", is damaged (3 events missing after seq 18", 1, true), n.stderr)
    local runs = rb.run({ "runs" }, { cwd = dir })
    assert.are.equal(0, runs.code, runs.stderr)
    assert.truthy(runs.stdout:find("%s+damaged%s+"), runs.stdout)
    rb.rmtree(dir)
  end)

  it("lets the tip lag the journal (an update lost in a crash): no damage", function()
    local dir, path = setup()
    local all = lines_of(path)
    forge_tip((path:gsub("journal%.jsonl$", "tip")), 19, hash_of(all[19]))
    local r = verify(dir)
    assert.are.equal(0, r.code, r.stderr)
    rb.rmtree(dir)
  end)

  it("catches a tip that names another event than the journal has", function()
    local dir, path = setup()
    local all = lines_of(path)
    forge_tip((path:gsub("journal%.jsonl$", "tip")), 19, hash_of(all[18]))
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("audit FAILED at seq 19: seq 19 is not the event the tip record names", 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("catches a deleted tip record and a garbled one", function()
    local dir, path = setup()
    local tip = (path:gsub("journal%.jsonl$", "tip"))
    rb.write(tip, "runbook-tip 1 21 " .. string.rep("a", 64) .. " - " .. string.rep("b", 64) .. "\n", 384)
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("audit FAILED at seq 21: the tip record %S+/tip is garbled\n"), r.stderr)
    os.remove(tip)
    r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("the tip record is missing", 1, true), r.stderr)
    assert.are.equal(2, exec(dir).code)
    rb.rmtree(dir)
  end)

  it("with an audit key, catches a cut journal whose tip was rewritten without the key", function()
    local env = { RUNBOOK_AUDIT_KEY = "team-audit-key-1" }
    local dir, path = setup(env)
    local all = lines_of(path)
    write_lines(path, { table.unpack(all, 1, 18) })
    local tip = (path:gsub("journal%.jsonl$", "tip"))
    forge_tip(tip, 18, hash_of(all[18]))
    local r = verify(dir, env)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("the tip record carries no HMAC though the journal does", 1, true), r.stderr)
    forge_tip(tip, 18, hash_of(all[18]), string.rep("0", 64))
    r = verify(dir, env)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("HMAC does not verify", 1, true), r.stderr)
    assert.are.equal(2, exec(dir, env).code)
    rb.rmtree(dir)
  end)
end)

describe("the last line", function()
  it("edited but complete, is damage: named by verify, neither cut nor continued by exec", function()
    local dir, path = setup()
    local lines = lines_of(path)
    lines[21] = lines[21]:gsub('"step":"WAIT"', '"step":"T1"')
    write_lines(path, lines)
    local r = verify(dir)
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("audit FAILED at seq 21: seq 21: hash does not match its content (edited)", 1, true), r.stderr)
    local e = exec(dir)
    assert.are.equal(2, e.code, e.stderr)
    assert.truthy(e.stderr:find("the journal is damaged at seq 21", 1, true), e.stderr)
    assert.are.same(lines, lines_of(path))
    rb.rmtree(dir)
  end)

  it("edited and stripped of its newline to look torn, is still damage", function()
    local dir, path = setup()
    local lines = lines_of(path)
    lines[21] = lines[21]:gsub('"step":"WAIT"', '"step":"T1"')
    rb.write(path, table.concat(lines, "\n"), 384)
    local e = exec(dir)
    assert.are.equal(2, e.code, e.stderr)
    assert.truthy(e.stderr:find("the journal is damaged: 1 event missing after seq 20", 1, true), e.stderr)
    assert.are.equal(table.concat(lines, "\n"), rb.read(path)) -- not cut
    rb.rmtree(dir)
  end)
end)

describe("a damaged newest run", function()
  it("is named by exec before it starts a new run, and marked damaged by `runbook runs`", function()
    local dir = rb.tmpdir("tamper")
    rb.write(dir .. "/d.lua", 'runbook "done" {}\nstep "A" { run = function() return { n = 1 } end }\n')
    local first = rb.run({ "exec", "d.lua" }, { cwd = dir })
    assert.are.equal(0, first.code, first.stderr)
    local _, path, id = rb.journal(dir .. "/.runbook")
    local lines = lines_of(path)
    lines[3] = lines[3]:gsub('"n":1', '"n":2')
    write_lines(path, lines)
    local r = rb.run({ "exec", "d.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("the newest run of done, " .. id .. ", is damaged (seq 3: seq 3: hash does not match its content (edited)); it is left as it is (see `runbook audit verify " .. id .. "`). Starting a new run.", 1, true), r.stderr)
    local runs = rb.run({ "runs" }, { cwd = dir })
    assert.truthy(runs.stdout:find(id:gsub("%-", "%%-") .. "%s+damaged%s"), runs.stdout)
    assert.truthy(runs.stdout:find("%s+finished%s"), runs.stdout)
    rb.rmtree(dir)
  end)
end)

describe("a run from before tip records", function()
  it("is continued, and anchored from then on", function()
    local dir = rb.tmpdir("tamper")
    rb.write(dir .. "/old.lua", 'runbook "old" {}\nstep "A" { run = function() end }\nstep "B" { run = function() end }\n')
    local id = "old-20260101-000000-abcd"
    local rdir = dir .. "/.runbook/runs/" .. id
    assert(require("runbook._fs").mkdir_p(rdir, 448))
    local head = ',"ts":"2026-01-01T00:00:00.000Z","run":"' .. id .. '","type":'
    local events = {
      head .. '"run.started","file":"' .. dir .. '/old.lua","host":"h","runbook":"old","sha256":"' .. string.rep("1", 64) .. '","steps":["A","B"],"user":"u"',
      head .. '"step.started","step":"A","attempt":1',
      head .. '"step.finished","step":"A","attempt":1,"ms":1',
    }
    local prev, out = string.rep("0", 64), {}
    for i, fields in ipairs(events) do
      local body = string.format('{"seq":%d%s,"prev":"%s"', i, fields, prev)
      prev = crypto.sha256(body .. "}")
      out[#out + 1] = body .. ',"hash":"' .. prev .. '"}'
    end
    write_lines(rdir .. "/journal.jsonl", out)
    -- a resume refused after the journal was opened leaves a whole tip
    rb.write(dir .. "/old.lua", 'runbook "old" {}\nstep "B" { run = function() end }\n')
    local refused = rb.run({ "exec", "old.lua" }, { cwd = dir })
    assert.are.equal(2, refused.code, refused.stderr)
    assert.truthy(refused.stderr:find("step A already ran in this run but is no longer in the runbook", 1, true), refused.stderr)
    local ok = verify(dir)
    assert.are.equal(0, ok.code, ok.stderr)
    rb.write(dir .. "/old.lua", 'runbook "old" {}\nstep "A" { run = function() end }\nstep "B" { run = function() end }\n')
    local r = rb.run({ "exec", "old.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(512, #rb.read(rdir .. "/tip"))
    local lines = lines_of(rdir .. "/journal.jsonl")
    write_lines(rdir .. "/journal.jsonl", { table.unpack(lines, 1, #lines - 2) })
    local v = verify(dir)
    assert.are.equal(1, v.code)
    assert.truthy(v.stderr:find("2 events missing after seq " .. (#lines - 2), 1, true), v.stderr)
    rb.rmtree(dir)
  end)
end)
