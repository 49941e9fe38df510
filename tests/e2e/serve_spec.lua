-- runbook report and runbook serve without a browser (tests/web has the
-- browser's view): the report of a real exec run, the serve handler's
-- routes, API, token rule and headers over a real store, and the
-- libmicrohttpd binding answering a real client (curl) from this thread.
local rb = require "rbtest"
local fs = require "runbook._fs"
local json = require "runbook._json"
local proc = require "runbook._proc"
local crypto = require "runbook._crypto"
local serve = require "runbook._engine.serve"
local runsource = require "runbook._engine.runsource"

local BOOK = [[
local secret = require "runbook.secret"
runbook "rep" {}
step "a" { title = "First <b>step</b>", run = function(ctx)
  local pw = ctx:once("pw", function() return secret.random { bytes = 16, encoding = "hex" } end)
  ctx:log("made %s", pw)
  ctx:log("<script>alert(1)</script>")
  ctx:log("two\nlines")
end }
manual "m" { needs = "a", title = "Look", instructions = "look at it" }
step "b" { needs = "m", run = function() end }
]]

local dir, state, id

setup(function()
  dir = rb.tmpdir("serve")
  state = dir .. "/state"
  rb.write(dir .. "/rep.lua", BOOK)
  local r = rb.exec("rep.lua", { cwd = dir, state = state, yes = true })
  assert.are.equal(3, r.code, r.stderr)
  id = fs.listdir(state .. "/runs")[1]
end)
teardown(function() rb.rmtree(dir) end)

local function tree_digest()
  local parts = {}
  for _, name in ipairs(fs.listdir(state .. "/runs/" .. id)) do
    local p = state .. "/runs/" .. id .. "/" .. name
    local st = fs.stat(p)
    parts[#parts + 1] = name .. ":" .. st.size .. ":" .. st.mtime .. ":" .. crypto.sha256(rb.read(p) or "")
  end
  table.sort(parts)
  return table.concat(parts, "\n")
end

describe("runbook report", function()
  it("writes the run as one page to stdout, with each step's log lines escaped", function()
    local r = rb.run({ "report", id, "--state", state })
    assert.are.equal(0, r.code, r.stderr)
    local html = r.stdout
    assert.is_truthy(html:find("^<!doctype html>"))
    assert.is_truthy(html:find('data-step="a" data-status="done" data-attempts="1"', 1, true))
    assert.is_truthy(html:find('data-step="m" data-status="waiting"', 1, true))
    assert.is_truthy(html:find("First &lt;b&gt;step&lt;/b&gt;", 1, true))
    assert.is_truthy(html:find("info &lt;script&gt;alert(1)&lt;/script&gt;", 1, true))
    assert.is_truthy(html:find("info two\nlines</span>", 1, true), "a multi-line message stays one entry")
    assert.is_truthy(html:find("info made [REDACTED]", 1, true))
    assert.are.equal(1, select(2, html:gsub("<script", "")))
    assert.is_truthy(html:find('id="head-chain"><span class="ok">hash chain intact', 1, true))
  end)

  it("writes to --output with mode 0600, and names a missing run", function()
    local out = dir .. "/r.html"
    local r = rb.run({ "report", id:sub(1, 12), "--state", state, "--output", out })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(string.format("report of run %s (%d events) written to %s\n", id, #rb.journal(state), out), r.stderr)
    assert.are.equal(384, fs.stat(out).mode & 511)
    local bad = rb.run({ "report", "nope", "--state", state })
    assert.are.equal(2, bad.code)
    assert.are.equal("runbook: no run 'nope' in " .. state .. " (see `runbook runs`)\n", bad.stderr)
  end)
end)

describe("runbook serve's handler", function()
  local src, handle
  before_each(function()
    src = runsource.open(state)
    handle = serve.handler(src)
  end)
  local function get(path, query, headers, cookies, method)
    return handle { method = method or "GET", path = path, query = query or {}, headers = headers or {}, cookies = cookies or {} }
  end

  it("serves the run page with a policy allowing its own script and /app.js only", function()
    local status, h, body = get("/runs/" .. id)
    assert.are.equal(200, status)
    assert.are.equal("text/html; charset=utf-8", h["Content-Type"])
    assert.are.equal("nosniff", h["X-Content-Type-Options"])
    assert.matches("script%-src 'sha256%-[%w+/=]+' 'self'; img%-src data:; connect%-src 'self'; base%-uri 'none'; form%-action 'none'; frame%-ancestors 'none'$", h["Content-Security-Policy"])
    assert.is_nil(h["Content-Security-Policy"]:find("unsafe", 1, true))
    assert.is_truthy(body:find('<script src="/app.js"></script>', 1, true))
    local s2, h2, js = get("/app.js")
    assert.are.equal(200, s2)
    assert.are.equal("text/javascript; charset=utf-8", h2["Content-Type"])
    assert.is_truthy(js:find("/events?after=", 1, true))
  end)

  it("answers the API: runs, one run, its events after a seq, verify", function()
    local _, h, body = get("/api/runs")
    assert.are.equal("application/json", h["Content-Type"])
    local runs = json.decode(body).runs
    assert.are.equal(1, #runs)
    assert.are.same({ "m" }, runs[1].waiting)
    assert.are.equal("waiting", runs[1].status)
    local one = json.decode(select(3, get("/api/runs/" .. id)))
    assert.are.equal(3, #one.steps)
    assert.are.equal("waiting", one.steps[2].status)
    local n = #rb.journal(state)
    local evs = json.decode(select(3, get("/api/runs/" .. id .. "/events", { after = tostring(n - 2) })))
    assert.are.equal(2, #evs.events)
    assert.are.equal(n - 1, evs.events[1].seq)
    assert.are.equal(n, evs.last_seq)
    local none = select(3, get("/api/runs/" .. id .. "/events", { after = tostring(n) }))
    assert.is_truthy(none:find('"events":[]', 1, true), "an empty list is a JSON array")
    local st, _, bad = get("/api/runs/" .. id .. "/events", { after = "-1" })
    assert.are.equal(400, st)
    assert.are.equal("bad-request", json.decode(bad).error.code)
    local v = json.decode(select(3, get("/api/runs/" .. id .. "/verify")))
    assert.is_true(v.ok)
    assert.are.equal(n, v.events)
  end)

  it("filters runs by runbook, status, actor and date", function()
    local function count(q) return #json.decode(select(3, get("/api/runs", q))).runs end
    assert.are.equal(1, count { runbook = "rep" })
    assert.are.equal(0, count { runbook = "other" })
    assert.are.equal(1, count { status = "waiting" })
    assert.are.equal(0, count { status = "finished" })
    assert.are.equal(0, count { actor = "nobody-at-all" })
    local day = os.date("!%Y-%m-%d")
    assert.are.equal(1, count { from = day, to = day })
    assert.are.equal(0, count { to = "2000-01-01" })
  end)

  it("shows the exact command that confirms a waiting step", function()
    local _, _, html = get("/waiting")
    assert.is_truthy(html:find(string.format('<pre class="cmd">runbook confirm %s m --note &#39;...&#39; --state %s</pre>', id, state), 1, true))
  end)

  it("refuses anything but GET and HEAD, and unknown runs and pages", function()
    local st, h = get("/", nil, nil, nil, "POST")
    assert.are.equal(405, st)
    assert.are.equal("GET, HEAD", h.Allow)
    assert.are.equal(404, (get("/runs/../../etc/passwd")))
    assert.are.equal(404, (get("/runs/nope")))
    assert.are.equal(404, (get("/api/runs/nope")))
    assert.are.equal(404, (get("/nothing")))
  end)

  it("with a token, lets in only the bearer or the cookie; ?token= sets the cookie once", function()
    local token = crypto.random_hex(16)
    local guarded = serve.handler(src, { token = token })
    local function req(path, query, headers, cookies)
      return guarded { method = "GET", path = path, query = query or {}, headers = headers or {}, cookies = cookies or {} }
    end
    assert.are.equal(401, (req("/api/runs")))
    assert.are.equal(401, (req("/api/runs", nil, { authorization = "Bearer " .. token .. "x" })))
    assert.are.equal(401, (req("/api/runs", nil, nil, { token = "x" })))
    assert.are.equal(200, (req("/api/runs", nil, { authorization = "Bearer " .. token })))
    assert.are.equal(200, (req("/api/runs", nil, nil, { token = token })))
    local st, h = req("/runs/" .. id, { token = token })
    assert.are.equal(303, st)
    assert.are.equal("/runs/" .. id, h.Location)
    assert.are.equal("token=" .. token .. "; Path=/; HttpOnly; SameSite=Strict", h["Set-Cookie"])
    assert.are.equal(401, (req("/", { token = "wrong" })))
  end)

  it("says where a tampered chain breaks, and changes nothing in the store", function()
    local before = tree_digest()
    for _, p in ipairs { "/", "/waiting", "/runs/" .. id, "/runs/" .. id .. "/verify", "/api/runs", "/api/runs/" .. id,
      "/api/runs/" .. id .. "/events", "/api/runs/" .. id .. "/verify" } do
      assert.are.equal(200, (get(p)), p)
    end
    assert.are.equal(before, tree_digest())
    local copy = dir .. "/tampered"
    assert.are.equal(0, rb.run({ "report", id, "--state", state }).code)
    local p = assert(proc.spawn { argv = { "cp", "-a", state, copy } })
    p:communicate {}
    local jpath = copy .. "/runs/" .. id .. "/journal.jsonl"
    local text = rb.read(jpath)
    rb.write(jpath, (text:gsub('"runbook":"rep"', '"runbook":"rop"', 1)), 384)
    local t = serve.handler(runsource.open(copy))
    local v = json.decode(select(3, t { method = "GET", path = "/api/runs/" .. id .. "/verify", query = {}, headers = {}, cookies = {} }))
    assert.is_false(v.ok)
    assert.are.equal(1, v.bad_seq)
    local _, _, html = t { method = "GET", path = "/runs/" .. id .. "/verify", query = {}, headers = {}, cookies = {} }
    assert.is_truthy(html:find('data-ok="false">audit FAILED at seq ' .. v.bad_seq .. ": ", 1, true))
  end)
end)

describe("runbook._engine.runsource", function()
  it("keeps at most CACHED runs' events, and reads an evicted run again", function()
    local keep = runsource.CACHED
    runsource.CACHED = 0
    local src = runsource.open(state)
    local n = #src:events(id)
    assert.is_nil(next(src.cache), "nothing kept")
    assert.are.equal(n, #src:events(id))
    runsource.CACHED = keep
    assert.are.equal(n, #src:events(id))
    assert.is_not_nil(src.cache[id])
  end)
end)

describe("runbook._httpd", function()
  local httpd = require "runbook._httpd"

  it("parses listen addresses and tells loopback from the rest", function()
    assert.are.same({ host = "127.0.0.1", port = 8080, family = "ipv4", loopback = true }, httpd.parse_address("127.0.0.1:8080"))
    assert.are.same({ host = "127.9.0.1", port = 0, family = "ipv4", loopback = true }, httpd.parse_address("127.9.0.1:0"))
    assert.are.same({ host = "::1", port = 80, family = "ipv6", loopback = true }, httpd.parse_address("[::1]:80"))
    assert.is_false(httpd.parse_address("0.0.0.0:1").loopback)
    assert.is_false(httpd.parse_address("[::]:1").loopback)
    assert.is_false(httpd.parse_address("192.168.1.2:1").loopback)
    assert.is_true(httpd.parse_address("[::ffff:127.0.0.1]:1").loopback)
    assert.are.same({ nil, "'127.0.0.1' has no port (ADDRESS:PORT, such as 127.0.0.1:8080)" }, { httpd.parse_address("127.0.0.1") })
    assert.are.same({ nil, "'example.com' is not a numeric IPv4 or IPv6 address" }, { httpd.parse_address("example.com:80") })
    assert.are.same({ nil, "'127.0.0.1:99999': the port must be a number from 0 to 65535" }, { httpd.parse_address("127.0.0.1:99999") })
  end)

  it("answers a real client from this thread, with the handler's status, headers and body", function()
    local seen
    local srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = function(req)
      seen = req
      return 201, { ["X-Test"] = "yes", ["Content-Type"] = "text/plain" }, "hello\0binary"
    end })
    assert.matches("^runbook.httpd.Server %(port %d+%)$", tostring(srv))
    local out = dir .. "/curl.out"
    local c = assert(proc.spawn { argv = { "curl", "-s", "-i", "-o", out, "-H", "X-Mixed-Case: v",
      "-b", "token=c1", string.format("http://127.0.0.1:%d/p/a%%20th?x=1&y=two", srv:port()) }, stdout = "null", stderr = "null" })
    local deadline = os.time() + 30
    while c:wait(0) == nil and os.time() < deadline do srv:run(0.1) end
    assert.are.equal(0, (c:wait(5)))
    local resp = rb.read(out)
    assert.matches("^HTTP/1.1 201", resp)
    assert.is_truthy(resp:find("X-Test: yes\r\n", 1, true))
    assert.is_truthy(resp:find("\r\n\r\nhello\0binary$"))
    assert.are.equal("GET", seen.method)
    assert.are.equal("/p/a th", seen.path)
    assert.are.same({ x = "1", y = "two" }, seen.query)
    assert.are.equal("v", seen.headers["x-mixed-case"])
    assert.are.same({ token = "c1" }, seen.cookies)
    assert.are.equal("127.0.0.1", seen.remote)
    srv:close()
    srv:close()
    assert.has_error(function() srv:port() end, "attempt to use a closed HTTP server")
    assert.are.equal("runbook.httpd.Server (closed)", tostring(srv))
  end)

  it("answers 500 when the handler raises or returns something else, and says why it cannot listen", function()
    local calls = 0
    local srv = assert(httpd.listen { host = "127.0.0.1", port = 0, handler = function()
      calls = calls + 1
      if calls == 1 then error("boom") end
      return 200, { ["Bad\r\nHeader"] = "x" }, "x"
    end })
    local out = dir .. "/curl2.out"
    local c = assert(proc.spawn { argv = { "curl", "-s", "-o", out, "-o", out, "-w", "%{http_code} ",
      string.format("http://127.0.0.1:%d/", srv:port()), string.format("http://127.0.0.1:%d/", srv:port()) }, stdout = "pipe", stderr = "null" })
    local deadline = os.time() + 30
    while c:wait(0) == nil and os.time() < deadline do srv:run(0.1) end
    local r = c:communicate {}
    assert.are.equal("500 500 ", r.stdout)
    local busy, err = httpd.listen { host = "127.0.0.1", port = srv:port(), handler = function() end }
    assert.is_nil(busy)
    assert.are.equal(string.format("cannot listen on 127.0.0.1:%d: Address already in use", srv:port()), err.message)
    srv:close()
  end)
end)

describe("a step that needs two approvers", function()
  it("shows as waiting, with who approved so far, until the second person confirms", function()
    local d = rb.tmpdir("approve")
    local st = d .. "/state"
    rb.write(d .. "/two.lua", 'runbook "two" {}\nmanual "gate" { title = "Sign off", instructions = "two people", approvers = 2 }\n')
    assert.are.equal(3, rb.exec("two.lua", { cwd = d, state = st, yes = true }).code)
    local run = fs.listdir(st .. "/runs")[1]
    local c = rb.run({ "confirm", run, "gate", "--state", st, "--note", "first" }, { env = { RUNBOOK_ACTOR = "ana" } })
    assert.are.equal(0, c.code, c.stderr)
    local h = serve.handler(runsource.open(st))
    local function get(p) return select(3, h { method = "GET", path = p, query = {}, headers = {}, cookies = {} }) end
    assert.is_truthy(get("/waiting"):find('<p class="approvals">1 of 2 approvals so far, by ana: the next must be someone else</p>', 1, true))
    assert.is_truthy(get("/runs/" .. run):find('data-step="gate" data-status="waiting (1 of 2 approvals)"', 1, true))
    local c2 = rb.run({ "confirm", run, "gate", "--state", st, "--note", "second" }, { env = { RUNBOOK_ACTOR = "bo" } })
    assert.are.equal(0, c2.code, c2.stderr)
    assert.is_truthy(get("/runs/" .. run):find('data-step="gate" data-status="confirmed"', 1, true))
    assert.is_truthy(get("/waiting"):find('<p id="none">No run is waiting for a person.</p>', 1, true))
    rb.rmtree(d)
  end)
end)
