#!/usr/bin/env python3
"""The fake API server's HTTP/1.1 framing, checked byte for byte over a raw
TLS socket: its own header parser (fake_routing.read_headers), keep-alive,
Connection: close, Expect: 100-continue, the 400/431/505 answers, and the
listen backlog (many connections opened at once are all accepted at once).

Run: python3 tests/k8s/test_fake_http.py [-v]
"""

import os
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "http-token"
SERVER = {}


def setUpModule():
    tmp = tempfile.mkdtemp(prefix="fake-k8s-http-")
    SERVER["tmp"] = tmp
    subprocess.run([os.path.join(HERE, "gen_certs.sh"), tmp], check=True)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fake_apiserver.py"), "--port", "0",
         "--cert", os.path.join(tmp, "server.crt"), "--key", os.path.join(tmp, "server.key"),
         "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError("the fake did not start: %r" % line)
    SERVER.update(proc=proc, port=int(line.split()[1]),
                  ctx=ssl.create_default_context(cafile=os.path.join(tmp, "ca.crt")))


def tearDownModule():
    proc = SERVER.get("proc")
    if proc:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    subprocess.run(["rm", "-rf", SERVER.get("tmp", "/nonexistent")])


class Conn:
    """One TLS connection; reads whole responses (Content-Length framed)."""

    def __init__(self):
        raw = socket.create_connection(("127.0.0.1", SERVER["port"]), timeout=10)
        self.sock = SERVER["ctx"].wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self):
        """(status, {lowercase name: value}, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("iso-8859-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self):
        """True once the server closed the connection (waits up to 10 s)."""
        try:
            while True:
                self._fill()
        except EOFError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def request(lines, body=b""):
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1") + body


class HeaderParsing(unittest.TestCase):
    def setUp(self):
        self.c = Conn()

    def tearDown(self):
        self.c.close()

    def test_names_are_case_insensitive(self):
        self.c.send(request(["GET /api HTTP/1.1", "host: x", "aUtHoRiZaTiOn: Bearer " + TOKEN]))
        status, headers, body = self.c.response()
        self.assertEqual(200, status, body)
        self.assertIn(b'"APIVersions"', body)

    def test_the_first_of_repeated_fields_counts(self):
        self.c.send(request(["GET /api HTTP/1.1", "Host: x", "Authorization: Bearer " + TOKEN,
                             "Authorization: Bearer wrong"]))
        self.assertEqual(200, self.c.response()[0])
        self.c.send(request(["GET /api HTTP/1.1", "Host: x", "Authorization: Bearer wrong",
                             "Authorization: Bearer " + TOKEN]))
        self.assertEqual(401, self.c.response()[0])

    def test_a_folded_field_is_joined_with_a_space(self):
        # obsolete line folding, joined as Go's net/textproto joins it
        self.c.send(request(["GET /api HTTP/1.1", "Host: x", "Authorization: Bearer", "\t" + TOKEN]))
        self.assertEqual(200, self.c.response()[0])

    def test_a_body_is_read_by_its_length_and_the_connection_kept(self):
        body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"http-a"},"data":{"k":"v"}}'
        for i in range(3):
            self.c.send(request(["PATCH /api/v1/namespaces/default/configmaps/http-a?fieldManager=t HTTP/1.1",
                                 "Host: x", "Authorization: Bearer " + TOKEN,
                                 "Content-Type: application/apply-patch+yaml",
                                 "Content-Length: %d" % len(body)], body))
            status, headers, data = self.c.response()
            self.assertEqual(201 if i == 0 else 200, status, data)
            self.assertEqual("application/json", headers["content-type"])
            self.assertTrue(headers["audit-id"])
            self.assertIn("date", headers)

    def test_expect_100_continue(self):
        body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"http-b"}}'
        self.c.send(request(["POST /api/v1/namespaces/default/configmaps HTTP/1.1", "Host: x",
                             "Authorization: Bearer " + TOKEN, "Content-Type: application/json",
                             "Content-Length: %d" % len(body), "Expect: 100-continue"]))
        while b"\r\n\r\n" not in self.c.buf:
            self.c._fill()
        self.assertTrue(self.c.buf.startswith(b"HTTP/1.1 100 Continue\r\n"), self.c.buf)
        self.c.buf = self.c.buf.split(b"\r\n\r\n", 1)[1]
        self.c.send(body)
        self.assertEqual(201, self.c.response()[0])

    def test_connection_close(self):
        self.c.send(request(["GET /version HTTP/1.1", "Host: x", "Authorization: Bearer " + TOKEN,
                             "Connection: close"]))
        self.assertEqual(200, self.c.response()[0])
        self.assertTrue(self.c.closed())

    def test_too_many_fields(self):
        self.c.send(request(["GET /version HTTP/1.1"] + ["X-N%d: v" % i for i in range(101)]))
        status, _, body = self.c.response()
        self.assertEqual(431, status)
        self.assertIn(b"Too many headers", body)

    def test_a_field_line_too_long(self):
        self.c.send(request(["GET /version HTTP/1.1", "X-Long: " + "a" * 70000]))
        status, _, body = self.c.response()
        self.assertEqual(431, status)
        self.assertIn(b"Line too long", body)

    def until_closed(self):
        try:
            while True:
                self.c._fill()
        except EOFError:
            return self.c.buf

    def test_a_bad_version(self):
        # http.server answers a request line it cannot read as HTTP/0.9: the
        # error page alone, no status line, then it closes
        self.c.send(request(["GET /version HTTP/x.y"]))
        out = self.until_closed()
        self.assertTrue(out.startswith(b"<!DOCTYPE HTML>"), out[:80])
        self.assertIn(b"Error code: 400", out)
        self.assertIn(b"Bad request version ('HTTP/x.y')", out)

    def test_an_http_0_9_request_gets_the_body_alone(self):
        # no headers, so no token: the 401 Status, with no status line or head
        self.c.send(b"GET /version\r\n\r\n")  # http.server reads a head for it too
        out = self.until_closed()
        self.assertTrue(out.startswith(b'{"kind":"Status"'), out[:80])
        self.assertIn(b'"code":401', out)

    def test_http_2_is_not_spoken(self):
        self.c.send(request(["GET /version HTTP/2.0"]))
        out = self.until_closed()
        self.assertIn(b"Error code: 505", out)
        self.assertIn(b"Invalid HTTP version (2.0)", out)


class Backlog(unittest.TestCase):
    def test_many_connections_at_once_are_all_accepted_at_once(self):
        # socketserver's backlog of 5 dropped SYNs past it; a dropped SYN is
        # retransmitted a second later, so a connection that took that long
        # to complete is one the kernel turned away first
        socks = []
        try:
            for _ in range(32):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", SERVER["port"]))
                socks.append((s, time.monotonic()))
            slowest = 0.0
            for s, t0 in socks:
                _, writable, _ = select.select([], [s], [], 10)
                self.assertTrue(writable, "a connection did not complete in 10 s")
                self.assertEqual(0, s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                slowest = max(slowest, time.monotonic() - t0)
        finally:
            for s, _ in socks:
                s.close()
        self.assertLess(slowest, 0.9, "a connection took %.2f s: its SYN was dropped" % slowest)


if __name__ == "__main__":
    unittest.main()
