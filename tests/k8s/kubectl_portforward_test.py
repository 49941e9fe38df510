#!/usr/bin/env python3
"""The real `kubectl port-forward` against the fake API server (README.md,
"Port-forward"): kubectl 1.31 tunnels SPDY/3.1 in WebSocket messages, and
with KUBECTL_PORT_FORWARD_WEBSOCKETS=false (or by default before 1.31)
upgrades to plain SPDY. Behind the fake are real TCP servers of this
script: an echo server and an HTTP server.

  python3 tests/k8s/kubectl_portforward_test.py   0 all passed, 1 a check failed, 77 no kubectl 1.31

KUBECTL_PF is the client (default: kubectl.1.31 next to the kubectl on PATH,
which is the google-cloud-sdk dispatcher); KUBECTL_PF_OLD a pre-WebSocket
client for a plain SPDY check (default kubectl.1.29 there) and KUBECTL_PF_NEW
a newer one for a tunnel check (default kubectl.1.33), each skipped when
absent. Every wait is for an event (a line of kubectl's, an entry in the
fake's logs, bytes on a socket), bounded by a timeout.
"""

import base64
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "pf-token"
TUNNEL = "SPDY/3.1+portforward.k8s.io"
PLAIN = "SPDY/3.1 portforward.k8s.io"
TIMEOUT = 30  # seconds for any one event, on a loaded machine

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("PASS: " + name)
    else:
        failed += 1
        print("FAIL: " + name)
        for line in str(detail).splitlines()[:20]:
            print("    " + line)
    sys.stdout.flush()
    return ok


def wait_until(what, fn, timeout=TIMEOUT):
    """fn() until it returns something true; that value, or an AssertionError naming what did not happen."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def kubectl_paths():
    """The client under test, a pre-WebSocket one and a newer one (the last two optional)."""
    base = shutil.which(os.environ.get("KUBECTL", "kubectl"))
    d = os.path.dirname(os.path.realpath(base)) if base else ""
    pick = lambda env, name: os.environ.get(env) or (os.path.join(d, name) if d else "")
    return pick("KUBECTL_PF", "kubectl.1.31"), pick("KUBECTL_PF_OLD", "kubectl.1.29"), pick("KUBECTL_PF_NEW", "kubectl.1.33")


class Fake:
    def __init__(self, tmp):
        self.tmp = tmp
        subprocess.run([os.path.join(HERE, "gen_certs.sh"), tmp], check=True, stdout=subprocess.DEVNULL)
        self.log = open(os.path.join(tmp, "server.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fake_apiserver.py"), "--port", "0",
             "--cert", os.path.join(tmp, "server.crt"), "--key", os.path.join(tmp, "server.key"),
             "--client-ca", os.path.join(tmp, "ca.crt"), "--token", TOKEN, "--verbose"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()  # the fake prints READY once it accepts connections
        if not line.startswith("READY "):
            raise RuntimeError("the fake did not start: %r" % line)
        self.url = "https://127.0.0.1:%d" % int(line.split()[1])
        self.ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca.crt"))

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, context=self.ctx, timeout=TIMEOUT).read())

    def sessions(self):
        return [e for e in self.call("GET", "/_fake/execs")["items"] if "portforward" in e]

    def requests(self):
        return self.call("GET", "/_fake/requests")["items"]

    def kubeconfig(self):
        path = os.path.join(self.tmp, "kubeconfig")
        with open(os.path.join(self.tmp, "ca.crt"), "rb") as f:
            ca = base64.b64encode(f.read()).decode()
        with open(path, "w") as f:
            f.write("apiVersion: v1\nkind: Config\n"
                    "clusters: [{name: fake, cluster: {server: '%s', certificate-authority-data: %s}}]\n"
                    "users: [{name: u, user: {token: %s}}]\n"
                    "contexts: [{name: fake, context: {cluster: fake, user: u, namespace: default}}]\n"
                    "current-context: fake\n" % (self.url, ca, TOKEN))
        return path

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(TIMEOUT)
        self.proc.stdout.close()
        self.log.close()
        return code


class EchoServer(socketserver.ThreadingTCPServer):
    """Sends back what it receives; counts the connections it saw closed by the peer."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = self.closed = 0
        super().__init__(("127.0.0.1", 0), EchoHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]

    def count(self, name):
        with self.lock:
            return getattr(self, name)


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        with self.server.lock:
            self.server.accepted += 1
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)
        except OSError:
            pass
        with self.server.lock:
            self.server.closed += 1


class PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("pod web-1 says hello to %s\n" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class PortForward:
    """One `kubectl port-forward` process; its output lines collected by threads."""

    def __init__(self, kubectl, kubeconfig, cache, args, env=None):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([kubectl, "--kubeconfig", kubeconfig, "--cache-dir", cache, "port-forward"] + args,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})))
        self.readers = [threading.Thread(target=self.collect, args=(s, tag), daemon=True)
                        for s, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for t in self.readers:
            t.start()

    def collect(self, stream, tag):
        for line in stream:
            with self.cond:
                self.lines.append((tag, line.rstrip("\n")))
                self.cond.notify_all()

    def output(self):
        with self.cond:
            return "\n".join("%s: %s" % x for x in self.lines)

    def wait_line(self, regex, tag="out", timeout=TIMEOUT):
        """The first match of regex in a line kubectl printed (stdout by default)."""
        rx = re.compile(regex)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.lines:
                    m = rx.search(line)
                    if m and t == tag:
                        return m
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(r.is_alive() for r in self.readers)):
                    raise AssertionError("kubectl printed no line matching %r:\n%s" % (regex, self.output()))
                self.cond.wait(min(left, 0.5))

    def local_port(self, remote):
        """The local port of `Forwarding from 127.0.0.1:N -> remote`."""
        return int(self.wait_line(r"^Forwarding from 127\.0\.0\.1:(\d+) -> %d$" % remote).group(1))

    def stop(self, sig):
        self.proc.send_signal(sig)
        code = self.proc.wait(TIMEOUT)
        for t in self.readers:
            t.join(TIMEOUT)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def recv_exactly(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(min(65536, n - len(out)))
        if not chunk:
            break
        out += chunk
    return out


def echo_roundtrip(port, payload):
    """payload through the forward and back (sent by a second thread: neither side blocks the other);
    then a half close, which must come back as EOF once the backend closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        got = recv_exactly(s, len(payload))
        sender.join()
        s.shutdown(socket.SHUT_WR)
        rest = s.recv(1)
    return got, rest


def http_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=TIMEOUT) as r:
        return r.status, r.read().decode()


def session_for(fake, before, pod, proto):
    """The fake's port-forward session started after the first `before` ones."""
    found = [e for e in fake.sessions()[before:] if e["pod"] == pod and e["protocol"] == proto]
    return found[0] if found else None


def main():
    kubectl, old, new = kubectl_paths()
    if not kubectl or not os.access(kubectl, os.X_OK):
        print("SKIP: no kubectl 1.31 at %s (set KUBECTL_PF)" % kubectl)
        return 77
    tmp = tempfile.mkdtemp(prefix="fake-k8s-pf-")
    fake = echo = web = None
    forwards = []
    try:
        fake = Fake(tmp)
        kubeconfig = fake.kubeconfig()
        cache = os.path.join(tmp, "cache")
        echo = EchoServer()
        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
        web.daemon_threads = True
        threading.Thread(target=web.serve_forever, daemon=True).start()
        fake.call("POST", "/_fake/objects", {"reconcile": False, "objects": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
             "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [
                 {"name": "echo", "containerPort": 8080}, {"name": "http", "containerPort": 9090}]}]},
             "status": {"phase": "Running"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"selector": {"app": "web"}, "ports": [{"name": "echo", "port": 80, "targetPort": "echo"}]}}]})
        fake.call("POST", "/_fake/pod-ports", {"pod": "web-1", "port": 8080, "local_port": echo.port})
        fake.call("POST", "/_fake/pod-ports", {"pod": "web-1", "port": 9090, "local_port": web.server_address[1]})
        version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout.split("\n")[0]
        print("%s (%s) against the fake at %s" % (version, kubectl, fake.url))

        def start(args, env=None, client=kubectl):
            pf = PortForward(client, kubeconfig, cache, args, env)
            forwards.append(pf)
            return pf

        def attempt(name, fn):
            try:
                fn()
            except (AssertionError, OSError, subprocess.TimeoutExpired) as e:
                check(name, False, "%s: %s" % (e.__class__.__name__, e))

        # --- a pod, two ports, over the WebSocket tunnel -------------------------
        def pod_tunnel():
            before = len(fake.sessions())
            pf = start(["pod/web-1", ":8080", ":9090"])
            p_echo, p_web = pf.local_port(8080), pf.local_port(9090)
            check("pod/web-1: Forwarding from lines for both ports", True)
            got, rest = echo_roundtrip(p_echo, b"hello through the tunnel\n")
            check("pod: bytes there and back", got == b"hello through the tunnel\n" and rest == b"", (got, rest))
            every = bytes(range(256)) * 4
            got, _ = echo_roundtrip(p_echo, every)
            check("pod: all 256 byte values", got == every, "%d bytes back" % len(got))
            big = random.Random(12).randbytes(8 << 20)
            got, rest = echo_roundtrip(p_echo, big)
            check("pod: 8 MiB both ways at once", got == big and rest == b"", "%d of %d bytes" % (len(got), len(big)))
            results = {}

            def one(i):
                payload = ("connection %d " % i).encode() * (200 + 50 * i)
                results[i] = echo_roundtrip(p_echo, payload)[0] == payload

            threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            check("pod: 8 concurrent connections, each its own bytes", results == {i: True for i in range(8)}, results)
            pages = [http_get(p_web, "/page/%d" % i) for i in range(5)]
            check("pod: 5 HTTP GETs through the second port (the server closes first)",
                  pages == [(200, "pod web-1 says hello to /page/%d\n" % i) for i in range(5)], pages)
            handled = pf.wait_line(r"^Handling connection for %d$" % p_web)
            check("pod: kubectl logged the connections it handled", handled is not None)
            s = session_for(fake, before, "web-1", TUNNEL)
            check("pod: the fake saw one tunnelled session, 16 connections, ports 8080 and 9090",
                  s and s["connections"] == 16 and sorted(s["portforward"]) == [8080, 9090], s)
            reqs = [r for r in fake.requests() if r["path"].endswith("/pods/web-1/portforward")]
            check("pod: one GET .../portforward answered 101, no ports in the query (they go per stream)",
                  len(reqs) == 1 and reqs[0]["method"] == "GET" and reqs[0]["status"] == 101 and not reqs[0]["query"], reqs)
            # SIGINT with a connection open: kubectl closes the session (GOAWAY) and exits 0
            closed0 = echo.count("closed")
            held = socket.create_connection(("127.0.0.1", p_echo), timeout=TIMEOUT)
            held.sendall(b"still here")
            check("pod: a connection held open echoes", recv_exactly(held, 10) == b"still here")
            code = pf.stop(signal.SIGINT)
            check("pod: kubectl exits 0 on SIGINT", code == 0, "exit %s\n%s" % (code, pf.output()))
            ended = wait_until("the fake to see the session end",
                               lambda: (session_for(fake, before, "web-1", TUNNEL) or {}).get("closed"))
            check("pod: the fake saw the client's GOAWAY", ended == "goaway", ended)
            wait_until("the backend connection to close", lambda: echo.count("closed") > closed0)
            check("pod: the fake closed the backend connection of the open forward", True)
            held.close()

        attempt("pod over the tunnel", pod_tunnel)

        # --- a Service: kubectl picks the pod and maps port 80 to targetPort "echo" -----
        def service():
            before = len(fake.sessions())
            pf = start(["svc/web", ":80"])
            port = pf.local_port(8080)
            check("svc/web: kubectl resolved port 80 to the pod's container port 8080", True)
            gets = [r["path"] for r in fake.requests() if r["method"] == "GET"]
            check("svc/web: kubectl read the Service and then forwarded to pod web-1",
                  "/api/v1/namespaces/default/services/web" in gets
                  and "/api/v1/namespaces/default/pods/web-1/portforward" in gets, gets)
            results = [echo_roundtrip(port, b"svc %d" % i) for i in range(3)]
            check("svc: 3 connections there and back", results == [(b"svc %d" % i, b"") for i in range(3)], results)
            closed0 = echo.count("closed")
            held = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            held.sendall(b"ping")
            check("svc: a held connection echoes", recv_exactly(held, 4) == b"ping")
            # kubectl traps SIGINT only: SIGTERM ends it by the signal, with no GOAWAY
            code = pf.stop(signal.SIGTERM)
            check("svc: kubectl ends on SIGTERM (killed by the signal: it handles only SIGINT)",
                  code == -signal.SIGTERM, "exit %s\n%s" % (code, pf.output()))
            ended = wait_until("the fake to see the session end",
                               lambda: (session_for(fake, before, "web-1", TUNNEL) or {}).get("closed"))
            check("svc: the fake saw the connection drop without GOAWAY", ended.startswith("eof"), ended)
            wait_until("the backend connection to close", lambda: echo.count("closed") > closed0)
            check("svc: the fake closed the backend connection", True)
            s = session_for(fake, before, "web-1", TUNNEL)
            check("svc: the fake's session had 4 connections to port 8080",
                  s["connections"] == 4 and s["portforward"] == [8080], s)
            held.close()

        attempt("service over the tunnel", service)

        # --- the error stream: a port with nothing behind it -----------------------
        def error_stream():
            pf = start(["pod/web-1", ":7777"])
            port = pf.local_port(7777)
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                s.sendall(b"anyone?")
                check("error: the local connection is closed", s.recv(10) == b"")
            m = pf.wait_line(r"an error occurred forwarding \d+ -> 7777: error forwarding port 7777 to pod web-1", "err")
            check("error: kubectl reports the message of the fake's error stream", m is not None)
            code = pf.proc.wait(TIMEOUT)
            check("error: kubectl 1.31 then gives up the session (lost connection to pod), exit 1",
                  code == 1 and re.search(r"lost connection to pod", pf.output()), "exit %s\n%s" % (code, pf.output()))

        attempt("error stream", error_stream)

        # --- other clients: plain SPDY (the WebSocket gate off, or a client from
        # before 1.31) and a newer client's tunnel ----------------------------------
        def other(client, env, label, proto=PLAIN, method="POST"):
            before = len(fake.sessions())
            pf = start(["pod/web-1", ":8080", ":9090"], env, client)
            p_echo, p_web = pf.local_port(8080), pf.local_port(9090)
            big = random.Random(7).randbytes(1 << 20)
            got, rest = echo_roundtrip(p_echo, big)
            check("%s: 1 MiB there and back" % label, got == big and rest == b"", "%d bytes" % len(got))
            results = {}

            def one(i):
                results[i] = echo_roundtrip(p_echo, b"plain %d " % i * 100)[0] == b"plain %d " % i * 100

            threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            check("%s: 4 concurrent connections" % label, results == {i: True for i in range(4)}, results)
            check("%s: HTTP GET" % label, http_get(p_web, "/plain") == (200, "pod web-1 says hello to /plain\n"))
            s = session_for(fake, before, "web-1", proto)
            reqs = [r for r in fake.requests() if r["path"].endswith("/pods/web-1/portforward") and r["method"] == method]
            check("%s: %s .../portforward upgraded (101) to %s, 6 connections" % (label, method, proto),
                  s and s["connections"] == 6 and reqs and reqs[-1]["status"] == 101, (s, reqs))
            code = pf.stop(signal.SIGINT)
            check("%s: exit 0 on SIGINT" % label, code == 0, "exit %s\n%s" % (code, pf.output()))
            ended = wait_until("the fake to see the session end",
                               lambda: (session_for(fake, before, "web-1", proto) or {}).get("closed"))
            check("%s: the fake saw GOAWAY" % label, ended == "goaway", ended)

        attempt("plain SPDY", lambda: other(kubectl, {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"},
                                            "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"))
        for client, what, args in ((old, "pre-WebSocket", ()), (new, "newer", (TUNNEL, "GET"))):
            if client and os.access(client, os.X_OK):
                attempt(os.path.basename(client), lambda: other(client, {}, os.path.basename(client), *args))
            else:
                print("SKIP: no %s kubectl at %s" % (what, client))
    finally:
        for pf in forwards:
            pf.kill()
        if echo:
            echo.shutdown()
        if web:
            web.shutdown()
        if fake:
            code = fake.stop()
            check("the fake exits 0 on SIGTERM", code == 0, "exit %s" % code)
            if failed:
                with open(os.path.join(tmp, "server.log")) as f:
                    print("--- the fake's stderr (tail):\n" + "".join(f.readlines()[-30:]))
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
