#!/bin/bash
# The real kubectl against the fake API server: proof that the fake speaks
# the API a client nobody here wrote expects.
#
#   tests/k8s/kubectl_test.sh          exit 0 all passed, 1 a check failed, 77 no kubectl
#
# KUBECTL overrides the client (default: kubectl on PATH, the google-cloud-sdk
# dispatcher, which runs the kubectl.1.NN matching the server's /version).
# KUBECTL_133 is a 1.33 client for the WatchList checks (default: next to the
# dispatcher, skipped when absent).
set -u

here=$(cd "$(dirname "$0")" && pwd)
KUBECTL=${KUBECTL:-$(command -v kubectl || true)}
if [ -z "$KUBECTL" ] || ! "$KUBECTL" version --client >/dev/null 2>&1; then
    echo "SKIP: kubectl not found (set KUBECTL)"
    exit 77
fi
KUBECTL_133=${KUBECTL_133:-$(dirname "$(readlink -f "$KUBECTL")")/kubectl.1.33}

tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
start=$(date +%s)

"$here/gen_certs.sh" "$tmp/certs"
python3 "$here/fake_apiserver.py" --port 0 --cert "$tmp/certs/server.crt" --key "$tmp/certs/server.key" \
    --client-ca "$tmp/certs/ca.crt" --token test-token --controller-delay 0.2 \
    >"$tmp/ready" 2>"$tmp/server.log" &
pid=$!
# up to 30 s: python3 starting on a busy machine
for _ in $(seq 600); do
    grep -q '^READY ' "$tmp/ready" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.05
done
port=$(awk '/^READY /{print $2}' "$tmp/ready")
if [ -z "$port" ]; then
    echo "FAIL: the fake did not start"; cat "$tmp/server.log"; exit 1
fi
server=https://127.0.0.1:$port

b64() { base64 -w0 "$1"; }
cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$tmp/certs/ca.crt")
- name: wrong-ca
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$tmp/certs/other-ca.crt")
users:
- name: token
  user:
    token: test-token
- name: cert
  user:
    client-certificate-data: $(b64 "$tmp/certs/client.crt")
    client-key-data: $(b64 "$tmp/certs/client.key")
- name: bad-token
  user:
    token: not-the-token
contexts:
- name: fake
  context: {cluster: fake, user: token, namespace: demo}
- name: cert
  context: {cluster: fake, user: cert}
- name: bad
  context: {cluster: fake, user: bad-token}
- name: wrong-ca
  context: {cluster: wrong-ca, user: token}
current-context: fake
EOF

k() { "$KUBECTL" --kubeconfig "$tmp/kubeconfig" --cache-dir "$tmp/cache" "$@"; }
k133() { "$KUBECTL_133" --kubeconfig "$tmp/kubeconfig" --cache-dir "$tmp/cache133" "$@"; }

# The control API, over the same TLS (it needs no credentials).
fake() { # METHOD PATH [JSON]
    python3 - "$server" "$tmp/certs/ca.crt" "$@" <<'PY'
import json, ssl, sys, urllib.request
server, ca, method, path = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else None
req = urllib.request.Request(server + path, data=body, method=method, headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca)).read().decode())
PY
}

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; sed 's/^/    /' "$tmp/out" | head -20; }

# check NAME CMD...: the command succeeds.
check() {
    local name=$1; shift
    if "$@" >"$tmp/out" 2>&1; then pass "$name"; else fail "$name"; fi
}
# check_out NAME REGEX CMD...: the command succeeds and its output matches.
check_out() {
    local name=$1 regex=$2; shift 2
    if "$@" >"$tmp/out" 2>&1 && grep -Eq -- "$regex" "$tmp/out"; then pass "$name"; else fail "$name"; fi
}
# check_fails NAME REGEX CMD...: the command fails and its output matches.
check_fails() {
    local name=$1 regex=$2; shift 2
    if ! "$@" >"$tmp/out" 2>&1 && grep -Eq -- "$regex" "$tmp/out"; then pass "$name"; else fail "$name"; fi
}
# same NAME EXPECTED ACTUAL
same() {
    printf 'expected: %s\nactual:   %s\n' "$2" "$3" >"$tmp/out"
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1"; fi
}
jp() { k get "$@" 2>/dev/null; }

cat >"$tmp/app.yaml" <<'EOF'
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: pg
  namespace: shop
spec:
  serviceName: pg
  replicas: 1
  selector:
    matchLabels: {app: pg}
  template:
    metadata:
      labels: {app: pg}
    spec:
      containers:
      - name: pg
        image: postgres:16
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 10Gi
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: pg-backup
  namespace: shop
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        metadata:
          annotations:
            fake.runbook.dev/logs: |
              starting backup of bowmark_reports_paving
              dumped 42 tables
              uploaded to spaces
        spec:
          restartPolicy: Never
          containers:
          - name: backup
            image: postgres:16
            command: ["sh", "-c", "pg_dump | upload"]
EOF
sed 's/replicas: 2/replicas: 3/' "$tmp/app.yaml" >"$tmp/app3.yaml"

echo "kubectl $(k version -o json 2>/dev/null | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["clientVersion"]["gitVersion"], "against fake", v["serverVersion"]["gitVersion"])')"

# --- reads and creates ------------------------------------------------------
check_out "get namespaces" '^default ' k get namespaces
check_out "get pods -A (empty)" 'No resources found' k get pods -A
check_out "create namespace" 'namespace/demo created' k create namespace demo
check_out "create secret generic --from-literal" 'secret/db created' \
    k create secret generic db --from-literal=password=s3cret --from-literal=user=app
same "secret data is base64" "$(printf s3cret | base64)" "$(jp secret db -o jsonpath='{.data.password}')"
same "secret type defaults to Opaque" "Opaque" "$(jp secret db -o jsonpath='{.type}')"
check_fails "create an existing secret: AlreadyExists" 'secrets "db" already exists' \
    k create secret generic db --from-literal=a=b
check_fails "get a missing secret: NotFound" 'NotFound.*secrets "nope" not found' k get secret nope

# --- server-side apply ------------------------------------------------------
check_out "apply --server-side (5 kinds)" 'cronjob.batch/pg-backup serverside-applied' \
    k apply --server-side -f "$tmp/app.yaml"
check_out "rollout status deployment" 'successfully rolled out' \
    k -n shop rollout status deployment/web --timeout=30s
rv1=$(jp -n shop deployment web -o jsonpath='{.metadata.resourceVersion}')
check_out "apply --server-side again" 'deployment.apps/web serverside-applied' k apply --server-side -f "$tmp/app.yaml"
same "re-apply leaves the resourceVersion (unchanged)" "$rv1" \
    "$(jp -n shop deployment web -o jsonpath='{.metadata.resourceVersion}')"
check_fails "apply by another field manager conflicts" 'conflict with "kubectl": \.spec\.replicas' \
    k apply --server-side --field-manager=other -f "$tmp/app3.yaml"
check_out "apply --force-conflicts" 'deployment.apps/web serverside-applied' \
    k apply --server-side --field-manager=other --force-conflicts -f "$tmp/app3.yaml"
same "forced apply took .spec.replicas" "3" "$(jp -n shop deployment web -o jsonpath='{.spec.replicas}')"
check_out "managedFields name both managers" '"manager": "other"' \
    k get -n shop deployment web -o json --show-managed-fields

# --- rollouts and waits -------------------------------------------------------
check_out "rollout status after the forced apply" 'successfully rolled out' \
    k -n shop rollout status deployment/web --timeout=30s
check_out "rollout status statefulset" 'roll(ing)? ?out complete|partitioned roll out complete' \
    k -n shop rollout status statefulset/pg --timeout=30s
check_out "wait --for=condition=Available" 'condition met' \
    k -n shop wait --for=condition=Available deployment/web --timeout=30s
gen1=$(jp -n shop deployment web -o jsonpath='{.metadata.generation}')
check_out "rollout restart" 'deployment.apps/web restarted' k -n shop rollout restart deployment/web
gen2=$(jp -n shop deployment web -o jsonpath='{.metadata.generation}')
same "restart bumped the generation" "$((gen1 + 1))" "$gen2"
check_out "rollout status after restart" 'successfully rolled out' \
    k -n shop rollout status deployment/web --timeout=30s
check_out "wait for a PVC with jsonpath" 'condition met' \
    k -n shop wait --for=jsonpath='{.status.phase}'=Bound pvc/data-pg-0 --timeout=30s

# --- jobs from cronjobs, logs -----------------------------------------------
check_out "create job --from=cronjob" 'job.batch/pg-backup-manual created' \
    k -n shop create job --from=cronjob/pg-backup pg-backup-manual
check_out "wait --for=condition=complete job" 'condition met' \
    k -n shop wait --for=condition=complete job/pg-backup-manual --timeout=30s
check_out "logs job/..." 'dumped 42 tables' k -n shop logs job/pg-backup-manual
pod=$(jp -n shop pods -l job-name=pg-backup-manual -o jsonpath='{.items[0].metadata.name}')
check_out "logs of the job's pod --tail=1" '^uploaded to spaces$' k -n shop logs "$pod" --tail=1
fake POST /_fake/fail-job '{"namespace": "shop", "name": "pg-backup-broken"}' >/dev/null
check_out "create a job that will fail" 'created' k -n shop create job --from=cronjob/pg-backup pg-backup-broken
check_out "wait --for=condition=failed job" 'condition met' \
    k -n shop wait --for=condition=failed job/pg-backup-broken --timeout=30s
same "failed job reason" "BackoffLimitExceeded" \
    "$(jp -n shop job pg-backup-broken -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}')"

# --- WatchList clients (sendInitialEvents + initial-events-end bookmark) -----
fake DELETE /_fake/requests >/dev/null
check_out "wait with KUBE_FEATURE_WatchListClient=true" 'condition met' \
    env KUBE_FEATURE_WatchListClient=true "$KUBECTL" --kubeconfig "$tmp/kubeconfig" --cache-dir "$tmp/cache" \
    -n shop wait --for=condition=Available deployment/web --timeout=15s
check_out "... and it used sendInitialEvents" 'sendInitialEvents=true' fake GET /_fake/requests
if [ -x "$KUBECTL_133" ]; then
    check_out "kubectl 1.33 wait with WatchListClient" 'condition met' \
        env KUBE_FEATURE_WatchListClient=true "$KUBECTL_133" --kubeconfig "$tmp/kubeconfig" \
        --cache-dir "$tmp/cache133" -n shop wait --for=condition=complete job/pg-backup-manual --timeout=15s
    check_out "kubectl 1.33 rollout status" 'successfully rolled out' \
        k133 -n shop rollout status deployment/web --timeout=15s
else
    echo "SKIP: no kubectl 1.33 at $KUBECTL_133"
fi

# --- exec over WebSocket (v5.channel.k8s.io) -----------------------------------
# kubectl 1.30+ runs exec over WebSocket by default; the versioned binary,
# because the dispatcher may pick an older one by the server's version.
KUBECTL_EXEC=${KUBECTL_EXEC:-$(dirname "$(readlink -f "$KUBECTL")")/kubectl.1.31}
if [ -x "$KUBECTL_EXEC" ]; then
    kx() { "$KUBECTL_EXEC" --kubeconfig "$tmp/kubeconfig" --cache-dir "$tmp/cachex" -n default "$@"; }
    fake POST /_fake/objects '{"reconcile": false, "objects": [
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "image": "busybox"}]}, "status": {"phase": "Running"}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "waiting", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "image": "busybox"}]}, "status": {"phase": "Pending"}}]}' >/dev/null
    check_out "exec: stdout" '^hello world$' kx exec shell -- echo hello world
    check_out "exec: stdin (-i)" '^piped$' sh -c "echo piped | '$KUBECTL_EXEC' --kubeconfig '$tmp/kubeconfig' --cache-dir '$tmp/cachex' -n default exec -i shell -- cat"
    check_out "exec: stderr" 'to-stderr' kx exec shell -c app -- sh -c 'echo to-stderr >&2'
    kx exec shell -- sh -c 'exit 7' >"$tmp/out" 2>&1
    same "exec: the exit code comes through" 7 "$?"
    check_fails "exec: container not found" 'container nope is not valid for pod shell' kx exec shell -c nope -- true
    check_fails "exec: pod not found" 'pods "ghost" not found' kx exec ghost -- true
    check_fails "exec: pod not running" 'container not found' kx exec waiting -- true
    check_out "exec: it used v5.channel.k8s.io" 'v5.channel.k8s.io' fake GET /_fake/execs
else
    echo "SKIP: no kubectl 1.30+ at $KUBECTL_EXEC for exec over WebSocket"
fi
# kubectl port-forward (SPDY, tunnelled in WebSocket or plain) has its own
# test: kubectl_portforward_test.py.

# --- deletes ------------------------------------------------------------------
check_out "delete secret" 'secret "db" deleted' k delete secret db
check_out "delete deployment" 'deployment.apps "web" deleted' k -n shop delete deployment web
check_fails "deleted deployment is gone" 'NotFound' k -n shop get deployment web
check_out "delete namespace --wait" 'namespace "shop" deleted' k delete namespace shop --wait --timeout=30s
check_fails "deleted namespace is gone" 'namespaces "shop" not found' k get namespace shop

# --- authentication -----------------------------------------------------------
check_out "client certificate auth" '^default ' k --context cert get namespaces
check_fails "bad token is Unauthorized" 'Unauthorized' k --context bad get namespaces
check_fails "server cert from an unknown CA is refused" 'certificate signed by unknown authority|x509' \
    k --context wrong-ca get namespaces

elapsed=$(( $(date +%s) - start ))
echo "$passed passed, $failed failed (${elapsed}s)"
[ "$failed" -eq 0 ]
