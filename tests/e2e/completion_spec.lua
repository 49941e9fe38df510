-- The completion scripts, run by the shells themselves: bash sources the
-- script and calls _runbook with COMP_WORDS/COMP_CWORD set; zsh sources
-- its script with compadd/_describe/_files replaced by functions that
-- print what they were given (the completion system needs a terminal).
local rb = require "rbtest"
local proc = require "runbook._proc"

local dir

local BOOK = [[
runbook "comp" {}
step "prepare" { run = function() end }
manual "approve" { instructions = "look" }
step "deploy" { needs = "approve", run = function() end }
]]

local function sh(shell, script)
  local p = assert(proc.spawn { argv = { shell, "-c", script }, cwd = dir, env = { NO_COLOR = "1" }, stdin = "null" })
  local r = p:communicate { timeout = 60 }
  assert.are.equal(0, r.code, r.stderr)
  return r.stdout
end

local function have(cmd)
  local p = assert(proc.spawn { argv = { "sh", "-c", "command -v " .. cmd }, stdin = "null" })
  return p:communicate({ timeout = 10 }).code == 0
end

setup(function()
  dir = rb.tmpdir("comp")
  rb.write(dir .. "/comp.lua", BOOK)
  rb.write(dir .. "/notes.txt", "")
  assert(require("runbook._fs").mkdir_p(dir .. "/sub"))
  rb.write(dir .. "/sub/other.lua", BOOK)
  local r = rb.run({ "exec", "comp.lua" }, { cwd = dir })
  assert.are.equal(3, r.code, r.stderr)
  r = rb.run({ "completion", "bash" }, { cwd = dir })
  rb.write(dir .. "/runbook.bash", r.stdout)
  r = rb.run({ "completion", "zsh" }, { cwd = dir })
  rb.write(dir .. "/runbook.zsh", r.stdout)
end)
teardown(function() rb.rmtree(dir) end)

local function run_id()
  return rb.run({ "__complete", "runs" }, { cwd = dir }).stdout:match("^(%S+)")
end

describe("bash completion", function()
  local function complete(...)
    local words = { rb.bin, ... }
    local quoted = {}
    for i, w in ipairs(words) do quoted[i] = "'" .. w:gsub("'", "'\\''") .. "'" end
    local out = sh("bash", "source ./runbook.bash\nCOMP_WORDS=(" .. table.concat(quoted, " ") .. ")\n" ..
      "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n_runbook\nprintf '%s\\n' \"${COMPREPLY[@]}\" | LC_ALL=C sort")
    local got = {}
    for w in out:gmatch("[^\n]+") do got[#got + 1] = w end
    return got
  end

  it("registers for runbook", function()
    assert.truthy(sh("bash", "source ./runbook.bash; complete -p runbook"):find("complete -F _runbook runbook", 1, true))
  end)

  it("completes commands and options", function()
    assert.are.same({ "exec" }, complete("ex"))
    assert.are.same({ "check", "completion", "confirm" }, complete("c"))
    assert.are.same({ "--dry-run" }, complete("exec", "comp.lua", "--dr"))
    assert.are.same({ "--help", "--note", "--state" }, complete("confirm", "last", "approve", "--"))
  end)

  it("completes runbook files, option values and choices", function()
    assert.are.same({ "comp.lua", "sub" }, complete("exec", ""))
    assert.are.same({ "json", "text" }, complete("exec", "comp.lua", "--output", ""))
    assert.are.same({ "json" }, complete("status", "--output", "j"))
    assert.are.same({ "bash", "zsh" }, complete("completion", ""))
    assert.are.same({ "verify" }, complete("audit", ""))
    assert.are.same({}, complete("exec", "comp.lua", "--jobs", ""))
    assert.are.same({ "notes.txt" }, complete("check", "comp.lua", "--values", "n"))
  end)

  it("completes run ids from the store, honouring --state", function()
    local id = run_id()
    assert.are.same({ id, "last" }, complete("status", ""))
    assert.are.same({ id }, complete("confirm", id:sub(1, 6)))
    assert.are.same({}, complete("status", "--state", dir .. "/empty", ""))
    assert.are.same({ id, "last" }, complete("log", "--state", dir .. "/.runbook", ""))
  end)

  it("completes the step ids of a run and of a runbook", function()
    assert.are.same({ "approve", "deploy", "prepare" }, complete("confirm", "last", ""))
    assert.are.same({ "approve" }, complete("reset", run_id(), "ap"))
    assert.are.same({ "deploy" }, complete("rollback", "last", "--to", "d"))
    assert.are.same({ "prepare" }, complete("log", "last", "--step", "p"))
    assert.are.same({ "approve", "deploy", "prepare" }, complete("exec", "comp.lua", "--from", ""))
    assert.are.same({ "deploy" }, complete("exec", "--yes", "comp.lua", "--only", "de"))
    -- --from=STEP arrives as three words
    assert.are.same({ "deploy" }, complete("exec", "comp.lua", "--from", "=", "de"))
  end)
end)

describe("zsh completion", function()
  it("registers for runbook", function()
    if not have("zsh") then pending("zsh is not installed (scripts/deps.sh test)") return end
    assert.are.equal("compdef _runbook runbook\n", sh("zsh", "compdef() { print -r -- compdef $* }; source ./runbook.zsh"))
  end)

  local function complete(...)
    local words = { rb.bin, ... }
    local quoted = {}
    for i, w in ipairs(words) do quoted[i] = "'" .. w:gsub("'", "'\\''") .. "'" end
    local out = sh("zsh", table.concat({
      "compdef() { : }",
      "compadd() { [[ $1 == -- ]] && shift; print -rl -- \"$@\" }",
      "_describe() { print -rl -- \"${(@P)4}\" }",
      "_files() { print -r -- \"_files $*\" }",
      "compset() { : }",
      "source ./runbook.zsh",
      "words=(" .. table.concat(quoted, " ") .. ")",
      "CURRENT=${#words}",
      "_runbook | LC_ALL=C sort",
    }, "\n"))
    local got = {}
    for w in out:gmatch("[^\n]+") do got[#got + 1] = w end
    return got
  end

  it("completes commands with their summaries, options, files and choices", function()
    if not have("zsh") then pending("zsh is not installed (scripts/deps.sh test)") return end
    local cmds = complete("")
    assert.truthy(#cmds >= 15)
    assert.truthy(table.concat(cmds, "\n"):find("\ncheck:static checks\\: syntax, unique ids, unknown needs, cycles, params\n", 1, true))
    assert.truthy(table.concat(cmds, "\n"):find("\nexec:run a runbook, resuming its newest unfinished run\n", 1, true))
    assert.falsy(table.concat(cmds, "\n"):find("__", 1, true))
    local opts = complete("exec", "comp.lua", "--")
    assert.truthy(table.concat(opts, " "):find("--dry-run", 1, true))
    assert.are.same({ "_files -g *.lua" }, complete("exec", ""))
    assert.are.same({ "_files -/" }, complete("exec", "comp.lua", "--state", ""))
    assert.are.same({ "json", "text" }, complete("runs", "--output", ""))
  end)

  it("completes run ids and step ids", function()
    if not have("zsh") then pending("zsh is not installed (scripts/deps.sh test)") return end
    assert.are.same({ run_id(), "last" }, complete("status", ""))
    assert.are.same({ "approve", "deploy", "prepare" }, complete("confirm", "last", ""))
    assert.are.same({ "approve", "deploy", "prepare" }, complete("exec", "comp.lua", "--from", ""))
    assert.are.same({ "approve", "deploy", "prepare" }, complete("exec", "comp.lua", "--only=a"))
    assert.are.same({}, complete("status", "--state=" .. dir .. "/empty", ""))
  end)
end)
