"""Storage of the fake Kubernetes API server: the objects, the global
resourceVersion counter, the event history that watches read, reads and
lists, and the internal writes of controllers and the control API.

One re-entrant lock guards all state; a condition variable on it wakes
watchers after each write. What the API's writes *mean* (create, update,
patch, apply, delete) is in fake_verbs.py, which Store inherits.
"""

import base64
import collections
import json
import threading

from fake_patch import clone, json_equal, track_update
from fake_types import (Types, bad_request, expired, fields_match, labels_match, new_uid, not_found, now_rfc3339,
                        parse_field_selector, parse_label_selector)
from fake_validation import Defaults
from fake_verbs import Verbs

# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------

Event = collections.namedtuple("Event", "rv type key obj old")

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Store(Verbs):
    """All objects, the resourceVersion counter and the watch history.

    resourceVersion is one global counter (like etcd's revision). Each write
    appends an Event to a bounded history; a watch from a resourceVersion
    older than the oldest retained event gets 410 Expired, as from a
    compacted etcd.
    """

    def __init__(self, history=1000):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.types = Types()
        self.defaults = Defaults()
        self.objects = {}  # (group, plural) -> {(namespace, name): object}
        self.rv = 100
        self.history = collections.deque(maxlen=history)
        self.floor = 0  # watches from below this resourceVersion are expired
        self.listeners = []  # called with each Event while the lock is held
        self.seed_defaults()

    # -- primitives (lock held) ---------------------------------------------

    def seed_defaults(self):
        with self.lock:
            ns_rt = self.types.get("", "v1", "namespaces")
            for name in DEFAULT_NAMESPACES:
                obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                self._fill_system(obj)
                self.defaults.apply(ns_rt, obj, None)
                self._commit(ns_rt, obj, "ADDED", None)

    def reset(self):
        with self.lock:
            for key in list(self.objects):
                rt = self.types.for_key(key)
                for obj in list(self.objects[key].values()):
                    self._commit(rt, obj, "DELETED", obj)
            self.objects = {}
            self.types = Types()
            self.seed_defaults()

    def compact(self):
        """Forget all history: every watch from an older resourceVersion expires."""
        with self.lock:
            self.floor = self.rv
            self.history.clear()

    def _bucket(self, rt):
        return self.objects.setdefault(rt.key, {})

    def _get(self, rt, ns, name):
        return self._bucket(rt).get((ns if rt.namespaced else "", name))

    def _fill_system(self, obj):
        meta = obj.setdefault("metadata", {})
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        return meta

    def _commit(self, rt, obj, etype, old):
        """Store (or drop) obj under a fresh resourceVersion and record the event."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (obj["metadata"].get("namespace", "") if rt.namespaced else "", obj["metadata"]["name"])
        if etype == "DELETED":
            self._bucket(rt).pop(key, None)
        else:
            self._bucket(rt)[key] = obj
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0].rv
        ev = Event(self.rv, etype, rt.key, clone(obj), clone(old) if old is not None else None)
        self.history.append(ev)
        self.cond.notify_all()
        for listener in self.listeners:
            listener(ev)
        return obj

    def events_after(self, rv):
        """History events newer than rv; raises 410 when rv is too old."""
        if rv < self.floor:
            raise expired("too old resource version: %d (%d)" % (rv, self.floor))
        out = []
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            out.append(ev)
        out.reverse()
        return out

    def namespace_of(self, name):
        return self._bucket(self.types.get("", "v1", "namespaces")).get(("", name))

    def all_objects(self):
        for key, bucket in self.objects.items():
            rt = self.types.for_key(key)
            for obj in list(bucket.values()):
                yield rt, obj

    # -- reads --------------------------------------------------------------

    def get(self, rt, ns, name):
        with self.lock:
            obj = self._get(rt, ns, name)
            if obj is None:
                raise not_found(rt.group, rt.plural, name)
            return clone(obj)

    def select(self, rt, ns, label_reqs=(), field_reqs=()):
        """Matching objects (not copies), sorted as etcd keys are."""
        bucket = self._bucket(rt)
        out = []
        for (ons, name) in sorted(bucket):
            obj = bucket[(ons, name)]
            if rt.namespaced and ns and ons != ns:
                continue
            if labels_match(label_reqs, obj["metadata"].get("labels")) and fields_match(field_reqs, obj):
                out.append(obj)
        return out

    def list(self, rt, ns, label_selector="", field_selector="", limit=0, cont=""):
        label_reqs = parse_label_selector(label_selector)
        field_reqs = parse_field_selector(field_selector, rt)
        with self.lock:
            list_rv = self.rv
            start = None
            if cont:
                try:
                    token = json.loads(base64.b64decode(cont, validate=True))
                    list_rv, start = int(token["rv"]), token["start"]
                except (ValueError, KeyError, TypeError):
                    raise bad_request("continue key is not valid: the continue token is malformed")
                if list_rv < self.floor:
                    raise expired("The provided continue parameter is too old to display a consistent list result. "
                                  "You can start a new list without the continue parameter, or use the continue "
                                  "token in this response to retrieve the remainder of the results. Continuing with "
                                  "the provided token results in an inconsistent list - objects that were created, "
                                  "modified, or deleted between the time the first chunk was returned and now may "
                                  "show up in the list.")
            items = self.select(rt, ns, label_reqs, field_reqs)
            if start is not None:
                items = [o for o in items if _sort_key(o) > start]
            meta = {"resourceVersion": str(list_rv)}
            if limit and len(items) > limit:
                rest = len(items) - limit
                items = items[:limit]
                token = {"v": "meta.k8s.io/v1", "rv": list_rv, "start": _sort_key(items[-1])}
                meta["continue"] = base64.b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()
                if not label_reqs and not field_reqs:
                    meta["remainingItemCount"] = rest
            out = []
            for o in items:
                o = clone(o)
                o.pop("kind", None)
                o.pop("apiVersion", None)
                out.append(o)
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": out}



    def dependents(self, uid):
        return [(rt, o) for rt, o in self.all_objects()
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    def remove(self, rt, obj):
        """Delete now, with background collection of dependents (GC, controllers)."""
        current = self._get(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if current is None:
            return
        gone = clone(current)
        self._commit(rt, gone, "DELETED", current)
        self._after_delete(rt, gone, "Background")

    # -- internal writes (controllers, control API) -------------------------

    def write(self, rt, obj, manager="kube-controller-manager", subresource="status"):
        """Store a controller's new version of an object; no-op if unchanged."""
        with self.lock:
            old = self._get(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if old is None or old["metadata"]["uid"] != obj["metadata"]["uid"]:
                return None
            new = clone(obj)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if subresource:
                entries = track_update(old, new, manager, old["metadata"].get("managedFields"), rt.api_version,
                                       now_rfc3339(), "status", rt.custom, subresource)
                if entries:
                    new["metadata"]["managedFields"] = entries
            if json_equal(old, new):
                return old
            self._commit(rt, new, "MODIFIED", old)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                    and rt.kind != "Namespace":
                self.remove(rt, new)
            return new


def _sort_key(obj):
    return "%s/%s" % (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

