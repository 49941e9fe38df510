#!/usr/bin/env python3
"""A fake Kubernetes API server for runbook's tests (and the real kubectl).

    python3 tests/k8s/fake_apiserver.py --port 0 --cert server.crt --key server.key \\
        --client-ca ca.crt --token TOKEN [--token TOKEN2,user2] [--controller-delay 0.3]

Listens on 127.0.0.1 only, over HTTPS, and prints exactly one line
`READY <port>` on stdout once it accepts connections. SIGTERM stops it.
Python 3 standard library only.

This file is the entry point: the command line, the fake cluster (Fake: its
settings, users and request log) and the control API's dispatch table. The
other modules, the options, authentication and the control API
(/_fake/...) are described in tests/k8s/README.md.
"""

import argparse
import os
import resource
import signal
import socket
import ssl
import sys
import threading
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_controllers import Controllers  # noqa: E402
from fake_faults import Faults  # noqa: E402
from fake_patch import clone, merge_patch  # noqa: E402
from fake_routing import Handler  # noqa: E402
from fake_store import Store  # noqa: E402
from fake_types import bad_request, not_found  # noqa: E402

# ==========================================================================
# The server
# ==========================================================================


class Fake:
    """One fake cluster: store, controllers, faults, users and settings."""

    def __init__(self, args):
        self.store = Store(history=args.watch_history)
        self.tokens = {}
        for spec in args.token:
            token, _, user = spec.partition(",")
            self.tokens[token] = user or "admin"
        self.defaults = {"controller_delay": args.controller_delay, "log_interval": args.log_interval,
                         "bookmark_interval": args.bookmark_interval, "watchlist": not args.no_watchlist,
                         "controllers": True, "daemonset_nodes": 3, "exec_v5": True}
        self.config = dict(self.defaults)
        self.version = args.kube_version
        self.verbose = args.verbose
        self.faults = Faults()
        self.cli_forbids = []
        for spec in args.forbid:
            parts = spec.split(":")
            if len(parts) not in (3, 4):
                raise SystemExit("--forbid wants USER:VERB:RESOURCE[:NAMESPACE], got %r" % spec)
            self.cli_forbids.append(tuple(parts) + (("*",) if len(parts) == 3 else ()))
        self.faults.clear(self.cli_forbids)
        self.requests = []
        self.requests_lock = threading.Lock()
        self.request_seq = 0
        self.pod_ports = {}  # (namespace, pod, port) -> local TCP port
        self.execs = []      # exec and port-forward sessions, as started
        self.stopping = threading.Event()
        self.controllers = Controllers(self)

    def version_info(self):
        major, minor, patch = (self.version.split(".") + ["0", "0"])[:3]
        return {"major": major, "minor": minor, "gitVersion": "v" + self.version,
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
                "platform": "linux/amd64"}

    def record(self, entry):
        with self.requests_lock:
            self.request_seq += 1
            entry["seq"] = self.request_seq
            self.requests.append(entry)
            if len(self.requests) > 20000:
                del self.requests[:10000]

    def control(self, method, name, params, data):
        """One control API call (tests/k8s/README.md); None for an unknown endpoint."""
        handler = CONTROL.get((method, name))
        return handler(self, params, data) if handler else None

    # -- the control API's endpoints, one method each (CONTROL below) -------

    def health(self, params, data):
        return {"ok": True, "resourceVersion": self.store.rv}

    def cpu(self, params, data):
        """The CPU time this process has used (all its threads), for benchmarks
        that need the fake's own cost per request."""
        r = resource.getrusage(resource.RUSAGE_SELF)
        return {"user": r.ru_utime, "system": r.ru_stime, "seconds": r.ru_utime + r.ru_stime}

    def reset(self, params, data):
        self.faults.clear(self.cli_forbids)
        with self.requests_lock:
            self.requests = []
            self.pod_ports = {}
            self.execs = []
        self.config = dict(self.defaults)
        self.store.reset()
        return {"ok": True, "resourceVersion": self.store.rv}

    def add_faults(self, params, data):
        rules = data if isinstance(data, list) else [data]
        return {"added": [self.faults.add(r) for r in rules]}

    def list_faults(self, params, data):
        with self.faults.lock:
            return {"rules": [dict(r) for r in self.faults.rules]}

    def clear_faults(self, params, data):
        with self.faults.lock:
            self.faults.rules = []
        return {"ok": True}

    def stuck(self, params, data):
        key = (data.get("kind", "Deployment"), data.get("namespace", ""), data.get("name", ""))
        with self.faults.lock:
            self.faults.stuck.add(key)
        self.kick_named(key)
        return {"ok": True}

    def fail_job(self, params, data):
        with self.faults.lock:
            self.faults.failing_jobs.append({"namespace": data.get("namespace"), "name": data.get("name")})
        return {"ok": True}

    def clear_fail_job(self, params, data):
        with self.faults.lock:
            self.faults.failing_jobs = []
        return {"ok": True}

    def job_logs(self, params, data):
        if not isinstance(data.get("logs"), str):
            raise bad_request("job-logs needs \"logs\": the lines, newline-separated")
        with self.faults.lock:
            self.faults.job_logs.append({"namespace": data.get("namespace"), "name": data.get("name"),
                                         "prefix": data.get("prefix"), "logs": data["logs"]})
        return {"ok": True}

    def clear_job_logs(self, params, data):
        with self.faults.lock:
            self.faults.job_logs = []
        return {"ok": True}

    def forbid(self, params, data):
        with self.faults.lock:
            self.faults.forbids.append((data.get("user", "*"), data.get("verb", "*"), data.get("resource", "*"),
                                        data.get("namespace", "*")))
        return {"ok": True}

    def list_requests(self, params, data):
        since = int(params.get("since", 0))
        with self.requests_lock:
            return {"items": [dict(e) for e in self.requests if e["seq"] > since]}

    def record_exec(self, entry):
        with self.requests_lock:
            self.execs.append(entry)

    def update_exec(self, entry, change):
        """Changes a recorded session (a dict of new values, or a function of the entry) under the lock."""
        with self.requests_lock:
            change(entry) if callable(change) else entry.update(change)

    def pod_port(self, ns, pod, port):
        with self.requests_lock:
            return self.pod_ports.get((ns, pod, port))

    def add_pod_port(self, params, data):
        try:
            key = (data.get("namespace") or "default", data["pod"], int(data["port"]))
            target = int(data["local_port"])
        except (KeyError, TypeError, ValueError):
            raise bad_request('pod-ports needs "pod", "port" and "local_port" (and "namespace")')
        with self.requests_lock:
            self.pod_ports[key] = target
        return {"ok": True}

    def list_execs(self, params, data):
        with self.requests_lock:
            return {"items": [dict(e) for e in self.execs]}

    def clear_requests(self, params, data):
        with self.requests_lock:
            self.requests = []
        return {"ok": True}

    def seed(self, params, data):
        store = self.store
        objs = data.get("objects") if isinstance(data, dict) and "objects" in data else data
        objs = objs.get("items", [objs]) if isinstance(objs, dict) else objs
        out = []
        for obj in objs:
            rt = store.types.for_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
            if rt is None:
                raise bad_request("unknown kind %s %s" % (obj.get("apiVersion"), obj.get("kind")))
            ns = obj.get("metadata", {}).get("namespace") or ("default" if rt.namespaced else "")
            with store.lock:
                if rt.namespaced and store.namespace_of(ns) is None:
                    raise bad_request('namespace "%s" does not exist; seed it first' % ns)
                created = store.create(rt, ns, clone(obj), "fake-seed", seed=True)
                if isinstance(data, dict) and data.get("reconcile") is False:
                    with self.faults.lock:
                        self.faults.frozen.add(created["metadata"]["uid"])
            out.append(created)
        return {"objects": out}

    def set_status(self, params, data):
        store = self.store
        rt = store.types.for_kind(data.get("apiVersion", ""), data.get("kind", ""))
        if rt is None:
            raise bad_request("unknown kind %s %s" % (data.get("apiVersion"), data.get("kind")))
        with store.lock:
            obj = store._get(rt, data.get("namespace", ""), data.get("name", ""))
            if obj is None:
                raise not_found(rt.group, rt.plural, data.get("name", ""))
            if data.get("freeze", True):
                with self.faults.lock:
                    self.faults.frozen.add(obj["metadata"]["uid"])
            new = clone(obj)
            new["status"] = merge_patch(obj.get("status") or {}, data.get("status") or {}) \
                if data.get("merge") else clone(data.get("status") or {})
            return {"object": store.write(rt, new)}

    def compact(self, params, data):
        self.store.compact()
        return {"ok": True, "resourceVersion": self.store.rv}

    def get_config(self, params, data):
        return dict(self.config)

    def set_config(self, params, data):
        unknown = set(data) - set(self.config)
        if unknown:
            raise bad_request("unknown settings: %s" % ", ".join(sorted(unknown)))
        self.config.update(data)
        return dict(self.config)

    def kick_named(self, key):
        kind, ns, name = key
        for rt in self.store.types.by_path.values():
            if rt.kind == kind:
                self.controllers.kick((rt.group, rt.plural, ns, name), delay=0)


# The control API: (method, path under /_fake/) -> Fake method. Documented
# in tests/k8s/README.md, the one place to look it up.
CONTROL = {
    ("GET", "health"): Fake.health,
    ("GET", "cpu"): Fake.cpu,
    ("POST", "reset"): Fake.reset,
    ("POST", "faults"): Fake.add_faults,
    ("GET", "faults"): Fake.list_faults,
    ("DELETE", "faults"): Fake.clear_faults,
    ("POST", "stuck"): Fake.stuck,
    ("POST", "fail-job"): Fake.fail_job,
    ("DELETE", "fail-job"): Fake.clear_fail_job,
    ("POST", "job-logs"): Fake.job_logs,
    ("DELETE", "job-logs"): Fake.clear_job_logs,
    ("POST", "forbid"): Fake.forbid,
    ("GET", "requests"): Fake.list_requests,
    ("DELETE", "requests"): Fake.clear_requests,
    ("POST", "objects"): Fake.seed,
    ("POST", "status"): Fake.set_status,
    ("POST", "compact"): Fake.compact,
    ("GET", "config"): Fake.get_config,
    ("POST", "pod-ports"): Fake.add_pod_port,
    ("GET", "execs"): Fake.list_execs,
    ("POST", "config"): Fake.set_config,
}


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a client opening more connections at
    # once (curl's multi pool, kubectl's parallel discovery) overflows it, the kernel
    # drops the SYN, and the connection comes a full second later on the client's
    # retransmit. Go's net.Listen (so the real apiserver) asks for the kernel's maximum.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address, fake, context):
        self.fake = fake
        self.context = context
        super().__init__(address, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # as Go's net/http (so the real apiserver) does: without it, Nagle holds a
        # response body written after its headers until the client's delayed ACK (40 ms)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake runs later in the handler thread, so a slow or
        # failing client never blocks the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (ssl.SSLError, ConnectionError, socket.timeout, OSError)):
            if self.fake.verbose:
                sys.stderr.write("fake-apiserver: connection from %s: %s\n" % (client_address, err))
            return
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Kubernetes API server for tests (HTTPS, 127.0.0.1 only).")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="server private key (PEM)")
    ap.add_argument("--client-ca", help="CA that signs accepted client certificates")
    ap.add_argument("--token", action="append", default=[], help="accepted bearer token, TOKEN or TOKEN,USER")
    ap.add_argument("--forbid", action="append", default=[], help="USER:VERB:RESOURCE[:NAMESPACE] gets 403")
    ap.add_argument("--controller-delay", type=float, default=0.3, help="seconds per controller step")
    ap.add_argument("--log-interval", type=float, default=0.05, help="seconds between fake log lines")
    ap.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds between watch BOOKMARKs")
    ap.add_argument("--watch-history", type=int, default=1000, help="events kept for watches from a version")
    ap.add_argument("--kube-version", default="1.31.9", help="version reported by /version; kubectl's "
                    "dispatcher runs the matching kubectl.1.NN (>= 1.32 sends protobuf bodies, which this fake "
                    "refuses with 415, so 1.31 is the default)")
    ap.add_argument("--no-watchlist", action="store_true",
                    help="reject sendInitialEvents like a server with the WatchList gate off")
    ap.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = ap.parse_args(argv)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    if args.client_ca:
        context.load_verify_locations(args.client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL

    fake = Fake(args)
    server = TLSServer(("127.0.0.1", args.port), fake, context)
    fake.controllers.start()

    def stop(signum, frame):
        fake.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write("READY %d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        fake.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
