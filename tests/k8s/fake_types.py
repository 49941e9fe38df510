"""What the fake Kubernetes API server's resources are: Status errors,
resource types, discovery and OpenAPI stubs, label and field selectors, and
small helpers shared by the other modules (tests/k8s/README.md has the map).
"""

import base64
import collections
import hashlib
import json
import random
import re
import time
import uuid

# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def now_rfc3339(t=None):
    """Whole-second RFC 3339 in UTC, as metav1.Time serialises."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def new_uid():
    """A random (version 4) UUID, as uids and Audit-Ids are. From the process's
    PRNG, not os.urandom: a system call per id, in the middle of every request,
    is a point where the interpreter lock changes hands; no id here is a secret."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


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


def options_error(kind, errs):
    """Invalid CreateOptions, ListOptions, DeleteOptions..."""
    return invalid("meta.k8s.io", kind, "", errs)


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
    ResourceType("", "v1", "Pod", "pods", short=["po"], categories=["all"], subresources=["status", "log", "exec", "portforward"]),
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
    ResourceType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short=["hpa"],
                 categories=["all"], subresources=["status"], generation="spec"),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", short=["ing"], subresources=["status"],
                 generation="spec"),
    ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                 namespaced=False, short=["crd", "crds"], subresources=["status"], generation="custom"),
]
BUILTIN_GROUPS = ["", "apps", "batch", "autoscaling", "networking.k8s.io", "apiextensions.k8s.io"]


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
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
QUALIFIED_NAME_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                      "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
                      "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")


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

# --------------------------------------------------------------------------
# Query parameters and times
# --------------------------------------------------------------------------


def truthy(value):
    return str(value).lower() in ("1", "true", "yes")


def rfc3339_nano(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % int((t % 1) * 1e9)


def parse_rfc3339(text):
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except (TypeError, ValueError):
        return None

