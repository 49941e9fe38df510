"""Defaulting and validation of the fake Kubernetes API server: the parts a
client can observe (defaults it reads back, the Invalid errors it gets).
"""

import base64
import re

from fake_patch import clone, json_equal
from fake_types import (_LABEL_KEY, LABEL_VALUE, LABEL_VALUE_MSG, QUALIFIED_NAME_MSG, FieldError,
                        label_selector_to_reqs, labels_match, now_rfc3339)

# --------------------------------------------------------------------------
# Defaulting and validation (the parts clients can observe)
# --------------------------------------------------------------------------

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
                  "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")

# Top-level fields each built-in kind decodes; anything else is an unknown
# field (dropped, warned about, or rejected with fieldValidation=Strict).
KNOWN_FIELDS = {
    "Secret": {"data", "stringData", "type", "immutable"},
    "ConfigMap": {"data", "binaryData", "immutable"},
    "ServiceAccount": {"secrets", "imagePullSecrets", "automountServiceAccountToken"},
    "Event": {"involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
              "type", "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"},
}
META_FIELDS = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
               "ownerReferences", "finalizers", "managedFields"}


def default_pod_spec(spec, template=False):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or []:
            if not isinstance(c, dict):
                continue
            image = c.get("image", "")
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
    if not template:
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)


def _template_spec(obj, *path):
    node = obj
    for p in path:
        node = node.setdefault(p, {}) if isinstance(node, dict) else {}
    return node


class Defaults:
    """Per-kind defaulting (pkg/apis/*/v1/defaults.go and PrepareForCreate)."""

    def __init__(self):
        self.next_ip = 10

    def apply(self, rt, obj, old):
        fn = getattr(self, "kind_" + rt.kind, None)
        if fn:
            fn(obj, old)

    def kind_Secret(self, obj, old):
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if string_data:
            data = obj.setdefault("data", {}) or {}
            obj["data"] = data
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()

    def kind_Namespace(self, obj, old):
        obj.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")

    def kind_Service(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if "clusterIP" not in spec:
                spec["clusterIP"] = (old or {}).get("spec", {}).get("clusterIP") or self._allocate_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
        obj.setdefault("status", {}).setdefault("loadBalancer", {})

    def _allocate_ip(self):
        self.next_ip += 1
        return "10.96.%d.%d" % (self.next_ip // 250, self.next_ip % 250 + 1)

    def kind_Pod(self, obj, old):
        default_pod_spec(obj.setdefault("spec", {}))
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", "BestEffort")

    def kind_PersistentVolumeClaim(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        spec.setdefault("storageClassName", "standard")
        obj.setdefault("status", {}).setdefault("phase", "Pending")

    def kind_Deployment(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        default_pod_spec(_template_spec(obj, "spec", "template", "spec"), template=True)

    def kind_StatefulSet(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("revisionHistoryLimit", 10)
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        for tpl in spec.get("volumeClaimTemplates") or []:
            if isinstance(tpl, dict):
                tpl.setdefault("apiVersion", "v1")
                tpl.setdefault("kind", "PersistentVolumeClaim")
                tpl.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
                tpl.setdefault("status", {}).setdefault("phase", "Pending")
        default_pod_spec(_template_spec(obj, "spec", "template", "spec"), template=True)

    def kind_DaemonSet(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("revisionHistoryLimit", 10)
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", 1)
            ru.setdefault("maxSurge", 0)
        default_pod_spec(_template_spec(obj, "spec", "template", "spec"), template=True)

    def kind_ReplicaSet(self, obj, old):
        obj.setdefault("spec", {}).setdefault("replicas", 1)
        default_pod_spec(_template_spec(obj, "spec", "template", "spec"), template=True)

    def kind_Job(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        if old is None and not spec.get("manualSelector"):
            # generateSelector (pkg/registry/batch/job/strategy.go)
            uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            labels = _template_spec(obj, "spec", "template", "metadata").setdefault("labels", {})
            labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                           "controller-uid": uid, "job-name": name})
            if not obj["metadata"].get("labels"):
                obj["metadata"]["labels"] = {"batch.kubernetes.io/controller-uid": uid,
                                             "batch.kubernetes.io/job-name": name,
                                             "controller-uid": uid, "job-name": name}
        default_pod_spec(_template_spec(obj, "spec", "template", "spec"), template=True)

    def kind_CronJob(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        default_pod_spec(_template_spec(obj, "spec", "jobTemplate", "spec", "template", "spec"), template=True)

    def kind_CustomResourceDefinition(self, obj, old):
        spec = obj.setdefault("spec", {})
        spec.setdefault("conversion", {"strategy": "None"})
        names = spec.get("names", {})
        if isinstance(names, dict) and names.get("kind"):
            names.setdefault("singular", names["kind"].lower())
            names.setdefault("listKind", names["kind"] + "List")
        now = now_rfc3339()
        obj["status"] = {
            "acceptedNames": clone(names),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                 "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": now,
                 "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}],
            "storedVersions": [v["name"] for v in spec.get("versions", []) if isinstance(v, dict) and v.get("storage")],
        }


def validate_meta(rt, obj, errs):
    meta = obj.get("metadata", {})
    name = meta.get("name", "")
    if rt.kind == "Namespace" or rt.kind == "Service":
        regex, msg, limit = (DNS1035_LABEL, DNS1035_MSG, 63) if rt.kind == "Service" else (DNS1123_LABEL, LABEL_MSG, 63)
    else:
        regex, msg, limit = DNS1123_SUBDOMAIN, SUBDOMAIN_MSG, 253
    if name and not regex.match(name):
        errs.append(FieldError("Invalid", "metadata.name", msg, name))
    elif len(name) > limit:
        errs.append(FieldError("Invalid", "metadata.name", "must be no more than %d characters" % limit, name))
    for key, value in (meta.get("labels") or {}).items():
        if not _LABEL_KEY.match(key):
            errs.append(FieldError("Invalid", "metadata.labels", QUALIFIED_NAME_MSG, key))
        if not isinstance(value, str) or not LABEL_VALUE.match(value) or len(value) > 63:
            errs.append(FieldError("Invalid", "metadata.labels", LABEL_VALUE_MSG, value))
    for key in (meta.get("annotations") or {}):
        if not _LABEL_KEY.match(key):
            errs.append(FieldError("Invalid", "metadata.annotations", QUALIFIED_NAME_MSG, key))


def validate_pod_spec(spec, field, errs, allowed_restart=None):
    if not isinstance(spec, dict):
        errs.append(FieldError("Required", field, ""))
        return
    containers = spec.get("containers")
    if not containers:
        errs.append(FieldError("Required", field + ".containers", ""))
    seen = set()
    for i, c in enumerate(containers or []):
        cf = "%s.containers[%d]" % (field, i)
        if not isinstance(c, dict):
            continue
        if not c.get("name"):
            errs.append(FieldError("Required", cf + ".name", ""))
        elif c["name"] in seen:
            errs.append(FieldError("Duplicate", cf + ".name", "", c["name"]))
        else:
            seen.add(c["name"])
        if not c.get("image"):
            errs.append(FieldError("Required", cf + ".image", ""))
    if allowed_restart and spec.get("restartPolicy") not in allowed_restart:
        errs.append(FieldError("NotSupported", field + ".restartPolicy",
                               "supported values: " + ", ".join('"%s"' % r for r in allowed_restart),
                               spec.get("restartPolicy", "")))


def validate_workload(obj, errs, restart=("Always",)):
    spec = obj.get("spec") or {}
    if "replicas" in spec and (not isinstance(spec["replicas"], int) or spec["replicas"] < 0):
        errs.append(FieldError("Invalid", "spec.replicas", "must be greater than or equal to 0", spec["replicas"]))
    selector = spec.get("selector")
    template = spec.get("template") or {}
    if not selector:
        errs.append(FieldError("Required", "spec.selector", ""))
    else:
        tlabels = (template.get("metadata") or {}).get("labels") or {}
        if not labels_match(label_selector_to_reqs(selector), tlabels):
            errs.append(FieldError("Invalid", "spec.template.metadata.labels",
                                   "`selector` does not match template `labels`", tlabels))
    validate_pod_spec(template.get("spec"), "spec.template.spec", errs, restart)


def validate(rt, obj, old):
    """Field errors for a create (old None) or an update."""
    errs = []
    validate_meta(rt, obj, errs)
    kind = rt.kind
    spec = obj.get("spec") or {}
    if kind in ("Secret", "ConfigMap"):
        for section in ("data", "binaryData"):
            for key in (obj.get(section) or {}):
                if not CONFIG_KEY.match(key):
                    errs.append(FieldError("Invalid", "%s[%s]" % (section, key), CONFIG_KEY_MSG, key))
        size = sum(len(v) for v in (obj.get("data") or {}).values() if isinstance(v, str))
        if size > 1024 * 1024:
            errs.append(FieldError("TooLong", "data", "must have at most 1048576 bytes"))
        if old is not None and old.get("immutable"):
            if not json_equal(old.get("data"), obj.get("data")) or not json_equal(old.get("binaryData"), obj.get("binaryData")):
                errs.append(FieldError("Forbidden", "data", "field is immutable when `immutable` is set"))
        if kind == "Secret" and old is not None and old.get("type") != obj.get("type"):
            errs.append(FieldError("Invalid", "type", "field is immutable", obj.get("type")))
    elif kind in ("Deployment", "ReplicaSet", "DaemonSet"):
        validate_workload(obj, errs)
        if old is not None and not json_equal(old.get("spec", {}).get("selector"), spec.get("selector")):
            errs.append(FieldError("Invalid", "spec.selector", "field is immutable", spec.get("selector")))
    elif kind == "StatefulSet":
        validate_workload(obj, errs)
        if old is not None:
            mutable = {"replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                       "minReadySeconds"}
            before = {k: v for k, v in old.get("spec", {}).items() if k not in mutable}
            after = {k: v for k, v in spec.items() if k not in mutable}
            if not json_equal(before, after):
                errs.append(FieldError("Forbidden", "spec", "updates to statefulset spec for fields other than "
                                       "'replicas', 'ordinals', 'template', 'updateStrategy', "
                                       "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
    elif kind == "Job":
        template = spec.get("template") or {}
        validate_pod_spec(template.get("spec"), "spec.template.spec", errs, ("OnFailure", "Never"))
        if old is not None and not json_equal(old.get("spec", {}).get("template"), template):
            errs.append(FieldError("Invalid", "spec.template", "field is immutable", template))
    elif kind == "CronJob":
        if not spec.get("schedule"):
            errs.append(FieldError("Required", "spec.schedule", ""))
        tpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        validate_pod_spec(tpl.get("spec"), "spec.jobTemplate.spec.template.spec", errs, ("OnFailure", "Never"))
    elif kind == "Pod":
        validate_pod_spec(spec, "spec", errs)
    elif kind == "Service":
        if spec.get("type", "ClusterIP") != "ExternalName" and not spec.get("ports") and spec.get("clusterIP") != "None":
            errs.append(FieldError("Required", "spec.ports", ""))
        for i, p in enumerate(spec.get("ports") or []):
            port = p.get("port") if isinstance(p, dict) else None
            if not isinstance(port, int) or not 1 <= port <= 65535:
                errs.append(FieldError("Invalid", "spec.ports[%d].port" % i,
                                       "must be between 1 and 65535, inclusive", port if port is not None else 0))
        if old is not None and old.get("spec", {}).get("clusterIP") not in (None, spec.get("clusterIP")):
            errs.append(FieldError("Invalid", "spec.clusterIP", "field is immutable", spec.get("clusterIP", "")))
    elif kind == "PersistentVolumeClaim":
        if not spec.get("accessModes"):
            errs.append(FieldError("Required", "spec.accessModes", ""))
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
            errs.append(FieldError("Required", "spec.resources[storage]", ""))
    elif kind == "CustomResourceDefinition":
        names = spec.get("names") or {}
        for field, value in (("spec.group", spec.get("group")), ("spec.names.plural", names.get("plural")),
                             ("spec.names.kind", names.get("kind")), ("spec.scope", spec.get("scope"))):
            if not value:
                errs.append(FieldError("Required", field, ""))
        if spec.get("scope") and spec["scope"] not in ("Namespaced", "Cluster"):
            errs.append(FieldError("NotSupported", "spec.scope", 'supported values: "Cluster", "Namespaced"',
                                   spec["scope"]))
        versions = spec.get("versions") or []
        if not versions:
            errs.append(FieldError("Invalid", "spec.versions", "must have exactly one version marked as storage version", []))
        elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
            errs.append(FieldError("Invalid", "spec.versions", "must have exactly one version marked as storage version", versions))
        want = "%s.%s" % (names.get("plural", ""), spec.get("group", ""))
        if spec.get("group") and names.get("plural") and obj["metadata"].get("name") != want:
            errs.append(FieldError("Invalid", "metadata.name", 'must be spec.names.plural+"."+spec.group',
                                   obj["metadata"].get("name", "")))
    return errs
