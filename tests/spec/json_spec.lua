local json = require "runbook._json"
describe("json", function()
  it("round-trips empty array and object", function()
    assert.are.equal('{"a":[],"b":{}}', json.encode(json.decode('{"a":[],"b":{}}')))
  end)
  it("keeps 64-bit integers", function()
    assert.are.equal(9007199254740993, json.decode("9007199254740993"))
  end)
end)
