-- `DESTDIR=... cmake --install BUILD` lays out the binary, the man pages,
-- the completions, the editor stubs and the docs where a distribution
-- expects them, and the installed binary works from there.
local rb = require "rbtest"
local proc = require "runbook._proc"
local fs = require "runbook._fs"
local cli = require "runbook._engine.cli"

local build = rb.bin:match("^(.*)/[^/]+$")
local stage, root

local function sh(script, env)
  local p = assert(proc.spawn { argv = { "sh", "-c", script }, env = env, stdin = "null" })
  return p:communicate { timeout = 120 }
end

setup(function()
  stage = rb.tmpdir("install")
  root = stage .. "/usr"
  local p = assert(proc.spawn { argv = { "cmake", "--install", build, "--prefix", "/usr" }, env = { DESTDIR = stage }, stdin = "null" })
  local r = p:communicate { timeout = 120 }
  assert.are.equal(0, r.code, r.stdout .. r.stderr)
end)
teardown(function() rb.rmtree(stage) end)

describe("the installed tree", function()
  it("has the binary, a man page per command, both completions, the stubs and the docs", function()
    local st = fs.stat(root .. "/bin/runbook")
    assert.truthy(st, "bin/runbook")
    assert.are.equal(tonumber("755", 8), st.mode & tonumber("777", 8))
    local pages = { "runbook.1.gz" }
    for _, c in ipairs(cli.COMMANDS) do
      if not c.hidden then pages[#pages + 1] = "runbook-" .. c.name .. ".1.gz" end
    end
    table.sort(pages)
    assert.are.same(pages, fs.listdir(root .. "/share/man/man1"))
    assert.truthy(rb.read(root .. "/share/bash-completion/completions/runbook"):find("complete -F _runbook runbook", 1, true))
    assert.truthy(rb.read(root .. "/share/zsh/vendor-completions/_runbook"):find("^#compdef runbook\n"))
    assert.are.same({ "curl.lua", "pg.lua", "runbook.lua" }, fs.listdir(root .. "/share/runbook/meta"))
    assert.truthy(rb.exists(root .. "/share/runbook/lua/runbook/k8s.lua"))
    assert.falsy(rb.exists(root .. "/share/runbook/lua/runbook/_engine"))
    assert.truthy(rb.exists(root .. "/share/doc/runbook/README.md"))
    assert.truthy(rb.exists(root .. "/share/doc/runbook/cli.md"))
    assert.truthy(rb.exists(root .. "/share/doc/runbook/api/k8s.md"))
  end)

  it("has man pages that are the binary's, and that groff reads without a warning", function()
    local r = sh('gzip -dc "' .. root .. '/share/man/man1/runbook-exec.1.gz"')
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(rb.run({ "__man", "exec" }).stdout, r.stdout)
    local groff = sh("command -v groff")
    if groff.code ~= 0 then pending("no groff") return end
    for _, page in ipairs(fs.listdir(root .. "/share/man/man1")) do
      r = sh('gzip -dc "' .. root .. "/share/man/man1/" .. page .. '" | groff -man -ww -z 2>&1')
      assert.are.equal("", r.stdout, page)
    end
  end)

  it("runs from there, and init points editors at the installed stubs", function()
    local bin = root .. "/bin/runbook"
    local p = assert(proc.spawn { argv = { bin, "version" }, stdin = "null" })
    local r = p:communicate { timeout = 30 }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("^runbook %d+%.%d+%.%d+ %(commit "), r.stdout)
    local work = stage .. "/work"
    assert(fs.mkdir_p(work))
    p = assert(proc.spawn { argv = { bin, "init", "svc" }, cwd = work, stdin = "null" })
    r = p:communicate { timeout = 30 }
    assert.are.equal(0, r.code, r.stderr)
    local luarc = require("runbook._json").decode(rb.read(work .. "/.luarc.json"))
    assert.are.same({ root .. "/share/runbook/meta", root .. "/share/runbook/lua" }, luarc["workspace.library"])
  end)
end)
