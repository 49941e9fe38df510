#!/bin/sh
# The store benchmark (issue "Runbooks for teams"), side by side in one run
# on a local PostgreSQL with fsync and synchronous_commit on (every event
# durable, as on the file store):
#  1. `runbook exec` of a fresh 14-step no-op runbook on the PostgreSQL
#     store against the file store: target <= 2x; beside it, the
#     PostgreSQL floor (bench/pg_floor.c: a libpq client making the same
#     30 commits and nothing else), timed in turn with both;
#  2. 20 runs of 500 no-op steps driven at once by 20 processes on the
#     PostgreSQL store (and the same on the file store): target >= 2,000
#     events/s in total on PostgreSQL.
#  3. resuming a run of 10,000 events on each store (no target: how the
#     shared store's read of a long run compares).
# Also: the fixed cost of a command on each store (`runbook runs` on an
# empty store: on PostgreSQL, loading libpq, connecting and checking the
# schema), the WAL flushes a 14-step run makes, and the load average
# before and after (the machine is shared: only ratios taken in one run
# count). Prints both sides and the ratios; exits non-zero if a target is
# missed.
set -eu
cd "$(dirname "$0")/.."
PGBIN=${RUNBOOK_PG_BIN:-/usr/lib/postgresql/15/bin}
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build-bench >/dev/null
RB=$PWD/build-bench/runbook
FLOOR=$PWD/build-bench/pg_floor
cc -O2 -Wall -Wextra -Werror -I"$(pg_config --includedir)" -o "$FLOOR" bench/pg_floor.c -lpq
RUNS=${STORE_BENCH_RUNS:-30}
STEPS=${STORE_BENCH_STEPS:-500}

tmp=$(mktemp -d /tmp/rb-store-bench.XXXXXX)
chmod 755 "$tmp"
mkdir "$tmp/data" "$tmp/sock"
chown postgres:postgres "$tmp/data" "$tmp/sock"
stop() {
  if [ -f "$tmp/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap stop EXIT
(cd "$tmp" && runuser -u postgres -- "$PGBIN/initdb" -D "$tmp/data" -U postgres --auth=trust \
  --no-instructions -E UTF8 --locale=C >/dev/null)
port=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1]);s.close()")
touch "$tmp/pg.log" && chown postgres "$tmp/pg.log"
(cd "$tmp" && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/data" -l "$tmp/pg.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$tmp/sock -c fsync=on -c synchronous_commit=on -c max_connections=100" start >/dev/null)
URL="postgres://postgres@127.0.0.1:$port/postgres"

cd "$tmp"
{
  echo 'runbook "noop14" {}'
  i=1; while [ $i -le 14 ]; do echo "step \"S$i\" { run = function() end }"; i=$((i + 1)); done
} > noop14.lua
i=1
while [ $i -le 20 ]; do
  {
    echo "runbook \"many$i\" {}"
    s=1; while [ $s -le "$STEPS" ]; do echo "step \"S$s\" { run = function() end }"; s=$((s + 1)); done
  } > "many$i.lua"
  i=$((i + 1))
done

now() { python3 -c 'import time; print(time.monotonic())'; }
# median wall times (ms) of RUNS fresh runs of noop14 on the PostgreSQL
# store, the PostgreSQL floor with the same commits, the floor connecting
# alone, and noop14 on the file store $2, taken in turn run by run so the
# machine's moods fall on all four alike: "pg floor connect file"
fresh() {
  python3 - "$RB" "$1" "$2" "$RUNS" "$FLOOR" <<'PY'
import os, subprocess, sys, time, statistics, shutil
rb, url, filestate, runs, floor = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
sides = [
    ("pg", [rb, "exec", "noop14.lua", "--new"], url),
    # a fresh run's 30 events: 16 synchronous commits and 14 lazy ones
    ("floor", [floor, url, "16", "14"], None),
    ("connect", [floor, url, "0", "0"], None),
    ("file", [rb, "exec", "noop14.lua", "--new"], filestate),
]
times = {name: [] for name, _, _ in sides}
for i in range(runs + 3):
    for name, cmd, state in sides:
        if name == "file":
            shutil.rmtree(state, ignore_errors=True)
        env = dict(os.environ, RUNBOOK_STATE=state or "")
        t0 = time.monotonic()
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t = time.monotonic() - t0
        if r.returncode != 0:
            sys.exit(name + " failed: " + r.stderr.decode())
        if i >= 3:
            times[name].append(t * 1000)
print(" ".join("%.1f" % statistics.median(times[name]) for name, _, _ in sides))
PY
}
# 20 runs at once on store $1: prints events/s
many() {
  python3 - "$RB" "$1" "$STEPS" <<'PY'
import os, subprocess, sys, time, shutil
rb, state, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if not state.startswith("postgres"):
    shutil.rmtree(state, ignore_errors=True)
env = dict(os.environ, RUNBOOK_STATE=state)
t0 = time.monotonic()
procs = [subprocess.Popen([rb, "exec", "many%d.lua" % i], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(1, 21)]
for p in procs:
    _, err = p.communicate()
    if p.returncode != 0:
        sys.exit("exec failed: " + err.decode())
t = time.monotonic() - t0
events = 20 * (2 * steps + 2)
print("%d %.2f %.0f" % (events, t, events / t))
PY
}

cat > big.lua <<'LUA'
runbook "big" {}
step "S1" { run = function(ctx)
  local start = ctx:cursor("i") or 0
  for i = start + 1, 9996 do ctx:checkpoint("i", i) end
  if os.getenv("BIG_FAIL") then error("stop here") end
end }
for i = 2, 14 do step ("S" .. i) { run = function() end } end
LUA
# median wall time (ms) of RUNS resumes of a run of 10,000 events that
# fails again at once (each reads, checks and folds every event, then
# appends 4), on the PostgreSQL store $1 and the file store $2 in turn
resumes() {
  python3 - "$RB" "$1" "$2" "$RUNS" <<'PY'
import os, subprocess, sys, statistics, time
rb, url, filestate, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
times = {url: [], filestate: []}
for state in times:
    env = dict(os.environ, RUNBOOK_STATE=state, BIG_FAIL="1")
    subprocess.run([rb, "exec", "big.lua", "--new"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for i in range(runs + 3):
    for state in times:
        env = dict(os.environ, RUNBOOK_STATE=state, BIG_FAIL="1")
        t0 = time.monotonic()
        r = subprocess.run([rb, "exec", "big.lua"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t = time.monotonic() - t0
        if r.returncode != 1 or b"stop here" not in r.stderr:
            sys.exit("resume did not fail as it should: " + r.stderr.decode())
        if i >= 3:
            times[state].append(t * 1000)
print("%.1f %.1f" % (statistics.median(times[url]), statistics.median(times[filestate])))
PY
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# the schema (and the floor's table) exist before the timed runs
RUNBOOK_STATE="$URL" "$RB" runs >/dev/null
runuser -u postgres -- "$PGBIN/psql" -X -q -h "$tmp/sock" -p "$port" -U postgres \
  -c "CREATE TABLE floor_events (run text NOT NULL, seq bigint NOT NULL, body text NOT NULL, UNIQUE (run, seq))"
# median wall time (ms) of `runbook runs` on the (empty) store $1
empty() {
  python3 - "$RB" "$1" "$RUNS" <<'PY'
import os, subprocess, sys, time, statistics
rb, state, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for i in range(runs + 3):
    t0 = time.monotonic()
    r = subprocess.run([rb, "runs"], env=dict(os.environ, RUNBOOK_STATE=state), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit("runs failed: " + r.stderr.decode())
    if i >= 3:
        times.append((time.monotonic() - t0) * 1000)
print("%.1f" % statistics.median(times))
PY
}
mkdir "$tmp/emptyfile"
pg_empty=$(empty "$URL")
file_empty=$(empty "$tmp/emptyfile")
psqlq() { runuser -u postgres -- "$PGBIN/psql" -X -At -h "$tmp/sock" -p "$port" -U postgres -c "$1"; }
w0=$(psqlq "SELECT wal_sync FROM pg_stat_wal")
RUNBOOK_STATE="$URL" "$RB" exec noop14.lua --new >/dev/null 2>&1
w1=$(psqlq "SELECT wal_sync FROM pg_stat_wal")
set -- $(fresh "$URL" "$tmp/filestate")
pg_ms=$1 floor_ms=$2 connect_ms=$3 file_ms=$4
set -- $(resumes "$URL" "$tmp/bigfile")
pg_resume=$1 file_resume=$2
set -- $(many "$URL")
pg_events=$1 pg_secs=$2 pg_rate=$3
set -- $(many "$tmp/manyfile")
file_rate=$3
sc=$(runuser -u postgres -- "$PGBIN/psql" -X -At -h "$tmp/sock" -p "$port" -U postgres -c "SHOW fsync" -c "SHOW synchronous_commit" | tr '\n' ' ')
count=$(runuser -u postgres -- "$PGBIN/psql" -X -At -h "$tmp/sock" -p "$port" -U postgres -c "SELECT count(*) FROM runbook_events")
verify=$(RUNBOOK_STATE="$URL" "$RB" audit verify --all | grep -c 'hash chain intact' || true)

echo "server: fsync, synchronous_commit = $sc; load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "0. \`runbook runs\` on an empty store (median of $RUNS): postgres $pg_empty ms, file $file_empty ms (the fixed cost of a command)"
echo "1. fresh 14-step no-op run (median of $RUNS):"
echo "   postgres store $pg_ms ms   file store $file_ms ms   ratio $(python3 -c "print('%.2f' % ($pg_ms / $file_ms))")x (target <= 2x)"
echo "   the PostgreSQL floor (bench/pg_floor.c: libpq, connect, the run's 16 synchronous and 14 lazy"
echo "   commits of one row each, nothing else) $floor_ms ms, $(python3 -c "print('%.2f' % ($floor_ms / $file_ms))")x the file store's whole run;"
echo "   runbook on PostgreSQL is $(python3 -c "print('%.2f' % ($pg_ms / $floor_ms))")x that floor; the floor connecting and leaving alone $connect_ms ms"
echo "   WAL flushes of one such run on postgres: $((w1 - w0)) (30 events)"
echo "2. 20 concurrent runs x $STEPS steps ($pg_events events):"
echo "   postgres store $pg_rate events/s ($pg_secs s)   file store $file_rate events/s   ratio $(python3 -c "print('%.2f' % ($pg_rate / $file_rate))") (target >= 2000 events/s on postgres)"
echo "   events in the table: $count; runs whose chain verifies: $verify"
echo "3. resume of a 10,000-event run that fails again at once (median of $RUNS):"
echo "   postgres store $pg_resume ms   file store $file_resume ms   ratio $(python3 -c "print('%.2f' % ($pg_resume / $file_resume))")x"
fail=0
python3 -c "import sys; sys.exit(0 if $pg_ms <= 2 * $file_ms else 1)" || { echo "MISSED: ratio over 2x"; fail=1; }
python3 -c "import sys; sys.exit(0 if $pg_rate >= 2000 else 1)" || { echo "MISSED: under 2,000 events/s"; fail=1; }
exit $fail
