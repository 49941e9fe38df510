"""Streaming subresources of pods over WebSocket: exec (the channel
protocols v4/v5.channel.k8s.io) and portforward (v4.channel.k8s.io style,
data and error channel per port, each channel's first frame carrying the
port; kubectl's SPDY, tunnelled or plain, is served by fake_spdy.py). The
pod's "container" runs the argv as a real local subprocess in a
temporary directory of its own (see README.md); port-forward connects to
the local TCP port a test registered for the pod (POST /_fake/pod-ports).
One select loop per connection: an ssl socket is not read and written from
two threads.
"""

import base64
import hashlib
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from urllib.parse import parse_qs

import fake_spdy
from fake_types import ApiError, bad_request

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"  # kubectl 1.31+ by default: SPDY in WebSocket messages (KEP-4006)
PF_PROTOCOLS = (SPDY_TUNNEL, "v4.channel.k8s.io", "portforward.k8s.io")


class WebSocket:
    """The server side of one upgraded connection (frames from the client are masked)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.unparsed = False  # buf may hold whole frames frames() has not seen
        self.closed = False

    def readable(self):
        """Something to read that select() cannot see: bytes the request reader had
        buffered, or TLS records already decrypted. A partial frame left in buf is
        not: the rest has to arrive first (counting it would spin the loop)."""
        return self.unparsed or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0)

    def feed(self):
        """Reads what the socket has; False once the peer is gone."""
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
            return True
        except OSError:
            return False
        if not data:
            return False
        self.buf += data
        return True

    def frames(self):
        """The complete frames buffered: (opcode, payload)."""
        out = []
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, off = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
            mask = b""
            if b1 & 0x80:
                mask, off = self.buf[off:off + 4], off + 4
            if len(self.buf) < off + n:
                break
            payload = self.buf[off:off + n]
            self.buf = self.buf[off + n:]
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            out.append((b0 & 0x0F, payload))
        self.unparsed = False
        return out

    def send(self, op, payload):
        n = len(payload)
        head = bytes([0x80 | op])
        if n < 126:
            head += bytes([n])
        elif n <= 0xFFFF:
            head += bytes([126]) + struct.pack(">H", n)
        else:
            head += bytes([127]) + struct.pack(">Q", n)
        self.sock.settimeout(10)
        try:
            self.sock.sendall(head + payload)
        finally:
            self.sock.settimeout(0)

    def close(self, code=1000):
        if not self.closed:
            self.closed = True
            try:
                self.send(8, struct.pack(">H", code))
            except OSError:
                pass


def upgrade(h, offered_ok):
    """Answers 101 with the first subprotocol both sides know; None when the request is no WebSocket upgrade."""
    if h.headers.get("Upgrade", "").lower() != "websocket":
        return None
    offered = offered_protocols(h, "Sec-WebSocket-Protocol")
    chosen = next((p for p in offered_ok if p in offered), None)
    if chosen is None:
        raise bad_request("unable to upgrade connection: no supported subprotocol among %s" % offered)
    accept = base64.b64encode(hashlib.sha1(h.headers.get("Sec-WebSocket-Key", "").encode() + GUID).digest())
    h.send_response(101, "Switching Protocols")
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.send_header("Sec-WebSocket-Accept", accept.decode())
    h.send_header("Sec-WebSocket-Protocol", chosen)
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    ws = WebSocket(h.connection)
    ws.buf = buffered(h)
    ws.unparsed = bool(ws.buf)
    return ws, chosen


def offered_protocols(h, header):
    return [p.strip() for v in h.headers.get_all(header) or [] for p in v.split(",") if p.strip()]


def buffered(h):
    """Bytes the request reader already buffered: they belong to the upgraded stream.
    Leaves the socket non-blocking (peek would block on an empty buffer)."""
    h.connection.settimeout(0)
    try:
        pending = h.rfile.peek()
    except (ssl.SSLWantReadError, BlockingIOError, OSError):
        pending = b""
    return h.rfile.read(len(pending)) if pending else b""


def upgrade_spdy(h, protocol):
    """The 101 of a plain SPDY/3.1 upgrade (kubectl before 1.31, or with the
    WebSocket gate off); None when the request is no SPDY upgrade."""
    if h.headers.get("Upgrade", "").lower() != "spdy/3.1":
        return None
    offered = offered_protocols(h, "X-Stream-Protocol-Version")
    if protocol not in offered:
        raise ApiError(403, "Forbidden", "unable to upgrade: unable to negotiate protocol: client supports %s, "
                       "server supports [%s]" % (offered, protocol))
    h.send_response(101, "Switching Protocols")
    h.send_header("Connection", "Upgrade")
    h.send_header("Upgrade", "SPDY/3.1")
    h.send_header("X-Stream-Protocol-Version", protocol)
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    return fake_spdy.RawTransport(h.connection, buffered(h))


def check_pod(h, rt, ns, name, container):
    pod = h.fake.store.get(rt, ns, name)
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    if not container:
        container = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container") \
            or (names[0] if names else None)
    if container not in names:
        raise bad_request("container %s is not valid for pod %s" % (container, name))
    phase = (pod.get("status") or {}).get("phase", "Pending")
    if phase in ("Succeeded", "Failed"):
        raise bad_request("cannot exec into a container in a completed pod; current phase is %s" % phase)
    if phase != "Running":
        raise bad_request('unable to upgrade connection: container not found ("%s")' % container)
    return pod, container


def serve_exec(h, req, rt, ns, name):
    q = parse_qs(req.query, keep_blank_values=True)
    argv = q.get("command", [])
    pod, container = check_pod(h, rt, ns, name, (q.get("container") or [""])[0])
    if not argv:
        raise bad_request("you must specify at least 1 command")
    want = {k: (q.get(k) or ["false"])[0].lower() in ("1", "true") for k in ("stdin", "stdout", "stderr", "tty")}
    # exec_v5 false: a server from before 1.30, which knows only v4
    up = upgrade(h, EXEC_PROTOCOLS if h.fake.config.get("exec_v5", True) else EXEC_PROTOCOLS[1:])
    if up is None:
        raise bad_request("Upgrade request required")
    ws, proto = up
    h.fake.record_exec({"namespace": ns, "pod": name, "container": container, "command": argv,
                        "protocol": proto, "stdin": want["stdin"]})
    run_exec(h, ws, proto, pod, container, argv, want)


def run_exec(h, ws, proto, pod, container, argv, want):
    home = tempfile.mkdtemp(prefix="fake-exec-")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "HOSTNAME": pod["metadata"]["name"],
           "POD_NAMESPACE": pod["metadata"].get("namespace", ""), "CONTAINER": container}
    try:
        try:
            proc = subprocess.Popen(argv, cwd=home, env=env, stdin=subprocess.PIPE if want["stdin"] else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            msg = 'OCI runtime exec failed: exec failed: unable to start container process: exec: "%s": %s: unknown' \
                % (argv[0], "executable file not found in $PATH" if isinstance(e, FileNotFoundError) else e.strerror)
            ws.send(2, b"\x03" + json.dumps({"metadata": {}, "status": "Failure", "message": msg,
                                               "reason": "InternalError", "details": {"causes": [
                                                   {"message": msg}]}, "code": 500}).encode())
            ws.close()
            return
        pipes = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
        stdin = proc.stdin
        gone = False
        while pipes:
            socks = [] if gone else [ws.sock]
            ready = [] if not ws.readable() else [ws.sock]
            if not ready:
                ready, _, _ = select.select(socks + list(pipes), [], [], 0.5)
            if ws.sock in ready and not gone:
                if not ws.feed():
                    gone = True
                for op, payload in ws.frames():
                    if op == 8:
                        gone = True
                    elif op == 9:
                        ws.send(10, payload)
                    elif op in (1, 2) and payload:
                        ch, data = payload[0], payload[1:]
                        if ch == 0 and stdin and data:
                            try:
                                stdin.write(data)
                                stdin.flush()
                            except OSError:
                                pass
                        elif ch == 255 and data[:1] == b"\x00" and stdin:
                            stdin.close()
                            stdin = None
                if gone:
                    proc.kill()
            for fd in [fd for fd in ready if fd in pipes]:
                data = os.read(fd, 65536)
                if not data:
                    del pipes[fd]
                    continue
                if want["stdout" if pipes[fd] == 1 else "stderr"] and not gone:
                    try:
                        ws.send(2, bytes([pipes[fd]]) + data)
                    except OSError:
                        gone = True
                        proc.kill()
        code = proc.wait()
        if stdin:
            try:
                stdin.close()
            except OSError:
                pass
        if gone:
            return
        if code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {"metadata": {}, "status": "Failure",
                      "message": "command terminated with non-zero exit code: exit status %d" % code,
                      "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        ws.send(2, b"\x03" + json.dumps(status).encode())
        ws.close()
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
        pass
    finally:
        shutil.rmtree(home, ignore_errors=True)


def serve_portforward(h, req, rt, ns, name):
    q = parse_qs(req.query, keep_blank_values=True)
    ports = []
    for p in q.get("ports", []):
        for part in p.split(","):
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise bad_request('invalid port "%s"' % part)
            ports.append(int(part))
    pod = h.fake.store.get(rt, ns, name)
    if (pod.get("status") or {}).get("phase") != "Running":
        raise bad_request("pod %s is not running (phase %s)" % (name, (pod.get("status") or {}).get("phase", "Pending")))
    # SPDY clients name the port per stream; the channel protocols in the query
    spdy = h.headers.get("Upgrade", "").lower() == "spdy/3.1" or \
        SPDY_TUNNEL in offered_protocols(h, "Sec-WebSocket-Protocol")
    if not ports and not spdy:
        raise bad_request("query parameter \"port\" is required")
    raw = upgrade_spdy(h, "portforward.k8s.io")
    if raw is not None:
        return fake_spdy.serve(h, raw, ns, name, "SPDY/3.1 portforward.k8s.io")
    up = upgrade(h, PF_PROTOCOLS)
    if up is None:
        raise bad_request("Upgrade request required")
    ws, proto = up
    if proto == SPDY_TUNNEL:
        return fake_spdy.serve(h, fake_spdy.TunnelTransport(ws), ns, name, proto)
    h.fake.record_exec({"namespace": ns, "pod": name, "portforward": ports, "protocol": proto})
    backends = {}
    try:
        for i, port in enumerate(ports):
            for ch in (2 * i, 2 * i + 1):
                ws.send(2, bytes([ch]) + struct.pack("<H", port))
            target = h.fake.pod_port(ns, name, port)
            if target is None:
                msg = "error forwarding port %d to pod %s: no local port registered for it" % (port, name)
                ws.send(2, bytes([2 * i + 1]) + msg.encode())
                continue
            try:
                backends[socket.create_connection(("127.0.0.1", target), timeout=5)] = 2 * i
            except OSError as e:
                ws.send(2, bytes([2 * i + 1]) + ("error forwarding port %d: %s" % (port, e)).encode())
        by_channel = {ch: s for s, ch in backends.items()}
        gone = False
        while not gone and backends:
            ready = [ws.sock] if ws.readable() else select.select([ws.sock] + list(backends), [], [], 0.5)[0]
            if ws.sock in ready:
                if not ws.feed():
                    break
                for op, payload in ws.frames():
                    if op == 8:
                        gone = True
                    elif op == 9:
                        ws.send(10, payload)
                    elif op in (1, 2) and payload and payload[0] in by_channel:
                        try:
                            by_channel[payload[0]].sendall(payload[1:])
                        except OSError:
                            gone = True
            for s in [s for s in ready if s in backends]:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    gone = True
                    break
                ws.send(2, bytes([backends[s]]) + data)
        ws.close()
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
        pass
    finally:
        for s in backends:
            s.close()
