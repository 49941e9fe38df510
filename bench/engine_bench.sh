#!/bin/sh
# The engine benchmark, every figure a ratio to a baseline timed in the same
# run (the machine is shared; absolute times drift with its load):
#  1. a fresh 14-step no-op run (`runbook exec`, every journal event synced)
#     against its floor: the same number of 100-byte appends, each
#     fdatasync'd, to a file on the same disk, by one small process (so an
#     empty process start is in the floor; it is also printed alone);
#  2. resuming a run whose journal holds 10,000 events against its floor:
#     reading and SHA-256 hashing that journal, then as many synced appends
#     as the resume writes events;
#  3. peak RSS of (1);
#  4. ansible-playbook running 14 local debug tasks, for scale. It writes
#     nothing durable: no journal, no sync, nothing to resume from;
#  5. with valgrind installed, the instructions of one fresh run
#     (callgrind): the one figure here the machine's load does not move.
# Targets: (1) and (2) <= 1.5x their floor, (3) <= 5 MB. Exits non-zero when
# one is missed. RUNS=N changes the number of timed runs (default 40).
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-40}
scripts/deps.sh build
for tool in hyperfine ansible-playbook strace; do
  if ! command -v $tool >/dev/null; then
    pkg=$tool; [ $tool = ansible-playbook ] && pkg=ansible-core
    apt-get install -y -qq --no-install-recommends $pkg >/dev/null
  fi
done
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build-bench >/dev/null
RB=$ROOT/build-bench/runbook

# the state and the floor's file live in the same directory, on the same disk
tmp=$(mktemp -d "${BENCH_DIR:-$ROOT/build-bench}/engine.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cc -O2 -I"$ROOT/src" -o "$tmp/floor" "$ROOT/bench/floor.c" "$ROOT/src/sha256.c"
FLOOR=$tmp/floor
cd "$tmp"
load_before=$(uptime)
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

# how many events each run writes, and how many syncs it makes
RUNBOOK_STATE=$tmp/probe $RB exec noop14.lua >/dev/null 2>&1
fresh_events=$(cat "$tmp"/probe/runs/*/journal.jsonl | wc -l)
rm -rf "$tmp/probe"
fresh_syncs=$(RUNBOOK_STATE=$tmp/probe strace -f -c -e trace=fsync,fdatasync,msync,sync_file_range \
  $RB exec noop14.lua 2>&1 >/dev/null | awk '/total/ {print $4}')
rm -rf "$tmp/probe"
RUNBOOK_STATE=$tmp/big-saved BIG_FAIL=1 $RB exec big.lua >/dev/null 2>&1 || true
journal=$(ls "$tmp"/big-saved/runs/*/journal.jsonl)
events=$(wc -l < "$journal")
rm -rf big && cp -a big-saved big
RUNBOOK_STATE=$tmp/big $RB exec big.lua >/dev/null 2>&1
resume_events=$(( $(cat "$tmp"/big/runs/*/journal.jsonl | wc -l) - events ))
rm -rf big && cp -a big-saved big
resume_syncs=$(RUNBOOK_STATE=$tmp/big strace -f -c -e trace=fsync,fdatasync,msync,sync_file_range \
  $RB exec big.lua 2>&1 >/dev/null | awk '/total/ {print $4}')
cp "$journal" "$tmp/floor-journal"

# 1: fresh run and its floor, in one hyperfine invocation
hyperfine -N --style none --warmup 3 --runs "$RUNS" \
  --prepare "rm -rf $tmp/state" "env RUNBOOK_STATE=$tmp/state $RB exec noop14.lua" \
  --prepare "rm -f $tmp/floor.out" "$FLOOR append $tmp/floor.out $fresh_events" \
  --prepare "true" "$FLOOR none" \
  --export-json fresh.json >/dev/null
# 2: resume and its floor. Each resume starts from a fresh copy of the
# stopped run, synced as the run that wrote it left it (every event was
# fdatasync'd): unsynced, the copy's 2.8 MB would be written out by the
# resume's first fdatasync, a cost no real resume has
hyperfine -N --style none --warmup 3 --runs "$RUNS" \
  --prepare "sh -c 'rm -rf $tmp/big && cp -a $tmp/big-saved $tmp/big && sync $tmp/big/runs/*/* $tmp/big/runs/* $tmp/big/runs'" \
  "env RUNBOOK_STATE=$tmp/big $RB exec big.lua" \
  --prepare "sh -c 'rm -f $tmp/floor.out; cat $tmp/floor-journal > /dev/null'" \
  "$FLOOR resume $tmp/floor-journal $tmp/floor.out $resume_events" \
  --export-json resume.json >/dev/null
# 3: peak RSS
peak=0
for i in 1 2 3 4 5 6 7 8 9 10; do
  rm -rf "$tmp/state"
  kb=$(RUNBOOK_STATE=$tmp/state /usr/bin/time -f %M $RB exec noop14.lua 2>&1 >/dev/null | tail -1)
  [ "$kb" -gt "$peak" ] && peak=$kb
done
# 4: ansible, and runbook again in the same invocation
hyperfine -N --style none --warmup 1 --runs 10 \
  --prepare "rm -rf $tmp/state" "env RUNBOOK_STATE=$tmp/state $RB exec noop14.lua" \
  --prepare "true" "env ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false ansible-playbook -c local -i localhost, playbook.yml" \
  --export-json ansible.json >/dev/null
# 5: instructions of one fresh run, steady where times are not (callgrind,
# when valgrind is installed; it runs the portable SHA-256)
instr=
if command -v valgrind >/dev/null; then
  rm -rf "$tmp/state"
  instr=$(RUNBOOK_STATE=$tmp/state valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    $RB exec noop14.lua 2>&1 >/dev/null | awk '/Collected/ {print $4}')
fi
load_after=$(uptime)
ansible_version=$(ansible-playbook --version 2>/dev/null | awk 'NR == 1')

python3 - "$fresh_events" "$fresh_syncs" "$events" "$resume_events" "$resume_syncs" "$peak" \
  "$load_before" "$load_after" "$ansible_version" "$RUNS" "$instr" <<'PY'
import json, sys
fe, fs, ev, re_, rs, peak_kb = (int(x or 0) for x in sys.argv[1:7])
before, after, ansible_v, runs, instr = sys.argv[7:12]
def meds(f):
    return [r["median"] * 1000 for r in json.load(open(f))["results"]]
def p(f, i, q):
    t = sorted(json.load(open(f))["results"][i]["times"])
    return t[min(len(t) - 1, int(q * len(t)))] * 1000
fresh, floor_fresh, empty = meds("fresh.json")
resume, floor_resume = meds("resume.json")
rb10, ansible = meds("ansible.json")
rows = [
    (f"fresh 14 no-op steps ({fe} events, {fs} syncs)", fresh,
     f"{fe} x (100 B append + fdatasync), one process", floor_fresh, 1.5),
    (f"resume over {ev} events ({re_} new events, {rs} syncs)", resume,
     f"read + SHA-256 the journal, {re_} synced appends", floor_resume, 1.5),
]
print(f"runbook engine benchmark: medians of {runs} runs (ms); ratio = runbook / floor")
print(f"{'measure':<52} {'runbook':>8}  {'floor':>8}  {'ratio':>6}  target")
ok = True
for name, rb, what, fl, target in rows:
    r = rb / fl
    ok &= r <= target
    print(f"{name:<52} {rb:8.2f}  {fl:8.2f}  {r:5.2f}x  <= {target}x {'ok' if r <= target else 'MISSED'}")
    print(f"  floor: {what}")
print(f"  empty process start (the floor tool doing nothing): {empty:.2f} ms")
print(f"  p90: fresh {p('fresh.json', 0, .9):.2f} / floor {p('fresh.json', 1, .9):.2f}; "
      f"resume {p('resume.json', 0, .9):.2f} / floor {p('resume.json', 1, .9):.2f}")
def cpu(f, i):
    r = json.load(open(f))["results"][i]
    return r["user"] * 1000, r["system"] * 1000
for label, f in (("fresh", "fresh.json"), ("resume", "resume.json")):
    (ru, rs), (fu, fs_) = cpu(f, 0), cpu(f, 1)
    print(f"  CPU (means, user + system): {label} {ru:.1f} + {rs:.1f} ms / floor {fu:.1f} + {fs_:.1f} ms")
mb = peak_kb / 1024
ok &= mb <= 5
print(f"{'peak RSS, fresh run (max of 10)':<52} {mb:7.1f} MB{'':19}<= 5 MB {'ok' if mb <= 5 else 'MISSED'}")
if instr:
    print(f"instructions of one fresh run (callgrind): {int(instr) / 1e6:.2f} M")
print(f"{ansible_v}, 14 local debug tasks: {ansible:.0f} ms, runbook {rb10:.1f} ms "
      f"(medians of 10, same invocation): {ansible / rb10:.0f}x; ansible writes nothing durable")
print(f"load before: {before.strip()}")
print(f"load after:  {after.strip()}")
sys.exit(0 if ok else 1)
PY
