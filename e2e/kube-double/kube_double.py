#!/usr/bin/env python3
"""A Kubernetes API test double with a node simulator, for imagepush's end-to-end tests.

    python3 e2e/kube-double/kube_double.py --port 0 --state-dir DIR \
        [--binary-map imagepush=/abs/path/to/imagepush] [--fault-file FILE]

Serves a generic in-memory object store over the Kubernetes REST conventions (get, list, watch,
create, update, patch, delete, status subresource, discovery) on plain HTTP, and runs the Pods of
Jobs as local processes. Python 3.11 standard library only. See README.md beside this file.
"""

import argparse
import base64
import collections
import datetime
import http.server
import json
import os
import queue
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

LOG_FILE = None  # set in main(); diagnostics go there (and to stderr with --verbose)
VERBOSE = False
_log_lock = threading.Lock()


def log(msg):
    line = f"{datetime.datetime.now().strftime('%H:%M:%S.%f')[:-3]} {msg}\n"
    with _log_lock:
        if LOG_FILE is not None:
            LOG_FILE.write(line)
            LOG_FILE.flush()
        if VERBOSE:
            sys.stderr.write(line)
            sys.stderr.flush()


def dc(obj):
    """Deep copy of a JSON tree."""
    return json.loads(json.dumps(obj))


def now_str():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rand_suffix(n=5):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            s["details"] = self.details
        return s


def not_found(info, name):
    return ApiError(404, f'{info.qualified()} "{name}" not found', "NotFound",
                    {"name": name, "group": info.group, "kind": info.resource})


def conflict(info, name):
    return ApiError(409, f'Operation cannot be fulfilled on {info.qualified()} "{name}": the object has been '
                         f'modified; please apply your changes to the latest version and try again',
                    "Conflict", {"name": name, "group": info.group, "kind": info.resource})


def invalid(info, name, causes):
    """422 Invalid with field causes: causes = [(field, message)]."""
    msg = "; ".join(f"{f}: {m}" for f, m in causes)
    return ApiError(422, f'{info.kind}{"." + info.group if info.group else ""} "{name}" is invalid: {msg}',
                    "Invalid", {"name": name, "group": info.group, "kind": info.kind,
                                "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f}
                                           for f, m in causes]})


# --------------------------------------------------------------------------------------------
# Resource table (discovery, kinds, scope, subresources)
# --------------------------------------------------------------------------------------------

class ResourceInfo:
    def __init__(self, group, versions, resource, kind, namespaced=True, status=False,
                 singular=None, short_names=(), extra_subresources=(), crd=False):
        self.group = group
        self.versions = list(versions)
        self.resource = resource
        self.kind = kind
        self.namespaced = namespaced
        self.status = status
        self.singular = singular or kind.lower()
        self.short_names = list(short_names)
        self.extra_subresources = list(extra_subresources)
        self.crd = crd  # custom resources: no strategic merge patch
        self.guessed = False  # synthesized for a resource missing from the table

    @property
    def gr(self):
        return (self.group, self.resource)

    def api_version(self, version=None):
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v

    def qualified(self):
        return f"{self.resource}.{self.group}" if self.group else self.resource


BUILTIN = [
    ResourceInfo("", ["v1"], "pods", "Pod", status=True, short_names=["po"], extra_subresources=["log"]),
    ResourceInfo("", ["v1"], "secrets", "Secret"),
    ResourceInfo("", ["v1"], "configmaps", "ConfigMap", short_names=["cm"]),
    ResourceInfo("", ["v1"], "persistentvolumeclaims", "PersistentVolumeClaim", status=True, short_names=["pvc"]),
    ResourceInfo("", ["v1"], "persistentvolumes", "PersistentVolume", namespaced=False, status=True, short_names=["pv"]),
    ResourceInfo("", ["v1"], "namespaces", "Namespace", namespaced=False, status=True, short_names=["ns"]),
    ResourceInfo("", ["v1"], "nodes", "Node", namespaced=False, status=True, short_names=["no"]),
    ResourceInfo("", ["v1"], "events", "Event", short_names=["ev"]),
    ResourceInfo("", ["v1"], "serviceaccounts", "ServiceAccount", short_names=["sa"]),
    ResourceInfo("", ["v1"], "services", "Service", status=True, short_names=["svc"]),
    ResourceInfo("batch", ["v1"], "jobs", "Job", status=True),
    ResourceInfo("batch", ["v1"], "cronjobs", "CronJob", status=True, short_names=["cj"]),
    ResourceInfo("apps", ["v1"], "deployments", "Deployment", status=True, short_names=["deploy"]),
    ResourceInfo("events.k8s.io", ["v1"], "events", "Event", short_names=["ev"]),
    ResourceInfo("coordination.k8s.io", ["v1"], "leases", "Lease"),
    ResourceInfo("rbac.authorization.k8s.io", ["v1"], "roles", "Role"),
    ResourceInfo("rbac.authorization.k8s.io", ["v1"], "rolebindings", "RoleBinding"),
    ResourceInfo("rbac.authorization.k8s.io", ["v1"], "clusterroles", "ClusterRole", namespaced=False),
    ResourceInfo("rbac.authorization.k8s.io", ["v1"], "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    ResourceInfo("apiextensions.k8s.io", ["v1"], "customresourcedefinitions", "CustomResourceDefinition",
                 namespaced=False, status=True, short_names=["crd", "crds"]),
    ResourceInfo("imagepush.dev", ["v1alpha1"], "imagepushes", "ImagePush", status=True,
                 singular="imagepush", crd=True),
]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def guess_kind(resource):
    r = resource
    if r.endswith("ies"):
        r = r[:-3] + "y"
    elif re.search(r"(s|x|ch|sh)es$", r):
        r = r[:-2]
    elif r.endswith("s"):
        r = r[:-1]
    return r[:1].upper() + r[1:]


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_gr = {}
        for ri in BUILTIN:
            self.by_gr[ri.gr] = ri

    def lookup(self, group, resource):
        with self.lock:
            return self.by_gr.get((group, resource))

    def register_crd(self, crd):
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not (group and plural and kind):
            return
        versions = [v.get("name") for v in spec.get("versions") or [] if v.get("served", True) and v.get("name")]
        status = any("status" in ((v.get("subresources") or {})) for v in spec.get("versions") or [])
        with self.lock:
            old = self.by_gr.get((group, plural))
            if old is not None:
                for v in versions:
                    if v not in old.versions:
                        old.versions.append(v)
                old.status = old.status or status
                return
            self.by_gr[(group, plural)] = ResourceInfo(
                group, versions or ["v1"], plural, kind,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced", status=status,
                singular=names.get("singular"), short_names=names.get("shortNames") or [], crd=True)

    def all(self):
        with self.lock:
            return list(self.by_gr.values())


# --------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------

def _split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(s):
    reqs = []
    if not s:
        return reqs
    for part in _split_top(s):
        m = re.match(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$", part)
        if m:
            vals = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.match(r"^([^\s!=]+)\s*(==|!=|=)\s*(.*)$", part)
        if m:
            op = {"==": "=", "=": "=", "!=": "!="}[m.group(2)]
            reqs.append((m.group(1), op, m.group(3).strip()))
            continue
        if part.startswith("!"):
            reqs.append((part[1:].strip(), "!exists", None))
            continue
        if re.match(r"^[^\s!=(),]+$", part):
            reqs.append((part, "exists", None))
            continue
        raise ApiError(400, f"unable to parse requirement: {part!r}")
    return reqs


def match_labels(reqs, obj):
    labels = ((obj.get("metadata") or {}).get("labels")) or {}
    for key, op, val in reqs:
        have = key in labels
        v = labels.get(key)
        if op == "=" and v != val:
            return False
        if op == "!=" and v == val:
            return False
        if op == "in" and (not have or v not in val):
            return False
        if op == "notin" and have and v in val:
            return False
        if op == "exists" and not have:
            return False
        if op == "!exists" and have:
            return False
    return True


def parse_field_selector(s):
    reqs = []
    if not s:
        return reqs
    for part in _split_top(s):
        m = re.match(r"^([^\s!=]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise ApiError(400, f"invalid field selector: {part!r}")
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3).strip()))
    return reqs


def _field_value(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def match_fields(reqs, obj):
    for path, op, val in reqs:
        v = _field_value(obj, path)
        if op == "=" and v != val:
            return False
        if op == "!=" and v == val:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return dc(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _ptr_tokens(path):
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _ptr_get(doc, toks, path):
    cur = doc
    for t in toks:
        if isinstance(cur, dict):
            if t not in cur:
                raise ApiError(422, f"json patch: path {path!r} does not exist")
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                i = int(t)
            except ValueError:
                raise ApiError(422, f"json patch: bad array index in {path!r}")
            if i < 0 or i >= len(cur):
                raise ApiError(422, f"json patch: index out of range in {path!r}")
            cur = cur[i]
        else:
            raise ApiError(422, f"json patch: path {path!r} does not exist")
    return cur


def json_patch(doc, ops):
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch body must be a list of operations")
    doc = dc(doc)

    def add(doc, path, value):
        toks = _ptr_tokens(path)
        if not toks:
            return value
        parent = _ptr_get(doc, toks[:-1], path)
        last = toks[-1]
        if isinstance(parent, dict):
            parent[last] = value
        elif isinstance(parent, list):
            if last == "-":
                parent.append(value)
            else:
                try:
                    i = int(last)
                except ValueError:
                    raise ApiError(422, f"json patch: bad array index in {path!r}")
                if i < 0 or i > len(parent):
                    raise ApiError(422, f"json patch: index out of range in {path!r}")
                parent.insert(i, value)
        else:
            raise ApiError(422, f"json patch: cannot add at {path!r}")
        return doc

    def remove(doc, path):
        toks = _ptr_tokens(path)
        if not toks:
            raise ApiError(422, "json patch: cannot remove the root")
        parent = _ptr_get(doc, toks[:-1], path)
        last = toks[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise ApiError(422, f"json patch: path {path!r} does not exist")
            return parent.pop(last)
        if isinstance(parent, list):
            try:
                i = int(last)
            except ValueError:
                raise ApiError(422, f"json patch: bad array index in {path!r}")
            if i < 0 or i >= len(parent):
                raise ApiError(422, f"json patch: index out of range in {path!r}")
            return parent.pop(i)
        raise ApiError(422, f"json patch: path {path!r} does not exist")

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"json patch: malformed operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = add(doc, path, dc(op.get("value")))
        elif kind == "remove":
            remove(doc, path)
        elif kind == "replace":
            toks = _ptr_tokens(path)
            if not toks:
                doc = dc(op.get("value"))
            else:
                _ptr_get(doc, toks, path)
                remove(doc, path)
                doc = add(doc, path, dc(op.get("value")))
        elif kind == "move":
            val = remove(doc, op["from"])
            doc = add(doc, path, val)
        elif kind == "copy":
            val = dc(_ptr_get(doc, _ptr_tokens(op["from"]), op["from"]))
            doc = add(doc, path, val)
        elif kind == "test":
            # like the apiserver's json-patch library: a missing path tests equal to null
            try:
                have = _ptr_get(doc, _ptr_tokens(path), path)
            except ApiError:
                if op.get("value") is None:
                    continue
                raise
            if have != op.get("value"):
                raise ApiError(422, f"json patch: test operation failed at {path!r}")
        else:
            raise ApiError(400, f"json patch: unknown op {kind!r}")
    return doc


SMP_MERGE_KEYS = ("name", "type", "uid", "mountPath", "containerPort", "devicePath", "ip")


def _strip_directives(v):
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


def strategic_merge_patch(target, patch):
    """A useful subset of strategic merge patch: maps merge, lists of objects merge by a known
    merge key (name, type, uid, ...), `$patch: delete|replace` and `$deleteFromPrimitiveList/`."""
    if not isinstance(patch, dict):
        return dc(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            out[field] = [x for x in out.get(field) or [] if x not in (v or [])]
            continue
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = _smp_list(out[k], v, k)
        elif isinstance(v, dict) and v.get("$patch") == "delete":
            out.pop(k, None)
        else:
            out[k] = strategic_merge_patch(out.get(k), v)
    return out


def _smp_list(cur, patch, field):
    items = [x for x in patch if isinstance(x, dict)]
    if items and len(items) == len(patch):
        if any(x.get("$patch") == "replace" and len(x) == 1 for x in items):
            return [_strip_directives(x) for x in items if not (x.get("$patch") == "replace" and len(x) == 1)]
        key = next((k for k in SMP_MERGE_KEYS if all(k in x for x in items)), None)
        if key and all(isinstance(x, dict) and key in x for x in cur):
            out = list(cur)
            for item in items:
                idx = next((i for i, x in enumerate(out) if x.get(key) == item.get(key)), None)
                if item.get("$patch") == "delete":
                    if idx is not None:
                        out.pop(idx)
                    continue
                if idx is not None:
                    out[idx] = strategic_merge_patch(out[idx], item)
                else:
                    out.append(_strip_directives(item))
            return out
    if field == "finalizers":
        return list(cur) + [x for x in patch if x not in cur]
    return _strip_directives(patch)


# Field ownership (simplified server-side apply). managedFields[] holds, per (manager, operation,
# subresource), the leaf paths that manager set, in the real fieldsV1 format ({"f:spec":{"f:x":{}}}).
# Maps are granular, lists are atomic. An Update (POST/PUT/PATCH) takes the leaves it changed from
# everyone else. An Apply merges the applied object into the live one, fails with 409 Conflict when
# another manager owns an applied leaf whose live value differs (unless force=true, which takes it),
# and removes the leaves that this manager applied before, omits now, and nobody else owns.

_META_APPLY_FIELDS = ("labels", "annotations", "finalizers", "ownerReferences")


def _leaf_paths(obj, prefix=()):
    """Paths to the non-map values of a JSON object (maps are granular, so an empty map owns nothing)."""
    out = set()
    for k, v in obj.items():
        if isinstance(v, dict):
            out |= _leaf_paths(v, prefix + (k,))
        else:
            out.add(prefix + (k,))
    return out


def applied_paths(applied, scope):
    a = {}
    if scope == "status":
        if isinstance(applied.get("status"), dict):
            a["status"] = applied["status"]
    else:
        for k, v in applied.items():
            if k in ("apiVersion", "kind", "status"):
                continue
            if k == "metadata":
                m = {f: v[f] for f in _META_APPLY_FIELDS if isinstance(v, dict) and f in v}
                if m:
                    a["metadata"] = m
                continue
            a[k] = v
    return _leaf_paths(a)


def paths_to_fields(paths):
    root = {}
    for p in sorted(paths):
        cur = root
        for k in p:
            cur = cur.setdefault("f:" + k, {})
    return root


def fields_to_paths(fields, prefix=()):
    out = set()
    for k, v in (fields or {}).items():
        if not k.startswith("f:"):
            continue
        p = prefix + (k[2:],)
        if v:
            out |= fields_to_paths(v, p)
        else:
            out.add(p)
    return out


_MISSING = object()


def _get_path(obj, path):
    cur = obj
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return _MISSING
        cur = cur[k]
    return cur


def _overlaps(p, q):
    n = min(len(p), len(q))
    return p[:n] == q[:n]


def owned_view(obj, scope=None):
    """The part of an object that field ownership covers."""
    v = {}
    for k, x in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "metadata":
            m = {f: x[f] for f in _META_APPLY_FIELDS if isinstance(x, dict) and f in x}
            if m:
                v["metadata"] = m
            continue
        v[k] = x
    if scope == "status":
        return {"status": v["status"]} if isinstance(v.get("status"), dict) else {}
    if scope == "main":
        v.pop("status", None)
    return v


def changed_paths(old, new):
    a, b = owned_view(old), owned_view(new)
    return {p for p in _leaf_paths(a) | _leaf_paths(b) if _get_path(a, p) != _get_path(b, p)}


def _entry(manager, operation, api_version, paths, subresource):
    e = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now_str(),
         "fieldsType": "FieldsV1", "fieldsV1": paths_to_fields(paths)}
    if subresource:
        e["subresource"] = subresource
    return e


def _same_entry(m, manager, operation, subresource):
    return m.get("manager") == manager and m.get("operation") == operation and m.get("subresource") == subresource


def update_ownership(managed, old, new, manager, subresource, api_version):
    """managedFields after an Update by `manager` that turned `old` into `new`."""
    changed = changed_paths(old or {}, new)
    if not changed:
        return managed
    nview = owned_view(new)
    present = {p for p in changed if _get_path(nview, p) is not _MISSING}
    out, mine = [], set()
    for m in managed or []:
        paths = fields_to_paths(m.get("fieldsV1"))
        kept = {q for q in paths if not any(_overlaps(q, p) for p in changed)}
        if _same_entry(m, manager, "Update", subresource):
            mine = kept
            continue
        if kept != paths:
            m = dict(m, fieldsV1=paths_to_fields(kept), time=now_str())
        if kept:
            out.append(m)
    mine |= present
    if mine:
        out.append(_entry(manager, "Update", api_version, mine, subresource))
    return out


def _remove_path(obj, path):
    cur = obj
    for k in path[:-1]:
        cur = cur.get(k) if isinstance(cur, dict) else None
        if cur is None:
            return
    if isinstance(cur, dict):
        cur.pop(path[-1], None)


# --------------------------------------------------------------------------------------------
# Validation and defaults (a small subset of the apiserver's)
# --------------------------------------------------------------------------------------------

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _qualified_key_error(k):
    if not isinstance(k, str) or not k:
        return "name part must be non-empty"
    prefix, _, name = k.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if len(name) > 63 or not QUALIFIED_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character, at most 63 characters")
    return None


def validate(info, obj):
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    causes = []
    if info.gr in (("", "namespaces"), ("", "services"), ("batch", "jobs")) and len(name) > 63:
        causes.append(("metadata.name", f'Invalid value: "{name}": must be no more than 63 characters'))
    elif info.gr in (("", "namespaces"), ("", "services")) and not DNS_LABEL.match(name):
        causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower '
                       f"case alphanumeric characters or '-', and must start and end with an alphanumeric character"))
    if not causes and info.resource not in ("events",):
        if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                           f"lower case alphanumeric characters, '-' or '.', and must start and end with an "
                           f"alphanumeric character"))
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str):
            raise ApiError(400, f"metadata.labels[{k}]: label values must be strings")
        err = _qualified_key_error(k)
        if err:
            causes.append((f"metadata.labels", f'Invalid value: "{k}": {err}'))
        if len(v) > 63 or not LABEL_VALUE.match(v):
            causes.append((f"metadata.labels", f'Invalid value: "{v}": a valid label must be an empty string or '
                           f"consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                           f"alphanumeric character, at most 63 characters"))
    for k, v in (meta.get("annotations") or {}).items():
        if not isinstance(v, str):
            raise ApiError(400, f"metadata.annotations[{k}]: annotation values must be strings")
        err = _qualified_key_error(k)
        if err:
            causes.append(("metadata.annotations", f'Invalid value: "{k}": {err}'))
    if len(json.dumps(meta.get("annotations") or {})) > 256 * 1024:
        causes.append(("metadata.annotations", "Too long: must have at most 262144 bytes"))
    if info.gr == ("batch", "jobs"):
        tmpl = ((obj.get("spec") or {}).get("template")) or {}
        causes += _validate_pod_spec(tmpl.get("spec"), "spec.template.spec", job=True,
                                     pfp=(obj.get("spec") or {}).get("podFailurePolicy"))
    elif info.gr == ("", "pods"):
        causes += _validate_pod_spec(obj.get("spec"), "spec", job=False, pfp=None)
    if causes:
        raise invalid(info, name, causes)


def _validate_pod_spec(spec, path, job, pfp):
    causes = []
    if not isinstance(spec, dict):
        return [(path, "Required value")]
    containers = spec.get("containers")
    if not containers:
        causes.append((f"{path}.containers", "Required value"))
    vols = {v.get("name") for v in spec.get("volumes") or []}
    for i, c in enumerate(containers or []):
        if not c.get("name"):
            causes.append((f"{path}.containers[{i}].name", "Required value"))
        elif not DNS_LABEL.match(c["name"]):
            causes.append((f"{path}.containers[{i}].name", f'Invalid value: "{c["name"]}": a lowercase RFC 1123 label'))
        if not c.get("image"):
            causes.append((f"{path}.containers[{i}].image", "Required value"))
        for j, vm in enumerate(c.get("volumeMounts") or []):
            if vm.get("name") not in vols:
                causes.append((f"{path}.containers[{i}].volumeMounts[{j}].name", f'Not found: "{vm.get("name")}"'))
            if not str(vm.get("mountPath") or "").startswith("/"):
                causes.append((f"{path}.containers[{i}].volumeMounts[{j}].mountPath", "Required value (absolute path)"))
    if job:
        rp = spec.get("restartPolicy")
        if rp not in ("Never", "OnFailure"):
            causes.append((f"{path}.restartPolicy", f'Unsupported value: "{rp}": supported values: "OnFailure", "Never"'))
        if pfp and rp != "Never":
            causes.append(("spec.podFailurePolicy", 'Invalid value: only "Never" is supported as restartPolicy'))
    return causes


def default_container(c):
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    img = c.get("image") or ""
    c.setdefault("imagePullPolicy", "Always" if (img.endswith(":latest") or ":" not in img.split("/")[-1]) and "@" not in img else "IfNotPresent")
    c.setdefault("resources", {})


def default_pod_spec(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    for c in spec.get("containers") or []:
        default_container(c)
    for c in spec.get("initContainers") or []:
        default_container(c)


def apply_create_defaults(info, obj):
    if info.gr == ("", "secrets"):
        obj.setdefault("type", "Opaque")
    elif info.gr == ("batch", "jobs"):
        spec = obj.setdefault("spec", {})
        uid = obj["metadata"]["uid"]
        name = obj["metadata"]["name"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        tmpl = spec.setdefault("template", {})
        tm = tmpl.setdefault("metadata", {})
        labels = tm.setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name})
        default_pod_spec(tmpl.setdefault("spec", {}))
    elif info.gr == ("", "pods"):
        default_pod_spec(obj.setdefault("spec", {}))


def normalize_write(info, obj):
    """Secret.stringData is write-only: merged into data."""
    if info.gr == ("", "secrets") and isinstance(obj.get("stringData"), dict):
        data = obj.setdefault("data", {}) or {}
        for k, v in obj["stringData"].items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data
        del obj["stringData"]


def _strip_for_generation(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _without_rv(obj):
    o = dict(obj)
    m = dict(o.get("metadata") or {})
    m.pop("resourceVersion", None)
    o["metadata"] = m
    return o


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------

class Watcher:
    def __init__(self, gr, ns):
        self.gr = gr
        self.ns = ns
        self.q = queue.Queue()


class Store:
    def __init__(self, registry, history_size):
        self.registry = registry
        self.lock = threading.RLock()
        self.objs = collections.defaultdict(dict)  # (group, resource) -> {(ns, name): obj}
        self.rv = 0
        self.history = collections.deque()
        self.history_size = history_size
        self.compacted_rv = 0
        self.watchers = set()
        self.listeners = []  # called under the lock with each event; must not block
        self.gc_queue = queue.Queue()
        self.by_uid = {}  # uid -> (info, ns, name)

    # -- internals --
    def _next_rv(self):
        self.rv += 1
        return str(self.rv)

    def _emit(self, info, ns, typ, obj, old):
        entry = {"rv": int(obj["metadata"]["resourceVersion"]), "gr": info.gr, "ns": ns, "type": typ,
                 "obj": obj, "old": old}
        self.history.append(entry)
        while len(self.history) > self.history_size:
            dropped = self.history.popleft()
            self.compacted_rv = dropped["rv"]
        for w in list(self.watchers):
            if w.gr == info.gr and (w.ns is None or w.ns == ns):
                w.q.put(entry)
        for fn in self.listeners:
            try:
                fn(entry)
            except Exception:
                log("listener failed: " + traceback.format_exc())

    def compact(self):
        with self.lock:
            self.history.clear()
            self.compacted_rv = self.rv

    def get(self, gr, ns, name):
        with self.lock:
            return self.objs[gr].get((ns or "", name))

    def list(self, gr, ns=None):
        with self.lock:
            items = [o for (ons, _), o in self.objs[gr].items() if ns is None or ons == (ns or "")]
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return items, str(self.rv)

    def exists_uid(self, uid):
        with self.lock:
            return uid in self.by_uid

    # -- create --
    def create(self, info, ns, obj, dry_run=False, managed=None, manager=None):
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON object")
        obj = dc(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if info.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
            ns = ns or meta.get("namespace") or "default"
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
            ns = ""
        kind = obj.get("kind")
        if kind and info.guessed:
            info.kind = kind
        if kind and kind != info.kind:
            raise ApiError(400, f"the kind of the object ({kind}) does not match the resource ({info.kind})")
        obj["kind"] = info.kind
        api_version = obj.get("apiVersion")
        if api_version and api_version.split("/")[0] != (info.group or api_version.split("/")[0]):
            raise ApiError(400, f"the apiVersion of the object ({api_version}) does not match the group {info.group!r}")
        if not api_version:
            obj["apiVersion"] = info.api_version()
        with self.lock:
            if not meta.get("name"):
                gn = meta.get("generateName")
                if not gn:
                    raise invalid(info, "", [("metadata.name", "Required value: name or generateName is required")])
                for _ in range(100):
                    cand = gn[:58] + rand_suffix()
                    if (ns, cand) not in self.objs[info.gr]:
                        break
                meta["name"] = cand
            name = meta["name"]
            if (ns, name) in self.objs[info.gr]:
                raise ApiError(409, f'{info.qualified()} "{name}" already exists', "AlreadyExists",
                               {"name": name, "group": info.group, "kind": info.resource})
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_str()
            meta["generation"] = 1
            if managed:
                meta["managedFields"] = managed
            else:
                meta.pop("managedFields", None)
            if info.status:
                obj.pop("status", None)
            normalize_write(info, obj)
            apply_create_defaults(info, obj)
            validate(info, obj)
            if managed is None and manager:
                mf = update_ownership([], None, obj, manager, None, obj["apiVersion"])
                if mf:
                    meta["managedFields"] = mf
            if dry_run:
                return obj
            meta["resourceVersion"] = self._next_rv()
            self.objs[info.gr][(ns, name)] = obj
            self.by_uid[meta["uid"]] = (info, ns, name)
            self._emit(info, ns, "ADDED", obj, None)
            return obj

    # -- the common write path for update / patch / internal updates --
    def _commit(self, info, ns, name, old, new, managed=None, check=True, dry_run=False, manager=None, sub=None):
        new = dc(new)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        om = old["metadata"]
        if check:
            rv = meta.get("resourceVersion")
            if rv not in (None, "") and rv != om["resourceVersion"]:
                raise conflict(info, name)
            if meta.get("name") not in (None, name):
                raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
            if meta.get("uid") not in (None, "", om["uid"]):
                raise ApiError(409, f"Precondition failed: UID in precondition: {meta.get('uid')}, UID in object meta: {om['uid']}", "Conflict")
        for k in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generation", "selfLink"):
            if k in om:
                meta[k] = om[k]
            else:
                meta.pop(k, None)
        if managed is not None:
            if managed:
                meta["managedFields"] = managed
            else:
                meta.pop("managedFields", None)
        elif "managedFields" in om:
            meta["managedFields"] = om["managedFields"]
        else:
            meta.pop("managedFields", None)
        meta["resourceVersion"] = om["resourceVersion"]
        new["kind"] = old.get("kind", info.kind)
        new["apiVersion"] = old.get("apiVersion", info.api_version())
        normalize_write(info, new)
        if check:
            if info.gr == ("batch", "jobs"):
                ospec, nspec = old.get("spec") or {}, new.get("spec") or {}
                if ospec.get("template") != nspec.get("template") and not ospec.get("suspend"):
                    raise invalid(info, name, [("spec.template", "Invalid value: field is immutable")])
                if ospec.get("selector") != nspec.get("selector"):
                    raise invalid(info, name, [("spec.selector", "Invalid value: field is immutable")])
            if om.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(om.get("finalizers") or [])
                if added:
                    raise invalid(info, name, [("metadata.finalizers", "Forbidden: no new finalizers can be added if the object is being deleted")])
            validate(info, new)
        if _strip_for_generation(new) != _strip_for_generation(old):
            meta["generation"] = int(om.get("generation") or 0) + 1
        if managed is None and manager:
            mf = update_ownership(om.get("managedFields") or [], old, new, manager, sub, new["apiVersion"])
            if mf:
                meta["managedFields"] = mf
            else:
                meta.pop("managedFields", None)
        if new == old:
            return old  # no-op write: no new resourceVersion, no event
        if dry_run:
            return new
        if om.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(info, ns, name, new)
        meta["resourceVersion"] = self._next_rv()
        self.objs[info.gr][(ns, name)] = new
        self._emit(info, ns, "MODIFIED", new, old)
        return new

    def _remove(self, info, ns, name, obj):
        obj = dc(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        del self.objs[info.gr][(ns, name)]
        self.by_uid.pop(obj["metadata"]["uid"], None)
        self._emit(info, ns, "DELETED", obj, None)
        self.gc_queue.put(obj["metadata"]["uid"])
        if info.gr == ("", "namespaces"):
            self.gc_queue.put(("namespace", name))
        return obj

    def _get_or_404(self, info, ns, name):
        obj = self.objs[info.gr].get((ns or "", name))
        if obj is None:
            raise not_found(info, name)
        return obj

    # -- update (PUT) --
    def replace(self, info, ns, name, body, sub=None, dry_run=False, manager=None):
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        with self.lock:
            old = self._get_or_404(info, ns, name)
            new = self._scope(info, old, body, sub)
            return self._commit(info, ns or "", name, old, new, dry_run=dry_run, manager=manager, sub=sub)

    def _scope(self, info, old, new, sub):
        """Status subresource writes change only .status; main-resource writes keep .status."""
        if sub == "status":
            out = dict(old)
            if "status" in new and new["status"] is not None:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            # the precondition (metadata.resourceVersion) of the body still applies
            m = dict(old["metadata"])
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if rv:
                m["resourceVersion"] = rv
            out["metadata"] = m
            return out
        new = dict(new)
        if info.status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        return new

    # -- patch --
    def patch(self, info, ns, name, ctype, body, sub=None, params=None, dry_run=False):
        params = params or {}
        with self.lock:
            old = self.objs[info.gr].get((ns or "", name))
            if ctype == "application/apply-patch+yaml":
                return self._apply(info, ns, name, old, body, sub, params, dry_run)
            if old is None:
                raise not_found(info, name)
            if ctype == "application/merge-patch+json":
                if not isinstance(body, dict):
                    raise ApiError(400, "merge patch body must be a JSON object")
                patched = merge_patch(old, body)
            elif ctype == "application/json-patch+json":
                patched = json_patch(old, body)
            elif ctype == "application/strategic-merge-patch+json":
                if info.crd:
                    raise ApiError(415, "strategic merge patch is not supported for custom resources; "
                                        "use a merge patch or server-side apply", "UnsupportedMediaType")
                if not isinstance(body, dict):
                    raise ApiError(400, "strategic merge patch body must be a JSON object")
                patched = strategic_merge_patch(old, body)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                                    f"include: application/json-patch+json, application/merge-patch+json, "
                                    f"application/apply-patch+yaml, application/strategic-merge-patch+json",
                               "UnsupportedMediaType")
            if not isinstance(patched, dict):
                raise ApiError(422, "patch result is not an object")
            new = self._scope(info, old, patched, sub)
            return self._commit(info, ns or "", name, old, new, dry_run=dry_run,
                                manager=params.get("updateManager") or params.get("fieldManager"), sub=sub)

    def _apply(self, info, ns, name, old, body, sub, params, dry_run):
        manager = params.get("fieldManager")
        if not manager:
            raise ApiError(400, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                                "is required for apply patch")
        if not isinstance(body, dict):
            raise ApiError(400, "apply patch body must be a JSON (or YAML) object")
        if not body.get("apiVersion") or not body.get("kind"):
            raise ApiError(400, f"invalid object type: {body.get('apiVersion', '')}, Kind={body.get('kind', '')}")
        if body.get("kind") != info.kind:
            raise ApiError(400, f"the kind of the applied object ({body.get('kind')}) does not match the resource ({info.kind})")
        bmeta = body.get("metadata") or {}
        if bmeta.get("name") not in (None, name):
            raise ApiError(400, f"the name of the object ({bmeta.get('name')}) does not match the name on the URL ({name})")
        scope = "status" if sub == "status" else "main"
        paths = applied_paths(body, scope)
        subres = "status" if sub == "status" else None
        entry = _entry(manager, "Apply", body["apiVersion"], paths, subres)
        if old is None:
            if sub == "status":
                raise not_found(info, name)
            obj = dc(body)
            obj.setdefault("metadata", {})["name"] = name
            return self.create(info, ns, obj, dry_run=dry_run, managed=[entry] if paths else [])
        aview = owned_view(body, scope)
        live = owned_view(old)
        managed = [dict(m) for m in (old["metadata"].get("managedFields") or [])]
        mine = next((m for m in managed if _same_entry(m, manager, "Apply", subres)), None)
        before = fields_to_paths(mine.get("fieldsV1")) if mine else set()
        # conflicts with other managers that own an applied leaf holding a different value
        conflicts = []
        for m in managed:
            if m.get("manager") == manager:
                continue
            for q in sorted(fields_to_paths(m.get("fieldsV1"))):
                for p in paths:
                    if _overlaps(p, q) and _get_path(live, p) != _get_path(aview, p):
                        conflicts.append((m, q))
                        break
        if conflicts and not params.get("force"):
            causes = [{"reason": "FieldManagerConflict", "field": "." + ".".join(q),
                       "message": f'conflict with "{m.get("manager")}"'
                                  + (f' using {m.get("apiVersion")}' if m.get("apiVersion") else "")}
                      for m, q in conflicts]
            msg = f"Apply failed with {len(causes)} conflict{'s' if len(causes) != 1 else ''}: " + "; ".join(
                f'{c["message"]}: {c["field"]}' for c in causes)
            raise ApiError(409, msg, "Conflict", {"name": name, "group": info.group, "kind": info.resource,
                                                   "causes": causes})
        # force (or equal values): shared or taken ownership
        if conflicts:
            taken = {id(m) for m, _ in conflicts}
            new_managed = []
            for m in managed:
                if id(m) in taken:
                    kept = {q for q in fields_to_paths(m.get("fieldsV1")) if not any(_overlaps(q, p) for p in paths)}
                    if not kept:
                        continue
                    m = dict(m, fieldsV1=paths_to_fields(kept), time=now_str())
                new_managed.append(m)
            managed = new_managed
            mine = next((m for m in managed if _same_entry(m, manager, "Apply", subres)), None)
        others = set()
        for m in managed:
            if m is not mine:
                others |= fields_to_paths(m.get("fieldsV1"))
        patch = {}
        if scope == "status":
            if isinstance(body.get("status"), dict):
                patch["status"] = body["status"]
        else:
            for k, v in body.items():
                if k in ("apiVersion", "kind", "status"):
                    continue
                if k == "metadata":
                    mp = {f: v[f] for f in _META_APPLY_FIELDS if isinstance(v, dict) and f in v}
                    if isinstance(v, dict) and v.get("resourceVersion"):
                        mp["resourceVersion"] = v["resourceVersion"]
                    patch["metadata"] = mp
                    continue
                patch[k] = v
        new = dc(merge_patch(old, patch))
        for p in before - paths:
            if not any(_overlaps(p, q) for q in others):
                _remove_path(new, p)
        if mine is not None:
            if mine.get("fieldsV1") != entry["fieldsV1"]:
                managed[managed.index(mine)] = entry
        else:
            managed.append(entry)
        managed = [m for m in managed if m.get("fieldsV1")]
        new = self._scope(info, old, new, sub)
        if sub == "status" and bmeta.get("resourceVersion"):
            new["metadata"]["resourceVersion"] = bmeta["resourceVersion"]
        return self._commit(info, ns or "", name, old, new, managed=managed, dry_run=dry_run)

    # -- delete --
    def delete(self, info, ns, name, opts=None, dry_run=False):
        opts = opts or {}
        with self.lock:
            old = self._get_or_404(info, ns, name)
            pre = opts.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                                    f"{old['metadata']['uid']}", "Conflict")
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise ApiError(409, f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                    f"ResourceVersion in object meta: {old['metadata']['resourceVersion']}", "Conflict")
            if dry_run:
                return old
            if old["metadata"].get("finalizers"):
                if old["metadata"].get("deletionTimestamp"):
                    return old
                new = dc(old)
                new["metadata"]["deletionTimestamp"] = now_str()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
                new["metadata"]["resourceVersion"] = self._next_rv()
                self.objs[info.gr][(ns or "", name)] = new
                self._emit(info, ns or "", "MODIFIED", new, old)
                return new
            return self._remove(info, ns or "", name, old)

    # -- internal writes (the node simulator, the garbage collector) --
    def internal_update(self, gr, ns, name, fn, uid=None, manager="kube-controller-manager", sub="status"):
        """fn(mutable copy) -> mutated object (or None to skip). No validation, no RV check."""
        with self.lock:
            old = self.objs[gr].get((ns or "", name))
            if old is None or (uid and old["metadata"]["uid"] != uid):
                return None
            info = self.registry.lookup(*gr) or ResourceInfo(gr[0], ["v1"], gr[1], guess_kind(gr[1]))
            new = fn(dc(old))
            if new is None:
                return old
            return self._commit(info, ns or "", name, old, new, check=False, manager=manager, sub=sub)

    def internal_delete(self, gr, ns, name, uid=None):
        with self.lock:
            old = self.objs[gr].get((ns or "", name))
            if old is None or (uid and old["metadata"]["uid"] != uid):
                return None
            info = self.registry.lookup(*gr) or ResourceInfo(gr[0], ["v1"], gr[1], guess_kind(gr[1]))
            try:
                return self.delete(info, ns or "", name)
            except ApiError:
                return None

    def gc_loop(self):
        """Background cascading deletion: dependents of a removed owner (by ownerReferences uid)
        are deleted once none of their owners exists any more."""
        while True:
            item = self.gc_queue.get()
            try:
                if isinstance(item, tuple) and item[0] == "namespace":
                    with self.lock:
                        victims = [(gr, ons, oname) for gr, objs in self.objs.items()
                                   for (ons, oname) in objs if ons == item[1]]
                    for gr, ons, oname in victims:
                        self.internal_delete(gr, ons, oname)
                    continue
                uid = item
                with self.lock:
                    victims = []
                    for gr, objs in self.objs.items():
                        for (ons, oname), o in objs.items():
                            refs = o["metadata"].get("ownerReferences") or []
                            uids = [r.get("uid") for r in refs]
                            if uid in uids and not any(u in self.by_uid for u in uids if u != uid):
                                victims.append((gr, ons, oname, o["metadata"]["uid"]))
                for gr, ons, oname, ouid in victims:
                    self.internal_delete(gr, ons, oname, uid=ouid)
            except Exception:
                log("gc failed: " + traceback.format_exc())


# --------------------------------------------------------------------------------------------
# Node simulator: a Job controller, a scheduler and a kubelet that runs containers as processes
# --------------------------------------------------------------------------------------------

PODS = ("", "pods")
JOBS = ("batch", "jobs")
SECRETS = ("", "secrets")
CONFIGMAPS = ("", "configmaps")
PVCS = ("", "persistentvolumeclaims")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
EVENTS = ("", "events")


class PodWait(Exception):
    """The container cannot start yet (missing Secret, ...)."""

    def __init__(self, reason, message, event_reason):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.event_reason = event_reason


class Proc:
    def __init__(self, popen, ns, name, uid, job, argv):
        self.popen = popen
        self.ns = ns
        self.name = name
        self.uid = uid
        self.job = job
        self.argv = argv
        self.started = now_str()
        self.killed_by = None


SETPRIV = shutil.which("setpriv")

# A helper process that outlives a SIGKILLed double for just long enough to kill every pod's
# process group: it reads "+PGID"/"-PGID" lines and, at EOF (the double is gone), kills what is left.
REAPER_SRC = r"""
import os, signal, sys
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    def __init__(self):
        self.lock = threading.Lock()
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", REAPER_SRC], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, text=True)
        except OSError:
            self.proc = None

    def tell(self, line):
        if self.proc is None:
            return
        with self.lock:
            try:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass


class NodeSim:
    def __init__(self, store, registry, state_dir, binary_map, pod_env, backoff, nodes, strict_pvc):
        self.store = store
        self.registry = registry
        self.state_dir = state_dir
        self.binary_map = binary_map
        self.pod_env = pod_env
        self.backoff = backoff
        self.nodes = nodes
        self.strict_pvc = strict_pvc
        self.q = queue.Queue()
        self.lock = threading.Lock()
        self.procs = {}  # pod uid -> Proc
        self.started = set()  # pod uids given a runner
        self.jobstate = {}  # job uid -> dict
        self.stopping = False
        self.reaper = Reaper()
        store.listeners.append(self._on_event)

    # -- events from the store (called under the store lock: only enqueue) --
    def _on_event(self, entry):
        if entry["gr"] in (PODS, JOBS, PVCS, CRDS):
            self.q.put(entry)

    def loop(self):
        while True:
            try:
                entries = [self.q.get(timeout=0.1)]
            except queue.Empty:
                entries = []
            while True:
                try:
                    entries.append(self.q.get_nowait())
                except queue.Empty:
                    break
            for e in entries:
                try:
                    self._handle(e)
                except Exception:
                    log("node sim event failed: " + traceback.format_exc())
            try:
                self.reconcile_jobs()
            except Exception:
                log("job controller failed: " + traceback.format_exc())

    def _handle(self, e):
        obj = e["obj"]
        meta = obj["metadata"]
        if e["gr"] == PODS:
            if e["type"] == "DELETED":
                self.kill(meta["uid"], "deleted")
            elif meta["uid"] not in self.started and not ((obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")):
                self.started.add(meta["uid"])
                threading.Thread(target=self.run_pod, args=(meta["namespace"], meta["name"], meta["uid"]),
                                 daemon=True, name=f"pod-{meta['name']}").start()
        elif e["gr"] == PVCS and e["type"] == "ADDED":
            def bind(o):
                spec = o.get("spec") or {}
                o["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                               "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")}}
                if not spec.get("volumeName"):
                    o.setdefault("spec", {})["volumeName"] = "pvc-" + meta["uid"]
                return o
            self.store.internal_update(PVCS, meta["namespace"], meta["name"], bind, uid=meta["uid"])
        elif e["gr"] == CRDS and e["type"] in ("ADDED", "MODIFIED"):
            self.registry.register_crd(obj)
            if e["type"] == "ADDED":
                def establish(o):
                    t = now_str()
                    names = (o.get("spec") or {}).get("names") or {}
                    o["status"] = {"acceptedNames": names, "storedVersions": [
                        v.get("name") for v in (o.get("spec") or {}).get("versions") or [] if v.get("storage")],
                        "conditions": [
                            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                             "message": "no conflicts found", "lastTransitionTime": t},
                            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                             "message": "the initial names have been accepted", "lastTransitionTime": t}]}
                    return o
                self.store.internal_update(CRDS, "", meta["name"], establish, uid=meta["uid"])

    # -- events (core/v1) as the job controller and kubelet write them --
    def event(self, obj, typ, reason, message, component):
        meta = obj["metadata"]
        t = now_str()
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": f"{meta['name']}.{random.getrandbits(64):016x}", "namespace": meta.get("namespace", "default")},
              "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta["name"],
                                 "namespace": meta.get("namespace"), "uid": meta["uid"],
                                 "resourceVersion": meta.get("resourceVersion")},
              "reason": reason, "message": message, "type": typ,
              "source": {"component": component, **({"host": self.nodes[0]} if component == "kubelet" else {})},
              "firstTimestamp": t, "lastTimestamp": t, "count": 1,
              "reportingComponent": component, "reportingInstance": self.nodes[0] if component == "kubelet" else ""}
        try:
            self.store.create(self.registry.lookup(*EVENTS), ev["metadata"]["namespace"], ev)
        except ApiError:
            pass

    # -- the Job controller --
    def reconcile_jobs(self):
        jobs, _ = self.store.list(JOBS)
        live = set()
        for job in jobs:
            live.add(job["metadata"]["uid"])
            self.reconcile_job(job)
        for uid in list(self.jobstate):
            if uid not in live:
                del self.jobstate[uid]

    def _finished(self, job):
        for c in (job.get("status") or {}).get("conditions") or []:
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
                return c
        return None

    def reconcile_job(self, job):
        meta, spec = job["metadata"], job.get("spec") or {}
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        st = self.jobstate.setdefault(uid, {"seen": set(), "failed": int((job.get("status") or {}).get("failed") or 0),
                                            "last_failure": 0.0, "start": time.monotonic(), "tracked": set(),
                                            "finished_at": None})
        fin = self._finished(job)
        if fin is not None:
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None:
                if st["finished_at"] is None:
                    st["finished_at"] = time.monotonic()
                if time.monotonic() - st["finished_at"] >= ttl:
                    self.store.internal_delete(JOBS, ns, name, uid=uid)
            return
        if meta.get("deletionTimestamp") or spec.get("suspend"):
            return
        pods = [p for p in self.store.list(PODS, ns)[0]
                if any(r.get("uid") == uid and r.get("controller") for r in p["metadata"].get("ownerReferences") or [])]
        active = [p for p in pods if (p.get("status") or {}).get("phase", "Pending") in ("Pending", "Running")
                  and not p["metadata"].get("deletionTimestamp")]
        succeeded = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        now = time.monotonic()
        fail = None  # (reason, message)
        # pods that vanished while active count as failed
        present = {p["metadata"]["uid"] for p in pods}
        for puid in list(st["tracked"]):
            if puid not in present:
                st["tracked"].discard(puid)
                if puid not in st["seen"]:
                    st["seen"].add(puid)
                    st["failed"] += 1
                    st["last_failure"] = now
        for p in pods:
            if (p.get("status") or {}).get("phase", "Pending") in ("Pending", "Running"):
                st["tracked"].add(p["metadata"]["uid"])
            else:
                st["tracked"].discard(p["metadata"]["uid"])
            if (p.get("status") or {}).get("phase") != "Failed" or p["metadata"]["uid"] in st["seen"]:
                continue
            st["seen"].add(p["metadata"]["uid"])
            st["last_failure"] = now
            action, msg = self.pod_failure_action(spec, p)
            if action in ("FailJob", "FailIndex"):
                fail = ("PodFailurePolicy", msg)
            elif action == "Ignore":
                pass
            else:
                st["failed"] += 1
        limit = spec.get("backoffLimit", 6)
        ads = spec.get("activeDeadlineSeconds")
        status_patch = {}
        if fail is None and succeeded:
            cond_reason, cond_msg = "CompletionsReached", "Reached expected number of succeeded pods"
            self._set_job_status(job, active=0, ready=0, succeeded=len(succeeded), failed=st["failed"],
                                 complete=True, conditions=[("SuccessCriteriaMet", cond_reason, cond_msg),
                                                            ("Complete", cond_reason, cond_msg)])
            self.event(job, "Normal", "Completed", "Job completed", "job-controller")
            return
        if fail is None and st["failed"] > limit:
            fail = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        if fail is None and ads is not None and now - st["start"] >= float(ads):
            fail = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if fail is not None:
            for p in active:
                self.store.internal_delete(PODS, ns, p["metadata"]["name"], uid=p["metadata"]["uid"])
                self.event(job, "Normal", "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}", "job-controller")
            self._set_job_status(job, active=0, ready=0, succeeded=0, failed=st["failed"] + (len(active) if fail[0] == "DeadlineExceeded" else 0),
                                 complete=False, conditions=[("FailureTarget", fail[0], fail[1]),
                                                             ("Failed", fail[0], fail[1])])
            self.event(job, "Warning", fail[0], fail[1], "job-controller")
            return
        if len(active) < int(spec.get("parallelism", 1) or 1) and now - st["last_failure"] >= self.backoff:
            pod = self.create_pod(job)
            if pod is not None:
                active.append(pod)
                self.event(job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}", "job-controller")
        ready = sum(1 for p in active if (p.get("status") or {}).get("phase") == "Running")
        self._set_job_status(job, active=len(active), ready=ready, succeeded=0, failed=st["failed"], complete=None,
                             conditions=None)

    def pod_failure_action(self, spec, pod):
        cs = ((pod.get("status") or {}).get("containerStatuses") or [])
        term = ((cs[0].get("state") or {}).get("terminated") or {}) if cs else {}
        code = term.get("exitCode")
        cname = cs[0].get("name") if cs else ""
        pconds = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
        for i, rule in enumerate(((spec.get("podFailurePolicy") or {}).get("rules")) or []):
            oc = rule.get("onExitCodes")
            if oc:
                if code is None or code == 0:
                    continue
                if oc.get("containerName") and oc["containerName"] != cname:
                    continue
                vals = oc.get("values") or []
                hit = code in vals if oc.get("operator", "In") == "In" else code not in vals
                if hit:
                    return rule.get("action"), (f"Container {cname} for pod {pod['metadata']['namespace']}/"
                                                f"{pod['metadata']['name']} failed with exit code {code} matching "
                                                f"{rule.get('action')} rule at index {i}")
            for pc in rule.get("onPodConditions") or []:
                if pconds.get(pc.get("type")) == pc.get("status", "True"):
                    return rule.get("action"), (f"Pod {pod['metadata']['namespace']}/{pod['metadata']['name']} has "
                                                f"condition {pc.get('type')} matching {rule.get('action')} rule at index {i}")
        return "Count", ""

    def _set_job_status(self, job, active, ready, succeeded, failed, complete, conditions):
        def fn(o):
            s = dict(o.get("status") or {})
            t = now_str()
            s.setdefault("startTime", t)
            s["active"] = active
            s["ready"] = ready
            s["terminating"] = 0
            s["uncountedTerminatedPods"] = {}
            if succeeded:
                s["succeeded"] = succeeded
            if failed:
                s["failed"] = failed
            for k in ("active", "succeeded", "failed"):
                if not s.get(k):
                    s.pop(k, None)
            if conditions:
                conds = list(s.get("conditions") or [])
                for typ, reason, msg in conditions:
                    conds.append({"type": typ, "status": "True", "reason": reason, "message": msg,
                                  "lastProbeTime": t, "lastTransitionTime": t})
                s["conditions"] = conds
            if complete:
                s["completionTime"] = t
            o["status"] = s
            return o
        self.store.internal_update(JOBS, job["metadata"]["namespace"], job["metadata"]["name"], fn,
                                   uid=job["metadata"]["uid"])

    def create_pod(self, job):
        meta, spec = job["metadata"], job.get("spec") or {}
        tmpl = spec.get("template") or {}
        tmeta = tmpl.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        labels.update({"job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"],
                       "controller-uid": meta["uid"], "batch.kubernetes.io/controller-uid": meta["uid"]})
        pspec = dc(tmpl.get("spec") or {})
        pspec["nodeName"] = pspec.get("nodeName") or self.pick_node(pspec)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": meta["name"] + "-", "namespace": meta["namespace"], "labels": labels,
                            "annotations": dict(tmeta.get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
               "spec": pspec}
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        try:
            return self.store.create(self.registry.lookup(*PODS), meta["namespace"], pod)
        except ApiError as e:
            log(f"job {meta['namespace']}/{meta['name']}: cannot create pod: {e.message}")
            self.event(job, "Warning", "FailedCreate", f"Error creating: {e.message}", "job-controller")
            self.jobstate[meta["uid"]]["last_failure"] = time.monotonic() + 5  # don't spin
            return None

    def pick_node(self, pspec):
        sel = pspec.get("nodeSelector") or {}
        if sel:
            for n in self.nodes:
                node = self.store.get(("", "nodes"), "", n)
                labels = ((node or {}).get("metadata") or {}).get("labels") or {}
                if all(labels.get(k) == v for k, v in sel.items()):
                    return n
        return self.nodes[0]

    # -- the kubelet --
    def set_pod_status(self, ns, name, uid, fn):
        def wrap(o):
            o["status"] = fn(dict(o.get("status") or {}))
            return o
        return self.store.internal_update(PODS, ns, name, wrap, uid=uid, manager="kubelet")

    def run_pod(self, ns, name, uid):
        try:
            self._run_pod(ns, name, uid)
        except Exception:
            log(f"pod {ns}/{name} runner failed: " + traceback.format_exc())

    def _container_status(self, c, state, ready=False, started=False, cid=None):
        s = {"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "", "ready": ready,
             "restartCount": 0, "started": started, "state": state, "lastState": {}}
        if cid:
            s["containerID"] = cid
        return s

    def _run_pod(self, ns, name, uid):
        pod = self.store.get(PODS, ns, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        c = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        t0 = now_str()
        if not (pod.get("spec") or {}).get("nodeName"):
            def schedule(o):
                o["spec"]["nodeName"] = self.pick_node(o["spec"])
                return o
            self.store.internal_update(PODS, ns, name, schedule, uid=uid)

        def pending(s):
            s.update({"phase": "Pending", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                      "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": t0, "qosClass": "BestEffort",
                      "conditions": [
                          {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": t0, "lastProbeTime": None},
                          {"type": "Initialized", "status": "True", "lastTransitionTime": t0, "lastProbeTime": None},
                          {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": t0, "lastProbeTime": None,
                           "message": f"containers with unready status: [{c.get('name')}]"},
                          {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": t0, "lastProbeTime": None,
                           "message": f"containers with unready status: [{c.get('name')}]"},
                          {"type": "PodScheduled", "status": "True", "lastTransitionTime": t0, "lastProbeTime": None}],
                      "containerStatuses": [self._container_status(c, {"waiting": {"reason": "ContainerCreating"}})]})
            return s
        self.set_pod_status(ns, name, uid, pending)
        pod = self.store.get(PODS, ns, name)
        if pod is not None:
            self.event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {pod['spec'].get('nodeName')}",
                       "default-scheduler")
        reported = None
        while True:
            pod = self.store.get(PODS, ns, name)
            if pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp") or self.stopping:
                return
            try:
                prep = self.prepare(pod)
                break
            except PodWait as w:
                if reported != (w.reason, w.message):
                    reported = (w.reason, w.message)
                    waiting = {"reason": w.reason, "message": w.message} if w.reason != "ContainerCreating" else {"reason": w.reason}

                    def wait_status(s, waiting=waiting):
                        s["containerStatuses"] = [self._container_status(c, {"waiting": waiting})]
                        return s
                    self.set_pod_status(ns, name, uid, wait_status)
                    self.event(pod, "Warning", w.event_reason, w.message if w.event_reason == "FailedMount" else f"Error: {w.message}", "kubelet")
                time.sleep(0.5)
        argv, env, cwd, term_file, log_file, policy = prep
        job = next((r.get("name") for r in pod["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"), None)
        started = now_str()
        logf = open(log_file, "ab")
        exe = argv[0] if argv else ""
        if exe and "/" not in exe:
            exe = shutil.which(exe, path=env.get("PATH")) or ""
        if not exe or not os.access(exe, os.X_OK) or os.path.isdir(exe):
            logf.close()
            msg = (f'failed to create containerd task: failed to create shim task: OCI runtime create failed: '
                   f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH')
            self.set_pod_status(ns, name, uid, lambda s: self._final(s, c, 128, "StartError", msg, started, now_str(), None))
            self.event(pod, "Warning", "Failed", f"Error: {msg}", "kubelet")
            return
        launch = argv
        if SETPRIV:
            launch = [SETPRIV, "--pdeathsig", "KILL", "--"] + argv
        try:
            with self.lock:
                if self.stopping:
                    return
                p = subprocess.Popen(launch, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd, process_group=0)
                proc = Proc(p, ns, name, uid, job, argv)
                self.procs[uid] = proc
                self.reaper.tell(f"+{p.pid}")
        except OSError as e:
            logf.close()
            finished = now_str()
            msg = f'failed to create containerd task: exec: "{argv[0] if argv else ""}": {e.strerror or e}'
            self.set_pod_status(ns, name, uid, lambda s: self._final(s, c, 128, "StartError", msg, started, finished, None))
            self.event(pod, "Warning", "Failed", f"Error: {msg}", "kubelet")
            return
        logf.close()
        log(f"pod {ns}/{name} started pid {p.pid}: {argv}")
        cid = f"sim://{p.pid}"
        if self.store.get(PODS, ns, name) is None:
            self.kill(uid, "deleted")

        def running(s):
            s["phase"] = "Running"
            for cond in s.get("conditions") or []:
                if cond["type"] in ("Ready", "ContainersReady", "PodReadyToStartContainers"):
                    cond.update({"status": "True", "lastTransitionTime": started})
                    cond.pop("reason", None)
                    cond.pop("message", None)
            s["containerStatuses"] = [self._container_status(c, {"running": {"startedAt": started}}, ready=True,
                                                             started=True, cid=cid)]
            return s
        self.set_pod_status(ns, name, uid, running)
        self.event(pod, "Normal", "Started", f"Started container {c.get('name')}", "kubelet")
        rc = p.wait()
        finished = now_str()
        # like a container runtime: when the main process exits, everything else in the container goes too
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        with self.lock:
            self.procs.pop(uid, None)
            self.reaper.tell(f"-{p.pid}")
        code = rc if rc >= 0 else 128 - rc
        log(f"pod {ns}/{name} pid {p.pid} exited {code} ({proc.killed_by or 'normally'})")
        if proc.killed_by == "deleted":
            return
        msg = ""
        try:
            with open(term_file, "rb") as f:
                msg = f.read(4096).decode("utf-8", "replace")
        except OSError:
            pass
        if not msg and code != 0 and policy == "FallbackToLogsOnError":
            try:
                with open(log_file, "rb") as f:
                    data = f.read()
                msg = b"\n".join(data.splitlines()[-80:])[-2048:].decode("utf-8", "replace")
            except OSError:
                pass
        reason = "Completed" if code == 0 else "Error"
        self.set_pod_status(ns, name, uid, lambda s: self._final(s, c, code, reason, msg, started, finished, cid))

    def _final(self, s, c, code, reason, msg, started, finished, cid):
        s["phase"] = "Succeeded" if code == 0 else "Failed"
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}
        if msg:
            term["message"] = msg
        if cid:
            term["containerID"] = cid
        for cond in s.get("conditions") or []:
            if cond["type"] in ("Ready", "ContainersReady"):
                cond.update({"status": "False", "reason": "PodCompleted", "lastTransitionTime": finished})
                cond.pop("message", None)
            if cond["type"] == "PodReadyToStartContainers":
                cond.update({"status": "False", "lastTransitionTime": finished})
        s["containerStatuses"] = [self._container_status(c, {"terminated": term}, cid=cid)]
        return s

    def kill(self, uid, why, sig=signal.SIGKILL):
        with self.lock:
            proc = self.procs.get(uid)
        if proc is None:
            return False
        proc.killed_by = proc.killed_by or why
        try:
            os.killpg(proc.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.popen.send_signal(sig)
            except OSError:
                pass
        return True

    def kill_all(self):
        with self.lock:
            self.stopping = True
            procs = list(self.procs.values())
        for p in procs:
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except OSError:
                pass

    # -- container preparation: volumes, env, argv --
    def _secret(self, ns, name):
        return self.store.get(SECRETS, ns, name)

    def _files_from(self, data, binary, items, kind, name, optional):
        """Map of relative path -> bytes for a secret/configMap volume."""
        files = {}
        for k, v in (data or {}).items():
            files[k] = base64.b64decode(v) if binary else str(v).encode()
        if items:
            out = {}
            for it in items:
                if it.get("key") not in files:
                    if optional:
                        continue
                    raise PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{name}" : '
                                  f'configmap or secret references non-existent key {it.get("key")}', "FailedMount")
                out[it.get("path") or it["key"]] = files[it["key"]]
            return out
        return files

    def _volume_dir(self, pod, vol, poddir):
        ns = pod["metadata"]["namespace"]
        vname = vol.get("name")
        vdir = os.path.join(poddir, "volumes", vname)

        def write_files(files):
            if os.path.isdir(vdir):
                shutil.rmtree(vdir)
            os.makedirs(vdir)
            for rel, content in files.items():
                path = os.path.join(vdir, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(content)
            return vdir

        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"].get("claimName")
            if self.strict_pvc and self.store.get(PVCS, ns, claim) is None:
                raise PodWait("ContainerCreating", f'persistentvolumeclaim "{claim}" not found', "FailedMount")
            d = os.path.join(self.state_dir, "pvcs", ns, claim)
            os.makedirs(d, exist_ok=True)
            return d
        if "hostPath" in vol:
            hp = vol["hostPath"]
            path, typ = hp.get("path"), hp.get("type") or ""
            if typ == "DirectoryOrCreate":
                os.makedirs(path, exist_ok=True)
            elif typ == "Directory" and not os.path.isdir(path):
                raise PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{vname}" : hostPath type check '
                              f'failed: {path} is not a directory', "FailedMount")
            elif typ == "File" and not os.path.isfile(path):
                raise PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{vname}" : hostPath type check '
                              f'failed: {path} is not a file', "FailedMount")
            return path
        if "secret" in vol:
            sv = vol["secret"]
            sec = self._secret(ns, sv.get("secretName"))
            if sec is None:
                if sv.get("optional"):
                    return write_files({})
                raise PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{vname}" : secret '
                              f'"{sv.get("secretName")}" not found', "FailedMount")
            return write_files(self._files_from(sec.get("data"), True, sv.get("items"), "secret", vname, sv.get("optional")))
        if "configMap" in vol:
            cv = vol["configMap"]
            cm = self.store.get(CONFIGMAPS, ns, cv.get("name"))
            if cm is None:
                if cv.get("optional"):
                    return write_files({})
                raise PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{vname}" : configmap '
                              f'"{cv.get("name")}" not found', "FailedMount")
            files = self._files_from(cm.get("data"), False, None, "configmap", vname, True)
            files.update(self._files_from(cm.get("binaryData"), True, None, "configmap", vname, True))
            if cv.get("items"):
                files = {it.get("path") or it["key"]: files[it["key"]] for it in cv["items"] if it.get("key") in files}
            return write_files(files)
        if "projected" in vol:
            files = {}
            for src in (vol["projected"].get("sources") or []):
                if "secret" in src:
                    sec = self._secret(ns, src["secret"].get("name"))
                    if sec is None:
                        if src["secret"].get("optional"):
                            continue
                        raise PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{vname}" : secret '
                                      f'"{src["secret"].get("name")}" not found', "FailedMount")
                    files.update(self._files_from(sec.get("data"), True, src["secret"].get("items"), "secret", vname,
                                                  src["secret"].get("optional")))
                elif "configMap" in src:
                    cm = self.store.get(CONFIGMAPS, ns, src["configMap"].get("name"))
                    if cm is None:
                        if src["configMap"].get("optional"):
                            continue
                        raise PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{vname}" : configmap '
                                      f'"{src["configMap"].get("name")}" not found', "FailedMount")
                    files.update(self._files_from(cm.get("data"), False, src["configMap"].get("items"), "configmap",
                                                  vname, src["configMap"].get("optional")))
            return write_files(files)
        # emptyDir, downwardAPI, anything else: an empty directory
        os.makedirs(vdir, exist_ok=True)
        return vdir

    def _env_value(self, pod, e):
        ns = pod["metadata"]["namespace"]
        if "value" in e:
            return e["value"]
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            sec = self._secret(ns, ref.get("name"))
            if sec is None:
                if ref.get("optional"):
                    return None
                raise PodWait("CreateContainerConfigError", f'secret "{ref.get("name")}" not found', "Failed")
            data = sec.get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    return None
                raise PodWait("CreateContainerConfigError",
                              f'couldn\'t find key {ref.get("key")} in Secret {ns}/{ref.get("name")}', "Failed")
            return base64.b64decode(data[ref["key"]]).decode("utf-8", "replace")
        if "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            cm = self.store.get(CONFIGMAPS, ns, ref.get("name"))
            if cm is None or ref.get("key") not in (cm.get("data") or {}):
                if ref.get("optional"):
                    return None
                if cm is None:
                    raise PodWait("CreateContainerConfigError", f'configmap "{ref.get("name")}" not found', "Failed")
                raise PodWait("CreateContainerConfigError",
                              f'couldn\'t find key {ref.get("key")} in ConfigMap {ns}/{ref.get("name")}', "Failed")
            return cm["data"][ref["key"]]
        if "fieldRef" in vf:
            fp = vf["fieldRef"].get("fieldPath", "")
            m = re.match(r"^metadata\.(labels|annotations)\['(.*)'\]$", fp)
            if m:
                return ((pod["metadata"].get(m.group(1)) or {}).get(m.group(2))) or ""
            simple = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": ns,
                      "metadata.uid": pod["metadata"]["uid"], "spec.nodeName": (pod.get("spec") or {}).get("nodeName") or self.nodes[0],
                      "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName") or "default",
                      "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
                      "status.hostIPs": "127.0.0.1"}
            return simple.get(fp, "")
        return None  # resourceFieldRef and others: not emulated

    def prepare(self, pod):
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        c = (spec.get("containers") or [{}])[0]
        poddir = os.path.join(self.state_dir, "pods", ns, name)
        os.makedirs(poddir, exist_ok=True)
        mounts = {}
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for vm in c.get("volumeMounts") or []:
            vol = volumes.get(vm.get("name"))
            if vol is None:
                raise PodWait("CreateContainerConfigError", f'volume "{vm.get("name")}" not found', "Failed")
            local = self._volume_dir(pod, vol, poddir)
            if vm.get("subPath"):
                local = os.path.join(local, vm["subPath"])
                if not os.path.exists(local):
                    os.makedirs(local, exist_ok=True)
            mounts[vm["mountPath"].rstrip("/") or "/"] = local
        term_path = c.get("terminationMessagePath") or "/dev/termination-log"
        term_file = os.path.join(poddir, "termination-log")
        with open(term_file, "wb"):
            pass
        mounts[term_path] = term_file
        # env, in order, with $(VAR) expansion against the variables defined before
        env = {}
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix") or ""
            if "secretRef" in ef:
                sec = self._secret(ns, ef["secretRef"].get("name"))
                if sec is None:
                    if ef["secretRef"].get("optional"):
                        continue
                    raise PodWait("CreateContainerConfigError", f'secret "{ef["secretRef"].get("name")}" not found', "Failed")
                for k, v in (sec.get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode("utf-8", "replace")
            if "configMapRef" in ef:
                cm = self.store.get(CONFIGMAPS, ns, ef["configMapRef"].get("name"))
                if cm is None:
                    if ef["configMapRef"].get("optional"):
                        continue
                    raise PodWait("CreateContainerConfigError", f'configmap "{ef["configMapRef"].get("name")}" not found', "Failed")
                for k, v in (cm.get("data") or {}).items():
                    env[prefix + k] = v
        for e in c.get("env") or []:
            v = self._env_value(pod, e)
            if v is None:
                continue
            env[e["name"]] = expand_vars(v, env) if "value" in e else v
        argv = [expand_vars(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        if not c.get("command"):
            image = c.get("image") or ""
            repo = image.split("@")[0]
            last = repo.split("/")[-1].split(":")[0]
            if last in self.binary_map:
                argv = [self.binary_map[last]] + argv
            elif not argv:
                raise PodWait("CreateContainerConfigError",
                              f"the simulator does not know the entrypoint of image {image!r}: set command, "
                              f"or pass --binary-map {last}=/path", "Failed")
        # rewrite mount paths inside argv and env values
        argv = [rewrite_paths(a, mounts) for a in argv]
        env = {k: rewrite_paths(v, mounts) for k, v in env.items()}
        if argv:
            a0 = argv[0]
            if a0 in self.binary_map:
                argv[0] = self.binary_map[a0]
            elif os.path.basename(a0) in self.binary_map:
                argv[0] = self.binary_map[os.path.basename(a0)]
        home = os.path.join(poddir, "home")
        os.makedirs(home, exist_ok=True)
        penv = {"PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                "HOME": home, "HOSTNAME": name}
        penv.update(self.pod_env)
        penv.update(env)
        cwd = poddir
        wd = c.get("workingDir")
        if wd:
            mapped = rewrite_paths(wd, mounts)
            if os.path.isdir(mapped):
                cwd = mapped
        log_file = os.path.join(poddir, "container.log")
        return argv, penv, cwd, term_file, log_file, c.get("terminationMessagePolicy") or "File"

    def processes(self):
        with self.lock:
            return [{"namespace": p.ns, "pod": p.name, "uid": p.uid, "job": p.job, "pid": p.popen.pid,
                     "argv": p.argv, "startedAt": p.started} for p in self.procs.values()]

    def find_pod_uid(self, ns, name):
        with self.lock:
            for uid, p in self.procs.items():
                if p.ns == ns and p.name == name:
                    return uid
        return None


def expand_vars(s, env):
    if not isinstance(s, str):
        return s

    def rep(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", rep, s)


def rewrite_paths(s, mounts):
    """Replace container paths (mount paths, the termination message path) with local paths
    wherever they appear as a path: at the start, after '=' or ':' or whitespace or a quote,
    followed by the end, '/', whitespace, a quote or shell punctuation. Longest first."""
    if not isinstance(s, str) or not mounts:
        return s
    keys = sorted(mounts, key=len, reverse=True)
    pat = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(k) for k in keys) + r")(?=$|[/\s'\";:,)|&<>])")
    return pat.sub(lambda m: mounts[m.group(1)], s)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

class Faults:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.mtime = None
        self.rules = []
        self.counts = {}

    def match(self, method, path, query):
        if not self.path:
            return None
        with self.lock:
            try:
                st = os.stat(self.path)
                key = (st.st_mtime_ns, st.st_size)
            except OSError:
                self.rules, self.mtime = [], None
                return None
            if key != self.mtime:
                try:
                    with open(self.path) as f:
                        text = f.read()
                    rules = json.loads(text) if text.strip() else []
                    if isinstance(rules, dict):
                        rules = rules.get("rules") or []
                except (OSError, ValueError) as e:
                    log(f"fault file unreadable: {e}")
                    rules = []
                self.rules, self.mtime, self.counts = rules, key, {}
            for i, r in enumerate(self.rules):
                if r.get("method") and r["method"].upper() != method:
                    continue
                if r.get("pathRegex") and not re.search(r["pathRegex"], path):
                    continue
                if r.get("queryRegex") and not re.search(r["queryRegex"], query):
                    continue
                used = self.counts.get(i, 0)
                if r.get("times") is not None and used >= int(r["times"]):
                    continue
                self.counts[i] = used + 1
                return r
        return None


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

def param(q, name, default=None):
    v = q.get(name)
    return v[0] if v else default


def truthy(v):
    return v in ("true", "1", "True")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-double/1"
    ctx = None  # set in main

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- responses --
    def send_json(self, code, obj, headers=None):
        data = json.dumps(obj, separators=(",", ":")).encode()
        self._code = code
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, code, text, ctype="text/plain"):
        data = text if isinstance(text, bytes) else text.encode()
        self._code = code
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, ctype="application/json"):
        self._code = 200
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self):
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = b""
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # -- dispatch --
    def _dispatch(self, method):
        ctx = self.ctx
        self._code = None
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        if len(path) > 1:
            path = path.rstrip("/")
        q = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        rec = {"time": now_micro(), "method": method, "path": path, "query": split.query,
               "contentType": self.headers.get("Content-Type"), "userAgent": self.headers.get("User-Agent")}
        self._rec = rec
        try:
            body_raw = self.read_body()
        except Exception:
            body_raw = b""
        try:
            try:
                self.route(method, path, q, body_raw, rec)
            except ApiError as e:
                self.send_json(e.code, e.status())
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception as e:
                log("handler error: " + traceback.format_exc())
                self.send_json(500, ApiError(500, f"internal error in kube-double: {e!r}").status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self._log_now()

    def _log_now(self):
        rec = self._rec
        if rec is None or rec["path"].startswith("/_sim"):
            return
        self._rec = None
        rec["status"] = self._code
        self.ctx.log_request(rec)

    def route(self, method, path, q, body_raw, rec):
        ctx = self.ctx
        if path.startswith("/_sim/"):
            return self.sim_endpoint(method, path, q)
        if path in ("/healthz", "/readyz", "/livez"):
            return self.send_text(200, "ok")
        fault = ctx.faults.match(method, path, urllib.parse.urlsplit(self.path).query)
        if fault is not None:
            rec["fault"] = True
            if fault.get("delaySeconds"):
                time.sleep(float(fault["delaySeconds"]))
            if fault.get("status"):
                code = int(fault["status"])
                raise ApiError(code, fault.get("message") or f"injected fault ({code})", fault.get("reason"))
        if not ctx.no_auth:
            auth = self.headers.get("Authorization") or ""
            if auth != f"Bearer {ctx.token}":
                rec["auth"] = "rejected"
                raise ApiError(401, "Unauthorized")
        if path == "/version":
            return self.send_json(200, ctx.version)
        if path in ("/openapi/v2", "/openapi/v3"):
            raise ApiError(404, "the simulator serves no OpenAPI documents")
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if not parts or parts[0] not in ("api", "apis"):
            raise ApiError(404, "the server could not find the requested resource")
        if parts[0] == "api":
            if len(parts) == 1:
                return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return self.send_json(200, ctx.discovery_groups())
            if len(parts) == 2:
                g = next((x for x in ctx.discovery_groups()["groups"] if x["name"] == parts[1]), None)
                if g is None:
                    raise ApiError(404, "the server could not find the requested resource")
                return self.send_json(200, dict(g, kind="APIGroup", apiVersion="v1"))
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            res = ctx.discovery_resources(group, version)
            if res is None:
                raise ApiError(404, "the server could not find the requested resource")
            return self.send_json(200, res)
        watch_path = False
        if rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            ns, resource, name, sub = rest[1], rest[2], (rest[3] if len(rest) > 3 else None), (rest[4] if len(rest) > 4 else None)
            if len(rest) > 5:
                raise ApiError(404, "the server could not find the requested resource")
        else:
            ns, resource, name, sub = None, rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
            if len(rest) > 3:
                raise ApiError(404, "the server could not find the requested resource")
        info = ctx.registry.lookup(group, resource)
        if info is None:
            info = ResourceInfo(group, [version], resource, guess_kind(resource), namespaced=ns is not None)
            info.guessed = True
        elif version not in info.versions:
            raise ApiError(404, "the server could not find the requested resource")
        if info.namespaced and ns is None and name is not None:
            raise ApiError(404, "the server could not find the requested resource")
        if not info.namespaced and ns is not None:
            raise ApiError(404, "the server could not find the requested resource")
        if sub is not None and sub != "status" and sub not in info.extra_subresources:
            raise ApiError(404, "the server could not find the requested resource")
        is_watch = watch_path or truthy(param(q, "watch"))
        rec.update({"apiGroup": group, "apiVersion": version, "resource": resource, "namespace": ns, "name": name,
                    "subresource": sub})
        rec["verb"] = {"GET": "watch" if is_watch else ("get" if name else "list"), "POST": "create",
                       "PUT": "update", "PATCH": "patch",
                       "DELETE": "delete" if name else "deletecollection"}.get(method)
        self.resource_request(method, info, version, ns, name, sub, q, body_raw, is_watch)

    def _decode(self, body_raw):
        if not body_raw:
            return None
        try:
            return json.loads(body_raw)
        except ValueError:
            raise ApiError(400, "the request body is not JSON (YAML bodies are not supported by the simulator)")

    def _out(self, info, version, obj):
        if obj is None:
            return None
        o = dict(obj)
        o["apiVersion"] = info.api_version(version)
        o["kind"] = info.kind
        return o

    def resource_request(self, method, info, version, ns, name, sub, q, body_raw, is_watch):
        store = self.ctx.store
        dry = param(q, "dryRun") == "All"
        # like the apiserver: fieldManager, else the user agent up to its first '/'
        manager = param(q, "fieldManager") or ((self.headers.get("User-Agent") or "").split("/")[0] or "unknown")
        if method == "GET":
            if is_watch:
                return self.watch(info, version, ns, name, q)
            if name is None:
                return self.list(info, version, ns, q)
            if sub == "log":
                return self.pod_log(ns, name, q)
            obj = store.get(info.gr, ns, name)
            if obj is None:
                raise not_found(info, name)
            return self.send_json(200, self._out(info, version, obj))
        if method == "POST":
            if name is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            obj = store.create(info, ns, self._decode(body_raw), dry_run=dry, manager=manager)
            return self.send_json(201, self._out(info, version, obj))
        if method == "PUT":
            if name is None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            body = self._decode(body_raw)
            if isinstance(body, dict) and (body.get("metadata") or {}).get("name") not in (None, name):
                raise ApiError(400, "the name of the object does not match the name on the URL")
            obj = store.replace(info, ns, name, body, sub=sub, dry_run=dry, manager=manager)
            return self.send_json(200, self._out(info, version, obj))
        if method == "PATCH":
            if name is None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            existed = store.get(info.gr, ns, name) is not None
            params = {"fieldManager": param(q, "fieldManager"), "force": truthy(param(q, "force")),
                      "updateManager": manager}
            obj = store.patch(info, ns, name, ctype, self._decode(body_raw), sub=sub, params=params, dry_run=dry)
            return self.send_json(200 if existed else 201, self._out(info, version, obj))
        if method == "DELETE":
            opts = self._decode(body_raw) or {}
            if name is None:
                lsel = parse_label_selector(param(q, "labelSelector"))
                fsel = parse_field_selector(param(q, "fieldSelector"))
                items, rv = store.list(info.gr, ns)
                for o in items:
                    if match_labels(lsel, o) and match_fields(fsel, o):
                        try:
                            store.delete(info, o["metadata"].get("namespace"), o["metadata"]["name"], dry_run=dry)
                        except ApiError:
                            pass
                return self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            obj = store.delete(info, ns, name, opts if isinstance(opts, dict) else {}, dry_run=dry)
            return self.send_json(200, self._out(info, version, obj))
        raise ApiError(405, "method not allowed")

    def list(self, info, version, ns, q):
        lsel = parse_label_selector(param(q, "labelSelector"))
        fsel = parse_field_selector(param(q, "fieldSelector"))
        items, rv = self.ctx.store.list(info.gr, ns)
        out = [self._out(info, version, o) for o in items if match_labels(lsel, o) and match_fields(fsel, o)]
        self.send_json(200, {"kind": info.kind + "List", "apiVersion": info.api_version(version),
                             "metadata": {"resourceVersion": rv}, "items": out})

    def watch(self, info, version, ns, name, q):
        ctx = self.ctx
        store = ctx.store
        lsel = parse_label_selector(param(q, "labelSelector"))
        fsel = parse_field_selector(param(q, "fieldSelector"))
        if name is not None:  # legacy /watch/namespaces/ns/pods/name
            fsel.append(("metadata.name", "=", name))
        rv_param = param(q, "resourceVersion", "") or ""
        timeout = float(param(q, "timeoutSeconds") or ctx.watch_timeout)
        bookmarks = truthy(param(q, "allowWatchBookmarks"))
        send_initial = truthy(param(q, "sendInitialEvents"))
        ns_key = None if ns is None else ns
        w = Watcher(info.gr, ns_key)

        def matches(o):
            return o is not None and match_labels(lsel, o) and match_fields(fsel, o)

        expired = None
        initial, backlog = [], []
        with store.lock:
            if send_initial or rv_param in ("", "0"):
                initial = [o for o in store.list(info.gr, ns_key)[0] if matches(o)]
                seen_rv = store.rv
            else:
                try:
                    rv = int(rv_param)
                except ValueError:
                    raise ApiError(400, f"invalid resource version: {rv_param!r}")
                if rv < store.compacted_rv:
                    expired = rv
                else:
                    backlog = [e for e in store.history
                               if e["rv"] > rv and e["gr"] == info.gr and (ns_key is None or e["ns"] == ns_key)]
                seen_rv = store.rv
            compacted = store.compacted_rv
            if expired is None:
                store.watchers.add(w)
                ctx.open_watches.add(w)

        def send(typ, obj):
            line = json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n"
            self.chunk(line)

        def bookmark(rv, initial_end=False):
            meta = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            send("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version(version), "metadata": meta})

        def translate(e):
            new_m = matches(e["obj"])
            if e["type"] == "ADDED":
                return ("ADDED", e["obj"]) if new_m else None
            if e["type"] == "DELETED":
                return ("DELETED", e["obj"]) if new_m else None
            old_m = matches(e["old"])
            if old_m and new_m:
                return ("MODIFIED", e["obj"])
            if new_m:
                return ("ADDED", e["obj"])
            if old_m:
                return ("DELETED", e["obj"])
            return None

        try:
            self.start_chunked()
            self._log_now()
            if expired is not None:
                send("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": f"too old resource version: {expired} ({compacted})",
                               "reason": "Expired", "code": 410})
                return
            for o in initial:
                send("ADDED", self._out(info, version, o))
            if send_initial:
                bookmark(seen_rv, initial_end=True)
            for e in backlog:
                t = translate(e)
                if t:
                    send(t[0], self._out(info, version, t[1]))
            deadline = time.monotonic() + timeout
            next_bm = time.monotonic() + ctx.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return
                wait = min(deadline, next_bm if bookmarks else deadline) - now
                try:
                    e = w.q.get(timeout=max(0.01, wait))
                except queue.Empty:
                    e = None
                if e is not None:
                    if e.get("_drop"):
                        if e.get("expire"):
                            send("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                           "message": "too old resource version (forced by /_sim/drop-watches)",
                                           "reason": "Expired", "code": 410})
                        return
                    t = translate(e)
                    if t:
                        send(t[0], self._out(info, version, t[1]))
                    seen_rv = max(seen_rv, e["rv"])
                    continue
                if bookmarks and time.monotonic() >= next_bm:
                    with store.lock:
                        if w.q.empty():
                            seen_rv = max(seen_rv, store.rv)
                    bookmark(seen_rv)
                    next_bm = time.monotonic() + ctx.bookmark_interval
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            with store.lock:
                store.watchers.discard(w)
                ctx.open_watches.discard(w)
            self.end_chunked()

    def pod_log(self, ns, name, q):
        ctx = self.ctx
        pod = ctx.store.get(PODS, ns, name)
        if pod is None:
            raise not_found(ctx.registry.lookup(*PODS), name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        cname = param(q, "container")
        if cname and cname not in containers:
            raise ApiError(400, f"container {cname} is not valid for pod {name}")
        if not cname and len(containers) > 1:
            raise ApiError(400, f"a container name must be specified for pod {name}, choose one of: {containers}")
        if truthy(param(q, "previous")):
            raise ApiError(400, f'previous terminated container "{containers[0]}" in pod "{name}" not found')
        cs = ((pod.get("status") or {}).get("containerStatuses") or [])
        state = (cs[0].get("state") or {}) if cs else {}
        log_file = os.path.join(ctx.state_dir, "pods", ns, name, "container.log")
        if "waiting" in state or not cs or not os.path.exists(log_file):
            reason = ((state.get("waiting") or {}).get("reason")) or "ContainerCreating"
            raise ApiError(400, f'container "{containers[0] if containers else ""}" in pod "{name}" is waiting to start: {reason}')
        tail = param(q, "tailLines")
        limit = param(q, "limitBytes")

        def cut(data):
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-int(tail):]) if int(tail) > 0 else b""
            if limit is not None:
                data = data[:int(limit)]
            return data
        if truthy(param(q, "follow")):
            self.start_chunked("text/plain")
            pos = 0
            sent = 0
            try:
                with open(log_file, "rb") as f:
                    first = cut(f.read())
                    pos = f.tell()
                    self.chunk(first)
                    sent += len(first)
                    while True:
                        cur = ctx.store.get(PODS, ns, name)
                        done = cur is None or (cur.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                        f.seek(pos)
                        data = f.read()
                        pos = f.tell()
                        if limit is not None:
                            data = data[:max(0, int(limit) - sent)]
                        self.chunk(data)
                        sent += len(data)
                        if done or (limit is not None and sent >= int(limit)):
                            return
                        time.sleep(0.1)
            except OSError:
                pass
            finally:
                self.end_chunked()
            return
        with open(log_file, "rb") as f:
            data = f.read()
        self.send_text(200, cut(data))

    def sim_endpoint(self, method, path, q):
        ctx = self.ctx
        if path == "/_sim/processes" and method == "GET":
            return self.send_json(200, {"processes": ctx.sim.processes()})
        if path == "/_sim/kill" and method == "POST":
            ns, pod = param(q, "namespace", "default"), param(q, "pod")
            sig = getattr(signal, "SIG" + (param(q, "signal") or "KILL").upper().replace("SIG", ""), signal.SIGKILL)
            uid = ctx.sim.find_pod_uid(ns, pod)
            if uid is None or not ctx.sim.kill(uid, "sim-kill", sig):
                raise ApiError(404, f"no running process for pod {ns}/{pod}")
            return self.send_json(200, {"killed": f"{ns}/{pod}"})
        if path == "/_sim/compact" and method == "POST":
            ctx.store.compact()
            return self.send_json(200, {"compactedResourceVersion": str(ctx.store.compacted_rv)})
        if path == "/_sim/drop-watches" and method == "POST":
            expire = truthy(param(q, "expire"))
            with ctx.store.lock:
                ws = list(ctx.open_watches)
            for w in ws:
                w.q.put({"_drop": True, "expire": expire})
            return self.send_json(200, {"dropped": len(ws)})
        raise ApiError(404, "unknown simulator endpoint")


class Context:
    def __init__(self, args):
        self.state_dir = os.path.abspath(args.state_dir)
        self.registry = Registry()
        self.store = Store(self.registry, args.history_size)
        self.faults = Faults(args.fault_file)
        self.token = args.token
        self.no_auth = args.no_auth
        self.watch_timeout = args.watch_timeout
        self.bookmark_interval = args.bookmark_interval
        self.open_watches = set()
        self.req_lock = threading.Lock()
        self.req_log = open(os.path.join(self.state_dir, "requests.jsonl"), "a")
        binary_map = {}
        for m in args.binary_map or []:
            k, _, v = m.partition("=")
            binary_map[k] = os.path.abspath(v)
        pod_env = {}
        for m in args.pod_env or []:
            k, _, v = m.partition("=")
            pod_env[k] = v
        nodes = args.node or ["sim-node"]
        self.sim = NodeSim(self.store, self.registry, self.state_dir, binary_map, pod_env, args.backoff_seconds,
                           nodes, args.strict_pvc)
        self.version = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "kube-double",
                        "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
                        "compiler": "gc", "platform": "linux/amd64"}
        self._seed(nodes)

    def _seed(self, nodes):
        s, r = self.store, self.registry
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            s.create(r.lookup("", "namespaces"), None, {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                                                        "spec": {"finalizers": ["kubernetes"]}})
            s.internal_update(("", "namespaces"), "", ns, lambda o: dict(o, status={"phase": "Active"}))
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
        for n in nodes:
            s.create(r.lookup("", "nodes"), None, {"metadata": {"name": n, "labels": {
                "kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch}}})
            t = now_str()
            s.internal_update(("", "nodes"), "", n, lambda o: dict(o, status={
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status", "lastHeartbeatTime": t,
                                "lastTransitionTime": t}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": n}],
                "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": "v1.31.0",
                             "containerRuntimeVersion": "kube-double://1", "osImage": "kube-double", "kernelVersion": os.uname().release,
                             "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}}))
        s.create(r.lookup("", "serviceaccounts"), "default", {"metadata": {"name": "default", "namespace": "default"}})

    def log_request(self, rec):
        line = json.dumps(rec, separators=(",", ":"))
        with self.req_lock:
            self.req_log.write(line + "\n")
            self.req_log.flush()

    def discovery_groups(self):
        groups = collections.OrderedDict()
        for ri in self.registry.all():
            if not ri.group:
                continue
            g = groups.setdefault(ri.group, [])
            for v in ri.versions:
                if v not in g:
                    g.append(v)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in groups.items()]}

    def discovery_resources(self, group, version):
        out = []
        for ri in self.registry.all():
            if ri.group != group or version not in ri.versions:
                continue
            out.append({"name": ri.resource, "singularName": ri.singular, "namespaced": ri.namespaced, "kind": ri.kind,
                        "verbs": VERBS, **({"shortNames": ri.short_names} if ri.short_names else {})})
            if ri.status:
                out.append({"name": ri.resource + "/status", "singularName": "", "namespaced": ri.namespaced,
                            "kind": ri.kind, "verbs": ["get", "patch", "update"]})
            for sub in ri.extra_subresources:
                out.append({"name": f"{ri.resource}/{sub}", "singularName": "", "namespaced": ri.namespaced,
                            "kind": ri.kind, "verbs": ["get"]})
        if not out:
            return None
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": out}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def write_kubeconfig(path, url, token):
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: kube-double
  cluster:
    server: "{url}"
users:
- name: kube-double
  user:
    token: "{token}"
contexts:
- name: kube-double
  context:
    cluster: kube-double
    user: kube-double
    namespace: default
current-context: kube-double
preferences: {{}}
"""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    global LOG_FILE, VERBOSE
    ap = argparse.ArgumentParser(description="Kubernetes API test double with a node simulator")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--state-dir", required=True, help="kubeconfig, port, requests.jsonl, pods/, pvcs/ go here")
    ap.add_argument("--binary-map", action="append", metavar="NAME=PATH",
                    help="run PATH when a container's command (or image, when it has no command) is NAME, by basename")
    ap.add_argument("--fault-file", help="JSON list of fault rules, re-read when it changes")
    ap.add_argument("--pod-env", action="append", metavar="KEY=VALUE", help="extra environment for every container")
    ap.add_argument("--node", action="append", help="node names (default: sim-node); all run pods locally")
    ap.add_argument("--token", default="test-token", help="the bearer token clients must send")
    ap.add_argument("--no-auth", action="store_true", help="accept requests without the bearer token")
    ap.add_argument("--strict-pvc", action="store_true", help="pods wait until their PersistentVolumeClaims exist")
    ap.add_argument("--backoff-seconds", type=float, default=0.5, help="job controller's delay before a retry pod")
    ap.add_argument("--history-size", type=int, default=10000, help="watch events kept for resourceVersion resumes")
    ap.add_argument("--watch-timeout", type=float, default=300.0, help="default watch length without timeoutSeconds")
    ap.add_argument("--bookmark-interval", type=float, default=2.0, help="seconds between BOOKMARK events")
    ap.add_argument("--verbose", action="store_true", help="diagnostics to stderr too (always in STATE_DIR/kube-double.log)")
    args = ap.parse_args(argv)
    os.makedirs(args.state_dir, exist_ok=True)
    os.makedirs(os.path.join(args.state_dir, "pvcs"), exist_ok=True)
    LOG_FILE = open(os.path.join(args.state_dir, "kube-double.log"), "a")
    VERBOSE = args.verbose
    ctx = Context(args)
    Handler.ctx = ctx
    server = Server((args.host, args.port), Handler)
    port = server.server_address[1]
    url = f"http://{args.host}:{port}"
    write_kubeconfig(os.path.join(ctx.state_dir, "kubeconfig"), url, args.token)
    with open(os.path.join(ctx.state_dir, "port"), "w") as f:
        f.write(f"{port}\n")
    threading.Thread(target=ctx.store.gc_loop, daemon=True, name="gc").start()
    threading.Thread(target=ctx.sim.loop, daemon=True, name="node-sim").start()

    def stop(signum, frame):
        ctx.sim.kill_all()
        log(f"stopping on signal {signum}")
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on {url}, state in {ctx.state_dir}")
    try:
        print(f"READY {url}", flush=True)
    except BrokenPipeError:
        pass
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        ctx.sim.kill_all()


if __name__ == "__main__":
    main()
