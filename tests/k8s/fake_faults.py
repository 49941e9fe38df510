"""Faults of the fake Kubernetes API server: injected errors, throttling,
dropped connections and slowness, RBAC-style forbids, stuck Deployments,
failing Jobs and Job logs (what the control API switches on and off).
"""

import re
import socket
import threading
import time

from fake_types import ApiError, bad_request

# ==========================================================================
# Faults, forbids and the request log (the control API's state)
# ==========================================================================


class Faults:
    KINDS = ("fail", "throttle", "drop", "slow")

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.stuck = set()      # (kind, namespace, name)
        self.failing_jobs = []  # [{"namespace": .., "name": ..}]
        self.job_logs = []      # [{"namespace": .., "name": .., "prefix": .., "logs": ..}]
        self.forbids = []       # [(user, verb, resource, namespace)]
        self.frozen = set()     # uids controllers leave alone

    def clear(self, forbids=()):
        with self.lock:
            self.rules, self.failing_jobs, self.forbids = [], [], list(forbids)
            self.job_logs = []
            self.stuck, self.frozen = set(), set()

    def add(self, spec):
        kind = next((k for k in self.KINDS if k in spec), None)
        if kind is None:
            raise bad_request("a fault needs one of: " + ", ".join(self.KINDS))
        opts = dict(spec.get(kind) or {})
        rule = {"kind": kind, "count": spec.get("count", opts.pop("count", 1)),
                "skip": spec.get("skip", opts.pop("skip", 0)),
                "method": (spec.get("method") or "").upper() or None, "path": spec.get("path"),
                "query": spec.get("query"), "watch": spec.get("watch"),
                "code": opts.get("code", 500), "retry_after": opts.get("retry_after", 1),
                "ms": opts.get("ms", 500), "message": opts.get("message")}
        for key in ("path", "query"):
            if rule[key]:
                try:
                    re.compile(rule[key])
                except re.error as e:
                    raise bad_request("bad %s regex: %s" % (key, e))
        with self.lock:
            self.rules.append(rule)
        return rule

    def take(self, method, path, query, watch):
        """Rules that fire for this request: any number of slow ones, then at
        most one fail/throttle/drop (the first that matches)."""
        fired = []
        with self.lock:
            for rule in self.rules:
                if rule["count"] == 0:
                    continue
                if rule["method"] and rule["method"] != method:
                    continue
                if rule["path"] and not re.search(rule["path"], path):
                    continue
                if rule["query"] and not re.search(rule["query"], query):
                    continue
                if rule["watch"] is not None and bool(rule["watch"]) != watch:
                    continue
                if rule["skip"] > 0:
                    rule["skip"] -= 1
                    continue
                if rule["count"] > 0:
                    rule["count"] -= 1
                fired.append(dict(rule))
                if rule["kind"] != "slow":
                    break
        return fired

    def forbidden(self, user, verb, resource, namespace):
        for u, v, r, n in self.forbids:
            if u in ("*", user) and v in ("*", verb) and r in ("*", resource) and n in ("*", namespace or ""):
                return True
        return False

    def job_fails(self, namespace, name):
        return any(r.get("namespace") in (None, "", namespace) and r.get("name") in (None, "", name)
                   for r in self.failing_jobs)

    def logs_for_job(self, namespace, name):
        with self.lock:
            for r in reversed(self.job_logs):
                if r.get("namespace") not in (None, "", namespace):
                    continue
                if r.get("name") not in (None, "", name):
                    continue
                if r.get("prefix") and not name.startswith(r["prefix"]):
                    continue
                return r.get("logs")
        return None


def fault_error(rule):
    code = int(rule["code"])
    reason, message = {
        500: ("InternalError", "Internal error occurred: injected fault"),
        502: ("", "injected fault: bad gateway"),
        503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
        409: ("Conflict", "injected conflict"),
        404: ("NotFound", "the server could not find the requested resource"),
    }.get(code, ("", "injected fault"))
    details = {"causes": [{"message": "injected fault"}]} if code == 500 else None
    return ApiError(code, reason, rule["message"] or message, details)


def inject(handler, entry, req):
    """Applies the fault rules that fire for this request: sleeps for slow
    ones, then answers or drops it for a fail/throttle/drop rule. True when
    the request is dealt with (the handler must not route it)."""
    for rule in handler.fake.faults.take(req.method, req.path, req.query, req.watch):
        entry["fault"] = rule["kind"]
        if rule["kind"] == "slow":
            time.sleep(rule["ms"] / 1000.0)
        elif rule["kind"] == "drop":
            entry["status"] = 0
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        elif rule["kind"] == "throttle":
            err = ApiError(429, "TooManyRequests", rule["message"] or "Too many requests, please try again later.",
                           {"retryAfterSeconds": rule["retry_after"]}, {"Retry-After": rule["retry_after"]})
            handler.send_error_status(err)
            return True
        else:
            handler.send_error_status(fault_error(rule))
            return True
    return False
