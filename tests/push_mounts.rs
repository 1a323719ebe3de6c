//! Cross-repository mounts, the sources file, thin layouts and upload concurrency, checked
//! from the registry's side: a counting proxy in front of it measures what was sent.

mod common;

use std::sync::{Arc, Mutex};

use common::{
    CountingProxy, LayoutBuilder, TestRegistry, blob_outcomes, imagepush, report, simple_image,
};

const MIB: usize = 1024 * 1024;

fn layer_bytes(b: &LayoutBuilder, image: &common::Desc) -> u64 {
    b.blob_digests(image).iter().map(|d| b.read_blob(d).len() as u64).sum()
}

#[tokio::test]
async fn promotion_mounts_every_blob_and_uploads_no_layer_bytes() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", &[2 * MIB, MIB, 1000], 5);
    let l = layout.to_str().unwrap();
    let host = proxy.host();
    imagepush(&["push", "--plain-http", l, &format!("{host}/team/app:v1")]).ok();
    let image_bytes = layer_bytes(&b, &image);
    assert!(proxy.bytes_to_server() > image_bytes, "first push uploads the image");

    proxy.reset();
    let report_path = dir.path().join("r.json");
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--mount-from",
        "team/app",
        "--report",
        report_path.to_str().unwrap(),
        l,
        &format!("{host}/prod/app:v1"),
    ]);
    run.ok();
    let sent = proxy.bytes_to_server();
    assert!(sent < 32 * 1024, "promotion sent {sent} bytes for a {image_bytes}-byte image");
    let r = report(&report_path);
    assert_eq!(r["totals"]["mounted"], 4);
    assert_eq!(r["totals"]["uploaded"], 0);
    assert_eq!(r["totals"]["bytesUploaded"], 0);
    for (digest, (outcome, from)) in blob_outcomes(&r) {
        assert_eq!(outcome, "mounted", "{digest}");
        assert_eq!(from.as_deref(), Some(format!("{host}/team/app").as_str()));
        assert!(registry.blob_exists("prod/app", &digest).await);
    }
    assert!(run.stdout.contains("Mounted from team/app"), "{}", run.stdout);
    assert_eq!(registry.manifest("prod/app", "v1").await.unwrap().2, image.digest);
}

#[tokio::test]
async fn sources_file_is_extended_and_makes_the_next_push_mount() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", &[MIB, 2000], 8);
    let sources = dir.path().join("sources.json");
    let (l, s) = (layout.to_str().unwrap(), sources.to_str().unwrap());
    let host = proxy.host();

    imagepush(&["push", "--plain-http", "--sources", s, l, &format!("{host}/team/app:v1")]).ok();
    let map: serde_json::Value = serde_json::from_slice(&std::fs::read(&sources).unwrap()).unwrap();
    let digests = b.blob_digests(&image);
    assert_eq!(map.as_object().unwrap().len(), digests.len());
    for d in &digests {
        assert_eq!(map[d], serde_json::json!([format!("{host}/team/app")]), "{d}");
    }

    // No --mount-from: the sources file alone makes the next push mount.
    proxy.reset();
    let report_path = dir.path().join("r.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--sources",
        s,
        "--report",
        report_path.to_str().unwrap(),
        l,
        &format!("{host}/other/app:v1"),
    ])
    .ok();
    assert!(proxy.bytes_to_server() < 32 * 1024, "sent {}", proxy.bytes_to_server());
    let r = report(&report_path);
    assert_eq!(r["totals"]["mounted"], digests.len());
    let map: serde_json::Value = serde_json::from_slice(&std::fs::read(&sources).unwrap()).unwrap();
    for d in &digests {
        let names: Vec<&str> =
            map[d].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(names, [format!("{host}/other/app"), format!("{host}/team/app")], "{d}");
    }

    // Entries for another registry are not candidates here.
    let foreign = dir.path().join("foreign.json");
    let mut m = serde_json::Map::new();
    for d in &digests {
        m.insert(d.clone(), serde_json::json!(["elsewhere.example.com/team/app"]));
    }
    std::fs::write(&foreign, serde_json::to_vec(&m).unwrap()).unwrap();
    let report_path = dir.path().join("r2.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--sources",
        foreign.to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
        l,
        &format!("{host}/third/app:v1"),
    ])
    .ok();
    assert_eq!(report(&report_path)["totals"]["uploaded"], digests.len());
}

#[tokio::test]
async fn prefers_the_candidate_sharing_the_longest_path_prefix() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (_b, _image) = simple_image(&layout, "v1", &[3000, 2000], 9);
    let l = layout.to_str().unwrap();
    let host = registry.host();
    imagepush(&["push", "--plain-http", l, &format!("{host}/zzz/other:v1")]).ok();
    imagepush(&["push", "--plain-http", l, &format!("{host}/team/app/base:v1")]).ok();
    let report_path = dir.path().join("r.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--mount-from",
        "zzz/other",
        "--mount-from",
        &format!("{host}/team/app/base"),
        "--report",
        report_path.to_str().unwrap(),
        l,
        &format!("{host}/team/app/web:v1"),
    ])
    .ok();
    for (d, (outcome, from)) in blob_outcomes(&report(&report_path)) {
        assert_eq!(outcome, "mounted", "{d}");
        assert_eq!(from.unwrap(), format!("{host}/team/app/base"));
    }
}

#[tokio::test]
async fn a_mount_answered_202_uploads_into_the_opened_session() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", &[MIB, 500], 10);
    let report_path = dir.path().join("r.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--mount-from",
        "empty/repo",
        "--report",
        report_path.to_str().unwrap(),
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", registry.host()),
    ])
    .ok();
    let r = report(&report_path);
    assert_eq!(r["totals"]["uploaded"], 3);
    for d in b.blob_digests(&image) {
        assert!(registry.blob_exists("team/app", &d).await);
        assert_eq!(registry.blob("team/app", &d).await.unwrap(), b.read_blob(&d));
    }
    // Every blob was first offered as a mount, and no extra upload session was opened:
    // each mount POST got a 202 whose session received the blob.
    let log = registry.log();
    let posts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("http.request.method=POST") && l.contains("/blobs/uploads/"))
        .collect();
    assert_eq!(posts.len(), 3, "one POST per blob:\n{log}");
    assert!(
        posts.iter().all(|l| l.contains("mount=") && l.contains("from=empty%2Frepo")),
        "{posts:#?}"
    );
}

#[tokio::test]
async fn thin_layout_mounts_what_it_lacks_or_fails_naming_it() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", &[2 * MIB, 4000], 12);
    let host = proxy.host();
    let l = layout.to_str().unwrap();
    imagepush(&["push", "--plain-http", l, &format!("{host}/base/app:v1")]).ok();
    let (_config, layers) = b.children(&image);
    b.remove_blob(&layers[0].digest);

    // Without a candidate: fails before uploading anything, naming the digest.
    proxy.reset();
    let run = imagepush(&["push", "--plain-http", l, &format!("{host}/team/app:v1")]);
    run.expect_code(3);
    assert!(run.stderr.contains(&layers[0].digest), "{}", run.stderr);
    assert!(proxy.bytes_to_server() < 16 * 1024, "sent {}", proxy.bytes_to_server());
    assert!(registry.tags("team/app").await.is_empty());
    assert!(!registry.blob_exists("team/app", &layers[1].digest).await);

    // With a candidate that holds it: mounted, the rest uploaded.
    let report_path = dir.path().join("r.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--mount-from",
        "base/app",
        "--report",
        report_path.to_str().unwrap(),
        l,
        &format!("{host}/team/app:v1"),
    ])
    .ok();
    let outcomes = blob_outcomes(&report(&report_path));
    assert_eq!(outcomes[&layers[0].digest].0, "mounted");
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, image.digest);

    // A sources file naming a holder works the same way (as containerd's labels do).
    let sources = dir.path().join("s.json");
    std::fs::write(
        &sources,
        serde_json::json!({ &layers[0].digest: [format!("{host}/base/app")] }).to_string(),
    )
    .unwrap();
    imagepush(&[
        "push",
        "--plain-http",
        "--sources",
        sources.to_str().unwrap(),
        l,
        &format!("{host}/third/app:v1"),
    ])
    .ok();
    assert_eq!(registry.manifest("third/app", "v1").await.unwrap().2, image.digest);
}

/// Records how many uploads were in flight at once.
#[derive(Default)]
struct Overlap {
    state: Mutex<(std::collections::HashSet<String>, usize)>,
}

impl imagepush::push::Progress for Overlap {
    fn event(&self, event: imagepush::push::Event) {
        use imagepush::push::progress::BlobState;
        if let imagepush::push::Event::Blob { digest, state, .. } = event {
            let mut s = self.state.lock().unwrap();
            match state {
                BlobState::Pushing { .. } => {
                    s.0.insert(digest.to_string());
                    s.1 = s.1.max(s.0.len());
                }
                BlobState::Pushed => {
                    s.0.remove(&digest.to_string());
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_uploads_is_respected() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let sizes = [MIB; 6];
    simple_image(&layout, "v1", &sizes, 13);
    for (limit, repo) in [(1usize, "one"), (2, "two")] {
        let overlap = Arc::new(Overlap::default());
        let opts = imagepush::push::PushOptions {
            layout: layout.clone(),
            target: imagepush::reference::Target::parse(&format!(
                "{}/{repo}/app:v1",
                registry.host()
            ))
            .unwrap()
            .into(),
            reference: None,
            platform: None,
            host_platform: None,
            mount_from: vec![],
            sources: None,
            max_concurrent_uploads: limit,
            referrers: imagepush::push::referrers::Policy::All,
            credential: imagepush::auth::Credential::Anonymous,
            known_sources: Default::default(),
            connect: imagepush::registry::ConnectOptions { plain_http: true, ..Default::default() },
        };
        let never = imagepush::shutdown::Shutdown::never();
        let r = imagepush::push::push(&opts, overlap.clone(), &never).await.unwrap();
        assert_eq!(r.totals.uploaded, 7);
        let max = overlap.state.lock().unwrap().1;
        assert!(max >= 1 && max <= limit, "limit {limit}: {max} uploads in flight at once");
    }
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--max-concurrent-uploads",
        "0",
        layout.to_str().unwrap(),
        &format!("{}/x/app:v1", registry.host()),
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("--max-concurrent-uploads"), "{}", run.stderr);
}
