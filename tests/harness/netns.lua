-- Runs a command in fresh mount and network namespaces (unshare -m -n),
-- with only loopback up and our own /etc/hosts, /etc/nsswitch.conf and
-- /etc/resolv.conf bind-mounted over the machine's. Name resolution specs
-- use it to meet a resolver that never answers (a "blackhole" on
-- 127.0.0.1:53 inside the namespace) or one that only reads files, without
-- sending a query anywhere outside the namespace.
local proc = require "runbook._proc"
local rbtest = require "rbtest"

local M = {}

local BLACKHOLE = [[
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 53))
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 53))
t.listen(16)
open(sys.argv[1], "w").close()
time.sleep(60)
]]

local SCRIPT = [[
set -e
d="$1"; shift
ip link set lo up
mount --bind "$d/hosts" /etc/hosts
mount --bind "$d/nsswitch.conf" /etc/nsswitch.conf
mount --bind "$d/resolv.conf" /etc/resolv.conf
bh=
if [ -e "$d/blackhole.py" ]; then
  python3 "$d/blackhole.py" "$d/ready" >/dev/null 2>&1 &
  bh=$!
  i=0
  # up to 30 s: python3 starting on a busy machine
  while [ ! -e "$d/ready" ]; do i=$((i+1)); [ $i -lt 1500 ] || exit 97; sleep 0.02; done
fi
set +e
"$@"
rc=$?
[ -z "$bh" ] || kill "$bh" 2>/dev/null
exit $rc
]]

local available

--- True when this machine lets us make the namespaces (root, unshare).
function M.available()
  if available == nil then
    local p = proc.spawn { argv = { "unshare", "-m", "-n", "true" }, stdout = "null", stderr = "null" }
    available = p ~= nil and p:communicate({ timeout = 10 }).code == 0
  end
  return available
end

--- Runs argv inside the namespaces. opts: hosts (text for /etc/hosts),
--- nsswitch (the hosts: line, default "files dns"), blackhole (true: a
--- resolver on 127.0.0.1 that never answers), timeout, env.
--- Returns the communicate result.
function M.run(argv, opts)
  opts = opts or {}
  local dir = rbtest.tmpdir("netns")
  rbtest.write(dir .. "/hosts", opts.hosts or "127.0.0.1 localhost\n")
  rbtest.write(dir .. "/nsswitch.conf", "hosts: " .. (opts.nsswitch or "files dns") .. "\n")
  rbtest.write(dir .. "/resolv.conf", "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
  if opts.blackhole then rbtest.write(dir .. "/blackhole.py", BLACKHOLE) end
  local full = { "unshare", "-m", "-n", "sh", "-c", SCRIPT, "sh", dir }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local p = assert(proc.spawn { argv = full, env = opts.env })
  local r = p:communicate { timeout = opts.timeout or 60 }
  rbtest.rmtree(dir)
  return r
end

return M
