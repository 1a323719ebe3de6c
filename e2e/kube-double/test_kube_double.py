"""Self-test of the Kubernetes API test double and its node simulator.

    cd /work/main && python3 -m unittest discover -s e2e/kube-double -p 'test_*.py' -v

Starts kube_double.py as a subprocess on a free port and talks to it with urllib.
"""

import base64
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
             "--backoff-seconds", "0.3", "--bookmark-interval", "0.5", *extra],
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

    def request(self, method, path, body=None, ctype="application/json", token=TOKEN, raw=False, timeout=10):
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
                rctype = resp.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            payload = e.read()
            code = e.code
            rctype = e.headers.get("Content-Type")
        if raw:
            return code, payload, rctype
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
            "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "worker", "image": "example.test/worker:1", "command": ["/bin/sh", "-c", script]}]}}}}


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
        # apply needs kind/apiVersion and a field manager
        code, st = self.req("PATCH", f"{IP}/st1/status?fieldManager=ctl", {"status": {"phase": "x"}},
                            ctype="application/apply-patch+yaml")
        self.assertEqual(code, 400)
        # apply creates a missing object
        code, o5 = self.req("PATCH", f"{IP}/applied?fieldManager=ctl",
                            {"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush", "metadata": {"name": "applied"},
                             "spec": {"target": "z"}}, ctype="application/apply-patch+yaml")
        self.assertEqual((code, o5["spec"]), (201, {"target": "z"}))

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

    def test_job_success(self):
        code, j = self.req("POST", JOBS, job("ok", "echo hi; echo msg > /dev/termination-log; echo err >&2; exit 0"))
        self.assertEqual(code, 201, j)
        self.assertEqual(j["spec"]["backoffLimit"], 6)
        self.assertEqual(j["spec"]["template"]["metadata"]["labels"]["job-name"], "ok")
        j = self.d.wait_for(f"{JOBS}/ok", finished)
        self.assertTrue(cond(j, "Complete"), j["status"])
        self.assertEqual(j["status"]["succeeded"], 1)
        self.assertIn("completionTime", j["status"])
        self.assertIn("startTime", j["status"])
        pods = self.pods_of("ok")
        self.assertEqual(len(pods), 1)
        pod = pods[0]
        self.assertRegex(pod["metadata"]["name"], r"^ok-[a-z0-9]{5}$")
        self.assertEqual(pod["status"]["phase"], "Succeeded")
        self.assertEqual(pod["spec"]["nodeName"], "sim-node")
        self.assertEqual(pod["metadata"]["ownerReferences"][0]["uid"], j["metadata"]["uid"])
        self.assertTrue(pod["metadata"]["ownerReferences"][0]["controller"])
        self.assertEqual(pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"], j["metadata"]["uid"])
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual((term["exitCode"], term["reason"], term["message"]), (0, "Completed", "msg\n"))
        self.assertTrue(term["startedAt"] and term["finishedAt"])
        code, text, ctype = self.req("GET", f"{PODS}/{pod['metadata']['name']}/log", raw=True)
        self.assertEqual(code, 200)
        self.assertTrue(ctype.startswith("text/plain"))
        self.assertEqual(text, b"hi\nerr\n")
        code, text, _ = self.req("GET", f"{PODS}/{pod['metadata']['name']}/log?tailLines=1", raw=True)
        self.assertEqual(text, b"err\n")
        code, text, _ = self.req("GET", f"{PODS}/{pod['metadata']['name']}/log?limitBytes=1", raw=True)
        self.assertEqual(text, b"h")
        # events from the job controller
        evs = self.req("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dok")[1]["items"]
        self.assertTrue({"SuccessfulCreate", "Completed"} <= {e["reason"] for e in evs})
        # deleting the Job deletes its pods
        self.req("DELETE", f"{JOBS}/ok")
        self.d.wait_for(f"{PODS}?labelSelector=job-name%3Dok", lambda l: not l["items"], timeout=5)

    def test_job_pod_failure_policy_fail_job(self):
        spec = {"backoffLimit": 6, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}}
        self.req("POST", JOBS, job("pfp", "exit 3", **spec))
        j = self.d.wait_for(f"{JOBS}/pfp", finished)
        c = cond(j, "Failed")
        self.assertTrue(c, j["status"])
        self.assertEqual(c["reason"], "PodFailurePolicy")
        time.sleep(0.6)  # no retry pod appears
        pods = self.pods_of("pfp")
        self.assertEqual(len(pods), 1)
        self.assertEqual(pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3)
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

    def test_job_active_deadline(self):
        t0 = time.monotonic()
        self.req("POST", JOBS, job("dl", "sleep 30", activeDeadlineSeconds=1))
        j = self.d.wait_for(f"{JOBS}/dl", finished, timeout=10)
        self.assertLess(time.monotonic() - t0, 6)
        c = cond(j, "Failed")
        self.assertTrue(c, j["status"])
        self.assertEqual(c["reason"], "DeadlineExceeded")
        self.d.wait_for("/_sim/processes", lambda p: not any(x["job"] == "dl" for x in p["processes"]), timeout=5)

    def test_volumes_env_and_binary_map(self):
        sec = {"metadata": {"name": "creds"}, "type": "kubernetes.io/dockerconfigjson",
               "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()},
               "stringData": {"token": "s3cret"}}
        code, s = self.req("POST", "/api/v1/namespaces/default/secrets", sec)
        self.assertEqual(code, 201, s)
        self.assertNotIn("stringData", s)
        self.assertEqual(base64.b64decode(s["data"]["token"]), b"s3cret")
        self.req("POST", "/api/v1/namespaces/default/persistentvolumeclaims",
                 {"metadata": {"name": "layouts"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                            "resources": {"requests": {"storage": "1Gi"}}}})
        pvc_dir = os.path.join(self.d.dir, "pvcs", "default", "layouts")
        os.makedirs(pvc_dir, exist_ok=True)
        with open(os.path.join(pvc_dir, "index.json"), "w") as f:
            f.write("{}")
        j = job("vol", "ls -A /creds > /layout/out-ls; cat /layout/index.json > /layout/out-index; "
                       "echo \"$TOKEN $POD $CFG\" > /layout/out-env; cat /layout/sub/missing 2>/dev/null; pwd > /layout/out-pwd")
        ctr = j["spec"]["template"]["spec"]["containers"][0]
        ctr["volumeMounts"] = [{"name": "layout", "mountPath": "/layout"},
                               {"name": "creds", "mountPath": "/creds", "readOnly": True}]
        ctr["workingDir"] = "/layout"
        ctr["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                      {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                      {"name": "CFG", "value": "/creds/.dockerconfigjson"}]
        j["spec"]["template"]["spec"]["volumes"] = [
            {"name": "layout", "persistentVolumeClaim": {"claimName": "layouts", "readOnly": True}},
            {"name": "creds", "secret": {"secretName": "creds"}}]
        code, created = self.req("POST", JOBS, j)
        self.assertEqual(code, 201, created)
        j = self.d.wait_for(f"{JOBS}/vol", finished)
        self.assertTrue(cond(j, "Complete"), j["status"])
        pod = self.pods_of("vol")[0]
        with open(os.path.join(pvc_dir, "out-ls")) as f:
            self.assertEqual(f.read().split(), [".dockerconfigjson", "token"])
        with open(os.path.join(pvc_dir, "out-index")) as f:
            self.assertEqual(f.read(), "{}")
        with open(os.path.join(pvc_dir, "out-env")) as f:
            tok, podname, cfg = f.read().split()
        self.assertEqual((tok, podname), ("s3cret", pod["metadata"]["name"]))
        self.assertTrue(cfg.startswith(self.d.dir) and cfg.endswith("/volumes/creds/.dockerconfigjson"), cfg)
        with open(os.path.join(pvc_dir, "out-pwd")) as f:
            self.assertEqual(f.read().strip(), os.path.realpath(pvc_dir))
        pvc = self.req("GET", "/api/v1/namespaces/default/persistentvolumeclaims/layouts")[1]
        self.assertEqual(pvc["status"]["phase"], "Bound")

    def test_missing_secret_waits(self):
        j = job("nosec", "cat /creds/token")
        spec = j["spec"]["template"]["spec"]
        spec["containers"][0]["volumeMounts"] = [{"name": "creds", "mountPath": "/creds"}]
        spec["volumes"] = [{"name": "creds", "secret": {"secretName": "later"}}]
        self.req("POST", JOBS, j)

        def waiting(lst):
            for p in lst["items"]:
                for cs in (p.get("status") or {}).get("containerStatuses") or []:
                    if "waiting" in cs["state"]:
                        return True
            return False
        self.d.wait_for(f"{PODS}?labelSelector=job-name%3Dnosec", waiting)
        time.sleep(0.5)
        pod = self.pods_of("nosec")[0]
        self.assertEqual(pod["status"]["phase"], "Pending")
        self.assertFalse(finished(self.req("GET", f"{JOBS}/nosec")[1]))
        evs = self.req("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D" + pod["metadata"]["name"])[1]
        self.assertIn("FailedMount", {e["reason"] for e in evs["items"]})
        code, st = self.req("GET", f"{PODS}/{pod['metadata']['name']}/log")
        self.assertEqual(code, 400)
        # an env secretKeyRef to a missing Secret: CreateContainerConfigError
        j2 = job("nosec-env", "true")
        j2["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]
        self.req("POST", JOBS, j2)

        def config_error(lst):
            return any(cs["state"].get("waiting", {}).get("reason") == "CreateContainerConfigError"
                       for p in lst["items"] for cs in (p.get("status") or {}).get("containerStatuses") or [])
        self.d.wait_for(f"{PODS}?labelSelector=job-name%3Dnosec-env", config_error)
        # the Secret appears: the pod starts
        self.req("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "later"}, "stringData": {"token": "t"}})
        j = self.d.wait_for(f"{JOBS}/nosec", finished)
        self.assertTrue(cond(j, "Complete"), j["status"])
        self.req("DELETE", f"{JOBS}/nosec-env")

    def test_kill_endpoint_and_processes(self):
        self.req("POST", JOBS, job("kl", "sleep 30", backoffLimit=0))
        procs = self.d.wait_for("/_sim/processes", lambda p: any(x["job"] == "kl" for x in p["processes"]))
        p = next(x for x in procs["processes"] if x["job"] == "kl")
        self.assertEqual(p["argv"], ["/bin/sh", "-c", "sleep 30"])
        running = self.pods_of("kl")[0]
        self.assertEqual(running["status"]["phase"], "Running")
        self.assertIn("running", running["status"]["containerStatuses"][0]["state"])
        code, _ = self.req("POST", f"/_sim/kill?namespace=default&pod={p['pod']}")
        self.assertEqual(code, 200)
        j = self.d.wait_for(f"{JOBS}/kl", finished)
        self.assertEqual(cond(j, "Failed")["reason"], "BackoffLimitExceeded")
        pod = self.pods_of("kl")[0]
        self.assertEqual(pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 137)

    def test_binary_map_and_start_error(self):
        # a second double with a binary map: `imagepush` -> a script that prints its argv
        d = Double("--binary-map", f"imagepush={shutil.which('echo')}")
        try:
            j = job("bm", "")
            j["spec"]["template"]["spec"]["containers"][0].update(
                {"command": ["/usr/local/bin/imagepush"], "args": ["push", "--layout", "/layout/x", "--report=/out/r.json",
                                                                    "$(MODE)"],
                 "env": [{"name": "MODE", "value": "fast"}],
                 "volumeMounts": [{"name": "l", "mountPath": "/layout"}, {"name": "o", "mountPath": "/out"}]})
            j["spec"]["template"]["spec"]["volumes"] = [{"name": "l", "hostPath": {"path": d.dir, "type": "Directory"}},
                                                        {"name": "o", "emptyDir": {}}]
            d.request("POST", JOBS, j)
            jj = d.wait_for(f"{JOBS}/bm", finished)
            self.assertTrue(cond(jj, "Complete"), jj["status"])
            pod = d.request("GET", f"{PODS}?labelSelector=job-name%3Dbm")[1]["items"][0]
            code, text, _ = d.request("GET", f"{PODS}/{pod['metadata']['name']}/log", raw=True)
            words = text.decode().split()
            self.assertEqual(words[:3], ["push", "--layout", f"{d.dir}/x"])
            self.assertTrue(words[3].startswith(f"--report={d.dir}/pods/default/") and words[3].endswith("/volumes/o/r.json"), words)
            self.assertEqual(words[4], "fast")
            # no command: the image's last path component (without tag) is looked up in the binary map
            j = job("ep", "")
            c = j["spec"]["template"]["spec"]["containers"][0]
            del c["command"]
            c.update({"image": "ghcr.io/example/imagepush:v0.1.0@sha256:" + "0" * 64, "args": ["from", "entrypoint"]})
            d.request("POST", JOBS, j)
            jj = d.wait_for(f"{JOBS}/ep", finished)
            self.assertTrue(cond(jj, "Complete"), jj["status"])
            pod = d.request("GET", f"{PODS}?labelSelector=job-name%3Dep")[1]["items"][0]
            self.assertEqual(d.request("GET", f"{PODS}/{pod['metadata']['name']}/log", raw=True)[1], b"from entrypoint\n")
            # an unknown executable fails the pod with StartError
            j = job("se", "")
            j["spec"]["backoffLimit"] = 0
            j["spec"]["template"]["spec"]["containers"][0]["command"] = ["/no/such/binary"]
            d.request("POST", JOBS, j)
            jj = d.wait_for(f"{JOBS}/se", finished)
            self.assertTrue(cond(jj, "Failed"))
            pod = d.request("GET", f"{PODS}?labelSelector=job-name%3Dse")[1]["items"][0]
            term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
            self.assertEqual((term["exitCode"], term["reason"]), (128, "StartError"))
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
