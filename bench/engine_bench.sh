#!/bin/sh
# The engine benchmark (issue 2), side by side in one run on this machine:
#  1. `runbook exec` of a fresh 14-step runbook whose steps do nothing (every
#     event fsync'd) against `ansible-playbook` running 14 local debug tasks;
#  2. resuming a run whose journal holds 10,000 events;
#  3. peak RSS of (1).
# Targets: (1) median <= 20 ms and >= 40x faster than ansible; (2) <= 50 ms;
# (3) <= 10 MB. Prints the figures and exits non-zero if a target is missed.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
for tool in hyperfine ansible-playbook; do
  if ! command -v $tool >/dev/null; then
    pkg=$tool; [ $tool = ansible-playbook ] && pkg=ansible-core
    apt-get install -y -qq --no-install-recommends $pkg >/dev/null
  fi
done
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build-bench >/dev/null
RB=$PWD/build-bench/runbook

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
{
  echo 'runbook "noop14" {}'
  i=1; while [ $i -le 14 ]; do echo "step \"S$i\" { run = function() end }"; i=$((i + 1)); done
} > noop14.lua
{
  echo '- hosts: localhost'
  echo '  gather_facts: false'
  echo '  tasks:'
  i=1; while [ $i -le 14 ]; do printf '    - name: S%s\n      debug:\n        msg: "S%s"\n' $i $i; i=$((i + 1)); done
} > playbook.yml
cat > big.lua <<'LUA'
runbook "big" {}
step "S1" { run = function(ctx)
  local start = ctx:cursor("i") or 0
  for i = start + 1, 9996 do ctx:checkpoint("i", i) end
  if os.getenv("BIG_FAIL") then error("stop here") end
end }
for i = 2, 14 do step ("S" .. i) { run = function() end } end
LUA
RUNBOOK_STATE=$tmp/big-saved BIG_FAIL=1 $RB exec big.lua >/dev/null 2>&1 || true
events=$(cat "$tmp"/big-saved/runs/*/journal.jsonl | wc -l)

hyperfine -N --style none --warmup 3 --runs 40 \
  --prepare "rm -rf $tmp/state" \
  "env RUNBOOK_STATE=$tmp/state $RB exec noop14.lua" \
  --export-json fresh.json >/dev/null
hyperfine --style none --warmup 1 --runs 10 \
  "ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false ansible-playbook -c local -i localhost, playbook.yml" \
  --export-json ansible.json >/dev/null
hyperfine -N --style none --warmup 3 --runs 30 \
  --prepare "sh -c 'rm -rf $tmp/big && cp -a $tmp/big-saved $tmp/big'" \
  "env RUNBOOK_STATE=$tmp/big $RB exec big.lua" \
  --export-json resume.json >/dev/null
peak=0
for i in 1 2 3 4 5 6 7 8 9 10; do
  rm -rf "$tmp/state"
  kb=$(RUNBOOK_STATE=$tmp/state /usr/bin/time -f %M $RB exec noop14.lua 2>&1 >/dev/null | tail -1)
  [ "$kb" -gt "$peak" ] && peak=$kb
done

python3 - "$events" "$peak" <<'PY'
import json, sys
events, peak_kb = int(sys.argv[1]), int(sys.argv[2])
med = lambda f: json.load(open(f))["results"][0]["median"] * 1000
fresh, ansible, resume = med("fresh.json"), med("ansible.json"), med("resume.json")
ratio = ansible / fresh
rows = [
    ("runbook exec, fresh 14 no-op steps (median)", f"{fresh:.1f} ms", "<= 20 ms", fresh <= 20),
    ("ansible-playbook, 14 local debug tasks (median)", f"{ansible:.0f} ms", "", True),
    ("speed-up over ansible-playbook", f"{ratio:.0f}x", ">= 40x", ratio >= 40),
    (f"resume of a run with {events} journal events (median)", f"{resume:.1f} ms", "<= 50 ms", resume <= 50),
    ("peak RSS, fresh 14-step run (max of 10)", f"{peak_kb / 1024:.1f} MB", "<= 10 MB", peak_kb <= 10 * 1024),
]
w = max(len(r[0]) for r in rows)
print(f"{'measure':<{w}}  {'figure':>10}  {'target':>9}")
for name, fig, target, ok in rows:
    print(f"{name:<{w}}  {fig:>10}  {target:>9}  {'' if not target else ('ok' if ok else 'MISSED')}")
sys.exit(0 if all(r[3] for r in rows) else 1)
PY
