-- Runs every "-- example: NAME" block of docs/api/http.md and
-- docs/api/s3.md, so the docs cannot drift from the code. Examples assert
-- their own results; they get BASE, CA and TOKEN (the HTTPS test server),
-- S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY (moto with signature
-- checking) and TMP (a scratch folder).
local httpserver = require "httpserver"
local s3server = require "s3server"
local rbtest = require "rbtest"

local DOCS = { "http", "s3" }

local function examples(path)
  local text = assert(rbtest.read(path), "cannot read " .. path)
  local out = {}
  for body in text:gmatch("```lua\n(.-)```") do
    local name = body:match("^%-%- example: ([%w_%-]+)\n")
    if name then out[#out + 1] = { name = name, code = body } end
  end
  return out
end

describe("http and s3 doc examples", function()
  local srv, s3srv, tmp

  setup(function()
    srv = httpserver.start { token = "docs-admin-token" }
    s3srv = s3server.start()
    tmp = rbtest.tmpdir("docs-http")
  end)
  teardown(function()
    if srv then srv:stop() end
    if s3srv then s3srv:stop() end
    if tmp then rbtest.rmtree(tmp) end
  end)

  for _, doc in ipairs(DOCS) do
    local path = rbtest.source_dir .. "/docs/api/" .. doc .. ".md"
    local list = examples(path)

    it(doc .. ".md has examples", function()
      assert.is_true(#list >= 3)
    end)

    for _, ex in ipairs(list) do
      it(doc .. ".md: " .. ex.name, function()
        local env = setmetatable({ BASE = srv.base, CA = srv.ca_file, TOKEN = "docs-admin-token",
          S3_ENDPOINT = s3srv.endpoint, S3_ACCESS_KEY = s3srv.access_key, S3_SECRET_KEY = s3srv.secret_key,
          TMP = tmp }, { __index = _G })
        local fn = assert(load(ex.code, "=docs/api/" .. doc .. ".md:" .. ex.name, "t", env))
        fn()
      end)
    end
  end
end)
