#!/bin/bash
# The runbook.k8s benchmark (issue 3), against one fake API server in one run:
#  1. 200 apply-then-get pairs of ConfigMaps from one runbook step (one
#     `runbook exec`), against a bash loop running the same 400 operations
#     with the real kubectl (`apply --server-side -f` and `get -o json`);
#     target: runbook takes at most 1/20 of kubectl's time;
#  2. how fast `rollout_status` reacts to a Deployment turning ready: the
#     fake's status is flipped through its control API at t0, and the time
#     the runbook's next request reaches the server is taken as the moment
#     rollout_status returned (an upper bound); target: within 100 ms.
#
#   bench/k8s_bench.sh [RUNBOOK_BINARY]     (default build/runbook)
#
# KUBECTL overrides the kubectl used; PAIRS (200) and ROLLOUTS (20) the sizes.
# Prints the figures side by side; exits 1 when a target is missed, 77 when
# there is no kubectl.
set -eu
cd "$(dirname "$0")/.."
root=$PWD
RB=$(readlink -f "${1:-build/runbook}")
KUBECTL=${KUBECTL:-$(command -v kubectl || true)}
PAIRS=${PAIRS:-200}
ROLLOUTS=${ROLLOUTS:-20}
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

# ---- 1. 200 apply-then-get pairs ---------------------------------------------

cat >"$tmp/pairs.lua" <<EOF
local k8s = require "runbook.k8s"
runbook "k8s-bench-pairs" { params = { kubeconfig = {} } }
step "pairs" { run = function(ctx)
  local c = k8s.connect { kubeconfig = ctx.params.kubeconfig, namespace = "rb" }
  for i = 1, $PAIRS do
    c:apply { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "cm-" .. i }, data = { i = tostring(i) } }
    assert(c:get { kind = "ConfigMap", name = "cm-" .. i }.data.i == tostring(i))
  end
end }
EOF
t0=$(now)
(cd "$tmp" && RUNBOOK_STATE=$tmp/state "$RB" exec pairs.lua --param kubeconfig="$tmp/kubeconfig" >/dev/null 2>"$tmp/pairs.log")
t1=$(now)
rb_secs=$(secs "$t0" "$t1")
step_ms=$(grep -h '"type":"step.finished"' "$tmp"/state/runs/*/journal.jsonl | sed 's/.*"ms":\([0-9]*\).*/\1/')

for i in $(seq "$PAIRS"); do
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d, namespace: kc}\ndata: {i: "%d"}\n' "$i" "$i" >"$tmp/cm-$i.yaml"
done
k() { "$KUBECTL" --kubeconfig "$tmp/kubeconfig" --cache-dir "$tmp/kcache" "$@"; }
k get namespace kc >/dev/null # discovery cache warm, as on an operator's machine
t0=$(now)
for i in $(seq "$PAIRS"); do
  k apply --server-side -f "$tmp/cm-$i.yaml" >/dev/null
  k get configmap "cm-$i" -n kc -o json >/dev/null
done
t1=$(now)
kc_secs=$(secs "$t0" "$t1")
ratio=$(echo "$kc_secs / $rb_secs" | bc -l)

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
min=$(head -1 "$tmp/react.sorted")
watches=$(python3 bench/k8s_bench.py control "$server" "$ca" GET /_fake/requests | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
dep = [e for e in items if e["path"] == "/apis/apps/v1/namespaces/default/deployments"]
print(sum(1 for e in dep if e["watch"]), sum(1 for e in dep if not e["watch"]),
      sum(1 for e in items if e["path"].startswith("/apis/apps/v1/namespaces/default/deployments/")))')

# ---- figures -------------------------------------------------------------------------

kversion=$("$KUBECTL" --kubeconfig "$tmp/kubeconfig" version -o json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["clientVersion"]["gitVersion"])' || echo "?")
printf '\n%s apply-then-get pairs (%d operations)\n' "$PAIRS" $((PAIRS * 2))
printf '  %-44s %8.2f s   (the step itself: %s ms)\n' "runbook exec, one step" "$rb_secs" "$step_ms"
printf '  %-44s %8.2f s\n' "bash loop of kubectl $kversion" "$kc_secs"
printf '  %-44s %8.1fx   (target >= 20x)\n' "kubectl time / runbook time" "$ratio"
printf '\nrollout_status reacting to a Deployment turning ready (%d rollouts)\n' "$ROLLOUTS"
printf '  %-44s %8s ms  (min %s, max %s; target <= 100 ms)\n' "median, flip at t0 -> runbook's next request" "$median" "$min" "$max"
set -- $watches
printf '  %-44s %s watches, %s lists, %s GETs of single Deployments\n' "requests on Deployments while waiting" "$1" "$2" "$3"

ok=1
awk -v r="$ratio" 'BEGIN { exit !(r >= 20) }' || { echo "MISSED: runbook must take at most 1/20 of kubectl's time"; ok=0; }
awk -v m="$max" 'BEGIN { exit !(m <= 100) }' || { echo "MISSED: a rollout_status reaction took more than 100 ms"; ok=0; }
[ "$ok" = 1 ]
