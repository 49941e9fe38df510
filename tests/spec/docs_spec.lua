-- The examples in docs/ are tested, so the docs cannot drift from the code.
-- Every ```lua block is compiled; a block that declares steps is loaded as
-- a runbook (declarations checked, no step runs); any other block that
-- checks itself with assert( is run. A block opening with "-- example: NAME"
-- needs servers: a module's own doc spec (docs_everyday_spec.lua, ...) runs
-- it with them, and here it is only compiled.
local fs = require "runbook._fs"
local loader = require "runbook._engine.loader"
local rb = require "rbtest"

local function markdown_files(dir, out)
  for _, name in ipairs(fs.listdir(dir) or {}) do
    local path = dir .. "/" .. name
    local st = fs.stat(path)
    if st.type == "directory" then
      markdown_files(path, out)
    elseif name:match("%.md$") then
      out[#out + 1] = path
    end
  end
  return out
end

local function blocks(text)
  local out, line_no, inside, buf, start = {}, 0, false, nil, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    line_no = line_no + 1
    if not inside and line:match("^```lua%s*$") then
      inside, buf, start = true, {}, line_no + 1
    elseif inside and line:match("^```%s*$") then
      inside = false
      out[#out + 1] = { code = table.concat(buf, "\n"), line = start }
    elseif inside then
      buf[#buf + 1] = line
    end
  end
  return out
end

local root = (os.getenv("RUNBOOK_SOURCE_DIR") or fs.cwd()) .. "/docs"
local files = markdown_files(root, {})
table.sort(files)

describe("docs examples", function()
  local tmp
  setup(function() tmp = rb.tmpdir("docs") end)
  teardown(function() rb.rmtree(tmp) end)

  it("exist", function() assert.truthy(#files >= 3) end)

  for _, path in ipairs(files) do
    local text = rb.read(path)
    for _, b in ipairs(blocks(text)) do
      local where = path:sub(#root + 2) .. ":" .. b.line
      it(where, function()
        local chunk, err = load(b.code, "@" .. where, "t")
        assert(chunk, err)
        if b.code:match('\nstep%s*"') or b.code:match('^step%s*"') or b.code:match('\nmanual%s*"') or b.code:match('\nparallel%s*"') then
          local file = tmp .. "/" .. where:gsub("[/:]", "_") .. ".lua"
          rb.write(file, b.code)
          local book = loader.load(file)
          assert.truthy(#book.steps > 0)
        elseif b.code:match("assert%(") and not b.code:match("^%-%- example: ") then
          chunk()
        end
      end)
    end
  end
end)
