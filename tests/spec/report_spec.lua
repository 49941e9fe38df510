-- runbook._engine.report: a run's page from its events alone. Every value
-- from the journal is escaped, secrets stay out, sealed memos show as
-- sealed, and the only script and stylesheet are the page's own, allowed
-- by hash.
local report = require "runbook._engine.report"
local crypto = require "runbook._crypto"
local secret = require "runbook.secret"

local function ev(seq, ms, t)
  t.seq = seq
  t.ts = string.format("2026-12-04T10:00:%02d.%03dZ", ms // 1000, ms % 1000)
  t.run = "r-1"
  return t
end

local EVENTS = {
  ev(1, 0, { type = "run.started", runbook = "demo", file = "/x/demo.lua", sha256 = string.rep("a", 64), user = "ana", host = "lap", pid = 7, steps = { "a", "m", "b" } }),
  ev(2, 100, { type = "step.started", step = "a", attempt = 1, title = "make <b>it</b>" }),
  ev(3, 200, { type = "step.memo", step = "a", key = "pw", value = { ["$secret"] = { kid = "k", box = "zz" } } }),
  ev(4, 300, { type = "step.failed", step = "a", attempt = 1, error = { message = "<script>alert(1)</script>" } }),
  ev(5, 400, { type = "step.started", step = "a", attempt = 2, title = "make <b>it</b>" }),
  ev(6, 500, { type = "action", step = "a", kind = "k8s", summary = "apply Secret demo/app", verb = "apply", code = 201 }),
  ev(7, 900, { type = "step.finished", step = "a", attempt = 2, ms = 500 }),
  ev(8, 1000, { type = "step.waiting", step = "m" }),
  ev(9, 1000, { type = "run.waiting", step = "m" }),
  ev(10, 5000, { type = "step.confirmed", step = "m", by = "bo", host = "desk", via = "command", note = "\"quoted\" & <done>" }),
  ev(11, 5100, { type = "step.started", step = "b", attempt = 1 }),
}

describe("runbook._engine.report", function()
  local html = report.render { events = EVENTS, run = "r-1", verify = { ok = true } }

  it("draws one bar per attempt and a wait for the person", function()
    local bars = {}
    for step, n in html:gmatch('<rect class="bar [%w]+" data%-step="([^"]+)" data%-attempt="(%d+)"') do
      bars[#bars + 1] = step .. n
    end
    assert.are.same({ "a1", "a2", "b1" }, bars)
    assert.is_truthy(html:find('<rect class="bar failed" data-step="a" data-attempt="1"', 1, true))
    assert.is_truthy(html:find('<rect class="bar running" data-step="b"', 1, true), "the step still running reaches the end")
    local waits = select(2, html:gsub('<rect class="wait"', ""))
    assert.are.equal(1, waits)
  end)

  it("lists each step with its status, attempts, actions and confirmations", function()
    assert.is_truthy(html:find('data-step="a" data-status="done" data-attempts="2"', 1, true))
    assert.is_truthy(html:find('data-step="m" data-status="confirmed" data-attempts="0"', 1, true))
    assert.is_truthy(html:find("<td>k8s</td><td>apply Secret demo/app</td>", 1, true))
    assert.is_truthy(html:find("code=201 verb=apply", 1, true))
    assert.is_truthy(html:find("confirmed by bo@desk via command", 1, true))
    assert.are.equal(#EVENTS, select(2, html:gsub('<tr data%-seq="', "")))
  end)

  it("escapes every value from the journal", function()
    assert.is_nil(html:find("<script>alert", 1, true))
    assert.is_truthy(html:find("&lt;script&gt;alert(1)&lt;/script&gt;", 1, true))
    assert.is_truthy(html:find("make &lt;b&gt;it&lt;/b&gt;", 1, true))
    assert.is_truthy(html:find("&quot;quoted&quot; &amp; &lt;done&gt;", 1, true))
    -- the page's only script is its own
    assert.are.equal(1, select(2, html:gsub("<script>", "")))
  end)

  it("shows sealed memos as sealed and never a registered secret", function()
    assert.is_truthy(html:find("key pw (sealed)", 1, true))
    assert.is_nil(html:find("zz", 1, true))
    local s = secret.random { bytes = 16, encoding = "hex" }
    local leaky = { ev(1, 0, { type = "run.started", runbook = "x", user = "u", host = "h", steps = {} }),
      ev(2, 10, { type = "action", step = "a", kind = "sh", summary = "token " .. secret.reveal(s) }) }
    local page = report.render { events = leaky }
    assert.is_nil(page:find(secret.reveal(s), 1, true))
    assert.is_truthy(page:find("token [REDACTED]", 1, true))
  end)

  it("allows its inline stylesheet and script by hash, and nothing else", function()
    local csp = report.csp()
    assert.matches("^default%-src 'none'; style%-src 'sha256%-[%w+/=]+'; script%-src 'sha256%-[%w+/=]+'; img%-src data:; connect%-src 'none'", csp)
    local style = html:match("<style>(.-)</style>")
    local script = html:match("<script>(.-)</script>")
    local function h(s) return "'sha256-" .. crypto.base64_encode(crypto.hex_decode(crypto.sha256(s))) .. "'" end
    assert.is_truthy(csp:find(h(style), 1, true))
    assert.is_truthy(csp:find(h(script), 1, true))
    assert.is_nil(html:find(" style=", 1, true), "no inline style attribute (the policy would refuse it)")
  end)

  it("says where a chain breaks and that a chain without HMAC can be recomputed", function()
    local page = report.render { events = EVENTS, verify = { ok = false, bad_seq = 5, reason = "hash does not match its content (edited)" } }
    assert.is_truthy(page:find("broken at seq 5: hash does not match its content (edited)", 1, true))
    assert.is_truthy(page:find("no HMAC: anyone who can write the journal can recompute its chain", 1, true))
  end)
end)
