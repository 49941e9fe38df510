local log = require "runbook.log"
local audit = require "runbook._engine.audit"
local secret = require "runbook.secret"

describe("runbook.log", function()
  before_each(function() audit.reset() end)

  it("formats and records lines with their level, secrets scrubbed", function()
    local pw = secret.wrap("pa55-word-log-test")
    log.info("applied %d objects to %s", 3, "tezca")
    log.warn("password is %s, raw %s", pw, pw:reveal())
    log.error("plain", 42, true)
    log.debug("details")
    assert.are.same({
      { level = "info", message = "applied 3 objects to tezca" },
      { level = "warn", message = "password is [REDACTED], raw [REDACTED]" },
      { level = "error", message = "plain 42 true" },
      { level = "debug", message = "details" },
    }, audit.logs)
  end)

  it("goes to the engine's sink while a step runs", function()
    local seen = {}
    audit.set_sink { log = function(level, msg) seen[#seen + 1] = level .. ":" .. msg end,
      progress = function(d, t, n) seen[#seen + 1] = string.format("progress:%s/%s %s", d, t, n) end }
    log.info("hello")
    log.progress(2, 5, "rows")
    audit.set_sink(nil)
    assert.are.same({ "info:hello", "progress:2/5 rows" }, seen)
    assert.are.equal(0, #audit.logs)
  end)
end)
