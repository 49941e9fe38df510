#!/bin/bash
# The runbook.k8s benchmark, against one fake API server in one run:
#  1. what a user runs: apply a directory of 200 ConfigMaps and read them
#     back. Baseline: one `kubectl apply --server-side -f dir/` plus one
#     `kubectl get configmaps -o json` listing them, with the real kubectl
#     binary (the versioned one behind the google-cloud-sdk dispatcher,
#     which would double each call's cost). runbook: one `runbook exec`
#     whose step runs cluster:apply(dir) and cluster:list. Target: runbook
#     >= 5x faster. Also printed: requests per object and the connections
#     runbook opened, and, as a second line, a per-object loop
#     (`kubectl apply -f cm-N.yaml` + `kubectl get configmap cm-N` per object
#     against cluster:apply + cluster:get per object);
#  2. how fast `rollout_status` reacts to a Deployment turning ready: the
#     fake's status is flipped through its control API at t0, and the time
#     the runbook's next request reaches the server is taken as the moment
#     rollout_status returned (an upper bound). Median and 95th percentile
#     of ROLLOUTS (50) changes.
#
#   bench/k8s_bench.sh [RUNBOOK_BINARY]     (default build/runbook)
#
# KUBECTL overrides the kubectl binary; OBJECTS (200), PAIRS (OBJECTS) and
# ROLLOUTS (50) the sizes. Exits 1 when a target is missed, 77 when there is
# no kubectl.
set -eu
cd "$(dirname "$0")/.."
root=$PWD
RB=$(readlink -f "${1:-build/runbook}")
if [ -z "${KUBECTL:-}" ] && command -v kubectl >/dev/null; then
  # /usr/bin/kubectl may be google-cloud-sdk's dispatcher, which asks the
  # server for its version and then runs kubectl.1.NN: call the binary
  # matching the fake's version (1.31) directly when it is there
  kdir=$(dirname "$(readlink -f "$(command -v kubectl)")")
  if [ -x "$kdir/kubectl.1.31" ]; then KUBECTL=$kdir/kubectl.1.31; else KUBECTL=$(readlink -f "$(command -v kubectl)"); fi
fi
KUBECTL=${KUBECTL:-}
OBJECTS=${OBJECTS:-200}
PAIRS=${PAIRS:-$OBJECTS}
ROLLOUTS=${ROLLOUTS:-50}
if [ -z "$KUBECTL" ]; then echo "SKIP: no kubectl (set KUBECTL)"; exit 77; fi

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

sh tests/k8s/gen_certs.sh "$tmp/certs"
python3 tests/k8s/fake_apiserver.py --port 0 --cert "$tmp/certs/server.crt" --key "$tmp/certs/server.key" \
  --client-ca "$tmp/certs/ca.crt" --token bench-token --controller-delay 0.05 >"$tmp/ready" 2>"$tmp/fake.log" &
pid=$!
for _ in $(seq 200); do grep -q '^READY ' "$tmp/ready" 2>/dev/null && break; sleep 0.05; done
port=$(awk '/^READY /{print $2}' "$tmp/ready")
[ -n "$port" ] || { echo "the fake did not start"; cat "$tmp/fake.log"; exit 1; }
server=https://127.0.0.1:$port
ca=$tmp/certs/ca.crt
control() { python3 bench/k8s_bench.py control "$server" "$ca" "$@" >/dev/null; }

cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {server: "$server", certificate-authority-data: $(base64 -w0 "$ca")}
users:
- name: bench
  user: {token: bench-token}
contexts:
- name: fake
  context: {cluster: fake, user: bench, namespace: default}
current-context: fake
EOF
control POST /_fake/objects '{"objects":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"rb"}},{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kc"}}]}'

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }

# ---- 1. a directory of OBJECTS ConfigMaps, applied and read back ---------------

for ns in rb kc rbl kcl; do
  mkdir -p "$tmp/dir-$ns"
  for i in $(seq "$OBJECTS"); do
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d, namespace: %s}\ndata: {i: "%d"}\n' "$i" "$ns" "$i" >"$tmp/dir-$ns/cm-$i.yaml"
  done
done
control POST /_fake/objects '{"objects":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"rbl"}},{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kcl"}}]}'
cat >"$tmp/dir.lua" <<EOF
local k8s = require "runbook.k8s"
runbook "k8s-bench-dir" { params = { kubeconfig = {}, dir = {} } }
step "apply" { run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig, namespace = "rb" }
  local report = c:apply(ctx.params.dir)
  assert(#report == $OBJECTS, #report)
  assert(#c:list { kind = "ConfigMap" } == $OBJECTS)
end }
EOF
cat >"$tmp/pairs.lua" <<EOF
local k8s = require "runbook.k8s"
runbook "k8s-bench-pairs" { params = { kubeconfig = {} } }
step "pairs" { run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig, namespace = "rbl" }
  for i = 1, $PAIRS do
    c:apply { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "cm-" .. i }, data = { i = tostring(i) } }
    assert(c:get { kind = "ConfigMap", name = "cm-" .. i }.data.i == tostring(i))
  end
end }
EOF
k() { "$KUBECTL" --kubeconfig "$tmp/kubeconfig" --cache-dir "$tmp/kcache" "$@"; }
k get namespace kc >/dev/null # discovery cache warm, as on an operator's machine
rbx() { # state, lua file, extra args
  (cd "$tmp" && RUNBOOK_STATE=$tmp/$1 "$RB" exec "$2" --param kubeconfig="$tmp/kubeconfig" "${@:3}" >/dev/null 2>"$tmp/$1.log") ||
    { cat "$tmp/$1.log"; exit 1; }
}
nreq() { python3 bench/k8s_bench.py control "$server" "$ca" GET /_fake/requests | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }
load_before=$(uptime)

# the CPU time the fake has used (all its threads), to give its own cost per request
fake_cpu() { python3 bench/k8s_bench.py control "$server" "$ca" GET /_fake/cpu | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'; }
TIMEFORMAT='%U %S' # bash's time: user and system CPU of what it timed, children included
cpu_of() { awk '{printf "%.3f", $1 + $2}' "$1"; }

# the whole directory: kubectl, then runbook, each into its own fresh namespace
control DELETE /_fake/requests
f0=$(fake_cpu)
t0=$(now)
{ time { k apply --server-side -f "$tmp/dir-kc/" >/dev/null; k get configmaps -n kc -o json >/dev/null; }; } 2>"$tmp/kc.cpu"
t1=$(now)
f1=$(fake_cpu)
kc_dir=$(secs "$t0" "$t1")
kc_dir_fake=$(secs "$f0" "$f1")
kc_dir_cpu=$(cpu_of "$tmp/kc.cpu")
kc_dir_requests=$(nreq)
control DELETE /_fake/requests
f0=$(fake_cpu)
t0=$(now)
{ time rbx state-dir dir.lua --param dir="$tmp/dir-rb"; } 2>"$tmp/rb.cpu"
t1=$(now)
f1=$(fake_cpu)
rb_dir=$(secs "$t0" "$t1")
rb_dir_fake=$(secs "$f0" "$f1")
rb_dir_cpu=$(cpu_of "$tmp/rb.cpu")
rb_dir_requests=$(nreq)
dir_step_ms=$(grep -h '"type":"step.finished"' "$tmp"/state-dir/runs/*/journal.jsonl | sed 's/.*"ms":\([0-9]*\).*/\1/')
# the same again (all unchanged now), under strace, to count the connections runbook opens
(cd "$tmp" && RUNBOOK_STATE=$tmp/state-dir2 strace -f -e trace=connect -o "$tmp/connect.trace" \
  "$RB" exec dir.lua --param kubeconfig="$tmp/kubeconfig" --param dir="$tmp/dir-rb" >/dev/null 2>&1) || true
connects=$(grep -c "htons($port)" "$tmp/connect.trace" || true)
dir_ratio=$(echo "$kc_dir / $rb_dir" | bc -l)

# the per-object loop
t0=$(now)
rbx state-pairs pairs.lua
t1=$(now)
rb_secs=$(secs "$t0" "$t1")
step_ms=$(grep -h '"type":"step.finished"' "$tmp"/state-pairs/runs/*/journal.jsonl | sed 's/.*"ms":\([0-9]*\).*/\1/')
t0=$(now)
for i in $(seq "$PAIRS"); do
  k apply --server-side -f "$tmp/dir-kcl/cm-$i.yaml" >/dev/null
  k get configmap "cm-$i" -n kcl -o json >/dev/null
done
t1=$(now)
kc_secs=$(secs "$t0" "$t1")
ratio=$(echo "$kc_secs / $rb_secs" | bc -l)

# the fake's own cost per apply, with the cheapest client there is: curl's command
# line sends OBJECTS server-side applies of new ConfigMaps on one kept-alive
# connection (the floor under both sides above, which each pay per request)
alone=
if command -v curl >/dev/null; then
  control POST /_fake/objects '{"objects":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"alone"}}]}'
  for i in $(seq "$OBJECTS"); do
    [ "$i" = 1 ] || echo "next"
    printf 'url = "%s/api/v1/namespaces/alone/configmaps/cm-%d?fieldManager=bench"\nrequest = PATCH\n' "$server" "$i"
    printf 'data = "{\\"apiVersion\\":\\"v1\\",\\"kind\\":\\"ConfigMap\\",\\"metadata\\":{\\"name\\":\\"cm-%d\\"},\\"data\\":{\\"i\\":\\"%d\\"}}"\n' "$i" "$i"
    printf 'cacert = "%s"\nhttp1.1\noutput = /dev/null\nsilent\n' "$ca"
    printf 'header = "Authorization: Bearer bench-token"\nheader = "Content-Type: application/apply-patch+yaml"\nheader = "Expect:"\n'
  done >"$tmp/alone.curl"
  control DELETE /_fake/requests
  f0=$(fake_cpu)
  curl -K "$tmp/alone.curl"
  f1=$(fake_cpu)
  alone_ok=$(python3 bench/k8s_bench.py control "$server" "$ca" GET /_fake/requests | python3 -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin)["items"] if e["method"] == "PATCH" and e["status"] == 201))')
  [ "$alone_ok" = "$OBJECTS" ] || { echo "curl's applies: $alone_ok of $OBJECTS created"; exit 1; }
  alone=$(secs "$f0" "$f1")
fi

# ---- 2. rollout_status reaction --------------------------------------------------

objs=""
for i in $(seq "$ROLLOUTS"); do
  objs="$objs${objs:+,}{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"bench-$i\",\"namespace\":\"default\",\"generation\":1},\"spec\":{\"replicas\":1,\"selector\":{\"matchLabels\":{\"app\":\"b$i\"}},\"template\":{\"metadata\":{\"labels\":{\"app\":\"b$i\"}},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"nginx\"}]}}},\"status\":{\"observedGeneration\":1,\"replicas\":1,\"updatedReplicas\":1,\"availableReplicas\":0}}"
done
control POST /_fake/objects "{\"reconcile\":false,\"objects\":[$objs]}"
cat >"$tmp/react.lua" <<EOF
local k8s = require "runbook.k8s"
runbook "k8s-bench-react" { params = { kubeconfig = {} } }
step "react" { run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig }
  for i = 1, $ROLLOUTS do
    c:rollout_status { kind = "Deployment", name = "bench-" .. i, timeout = 60 }
    c:get { kind = "ConfigMap", name = "marker-" .. i } -- the first request after it returned
  end
end }
EOF
control DELETE /_fake/requests
(cd "$tmp" && RUNBOOK_STATE=$tmp/state2 "$RB" exec react.lua --param kubeconfig="$tmp/kubeconfig" >/dev/null 2>"$tmp/react.log") &
rbpid=$!
python3 bench/k8s_bench.py react "$server" "$ca" "$ROLLOUTS" >"$tmp/react.txt"
wait "$rbpid"
sort -n "$tmp/react.txt" >"$tmp/react.sorted"
median=$(awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}' "$tmp/react.sorted")
max=$(tail -1 "$tmp/react.sorted")
p95=$(awk '{a[NR]=$1} END {i=int(NR*0.95+0.999); if (i<1) i=1; if (i>NR) i=NR; print a[i]}' "$tmp/react.sorted")
min=$(head -1 "$tmp/react.sorted")
watches=$(python3 bench/k8s_bench.py control "$server" "$ca" GET /_fake/requests | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
dep = [e for e in items if e["path"] == "/apis/apps/v1/namespaces/default/deployments"]
print(sum(1 for e in dep if e["watch"]), sum(1 for e in dep if not e["watch"]),
      sum(1 for e in items if e["path"].startswith("/apis/apps/v1/namespaces/default/deployments/")))')

# ---- figures -------------------------------------------------------------------------

kversion=$("$KUBECTL" version --client -o json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["clientVersion"]["gitVersion"])' || echo "?")
load_after=$(uptime)
printf '\nApplying a directory of %d ConfigMaps and reading them back (kubectl %s: %s)\n' "$OBJECTS" "$kversion" "$KUBECTL"
printf '  %-58s %8.3f s  (the step: %s ms; %s requests, %.3f per object; %s connection(s))\n' "runbook exec: cluster:apply(dir) + cluster:list" "$rb_dir" "$dir_step_ms" "$rb_dir_requests" "$(echo "$rb_dir_requests / $OBJECTS" | bc -l)" "$connects"
printf '  %-58s %8.3f s  (%s requests)\n' "kubectl apply --server-side -f dir/ + kubectl get -o json" "$kc_dir" "$kc_dir_requests"
printf '  %-58s %8.1fx  (target >= 5x)\n' "kubectl time / runbook time" "$dir_ratio"
printf '  %-58s runbook %.3f s, kubectl %.3f s\n' "their own CPU (user + system)" "$rb_dir_cpu" "$kc_dir_cpu"
printf '  %-58s %.3f s during runbook (%.2f ms a request), %.3f s during kubectl (%.2f ms)\n' \
  "the fake's CPU (one process, one interpreter lock)" "$rb_dir_fake" "$(echo "$rb_dir_fake * 1000 / $rb_dir_requests" | bc -l)" \
  "$kc_dir_fake" "$(echo "$kc_dir_fake * 1000 / $kc_dir_requests" | bc -l)"
printf '  %-58s %8.1fx  (kubectl time / the fake'"'"'s CPU during runbook)\n' "the most this fake allows" "$(echo "$kc_dir / $rb_dir_fake" | bc -l)"
[ -z "$alone" ] || printf '  %-58s %.3f s for %d applies (%.2f ms each)\n' "the fake alone: curl's command line, one connection" \
  "$alone" "$OBJECTS" "$(echo "$alone * 1000 / $OBJECTS" | bc -l)"
printf '\nPer object: %d apply-then-get pairs (%d operations)\n' "$PAIRS" $((PAIRS * 2))
printf '  %-58s %8.2f s   (the step: %s ms)\n' "runbook exec, one step: cluster:apply + cluster:get each" "$rb_secs" "$step_ms"
printf '  %-58s %8.2f s\n' "bash loop: kubectl apply -f cm-N.yaml + kubectl get cm-N" "$kc_secs"
printf '  %-58s %8.1fx\n' "kubectl time / runbook time" "$ratio"
printf '\nrollout_status reacting to a Deployment turning ready (%d changes)\n' "$ROLLOUTS"
printf '  %-58s %s ms median, %s ms p95 (min %s, max %s)\n' "flip at t0 -> runbook's next request" "$median" "$p95" "$min" "$max"
set -- $watches
printf '  %-58s %s watches, %s lists, %s GETs of single Deployments\n' "requests on Deployments while waiting" "$1" "$2" "$3"
printf '\nload before: %s\nload after:  %s\n' "$load_before" "$load_after"

ok=1
awk -v r="$dir_ratio" 'BEGIN { exit !(r >= 5) }' || { echo "MISSED: runbook must be at least 5x faster than kubectl apply -f dir/ + get"; ok=0; }
[ "$ok" = 1 ]
