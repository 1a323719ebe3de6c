#!/usr/bin/env python3
"""imagepush benchmark (issue 6): imagepush side by side with skopeo (and containerd's ctr when
installed) on the same freshly generated OCI layouts, against a real CNCF distribution registry
on 127.0.0.1. Python 3.11 standard library only. See README.md beside this file.

    python3 e2e/bench/bench.py [--runs 5] [--cases 1,2,3,4,5,6] [--quick] [--operator]
                               [--tools imagepush,skopeo,ctr] [--binary PATH] [--out FILE]
"""

import argparse
import collections
import datetime
import hashlib
import http.client
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import zlib

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])
BENCH_UA = "imagepush-bench"

CASE_TITLES = {
    1: "1: fresh push, 8 x {l1} layers",
    2: "2: same push again (all exists)",
    3: "3: same image to a 2nd repo (mounts)",
    4: "4: {n4} small images as {n4} tags",
    5: "5: one {l5} layer",
    6: "6: 4-platform index, shared base",
    7: "7: case 1's layout as a plain tar archive",
    8: "8: case 1's layout as a gzip tar archive",
    9: "9: bundle of {n9} images, shared {b9} base (--mirror)",
}
# Cases whose traffic (bytes, requests) is measured in one extra, untimed run through a
# counting proxy: the proxy is Python and would slow down the timed pushes.
TRAFFIC_CASES = (2, 3, 4, 6, 9)


def log(msg):
    sys.stderr.write(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def human(n):
    if n >= GiB and n % GiB == 0:
        return f"{n // GiB} GiB"
    if n >= MiB:
        return f"{n / MiB:g} MiB"
    if n >= 1024:
        return f"{n / 1024:g} KiB"
    return f"{n} B"


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------

def sizes(quick):
    if quick:
        return dict(c1_layers=8, c1_layer=8 * MiB, c4_images=20, c5_layer=256 * MiB,
                    c6_base=(4 * MiB, 4 * MiB), c6_own=(2 * MiB, 2 * MiB), op_count=20,
                    c9_images=5, c9_base=4 * MiB, c9_own=1 * MiB)
    return dict(c1_layers=8, c1_layer=128 * MiB, c4_images=200, c5_layer=4 * GiB,
                c6_base=(32 * MiB, 32 * MiB), c6_own=(16 * MiB, 16 * MiB), op_count=200,
                c9_images=20, c9_base=64 * MiB, c9_own=8 * MiB)


# --------------------------------------------------------------------------------------------
# OCI layout generation (deterministic: the same seeds give the same bytes and digests)
# --------------------------------------------------------------------------------------------

def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """Writes an OCI image layout. Layers are real tar+gzip blobs (one file of seeded random
    bytes, deflate level 0), so they are incompressible and any tool accepts them."""

    CHUNK = 8 * MiB

    def __init__(self, root, name):
        self.root = root
        self.name = name
        self.blob_dir = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blob_dir, exist_ok=True)
        self.entries = []        # index.json manifests
        self.tags = {}           # tag -> (digest, mediaType, size)
        self.layer_files = []    # (digest, size, path) of every layer written
        self.children = {}       # index digest -> [child manifest digests]
        self.named = []          # (full name, repository path, tag, digest) of named entries
        self.configs = {}        # config digest -> size

    def put(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = os.path.join(self.blob_dir, digest[7:])
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
        return digest, len(data)

    def layer(self, seed, size):
        """A tar.gz layer holding one file of `size` seeded random bytes."""
        rng = random.Random(seed)
        tar_h, gz_h = hashlib.sha256(), hashlib.sha256()
        comp = zlib.compressobj(0, zlib.DEFLATED, 31)  # gzip wrapper, stored blocks, mtime 0
        tmp = os.path.join(self.blob_dir, f".tmp-{os.getpid()}")
        total = 0
        with open(tmp, "wb") as f:
            def emit(b):
                nonlocal total
                tar_h.update(b)
                out = comp.compress(b)
                if out:
                    gz_h.update(out)
                    f.write(out)
                    total += len(out)
            info = tarfile.TarInfo(f"data/{seed}")
            info.size, info.mtime, info.mode = size, 0, 0o644
            emit(info.tobuf(format=tarfile.GNU_FORMAT))
            left = size
            while left:
                n = min(self.CHUNK, left)
                emit(rng.randbytes(n))
                left -= n
            emit(b"\0" * ((-size) % 512) + b"\0" * 1024)
            out = comp.flush()
            gz_h.update(out)
            f.write(out)
            total += len(out)
        digest = "sha256:" + gz_h.hexdigest()
        path = os.path.join(self.blob_dir, digest[7:])
        os.replace(tmp, path)
        self.layer_files.append((digest, total, path))
        return {"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": total}, "sha256:" + tar_h.hexdigest()

    def image(self, layers, arch="amd64", os_="linux", variant=None, label=""):
        config = {"architecture": arch, "os": os_, "created": "2026-01-01T00:00:00Z",
                  "config": {"Labels": {"bench": label}},
                  "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}
        if variant:
            config["variant"] = variant
        cdigest, csize = self.put(canonical(config))
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": csize},
                    "layers": [desc for desc, _ in layers]}
        self.configs[cdigest] = csize
        mdigest, msize = self.put(canonical(manifest))
        desc = {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": msize}
        plat = {"architecture": arch, "os": os_}
        if variant:
            plat["variant"] = variant
        return desc, plat

    def index(self, images):
        manifests = [dict(desc, platform=plat) for desc, plat in images]
        digest, size = self.put(canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        self.children[digest] = [d["digest"] for d in manifests]
        return {"mediaType": OCI_INDEX, "digest": digest, "size": size}

    def tag(self, desc, tag):
        self.entries.append(dict(desc, annotations={"org.opencontainers.image.ref.name": tag}))
        self.tags[tag] = (desc["digest"], desc["mediaType"], desc["size"])

    def named_entry(self, desc, repo_path, tag):
        """An entry named as `ctr export` and `docker save` (Engine 25+) name it: the full name in
        `io.containerd.image.name` and in `org.opencontainers.image.ref.name`."""
        full = f"docker.io/{repo_path}:{tag}"
        self.entries.append(dict(desc, annotations={"io.containerd.image.name": full,
                                                    "org.opencontainers.image.ref.name": full}))
        self.named.append((full, repo_path, tag, desc["digest"]))

    def write(self):
        with open(os.path.join(self.root, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        with open(os.path.join(self.root, "index.json"), "wb") as f:
            f.write(canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries}))
        return self

    def blob_bytes(self):
        """Bytes of the distinct layers and configs: what a push must upload at least once."""
        return sum(size for _, size, _ in self.layer_files) + sum(self.configs.values())

    def total_bytes(self):
        return sum(os.path.getsize(os.path.join(self.blob_dir, n)) for n in os.listdir(self.blob_dir))


def make_big(root, sz):
    """Cases 1-3: 8 layers of 128 MiB, tagged v1."""
    lay = Layout(root, "big")
    layers = [lay.layer(f"big-{i}", sz["c1_layer"]) for i in range(sz["c1_layers"])]
    desc, _ = lay.image(layers, label="big")
    lay.tag(desc, "v1")
    return lay.write()


def make_many(root, n, name="many"):
    """Case 4: n small images (a shared 4 KiB base layer and two own layers of 2-8 KiB),
    one tag each (t000, t001, ...)."""
    lay = Layout(root, name)
    base = lay.layer("many-base", 4096)
    rng = random.Random("many-sizes")
    for i in range(n):
        own = [lay.layer(f"many-{i}-{j}", rng.randrange(2048, 8192)) for j in range(2)]
        desc, _ = lay.image([base] + own, label=f"image {i}")
        lay.tag(desc, f"t{i:03d}")
    return lay.write()


def make_huge(root, sz):
    """Case 5: one layer of 4 GiB, tagged v1."""
    lay = Layout(root, "huge")
    desc, _ = lay.image([lay.layer("huge-0", sz["c5_layer"])], label="huge")
    lay.tag(desc, "v1")
    return lay.write()


def make_multi(root, sz):
    """Case 6: an index of 4 platforms, each image = 2 shared base layers + 2 own layers."""
    lay = Layout(root, "multi")
    base = [lay.layer(f"multi-base-{i}", s) for i, s in enumerate(sz["c6_base"])]
    images = []
    for arch, variant in (("amd64", None), ("arm64", "v8"), ("arm", "v7"), ("ppc64le", None)):
        own = [lay.layer(f"multi-{arch}-{i}", s) for i, s in enumerate(sz["c6_own"])]
        images.append(lay.image(base + own, arch=arch, variant=variant, label=f"multi {arch}"))
    lay.tag(lay.index(images), "v1")
    return lay.write()


def make_bundle(root, sz):
    """Case 9: n images, each a shared base layer plus one own layer, named
    docker.io/library/app-NN:v1 (a bundle of several repositories)."""
    lay = Layout(root, "bundle")
    base = lay.layer("bundle-base", sz["c9_base"])
    for i in range(sz["c9_images"]):
        desc, _ = lay.image([base, lay.layer(f"bundle-{i}", sz["c9_own"])], label=f"bundle {i}")
        lay.named_entry(desc, f"library/app-{i:02d}", "v1")
    return lay.write()


def make_archive(lay, path, gzip):
    """The layout as one tar archive (entries without a leading `./`, as Go's archive/tar and
    skopeo write them), plain or gzip at level 1 (the layers are incompressible anyway)."""
    mode, kw = ("w:gz", {"compresslevel": 1}) if gzip else ("w", {})
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT, **kw) as t:
        for name in ("oci-layout", "index.json", "blobs"):
            t.add(os.path.join(lay.root, name), arcname=name)
    return path


# --------------------------------------------------------------------------------------------
# Processes: wall time, peak RSS (wait4), CPU of other processes (/proc)
# --------------------------------------------------------------------------------------------

def proc_cpu(pid):
    """utime+stime of a live process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def sys_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])
    return total - idle, total


class ProcResult:
    def __init__(self, argv, rc, wall, maxrss_kib, cpu, err_tail=""):
        self.argv, self.rc, self.wall, self.maxrss_kib, self.cpu, self.err_tail = argv, rc, wall, maxrss_kib, cpu, err_tail


# Peak RSS: wait4's ru_maxrss of a child forked from this (large) Python process is at least the
# RSS this process had at the fork, because Linux keeps the pre-exec mm's high-water mark across
# exec. So the tool is started through GNU time (small), which forks it and reports the tool's
# own ru_maxrss. Without /usr/bin/time the numbers include this process's RSS (flagged).
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_proc(argv, *, err_path, env=None, stdin_path=None, timeout=1800, stdout_path=None):
    """Runs argv to completion: wall time, the process's own peak RSS and CPU time."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    out = open(stdout_path, "ab") if stdout_path else subprocess.DEVNULL
    err = open(err_path, "ab")
    rusage_file = err_path + ".rusage"
    spawn = [GNU_TIME, "-f", "%M %U %S", "-o", rusage_file, *argv] if GNU_TIME else argv
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(spawn, stdin=stdin, stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout, lambda: p.kill())
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        err.close()
        if stdin_path:
            stdin.close()
        if stdout_path:
            out.close()
    maxrss, cpu = ru.ru_maxrss, ru.ru_utime + ru.ru_stime
    if GNU_TIME:
        try:
            with open(rusage_file) as f:
                last = [x for x in f.read().splitlines() if x.strip()][-1].split()
            maxrss, cpu = int(last[0]), float(last[1]) + float(last[2])
        except (OSError, IndexError, ValueError):
            pass
    tail = ""
    if p.returncode != 0:
        with open(err_path, "rb") as f:
            f.seek(max(0, os.path.getsize(err_path) - 1500))
            tail = f.read().decode(errors="replace")
    return ProcResult(argv, p.returncode, wall, maxrss, cpu, tail)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_req(host, method, path, headers=None, body=None, timeout=30):
    h, p = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(p), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# The registry, and a counting proxy in front of it
# --------------------------------------------------------------------------------------------

class Registry:
    def __init__(self, work, storage_base, binary="/usr/bin/docker-registry"):
        self.work, self.storage_base, self.binary = work, storage_base, binary
        self.proc = None
        self.n = 0

    def start(self):
        self.n += 1
        for attempt in range(5):
            port = free_port()
            d = os.path.join(self.work, f"registry-{self.n}")
            os.makedirs(d, exist_ok=True)
            self.storage = tempfile.mkdtemp(prefix="registry-storage-", dir=self.storage_base)
            cfg = os.path.join(d, "config.yml")
            with open(cfg, "w") as f:
                f.write(f"""version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {self.storage}}}
  cache: {{blobdescriptor: inmemory}}
  delete: {{enabled: true}}
http: {{addr: 127.0.0.1:{port}, secret: imagepush-bench}}
""")
            self.log_path = os.path.join(d, "registry.log")
            self.proc = subprocess.Popen([self.binary, "serve", cfg], stdout=open(self.log_path, "ab"),
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.host = f"127.0.0.1:{port}"
            deadline = time.time() + 15
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    if http_req(self.host, "GET", "/v2/", timeout=2)[0] == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"registry did not start; see {self.log_path}")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        shutil.rmtree(self.storage, ignore_errors=True)

    def manifest_digest(self, repo, ref, conn=None):
        if conn is None:
            st, hd, _ = http_req(self.host, "HEAD", f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT})
        else:
            conn.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
            r = conn.getresponse()
            r.read()
            st, hd = r.status, dict((k.lower(), v) for k, v in r.getheaders())
        return hd.get("docker-content-digest") if st == 200 else None


class CountingProxy:
    """TCP proxy that counts bytes both ways and parses HTTP/1.x request lines from the client
    side (methods and kinds of distribution API calls, mount attempts)."""

    REQ = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|DELETE) (/[^ \r\n]*) HTTP/1\.[01]\r\n")

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.host = f"127.0.0.1:{self.lsock.getsockname()[1]}"
        self.lock = threading.Lock()
        self.closed = False
        self.reset()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        with self.lock:
            self.to_registry = 0
            self.from_registry = 0
            self.connections = 0
            self.requests = collections.Counter()
            self.mount_attempts = 0

    def snapshot(self):
        with self.lock:
            return {"bytesToRegistry": self.to_registry, "bytesFromRegistry": self.from_registry,
                    "connections": self.connections, "requests": sum(self.requests.values()),
                    "requestsByKind": dict(sorted(self.requests.items())), "mountAttempts": self.mount_attempts}

    @staticmethod
    def kind(method, path):
        p = path.split("?", 1)[0]
        if p in ("/v2", "/v2/"):
            k = "ping"
        elif "/blobs/uploads" in p:
            k = "upload"
        elif "/blobs/" in p:
            k = "blob"
        elif "/manifests/" in p:
            k = "manifest"
        elif p.endswith("/tags/list"):
            k = "tags"
        else:
            k = "other"
        return f"{method.decode()} {k}"

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, src, dst, to_registry):
        tail = b""
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                dst.sendall(data)
                if to_registry:
                    window = tail + data
                    found = []
                    if b" HTTP/1." in window:
                        for m in self.REQ.finditer(window):
                            if m.end() > len(tail):
                                found.append((m.group(1), m.group(2).decode(errors="replace")))
                    tail = window[-2048:]
                with self.lock:
                    if to_registry:
                        self.to_registry += len(data)
                        for method, path in found:
                            self.requests[self.kind(method, path)] += 1
                            if method == b"POST" and "mount=" in path:
                                self.mount_attempts += 1
                    else:
                        self.from_registry += len(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            try:
                src.close()
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.lsock.close()


# --------------------------------------------------------------------------------------------
# containerd (for ctr): a private daemon in the work directory
# --------------------------------------------------------------------------------------------

class Containerd:
    def __init__(self, work):
        self.dir = os.path.join(work, "containerd")
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "c.sock")
        cfg = os.path.join(self.dir, "config.toml")
        with open(cfg, "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  level = "error"
""")
        self.proc = subprocess.Popen(["containerd", "--config", cfg], stdout=open(os.path.join(self.dir, "log"), "ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            if os.path.exists(self.sock) and subprocess.run(self.ctr("version"), capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("containerd did not start; see " + os.path.join(self.dir, "log"))
        self.imported = set()

    def ctr(self, *args):
        return ["ctr", "-a", self.sock, "-n", "bench", *args]

    def import_layout(self, lay):
        if lay.name in self.imported:
            return
        log(f"ctr: importing layout {lay.name} into containerd (not timed)")
        tar = subprocess.Popen(["tar", "-C", lay.root, "-cf", "-", "."], stdout=subprocess.PIPE)
        r = subprocess.run(self.ctr("images", "import", "--no-unpack", "--all-platforms",
                                    "--base-name", f"bench/{lay.name}", "-"),
                           stdin=tar.stdout, capture_output=True)
        tar.stdout.close()
        tar.wait()
        if r.returncode != 0:
            raise RuntimeError(f"ctr import failed: {r.stderr.decode()[-1000:]}")
        self.imported.add(lay.name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------------
# Tools: each push is one or more processes; a sample is the whole push
# --------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.registry = Registry(self.work, args.registry_storage or os.path.join(self.work, "storage"))
        os.makedirs(self.registry.storage_base, exist_ok=True)
        self.containerd = None
        self.seq = 0

    def err_path(self, label):
        self.seq += 1
        return os.path.join(self.logs, f"{self.seq:04d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.log")

    # -- the push commands --
    def imagepush(self, lay, host, repo, tags, all_tags=False, mount_from=None, report=None, archive=None,
                  mirror=False):
        argv = [self.args.binary, "push", "--plain-http", "--progress", "none"]
        if mount_from:
            argv += ["--mount-from", mount_from]
        if report:
            argv += ["--report", report]
        if mirror:
            argv.append("--mirror")
        target = f"{host}/{repo}" if all_tags or mirror else f"{host}/{repo}:{tags[0]}"
        return [run_proc(argv + [archive or lay.root, target], err_path=self.err_path(f"imagepush-{repo}"))]

    def skopeo(self, lay, host, repo, tags, index=False, archive=None, mirror=False, **_):
        """One `skopeo copy` per tag (per image of a bundle, each to its own repository)."""
        transport = f"oci-archive:{archive}" if archive else f"oci:{lay.root}"
        copies = ([(full, f"{repo}/{path}:{tag}") for full, path, tag, _ in lay.named] if mirror
                  else [(tag, f"{repo}:{tag}") for tag in tags])
        out = []
        for ref, dest in copies:
            argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false", "--preserve-digests"]
            if index:
                argv.append("--all")
            argv += [f"{transport}:{ref}", f"docker://{host}/{dest}"]
            r = run_proc(argv, err_path=self.err_path(f"skopeo-{repo}"))
            out.append(r)
            if r.rc != 0:
                break
        return out

    def ctr(self, lay, host, repo, tags, **_):
        self.containerd.import_layout(lay)
        out = []
        for tag in tags:
            argv = self.containerd.ctr("images", "push", "--plain-http", f"{host}/{repo}:{tag}", f"bench/{lay.name}:{tag}")
            r = run_proc(argv, err_path=self.err_path(f"ctr-{repo}"))
            out.append(r)
            if r.rc != 0:
                break
        return out

    def curl(self, lay, host, repo, parallel):
        """The upper bound: each layer blob sent by a raw POST + monolithic PUT (curl -T),
        `parallel` at a time. The POST goes through http.client: it carries no body."""
        results, lock = [], threading.Lock()
        todo = list(lay.layer_files)

        def worker():
            while True:
                with lock:
                    if not todo:
                        return
                    digest, size, path = todo.pop(0)
                st, hd, _ = http_req(host, "POST", f"/v2/{repo}/blobs/uploads/")
                if st != 202:
                    with lock:
                        results.append(ProcResult(["POST"], st, 0, 0, 0, f"POST answered {st}"))
                    return
                loc = hd["location"]
                if loc.startswith("/"):
                    loc = f"http://{host}{loc}"
                url = loc + ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(digest)
                r = run_proc(["curl", "-sS", "-f", "-o", "/dev/null", "-H", "Expect:", "-H",
                              "Content-Type: application/octet-stream", "-T", path, url],
                             err_path=self.err_path("curl"))
                with lock:
                    results.append(r)

        threads = [threading.Thread(target=worker) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    # -- checks from the registry's side --
    def verify(self, lay, repo, tags, mirror=False):
        h, p = self.registry.host.rsplit(":", 1)
        conn = http.client.HTTPConnection(h, int(p), timeout=30)
        try:
            for _, path, tag, want in (lay.named if mirror else []):
                got = self.registry.manifest_digest(f"{repo}/{path}", tag, conn)
                if got != want:
                    return f"{repo}/{path}:{tag} is {got}, expected {want}"
            for tag in ([] if mirror else tags):
                want = lay.tags[tag][0]
                got = self.registry.manifest_digest(repo, tag, conn)
                if got != want:
                    return f"{repo}:{tag} is {got}, expected {want}"
                for child in lay.children.get(want, []):
                    if self.registry.manifest_digest(repo, child, conn) != child:
                        return f"{repo}@{child} (child of the index) missing"
        finally:
            conn.close()
        return None


def median(xs):
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

class Case:
    def __init__(self, num, title, layout, tags, repo, all_tags=False, index=False, prep_repo=None,
                 mount_from=None, bound=False, archive=None, mirror=False):
        self.num, self.title, self.layout, self.tags, self.repo = num, title, layout, tags, repo
        self.all_tags, self.index, self.prep_repo, self.mount_from, self.bound = all_tags, index, prep_repo, mount_from, bound
        self.archive, self.mirror = archive, mirror


def run_tool(bench, case, tool, host, repo, report=None):
    lay = case.layout
    if tool == "imagepush":
        return bench.imagepush(lay, host, repo, case.tags, all_tags=case.all_tags,
                               mount_from=case.mount_from if repo != case.prep_repo else None, report=report,
                               archive=case.archive, mirror=case.mirror)
    if tool == "skopeo":
        return bench.skopeo(lay, host, repo, case.tags, index=case.index, archive=case.archive, mirror=case.mirror)
    if tool == "ctr":
        return bench.ctr(lay, host, repo, case.tags)
    if tool.startswith("curl-x"):
        return bench.curl(lay, host, repo, int(tool[len("curl-x"):]))
    raise ValueError(tool)


def measure(bench, case, tool, run):
    """One timed push of `case` by `tool` on a fresh registry; returns a sample dict."""
    reg = bench.registry.start()
    sample = {"run": run}
    try:
        if case.prep_repo:  # cases 2 and 3: the same tool pushes the image first (not timed)
            prep = run_tool(bench, case, tool, reg.host, case.prep_repo)
            if any(p.rc != 0 for p in prep):
                bad = next(p for p in prep if p.rc != 0)
                sample.update(ok=False, error=f"preparatory push failed (rc {bad.rc}): {bad.err_tail.strip()[-400:]}")
                return sample
        helper_pid = bench.containerd.proc.pid if (tool == "ctr" and bench.containerd) else None
        if tool == "ctr":
            bench.containerd.import_layout(case.layout)
        reg_cpu0, helper0, (busy0, tot0) = proc_cpu(reg.pid), helper_pid and proc_cpu(helper_pid), sys_cpu()
        t0 = time.perf_counter()
        procs = run_tool(bench, case, tool, reg.host, case.repo)
        wall = time.perf_counter() - t0
        reg_cpu1, (busy1, tot1) = proc_cpu(reg.pid), sys_cpu()
        sample.update(
            wall=wall, processes=len(procs),
            peakRssKiB=max((p.maxrss_kib for p in procs), default=0),
            toolCpu=sum(p.cpu for p in procs),
            registryCpu=(reg_cpu1 - reg_cpu0) if reg_cpu0 is not None and reg_cpu1 is not None else None,
            machineBusyPct=round(100.0 * (busy1 - busy0) / max(1, tot1 - tot0), 1),
        )
        if helper_pid:
            sample["containerdCpu"] = proc_cpu(helper_pid) - helper0
        # Noise: CPU time the rest of the machine used meanwhile (all busy time minus the tool,
        # the registry and containerd), as a share of all cores.
        own = sample["toolCpu"] + (sample["registryCpu"] or 0) + sample.get("containerdCpu", 0)
        sample["otherLoadPct"] = round(max(0.0, 100.0 * ((busy1 - busy0) / CLK_TCK - own) / (wall * (os.cpu_count() or 1))), 1)
        failed = [p for p in procs if p.rc != 0]
        if failed:
            sample.update(ok=False, error=f"rc {failed[0].rc}: {failed[0].err_tail.strip()[-400:]}")
        elif case.bound:
            sample["ok"] = True
        else:
            err = bench.verify(case.layout, case.repo, case.tags, mirror=case.mirror)
            sample["ok"] = err is None
            if err:
                sample["error"] = err
    except Exception as e:  # noqa: BLE001 - a broken tool must not end the benchmark
        sample.update(ok=False, error=repr(e))
    finally:
        reg.stop()
    return sample


def traffic(bench, case, tool):
    """One untimed push through the counting proxy: what the registry received."""
    reg = bench.registry.start()
    proxy = CountingProxy(int(reg.host.rsplit(":", 1)[1]))
    out = {}
    try:
        if case.prep_repo:
            run_tool(bench, case, tool, proxy.host, case.prep_repo)
            time.sleep(0.2)
            proxy.reset()
        report = os.path.join(bench.work, f"report-case{case.num}.json") if tool == "imagepush" else None
        procs = run_tool(bench, case, tool, proxy.host, case.repo, report=report)
        time.sleep(0.3)  # let the pumps count the last bytes
        out = proxy.snapshot()
        out["ok"] = all(p.rc == 0 for p in procs)
        if report and os.path.exists(report):
            with open(report) as f:
                out["imagepushTotals"] = json.load(f).get("totals")
    except Exception as e:  # noqa: BLE001
        out = {"ok": False, "error": repr(e)}
    finally:
        proxy.close()
        reg.stop()
    return out


def summarize(samples):
    ok = [s for s in samples if s.get("ok")]
    walls = [s["wall"] for s in ok]
    return {
        "runsOk": len(ok), "runs": len(samples),
        "medianWall": median(walls), "minWall": min(walls, default=None), "maxWall": max(walls, default=None),
        "peakRssKiB": max((s["peakRssKiB"] for s in ok), default=None),
        "medianPeakRssKiB": median([s["peakRssKiB"] for s in ok]),
        "medianToolCpu": median([s["toolCpu"] for s in ok]),
        "medianRegistryCpu": median([s["registryCpu"] for s in ok if s.get("registryCpu") is not None]),
        "medianMachineBusyPct": median([s["machineBusyPct"] for s in ok]),
        "medianOtherLoadPct": median([s["otherLoadPct"] for s in ok]),
        "medianContainerdCpu": median([s["containerdCpu"] for s in ok if "containerdCpu" in s]),
        "errors": [s.get("error") for s in samples if not s.get("ok")],
    }


# --------------------------------------------------------------------------------------------
# Operator: N ImagePush objects against the API test double
# --------------------------------------------------------------------------------------------

def percentile(values, p):
    """The nearest-rank p-th percentile of `values`, rounded to 0.01; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 2)


def run_operator(bench, lay, count, timeout):
    args = bench.args
    state = os.path.join(bench.work, "kube")
    os.makedirs(state, exist_ok=True)
    res = {"objects": count, "progressInterval": args.operator_progress_interval}
    reg = bench.registry.start()
    double = controller = None
    try:
        double = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "e2e/kube-double/kube_double.py"),
                                   "--port", "0", "--state-dir", state, "--binary-map", f"imagepush={args.binary}"],
                                  stdout=subprocess.PIPE, stderr=open(os.path.join(state, "double.stderr"), "ab"),
                                  stdin=subprocess.DEVNULL)
        line = double.stdout.readline().decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"kube-double did not start: {line!r}")
        api = line.split()[1].replace("http://", "")
        token = "test-token"
        with open(os.path.join(state, "kubeconfig")) as f:
            m = re.search(r"token:\s*(\S+)", f.read())
            if m:
                token = m.group(1).strip("'\"")
        hdrs = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "User-Agent": BENCH_UA}

        def api_call(method, path, body=None):
            st, _, data = http_req(api, method, path, hdrs, json.dumps(body).encode() if body is not None else None, timeout=60)
            return st, (json.loads(data) if data else None)

        ns = "bench"
        api_call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        st, _ = api_call("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "layouts", "namespace": ns},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}})
        if st not in (200, 201):
            raise RuntimeError(f"PVC create answered {st}")
        shutil.copytree(lay.root, os.path.join(state, "pvcs", ns, "layouts", "app"))

        metrics_port = free_port()
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        controller = subprocess.Popen([args.binary, "controller", "--kubeconfig", os.path.join(state, "kubeconfig"),
                                       "--metrics-addr", f"127.0.0.1:{metrics_port}",
                                       "--progress-interval", str(args.operator_progress_interval),
                                       "--worker-image", "imagepush:bench"],
                                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(state, "controller.log"), "ab"),
                                      stdin=subprocess.DEVNULL, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if http_req(f"127.0.0.1:{metrics_port}", "GET", "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if controller.poll() is not None:
                raise RuntimeError("controller exited; see " + os.path.join(state, "controller.log"))
            time.sleep(0.2)
        time.sleep(1.0)  # initial lists and watches settle
        req_file = os.path.join(state, "requests.jsonl")

        def req_lines():
            try:
                with open(req_file) as f:
                    return [json.loads(x) for x in f if x.strip()]
            except OSError:
                return []

        n_before = len(req_lines())
        dcpu0, ccpu0 = proc_cpu(double.pid), proc_cpu(controller.pid)
        tags = sorted(lay.tags)
        names = [f"push-{i:03d}" for i in range(count)]
        bodies = [{"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
                   "metadata": {"name": n, "namespace": ns},
                   "spec": {"source": {"persistentVolumeClaim": {"claimName": "layouts", "path": "app"}},
                            "target": f"{reg.host}/op/app-{i:03d}:{tags[i % len(tags)]}",
                            "connection": {"plainHttp": True}}} for i, n in enumerate(names)]
        t0 = time.perf_counter()
        errors = []
        created_at = {}
        lock = threading.Lock()
        todo = list(bodies)

        def poster():
            while True:
                with lock:
                    if not todo:
                        return
                    b = todo.pop(0)
                    created_at[b["metadata"]["name"]] = time.perf_counter() - t0
                st, body = api_call("POST", f"/apis/imagepush.dev/v1alpha1/namespaces/{ns}/imagepushes", b)
                if st not in (200, 201):
                    with lock:
                        errors.append(f"create {b['metadata']['name']}: {st} {body}")

        threads = [threading.Thread(target=poster) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        res["applySeconds"] = round(time.perf_counter() - t0, 2)
        ready_at, stalled, peak_rss, timeline = {}, {}, 0, []
        while time.perf_counter() - t0 < timeout:
            rss = proc_status_kib(controller.pid, "VmRSS") or 0
            peak_rss = max(peak_rss, rss)
            st, lst = api_call("GET", f"/apis/imagepush.dev/v1alpha1/namespaces/{ns}/imagepushes")
            now = time.perf_counter() - t0
            if st == 200:
                for item in lst.get("items", []):
                    conds = {c.get("type"): c for c in (item.get("status") or {}).get("conditions", [])}
                    name = item["metadata"]["name"]
                    if conds.get("Ready", {}).get("status") == "True":
                        ready_at.setdefault(name, now)
                    elif conds.get("Stalled", {}).get("status") == "True":
                        stalled[name] = conds["Stalled"].get("reason")
            timeline.append((round(now, 1), len(ready_at)))
            if len(ready_at) + len(stalled) >= count:
                break
            if controller.poll() is not None:
                errors.append("controller exited during the run")
                break
            time.sleep(1.0)
        wall = time.perf_counter() - t0
        res["controllerPeakRssKiB"] = proc_status_kib(controller.pid, "VmHWM") or peak_rss
        res["controllerCpu"] = (proc_cpu(controller.pid) or 0) - (ccpu0 or 0)
        res["doubleCpu"] = (proc_cpu(double.pid) or 0) - (dcpu0 or 0)
        res["doublePeakRssKiB"] = proc_status_kib(double.pid, "VmHWM")
        lines = req_lines()[n_before:]
        ctl = [r for r in lines if r.get("userAgent") != BENCH_UA]
        by = collections.Counter(f"{r.get('verb') or r['method']} {r.get('resource', '')}{'/' + r['subresource'] if r.get('subresource') else ''}"
                                 for r in ctl)
        res.update(
            ready=len(ready_at), stalled=len(stalled), stalledReasons=dict(collections.Counter(stalled.values())),
            allReady=len(ready_at) == count,
            seconds=round(max(ready_at.values()) if len(ready_at) == count else wall, 2),
            firstReadySeconds=round(min(ready_at.values()), 2) if ready_at else None,
            medianReadySeconds=round(median(list(ready_at.values())), 2) if ready_at else None,
            # from each object's create request to the first poll that saw it Ready (polls 1 s apart)
            p95CreateToReadySeconds=percentile([ready_at[n] - created_at[n] for n in ready_at], 95),
            medianCreateToReadySeconds=percentile([ready_at[n] - created_at[n] for n in ready_at], 50),
            apiRequests=len(ctl), apiRequestsPerPush=round(len(ctl) / count, 2),
            apiRequestsByVerb=dict(by.most_common()),
            apiWatchRequests=sum(1 for r in ctl if r.get("verb") == "watch"),
            timeline=timeline, errors=errors[:10],
        )
        # From the registry's side: every target tag holds the expected image.
        bad = 0
        for i in range(count):
            tag = tags[i % len(tags)]
            if reg.manifest_digest(f"op/app-{i:03d}", tag) != lay.tags[tag][0]:
                bad += 1
        res["registryMissing"] = bad
    except Exception as e:  # noqa: BLE001
        res["error"] = repr(e)
    finally:
        for p in (controller, double):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        reg.stop()
    return res


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(result):
    out = []
    meta = result["meta"]
    out.append(f"imagepush benchmark, {meta['date']}, {meta['machine']}; {meta['runs']} runs per tool, "
               f"{'quick sizes' if meta['quick'] else 'full sizes'}; registry storage on {meta['registryStorage']}; "
               f"load average at start {' '.join(meta['loadavgAtStart'])}, at end {' '.join(meta.get('loadavgAtEnd', []))}")
    out.append("")
    out.append("| case | tool | runs ok | median s | min s | max s | imagepush/tool | peak RSS MiB | tool CPU s | registry CPU s | other load % |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in result["cases"]:
        ip = case["tools"].get("imagepush", {}).get("summary", {}).get("medianWall")
        for tool, t in case["tools"].items():
            s = t["summary"]
            ratio = "-" if tool == "imagepush" or not ip or not s["medianWall"] else f"{ip / s['medianWall']:.2f}"
            rss = "-" if s["peakRssKiB"] is None else f"{s['peakRssKiB'] / 1024:.1f}"
            cpu = fmt(s["medianToolCpu"])
            if s.get("medianContainerdCpu") is not None:
                cpu += f" (+{s['medianContainerdCpu']:.2f} containerd)"
            out.append(f"| {case['title']} | {tool} | {s['runsOk']}/{s['runs']} | {fmt(s['medianWall'], 3)} | "
                       f"{fmt(s['minWall'], 3)} | {fmt(s['maxWall'], 3)} | {ratio} | {rss} | {cpu} | "
                       f"{fmt(s['medianRegistryCpu'])} | {fmt(s['medianOtherLoadPct'], 0)} |")
    out.append("")
    out.append("Wall time of the whole push (for skopeo and ctr in case 4: all their runs, one tag after another); "
               "imagepush/tool is the ratio of medians; peak RSS is the largest of the tool's processes (GNU time %M); "
               "tool CPU is user+system of the tool's processes (for ctr, the containerd daemon's share in brackets); "
               "registry CPU is the registry process's user+system during the push; other load is the CPU that the rest "
               "of the machine used meanwhile, as a share of all cores (noise).")
    tr = [(c, tool, t["traffic"]) for c in result["cases"] for tool, t in c["tools"].items() if t.get("traffic")]
    if tr:
        out.append("")
        out.append("What the registry received (one extra untimed run per tool through a counting proxy):")
        out.append("")
        out.append("| case | tool | bytes to registry | bytes from registry | connections | requests | by kind | mount attempts | imagepush report totals |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for c, tool, t in tr:
            if "bytesToRegistry" not in t:
                out.append(f"| {c['title']} | {tool} | error: {t.get('error')} | | | | | | |")
                continue
            kinds = ", ".join(f"{k} {v}" for k, v in t["requestsByKind"].items())
            tot = t.get("imagepushTotals")
            tot = "-" if not tot else ", ".join(f"{k} {v}" for k, v in tot.items())
            out.append(f"| {c['title']} | {tool} | {t['bytesToRegistry']:,} | {t['bytesFromRegistry']:,} | {t['connections']} | "
                       f"{t['requests']} | {kinds} | {t['mountAttempts']} | {tot} |")
    errs = [(c["title"], tool, e) for c in result["cases"] for tool, t in c["tools"].items() for e in t["summary"]["errors"]]
    if errs:
        out.append("")
        out.append("Failures:")
        for title, tool, e in errs[:30]:
            out.append(f"- {title} / {tool}: {e}")
    g = result.get("goals")
    if g:
        out.append("")
        out.append("Goals of issue 6 (ratios of medians from this run):")
        out.append("")
        for line in g:
            out.append(f"- {line}")
    op = result.get("operator")
    if op:
        out.append("")
        out.append("Operator: ImagePush objects applied at once against the API test double")
        out.append("")
        if "error" in op and "ready" not in op:
            out.append(f"- error: {op['error']}")
        else:
            out.append("| objects | all Ready | Ready | Stalled | seconds to all Ready | first / median Ready s | create to Ready median / p95 s | API requests per push | controller peak RSS MiB | controller CPU s | double CPU s | registry tags missing |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
            out.append(f"| {op['objects']} | {op['allReady']} | {op['ready']} | {op['stalled']} | {op['seconds']} | "
                       f"{op['firstReadySeconds']} / {op['medianReadySeconds']} | "
                       f"{op.get('medianCreateToReadySeconds')} / {op.get('p95CreateToReadySeconds')} | {op['apiRequestsPerPush']} | "
                       f"{op['controllerPeakRssKiB'] / 1024:.1f} | {op['controllerCpu']:.2f} | {op['doubleCpu']:.2f} | {op.get('registryMissing')} |")
            out.append("")
            out.append("API requests by verb: " + ", ".join(f"{k} {v}" for k, v in op["apiRequestsByVerb"].items()))
            if op.get("errors"):
                out.append("Errors: " + "; ".join(op["errors"]))
    return "\n".join(out)


def goals(result):
    def med(case, tool):
        for c in result["cases"]:
            if c["num"] == case and tool in c["tools"]:
                return c["tools"][tool]["summary"]["medianWall"]
        return None

    lines = []

    def ratio_goal(case, peer, limit, text):
        a, b = med(case, "imagepush"), med(case, peer)
        if a and b:
            r = a / b
            lines.append(f"case {case}: imagepush/{peer} = {r:.2f} (goal <= {limit}): {'met' if r <= limit else 'NOT met'} — {text}")

    ratio_goal(1, "skopeo", 0.7, "fresh 1 GiB push")
    ratio_goal(1, "curl-x8", 1.15, "within the raw parallel upload bound (8 streams)")
    ratio_goal(1, "curl-x4", 1.15, "within the raw parallel upload bound (4 streams)")
    ratio_goal(2, "skopeo", 1.0, "nothing to do")
    ratio_goal(3, "skopeo", 1.0, "mounts")
    for c in result["cases"]:
        if c["num"] == 3 and c["tools"].get("imagepush", {}).get("traffic"):
            t = c["tools"]["imagepush"]["traffic"]
            tot = t.get("imagepushTotals") or {}
            up = t.get("bytesToRegistry")
            lines.append(f"case 3: imagepush sent {up:,} bytes to the registry, report bytesUploaded "
                         f"{tot.get('bytesUploaded')} (goal: zero layer bytes): "
                         f"{'met' if tot.get('bytesUploaded') == 0 and up is not None and up < 1 * MiB else 'NOT met'}")
    ratio_goal(4, "skopeo", 0.5, "all tags vs skopeo one tag at a time")
    # Archives: skopeo unpacks an oci-archive into a temporary directory before it pushes;
    # imagepush reads it in place, so it must at least not be slower.
    ratio_goal(7, "skopeo", 1.0, "1 GiB from a plain archive")
    ratio_goal(8, "skopeo", 1.0, "1 GiB from a gzip archive")
    for c in result["cases"]:
        t = c["tools"].get("imagepush", {}).get("traffic") if c["num"] == 9 else None
        if t and "bytesToRegistry" in t:
            distinct = c.get("distinctBlobBytes")
            up = (t.get("imagepushTotals") or {}).get("bytesUploaded")
            lines.append(f"case 9: imagepush uploaded {up:,} blob bytes ({t['bytesToRegistry']:,} bytes on the wire), "
                         f"distinct blob bytes {distinct:,} (goal: uploaded = distinct): "
                         f"{'met' if up == distinct else 'NOT met'}")
    rss = [(c["num"], c["tools"]["imagepush"]["summary"]["peakRssKiB"]) for c in result["cases"]
           if "imagepush" in c["tools"] and c["tools"]["imagepush"]["summary"]["peakRssKiB"]]
    if rss:
        worst = max(r for _, r in rss)
        lines.append("imagepush peak RSS by case: " + ", ".join(f"{n}: {r / 1024:.1f} MiB" for n, r in rss) +
                     f" (goal < 40 MiB everywhere): {'met' if worst < 40 * 1024 else 'NOT met'}")
    return lines


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def tool_version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=20)
        return (r.stdout or r.stderr).decode().strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, help="timed runs per tool and case (default 5, --quick 2)")
    ap.add_argument("--cases", default="1,2,3,4,5,6", help="comma-separated case numbers (default 1-6; 7-9 on request)")
    ap.add_argument("--quick", action="store_true", help="small sizes and 2 runs: a smoke test")
    ap.add_argument("--tools", default="imagepush,skopeo,ctr",
                    help="peers to compare (default imagepush,skopeo,ctr; ctr is skipped when containerd is not installed)")
    ap.add_argument("--no-bound", action="store_true", help="skip the parallel curl upper bound of case 1")
    ap.add_argument("--no-traffic", action="store_true", help="skip the counting-proxy runs of cases 2, 3, 4, 6")
    ap.add_argument("--operator", action="store_true", help="also run the operator benchmark against the API test double")
    ap.add_argument("--operator-count", type=int, help="ImagePush objects (default 200, --quick 20)")
    ap.add_argument("--operator-progress-interval", type=int, default=1,
                    help="the controller's --progress-interval in the operator run (default 1; the controller's own default is 5)")
    ap.add_argument("--operator-timeout", type=float, default=900, help="seconds to wait for all Ready (default 900)")
    ap.add_argument("--binary", help="imagepush binary to use (default: cargo build --release, target/release/imagepush)")
    ap.add_argument("--out", help="JSON results file (default $TMPDIR/imagepush-bench-<time>.json)")
    ap.add_argument("--workdir", help="where layouts, registry storage and logs go (default: a new temporary directory, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--registry-storage", help="directory for the registries' storage (default inside the work directory; e.g. /dev/shm)")
    args = ap.parse_args()
    cases = sorted({int(c) for c in args.cases.split(",") if c.strip()})
    if any(c not in CASE_TITLES for c in cases):
        ap.error(f"cases are 1..{max(CASE_TITLES)}")
    runs = args.runs or (2 if args.quick else 5)
    sz = sizes(args.quick)
    count = args.operator_count or sz["op_count"]

    for need in ("/usr/bin/docker-registry",):
        if not os.path.exists(need):
            sys.exit(f"{need} is missing: apt-get install docker-registry")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    notes = []
    if "skopeo" in tools and not shutil.which("skopeo"):
        notes.append("skopeo is not installed (apt-get install skopeo): skipped")
        tools.remove("skopeo")
    if "ctr" in tools and not (shutil.which("ctr") and shutil.which("containerd")):
        notes.append("containerd/ctr is not installed (apt-get install containerd): skipped")
        tools.remove("ctr")
    if "imagepush" not in tools:
        tools.insert(0, "imagepush")

    if not args.binary:
        log("cargo build --release")
        r = subprocess.run(["cargo", "build", "--release", "--bin", "imagepush"], cwd=REPO_ROOT)
        if r.returncode != 0:
            sys.exit("cargo build --release failed")
        args.binary = os.path.join(REPO_ROOT, "target", "release", "imagepush")
    args.binary = os.path.abspath(args.binary)

    own_workdir = not args.workdir
    args.workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="imagepush-bench-"))
    os.makedirs(args.workdir, exist_ok=True)
    if args.registry_storage:
        args.registry_storage = tempfile.mkdtemp(prefix="imagepush-bench-", dir=args.registry_storage)
    out_path = args.out or os.path.join(tempfile.gettempdir(), f"imagepush-bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    bench = Bench(args)
    if "ctr" in tools:
        try:
            bench.containerd = Containerd(args.workdir)
        except Exception as e:  # noqa: BLE001
            notes.append(f"containerd did not start ({e}): ctr skipped")
            tools.remove("ctr")

    git_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True).stdout.decode().strip()
    git_dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True).stdout.strip())
    result = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "runs": runs, "cases": cases, "tools": tools,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
        "loadavgAtStart": open("/proc/loadavg").read().split()[:3],
        "registryStorage": args.registry_storage or "the work directory's disk",
        "imagepush": {"binary": args.binary, "git": git_rev + (" (src modified)" if git_dirty else "")},
        "versions": {"imagepush": tool_version([args.binary, "--version"]), "skopeo": tool_version(["skopeo", "--version"]),
                     "ctr": tool_version(["ctr", "--version"]) if "ctr" in tools else None,
                     "registry": tool_version(["/usr/bin/docker-registry", "--version"]), "curl": tool_version(["curl", "--version"])},
        "sizes": sz, "notes": notes, "rssMethod": "GNU time %M" if GNU_TIME else "wait4 ru_maxrss (includes the benchmark's RSS at fork)"},
        "cases": []}
    for n in notes:
        log(n)

    layouts = {}

    def layout(name):
        if name not in layouts:
            t0 = time.time()
            root = os.path.join(args.workdir, "layouts", name)
            shutil.rmtree(root, ignore_errors=True)
            lay = {"big": lambda: make_big(root, sz), "many": lambda: make_many(root, sz["c4_images"]),
                   "huge": lambda: make_huge(root, sz), "multi": lambda: make_multi(root, sz),
                   "bundle": lambda: make_bundle(root, sz)}[name]()
            layouts[name] = lay
            log(f"generated layout {name}: {human(lay.total_bytes())} in {time.time() - t0:.1f}s")
        return layouts[name]

    archives = {}

    def archive(gzip):
        if gzip not in archives:
            t0 = time.time()
            path = os.path.join(args.workdir, "layouts", "big.tar" + (".gz" if gzip else ""))
            archives[gzip] = make_archive(layout("big"), path, gzip)
            log(f"wrote {path}: {human(os.path.getsize(path))} in {time.time() - t0:.1f}s")
        return archives[gzip]

    try:
        for num in cases:
            title = CASE_TITLES[num].format(l1=human(sz["c1_layer"]), n4=sz["c4_images"], l5=human(sz["c5_layer"]),
                                            n9=sz["c9_images"], b9=human(sz["c9_base"]))
            if num == 1:
                case = Case(1, title, layout("big"), ["v1"], "bench/c1")
            elif num == 2:
                case = Case(2, title, layout("big"), ["v1"], "bench/c2", prep_repo="bench/c2")
            elif num == 3:
                case = Case(3, title, layout("big"), ["v1"], "bench/c3-second", prep_repo="bench/c3-first",
                            mount_from="bench/c3-first")
            elif num == 4:
                lay = layout("many")
                case = Case(4, title, lay, sorted(lay.tags), "bench/c4", all_tags=True)
            elif num == 5:
                case = Case(5, title, layout("huge"), ["v1"], "bench/c5")
            elif num == 6:
                case = Case(6, title, layout("multi"), ["v1"], "bench/c6", index=True)
            elif num in (7, 8):
                case = Case(num, title, layout("big"), ["v1"], f"bench/c{num}", archive=archive(num == 8))
            else:
                case = Case(9, title, layout("bundle"), [], "bench/c9", mirror=True)
            case_tools = list(tools)
            if num == 1 and not args.no_bound:
                case_tools += ["curl-x8", "curl-x4"]
            log(f"case {title}: tools {', '.join(case_tools)}, {runs} runs each")
            samples = {t: [] for t in case_tools}
            for run in range(runs):
                for tool in case_tools:
                    bcase = case if not tool.startswith("curl") else Case(1, title, case.layout, [], "bench/raw", bound=True)
                    s = measure(bench, bcase, tool, run)
                    samples[tool].append(s)
                    log(f"  run {run + 1}/{runs} {tool}: " + (f"{s['wall']:.3f}s rss {s['peakRssKiB'] / 1024:.1f} MiB "
                                                            f"registry cpu {fmt(s.get('registryCpu'))}s, other load {s['otherLoadPct']}%"
                                                            if s.get("ok") else f"FAILED {s.get('error')}"))
            entry = {"num": num, "title": title, "layoutBytes": case.layout.total_bytes(), "tools": {}}
            if case.archive:
                entry["archiveBytes"] = os.path.getsize(case.archive)
            if case.mirror:
                entry["distinctBlobBytes"] = case.layout.blob_bytes()
            for tool in case_tools:
                entry["tools"][tool] = {"summary": summarize(samples[tool]), "samples": samples[tool]}
            if num in TRAFFIC_CASES and not args.no_traffic:
                for tool in tools:
                    t = traffic(bench, case, tool)
                    entry["tools"][tool]["traffic"] = t
                    log(f"  traffic {tool}: {t.get('bytesToRegistry', 0):,} bytes to registry, {t.get('requests')} requests, "
                        f"{t.get('mountAttempts')} mount attempts")
            result["cases"].append(entry)
            with open(out_path, "w") as f:
                json.dump(result, f, indent=1)
            # Free the disk before the next case when a layout is no longer needed.
            later = {n for n in cases if n > num}
            for name, users in (("big", {1, 2, 3, 7, 8}), ("huge", {5})):
                if name in layouts and not (later & users) and not args.keep:
                    shutil.rmtree(layouts.pop(name).root, ignore_errors=True)
            for gz, users in ((False, {7}), (True, {8})):
                if gz in archives and not (later & users) and not args.keep:
                    os.remove(archives.pop(gz))
        if args.operator:
            log(f"operator: {count} ImagePush objects against the API test double")
            lay = layouts.get("many") or layout("many")
            if len(lay.tags) < 1:
                raise RuntimeError("no layout for the operator run")
            result["operator"] = run_operator(bench, lay, count, args.operator_timeout)
            op = result["operator"]
            log(f"  operator: {op.get('ready')}/{count} Ready in {op.get('seconds')}s, "
                f"{op.get('apiRequestsPerPush')} requests per push, error {op.get('error')}")
        result["meta"]["loadavgAtEnd"] = open("/proc/loadavg").read().split()[:3]
        result["goals"] = goals(result)
        with open(out_path, "w") as f:
            json.dump(result, f, indent=1)
        print(markdown(result))
        print(f"\nJSON results: {out_path}")
    finally:
        if bench.containerd:
            bench.containerd.stop()
        if own_workdir and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
        if args.registry_storage:
            shutil.rmtree(args.registry_storage, ignore_errors=True)


if __name__ == "__main__":
    main()
