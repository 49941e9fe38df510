#!/bin/sh
# runbook serve and runbook report over a run of 10,000 events (every one an
# audited action with a log line): how fast serve starts listening, how long
# the run page, the API and the report take, and how long Debian's chromium
# takes to load and render the page. Targets: start <= 50 ms; page rendered
# in the browser < 1 s. Prints the figures; exits non-zero on a miss.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh test >/dev/null
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build-bench >/dev/null
RB=$PWD/build-bench/runbook
src=$PWD

tmp=$(mktemp -d)
trap 'kill $(cat "$tmp/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$tmp"
cat > big.lua <<'LUA'
runbook "big" {}
step "S1" { run = function(ctx)
  for i = 1, 9994 do
    ctx:action { kind = "demo", summary = "object " .. i .. " applied", verb = "apply", code = 200 }
    if i % 10 == 0 then ctx:log("applied %d of 9994", i) end
  end
end }
step "S2" { needs = "S1", run = function() end }
LUA
RUNBOOK_STATE=$tmp/state $RB exec big.lua >/dev/null 2>&1
id=$(ls "$tmp/state/runs")
events=$(wc -l < "$tmp/state/runs/$id/journal.jsonl")
echo "run $id: $events events"

# 1. start: from exec to the line saying where it listens (median of 20)
start_ms=$(python3 - "$RB" "$tmp/state" <<'PY'
import subprocess, sys, time, statistics
rb, state = sys.argv[1], sys.argv[2]
times = []
for _ in range(20):
    t = time.monotonic()
    p = subprocess.Popen([rb, "serve", "--state", state, "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    times.append((time.monotonic() - t) * 1000)
    assert "http://127.0.0.1:" in line, line
    p.terminate(); p.wait()
print("%.1f" % statistics.median(times))
PY
)
echo "serve: listening after $start_ms ms (median of 20)"

# 2. the page and the API, served (medians of 20 after one cold request)
$RB serve --state "$tmp/state" --listen 127.0.0.1:0 2> serve.err & echo $! > pid
while ! grep -q "on http" serve.err; do sleep 0.01; done
url=$(grep -o 'http://127.0.0.1:[0-9]*' serve.err)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for path in "/runs/$id" "/api/runs/$id" "/api/runs/$id/events?after=9990" "/api/runs/$id/events?after=0" "/api/runs"; do
  cold=$(curl -s -o /dev/null -w '%{time_total}' "$url$path")
  warm=$(for i in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' "$url$path"; done | median)
  size=$(curl -s "$url$path" | wc -c)
  printf '%-40s cold %6.1f ms  warm %6.1f ms  %8d bytes\n' "GET $path" "$(echo "$cold*1000" | bc)" "$(echo "$warm*1000" | bc)" "$size"
done

# CPU time of the same in process (the machine's load inflates wall times)
(cd "$src" && BENCH_STATE="$tmp/state" "$RB" test bench/serve_cpu.lua | grep "cpu median")

# 3. the report command
hyperfine -N --style none --warmup 2 --runs 10 "$RB report $id --state $tmp/state --output $tmp/r.html" --export-json report.json >/dev/null
report_ms=$(python3 -c "import json;print('%.1f' % (json.load(open('report.json'))['results'][0]['median']*1000))")
echo "runbook report: $report_ms ms (median of 10), $(wc -c < r.html) bytes"

# 4. the browser: navigation start to the load event, and to the first poll
render=$(cd "$src/tests/web" && node ../../bench/serve_render.js "$url/runs/$id" "$tmp")
echo "chromium: $render"
kill "$(cat pid)"
python3 -c "import sys; sys.exit(0 if float('$start_ms') <= 50 else 1)" || { echo "MISS: start > 50 ms"; exit 1; }
