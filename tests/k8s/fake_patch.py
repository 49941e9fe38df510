"""Patches and server-side apply for the fake Kubernetes API server.

Pure functions over JSON values (dicts, lists, scalars); no I/O, no locks.
The server turns the exceptions below into Status bodies.

Covered here:
  * merge patch (RFC 7386)            application/merge-patch+json
  * JSON patch (RFC 6902)             application/json-patch+json
  * strategic merge patch (a subset)  application/strategic-merge-patch+json
  * field ownership (managedFields, FieldsV1) and server-side apply

Field paths are tuples of FieldsV1 path elements, exactly as the real
server spells them inside metadata.managedFields[].fieldsV1:
  "f:spec"                 a field of a map or struct
  'k:{"name":"web"}'       an item of a list keyed by a merge key
Everything else (atomic lists, scalars, empty maps) is a leaf.
"""

import json

# --------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------


def clone(value):
    """Deep copy of a JSON value (faster than copy.deepcopy for plain data)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def prune_nulls(value):
    """Drop null members, as decoding into a typed Go object does."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def json_equal(a, b):
    """Equality with JSON semantics: true is not 1, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(json_equal(a[k], b[k]) for k in a))
    if isinstance(a, list):
        return (isinstance(b, list) and len(a) == len(b)
                and all(json_equal(x, y) for x, y in zip(a, b)))
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    return type(a) is type(b) and a == b


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class PatchBadRequest(Exception):
    """The patch document itself is malformed (the server answers 400)."""


class PatchFailed(Exception):
    """A well-formed patch could not be applied (the server answers 422)."""


# --------------------------------------------------------------------------
# Merge keys shared by strategic merge patch and server-side apply
# --------------------------------------------------------------------------

# patchMergeKey of the lists the fake merges by key (kubernetes/api types.go).
# Lists not named here are atomic: a patch or an apply replaces them whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
}


def list_merge_key(path, items, custom=False):
    """The merge key of the list at `path`, or None when it is atomic.

    Container ports merge on containerPort and Service ports on port; the
    real schema adds protocol to both keys, which the fake leaves out.
    Custom resources have no schema here, so their lists are atomic (as in
    structured-merge-diff's deduced schema), except the metadata lists.
    """
    if not path or not isinstance(items, list):
        return None
    if custom and path[0] != "f:metadata":
        return None
    name = path[-1][2:] if path[-1].startswith("f:") else None
    if name is None:
        return None
    if name == "ports":
        for key in ("containerPort", "port"):
            if items and all(isinstance(i, dict) and key in i for i in items):
                return key
        return None
    key = MERGE_KEYS.get(name)
    if key is None:
        return None
    if all(isinstance(i, dict) and key in i for i in items):
        return key
    return None


def item_element(key, value):
    return "k:" + json.dumps({key: value}, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------
# Merge patch (RFC 7386)
# --------------------------------------------------------------------------


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------
# JSON patch (RFC 6902)
# --------------------------------------------------------------------------


def _pointer(path):
    if not isinstance(path, str):
        raise PatchBadRequest("path must be a string")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFailed('JSON pointer "%s" must start with "/"' % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, tokens):
    """Return the container holding the last token, or raise PatchFailed."""
    node = doc
    for tok in tokens[:-1]:
        if isinstance(node, dict) and tok in node:
            node = node[tok]
        elif isinstance(node, list) and tok.isdigit() and int(tok) < len(node):
            node = node[int(tok)]
        else:
            raise PatchFailed("doc is missing path: /%s" % "/".join(tokens))
    return node


def _get(doc, tokens):
    if not tokens:
        return doc
    parent = _walk(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchFailed("doc is missing path: /%s" % "/".join(tokens))


def _add(doc, tokens, value):
    if not tokens:
        return value
    parent = _walk(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchFailed("add operation: index out of bounds: %s" % last)
    else:
        raise PatchFailed("add operation does not apply: doc is missing path: /%s" % "/".join(tokens))
    return doc


def _remove(doc, tokens):
    if not tokens:
        raise PatchFailed("cannot remove the whole document")
    parent = _walk(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchFailed("remove operation does not apply: doc is missing path: /%s" % "/".join(tokens))


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise PatchBadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = clone(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchBadRequest("Unexpected kind: missing op")
        kind = op["op"]
        if kind not in ("add", "remove", "replace", "move", "copy", "test"):
            raise PatchBadRequest("Unexpected kind: %s" % kind)
        if "path" not in op:
            raise PatchBadRequest("operation missing path")
        tokens = _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchFailed("%s operation missing value" % kind)
        if kind == "add":
            doc = _add(doc, tokens, clone(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)  # must exist
            if not tokens:
                doc = clone(op["value"])
            else:
                parent = _walk(doc, tokens)
                if isinstance(parent, list):
                    parent[int(tokens[-1])] = clone(op["value"])
                else:
                    parent[tokens[-1]] = clone(op["value"])
        elif kind == "test":
            if not json_equal(_get(doc, tokens), op["value"]):
                raise PatchFailed("testing value %s failed" % op["path"])
        else:  # move, copy
            if "from" not in op:
                raise PatchBadRequest("%s operation missing from" % kind)
            source = _pointer(op["from"])
            if kind == "move":
                if tokens[:len(source)] == source and len(tokens) > len(source):
                    raise PatchFailed("move operation: from is a prefix of path")
                value = _remove(doc, source)
            else:
                value = clone(_get(doc, source))
            doc = _add(doc, tokens, value)
    return doc


# --------------------------------------------------------------------------
# Strategic merge patch (the subset kubectl and runbooks send)
# --------------------------------------------------------------------------

# Primitive lists whose patch strategy is "merge" rather than replace.
PRIMITIVE_MERGE_LISTS = {"finalizers"}


def strategic_merge_patch(target, patch, path=()):
    """Merge patch plus keyed list merging and the $patch directives.

    Supported directives: `$patch: replace|delete` on maps and list items,
    `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
    """
    if not isinstance(patch, dict):
        return clone(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchBadRequest('Unknown patch type: "%s"' % directive)
    result = clone(target) if isinstance(target, dict) else {}
    orders = {}
    for key, value in patch.items():
        if key == "$retainKeys":
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if not any(json_equal(v, d) for d in value)]
            continue
        child = path + ("f:" + key,)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, child)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, path + ("f:" + field,))
    if isinstance(patch.get("$retainKeys"), list):
        keep = set(patch["$retainKeys"])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(current, patch_items, path):
    current = current if isinstance(current, list) else []
    name = path[-1][2:]
    real_items = [i for i in patch_items if not (isinstance(i, dict) and i.get("$patch"))]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch_items):
        return [clone(i) for i in real_items]
    if name in PRIMITIVE_MERGE_LISTS:
        out = list(current)
        for v in patch_items:
            if not any(json_equal(v, c) for c in out):
                out.append(v)
        return out
    key = list_merge_key(path, [i for i in patch_items if not (isinstance(i, dict) and i.get("$patch") == "replace")])
    if key is None or not all(isinstance(i, dict) and key in i for i in current):
        return [clone(i) for i in patch_items]
    out = [clone(i) for i in current]
    for item in patch_items:
        idx = next((n for n, c in enumerate(out) if json_equal(c.get(key), item.get(key))), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge_patch({}, item, path + (item_element(key, item[key]),)))
        else:
            out[idx] = strategic_merge_patch(out[idx], item, path + (item_element(key, item[key]),))
    return out


def _reorder(items, order, path):
    key = list_merge_key(path, items)
    def ident(v):
        return v.get(key) if key and isinstance(v, dict) else v
    wanted = [ident(o) for o in order]
    ranked = sorted(range(len(items)), key=lambda n: (
        next((w for w, val in enumerate(wanted) if json_equal(val, ident(items[n]))), len(wanted)), n))
    return [items[n] for n in ranked]


# --------------------------------------------------------------------------
# Field sets: which leaves an object sets, rendered as FieldsV1
# --------------------------------------------------------------------------

ITEM = object()  # the value recorded for a keyed list item node

# map[string]string fields: the real schema makes them granular maps, so the
# map itself is owned too and FieldsV1 shows a "." entry under it.
GRANULAR_MAPS = {"labels", "annotations", "data", "stringData", "binaryData", "matchLabels",
                 "nodeSelector", "limits", "requests"}

# metadata fields the server owns; never tracked (fieldmanager's stripMeta).
SYSTEM_META = ("name", "namespace", "uid", "resourceVersion", "generation",
               "creationTimestamp", "managedFields", "selfLink",
               "deletionTimestamp", "deletionGracePeriodSeconds", "generateName")


def trackable(obj, scope):
    """The part of an object whose fields are tracked.

    scope "main": everything but status (resources with a status subresource)
    scope "status": only status; scope "all": everything (no subresource).
    """
    if not isinstance(obj, dict):
        return {}
    if scope == "status":
        return {"status": obj["status"]} if isinstance(obj.get("status"), dict) else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if scope == "main":
        out.pop("status", None)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SYSTEM_META}
    if meta:
        out["metadata"] = meta
    else:
        out.pop("metadata", None)
    return out


def flatten(value, custom=False, path=(), out=None):
    """Map each tracked path of `value` to its value (ITEM for list items)."""
    if out is None:
        out = {}
    if isinstance(value, dict):
        if not value and path:
            out[path] = {}
        elif path and path[-1][2:] in GRANULAR_MAPS:
            out[path] = ITEM  # the map itself is a member: "." in FieldsV1
        for key, child in value.items():
            if child is None:
                continue
            flatten(child, custom, path + ("f:" + key,), out)
    elif isinstance(value, list):
        key = list_merge_key(path, value, custom) if value else None
        if key is None:
            out[path] = value
        else:
            for item in value:
                p = path + (item_element(key, item[key]),)
                out[p] = ITEM
                flatten(item, custom, p, out)
    else:
        out[path] = value
    return out


def fields_v1(paths):
    """Render a set of paths as the FieldsV1 trie ("." marks an inner member)."""
    root = {}
    for p in sorted(paths):
        node = root
        for el in p:
            node = node.setdefault(el, {})
    for p in paths:
        node = root
        for el in p:
            node = node[el]
        if node and "." not in node:
            node["."] = {}
    return root


def parse_fields_v1(tree, prefix=()):
    paths = set()
    if not isinstance(tree, dict):
        return paths
    for el, sub in tree.items():
        if el == ".":
            paths.add(prefix)
            continue
        if not sub:
            paths.add(prefix + (el,))
        else:
            paths |= parse_fields_v1(sub, prefix + (el,))
    return paths


def path_string(path):
    """'.spec.template.spec.containers[name="web"].image', as the real server prints."""
    out = []
    for el in path:
        if el.startswith("f:"):
            out.append("." + el[2:])
        elif el.startswith("k:"):
            key = json.loads(el[2:])
            out.append("[" + ",".join("%s=%s" % (k, json.dumps(v)) for k, v in sorted(key.items())) + "]")
        elif el.startswith("i:"):
            out.append("[" + el[2:] + "]")
        else:
            out.append("[=" + el[2:] + "]")
    return "".join(out)


def _owned_by_anyone(path, owner_sets):
    for s in owner_sets:
        if path in s:
            return True
        for q in s:
            if len(q) > len(path) and q[:len(path)] == path:
                return True
    return False


def _remove_path(obj, path):
    """Remove the field or list item at `path`; prune maps left empty."""
    trail = []
    node = obj
    for el in path[:-1]:
        trail.append(node)
        node = _step(node, el)
        if node is None:
            return
    last = path[-1]
    if last.startswith("f:") and isinstance(node, dict):
        node.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(node, list):
        key = json.loads(last[2:])
        node[:] = [i for i in node if not (isinstance(i, dict) and all(json_equal(i.get(k), v) for k, v in key.items()))]
    # prune: a map this removal emptied goes too (not the top-level sections)
    for depth in range(len(path) - 1, 1, -1):
        container = _resolve(obj, path[:depth])
        if isinstance(container, dict) and not container and path[depth - 1].startswith("f:"):
            parent = _resolve(obj, path[:depth - 1])
            if isinstance(parent, dict):
                parent.pop(path[depth - 1][2:], None)
        else:
            break


def _step(node, el):
    if el.startswith("f:"):
        return node.get(el[2:]) if isinstance(node, dict) else None
    if el.startswith("k:") and isinstance(node, list):
        key = json.loads(el[2:])
        for item in node:
            if isinstance(item, dict) and all(json_equal(item.get(k), v) for k, v in key.items()):
                return item
    return None


def _resolve(obj, path):
    node = obj
    for el in path:
        node = _step(node, el)
        if node is None:
            return None
    return node


def _set_path(obj, path, value):
    parent = _resolve(obj, path[:-1])
    if isinstance(parent, dict) and path[-1].startswith("f:"):
        parent[path[-1][2:]] = value


def _merge_applied(base, applied, path, custom):
    if isinstance(applied, dict):
        out = clone(base) if isinstance(base, dict) else {}
        for key, value in applied.items():
            if value is None:
                continue
            out[key] = _merge_applied(out.get(key), value, path + ("f:" + key,), custom)
        return out
    if isinstance(applied, list) and isinstance(base, list):
        key = list_merge_key(path, applied, custom)
        if key and all(isinstance(i, dict) and key in i for i in base):
            out = [clone(i) for i in base]
            for item in applied:
                idx = next((n for n, c in enumerate(out) if json_equal(c[key], item[key])), None)
                sub = path + (item_element(key, item[key]),)
                if idx is None:
                    out.append(_merge_applied({}, item, sub, custom))
                else:
                    out[idx] = _merge_applied(out[idx], item, sub, custom)
            return out
    return clone(applied)


class ApplyConflict(Exception):
    def __init__(self, conflicts):
        super().__init__("apply conflict")
        self.conflicts = conflicts  # [(managedFields entry, path)]


def describe_manager(entry):
    """How the real server names a manager in conflict messages (printManager)."""
    text = json.dumps(entry.get("manager", ""))
    if entry.get("subresource"):
        text += " with subresource %s" % json.dumps(entry["subresource"])
    if entry.get("operation") == "Update":
        text += " using %s" % entry.get("apiVersion", "")
        if entry.get("time"):
            text += " at %s" % entry["time"]
    return text


def conflict_message(conflicts):
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        return "Apply failed with 1 conflict: conflict with %s: %s" % (describe_manager(entry), path_string(path))
    by_manager = {}
    for entry, path in conflicts:
        by_manager.setdefault((entry.get("manager", ""), describe_manager(entry)), []).append(path)
    lines = []
    for manager, text in sorted(by_manager):
        lines.append("conflicts with %s:" % text)
        lines.extend("- %s" % path_string(p) for p in by_manager[(manager, text)])
    return "Apply failed with %d conflicts: %s" % (len(conflicts), "\n".join(lines))


def _same_entry(entry, manager, operation, subresource):
    return (entry.get("manager") == manager and entry.get("operation") == operation
            and (entry.get("subresource") or "") == (subresource or ""))


def _entry(manager, operation, api_version, now, paths, subresource):
    e = {"manager": manager, "operation": operation, "apiVersion": api_version,
         "time": now, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths)}
    if subresource:
        e["subresource"] = subresource
    return e


def _rebuild(entries, sets, mine_key, mine_paths, new_entry):
    """managedFields after an operation: entries whose set changed get the new
    set (time kept unless it is the acting manager's), empty ones drop out."""
    out = []
    placed = False
    for entry, paths in zip(entries, sets):
        if mine_key(entry):
            placed = True
            if mine_paths:
                if parse_fields_v1(entry.get("fieldsV1")) == mine_paths:
                    out.append(entry)
                else:
                    out.append(new_entry)
            continue
        if not paths:
            continue
        if parse_fields_v1(entry.get("fieldsV1")) != paths:
            entry = dict(entry, fieldsV1=fields_v1(paths))
        out.append(entry)
    if not placed and mine_paths:
        out.append(new_entry)
    return out


def track_update(old, new, manager, entries, api_version, now, scope, custom, subresource=None):
    """managedFields after a create/update/patch by `manager` (operation Update).

    The updater takes the fields whose value it changed (from anyone, no
    conflicts); fields it removed leave every manager's set.
    """
    before = flatten(trackable(old, scope), custom) if old is not None else {}
    after = flatten(trackable(new, scope), custom)
    changed = {p for p, v in after.items() if p not in before or not (v is ITEM or json_equal(before[p], v))}
    removed = set(before) - set(after)
    entries = [e for e in (entries or []) if isinstance(e, dict)]
    original = parse_sets(entries)
    sets = [s - changed - removed for s in original]
    mine = next((s for e, s in zip(entries, original) if _same_entry(e, manager, "Update", subresource)), set())
    mine = (mine - removed) | changed
    def is_mine(e):
        return _same_entry(e, manager, "Update", subresource)
    return _rebuild(entries, sets, is_mine, mine,
                    _entry(manager, "Update", api_version, now, mine, subresource))


def parse_sets(entries):
    return [parse_fields_v1(e.get("fieldsV1")) for e in entries]


def server_side_apply(live, applied, manager, force, api_version, now, scope, custom, defaulter=None):
    """Merge an applied configuration into the live object.

    Returns (merged object, managedFields). Raises ApplyConflict when another
    manager owns a field the configuration sets to a different value and
    force is off. Fields this manager applied before and now omits are
    removed unless another manager still owns them. `defaulter` fills
    server defaults into a copy of the configuration: an atomic list (say
    volumeClaimTemplates) is compared and stored as the server would store
    it, so re-applying the same manifest is not a change or a conflict.
    """
    entries = [e for e in ((live or {}).get("metadata", {}).get("managedFields") or []) if isinstance(e, dict)]
    applied_t = trackable(applied, scope)
    wanted = flatten(applied_t, custom)
    if defaulter is not None:
        defaulted = flatten(trackable(defaulter(clone(applied)), scope), custom)
        for p, v in list(wanted.items()):
            if isinstance(v, list) and isinstance(defaulted.get(p), list) and not json_equal(v, defaulted[p]):
                wanted[p] = defaulted[p]
                _set_path(applied_t, p, clone(defaulted[p]))
    live_flat = flatten(trackable(live, scope), custom) if live else {}
    sets = parse_sets(entries)
    prev = set()
    conflicts = []
    for entry, paths in zip(entries, sets):
        if _same_entry(entry, manager, "Apply", None):
            prev = paths
            continue
        for p in sorted(paths & set(wanted)):
            if wanted[p] is ITEM or p not in live_flat:
                continue
            if not json_equal(live_flat[p], wanted[p]):
                conflicts.append((entry, p))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for entry, p in conflicts:
        sets[entries.index(entry)].discard(p)
    others = [s for e, s in zip(entries, sets) if not _same_entry(e, manager, "Apply", None)]
    merged = _merge_applied(live if live else {}, applied_t, (), custom)
    if live:
        for key in ("apiVersion", "kind"):
            if key in live:
                merged[key] = live[key]
        meta = merged.setdefault("metadata", {})
        for key in SYSTEM_META:
            if key in live.get("metadata", {}):
                meta[key] = clone(live["metadata"][key])
        if scope == "main" and "status" in live:
            merged["status"] = clone(live["status"])
    dropped = {p for p in prev - set(wanted) if not _owned_by_anyone(p, others)}
    for p in sorted(dropped, key=len):
        # a list item going away takes its fields (and its key) with it
        if not any(p[:n] in dropped for n in range(1, len(p))):
            _remove_path(merged, p)
    mine = set(wanted)
    def is_mine(e):
        return _same_entry(e, manager, "Apply", None)
    new_entries = _rebuild(entries, sets, is_mine, mine,
                           _entry(manager, "Apply", api_version, now, mine, None))
    return merged, new_entries
