-- The --output json stream is the format docs/events.md defines: real
-- runs' streams validate against docs/events.schema.json with ajv (a
-- validator nobody here wrote), every record has v, type, ts and run, and
-- the page, the schema and the stream name the same record types.
local rb = require "rbtest"
local json = require "runbook._json"
local proc = require "runbook._proc"
local npmtool = require "npmtool"
local fs = require "runbook._fs"

local SCHEMA = rb.source_dir .. "/docs/events.schema.json"

local dir

local function write(name, text) rb.write(dir .. "/" .. name, text) end

local function run(args, env)
  return rb.run(args, { cwd = dir, env = env })
end

-- Each record in its own file, validated by ajv-cli; returns the result.
local function ajv(records, tag)
  local rdir = dir .. "/records-" .. tag
  assert(fs.mkdir_p(rdir, 448))
  for i, line in ipairs(records) do rb.write(string.format("%s/r%04d.json", rdir, i), line) end
  local p = assert(proc.spawn { argv = { npmtool.bin("ajv"), "validate", "--spec=draft7", "--allow-union-types",
    "-c", npmtool.ensure() .. "/ajv-formats", "-s", SCHEMA, "-d", rdir .. "/r*.json", "--errors=text" } })
  return p:communicate { timeout = 120 }
end

local function lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

before_each(function() dir = rb.tmpdir("events") end)
after_each(function() rb.rmtree(dir) end)

local BOOK = [[
local sh = require "runbook.sh"
local lib = require "lib"
runbook "ev" { params = { ns = { default = "x" }, token = { env = "EV_TOKEN", secret = true } } }
step "A" { title = "first", run = function(ctx)
  local v = ctx:once("k", function() return "val" end)
  ctx:checkpoint("c", { n = 1 })
  for i = 1, 3 do ctx:progress(i, 3, "batch " .. i) end
  ctx:progress(5)
  ctx:log("hello %s with %s", v, ctx.params.token)
  ctx:warn("careful")
  sh.run { "true" }
  return { out = 1 }
end }
step "B" { verify = function() return true end, run = function() end }
step "C" { retry = { attempts = 2, delay = 0 }, run = function(ctx)
  if not ctx:cursor("tried") then ctx:checkpoint("tried", true) error("first fails") end
end }
manual "D" { instructions = "do it" }
step "E" { run = function(ctx) if ctx.params.ns == "bad" then error({ code = 7 }) end end }
]]

describe("the --output json stream", function()
  it("validates against docs/events.schema.json, run after run, with v, ts and run on every record", function()
    write("ev.lua", BOOK)
    write("lib.lua", 'step "L" { title = "from a library", run = function() end }\nreturn {}\n')
    local env = { EV_TOKEN = "tok-secret-value-123" }
    local all, types = {}, {}
    local function collect(r)
      for _, l in ipairs(lines(r.stdout)) do
        all[#all + 1] = l
        local rec = assert(json.decode(l), l)
        assert.are.equal(1, rec.v, l)
        assert.truthy(type(rec.ts) == "string" and rec.ts:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), l)
        assert.truthy(type(rec.run) == "string" and rec.run:match("^ev%-"), l)
        types[rec.type] = true
      end
    end
    -- a first invocation stops at the manual step
    local r = run({ "exec", "ev.lua", "--output", "json", "--yes" }, env)
    assert.are.equal(3, r.code, r.stderr)
    collect(r)
    assert.is_nil(r.stdout:find("tok-secret-value-123", 1, true))
    local id = assert(json.decode(lines(r.stdout)[1]).run)
    assert.are.equal(0, run { "confirm", id, "D", "--note", "done" }.code)
    -- the file and its library change (a note says so), the run resumes and finishes
    write("ev.lua", BOOK .. "-- edited\n")
    write("lib.lua", 'step "L" { title = "from a library", run = function() end }\nreturn { edited = true }\n')
    r = run({ "exec", "ev.lua", "--output", "json", "--yes" }, env)
    assert.are.equal(0, r.code, r.stderr)
    collect(r)
    -- a new run that fails for good
    r = run({ "exec", "ev.lua", "--new", "--only", "E", "--param", "ns=bad", "--output", "json" }, env)
    assert.are.equal(1, r.code, r.stderr)
    collect(r)
    for _, t in ipairs { "run.started", "console.begin", "step.started", "step.memo", "step.checkpoint", "progress", "log",
      "action", "step.finished", "step.skipped", "step.failed", "step.waiting", "run.waiting", "console.end", "run.resumed",
      "note", "run.finished", "run.failed" } do
      assert.is_true(types[t], t)
    end
    local res = ajv(all, "runs")
    assert.are.equal(0, res.code, res.stdout .. res.stderr)
    local valid = select(2, (res.stdout .. res.stderr):gsub(" valid\n", ""))
    assert.are.equal(#all, valid, res.stdout .. res.stderr)
  end)

  it("is checked for real: a record without ts, or with a field the format does not have, is refused", function()
    local good = '{"v":1,"type":"progress","ts":"2026-12-04T10:41:02.081Z","run":"r","step":"A","done":1,"total":null,"note":null}'
    local res = ajv({ good,
      '{"v":1,"type":"progress","run":"r","step":"A","done":1,"total":null,"note":null}',
      '{"v":1,"type":"log","ts":"2026-12-04T10:41:02.081Z","run":"r","step":"A","level":"info","message":"m","extra":1}',
      '{"v":2,"type":"log","ts":"2026-12-04T10:41:02.081Z","run":"r","step":"A","level":"info","message":"m"}',
      '{"v":1,"type":"step.finished","ts":"2026-12-04T10:41:02.081Z","run":"r","step":"A","attempt":1,"ms":3}',
    }, "bad")
    assert.are_not.equal(0, res.code)
    local text = res.stdout .. res.stderr
    assert.truthy(text:find("r0001.json valid", 1, true), text)
    assert.truthy(text:find("r0002.json invalid", 1, true), text)
    assert.truthy(text:find("must have required property 'ts'", 1, true), text)
    assert.truthy(text:find("r0003.json invalid", 1, true), text)
    assert.truthy(text:find("r0004.json invalid", 1, true), text)
    assert.truthy(text:find("r0005.json invalid", 1, true), text) -- a journal event without its seq
  end)

  it("names the same record types in docs/events.md and the schema, and docs/cli.md links the page", function()
    local schema = json.decode(rb.read(SCHEMA))
    local page = rb.read(rb.source_dir .. "/docs/events.md")
    local in_schema, in_page = {}, {}
    for _, t in ipairs(schema.properties.type.enum) do in_schema[#in_schema + 1] = t end
    for t in page:gmatch("\n### `([%w._]+)`") do in_page[#in_page + 1] = t end
    table.sort(in_schema)
    table.sort(in_page)
    assert.are.same(in_schema, in_page)
    assert.are.equal(#in_schema, #schema.allOf)
    assert.truthy(rb.read(rb.source_dir .. "/docs/cli.md"):find("(events.md)", 1, true))
  end)
end)
