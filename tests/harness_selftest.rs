//! Tests of the integration-test harness itself (tests/common): the real registry, the
//! counting proxy and the layout builder, checked against third-party tools (skopeo).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use common::layout::{self, ImageSpec, LayoutBuilder};
use common::registry::upload_blob;
use common::{CountingProxy, TestRegistry, sha256_digest};

#[tokio::test]
async fn registry_starts_and_answers() {
    let reg = TestRegistry::start();
    let resp = common::http_client().get(format!("{}/v2/", reg.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(reg.host().starts_with("127.0.0.1:"));
    assert!(reg.manifest("nothing/here", "latest").await.is_none());
    assert!(reg.tags("nothing/here").await.is_empty());
    let digest = reg.push_blob("selftest/a", b"hello blob").await;
    assert_eq!(digest, sha256_digest(b"hello blob"));
    assert!(reg.blob_exists("selftest/a", &digest).await);
    assert!(!reg.blob_exists("selftest/b", &digest).await, "blobs are per repository");
    assert_eq!(reg.blob("selftest/a", &digest).await.unwrap(), b"hello blob");
    assert!(reg.log().contains("listening on"), "log: {}", reg.log());
}

#[tokio::test]
async fn htpasswd_registry_refuses_anonymous_and_accepts_password() {
    let reg = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let client = common::http_client();
    let url = format!("{}/v2/", reg.url());

    let anon = client.get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    let challenge = anon.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.starts_with("Basic") && challenge.contains("realm=\"test\""), "{challenge}");

    let wrong = client.get(&url).basic_auth("alice", Some("nope")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let ok = client.get(&url).basic_auth("alice", Some("s3cret")).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    // The helpers authenticate by themselves.
    let digest = reg.push_blob("private/x", b"secret bytes").await;
    assert!(reg.blob_exists("private/x", &digest).await);
    assert_eq!(reg.creds(), Some(("alice", "s3cret")));
}

#[tokio::test]
async fn skopeo_copies_a_built_layout_with_the_same_digests() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = layout::simple_image(dir.path(), "v1", &[1000, 200_000], 7);

    reg.skopeo_copy_from_layout(dir.path(), "v1", "selftest/simple:v1", false);

    let (bytes, content_type, dcd) = reg.manifest("selftest/simple", "v1").await.expect("manifest");
    assert_eq!(sha256_digest(&bytes), image.digest);
    assert_eq!(dcd, image.digest);
    assert_eq!(content_type, layout::OCI_MANIFEST);
    assert_eq!(bytes.len() as u64, image.size);
    assert_eq!(bytes, b.read_blob(&image.digest));
    for d in b.blob_digests(&image) {
        assert!(reg.blob_exists("selftest/simple", &d).await, "{d}");
    }
    let (_, layers) = b.children(&image);
    assert_eq!(layers.iter().map(|l| l.size).collect::<Vec<_>>(), vec![1000, 200_000]);
    assert_eq!(
        reg.blob("selftest/simple", &layers[0].digest).await.unwrap(),
        b.read_blob(&layers[0].digest)
    );
    assert_eq!(reg.tags("selftest/simple").await, vec!["v1".to_string()]);

    // skopeo reads it back the same way.
    assert_eq!(reg.skopeo_inspect_raw("selftest/simple:v1"), bytes);
    let inspect = reg.skopeo_inspect("selftest/simple:v1");
    assert_eq!(inspect["Digest"], image.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
}

#[tokio::test]
async fn skopeo_copies_a_docker_media_type_image() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayoutBuilder::new(dir.path());
    let image = b.image(&ImageSpec::new(&[(1, 3000), (2, 5000)], 1).docker(true));
    b.tag(&image, "d");
    b.write();
    // skopeo 1.9's `oci:` transport skips index.json entries with Docker media types, so the
    // harness pushes this one itself (plain distribution API calls).
    reg.push_from_layout(dir.path(), &image, "selftest/docker", Some("d")).await;
    let (bytes, content_type, dcd) = reg.manifest("selftest/docker", "d").await.unwrap();
    assert_eq!(content_type, layout::DOCKER_MANIFEST);
    assert_eq!(dcd, image.digest);
    assert_eq!(sha256_digest(&bytes), image.digest);
    for d in b.blob_digests(&image) {
        assert!(reg.blob_exists("selftest/docker", &d).await, "{d}");
    }
    let inspect = reg.skopeo_inspect("selftest/docker:d");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn skopeo_copies_a_multi_platform_index_with_attestations() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let platforms =
        [("linux", "amd64", None), ("linux", "arm64", Some("v8")), ("linux", "arm", Some("v7"))];
    let (b, index, images) =
        layout::multi_platform(dir.path(), "multi", &platforms, true, true, 42);
    assert_eq!(images.len(), 3);
    let entries = b.index_manifests(&index);
    assert_eq!(entries.len(), 6);
    let attestations: Vec<_> = entries
        .iter()
        .filter(|d| d.json["annotations"][layout::REFERENCE_TYPE] == layout::ATTESTATION_MANIFEST)
        .collect();
    assert_eq!(attestations.len(), 3);
    assert_eq!(
        attestations[1].json["annotations"][layout::REFERENCE_DIGEST],
        images[1].digest.as_str()
    );
    assert_eq!(attestations[0].platform(), Some(("unknown".into(), "unknown".into(), None)));
    assert_eq!(images[1].platform(), Some(("linux".into(), "arm64".into(), Some("v8".into()))));
    // The base layer is shared.
    let base: Vec<String> = images.iter().map(|i| b.children(i).1[0].digest.clone()).collect();
    assert!(base.iter().all(|d| d == &base[0]));

    reg.skopeo_copy_from_layout(dir.path(), "multi", "selftest/multi:multi", true);

    let (bytes, content_type, dcd) = reg.manifest("selftest/multi", "multi").await.unwrap();
    assert_eq!(content_type, layout::OCI_INDEX);
    assert_eq!(dcd, index.digest);
    assert_eq!(sha256_digest(&bytes), index.digest);
    for entry in &entries {
        let (m, _, d) =
            reg.manifest("selftest/multi", &entry.digest).await.expect("child manifest");
        assert_eq!(d, entry.digest);
        assert_eq!(sha256_digest(&m), entry.digest);
    }
    let arm =
        reg.skopeo_inspect_platform("selftest/multi:multi", Some(("linux", "arm64", Some("v8"))));
    assert_eq!(arm["Architecture"], "arm64");
    // skopeo's "Digest" is the digest of what the reference names (the index); the config
    // label tells which image it chose.
    assert_eq!(arm["Digest"], index.digest.as_str());
    assert_eq!(arm["Labels"]["imagepush.test.config-seed"], "4201");

    // A Docker manifest list is accepted too.
    let dir2 = tempfile::tempdir().unwrap();
    let mut b2 = LayoutBuilder::new(dir2.path());
    let imgs: Vec<_> = [("amd64", 1u64), ("arm64", 2)]
        .iter()
        .map(|&(arch, s)| {
            b2.image(&ImageSpec::new(&[(s, 1000)], s).platform("linux", arch, None).docker(true))
        })
        .collect();
    let list = b2.index(&imgs, true);
    b2.tag(&list, "list");
    b2.write();
    reg.push_from_layout(dir2.path(), &list, "selftest/list", Some("list")).await;
    let (_, ct, d) = reg.manifest("selftest/list", "list").await.unwrap();
    assert_eq!(ct, layout::DOCKER_MANIFEST_LIST);
    assert_eq!(d, list.digest);
    let amd = reg.skopeo_inspect_platform("selftest/list:list", Some(("linux", "amd64", None)));
    assert_eq!(amd["Labels"]["imagepush.test.config-seed"], "1");
}

#[tokio::test]
async fn skopeo_works_against_the_htpasswd_registry() {
    let reg = TestRegistry::start_with_htpasswd("bob", "pw");
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = layout::simple_image(dir.path(), "t", &[500], 3);
    reg.skopeo_copy_from_layout(dir.path(), "t", "auth/img:t", false);
    let raw = reg.skopeo_inspect_raw("auth/img:t");
    assert_eq!(sha256_digest(&raw), image.digest);
    assert_eq!(reg.manifest("auth/img", "t").await.unwrap().2, image.digest);
}

fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn layout_builder_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let build = |root: &Path| {
        let (mut b, index, _) = layout::multi_platform(
            root,
            "x",
            &[("linux", "amd64", None), ("linux", "arm64", None)],
            true,
            true,
            9,
        );
        let img = b.image(&ImageSpec::new(&[(5, 100)], 5).docker(true));
        b.tag(&img, "docker");
        b.add_untagged(&index);
        b.write();
        index
    };
    let ia = build(a.path());
    let ic = build(c.path());
    assert_eq!(ia, ic);
    let ta = read_tree(a.path());
    assert_eq!(ta, read_tree(c.path()));
    assert!(ta.contains_key("oci-layout") && ta.contains_key("index.json"));
    // Every blob file is named by its digest.
    for (path, bytes) in &ta {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_digest(bytes), format!("sha256:{hex}"));
        }
    }
    // Different seeds give different images; same seed and size give the same layer.
    let d = tempfile::tempdir().unwrap();
    let (mut b, i1) = layout::simple_image(d.path(), "a", &[100], 1);
    let (_, i2) = layout::simple_image(&d.path().join("other"), "a", &[100], 2);
    assert_ne!(i1.digest, i2.digest);
    assert_eq!(b.layer(77, 10), b.layer(77, 10));
    assert_ne!(b.layer(77, 10).digest, b.layer(78, 10).digest);
    // Retagging replaces the entry; remove_blob makes a thin layout.
    b.tag(&i1, "a");
    assert_eq!(b.entries().len(), 1);
    let layer = b.children(&i1).1[0].digest.clone();
    b.remove_blob(&layer);
    assert!(!b.blob_path(&layer).exists());
    b.remove_blob(&layer); // idempotent
}

#[tokio::test]
async fn counting_proxy_counts_uploaded_blob_bytes() {
    let reg = TestRegistry::start();
    let proxy = CountingProxy::start(reg.addr());
    let client = common::http_client();
    let blob = layout::pseudo_random_bytes(11, 300_000);

    let digest = upload_blob(&client, &proxy.url(), "proxied/repo", &blob, None).await;
    assert!(proxy.bytes_to_server() >= blob.len() as u64, "counted {}", proxy.bytes_to_server());
    assert!(proxy.bytes_to_client() > 0);
    assert!(proxy.connections() >= 1);
    assert!(reg.blob_exists("proxied/repo", &digest).await);

    proxy.reset();
    assert_eq!(proxy.bytes_to_server(), 0);
    // A HEAD through the proxy carries no blob bytes.
    let resp = client
        .head(format!("{}/v2/proxied/repo/blobs/{digest}", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let after_head = proxy.bytes_to_server();
    assert!(after_head > 0 && after_head < 1000, "{after_head}");
}

#[test]
fn counting_proxy_works_without_a_tokio_runtime() {
    let reg = TestRegistry::start();
    let proxy = CountingProxy::start_to(&reg.host());
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", proxy.host());
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(proxy.bytes_to_server(), req.len() as u64);
    assert_eq!(proxy.bytes_to_client(), resp.len() as u64);
    drop(proxy); // stops its thread
}

#[tokio::test]
async fn registry_supports_cross_repository_mount() {
    let reg = TestRegistry::start_with_htpasswd("u", "p");
    let digest = reg.push_blob("src/repo", b"mount me").await;
    let client = common::http_client();
    let resp = client
        .post(format!("{}/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo", reg.url()))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "mounted");
    assert!(reg.blob_exists("dst/repo", &digest).await);
    // Unknown source: the registry opens an ordinary upload session instead (202).
    let other = sha256_digest(b"not there");
    let resp = client
        .post(format!("{}/v2/dst/repo/blobs/uploads/?mount={other}&from=src/repo", reg.url()))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// The open-file recorder behind the confinement checks: split calls are joined, failed and
/// write-only opens are not reads, and any byte of a path survives.
#[test]
fn open_trace_parsing_keeps_only_successful_reads() {
    fn hex(s: &[u8]) -> String {
        s.iter().map(|b| format!("\\x{b:02x}")).collect()
    }
    let trace = format!(
        "101 openat(AT_FDCWD, \"{a}\", O_RDONLY|O_CLOEXEC) = 3\n\
         102 openat(AT_FDCWD, \"{b}\", O_RDONLY|O_NOFOLLOW <unfinished ...>\n\
         101 openat(AT_FDCWD, \"{c}\", O_RDONLY) = -1 ENOENT (No such file or directory)\n\
         102 <... openat resumed>) = 7\n\
         101 openat(AT_FDCWD, \"{d}\", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 4\n\
         103 open(\"{e}\", O_RDWR) = 5\n",
        a = hex(b"/layout/index.json"),
        b = hex(b"/outside/secret"),
        c = hex(b"/missing"),
        d = hex(b"/report.json"),
        e = hex(b"/odd/\xff\n name"),
    );
    let opened = common::cli::Opened::parse(trace.as_bytes());
    use std::os::unix::ffi::OsStrExt;
    let got: Vec<&[u8]> = opened.paths.iter().map(|p| p.as_os_str().as_bytes()).collect();
    assert_eq!(got, [&b"/layout/index.json"[..], b"/outside/secret", b"/odd/\xff\n name"]);
    let caught = std::panic::catch_unwind(|| opened.assert_confined(Path::new("/layout"), &[]));
    let message = *caught.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("/outside/secret") && !message.contains("index.json"), "{message}");
}
