"""Simulated controllers of the fake Kubernetes API server: a scheduler
thread and one reconcile function per kind (Deployment, ReplicaSet,
StatefulSet, DaemonSet, Job, Pod, PersistentVolumeClaim), namespace
termination and foreground deletion.
"""

import heapq
import sys
import threading
import time
import traceback

from fake_patch import clone, json_equal
from fake_types import ApiError, now_rfc3339, parse_rfc3339, short_hash

LOGS_ANNOTATION = "fake.runbook.dev/logs"
EXIT_ANNOTATION = "fake.runbook.dev/exit-code"
CONTROLLER = "kube-controller-manager"


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
            # the thread sleeps until the earliest item: wake it only when this
            # one comes sooner (not once for every write, which made it contend
            # with the requests for the interpreter lock)
            sooner = not self.heap or when < self.heap[0][0]
            self.due[key] = when
            self.seq += 1
            heapq.heappush(self.heap, (when, self.seq, key))
        if sooner:
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

