-- exec --notify URL: a JSON POST (Slack-compatible text plus fields) when a
-- run waits for a person, fails or finishes, with the command to go on;
-- scrubbed; a notification that cannot be delivered never fails the run.
-- Against the real local HTTP server, with real runbook processes.
local rb = require "rbtest"
local httpserver = require "httpserver"
local json = require "runbook._json"
local curl = require "runbook._curl"

local BOOK = [[
local secret = require "runbook.secret"
runbook "notified" {}
step "make" {
  run = function(ctx)
    local pw = ctx:once("pw", function() return secret.wrap(os.getenv("NOTIFY_SECRET")) end)
    if os.getenv("FAIL") then error("could not reach db with " .. secret.reveal(pw), 0) end
  end,
}
manual "gate" { instructions = "approve it" }
step "after" { run = function() end }
]]

describe("exec --notify", function()
  local srv, dir, client
  local SECRET = "s3cr3t-value-for-notify-12345"

  setup(function()
    srv = httpserver.start { plain = true }
    client = curl.client {}
  end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function()
    dir = rb.tmpdir("notify")
    rb.write(dir .. "/n.lua", BOOK)
  end)
  after_each(function() rb.rmtree(dir) end)

  local function hooked(key)
    local res = assert(client:request { url = srv:url("/hooked?key=" .. key) })
    local out = {}
    for _, h in ipairs(json.decode(res.body)) do
      assert.are.equal("application/json", h.content_type)
      out[#out + 1] = json.decode(h.body)
    end
    return out
  end

  it("posts when the run fails, waits and finishes, with the command to go on", function()
    local url = srv:url("/hook?key=a")
    local env = { NOTIFY_SECRET = SECRET, FAIL = "1" }
    local r = rb.exec("n.lua", { cwd = dir, env = env })
    assert.are.equal(1, r.code)
    assert.are.equal(0, #hooked("a"), "no --notify, no post")

    r = rb.exec({ "n.lua", "--notify", url }, { cwd = dir, env = env })
    assert.are.equal(1, r.code)
    local got = hooked("a")
    assert.are.equal(1, #got)
    assert.are.equal("failed", got[1].event)
    assert.are.equal("make", got[1].step)
    assert.are.equal(1, got[1].version)
    assert.matches("^runbook exec .*/n%.lua$", got[1].command)
    assert.is_truthy(got[1].text:find("runbook notified failed at make: could not reach db with [REDACTED]", 1, true), got[1].text)
    for _, m in ipairs(got) do assert.is_nil(json.encode(m):find(SECRET, 1, true)) end

    r = rb.exec("n.lua", { cwd = dir, env = { NOTIFY_SECRET = SECRET, RUNBOOK_NOTIFY = url } })
    assert.are.equal(3, r.code)
    got = hooked("a")
    assert.are.equal(2, #got)
    assert.are.equal("waiting", got[2].event)
    assert.are.equal("gate", got[2].step)
    assert.matches("^runbook confirm notified%-%d+%-%d+%-%x+ gate %-%-note '%.%.%.'$", got[2].command)
    assert.is_truthy(got[2].text:find("is waiting for a person at gate", 1, true), got[2].text)

    assert.are.equal(0, rb.run({ "confirm", "last", "gate" }, { cwd = dir }).code)
    r = rb.exec({ "n.lua", "--notify", url }, { cwd = dir, env = { NOTIFY_SECRET = SECRET } })
    assert.are.equal(0, r.code, r.stderr)
    got = hooked("a")
    assert.are.equal(3, #got)
    assert.are.equal("finished", got[3].event)
    assert.are.equal(got[2].run, got[3].run)

    -- the runbook again: a new run, which tells of itself
    rb.exec({ "n.lua", "--notify", url }, { cwd = dir, env = { NOTIFY_SECRET = SECRET } })
    got = hooked("a")
    assert.are.equal(4, #got)
    assert.are.equal("waiting", got[4].event)
    assert.are_not.equal(got[3].run, got[4].run)
  end)

  it("logs a notification it cannot deliver and keeps the run's outcome", function()
    local url = srv:url("/hook?key=b&status=500")
    local r = rb.exec({ "n.lua", "--notify", url }, { cwd = dir, env = { NOTIFY_SECRET = SECRET } })
    assert.are.equal(3, r.code, r.stderr)
    local out = r.stdout .. r.stderr
    assert.is_truthy(out:find("notification (waiting) not delivered: HTTP 500", 1, true), out)
    assert.is_nil(out:find("key=b", 1, true), "the webhook's URL is never printed")
    local port = rb.free_port()
    r = rb.exec({ "n.lua", "--notify", "http://127.0.0.1:" .. port .. "/x" }, { cwd = dir, env = { NOTIFY_SECRET = SECRET } })
    assert.are.equal(3, r.code)
    assert.is_truthy((r.stdout .. r.stderr):find("notification (waiting) not delivered: ", 1, true), r.stdout .. r.stderr)
    local log = rb.read(dir .. "/.runbook/runs/" .. rb.events(dir .. "/.runbook", "run.started")[1].run .. "/log")
    assert.is_truthy(log:find("notification (waiting) not delivered: HTTP 500", 1, true), log)
  end)
end)
