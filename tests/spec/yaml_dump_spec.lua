local yaml = require "runbook.yaml"
local json = require "runbook.json"
local secret = require "runbook._secret"

local null = json.null

-- Deep equality that also tells integers from floats, -0.0 from 0.0, NaN
-- from NaN and [] from {} (assert.same does not).
local function identical(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b) end
    if a ~= a and b ~= b then return true end
    if a ~= b or (a == 0 and 1 / a ~= 1 / b) then return false, path .. ": " .. a .. " vs " .. b end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, path .. ": " .. string.format("%q vs %q", tostring(a), tostring(b)) end
    return true
  end
  -- the mark matters for empty tables only ([] vs {}); non-empty sequences need none
  if next(a) == nil and json.is_array(a) ~= json.is_array(b) then return false, path .. ": array mark differs" end
  for k, v in pairs(a) do
    local ok, why = identical(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": missing" end
  end
  return true
end

local function round_trip(v)
  local text = yaml.dump(v)
  local back = yaml.load(text)
  local ok, why = identical(v, back)
  assert(ok, (why or "") .. "\n--- dumped:\n" .. text)
end

describe("yaml.dump", function()
  it("writes block style with sorted keys", function()
    assert.are.equal([[
enabled: true
env:
- name: A
  value: "1"
labels: {}
name: api
nothing: null
ports:
- 80
- 443
ratio: 0.5
replicas: 3
script: |
  set -e
  echo hi
tags: []
]], yaml.dump({
      name = "api", replicas = 3, ratio = 0.5, enabled = true, nothing = null,
      tags = json.array {}, labels = {}, ports = { 80, 443 },
      env = { { name = "A", value = "1" } },
      script = "set -e\necho hi\n",
    }))
  end)

  it("writes top-level scalars as one-line documents", function()
    assert.are.equal("42\n", yaml.dump(42))
    assert.are.equal("x\n", yaml.dump("x"))
    assert.are.equal("null\n", yaml.dump(nil))
    assert.are.equal("null\n", yaml.dump(null))
    assert.are.equal("{}\n", yaml.dump({}))
    assert.are.equal("[]\n", yaml.dump(json.array()))
  end)

  it("quotes strings that would load as another type", function()
    assert.are.equal([[
- "1"
- "true"
- "null"
- ""
- "~"
- "0x1F"
- "1.5"
- "-0.0"
- ".inf"
- "yes"
- "off"
- "12:30"
- "2026-11-22"
- "<<"
- ok
]], yaml.dump({ "1", "true", "null", "", "~", "0x1F", "1.5", "-0.0", ".inf", "yes", "off", "12:30", "2026-11-22", "<<",
      "ok" }))
  end)

  it("quotes strings that YAML syntax would misread", function()
    assert.are.equal([[
- '- x'
- 'a: b'
- '#c'
- ' lead'
- 'trail '
- '*star'
- '&amp'
- '!bang'
- '[a]'
- 'a #b'
- it's
- "tab\there"
- "a\0b"
]], yaml.dump({ "- x", "a: b", "#c", " lead", "trail ", "*star", "&amp", "!bang", "[a]", "a #b", "it's", "tab\there",
      "a\0b" }))
  end)

  it("writes multi-line strings as | blocks with the right chomping", function()
    assert.are.equal("clip: |\n  one\n  two\nkeep: |+\n  one\n\nstrip: |-\n  one\n  two\n",
      yaml.dump({ clip = "one\ntwo\n", strip = "one\ntwo", keep = "one\n\n" }))
    assert.are.equal("|2-\n    indented\n  x\n", yaml.dump("  indented\nx"))
  end)

  it("writes non-string keys refused and odd keys quoted", function()
    assert.are.equal('"1": one\n\'a: b\': 2\n? "multi\\nline"\n: 3\n',
      yaml.dump({ ["1"] = "one", ["a: b"] = 2, ["multi\nline"] = 3 }))
  end)

  it("writes floats so they stay floats", function()
    assert.are.equal("- 1.0\n- -0.0\n- 0.1\n- 1.0e+300\n- 2.5e-08\n- .inf\n- -.inf\n- .nan\n",
      yaml.dump({ 1.0, -0.0, 0.1, 1e300, 2.5e-8, math.huge, -math.huge, 0 / 0 }))
    assert.are.equal("- 9223372036854775807\n- -9223372036854775808\n",
      yaml.dump({ math.maxinteger, math.mininteger }))
  end)

  it("writes bytes that are not UTF-8 as !!binary", function()
    assert.are.equal("!!binary /wBh\n", yaml.dump("\255\0a"))
    assert.are.equal("\255\0a", yaml.load(yaml.dump("\255\0a")))
  end)

  it("honours indent", function()
    assert.are.equal("a:\n    b:\n    - 1\n    -   c: 2\n", yaml.dump({ a = { b = { 1, { c = 2 } } } }, { indent = 4 }))
  end)

  it("expands shared tables (aliases) in each place", function()
    local v = yaml.load("a: &x {k: 1}\nb: *x\n")
    assert.are.equal("a:\n  k: 1\nb:\n  k: 1\n", yaml.dump(v))
  end)

  describe("refuses", function()
    it("secrets by default, redacts or reveals them on request", function()
      local s = secret.new("s3cr3t-value")
      assert.has_error(function() yaml.dump({ password = s }) end,
        "yaml.dump: cannot encode a secret value (reveal it explicitly)")
      assert.are.equal("password: '[REDACTED]'\n", yaml.dump({ password = s }, { secrets = "redact" }))
      assert.are.equal("password: s3cr3t-value\n", yaml.dump({ password = s }, { secrets = "reveal" }))
    end)
    it("cycles", function()
      local t = { list = {} }
      t.list[1] = t
      assert.has_error(function() yaml.dump(t) end, "yaml.dump: value contains a cycle (a table that contains itself)")
    end)
    it("sparse arrays and mixed tables", function()
      assert.has_error(function() yaml.dump({ 1, nil, 3 }) end,
        "yaml.dump: table has keys that are neither a sequence 1..n nor strings (sparse array?)")
      assert.has_error(function() yaml.dump({ 1, x = 2 }) end, "yaml.dump: table mixes sequence and string keys")
      assert.has_error(function() yaml.dump({ [true] = 1 }) end,
        "yaml.dump: table has keys that are neither a sequence 1..n nor strings (sparse array?)")
      assert.has_error(function() yaml.dump(json.array { x = 1 }) end, "yaml.dump: json.array has string keys")
    end)
    it("nesting deeper than loading allows", function()
      local deep = yaml.load(string.rep("[", 512) .. string.rep("]", 512))
      assert.are.equal(string.rep("- ", 511) .. "[]\n", yaml.dump(deep))
      assert.has_error(function() yaml.dump({ deep }) end, "yaml.dump: value nested deeper than 512 levels")
    end)
    it("functions and other userdata", function()
      assert.has_error(function() yaml.dump({ f = print }) end, "yaml.dump: cannot encode a function value")
      assert.has_error(function() yaml.dump(io.stdout) end, "yaml.dump: cannot encode a userdata value")
    end)
    it("bad options", function()
      assert.has_error(function() yaml.dump(1, { indent = 1 }) end,
        "yaml.dump: option 'indent' must be an integer from 2 to 9")
      assert.has_error(function() yaml.dump(1, { width = 80 }) end, "yaml.dump: unknown option 'width'")
      assert.has_error(function() yaml.dump(1, { secrets = "show" }) end,
        'yaml.dump: option \'secrets\' must be "error", "redact" or "reveal", got "show"')
      assert.has_error(function() yaml.dump(1, "x") end, "yaml.dump: options must be a table, got string")
    end)
  end)
end)

describe("yaml round trip: load(dump(v)) is v", function()
  local strings = {
    "", " ", "plain", "1", "-1", "+1", "0x10", "0o7", "1.5", "1e3", ".5", "1.", "-.inf", ".nan", "~", "null", "Null",
    "true", "False", "yes", "no", "on", "off", "y", "n", "<<", "=", "-", "?", ":", "- x", "? x", "a: b", "a #b",
    "#comment", "&anchor", "*alias", "!tag", "%directive", "@at", "`tick", "'single'", '"double"', "it's",
    "{flow}", "[flow]", "x,y", "a\\b", "tab\there", " lead", "trail ", "ünïcödé ✓ 😀", "a\0b", "\1\2\127",
    "line\n", "\n", "\n\n", "two\n\n", "no final newline\nx", "  indented\nx", "x\n  indented", "trailing \nspace",
    "a\r\nb", "\u{feff}bom", "\u{85}nel", "\u{2028}ls", "null\n", "---", "...", "--- x", "... x",
    string.rep("long words ", 30), string.rep("x", 5000),
  }
  for i, s in ipairs(strings) do
    it(string.format("string %d %q", i, s:sub(1, 30)), function()
      round_trip(s)
      round_trip({ s })
      round_trip({ [s] = s })
      round_trip({ k = { s, { s } } })
    end)
  end

  it("numbers keep their type and value", function()
    round_trip({ 0, 1, -1, math.maxinteger, math.mininteger, 0x7fffffff, -2 ^ 53 // 1 })
    round_trip({ 0.0, -0.0, 1.0, 0.1, 1 / 3, 1e300, -1e-300, 5e-324, 2 ^ 53 + 0.0, 123456.789, math.pi, math.huge,
      -math.huge })
    local nan = yaml.load(yaml.dump(0 / 0))
    assert.is_true(nan ~= nan)
  end)

  it("null, booleans, empty and nested collections", function()
    round_trip({ a = null, b = true, c = false, d = {}, e = json.array {}, f = { {}, json.array {}, { {} } } })
    round_trip(json.array { null, null })
    round_trip({ { { { { "deep" } } } } })
    round_trip({ [""] = "empty key", [" "] = "space key", ["1"] = "numeric key", ["true"] = "bool key" })
  end)

  it("a decoded JSON document", function()
    local v = json.decode('{"apiVersion":"v1","items":[{"n":1,"f":1.0,"z":-0.0,"s":"1","e":[],"o":{},"x":null}]}')
    round_trip(v)
    assert.are.equal(json.encode(v), json.encode(yaml.load(yaml.dump(v))))
  end)
end)
