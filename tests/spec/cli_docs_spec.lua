-- The command table in runbook._engine.cli is the one source of --help,
-- the man pages, docs/cli.md's reference and the exit codes: the committed
-- docs must match it, and every exit-code table or "exit N" in the docs
-- must agree with the code's one table.
local rb = require "rbtest"
local fs = require "runbook._fs"
local cli = require "runbook._engine.cli"
local clidoc = require "runbook._engine.clidoc"
local engine = require "runbook._engine.engine"

local function read(rel) return assert(rb.read(rb.source_dir .. "/" .. rel), rel) end

local function doc_files()
  local files = { "docs/cli.md" }
  for _, f in ipairs(fs.listdir(rb.source_dir .. "/docs") or {}) do
    if f:match("^guide.*%.md$") then files[#files + 1] = "docs/" .. f end
  end
  for _, f in ipairs(fs.listdir(rb.source_dir .. "/docs/api") or {}) do
    if f:match("%.md$") then files[#files + 1] = "docs/api/" .. f end
  end
  return files
end

local CODES = {}
for _, e in ipairs(cli.EXIT_CODES) do CODES[e.code] = e end

describe("docs/cli.md", function()
  it("has the reference generated from the command table (ninja -C BUILD cli-docs updates it)", function()
    local text = read("docs/cli.md")
    local spliced = clidoc.splice(text)
    assert.is_not_nil(spliced, "docs/cli.md has lost its reference markers")
    assert.are.equal(spliced, text, "docs/cli.md is stale: run `ninja -C build cli-docs` (runbook __doc docs/cli.md)")
  end)

  it("lists every option's environment variable and every other variable", function()
    local text = read("docs/cli.md")
    for _, c in ipairs(cli.COMMANDS) do
      for _, o in ipairs(c.options) do
        if o.env then assert.truthy(text:find("`" .. o.env .. "`", 1, true), o.env) end
      end
    end
    for _, e in ipairs(cli.ENVIRONMENT) do assert.truthy(text:find("`" .. e[1] .. "`", 1, true), e[1]) end
  end)
end)

describe("exit codes", function()
  it("are one table, which the engine uses", function()
    assert.are.equal(cli.EXIT, engine.EXIT)
    assert.are.same({ ok = 0, failed = 1, usage = 2, waiting = 3, locked = 4, interrupted = 130 }, cli.EXIT)
  end)

  it("are the same in every exit-code table of the docs", function()
    local want = clidoc.exit_table()
    local seen = 0
    for _, file in ipairs(doc_files()) do
      local text = read(file)
      for tbl in (text .. "\n\n"):gmatch("\n(| code | meaning |\n.-)\n\n") do
        seen = seen + 1
        assert.are.equal(want, tbl, file .. ": the exit-code table differs from cli.lua's EXIT_CODES")
      end
    end
    assert.is_true(seen >= 1, "no exit-code table found in the docs")
  end)

  it("named in the docs' prose are codes the tool has, and a configuration error is 2", function()
    for _, file in ipairs(doc_files()) do
      local text = read(file):gsub("```.-```", "")
      for para in (text .. "\n\n"):gmatch("(.-)\n%s*\n") do
        local flat = para:gsub("%s+", " ")
        -- "exit 3", "exits 130", "exit code 1", "(exit 2)"
        for code in flat:gmatch("[Ee]xits? c?o?d?e? ?(%d+)") do
          assert.is_not_nil(CODES[tonumber(code)], file .. ": exit " .. code .. " is not an exit code: " .. flat)
        end
        if flat:lower():find("config") then
          for code in flat:gmatch("[Ee]xits? c?o?d?e? ?(%d+)") do
            assert.are.equal("2", code, file .. ": a configuration error exits 2: " .. flat)
          end
        end
      end
    end
  end)
end)

describe("--help", function()
  it("names each option's value and shows one example, for every command", function()
    for _, c in ipairs(cli.COMMANDS) do
      if not c.hidden then
        local h = clidoc.help(c)
        assert.truthy(h:find("Usage: " .. c.usage, 1, true), c.name)
        for _, o in ipairs(c.options) do
          local label = o[1] .. (o.arg and (" " .. o.arg) or "")
          assert.truthy(h:find("\n  " .. label .. " ", 1, true) or h:find("\n  " .. label .. "\n", 1, true), c.name .. " " .. label)
        end
        assert.are.equal(1, #c.examples, c.name)
        assert.truthy(h:find("Example:\n  " .. c.examples[1][1], 1, true), c.name)
      end
    end
    assert.truthy(clidoc.help(cli.BY_NAME.exec):find("  --from STEP ", 1, true))
    assert.truthy(clidoc.help(cli.BY_NAME.exec):find("  --output FORMAT ", 1, true))
  end)

  it("has an exit-code footer only where it applies", function()
    assert.truthy(clidoc.help(cli.BY_NAME.exec):find("\nExit codes:\n  0    finished\n  1    a step failed\n", 1, true))
    assert.truthy(clidoc.help(cli.BY_NAME.audit):find("\n  1    damage found (the first bad seq is named)\n", 1, true))
    for _, name in ipairs { "version", "completion", "status", "runs", "doc", "plan", "log" } do
      assert.falsy(clidoc.help(cli.BY_NAME[name]):find("Exit codes", 1, true), name)
    end
    assert.truthy(clidoc.main_help():find("\nExit codes:\n  0    finished\n", 1, true))
  end)
end)

describe("man pages", function()
  it("render every command's options, environment, example and exit codes", function()
    local page = clidoc.man(cli.BY_NAME.exec, "9.9")
    assert.truthy(page:find('.TH "RUNBOOK-EXEC" "1" "" "runbook 9.9"', 1, true))
    assert.truthy(page:find("\n.SH NAME\nrunbook\\-exec \\- run a runbook", 1, true))
    assert.truthy(page:find("\\fB\\-\\-from\\fR \\fISTEP\\fR", 1, true))
    assert.truthy(page:find("\n.B RUNBOOK_FROM\n", 1, true))
    assert.truthy(page:find("runbook exec deploy.lua \\-\\-param namespace=prod", 1, true))
    assert.truthy(page:find("\n.SH EXIT STATUS\n.TP\n.B 0\n", 1, true))
    local main = clidoc.man(nil, "9.9")
    for _, c in ipairs(cli.COMMANDS) do
      if not c.hidden then assert.truthy(main:find("\\fBrunbook\\-" .. c.name:gsub("%-", "\\-") .. "\\fR(1)", 1, true), c.name) end
    end
    for _, e in ipairs(clidoc.environment()) do
      assert.truthy(main:find("\n.B " .. e[1]:gsub("%-", "\\-") .. "\n", 1, true), e[1])
    end
    -- no line starts with a control character by accident
    for line in (main .. clidoc.man(cli.BY_NAME.test, "9.9")):gmatch("[^\n]+") do
      if line:match("^[.']") then assert.truthy(line:match("^%.[A-Za-z][A-Za-z]?") or line:match("^%.%a"), line) end
    end
  end)
end)
