-- The leak test: a secret goes through sh (argv, env, stdin, stdout and
-- stderr), template (strings and files), redis (a password in a secret
-- URL, values) and http (an Authorization header, a custom header, a query
-- parameter, a raw body, a JSON body field, and the messages of failed
-- expectations whose response echoes it), in a real run of the binary
-- against real local servers (Redis, and the HTTPS test server of
-- tests/harness/httpserver, whose /echo answers what it received and whose
-- /admin takes the secret as its bearer token). Then the console (plain and
-- --output json), the journal and the run log are searched for its raw,
-- base64 and hex forms.
local crypto = require "runbook._crypto"
local fs = require "runbook._fs"
local json = require "runbook._json"
local httpserver = require "httpserver"
local redisserver = require "redisserver"
local rbtest = require "rbtest"

local BOOK = [==[
local sh = require "runbook.sh"
local template = require "runbook.template"
local secret = require "runbook.secret"
local redis = require "runbook.redis"
local http = require "runbook.http"
local json = require "runbook.json"

runbook "leak" {
  params = {
    token = { secret = true, env = "LEAK_TOKEN" },
    port = { type = "integer" },
    dir = {},
    base = {},
    ca = {},
  },
}

step "commands" {
  title = "a secret through argv, env, stdin and output",
  run = function(ctx)
    local s = ctx.params.token
    sh.run({ "sh", "-c", 'echo "argv:$1"; echo "env:$LEAK_ENV"; echo "stdin:$(cat)"; echo "err:$1" >&2', "sh", s },
      { env = { LEAK_ENV = s }, stdin = s })
    sh.run({ "sh", "-c", 'printf %s "$1" | base64; printf %s "$1" | od -An -tx1 | tr -d " \\n"; echo;'
      .. ' printf %s "$1" | od -An -tx1 | tr -d " \\n" | tr a-f A-F; echo', "sh", s })
    local ok, err = pcall(sh.run, { "sh", "-c", 'echo "denied for $1" >&2; exit 4', "sh", s })
    ctx:log("caught: " .. tostring(err))
    local ok2, terr = pcall(sh.run, { "sh", "-c", 'trap "" TERM; echo "slow $1"; sleep 5', "sh", s }, { timeout = 0.2, grace = 0.2 })
    ctx:log("caught: " .. tostring(terr))
    local v = sh.output({ "printf", "%s", s }, { secret_output = true })
    ctx:log("output is a secret: " .. tostring(secret.is(v)) .. " " .. tostring(v))
  end,
}

step "templates" {
  title = "a secret through a template",
  run = function(ctx)
    local s = ctx.params.token
    local rendered = template.render("password: ${PW}\nurl: postgres://app:${PW}@db/app\n", { PW = s })
    ctx:log("rendered: " .. tostring(rendered))
    ctx:log("revealed on purpose: " .. rendered:reveal())
    sh.run({ "cat" }, { stdin = rendered })
    local path = ctx.params.dir .. "/secret.yaml"
    local f = assert(io.open(path, "w"))
    f:write("kind: Secret\nstringData:\n  TOKEN: ${TOKEN}\n")
    f:close()
    local fromfile = template.file(path, { TOKEN = s })
    sh.run({ "cat" }, { stdin = fromfile })
    local ok, err = pcall(template.render, "${PW} and ${MISSING}", { PW = s })
    ctx:log("caught: " .. tostring(err))
  end,
}

step "redis" {
  title = "a secret as a Redis password and value",
  run = function(ctx)
    local s = ctx.params.token
    local url = secret.wrap("redis://:") .. s .. ("@127.0.0.1:" .. ctx.params.port)
    local conn = redis.connect(url)
    conn:call("SET", "leak", s)
    ctx:log("read back: " .. conn:call("GET", "leak"))
    conn:close()
    local bad = secret.wrap("redis://:") .. s .. ("x@127.0.0.1:" .. ctx.params.port)
    local ok, err = pcall(redis.connect, bad)
    ctx:log("caught: " .. tostring(err))
  end,
}

step "http" {
  title = "a secret through HTTP headers, a query and bodies",
  run = function(ctx)
    local s, p = ctx.params.token, ctx.params
    local raw = s:reveal()
    -- /echo answers what it received: the step compares and logs only booleans
    local res = http.post(p.base .. "/echo", { ca_file = p.ca, query = { token = s },
      headers = { Authorization = "Bearer " .. s, ["X-Leak-Token"] = s }, body = s })
    local seen = res.json
    ctx:log(string.format("echo received: authorization %s, header %s, query %s, body %s",
      tostring(seen.headers.authorization == "Bearer " .. raw), tostring(seen.headers["x-leak-token"] == raw),
      tostring(seen.query == "token=" .. raw), tostring(seen.body == raw)))
    local put = http.put(p.base .. "/echo", { ca_file = p.ca, json = { password = s, user = "app" } })
    ctx:log("echo received the JSON field: " .. tostring(json.decode(put.json.body).password == raw))
    -- the server's bearer token is the secret: 200 only if it arrived intact
    local admin = http.get(p.base .. "/admin", { ca_file = p.ca, headers = { Authorization = "Bearer " .. s } })
    ctx:log("admin answered " .. admin.status)
    ctx:log("response bodies: " .. res.body .. " " .. put.body)
    -- failed expectations name what came back, and it echoes the secret
    local ok, err = pcall(http.expect, { method = "POST", url = p.base .. "/echo", ca_file = p.ca, body = s },
      { json = { body = "something else" } })
    ctx:log("caught: " .. tostring(err))
    ok, err = pcall(http.post, p.base .. "/echo", { ca_file = p.ca, query = { token = s }, body = s, status = 201 })
    ctx:log("caught: " .. tostring(err))
  end,
}

step "fails" {
  title = "a failing command whose stderr carries the secret",
  run = function(ctx)
    sh.run({ "sh", "-c", 'echo "fatal: bad token $1" >&2; exit 3', "sh", ctx.params.token })
  end,
}

-- never reached in a whole run ("fails" stops it); run alone with --only
step "http-fails" {
  title = "a step that fails on a response echoing the secret",
  run = function(ctx)
    local p = ctx.params
    -- the error carries the whole response, and the server echoed the secret four times
    http.put(p.base .. "/echo", { ca_file = p.ca, query = { token = p.token },
      headers = { Authorization = "Bearer " .. p.token, ["X-Leak-Token"] = p.token },
      json = { password = p.token }, status = 204 })
  end,
}
]==]

local function forms(s)
  local b64 = crypto.base64_encode(s)
  local url = crypto.base64_encode(s, true)
  return {
    raw = s,
    base64 = b64,
    base64_nopad = (b64:gsub("=+$", "")),
    base64url = (url:gsub("=+$", "")),
    hex = crypto.hex_encode(s),
    HEX = crypto.hex_encode(s):upper(),
  }
end

local function run_files(state)
  local out = {}
  for _, run in ipairs(fs.listdir(state .. "/runs") or {}) do
    for _, name in ipairs { "journal.jsonl", "log" } do
      local path = state .. "/runs/" .. run .. "/" .. name
      local text = rbtest.read(path)
      if text then out[#out + 1] = { path = path, text = text } end
    end
  end
  return out
end

describe("secrets never leak", function()
  local srv, web, dir, token

  setup(function()
    token = "Lk-" .. crypto.random_hex(12)
    srv = redisserver.start { password = token }
    web = httpserver.start { token = token }
    dir = rbtest.tmpdir("leak")
    rbtest.write(dir .. "/leak.lua", BOOK)
  end)
  teardown(function()
    if srv then srv:stop() end
    if web then web:stop() end
    if dir then rbtest.rmtree(dir) end
  end)

  local function exec(extra, state)
    local args = { "exec", dir .. "/leak.lua", "--state", dir .. "/" .. (state or "state"), "--new",
      "--param", "port=" .. srv.port, "--param", "dir=" .. dir,
      "--param", "base=" .. web.base, "--param", "ca=" .. web.ca_file }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return rbtest.run(args, { env = { LEAK_TOKEN = token, RUNBOOK_VERBOSE = "1" }, timeout = 60 })
  end

  local function assert_clean(where, text)
    for name, form in pairs(forms(token)) do
      assert.is_nil(text:find(form, 1, true), string.format("%s holds the secret's %s form (%s)", where, name, form))
    end
  end

  it("from sh, template, redis and http, on the console, in the journal and the run log", function()
    local r = exec()
    assert.are.equal(1, r.code, r.stderr) -- the last step fails on purpose
    local console = r.stdout .. r.stderr
    assert_clean("the console", console)
    -- the secret did pass through: every place shows the redaction
    for _, want in ipairs {
      "sh: argv:[REDACTED]", "sh: env:[REDACTED]", "sh: stdin:[REDACTED]", "sh (stderr): err:[REDACTED]",
      "caught: command exited with code 4: sh -c 'echo \"denied for $1\" >&2; exit 4' sh [REDACTED]",
      "stderr: denied for [REDACTED]",
      "caught: command timed out after 0.2 s: sh -c 'trap \"\" TERM; echo \"slow $1\"; sleep 5' sh [REDACTED]",
      "output is a secret: true [REDACTED]",
      "rendered: [REDACTED]", "revealed on purpose: password: [REDACTED]",
      "cat: password: [REDACTED]", "cat: url: postgres://app:[REDACTED]@db/app", "cat:   TOKEN: [REDACTED]",
      "caught: template line 1: variable MISSING is not set and has no default",
      "read back: [REDACTED]",
      "caught: redis 127.0.0.1:" .. srv.port .. ": authentication failed: WRONGPASS",
      -- the server got the secret intact everywhere it was sent
      "action http: POST " .. web.base .. "/echo?token=[REDACTED] -> 200",
      "echo received: authorization true, header true, query true, body true",
      "echo received the JSON field: true",
      "admin answered 200",
      'response bodies: {"method": "POST", "path": "/echo", "query": "token=[REDACTED]", ',
      '"authorization": "[REDACTED]"', '"x-leak-token": "[REDACTED]"', '"body": "[REDACTED]"',
      '"body": "{\\"password\\":\\"[REDACTED]\\",\\"user\\":\\"app\\"}"',
      'caught: POST ' .. web.base .. '/echo: expected json.body = "something else", got "[REDACTED]"',
      "caught: POST " .. web.base .. '/echo?token=[REDACTED]: expected status 201, got 200: "{\\"method\\": \\"POST\\", '
        .. '\\"path\\": \\"/echo\\", \\"query\\": \\"token=[REDACTED]\\", ',
      "FAILED: command exited with code 3: sh -c 'echo \"fatal: bad token $1\" >&2; exit 3' sh [REDACTED]",
    } do
      assert.is_truthy(console:find(want, 1, true), "console lacks: " .. want .. "\n" .. console)
    end
    -- the encoded forms the command printed were caught too
    local b64_lines = 0
    for line in console:gmatch("[^\n]+") do
      if line:match("commands%s+sh: %[REDACTED%]$") then b64_lines = b64_lines + 1 end
    end
    assert.are.equal(3, b64_lines, console)
    assert.are.equal(token, srv:cli("GET", "leak")) -- it really was written

    local files = run_files(dir .. "/state")
    assert.are.equal(2, #files)
    for _, f in ipairs(files) do assert_clean(f.path, f.text) end
    local journal = files[1].path:match("journal") and files[1].text or files[2].text
    assert.is_truthy(journal:find('"kind":"command"', 1, true))
    assert.is_truthy(journal:find('"argv":["sh","-c","echo \\"argv:$1\\"; echo \\"env:$LEAK_ENV\\"; echo \\"stdin:$(cat)\\"; echo \\"err:$1\\" >&2","sh","[REDACTED]"]', 1, true), journal)
    assert.is_truthy(journal:find("fatal: bad token [REDACTED]", 1, true))
    assert.is_truthy(journal:find('"summary":"POST ' .. web.base .. '/echo?token=[REDACTED] -> 200"', 1, true), journal)
    local log = files[1].path:match("journal") and files[2].text or files[1].text
    assert.is_truthy(log:find('caught: POST ' .. web.base .. '/echo: expected json.body = "something else", got "[REDACTED]"', 1, true), log)
  end)

  it("with --output json too", function()
    local r = exec { "--output", "json" }
    assert.are.equal(1, r.code, r.stderr)
    assert_clean("the JSON console", r.stdout .. r.stderr)
    assert.is_truthy(r.stdout:find('"message":"sh: argv:[REDACTED]"', 1, true), r.stdout)
    assert.is_truthy(r.stdout:find('"argv":["sh","-c","echo \\"fatal: bad token $1\\" >&2; exit 3","sh","[REDACTED]"]', 1, true), r.stdout)
    assert.is_truthy(r.stdout:find('"message":"echo received: authorization true, header true, query true, body true"', 1, true), r.stdout)
    assert.is_truthy(r.stdout:find('"url":"' .. web.base .. '/echo?token=[REDACTED]"', 1, true), r.stdout)
    for _, f in ipairs(run_files(dir .. "/state")) do assert_clean(f.path, f.text) end
  end)

  -- what the server saw, as the failed step's error recorded it: the
  -- secret arrived (the redaction stands exactly where it was echoed)
  local function assert_echo_redacted(failed, where)
    assert.is_table(failed, where .. " has no step.failed event")
    assert.are.equal("http", failed.error.kind, where)
    assert.are.equal("status", failed.error.code, where)
    local echoed = json.decode(failed.error.details.response.body)
    assert.are.equal("PUT", echoed.method, where)
    assert.are.equal("token=[REDACTED]", echoed.query, where)
    -- "Bearer " .. secret is a secret of its own, redacted whole
    assert.are.equal("[REDACTED]", echoed.headers.authorization, where)
    assert.are.equal("[REDACTED]", echoed.headers["x-leak-token"], where)
    assert.are.equal('{"password":"[REDACTED]"}', echoed.body, where)
  end

  it("from a step that fails on an http status, in the error, the journal and the run log", function()
    local r = exec({ "--only", "http-fails" }, "state-http")
    assert.are.equal(1, r.code, r.stderr)
    local console = r.stdout .. r.stderr
    assert_clean("the console", console)
    local want = "FAILED: PUT " .. web.base .. '/echo?token=[REDACTED]: expected status 204, got 200: "{\\"method\\": \\"PUT\\", '
      .. '\\"path\\": \\"/echo\\", \\"query\\": \\"token=[REDACTED]\\", '
    assert.is_truthy(console:find(want, 1, true), "console lacks: " .. want .. "\n" .. console)
    local files = run_files(dir .. "/state-http")
    assert.are.equal(2, #files)
    for _, f in ipairs(files) do assert_clean(f.path, f.text) end
    local failed
    for _, ev in ipairs(rbtest.journal(dir .. "/state-http")) do
      if ev.type == "step.failed" then failed = ev end
    end
    assert_echo_redacted(failed, "the journal")

    r = exec({ "--only", "http-fails", "--output", "json" }, "state-http-json")
    assert.are.equal(1, r.code, r.stderr)
    assert_clean("the JSON console", r.stdout .. r.stderr)
    failed = nil
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev and ev.type == "step.failed" then failed = ev end
    end
    assert_echo_redacted(failed, "the JSON console")
    for _, f in ipairs(run_files(dir .. "/state-http-json")) do assert_clean(f.path, f.text) end
  end)
end)
