"""Streams of the fake Kubernetes API server: watches (synthetic ADDED,
history, 410 Expired, selector entry and exit, BOOKMARKs, WatchList) and
followed pod logs. Each function serves one request on a routing Handler.
"""

import json
import socket
import ssl
import time

from fake_patch import clone
from fake_types import (ApiError, FieldError, bad_request, fields_match, labels_match, options_error,
                        parse_field_selector, parse_label_selector, parse_rfc3339, rfc3339_nano, truthy)

# -- watch ------------------------------------------------------------

def serve_watch(h, req, rt, ns):
    store = h.fake.store
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
        if not h.fake.config["watchlist"]:
            errs.append(FieldError("Forbidden", "sendInitialEvents",
                                   "sendInitialEvents is forbidden for watch unless the WatchList feature gate "
                                   "is enabled"))
    elif match:
        errs.append(FieldError("Forbidden", "resourceVersionMatch",
                               "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"))
    if errs:
        raise options_error("ListOptions", errs)
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
    h.start_stream("application/json")

    def send(etype, obj):
        h.write_chunk((json.dumps({"type": etype, "object": obj}, separators=(",", ":")) + "\n").encode())

    try:
        if error:
            send("ERROR", error.status())
            return h.end_stream()
        for obj in initial:
            send("ADDED", obj)
        if initial_events:
            send("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {
                "resourceVersion": str(pos), "annotations": {"k8s.io/initial-events-end": "true"}}})
        deadline = time.time() + timeout
        next_bookmark = time.time() + float(h.fake.config["bookmark_interval"])
        while not h.fake.stopping.is_set():
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
                next_bookmark = time.time() + float(h.fake.config["bookmark_interval"])
            if not events and h.client_gone():
                h.close_connection = True
                return
        h.end_stream()
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
        h.close_connection = True

# -- pod logs ---------------------------------------------------------

def serve_log(h, req, rt, ns, name):
    store, ctl = h.fake.store, h.fake.controllers
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
        return h.send_bytes(200, data[:limit] if limit is not None else data, "text/plain")
    h.start_stream("text/plain")
    sent_bytes = 0
    sent_upto = first[-1][0] if first else float("-inf")
    try:
        def emit(entries):
            nonlocal sent_bytes
            data = render(entries)
            if limit is not None:
                data = data[:max(0, limit - sent_bytes)]
            sent_bytes += len(data)
            h.write_chunk(data)
        emit(first)
        while not h.fake.stopping.is_set() and (limit is None or sent_bytes < limit):
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
            if h.client_gone():
                h.close_connection = True
                return
        h.end_stream()
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
        h.close_connection = True

