#!/usr/bin/env python3
"""Writes examples/layouts/hello: a small two-platform OCI image layout (linux/amd64 and
linux/arm64, each one real gzip'd tar layer over a shared base layer), tagged v1 and latest.
Deterministic: running it again produces the same bytes."""
import gzip, hashlib, io, json, os, shutil, sys, tarfile

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "examples", "layouts", "hello")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(os.path.join(root, "blobs", "sha256"))

def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)

def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, text in files:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    gz = gzip.compress(tar_bytes, mtime=0)
    digest, size = put(gz)
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}, "sha256:" + hashlib.sha256(tar_bytes).hexdigest()

def dumps(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

base, base_diff = layer([("etc/motd", "imagepush example base layer\n")])
manifests = []
for arch in ("amd64", "arm64"):
    top, top_diff = layer([("hello.txt", f"hello from linux/{arch}\n")])
    config = {
        "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/cat", "/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [base_diff, top_diff]},
    }
    cdigest, csize = put(dumps(config))
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": [base, top],
    }
    mdigest, msize = put(dumps(manifest))
    manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize,
                      "platform": {"architecture": arch, "os": "linux"}})
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
idigest, isize = put(dumps(index))
entries = [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idigest, "size": isize,
            "annotations": {"org.opencontainers.image.ref.name": tag}} for tag in ("v1", "latest")]
with open(os.path.join(root, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(root, "index.json"), "wb") as f:
    f.write(dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}))
print(idigest)
