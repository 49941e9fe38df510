-- Runs every "-- example: NAME" block of the everyday modules' API docs,
-- so the docs cannot drift from the code. Examples assert their own
-- results; they get REDIS_URL (a real server) and TMP (a scratch folder).
local redisserver = require "redisserver"
local rbtest = require "rbtest"

local DOCS = { "redis", "sh", "wait", "template", "dns" }

local function examples(path)
  local text = assert(rbtest.read(path), "cannot read " .. path)
  local out = {}
  for body in text:gmatch("```lua\n(.-)```") do
    local name = body:match("^%-%- example: ([%w_%-]+)\n")
    if name then out[#out + 1] = { name = name, code = body } end
  end
  return out
end

describe("API doc examples", function()
  local srv, tmp

  setup(function()
    srv = redisserver.start()
    tmp = rbtest.tmpdir("docs")
  end)
  teardown(function()
    if srv then srv:stop() end
    if tmp then rbtest.rmtree(tmp) end
  end)

  for _, doc in ipairs(DOCS) do
    local path = rbtest.source_dir .. "/docs/api/" .. doc .. ".md"
    local list = examples(path)

    it(doc .. ".md has examples", function()
      assert.is_true(#list >= 1)
    end)

    for _, ex in ipairs(list) do
      it(doc .. ".md: " .. ex.name, function()
        local env = setmetatable({ REDIS_URL = srv.url, TMP = tmp }, { __index = _G })
        local fn = assert(load(ex.code, "=docs/api/" .. doc .. ".md:" .. ex.name, "t", env))
        fn()
      end)
    end
  end
end)
