#!/usr/bin/env python3
"""A registry with the OCI distribution spec's referrers API, for tests: a reverse proxy in
front of a CNCF distribution registry (which has no such API) that adds what the spec asks of
a registry offering it, and nothing else:

- a manifest PUT whose body has a `subject` is answered (when distribution accepts it) with
  `OCI-Subject: <subject digest>`, and the manifest is listed as a referrer of that subject;
- `GET /v2/<name>/referrers/<digest>` answers an image index of those referrers (each with
  `artifactType`, else the config's media type, and the manifest's annotations), filtered by
  `?artifactType=` when asked (then with `OCI-Filters-Applied: artifactType`).

Everything else is forwarded unchanged (the Host header too, so distribution's Location
headers point back here). Request bodies are read whole (the tests push small blobs), with
Content-Length or chunked.

    python3 referrers_api.py LISTEN_PORT UPSTREAM_HOST:PORT
"""

import http.client
import http.server
import json
import sys
import threading
import urllib.parse

REFERRERS = {}  # (name, subject digest) -> [descriptor]
LOCK = threading.Lock()
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def forward(self, body):
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length", "connection")}
        if body or self.command in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheaders(), data

    def answer(self, status, headers, data, extra=()):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def referrers(self, name, digest, query):
        with LOCK:
            listed = list(REFERRERS.get((name, digest), []))
        extra = []
        wanted = urllib.parse.parse_qs(query).get("artifactType")
        if wanted:
            listed = [d for d in listed if d.get("artifactType") in wanted]
            extra.append(("OCI-Filters-Applied", "artifactType"))
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}).encode()
        self.answer(200, [("Content-Type", OCI_INDEX)], data, extra)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")
        if self.command == "GET" and len(parts) >= 5 and parts[-2] == "referrers":
            return self.referrers("/".join(parts[2:-2]), parts[-1], url.query)
        body = self.body()
        status, headers, data = self.forward(body)
        extra = []
        if self.command == "PUT" and len(parts) >= 5 and parts[-2] == "manifests" and 200 <= status < 300:
            try:
                m = json.loads(body)
            except ValueError:
                m = {}
            subject = (m.get("subject") or {}).get("digest")
            if subject:
                digest = dict((k.lower(), v) for k, v in headers).get("docker-content-digest")
                artifact = m.get("artifactType") or (m.get("config") or {}).get("mediaType")
                desc = {"mediaType": m.get("mediaType"), "digest": digest, "size": len(body)}
                if artifact:
                    desc["artifactType"] = artifact
                if m.get("annotations"):
                    desc["annotations"] = m["annotations"]
                key = ("/".join(parts[2:-2]), subject)
                with LOCK:
                    listed = REFERRERS.setdefault(key, [])
                    if all(d["digest"] != digest for d in listed):
                        listed.append(desc)
                extra.append(("OCI-Subject", subject))
        self.answer(status, headers, data, extra)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


def main():
    port, upstream = int(sys.argv[1]), sys.argv[2]
    Handler.upstream = upstream
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
