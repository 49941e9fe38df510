#!/usr/bin/env python3
"""A fake Kubernetes API server for runbook's tests (and the real kubectl).

    python3 tests/k8s/fake_apiserver.py --port 0 --cert server.crt --key server.key \\
        --client-ca ca.crt --token TOKEN [--token TOKEN2,user2] [--controller-delay 0.3]

Listens on 127.0.0.1 only, over HTTPS, and prints exactly one line
`READY <port>` on stdout once it accepts connections. SIGTERM stops it.
Python 3 standard library only. Files:
  fake_apiserver.py  HTTP, auth, routing, watch, logs, controllers, faults (this file)
  fake_store.py      store, resource types, discovery, defaulting, validation
  fake_patch.py      merge / JSON / strategic patches, managedFields, server-side apply

Authentication: `Authorization: Bearer <token>` matching a --token (user
"admin", or the name after a comma: --token TOKEN,USER), or a client
certificate signed by --client-ca (user = CN, groups = O). Anything else on
an API path is 401 Unauthorized. `--forbid USER:VERB:RESOURCE[:NAMESPACE]`
(each part may be `*`) answers 403 Forbidden in RBAC's words.

Control API (no authentication; loopback only; JSON in and out):
  GET    /_fake/health                   {"ok": true, "resourceVersion": N}
  POST   /_fake/reset                    empty the store (default namespaces come back) and
                                         clear faults, stuck/failing objects, forbids and the request log
  POST   /_fake/faults                   add fault rule(s), first match wins, each rule:
           {"fail": {"code": 500}} | {"throttle": {"retry_after": 1}} | {"drop": {}} | {"slow": {"ms": 500}}
           plus optional "count" (default 1; -1 = forever), "skip" (let N matching requests
           through first), "method" (e.g. "GET"), "path" (regex searched in the path),
           "query" (regex searched in the raw query), "watch" (true/false).
           The kind may also carry count/code/retry_after/ms: {"fail": {"count": 2, "code": 503}}.
  GET    /_fake/faults                   the rules with their remaining counts
  DELETE /_fake/faults                   remove all rules
  POST   /_fake/stuck                    {"kind": "Deployment", "namespace": "x", "name": "y"}: a stuck
                                         Deployment reports Progressing=False/ProgressDeadlineExceeded;
                                         any other stuck object is left alone by its controller
  POST   /_fake/fail-job                 {"namespace": "x", "name": "y"} (either may be omitted = any):
                                         pods of matching Jobs exit 1 and the Job fails (BackoffLimitExceeded)
  DELETE /_fake/fail-job                 clear those switches: Jobs created from now on succeed again
  POST   /_fake/job-logs                 {"namespace": "x", "name": "y" | "prefix": "y-", "logs": "a\nb"}:
                                         pods of matching Jobs log these lines (when their template
                                         carries no logs annotation); the newest matching rule wins.
                                         For runbooks that create Jobs the test cannot annotate.
  DELETE /_fake/job-logs                 remove those rules
  POST   /_fake/forbid                   {"user": "u", "verb": "get", "resource": "secrets", "namespace": "*"}
  GET    /_fake/requests                 {"items": [{"seq","time","method","path","query","params",
                                         "status","user","watch","contentType","fault"}]}; ?since=SEQ
  DELETE /_fake/requests                 clear the log
  POST   /_fake/objects                  seed objects as they are (status kept, no validation):
                                         {"objects": [...], "reconcile": true} or one object
  POST   /_fake/status                   {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "x",
                                         "name": "y", "status": {...}, "merge": false, "freeze": true}
                                         sets the status (one MODIFIED event); freeze keeps controllers off it
  POST   /_fake/compact                  forget the watch history: watches from older versions get 410
  GET    /_fake/config, POST /_fake/config
           {"controller_delay": 0.3, "log_interval": 0.05, "bookmark_interval": 1.0, "watchlist": true,
            "controllers": true | false | ["Deployment", ...], "daemonset_nodes": 3}

Simulated controllers (each step waits controller_delay): Deployment (ReplicaSets, pods,
rollout status), ReplicaSet, StatefulSet (pods, PVCs), DaemonSet (status only), Job (one
pod at a time), Pod (Pending -> Running/Ready -> Succeeded/Failed for restartPolicy
Never/OnFailure), PersistentVolumeClaim (Pending -> Bound), namespace termination,
foreground deletion. Pod logs come from the annotation `fake.runbook.dev/logs`
(newline-separated lines; `fake.runbook.dev/logs.<container>` for another container),
one line per log_interval after the pod starts; `fake.runbook.dev/exit-code` sets the exit code.
"""

import argparse
import heapq
import json
import os
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_patch import clone, json_equal, json_patch, merge_patch, strategic_merge_patch  # noqa: E402
from fake_store import (ApiError, FieldError, Store, api_group_list, bad_request,  # noqa: E402
                        fields_match, forbidden, invalid, labels_match, method_not_allowed,
                        not_found, now_rfc3339, openapi_v3_doc, openapi_v3_index,
                        parse_field_selector, parse_label_selector, resource_list, short_hash,
                        unsupported_media_type)

LOGS_ANNOTATION = "fake.runbook.dev/logs"
EXIT_ANNOTATION = "fake.runbook.dev/exit-code"
CONTROLLER = "kube-controller-manager"


def truthy(value):
    return str(value).lower() in ("1", "true", "yes")


def rfc3339_nano(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % int((t % 1) * 1e9)


def parse_rfc3339(text):
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except (TypeError, ValueError):
        return None


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


# ==========================================================================
# Controllers: a scheduler thread and one reconcile function per kind
# ==========================================================================


def set_condition(status, ctype, value, reason, message, with_update_time=False, probe=False):
    """Add or update a condition; lastTransitionTime moves only when status flips."""
    now = now_rfc3339()
    conds = status.setdefault("conditions", [])
    cond = next((c for c in conds if c.get("type") == ctype), None)
    if cond is None:
        cond = {"type": ctype}
        conds.append(cond)
    if cond.get("status") != value:
        cond["lastTransitionTime"] = now
    cond["status"] = value
    if probe:
        cond["lastProbeTime"] = None
    if with_update_time:
        cond["lastUpdateTime"] = now if cond.get("reason") != reason or cond.get("message") != message \
            else cond.get("lastUpdateTime", now)
    cond["reason"], cond["message"] = reason, message
    order = ["type", "status", "lastProbeTime", "lastUpdateTime", "lastTransitionTime", "reason", "message"]
    cond_sorted = {k: cond[k] for k in order if k in cond}
    conds[conds.index(cond)] = cond_sorted


def condition(obj, ctype):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)


def controller_ref(obj):
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def owner_ref(obj, block=True):
    ref = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
           "uid": obj["metadata"]["uid"], "controller": True}
    if block:
        ref["blockOwnerDeletion"] = True
    return ref


class Controllers(threading.Thread):
    """Level-triggered reconcilers. Store events schedule a reconcile of the
    object (and of its controller owner) controller_delay seconds later; a
    reconcile makes at most one visible step and schedules the next."""

    def __init__(self, fake):
        super().__init__(name="controllers", daemon=True)
        self.fake = fake
        self.store = fake.store
        self.lock = threading.Lock()
        self.heap = []
        self.due = {}
        self.wake = threading.Event()
        self.pod_started = {}  # pod uid -> epoch seconds its containers started
        self.seq = 0
        self.store.listeners.append(self.on_event)

    @property
    def delay(self):
        return float(self.fake.config["controller_delay"])

    def kick(self, key, delay=None):
        when = time.time() + (self.delay if delay is None else delay)
        with self.lock:
            if key in self.due and self.due[key] <= when:
                return
            self.due[key] = when
            self.seq += 1
            heapq.heappush(self.heap, (when, self.seq, key))
        self.wake.set()

    def on_event(self, ev):
        """Called by the store, lock held: decide what to reconcile."""
        group, plural = ev.key
        meta = ev.obj["metadata"]
        ns = meta.get("namespace", "")
        if ev.type != "DELETED":
            self.kick((group, plural, ns, meta["name"]))
        ref = controller_ref(ev.obj)
        if ref:
            rt = self.store.types.for_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
            if rt:
                self.kick((rt.group, rt.plural, ns, ref["name"]))

    def run(self):
        while not self.fake.stopping.is_set():
            self.wake.clear()  # before looking, so a kick from now on ends the wait below
            with self.lock:
                wait = self.heap[0][0] - time.time() if self.heap else 0.5
                item = None
                if self.heap and wait <= 0:
                    _, _, key = heapq.heappop(self.heap)
                    if self.due.get(key, 0) <= time.time():
                        self.due.pop(key, None)
                        item = key
            if item is None:
                self.wake.wait(max(0.0, min(wait, 0.5)))
                continue
            try:
                self.reconcile(*item)
            except Exception:  # a controller bug must not kill the thread
                traceback.print_exc(file=sys.stderr)

    def enabled(self, kind):
        setting = self.fake.config["controllers"]
        return setting is True or (isinstance(setting, list) and kind in setting)

    def reconcile(self, group, plural, ns, name):
        with self.store.lock:
            rt = self.store.types.for_key((group, plural))
            if rt is None:
                return
            obj = self.store._get(rt, ns, name)
            if obj is None:
                return
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                self.finalize(rt, obj)
                return
            if meta["uid"] in self.fake.faults.frozen or not self.enabled(rt.kind):
                return
            if (rt.kind, ns, name) in self.fake.faults.stuck and rt.kind != "Deployment":
                return
            fn = getattr(self, "reconcile_" + rt.kind, None)
            if fn:
                fn(rt, clone(obj))

    # -- deletion: namespaces and foreground ------------------------------

    def finalize(self, rt, obj):
        meta = obj["metadata"]
        if rt.kind == "Namespace":
            ns = meta["name"]
            for ort, o in list(self.store.all_objects()):
                if ort.namespaced and o["metadata"].get("namespace") == ns:
                    self.store.remove(ort, o)
            self.store.remove(rt, obj)
        elif "foregroundDeletion" in (meta.get("finalizers") or []):
            for drt, dep in self.store.dependents(meta["uid"]):
                self.store.remove(drt, dep)
            new = clone(obj)
            new["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != "foregroundDeletion"]
            if not new["metadata"]["finalizers"]:
                new["metadata"].pop("finalizers")
            self.store.write(rt, new, subresource=None)

    # -- helpers ----------------------------------------------------------

    def rt(self, group, plural):
        return self.store.types.get(group, "v1", plural)

    def owned(self, rt, owner):
        return [o for o in self.store.select(rt, owner["metadata"].get("namespace", ""))
                if (controller_ref(o) or {}).get("uid") == owner["metadata"]["uid"]]

    def create(self, rt, ns, obj):
        try:
            return self.store.create(rt, ns, obj, CONTROLLER)
        except ApiError:
            return None  # e.g. the namespace is terminating

    def update_spec(self, rt, obj, change):
        new = clone(obj)
        change(new)
        if not json_equal(new, obj):
            self.store._update(rt, obj, new, CONTROLLER, None, False)

    def write_status(self, rt, obj, status, annotations=None):
        new = clone(obj)
        new["status"] = status
        if annotations:
            new["metadata"].setdefault("annotations", {}).update(annotations)
        return self.store.write(rt, new)

    def pod_for_template(self, owner, template, name=None, generate=None, extra_labels=None):
        tmeta = template.get("metadata") or {}
        meta = {"labels": dict(tmeta.get("labels") or {}, **(extra_labels or {})),
                "ownerReferences": [owner_ref(owner)]}
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = generate
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": clone(template.get("spec") or {})}

    # -- Deployment -> ReplicaSets -> Pods --------------------------------

    def reconcile_Deployment(self, rt, d):
        spec, st = d["spec"], clone(d.get("status") or {})
        n, gen = spec.get("replicas", 1), d["metadata"]["generation"]
        template_hash = short_hash(spec.get("template"))
        rs_name = "%s-%s" % (d["metadata"]["name"], template_hash)
        stuck = ("Deployment", d["metadata"].get("namespace"), d["metadata"]["name"]) in self.fake.faults.stuck
        if spec.get("paused") and not stuck:
            st["observedGeneration"] = gen
            set_condition(st, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", True)
            self.write_status(rt, d, st)
            return
        progressing = condition(d, "Progressing") or {}
        if stuck:
            revision = self.ensure_replicaset(d, template_hash, n, scale_old=False)
            st.update(observedGeneration=gen, replicas=n, updatedReplicas=n, readyReplicas=0,
                      availableReplicas=0, unavailableReplicas=n)
            set_condition(st, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", True)
            set_condition(st, "Progressing", "False", "ProgressDeadlineExceeded",
                          'ReplicaSet "%s" has timed out progressing.' % rs_name, True)
            self.write_status(rt, d, st, {"deployment.kubernetes.io/revision": str(revision)})
            return
        done = (st.get("observedGeneration") == gen and progressing.get("reason") == "NewReplicaSetAvailable"
                and st.get("updatedReplicas", 0) == n and st.get("availableReplicas", 0) == n
                and st.get("replicas", 0) == n)
        if done:
            return
        if st.get("observedGeneration") != gen and n > 0:
            # Step one: the new ReplicaSet exists and is rolling out.
            first = not st.get("availableReplicas")
            revision = self.ensure_replicaset(d, template_hash, n, scale_old=False)
            if first:
                st.update(observedGeneration=gen, replicas=n, updatedReplicas=n, readyReplicas=0,
                          availableReplicas=0, unavailableReplicas=n)
                set_condition(st, "Available", "False", "MinimumReplicasUnavailable",
                              "Deployment does not have minimum availability.", True)
            else:
                st.update(observedGeneration=gen, replicas=n + 1, updatedReplicas=1,
                          readyReplicas=st.get("availableReplicas", n), unavailableReplicas=1)
                st["availableReplicas"] = st["readyReplicas"]
            set_condition(st, "Progressing", "True", "ReplicaSetUpdated",
                          'ReplicaSet "%s" is progressing.' % rs_name, True)
            self.write_status(rt, d, st, {"deployment.kubernetes.io/revision": str(revision)})
            self.kick((rt.group, rt.plural, d["metadata"].get("namespace", ""), d["metadata"]["name"]))
            return
        # Step two: the rollout finished.
        revision = self.ensure_replicaset(d, template_hash, n, scale_old=True)
        st.update(observedGeneration=gen, replicas=n, updatedReplicas=n, readyReplicas=n, availableReplicas=n)
        st.pop("unavailableReplicas", None)
        if n == 0:
            for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
                st.pop(key, None)
        set_condition(st, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", True)
        set_condition(st, "Progressing", "True", "NewReplicaSetAvailable",
                      'ReplicaSet "%s" has successfully progressed.' % rs_name, True)
        self.write_status(rt, d, st, {"deployment.kubernetes.io/revision": str(revision)})

    def ensure_replicaset(self, d, template_hash, n, scale_old):
        rs_rt = self.rt("apps", "replicasets")
        ns, name = d["metadata"].get("namespace", ""), "%s-%s" % (d["metadata"]["name"], template_hash)
        owned = self.owned(rs_rt, d)
        revisions = [int((o["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
                     for o in owned]
        current = next((o for o in owned if o["metadata"]["name"] == name), None)
        top = max(revisions or [0])
        if current is None:
            revision = top + 1
            template = clone(d["spec"].get("template") or {})
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = template_hash
            selector = clone(d["spec"].get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
            self.create(rs_rt, ns, {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": name, "labels": template["metadata"]["labels"],
                             "annotations": {"deployment.kubernetes.io/desired-replicas": str(n),
                                             "deployment.kubernetes.io/max-replicas": str(n + 1),
                                             "deployment.kubernetes.io/revision": str(revision)},
                             "ownerReferences": [owner_ref(d)]},
                "spec": {"replicas": n, "selector": selector, "template": template}})
        else:
            old_rev = int(current["metadata"]["annotations"].get("deployment.kubernetes.io/revision", "0"))
            revision = old_rev if old_rev == top else top + 1

            def change(rs):
                rs["spec"]["replicas"] = n
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = str(revision)
                rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] = str(n)
            self.update_spec(rs_rt, current, change)
        if scale_old:
            for o in owned:
                if o["metadata"]["name"] != name and o["spec"].get("replicas", 0) != 0:
                    self.update_spec(rs_rt, o, lambda rs: rs["spec"].__setitem__("replicas", 0))
        return revision

    def reconcile_ReplicaSet(self, rt, rs):
        pod_rt = self.rt("", "pods")
        ns = rs["metadata"].get("namespace", "")
        pods = [p for p in self.owned(pod_rt, rs) if not p["metadata"].get("deletionTimestamp")]
        want = rs["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            pod = self.create(pod_rt, ns, self.pod_for_template(rs, rs["spec"].get("template") or {},
                                                               generate=rs["metadata"]["name"] + "-"))
            if pod:
                pods.append(pod)
        for extra in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)[:max(0, len(pods) - want)]:
            self.store.remove(pod_rt, extra)
            pods.remove(extra)
        ready = sum(1 for p in pods if (condition(p, "Ready") or {}).get("status") == "True")
        st = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
              "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)}
        if not ready:
            st.pop("readyReplicas")
            st.pop("availableReplicas")
        self.write_status(rt, rs, st)

    # -- StatefulSet, DaemonSet -------------------------------------------

    def reconcile_StatefulSet(self, rt, sts):
        spec, st = sts["spec"], clone(sts.get("status") or {})
        n, gen = spec.get("replicas", 1), sts["metadata"]["generation"]
        ns, name = sts["metadata"].get("namespace", ""), sts["metadata"]["name"]
        revision = "%s-%s" % (name, short_hash(spec.get("template"))[:10])
        if st.get("observedGeneration") == gen and st.get("currentRevision") == revision \
                and st.get("readyReplicas", 0) == n and st.get("updatedReplicas", 0) == n:
            return
        if st.get("observedGeneration") != gen:
            self.sync_statefulset_pods(sts, revision, n)
            first = not st.get("currentRevision")
            st.update(observedGeneration=gen, replicas=n, updatedReplicas=0, updateRevision=revision,
                      currentRevision=st.get("currentRevision") or revision, collisionCount=0,
                      readyReplicas=0 if first else st.get("readyReplicas", 0),
                      availableReplicas=0 if first else st.get("availableReplicas", 0),
                      currentReplicas=0 if first else st.get("currentReplicas", 0))
            self.write_status(rt, sts, st)
            self.kick((rt.group, rt.plural, ns, name))
            return
        st.update(replicas=n, readyReplicas=n, currentReplicas=n, updatedReplicas=n, availableReplicas=n,
                  currentRevision=revision, updateRevision=revision)
        self.write_status(rt, sts, st)

    def sync_statefulset_pods(self, sts, revision, n):
        pod_rt, pvc_rt = self.rt("", "pods"), self.rt("", "persistentvolumeclaims")
        ns, name = sts["metadata"].get("namespace", ""), sts["metadata"]["name"]
        spec = sts["spec"]
        for pod in self.owned(pod_rt, sts):
            index = pod["metadata"]["name"].rsplit("-", 1)[-1]
            stale = (pod["metadata"].get("labels") or {}).get("controller-revision-hash") != revision
            if not index.isdigit() or int(index) >= n or stale:
                self.store.remove(pod_rt, pod)
        for i in range(n):
            pod_name = "%s-%d" % (name, i)
            for tpl in spec.get("volumeClaimTemplates") or []:
                claim = "%s-%s" % (tpl["metadata"]["name"], pod_name)
                if self.store._get(pvc_rt, ns, claim) is None:
                    self.create(pvc_rt, ns, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                             "metadata": {"name": claim, "labels": dict(
                                                 (spec.get("selector") or {}).get("matchLabels") or {})},
                                             "spec": clone(tpl.get("spec") or {})})
            if self.store._get(pod_rt, ns, pod_name) is None:
                pod = self.pod_for_template(sts, spec.get("template") or {}, name=pod_name, extra_labels={
                    "controller-revision-hash": revision, "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(i)})
                pod["spec"]["hostname"] = pod_name
                if spec.get("serviceName"):
                    pod["spec"]["subdomain"] = spec["serviceName"]
                for tpl in spec.get("volumeClaimTemplates") or []:
                    pod["spec"].setdefault("volumes", []).append({
                        "name": tpl["metadata"]["name"],
                        "persistentVolumeClaim": {"claimName": "%s-%s" % (tpl["metadata"]["name"], pod_name)}})
                self.create(pod_rt, ns, pod)

    def reconcile_DaemonSet(self, rt, ds):
        st, gen = clone(ds.get("status") or {}), ds["metadata"]["generation"]
        nodes = int(self.fake.config["daemonset_nodes"])
        if st.get("observedGeneration") == gen and st.get("updatedNumberScheduled") == nodes \
                and st.get("numberAvailable") == nodes:
            return
        if st.get("observedGeneration") != gen:
            ready = st.get("numberReady", 0)
            st.update(observedGeneration=gen, desiredNumberScheduled=nodes, currentNumberScheduled=nodes,
                      numberMisscheduled=0, numberReady=ready, updatedNumberScheduled=0,
                      numberAvailable=st.get("numberAvailable", 0), numberUnavailable=nodes - ready)
            self.write_status(rt, ds, st)
            self.kick((rt.group, rt.plural, ds["metadata"].get("namespace", ""), ds["metadata"]["name"]))
            return
        st.update(desiredNumberScheduled=nodes, currentNumberScheduled=nodes, numberMisscheduled=0,
                  numberReady=nodes, updatedNumberScheduled=nodes, numberAvailable=nodes)
        st.pop("numberUnavailable", None)
        self.write_status(rt, ds, st)

    # -- Job -> Pod -------------------------------------------------------

    def reconcile_Job(self, rt, job):
        st = clone(job.get("status") or {})
        if any((condition(job, t) or {}).get("status") == "True" for t in ("Complete", "Failed")):
            return
        if job["spec"].get("suspend"):
            return
        ns, name = job["metadata"].get("namespace", ""), job["metadata"]["name"]
        pod_rt = self.rt("", "pods")
        pods = self.owned(pod_rt, job)
        succeeded = sum(1 for p in pods if p.get("status", {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        active = [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        completions = job["spec"].get("completions", 1)
        if failed:
            st.update(active=0, ready=0, failed=failed, terminating=0)
            if condition(job, "FailureTarget") is None:
                set_condition(st, "FailureTarget", "True", "BackoffLimitExceeded",
                              "Job has reached the specified backoff limit", probe=True)
                self.write_status(rt, job, st)
                self.kick((rt.group, rt.plural, ns, name))
            else:
                set_condition(st, "Failed", "True", "BackoffLimitExceeded",
                              "Job has reached the specified backoff limit", probe=True)
                self.write_status(rt, job, st)
            return
        if succeeded >= completions:
            st.update(active=0, ready=0, succeeded=succeeded, terminating=0)
            if condition(job, "SuccessCriteriaMet") is None:
                set_condition(st, "SuccessCriteriaMet", "True", "CompletionsReached",
                              "Reached expected number of succeeded pods", probe=True)
                self.write_status(rt, job, st)
                self.kick((rt.group, rt.plural, ns, name))
            else:
                st["completionTime"] = now_rfc3339()
                set_condition(st, "Complete", "True", "CompletionsReached",
                              "Reached expected number of succeeded pods", probe=True)
                self.write_status(rt, job, st)
            return
        if not active:
            pod = self.create(pod_rt, ns, self.pod_for_template(job, job["spec"].get("template") or {},
                                                                generate=name + "-"))
            if pod:
                active.append(pod)
        st.setdefault("startTime", now_rfc3339())
        st.update(active=len(active), terminating=0, uncountedTerminatedPods={},
                  ready=sum(1 for p in active if (condition(p, "Ready") or {}).get("status") == "True"))
        if succeeded:
            st["succeeded"] = succeeded
        self.write_status(rt, job, st)

    # -- Pod: Pending -> Running -> Succeeded/Failed -----------------------

    def log_lines(self, pod, container):
        """[(timestamp, text)] of a container's fake log, whether emitted yet or not."""
        ann = pod["metadata"].get("annotations") or {}
        first = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name")
        text = ann.get("%s.%s" % (LOGS_ANNOTATION, container))
        if text is None and container == first:
            text = ann.get(LOGS_ANNOTATION)
        if text is None and container == first:
            ref = controller_ref(pod)
            if ref and ref.get("kind") == "Job":
                text = self.fake.faults.logs_for_job(pod["metadata"].get("namespace", ""), ref.get("name", ""))
        if not text:
            return []
        start = self.pod_started.get(pod["metadata"]["uid"])
        if start is None:
            start = parse_rfc3339((pod.get("status") or {}).get("startTime")) or 0.0
        interval = float(self.fake.config["log_interval"])
        return [(start + i * interval, line) for i, line in enumerate(text.splitlines())]

    def exit_code(self, pod):
        ann = pod["metadata"].get("annotations") or {}
        if ann.get(EXIT_ANNOTATION):
            try:
                return int(ann[EXIT_ANNOTATION])
            except ValueError:
                return 1
        ref = controller_ref(pod)
        if ref and ref.get("kind") == "Job" and self.fake.faults.job_fails(pod["metadata"].get("namespace"), ref["name"]):
            return 1
        return 0

    def reconcile_Pod(self, rt, pod):
        st = clone(pod.get("status") or {})
        phase = st.get("phase", "Pending")
        containers = [c for c in (pod.get("spec") or {}).get("containers") or [] if isinstance(c, dict)]
        uid = pod["metadata"]["uid"]
        finishes = (pod.get("spec") or {}).get("restartPolicy", "Always") != "Always"
        if phase == "Pending":
            now = time.time()
            self.pod_started[uid] = now
            started = now_rfc3339(now)
            seq = int(uid.replace("-", "")[:4], 16) % 250 + 2
            st.update(phase="Running", hostIP="10.0.0.1", hostIPs=[{"ip": "10.0.0.1"}],
                      podIP="10.244.0.%d" % seq, podIPs=[{"ip": "10.244.0.%d" % seq}], startTime=started)
            for ctype in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"):
                set_condition(st, ctype, "True", None, None, probe=True)
            for c in st["conditions"]:
                c.pop("reason", None)
                c.pop("message", None)
            st["containerStatuses"] = [{
                "name": c.get("name"), "image": c.get("image"), "imageID": "",
                "containerID": "containerd://" + short_hash([uid, c.get("name")], 32),
                "ready": True, "started": True, "restartCount": 0, "lastState": {},
                "state": {"running": {"startedAt": started}}} for c in containers]
            new = clone(pod)
            new["spec"]["nodeName"] = "fake-node-1"
            new["status"] = st
            self.store.write(rt, new)
            if finishes:
                self.schedule_pod_end(rt, pod, containers)
            return
        if phase == "Running" and finishes:
            end = self.pod_end_time(pod, containers)
            if time.time() < end:
                self.kick((rt.group, rt.plural, pod["metadata"].get("namespace", ""), pod["metadata"]["name"]),
                          delay=end - time.time())
                return
            code = self.exit_code(pod)
            finished = now_rfc3339()
            st["phase"] = "Succeeded" if code == 0 else "Failed"
            reason = "PodCompleted" if code == 0 else "PodFailed"
            for ctype in ("Ready", "ContainersReady"):
                set_condition(st, ctype, "False", reason, None, probe=True)
                cond = condition({"status": st}, ctype)
                cond.pop("message", None)
            for cs in st.get("containerStatuses") or []:
                started = ((cs.get("state") or {}).get("running") or {}).get("startedAt", finished)
                cs.update(ready=False, started=False, state={"terminated": {
                    "exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
                    "finishedAt": finished, "containerID": cs.get("containerID")}})
            self.write_status(rt, pod, st)

    def pod_end_time(self, pod, containers):
        start = self.pod_started.get(pod["metadata"]["uid"], time.time())
        lines = max([len(self.log_lines(pod, c.get("name"))) for c in containers] or [0])
        return start + lines * float(self.fake.config["log_interval"]) + self.delay

    def schedule_pod_end(self, rt, pod, containers):
        self.kick((rt.group, rt.plural, pod["metadata"].get("namespace", ""), pod["metadata"]["name"]),
                  delay=self.pod_end_time(pod, containers) - time.time())

    # -- PersistentVolumeClaim --------------------------------------------

    def reconcile_PersistentVolumeClaim(self, rt, pvc):
        if (pvc.get("status") or {}).get("phase") == "Bound":
            return
        new = clone(pvc)
        spec = new.setdefault("spec", {})
        spec["volumeName"] = "pvc-" + pvc["metadata"]["uid"]
        ann = new["metadata"].setdefault("annotations", {})
        ann.update({"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"})
        new["status"] = {"phase": "Bound", "accessModes": clone(spec.get("accessModes") or []),
                         "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")}}
        self.store.write(rt, new)


# ==========================================================================
# HTTP: routing, authentication, handlers
# ==========================================================================


class Request:
    """What the handler knows about one API request."""

    def __init__(self, method, path, query, params):
        self.method, self.path, self.query, self.params = method, path, query, params
        self.watch = truthy(params.get("watch", "")) or "/watch/" in path
        self.warnings = []
        self.user = None
        self.groups = []


def _options_error(kind, errs):
    return invalid("meta.k8s.io", kind, "", errs)


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
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for w in getattr(self, "warnings", []):
            self.send_header("Warning", '299 - "%s"' % w.replace('"', '\\"'))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, code, obj, headers=None):
        self.send_bytes(code, (json.dumps(obj, separators=(",", ":")) + "\n").encode(), "application/json", headers)

    def send_error_status(self, err):
        self.send_json(err.code, err.status(), err.headers)

    def start_stream(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
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
            for rule in self.fake.faults.take(self.command, path, url.query, req.watch):
                entry["fault"] = rule["kind"]
                if rule["kind"] == "slow":
                    time.sleep(rule["ms"] / 1000.0)
                elif rule["kind"] == "drop":
                    entry["status"] = 0
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                elif rule["kind"] == "throttle":
                    err = ApiError(429, "TooManyRequests", rule["message"] or "Too many requests, please try again later.",
                                   {"retryAfterSeconds": rule["retry_after"]}, {"Retry-After": rule["retry_after"]})
                    return self.send_error_status(err)
                else:
                    return self.send_error_status(fault_error(rule))
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
            return self.serve_watch(req, rt, ns)
        if verb == "list":
            limit = p.get("limit") or "0"
            if not limit.isdigit():
                raise bad_request('limit: Invalid value: "%s": must be a non-negative integer' % limit)
            return self.send_json(200, store.list(rt, ns, p.get("labelSelector", ""), p.get("fieldSelector", ""),
                                                  int(limit), p.get("continue", "")))
        if sub == "log":
            return self.serve_log(req, rt, ns, name)
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
            raise _options_error(kind, errs)

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
            raise _options_error("DeleteOptions", errs)
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

    # -- watch ------------------------------------------------------------

    def serve_watch(self, req, rt, ns):
        store = self.fake.store
        p = req.params
        label_reqs = parse_label_selector(p.get("labelSelector", ""))
        field_reqs = parse_field_selector(p.get("fieldSelector", ""), rt)
        send_initial = p.get("sendInitialEvents")
        match = p.get("resourceVersionMatch", "")
        errs = []
        if send_initial is not None:
            if match != "NotOlderThan":
                errs.append(FieldError("Forbidden", "resourceVersionMatch",
                                       "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
            if not self.fake.config["watchlist"]:
                errs.append(FieldError("Forbidden", "sendInitialEvents",
                                       "sendInitialEvents is forbidden for watch unless the WatchList feature gate "
                                       "is enabled"))
        elif match:
            errs.append(FieldError("Forbidden", "resourceVersionMatch",
                                   "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"))
        if errs:
            raise _options_error("ListOptions", errs)
        initial_events = truthy(send_initial) if send_initial is not None else None
        bookmarks = truthy(p.get("allowWatchBookmarks", ""))
        try:
            timeout = float(p.get("timeoutSeconds") or 1800)
        except ValueError:
            raise bad_request('timeoutSeconds: Invalid value: "%s"' % p["timeoutSeconds"])
        rv_text = p.get("resourceVersion", "")
        if rv_text not in ("", "0") and not rv_text.isdigit():
            raise bad_request('invalid resource version "%s"' % rv_text)

        def matches(obj):
            if obj is None:
                return False
            if rt.namespaced and ns and obj["metadata"].get("namespace") != ns:
                return False
            return labels_match(label_reqs, obj["metadata"].get("labels")) and fields_match(field_reqs, obj)

        initial, error = [], None
        with store.lock:
            if initial_events or (initial_events is None and rv_text in ("", "0")):
                initial = [clone(o) for o in store.select(rt, ns, label_reqs, field_reqs)]
                pos = store.rv
            elif rv_text in ("", "0"):
                pos = store.rv
            else:
                pos = int(rv_text)
                try:
                    store.events_after(pos)
                except ApiError as e:
                    error = e
        self.start_stream("application/json")

        def send(etype, obj):
            self.write_chunk((json.dumps({"type": etype, "object": obj}, separators=(",", ":")) + "\n").encode())

        try:
            if error:
                send("ERROR", error.status())
                return self.end_stream()
            for obj in initial:
                send("ADDED", obj)
            if initial_events:
                send("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {
                    "resourceVersion": str(pos), "annotations": {"k8s.io/initial-events-end": "true"}}})
            deadline = time.time() + timeout
            next_bookmark = time.time() + float(self.fake.config["bookmark_interval"])
            while not self.fake.stopping.is_set():
                now = time.time()
                if now >= deadline:
                    break
                with store.cond:
                    try:
                        events = store.events_after(pos)
                        if not events:
                            store.cond.wait(min(0.5, deadline - now, max(0.01, next_bookmark - now)))
                            events = store.events_after(pos)
                    except ApiError as e:
                        send("ERROR", e.status())
                        break
                    current = store.rv
                for ev in events:
                    pos = ev.rv
                    if ev.key != rt.key:
                        continue
                    now_ok = ev.type != "DELETED" and matches(ev.obj)
                    was_ok = matches(ev.old) if ev.type != "ADDED" else False
                    if ev.type == "DELETED":
                        if matches(ev.obj):
                            send("DELETED", ev.obj)
                    elif now_ok and was_ok:
                        send("MODIFIED", ev.obj)
                    elif now_ok:
                        send("ADDED", ev.obj)
                    elif was_ok:
                        send("DELETED", ev.obj)
                if bookmarks and time.time() >= next_bookmark:
                    pos = max(pos, current)
                    send("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                      "metadata": {"resourceVersion": str(pos)}})
                if time.time() >= next_bookmark:
                    next_bookmark = time.time() + float(self.fake.config["bookmark_interval"])
                if not events and self.client_gone():
                    self.close_connection = True
                    return
            self.end_stream()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
            self.close_connection = True

    # -- pod logs ---------------------------------------------------------

    def serve_log(self, req, rt, ns, name):
        store, ctl = self.fake.store, self.fake.controllers
        p = req.params
        pod = store.get(rt, ns, name)
        spec = pod.get("spec") or {}
        names = [c.get("name") for c in spec.get("containers") or []]
        all_names = names + [c.get("name") for c in spec.get("initContainers") or []]
        container = p.get("container") or (pod["metadata"].get("annotations") or {}).get(
            "kubectl.kubernetes.io/default-container")
        if not container:
            if len(names) != 1:
                raise bad_request("a container name must be specified for pod %s, choose one of: [%s]"
                                  % (name, " ".join(names)))
            container = names[0]
        if container not in all_names:
            raise bad_request("container %s is not valid for pod %s" % (container, name))
        if truthy(p.get("previous", "")):
            raise bad_request('previous terminated container "%s" in pod "%s" not found' % (container, name))
        if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            raise bad_request('container "%s" in pod "%s" is waiting to start: ContainerCreating' % (container, name))
        for key in ("tailLines", "limitBytes", "sinceSeconds"):
            if key in p and not p[key].lstrip("-").isdigit():
                raise bad_request('%s: Invalid value: "%s"' % (key, p[key]))
        tail = int(p["tailLines"]) if "tailLines" in p else None
        limit = int(p["limitBytes"]) if "limitBytes" in p else None
        since = time.time() - int(p["sinceSeconds"]) if "sinceSeconds" in p else parse_rfc3339(p.get("sinceTime"))
        stamps = truthy(p.get("timestamps", ""))

        def render(entries):
            return "".join(("%s %s\n" % (rfc3339_nano(t), line)) if stamps else line + "\n" for t, line in entries).encode()

        def available(pod_now):
            now = time.time()
            return [(t, line) for t, line in ctl.log_lines(pod_now, container) if t <= now and (since is None or t >= since)]

        first = available(pod)
        if tail is not None:
            first = first[-tail:] if tail > 0 else []
        if not truthy(p.get("follow", "")):
            data = render(first)
            return self.send_bytes(200, data[:limit] if limit is not None else data, "text/plain")
        self.start_stream("text/plain")
        sent_bytes = 0
        sent_upto = first[-1][0] if first else float("-inf")
        try:
            def emit(entries):
                nonlocal sent_bytes
                data = render(entries)
                if limit is not None:
                    data = data[:max(0, limit - sent_bytes)]
                sent_bytes += len(data)
                self.write_chunk(data)
            emit(first)
            while not self.fake.stopping.is_set() and (limit is None or sent_bytes < limit):
                with store.cond:
                    current = store._get(rt, ns, name)
                    if current is None or current["metadata"]["uid"] != pod["metadata"]["uid"]:
                        break
                    current = clone(current)
                lines = ctl.log_lines(current, container)
                fresh = [(t, line) for t, line in lines if sent_upto < t <= time.time()]
                if fresh:
                    emit(fresh)
                    sent_upto = fresh[-1][0]
                    continue
                if current.get("status", {}).get("phase") in ("Succeeded", "Failed") and \
                        all(t <= sent_upto for t, _ in lines):
                    break
                pending = [t for t, _ in lines if t > sent_upto]
                with store.cond:
                    store.cond.wait(min(0.5, max(0.01, (min(pending) - time.time()) if pending else 0.5)))
                if self.client_gone():
                    self.close_connection = True
                    return
            self.end_stream()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
            self.close_connection = True

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
                         "controllers": True, "daemonset_nodes": 3}
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
        store, faults = self.store, self.faults
        if (method, name) == ("GET", "health"):
            return {"ok": True, "resourceVersion": store.rv}
        if (method, name) == ("POST", "reset"):
            faults.clear(self.cli_forbids)
            with self.requests_lock:
                self.requests = []
            self.config = dict(self.defaults)
            store.reset()
            return {"ok": True, "resourceVersion": store.rv}
        if name == "faults":
            if method == "POST":
                rules = data if isinstance(data, list) else [data]
                return {"added": [faults.add(r) for r in rules]}
            if method == "GET":
                with faults.lock:
                    return {"rules": [dict(r) for r in faults.rules]}
            if method == "DELETE":
                with faults.lock:
                    faults.rules = []
                return {"ok": True}
        if (method, name) == ("POST", "stuck"):
            key = (data.get("kind", "Deployment"), data.get("namespace", ""), data.get("name", ""))
            with faults.lock:
                faults.stuck.add(key)
            self.kick_named(key)
            return {"ok": True}
        if (method, name) == ("POST", "fail-job"):
            with faults.lock:
                faults.failing_jobs.append({"namespace": data.get("namespace"), "name": data.get("name")})
            return {"ok": True}
        if (method, name) == ("DELETE", "fail-job"):
            with faults.lock:
                faults.failing_jobs = []
            return {"ok": True}
        if (method, name) == ("POST", "job-logs"):
            if not isinstance(data.get("logs"), str):
                raise bad_request("job-logs needs \"logs\": the lines, newline-separated")
            with faults.lock:
                faults.job_logs.append({"namespace": data.get("namespace"), "name": data.get("name"),
                                        "prefix": data.get("prefix"), "logs": data["logs"]})
            return {"ok": True}
        if (method, name) == ("DELETE", "job-logs"):
            with faults.lock:
                faults.job_logs = []
            return {"ok": True}
        if (method, name) == ("POST", "forbid"):
            with faults.lock:
                faults.forbids.append((data.get("user", "*"), data.get("verb", "*"), data.get("resource", "*"),
                                       data.get("namespace", "*")))
            return {"ok": True}
        if name == "requests":
            with self.requests_lock:
                if method == "DELETE":
                    self.requests = []
                    return {"ok": True}
                since = int(params.get("since", 0))
                return {"items": [dict(e) for e in self.requests if e["seq"] > since]}
        if (method, name) == ("POST", "objects"):
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
                        with faults.lock:
                            faults.frozen.add(created["metadata"]["uid"])
                out.append(created)
            return {"objects": out}
        if (method, name) == ("POST", "status"):
            rt = store.types.for_kind(data.get("apiVersion", ""), data.get("kind", ""))
            if rt is None:
                raise bad_request("unknown kind %s %s" % (data.get("apiVersion"), data.get("kind")))
            with store.lock:
                obj = store._get(rt, data.get("namespace", ""), data.get("name", ""))
                if obj is None:
                    raise not_found(rt.group, rt.plural, data.get("name", ""))
                if data.get("freeze", True):
                    with faults.lock:
                        faults.frozen.add(obj["metadata"]["uid"])
                new = clone(obj)
                new["status"] = merge_patch(obj.get("status") or {}, data.get("status") or {}) \
                    if data.get("merge") else clone(data.get("status") or {})
                return {"object": store.write(rt, new)}
        if (method, name) == ("POST", "compact"):
            store.compact()
            return {"ok": True, "resourceVersion": store.rv}
        if name == "config":
            if method == "POST":
                unknown = set(data) - set(self.config)
                if unknown:
                    raise bad_request("unknown settings: %s" % ", ".join(sorted(unknown)))
                self.config.update(data)
            return dict(self.config)
        return None

    def kick_named(self, key):
        kind, ns, name = key
        for rt in self.store.types.by_path.values():
            if rt.kind == kind:
                self.controllers.kick((rt.group, rt.plural, ns, name), delay=0)


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

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
