-- scripts/package.sh builds the .deb: its contents are the install tree
-- under /usr, Depends name the libraries the binary links, Recommends the
-- ones it dlopens, and the binary extracted from it runs.
local rb = require "rbtest"
local proc = require "runbook._proc"
local fs = require "runbook._fs"

local build = rb.bin:match("^(.*)/[^/]+$")
local out, deb

local function run(argv, opts)
  opts = opts or {}
  local p = assert(proc.spawn { argv = argv, cwd = opts.cwd, env = opts.env, stdin = "null" })
  local r = p:communicate { timeout = opts.timeout or 300 }
  assert.are.equal(0, r.code, table.concat(argv, " ") .. ": " .. r.stdout .. r.stderr)
  return r.stdout
end

local function have(cmd)
  local p = assert(proc.spawn { argv = { "sh", "-c", "command -v " .. cmd }, stdin = "null" })
  return p:communicate({ timeout = 10 }).code == 0
end

setup(function()
  out = rb.tmpdir("deb")
  if not (have("dpkg-deb") and have("dpkg-shlibdeps")) then return end
  deb = run({ rb.source_dir .. "/scripts/package.sh", "-B", build, "-o", out }):match("([^\n]+)\n$")
end)
teardown(function() rb.rmtree(out) end)

local function field(info, name) return info:match("\n " .. name .. ": ([^\n]*)") end

describe("the Debian package", function()
  it("declares what it links as Depends and what it dlopens as Recommends", function()
    if not deb then pending("dpkg-dev is not installed (scripts/deps.sh test)") return end
    assert.truthy(deb:match("/runbook_%d+%.%d+%.%d+_[%w]+%.deb$"), deb)
    local info = run { "dpkg-deb", "-I", deb }
    assert.are.equal("runbook", field(info, "Package"))
    local depends = {}
    for dep in (field(info, "Depends") .. ","):gmatch("%s*([^,%s]+)[^,]*,") do depends[dep] = true end
    for _, want in ipairs { "liblua5.4-0", "libjansson4", "libyaml-0-2", "libssl3", "libc6" } do
      assert.is_true(depends[want], want .. " missing from Depends: " .. field(info, "Depends"))
    end
    for _, dl in ipairs { "libcurl4", "libpq5", "libhiredis0.14", "libmicrohttpd12" } do
      assert.is_nil(depends[dl], dl .. " is dlopen'ed: not a Depends")
    end
    assert.are.equal("libcurl4, libpq5, libhiredis0.14, libmicrohttpd12", field(info, "Recommends"))
  end)

  it("holds the install tree under /usr", function()
    if not deb then pending("dpkg-dev is not installed (scripts/deps.sh test)") return end
    local contents = run { "dpkg-deb", "--contents", deb }
    for _, path in ipairs {
      "./usr/bin/runbook", "./usr/share/man/man1/runbook.1.gz", "./usr/share/man/man1/runbook-exec.1.gz",
      "./usr/share/bash-completion/completions/runbook", "./usr/share/zsh/vendor-completions/_runbook",
      "./usr/share/runbook/meta/runbook.lua", "./usr/share/runbook/lua/runbook/k8s.lua",
      "./usr/share/doc/runbook/README.md", "./usr/share/doc/runbook/cli.md",
    } do
      assert.truthy(contents:find(" " .. path:gsub("%p", "%%%0") .. "\n"), path)
    end
    assert.falsy(contents:find("/usr/local/", 1, true))
    assert.truthy(contents:find("%-rwxr%-xr%-x root/root +%d+ [%d-]+ [%d:]+ %./usr/bin/runbook\n"), contents)
  end)

  it("runs `runbook version` from the extracted package", function()
    if not deb then pending("dpkg-dev is not installed (scripts/deps.sh test)") return end
    local root = out .. "/root"
    run { "dpkg-deb", "-x", deb, root }
    local v = run { root .. "/usr/bin/runbook", "version" }
    assert.truthy(v:find("^runbook %d+%.%d+%.%d+ %(commit "), v)
    assert.truthy(v:find("\n  libpq     %d"), v)
    local work = out .. "/work"
    assert(fs.mkdir_p(work))
    run({ root .. "/usr/bin/runbook", "init", "svc" }, { cwd = work })
    run({ root .. "/usr/bin/runbook", "check", "svc.lua" }, { cwd = work })
  end)
end)
