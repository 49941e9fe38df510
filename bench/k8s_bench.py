#!/usr/bin/env python3
"""Helpers for bench/k8s_bench.sh: the fake API server's control API, and
the rollout reaction measurement.

    k8s_bench.py control SERVER CA METHOD PATH [JSON]
    k8s_bench.py react SERVER CA N        flip N frozen Deployments to ready, one at a
                                           time while runbook waits on it; print the
                                           reaction times (ms), one a line
"""
import json
import ssl
import sys
import time
import urllib.request


def call(server, ca, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=ca)
    return json.loads(urllib.request.urlopen(req, context=ctx).read().decode() or "null")


NOT_READY = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}
READY = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
         "availableReplicas": 1}


def react(server, ca, n):
    """For each bench-I: wait until runbook watches it, flip it ready at t0,
    and find runbook's next request (the GET of marker-I it makes as soon as
    rollout_status returns). reaction = that request's arrival - t0."""
    out = []
    for i in range(1, n + 1):
        name = "bench-%d" % i
        deadline = time.time() + 30
        since = 0
        while True:
            items = call(server, ca, "GET", "/_fake/requests?since=%d" % since)["items"]
            watching = [e for e in items if e["watch"] and name in e["params"].get("fieldSelector", "")]
            if watching:
                break
            if time.time() > deadline:
                sys.exit("runbook never watched " + name)
            time.sleep(0.02)
        time.sleep(0.2)  # let the watch settle: the flip is a change seen live
        t0 = time.time()
        call(server, ca, "POST", "/_fake/status", {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "namespace": "default", "name": name, "status": READY})
        marker = "/configmaps/marker-%d" % i
        while True:
            hits = [e for e in call(server, ca, "GET", "/_fake/requests")["items"] if e["path"].endswith(marker)]
            if hits:
                out.append((hits[0]["time"] - t0) * 1000.0)
                break
            if time.time() > deadline:
                sys.exit("runbook never asked for " + marker)
            time.sleep(0.02)
    for ms in out:
        print("%.1f" % ms)


def main():
    cmd = sys.argv[1]
    if cmd == "control":
        server, ca, method, path = sys.argv[2:6]
        body = json.loads(sys.argv[6]) if len(sys.argv) > 6 else None
        print(json.dumps(call(server, ca, method, path, body)))
    elif cmd == "react":
        react(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
