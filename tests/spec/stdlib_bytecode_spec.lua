-- The stdlib is embedded as bytecode compiled at build time; debug
-- information must survive so tracebacks and errors name file:line.
describe("embedded stdlib", function()
  it("keeps chunk names and line information", function()
    local json = require("runbook.json")
    local info = debug.getinfo(json.decode, "SL")
    assert.are.equal("@runbook/json.lua", info.source)
    assert.is_true(info.linedefined > 0)
    assert.is_not_nil(next(info.activelines), "line info stripped")
  end)

end)
