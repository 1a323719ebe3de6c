#!/usr/bin/env python3
"""A Kubernetes API test double with a node simulator, for imagepush's end-to-end tests.

    python3 e2e/kube-double/kube_double.py --port 0 --state-dir DIR \
        [--binary-map imagepush=/abs/path/to/imagepush] [--fault-file FILE]

Serves a generic in-memory object store over the Kubernetes REST conventions (get, list, watch,
create, update, patch, delete, status subresource, discovery) on plain HTTP, with the controllers
a Job needs (scheduler, Job controller, garbage collector) and a kubelet that runs every container
of a pod as the PID 1 of its own namespaces, in a root file system of the image's files and the
pod's volumes. Python 3.11 standard library only; needs root on Linux. See README.md beside this
file. `kube_double.py --container-init SPEC --sync-fd N` is the container init it runs itself as.
"""

import argparse
import base64
import collections
import datetime
import fnmatch
import hashlib
import heapq
import hmac
import http.server
import json
import os
import queue
import random
import re
import shutil
import signal
import stat
import string
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from fractions import Fraction

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


CLOCK_SKEW = 0.0  # --clock-skew: seconds the cluster's clock is ahead of (or, negative, behind) this machine


def cluster_now():
    """The cluster's clock: every timestamp the API server, the controllers and the kubelet write."""
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=CLOCK_SKEW)


def now_str():
    return cluster_now().strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_micro():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s):
    if not s:
        return None
    try:
        return datetime.datetime.strptime(s.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def time_str(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _valid_managed_entry(m):
    """Whether the fieldmanager decodes this managedFields entry."""
    return (isinstance(m, dict) and isinstance(m.get("manager"), str) and m.get("operation") in ("Apply", "Update")
            and m.get("fieldsType", "FieldsV1") == "FieldsV1" and isinstance(m.get("fieldsV1", {}), dict))


def _remove_path(obj, path):
    cur = obj
    for k in path[:-1]:
        cur = cur.get(k) if isinstance(cur, dict) else None
        if cur is None:
            return
    if isinstance(cur, dict):
        cur.pop(path[-1], None)


# --------------------------------------------------------------------------------------------
# Validation (a subset of the apiserver's, with its field paths and messages) and defaults
# --------------------------------------------------------------------------------------------

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_INT32 = 2147483647


def regex_error(msg, fmt, *examples):
    """apimachinery's RegexError: the message, examples and the regex."""
    if examples:
        msg += " (e.g. " + " or ".join(f"'{e}', " for e in examples)
        return msg + f"regex used for validation is '{fmt}')"
    return msg + f" (regex used for validation is '{fmt}')"


def _checked(v, max_len, pattern, msg, fmt, *examples):
    """apimachinery's checks of one kind: at most max_len characters, and the regex."""
    out = [f"must be no more than {max_len} characters"] if len(v) > max_len else []
    if not pattern.match(v):
        out.append(regex_error(msg, fmt, *examples))
    return out


def is_dns1123_label(v):
    return _checked(v, 63, DNS_LABEL, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                    "or '-', and must start and end with an alphanumeric character", "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
                    "my-name", "123-abc")


def is_dns1123_subdomain(v):
    return _checked(v, 253, DNS_SUBDOMAIN, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric character",
                    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", "example.com")


QUALIFIED_NAME_ERR = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                      "alphanumeric character")
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"


def is_qualified_name(v):
    out = []
    parts = v.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            out.append("prefix part must be non-empty")
        else:
            out += ["prefix part " + m for m in is_dns1123_subdomain(prefix)]
    else:
        return ["a qualified name " + regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        return out + ["name part must be non-empty"]
    return out + ["name part " + m for m in _checked(name, 63, QUALIFIED_NAME, QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT,
                                                      "MyName", "my.name", "123-abc")]


def is_label_value(v):
    return _checked(v, 63, LABEL_VALUE, "a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character",
                    "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", "MyValue", "my_value", "12345")


def _chdir_prefix(v):
    if v == ".":
        return ["must not be '.'"]
    if v == "..":
        return ["must not be '..'"]
    if v.startswith(".."):
        return ["must not start with '..'"]
    return []


def is_env_var_name(v):
    out = []
    if not ENV_VAR_NAME.match(v):
        out.append(regex_error("a valid environment variable name must consist of alphabetic characters, digits, "
                               "'_', '-', or '.', and must not start with a digit", "[-._a-zA-Z][-._a-zA-Z0-9]*",
                               "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    return out + _chdir_prefix(v)


def is_config_map_key(v):
    return _checked(v, 253, CONFIG_KEY, "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                    "[-._a-zA-Z0-9]+", "key.name", "KEY_NAME", "key-name") + _chdir_prefix(v)


def goq(v):
    """A value as field.Error prints it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v)


class FieldErrors(list):
    """field.ErrorList: (path, cause reason, message body) triples."""

    def _add(self, path, reason, body, detail=""):
        self.append((path, reason, body + (f": {detail}" if detail else "")))

    def invalid(self, path, value, detail):
        self._add(path, "FieldValueInvalid", f"Invalid value: {goq(value)}", detail)

    def required(self, path, detail=""):
        self._add(path, "FieldValueRequired", "Required value", detail)

    def not_found(self, path, value):
        self._add(path, "FieldValueNotFound", f"Not found: {goq(value)}")

    def duplicate(self, path, value):
        self._add(path, "FieldValueDuplicate", f"Duplicate value: {goq(value)}")

    def forbidden(self, path, detail):
        self._add(path, "FieldValueForbidden", "Forbidden", detail)

    def not_supported(self, path, value, supported):
        self._add(path, "FieldValueNotSupported", f"Unsupported value: {goq(value)}",
                  "supported values: " + ", ".join(goq(s) for s in supported))

    def too_long(self, path, detail):
        self._add(path, "FieldValueTooLong", "Too long", detail)

    def each(self, path, value, msgs):
        for m in msgs:
            self.invalid(path, value, m)


def invalid(info, name, errs):
    """422 Invalid, worded as the apiserver words it (one error, or several in brackets)."""
    msgs = [f"{path}: {body}" for path, _, body in errs]
    text = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    return ApiError(422, f'{info.kind}{"." + info.group if info.group else ""} "{name}" is invalid: {text}',
                    "Invalid", {"name": name, "group": info.group, "kind": info.kind,
                                "causes": [{"reason": r, "message": b, "field": p} for p, r, b in errs]})


def _int_in(errs, path, value, lo, hi):
    if value is not None and (not isinstance(value, int) or value < lo or value > hi):
        errs.invalid(path, value, f"must be between {lo} and {hi}, inclusive")


def validate_metadata(info, obj, errs):
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if info.gr in (("", "namespaces"), ("", "services")):
        errs.each("metadata.name", name, is_dns1123_label(name))
    elif info.resource != "events":
        errs.each("metadata.name", name, is_dns1123_subdomain(name))
    if info.gr == JOBS and len(name) > 63 and not [e for e in errs if e[0] == "metadata.name"]:
        errs.invalid("metadata.name", name, "must be no more than 63 characters")
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str):
            raise ApiError(400, f"metadata.labels[{k}]: label values must be strings")
        errs.each("metadata.labels", k, is_qualified_name(k))
        errs.each("metadata.labels", v, is_label_value(v))
    for k, v in (meta.get("annotations") or {}).items():
        if not isinstance(v, str):
            raise ApiError(400, f"metadata.annotations[{k}]: annotation values must be strings")
        errs.each("metadata.annotations", k, is_qualified_name(k.lower()))
    if sum(len(k) + len(v) for k, v in (meta.get("annotations") or {}).items()) > 256 * 1024:
        errs.too_long("metadata.annotations", "must have at most 262144 bytes")


def validate(info, obj):
    errs = FieldErrors()
    validate_metadata(info, obj, errs)
    if info.gr == JOBS:
        validate_job_spec(obj.get("spec") or {}, errs)
    elif info.gr == PODS:
        validate_pod_spec(obj.get("spec"), "spec", errs)
    elif info.resource == "events":
        validate_event(info, obj, errs)
    if errs:
        raise invalid(info, (obj.get("metadata") or {}).get("name") or "", errs)


def validate_job_spec(spec, errs):
    for f in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"):
        v = spec.get(f)
        if isinstance(v, int) and v < 0:
            errs.invalid(f"spec.{f}", v, "must be greater than or equal to 0")
    tmpl = spec.get("template") or {}
    validate_pod_spec(tmpl.get("spec"), "spec.template.spec", errs)
    pspec = tmpl.get("spec") or {}
    rp = pspec.get("restartPolicy")
    if rp not in ("OnFailure", "Never"):
        errs.not_supported("spec.template.spec.restartPolicy", rp, ["OnFailure", "Never"])
    pfp = spec.get("podFailurePolicy")
    if pfp:
        if rp != "Never":
            errs.invalid("spec.template.spec.restartPolicy", rp, 'only "Never" is supported when podFailurePolicy is '
                                                                 'specified')
        for i, rule in enumerate(pfp.get("rules") or []):
            rpath = f"spec.podFailurePolicy.rules[{i}]"
            if rule.get("action") not in ("FailJob", "FailIndex", "Ignore", "Count"):
                errs.not_supported(f"{rpath}.action", rule.get("action"), ["Count", "FailIndex", "FailJob", "Ignore"])
            oc = rule.get("onExitCodes")
            if oc and rule.get("onPodConditions"):
                errs.invalid(rpath, "specifying both OnExitCodes and OnPodConditions is not supported", "")
            if oc:
                op = oc.get("operator")
                if op not in ("In", "NotIn"):
                    errs.not_supported(f"{rpath}.onExitCodes.operator", op, ["In", "NotIn"])
                vals = oc.get("values") or []
                if not vals:
                    errs.required(f"{rpath}.onExitCodes.values", "at least one value is required")
                for j, v in enumerate(vals):
                    if op == "In" and v == 0:
                        errs.invalid(f"{rpath}.onExitCodes.values[{j}]", v, "must not be 0 for the In operator")
                    if vals.index(v) != j:
                        errs.duplicate(f"{rpath}.onExitCodes.values[{j}]", v)
    prp = spec.get("podReplacementPolicy")
    if pfp and prp is not None and prp != "Failed":
        errs.not_supported("spec.podReplacementPolicy", prp, ["Failed"])
    elif prp is not None and prp not in ("Failed", "TerminatingOrFailed"):
        errs.not_supported("spec.podReplacementPolicy", prp, ["Failed", "TerminatingOrFailed"])


VOLUME_SOURCES = ["emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret", "nfs",
                  "iscsi", "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs", "quobyte",
                  "downwardAPI", "fc", "flexVolume", "configMap", "azureFile", "vsphereVolume",
                  "photonPersistentDisk", "portworxVolume", "azureDisk", "storageos", "projected", "scaleIO", "csi",
                  "ephemeral", "image"]
HOST_PATH_TYPES = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket"]
FILE_MODE_ERR = "must be a number between 0 and 0777 (octal), both inclusive"


def _local_path(errs, path, p, non_reserved=False):
    """validateLocalDescendingPath / validateLocalNonReservedPath."""
    if p.startswith("/"):
        errs.invalid(path, p, "must be a relative path")
    backstep = ".." in p.split("/")
    if backstep:
        errs.invalid(path, p, "must not contain '..'")
    if non_reserved and not backstep and p.startswith(".."):
        errs.invalid(path, p, "must not start with '..'")


def _mode(errs, path, v):
    if v is not None and (not isinstance(v, int) or v < 0 or v > 0o777):
        errs.invalid(path, v, FILE_MODE_ERR)


def _key_to_paths(errs, path, items):
    for i, it in enumerate(items or []):
        p = f"{path}.items[{i}]"
        if not it.get("key"):
            errs.required(f"{p}.key")
        if not it.get("path"):
            errs.required(f"{p}.path")
        _local_path(errs, f"{p}.path", it.get("path") or "", non_reserved=True)
        _mode(errs, f"{p}.mode", it.get("mode"))


def _volume_source(errs, path, vol):
    kinds = [k for k in VOLUME_SOURCES if vol.get(k) is not None]
    if not kinds:
        errs.required(path, "must specify a volume type")
        return
    for k in kinds[1:]:
        errs.forbidden(f"{path}.{k}", "may not specify more than 1 volume type")
    kind, src = kinds[0], vol[kinds[0]] or {}
    p = f"{path}.{kind}"
    if kind == "hostPath":
        if not src.get("path"):
            errs.required(f"{p}.path")
        else:
            if ".." in src["path"].split("/"):
                errs.invalid(f"{p}.path", src["path"], "must not contain '..'")
            if src.get("type") is not None and src["type"] not in HOST_PATH_TYPES:
                errs.not_supported(f"{p}.type", src["type"], HOST_PATH_TYPES)
    elif kind == "secret":
        if not src.get("secretName"):
            errs.required(f"{p}.secretName")
        _mode(errs, f"{p}.defaultMode", src.get("defaultMode"))
        _key_to_paths(errs, p, src.get("items"))
    elif kind == "configMap":
        if not src.get("name"):
            errs.required(f"{p}.name")
        _mode(errs, f"{p}.defaultMode", src.get("defaultMode"))
        _key_to_paths(errs, p, src.get("items"))
    elif kind == "persistentVolumeClaim":
        if not src.get("claimName"):
            errs.required(f"{p}.claimName")
    elif kind == "projected":
        _mode(errs, f"{p}.defaultMode", src.get("defaultMode"))
        for i, s in enumerate(src.get("sources") or []):
            sp = f"{p}.sources[{i}]"
            for sk in ("secret", "configMap"):
                if s.get(sk) is not None:
                    if not (s[sk] or {}).get("name"):
                        errs.required(f"{sp}.{sk}.name")
                    _key_to_paths(errs, f"{sp}.{sk}", (s[sk] or {}).get("items"))
    elif kind == "downwardAPI":
        _mode(errs, f"{p}.defaultMode", src.get("defaultMode"))
        for i, it in enumerate(src.get("items") or []):
            if not it.get("path"):
                errs.required(f"{p}.items[{i}].path")
            _local_path(errs, f"{p}.items[{i}].path", it.get("path") or "", non_reserved=True)
            _mode(errs, f"{p}.items[{i}].mode", it.get("mode"))


def _security_context(errs, path, sc, pod_level):
    if not isinstance(sc, dict):
        return
    for f in ("runAsUser", "runAsGroup") + (("fsGroup",) if pod_level else ()):
        _int_in(errs, f"{path}.{f}", sc.get(f), 0, MAX_INT32)
    if pod_level:
        for i, g in enumerate(sc.get("supplementalGroups") or []):
            _int_in(errs, f"{path}.supplementalGroups[{i}]", g, 0, MAX_INT32)
    else:
        if sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False:
            errs.invalid(path, sc, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
        if "SYS_ADMIN" in ((sc.get("capabilities") or {}).get("add") or []) and sc.get("allowPrivilegeEscalation") is False:
            errs.invalid(path, sc, "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN")


QUANTITY = re.compile(r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
QUANTITY_SCALE = {"": 1, "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "k": 10**3,
                  "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(v):
    """resource.ParseQuantity as a Fraction; None if it is not one."""
    m = QUANTITY.match(str(v)) if isinstance(v, (str, int)) and not isinstance(v, bool) else None
    if not m:
        return None
    sign, number, suffix = m.group(1), m.group(2), m.group(3) or ""
    scale = QUANTITY_SCALE.get(suffix)
    if scale is None:
        exp = int(suffix[1:])
        scale = Fraction(10) ** exp
    value = Fraction(number) * scale
    return -value if sign == "-" else value


def _resources(errs, path, res):
    """ValidateContainerResourceRequirements for cpu, memory and ephemeral-storage: quantities
    that parse and are not negative, each request at most its limit."""
    parsed = {}
    for kind in ("limits", "requests"):
        for name, v in (res.get(kind) or {}).items():
            q = parse_quantity(v)
            if q is None:
                errs.invalid(f"{path}.{kind}[{name}]", v, "quantities must match the regular expression "
                             "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
            elif q < 0:
                errs.invalid(f"{path}.{kind}[{name}]", v, "must be greater than or equal to 0")
            else:
                parsed[(kind, name)] = q
    for (kind, name), q in parsed.items():
        limit = parsed.get(("limits", name))
        if kind == "requests" and limit is not None and q > limit:
            errs.invalid(f"{path}.requests[{name}]", res["requests"][name],
                         f"must be less than or equal to {name} limit of {res['limits'][name]}")


def _tolerations(errs, path, tolerations):
    """ValidateTolerations."""
    for i, t in enumerate(tolerations or []):
        tp = f"{path}[{i}]"
        key, op, value, effect = t.get("key") or "", t.get("operator") or "", t.get("value") or "", t.get("effect") or ""
        if key:
            errs.each(f"{tp}.key", key, is_qualified_name(key))
        if not key and op != "Exists":
            errs.invalid(f"{tp}.operator", op, 'operator must be Exists when `key` is empty, which means '
                         '"match all values and all keys"')
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.invalid(f"{tp}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set")
        if op in ("Equal", ""):
            msgs = is_label_value(value)
            if msgs:
                errs.invalid(f"{tp}.operator", value, ";".join(msgs))
        elif op == "Exists":
            if value:
                errs.invalid(f"{tp}.operator", value, "value must be empty when `operator` is 'Exists'")
        else:
            errs.not_supported(f"{tp}.operator", op, ["Equal", "Exists"])
        if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            errs.not_supported(f"{tp}.effect", effect, ["NoExecute", "NoSchedule", "PreferNoSchedule"])


def _container(errs, path, c, vols):
    name = c.get("name") or ""
    if not name:
        errs.required(f"{path}.name")
    else:
        errs.each(f"{path}.name", name, is_dns1123_label(name))
    if not c.get("image"):
        errs.required(f"{path}.image")
    tmp = c.get("terminationMessagePolicy")
    if tmp in (None, ""):
        errs.required(f"{path}.terminationMessagePolicy", "must be 'File' or 'FallbackToLogsOnError'")
    elif tmp not in ("File", "FallbackToLogsOnError"):
        errs.not_supported(f"{path}.terminationMessagePolicy", tmp, ["File", "FallbackToLogsOnError"])
    for i, port in enumerate(c.get("ports") or []):
        _int_in(errs, f"{path}.ports[{i}].containerPort", port.get("containerPort"), 1, 65535)
        if port.get("hostPort"):
            _int_in(errs, f"{path}.ports[{i}].hostPort", port.get("hostPort"), 1, 65535)
    for i, e in enumerate(c.get("env") or []):
        ep = f"{path}.env[{i}]"
        if not e.get("name"):
            errs.required(f"{ep}.name")
        else:
            errs.each(f"{ep}.name", e["name"], is_env_var_name(e["name"]))
        vf = e.get("valueFrom")
        if vf is not None:
            if e.get("value"):
                errs.invalid(f"{ep}.valueFrom", "", "may not be specified when `value` is not empty")
            refs = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef") if vf.get(k) is not None]
            if len(refs) > 1:
                errs.invalid(f"{ep}.valueFrom", "", "may not have more than one field specified at a time")
            for k in ("configMapKeyRef", "secretKeyRef"):
                ref = vf.get(k)
                if ref is not None:
                    if not ref.get("key"):
                        errs.required(f"{ep}.valueFrom.{k}.key")
                    else:
                        errs.each(f"{ep}.valueFrom.{k}.key", ref["key"], is_config_map_key(ref["key"]))
    _resources(errs, f"{path}.resources", c.get("resources") or {})
    for i, ef in enumerate(c.get("envFrom") or []):
        if ef.get("prefix"):
            errs.each(f"{path}.envFrom[{i}].prefix", ef["prefix"], is_env_var_name(ef["prefix"]))
    seen = set()
    for i, vm in enumerate(c.get("volumeMounts") or []):
        mp = f"{path}.volumeMounts[{i}]"
        if not vm.get("name"):
            errs.required(f"{mp}.name")
        if vm.get("name") not in vols:
            errs.not_found(f"{mp}.name", vm.get("name") or "")
        if not vm.get("mountPath"):
            errs.required(f"{mp}.mountPath")
        if vm.get("mountPath") in seen:
            errs.invalid(f"{mp}.mountPath", vm.get("mountPath"), "must be unique")
        seen.add(vm.get("mountPath"))
        if vm.get("subPath"):
            _local_path(errs, f"{mp}.subPath", vm["subPath"])
    ipp = c.get("imagePullPolicy")
    if ipp not in (None, "Always", "IfNotPresent", "Never"):
        errs.not_supported(f"{path}.imagePullPolicy", ipp, ["Always", "IfNotPresent", "Never"])
    _security_context(errs, f"{path}.securityContext", c.get("securityContext"), False)


def validate_pod_spec(spec, path, errs):
    if not isinstance(spec, dict):
        errs.required(path)
        return
    vols, names = set(), set()
    for i, v in enumerate(spec.get("volumes") or []):
        vp = f"{path}.volumes[{i}]"
        before = len(errs)
        _volume_source(errs, vp, v)
        name = v.get("name") or ""
        if not name:
            errs.required(f"{vp}.name")
        else:
            errs.each(f"{vp}.name", name, is_dns1123_label(name))
        if name in names:
            errs.duplicate(f"{vp}.name", name)
        names.add(name)
        if len(errs) == before:
            vols.add(name)
    containers = spec.get("containers") or []
    if not containers:
        errs.required(f"{path}.containers")
    all_names = set()
    for kind in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(kind) or []):
            _container(errs, f"{path}.{kind}[{i}]", c, vols)
            if c.get("name") in all_names:
                errs.duplicate(f"{path}.{kind}[{i}].name", c.get("name"))
            all_names.add(c.get("name"))
    rp = spec.get("restartPolicy")
    if rp not in ("Always", "OnFailure", "Never"):
        errs.not_supported(f"{path}.restartPolicy", rp, ["Always", "OnFailure", "Never"])
    for k, v in (spec.get("nodeSelector") or {}).items():
        errs.each(f"{path}.nodeSelector", k, is_qualified_name(k))
        errs.each(f"{path}.nodeSelector", v, is_label_value(v if isinstance(v, str) else str(v)))
    _tolerations(errs, f"{path}.tolerations", spec.get("tolerations"))
    _security_context(errs, f"{path}.securityContext", spec.get("securityContext"), True)
    sa = spec.get("serviceAccountName")
    if sa:
        errs.each(f"{path}.serviceAccountName", sa, is_dns1123_subdomain(sa))
    nn = spec.get("nodeName")
    if nn:
        errs.each(f"{path}.nodeName", nn, is_dns1123_subdomain(nn))
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and (not isinstance(ads, int) or ads < 1 or ads > MAX_INT32):
        errs.invalid(f"{path}.activeDeadlineSeconds", ads, f"must be between 1 and {MAX_INT32}, inclusive")
    if spec.get("hostname"):
        errs.each(f"{path}.hostname", spec["hostname"], is_dns1123_label(spec["hostname"]))
    tgp = spec.get("terminationGracePeriodSeconds")
    if isinstance(tgp, int) and tgp < 0:
        errs.invalid(f"{path}.terminationGracePeriodSeconds", tgp, "must be greater than or equal to 0")


def validate_event(info, obj, errs):
    """ValidateEventCreate: the legacy checks for core/v1, the strict ones for events.k8s.io/v1.
    Field paths are the internal type's (so an events.k8s.io `note` is reported as `message`)."""
    new_api = info.group == "events.k8s.io"
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    if new_api:
        involved = obj.get("regarding") or {}
        message, source = obj.get("note") or "", obj.get("deprecatedSource") or {}
        reporting = obj.get("reportingController") or ""
        first, last, count = obj.get("deprecatedFirstTimestamp"), obj.get("deprecatedLastTimestamp"), obj.get("deprecatedCount")
    else:
        involved = obj.get("involvedObject") or {}
        message, source = obj.get("message") or "", obj.get("source") or {}
        reporting = obj.get("reportingComponent") or ""
        first, last, count = obj.get("firstTimestamp"), obj.get("lastTimestamp"), obj.get("count")
    inv_ns = involved.get("namespace") or ""
    if not obj.get("eventTime"):
        if (not inv_ns and ns not in ("", "default")) or (inv_ns and ns != inv_ns):
            errs.invalid("involvedObject.namespace", inv_ns, "does not match event.namespace")
    else:
        if not inv_ns and ns not in ("default", "kube-system"):
            errs.invalid("involvedObject.namespace", inv_ns, "does not match event.namespace")
        if not reporting:
            errs.required("reportingController")
        errs.each("reportingController", reporting, is_qualified_name(reporting))
        for f, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
            v = obj.get(f) or ""
            if not v:
                errs.required(f)
            if len(v.encode()) > limit:
                errs.invalid(f, "", f"can have at most {limit} characters")
        if len(message.encode()) > 1024:
            errs.invalid("message", "", "can have at most 1024 characters")
    errs.each("namespace", ns, is_dns1123_subdomain(ns))
    if not new_api:
        return
    series = obj.get("series")
    if series is not None:
        if (series.get("count") or 0) < 2:
            errs.invalid("series.count", "", "should be at least 2")
        if not series.get("lastObservedTime"):
            errs.required("series.lastObservedTime")
    if not obj.get("eventTime"):
        errs.required("eventTime")
    if obj.get("type") not in ("Normal", "Warning"):
        errs.invalid("type", "", f"has invalid value: {obj.get('type') or ''}")
    if first:
        errs.invalid("firstTimestamp", "", "needs to be unset")
    if last:
        errs.invalid("lastTimestamp", "", "needs to be unset")
    if count:
        errs.invalid("count", "", "needs to be unset")
    if source.get("component") or source.get("host"):
        errs.invalid("source", "", "needs to be unset")


def default_container(c):
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    img = c.get("image") or ""
    last = img.split("/")[-1]
    c.setdefault("imagePullPolicy", "Always" if "@" not in img and (":" not in last or last.endswith(":latest"))
                 else "IfNotPresent")
    c.setdefault("resources", {})


def default_volumes(spec):
    """SetDefaults_*VolumeSource: defaultMode 0644 for secret, configMap, projected, downwardAPI."""
    for v in spec.get("volumes") or []:
        for kind in ("secret", "configMap", "projected", "downwardAPI"):
            if isinstance(v.get(kind), dict):
                v[kind].setdefault("defaultMode", 0o644)
        if isinstance(v.get("hostPath"), dict):
            v["hostPath"].setdefault("type", "")


def default_pod_spec(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("enableServiceLinks", True)
    default_volumes(spec)
    for c in spec.get("containers") or []:
        default_container(c)
    for c in spec.get("initContainers") or []:
        default_container(c)


def pod_qos(spec):
    """GetPodQOS: Guaranteed, Burstable or BestEffort."""
    requests, limits, guaranteed = set(), set(), True
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = c.get("resources") or {}
        req, lim = dict(res.get("limits") or {}), res.get("limits") or {}
        req.update(res.get("requests") or {})
        requests |= {k for k in req if k in ("cpu", "memory")}
        limits |= {k for k in lim if k in ("cpu", "memory")}
        if not all(k in lim and str(lim[k]) == str(req.get(k)) for k in ("cpu", "memory")):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    return "Guaranteed" if guaranteed and limits == {"cpu", "memory"} else "Burstable"


def apply_create_defaults(info, obj):
    if info.gr == SECRETS:
        obj.setdefault("type", "Opaque")
    elif info.gr == JOBS:
        spec = obj.setdefault("spec", {})
        uid = obj["metadata"]["uid"]
        name = obj["metadata"]["name"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        tmpl = spec.setdefault("template", {})
        tm = tmpl.setdefault("metadata", {})
        labels = tm.setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name})
        default_pod_spec(tmpl.setdefault("spec", {}))
    elif info.gr == PODS:
        spec = obj.setdefault("spec", {})
        default_pod_spec(spec)
        obj["status"] = {"phase": "Pending", "qosClass": pod_qos(spec)}


# --------------------------------------------------------------------------------------------
# Admission: an injected sidecar (a mutating webhook such as Istio's) and Pod Security admission
# --------------------------------------------------------------------------------------------

class SidecarInjector:
    """Adds a long-running container in front of the pod's own, as Istio's injector does, unless
    the pod opts out by label or annotation."""

    def __init__(self, name, image, opt_outs):
        self.name = name
        self.image = image
        self.opt_outs = opt_outs  # [(key, value)]

    def mutate(self, pod, ns):
        if not self.name or ns in ("kube-system", "kube-public"):
            return
        meta = pod.setdefault("metadata", {})
        spec = pod.setdefault("spec", {})
        marks = dict(meta.get("labels") or {})
        marks.update(meta.get("annotations") or {})
        if spec.get("hostNetwork") or any(marks.get(k) == v for k, v in self.opt_outs):
            return
        if any(c.get("name") == self.name for c in spec.get("containers") or []):
            return
        sidecar = {"name": self.name, "image": self.image, "args": ["proxy", "sidecar"],
                   "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
                   "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                   "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                       "privileged": False, "readOnlyRootFilesystem": True, "runAsGroup": 1337,
                                       "runAsNonRoot": True, "runAsUser": 1337}}
        default_container(sidecar)
        spec["containers"] = [sidecar] + list(spec.get("containers") or [])
        ann = meta.setdefault("annotations", {})
        ann["sidecar.istio.io/status"] = json.dumps({"containers": [self.name], "volumes": [],
                                                      "imagePullSecrets": None}, separators=(",", ":"))


PSA_LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUME_TYPES = ["hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
                           "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
                           "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume",
                           "scaleIO", "storageos"]
ALLOWED_RESTRICTED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                              "projected", "secret")


def _plural(one, many, n):
    return one if n == 1 else many


def _jq(items):
    return ", ".join(f'"{i}"' for i in items)


def _containers_of(spec):
    return (spec.get("initContainers") or []) + (spec.get("containers") or []) + (spec.get("ephemeralContainers") or [])


def _sc(c):
    return c.get("securityContext") or {}


def _bad_containers(spec, pred):
    return [c.get("name") for c in _containers_of(spec) if pred(c)]


def _who(names):
    return f'{_plural("container", "containers", len(names))} {_jq(names)}'


def psa_check_pod(level, meta, spec):
    """The pod-security-admission checks of `level` (latest), in the order the evaluator runs them:
    the non-overlapping baseline checks, then the overlapping baseline ones (baseline only) or the
    restricted ones. Returns [(reason, detail)]."""
    out = []
    psc = spec.get("securityContext") or {}
    # baseline, not overlapping with restricted checks (in the order of their source files)
    bad = {c.get("name"): ((c.get("securityContext") or {}).get("appArmorProfile") or {}).get("type")
           for c in _containers_of(spec)}
    bad = sorted(n for n, t in bad.items() if t == "Unconfined")
    if (psc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad = ["pod"] + bad
    if bad:
        out.append(("forbidden AppArmor profile", f"{_plural('profile', 'profiles', len(bad))} {_jq(bad)}"))
    hostns = sorted(k for k in ("hostIPC", "hostNetwork", "hostPID") if spec.get(k))
    if hostns:
        out.append(("host namespaces", ", ".join(f"{k}=true" for k in hostns)))
    ports, names = set(), []
    for c in _containers_of(spec):
        hp = [p.get("hostPort") for p in c.get("ports") or [] if p.get("hostPort")]
        if hp:
            names.append(c.get("name"))
            ports |= {str(p) for p in hp}
    if names:
        out.append(("hostPort", f'{_who(names)} {_plural("uses", "use", len(names))} '
                                f'{_plural("hostPort", "hostPorts", len(ports))} {", ".join(sorted(ports))}'))
    names = _bad_containers(spec, lambda c: _sc(c).get("privileged"))
    if names:
        out.append(("privileged", f"{_who(names)} must not set securityContext.privileged=true"))
    names = _bad_containers(spec, lambda c: _sc(c).get("procMount") not in (None, "Default"))
    if names:
        out.append(("procMount", f"{_who(names)} must not set securityContext.procMount to \"Unmasked\""))
    sysctls = sorted(s.get("name") for s in psc.get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS)
    if sysctls:
        out.append(("forbidden sysctls", ", ".join(sysctls)))
    if level == "baseline":
        caps, names = set(), []
        for c in _containers_of(spec):
            add = [a for a in ((_sc(c).get("capabilities") or {}).get("add") or []) if a not in BASELINE_CAPS]
            if add:
                names.append(c.get("name"))
                caps |= set(add)
        if names:
            out.append(("non-default capabilities",
                        f"{_who(names)} must not include {_jq(sorted(caps))} in securityContext.capabilities.add"))
        vols = [v.get("name") for v in spec.get("volumes") or [] if v.get("hostPath") is not None]
        if vols:
            out.append(("hostPath volumes", f"{_plural('volume', 'volumes', len(vols))} {_jq(vols)}"))
        setters, values = [], set()
        if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
            setters.append("pod")
            values.add("Unconfined")
        names = _bad_containers(spec, lambda c: (_sc(c).get("seccompProfile") or {}).get("type") == "Unconfined")
        if names:
            setters.append(_who(names))
            values.add("Unconfined")
        if setters:
            out.append(("seccompProfile", f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
                                          f"{_jq(sorted(values))}"))
        return out
    # restricted
    names = _bad_containers(spec, lambda c: _sc(c).get("allowPrivilegeEscalation") is not False)
    if names:
        out.append(("allowPrivilegeEscalation != false",
                    f"{_who(names)} must set securityContext.allowPrivilegeEscalation=false"))
    missing_drop, adding, forbidden = [], [], set()
    for c in _containers_of(spec):
        caps = _sc(c).get("capabilities")
        if caps is None or "ALL" not in (caps.get("drop") or []):
            missing_drop.append(c.get("name"))
        extra = [a for a in ((caps or {}).get("add") or []) if a != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c.get("name"))
            forbidden |= set(extra)
    details = []
    if missing_drop:
        details.append(f'{_who(missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_who(adding)} must not include {_jq(sorted(forbidden))} in securityContext.capabilities.add")
    if details:
        out.append(("unrestricted capabilities", "; ".join(details)))
    bad_vols, bad_types = [], set()
    for v in spec.get("volumes") or []:
        if any(v.get(k) is not None for k in ALLOWED_RESTRICTED_VOLUMES):
            continue
        bad_vols.append(v.get("name"))
        bad_types.add(next((k for k in RESTRICTED_VOLUME_TYPES if v.get(k) is not None), "unknown"))
    if bad_vols:
        out.append(("restricted volume types",
                    f"{_plural('volume', 'volumes', len(bad_vols))} {_jq(bad_vols)} "
                    f"{_plural('uses', 'use', len(bad_vols))} "
                    f"{_plural('restricted volume type', 'restricted volume types', len(bad_types))} "
                    f"{_jq(sorted(bad_types))}"))
    setters, implicit = [], []
    pod_nonroot = psc.get("runAsNonRoot")
    if pod_nonroot is False:
        setters.append("pod")
    explicit = []
    for c in _containers_of(spec):
        v = _sc(c).get("runAsNonRoot")
        if v is not None:
            if v is False:
                explicit.append(c.get("name"))
        elif pod_nonroot is not True:
            implicit.append(c.get("name"))
    if explicit:
        setters.append(_who(explicit))
    if setters:
        out.append(("runAsNonRoot != true", f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false"))
    elif implicit:
        out.append(("runAsNonRoot != true", f"pod or {_who(implicit)} must set securityContext.runAsNonRoot=true"))
    setters = ["pod"] if psc.get("runAsUser") == 0 else []
    names = _bad_containers(spec, lambda c: _sc(c).get("runAsUser") == 0)
    if names:
        setters.append(_who(names))
    if setters:
        out.append(("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0"))
    setters, values, implicit = [], set(), []
    pod_type = (psc.get("seccompProfile") or {}).get("type")
    pod_ok = pod_type in ("RuntimeDefault", "Localhost")
    if psc.get("seccompProfile") is not None and not pod_ok:
        setters.append("pod")
        values.add(pod_type or "")
    explicit = []
    for c in _containers_of(spec):
        sp = _sc(c).get("seccompProfile")
        if sp is not None:
            if sp.get("type") not in ("RuntimeDefault", "Localhost"):
                explicit.append(c.get("name"))
                values.add(sp.get("type") or "")
        elif not pod_ok:
            implicit.append(c.get("name"))
    if explicit:
        setters.append(_who(explicit))
    if setters:
        out.append(("seccompProfile", f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
                                      f"{_jq(sorted(values))}"))
    elif implicit:
        out.append(("seccompProfile", f'pod or {_who(implicit)} must set securityContext.seccompProfile.type to '
                                      f'"RuntimeDefault" or "Localhost"'))
    return out


def psa_policy(ns_obj, mode):
    """(level, version label) of a namespace's pod-security.kubernetes.io/<mode> labels; an
    invalid level evaluates as restricted:latest, as the admission plugin does."""
    labels = ((ns_obj or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(f"pod-security.kubernetes.io/{mode}")
    if level is None:
        return None
    version = labels.get(f"pod-security.kubernetes.io/{mode}-version") or "latest"
    if level not in PSA_LEVELS:
        return "restricted", "latest"
    return level, version


def psa_violations(ns_obj, mode, pod_meta, pod_spec):
    policy = psa_policy(ns_obj, mode)
    if policy is None or policy[0] == "privileged":
        return None
    results = psa_check_pod(policy[0], pod_meta or {}, pod_spec or {})
    if not results:
        return None
    detail = ", ".join(f"{r} ({d})" if d else r for r, d in results)
    return f'{policy[0]}:{policy[1]}', detail


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
        self.by_uid = {}  # uid -> (info, ns, name)
        self.sidecar = None  # SidecarInjector (a mutating admission webhook), when configured

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
    def create(self, info, ns, obj, dry_run=False, managed=None, manager=None, warnings=None):
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
        if info.gr == PODS:  # defaulting, then mutating admission (the ServiceAccount plugin, then
            # the webhooks), all before the name is generated
            default_pod_spec(obj.setdefault("spec", {}))
            with self.lock:
                self._service_account_admission(ns, obj)
            if self.sidecar is not None:
                self.sidecar.mutate(obj, ns)
        with self.lock:
            if not meta.get("name"):
                gn = meta.get("generateName")
                if not gn:
                    errs = FieldErrors()
                    errs.required("metadata.name", "name or generateName is required")
                    raise invalid(info, "", errs)
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
            self._pod_security(info, ns, obj, warnings)
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

    def _service_account_admission(self, ns, pod):
        """The ServiceAccount admission plugin: the pod's ServiceAccount must exist (`default` is
        taken to exist everywhere, as the ServiceAccounts controller makes it in each namespace);
        unless automounting is off (the pod's `automountServiceAccountToken`, else the
        ServiceAccount's, else on) every container gets the `kube-api-access-*` projected volume
        at /var/run/secrets/kubernetes.io/serviceaccount; a pod without imagePullSecrets gets the
        ServiceAccount's."""
        # Admission sees the pod before its name is generated: a Job's pod is `JOB-`.
        name, spec = pod["metadata"].get("name") or pod["metadata"].get("generateName", ""), pod["spec"]
        sa_name, sa = self.service_account(ns, spec)
        if sa is None:
            raise ApiError(403, f'pods "{name}" is forbidden: error looking up service account {ns}/{sa_name}: '
                                f'serviceaccount "{sa_name}" not found', "Forbidden", {"name": name, "kind": "pods"})
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = sa.get("automountServiceAccountToken")
        if automount is not False:
            self._mount_api_access(ns, spec)
        if not spec.get("imagePullSecrets") and sa.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [{"name": s.get("name", "")} for s in sa["imagePullSecrets"]]

    def service_account(self, ns, spec):
        """The pod spec's ServiceAccount: its name and object ({} for a `default` never created,
        which the ServiceAccounts controller would have made; None when it does not exist)."""
        name = spec.get("serviceAccountName") or "default"
        with self.lock:
            sa = self.objs[SERVICEACCOUNTS].get((ns, name))
        return name, ({} if sa is None and name == "default" else sa)

    def _mount_api_access(self, ns, spec):
        volume = "kube-api-access-" + rand_suffix()
        mount = {"name": volume, "readOnly": True, "mountPath": SA_TOKEN_DIR}
        wanted = False
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            mounts = c.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == SA_TOKEN_DIR for m in mounts):
                mounts.append(dict(mount))
                wanted = True
        if not wanted:
            return
        spec.setdefault("volumes", []).append({"name": volume, "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
        self._publish_root_ca(ns)

    def _publish_root_ca(self, ns):
        """The root-ca-cert-publisher: `kube-root-ca.crt` in every namespace (here: by the time
        a pod there needs it, since namespaces need not exist as objects)."""
        if (ns, ROOT_CA_CONFIGMAP) not in self.objs[CONFIGMAPS]:
            self.create(self.registry.lookup(*CONFIGMAPS), ns,
                        {"metadata": {"name": ROOT_CA_CONFIGMAP}, "data": {"ca.crt": DOUBLE_CA_PEM}},
                        manager="kube-controller-manager")

    def _pod_security(self, info, ns, obj, warnings):
        """Pod Security admission: pods violating the namespace's enforce level are refused; pods
        violating its warn level, and workloads whose pod template violates either, get warnings."""
        ns_obj = self.objs[NAMESPACES].get(("", ns))
        if ns_obj is None:
            return
        name = obj["metadata"]["name"]
        if info.gr == PODS:
            meta, spec = obj.get("metadata"), obj.get("spec")
            v = psa_violations(ns_obj, "enforce", meta, spec)
            if v is not None:
                raise ApiError(403, f'pods "{name}" is forbidden: violates PodSecurity "{v[0]}": {v[1]}', "Forbidden",
                               {"name": name, "kind": "pods"})
            modes = ("warn",)
        elif info.gr == JOBS:
            tmpl = (obj.get("spec") or {}).get("template") or {}
            meta, spec = tmpl.get("metadata"), tmpl.get("spec")
            modes = ("enforce", "warn")
        else:
            return
        seen = set()
        for mode in modes:
            v = psa_violations(ns_obj, mode, meta, spec)
            if v is not None and v not in seen and warnings is not None:
                seen.add(v)
                warnings.append(f'would violate PodSecurity "{v[0]}": {v[1]}')

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
        # The fieldmanager keeps the managedFields a write through the main resource sends
        # when they decode ([{}] resets them); a subresource write, or none sent, keeps the live ones.
        base = om.get("managedFields")
        sent = meta.get("managedFields")
        if check and managed is None and sub is None and sent:
            if sent == [{}]:
                base = []
            elif all(_valid_managed_entry(m) for m in sent):
                base = sent
        if managed is not None:
            if managed:
                meta["managedFields"] = managed
            else:
                meta.pop("managedFields", None)
        elif base:
            meta["managedFields"] = base
        else:
            meta.pop("managedFields", None)
        meta["resourceVersion"] = om["resourceVersion"]
        new["kind"] = old.get("kind", info.kind)
        new["apiVersion"] = old.get("apiVersion", info.api_version())
        normalize_write(info, new)
        if check:
            errs = FieldErrors()
            if info.gr == JOBS:
                ospec, nspec = old.get("spec") or {}, new.get("spec") or {}
                if ospec.get("template") != nspec.get("template") and not ospec.get("suspend"):
                    errs.invalid("spec.template", nspec.get("template"), "field is immutable")
                if ospec.get("selector") != nspec.get("selector"):
                    errs.invalid("spec.selector", nspec.get("selector"), "field is immutable")
            if info.gr == PODS:
                ospec, nspec = dc(old.get("spec") or {}), dc(new.get("spec") or {})
                for sp in (ospec, nspec):
                    for f in ("activeDeadlineSeconds", "tolerations"):
                        sp.pop(f, None)
                    for c in (sp.get("containers") or []) + (sp.get("initContainers") or []):
                        c.pop("image", None)
                if ospec != nspec:
                    errs.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,"
                                           "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                                           "`spec.tolerations` (only additions to existing tolerations),"
                                           "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                                           "previously negative)")
            if om.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(om.get("finalizers") or [])
                if added:
                    errs.forbidden("metadata.finalizers", "no new finalizers can be added if the object is being "
                                                          "deleted, found new finalizers " + goq(sorted(added)))
            if errs:
                raise invalid(info, name, errs)
            validate(info, new)
        if _strip_for_generation(new) != _strip_for_generation(old):
            meta["generation"] = int(om.get("generation") or 0) + 1
        if managed is None and manager:
            mf = update_ownership(base or [], old, new, manager, sub, new["apiVersion"])
            if mf:
                meta["managedFields"] = mf
            else:
                meta.pop("managedFields", None)
        if new == old:
            return old  # no-op write: no new resourceVersion, no event
        if dry_run:
            return new
        if om.get("deletionTimestamp") and not meta.get("finalizers") and not om.get("deletionGracePeriodSeconds"):
            return self._remove(info, ns, name, new)  # shouldDeleteDuringUpdate
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
            # (manager, operation, subresource) is the owner: the same name's Update is another
            if _same_entry(m, manager, "Apply", subres):
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
                # a map whose last field went goes too (its fields were all this manager's)
                for n in range(len(p) - 1, 0, -1):
                    if _get_path(new, p[:n]) != {} or p[:n] in paths:
                        break
                    _remove_path(new, p[:n])
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
        """DELETE with DeleteOptions: preconditions, the propagation policy (the `orphan` and
        `foregroundDeletion` finalizers the garbage collector acts on) and, for pods, graceful
        deletion (deletionTimestamp in the future; the kubelet removes the object when its
        containers are gone)."""
        opts = opts or {}
        with self.lock:
            old = self._get_or_404(info, ns, name)
            om = old["metadata"]
            pre = opts.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != om["uid"]:
                raise ApiError(409, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                                    f"{om['uid']}", "Conflict")
            if pre.get("resourceVersion") and pre["resourceVersion"] != om["resourceVersion"]:
                raise ApiError(409, f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                    f"ResourceVersion in object meta: {om['resourceVersion']}", "Conflict")
            policy = propagation_policy(info, opts)
            grace = 0
            if info.gr == PODS:  # podStrategy.CheckGracefulDelete
                g = opts.get("gracePeriodSeconds")
                grace = int(g) if g is not None else int((old.get("spec") or {}).get("terminationGracePeriodSeconds") or 0)
                if not (old.get("spec") or {}).get("nodeName") or pod_terminal(old):
                    grace = 0
            if dry_run:
                return old
            fins = [f for f in om.get("finalizers") or [] if f not in ("orphan", "foregroundDeletion")]
            if policy == "Orphan":
                fins.append("orphan")
            elif policy == "Foreground":
                fins.append("foregroundDeletion")
            if om.get("deletionTimestamp"):
                current = om.get("deletionGracePeriodSeconds")
                if current is not None and grace < current:  # a shorter grace period replaces the longer one
                    if grace == 0 and not om.get("finalizers"):
                        return self._remove(info, ns or "", name, old)
                    return self._mark_deleting(info, ns or "", name, old, grace, om.get("finalizers") or [])
                return old
            if grace > 0 or fins:
                return self._mark_deleting(info, ns or "", name, old, grace, fins)
            return self._remove(info, ns or "", name, old)

    def _mark_deleting(self, info, ns, name, old, grace, fins):
        new = dc(old)
        m = new["metadata"]
        m["deletionTimestamp"] = time_str(cluster_now() + datetime.timedelta(seconds=grace))
        m["deletionGracePeriodSeconds"] = grace
        if fins:
            m["finalizers"] = fins
        m["generation"] = int(old["metadata"].get("generation") or 0) + 1
        m["resourceVersion"] = self._next_rv()
        self.objs[info.gr][(ns, name)] = new
        self._emit(info, ns, "MODIFIED", new, old)
        return new

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

    def internal_delete(self, gr, ns, name, uid=None, opts=None):
        with self.lock:
            old = self.objs[gr].get((ns or "", name))
            if old is None or (uid and old["metadata"]["uid"] != uid):
                return None
            info = self.registry.lookup(*gr) or ResourceInfo(gr[0], ["v1"], gr[1], guess_kind(gr[1]))
            try:
                return self.delete(info, ns or "", name, opts)
            except ApiError:
                return None


def propagation_policy(info, opts):
    """The DeleteOptions' propagation policy, else the resource's default (registry strategies'
    DefaultGarbageCollectionPolicy: batch/v1 Jobs orphan their pods, everything else cascades in
    the background)."""
    policy = opts.get("propagationPolicy")
    if policy is None and opts.get("orphanDependents") is not None:
        policy = "Orphan" if opts["orphanDependents"] else "Background"
    if policy is None:
        policy = "Orphan" if info.gr == JOBS else "Background"
    if policy not in ("Orphan", "Background", "Foreground"):
        errs = FieldErrors()
        errs.not_supported("propagationPolicy", policy, ["Foreground", "Background", "Orphan"])
        raise ApiError(422, f"DeleteOptions.meta.k8s.io \"\" is invalid: {errs[0][0]}: {errs[0][2]}", "Invalid")
    return policy


# --------------------------------------------------------------------------------------------
# Controllers: garbage collector, scheduler, Job controller, TTL, pod GC, small helpers
# --------------------------------------------------------------------------------------------

PODS = ("", "pods")
JOBS = ("batch", "jobs")
SECRETS = ("", "secrets")
CONFIGMAPS = ("", "configmaps")
SERVICEACCOUNTS = ("", "serviceaccounts")
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
DOUBLE_CA_PEM = "# kube-double serves plain HTTP: it has no certificate authority\n"
TOKEN_KEY = os.urandom(32)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign_jwt(claims, key):
    """A compact JWS (HS256) of `claims`."""
    head = _b64url(json.dumps({"alg": "HS256", "kid": "kube-double"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(key, head + b"." + body, hashlib.sha256).digest()
    return head + b"." + body + b"." + _b64url(mac)
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
PVCS = ("", "persistentvolumeclaims")
NODES = ("", "nodes")
NAMESPACES = ("", "namespaces")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
EVENTS = ("", "events")
JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"


def owner_uids(obj):
    return [r.get("uid") for r in (obj.get("metadata") or {}).get("ownerReferences") or []]


def controller_uid(obj):
    for r in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if r.get("controller"):
            return r.get("uid")
    return None


def phase_of(pod):
    return (pod.get("status") or {}).get("phase") or "Pending"


def pod_terminal(pod):
    return phase_of(pod) in ("Succeeded", "Failed")


def condition_true(obj, typ):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ and c.get("status") == "True":
            return c
    return None


class EventWriter:
    """core/v1 Events as the controllers and the kubelet write them (one per occurrence)."""

    def __init__(self, store, registry, node):
        self.store, self.registry, self.node = store, registry, node

    def emit(self, obj, typ, reason, message, component, field_path=None, host=None):
        meta = obj["metadata"]
        t = now_str()
        involved = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta["name"],
                    "namespace": meta.get("namespace"), "uid": meta["uid"],
                    "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component}
        if component == "kubelet":
            source["host"] = host or self.node
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": f"{meta['name']}.{random.getrandbits(64):016x}",
                           "namespace": meta.get("namespace") or "default"},
              "involvedObject": involved, "reason": reason, "message": message[:1024], "type": typ,
              "source": source, "firstTimestamp": t, "lastTimestamp": t, "count": 1,
              "reportingComponent": component, "reportingInstance": source.get("host", "")}
        try:
            self.store.create(self.registry.lookup(*EVENTS), ev["metadata"]["namespace"], ev)
        except ApiError as e:
            log(f"event not written: {e.message}")


class GarbageCollector:
    """The garbage collector, after a delay: dependents of a removed owner are deleted in the
    background (or have their dangling ownerReference removed while another owner lives), an
    owner deleted with propagationPolicy Orphan loses its `orphan` finalizer after its dependents
    lost their ownerReferences to it, and one deleted with Foreground loses its
    `foregroundDeletion` finalizer once its blocking dependents are gone. A deleted Namespace
    takes everything in it."""

    def __init__(self, store, delay):
        self.store = store
        self.delay = delay
        self.cv = threading.Condition()
        self.heap = []
        self.seq = 0
        store.listeners.append(self._on_event)

    def _on_event(self, e):  # under the store lock: only enqueue
        meta = e["obj"]["metadata"]
        if e["type"] == "DELETED":
            self.schedule(("dependents", meta["uid"]))
            if e["gr"] == NAMESPACES:
                self.schedule(("namespace", meta["name"]))
        elif meta.get("deletionTimestamp") and not (e["old"] or {}).get("metadata", {}).get("deletionTimestamp"):
            fins = meta.get("finalizers") or []
            key = (e["gr"], e["ns"], meta["name"], meta["uid"])
            if "orphan" in fins:
                self.schedule(("orphan",) + key)
            if "foregroundDeletion" in fins:
                self.schedule(("foreground",) + key)

    def schedule(self, item, delay=None):
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (time.monotonic() + (self.delay if delay is None else delay), self.seq, item))
            self.cv.notify()

    def loop(self):
        while True:
            with self.cv:
                while not self.heap or self.heap[0][0] > time.monotonic():
                    self.cv.wait(None if not self.heap else max(0.0, self.heap[0][0] - time.monotonic()))
                _, _, item = heapq.heappop(self.heap)
            try:
                getattr(self, "_" + item[0])(*item[1:])
            except Exception:
                log("gc failed: " + traceback.format_exc())

    def _dependents_of(self, uid):
        with self.store.lock:
            return [(gr, ons, oname, o) for gr, objs in self.store.objs.items()
                    for (ons, oname), o in objs.items() if uid in owner_uids(o)]

    def _dependents(self, uid):
        for gr, ns, name, o in self._dependents_of(uid):
            others = [u for u in owner_uids(o) if u != uid and self.store.exists_uid(u)]
            if others:  # a solid owner remains: only drop the dangling reference
                self._drop_ref(gr, ns, name, o["metadata"]["uid"], uid)
            elif not o["metadata"].get("deletionTimestamp"):
                fins = o["metadata"].get("finalizers") or []
                policy = "Orphan" if "orphan" in fins else "Foreground" if "foregroundDeletion" in fins else "Background"
                self.store.internal_delete(gr, ns, name, uid=o["metadata"]["uid"], opts={"propagationPolicy": policy})

    def _drop_ref(self, gr, ns, name, uid, owner):
        def fn(x):
            x["metadata"]["ownerReferences"] = [r for r in x["metadata"].get("ownerReferences") or []
                                                if r.get("uid") != owner]
            if not x["metadata"]["ownerReferences"]:
                del x["metadata"]["ownerReferences"]
            return x
        self.store.internal_update(gr, ns, name, fn, uid=uid, manager="kube-controller-manager", sub=None)

    def _remove_finalizer(self, gr, ns, name, uid, fin):
        def fn(x):
            x["metadata"]["finalizers"] = [f for f in x["metadata"].get("finalizers") or [] if f != fin]
            if not x["metadata"]["finalizers"]:
                del x["metadata"]["finalizers"]
            return x
        self.store.internal_update(gr, ns, name, fn, uid=uid, manager="kube-controller-manager", sub=None)

    def _orphan(self, gr, ns, name, uid):
        for dgr, dns, dname, o in self._dependents_of(uid):
            self._drop_ref(dgr, dns, dname, o["metadata"]["uid"], uid)
        self._remove_finalizer(gr, ns, name, uid, "orphan")

    def _foreground(self, gr, ns, name, uid):
        if self.store.get(gr, ns, name) is None:
            return
        blocking = False
        for dgr, dns, dname, o in self._dependents_of(uid):
            ref = next(r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") == uid)
            blocking = blocking or bool(ref.get("blockOwnerDeletion"))
            if not o["metadata"].get("deletionTimestamp"):
                self.store.internal_delete(dgr, dns, dname, uid=o["metadata"]["uid"],
                                           opts={"propagationPolicy": "Background"})
        if blocking:
            self.schedule(("foreground", gr, ns, name, uid), delay=0.2)
        else:
            self._remove_finalizer(gr, ns, name, uid, "foregroundDeletion")

    def _namespace(self, name):
        with self.store.lock:
            victims = [(gr, ons, oname) for gr, objs in self.store.objs.items() for (ons, oname) in objs if ons == name]
        for gr, ons, oname in victims:
            self.store.internal_delete(gr, ons, oname, opts={"propagationPolicy": "Background"})


def _node_affinity_terms(spec):
    return ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")) or []


def _match_expr(expr, values_of):
    key, op, vals = expr.get("key"), expr.get("operator"), expr.get("values") or []
    v = values_of(key)
    if op == "In":
        return v is not None and v in vals
    if op == "NotIn":
        return v is None or v not in vals
    if op == "Exists":
        return v is not None
    if op == "DoesNotExist":
        return v is None
    if op in ("Gt", "Lt"):
        try:
            return v is not None and (int(v) > int(vals[0]) if op == "Gt" else int(v) < int(vals[0]))
        except (ValueError, IndexError):
            return False
    return False


def _tolerates(tolerations, taint):
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def unschedulable_reason(pod, node):
    """The first filter plugin (in the default order) that rejects the node, as its message."""
    spec = pod.get("spec") or {}
    nspec = node.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if nspec.get("unschedulable") and not _tolerates(spec.get("tolerations"),
                                                    {"key": "node.kubernetes.io/unschedulable",
                                                     "effect": "NoSchedule"}):
        return "node(s) were unschedulable"
    for taint in nspec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(spec.get("tolerations"), taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"
    sel = spec.get("nodeSelector") or {}
    ok = all(labels.get(k) == v for k, v in sel.items())
    terms = _node_affinity_terms(spec)
    if ok and terms:
        name = node["metadata"]["name"]
        ok = any(all(_match_expr(e, labels.get) for e in t.get("matchExpressions") or [])
                 and all(_match_expr(e, lambda k: name if k == "metadata.name" else None)
                         for e in t.get("matchFields") or []) for t in terms)
    if not ok:
        return "node(s) didn't match Pod's node affinity/selector"
    return None


class ControllerManager:
    """One loop for the scheduler, the Job controller, the TTL-after-finished controller, the pod
    GC (pods bound to a Node that does not exist), the PVC binder, CRD establishment and node
    status (every Node is served by this process's kubelet)."""

    def __init__(self, store, registry, events, backoff, pod_gc_quarantine, strict_pvc):
        self.store, self.registry, self.events = store, registry, events
        self.strict_pvc = strict_pvc
        self.backoff = backoff
        self.pod_gc_quarantine = pod_gc_quarantine
        self.q = queue.Queue()
        self.jobstate = {}  # job uid -> in-memory backoff records
        self.unschedulable = {}  # pod uid -> last FailedScheduling message
        self.orphaned_since = {}  # pod uid -> monotonic time its node was first missing
        store.listeners.append(self._on_event)

    def _on_event(self, e):
        if e["gr"] in (PVCS, CRDS, NODES):
            self.q.put(e)

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
                    log("controller event failed: " + traceback.format_exc())
            for step in (self.schedule, self.sync_jobs, self.pod_gc):
                try:
                    step()
                except Exception:
                    log(f"{step.__name__} failed: " + traceback.format_exc())

    def _handle(self, e):
        obj, meta = e["obj"], e["obj"]["metadata"]
        if e["gr"] == PVCS and e["type"] == "ADDED":
            def bind(o):
                spec = o.get("spec") or {}
                o["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                               "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {})
                                            .get("storage", "1Gi")}}
                return o
            self.store.internal_update(PVCS, meta["namespace"], meta["name"], bind, uid=meta["uid"])
            self.store.internal_update(PVCS, meta["namespace"], meta["name"], lambda o: (
                o["spec"].setdefault("volumeName", "pvc-" + meta["uid"]), o)[1], uid=meta["uid"], sub=None)
        elif e["gr"] == CRDS and e["type"] in ("ADDED", "MODIFIED"):
            self.registry.register_crd(obj)
            if e["type"] == "ADDED":
                def establish(o):
                    t = now_str()
                    spec = o.get("spec") or {}
                    o["status"] = {"acceptedNames": spec.get("names") or {}, "storedVersions": [
                        v.get("name") for v in spec.get("versions") or [] if v.get("storage")], "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                         "message": "no conflicts found", "lastTransitionTime": t},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                         "message": "the initial names have been accepted", "lastTransitionTime": t}]}
                    return o
                self.store.internal_update(CRDS, "", meta["name"], establish, uid=meta["uid"])
        elif e["gr"] == NODES and e["type"] == "ADDED" and not (obj.get("status") or {}).get("conditions"):
            self.store.internal_update(NODES, "", meta["name"], lambda o: dict(o, status=node_status(o)),
                                       uid=meta["uid"], manager="kubelet")

    # -- the scheduler --
    def schedule(self):
        pods = [p for p in self.store.list(PODS)[0] if not (p.get("spec") or {}).get("nodeName")
                and not p["metadata"].get("deletionTimestamp") and not pod_terminal(p)
                and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler"]
        if not pods:
            return
        nodes = self.store.list(NODES)[0]
        for pod in pods:
            meta = pod["metadata"]
            reasons = collections.Counter()
            chosen = None
            missing = [v["persistentVolumeClaim"].get("claimName") for v in (pod.get("spec") or {}).get("volumes") or []
                       if self.strict_pvc and v.get("persistentVolumeClaim") is not None
                       and self.store.get(PVCS, meta["namespace"], v["persistentVolumeClaim"].get("claimName")) is None]
            for node in [] if missing else nodes:
                why = unschedulable_reason(pod, node)
                if why is None:
                    chosen = node
                    break
                reasons[why] += 1
            if chosen is not None:
                self._bind(pod, chosen)
                continue
            n = len(nodes)
            detail = ", ".join(f"{c} {r}" for r, c in sorted(reasons.items()))
            if missing:  # the VolumeBinding plugin's PreFilter
                detail = f'persistentvolumeclaim "{missing[0]}" not found'
            msg = (f"0/{n} nodes are available: {detail + '. ' if detail else ''}preemption: 0/{n} nodes are available: "
                   f"{n} Preemption is not helpful for scheduling." if n else "no nodes available to schedule pods")
            if self.unschedulable.get(meta["uid"]) == msg:
                continue
            self.unschedulable[meta["uid"]] = msg

            def unsched(o, msg=msg):
                s = o.setdefault("status", {})
                s.setdefault("phase", "Pending")
                conds = [c for c in s.get("conditions") or [] if c.get("type") != "PodScheduled"]
                conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
                              "lastProbeTime": None, "lastTransitionTime": now_str()})
                s["conditions"] = conds
                return o
            self.store.internal_update(PODS, meta["namespace"], meta["name"], unsched, uid=meta["uid"],
                                       manager="kube-scheduler")
            self.events.emit(pod, "Warning", "FailedScheduling", msg, "default-scheduler")

    def _bind(self, pod, node):
        meta = pod["metadata"]
        node_name = node["metadata"]["name"]
        self.unschedulable.pop(meta["uid"], None)

        def bind(o):
            o["spec"]["nodeName"] = node_name
            s = o.setdefault("status", {})
            conds = [c for c in s.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now_str()})
            s["conditions"] = conds
            return o
        if self.store.internal_update(PODS, meta["namespace"], meta["name"], bind, uid=meta["uid"],
                                      manager="kube-scheduler", sub=None) is not None:
            self.events.emit(pod, "Normal", "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} "
                                                         f"to {node_name}", "default-scheduler")

    # -- the pod GC: pods bound to a Node that does not exist --
    def pod_gc(self):
        nodes = {n["metadata"]["name"] for n in self.store.list(NODES)[0]}
        now = time.monotonic()
        for pod in self.store.list(PODS)[0]:
            meta, node = pod["metadata"], (pod.get("spec") or {}).get("nodeName")
            if not node or node in nodes:
                self.orphaned_since.pop(meta["uid"], None)
                continue
            since = self.orphaned_since.setdefault(meta["uid"], now)
            if now - since < self.pod_gc_quarantine:
                continue

            def fail(o):
                s = o.setdefault("status", {})
                if s.get("phase") not in ("Succeeded", "Failed"):
                    s["phase"] = "Failed"
                conds = [c for c in s.get("conditions") or [] if c.get("type") != "DisruptionTarget"]
                conds.append({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                              "message": "PodGC: node no longer exists", "lastProbeTime": None,
                              "lastTransitionTime": now_str()})
                s["conditions"] = conds
                return o
            self.store.internal_update(PODS, meta["namespace"], meta["name"], fail, uid=meta["uid"],
                                       manager="kube-controller-manager")
            self.store.internal_delete(PODS, meta["namespace"], meta["name"], uid=meta["uid"],
                                       opts={"gracePeriodSeconds": 0})
            self.orphaned_since.pop(meta["uid"], None)

    # -- the Job controller --
    def sync_jobs(self):
        jobs = {j["metadata"]["uid"]: j for j in self.store.list(JOBS)[0]}
        by_job = collections.defaultdict(list)
        for p in self.store.list(PODS)[0]:
            cu = controller_uid(p)
            if cu in jobs:
                by_job[cu].append(p)
            elif JOB_TRACKING_FINALIZER in (p["metadata"].get("finalizers") or []):
                self._remove_tracking(p)  # an orphan: its Job is gone
        for uid, job in jobs.items():
            self.sync_job(job, by_job.get(uid, []))
        for uid in list(self.jobstate):
            if uid not in jobs:
                del self.jobstate[uid]

    def _remove_tracking(self, pod):
        def fn(o):
            fins = [f for f in o["metadata"].get("finalizers") or [] if f != JOB_TRACKING_FINALIZER]
            if fins:
                o["metadata"]["finalizers"] = fins
            else:
                o["metadata"].pop("finalizers", None)
            return o
        m = pod["metadata"]
        self.store.internal_update(PODS, m["namespace"], m["name"], fn, uid=m["uid"], sub=None)

    def _is_pod_failed(self, pod, job):
        spec = job.get("spec") or {}
        if phase_of(pod) == "Failed":
            return True
        if spec.get("podFailurePolicy") or spec.get("podReplacementPolicy") == "Failed":
            return False
        return bool(pod["metadata"].get("deletionTimestamp")) and phase_of(pod) != "Succeeded"

    def pod_failure_action(self, spec, pod):
        """matchPodFailurePolicy: (action, message) of the first matching rule, else ("Count", None)."""
        st = pod.get("status") or {}
        statuses = (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
        pconds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        pm = pod["metadata"]
        for i, rule in enumerate(((spec.get("podFailurePolicy") or {}).get("rules")) or []):
            action = rule.get("action")
            oc = rule.get("onExitCodes")
            if oc:
                for cs in statuses:
                    term = (cs.get("state") or {}).get("terminated")
                    if not term or term.get("exitCode", 0) == 0:
                        continue
                    if oc.get("containerName") and oc["containerName"] != cs.get("name"):
                        continue
                    code, vals = term["exitCode"], oc.get("values") or []
                    if (code in vals) == (oc.get("operator", "In") == "In"):
                        return action, (f"Container {cs.get('name')} for pod {pm['namespace']}/{pm['name']} failed with "
                                        f"exit code {code} matching {action} rule at index {i}")
            for pc in rule.get("onPodConditions") or []:
                if pconds.get(pc.get("type")) == pc.get("status", "True"):
                    return action, (f"Pod {pm['namespace']}/{pm['name']} has condition {pc.get('type')} matching "
                                    f"{action} rule at index {i}")
        return "Count", None

    def _counts(self, spec, pod):
        return self.pod_failure_action(spec, pod)[0] not in ("Ignore",)

    def sync_job(self, job, pods):
        meta, spec = job["metadata"], job.get("spec") or {}
        status = dict(job.get("status") or {})
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        st = self.jobstate.setdefault(uid, {"failures": 0, "last_failure": 0.0, "api_backoff": 0.0,
                                            "api_retry_at": 0.0, "finished_at": None})
        fin = condition_true(job, "Complete") or condition_true(job, "Failed")
        if fin is not None:
            for p in pods:
                if JOB_TRACKING_FINALIZER in (p["metadata"].get("finalizers") or []):
                    self._remove_tracking(p)
            self._ttl(job, fin)
            return
        if job["metadata"].get("deletionTimestamp") is None and spec.get("suspend"):
            return
        active = [p for p in pods if not pod_terminal(p) and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in pods if not pod_terminal(p) and p["metadata"].get("deletionTimestamp")]
        tracked = [p for p in pods if JOB_TRACKING_FINALIZER in (p["metadata"].get("finalizers") or [])]
        new_succeeded = [p for p in tracked if phase_of(p) == "Succeeded"]
        new_failed = [p for p in tracked if self._is_pod_failed(p, job)]
        succeeded = int(status.get("succeeded") or 0) + len(new_succeeded)
        failed = int(status.get("failed") or 0) + sum(1 for p in new_failed if self._counts(spec, p))
        for p in new_failed:
            if self._counts(spec, p) and p["metadata"]["uid"] not in st.setdefault("seen_failed", set()):
                st["seen_failed"].add(p["metadata"]["uid"])
                st["failures"] += 1
                st["last_failure"] = time.monotonic()
        if new_succeeded:
            st["failures"] = 0
        if status.get("startTime") is None and not spec.get("suspend"):
            status["startTime"] = now_str()
        finished = None  # (type, reason, message)
        conds = status.get("conditions") or []
        success_met = next((c for c in conds if c.get("type") == "SuccessCriteriaMet" and c.get("status") == "True"), None)
        target = next((c for c in conds if c.get("type") == "FailureTarget" and c.get("status") == "True"), None)
        if success_met:
            finished = ("SuccessCriteriaMet", success_met.get("reason"), success_met.get("message"))
        elif target:
            finished = ("FailureTarget", target.get("reason"), target.get("message"))
        elif spec.get("podFailurePolicy"):
            for p in pods:
                if phase_of(p) == "Failed":
                    action, msg = self.pod_failure_action(spec, p)
                    if action == "FailJob":
                        finished = ("FailureTarget", "PodFailurePolicy", msg)
                        break
        if finished is None:
            if failed > int(spec.get("backoffLimit", 6)) or self._past_backoff_on_failure(spec, pods):
                finished = ("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif self._past_deadline(spec, status):
                finished = ("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline")
        if finished is not None and finished[0] == "FailureTarget":
            for p in active:  # the Job controller deletes active pods gracefully
                m = p["metadata"]
                if self.store.internal_delete(PODS, m["namespace"], m["name"], uid=m["uid"]) is not None:
                    self.events.emit(job, "Normal", "SuccessfulDelete", f"Deleted pod: {m['name']}", "job-controller")
                    terminating.append(p)
            active = []
        elif finished is None and not meta.get("deletionTimestamp"):
            want = max(0, min(int(spec.get("completions", 1) or 1) - succeeded, int(spec.get("parallelism", 1) or 0)))
            blocking = len(terminating) if spec.get("podReplacementPolicy") == "Failed" else 0
            if want - blocking - len(active) > 0 and self._may_create(st):
                pod = self.create_pod(job, st)
                if pod is not None:
                    active.append(pod)
            if succeeded >= int(spec.get("completions", 1) or 1) and not active:
                finished = ("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods")
        # count and release the finished pods (or every pod of a finishing or deleted Job)
        succ_add = fail_add = 0
        for p in tracked:
            considered_failed = self._is_pod_failed(p, job)
            if not (meta.get("deletionTimestamp") or finished or phase_of(p) == "Succeeded" or considered_failed):
                continue
            if phase_of(p) == "Succeeded":
                succ_add += 1
            elif considered_failed or (finished and finished[0] != "SuccessCriteriaMet"):
                if self._counts(spec, p):
                    fail_add += 1
            self._remove_tracking(p)
        status["succeeded"] = int(status.get("succeeded") or 0) + succ_add
        status["failed"] = int(status.get("failed") or 0) + fail_add
        final = None
        conds = list(status.get("conditions") or [])
        t = now_str()
        if finished is not None:
            typ, reason, message = finished
            if typ == "FailureTarget" and not target:
                conds.append(_job_condition("FailureTarget", reason, message, t))
            if typ == "SuccessCriteriaMet" and not success_met:
                conds.append(_job_condition("SuccessCriteriaMet", reason, message, t))
            if not terminating:  # terminal conditions wait for the pods to terminate (1.31)
                final = ("Complete" if typ == "SuccessCriteriaMet" else "Failed", reason, message)
                conds.append(_job_condition(final[0], reason, message, t))
                if final[0] == "Complete":
                    status["completionTime"] = t
        status["conditions"] = conds
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if condition_true(p, "Ready"))
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}
        for k in ("active", "succeeded", "failed", "conditions"):
            if not status.get(k):
                status.pop(k, None)
        if status != (job.get("status") or {}):
            self.store.internal_update(JOBS, ns, name, lambda o: dict(o, status=status), uid=uid)
        if final is not None:
            if final[0] == "Complete":
                self.events.emit(job, "Normal", "Completed", "Job completed", "job-controller")
            else:
                self.events.emit(job, "Warning", final[1], final[2], "job-controller")

    def _past_deadline(self, spec, status):
        ads = spec.get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if ads is None or start is None or spec.get("suspend"):
            return False
        return (cluster_now() - start).total_seconds() >= float(ads)

    def _past_backoff_on_failure(self, spec, pods):
        if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
            return False
        restarts = sum(cs.get("restartCount") or 0 for p in pods if phase_of(p) in ("Pending", "Running")
                       for cs in ((p.get("status") or {}).get("containerStatuses") or [])
                       + ((p.get("status") or {}).get("initContainerStatuses") or []))
        limit = int(spec.get("backoffLimit", 6))
        return restarts > 0 if limit == 0 else restarts >= limit

    def _may_create(self, st):
        now = time.monotonic()
        if now < st["api_retry_at"]:
            return False
        if st["failures"]:  # the pod failure backoff: base * 2^(failures-1), at most 36 * base
            delay = min(self.backoff * (2 ** (st["failures"] - 1)), self.backoff * 36)
            if now - st["last_failure"] < delay:
                return False
        return True

    def create_pod(self, job, st):
        meta, spec = job["metadata"], job.get("spec") or {}
        tmpl = spec.get("template") or {}
        tmeta = tmpl.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": meta["name"] + "-", "namespace": meta["namespace"], "labels": labels,
                            "finalizers": [JOB_TRACKING_FINALIZER],
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
               "spec": dc(tmpl.get("spec") or {})}
        if tmeta.get("annotations"):
            pod["metadata"]["annotations"] = dict(tmeta["annotations"])
        try:
            created = self.store.create(self.registry.lookup(*PODS), meta["namespace"], pod,
                                        manager="kube-controller-manager")
        except ApiError as e:
            log(f"job {meta['namespace']}/{meta['name']}: cannot create pod: {e.message}")
            self.events.emit(job, "Warning", "FailedCreate", f"Error creating: {e.message}", "job-controller")
            st["api_backoff"] = min(60.0, st["api_backoff"] * 2) if st["api_backoff"] else 1.0
            st["api_retry_at"] = time.monotonic() + st["api_backoff"]
            return None
        st["api_backoff"] = 0.0
        self.events.emit(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                         "job-controller")
        return created

    def _ttl(self, job, fin):
        """The TTL-after-finished controller: deletes a finished Job (in the foreground)."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None or job["metadata"].get("deletionTimestamp"):
            return
        finished = parse_time((job.get("status") or {}).get("completionTime") or fin.get("lastTransitionTime"))
        if finished is not None and (cluster_now() - finished).total_seconds() >= ttl:
            m = job["metadata"]
            self.store.internal_delete(JOBS, m["namespace"], m["name"], uid=m["uid"],
                                       opts={"propagationPolicy": "Foreground"})


def _job_condition(typ, reason, message, t):
    return {"type": typ, "status": "True", "reason": reason, "message": message, "lastProbeTime": t,
            "lastTransitionTime": t}


def node_status(node):
    name = node["metadata"]["name"]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    t = now_str()
    return {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status", "lastHeartbeatTime": t,
                            "lastTransitionTime": t}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": "v1.31.0",
                         "containerRuntimeVersion": "containerd://1.7.20", "osImage": "kube-double",
                         "kernelVersion": os.uname().release, "kubeProxyVersion": "", "machineID": "",
                         "systemUUID": "", "bootID": ""}}


# --------------------------------------------------------------------------------------------
# Images: what a container's root file system holds
# --------------------------------------------------------------------------------------------

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DISTROLESS_PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
                     "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
                     "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
DISTROLESS_GROUP = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
DISTROLESS_NSSWITCH = ("passwd:         files\ngroup:          files\nshadow:         files\ngshadow:        files\n\n"
                       "hosts:          files dns\nnetworks:       files\n\nprotocols:      db files\n"
                       "services:       db files\nethers:         db files\nrpc:            db files\n")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_ALNUM = r"[a-z0-9]+"
_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|[-]+){_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
IMAGE_REF = re.compile(rf"^(?:({_DOMAIN})/)?({_COMPONENT}(?:/{_COMPONENT})*)(?::([\w][\w.-]{{0,127}}))?"
                       rf"(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}}))?$")


def parse_image(ref):
    """A docker reference as (normalized name, tag, digest), or None when it does not parse."""
    m = IMAGE_REF.match(ref or "")
    if not m:
        return None
    domain, path, tag, digest = m.groups()
    first = ref.split("/")[0]
    if domain is not None and not ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        path, domain = f"{domain}/{path}", None  # the first component was a path, not a host
        if not re.match(rf"^{_COMPONENT}(?:/{_COMPONENT})*$", path):
            return None
    domain = domain or "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if len(f"{domain}/{path}") > 255:
        return None
    return f"{domain}/{path}", tag, digest


def normalized_image(ref):
    name, tag, digest = parse_image(ref)
    return name + (f":{tag}" if tag else "" if digest else ":latest") + (f"@{digest}" if digest else "")


class Image:
    def __init__(self, ref, entries, user, workdir, env, entrypoint, cmd, passwd, group, size):
        self.ref, self.entries, self.user, self.workdir = ref, entries, user, workdir
        self.env, self.entrypoint, self.cmd = env, entrypoint, cmd
        self.passwd, self.group, self.size = passwd, group, size

    def user_entry(self, key):
        """(name, uid, gid, home) from the image's /etc/passwd, by name or uid."""
        for line in self.passwd.splitlines():
            f = line.split(":")
            if len(f) >= 7 and (f[0] == str(key) or f[2] == str(key)):
                return f[0], int(f[2]), int(f[3]), f[5]
        return None

    def groups_of(self, username):
        out = []
        for line in self.group.splitlines():
            f = line.split(":")
            if len(f) >= 4 and username in f[3].split(","):
                out.append(int(f[2]))
        return out


def shared_libraries(binary):
    """The files the dynamic loader needs for `binary` (ldd), as absolute paths."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


class Images:
    """The images this node can run: `--binary-map` images (the imagepush image's layout, with a
    mapped binary; by the reference's last component or a `--binary-image` glob), `--host-image` images (the host's system directories) and the injected
    sidecar's image. Anything else cannot be pulled."""

    def __init__(self, binary_map, binary_images, host_patterns, sidecar_image, image_files=()):
        self.binary_map = binary_map
        self.binary_images = binary_images  # [(glob on the reference, NAME)]
        # [(glob on the reference, path in the image, host file)]: a `COPY` onto a binary image
        self.image_files = [(p, d, os.path.realpath(src)) for p, d, src in image_files]
        self.host_patterns = host_patterns
        self.sidecar_image = sidecar_image
        self.libs = {name: shared_libraries(path) for name, path in binary_map.items()}
        self.pulled = set()

    def resolve(self, ref):
        parsed = parse_image(ref)
        if parsed is None:
            return None
        base = parsed[0].rsplit("/", 1)[-1]
        if base in self.binary_map:
            return self._binary_image(ref, base)
        name = next((n for p, n in self.binary_images if fnmatch.fnmatchcase(ref, p) and n in self.binary_map), None)
        if name is not None:
            return self._binary_image(ref, name)
        if self.sidecar_image and ref == self.sidecar_image:
            return self._host_image(ref, user="1337:1337",
                                    entrypoint=["/bin/sh", "-c", "exec sleep infinity", "pilot-agent"])
        if any(fnmatch.fnmatchcase(ref, p) for p in self.host_patterns):
            return self._host_image(ref, user="", entrypoint=None)
        return False

    def _binary_image(self, ref, name):
        binary = self.binary_map[name]
        entries = [{"kind": "dir", "path": p, "mode": m, "uid": u, "gid": u}
                   for p, m, u in (("/etc", 0o755, 0), ("/etc/ssl", 0o755, 0), ("/etc/ssl/certs", 0o755, 0),
                                   ("/home", 0o755, 0), ("/home/nonroot", 0o700, 65532), ("/root", 0o700, 0),
                                   ("/tmp", 0o1777, 0), ("/usr", 0o755, 0), ("/usr/local", 0o755, 0),
                                   ("/usr/local/bin", 0o755, 0), ("/var", 0o755, 0))]
        entries += [{"kind": "file", "path": "/etc/passwd", "content": DISTROLESS_PASSWD},
                    {"kind": "file", "path": "/etc/group", "content": DISTROLESS_GROUP},
                    {"kind": "file", "path": "/etc/nsswitch.conf", "content": DISTROLESS_NSSWITCH},
                    {"kind": "file", "path": "/etc/os-release",
                     "content": 'PRETTY_NAME="Distroless"\nNAME="Debian GNU/Linux"\nID="debian"\nVERSION_ID="12"\n'},
                    {"kind": "bind", "path": f"/usr/local/bin/{name}", "source": binary}]
        libs = list(self.libs.get(name) or [])
        for pattern, dest, src in self.image_files:
            if fnmatch.fnmatchcase(ref, pattern):
                entries.append({"kind": "bind", "path": dest, "source": src})
                libs += [lib for lib in shared_libraries(src) if lib not in libs]
        entries += [{"kind": "bind", "path": lib, "source": lib} for lib in libs]
        if os.path.exists(CA_BUNDLE):
            entries.append({"kind": "bind", "path": CA_BUNDLE, "source": CA_BUNDLE})
        size = sum(os.path.getsize(e["source"]) for e in entries if e["kind"] == "bind" and os.path.exists(e["source"]))
        return Image(ref, entries, "65532:65532", "/home/nonroot", {"PATH": DEFAULT_PATH, "SSL_CERT_FILE": CA_BUNDLE},
                     [name], ["--help"], DISTROLESS_PASSWD, DISTROLESS_GROUP, size)

    def _host_image(self, ref, user, entrypoint):
        entries = []
        for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc"):
            host = "/" + d
            if os.path.islink(host):
                entries.append({"kind": "symlink", "path": host, "target": os.readlink(host)})
            elif os.path.isdir(host):
                entries.append({"kind": "overlay", "path": host, "lower": host})
        entries += [{"kind": "dir", "path": p, "mode": m}
                    for p, m in (("/root", 0o700), ("/home", 0o755), ("/tmp", 0o1777), ("/run", 0o755),
                                 ("/var", 0o755), ("/var/tmp", 0o1777), ("/mnt", 0o755), ("/opt", 0o755),
                                 ("/srv", 0o755))]

        def read(p):
            try:
                with open(p) as f:
                    return f.read()
            except OSError:
                return ""
        return Image(ref, entries, user, "/", {"PATH": DEFAULT_PATH}, entrypoint, None, read("/etc/passwd"),
                     read("/etc/group"), 0)


# --------------------------------------------------------------------------------------------
# Volumes, as the kubelet's volume plugins lay them out
# --------------------------------------------------------------------------------------------

class PodWait(Exception):
    """The container cannot start yet: (waiting reason, message, event reason)."""

    def __init__(self, reason, message, event_reason):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.event_reason = event_reason


def set_volume_ownership(root, fs_group, read_only):
    """SetVolumeOwnership: everything in the volume group-owned by fsGroup (symlinks included), files
    gain group read (and write unless the volume is read-only), directories also group execute and
    setgid."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            _change_permission(os.path.join(dirpath, n), fs_group, read_only)
    _change_permission(root, fs_group, read_only)


def _change_permission(path, fs_group, read_only):
    os.lchown(path, -1, fs_group)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    mask = 0o440 if read_only else 0o660
    if stat.S_ISDIR(st.st_mode):
        mask |= stat.S_ISGID | 0o110
    os.chmod(path, stat.S_IMODE(st.st_mode) | mask)


def atomic_write(target, payload, fs_group):
    """The atomic writer's first write into a fresh volume directory: the files in a timestamped
    directory, `..data` pointing at it, and a `name -> ..data/name` link per top-level entry.
    Ownership is changed (setPerms) before the links exist, as the volume plugins do."""
    ts = cluster_now().strftime("..%Y_%m_%d_%H_%M_%S.") + str(random.randrange(10 ** 9, 10 ** 10))
    tsdir = os.path.join(target, ts)
    os.mkdir(tsdir, 0o700)
    os.chmod(tsdir, 0o755)
    for rel, (data, mode) in payload.items():
        full = os.path.join(tsdir, rel)
        os.makedirs(os.path.dirname(full), 0o755, exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, mode)
    if fs_group is not None:
        set_volume_ownership(target, fs_group, True)
    os.symlink(ts, os.path.join(target, "..data_tmp"))
    os.rename(os.path.join(target, "..data_tmp"), os.path.join(target, "..data"))
    for top in sorted({rel.split("/")[0] for rel in payload}):
        os.symlink(os.path.join("..data", top), os.path.join(target, top))


def _b64(v):
    try:
        return base64.b64decode(v)
    except (ValueError, TypeError):
        return b""


MISSING_KEY = {"secret": "references non-existent secret key: ",
               "configmap": "configmap references non-existent config key: "}


def key_payload(data, items, default_mode, optional, missing_msg):
    """MakePayload: every key, or the `items` (path, mode), with defaultMode for the rest."""
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    out = {}
    for it in items:
        if it.get("key") not in data:
            if optional:
                continue
            raise PodWait("ContainerCreating", missing_msg + str(it.get("key")), "FailedMount")
        out[it.get("path") or it["key"]] = (data[it["key"]], it["mode"] if it.get("mode") is not None else default_mode)
    return out


class PodVolumes:
    """The pod's volumes on this node, under pods/{ns}/{pod}/volumes/{name}."""

    def __init__(self, kubelet, pod, poddir):
        self.kubelet, self.pod, self.poddir = kubelet, pod, poddir
        self.dirs = {}  # name -> (host path, plugin read-only)

    def setup(self):
        spec = self.pod.get("spec") or {}
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        for vol in spec.get("volumes") or []:
            if vol.get("name") not in self.dirs:
                self.dirs[vol["name"]] = self._setup_one(vol, fs_group)

    def _fail(self, vname, msg):
        return PodWait("ContainerCreating", f'MountVolume.SetUp failed for volume "{vname}" : {msg}', "FailedMount")

    def _fresh(self, vname, mode):
        d = os.path.join(self.poddir, "volumes", vname)
        if os.path.lexists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        os.chown(d, 0, 0)
        os.chmod(d, mode)
        return d

    def _source_data(self, kind, name, optional, vname):
        """The decoded data of the Secret or ConfigMap (`kind`) a volume projects ({} when it is
        optional and missing)."""
        obj = self.kubelet.store.get(SECRETS if kind == "secret" else CONFIGMAPS, self.pod["metadata"]["namespace"],
                                     name)
        if obj is None:
            if optional:
                return {}
            raise self._fail(vname, f'{kind} "{name}" not found')
        if kind == "secret":
            return {k: _b64(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: _b64(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _payload(self, kind, src, name_field, mode, vname):
        data = self._source_data(kind, src.get(name_field), src.get("optional"), vname)
        return key_payload(data, src.get("items"), mode, src.get("optional"), MISSING_KEY[kind])

    def _setup_one(self, vol, fs_group):
        vname = vol.get("name")
        ns = self.pod["metadata"]["namespace"]
        try:
            if "persistentVolumeClaim" in vol:
                src = vol["persistentVolumeClaim"]
                claim = src.get("claimName")
                if self.kubelet.strict_pvc and self.kubelet.store.get(PVCS, ns, claim) is None:
                    raise PodWait("ContainerCreating", f"Unable to attach or mount volumes: unmounted volumes=[{vname}], "
                                  f"unattached volumes=[], failed to process volumes=[{vname}]: error processing PVC "
                                  f"{ns}/{claim}: failed to fetch PVC from API server: persistentvolumeclaims "
                                  f'"{claim}" not found', "FailedMount")
                d = os.path.join(self.kubelet.state_dir, "pvcs", ns, claim)
                os.makedirs(d, exist_ok=True)
                return d, bool(src.get("readOnly"))
            if "hostPath" in vol:
                return self._host_path(vol["hostPath"], vname), False
            if "secret" in vol or "configMap" in vol:
                kind, src = ("secret", vol["secret"]) if "secret" in vol else ("configmap", vol["configMap"])
                payload = self._payload(kind, src, "secretName" if kind == "secret" else "name",
                                        src.get("defaultMode", 0o644), vname)
                d = self._fresh(vname, 0o1777 if kind == "secret" else 0o777)  # a tmpfs root / an emptyDir
                atomic_write(d, payload, fs_group)
                return d, True
            if "projected" in vol:
                src = vol["projected"]
                mode = src.get("defaultMode", 0o644)
                payload, errors = {}, []
                for s in src.get("sources") or []:
                    try:
                        if "secret" in s:
                            payload.update(self._payload("secret", s["secret"], "name", mode, vname))
                        elif "configMap" in s:
                            payload.update(self._payload("configmap", s["configMap"], "name", mode, vname))
                        elif "downwardAPI" in s:
                            payload.update(self._downward(s["downwardAPI"].get("items"), mode))
                        elif "serviceAccountToken" in s:
                            payload[s["serviceAccountToken"].get("path") or "token"] = (
                                self._service_account_token(s["serviceAccountToken"], vname), mode)
                    except PodWait as w:
                        errors.append(w.message.split(" : ", 1)[-1])
                if errors:
                    raise self._fail(vname, errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
                d = self._fresh(vname, 0o1777)
                atomic_write(d, payload, fs_group)
                return d, True
            if "downwardAPI" in vol:
                src = vol["downwardAPI"]
                d = self._fresh(vname, 0o1777)
                atomic_write(d, self._downward(src.get("items"), src.get("defaultMode", 0o644)), fs_group)
                return d, True
            # emptyDir and anything else: an empty, world-writable directory
            d = self._fresh(vname, 0o777)
            if fs_group is not None:
                set_volume_ownership(d, fs_group, False)
            return d, False
        except PodWait as w:
            if w.message.startswith("MountVolume.") or w.event_reason != "FailedMount":
                raise
            raise self._fail(vname, w.message)
        except OSError as e:
            raise self._fail(vname, str(e))

    def _service_account_token(self, src, vname):
        """What kubelet gets from the TokenRequest API for the pod's ServiceAccount: a JWT bound
        to the pod, for the source's audience (the API server's by default). Signed with the
        double's own HMAC key, not an RSA key, so only its claims mean anything."""
        meta, ns = self.pod["metadata"], self.pod["metadata"]["namespace"]
        sa_name, sa = self.kubelet.store.service_account(ns, self.pod["spec"])
        if sa is None:
            raise self._fail(vname, f'failed to fetch token: serviceaccounts "{sa_name}" not found')
        now = int(time.time())
        claims = {"aud": [src.get("audience") or API_AUDIENCE], "iss": API_AUDIENCE, "iat": now, "nbf": now,
                  "exp": now + int(src.get("expirationSeconds") or 3600), "jti": str(uuid.uuid4()),
                  "sub": f"system:serviceaccount:{ns}:{sa_name}",
                  "kubernetes.io": {"namespace": ns,
                                    "pod": {"name": meta["name"], "uid": meta["uid"]},
                                    "serviceaccount": {"name": sa_name,
                                                       "uid": sa.get("metadata", {}).get("uid", "")}}}
        return sign_jwt(claims, TOKEN_KEY)

    def _downward(self, items, mode):
        out = {}
        for it in items or []:
            fp = (it.get("fieldRef") or {}).get("fieldPath")
            if fp in ("metadata.labels", "metadata.annotations"):
                vals = (self.pod["metadata"].get(fp.split(".")[1]) or {})
                text = "\n".join(f'{k}="{v}"' for k, v in sorted(vals.items()))
            else:
                text = self.kubelet.field_ref(self.pod, fp) or ""
            out[it.get("path")] = (text.encode(), it["mode"] if it.get("mode") is not None else mode)
        return out

    def _host_path(self, hp, vname):
        path, typ = hp.get("path"), hp.get("type") or ""
        checks = {"Directory": (os.path.isdir, "is not a directory"), "File": (os.path.isfile, "is not a file"),
                  "Socket": (lambda p: stat.S_ISSOCK(os.stat(p).st_mode) if os.path.exists(p) else False,
                             "is not a socket file"),
                  "CharDevice": (lambda p: stat.S_ISCHR(os.stat(p).st_mode) if os.path.exists(p) else False,
                                 "is not a character device"),
                  "BlockDevice": (lambda p: stat.S_ISBLK(os.stat(p).st_mode) if os.path.exists(p) else False,
                                  "is not a block device")}
        if typ == "DirectoryOrCreate":
            os.makedirs(path, 0o755, exist_ok=True)
        elif typ == "FileOrCreate" and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        elif typ in checks and not checks[typ][0](path):
            raise self._fail(vname, f"hostPath type check failed: {path} {checks[typ][1]}")
        return path

    def mount_source(self, vm, cname):
        """The host path for a volumeMount (subPath resolved and created inside the volume)."""
        d, plugin_ro = self.dirs[vm["name"]]
        sub = vm.get("subPath")
        if sub:
            base = os.path.realpath(d)
            full = os.path.join(d, sub)
            if not os.path.lexists(full):
                os.makedirs(full, stat.S_IMODE(os.stat(d).st_mode), exist_ok=True)
            real = os.path.realpath(full)
            if real != base and not real.startswith(base + "/"):
                raise PodWait("CreateContainerConfigError", f'failed to prepare subPath for volumeMount "{vm["name"]}" '
                              f'of container "{cname}"', "Failed")
            d = real
        return d, bool(vm.get("readOnly")) or plugin_ro


# --------------------------------------------------------------------------------------------
# The container runtime: one process tree per container, PID 1 of its own PID namespace
# --------------------------------------------------------------------------------------------

# A helper that outlives a SIGKILLed double for just long enough to kill what it started: it reads
# "+p PID" (a container's PID 1) and "+g PGID" (its shim's group) lines and, at EOF, kills them.
REAPER_SRC = r"""
import os, signal, sys
live = set()
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 2 and parts[0] in ("+p", "+g"):
        live.add((parts[0], int(parts[1])))
    elif len(parts) == 2 and parts[0] in ("-p", "-g"):
        live.discard(("+" + parts[0][1:], int(parts[1])))
for kind, n in live:
    try:
        (os.kill if kind == "+p" else os.killpg)(n, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    def __init__(self):
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-c", REAPER_SRC], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, text=True)

    def tell(self, line):
        with self.lock:
            try:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass


class ContainerProcess:
    def __init__(self, shim, pid, cid, argv):
        self.shim, self.pid, self.cid, self.argv = shim, pid, cid, argv
        self.started = now_str()
        self.exit_code = None

    def signal(self, sig):
        """Signals PID 1 of the container's PID namespace (the kernel drops what it does not handle,
        except SIGKILL)."""
        try:
            os.kill(self.pid, sig)
            return True
        except OSError:
            return False


class Runtime:
    def __init__(self, state_dir):
        # Only the container init section of this file, compiled on its own (with its line numbers):
        # the whole file would cost a third of a second per container in imports and compiling.
        self.init_argv = [sys.executable, "-I", "-S", "-c", (
            "import sys\n"
            f"f = {os.path.abspath(__file__)!r}\n"
            "s = open(f).read()\n"
            "a, b = s.index('\\n# >>> container init'), s.index('\\n# <<< container init')\n"
            "g = {'__name__': 'container_init'}\n"
            "exec(compile('\\n' * s.count('\\n', 0, a) + s[a:b], f, 'exec'), g)\n"
            "g['container_init_main'](sys.argv[2], int(sys.argv[4]))\n")]
        self.reaper = Reaper()
        self.lock = threading.Lock()
        self.live = set()
        self.stopping = False

    def start(self, spec, spec_path, log_path):
        """Starts a container; returns a ContainerProcess, or raises ContainerError with runc's
        message when it could not be started."""
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=1)
        r, w = os.pipe()
        with open(log_path, "ab") as logf:
            with self.lock:
                if self.stopping:
                    os.close(r)
                    os.close(w)
                    raise ContainerError("the node is shutting down")
                shim = subprocess.Popen(self.init_argv + ["--container-init", spec_path, "--sync-fd", str(w)],
                                        stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                        pass_fds=(w,), start_new_session=True)
                self.reaper.tell(f"+g {shim.pid}")
        os.close(w)
        with os.fdopen(r, "rb") as rf:
            lines = rf.read().decode("utf-8", "replace").splitlines()
        pid = next((int(x.split()[1]) for x in lines if x.startswith("pid ")), None)
        error = next((x[6:] for x in lines if x.startswith("error ")), None)
        if pid is not None:
            with self.lock:
                self.live.add(pid)
            self.reaper.tell(f"+p {pid}")
        if error is not None or pid is None:
            shim.wait()
            self.forget(shim, pid)
            raise ContainerError(error or "the container init exited without a word")
        return ContainerProcess(shim, pid, uuid.uuid4().hex + uuid.uuid4().hex, spec["process"]["argv"])

    def wait(self, proc):
        rc = proc.shim.wait()
        self.forget(proc.shim, proc.pid)
        proc.exit_code = rc if rc >= 0 else 128 - rc
        return proc.exit_code

    def forget(self, shim, pid):
        with self.lock:
            self.live.discard(pid)
        if pid is not None:
            self.reaper.tell(f"-p {pid}")
        self.reaper.tell(f"-g {shim.pid}")

    def kill_all(self):
        with self.lock:
            self.stopping = True
            pids = list(self.live)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def check_namespaces():
    """Fails loudly when this machine cannot give containers their own namespaces."""
    probe = subprocess.run([sys.executable, "-c", (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"if libc.unshare({CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC}) != 0:\n"
        "    sys.exit('unshare: ' + os.strerror(ctypes.get_errno()))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if os.getpid() == 1 else 3)\n"
        "sys.exit(os.waitpid(pid, 0)[1] >> 8)\n")], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(f"kube-double: containers need mount and PID namespaces (run as root on Linux): "
                         f"{(probe.stderr or '').strip() or probe.returncode}")


# --------------------------------------------------------------------------------------------
# The kubelet: one worker per pod bound to a Node, running every container of the pod
# --------------------------------------------------------------------------------------------

MAX_TERMINATION_MESSAGE = 4096  # kubelet: MaxContainerTerminationMessageLength (the file's tail)
MAX_POD_TERMINATION_MESSAGES = 12 * 1024  # MaxPodTerminationMessageLogLength, split over containers
MAX_LOG_MESSAGE_BYTES, MAX_LOG_MESSAGE_LINES = 2048, 80  # FallbackToLogsOnError
MIN_GRACE_SECONDS = 2  # kubelet: minimumGracePeriodInSeconds
IMAGE_BACKOFF, MAX_BACKOFF = 10.0, 300.0  # image pull and crash-loop back-off


def expand_vars(s, env):
    if not isinstance(s, str):
        return s

    def rep(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", rep, s)


def tail_bytes(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read()
    except OSError:
        return b""


def mount_depth(path):
    return len([p for p in os.path.normpath(path).split("/") if p])


def get_phase(spec, statuses, init_statuses, terminal):
    """kubelet's getPhase (regular init containers only)."""
    by_name = {s["name"]: s for s in statuses}
    init_by_name = {s["name"]: s for s in init_statuses}
    pending_init = failed_init = 0
    for c in spec.get("initContainers") or []:
        st = (init_by_name.get(c["name"]) or {}).get("state") or {}
        if "terminated" in st:
            if st["terminated"].get("exitCode"):
                failed_init += 1
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    for c in spec.get("containers") or []:
        cs = by_name.get(c["name"])
        st = (cs or {}).get("state") or {}
        if cs is None or not st:
            unknown += 1
        elif "running" in st:
            running += 1
        elif "terminated" in st:
            stopped += 1
            if st["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif (cs.get("lastState") or {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    rp = spec.get("restartPolicy")
    if failed_init and rp == "Never":
        return "Failed"
    if (pending_init and not (running or stopped)) or waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if rp == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if rp == "Never" else "Running"
    return "Pending"


class ContainerRecord:
    """The kubelet's view of one container of a pod."""

    def __init__(self, spec, init, pod_has_inits):
        self.spec, self.name, self.init = spec, spec["name"], init
        self.state = {"waiting": {"reason": "PodInitializing" if pod_has_inits and not init else "ContainerCreating"}}
        self.last_state = {}
        self.restart_count = 0
        self.proc = None
        self.cid = None
        self.image = spec.get("image") or ""
        self.image_id = ""
        self.backoff = 0.0
        self.backoff_until = 0.0
        self.reported = None
        self.log_offset = 0
        self.prev_log_offset = 0
        self.term_path = None

    def api_status(self):
        s = {"name": self.name, "state": self.state, "lastState": self.last_state,
             "ready": "running" in self.state and not self.init, "restartCount": self.restart_count,
             "image": self.image, "imageID": self.image_id, "started": "running" in self.state}
        if self.cid:
            s["containerID"] = "containerd://" + self.cid
        return s


class PodWorker:
    def __init__(self, kubelet, pod):
        self.k = kubelet
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        spec = pod.get("spec") or {}
        self.node = spec.get("nodeName")
        self.poddir = os.path.join(kubelet.state_dir, "pods", self.ns, self.name)
        self.cv = threading.Condition()
        has_inits = bool(spec.get("initContainers"))
        self.inits = [ContainerRecord(c, True, has_inits) for c in spec.get("initContainers") or []]
        self.containers = [ContainerRecord(c, False, has_inits) for c in spec.get("containers") or []]
        self.volumes = None
        self.sandbox = False
        self.terminal = False
        self.start_time = now_str()
        self.mount_reported = None
        self.threads = []

    def records(self):
        return self.inits + self.containers

    def notify(self):
        with self.cv:
            self.cv.notify_all()

    def event(self, pod, typ, reason, message, rec=None):
        fp = None
        if rec is not None:
            fp = f"spec.{'initContainers' if rec.init else 'containers'}{{{rec.name}}}"
        self.k.events.emit(pod, typ, reason, message, "kubelet", field_path=fp, host=self.node)

    def run(self):
        try:
            self._run()
        except Exception:
            log(f"pod {self.ns}/{self.name}: kubelet worker failed: " + traceback.format_exc())
        finally:
            self.k.done(self.uid)

    def _run(self):
        os.makedirs(self.poddir, exist_ok=True)
        while True:
            pod = self.k.store.get(PODS, self.ns, self.name)
            if pod is None or pod["metadata"]["uid"] != self.uid:
                self.stop_all(MIN_GRACE_SECONDS)
                return
            if self.k.runtime.stopping:
                return
            if pod["metadata"].get("deletionTimestamp"):
                self.terminate(pod)
                return
            if not self.terminal:
                self.sync(pod)
            self.publish(pod)
            with self.cv:
                self.cv.wait(0.5)

    # -- one pass of the pod worker --
    def sync(self, pod):
        if self.volumes is None:
            vols = PodVolumes(self.k, pod, self.poddir)
            try:
                vols.setup()
            except PodWait as w:
                if self.mount_reported != w.message:
                    self.mount_reported = w.message
                    self.event(pod, "Warning", w.event_reason, w.message)
                return
            self.volumes = vols
            self.write_sandbox_files(pod)
            self.sandbox = True
        rp = (pod.get("spec") or {}).get("restartPolicy", "Always")
        for rec in self.inits:  # init containers, in order, each to success
            if self._exit_code(rec) == 0:
                continue
            if self._may_start(pod, rec, "Never" if rp == "Never" else "OnFailure"):
                self.try_start(pod, rec)
            return
        for rec in self.containers:
            if self._may_start(pod, rec, rp):
                self.try_start(pod, rec)

    @staticmethod
    def _exit_code(rec):
        return (rec.state.get("terminated") or {}).get("exitCode")

    def _may_start(self, pod, rec, rp):
        """Whether to start the container now: not yet started, or (after it ended) a restart
        that the restart policy asks for and the back-off allows."""
        st = rec.state
        if "running" in st:
            return False
        if "terminated" not in st and st.get("waiting", {}).get("reason") != "CrashLoopBackOff":
            return True
        code = (st.get("terminated") or rec.last_state.get("terminated") or {}).get("exitCode")
        if rp == "Never" or (rp == "OnFailure" and code == 0):
            return False
        return self._restart_due(pod, rec)

    def _restart_due(self, pod, rec):
        """Restart now, or wait in CrashLoopBackOff (10 s doubling to 5 min)."""
        now = time.monotonic()
        if rec.backoff_until == 0.0:
            rec.backoff = min(IMAGE_BACKOFF * 2 ** (rec.restart_count - 1), MAX_BACKOFF) if rec.restart_count else 0.0
            rec.backoff_until = now + rec.backoff
        if now < rec.backoff_until:
            term = rec.state.get("terminated") or (rec.last_state or {}).get("terminated")
            if "terminated" in rec.state:
                rec.last_state = {"terminated": rec.state["terminated"]}
            msg = (f"back-off {int(rec.backoff)}s restarting failed container={rec.name} "
                   f"pod={self.name}_{self.ns}({self.uid})")
            rec.state = {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
            if term is not None and rec.reported != ("CrashLoopBackOff", rec.backoff_until):
                rec.reported = ("CrashLoopBackOff", rec.backoff_until)
                self.event(pod, "Warning", "BackOff", f"Back-off restarting failed container {rec.name} in pod "
                                                      f"{self.name}_{self.ns}({self.uid})", rec)
            return False
        if "terminated" in rec.state:
            rec.last_state = {"terminated": rec.state["terminated"]}
        rec.restart_count += 1
        rec.backoff_until = 0.0
        return True

    def _wait(self, pod, rec, reason, message, events):
        changed = rec.reported != (reason, message)
        rec.state = {"waiting": {"reason": reason, "message": message}}
        if changed:
            rec.reported = (reason, message)
            for typ, ev_reason, ev_msg in events:
                self.event(pod, typ, ev_reason, ev_msg, rec)

    def try_start(self, pod, rec):
        c = rec.spec
        ref = c.get("image") or ""
        img = self.k.images.resolve(ref)
        if img is None:
            msg = f'Failed to apply default image tag "{ref}": couldn\'t parse image name "{ref}": invalid reference format'
            self._wait(pod, rec, "InvalidImageName", msg, [("Warning", "InspectFailed", msg),
                                                          ("Warning", "Failed", "Error: InvalidImageName")])
            return
        rec.image = normalized_image(ref)
        policy = c.get("imagePullPolicy") or "IfNotPresent"
        key = (self.node, rec.image)
        now = time.monotonic()
        if img is False:
            if policy == "Never":
                msg = f'Container image "{ref}" is not present with pull policy of Never'
                self._wait(pod, rec, "ErrImageNeverPull", msg, [("Warning", "ErrImageNeverPull", msg),
                                                               ("Warning", "Failed", "Error: ErrImageNeverPull")])
                return
            if now < rec.backoff_until:
                msg = f'Back-off pulling image "{ref}"'
                self._wait(pod, rec, "ImagePullBackOff", msg, [("Normal", "BackOff", msg),
                                                              ("Warning", "Failed", "Error: ImagePullBackOff")])
                return
            err = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{rec.image}": failed to '
                   f'resolve reference "{rec.image}": {rec.image}: not found')
            rec.reported = None
            self._wait(pod, rec, "ErrImagePull", err, [("Normal", "Pulling", f'Pulling image "{ref}"'),
                                                      ("Warning", "Failed", f'Failed to pull image "{ref}": {err}'),
                                                      ("Warning", "Failed", "Error: ErrImagePull")])
            rec.backoff = min(rec.backoff * 2, MAX_BACKOFF) if rec.backoff else IMAGE_BACKOFF
            rec.backoff_until = now + rec.backoff
            return
        rec.image_id = rec.image.split("@")[0].rsplit(":", 1)[0] + "@sha256:" + hashlib.sha256(
            json.dumps(img.entries, sort_keys=True).encode()).hexdigest()
        if rec.reported is None and (policy == "Always" or key not in self.k.images.pulled):
            self.event(pod, "Normal", "Pulling", f'Pulling image "{ref}"', rec)
            self.event(pod, "Normal", "Pulled", f'Successfully pulled image "{ref}" in 12ms (12ms including waiting). '
                                                f'Image size: {img.size} bytes.', rec)
            self.k.images.pulled.add(key)
        elif rec.reported is None:
            self.event(pod, "Normal", "Pulled", f'Container image "{ref}" already present on machine', rec)
        try:
            spec = self.container_spec(pod, rec, img)
        except PodWait as w:
            self._wait(pod, rec, w.reason, w.message, [("Warning", "Failed", f"Error: {w.message}")])
            return
        cdir = os.path.join(self.poddir, "containers", rec.name)
        log_path = os.path.join(cdir, "container.log")
        rec.prev_log_offset = rec.log_offset
        rec.log_offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        started = now_str()
        try:
            proc = self.k.runtime.start(spec, os.path.join(cdir, "spec.json"), log_path)
        except ContainerError as e:
            msg = (f"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc "
                   f"create failed: unable to start container process: {e}: unknown")
            rec.cid = uuid.uuid4().hex + uuid.uuid4().hex
            rec.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": msg,
                                        "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now_str(),
                                        "containerID": "containerd://" + rec.cid}}
            rec.reported = None
            self.event(pod, "Normal", "Created", f"Created container {rec.name}", rec)
            self.event(pod, "Warning", "Failed", f"Error: {msg}", rec)
            return
        rec.proc, rec.cid, rec.reported = proc, proc.cid, None
        rec.state = {"running": {"startedAt": started}}
        log(f"pod {self.ns}/{self.name} container {rec.name} started, PID 1 is host pid {proc.pid}: {proc.argv}")
        self.event(pod, "Normal", "Created", f"Created container {rec.name}", rec)
        self.event(pod, "Normal", "Started", f"Started container {rec.name}", rec)
        t = threading.Thread(target=self._watch, args=(pod, rec, proc, started), daemon=True,
                             name=f"ctr-{self.name}-{rec.name}")
        t.start()
        self.threads.append(t)

    def _watch(self, pod, rec, proc, started):
        code = self.k.runtime.wait(proc)
        finished = now_str()
        policy = rec.spec.get("terminationMessagePolicy") or "File"
        msg = tail_bytes(rec.term_path, MAX_TERMINATION_MESSAGE) if rec.term_path else b""
        if not msg and code != 0 and policy == "FallbackToLogsOnError":
            log_path = os.path.join(self.poddir, "containers", rec.name, "container.log")
            try:
                with open(log_path, "rb") as f:
                    f.seek(rec.log_offset)
                    data = f.read()
            except OSError:
                data = b""
            msg = b"".join(data.splitlines(keepends=True)[-MAX_LOG_MESSAGE_LINES:])[-MAX_LOG_MESSAGE_BYTES:]
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
                "finishedAt": finished, "containerID": "containerd://" + proc.cid}
        if msg:
            term["message"] = msg.decode("utf-8", "replace")
        log(f"pod {self.ns}/{self.name} container {rec.name} exited {code}")
        with self.cv:
            rec.proc = None
            rec.state = {"terminated": term}
            self.cv.notify_all()

    # -- the container's configuration --
    def container_spec(self, pod, rec, img):
        c = rec.spec
        pspec = pod.get("spec") or {}
        psc, csc = pspec.get("securityContext") or {}, c.get("securityContext") or {}
        eff = {k: csc[k] if csc.get(k) is not None else psc.get(k) for k in ("runAsUser", "runAsGroup", "runAsNonRoot")}
        user, _, group = (img.user or "").partition(":")
        image_uid = int(user) if user.isdigit() else 0 if user == "" else None
        pod_desc = f"{self.name}_{self.ns}({self.uid})"
        if eff["runAsNonRoot"]:
            if eff["runAsUser"] is not None:
                if eff["runAsUser"] == 0:
                    raise PodWait("CreateContainerConfigError", f"container's runAsUser breaks non-root policy (pod: "
                                  f'"{pod_desc}", container: {rec.name})', "Failed")
            elif image_uid == 0:
                raise PodWait("CreateContainerConfigError", f'container has runAsNonRoot and image will run as root '
                              f'(pod: "{pod_desc}", container: {rec.name})', "Failed")
            elif image_uid is None:
                raise PodWait("CreateContainerConfigError", f"container has runAsNonRoot and image has non-numeric user "
                              f'({user}), cannot verify user is non-root (pod: "{pod_desc}", container: {rec.name})',
                              "Failed")
        if eff["runAsUser"] is not None:
            uid = eff["runAsUser"]
            entry = img.user_entry(uid)
            gid = entry[2] if entry else 0
        elif image_uid is not None:
            uid, entry = image_uid, img.user_entry(image_uid)
            gid = int(group) if group.isdigit() else entry[2] if entry else 0
        else:
            entry = img.user_entry(user)
            if entry is None:
                raise PodWait("CreateContainerError", f"failed to create containerd container: unable to find user "
                              f"{user}: no matching entries in passwd file", "Failed")
            uid, gid = entry[1], int(group) if group.isdigit() else entry[2]
        if eff["runAsGroup"] is not None:
            gid = eff["runAsGroup"]
        groups = [gid] + (img.groups_of(entry[0]) if entry else [])
        if psc.get("fsGroup") is not None:
            groups.append(psc["fsGroup"])
        groups += list(psc.get("supplementalGroups") or [])
        groups = list(dict.fromkeys(groups))
        env = self.k.container_env(pod, c)
        penv = dict(img.env)
        penv["HOSTNAME"] = self.hostname(pod)
        penv.update(self.k.pod_env)
        penv.update(env)
        penv.setdefault("HOME", entry[3] if entry else "/")
        if c.get("command"):
            argv = [expand_vars(a, env) for a in c["command"] + (c.get("args") or [])]
        else:
            argv = list(img.entrypoint or []) + [expand_vars(a, env) for a in (c.get("args") or img.cmd or [])]
        if not argv:
            raise PodWait("CreateContainerError", "failed to generate container spec: no command specified", "Failed")
        caps = set(DEFAULT_CAPS)
        capspec = csc.get("capabilities") or {}
        norm = lambda names: {n.upper().removeprefix("CAP_") for n in names or []}  # noqa: E731
        add, drop = norm(capspec.get("add")), norm(capspec.get("drop"))
        if csc.get("privileged") or "ALL" in add:
            caps = set(CAPS)
        if "ALL" in drop:
            caps = set()
        caps = (caps | (add - {"ALL"})) - (drop - {"ALL"})
        ro_root = bool(csc.get("readOnlyRootFilesystem"))
        cdir = os.path.join(self.poddir, "containers", rec.name)
        for d in ("rootfs", "scratch"):
            os.makedirs(os.path.join(cdir, d), exist_ok=True)
        mounts = []
        for vm in c.get("volumeMounts") or []:
            src, ro = self.volumes.mount_source(vm, rec.name)
            target = vm["mountPath"] if vm["mountPath"].startswith("/") else "/" + vm["mountPath"]
            mounts.append({"source": src, "target": os.path.normpath(target), "readOnly": ro})
        taken = {m["target"] for m in mounts}
        if "/etc/hosts" not in taken:
            mounts.append({"source": os.path.join(self.poddir, "etc-hosts"), "target": "/etc/hosts", "readOnly": False})
        tmp = c.get("terminationMessagePath")
        rec.term_path = None
        if tmp:
            rec.term_path = os.path.join(cdir, "termination-log")
            with open(rec.term_path, "wb"):
                pass
            os.chmod(rec.term_path, 0o666)
            mounts.append({"source": rec.term_path, "target": tmp, "readOnly": False})
        for f in ("hostname", "resolv.conf"):
            if f"/etc/{f}" not in taken:
                mounts.append({"source": os.path.join(self.poddir, f), "target": f"/etc/{f}", "readOnly": ro_root})
        mounts.sort(key=lambda m: mount_depth(m["target"]))
        return {"rootfs": os.path.join(cdir, "rootfs"), "scratch": os.path.join(cdir, "scratch"),
                "hostname": self.hostname(pod), "image": {"entries": img.entries}, "mounts": mounts,
                "readOnlyRoot": ro_root,
                "process": {"argv": argv, "env": penv, "cwd": c.get("workingDir") or img.workdir or "/", "uid": uid,
                            "gid": gid, "groups": groups,
                            "noNewPrivs": csc.get("allowPrivilegeEscalation") is False and not csc.get("privileged"),
                            "capabilities": sorted(CAPS[n] for n in caps if n in CAPS)}}

    def hostname(self, pod):
        h = ((pod.get("spec") or {}).get("hostname") or self.name)[:63].rstrip("-.")
        return h

    def write_sandbox_files(self, pod):
        """The sandbox's /etc/hostname and /etc/resolv.conf (containerd) and the kubelet's /etc/hosts."""
        h = self.hostname(pod)
        with open(os.path.join(self.poddir, "etc-hosts"), "w") as f:
            f.write("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost "
                    "ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n"
                    f"fe00::2\tip6-allrouters\n127.0.0.1\t{h}\n")
        with open(os.path.join(self.poddir, "hostname"), "w") as f:
            f.write(h + "\n")
        try:
            with open("/etc/resolv.conf") as f:
                resolv = f.read()
        except OSError:
            resolv = ""
        with open(os.path.join(self.poddir, "resolv.conf"), "w") as f:
            f.write(resolv)
        for n in ("etc-hosts", "hostname", "resolv.conf"):
            os.chmod(os.path.join(self.poddir, n), 0o644)

    # -- termination --
    def stop_all(self, grace, pod=None):
        """killContainer for every running container, in parallel: SIGTERM to PID 1, SIGKILL after
        the grace period."""
        running = [r for r in self.records() if r.proc is not None]
        for r in running:
            if pod is not None:
                self.event(pod, "Normal", "Killing", f"Stopping container {r.name}", r)
            r.proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        with self.cv:
            while any(r.proc is not None for r in running) and time.monotonic() < deadline:
                self.cv.wait(max(0.01, min(0.2, deadline - time.monotonic())))
        for r in running:
            p = r.proc
            if p is not None:
                p.signal(signal.SIGKILL)
        for t in self.threads:
            t.join(10)

    def terminate(self, pod):
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        self.stop_all(max(int(grace), MIN_GRACE_SECONDS), pod)
        self.terminal = True
        for r in self.records():  # TerminatePod: a container that never ran is reported failed
            if "terminated" not in r.state:
                r.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                          "message": "The container could not be located when the pod was terminated"}}
        pod = self.k.store.get(PODS, self.ns, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid:
            return
        self.publish(pod)
        self.k.store.internal_delete(PODS, self.ns, self.name, uid=self.uid, opts={"gracePeriodSeconds": 0})

    # -- status --
    def publish(self, pod):
        spec = pod.get("spec") or {}
        old = pod.get("status") or {}
        statuses = sorted((r.api_status() for r in self.containers), key=lambda s: s["name"])
        init_statuses = [r.api_status() for r in self.inits]
        budget = MAX_POD_TERMINATION_MESSAGES // max(1, len(self.records()))
        for s in statuses + init_statuses:
            term = s["state"].get("terminated")
            if term and len((term.get("message") or "").encode()) > budget:
                term["message"] = term["message"].encode()[:budget].decode("utf-8", "replace")
        phase = get_phase(spec, statuses, init_statuses, self.terminal)
        if old.get("phase") in ("Succeeded", "Failed"):
            phase = old["phase"]
        done = phase in ("Succeeded", "Failed")
        unready = [r.name for r in self.containers if not r.api_status()["ready"]]
        inits_left = [r.name for r in self.inits if (r.state.get("terminated") or {}).get("exitCode", 1) != 0]
        want = [("PodReadyToStartContainers", self.sandbox and not self.terminal and not done, None, None)]
        if inits_left and not done:
            want.append(("Initialized", False, "ContainersNotInitialized",
                         f"containers with incomplete status: [{' '.join(inits_left)}]"))
        else:
            want.append(("Initialized", True, "PodCompleted" if done and self.inits else None, None))
        for typ in ("Ready", "ContainersReady"):
            if done:
                want.append((typ, False, "PodCompleted", None))
            elif unready:
                want.append((typ, False, "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"))
            else:
                want.append((typ, True, None, None))
        olds = {c.get("type"): c for c in old.get("conditions") or []}
        kubelet_owned = {"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"}
        conds = [c for c in old.get("conditions") or [] if c.get("type") not in kubelet_owned]
        for typ, ok, reason, message in want:
            c = {"type": typ, "status": "True" if ok else "False", "lastProbeTime": None}
            prev = olds.get(typ)
            c["lastTransitionTime"] = prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] \
                else now_str()
            if reason:
                c["reason"] = reason
            if message:
                c["message"] = message
            conds.append(c)
        conds.append(olds.get("PodScheduled") or {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                                   "lastTransitionTime": self.start_time})
        new = dict(old)
        new.update({"phase": phase, "conditions": conds, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                    "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": old.get("startTime") or
                    self.start_time, "qosClass": old.get("qosClass") or pod_qos(spec), "containerStatuses": statuses})
        if init_statuses:
            new["initContainerStatuses"] = init_statuses
        if new != old:
            self.k.store.internal_update(PODS, self.ns, self.name, lambda o: dict(o, status=new), uid=self.uid,
                                         manager="kubelet")


class Kubelet:
    """Runs the pods bound to any existing Node (every Node is served from this machine)."""

    def __init__(self, store, registry, events, state_dir, images, runtime, pod_env, strict_pvc):
        self.store, self.registry, self.events = store, registry, events
        self.state_dir, self.images, self.runtime = state_dir, images, runtime
        self.pod_env, self.strict_pvc = pod_env, strict_pvc
        self.lock = threading.Lock()
        self.workers = {}  # pod uid -> PodWorker
        self.started = set()
        store.listeners.append(self._on_event)

    def _on_event(self, e):  # under the store lock
        if e["gr"] == PODS:
            pod = e["obj"]
            with self.lock:
                w = self.workers.get(pod["metadata"]["uid"])
            if w is not None:
                w.notify()
            elif e["type"] != "DELETED":
                self.maybe_start(pod)
        elif e["gr"] == NODES and e["type"] == "ADDED":
            for pod in self.store.list(PODS)[0]:
                if (pod.get("spec") or {}).get("nodeName") == e["obj"]["metadata"]["name"]:
                    self.maybe_start(pod)

    def maybe_start(self, pod):
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node or self.store.get(NODES, "", node) is None or pod_terminal(pod):
            return
        with self.lock:
            if meta["uid"] in self.started:
                return
            self.started.add(meta["uid"])
            w = PodWorker(self, pod)
            self.workers[meta["uid"]] = w
        threading.Thread(target=w.run, daemon=True, name=f"pod-{meta['name']}").start()

    def done(self, uid):
        with self.lock:
            self.workers.pop(uid, None)

    def find(self, ns, name):
        with self.lock:
            return next((w for w in self.workers.values() if w.ns == ns and w.name == name), None)

    def processes(self):
        with self.lock:
            workers = list(self.workers.values())
        out = []
        for w in workers:
            pod = self.store.get(PODS, w.ns, w.name)
            job = next((r.get("name") for r in ((pod or {}).get("metadata") or {}).get("ownerReferences") or []
                        if r.get("kind") == "Job"), None)
            for r in w.records():
                p = r.proc
                if p is not None:
                    out.append({"namespace": w.ns, "pod": w.name, "uid": w.uid, "job": job, "container": r.name,
                                "pid": p.pid, "containerID": "containerd://" + p.cid, "argv": p.argv,
                                "startedAt": p.started})
        return out

    def signal(self, ns, name, sig, container=None):
        w = self.find(ns, name)
        if w is None:
            return False
        hit = False
        for r in w.records():
            p = r.proc
            if p is not None and (container is None or r.name == container):
                hit = p.signal(sig) or hit
        return hit

    def log_range(self, ns, name, container, previous):
        """Byte range of a container's log file for the current (or previous) instance."""
        w = self.find(ns, name)
        rec = next((r for r in w.records() if r.name == container), None) if w else None
        if previous:
            return (rec.prev_log_offset, rec.log_offset) if rec and rec.restart_count else (None, None)
        return (rec.log_offset if rec else 0), None

    def field_ref(self, pod, fp):
        m = re.match(r"^metadata\.(labels|annotations)\['(.*)'\]$", fp or "")
        if m:
            return ((pod["metadata"].get(m.group(1)) or {}).get(m.group(2))) or ""
        spec = pod.get("spec") or {}
        simple = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": pod["metadata"]["namespace"],
                  "metadata.uid": pod["metadata"]["uid"], "spec.nodeName": spec.get("nodeName") or "",
                  "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
                  "status.hostIPs": "127.0.0.1"}
        return simple.get(fp, "")

    def container_env(self, pod, c):
        """makeEnvironmentVariables: envFrom, then env (with $(VAR) expansion against earlier ones)."""
        ns = pod["metadata"]["namespace"]
        env = {}
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix") or ""
            if "secretRef" in ef:
                sec = self.store.get(SECRETS, ns, ef["secretRef"].get("name"))
                if sec is None:
                    if ef["secretRef"].get("optional"):
                        continue
                    raise PodWait("CreateContainerConfigError", f'secret "{ef["secretRef"].get("name")}" not found',
                                  "Failed")
                for k, v in (sec.get("data") or {}).items():
                    env[prefix + k] = _b64(v).decode("utf-8", "replace")
            if "configMapRef" in ef:
                cm = self.store.get(CONFIGMAPS, ns, ef["configMapRef"].get("name"))
                if cm is None:
                    if ef["configMapRef"].get("optional"):
                        continue
                    raise PodWait("CreateContainerConfigError",
                                  f'configmap "{ef["configMapRef"].get("name")}" not found', "Failed")
                env.update({prefix + k: v for k, v in (cm.get("data") or {}).items()})
        for e in c.get("env") or []:
            v = self._env_value(pod, e)
            if v is not None:
                env[e["name"]] = expand_vars(v, env) if "value" in e else v
        return env

    def _env_value(self, pod, e):
        ns = pod["metadata"]["namespace"]
        if "value" in e:
            return e["value"]
        vf = e.get("valueFrom") or {}
        for kind, gr, label in (("secretKeyRef", SECRETS, "Secret"), ("configMapKeyRef", CONFIGMAPS, "ConfigMap")):
            if kind in vf:
                ref = vf[kind]
                obj = self.store.get(gr, ns, ref.get("name"))
                data = (obj or {}).get("data") or {}
                if obj is None or ref.get("key") not in data:
                    if ref.get("optional"):
                        return None
                    if obj is None:
                        raise PodWait("CreateContainerConfigError", f'{label.lower()} "{ref.get("name")}" not found',
                                      "Failed")
                    raise PodWait("CreateContainerConfigError",
                                  f'couldn\'t find key {ref.get("key")} in {label} {ns}/{ref.get("name")}', "Failed")
                v = data[ref["key"]]
                return _b64(v).decode("utf-8", "replace") if gr == SECRETS else v
        if "fieldRef" in vf:
            return self.field_ref(pod, vf["fieldRef"].get("fieldPath"))
        return None


# >>> container init (the runtime runs this section alone, see Runtime.__init__)
# --------------------------------------------------------------------------------------------
# Container init: `kube_double.py --container-init SPEC.json --sync-fd N`
#
# What runc does for containerd, in one short-lived Python process. It unshares the mount, PID,
# UTS and IPC namespaces, forks the container's PID 1 and stays as its parent (the shim: it waits
# and exits with the container's status). PID 1 builds the root file system on a tmpfs (the
# image's files, then the runtime's and kubelet's mounts, then the volumes), pivots into it,
# switches to the container's user and execs the command, so the command itself is PID 1 and the
# only process. Progress goes to the kubelet through the sync pipe: "pid N" (host PID of PID 1),
# then either EOF (the exec happened) or "error MESSAGE".
# --------------------------------------------------------------------------------------------

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x04000000, 0x08000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}
import json, os, signal  # noqa: E401,E402 (this section also runs on its own)

# containerd's default capability set (oci.DefaultSpec / the CRI plugin), by number.
CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
        "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
        "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
        "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
        "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
        "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
        "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40}
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]
# containerd's default masked and read-only /proc and /sys paths.
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]


class ContainerError(Exception):
    pass


class _Sys:
    """The few system calls Python 3.11's os module lacks, through ctypes."""

    def __init__(self):
        import ctypes
        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.nr = SYSCALLS.get(os.uname().machine)

    def _check(self, rc, what):
        if rc != 0:
            err = self.ctypes.get_errno()
            raise ContainerError(f"{what}: {os.strerror(err)}")

    def unshare(self, flags):
        self._check(self.libc.unshare(flags), "unshare")

    def mount(self, source, target, fstype, flags, data=None, what=None):
        enc = lambda s: s.encode() if s is not None else None  # noqa: E731
        self._check(self.libc.mount(enc(source), enc(target), enc(fstype), self.ctypes.c_ulong(flags), enc(data)),
                    what or f"mount {target}")

    def umount(self, target, flags=0):
        self._check(self.libc.umount2(target.encode(), flags), f"umount {target}")

    def pivot_root(self, new, old):
        if self.nr is None:
            raise ContainerError(f"pivot_root: unsupported machine {os.uname().machine}")
        self._check(self.libc.syscall(self.nr["pivot_root"], new.encode(), old.encode()), "pivot_root")

    def sethostname(self, name):
        b = name.encode()
        self._check(self.libc.sethostname(b, len(b)), "sethostname")

    def prctl(self, option, arg):
        self._check(self.libc.prctl(option, self.ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")

    def capset(self, caps):
        """Sets the effective, permitted and inheritable sets (inheritable empty, as containerd does)."""
        c = self.ctypes

        class Header(c.Structure):
            _fields_ = [("version", c.c_uint32), ("pid", c.c_int)]

        class Data(c.Structure):
            _fields_ = [("effective", c.c_uint32), ("permitted", c.c_uint32), ("inheritable", c.c_uint32)]
        mask = sum(1 << n for n in caps)
        data = (Data * 2)(Data(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0), Data(mask >> 32, mask >> 32, 0))
        self._check(self.libc.syscall(self.nr["capset"], c.byref(Header(0x20080522, 0)), data), "capset")


def container_init_main(spec_path, sync_fd):
    """The shim: new namespaces, then fork PID 1 and wait for it."""
    with open(spec_path) as f:
        spec = json.load(f)
    sysc = _Sys()

    def fail(msg):
        try:
            os.write(sync_fd, f"error {msg}\n".encode())
        finally:
            os._exit(1)
    try:
        sysc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        sysc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC)
        sysc.mount(None, "/", None, MS_REC | MS_PRIVATE, what="make / private")
    except ContainerError as e:
        fail(f"cannot create the container's namespaces: {e}")
    pid = os.fork()
    if pid == 0:
        try:
            _container_pid1(spec, sysc, sync_fd)
        except ContainerError as e:
            fail(str(e))
        except Exception as e:  # a bug here must still reach the kubelet
            fail(f"container init failed: {e!r}")
        os._exit(1)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, signal.SIG_IGN)
    os.write(sync_fd, f"pid {pid}\n".encode())
    os.close(sync_fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _mkparents(path, uid=0, gid=0):
    parent = os.path.dirname(path)
    if not os.path.lexists(parent):
        _mkparents(parent, uid, gid)
        os.mkdir(parent, 0o755)


def _mountpoint(path, is_file):
    """Creates a mount point inside the container's root (after pivot_root, so a symlink cannot
    lead out of it), as runc does for a missing destination."""
    if os.path.lexists(path):
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if is_file:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))
        else:
            os.mkdir(path, 0o755)
    except OSError as e:
        raise ContainerError(f"error mounting to rootfs at {path!r}: mkdir {e.filename}: {e.strerror.lower()}")


def _container_pid1(spec, sysc, sync_fd):
    os.set_inheritable(sync_fd, False)  # closes on exec: EOF tells the kubelet the exec happened
    root, scratch = spec["rootfs"], spec["scratch"]
    sysc.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", what="mount the root tmpfs")
    sysc.mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700", what="mount the scratch tmpfs")
    ro_binds, overlays = [], []
    # 1. The image: files the image holds, on the root tmpfs (its writable layer).
    for i, e in enumerate(spec["image"]["entries"]):
        p = root + e["path"]
        _mkparents(p)
        kind = e["kind"]
        if kind == "dir":
            if not os.path.isdir(p):
                os.mkdir(p)
            os.chmod(p, e.get("mode", 0o755))
            os.chown(p, e.get("uid", 0), e.get("gid", 0))
        elif kind == "file":
            with open(p, "w") as f:
                f.write(e["content"])
            os.chmod(p, e.get("mode", 0o644))
        elif kind == "symlink":
            os.symlink(e["target"], p)
        elif kind == "bind":  # a host file shown as an image file: read-only, it is not a copy
            if not os.path.exists(p):
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o755))
            sysc.mount(e["source"], p, None, MS_BIND, what=f"bind {e['source']} into the image")
            ro_binds.append(e["path"])
        elif kind == "overlay":  # a host directory as an image layer, with a copy-up layer over it
            upper, work = f"{scratch}/upper{i}", f"{scratch}/work{i}"
            os.mkdir(upper)
            os.mkdir(work)
            os.makedirs(p, exist_ok=True)
            sysc.mount("overlay", p, "overlay", 0, f"lowerdir={e['lower']},upperdir={upper},workdir={work}",
                       what=f"overlay {e['lower']} at {e['path']}")
            overlays.append(e["path"])
    for path in ro_binds:
        sysc.mount(None, root + path, None, MS_REMOUNT | MS_BIND | MS_RDONLY, what=f"remount {path} read-only")
    # 2. Handles on every mount source, taken while the host's paths are still reachable.
    fds = []
    for m in spec["mounts"]:
        try:
            fds.append(os.open(m["source"], os.O_PATH | os.O_CLOEXEC))
        except OSError as e:
            raise ContainerError(f'error mounting "{m["source"]}" to rootfs at "{m["target"]}": '
                                 f'stat {m["source"]}: {(e.strerror or str(e)).lower()}')
    dev_fds = {d: os.open(f"/dev/{d}", os.O_PATH | os.O_CLOEXEC) for d in DEVICES}
    # 3. Into the new root; the old one stays reachable (for the handles) until the end.
    old = f"/.kube-double-oldroot-{os.urandom(6).hex()}"
    os.mkdir(root + old, 0o700)
    os.chdir(root)
    sysc.pivot_root(".", "." + old)
    os.chdir("/")
    # 4. What the runtime adds: /proc of the new PID namespace, /dev, /dev/shm, /sys.
    _mountpoint("/proc", False)
    sysc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, what="mount /proc")
    _mountpoint("/dev", False)
    sysc.mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k", what="mount /dev")
    for d, fd in dev_fds.items():
        _mountpoint(f"/dev/{d}", True)
        sysc.mount(f"/proc/self/fd/{fd}", f"/dev/{d}", None, MS_BIND, what=f"bind /dev/{d}")
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")
    sysc.mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k",
               what="mount /dev/shm")
    _mountpoint("/sys", False)
    sysc.mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, what="mount /sys")
    # 5. The kubelet's mounts (volumes, /etc/hosts, the termination message file), parents first.
    for m, fd in zip(spec["mounts"], fds):
        target = m["target"]
        src = f"/proc/self/fd/{fd}"
        _mountpoint(target, not os.path.isdir(src))
        try:
            sysc.mount(src, target, None, MS_BIND | MS_REC)
            if m.get("readOnly"):
                sysc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        except ContainerError as e:
            raise ContainerError(f'error mounting "{m["source"]}" to rootfs at "{target}": {e}')
        os.close(fd)
    proc = spec["process"]
    cwd = proc.get("cwd") or "/"
    if not os.path.isdir(cwd):
        try:
            os.makedirs(cwd, 0o755)
        except OSError as e:
            raise ContainerError(f"mkdir {cwd}: {(e.strerror or str(e)).lower()}")
    sysc.umount(old, MNT_DETACH)
    os.rmdir(old)
    for p in MASKED_PATHS:
        if os.path.isdir(p):
            sysc.mount("tmpfs", p, "tmpfs", MS_RDONLY, what=f"mask {p}")
        elif os.path.exists(p):
            sysc.mount("/dev/null", p, None, MS_BIND, what=f"mask {p}")
    for p in READONLY_PATHS:
        if os.path.exists(p):
            sysc.mount(p, p, None, MS_BIND | MS_REC, what=f"bind {p}")
            sysc.mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY, what=f"remount {p} read-only")
    if spec.get("readOnlyRoot"):
        sysc.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY, what="remount / read-only")
        for path in overlays:
            sysc.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY, what=f"remount {path} read-only")
    sysc.sethostname(spec["hostname"])
    # 6. The process: capabilities, user and groups, no_new_privs, then exec.
    keep = set(proc.get("capabilities") or [])
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep:
            sysc.prctl(PR_CAPBSET_DROP, cap)
    os.chdir(cwd)
    os.setgroups(proc.get("groups") or [])
    os.setresgid(proc["gid"], proc["gid"], proc["gid"])
    os.setresuid(proc["uid"], proc["uid"], proc["uid"])
    if proc["uid"] == 0:
        sysc.capset(sorted(c for c in keep if c <= last))
    if proc.get("noNewPrivs"):
        sysc.prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.umask(0o022)
    argv, env = proc["argv"], proc["env"]
    exe = _look_path(argv[0], env.get("PATH", ""))
    sysc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    for s in range(1, signal.NSIG):
        if s not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(s, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.closerange(3, sync_fd)
    os.closerange(sync_fd + 1, 65536)
    try:
        os.execve(exe, argv, env)
    except OSError as e:
        raise ContainerError(f"exec {exe}: {(e.strerror or str(e)).lower()}")


def _look_path(name, path):
    """exec.LookPath as runc uses it, inside the container."""
    def usable(p):
        return os.path.isfile(p) and os.access(p, os.X_OK)
    if "/" in name:
        if not os.path.exists(name):
            raise ContainerError(f'exec: "{name}": stat {name}: no such file or directory')
        if not usable(name):
            raise ContainerError(f'exec: "{name}": permission denied')
        return name
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        if usable(cand):
            return cand
    raise ContainerError(f'exec: "{name}": executable file not found in $PATH')
# <<< container init


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
        for k, v in (headers.items() if isinstance(headers, dict) else headers or []):
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
        rec = {"time": wall_micro(), "method": method, "path": path, "query": split.query,
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
            warnings = []
            obj = store.create(info, ns, self._decode(body_raw), dry_run=dry, manager=manager, warnings=warnings)
            return self.send_json(201, self._out(info, version, obj), warning_headers(warnings))
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
            opts = delete_options(self._decode(body_raw), q)
            warnings = []
            if info.gr == JOBS and version == "v1" and opts.get("propagationPolicy") is None \
                    and opts.get("orphanDependents") is None:
                warnings.append("child pods are preserved by default when jobs are deleted; set "
                                "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to "
                                "suppress this warning")
            if name is None:
                lsel = parse_label_selector(param(q, "labelSelector"))
                fsel = parse_field_selector(param(q, "fieldSelector"))
                items, rv = store.list(info.gr, ns)
                for o in items:
                    if match_labels(lsel, o) and match_fields(fsel, o):
                        try:
                            store.delete(info, o["metadata"].get("namespace"), o["metadata"]["name"], opts,
                                         dry_run=dry)
                        except ApiError:
                            pass
                return self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"},
                                      warning_headers(warnings))
            obj = store.delete(info, ns, name, opts, dry_run=dry)
            return self.send_json(200, self._out(info, version, obj), warning_headers(warnings))
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
        spec = pod.get("spec") or {}
        containers = [c.get("name") for c in spec.get("containers") or []]
        inits = [c.get("name") for c in spec.get("initContainers") or []]
        cname = param(q, "container")
        if not cname:
            if len(containers) != 1:
                msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
                if inits:
                    msg += f" or one of the init containers: [{' '.join(inits)}]"
                raise ApiError(400, msg)
            cname = containers[0]
        if cname not in containers + inits:
            raise ApiError(400, f"container {cname} is not valid for pod {name}")
        st = pod.get("status") or {}
        cs = next((c for c in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or [])
                   if c.get("name") == cname), None)
        state = (cs or {}).get("state") or {}
        log_file = os.path.join(ctx.state_dir, "pods", ns, name, "containers", cname, "container.log")
        first, last = ctx.kubelet.log_range(ns, name, cname, truthy(param(q, "previous")))
        if truthy(param(q, "previous")):
            if first is None:
                raise ApiError(400, f'previous terminated container "{cname}" in pod "{name}" not found')
        elif "waiting" in state or cs is None or not os.path.exists(log_file):
            reason = ((state.get("waiting") or {}).get("reason")) or "ContainerCreating"
            raise ApiError(400, f'container "{cname}" in pod "{name}" is waiting to start: {reason}')
        tail = param(q, "tailLines")
        limit = param(q, "limitBytes")

        def cut(data):
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-int(tail):]) if int(tail) > 0 else b""
            if limit is not None:
                data = data[:int(limit)]
            return data
        def read_range(f):
            f.seek(first or 0)
            return f.read() if last is None else f.read(max(0, last - (first or 0)))
        if truthy(param(q, "follow")):
            self.start_chunked("text/plain")
            pos = 0
            sent = 0
            try:
                with open(log_file, "rb") as f:
                    data = cut(read_range(f))
                    pos = f.tell()
                    self.chunk(data)
                    sent += len(data)
                    while last is None:
                        cur = ctx.store.get(PODS, ns, name)
                        cst = next((c for c in ((cur or {}).get("status") or {}).get("containerStatuses") or []
                                    if c.get("name") == cname), {})
                        done = cur is None or "running" not in (cst.get("state") or {})
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
            data = read_range(f)
        self.send_text(200, cut(data))

    def sim_endpoint(self, method, path, q):
        ctx = self.ctx
        if path == "/_sim/processes" and method == "GET":
            return self.send_json(200, {"processes": ctx.kubelet.processes()})
        if path == "/_sim/kill" and method == "POST":
            ns, pod = param(q, "namespace", "default"), param(q, "pod")
            sig = getattr(signal, "SIG" + (param(q, "signal") or "KILL").upper().replace("SIG", ""), signal.SIGKILL)
            if not ctx.kubelet.signal(ns, pod, sig, param(q, "container")):
                raise ApiError(404, f"no running process for pod {ns}/{pod}")
            return self.send_json(200, {"killed": f"{ns}/{pod}", "signal": sig.name})
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


def warning_headers(warnings):
    return [("Warning", f'299 - "{w}"') for w in warnings]


def delete_options(body, q):
    """DeleteOptions from the body, or from the query parameters."""
    opts = dict(body) if isinstance(body, dict) else {}
    for k in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
        v = param(q, k)
        if v is not None and k not in opts:
            opts[k] = int(v) if k == "gracePeriodSeconds" else truthy(v) if k == "orphanDependents" else v
    return opts


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
        opt_outs = [tuple(o.split("=", 1)) for o in (args.sidecar_opt_out or
                                                      ["sidecar.istio.io/inject=false", "linkerd.io/inject=disabled"])]
        if args.inject_sidecar:
            self.store.sidecar = SidecarInjector(args.inject_sidecar, args.sidecar_image, opt_outs)
        self.events = EventWriter(self.store, self.registry, nodes[0])
        self.gc = GarbageCollector(self.store, args.gc_delay)
        self.controllers = ControllerManager(self.store, self.registry, self.events, args.backoff_seconds,
                                             args.pod_gc_quarantine, args.strict_pvc)
        self.runtime = Runtime(self.state_dir)
        binary_images = [tuple(m.rsplit("=", 1)) for m in args.binary_image or []]
        images = Images(binary_map, binary_images, args.host_image or [],
                        args.sidecar_image if args.inject_sidecar else None, args.image_file or [])
        self.kubelet = Kubelet(self.store, self.registry, self.events, self.state_dir, images, self.runtime, pod_env,
                               args.strict_pvc)
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
            s.internal_update(NODES, "", n, lambda o: dict(o, status=node_status(o)), manager="kubelet")
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
    global LOG_FILE, VERBOSE, CLOCK_SKEW
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--container-init"]:
        ia = argparse.ArgumentParser(prog="kube_double.py --container-init")
        ia.add_argument("--container-init", required=True, metavar="SPEC")
        ia.add_argument("--sync-fd", type=int, required=True)
        a = ia.parse_args(argv)
        return container_init_main(a.container_init, a.sync_fd)
    ap = argparse.ArgumentParser(description="Kubernetes API test double with a node simulator")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--state-dir", required=True, help="kubeconfig, port, requests.jsonl, pods/, pvcs/ go here")
    ap.add_argument("--binary-map", action="append", metavar="NAME=PATH",
                    help="an image whose last path component is NAME holds PATH as /usr/local/bin/NAME (with its "
                         "shared libraries, like the distroless imagepush image), entrypoint NAME")
    ap.add_argument("--binary-image", action="append", metavar="PATTERN=NAME",
                    help="images matching this glob are the --binary-map image of NAME, whatever their name")
    ap.add_argument("--image-file", action="append", nargs=3, metavar=("PATTERN", "PATH", "FILE"),
                    help="binary images matching this glob also hold the host's FILE at PATH (with its shared "
                         "libraries), like a COPY in a Dockerfile FROM the imagepush image")
    ap.add_argument("--host-image", action="append", metavar="PATTERN",
                    help="images matching this glob run with the host's system directories as their files")
    ap.add_argument("--fault-file", help="JSON list of fault rules, re-read when it changes")
    ap.add_argument("--pod-env", action="append", metavar="KEY=VALUE", help="extra environment for every container")
    ap.add_argument("--node", action="append", help="node names (default: sim-node); all run pods locally")
    ap.add_argument("--token", default="test-token", help="the bearer token clients must send")
    ap.add_argument("--no-auth", action="store_true", help="accept requests without the bearer token")
    ap.add_argument("--strict-pvc", action="store_true", help="pods wait until their PersistentVolumeClaims exist")
    ap.add_argument("--backoff-seconds", type=float, default=0.5,
                    help="the Job controller's base delay before a retry pod (doubles per failure)")
    ap.add_argument("--gc-delay", type=float, default=1.0, help="seconds before the garbage collector acts")
    ap.add_argument("--pod-gc-quarantine", type=float, default=40.0,
                    help="seconds before pods bound to a missing Node are failed and deleted")
    ap.add_argument("--inject-sidecar", metavar="NAME", help="inject a long-running container NAME into every pod")
    ap.add_argument("--sidecar-image", default="docker.io/istio/proxyv2:1.23.2", help="the injected sidecar's image")
    ap.add_argument("--sidecar-opt-out", action="append", metavar="KEY=VALUE",
                    help="a pod label or annotation that prevents injection (default: sidecar.istio.io/inject=false "
                         "and linkerd.io/inject=disabled)")
    ap.add_argument("--clock-skew", type=float, default=0.0,
                    help="seconds the cluster's clock is ahead of this machine (negative: behind)")
    ap.add_argument("--history-size", type=int, default=10000, help="watch events kept for resourceVersion resumes")
    ap.add_argument("--watch-timeout", type=float, default=300.0, help="default watch length without timeoutSeconds")
    ap.add_argument("--bookmark-interval", type=float, default=2.0, help="seconds between BOOKMARK events")
    ap.add_argument("--verbose", action="store_true", help="diagnostics to stderr too (always in STATE_DIR/kube-double.log)")
    args = ap.parse_args(argv)
    CLOCK_SKEW = args.clock_skew
    check_namespaces()
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
    threading.Thread(target=ctx.gc.loop, daemon=True, name="gc").start()
    threading.Thread(target=ctx.controllers.loop, daemon=True, name="controllers").start()

    def stop(signum, frame):
        ctx.runtime.kill_all()
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
        ctx.runtime.kill_all()


if __name__ == "__main__":
    main()

