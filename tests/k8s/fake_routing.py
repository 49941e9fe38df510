"""HTTP side of the fake Kubernetes API server: the request handler,
authentication, authorization, routing of API paths to the store, request
options, and the pass-through to the control API (/_fake/...).
"""

import json
import select
import socket
import ssl
import sys
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from fake_faults import inject
from fake_patch import json_patch, merge_patch, strategic_merge_patch
from fake_types import (ApiError, FieldError, api_group_list, bad_request, forbidden, new_uid,
                        method_not_allowed, options_error, openapi_v3_doc, openapi_v3_index, resource_list, truthy,
                        unsupported_media_type)
from fake_streams import serve_exec, serve_portforward
from fake_watch import serve_log, serve_watch

# ==========================================================================
# HTTP: routing, authentication, handlers
# ==========================================================================


class Headers:
    """A request's header fields, as the handlers read them: get() and []
    by case-insensitive name (the first field of that name), get_all(),
    `in`, items(). What http.server's email.message.Message offers them, at
    a fraction of its cost (email's parser took 0.10 ms a request, read_headers
    and this 0.03 ms)."""

    __slots__ = ("_fields", "_first")

    def __init__(self, fields):
        self._fields = fields  # [(name, value)], in order
        self._first = {}
        for name, value in fields:
            self._first.setdefault(name.lower(), value)

    def get(self, name, default=None):
        return self._first.get(name.lower(), default)

    def __getitem__(self, name):
        return self._first.get(name.lower())

    def __contains__(self, name):
        return name.lower() in self._first

    def get_all(self, name, default=None):
        name = name.lower()
        values = [v for k, v in self._fields if k.lower() == name]
        return values or default

    def items(self):
        return list(self._fields)

    def keys(self):
        return [k for k, _ in self._fields]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._fields)

    def __str__(self):
        return "".join("%s: %s\r\n" % f for f in self._fields) + "\r\n"


MAX_LINE = 65536   # as http.client: a longer header line is 431
MAX_HEADERS = 100  # and so are more fields than this


def read_headers(rfile):
    """The header fields up to the blank line: [(name, value)], or a string
    saying why they are refused. A continuation line (obsolete folding) joins
    the field before it with a space, as Go's net/textproto joins it."""
    fields = []
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            return "Line too long"
        if line in (b"\r\n", b"\n", b""):
            return fields
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + text.strip())
            continue
        name, sep, value = text.partition(":")
        if not sep:
            continue  # email's parser drops a line that is no field too
        fields.append((name.rstrip(), value.strip()))
        if len(fields) > MAX_HEADERS:
            return "Too many headers"


class Request:
    """What the handler knows about one API request."""

    def __init__(self, method, path, query, params):
        self.method, self.path, self.query, self.params = method, path, query, params
        self.watch = truthy(params.get("watch", "")) or "/watch/" in path
        self.warnings = []
        self.user = None
        self.groups = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this

    # -- plumbing ---------------------------------------------------------

    @property
    def fake(self):
        return self.server.fake

    def setup(self):
        self.request.settimeout(10)
        self.request.do_handshake()  # here, in the connection's own thread
        super().setup()
        self.log_entry = None

    def log_message(self, fmt, *args):
        if self.fake.verbose:
            sys.stderr.write("fake-apiserver: %s\n" % (fmt % args))

    def log_request(self, code="-", size="-"):
        if self.fake.verbose:
            super().log_request(code, size)

    def parse_request(self):
        """http.server's parse_request (the request line, HTTP/1.1 keep-alive,
        Connection, Expect: 100-continue, 400/431/505 answers), with the
        header fields read by read_headers into Headers."""
        self.command = None
        self.request_version = version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            number = version[5:].split(".") if version.startswith("HTTP/") else []
            if len(number) != 2 or not all(n.isdigit() and len(n) <= 10 for n in number):
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad request version (%r)" % version)
                return False
            number = int(number[0]), int(number[1])
            if number >= (1, 1):
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "Invalid HTTP version (%s)" % version[5:])
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request syntax (%r)" % requestline)
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad HTTP/0.9 request type (%r)" % command)
                return False
        self.command = command
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        fields = read_headers(self.rfile)
        if isinstance(fields, str):
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, fields)
            return False
        self.headers = Headers(fields)
        conntype = self.headers.get("Connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        if self.headers.get("Expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def date_time_string(self, timestamp=None):
        """The Date header, formatted once a second rather than once a response."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        cached = getattr(self.server, "date_cache", None)
        if cached is None or cached[0] != now:
            cached = self.server.date_cache = (now, super().date_time_string(now))
        return cached[1]

    def send_response(self, code, message=None):
        if self.log_entry is not None:
            self.log_entry["status"] = code
        super().send_response(code, message)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_bytes(self, code, data, ctype, headers=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", new_uid())
        for w in getattr(self, "warnings", []):
            self.send_header("Warning", '299 - "%s"' % w.replace('"', '\\"'))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if self.request_version == "HTTP/0.9":  # no head to send (http.server's end_headers)
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        # the header block and the body in one write (one TLS record, one segment)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

    def send_json(self, code, obj, headers=None):
        self.send_bytes(code, (json.dumps(obj, separators=(",", ":")) + "\n").encode(), "application/json", headers)

    def send_error_status(self, err):
        self.send_json(err.code, err.status(), err.headers)

    def start_stream(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", new_uid())
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def client_gone(self):
        """True once the peer closed its side (checked while a stream idles)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            saved = sock.gettimeout()
            sock.settimeout(0.05)
            try:
                return sock.recv(1) == b""
            finally:
                sock.settimeout(saved)
        except (ssl.SSLWantReadError, socket.timeout, BlockingIOError):
            return False
        except OSError:
            return True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = lambda self: self.dispatch()

    # -- dispatch ---------------------------------------------------------

    def dispatch(self):
        self.warnings = []
        self.log_entry = None
        url = urlsplit(self.path)
        path = unquote(url.path)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if path.startswith("/_fake/") or path == "/_fake":
            return self.control(path, params, body)
        req = Request(self.command, path, url.query, params)
        entry = {"seq": 0, "time": time.time(), "method": self.command, "path": path, "query": url.query,
                 "params": params, "status": None, "user": None, "watch": req.watch,
                 "contentType": self.headers.get("Content-Type"), "fault": None}
        self.fake.record(entry)
        self.log_entry = entry
        try:
            if inject(self, entry, req):
                return
            self.authenticate(req)
            entry["user"] = req.user
            self.route(req, body)
        except ApiError as err:
            self.send_error_status(err)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            err = ApiError(500, "InternalError", "Internal error occurred: fake apiserver bug (see its stderr)")
            try:
                self.send_error_status(err)
            except OSError:
                self.close_connection = True

    def authenticate(self, req):
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if cert:
            subject = dict(x[0] for x in cert.get("subject", ()))
            req.user = subject.get("commonName")
            req.groups = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "organizationName"]
            return
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip() in self.fake.tokens:
            req.user = self.fake.tokens[auth[7:].strip()]
            req.groups = ["system:authenticated"]
            return
        if not auth and req.path in ("/healthz", "/livez", "/readyz"):
            req.user = "system:anonymous"
            return
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def authorize(self, req, verb, rt, ns, name, sub):
        resource = rt.plural + ("/" + sub if sub else "")
        if not self.fake.faults.forbidden(req.user, verb, resource, ns):
            return
        where = ('in the namespace "%s"' % ns) if ns else "at the cluster scope"
        raise forbidden(rt.group, rt.plural, name or "", 'User "%s" cannot %s resource "%s" in API group "%s" %s'
                        % (req.user, verb, resource, rt.group, where))

    def route(self, req, body):
        path = req.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return self.send_json(200, self.fake.version_info())
        if path == "/api":
            host = "%s:%d" % self.server.server_address[:2]
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs":
                                        [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
        if path == "/apis":
            return self.send_json(200, api_group_list(self.fake.store.types))
        if path == "/openapi/v3":
            return self.send_json(200, openapi_v3_index(self.fake.store.types))
        if path.startswith("/openapi/v3/"):
            rest = path[len("/openapi/v3/"):].split("/")
            gv = ("", "v1") if rest == ["api", "v1"] else (rest[1], rest[2]) if len(rest) == 3 and rest[0] == "apis" else None
            if gv and self.fake.store.types.in_group_version(*gv):
                return self.send_json(200, openapi_v3_doc(self.fake.store.types, *gv))
            raise generic_not_found()
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2 and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2:
            versions = dict(self.fake.store.types.group_versions()).get(parts[1])
            if not versions or not parts[1]:
                raise generic_not_found()
            gvs = [{"groupVersion": "%s/%s" % (parts[1], v), "version": v} for v in versions]
            return self.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1],
                                        "versions": gvs, "preferredVersion": gvs[0]})
        else:
            raise generic_not_found()
        if not self.fake.store.types.in_group_version(group, version):
            raise generic_not_found()
        if not rest:
            return self.send_json(200, resource_list(self.fake.store.types, group, version))
        return self.resource(req, group, version, rest, body)

    def resource(self, req, group, version, rest, body):
        if rest[0] == "watch":
            rest = rest[1:]
        ns = None
        if rest and rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise generic_not_found()
        rt = self.fake.store.types.get(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if rt is None or (ns is not None and not rt.namespaced) or (sub and sub not in rt.subresources):
            raise generic_not_found()
        if rt.namespaced and ns is None and name is not None:
            raise generic_not_found()
        method = self.command
        if sub in ("exec", "portforward"):
            # WebSocket upgrades are GETs (SPDY's were POSTs); both create
            if method not in ("GET", "POST"):
                raise method_not_allowed()
            self.authorize(req, "create", rt, ns, name, sub)
            return (serve_exec if sub == "exec" else serve_portforward)(self, req, rt, ns, name)
        if method in ("GET", "HEAD"):
            verb = "get" if name else ("watch" if req.watch else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete" if name else "deletecollection"}[method]
        if (method == "POST" and name) or (method in ("PUT", "PATCH") and not name) or \
                (sub == "log" and method != "GET") or (verb == "deletecollection" and verb not in rt.verbs) or \
                (method == "DELETE" and sub):
            raise method_not_allowed()
        if method == "PATCH" and sub != "scale":
            ptype = self.content_type()
            if ptype not in rt.patch_types:
                raise unsupported_media_type(rt.patch_types)
        self.authorize(req, verb, rt, ns, name, sub)
        self.check_options(req, method)
        store = self.fake.store
        p = req.params
        dry = p.get("dryRun") == "All"
        manager = p.get("fieldManager") or self.user_agent_manager()
        validation = p.get("fieldValidation") or "Warn"
        self.warnings = req.warnings
        if verb == "watch":
            return serve_watch(self, req, rt, ns)
        if verb == "list":
            limit = p.get("limit") or "0"
            if not limit.isdigit():
                raise bad_request('limit: Invalid value: "%s": must be a non-negative integer' % limit)
            return self.send_json(200, store.list(rt, ns, p.get("labelSelector", ""), p.get("fieldSelector", ""),
                                                  int(limit), p.get("continue", "")))
        if sub == "log":
            return serve_log(self, req, rt, ns, name)
        if sub == "scale":
            if verb == "get":
                return self.send_json(200, store.get_scale(rt, ns, name))
            change = self.scale_change(req, body)
            return self.send_json(200, store.update_scale(rt, ns, name, change, manager, dry))
        if verb == "get":
            return self.send_json(200, store.get(rt, ns, name))
        if verb == "create":
            obj = self.decode_json(body, req)
            created = store.create(rt, ns or "", obj, manager, dry, validation, req.warnings)
            return self.send_json(201, created)
        if verb == "update":
            obj = self.decode_json(body, req)
            return self.send_json(200, store.update(rt, ns or "", name, obj, manager,
                                                    "status" if sub == "status" else None, dry, validation,
                                                    req.warnings))
        if verb == "patch":
            ptype = self.content_type()
            patch = self.decode_json(body, req, apply=ptype == "application/apply-patch+yaml")
            obj, code = store.patch(rt, ns or "", name, ptype, patch, manager,
                                    "status" if sub == "status" else None, dry, truthy(p.get("force", "")),
                                    validation, req.warnings)
            return self.send_json(code, obj)
        options = self.delete_options(body, p)
        if verb == "delete":
            obj, code = store.delete(rt, ns or "", name, options, dry or options.get("dryRun") == ["All"])
            return self.send_json(code, obj)
        return self.send_json(200, store.delete_collection(rt, ns, options, p.get("labelSelector", ""),
                                                           p.get("fieldSelector", ""),
                                                           dry or options.get("dryRun") == ["All"]))

    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip()

    def user_agent_manager(self):
        """Without fieldManager the server names the manager after the user agent's program."""
        agent = self.headers.get("User-Agent") or "unknown"
        return agent.split("/")[0][:128]

    def check_options(self, req, method):
        """CreateOptions/UpdateOptions/PatchOptions/ListOptions validation."""
        p = req.params
        kind = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions",
                "DELETE": "DeleteOptions"}.get(method, "ListOptions")
        errs = []
        if "dryRun" in p and p["dryRun"] != "All":
            errs.append(FieldError("NotSupported", "dryRun", 'supported values: "All"', [p["dryRun"]]))
        manager = p.get("fieldManager", "")
        if len(manager) > 128:
            errs.append(FieldError("TooLong", "fieldManager", "may not be more than 128 bytes"))
        elif any(not ch.isprintable() for ch in manager):
            errs.append(FieldError("Invalid", "fieldManager", "invalid character", manager))
        if p.get("fieldValidation") not in (None, "", "Ignore", "Warn", "Strict"):
            errs.append(FieldError("NotSupported", "fieldValidation",
                                   'supported values: "Ignore", "Strict", "Warn"', p["fieldValidation"]))
        if method == "PATCH":
            ptype = self.content_type()
            if ptype == "application/apply-patch+yaml":
                if not manager:
                    errs.insert(0, FieldError("Required", "fieldManager", "is required for apply patch"))
            elif "force" in p:
                errs.insert(0, FieldError("Forbidden", "force", "may not be specified for non-apply patch"))
        if errs:
            raise options_error(kind, errs)

    def decode_json(self, body, req, apply=False):
        ctype = self.content_type() or "application/json"
        if not apply and self.command in ("POST", "PUT") and ctype not in ("application/json", "application/yaml", "*/*"):
            # kubectl >= 1.32 sends protobuf bodies from its typed clients; this fake speaks JSON only.
            raise unsupported_media_type(["application/json", "application/yaml"])
        try:
            return json.loads(body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError) as e:
            if apply or ctype == "application/yaml":
                raise unsupported_media_type(["application/json (YAML bodies must be JSON documents in this fake)"])
            raise bad_request("couldn't get version/kind; json parse error: %s" % e)

    def delete_options(self, body, params):
        """DeleteOptions come from the body when there is one, else the query."""
        if body.strip():
            try:
                opts = json.loads(body)
            except ValueError as e:
                raise bad_request("couldn't get version/kind; json parse error: %s" % e)
            if not isinstance(opts, dict):
                raise bad_request("decoded object cannot be converted to DeleteOptions")
        else:
            opts = {}
            if "propagationPolicy" in params:
                opts["propagationPolicy"] = params["propagationPolicy"]
            if "gracePeriodSeconds" in params:
                opts["gracePeriodSeconds"] = int(params["gracePeriodSeconds"])
            if "dryRun" in params:
                opts["dryRun"] = [params["dryRun"]]
            if "orphanDependents" in params:
                opts["orphanDependents"] = truthy(params["orphanDependents"])
        policy = opts.get("propagationPolicy")
        errs = []
        if policy is not None and policy not in ("Foreground", "Background", "Orphan"):
            errs.append(FieldError("NotSupported", "propagationPolicy",
                                   'supported values: "Foreground", "Background", "Orphan", "nil"', policy))
        if opts.get("dryRun") not in (None, [], ["All"]):
            errs.append(FieldError("NotSupported", "dryRun", 'supported values: "All"', opts["dryRun"]))
        if errs:
            raise options_error("DeleteOptions", errs)
        return opts

    def scale_change(self, req, body):
        if self.command == "PUT":
            obj = self.decode_json(body, req)
            return lambda current: obj
        ptype = self.content_type()
        patch = self.decode_json(body, req)
        if ptype == "application/json-patch+json":
            return lambda current: json_patch(current, patch)
        if ptype == "application/strategic-merge-patch+json":
            return lambda current: strategic_merge_patch(current, patch)
        if ptype == "application/merge-patch+json":
            return lambda current: merge_patch(current, patch)
        raise unsupported_media_type(["application/json-patch+json", "application/merge-patch+json",
                           "application/strategic-merge-patch+json"])


    # -- control API --------------------------------------------------------

    def control(self, path, params, body):
        fake = self.fake
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError as e:
            return self.send_json(400, {"error": "bad JSON: %s" % e})
        try:
            result = fake.control(self.command, path[len("/_fake/"):].strip("/"), params, data)
        except ApiError as e:
            return self.send_json(e.code, {"error": e.message})
        if result is None:
            return self.send_json(404, {"error": "no such control endpoint: %s %s" % (self.command, path)})
        self.send_json(200, result)


def generic_not_found():
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})

