"""Self-test of the Kubernetes API test double and its node simulator.

    python3 -m unittest discover -s e2e/kube-double -p 'test_*.py' -v   # from the repository root, as root

Starts kube_double.py as a subprocess on a free port and talks to it with urllib. Containers run
from `example.test/...` images (the host's system directories, `--host-image`) and from
`tools.test/...` images (distroless-like images holding one mapped host binary, `--binary-map`).
"""

import base64
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DOUBLE = os.path.join(HERE, "kube_double.py")
TOKEN = "test-token"


class Double:
    """A running kube_double.py."""

    def __init__(self, *extra):
        self.dir = tempfile.mkdtemp(prefix="kube-double-test-")
        self.fault_file = os.path.join(self.dir, "faults.json")
        self.proc = subprocess.Popen(
            [sys.executable, DOUBLE, "--port", "0", "--state-dir", self.dir, "--fault-file", self.fault_file,
             "--backoff-seconds", "0.3", "--bookmark-interval", "0.5", "--gc-delay", "0.5",
             "--host-image", "example.test/*", "--binary-map", f"lister={shutil.which('ls')}",
             "--binary-map", f"catter={shutil.which('cat')}", "--binary-image", "other.test/*/tool-*=catter", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"double did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split()[1]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc.stdout.close()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def request(self, method, path, body=None, ctype="application/json", token=TOKEN, raw=False, timeout=10,
                headers=False):
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
                code = resp.status
                hdrs = resp.headers
        except urllib.error.HTTPError as e:
            payload = e.read()
            code = e.code
            hdrs = e.headers
        if raw:
            return code, payload, hdrs.get("Content-Type")
        if headers:
            return code, json.loads(payload) if payload else None, hdrs
        return code, json.loads(payload) if payload else None

    def watch(self, path, max_events=100, timeout=10, until=None):
        """Reads watch events until `until(events)` is true, max_events, or the stream ends."""
        req = urllib.request.Request(self.url + path)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        events = []
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            while len(events) < max_events:
                line = resp.readline()
                if not line:
                    break
                events.append(json.loads(line))
                if until and until(events):
                    break
        return events

    def run_pod(self, body, timeout=15):
        """Creates a pod, waits for it to end, returns it and its (only container's) log."""
        name = body["metadata"]["name"]
        code, created = self.request("POST", PODS, body)
        if code != 201:
            raise AssertionError(f"pod {name} not created: {code} {created}")
        p = self.wait_for(f"{PODS}/{name}", terminal, timeout=timeout)
        return p, self.request("GET", f"{PODS}/{name}/log", raw=True)[1].decode()

    def wait_for(self, path, pred, timeout=15):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            code, last = self.request("GET", path)
            if code == 200 and pred(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting on {path}; last: {json.dumps(last)[:2000]}")


def job(name, script, **spec):
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
                                                   "containers": [{"name": "worker", "image": "example.test/worker:1",
                                                                   "command": ["/bin/sh", "-c", script]}]}}}}


def pod(name, script, image="example.test/worker:1", **spec):
    """A pod with one `sh -c script` container (fields in `spec` go to the pod spec; `container` to
    the container)."""
    c = {"name": "main", "image": image, "command": ["/bin/sh", "-c", script], **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **spec.pop("metadata", {})},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [c], **spec}}


def state(p, container=None):
    """The state of a pod's container (the only or the named one), e.g. {"running": {...}}."""
    for cs in (p.get("status") or {}).get("containerStatuses") or []:
        if container is None or cs["name"] == container:
            return cs["state"]
    return {}


def terminal(p):
    return (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def events_of(d, name, ns="default"):
    return d.request("GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}")[1]["items"]


def cond(obj, typ):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == typ and c["status"] == "True":
            return c
    return None


def finished(obj):
    return cond(obj, "Complete") or cond(obj, "Failed")


CM = "/api/v1/namespaces/default/configmaps"
IP = "/apis/imagepush.dev/v1alpha1/namespaces/default/imagepushes"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"


class KubeDoubleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Double()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def setUp(self):
        with open(self.d.fault_file, "w") as f:
            f.write("[]")

    def req(self, *a, **k):
        return self.d.request(*a, **k)

    def pods_of(self, job_name):
        code, lst = self.req("GET", f"{PODS}?labelSelector=job-name%3D{job_name}")
        self.assertEqual(code, 200)
        return lst["items"]

    # -- API basics --

    def test_startup_files_and_discovery(self):
        with open(os.path.join(self.d.dir, "kubeconfig")) as f:
            kc = f.read()
        self.assertIn(f"server: \"{self.d.url}\"", kc)
        self.assertIn('token: "test-token"', kc)
        self.assertIn("current-context: kube-double", kc)
        with open(os.path.join(self.d.dir, "port")) as f:
            self.assertEqual(self.d.url.rsplit(":", 1)[1], f.read().strip())
        self.assertEqual(self.req("GET", "/api")[1]["versions"], ["v1"])
        groups = {g["name"] for g in self.req("GET", "/apis")[1]["groups"]}
        self.assertTrue({"batch", "imagepush.dev", "coordination.k8s.io", "events.k8s.io"} <= groups)
        res = self.req("GET", "/apis/imagepush.dev/v1alpha1")[1]
        names = {r["name"]: r for r in res["resources"]}
        self.assertEqual(names["imagepushes"]["kind"], "ImagePush")
        self.assertTrue(names["imagepushes"]["namespaced"])
        self.assertIn("imagepushes/status", names)
        core = {r["name"]: r for r in self.req("GET", "/api/v1")[1]["resources"]}
        self.assertFalse(core["namespaces"]["namespaced"])
        self.assertIn("pods/log", core)
        self.assertEqual(self.req("GET", "/version")[1]["gitVersion"], "v1.31.0")
        code, body, _ = self.req("GET", "/healthz", raw=True, token=None)
        self.assertEqual((code, body), (200, b"ok"))

    def test_auth_required(self):
        code, st = self.req("GET", CM, token="wrong")
        self.assertEqual(code, 401)
        self.assertEqual(st["kind"], "Status")

    def test_create_get_list_errors(self):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cgl", "labels": {"app": "x", "tier": "a"}},
              "data": {"k": "v"}}
        code, created = self.req("POST", CM, cm)
        self.assertEqual(code, 201)
        m = created["metadata"]
        self.assertTrue(m["uid"] and m["resourceVersion"].isdigit() and m["creationTimestamp"].endswith("Z"))
        self.assertEqual(m["generation"], 1)
        self.assertEqual(m["namespace"], "default")
        code, got = self.req("GET", f"{CM}/cgl")
        self.assertEqual((code, got["data"]), (200, {"k": "v"}))
        # AlreadyExists
        code, st = self.req("POST", CM, cm)
        self.assertEqual(code, 409)
        self.assertEqual((st["kind"], st["status"], st["reason"], st["code"]), ("Status", "Failure", "AlreadyExists", 409))
        self.assertEqual(st["details"]["name"], "cgl")
        # NotFound
        code, st = self.req("GET", f"{CM}/nope")
        self.assertEqual((code, st["reason"]), (404, "NotFound"))
        # missing name -> 422
        code, st = self.req("POST", CM, {"metadata": {}})
        self.assertEqual((code, st["reason"]), (422, "Invalid"))
        # generateName
        code, gen = self.req("POST", CM, {"metadata": {"generateName": "gen-", "labels": {"app": "y"}}})
        self.assertEqual(code, 201)
        self.assertRegex(gen["metadata"]["name"], r"^gen-[a-z0-9]{5}$")
        # list with selectors
        code, lst = self.req("GET", f"{CM}?labelSelector=app%3Dx")
        self.assertEqual(lst["kind"], "ConfigMapList")
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["cgl"])
        self.assertTrue(lst["metadata"]["resourceVersion"].isdigit())
        lst = self.req("GET", f"{CM}?labelSelector=app%20in%20(x%2Cy)")[1]
        self.assertEqual(len(lst["items"]), 2)
        lst = self.req("GET", f"{CM}?labelSelector=tier")[1]
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["cgl"])
        lst = self.req("GET", f"{CM}?labelSelector=!tier,app")[1]
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], [gen["metadata"]["name"]])
        lst = self.req("GET", f"{CM}?fieldSelector=metadata.name%3Dcgl")[1]
        self.assertEqual(len(lst["items"]), 1)
        lst = self.req("GET", "/api/v1/configmaps?fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Dcgl")[1]
        self.assertEqual(len(lst["items"]), 1)
        # bad labels are rejected like the apiserver does
        code, st = self.req("POST", CM, {"metadata": {"name": "badlabel", "labels": {"a": "x" * 64}}})
        self.assertEqual(code, 422)
        # the request log
        with open(os.path.join(self.d.dir, "requests.jsonl")) as f:
            recs = [json.loads(l) for l in f]
        posts = [r for r in recs if r["method"] == "POST" and r.get("resource") == "configmaps"]
        self.assertTrue(posts and posts[0]["verb"] == "create" and posts[0]["status"] == 201)
        self.assertTrue(any(r.get("verb") == "list" and r["resource"] == "configmaps" for r in recs))

    def test_watch_from_resource_version(self):
        code, a = self.req("POST", CM, {"metadata": {"name": "w1", "labels": {"w": "1"}}, "data": {"n": "0"}})
        rv0 = a["metadata"]["resourceVersion"]
        self.req("PATCH", f"{CM}/w1", {"data": {"n": "1"}}, ctype="application/merge-patch+json")
        self.req("POST", CM, {"metadata": {"name": "w2", "labels": {"w": "1"}}})
        self.req("DELETE", f"{CM}/w2")
        evs = self.d.watch(f"{CM}?watch=true&labelSelector=w%3D1&resourceVersion={rv0}&timeoutSeconds=1")
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in evs],
                         [("MODIFIED", "w1"), ("ADDED", "w2"), ("DELETED", "w2")])
        self.assertEqual(evs[0]["object"]["data"], {"n": "1"})
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
        self.assertEqual(rvs, sorted(rvs))
        # no RV: ADDED for everything that exists, then live events
        evs = self.d.watch(f"{CM}?watch=1&labelSelector=w%3D1&timeoutSeconds=1")
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in evs], [("ADDED", "w1")])
        # leaving the selector is a DELETED for that watch
        lst = self.req("GET", f"{CM}?labelSelector=w%3D1")[1]
        rv = lst["metadata"]["resourceVersion"]
        self.req("PATCH", f"{CM}/w1", {"metadata": {"labels": {"w": "2"}}}, ctype="application/merge-patch+json")
        evs = self.d.watch(f"{CM}?watch=true&labelSelector=w%3D1&resourceVersion={rv}&timeoutSeconds=1")
        self.assertEqual([e["type"] for e in evs], ["DELETED"])

    def test_watch_streaming_bookmarks_and_expiry(self):
        self.req("POST", CM, {"metadata": {"name": "b1", "labels": {"bk": "1"}}})
        evs = self.d.watch(f"{CM}?watch=true&labelSelector=bk%3D1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                           f"&allowWatchBookmarks=true&timeoutSeconds=5",
                           until=lambda es: es[-1]["type"] == "BOOKMARK")
        self.assertEqual([e["type"] for e in evs], ["ADDED", "BOOKMARK"])
        bm = evs[-1]["object"]
        self.assertEqual(bm["metadata"]["annotations"], {"k8s.io/initial-events-end": "true"})
        self.assertEqual((bm["kind"], bm["apiVersion"]), ("ConfigMap", "v1"))
        # live event arrives on an open watch; periodic bookmarks follow
        rv = self.req("GET", CM)[1]["metadata"]["resourceVersion"]
        import threading
        threading.Timer(0.2, lambda: self.req("POST", CM, {"metadata": {"name": "b2", "labels": {"bk": "1"}}})).start()
        evs = self.d.watch(f"{CM}?watch=true&labelSelector=bk%3D1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=5",
                           until=lambda es: any(e["type"] == "BOOKMARK" for e in es) and any(e["type"] == "ADDED" for e in es))
        self.assertEqual(evs[0]["type"], "ADDED")
        self.assertEqual(evs[0]["object"]["metadata"]["name"], "b2")
        bms = [e for e in evs if e["type"] == "BOOKMARK"]
        self.assertGreaterEqual(int(bms[0]["object"]["metadata"]["resourceVersion"]),
                                int(evs[0]["object"]["metadata"]["resourceVersion"]))
        # compacted history -> 410 Expired as a watch ERROR event
        self.req("POST", "/_sim/compact")
        evs = self.d.watch(f"{CM}?watch=true&resourceVersion={rv}&timeoutSeconds=2")
        self.assertEqual(len(evs), 1)
        self.assertEqual(evs[0]["type"], "ERROR")
        self.assertEqual((evs[0]["object"]["code"], evs[0]["object"]["reason"]), (410, "Expired"))

    def test_patches(self):
        self.req("POST", CM, {"metadata": {"name": "p1", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}})
        code, o = self.req("PATCH", f"{CM}/p1", {"metadata": {"labels": {"b": None, "c": "3"}}, "data": {"x": "9"}},
                           ctype="application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertEqual(o["metadata"]["labels"], {"a": "1", "c": "3"})
        self.assertEqual(o["data"], {"x": "9", "y": "2"})
        ops = [{"op": "add", "path": "/data/z", "value": "3"}, {"op": "remove", "path": "/data/y"},
               {"op": "replace", "path": "/data/x", "value": "10"}, {"op": "test", "path": "/data/z", "value": "3"},
               {"op": "copy", "from": "/data/z", "path": "/data/w"}, {"op": "move", "from": "/data/w", "path": "/data/v"},
               {"op": "add", "path": "/metadata/annotations", "value": {"example.com/x": "1", "t": "2"}}]
        code, o = self.req("PATCH", f"{CM}/p1", ops, ctype="application/json-patch+json")
        self.assertEqual(code, 200, o)
        self.assertEqual(o["data"], {"x": "10", "z": "3", "v": "3"})
        code, o = self.req("PATCH", f"{CM}/p1", [{"op": "remove", "path": "/metadata/annotations/example.com~1x"}],
                           ctype="application/json-patch+json")
        self.assertEqual(o["metadata"]["annotations"], {"t": "2"})
        code, st = self.req("PATCH", f"{CM}/p1", [{"op": "test", "path": "/data/x", "value": "nope"}],
                            ctype="application/json-patch+json")
        self.assertEqual(code, 422)
        code, o = self.req("PATCH", f"{CM}/p1", {"data": {"s": "1"}}, ctype="application/strategic-merge-patch+json")
        self.assertEqual((code, o["data"]["s"]), (200, "1"))
        # a no-op patch does not bump the resourceVersion
        rv = o["metadata"]["resourceVersion"]
        code, o = self.req("PATCH", f"{CM}/p1", {"data": {"s": "1"}}, ctype="application/merge-patch+json")
        self.assertEqual(o["metadata"]["resourceVersion"], rv)
        # strategic merge patch is refused on custom resources, like the apiserver does
        self.req("POST", IP, {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "metadata": {"name": "smp"}, "spec": {}})
        code, st = self.req("PATCH", f"{IP}/smp", {"spec": {"a": 1}}, ctype="application/strategic-merge-patch+json")
        self.assertEqual(code, 415)

    def test_status_subresource_and_generation(self):
        code, o = self.req("POST", IP, {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
                                        "metadata": {"name": "st1"}, "spec": {"target": "a"}, "status": {"phase": "set-on-create"}})
        self.assertEqual(code, 201)
        self.assertNotIn("status", o)
        self.assertEqual(o["metadata"]["generation"], 1)
        # status subresource: only .status changes
        code, o = self.req("PATCH", f"{IP}/st1/status", {"spec": {"target": "b"}, "metadata": {"labels": {"x": "y"}},
                                                         "status": {"phase": "Running", "observedGeneration": 1}},
                           ctype="application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertEqual(o["spec"], {"target": "a"})
        self.assertEqual(o["status"], {"phase": "Running", "observedGeneration": 1})
        self.assertNotIn("labels", o["metadata"])
        self.assertEqual(o["metadata"]["generation"], 1)
        # main resource: .status changes are ignored; .spec changes bump generation
        code, o = self.req("PATCH", f"{IP}/st1", {"spec": {"target": "c"}, "status": {"phase": "Hacked"}},
                           ctype="application/merge-patch+json")
        self.assertEqual(o["spec"], {"target": "c"})
        self.assertEqual(o["status"]["phase"], "Running")
        self.assertEqual(o["metadata"]["generation"], 2)
        # metadata-only changes do not bump generation
        code, o = self.req("PATCH", f"{IP}/st1", {"metadata": {"annotations": {"a": "b"}}}, ctype="application/merge-patch+json")
        self.assertEqual(o["metadata"]["generation"], 2)
        # PUT to /status
        o["status"] = {"phase": "Done"}
        o["spec"] = {"target": "ignored"}
        code, o2 = self.req("PUT", f"{IP}/st1/status", o)
        self.assertEqual(code, 200)
        self.assertEqual((o2["status"], o2["spec"]), ({"phase": "Done"}, {"target": "c"}))
        # server-side apply on the status subresource
        code, o3 = self.req("PATCH", f"{IP}/st1/status?fieldManager=ctl&force=true",
                            {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "status": {"digest": "sha256:x"}},
                            ctype="application/apply-patch+yaml")
        self.assertEqual(code, 200, o3)
        self.assertEqual(o3["status"], {"phase": "Done", "digest": "sha256:x"})
        # re-apply without a field this manager owned removes it
        code, o4 = self.req("PATCH", f"{IP}/st1/status?fieldManager=ctl&force=true",
                            {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "status": {"phase": "Again"}},
                            ctype="application/apply-patch+yaml")
        self.assertEqual(o4["status"], {"phase": "Again"})
        self.assertEqual(o4["metadata"]["generation"], 2)
        # a stale resourceVersion in a status apply is a conflict
        code, st = self.req("PATCH", f"{IP}/st1/status?fieldManager=ctl&force=true",
                            {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
                             "metadata": {"resourceVersion": o3["metadata"]["resourceVersion"]}, "status": {"phase": "x"}},
                            ctype="application/apply-patch+yaml")
        self.assertEqual((code, st.get("reason")), (409, "Conflict"))
        # apply needs kind/apiVersion and a field manager
        code, st = self.req("PATCH", f"{IP}/st1/status?fieldManager=ctl", {"status": {"phase": "x"}},
                            ctype="application/apply-patch+yaml")
        self.assertEqual(code, 400)
        # apply creates a missing object
        code, o5 = self.req("PATCH", f"{IP}/applied?fieldManager=ctl",
                            {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "metadata": {"name": "applied"},
                             "spec": {"target": "z"}}, ctype="application/apply-patch+yaml")
        self.assertEqual((code, o5["spec"]), (201, {"target": "z"}))

    def test_fields_of_a_merge_patch_move_to_apply_through_managed_fields(self):
        """What a manager wrote with a merge patch an apply of the same name never removes (the
        Update entry is another owner, and an equal value is shared), until its managedFields
        entry is rewritten as an Apply one through the main resource (csaupgrade's way)."""
        code, _ = self.req("POST", IP, {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
                                        "metadata": {"name": "mig"}, "spec": {"target": "t"}})
        self.assertEqual(code, 201)
        code, o = self.req("PATCH", f"{IP}/mig/status?fieldManager=ctl", {"status": {"phase": "Running", "progress": {"a": 1}}},
                           ctype="application/merge-patch+json")
        self.assertEqual(code, 200)

        def apply(status, rv=None):
            meta = {"resourceVersion": rv} if rv else {}
            return self.req("PATCH", f"{IP}/mig/status?fieldManager=ctl&force=true",
                            {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "metadata": meta,
                             "status": status}, ctype="application/apply-patch+yaml")
        code, o = apply({"phase": "Running", "digest": "d"})
        self.assertEqual(o["status"], {"phase": "Running", "progress": {"a": 1}, "digest": "d"})
        code, o = apply({"phase": "Done"})
        self.assertEqual(o["status"], {"phase": "Done", "progress": {"a": 1}})
        # managedFields sent to the status subresource are ignored
        entries = o["metadata"]["managedFields"]
        moved = [dict(m, operation="Apply") if (m["manager"], m["operation"]) == ("ctl", "Update") else m
                 for m in entries if (m["manager"], m["operation"]) != ("ctl", "Apply")]
        code, o2 = self.req("PATCH", f"{IP}/mig/status", {"metadata": {"managedFields": moved}},
                            ctype="application/merge-patch+json")
        self.assertEqual(o2["metadata"]["managedFields"], entries)
        # through the main resource, with a stale resourceVersion: refused
        code, st = self.req("PATCH", f"{IP}/mig", {"metadata": {"managedFields": moved, "resourceVersion": "1"}},
                            ctype="application/merge-patch+json")
        self.assertEqual(code, 409)
        # an entry the fieldmanager cannot decode: the live ones stay
        code, o3 = self.req("PATCH", f"{IP}/mig", {"metadata": {"managedFields": [{"operation": "Bogus"}]}},
                            ctype="application/merge-patch+json")
        self.assertEqual(o3["metadata"]["managedFields"], entries)
        code, o3 = self.req("PATCH", f"{IP}/mig", {"metadata": {"managedFields": moved,
                                                               "resourceVersion": o2["metadata"]["resourceVersion"]}},
                            ctype="application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertEqual(o3["metadata"]["managedFields"], moved)
        self.assertEqual(o3["metadata"]["generation"], 1)
        code, o4 = apply({"phase": "Done"}, o3["metadata"]["resourceVersion"])
        self.assertEqual((code, o4["status"]), (200, {"phase": "Done"}))
        self.assertEqual({(m["manager"], m["operation"]) for m in o4["metadata"]["managedFields"]},
                         {(m["manager"], m["operation"]) for m in moved})
        # [{}] resets them
        code, o5 = self.req("PATCH", f"{IP}/mig", {"metadata": {"managedFields": [{}]}}, ctype="application/merge-patch+json")
        self.assertNotIn("managedFields", o5["metadata"])

    def test_server_side_apply_conflicts(self):
        leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
        code, _ = self.req("POST", f"{leases}?fieldManager=creator", {"metadata": {"name": "leader"}, "spec": {}})
        self.assertEqual(code, 201)

        def apply(manager, holder, force=False):
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "spec": {"holderIdentity": holder, "leaseDurationSeconds": 5}}
            return self.req("PATCH", f"{leases}/leader?fieldManager={manager}" + ("&force=true" if force else ""),
                            body, ctype="application/apply-patch+yaml")
        code, o = apply("mgr-a", "a")
        self.assertEqual((code, o["spec"]["holderIdentity"]), (200, "a"))
        code, st = apply("mgr-b", "b")
        self.assertEqual((code, st["reason"]), (409, "Conflict"))
        self.assertIn('conflict with "mgr-a"', st["message"])
        self.assertIn(".spec.holderIdentity", {c["field"] for c in st["details"]["causes"]})
        # the same value is shared ownership, not a conflict
        code, o = apply("mgr-c", "a")
        self.assertEqual(code, 200)
        # an update (strategic merge patch) by mgr-a renews; a release removes the fields and their owners
        code, o = self.req("PATCH", f"{leases}/leader?fieldManager=mgr-a", {"spec": {"renewTime": "2024-01-01T00:00:00.000000Z"}},
                           ctype="application/strategic-merge-patch+json")
        self.assertEqual(code, 200)
        self.assertIn("mgr-a", {m["manager"] for m in o["metadata"]["managedFields"] if m["operation"] == "Update"})
        code, o = self.req("PATCH", f"{leases}/leader?fieldManager=mgr-b",
                           {"spec": {"holderIdentity": None, "renewTime": None, "leaseDurationSeconds": None}},
                           ctype="application/strategic-merge-patch+json")
        self.assertEqual((code, o["spec"]), (200, {}))
        code, o = apply("mgr-b", "b")
        self.assertEqual((code, o["spec"]["holderIdentity"]), (200, "b"))
        # force takes ownership
        code, o = apply("mgr-a", "a", force=True)
        self.assertEqual((code, o["spec"]["holderIdentity"]), (200, "a"))
        owners = {m["manager"]: m for m in o["metadata"]["managedFields"]}
        self.assertNotIn("f:holderIdentity", (owners.get("mgr-b", {}).get("fieldsV1") or {}).get("f:spec", {}))

    def test_optimistic_concurrency(self):
        code, o = self.req("POST", CM, {"metadata": {"name": "occ"}, "data": {"a": "1"}})
        stale = dict(o)
        o["data"] = {"a": "2"}
        code, o2 = self.req("PUT", f"{CM}/occ", o)
        self.assertEqual(code, 200)
        self.assertGreater(int(o2["metadata"]["resourceVersion"]), int(o["metadata"]["resourceVersion"]))
        stale["data"] = {"a": "3"}
        code, st = self.req("PUT", f"{CM}/occ", stale)
        self.assertEqual((code, st["reason"], st["kind"]), (409, "Conflict", "Status"))
        code, st = self.req("PATCH", f"{CM}/occ", {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                                                   "data": {"a": "4"}}, ctype="application/merge-patch+json")
        self.assertEqual(code, 409)
        code, st = self.req("PUT", f"{CM}/missing", {"metadata": {"name": "missing"}})
        self.assertEqual(code, 404)

    def test_delete_finalizers_and_gc(self):
        code, parent = self.req("POST", IP, {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
                                             "metadata": {"name": "gcp", "finalizers": ["imagepush.dev/cleanup"]}, "spec": {}})
        ref = {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "name": "gcp",
               "uid": parent["metadata"]["uid"], "controller": True}
        self.req("POST", CM, {"metadata": {"name": "gc-child", "ownerReferences": [ref]}})
        code, grandchild_owner = self.req("GET", f"{CM}/gc-child")
        ref2 = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-child", "uid": grandchild_owner["metadata"]["uid"]}
        self.req("POST", CM, {"metadata": {"name": "gc-grandchild", "ownerReferences": [ref2]}})
        code, o = self.req("DELETE", f"{IP}/gcp")
        self.assertEqual(code, 200)
        self.assertIn("deletionTimestamp", o["metadata"])
        self.assertEqual(self.req("GET", f"{IP}/gcp")[0], 200)
        self.assertEqual(self.req("GET", f"{CM}/gc-child")[0], 200)
        code, o = self.req("PATCH", f"{IP}/gcp", {"metadata": {"finalizers": None}}, ctype="application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertEqual(self.req("GET", f"{IP}/gcp")[0], 404)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (self.req("GET", f"{CM}/gc-child")[0] != 404
                                               or self.req("GET", f"{CM}/gc-grandchild")[0] != 404):
            time.sleep(0.05)
        self.assertEqual(self.req("GET", f"{CM}/gc-child")[0], 404)
        self.assertEqual(self.req("GET", f"{CM}/gc-grandchild")[0], 404)
        code, st = self.req("DELETE", f"{CM}/gc-child")
        self.assertEqual(code, 404)

    def test_fault_file(self):
        self.req("POST", IP, {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "metadata": {"name": "flt"}, "spec": {}})
        with open(self.d.fault_file, "w") as f:
            json.dump([{"method": "PATCH", "pathRegex": "/imagepushes/flt/status$", "status": 409, "times": 1}], f)
        patch = {"status": {"phase": "x"}}
        code, st = self.req("PATCH", f"{IP}/flt/status", patch, ctype="application/merge-patch+json")
        self.assertEqual((code, st["kind"], st["code"], st["reason"]), (409, "Status", 409, "Conflict"))
        code, o = self.req("PATCH", f"{IP}/flt/status", patch, ctype="application/merge-patch+json")
        self.assertEqual((code, o["status"]), (200, {"phase": "x"}))
        with open(self.d.fault_file, "w") as f:
            json.dump([{"method": "GET", "pathRegex": "/imagepushes/flt$", "status": 500}], f)
        self.assertEqual(self.req("GET", f"{IP}/flt")[0], 500)
        self.assertEqual(self.req("GET", f"{IP}/flt")[0], 500)
        with open(self.d.fault_file, "w") as f:
            f.write("[]")
        self.assertEqual(self.req("GET", f"{IP}/flt")[0], 200)

    # -- node simulator --


    def run_pod(self, body, timeout=15):
        return self.d.run_pod(body, timeout)

    def test_job_success(self):
        code, j = self.req("POST", JOBS, job("ok", "echo hi; echo msg > /dev/termination-log; echo err >&2; exit 0"))
        self.assertEqual(code, 201, j)
        self.assertEqual(j["spec"]["backoffLimit"], 6)
        self.assertEqual(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed")
        self.assertEqual(j["spec"]["template"]["metadata"]["labels"]["job-name"], "ok")
        j = self.d.wait_for(f"{JOBS}/ok", finished)
        self.assertTrue(cond(j, "Complete"), j["status"])
        self.assertEqual([c["type"] for c in j["status"]["conditions"]], ["SuccessCriteriaMet", "Complete"])
        self.assertEqual((j["status"]["succeeded"], j["status"]["terminating"]), (1, 0))
        self.assertEqual(j["status"]["completionTime"], cond(j, "Complete")["lastTransitionTime"])
        self.assertIn("startTime", j["status"])
        pods = self.pods_of("ok")
        self.assertEqual(len(pods), 1)
        p = pods[0]
        self.assertRegex(p["metadata"]["name"], r"^ok-[a-z0-9]{5}$")
        self.assertEqual(p["status"]["phase"], "Succeeded")
        self.assertEqual(p["spec"]["nodeName"], "sim-node")  # bound by the scheduler
        self.assertNotIn("finalizers", p["metadata"])  # job-tracking finalizer removed once counted
        self.assertEqual(p["metadata"]["ownerReferences"][0]["uid"], j["metadata"]["uid"])
        self.assertTrue(p["metadata"]["ownerReferences"][0]["controller"])
        term = state(p)["terminated"]
        self.assertEqual((term["exitCode"], term["reason"], term["message"]), (0, "Completed", "msg\n"))
        self.assertTrue(term["startedAt"] and term["finishedAt"] and term["containerID"].startswith("containerd://"))
        code, text, ctype = self.req("GET", f"{PODS}/{p['metadata']['name']}/log", raw=True)
        self.assertEqual((code, text), (200, b"hi\nerr\n"))
        self.assertTrue(ctype.startswith("text/plain"))
        self.assertEqual(self.req("GET", f"{PODS}/{p['metadata']['name']}/log?tailLines=1", raw=True)[1], b"err\n")
        self.assertEqual(self.req("GET", f"{PODS}/{p['metadata']['name']}/log?limitBytes=1", raw=True)[1], b"h")
        self.assertTrue({"SuccessfulCreate", "Completed"} <= {e["reason"] for e in events_of(self.d, "ok")})
        self.assertTrue({"Scheduled", "Pulled", "Created", "Started"}
                        <= {e["reason"] for e in events_of(self.d, p["metadata"]["name"])})
        # deleting the Job in the background deletes its pods, after the GC delay
        self.req("DELETE", f"{JOBS}/ok?propagationPolicy=Background")
        self.assertEqual(len(self.pods_of("ok")), 1)
        self.d.wait_for(f"{PODS}?labelSelector=job-name%3Dok", lambda l: not l["items"], timeout=5)

    def test_job_pod_failure_policy_fail_job(self):
        spec = {"backoffLimit": 6, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}}
        code, j = self.req("POST", JOBS, job("pfp", "exit 3", **spec))
        self.assertEqual(j["spec"]["podReplacementPolicy"], "Failed")  # the default with a podFailurePolicy
        j = self.d.wait_for(f"{JOBS}/pfp", finished)
        c = cond(j, "Failed")
        self.assertTrue(c, j["status"])
        self.assertEqual(c["reason"], "PodFailurePolicy")
        self.assertRegex(c["message"], r"^Container worker for pod default/pfp-\w+ failed with exit code 3 matching "
                                       r"FailJob rule at index 0$")
        self.assertEqual(cond(j, "FailureTarget")["message"], c["message"])
        time.sleep(0.6)  # no retry pod appears
        pods = self.pods_of("pfp")
        self.assertEqual(len(pods), 1)
        self.assertEqual(state(pods[0])["terminated"]["exitCode"], 3)
        self.assertEqual(pods[0]["status"]["phase"], "Failed")

    def test_job_backoff_limit(self):
        self.req("POST", JOBS, job("bo", "echo try; exit 5", backoffLimit=1))
        j = self.d.wait_for(f"{JOBS}/bo", finished)
        c = cond(j, "Failed")
        self.assertTrue(c, j["status"])
        self.assertEqual(c["reason"], "BackoffLimitExceeded")
        self.assertEqual(j["status"]["failed"], 2)
        pods = self.pods_of("bo")
        self.assertEqual(len(pods), 2)
        self.assertTrue(all(p["status"]["phase"] == "Failed" for p in pods))

    def test_job_active_deadline_terminates_pods_gracefully(self):
        # PID 1 (sleep) has no SIGTERM handler: the kubelet's SIGTERM is dropped, SIGKILL follows the
        # grace period (2 s); the Failed condition waits for the pod to be gone (FailureTarget first).
        self.req("POST", JOBS, job("dl", "exec sleep 30", activeDeadlineSeconds=3))
        self.d.wait_for(f"{PODS}?labelSelector=job-name%3Ddl", lambda l: l["items"] and "running" in state(l["items"][0]))
        j = self.d.wait_for(f"{JOBS}/dl", lambda j: cond(j, "FailureTarget"), timeout=10)
        self.assertEqual(cond(j, "FailureTarget")["reason"], "DeadlineExceeded")
        self.assertFalse(cond(j, "Failed"))
        self.assertEqual(j["status"].get("terminating"), 1, j["status"])
        p = self.pods_of("dl")[0]
        self.assertTrue(p["metadata"]["deletionTimestamp"])
        self.assertEqual(p["metadata"]["deletionGracePeriodSeconds"], 2)
        self.assertIn("running", state(p))
        j = self.d.wait_for(f"{JOBS}/dl", finished, timeout=10)
        c = cond(j, "Failed")
        self.assertEqual((c["reason"], c["message"]), ("DeadlineExceeded", "Job was active longer than specified "
                                                                           "deadline"))
        self.assertEqual((j["status"]["failed"], j["status"]["terminating"]), (1, 0))
        self.assertIn("Killing", {e["reason"] for e in events_of(self.d, p["metadata"]["name"])})
        self.d.wait_for("/_sim/processes", lambda x: not any(q["job"] == "dl" for q in x["processes"]), timeout=5)

    def test_container_sees_only_its_image_and_volumes(self):
        # A host image: the host's system directories (an overlay), the runtime's /proc, /dev,
        # /sys, and the kubelet's files; the command is PID 1 of its own PID namespace.
        script = ("echo pid=$$$$; ls /; echo ---; ls /dev; echo ---; ls /proc | grep '^[0-9]' | sort -n | tail -1; "
                  "cat /etc/hostname; grep -c root /etc/passwd; echo x > /usr/written && echo usr-writable; "
                  "ls /work /root/.. 2>&1 | head -1")
        p, out = self.run_pod(pod("fs-host", script))
        self.assertEqual(p["status"]["phase"], "Succeeded", out)
        head, dev, rest = out.split("---\n")
        self.assertEqual(head.split("\n")[0], "pid=1")
        host_dirs = {d for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32") if os.path.exists("/" + d)}
        self.assertEqual(set(head.split()[1:]), host_dirs | {"dev", "etc", "home", "mnt", "opt", "proc", "root", "run",
                                                             "srv", "sys", "tmp", "usr", "var"})
        self.assertEqual(set(dev.split()), {"core", "fd", "full", "null", "random", "shm", "stderr", "stdin",
                                            "stdout", "termination-log", "tty", "urandom", "zero"})
        lines = rest.split("\n")
        self.assertLess(int(lines[0]), 10)  # its own PID namespace: PID 1 and its few children
        self.assertEqual(lines[1], "fs-host")
        self.assertGreaterEqual(int(lines[2]), 1)
        self.assertEqual(lines[3], "usr-writable")  # the image's layer is writable (copy-up), not the host's
        self.assertFalse(os.path.exists("/usr/written"))
        self.assertIn("No such file", lines[4])
        # A --binary-map image: the distroless layout with the mapped binary and its libraries,
        # and nothing else: no shell.
        code, _ = self.req("POST", PODS, {"metadata": {"name": "fs-bin"}, "spec": {"restartPolicy": "Never",
                           "containers": [{"name": "main", "image": "tools.test/lister:1",
                                           "args": ["-ln", "/", "/etc", "/home", "/usr/local/bin"]}]}})
        p = self.d.wait_for(f"{PODS}/fs-bin", terminal)
        out = self.req("GET", f"{PODS}/fs-bin/log", raw=True)[1].decode()
        self.assertEqual(p["status"]["phase"], "Succeeded", out)
        names = {ln.split()[-1] for ln in out.splitlines() if ln and ln[0] in "-dl"}
        self.assertTrue({"etc", "home", "proc", "dev", "sys", "tmp", "usr", "root", "var", "passwd", "group",
                         "nsswitch.conf", "hosts", "resolv.conf", "hostname", "nonroot", "lister"} <= names, out)
        self.assertFalse({"bin", "sh", "work"} & names, out)
        self.assertRegex(out, r"drwx------ +\d+ 65532 65532 .* nonroot")
        self.assertRegex(out, r"drwxrwxrwt .* tmp")
        p, out = self.run_pod(pod("fs-bin-passwd", "", image="tools.test/catter:1",
                                  container={"command": ["catter", "/etc/passwd"]}))
        self.assertEqual(out, "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:"
                              "/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        p, out = self.run_pod(pod("fs-bin-glob", "", image="other.test/x/tool-cat:2",
                                  container={"command": ["catter", "/etc/group"]}))
        self.assertEqual((p["status"]["phase"], out.splitlines()[-1]), ("Succeeded", "nonroot:x:65532:"))
        p, out = self.run_pod(pod("fs-bin-sh", "true", image="tools.test/catter:1"))
        term = state(p)["terminated"]
        self.assertEqual((p["status"]["phase"], term["exitCode"], term["reason"]), ("Failed", 128, "StartError"))
        self.assertIn('exec: "/bin/sh": stat /bin/sh: no such file or directory', term["message"])

    def test_user_groups_and_privileges(self):
        status = "grep -E '^(Uid|Gid|Groups|NoNewPrivs|CapEff|CapBnd):' /proc/self/status"
        body = pod("ids", f"id -u; id -g; {status}; touch /x 2>&1; touch /tmp/ok && echo tmp-ok",
                   securityContext={"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                                    "supplementalGroups": [4000]},
                   volumes=[{"name": "tmp", "emptyDir": {}}],
                   container={"securityContext": {"allowPrivilegeEscalation": False,
                                                  "capabilities": {"drop": ["ALL"]},
                                                  "readOnlyRootFilesystem": True},
                              "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]})
        p, out = self.run_pod(body)
        f = {ln.split(":")[0]: ln.split(":", 1)[1].split() for ln in out.splitlines() if ":" in ln}
        lines = out.splitlines()
        self.assertEqual(lines[:2], ["1000", "3000"], out)
        self.assertEqual(f["Uid"], ["1000"] * 4)
        self.assertEqual(f["Gid"], ["3000"] * 4)
        self.assertEqual(f["Groups"], ["2000", "3000", "4000"])
        self.assertEqual((f["NoNewPrivs"], f["CapEff"], f["CapBnd"]), (["1"], ["0000000000000000"],
                                                                        ["0000000000000000"]))
        self.assertIn("touch: cannot touch '/x': Read-only file system", out)
        self.assertIn("tmp-ok", out)  # volumes stay writable
        # root, the default capabilities minus one, plus one
        p, out = self.run_pod(pod("ids-root", f"id -u; {status}", container={"securityContext": {
            "capabilities": {"drop": ["NET_RAW"], "add": ["SYS_TIME"]}}}))
        f = {ln.split(":")[0]: ln.split(":", 1)[1].split() for ln in out.splitlines() if ":" in ln}
        caps = int(f["CapEff"][0], 16)
        self.assertEqual((out.splitlines()[0], f["NoNewPrivs"]), ("0", ["0"]))
        self.assertEqual(caps, (0xa80425fb & ~(1 << 13)) | (1 << 25))
        self.assertEqual(f["CapBnd"], f["CapEff"])

    def test_run_as_non_root_is_checked_against_the_image_user(self):
        code, _ = self.req("POST", PODS, pod("nonroot", "true", securityContext={"runAsNonRoot": True}))
        p = self.d.wait_for(f"{PODS}/nonroot", lambda p: state(p).get("waiting", {}).get("reason")
                            == "CreateContainerConfigError")
        self.assertEqual(state(p)["waiting"]["message"], 'container has runAsNonRoot and image will run as root '
                         f'(pod: "nonroot_default({p["metadata"]["uid"]})", container: main)')
        self.assertEqual(p["status"]["phase"], "Pending")
        self.assertIn("Error: container has runAsNonRoot and image will run as root",
                      {e["message"].split(" (pod")[0] for e in events_of(self.d, "nonroot")})
        # the distroless-like image runs as 65532 from its USER: fine
        p, out = self.run_pod(pod("nonroot-ok", "", image="tools.test/catter:1", securityContext={"runAsNonRoot": True},
                                  container={"command": ["catter", "/proc/self/status"]}))
        self.assertRegex(out, r"Uid:\t65532\t")
        self.assertRegex(out, r"Groups:\t65532 \n")
        self.req("DELETE", f"{PODS}/nonroot")

    def test_images_that_cannot_be_pulled(self):
        self.req("POST", PODS, pod("nopull", "true", image="registry.invalid/team/app:v1"))
        p = self.d.wait_for(f"{PODS}/nopull", lambda p: state(p).get("waiting", {}).get("reason") == "ErrImagePull")
        self.assertEqual(state(p)["waiting"]["message"], 'rpc error: code = NotFound desc = failed to pull and unpack '
                         'image "registry.invalid/team/app:v1": failed to resolve reference '
                         '"registry.invalid/team/app:v1": registry.invalid/team/app:v1: not found')
        p = self.d.wait_for(f"{PODS}/nopull", lambda p: state(p).get("waiting", {}).get("reason") == "ImagePullBackOff")
        self.assertEqual(state(p)["waiting"]["message"], 'Back-off pulling image "registry.invalid/team/app:v1"')
        evs = {(e["reason"], e["message"]) for e in events_of(self.d, "nopull")}
        self.assertTrue({("Pulling", 'Pulling image "registry.invalid/team/app:v1"'), ("Failed", "Error: ErrImagePull"),
                         ("BackOff", 'Back-off pulling image "registry.invalid/team/app:v1"'),
                         ("Failed", "Error: ImagePullBackOff")} <= evs, evs)
        self.assertTrue(any(r == "Failed" and m.startswith('Failed to pull image "registry.invalid/team/app:v1": rpc '
                                                           'error: code = NotFound') for r, m in evs), evs)
        self.req("POST", PODS, pod("badref", "true", image="Example.test/UPPER:1"))
        p = self.d.wait_for(f"{PODS}/badref", lambda p: state(p).get("waiting", {}).get("reason") == "InvalidImageName")
        self.assertEqual(state(p)["waiting"]["message"], 'Failed to apply default image tag "Example.test/UPPER:1": '
                         'couldn\'t parse image name "Example.test/UPPER:1": invalid reference format')
        for n in ("nopull", "badref"):
            self.req("DELETE", f"{PODS}/{n}")

    def test_signals_reach_pid_1_and_deletion_is_graceful(self):
        # (a finalizer of the test's own keeps the pod object around after the kubelet is done with it)
        self.req("POST", PODS, pod("nohandler", "exec sleep 60", terminationGracePeriodSeconds=3,
                                   metadata={"finalizers": ["example.test/hold"]}))
        self.req("POST", PODS, pod("trapper", "trap 'echo got TERM; exit 7' TERM; while :; do sleep 0.1; done",
                                   terminationGracePeriodSeconds=30))
        for n in ("nohandler", "trapper"):
            self.d.wait_for(f"{PODS}/{n}", lambda p: "running" in state(p))
        # SIGTERM from the host to a PID 1 without a handler is dropped by the kernel
        code, _ = self.req("POST", "/_sim/kill?namespace=default&pod=nohandler&signal=TERM")
        self.assertEqual(code, 200)
        time.sleep(0.5)
        self.assertIn("running", state(self.req("GET", f"{PODS}/nohandler")[1]))
        # graceful deletion: the object stays with a deletionTimestamp; SIGKILL after the grace period
        t0 = time.monotonic()
        code, deleted = self.req("DELETE", f"{PODS}/nohandler")
        self.assertEqual((code, deleted["metadata"]["deletionGracePeriodSeconds"]), (200, 3))
        self.assertIn("deletionTimestamp", deleted["metadata"])
        code, tr = self.req("DELETE", f"{PODS}/trapper", {"gracePeriodSeconds": 10})
        self.assertEqual(tr["metadata"]["deletionGracePeriodSeconds"], 10)
        seen = self.d.wait_for(f"{PODS}/nohandler", terminal, timeout=10)
        self.assertGreater(time.monotonic() - t0, 2.5)
        term = state(seen)["terminated"]
        self.assertEqual((seen["status"]["phase"], term["exitCode"], term["reason"]), ("Failed", 137, "Error"))
        self.req("PATCH", f"{PODS}/nohandler", {"metadata": {"finalizers": None}}, ctype="application/merge-patch+json")
        self.d.wait_for(PODS, lambda l: not {"nohandler", "trapper"} & {p["metadata"]["name"] for p in l["items"]},
                        timeout=10)
        self.assertLess(time.monotonic() - t0, 8)  # the trapper exited on SIGTERM, long before its 10 s
        self.assertIn("Killing", {e["reason"] for e in events_of(self.d, "trapper")})

    def test_secret_volumes_as_the_kubelet_writes_them(self):
        self.req("POST", "/api/v1/namespaces/default/secrets",
                 {"metadata": {"name": "vcreds"}, "stringData": {"token": "s3cret", "other": "x"}})
        show = ("cd /creds; stat -c '%n %u %g %a' . ..data token; ls -a; readlink ..data token; "
                "stat -L -c '%n %u %g %a' token other; cat token 2>&1; echo; ls -ld ..20* | cut -c1-10")
        vols = [{"name": "creds", "secret": {"secretName": "vcreds", "defaultMode": 0o440}}]
        mounts = [{"name": "creds", "mountPath": "/creds"}]
        p, out = self.run_pod(pod("sec-nofsgroup", show, securityContext={"runAsUser": 1000}, volumes=vols,
                                  container={"volumeMounts": mounts}))
        lines = out.splitlines()
        self.assertEqual(lines[0], ". 0 0 1777", out)
        self.assertEqual(lines[1], "..data 0 0 777")
        self.assertEqual(lines[2], "token 0 0 777")
        ls = lines[3:9]
        self.assertEqual(ls[:2], [".", ".."])
        self.assertRegex(ls[2], r"^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$", out)
        self.assertEqual(ls[3:], ["..data", "other", "token"])
        self.assertEqual(lines[9:11], [ls[2], "..data/token"])
        self.assertEqual(lines[11:13], ["token 0 0 440", "other 0 0 440"])
        self.assertEqual(lines[13], "cat: token: Permission denied")
        self.assertEqual(lines[-1], "drwxr-xr-x")
        p, out = self.run_pod(pod("sec-fsgroup", show, securityContext={"runAsUser": 1000, "fsGroup": 2000},
                                  volumes=vols, container={"volumeMounts": mounts}))
        lines = out.splitlines()
        self.assertEqual(lines[0], ". 0 2000 3777", out)
        self.assertEqual(lines[11:14], ["token 0 2000 440", "other 0 2000 440", "s3cret"])
        self.assertEqual(lines[-1], "drwxr-sr-x")
        # defaultMode is defaulted to 0644 by the API server; items choose paths and modes
        code, created = self.req("POST", PODS, pod("sec-items", "stat -L -c '%n %a' /c/sub/t /c/o; ls /c",
                                 volumes=[{"name": "c", "secret": {"secretName": "vcreds", "items": [
                                     {"key": "token", "path": "sub/t", "mode": 0o400}, {"key": "other", "path": "o"}]}}],
                                 container={"volumeMounts": [{"name": "c", "mountPath": "/c"}]}))
        self.assertEqual(created["spec"]["volumes"][0]["secret"]["defaultMode"], 420)
        p = self.d.wait_for(f"{PODS}/sec-items", terminal)
        out = self.req("GET", f"{PODS}/sec-items/log", raw=True)[1].decode()
        self.assertEqual(out, "/c/sub/t 400\n/c/o 644\no\nsub\n")
        # secret volumes are read-only, even without readOnly in the mount
        p, out = self.run_pod(pod("sec-ro", "touch /c/new 2>&1", volumes=vols,
                                  container={"volumeMounts": [{"name": "creds", "mountPath": "/c"}]}))
        self.assertIn("Read-only file system", out)

    def test_service_accounts_are_admitted_and_their_tokens_projected(self):
        sas = "/api/v1/namespaces/default/serviceaccounts"
        # A ServiceAccount that does not exist: the pod is refused, and a Job's pod is retried.
        code, err = self.req("POST", PODS, pod("sa-missing", "true", serviceAccountName="builder"))
        self.assertEqual(code, 403, err)
        self.assertEqual(err["message"], 'pods "sa-missing" is forbidden: error looking up service account '
                                         'default/builder: serviceaccount "builder" not found')
        j = job("sa-job", "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace")
        j["spec"]["template"]["spec"]["serviceAccountName"] = "builder"
        self.assertEqual(self.req("POST", JOBS, j)[0], 201)
        self.d.wait_for(f"/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dsa-job",
                        lambda l: any(e["reason"] == "FailedCreate" and "serviceaccount \"builder\" not found"
                                      in e["message"] for e in l["items"]))
        self.assertEqual(self.pods_of("sa-job"), [])
        self.assertEqual(self.req("POST", sas, {"metadata": {"name": "builder"},
                                                "imagePullSecrets": [{"name": "pull"}]})[0], 201)
        self.d.wait_for(f"{JOBS}/sa-job", lambda o: cond(o, "Complete"), timeout=30)
        # The token, the cluster's CA and the namespace, mounted read-only in every container.
        show = "cd /var/run/secrets/kubernetes.io/serviceaccount && ls && cat namespace && echo && cat token"
        p, out = self.run_pod(pod("sa-token", show, serviceAccountName="builder"))
        vols = [v for v in p["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
        self.assertEqual(len(vols), 1, p["spec"]["volumes"])
        self.assertEqual([s for src in vols[0]["projected"]["sources"] for s in src],
                         ["serviceAccountToken", "configMap", "downwardAPI"])
        self.assertIn({"name": vols[0]["name"], "readOnly": True,
                       "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                      p["spec"]["containers"][0]["volumeMounts"])
        self.assertEqual(p["spec"]["imagePullSecrets"], [{"name": "pull"}])
        lines = out.splitlines()
        self.assertEqual(lines[:4], ["ca.crt", "namespace", "token", "default"], out)
        claims = json.loads(base64.urlsafe_b64decode(lines[4].split(".")[1] + "=="))
        self.assertEqual(claims["sub"], "system:serviceaccount:default:builder")
        self.assertEqual(claims["kubernetes.io"]["pod"]["uid"], p["metadata"]["uid"])
        self.assertEqual(claims["aud"], ["https://kubernetes.default.svc.cluster.local"])
        self.assertEqual(self.req("GET", f"{CM}/kube-root-ca.crt")[0], 200)
        # Automounting: the pod's choice, else the ServiceAccount's, else on.
        self.req("POST", sas, {"metadata": {"name": "quiet"}, "automountServiceAccountToken": False})
        for name, sa, automount, mounted in (("am-pod-off", "builder", False, False),
                                             ("am-sa-off", "quiet", None, False),
                                             ("am-pod-on", "quiet", True, True)):
            spec = {"serviceAccountName": sa}
            if automount is not None:
                spec["automountServiceAccountToken"] = automount
            code, created = self.req("POST", PODS, pod(name, "true", **spec))
            self.assertEqual(code, 201, created)
            has = any(v["name"].startswith("kube-api-access-") for v in created["spec"].get("volumes") or [])
            self.assertEqual(has, mounted, name)
            self.assertEqual(bool(created["spec"]["containers"][0].get("volumeMounts")), mounted, name)
        # A ServiceAccount deleted after admission: kubelet cannot get a token, the pod waits.
        self.req("POST", sas, {"metadata": {"name": "gone"}})
        self.assertEqual(self.req("POST", PODS, pod("sa-gone", "true", serviceAccountName="gone",
                                                    nodeSelector={"sa-test": "later"}))[0], 201)
        self.req("DELETE", f"{sas}/gone")
        self.assertEqual(self.req("POST", "/api/v1/nodes", {"metadata": {"name": "sa-node",
                                                                          "labels": {"sa-test": "later"}}})[0], 201)
        self.addCleanup(self.req, "DELETE", "/api/v1/nodes/sa-node")
        self.d.wait_for(f"/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dsa-gone",
                        lambda l: any('failed to fetch token: serviceaccounts "gone" not found' in e["message"]
                                      for e in l["items"]))

    def test_missing_secret_or_key_waits_in_container_creating(self):
        body = pod("nosec", "cat /creds/token", volumes=[{"name": "creds", "secret": {"secretName": "later"}}],
                   container={"volumeMounts": [{"name": "creds", "mountPath": "/creds"}]})
        self.req("POST", PODS, body)
        body = pod("nokey", "true", volumes=[{"name": "creds", "secret": {"secretName": "vkeys", "items": [
                   {"key": "absent", "path": "a"}]}}], container={"volumeMounts": [{"name": "creds", "mountPath": "/c"}]})
        self.req("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "vkeys"}, "stringData": {"k": "v"}})
        self.req("POST", PODS, body)
        self.req("POST", PODS, pod("optional", "ls /c | wc -l", volumes=[{"name": "c", "secret": {
            "secretName": "never", "optional": True}}], container={"volumeMounts": [{"name": "c", "mountPath": "/c"}]}))
        time.sleep(1.0)
        for name, msg in (("nosec", 'MountVolume.SetUp failed for volume "creds" : secret "later" not found'),
                          ("nokey", 'MountVolume.SetUp failed for volume "creds" : references non-existent secret '
                                    'key: absent')):
            p = self.req("GET", f"{PODS}/{name}")[1]
            self.assertEqual((p["status"]["phase"], state(p)["waiting"]["reason"]), ("Pending", "ContainerCreating"))
            self.assertIn(("FailedMount", msg), {(e["reason"], e["message"]) for e in events_of(self.d, name)})
            code, st = self.req("GET", f"{PODS}/{name}/log")
            self.assertEqual((code, st["message"]), (400, f'container "main" in pod "{name}" is waiting to start: '
                                                          'ContainerCreating'))
        p = self.d.wait_for(f"{PODS}/optional", terminal)
        self.assertEqual(p["status"]["phase"], "Succeeded")
        # an env secretKeyRef to a missing Secret: CreateContainerConfigError
        self.req("POST", PODS, pod("nosec-env", "true", container={"env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}))
        p = self.d.wait_for(f"{PODS}/nosec-env", lambda p: state(p).get("waiting", {}).get("reason")
                            == "CreateContainerConfigError")
        self.assertEqual(state(p)["waiting"]["message"], 'secret "absent" not found')
        # the Secret appears: the pod starts
        self.req("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "later"}, "stringData": {"token": "t"}})
        p = self.d.wait_for(f"{PODS}/nosec", terminal)
        self.assertEqual(p["status"]["phase"], "Succeeded")
        for n in ("nosec", "nokey", "optional", "nosec-env"):
            self.req("DELETE", f"{PODS}/{n}")

    def test_volumes_env_and_mounts(self):
        self.req("POST", "/api/v1/namespaces/default/secrets",
                 {"metadata": {"name": "creds"}, "type": "kubernetes.io/dockerconfigjson",
                  "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()},
                  "stringData": {"token": "s3cret"}})
        self.req("POST", "/api/v1/namespaces/default/persistentvolumeclaims",
                 {"metadata": {"name": "layouts"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                            "resources": {"requests": {"storage": "1Gi"}}}})
        pvc_dir = os.path.join(self.d.dir, "pvcs", "default", "layouts")
        os.makedirs(os.path.join(pvc_dir, "sub"), exist_ok=True)
        with open(os.path.join(pvc_dir, "index.json"), "w") as f:
            f.write("{}")
        host = tempfile.mkdtemp(prefix="kd-host-")
        os.chmod(host, 0o755)
        script = ("cat /layout/index.json; echo; echo \"$TOKEN $POD $CFG\"; pwd; ls -A /creds | grep -v '^[.][.]'; "
                  "cat /sub/x 2>&1; "
                  "echo hello > /tmp/x/images/new; touch /layout/w 2>&1; echo > /dev/termination-log; echo done")
        body = pod("vol", script, volumes=[
            {"name": "layout", "persistentVolumeClaim": {"claimName": "layouts", "readOnly": True}},
            {"name": "creds", "secret": {"secretName": "creds"}}, {"name": "tmp", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": host, "type": "Directory"}}],
            container={"workingDir": "/layout", "volumeMounts": [
                {"name": "host", "mountPath": "/tmp/x/images"}, {"name": "tmp", "mountPath": "/tmp"},
                {"name": "layout", "mountPath": "/layout"}, {"name": "creds", "mountPath": "/creds"},
                {"name": "layout", "mountPath": "/sub", "subPath": "sub"}],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "CFG", "value": "/creds/.dockerconfigjson"}]})
        p, out = self.run_pod(body)
        self.assertEqual(out.splitlines(), ["{}", "s3cret vol /creds/.dockerconfigjson", "/layout", ".dockerconfigjson",
                                            "token", "cat: /sub/x: No such file or directory",
                                            "touch: cannot touch '/layout/w': Read-only file system", "done"], out)
        with open(os.path.join(host, "new")) as f:  # the hostPath mounted over the emptyDir (parents first)
            self.assertEqual(f.read(), "hello\n")
        shutil.rmtree(host)
        self.assertEqual(self.req("GET", "/api/v1/namespaces/default/persistentvolumeclaims/layouts")[1]["status"]
                         ["phase"], "Bound")

    def test_termination_message_keeps_the_tail(self):
        script = ("i=0; while [ $i -lt 50 ]; do printf '%0100d' $i >> /dev/termination-log; i=$((i+1)); done; "
                  "printf END >> /dev/termination-log; stat -c %a /dev/termination-log")
        p, out = self.run_pod(pod("tail", script))
        msg = state(p)["terminated"]["message"]
        full = "".join(f"{i:0100d}" for i in range(50)) + "END"
        self.assertEqual(msg, full[-4096:])
        self.assertEqual(out, "666\n")  # the kubelet creates the file world-writable
        p, out = self.run_pod(pod("fallback", "for i in 1 2 3; do echo line$i; done; exit 2",
                                  container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
        self.assertEqual(state(p)["terminated"]["message"], "line1\nline2\nline3\n")

    def test_garbage_collection_delay_and_propagation(self):
        def owner(name):
            code, o = self.req("POST", CM, {"metadata": {"name": name}})
            return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": o["metadata"]["uid"],
                    "blockOwnerDeletion": True}
        for policy in ("Background", "Orphan", "Foreground"):
            ref = owner(f"gc-owner-{policy.lower()}")
            dep = f"gc-dep-{policy.lower()}"
            self.req("POST", CM, {"metadata": {"name": dep, "ownerReferences": [ref]}})
            code, o = self.req("DELETE", f"{CM}/{ref['name']}", {"propagationPolicy": policy})
            self.assertEqual(code, 200)
            self.assertEqual(self.req("GET", f"{CM}/{dep}")[0], 200)  # nothing happens before the GC delay
            if policy == "Background":
                self.assertEqual(self.req("GET", f"{CM}/{ref['name']}")[0], 404)
                self.d.wait_for(CM, lambda l: dep not in {i["metadata"]["name"] for i in l["items"]}, timeout=5)
            elif policy == "Orphan":
                self.assertEqual(o["metadata"]["finalizers"], ["orphan"])
                self.d.wait_for(CM, lambda l: ref["name"] not in {i["metadata"]["name"] for i in l["items"]},
                                timeout=5)
                self.assertNotIn("ownerReferences", self.req("GET", f"{CM}/{dep}")[1]["metadata"])
            else:
                self.assertEqual(o["metadata"]["finalizers"], ["foregroundDeletion"])
                self.assertIn("deletionTimestamp", o["metadata"])
                self.d.wait_for(CM, lambda l: not {dep, ref["name"]} & {i["metadata"]["name"] for i in l["items"]},
                                timeout=5)

    def test_deleting_a_job_without_a_policy_orphans_its_pods(self):
        self.req("POST", JOBS, job("orph", "exec sleep 60"))
        p = self.d.wait_for(f"{PODS}?labelSelector=job-name%3Dorph",
                            lambda l: l["items"] and "running" in state(l["items"][0]))["items"][0]
        self.assertEqual(p["metadata"]["finalizers"], ["batch.kubernetes.io/job-tracking"])
        code, j, hdrs = self.req("DELETE", f"{JOBS}/orph", headers=True)
        self.assertEqual(code, 200)
        self.assertEqual(j["metadata"]["finalizers"], ["orphan"])
        self.assertIn("child pods are preserved by default when jobs are deleted", hdrs.get("Warning"))
        self.d.wait_for(JOBS, lambda l: "orph" not in {i["metadata"]["name"] for i in l["items"]}, timeout=5)
        p = self.d.wait_for(f"{PODS}/{p['metadata']['name']}", lambda p: not p["metadata"].get("ownerReferences")
                            and not p["metadata"].get("finalizers"), timeout=5)
        self.assertIn("running", state(p))  # the orphan keeps running
        self.req("DELETE", f"{PODS}/{p['metadata']['name']}?gracePeriodSeconds=0")

    def test_pod_security_admission(self):
        for ns, level in (("psa-baseline", "baseline"), ("psa-restricted", "restricted")):
            self.req("POST", "/api/v1/namespaces", {"metadata": {"name": ns, "labels": {
                "pod-security.kubernetes.io/enforce": level}}})
        vols = [{"name": "layout", "hostPath": {"path": "/srv"}}]
        body = pod("hp", "true", volumes=vols)
        code, st = self.req("POST", "/api/v1/namespaces/psa-baseline/pods", body)
        self.assertEqual((code, st["reason"]), (403, "Forbidden"))
        self.assertEqual(st["message"], 'pods "hp" is forbidden: violates PodSecurity "baseline:latest": hostPath '
                                        'volumes (volume "layout")')
        code, st = self.req("POST", "/api/v1/namespaces/psa-restricted/pods", body)
        self.assertEqual(st["message"], 'pods "hp" is forbidden: violates PodSecurity "restricted:latest": '
                         'allowPrivilegeEscalation != false (container "main" must set '
                         'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "main" '
                         'must set securityContext.capabilities.drop=["ALL"]), restricted volume types (volume "layout" '
                         'uses restricted volume type "hostPath"), runAsNonRoot != true (pod or container "main" must '
                         'set securityContext.runAsNonRoot=true), seccompProfile (pod or container "main" must set '
                         'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
        # a Job is admitted (with a warning); its pods are refused, and the Job controller says so
        j = job("psa-job", "true")
        j["spec"]["template"]["spec"]["volumes"] = vols
        code, created, hdrs = self.req("POST", "/apis/batch/v1/namespaces/psa-baseline/jobs", j, headers=True)
        self.assertEqual(code, 201)
        self.assertIn('would violate PodSecurity "baseline:latest": hostPath volumes', hdrs.get("Warning"))
        evs = self.d.wait_for("/api/v1/namespaces/psa-baseline/events?fieldSelector=involvedObject.name%3Dpsa-job",
                              lambda l: len([e for e in l["items"] if e["reason"] == "FailedCreate"]) >= 2, timeout=8)
        msg = next(e["message"] for e in evs["items"] if e["reason"] == "FailedCreate")
        self.assertRegex(msg, r'^Error creating: pods "psa-job-[a-z0-9]{5}" is forbidden: violates PodSecurity '
                              r'"baseline:latest": hostPath volumes \(volume "layout"\)$')
        self.assertEqual(self.req("GET", "/api/v1/namespaces/psa-baseline/pods")[1]["items"], [])
        # privileged allows everything
        self.req("PATCH", "/api/v1/namespaces/psa-baseline", {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "privileged"}}}, ctype="application/merge-patch+json")
        self.assertEqual(self.req("POST", "/api/v1/namespaces/psa-baseline/pods", pod("hp2", "true", volumes=vols))[0], 201)
        self.req("DELETE", "/api/v1/namespaces/psa-baseline")

    def test_unschedulable_until_a_matching_node_appears(self):
        self.req("POST", PODS, pod("picky", "echo on $(cat /etc/hostname)", nodeSelector={"disk": "ssd"}))
        p = self.d.wait_for(f"{PODS}/picky", lambda p: any(c["type"] == "PodScheduled" and c["status"] == "False"
                                                           for c in p["status"].get("conditions") or []))
        c = next(c for c in p["status"]["conditions"] if c["type"] == "PodScheduled")
        msg = ("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes "
               "are available: 1 Preemption is not helpful for scheduling.")
        self.assertEqual((c["reason"], c["message"], p["status"]["phase"]), ("Unschedulable", msg, "Pending"))
        self.assertNotIn("nodeName", p["spec"])
        self.assertIn(("FailedScheduling", msg), {(e["reason"], e["message"]) for e in events_of(self.d, "picky")})
        code, _ = self.req("POST", "/api/v1/nodes", {"metadata": {"name": "fast-node", "labels": {"disk": "ssd"}}})
        self.assertEqual(code, 201)
        p = self.d.wait_for(f"{PODS}/picky", terminal)
        self.assertEqual((p["spec"]["nodeName"], p["status"]["phase"]), ("fast-node", "Succeeded"))
        node = self.req("GET", "/api/v1/nodes/fast-node")[1]
        self.assertEqual(node["status"]["conditions"][0]["type"], "Ready")
        self.req("DELETE", "/api/v1/nodes/fast-node")

    def test_tolerations_and_resources_are_validated_like_the_api_server(self):
        bad = pod("tol", "true", tolerations=[
            {"operator": "Equal", "value": "x"},
            {"key": "a", "operator": "Exists", "value": "x"},
            {"key": "a", "operator": "In"},
            {"key": "a", "operator": "Exists", "effect": "NoRun"},
            {"key": "a", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5},
        ], container={"resources": {"requests": {"memory": "512Mi", "cpu": "lots"}, "limits": {"memory": "256Mi"}}})
        code, st = self.req("POST", PODS, bad)
        self.assertEqual((code, st["reason"]), (422, "Invalid"))
        fields = {}
        for c in st["details"]["causes"]:
            fields.setdefault(c["field"], []).append(c["message"])
        self.assertIn('Invalid value: "Equal": operator must be Exists when `key` is empty, which means '
                      '"match all values and all keys"', fields["spec.tolerations[0].operator"])
        self.assertIn('Invalid value: "x": value must be empty when `operator` is \'Exists\'',
                      fields["spec.tolerations[1].operator"])
        self.assertIn('Unsupported value: "In": supported values: "Equal", "Exists"', fields["spec.tolerations[2].operator"])
        self.assertIn('Unsupported value: "NoRun": supported values: "NoExecute", "NoSchedule", "PreferNoSchedule"',
                      fields["spec.tolerations[3].effect"])
        self.assertIn("Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
                      fields["spec.tolerations[4].effect"])
        self.assertIn('Invalid value: "512Mi": must be less than or equal to memory limit of 256Mi',
                      fields["spec.containers[0].resources.requests[memory]"])
        self.assertIn("spec.containers[0].resources.requests[cpu]", fields)
        good = pod("tol-ok", "true", tolerations=[{"operator": "Exists"}, {"key": "a", "value": "b", "effect": "NoExecute",
                                                                           "tolerationSeconds": 5}],
                   container={"resources": {"requests": {"memory": "0.5Gi", "cpu": "1500m"},
                                            "limits": {"memory": "512Mi", "cpu": 2}}})
        code, st = self.req("POST", PODS, good)
        self.assertEqual(code, 201, st)

    def test_api_validation_of_pods_jobs_and_events(self):
        bad = pod("Bad", "true", nodeName="under_score", nodeSelector={"bad key": "v"},
                  volumes=[{"name": "s", "secret": {"secretName": "", "defaultMode": 0o1000, "items": [
                      {"key": "", "path": "../x"}]}}, {"name": "s", "configMap": {"name": ""}},
                      {"name": "p", "persistentVolumeClaim": {"claimName": ""}}, {"name": "h", "hostPath": {"path": ""}}],
                  container={"env": [{"name": "1BAD", "value": "x"}]})
        bad["spec"]["containers"].append({"name": "main", "image": "example.test/x:1"})
        code, st = self.req("POST", PODS, bad)
        self.assertEqual((code, st["reason"]), (422, "Invalid"))
        fields = {c["field"]: c["message"] for c in st["details"]["causes"]}
        self.assertTrue(st["message"].startswith('Pod "Bad" is invalid: [metadata.name: Invalid value: "Bad": a '
                                                 'lowercase RFC 1123 subdomain'), st["message"])
        for f, m in (("spec.volumes[0].secret.secretName", "Required value"),
                     ("spec.volumes[0].secret.defaultMode",
                      "Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive"),
                     ("spec.volumes[0].secret.items[0].key", "Required value"),
                     ("spec.volumes[0].secret.items[0].path", "Invalid value: \"../x\": must not contain '..'"),
                     ("spec.volumes[1].configMap.name", "Required value"),
                     ("spec.volumes[1].name", 'Duplicate value: "s"'),
                     ("spec.volumes[2].persistentVolumeClaim.claimName", "Required value"),
                     ("spec.volumes[3].hostPath.path", "Required value"),
                     ("spec.containers[1].name", 'Duplicate value: "main"'),
                     ("spec.nodeSelector", 'Invalid value: "bad key": name part must consist of alphanumeric '
                                           "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                                           "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                                           "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
                     ("spec.nodeName", 'Invalid value: "under_score": a lowercase RFC 1123 subdomain must consist of '
                                       "lower case alphanumeric characters, '-' or '.', and must start and end with "
                                       "an alphanumeric character (e.g. 'example.com', regex used for validation is "
                                       "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")):
            self.assertEqual(fields.get(f), m, f)
        self.assertRegex(fields["spec.containers[0].env[0].name"], r'^Invalid value: "1BAD": a valid environment '
                                                                   r'variable name must consist of')
        j = job("badjob", "true")
        j["spec"]["template"]["spec"]["volumes"] = [{"name": "v", "secret": {"secretName": ""}}]
        code, st = self.req("POST", JOBS, j)
        self.assertEqual(st["message"], 'Job.batch "badjob" is invalid: spec.template.spec.volumes[0].secret.secretName: '
                                        'Required value')
        ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
              "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "imagepush.dev/controller",
              "reportingInstance": "i", "action": "Push", "reason": "Pushed", "type": "Normal", "note": "x" * 1025,
              "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}}
        code, st = self.req("POST", "/apis/events.k8s.io/v1/namespaces/default/events", ev)
        self.assertEqual((code, st["message"]), (422, 'Event.events.k8s.io "e1" is invalid: message: Invalid value: "": '
                                                      'can have at most 1024 characters'))
        ev.update(note="ok", reason="", reportingController="")
        code, st = self.req("POST", "/apis/events.k8s.io/v1/namespaces/default/events", ev)
        self.assertEqual({c["field"] for c in st["details"]["causes"]}, {"reportingController", "reason"})
        ev.update(reason="Pushed", reportingController="imagepush.dev/controller")
        self.assertEqual(self.req("POST", "/apis/events.k8s.io/v1/namespaces/default/events", ev)[0], 201)

    def test_multi_container_pod_phase(self):
        body = pod("two", "sleep 1; exit 0", container={"name": "b-slow"})
        body["spec"]["containers"].append({"name": "a-fails", "image": "example.test/w:1",
                                           "command": ["/bin/sh", "-c", "echo bye; exit 4"]})
        self.req("POST", PODS, body)
        p = self.d.wait_for(f"{PODS}/two", lambda p: "terminated" in state(p, "a-fails") and "running" in
                            state(p, "b-slow"))
        self.assertEqual(p["status"]["phase"], "Running")
        self.assertEqual([c["name"] for c in p["status"]["containerStatuses"]], ["a-fails", "b-slow"])
        p = self.d.wait_for(f"{PODS}/two", terminal)
        self.assertEqual(p["status"]["phase"], "Failed")
        code, st = self.req("GET", f"{PODS}/two/log")
        self.assertEqual((code, st["message"]), (400, "a container name must be specified for pod two, choose one "
                                                      "of: [b-slow a-fails]"))
        self.assertEqual(self.req("GET", f"{PODS}/two/log?container=a-fails", raw=True)[1], b"bye\n")
        self.req("DELETE", f"{PODS}/two")

    def test_init_containers_and_restarts_in_place(self):
        body = pod("restarts", "echo run; if [ -e /d/once ]; then exit 0; fi; touch /d/once; exit 3",
                   restartPolicy="OnFailure", volumes=[{"name": "d", "emptyDir": {}}],
                   container={"volumeMounts": [{"name": "d", "mountPath": "/d"}]})
        body["spec"]["initContainers"] = [{"name": "prep", "image": "example.test/w:1", "command": [
            "/bin/sh", "-c", "echo from init > /d/init"], "volumeMounts": [{"name": "d", "mountPath": "/d"}]}]
        p, out = self.run_pod(body)
        self.assertEqual(p["status"]["phase"], "Succeeded")
        init = p["status"]["initContainerStatuses"][0]
        self.assertEqual((init["name"], init["state"]["terminated"]["exitCode"]), ("prep", 0))
        cs = p["status"]["containerStatuses"][0]
        self.assertEqual((cs["restartCount"], cs["lastState"]["terminated"]["exitCode"],
                          cs["state"]["terminated"]["exitCode"]), (1, 3, 0))
        self.assertEqual(out, "run\n")  # the current instance's log
        self.assertEqual(self.req("GET", f"{PODS}/restarts/log?previous=true", raw=True)[1], b"run\n")
        self.req("DELETE", f"{PODS}/restarts")

    def test_kill_endpoint_and_processes(self):
        self.req("POST", JOBS, job("kl", "exec sleep 30", backoffLimit=0))
        procs = self.d.wait_for("/_sim/processes", lambda p: any(x["job"] == "kl" for x in p["processes"]))
        p = next(x for x in procs["processes"] if x["job"] == "kl")
        self.assertEqual((p["argv"], p["container"]), (["/bin/sh", "-c", "exec sleep 30"], "worker"))
        with open(f"/proc/{p['pid']}/status") as f:
            self.assertIn("NSpid:\t" + str(p["pid"]) + "\t1\n", f.read())  # PID 1 of its own namespace
        running = self.pods_of("kl")[0]
        self.assertEqual(running["status"]["phase"], "Running")
        self.assertTrue(running["status"]["containerStatuses"][0]["ready"])
        code, _ = self.req("POST", f"/_sim/kill?namespace=default&pod={p['pod']}")
        self.assertEqual(code, 200)
        j = self.d.wait_for(f"{JOBS}/kl", finished)
        self.assertEqual(cond(j, "Failed")["reason"], "BackoffLimitExceeded")
        self.assertEqual(state(self.pods_of("kl")[0])["terminated"]["exitCode"], 137)


class SidecarAndClockTest(unittest.TestCase):
    """A second cluster: an injected sidecar, a clock an hour ahead, a short pod GC quarantine."""

    @classmethod
    def setUpClass(cls):
        cls.d = Double("--inject-sidecar", "istio-proxy", "--clock-skew", "3600", "--pod-gc-quarantine", "1")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_injected_sidecar_keeps_the_pod_running(self):
        d = self.d
        code, j = d.request("POST", JOBS, job("side", "echo worked"))
        p = d.wait_for(f"{PODS}?labelSelector=job-name%3Dside", lambda l: l["items"] and "terminated" in
                       state(l["items"][0], "worker"))["items"][0]
        self.assertEqual([c["name"] for c in p["spec"]["containers"]], ["istio-proxy", "worker"])
        self.assertIn("sidecar.istio.io/status", p["metadata"]["annotations"])
        self.assertEqual([c["name"] for c in p["status"]["containerStatuses"]], ["istio-proxy", "worker"])
        self.assertEqual(p["status"]["phase"], "Running")  # the sidecar still runs: the Job does not complete
        self.assertIn("running", state(p, "istio-proxy"))
        time.sleep(0.5)
        self.assertFalse(finished(d.request("GET", f"{JOBS}/side")[1]))
        self.assertEqual(d.request("GET", f"{PODS}/{p['metadata']['name']}/log?container=worker", raw=True)[1],
                         b"worked\n")
        procs = [x for x in d.request("GET", "/_sim/processes")[1]["processes"] if x["pod"] == p["metadata"]["name"]]
        self.assertEqual([x["container"] for x in procs], ["istio-proxy"])
        with open(f"/proc/{procs[0]['pid']}/status") as f:
            self.assertIn("Uid:\t1337\t", f.read())
        d.request("DELETE", f"{JOBS}/side?propagationPolicy=Background")
        # opting out by annotation: no sidecar, the Job completes
        j = job("noside", "echo alone")
        j["spec"]["template"]["metadata"] = {"annotations": {"sidecar.istio.io/inject": "false"}}
        d.request("POST", JOBS, j)
        j = d.wait_for(f"{JOBS}/noside", finished)
        self.assertTrue(cond(j, "Complete"))
        p = d.request("GET", f"{PODS}?labelSelector=job-name%3Dnoside")[1]["items"][0]
        self.assertEqual([c["name"] for c in p["spec"]["containers"]], ["worker"])

    def test_timestamps_follow_the_cluster_clock(self):
        d = self.d
        code, cm = d.request("POST", CM, {"metadata": {"name": "clock"}})
        p, _ = d.run_pod(pod("clock-pod", "true", metadata={
            "labels": {"x": "y"}, "annotations": {"linkerd.io/inject": "disabled"}}))
        now = datetime.datetime.now(datetime.timezone.utc)
        for t in (cm["metadata"]["creationTimestamp"], p["status"]["startTime"],
                  state(p)["terminated"]["finishedAt"], events_of(d, "clock-pod")[0]["lastTimestamp"]):
            ahead = (datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
                     - now).total_seconds()
            self.assertTrue(3590 < ahead < 3610, (t, ahead))
        self.assertEqual([c["name"] for c in p["spec"]["containers"]], ["main"])  # linkerd's opt-out is honoured

    def test_a_pod_bound_to_a_missing_node_is_failed_and_deleted_by_the_pod_gc(self):
        d = self.d
        code, p = d.request("POST", PODS, pod("ghost", "true", nodeName="ghost-node"))
        self.assertEqual((code, p["status"]["phase"]), (201, "Pending"))
        evs = d.watch(f"{PODS}?watch=true&fieldSelector=metadata.name%3Dghost&resourceVersion="
                      f"{p['metadata']['resourceVersion']}&timeoutSeconds=10", until=lambda es: es[-1]["type"] == "DELETED")
        gone = evs[-1]["object"]
        self.assertEqual((evs[-1]["type"], gone["status"]["phase"]), ("DELETED", "Failed"))
        c = next(c for c in gone["status"]["conditions"] if c["type"] == "DisruptionTarget")
        self.assertEqual((c["reason"], c["message"]), ("DeletionByPodGC", "PodGC: node no longer exists"))
        self.assertNotIn("containerStatuses", gone["status"])  # no kubelet ever ran it


if __name__ == "__main__":
    unittest.main()
