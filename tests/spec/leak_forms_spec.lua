-- The encoded forms of a secret in a real run of `runbook exec`: a step logs
-- a secret percent-encoded (upper- and lower-case escapes, and "+" for a
-- space), a hex secret in upper case, and a secret holding a quote, a
-- backslash, a space and a non-ASCII character JSON-escaped (by jansson,
-- by Python with \u escapes, and JSON inside JSON); a command gets them as
-- argv and prints them; the last step fails with all of them in its error.
-- Then the console (plain and --output json), the run log and the journal
-- are searched for every form.
local crypto = require "runbook._crypto"
local fs = require "runbook._fs"
local json = require "runbook._json"
local url_lib = require "runbook.http.url"
local rbtest = require "rbtest"

local BOOK = [==[
local sh = require "runbook.sh"
local json = require "runbook.json"
local url = require "runbook.http.url"

runbook "forms" {
  params = {
    token = { secret = true, env = "FORMS_TOKEN" },
    key = { secret = true, env = "FORMS_KEY" },
  },
}

local function forms(ctx)
  local t, k = ctx.params.token:reveal(), ctx.params.key:reveal()
  local upper = url.encode(t)
  local lower = upper:gsub("%%%x%x", string.lower)
  local plus = upper:gsub("%%20", "+")
  local j = json.encode { pw = t }
  return upper, lower, plus, k:upper(), j, json.encode { body = j }
end

step "print" {
  title = "log and print every encoded form",
  run = function(ctx)
    local upper, lower, plus, hex, j, jj = forms(ctx)
    ctx:log("url upper: " .. upper)
    ctx:log("url lower: " .. lower)
    ctx:log("url plus: " .. plus)
    ctx:log("hex upper: " .. hex)
    ctx:log("json: " .. j)
    ctx:log("json twice: " .. jj)
    sh.run({ "printf", "argv: %s|%s|%s|%s\n", upper, lower, plus, hex })
    sh.run({ "python3", "-c", "import json, sys; print('py: ' + json.dumps({'pw': sys.argv[1]}))", ctx.params.token })
  end,
}

step "fails" {
  title = "fail with every encoded form in the error",
  run = function(ctx)
    local upper, lower, plus, hex, j, jj = forms(ctx)
    error(table.concat({ "forms:", upper, lower, plus, hex, j, jj }, " "), 0)
  end,
}
]==]

local function unquote(s) return (s:gsub('^"', ""):gsub('"$', "")) end

-- every form of the two secrets that must not appear, by name
local function forms(token, key)
  local upper = url_lib.encode(token)
  local j = unquote(json.encode(token))
  return {
    ["raw token"] = token,
    ["URL-encoded, upper-case escapes"] = upper,
    ["URL-encoded, lower-case escapes"] = (upper:gsub("%%%x%x", string.lower)),
    ["form-encoded"] = (upper:gsub("%%20", "+")),
    ["JSON-escaped"] = j,
    ["JSON-escaped, \\u escapes"] = (j:gsub("\xc3\xa9", "\\u00e9")),
    ["JSON-escaped twice"] = unquote(json.encode(j)),
    ["raw hex key"] = key,
    ["hex key, upper case"] = key:upper(),
    ["base64 of the token"] = crypto.base64_encode(token),
  }
end

local function run_files(state)
  local out = {}
  for _, run in ipairs(fs.listdir(state .. "/runs") or {}) do
    for _, name in ipairs { "journal.jsonl", "log" } do
      local path = state .. "/runs/" .. run .. "/" .. name
      local text = rbtest.read(path)
      if text then out[name] = text end
    end
  end
  return out
end

describe("encoded forms of a secret never leak", function()
  local dir, token, key, all

  setup(function()
    -- a "+", a "/", a quote, a backslash, a space and an "é": each is
    -- written differently by URL and JSON encoders
    token = "Fm+" .. crypto.random_hex(6) .. '/q"x\\y z\xc3\xa9'
    key = crypto.random_hex(16)
    all = forms(token, key)
    dir = rbtest.tmpdir("leak-forms")
    rbtest.write(dir .. "/forms.lua", BOOK)
  end)
  teardown(function()
    if dir then rbtest.rmtree(dir) end
  end)

  local function exec(state, extra)
    local args = { "exec", dir .. "/forms.lua", "--state", dir .. "/" .. state, "--new" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return rbtest.run(args, { env = { FORMS_TOKEN = token, FORMS_KEY = key }, timeout = 60 })
  end

  -- names every form found in every place, not just the first
  local function assert_clean(places)
    local found = {}
    for _, place in ipairs(places) do
      for name, form in pairs(all) do
        if place[2]:find(form, 1, true) then found[#found + 1] = place[1] .. ": " .. name end
      end
    end
    table.sort(found)
    assert.are.equal("", table.concat(found, "\n"), "forms of the secrets were found")
  end

  local function assert_has(where, text, wants)
    for _, want in ipairs(wants) do
      assert.is_truthy(text:find(want, 1, true), where .. " lacks: " .. want .. "\n" .. text)
    end
  end

  -- each form reached the output, redacted where it stood
  local LOGGED = {
    "url upper: [REDACTED]", "url lower: [REDACTED]", "url plus: [REDACTED]", "hex upper: [REDACTED]",
    'json: {"pw":"[REDACTED]"}', 'json twice: {"body":"{\\"pw\\":\\"[REDACTED]\\"}"}',
    "argv: [REDACTED]|[REDACTED]|[REDACTED]|[REDACTED]", 'py: {"pw": "[REDACTED]"}',
  }
  local FAILED = 'forms: [REDACTED] [REDACTED] [REDACTED] [REDACTED] {"pw":"[REDACTED]"} {"body":"{\\"pw\\":\\"[REDACTED]\\"}"}'

  it("on the console, in the run log and in the journal", function()
    local r = exec("state")
    assert.are.equal(1, r.code, r.stderr) -- the last step fails on purpose
    local console = r.stdout .. r.stderr
    local files = run_files(dir .. "/state")
    assert.is_string(files.log)
    assert.is_string(files["journal.jsonl"])
    assert_clean { { "the console", console }, { "the run log", files.log }, { "the journal", files["journal.jsonl"] } }
    assert_has("the console", console, LOGGED)
    assert_has("the console", console, { FAILED })
    assert_has("the run log", files.log, LOGGED)
    local events = rbtest.journal(dir .. "/state")
    local argv, failed
    for _, ev in ipairs(events) do
      if ev.type == "action" and ev.kind == "command" and ev.argv[1] == "printf" then argv = ev.argv end
      if ev.type == "step.failed" then failed = ev end
    end
    assert.are.same({ "printf", "argv: %s|%s|%s|%s\n", "[REDACTED]", "[REDACTED]", "[REDACTED]", "[REDACTED]" }, argv)
    assert.is_table(failed)
    assert.are.equal(FAILED, failed.error.message)
  end)

  it("with --output json too", function()
    local r = exec("state-json", { "--output", "json" })
    assert.are.equal(1, r.code, r.stderr)
    local files = run_files(dir .. "/state-json")
    assert_clean { { "the JSON console", r.stdout .. r.stderr }, { "the run log", files.log },
      { "the journal", files["journal.jsonl"] } }
    local messages, failed = {}, nil
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev and ev.type == "log" then messages[#messages + 1] = ev.message end
      if ev and ev.type == "step.failed" then failed = ev end
    end
    local text = table.concat(messages, "\n")
    for _, want in ipairs(LOGGED) do
      local found = false
      for _, m in ipairs(messages) do found = found or m:find(want, 1, true) ~= nil end
      assert.is_true(found, "the JSON console lacks: " .. want .. "\n" .. text)
    end
    assert.is_table(failed, r.stdout)
    assert.are.equal(FAILED, failed.error.message)
  end)
end)
