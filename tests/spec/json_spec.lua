local json = require "runbook.json"
local secret = require "runbook.secret"

describe("runbook.json", function()
  it("keeps null apart from nil, and [] apart from {}", function()
    local v = json.decode('{"a":null,"b":[],"c":{},"d":[null,1]}')
    assert.are.equal(json.null, v.a)
    assert.is_true(json.is_null(v.a))
    assert.is_true(json.is_array(v.b))
    assert.is_false(json.is_array(v.c))
    assert.are.equal(json.null, v.d[1])
    assert.are.equal('{"a":null,"b":[],"c":{},"d":[null,1]}', json.encode(v))
    assert.are.equal("[]", json.encode(json.array()))
    assert.are.equal("{}", json.encode({}))
    assert.are.equal('{"a":1}', json.encode({ a = 1, b = nil }))
  end)

  it("round-trips 64-bit integers and floats exactly", function()
    for _, n in ipairs { math.maxinteger, math.mininteger, 0, -1, 9007199254740993 } do
      local back = json.decode(json.encode(n))
      assert.are.equal(n, back)
      assert.are.equal("integer", math.type(back))
    end
    for _, f in ipairs { 0.1, 1e300, -2.5e-300, 1.0, 123456789.125, 1 / 3 } do
      local back = json.decode(json.encode(f))
      assert.are.equal(f, back)
      assert.are.equal("float", math.type(back))
    end
    assert.are.equal("1.0", json.encode(1.0))
    assert.are.equal("-0.0", json.encode(-0.0))
  end)

  it("names the position of a syntax error, and the file", function()
    local ok, err = pcall(json.decode, '{"a": [1, 2}')
    assert.is_false(ok)
    assert.are.equal("json", err.kind)
    assert.are.equal("json.decode: line 1 column 12: ']' expected near '}'", err.message)
    local _, err2 = pcall(json.decode, "{", "values.json")
    assert.are.equal("json.decode: values.json: line 1 column 1: string or '}' expected near end of file", err2.message)
    local v, perr = json.pdecode("nope")
    assert.is_nil(v)
    assert.truthy(perr.message:find("invalid token", 1, true))
  end)

  it("refuses what JSON cannot hold", function()
    local cyc = {}
    cyc.self = cyc
    assert.has_error(function() json.encode(cyc) end, "json.encode: value nested too deeply (a cycle?)")
    assert.has_error(function() json.encode({ [1] = 1, [3] = 3 }) end,
      "json.encode: table has keys that are neither a sequence 1..n nor strings (sparse array?)")
    assert.has_error(function() json.encode({ 1, a = 2 }) end, "json.encode: table mixes sequence and string keys")
    assert.has_error(function() json.encode("\xff") end,
      "json.encode: string is not valid UTF-8 (encode binary data as base64 or hex)")
    assert.has_error(function() json.encode(0 / 0) end, "json.encode: number is NaN or infinite")
    assert.has_error(function() json.encode(print) end, "json.encode: cannot encode a function value")
  end)

  it("refuses, redacts or reveals secrets as asked", function()
    local s = secret.wrap("s3cr3t-value")
    assert.has_error(function() json.encode({ pw = s }) end, "json.encode: cannot encode a secret value (reveal it explicitly)")
    assert.are.equal('{"pw":"[REDACTED]"}', json.encode({ pw = s }, { secrets = "redact" }))
    assert.are.equal('{"pw":"s3cr3t-value"}', json.encode({ pw = s }, { secrets = "reveal" }))
  end)

  it("pretty-prints with sorted keys", function()
    assert.are.equal('{\n  "a": 1,\n  "b": [\n    true\n  ]\n}', json.encode({ b = { true }, a = 1 }, { pretty = true }))
  end)
end)
