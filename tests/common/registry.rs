//! A real CNCF distribution registry (`/usr/bin/docker-registry`) for tests: one process per
//! `TestRegistry`, plain HTTP on 127.0.0.1, storage and log in a temporary directory, killed
//! on drop.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const SKOPEO_BIN: &str = "/usr/bin/skopeo";
const START_TIMEOUT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 5;

/// The `Accept` header a client sends to get any kind of manifest back.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

pub struct TestRegistry {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    creds: Option<(String, String)>,
    client: reqwest::Client,
}

impl TestRegistry {
    /// An anonymous registry: everyone may pull and push.
    pub fn start() -> TestRegistry {
        Self::start_inner(None, None)
    }

    /// An anonymous registry on a given port (to start one where clients already wait).
    pub fn start_on(port: u16) -> TestRegistry {
        Self::start_inner(None, Some(port))
    }

    /// A registry that requires HTTP basic auth (htpasswd, realm "test") for every request.
    pub fn start_with_htpasswd(user: &str, password: &str) -> TestRegistry {
        Self::start_inner(Some((user.to_string(), password.to_string())), None)
    }

    /// A registry with htpasswd auth on `port` that names itself `public_url` (`http.host`) in
    /// the URLs it generates: upload `Location`s point there, as behind a misconfigured proxy
    /// or a hostile front end.
    pub fn start_with_htpasswd_naming(
        user: &str,
        password: &str,
        port: u16,
        public_url: &str,
    ) -> TestRegistry {
        Self::start_inner_with(
            Some((user.to_string(), password.to_string())),
            Some(port),
            Some(public_url),
        )
    }

    fn start_inner(creds: Option<(String, String)>, fixed_port: Option<u16>) -> TestRegistry {
        Self::start_inner_with(creds, fixed_port, None)
    }

    fn start_inner_with(
        creds: Option<(String, String)>,
        fixed_port: Option<u16>,
        public_url: Option<&str>,
    ) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("imagepush-registry-")
            .tempdir()
            .expect("create registry tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create storage dir");
        let htpasswd = dir.path().join("htpasswd");
        if let Some((user, password)) = &creds {
            // Low cost keeps tests fast; distribution accepts any bcrypt cost.
            let hash = bcrypt::hash(password, 4).expect("bcrypt hash");
            fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
        }

        let mut last_failure = String::new();
        for attempt in 0..START_ATTEMPTS {
            let port = fixed_port.unwrap_or_else(super::free_port);
            let mut config =
                config_yaml(port, &storage, creds.as_ref().map(|_| htpasswd.as_path()));
            if let Some(url) = public_url {
                config = config.replace(
                    &format!("  addr: 127.0.0.1:{port}\n"),
                    &format!("  addr: 127.0.0.1:{port}\n  host: {url}\n"),
                );
            }
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open registry log");
            let _ = writeln!(
                &log,
                "---- imagepush test harness: attempt {attempt} on port {port} ----"
            );
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {REGISTRY_BIN}: {e}"));
            let mut child = child;
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return TestRegistry { dir, child, port, creds, client: super::http_client() };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    let port_taken = log.contains("address already in use");
                    last_failure = why;
                    if !port_taken && attempt >= 1 {
                        // Not a port race: more attempts will not help.
                        break;
                    }
                }
            }
        }
        let log = fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not come up: {last_failure}\n---- registry log ----\n{log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The htpasswd user and password, when the registry has them.
    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's temporary directory (config, htpasswd, storage, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's storage root (`<dir>/storage`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry has logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{}", self.url(), path));
        match &self.creds {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// GET a manifest: `(bytes, Content-Type, Docker-Content-Digest)`, or None on 404.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Option<(Vec<u8>, String, String)> {
        let resp = self
            .req(reqwest::Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", MANIFEST_ACCEPT)
            .send()
            .await
            .expect("GET manifest");
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return None;
        }
        let ct = header(&resp, "content-type");
        let dcd = header(&resp, "docker-content-digest");
        let body = resp.bytes().await.expect("manifest body").to_vec();
        assert!(
            status.is_success(),
            "GET /v2/{repo}/manifests/{reference}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Some((body, ct, dcd))
    }

    /// Whether `HEAD /v2/<repo>/blobs/<digest>` answers 200.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let resp = self
            .req(reqwest::Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .expect("HEAD blob");
        match resp.status() {
            StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            s => panic!("HEAD /v2/{repo}/blobs/{digest}: unexpected {s}"),
        }
    }

    /// The blob's bytes, or None on 404.
    pub async fn blob(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let resp = self
            .req(reqwest::Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .expect("GET blob");
        match resp.status() {
            StatusCode::OK => Some(resp.bytes().await.expect("blob body").to_vec()),
            StatusCode::NOT_FOUND => None,
            s => panic!("GET /v2/{repo}/blobs/{digest}: unexpected {s}"),
        }
    }

    /// The repository's tags, sorted; empty when the repository does not exist.
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let resp = self
            .req(reqwest::Method::GET, &format!("/v2/{repo}/tags/list"))
            .send()
            .await
            .expect("GET tags/list");
        if resp.status() == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.expect("tags/list JSON");
        assert!(status.is_success(), "GET /v2/{repo}/tags/list: {status}: {v}");
        let mut tags: Vec<String> = v["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// Uploads `bytes` as a blob of `repo` directly (POST + monolithic PUT); returns the digest.
    /// For seeding a repository that a test then mounts from.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        upload_blob(&self.client, &self.url(), repo, bytes, self.creds()).await
    }

    /// PUTs a manifest (or index) under `reference`; returns Docker-Content-Digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> String {
        let resp = self
            .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        let status = resp.status();
        let dcd = header(&resp, "docker-content-digest");
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status == StatusCode::CREATED,
            "PUT /v2/{repo}/manifests/{reference}: {status}: {body}"
        );
        dcd
    }

    /// DELETE a manifest by digest; true when the registry answered 202.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> bool {
        let resp = self
            .req(reqwest::Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"))
            .send()
            .await
            .expect("DELETE manifest");
        resp.status() == StatusCode::ACCEPTED
    }

    /// Pushes `desc` (a manifest or an index, and everything below it) from the layout at
    /// `layout_root` to `repo` with plain distribution API calls, children first, then tags
    /// it when `tag` is Some. Independent of the code under test; blobs missing from the
    /// layout are skipped (they must already be in the repository). Returns the digest.
    pub async fn push_from_layout(
        &self,
        layout_root: &Path,
        desc: &super::layout::Desc,
        repo: &str,
        tag: Option<&str>,
    ) -> String {
        let mut steps = Vec::new();
        plan_push(layout_root, &desc.digest, &desc.media_type, &mut steps);
        let mut done = std::collections::HashSet::new();
        for step in &steps {
            match step {
                PushStep::Blob(digest) => {
                    if !done.insert(digest.clone()) {
                        continue;
                    }
                    let path = layout_blob_path(layout_root, digest);
                    match fs::read(&path) {
                        Ok(bytes) => {
                            self.push_blob(repo, &bytes).await;
                        }
                        Err(_) => assert!(
                            self.blob_exists(repo, digest).await,
                            "{digest} is neither in the layout nor in {repo}"
                        ),
                    }
                }
                PushStep::Manifest(digest, media_type) => {
                    if !done.insert(digest.clone()) {
                        continue;
                    }
                    let bytes =
                        fs::read(layout_blob_path(layout_root, digest)).expect("manifest blob");
                    self.push_manifest(repo, digest, &bytes, media_type).await;
                }
            }
        }
        if let Some(tag) = tag {
            let bytes =
                fs::read(layout_blob_path(layout_root, &desc.digest)).expect("manifest blob");
            self.push_manifest(repo, tag, &bytes, &desc.media_type).await;
        }
        desc.digest.clone()
    }

    // ---- skopeo, the third-party client that reads back what we pushed ----

    fn skopeo_creds(&self, flag: &str) -> Vec<String> {
        match &self.creds {
            Some((u, p)) => vec![flag.to_string(), format!("{u}:{p}")],
            None => Vec::new(),
        }
    }

    /// `skopeo inspect --raw docker://HOST/<image_ref>`; `image_ref` is `repo:tag` or `repo@digest`.
    pub fn skopeo_inspect_raw(&self, image_ref: &str) -> Vec<u8> {
        let mut args =
            vec!["inspect".to_string(), "--raw".to_string(), "--tls-verify=false".to_string()];
        args.extend(self.skopeo_creds("--creds"));
        args.push(format!("docker://{}/{image_ref}", self.host()));
        skopeo_ok(&args).stdout
    }

    /// `skopeo inspect` (parsed JSON) of a single-image reference. For an index skopeo picks the
    /// host platform; use `skopeo_inspect_platform` to choose.
    pub fn skopeo_inspect(&self, image_ref: &str) -> serde_json::Value {
        self.skopeo_inspect_platform(image_ref, None)
    }

    /// `skopeo inspect` with `--override-os/--override-arch/--override-variant` for an index.
    pub fn skopeo_inspect_platform(
        &self,
        image_ref: &str,
        platform: Option<(&str, &str, Option<&str>)>,
    ) -> serde_json::Value {
        let mut args = vec!["inspect".to_string(), "--tls-verify=false".to_string()];
        if let Some((os, arch, variant)) = platform {
            args.push(format!("--override-os={os}"));
            args.push(format!("--override-arch={arch}"));
            if let Some(v) = variant {
                args.push(format!("--override-variant={v}"));
            }
        }
        args.extend(self.skopeo_creds("--creds"));
        args.push(format!("docker://{}/{image_ref}", self.host()));
        let out = skopeo_ok(&args);
        serde_json::from_slice(&out.stdout).expect("skopeo inspect JSON")
    }

    /// `skopeo copy --preserve-digests oci:<layout>:<tag> docker://HOST/<dest_ref>` (with `--all`
    /// when `all`). Seeds the registry with content independent of the code under test.
    pub fn skopeo_copy_from_layout(&self, layout: &Path, tag: &str, dest_ref: &str, all: bool) {
        let mut args = vec![
            "copy".to_string(),
            "--preserve-digests".to_string(),
            "--dest-tls-verify=false".to_string(),
        ];
        if all {
            args.push("--all".to_string());
        }
        args.extend(self.skopeo_creds("--dest-creds"));
        args.push(format!("oci:{}:{tag}", layout.display()));
        args.push(format!("docker://{}/{dest_ref}", self.host()));
        skopeo_ok(&args);
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum PushStep {
    Blob(String),
    Manifest(String, String),
}

fn layout_blob_path(root: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').expect("digest alg:hex");
    root.join("blobs").join(alg).join(hex)
}

/// Children before parents: blobs, then manifests, then indexes.
fn plan_push(root: &Path, digest: &str, media_type: &str, out: &mut Vec<PushStep>) {
    let bytes =
        fs::read(layout_blob_path(root, digest)).unwrap_or_else(|e| panic!("read {digest}: {e}"));
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest JSON");
    if let Some(children) = v["manifests"].as_array() {
        for c in children {
            plan_push(
                root,
                c["digest"].as_str().expect("child digest"),
                c["mediaType"].as_str().expect("child mediaType"),
                out,
            );
        }
    } else {
        let config = std::iter::once(&v["config"]);
        let layers = v["layers"].as_array().into_iter().flatten();
        for d in config.chain(layers) {
            out.push(PushStep::Blob(d["digest"].as_str().expect("blob digest").to_string()));
        }
    }
    out.push(PushStep::Manifest(digest.to_string(), media_type.to_string()));
}

/// Polls `GET /v2/` until it answers 200 or 401, the process exits, or the timeout passes.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("docker-registry exited with {status}"));
        }
        if let Some(code) = raw_get_status(addr, "/v2/")
            && (code == 200 || code == 401)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no 200/401 from GET /v2/ on {addr} within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_yaml(port: u16, storage: &Path, htpasswd: Option<&Path>) -> String {
    let mut s = format!(
        "version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: imagepush-test-http-secret
",
        storage = storage.display()
    );
    if let Some(path) = htpasswd {
        s.push_str(&format!(
            "auth:
  htpasswd:
    realm: test
    path: {}
",
            path.display()
        ));
    }
    s
}

/// Status code of a plain HTTP/1.0 GET, or None when the server does not answer.
fn raw_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// Runs skopeo and panics with its stderr unless it succeeds.
pub fn skopeo_ok(args: &[String]) -> std::process::Output {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs skopeo and returns its output whatever the exit status.
pub fn skopeo(args: &[String]) -> std::process::Output {
    Command::new(SKOPEO_BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SKOPEO_BIN}: {e}"))
}

/// Uploads `bytes` as a blob to `repo` at `base_url` (e.g. `http://127.0.0.1:PORT`, or a
/// proxy's address) with POST then a monolithic PUT; returns the digest.
pub async fn upload_blob(
    client: &reqwest::Client,
    base_url: &str,
    repo: &str,
    bytes: &[u8],
    creds: Option<(&str, &str)>,
) -> String {
    let digest = super::sha256_digest(bytes);
    let auth = |rb: reqwest::RequestBuilder| match creds {
        Some((u, p)) => rb.basic_auth(u, Some(p)),
        None => rb,
    };
    let start = format!("{base_url}/v2/{repo}/blobs/uploads/");
    let resp = auth(client.post(&start)).send().await.expect("POST blob upload");
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST {start}");
    let location = header(&resp, "location");
    let mut url = reqwest::Url::parse(&start).unwrap().join(&location).expect("upload Location");
    url.query_pairs_mut().append_pair("digest", &digest);
    let resp = auth(client.put(url.clone()))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("PUT blob");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "PUT {url}: {body}");
    digest
}
