-- runbook.sh with real child processes.
local sh = require "runbook.sh"
local secret = require "runbook.secret"
local host = require "runbook._host"
local fs = require "runbook._fs"
local proc = require "runbook._proc"
local audit = require "runbook._engine.audit"
local errors = require "runbook.errors"
local interrupt = require "interrupt"
local rbtest = require "rbtest"

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- true once pid is gone (or a zombie nobody will run again); false if it
-- is still there after 10 s
local function gone(pid)
  local deadline = host.monotime() + 10
  repeat
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then return true end
    local st = f:read("a")
    f:close()
    if st:match("^%d+ %b() ([ZX])") then return true end
    host.sleep(0.05)
  until host.monotime() > deadline
  return false
end

-- a dry-run sink, as the engine installs under --dry-run
local function with_dry_run(fn)
  local acts, logs = {}, {}
  audit.set_sink { dry_run = true, action = function(t) acts[#acts + 1] = t end,
    log = function(_, m) logs[#logs + 1] = m end, progress = function() end }
  local ok, err = pcall(fn)
  audit.set_sink(nil)
  assert(ok, err)
  return acts, logs
end

describe("runbook.sh", function()
  local dir

  setup(function() dir = rbtest.tmpdir("sh") end)
  teardown(function() rbtest.rmtree(dir) end)
  before_each(function() audit.reset() end)

  describe("run", function()
    it("runs argv without a shell and returns the result", function()
      local r = sh.run { "printf", "%s|", "a b", "$HOME", "*", "`id`", 42 }
      assert.are.equal(0, r.code)
      assert.are.equal("a b|$HOME|*|`id`|42|", r.stdout)
      assert.are.equal("", r.stderr)
      assert.is_false(r.timed_out)
      assert.are.equal("number", type(r.duration))
      assert.is_true(r.duration >= 0 and r.duration < 5)
    end)

    it("merges env over the parent's, or replaces it", function()
      assert.are.equal("one\n", sh.run({ "printenv", "RB_SH_X" }, { env = { RB_SH_X = "one" } }).stdout)
      assert.is_truthy(sh.run({ "printenv", "PATH" }, { env = { RB_SH_X = "one" } }).stdout:find("/", 1, true))
      local r = sh.run({ "/usr/bin/env" }, { env = { ONLY = "this" }, replace_env = true })
      assert.are.equal("ONLY=this\n", r.stdout)
    end)

    it("runs in cwd, and says so when cwd does not exist", function()
      assert.are.equal(fs.realpath(dir) .. "\n", sh.run({ "pwd" }, { cwd = dir }).stdout)
      local err = raised(sh.run, { "pwd" }, { cwd = dir .. "/nope" })
      assert.are.equal("cwd", err.code)
      assert.are.equal("cannot change directory to " .. dir .. "/nope: No such file or directory", err.message)
    end)

    it("feeds stdin from a string or a secret", function()
      assert.are.equal("hello\nworld", sh.run({ "cat" }, { stdin = "hello\nworld" }).stdout)
      assert.are.equal("from-a-secret", sh.run({ "cat" }, { stdin = secret.wrap("from-a-secret") }).stdout)
      assert.are.equal("", sh.run({ "cat" }).stdout) -- no stdin: /dev/null
    end)

    it("raises on a non-zero exit, naming argv, the code and the last lines of stderr", function()
      local script = "echo out; for i in 1 2 3 4 5 6 7; do echo e$i >&2; done; exit 3"
      local err = raised(sh.run, { "sh", "-c", script })
      assert.is_true(errors.is(err, "command"))
      assert.are.equal(3, err.code)
      assert.are.equal("command exited with code 3: sh -c '" .. script .. "'\n"
        .. "  stderr: e3\n          e4\n          e5\n          e6\n          e7", err.message)
      assert.are.same({ "e3", "e4", "e5", "e6", "e7" }, err.details.stderr_tail)
      assert.are.same({ "sh", "-c", script }, err.details.argv)
    end)

    it("returns the result instead with check = false", function()
      local r = sh.run({ "sh", "-c", "echo bad >&2; exit 7" }, { check = false })
      assert.are.equal(7, r.code)
      assert.are.equal("bad\n", r.stderr)
    end)

    it("reports a program killed by a signal", function()
      local err = raised(sh.run, { "sh", "-c", "kill -KILL $$" })
      assert.are.equal("signal", err.code)
      assert.are.equal("command was killed by signal 9: sh -c 'kill -KILL $$'", err.message)
    end)

    it("says clearly when the program is not on PATH", function()
      local err = raised(sh.run, { "no-such-program-rb" }, { env = { PATH = "/usr/bin:/bin" } })
      assert.are.equal("not-found", err.code)
      assert.are.equal("command not found: no-such-program-rb (not on PATH: /usr/bin:/bin)", err.message)
      local err2 = raised(sh.run, { "./no-such-file-rb" })
      assert.are.equal("command not found: ./no-such-file-rb (no such file)", err2.message)
    end)

    it("kills the command at its timeout (SIGTERM)", function()
      local t0 = host.monotime()
      local err = raised(sh.run, { "sleep", "10" }, { timeout = 0.3 })
      assert.is_true(host.monotime() - t0 < 2)
      assert.are.equal("timeout", err.code)
      assert.are.equal("command timed out after 0.3 s: sleep 10 (it was stopped with SIGTERM)", err.message)
    end)

    it("kills a command that ignores SIGTERM with SIGKILL after the grace period", function()
      local t0 = host.monotime()
      local r = sh.run({ "sh", "-c", "trap '' TERM; sleep 10; echo survived" }, { timeout = 0.3, grace = 0.3, check = false })
      local took = host.monotime() - t0
      assert.is_true(r.timed_out)
      assert.are.equal(9, r.signal)
      assert.is_nil(r.code)
      assert.are.equal("", r.stdout)
      assert.is_true(took >= 0.55 and took < 2.5, "took " .. took)
      local err = raised(sh.run, { "sh", "-c", "trap '' TERM; sleep 10" }, { timeout = 0.2, grace = 0.2 })
      assert.are.equal("command timed out after 0.2 s: sh -c 'trap '\\'''\\'' TERM; sleep 10' (it ignored SIGTERM and was killed with SIGKILL after 0.2 s)", err.message)
    end)

    it("kills the whole process group at the timeout", function()
      local r = sh.run({ "sh", "-c", "sleep 30 & echo $!; wait" }, { timeout = 0.3, check = false })
      assert.is_true(r.timed_out)
      local pid = assert(tonumber(r.stdout:match("%d+")))
      assert.is_true(gone(pid), "background child " .. pid .. " still running")
    end)

    it("stops at once on Ctrl-C, killing the command", function()
      local pidfile = dir .. "/ctrlc.pid"
      local ok, err, took = interrupt.run({ file = pidfile }, function()
        return sh.run { "sh", "-c", "echo $$ > " .. pidfile .. "; exec sleep 30" }
      end)
      assert.is_false(ok)
      assert.are.equal("interrupted", err.kind)
      assert.is_true(took < 2, "took " .. took)
      assert.is_true(gone(tonumber(rbtest.read(pidfile))))
    end)

    it("stops at the step's deadline", function()
      local ok, err = host.guarded(0.3, function() return sh.run { "sleep", "30" } end)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
    end)

    it("streams output to the run log line by line, secrets scrubbed", function()
      local s = secret.wrap("tok-" .. require("runbook._crypto").random_hex(8))
      local r = sh.run { "sh", "-c", 'echo "one"; echo "two $1" >&2; printf "three"', "sh", s }
      assert.are.equal("one\nthree", r.stdout)
      assert.are.equal("two " .. s:reveal() .. "\n", r.stderr)
      local msgs = {}
      for _, l in ipairs(audit.logs) do msgs[#msgs + 1] = l.message end
      table.sort(msgs)
      assert.are.same({ "sh (stderr): two [REDACTED]", "sh: one", "sh: three" }, msgs)
    end)

    it("logs nothing with log = false", function()
      sh.run({ "echo", "quiet" }, { log = false })
      assert.are.equal(0, #audit.logs)
    end)

    it("records each command as an audited action with argv scrubbed", function()
      local s = secret.wrap("argv-secret-" .. require("runbook._crypto").random_hex(4))
      sh.run({ "echo", "--token", s, "plain" }, { env = { B = "1", A = "2" } })
      sh.run({ "sh", "-c", "exit 2" }, { check = false })
      assert.are.equal(2, #audit.recorded)
      local a = audit.recorded[1]
      assert.are.equal("command", a.kind)
      assert.are.same({ "echo", "--token", "[REDACTED]", "plain" }, a.argv)
      assert.are.same({ "A", "B" }, a.env)
      assert.are.equal(0, a.code)
      assert.are.equal("integer", math.type(a.duration_ms))
      assert.matches("^echo %-%-token %[REDACTED%] plain → exit 0 %(%d+ms%)$", a.summary)
      assert.are.equal(2, audit.recorded[2].code)
      assert.matches("^sh %-c 'exit 2' → exit 2 ", audit.recorded[2].summary)
    end)

    it("checks its arguments", function()
      assert.matches("sh.run: argv must be a table", tostring(raised(sh.run, "ls -l")))
      assert.matches("sh.run: argv is empty", tostring(raised(sh.run, {})))
      assert.matches("sh.run: argv%[2%] must be a string, number or secret, got table", tostring(raised(sh.run, { "ls", {} })))
      assert.matches("sh.run: unknown option 'timout'", tostring(raised(sh.run, { "true" }, { timout = 1 })))
      assert.matches("sh.run: stdin must be a string or a secret", tostring(raised(sh.run, { "true" }, { stdin = 1 })))
    end)
  end)

  describe("dry run", function()
    it("records commands as would-run and does not run them", function()
      local target = dir .. "/dry-created"
      local r
      local acts, logs = with_dry_run(function() r = sh.run { "touch", target } end)
      assert.is_nil(fs.stat(target))
      assert.is_true(r.dry_run)
      assert.are.equal(0, r.code)
      assert.are.equal(1, #acts)
      assert.are.equal("would run: touch " .. target, acts[1].summary)
      assert.are.same({ "would run: touch " .. target }, logs)
    end)

    it("runs commands marked read_only", function()
      local r
      local acts = with_dry_run(function() r = sh.run({ "echo", "looked" }, { read_only = true }) end)
      assert.are.equal("looked\n", r.stdout)
      assert.is_nil(r.dry_run)
      assert.are.equal(1, #acts)
      assert.matches("^echo looked → exit 0", acts[1].summary)
    end)
  end)

  describe("shell, output and which", function()
    it("runs a shell script only through sh.shell", function()
      local r = sh.shell("echo abc | tr a-c x-z")
      assert.are.equal("xyz\n", r.stdout)
      assert.are.equal("sh -c 'echo abc | tr a-c x-z' → exit 0", audit.recorded[1].summary:match("^(.-) %("))
      assert.are.same({ "/bin/sh", "-c", "echo abc | tr a-c x-z" }, audit.recorded[1].argv)
    end)

    it("returns stdout without the trailing newline", function()
      assert.are.equal("a\nb", sh.output { "printf", "a\nb\n" })
    end)

    it("returns stdout as a secret, unlogged, with secret_output", function()
      local v = sh.output({ "printf", "op-read-value-123\n" }, { secret_output = true })
      assert.is_true(secret.is(v))
      assert.are.equal("op-read-value-123", v:reveal())
      assert.are.equal(0, #audit.logs)
      assert.are.equal("[REDACTED]", host.scrub("op-read-value-123"))
    end)

    it("finds programs on PATH", function()
      local p = sh.which("sh")
      assert.is_truthy(p == "/usr/bin/sh" or p == "/bin/sh", tostring(p))
      assert.is_nil(sh.which("no-such-program-rb"))
      assert.are.equal("/bin/sh", sh.which("/bin/sh"))
      assert.is_nil(sh.which("sh", "/nonexistent"))
    end)
  end)

  describe("in a real run", function()
    it("under --dry-run shows commands instead of running them, except read_only ones", function()
      local book = dir .. "/dry.lua"
      local target = dir .. "/made-by-dry-run"
      rbtest.write(book, string.format([[
local sh = require "runbook.sh"
runbook "dry" {}
step "write" { run = function()
  sh.run { "touch", %q }
  local r = sh.run({ "echo", "looked" }, { read_only = true })
  assert(r.stdout == "looked\n")
end }
]], target))
      local r = rbtest.run({ "exec", book, "--state", dir .. "/st-dry", "--dry-run" })
      assert.are.equal(0, r.code, r.stderr)
      assert.is_nil(fs.stat(target))
      assert.is_truthy(r.stderr:find("write    would run: touch " .. target, 1, true), r.stderr)
      assert.is_truthy(r.stderr:find("write    action command: would run: touch " .. target, 1, true), r.stderr)
      assert.is_truthy(r.stderr:find("write    echo: looked", 1, true), r.stderr)
      assert.is_truthy(r.stderr:find("dry run complete", 1, true), r.stderr)
    end)

    it("stops the run at once on Ctrl-C and kills the command", function()
      local book = dir .. "/ctrlc.lua"
      local pidfile = dir .. "/run.pid"
      rbtest.write(book, string.format([[
local sh = require "runbook.sh"
runbook "ctrlc" {}
step "sleep" { run = function() sh.run { "sh", "-c", "echo $$ > %s; exec sleep 30" } end }
]], pidfile))
      local p = assert(proc.spawn { argv = { rbtest.bin, "exec", book, "--state", dir .. "/st-ctrlc" },
        stdout = "null", stderr = "pipe", env = { NO_COLOR = "1" } })
      -- the whole pid written: the command is running
      rbtest.wait_for("the command's pid", function() return (rbtest.read(pidfile) or ""):match("^%d+\n$") end)
      local t0 = host.monotime()
      p:kill("INT")
      local r = p:communicate { timeout = 10 }
      assert.is_true(host.monotime() - t0 < 2)
      assert.are.equal(130, r.code)
      assert.is_truthy(r.stderr:find("interrupted during sleep; run the same command again to resume", 1, true), r.stderr)
      assert.is_true(gone(tonumber(rbtest.read(pidfile))))
    end)
  end)
end)
