#!/usr/bin/env python3
"""A real HTTPS server for the HTTP specs (stdlib http.server + ssl only).

    httpserver.py --cert server.pem --key server.key [--client-ca ca.pem] [--token T] [--plain] [--port P]

Binds 127.0.0.1 on a free port (or P) and prints "READY <port>" on stdout once it
accepts connections. Paths:

  /json, /health          JSON bodies
  /text                   a non-JSON body (HTML)
  /big?n=N                N bytes of 'x'
  /sleep?s=S              answers after S seconds
  /reset?key=K&times=N    resets the connection the first N times per key (all times without key)
  /flaky?key=K&fail=N&status=S   answers S (503) the first N times per key, then 200
  /retry-after?key=K&after=S     answers 429 with Retry-After: S the first time per key
  /starting?key=K&first=S       a service coming up, per key: S (503) {"status": "unavailable"},
                          then 200 {"status": "starting"}, then 200 {"status": "healthy"}
  /hits?key=K             how many requests a key has seen
  /status/CODE            answers CODE with {"status": CODE}
  /redirect, /redirect-loop   302 to /json, or to itself
  /echo                   the request as JSON: method, path, query, headers, body, client_port,
                          tls_resumed (the connection resumed an earlier TLS session)
  /hook?key=K[&status=S]  a webhook: keeps each request's body (and content type) under K, answers S (200)
  /hooked?key=K           what /hook kept under K, as a JSON list of {body, content_type}
  /upload                 size and sha256 of the body (chunked or not)
  /admin                  401 unless "Authorization: Bearer <token>"
  /clientcert             200 with the client certificate's CN, 403 without one

Stand-ins for the services of the shipped runbooks' deploy guides (tests/e2e/runbooks_*):
  /api/health             {"status": "ok"} (Tezca web and admin)
  /api/v1/admin/health/   {"status": "healthy", "database": "connected"} (Tezca API)
  /api/v1/laws/           200 with a law list
  /api/v1/admin/metrics/  401 unless "Authorization: Bearer <token>"
  /api/v1/oauth/clients   Janua's admin API (Bearer <token>): POST registers a client (201, or 409
                          when its client_id exists); GET .../clients/ID answers 200 or 404
  /ready                  {"status": "ready"} (Janua's readiness probe)
  /metrics                Prometheus text with http_requests_total (what Janua's scrape job reads)
  /health/live, /health/ready   Tessera's probes
  /api/v1/teams, /api/v1/api-keys   Tessera (X-API-Key: <token> or a key it issued): POST creates
                          (teams: 409 for a name taken), GET lists
  /_stand-in/forget       (Bearer <token>) POST: forgets every client, team and key given,
                          as a fresh service (the sandbox's reset between crash trials)
"""
import argparse
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COUNTS = {}
HOOKED = {}
LOCK = threading.Lock()
# what the service stand-ins have been given: OAuth clients by client_id,
# Tessera teams and API keys
APPS = {"clients": {}, "teams": [], "keys": []}


def bump(key):
    with LOCK:
        COUNTS[key] = COUNTS.get(key, 0) + 1
        return COUNTS[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rbtest/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def send(self, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reset(self):
        # SO_LINGER 0 makes close() send RST instead of FIN
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            self.connection.unwrap()
        except Exception:
            pass
        self.connection.close()
        self.close_connection = True

    def handle_any(self):
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        path = u.path
        body = self.read_body()
        key = q.get("key")
        if key:
            hits = bump(key)
        if path in ("/json", "/"):
            return self.send(200, {"status": "ok", "items": [1, 2, 3], "nested": {"name": "tezca"}})
        if path == "/health":
            return self.send(200, {"status": "healthy", "database": "connected"})
        if path == "/text":
            return self.send(200, "<html><body>Bad gateway from the proxy</body></html>", "text/html")
        if path == "/big":
            return self.send(200, b"x" * int(q.get("n", "1000")), "application/octet-stream")
        if path == "/sleep":
            time.sleep(float(q.get("s", "2")))
            return self.send(200, {"slept": float(q.get("s", "2"))})
        if path == "/reset":
            if not key or hits <= int(q.get("times", "1")):
                return self.reset()
            return self.send(200, {"status": "ok", "attempt": hits})
        if path == "/flaky":
            if not key:
                return self.send(400, {"error": "/flaky needs ?key= (its failures are counted per key)"})
            if hits <= int(q.get("fail", "2")):
                return self.send(int(q.get("status", "503")), {"error": "try again", "attempt": hits})
            return self.send(200, {"status": "ok", "attempt": hits})
        if path == "/starting":
            if not key:
                return self.send(400, {"error": "key required"})
            if hits <= 1:
                return self.send(int(q.get("first", "503")), {"status": "unavailable"})
            return self.send(200, {"status": "starting" if hits == 2 else "healthy"})
        if path == "/retry-after":
            if hits <= 1:
                return self.send(429, {"error": "slow down"}, headers=[("Retry-After", q.get("after", "1"))])
            return self.send(200, {"status": "ok", "attempt": hits})
        if path == "/hits":
            with LOCK:
                return self.send(200, {"hits": COUNTS.get(q.get("of", ""), 0)})
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            return self.send(code, {"status": code})
        if path == "/redirect":
            return self.send(302, "", "text/plain", [("Location", "/json")])
        if path == "/redirect-loop":
            return self.send(302, "", "text/plain", [("Location", "/redirect-loop")])
        if path == "/hook":
            with LOCK:
                HOOKED.setdefault(q.get("key", ""), []).append(
                    {"body": body.decode("utf-8", "replace"), "content_type": self.headers.get("Content-Type")})
            code = int(q.get("status", "200"))
            return self.send(code, {"status": code})
        if path == "/hooked":
            with LOCK:
                return self.send(200, list(HOOKED.get(q.get("key", ""), [])))
        if path == "/echo":
            return self.send(200, {
                "method": self.command, "path": u.path, "query": u.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
                "client_port": self.client_address[1],
                "tls_resumed": bool(getattr(self.connection, "session_reused", False)),
            })
        if path == "/upload":
            return self.send(200, {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                   "chunked": self.headers.get("Transfer-Encoding", "") == "chunked"})
        if path == "/admin":
            if self.headers.get("Authorization") == "Bearer " + self.server.token:
                return self.send(200, {"metrics": {"requests": 42}})
            return self.send(401, {"detail": "Authentication credentials were not provided."},
                             headers=[("WWW-Authenticate", "Bearer")])
        app = self.service(path, body)
        if app is not None:
            return self.send(*app)
        if path == "/clientcert":
            cert = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
            if not cert:
                return self.send(403, {"error": "client certificate required"})
            cn = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
            return self.send(200, {"cn": cn[0] if cn else None})
        return self.send(404, {"error": "not found", "path": path})

    def bearer_ok(self):
        return self.headers.get("Authorization") == "Bearer " + self.server.token

    def service(self, path, body):
        """The deploy guides' services: (status, body) or None for another path."""
        unauthorized = (401, {"detail": "Authentication credentials were not provided."})
        if path == "/api/health":
            return 200, {"status": "ok"}
        if path == "/api/v1/admin/health/":
            return 200, {"status": "healthy", "database": "connected"}
        if path == "/api/v1/laws/":
            return 200, {"count": 2, "results": [{"id": "cpeum", "name": "Constitucion"}, {"id": "lft", "name": "Ley Federal del Trabajo"}]}
        if path == "/api/v1/admin/metrics/":
            return (200, {"laws": 2, "requests": 42}) if self.bearer_ok() else unauthorized
        if path == "/ready":
            return 200, {"status": "ready"}
        if path == "/metrics":
            return 200, ("# TYPE http_requests_total counter\n"
                         'http_requests_total{method="GET",endpoint="/health",status="200"} 42\n'), "text/plain; version=0.0.4"
        if path == "/health/live":
            return 200, {"status": "alive"}
        if path == "/health/ready":
            return 200, {"status": "ready", "database": "connected"}
        if path == "/_stand-in/forget" and self.command == "POST":
            if not self.bearer_ok():
                return unauthorized
            with LOCK:
                forgot = {k: len(v) for k, v in APPS.items()}
                APPS["clients"], APPS["teams"], APPS["keys"] = {}, [], []
            return 200, {"forgot": forgot}
        if path == "/api/v1/oauth/clients" or path.startswith("/api/v1/oauth/clients/"):
            if not self.bearer_ok():
                return unauthorized
            with LOCK:
                if self.command == "POST" and path == "/api/v1/oauth/clients":
                    c = json.loads(body or b"{}")
                    cid = c.get("client_id")
                    if not cid:
                        return 422, {"error": {"message": "client_id is required"}}
                    if cid in APPS["clients"]:
                        return 409, {"error": {"message": "OAuth client %s already exists" % cid}}
                    APPS["clients"][cid] = c
                    return 201, dict(c, id=len(APPS["clients"]))
                cid = path[len("/api/v1/oauth/clients/"):]
                if self.command == "GET" and cid in APPS["clients"]:
                    return 200, APPS["clients"][cid]
                return 404, {"error": {"message": "OAuth client not found"}}
        if path in ("/api/v1/teams", "/api/v1/api-keys"):
            key = self.headers.get("X-API-Key")
            with LOCK:
                if key != self.server.token and key not in [k["key"] for k in APPS["keys"]]:
                    return 401, {"detail": "Invalid or missing API key"}
                if self.command == "GET":
                    items = APPS["teams"] if path == "/api/v1/teams" else [{"name": k["name"]} for k in APPS["keys"]]
                    return 200, {"items": items}
                req = json.loads(body or b"{}")
                if path == "/api/v1/teams":
                    if any(t["name"] == req.get("name") for t in APPS["teams"]):
                        return 409, {"detail": "team %s exists" % req.get("name")}
                    team = {"id": len(APPS["teams"]) + 1, "name": req.get("name")}
                    APPS["teams"].append(team)
                    return 201, team
                k = {"id": len(APPS["keys"]) + 1, "name": req.get("name"), "scopes": req.get("scopes"),
                     "key": "tess_" + os.urandom(16).hex()}
                APPS["keys"].append(k)
                return 201, k
        return None

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # failed handshakes and resets are part of the tests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca")
    ap.add_argument("--token", default="test-token")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--no-parent-watch", action="store_true",
                    help="keep running when the process that started it exits (scripts/sandbox.sh stops it by pid)")
    a = ap.parse_args()
    srv = Server(("127.0.0.1", a.port), Handler)
    srv.token = a.token
    if not a.plain:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        if a.client_ca:
            ctx.load_verify_locations(a.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        # the handshake happens in the handler's thread, on its first read,
        # so a client that fails it cannot stall the accept loop
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    # exit with the test run that started us, even when it dies without a teardown
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    if not a.no_parent_watch:
        threading.Thread(target=watch_parent, daemon=True).start()
    print("READY %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
