//! `imagepush push --mirror`: a layout holding several repositories (as `ctr export` and
//! `skopeo copy ... oci:` of several images write it) pushed to a real registry, each image
//! to `REGISTRY/PREFIX/<its repository path>:<tag>`. A counting proxy measures that each
//! distinct blob's bytes travel once; skopeo reads every image back.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::layout::{CONTAINERD_NAME, REF_NAME};
use common::token_registry::TokenRegistry;
use common::{
    CountingProxy, Desc, ImageSpec, LayoutBuilder, TestRegistry, imagepush, imagepush_with_stdin,
    report,
};

const KIB: usize = 1024;

/// Four images in three repositories on one 1 MiB base, each with a layer of its own:
/// named by containerd (with the short ref name it writes beside) and by a full ref name.
struct Bundle {
    builder: LayoutBuilder,
    /// (repository path, tag, manifest)
    images: Vec<(&'static str, &'static str, Desc)>,
    base: String,
}

fn bundle(root: &std::path::Path) -> Bundle {
    let mut b = LayoutBuilder::new(root);
    let names: [(&str, &str, &str); 4] = [
        (CONTAINERD_NAME, "docker.io/library/nginx:1.27", "library/nginx"),
        (CONTAINERD_NAME, "docker.io/library/nginx:latest", "library/nginx"),
        (REF_NAME, "ghcr.io/org/app:v1", "org/app"),
        (REF_NAME, "docker.io/library/redis:7", "library/redis"),
    ];
    let mut images = Vec::new();
    let mut base = String::new();
    for (i, (key, name, path)) in names.into_iter().enumerate() {
        let image =
            b.image(&ImageSpec::new(&[(7, 1024 * KIB), (100 + i as u64, 200 * KIB)], i as u64));
        base = b.children(&image).1[0].digest.clone();
        let tag = name.rsplit_once(':').unwrap().1;
        if key == CONTAINERD_NAME {
            b.name(&image, &[(CONTAINERD_NAME, name), (REF_NAME, tag)]);
        } else {
            b.name(&image, &[(REF_NAME, name)]);
        }
        images.push((path, tag, image));
    }
    b.write();
    Bundle { builder: b, images, base }
}

/// Bytes of every distinct blob (configs and layers) of the bundle.
fn distinct_blob_bytes(bundle: &Bundle) -> u64 {
    let b = &bundle.builder;
    let digests: BTreeSet<String> =
        bundle.images.iter().flat_map(|(_, _, image)| b.blob_digests(image)).collect();
    digests.iter().map(|d| b.read_blob(d).len() as u64).sum()
}

#[tokio::test]
async fn a_bundle_goes_to_its_repositories_and_each_blob_travels_once() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let bundle = bundle(&dir.path().join("layout"));
    let layout = dir.path().join("layout");
    let report_path = dir.path().join("report.json");
    let sources = dir.path().join("sources.json");
    let host = proxy.host();
    let target = format!("{host}/mirror");
    let run = imagepush(&[
        "push",
        "--mirror",
        "--plain-http",
        "--report",
        report_path.to_str().unwrap(),
        "--sources",
        sources.to_str().unwrap(),
        layout.to_str().unwrap(),
        &target,
    ]);
    run.ok();

    // Each distinct blob's bytes went to the registry once (plus manifests and requests).
    let distinct = distinct_blob_bytes(&bundle);
    let sent = proxy.bytes_to_server();
    assert!(
        sent >= distinct && sent < distinct + 64 * KIB as u64,
        "sent {sent} bytes for {distinct} bytes of distinct blobs"
    );
    let r = report(&report_path);
    assert_eq!(r["totals"]["bytesUploaded"], distinct);
    assert_eq!(r["target"], target.as_str());
    assert_eq!(r["tags"], serde_json::json!([]));

    // Every image in its repository under its tag, as skopeo reads it back.
    let images = r["images"].as_array().unwrap();
    assert_eq!(images.len(), 4, "{images:#?}");
    for (path, tag, image) in &bundle.images {
        let digest = &image.digest;
        let repository = format!("{target}/{path}");
        assert!(
            images.iter().any(|i| i["repository"] == repository.as_str()
                && i["tag"] == *tag
                && i["digest"] == digest.as_str()),
            "{repository}:{tag} in {images:#?}"
        );
        let inspected = registry.skopeo_inspect(&format!("mirror/{path}:{tag}"));
        assert_eq!(inspected["Digest"], digest.as_str(), "{path}:{tag}");
    }
    assert_eq!(registry.tags("mirror/library/nginx").await, ["1.27", "latest"]);

    // The base: uploaded into the first repository, mounted from it into the two others.
    let base: Vec<(String, String, Option<String>)> = r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["digest"] == bundle.base.as_str())
        .map(|b| {
            (
                b["repository"].as_str().unwrap().to_string(),
                b["outcome"].as_str().unwrap().to_string(),
                b["from"].as_str().map(String::from),
            )
        })
        .collect();
    let first = format!("{target}/library/nginx");
    assert_eq!(
        base,
        [
            (first.clone(), "uploaded".into(), None),
            (format!("{target}/org/app"), "mounted".into(), Some(first.clone())),
            (format!("{target}/library/redis"), "mounted".into(), Some(first.clone())),
        ]
    );
    assert!(run.stdout.contains("The push refers to 3 repositories under"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{target}/org/app:v1: digest: ")), "{}", run.stdout);
    assert!(run.stdout.contains("pushed 4 images to 3 repositories"), "{}", run.stdout);

    // The sources file knows every repository for the blobs it holds.
    let map: BTreeMap<String, BTreeSet<String>> =
        serde_json::from_slice(&std::fs::read(&sources).unwrap()).unwrap();
    assert_eq!(map[&bundle.base].len(), 3, "{map:?}");

    // Again: everything is there; nothing is uploaded or mounted, and quiet names each image.
    proxy.reset();
    let again =
        imagepush(&["push", "--mirror", "--plain-http", "-q", layout.to_str().unwrap(), &target]);
    again.ok();
    assert!(proxy.bytes_to_server() < 32 * KIB as u64, "{}", proxy.bytes_to_server());
    let lines: Vec<&str> = again.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", again.stdout);
    assert!(
        lines.contains(&format!("{target}/org/app:v1@{}", bundle.images[2].2.digest).as_str()),
        "{}",
        again.stdout
    );
}

#[tokio::test]
async fn entries_without_a_full_name_or_with_one_name_for_two_images_are_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{}/mirror", registry.host());

    // A short ref name (what `skopeo copy ... oci:DIR:v1` writes) and no name at all.
    let layout = dir.path().join("unnamed");
    let mut b = LayoutBuilder::new(&layout);
    let named = b.image(&ImageSpec::new(&[(1, 1000)], 1));
    let short = b.image(&ImageSpec::new(&[(2, 1000)], 2));
    let bare = b.image(&ImageSpec::new(&[(3, 1000)], 3));
    b.name(&named, &[(REF_NAME, "docker.io/library/a:v1")]);
    b.name(&short, &[(REF_NAME, "v1")]);
    b.add_untagged(&bare);
    b.write();
    let run = imagepush(&["push", "--mirror", "--plain-http", layout.to_str().unwrap(), &target]);
    run.expect_code(2);
    for want in [
        "index.json entry 2",
        &short.digest,
        "\"v1\" is not a full name",
        "index.json entry 3",
        &bare.digest,
        "no name",
    ] {
        assert!(run.stderr.contains(want), "{want}: {}", run.stderr);
    }
    assert!(!run.stderr.contains(&named.digest), "{}", run.stderr);
    assert!(registry.tags("mirror/library/a").await.is_empty(), "nothing is pushed");

    // One name for two images.
    let layout = dir.path().join("conflict");
    let mut b = LayoutBuilder::new(&layout);
    let one = b.image(&ImageSpec::new(&[(1, 1000)], 1));
    let two = b.image(&ImageSpec::new(&[(2, 1000)], 2));
    b.name(&one, &[(CONTAINERD_NAME, "docker.io/library/a:v1")]);
    b.name(&two, &[(REF_NAME, "docker.io/a:v1")]);
    b.write();
    let report_path = dir.path().join("r.json");
    let run = imagepush(&[
        "push",
        "--mirror",
        "--plain-http",
        "--report",
        report_path.to_str().unwrap(),
        layout.to_str().unwrap(),
        &target,
    ]);
    run.expect_code(2);
    for want in [&format!("{target}/library/a:v1"), &one.digest, &two.digest] {
        assert!(run.stderr.contains(want.as_str()), "{want}: {}", run.stderr);
    }
    assert_eq!(report(&report_path)["error"]["reason"], "RefAmbiguous");

    // A mirror target with a tag, and --ref with --mirror: usage errors.
    let run = imagepush(&["push", "--mirror", layout.to_str().unwrap(), &format!("{target}:v1")]);
    run.expect_code(2);
    assert!(run.stderr.contains("without a tag or digest"), "{}", run.stderr);
    let run = imagepush(&["push", "--mirror", "--ref", "v1", layout.to_str().unwrap(), &target]);
    run.expect_code(2);
    assert!(run.stderr.contains("--ref") && run.stderr.contains("--mirror"), "{}", run.stderr);
}

/// With token authentication, one client pushes to every repository: a token with push scope
/// for each, and the mounts between them ask for pull on the repository mounted from.
#[tokio::test]
async fn token_auth_gives_push_scope_per_repository_and_pull_on_the_mount_source() {
    const PASSWORD: &str = "mirror-pass-4k";
    let reg = TokenRegistry::start("alice", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let bundle = bundle(&dir.path().join("layout"));
    let report_path = dir.path().join("r.json");
    let layout = dir.path().join("layout");
    let target = format!("{}/m", reg.host());
    imagepush_with_stdin(
        &[
            "push",
            "--mirror",
            "--plain-http",
            "--username",
            "alice",
            "--password-stdin",
            "--report",
            report_path.to_str().unwrap(),
            layout.to_str().unwrap(),
            &target,
        ],
        Some(PASSWORD),
    )
    .ok();
    let r = report(&report_path);
    assert_eq!(r["images"].as_array().unwrap().len(), 4);
    assert_eq!(r["totals"]["mounted"], 2, "{r:#}");
    let scopes = reg.scope_requests();
    for repo in ["m/library/nginx", "m/org/app", "m/library/redis"] {
        let push = format!("repository:{repo}:pull,push");
        assert!(scopes.iter().any(|s| s == std::slice::from_ref(&push)), "{push}: {scopes:?}");
    }
    assert!(
        scopes.iter().any(|s| s.contains(&"repository:m/org/app:pull,push".to_string())
            && s.contains(&"repository:m/library/nginx:pull".to_string())),
        "{scopes:?}"
    );
    drop(bundle);
}
