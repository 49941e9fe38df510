"""The API's writes in the fake Kubernetes API server: decoding a body,
create, update, patch, server-side apply, scale, delete with propagation
policies and preconditions, deletecollection, garbage collection.

Verbs is a part of Store (fake_store.py): its methods run on the store's
state with the store's lock.
"""

import base64
import json

from fake_patch import (ApplyConflict, PatchBadRequest, PatchFailed, clone, conflict_message,
                        describe_manager, json_equal, json_patch, merge_patch, path_string, prune_nulls,
                        server_side_apply, strategic_merge_patch, track_update)
from fake_types import (ApiError, FieldError, already_exists, bad_request, conflict, forbidden, invalid,
                        label_selector_string, not_found, now_rfc3339, parse_field_selector,
                        parse_label_selector, random_suffix, unsupported_media_type)
from fake_validation import KNOWN_FIELDS, META_FIELDS, validate


class Verbs:
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

def scale_of(obj):
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                       "selector": label_selector_string(obj.get("spec", {}).get("selector"))}}




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

