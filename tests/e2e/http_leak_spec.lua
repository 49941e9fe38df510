-- A real run of `runbook exec` whose steps send a secret through HTTP
-- headers, a query, a body and a JSON body, run an http.check table and
-- write to object storage: the secret's raw, base64, hex and URL-encoded
-- forms appear nowhere in the console output or the journal, and a dry run
-- sends no write.
local rbtest = require "rbtest"
local httpserver = require "httpserver"
local s3server = require "s3server"
local crypto = require "runbook._crypto"
local url_lib = require "runbook.http.url"

local SECRET = "e2e-leak-secret-Zq81xv"

local RUNBOOK = [[
local http = require "runbook.http"
local s3 = require "runbook.s3"

runbook "http-leak" {
  params = {
    base = {}, ca = {}, s3_endpoint = {}, s3_key = {}, hitkey = { default = "none" },
    token = { secret = true, env = "E2E_TOKEN" },
    s3_secret = { secret = true, env = "E2E_S3_SECRET" },
  },
}

step "send" {
  run = function(ctx)
    local p = ctx.params
    local res = http.post(p.base .. "/echo", { ca_file = p.ca, query = { token = p.token, key = p.hitkey },
      headers = { Authorization = "Bearer " .. p.token, ["X-Token"] = p.token }, body = p.token })
    if not res.dry_run then assert(res.json.body == p.token:reveal(), "the body went out revealed") end
    http.put(p.base .. "/echo", { ca_file = p.ca, json = { password = p.token } })
    http.check({
      { name = "admin with token", url = p.base .. "/admin", headers = { Authorization = "Bearer " .. p.token }, status = 401 },
      { name = "health", url = p.base .. "/health", json = { status = "healthy" } },
    }, { ca_file = p.ca })
  end,
}

step "store" {
  run = function(ctx)
    local p = ctx.params
    local store <close> = s3.connect { endpoint = p.s3_endpoint, access_key = p.s3_key, secret_key = p.s3_secret }
    store:ensure_bucket("leak-check")
    local w <close> = store:writer { bucket = "leak-check", key = "dump", part_size = 1024 }
    for i = 1, 5 do w:write(string.rep("d", 700)) end
    local info = w:finish()
    return { size = info.size, sha256 = info.sha256 }
  end,
}
]]

describe("e2e: secrets through runbook.http and runbook.s3", function()
  local srv, s3srv, dir

  setup(function()
    srv = httpserver.start { token = SECRET }
    s3srv = s3server.start()
    dir = rbtest.tmpdir("e2e-http")
    rbtest.write(dir .. "/leak.lua", RUNBOOK)
  end)
  teardown(function()
    if srv then srv:stop() end
    if s3srv then s3srv:stop() end
    if dir then rbtest.rmtree(dir) end
  end)

  -- each run gets its own state folder, so rbtest.journal finds that run
  local function exec(state, extra)
    local args = { "exec", dir .. "/leak.lua", "--state", dir .. "/" .. state, "--new",
      "--param", "base=" .. srv.base, "--param", "ca=" .. srv.ca_file,
      "--param", "s3_endpoint=" .. s3srv.endpoint, "--param", "s3_key=" .. s3srv.access_key }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return rbtest.run(args, { cwd = dir, env = { E2E_TOKEN = SECRET, E2E_S3_SECRET = s3srv.secret_key }, timeout = 120 })
  end

  local function assert_no_leak(text, what)
    for _, secret in ipairs { SECRET, s3srv.secret_key } do
      for _, form in ipairs { secret, crypto.base64_encode(secret), crypto.hex_encode(secret), url_lib.encode(secret) } do
        assert.is_nil(text:find(form, 1, true), what .. " holds a form of a secret: " .. form:sub(1, 4) .. "...")
      end
    end
  end

  it("sends the secret where asked and writes it nowhere", function()
    -- the check's first row fails on purpose (the token is right, so /admin answers 200)
    local r = exec("state-send")
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.truthy((r.stdout .. r.stderr):find("admin with token", 1, true))
    assert_no_leak(r.stdout .. r.stderr, "the console")
    local events, path = rbtest.journal(dir .. "/state-send")
    assert_no_leak(rbtest.read(path), "the journal")
    local kinds = {}
    for _, ev in ipairs(events) do
      if ev.type == "action" then kinds[#kinds + 1] = ev.kind .. ":" .. (ev.method or ev.verb or "") end
    end
    assert.are.same({ "http:POST", "http:PUT", "http-check:" }, kinds)
    local check
    for _, ev in ipairs(events) do if ev.kind == "http-check" then check = ev end end
    assert.are.equal(1, check.failed)
    assert.are.equal(200, check.rows[1].status)
    for _, ev in ipairs(events) do
      if ev.kind == "http" then assert.are.equal(srv.base .. "/echo" .. (ev.method == "POST" and "?key=none&token=[REDACTED]" or ""), ev.url) end
    end
  end)

  it("stores a backup stream and records its size and sha256", function()
    local r = exec("state-store", { "--only", "store" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert_no_leak(r.stdout .. r.stderr, "the console")
    local events, path = rbtest.journal(dir .. "/state-store")
    assert_no_leak(rbtest.read(path), "the journal")
    local put
    for _, ev in ipairs(events) do if ev.type == "action" and ev.verb == "put" then put = ev end end
    assert.are.equal(3500, put.size)
    assert.are.equal(crypto.sha256(string.rep("d", 3500)), put.sha256)
    assert.are.equal(4, put.parts)
  end)

  it("sends no write in a dry run", function()
    local r = exec("state-dry", { "--dry-run", "--only", "send", "--output", "json", "--param", "hitkey=e2e-dry" })
    -- the checklist's reads run in a dry run too, and its first row fails as designed
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.truthy(r.stdout:find('"code":"check-failed"', 1, true))
    assert_no_leak(r.stdout .. r.stderr, "the console")
    local json = require "runbook._json"
    local dry = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev and ev.type == "action" and ev.kind == "http" then dry[#dry + 1] = ev end
    end
    assert.are.equal(2, #dry)
    assert.are.equal("would POST " .. srv.base .. "/echo?key=e2e-dry&token=[REDACTED]", dry[1].summary)
    for _, ev in ipairs(dry) do
      assert.is_true(ev.dry_run)
      assert.is_nil(ev.status)
    end
    -- the server never saw the POST
    local hits = require("runbook.http").get(srv:url("/hits"), { ca_file = srv.ca_file, query = { of = "e2e-dry" } }).json.hits
    assert.are.equal(0, hits)
  end)
end)
