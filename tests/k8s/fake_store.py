"""Object store, resource types, discovery, defaulting and validation of the
fake Kubernetes API server (see fake_apiserver.py for the HTTP side).

Everything that decides what the API *means* lives here: which kinds exist,
how a create/update/patch/apply/delete changes the store, which Status error
it produces, and the event history that watches read. One re-entrant lock
guards all state; a condition variable on it wakes watchers after each write.
"""

import base64
import collections
import hashlib
import json
import random
import re
import threading
import time
import uuid

from fake_patch import (ApplyConflict, PatchBadRequest, PatchFailed, clone,
                        conflict_message, describe_manager, json_equal, prune_nulls,
                        json_patch, merge_patch, path_string,
                        server_side_apply, strategic_merge_patch, track_update)

# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def now_rfc3339(t=None):
    """Whole-second RFC 3339 in UTC, as metav1.Time serialises."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphabet


def random_suffix(n=5):
    return "".join(random.choice(NAME_ALPHABET) for _ in range(n))


def short_hash(value, n=10):
    """A stable name-safe hash (pod-template-hash, controller-revision-hash)."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return "".join(NAME_ALPHABET[b % len(NAME_ALPHABET)] for b in digest[:n])


def go_value(v):
    """Render a bad value the way field.Error does (%q for strings, JSON else)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


# --------------------------------------------------------------------------
# Status errors (apimachinery pkg/api/errors)
# --------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message}
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = {k: v for k, v in self.details.items() if v not in ("", None, [])}
        body["code"] = self.code
        return body


OMIT = object()
_FIELD_TYPES = {
    "Required": ("Required value", "FieldValueRequired"),
    "Invalid": ("Invalid value", "FieldValueInvalid"),
    "Forbidden": ("Forbidden", "FieldValueForbidden"),
    "NotSupported": ("Unsupported value", "FieldValueNotSupported"),
    "Duplicate": ("Duplicate value", "FieldValueDuplicate"),
    "TooLong": ("Too long", "FieldValueTooLong"),
}


class FieldError:
    def __init__(self, kind, field, detail="", value=OMIT):
        self.kind, self.field, self.detail, self.value = kind, field, detail, value

    def body(self):
        label = _FIELD_TYPES[self.kind][0]
        s = label
        if self.kind in ("Invalid", "NotSupported", "Duplicate") and self.value is not OMIT:
            s = "%s: %s" % (label, go_value(self.value))
        if self.detail:
            s += ": " + self.detail
        return s

    def text(self):
        return "%s: %s" % (self.field, self.body())

    def cause(self):
        return {"reason": _FIELD_TYPES[self.kind][1], "message": self.body(), "field": self.field}


def qualified(group, plural):
    return plural if not group else "%s.%s" % (plural, group)


def not_found(group, plural, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (qualified(group, plural), name),
                    {"name": name, "group": group, "kind": plural})


def already_exists(rt, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qualified, name),
                    {"name": name, "group": rt.group, "kind": rt.plural})


def conflict(rt, name, why="the object has been modified; please apply your changes to the latest version and try again"):
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s' % (rt.qualified, name, why),
                    {"name": name, "group": rt.group, "kind": rt.plural})


def invalid(group, kind, name, errors):
    qual = kind if not group else "%s.%s" % (kind, group)
    agg = errors[0].text() if len(errors) == 1 else "[%s]" % ", ".join(e.text() for e in errors)
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (qual, name, agg),
                    {"name": name, "group": group, "kind": kind, "causes": [e.cause() for e in errors]})


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def unsupported_media_type(accepted):
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: " + ", ".join(accepted))


def expired(message):
    return ApiError(410, "Expired", message)


def forbidden(group, plural, name, why):
    qual = qualified(group, plural) if plural else ""
    if not qual:
        message = "forbidden: " + why
    elif name:
        message = '%s "%s" is forbidden: %s' % (qual, name, why)
    else:
        message = "%s is forbidden: %s" % (qual, why)
    return ApiError(403, "Forbidden", message, {"name": name, "group": group, "kind": plural})


# --------------------------------------------------------------------------
# Resource types and discovery
# --------------------------------------------------------------------------

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
CUSTOM_PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
                      "application/apply-patch+yaml"]


class ResourceType:
    def __init__(self, group, version, kind, plural, namespaced=True, short=(), categories=(),
                 subresources=(), generation=None, singular=None, custom=False, list_kind=None,
                 verbs=None):
        self.group, self.version, self.kind, self.plural = group, version, kind, plural
        self.namespaced = namespaced
        self.short = list(short)
        self.categories = list(categories)
        self.subresources = set(subresources)
        # None: no metadata.generation; "spec": +1 on spec change;
        # "spec+annotations": also on annotation change; "custom": on any
        # change outside metadata and status (custom resources, CRDs).
        self.generation = generation
        self.singular = singular or kind.lower()
        self.custom = custom
        self.list_kind = list_kind or kind + "List"
        self.verbs = verbs or ALL_VERBS

    @property
    def key(self):
        return (self.group, self.plural)

    @property
    def api_version(self):
        return self.version if not self.group else "%s/%s" % (self.group, self.version)

    @property
    def qualified(self):
        return qualified(self.group, self.plural)

    @property
    def scope(self):
        """What the main resource may change: everything, or all but status."""
        return "main" if "status" in self.subresources else "all"

    @property
    def patch_types(self):
        return CUSTOM_PATCH_TYPES if self.custom else PATCH_TYPES


NS_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
BUILTIN_TYPES = [
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False, short=["ns"],
                 subresources=["status", "finalize"], verbs=NS_VERBS),
    ResourceType("", "v1", "Secret", "secrets"),
    ResourceType("", "v1", "ConfigMap", "configmaps", short=["cm"]),
    ResourceType("", "v1", "Service", "services", short=["svc"], categories=["all"], subresources=["status"],
                 verbs=["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]),
    ResourceType("", "v1", "Pod", "pods", short=["po"], categories=["all"], subresources=["status", "log"]),
    ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=["pvc"], subresources=["status"]),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", short=["sa"]),
    ResourceType("", "v1", "Event", "events", short=["ev"]),
    ResourceType("apps", "v1", "Deployment", "deployments", short=["deploy"], categories=["all"],
                 subresources=["status", "scale"], generation="spec+annotations"),
    ResourceType("apps", "v1", "StatefulSet", "statefulsets", short=["sts"], categories=["all"],
                 subresources=["status", "scale"], generation="spec"),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", short=["ds"], categories=["all"],
                 subresources=["status"], generation="spec+annotations"),
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", short=["rs"], categories=["all"],
                 subresources=["status", "scale"], generation="spec"),
    ResourceType("batch", "v1", "Job", "jobs", categories=["all"], subresources=["status"], generation="spec"),
    ResourceType("batch", "v1", "CronJob", "cronjobs", short=["cj"], categories=["all"],
                 subresources=["status"], generation="spec"),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", short=["ing"], subresources=["status"],
                 generation="spec"),
    ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                 namespaced=False, short=["crd", "crds"], subresources=["status"], generation="custom"),
]
BUILTIN_GROUPS = ["", "apps", "batch", "networking.k8s.io", "apiextensions.k8s.io"]


class Types:
    """The served resource types: the built-ins plus whatever CRDs define."""

    def __init__(self):
        self.by_path = {}  # (group, version, plural) -> ResourceType
        for rt in BUILTIN_TYPES:
            self.by_path[(rt.group, rt.version, rt.plural)] = rt
        self.crd_owned = {}  # CRD name -> [(group, version, plural)]

    def get(self, group, version, plural):
        return self.by_path.get((group, version, plural))

    def for_kind(self, api_version, kind):
        group, _, version = api_version.rpartition("/")
        for rt in self.by_path.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def for_key(self, key):
        return next((rt for rt in self.by_path.values() if rt.key == key), None)

    def group_versions(self):
        """[(group, [versions])] in discovery order: built-ins, then CRD groups."""
        seen = collections.OrderedDict((g, []) for g in BUILTIN_GROUPS)
        for (group, version, _plural) in self.by_path:
            seen.setdefault(group, [])
            if version not in seen[group]:
                seen[group].append(version)
        return [(g, v) for g, v in seen.items() if v]

    def in_group_version(self, group, version):
        return [rt for (g, v, _), rt in self.by_path.items() if g == group and v == version]

    def register_crd(self, crd):
        self.unregister_crd(crd["metadata"]["name"])
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        owned = []
        for ver in spec.get("versions", []):
            if not ver.get("served", True):
                continue
            sub = ver.get("subresources") or spec.get("subresources") or {}
            subs = [s for s in ("status", "scale") if s in sub]
            rt = ResourceType(spec["group"], ver["name"], names["kind"], names["plural"],
                              namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                              short=names.get("shortNames", []), categories=names.get("categories", []),
                              subresources=subs, generation="custom", singular=names.get("singular"),
                              custom=True, list_kind=names.get("listKind"))
            self.by_path[(rt.group, rt.version, rt.plural)] = rt
            owned.append((rt.group, rt.version, rt.plural))
        self.crd_owned[crd["metadata"]["name"]] = owned

    def unregister_crd(self, name):
        for path in self.crd_owned.pop(name, []):
            self.by_path.pop(path, None)


def resource_list(types, group, version):
    """GET /api/v1 or /apis/G/V: an APIResourceList with subresource entries."""
    resources = []
    for rt in types.in_group_version(group, version):
        entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                 "kind": rt.kind, "verbs": rt.verbs}
        if rt.short:
            entry["shortNames"] = rt.short
        if rt.categories:
            entry["categories"] = rt.categories
        entry["storageVersionHash"] = base64.b64encode(
            hashlib.sha256(("%s/%s/%s" % (group, version, rt.kind)).encode()).digest()[:8]).decode()
        resources.append(entry)
        for sub in sorted(rt.subresources):
            if sub == "finalize":
                resources.append({"name": rt.plural + "/finalize", "singularName": "", "namespaced": rt.namespaced,
                                  "kind": rt.kind, "verbs": ["update"]})
            elif sub == "status":
                resources.append({"name": rt.plural + "/status", "singularName": "", "namespaced": rt.namespaced,
                                  "kind": rt.kind, "verbs": ["get", "patch", "update"]})
            elif sub == "scale":
                resources.append({"name": rt.plural + "/scale", "singularName": "", "namespaced": rt.namespaced,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale",
                                  "verbs": ["get", "patch", "update"]})
            elif sub == "log":
                resources.append({"name": rt.plural + "/log", "singularName": "", "namespaced": rt.namespaced,
                                  "kind": rt.kind, "verbs": ["get"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": version if not group else "%s/%s" % (group, version), "resources": resources}


def api_group_list(types):
    groups = []
    for group, versions in types.group_versions():
        if not group:
            continue
        gvs = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in versions]
        groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def openapi_v3_doc(types, group, version):
    """Just enough OpenAPI v3 for kubectl's fieldValidation support check:
    one PATCH operation per kind carrying x-kubernetes-group-version-kind and
    a fieldValidation query parameter (cli-runtime query_param_verifier_v3)."""
    prefix = "/api/v1" if not group else "/apis/%s/%s" % (group, version)
    paths = {}
    for rt in types.in_group_version(group, version):
        item = "%s%s/%s/{name}" % (prefix, "/namespaces/{namespace}" if rt.namespaced else "", rt.plural)
        params = [{"name": n, "in": "query", "schema": {"type": "string"}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        gvk = {"group": group, "version": version, "kind": rt.kind}
        paths[item] = {"patch": {"operationId": "patch" + rt.kind, "x-kubernetes-action": "patch",
                                 "x-kubernetes-group-version-kind": gvk, "parameters": params,
                                 "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "fake"}, "paths": paths,
            "components": {"schemas": {}}}


def openapi_v3_index(types):
    paths = {}
    for group, versions in types.group_versions():
        for version in versions:
            rel = "api/v1" if not group else "apis/%s/%s" % (group, version)
            doc = json.dumps(openapi_v3_doc(types, group, version), sort_keys=True)
            digest = hashlib.sha512(doc.encode()).hexdigest()[:64].upper()
            paths[rel] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (rel, digest)}
    return {"paths": paths}


# --------------------------------------------------------------------------
# Label and field selectors
# --------------------------------------------------------------------------

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")


def _split_top(text):
    """Split a selector on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text):
    """a=b, a==b, a!=b, a in (x,y), a notin (x), a, !a  ->  [(key, op, values)]."""
    reqs = []
    for part in _split_top(text or ""):
        m = re.match(r"^(\S+)\s+(in|notin)\s*\(([^)]*)\)$", part)
        if m:
            key, op, vals = m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",") if v.strip()]
        elif part.startswith("!"):
            key, op, vals = part[1:].strip(), "!", []
        else:
            m = re.match(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$", part)
            if m:
                key, op, vals = m.group(1), {"==": "=", "=": "=", "!=": "!="}[m.group(2)], [m.group(3)]
            elif re.match(r"^[^=!\s()]+$", part):
                key, op, vals = part, "exists", []
            else:
                raise bad_request("unable to parse requirement: found '%s', expected: identifier" % part)
        if not _LABEL_KEY.match(key):
            raise bad_request('unable to parse requirement: <nil>: Invalid value: "%s": %s' % (key, QUALIFIED_NAME_MSG))
        for i, v in enumerate(vals):
            if not LABEL_VALUE.match(v) or len(v) > 63:
                raise bad_request('unable to parse requirement: values[%d][%s]: Invalid value: "%s": %s'
                                  % (i, key, v, LABEL_VALUE_MSG))
        reqs.append((key, op, vals))
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        present = key in labels
        if op == "=" and not (present and labels[key] == vals[0]):
            return False
        if op == "!=" and present and labels[key] == vals[0]:
            return False
        if op == "in" and not (present and labels[key] in vals):
            return False
        if op == "notin" and present and labels[key] in vals:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def label_selector_to_reqs(selector):
    """A metav1.LabelSelector object as requirements (controllers, scale)."""
    reqs = [(k, "=", [v]) for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for expr in (selector or {}).get("matchExpressions", []):
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}[expr["operator"]]
        reqs.append((expr["key"], op, expr.get("values", [])))
    return reqs


def label_selector_string(selector):
    parts = ["%s=%s" % (k, v) for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for expr in (selector or {}).get("matchExpressions", []):
        op = expr["operator"]
        if op in ("In", "NotIn"):
            parts.append("%s %s (%s)" % (expr["key"], op.lower(), ",".join(expr.get("values", []))))
        elif op == "Exists":
            parts.append(expr["key"])
        else:
            parts.append("!" + expr["key"])
    return ",".join(parts)


# Fields each kind can be selected on besides metadata.name/namespace.
EXTRA_FIELDS = {
    "Pod": {"status.phase": lambda o: o.get("status", {}).get("phase", ""),
            "spec.nodeName": lambda o: o.get("spec", {}).get("nodeName", ""),
            "spec.restartPolicy": lambda o: o.get("spec", {}).get("restartPolicy", ""),
            "spec.serviceAccountName": lambda o: o.get("spec", {}).get("serviceAccountName", ""),
            "status.podIP": lambda o: o.get("status", {}).get("podIP", "")},
    "Secret": {"type": lambda o: o.get("type", "")},
    "Namespace": {"status.phase": lambda o: o.get("status", {}).get("phase", "")},
    "Job": {"status.successful": lambda o: str(o.get("status", {}).get("succeeded", 0))},
    "Event": {"involvedObject.kind": lambda o: o.get("involvedObject", {}).get("kind", ""),
              "involvedObject.name": lambda o: o.get("involvedObject", {}).get("name", ""),
              "involvedObject.namespace": lambda o: o.get("involvedObject", {}).get("namespace", ""),
              "involvedObject.uid": lambda o: o.get("involvedObject", {}).get("uid", ""),
              "reason": lambda o: o.get("reason", ""), "type": lambda o: o.get("type", "")},
}


def parse_field_selector(text, rt):
    reqs = []
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not m:
            raise bad_request("invalid selector: '%s'; can't understand '%s'" % (text, part))
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field == "metadata.name":
            get = lambda o: o["metadata"].get("name", "")
        elif field == "metadata.namespace":
            get = lambda o: o["metadata"].get("namespace", "")
        elif field in EXTRA_FIELDS.get(rt.kind, {}):
            get = EXTRA_FIELDS[rt.kind][field]
        else:
            raise bad_request("field label not supported: %s" % field)
        reqs.append((get, op != "!=", value))
    return reqs


def fields_match(reqs, obj):
    return all((get(obj) == value) == equal for get, equal, value in reqs)


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
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
QUALIFIED_NAME_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                      "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
                      "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
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


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------

Event = collections.namedtuple("Event", "rv type key obj old")

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Store:
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
        meta["uid"] = str(uuid.uuid4())
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

    # -- decoding ----------------------------------------------------------

    def decode(self, rt, body, validation, warnings, patch=False):
        """Check a request body is an object of this kind; handle unknown fields."""
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized (must be of type %s)" % rt.kind)
        # Built-in kinds go through typed decoding, where null means absent
        # (an undo's template "creationTimestamp": null must not change its hash).
        obj = clone(body) if rt.custom else prune_nulls(body)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not kind:
            raise bad_request("Object 'Kind' is missing in '%s'" % json.dumps(body, separators=(",", ":"))[:200])
        if kind != rt.kind or (api_version and api_version != rt.api_version):
            raise bad_request("the API version in the data (%s) does not match the expected API version (%s)"
                              % (api_version, rt.api_version) if kind == rt.kind else
                              "the kind in the data (%s) does not match the expected kind (%s)" % (kind, rt.kind))
        obj["apiVersion"] = rt.api_version
        if not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("%s in version \"%s\" cannot be handled as a %s: metadata must be an object"
                              % (rt.kind, rt.version, rt.kind))
        obj.setdefault("metadata", {})
        unknown = []
        if not rt.custom:
            allowed = KNOWN_FIELDS.get(rt.kind, {"spec", "status"}) | {"apiVersion", "kind", "metadata"}
            unknown += [k for k in obj if k not in allowed]
            unknown += ["metadata." + k for k in obj["metadata"] if k not in META_FIELDS]
        if unknown:
            if validation == "Strict":
                text = ", ".join('unknown field "%s"' % u for u in sorted(unknown))
                if patch:
                    raise invalid("", "", "", [FieldError("Invalid", "patch", "strict decoding error: " + text,
                                                          json.dumps(body, separators=(",", ":")))])
                raise bad_request('%s in version "%s" cannot be handled as a %s: strict decoding error: %s'
                                  % (rt.kind, rt.version, rt.kind, text))
            if validation != "Ignore":
                warnings.extend('unknown field "%s"' % u for u in sorted(unknown))
            for u in unknown:
                if u.startswith("metadata."):
                    obj["metadata"].pop(u[9:], None)
                else:
                    obj.pop(u, None)
        if rt.kind == "Secret":
            for k, v in (obj.get("data") or {}).items():
                try:
                    if not isinstance(v, str):
                        raise ValueError("not a string")
                    base64.b64decode(v, validate=True)
                except (ValueError, TypeError):
                    raise bad_request('Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                                      'at input byte %d' % _first_bad_base64(v))
        if rt.kind == "ConfigMap":
            for k, v in (obj.get("data") or {}).items():
                if not isinstance(v, str):
                    raise bad_request('ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot '
                                      'unmarshal %s into Go struct field ConfigMap.data of type string'
                                      % type(v).__name__.replace("int", "number").replace("float", "number"))
        return obj

    # -- writes -------------------------------------------------------------

    def _check_namespace(self, rt, ns, name):
        """NamespaceLifecycle admission: no new content in a missing or
        terminating namespace."""
        if not rt.namespaced:
            return
        nsobj = self.namespace_of(ns)
        if nsobj is None:
            raise not_found("", "namespaces", ns)
        if nsobj["metadata"].get("deletionTimestamp"):
            err = forbidden(rt.group, rt.plural, name, "unable to create new content in namespace %s because it "
                            "is being terminated" % ns)
            err.details["causes"] = [{"reason": "NamespaceTerminating", "message": "namespace %s is being "
                                      "terminated" % ns, "field": "metadata.namespace"}]
            raise err

    def _set_generation(self, rt, obj, old):
        if not rt.generation:
            obj["metadata"].pop("generation", None)
            return
        if old is None:
            obj["metadata"]["generation"] = 1
            return
        gen = old["metadata"].get("generation", 1)
        if rt.generation == "custom":
            skip = {"metadata", "apiVersion", "kind"} | ({"status"} if "status" in rt.subresources else set())
            changed = not json_equal({k: v for k, v in old.items() if k not in skip},
                                     {k: v for k, v in obj.items() if k not in skip})
        else:
            changed = not json_equal(old.get("spec"), obj.get("spec"))
            if rt.generation == "spec+annotations":
                changed = changed or not json_equal(old["metadata"].get("annotations"),
                                                    obj["metadata"].get("annotations"))
        obj["metadata"]["generation"] = gen + 1 if changed else gen

    def create(self, rt, ns, body, manager, dry_run=False, validation="Warn", warnings=None,
               managed=None, seed=False):
        """POST: returns the created object. `managed` carries apply's managedFields."""
        warnings = [] if warnings is None else warnings
        obj = body if seed or managed is not None else self.decode(rt, body, validation, warnings)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        with self.lock:
            if not seed:
                self._check_namespace(rt, ns, meta.get("name", ""))
            rv_set = meta.pop("resourceVersion", None)
            keep_status = seed and "status" in obj
            status = obj.get("status")
            if seed and meta.get("uid"):
                meta.setdefault("creationTimestamp", now_rfc3339())
            else:
                self._fill_system(obj)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + random_suffix()
            if not meta.get("name"):
                raise invalid(rt.group, rt.kind, "", [FieldError("Required", "metadata.name",
                                                                 "name or generateName is required")])
            if "status" in rt.subresources:
                obj.pop("status", None)  # PrepareForCreate drops client-set status
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(key, None)
            self.defaults.apply(rt, obj, None)
            if keep_status:
                obj["status"] = status
            self._set_generation(rt, obj, None)
            if not seed:
                errs = validate(rt, obj, None)
                if errs:
                    raise invalid(rt.group, rt.kind, meta["name"], errs)
                if rv_set:
                    raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
            if self._get(rt, ns, meta["name"]) is not None:
                raise already_exists(rt, meta["name"])
            if managed is not None:
                meta["managedFields"] = managed
            elif not seed:
                meta["managedFields"] = track_update(None, obj, manager, [], rt.api_version, now_rfc3339(),
                                                     rt.scope, rt.custom)
            if not meta.get("managedFields"):
                meta.pop("managedFields", None)
            if dry_run:
                return clone(obj)
            if rt.kind == "CustomResourceDefinition":
                self.types.register_crd(obj)
            self._commit(rt, obj, "ADDED", None)
            return clone(obj)

    def update(self, rt, ns, name, body, manager, subresource=None, dry_run=False, validation="Warn",
               warnings=None):
        """PUT of the object or of its status subresource."""
        warnings = [] if warnings is None else warnings
        new = self.decode(rt, body, validation, warnings)
        with self.lock:
            old = self._get(rt, ns, name)
            if old is None:
                raise not_found(rt.group, rt.plural, name)
            return self._update(rt, old, new, manager, subresource, dry_run)

    def _update(self, rt, old, new, manager, subresource, dry_run, managed=None):
        """The shared tail of PUT, PATCH and apply: preconditions, system
        fields, status rules, defaulting, validation, generation and
        managedFields. A write that changes nothing keeps the resourceVersion."""
        name = old["metadata"]["name"]
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)" % (meta["name"], name))
        if rt.namespaced and meta.get("namespace") not in (None, "", old["metadata"].get("namespace")):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        rv = meta.get("resourceVersion")
        if rv:
            if rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
        elif rt.custom and managed is None:
            raise invalid(rt.group, rt.kind, name, [FieldError("Invalid", "metadata.resourceVersion",
                                                               "must be specified for an update", 0)])
        if subresource == "status":
            cand = clone(old)
            if "status" in new:
                cand["status"] = new["status"]
            else:
                cand.pop("status", None)
            if rt.kind == "Deployment":  # the deployment status strategy lets annotations through
                cand["metadata"]["annotations"] = meta.get("annotations")
                if cand["metadata"]["annotations"] is None:
                    cand["metadata"].pop("annotations")
            new = cand
            meta = new["metadata"]
        elif rt.scope == "main":
            if "status" in old:
                new["status"] = clone(old["status"])
            else:
                new.pop("status", None)
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["namespace"] = old["metadata"].get("namespace")
        if not rt.namespaced:
            meta.pop("namespace", None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        if subresource != "status":
            self.defaults.apply(rt, new, old)
            errs = validate(rt, new, old)
            if errs:
                raise invalid(rt.group, rt.kind, name, errs)
        self._set_generation(rt, new, old)
        if managed is not None:
            meta["managedFields"] = managed
        else:
            scope = "status" if subresource == "status" else rt.scope
            meta["managedFields"] = track_update(old, new, manager, old["metadata"].get("managedFields"),
                                                 rt.api_version, now_rfc3339(), scope, rt.custom, subresource)
        if not meta["managedFields"]:
            meta.pop("managedFields")
        if json_equal(old, new):
            return clone(old)
        if dry_run:
            return clone(new)
        if rt.kind == "CustomResourceDefinition":
            self.types.register_crd(new)
        self._commit(rt, new, "MODIFIED", old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt.kind != "Namespace":
            self.remove(rt, new)  # the last finalizer is gone
        return clone(new)

    def patch(self, rt, ns, name, ptype, patch, manager, subresource=None, dry_run=False, force=False,
              validation="Warn", warnings=None):
        """PATCH: returns (object, http code)."""
        warnings = [] if warnings is None else warnings
        if ptype not in rt.patch_types:
            raise unsupported_media_type(rt.patch_types)
        with self.lock:
            old = self._get(rt, ns, name)
            if ptype == "application/apply-patch+yaml":
                return self._apply(rt, ns, name, old, patch, manager, force, subresource, dry_run, validation, warnings)
            if old is None:
                raise not_found(rt.group, rt.plural, name)
            try:
                if ptype == "application/merge-patch+json":
                    if not isinstance(patch, dict):
                        raise PatchBadRequest("json: cannot unmarshal into Go value of type map[string]interface {}")
                    new = merge_patch(old, patch)
                elif ptype == "application/json-patch+json":
                    new = json_patch(old, patch)
                else:
                    if not isinstance(patch, dict):
                        raise PatchBadRequest("json: cannot unmarshal into Go value of type map[string]interface {}")
                    new = strategic_merge_patch(old, patch)
            except PatchBadRequest as e:
                raise bad_request(str(e))
            except PatchFailed:
                raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request", {})
            if not isinstance(new, dict):
                raise bad_request("the patched object is not a JSON object")
            new = self.decode(rt, new, validation, warnings, patch=True)
            if not new["metadata"].get("resourceVersion"):
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._update(rt, old, new, manager, subresource, dry_run), 200

    def _apply(self, rt, ns, name, old, body, manager, force, subresource, dry_run, validation, warnings):
        applied = self.decode(rt, body, validation, warnings, patch=True)
        meta = applied["metadata"]
        if meta.get("name") != name:
            if not meta.get("name"):
                raise bad_request("metadata.name: Required value: name is required")
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)" % (meta["name"], name))
        if rt.namespaced and meta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        scope = "status" if subresource == "status" else rt.scope
        now = now_rfc3339()

        def defaulter(obj):
            obj.setdefault("metadata", {}).update(uid="", name=name)
            self.defaults.apply(rt, obj, old or obj)
            return obj
        if old is None:
            if subresource:
                raise not_found(rt.group, rt.plural, name)
            base = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": name}}
            try:
                merged, managed = server_side_apply(base, applied, manager, force, rt.api_version, now, scope, rt.custom,
                                                    defaulter)
            except ApplyConflict as c:  # cannot happen without a live object
                raise _apply_conflict(c)
            merged["apiVersion"], merged["kind"] = rt.api_version, rt.kind
            merged.setdefault("metadata", {})["name"] = name
            if rt.namespaced:
                merged["metadata"]["namespace"] = ns
            return self.create(rt, ns, merged, manager, dry_run=dry_run, managed=managed), 201
        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        try:
            merged, managed = server_side_apply(old, applied, manager, force, rt.api_version, now, scope, rt.custom,
                                                defaulter)
        except ApplyConflict as c:
            raise _apply_conflict(c)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self._update(rt, old, merged, manager, subresource, dry_run, managed=managed), 200

    # -- the scale subresource (autoscaling/v1 Scale) -------------------------

    def get_scale(self, rt, ns, name):
        with self.lock:
            obj = self._get(rt, ns, name)
            if obj is None:
                raise not_found(rt.group, rt.plural, name)
            return scale_of(obj)

    def update_scale(self, rt, ns, name, change, manager, dry_run=False):
        """PUT/PATCH .../scale: `change` maps the current Scale to the new one."""
        with self.lock:
            old = self._get(rt, ns, name)
            if old is None:
                raise not_found(rt.group, rt.plural, name)
            scale = change(scale_of(old))
            if not isinstance(scale, dict):
                raise bad_request("the object provided is unrecognized (must be of type Scale)")
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid("autoscaling", "Scale", name, [FieldError(
                    "Invalid", "spec.replicas", "must be greater than or equal to 0", replicas)])
            new = clone(old)
            new["spec"]["replicas"] = replicas
            return scale_of(self._update(rt, old, new, manager, "scale", dry_run))

    # -- deletes ------------------------------------------------------------

    def delete(self, rt, ns, name, options, dry_run=False):
        """DELETE: returns (response body, code)."""
        with self.lock:
            old = self._get(rt, ns, name)
            if old is None:
                raise not_found(rt.group, rt.plural, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise conflict(rt, name, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                               % (pre["uid"], old["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name, "Precondition failed: ResourceVersion in precondition: %s, ResourceVersion "
                               "in object meta: %s" % (pre["resourceVersion"], old["metadata"]["resourceVersion"]))
            policy = options.get("propagationPolicy")
            if options.get("orphanDependents") is not None and policy is None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy is None:
                policy = "Orphan" if rt.kind == "Job" else "Background"  # batch/v1 Job defaults to orphaning
            obj = clone(old)
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            graceful = rt.kind == "Namespace" or finalizers
            if graceful:
                if meta.get("deletionTimestamp"):
                    return obj, 200
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = 0
                if finalizers:
                    meta["finalizers"] = finalizers
                if rt.kind == "Namespace":
                    obj.setdefault("status", {})["phase"] = "Terminating"
                if dry_run:
                    return obj, 200
                self._commit(rt, obj, "MODIFIED", old)
                return clone(obj), 200
            if dry_run:
                return (obj if rt.kind == "Pod" else _delete_status(rt, obj)), 200
            self._commit(rt, obj, "DELETED", old)
            self._after_delete(rt, obj, policy)
            return (clone(obj) if rt.kind == "Pod" else _delete_status(rt, obj)), 200

    def delete_collection(self, rt, ns, options, label_selector="", field_selector="", dry_run=False):
        label_reqs = parse_label_selector(label_selector)
        field_reqs = parse_field_selector(field_selector, rt)
        with self.lock:
            if rt.namespaced and ns:
                self._check_namespace_exists(ns)
            deleted = []
            for obj in list(self.select(rt, ns, label_reqs, field_reqs)):
                body, _ = self.delete(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"],
                                      options, dry_run)
                item = clone(obj)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                deleted.append(item)
            return {"kind": rt.list_kind, "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(self.rv)}, "items": deleted}

    def _check_namespace_exists(self, ns):
        if self.namespace_of(ns) is None:
            raise not_found("", "namespaces", ns)

    def _after_delete(self, rt, obj, policy):
        """Garbage collection of dependents, and CRD cleanup."""
        uid = obj["metadata"]["uid"]
        if rt.kind == "CustomResourceDefinition":
            for path in self.types.crd_owned.get(obj["metadata"]["name"], []):
                crt = self.types.get(*path)
                for cr in list(self._bucket(crt).values()):
                    self._commit(crt, cr, "DELETED", cr)
                self.objects.pop(crt.key, None)
            self.types.unregister_crd(obj["metadata"]["name"])
        for drt, dep in self.dependents(uid):
            if policy == "Orphan":
                new = clone(dep)
                new["metadata"]["ownerReferences"] = [r for r in dep["metadata"]["ownerReferences"]
                                                      if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    new["metadata"].pop("ownerReferences")
                self._commit(drt, new, "MODIFIED", dep)
            else:
                self.remove(drt, dep)

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


def scale_of(obj):
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                       "selector": label_selector_string(obj.get("spec", {}).get("selector"))}}


def _sort_key(obj):
    return "%s/%s" % (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _first_bad_base64(value):
    if not isinstance(value, str):
        return 0
    for i, ch in enumerate(value):
        if not (ch.isalnum() and ch.isascii() or ch in "+/="):
            return i
    return len(value)


def _delete_status(rt, obj):
    details = {"name": obj["metadata"]["name"], "kind": rt.plural, "uid": obj["metadata"]["uid"]}
    if rt.group:
        details = {"name": obj["metadata"]["name"], "group": rt.group, "kind": rt.plural,
                   "uid": obj["metadata"]["uid"]}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def _apply_conflict(c):
    return ApiError(409, "Conflict", conflict_message(c.conflicts),
                    {"causes": [{"reason": "FieldManagerConflict",
                                 "message": "conflict with %s" % describe_manager(e), "field": path_string(p)}
                                for e, p in c.conflicts]})

