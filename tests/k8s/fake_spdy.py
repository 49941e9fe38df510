"""The server side of kubectl's port-forward protocol: SPDY/3.1 sessions
(draft-mbelshe-httpbis-spdy, version 3) carrying the portforward.k8s.io
streams, either over a plain `Upgrade: SPDY/3.1` connection or tunnelled in
WebSocket binary messages (subprotocol `SPDY/3.1+portforward.k8s.io`,
KEP-4006). Per forwarded connection the client opens an error stream and a
data stream with the headers `streamtype`, `port` and `requestid`; the fake
pairs them by request id, connects to the local port a test registered for
the pod's port, and copies bytes both ways. See README.md.
"""

import select
import socket
import ssl
import struct
import sys
import zlib

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR = 1
MAX_DATA = 0xFFFFFF

# The header compression dictionary of SPDY/3 (section 2.6.10.1): a run of
# 4-byte-length-prefixed words followed by one unprefixed string.
_DICT_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date "
    "etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
    "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status").split() + ["200 OK"] + \
    "version HTTP/1.1 url public set-cookie keep-alive origin".split()
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICT_WORDS) + _DICT_TAIL.encode()


class ProtocolError(Exception):
    pass


class Framer:
    """SPDY/3 frames in and out of one session; each direction has one zlib
    stream for header blocks, shared by all the session's frames."""

    def __init__(self):
        self.buf = b""
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def feed(self, data):
        """The complete frames buffered: ("control", type, flags, payload) or ("data", stream id, flags, payload)."""
        self.buf += data
        out = []
        while len(self.buf) >= 8:
            word, flags_len = struct.unpack(">II", self.buf[:8])
            n = flags_len & 0xFFFFFF
            if len(self.buf) < 8 + n:
                break
            payload, self.buf = self.buf[8:8 + n], self.buf[8 + n:]
            if word & 0x80000000:
                version, ftype = (word >> 16) & 0x7FFF, word & 0xFFFF
                if version != VERSION:
                    raise ProtocolError("SPDY version %d, not %d" % (version, VERSION))
                out.append(("control", ftype, flags_len >> 24, payload))
            else:
                out.append(("data", word & 0x7FFFFFFF, flags_len >> 24, payload))
        return out

    def headers(self, block):
        """A name/value header block: {lowercase name: [values]}."""
        try:
            raw = self.inflate.decompress(block)
        except zlib.error as e:
            raise ProtocolError("header block: %s" % e)
        (count,), off, out = struct.unpack(">I", raw[:4]), 4, {}
        for _ in range(count):
            parts = []
            for _ in range(2):
                (n,) = struct.unpack(">I", raw[off:off + 4])
                parts.append(raw[off + 4:off + 4 + n].decode("latin-1"))
                off += 4 + n
            out.setdefault(parts[0].lower(), []).extend(parts[1].split("\0"))
        return out

    def header_block(self, headers):
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            for s in (name.lower().encode("latin-1"), value.encode("latin-1")):
                raw += struct.pack(">I", len(s)) + s
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(ftype, flags, payload):
        return struct.pack(">II", 0x80000000 | VERSION << 16 | ftype, flags << 24 | len(payload)) + payload

    @staticmethod
    def data(sid, flags, payload):
        return struct.pack(">II", sid & 0x7FFFFFFF, flags << 24 | len(payload)) + payload


class RawTransport:
    """SPDY straight on the upgraded (TLS) connection."""

    def __init__(self, sock, pending=b""):
        self.sock = sock
        self.pending = pending

    def readable(self):
        return bool(self.pending) or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0)

    def read(self):
        """Bytes received (maybe none yet); None once the peer is gone."""
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
            return b""
        except OSError:
            return None
        return data or None

    def write(self, data):
        self.sock.settimeout(10)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.settimeout(0)

    def close(self):
        pass


class TunnelTransport:
    """SPDY in WebSocket binary messages: message boundaries mean nothing,
    the payloads in order are the SPDY byte stream (KEP-4006)."""

    def __init__(self, ws):
        self.ws = ws
        self.sock = ws.sock
        self.ended = False  # a close frame (or EOF) came after the last bytes handed out

    def readable(self):
        return self.ended or self.ws.readable()

    def read(self):
        if self.ended:
            return None
        self.ended = not self.ws.feed()
        data = b""
        for op, payload in self.ws.frames():
            if op == 8:
                self.ended = True  # what came before it (a GOAWAY) still counts
                break
            if op == 9:
                self.ws.send(10, payload)
            elif op in (0, 2):
                data += payload
            elif op == 1:
                raise ProtocolError("text message in a SPDY tunnel")
        return None if self.ended and not data else data

    def write(self, data):
        self.ws.send(2, data)

    def close(self):
        self.ws.close()


class Pair:
    """One forwarded connection: its error and data streams, and the backend socket."""

    def __init__(self, key):
        self.key = key
        self.error = self.data = None
        self.port = None
        self.backend = None
        self.out = bytearray()  # client bytes the backend has not taken yet
        self.client_fin = False  # the client's FIN on the data stream: SHUT_WR once out is sent


class PortForwardSession:
    def __init__(self, fake, transport, ns, pod, entry):
        self.fake = fake
        self.t = transport
        self.ns, self.pod = ns, pod
        self.entry = entry
        self.framer = Framer()
        self.streams = {}  # stream id -> Pair
        self.pairs = {}  # request id -> Pair
        self.backends = {}  # socket -> Pair

    def log(self, msg):
        if self.fake.verbose:
            sys.stderr.write("portforward %s/%s: %s\n" % (self.ns, self.pod, msg))

    def send_control(self, ftype, flags, payload):
        self.t.write(Framer.control(ftype, flags, payload))

    def send_data(self, sid, flags, payload=b""):
        while len(payload) > MAX_DATA:
            self.t.write(Framer.data(sid, 0, payload[:MAX_DATA]))
            payload = payload[MAX_DATA:]
        self.t.write(Framer.data(sid, flags, payload))

    def run(self):
        ending = "eof"
        try:
            while True:
                if self.t.readable():
                    ready, writable = [self.t.sock], []
                else:
                    waiting = [b for b, pair in self.backends.items() if pair.out]
                    ready, writable, _ = select.select([self.t.sock] + list(self.backends), waiting, [], 1.0)
                for b in writable:
                    if b in self.backends:
                        self.to_backend(self.backends[b])
                if self.t.sock in ready:
                    data = self.t.read()
                    if data is None:
                        break
                    if self.frames(self.framer.feed(data)):
                        ending = "goaway"
                        break
                for s in [s for s in ready if s in self.backends]:
                    self.from_backend(s)
        except ProtocolError as e:
            ending = "protocol error: %s" % e
            self.log(ending)
            try:
                self.send_control(GOAWAY, 0, struct.pack(">II", 0, 1))
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError) as e:
            ending = "eof (%s)" % e.__class__.__name__
        finally:
            for s in list(self.backends):
                s.close()
            self.backends.clear()
            try:
                self.t.close()
            except OSError:
                pass
            self.fake.update_exec(self.entry, {"closed": ending})
            self.log("session ended: %s" % ending)

    def frames(self, frames):
        """Handles frames from the client; True when the client said GOAWAY."""
        for kind, a, flags, payload in frames:
            if kind == "data":
                self.on_data(a, flags, payload)
            elif a == SYN_STREAM:
                if len(payload) < 10:
                    raise ProtocolError("short SYN_STREAM")
                sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                self.on_syn_stream(sid, flags, self.framer.headers(payload[10:]))
            elif a == RST_STREAM:
                sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                pair = self.streams.get(sid)
                self.log("RST_STREAM %d" % sid)
                if pair:
                    self.drop(pair)
            elif a == PING:
                self.send_control(PING, 0, payload[:4])
            elif a == GOAWAY:
                return True
            elif a == HEADERS:
                self.framer.headers(payload[4:])  # keeps the zlib stream in step
            # SETTINGS, WINDOW_UPDATE: no flow control here (the fake queues
            # what a target has not taken and writes what the client reads)
        return False

    def on_syn_stream(self, sid, flags, headers):
        get = lambda k: (headers.get(k) or [""])[0]
        kind, port, rid = get("streamtype"), get("port"), get("requestid")
        self.send_control(SYN_REPLY, 0, struct.pack(">I", sid) + self.framer.header_block({}))
        if kind not in ("error", "data"):
            self.log("stream %d: streamtype %r" % (sid, kind))
            self.send_control(RST_STREAM, 0, struct.pack(">II", sid, RST_PROTOCOL_ERROR))
            return
        # clients before requestid (kubectl 1.1) opened the error stream two ids before the data stream
        key = rid if rid else str(sid if kind == "error" else sid - 2)
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = Pair(key)
        setattr(pair, kind, sid)
        self.streams[sid] = pair
        if flags & FLAG_FIN and kind == "data":
            pair.client_fin = True
        if pair.port is None:
            pair.port = port
        if pair.error is not None and pair.data is not None:
            self.connect(pair)

    def connect(self, pair):
        valid = pair.port.isdigit() and 0 < int(pair.port) < 65536
        port = int(pair.port) if valid else None
        self.fake.update_exec(self.entry, lambda e: e.update(
            connections=e["connections"] + 1,
            portforward=e["portforward"] + ([port] if valid and port not in e["portforward"] else [])))
        if not valid:
            return self.fail(pair, 'invalid port "%s"' % pair.port)
        target = self.fake.pod_port(self.ns, self.pod, port)
        if target is None:
            return self.fail(pair, "error forwarding port %d to pod %s: no local port registered for it" % (port, self.pod))
        try:
            s = socket.create_connection(("127.0.0.1", target), timeout=5)
        except OSError as e:
            return self.fail(pair, "error forwarding port %d to pod %s: dial tcp4 127.0.0.1:%d: %s"
                             % (port, self.pod, target, e.strerror or e))
        s.setblocking(False)
        pair.backend = s
        self.backends[s] = pair
        self.log("request %s: port %d -> 127.0.0.1:%d" % (pair.key, port, target))
        self.to_backend(pair)

    def fail(self, pair, message):
        """The kubelet's way: the message on the error stream, then both streams closed."""
        self.log("request %s: %s" % (pair.key, message))
        self.send_data(pair.error, 0, message.encode())
        self.finish(pair)

    def finish(self, pair):
        for sid in (pair.data, pair.error):
            self.send_data(sid, FLAG_FIN)
        self.drop(pair)

    def drop(self, pair):
        if pair.backend is not None:
            self.backends.pop(pair.backend, None)
            pair.backend.close()
            pair.backend = None
        self.pairs.pop(pair.key, None)
        for sid in (pair.data, pair.error):
            self.streams.pop(sid, None)

    def to_backend(self, pair):
        """Sends what the backend takes without blocking (the rest waits for select
        to find it writable: a backend that answers while it reads, as an echo
        does, must never wait on a session stuck in a write to it)."""
        while pair.out:
            try:
                n = pair.backend.send(pair.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return self.finish(pair)
            del pair.out[:n]
        if pair.client_fin:
            try:
                pair.backend.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def on_data(self, sid, flags, payload):
        pair = self.streams.get(sid)
        if pair is None:
            return  # a stream already finished on this side: the client's late bytes
        if sid == pair.data:
            pair.out += payload
            pair.client_fin = pair.client_fin or bool(flags & FLAG_FIN)
            if pair.backend is not None:
                self.to_backend(pair)
        # the error stream carries nothing from the client (it closes it at once)

    def from_backend(self, s):
        pair = self.backends[s]
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.send_data(pair.data, 0, data)
        else:
            self.finish(pair)


def serve(h, transport, ns, pod, proto):
    entry = {"namespace": ns, "pod": pod, "portforward": [], "protocol": proto, "connections": 0, "closed": None}
    h.fake.record_exec(entry)
    PortForwardSession(h.fake, transport, ns, pod, entry).run()
