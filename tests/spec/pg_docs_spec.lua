-- The runbook examples of docs/api/pg.md and docs/guide-pg.md, run with
-- the real binary against a real PostgreSQL, so the docs cannot drift
-- from the code. Each block that declares steps runs in a fresh folder
-- with fresh databases and two migration files, twice: the second run
-- (a new run) must also succeed, since every example is idempotent.
local pgserver = require "pgserver"
local rbtest = require "rbtest"

local root = (os.getenv("RUNBOOK_SOURCE_DIR") or require("runbook._fs").cwd()) .. "/docs"

local function blocks(path)
  local out, n, inside, buf, start = {}, 0, false, nil, 0
  for line in ((rbtest.read(path) or "") .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if not inside and line:match("^```lua%s*$") then
      inside, buf, start = true, {}, n + 1
    elseif inside and line:match("^```%s*$") then
      inside = false
      local code = table.concat(buf, "\n")
      if code:match('\nstep%s*"') then out[#out + 1] = { code = code, line = start } end
    elseif inside then
      buf[#buf + 1] = line
    end
  end
  return out
end

local MIGRATIONS = {
  ["20260101000000_create_laws.sql"] = "-- migrate:up\ncreate table laws (id serial primary key, name text not null);\n\n-- migrate:down\ndrop table laws;\n",
  ["20260102000000_add_index.sql"] = "-- migrate:up transaction:false\ncreate index concurrently laws_name_idx on laws (name);\n\n-- migrate:down\ndrop index laws_name_idx;\n",
}

describe("pg docs examples", function()
  local srv, n = nil, 0
  setup(function() srv = pgserver.start() end)
  teardown(function() if srv then srv:stop() end end)

  for _, doc in ipairs { "api/pg.md", "guide-pg.md" } do
    local list = blocks(root .. "/" .. doc)
    it(doc .. " has runnable examples", function() assert.is_true(#list >= 1) end)
    for _, b in ipairs(list) do
      it(doc .. ":" .. b.line, function()
        n = n + 1
        local dir = rbtest.tmpdir("pgdoc")
        finally(function() rbtest.rmtree(dir) end)
        assert(require("runbook._fs").mkdir_p(dir .. "/db/migrations", 448))
        for name, text in pairs(MIGRATIONS) do rbtest.write(dir .. "/db/migrations/" .. name, text) end
        rbtest.write(dir .. "/book.lua", b.code)
        local env = {
          DATABASE_URL = srv:createdb("doc" .. n),
          REPORTS_URL = srv:createdb("doc" .. n .. "_reports"),
          DRILL_URL = srv:createdb("doc" .. n .. "_drill"),
        }
        for round = 1, 2 do
          local r = rbtest.run({ "exec", "book.lua", "--state", "state", "--new" }, { cwd = dir, env = env, timeout = 120 })
          assert.are.equal(0, r.code, string.format("round %d:\n%s%s", round, r.stdout, r.stderr))
          assert.is_nil((r.stdout .. r.stderr):find(pgserver.PASSWORD, 1, true))
        end
      end)
    end
  end
end)
