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
    assert.truthy(r.stdout:match("^run tamper%-[%d-]+%-%x+: 21 events, hash chain intact %(no HMAC%)\n$"), r.stdout)
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
