-- The driver of scripts/sandbox.sh, run inside the runbook binary by
-- `runbook test -o tests/harness/sandbox_output.lua tests/harness/sandbox_main.lua`
-- (so it has every runbook module). Arguments come in the environment:
-- SANDBOX_ARGV (the command and its arguments, newline-separated) and
-- SANDBOX_DIR. An error fails the "test", which makes the exit code 1 and
-- prints its message (sandbox_output.lua).
local src = os.getenv("RUNBOOK_SOURCE_DIR") or "."
package.path = src .. "/tests/harness/?.lua;" .. package.path
local sandbox = require "sandbox"

local argv = {}
for a in (os.getenv("SANDBOX_ARGV") or ""):gmatch("[^\n]+") do argv[#argv + 1] = a end
local cmd = argv[1]
local dir = assert(os.getenv("SANDBOX_DIR"), "SANDBOX_DIR is not set")

local function usage()
  error("usage: scripts/sandbox.sh up|down|status [DIR] | rehearse runbooks/NAME.lua [DIR] | "
    .. "play runbooks/NAME.lua STEP [DIR] | fault migration|clear [DIR]", 0)
end

if cmd == "up" then
  sandbox.up(dir)
elseif cmd == "down" then
  sandbox.down(dir)
elseif cmd == "status" then
  local sb = sandbox.load(dir)
  sb.started = nil
  sandbox.report(sb)
  local down = {}
  for name in pairs(sb.procs) do if not sb:running(name) then down[#down + 1] = name end end
  table.sort(down)
  if #down > 0 then error("not running: " .. table.concat(down, ", ") .. " (scripts/sandbox.sh up starts them)", 0) end
  if next(sb.procs) == nil then error("nothing running (scripts/sandbox.sh up starts it)", 0) end
elseif cmd == "rehearse" then
  if not argv[2] then usage() end
  local sb = sandbox.load(dir)
  sb:rehearse(argv[2])
elseif cmd == "play" then
  if not argv[3] then usage() end
  local sb = sandbox.load(dir)
  local name = argv[2]:match("([^/]+)%.lua$") or argv[2]
  local player = (sandbox.PLAYERS[name] or {})[argv[3]]
  if not player or not player.act then error("the sandbox plays nobody at " .. name .. " " .. argv[3], 0) end
  player.act(sb)
  sandbox.say("%s %s: the sandbox played %s", name, argv[3], player.role)
elseif cmd == "fault" then
  if not argv[2] then usage() end
  local sb = sandbox.load(dir)
  sb:fault(argv[2])
  sandbox.say("fault %s: %s", argv[2], argv[2] == "clear" and "cleared, Jobs succeed again"
    or "Tezca's migration Jobs fail until `scripts/sandbox.sh fault clear`")
elseif cmd == "argocd" then
  sandbox.argocd_loop(dir)
else
  usage()
end
