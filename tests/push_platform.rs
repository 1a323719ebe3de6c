//! Platform selection (`--platform`, strict matching, attestations never chosen, conflicts)
//! and the index fallback (`--host-platform`, partly present indexes), checked from the
//! registry's side and in the `--report` JSON.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use common::layout::{
    self, ATTESTATION_MANIFEST, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Desc, ImageSpec,
    LayoutBuilder, OCI_INDEX, OCI_MANIFEST, REFERENCE_TYPE,
};
use common::{Run, TestRegistry, sha256_digest};

/// One run of `imagepush push` with its report (Null when no report was written).
struct Pushed {
    run: Run,
    report: Value,
}

/// `imagepush push --plain-http --progress plain --report <tmp> <extra...> <layout> <target>`.
fn push(layout: &Path, target: &str, extra: &[&str]) -> Pushed {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let report_arg = report_path.to_str().unwrap().to_string();
    let layout_arg = layout.to_str().unwrap().to_string();
    let mut args: Vec<&str> =
        vec!["push", "--plain-http", "--progress", "plain", "--report", &report_arg];
    args.extend_from_slice(extra);
    args.push(&layout_arg);
    args.push(target);
    let run = common::imagepush(&args);
    let report = if report_path.exists() { common::report(&report_path) } else { Value::Null };
    Pushed { run, report }
}

fn target(reg: &TestRegistry, repo_and_tag: &str) -> String {
    format!("{}/{repo_and_tag}", reg.host())
}

/// `reference` in `repo` is exactly `desc` of the layout: same digest, same bytes, same
/// content type.
async fn assert_manifest_is(
    reg: &TestRegistry,
    repo: &str,
    reference: &str,
    b: &LayoutBuilder,
    desc: &Desc,
) {
    let (bytes, content_type, dcd) = reg
        .manifest(repo, reference)
        .await
        .unwrap_or_else(|| panic!("{repo}:{reference} is not in the registry"));
    assert_eq!(dcd, desc.digest, "{repo}:{reference}: Docker-Content-Digest");
    assert_eq!(sha256_digest(&bytes), desc.digest, "{repo}:{reference}: digest of the bytes");
    assert_eq!(bytes, b.read_blob(&desc.digest), "{repo}:{reference}: bytes");
    assert_eq!(content_type, desc.media_type, "{repo}:{reference}: content type");
}

async fn assert_no_manifest(reg: &TestRegistry, repo: &str, digest: &str) {
    assert!(
        reg.manifest(repo, digest).await.is_none(),
        "{repo}@{digest} should not be in the registry"
    );
}

/// The config and the last (platform-specific) layer of a `multi_platform` image.
fn unique_blobs(b: &LayoutBuilder, image: &Desc) -> Vec<String> {
    let (config, layers) = b.children(image);
    vec![config.digest, layers.last().expect("a layer").digest.clone()]
}

fn is_attestation(d: &Desc) -> bool {
    d.json["annotations"][REFERENCE_TYPE] == ATTESTATION_MANIFEST
}

fn report_blob_digests(report: &Value) -> BTreeSet<String> {
    report["blobs"]
        .as_array()
        .expect("blobs array")
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A failed run: exit code 3, the report carries the error with exit code 3.
fn assert_not_found(p: &Pushed) {
    p.run.expect_code(3);
    assert_eq!(p.report["error"]["exitCode"], 3, "report: {}", p.report);
    assert!(p.report["tags"].as_array().is_none_or(|t| t.is_empty()), "report: {}", p.report);
}

const THREE: &[(&str, &str, Option<&str>)] =
    &[("linux", "amd64", None), ("linux", "arm64", None), ("linux", "arm", Some("v7"))];

// 1.
#[tokio::test]
async fn platform_pushes_only_that_manifest_of_a_multi_platform_index() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, index, images) = layout::multi_platform(dir.path(), "v1", THREE, true, true, 11);
    let arm64 = &images[1];
    let repo = "platform/arm64";

    let p = push(dir.path(), &target(&reg, &format!("{repo}:v1")), &["--platform", "linux/arm64"]);
    p.run.ok();

    // The tag is the arm64 image manifest, not the index.
    assert_manifest_is(&reg, repo, "v1", &b, arm64).await;
    assert_eq!(reg.tags(repo).await, ["v1"]);
    assert_no_manifest(&reg, repo, &index.digest).await;
    // Every blob of the arm64 image is there, nothing of the other platforms.
    for d in b.blob_digests(arm64) {
        assert!(reg.blob_exists(repo, &d).await, "arm64 blob {d}");
    }
    for other in [&images[0], &images[2]] {
        assert_no_manifest(&reg, repo, &other.digest).await;
        for d in unique_blobs(&b, other) {
            assert!(
                !reg.blob_exists(repo, &d).await,
                "blob {d} of {:?} was pushed",
                other.platform()
            );
        }
    }
    // Nor the attestations.
    let attestations: Vec<Desc> =
        b.index_manifests(&index).into_iter().filter(is_attestation).collect();
    assert_eq!(attestations.len(), 3);
    for a in &attestations {
        assert_no_manifest(&reg, repo, &a.digest).await;
    }

    let r = &p.report;
    assert_eq!(r["digest"], arm64.digest.as_str());
    assert_eq!(r["size"], arm64.size);
    assert_eq!(r["mediaType"], OCI_MANIFEST);
    assert_eq!(r["tags"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["tags"][0]["tag"], "v1");
    assert_eq!(r["tags"][0]["digest"], arm64.digest.as_str());
    assert!(r.get("manifestPushedInsteadOfIndex").is_none(), "{r}");
    assert!(r["tags"][0].get("manifestPushedInsteadOfIndex").is_none(), "{r}");
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(report_blob_digests(r), b.blob_digests(arm64).into_iter().collect::<BTreeSet<_>>());
    assert!(
        p.run.stdout.contains(&format!("v1: digest: {} size: {}", arm64.digest, arm64.size)),
        "{}",
        p.run.stdout
    );
}

// 2.
#[tokio::test]
async fn platform_matching_is_strict_after_normalization() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, _index, images) = layout::multi_platform(dir.path(), "v1", THREE, true, true, 12);

    // linux/arm is linux/arm/v7.
    push(dir.path(), &target(&reg, "strict/arm:v1"), &["--platform", "linux/arm"]).run.ok();
    assert_manifest_is(&reg, "strict/arm", "v1", &b, &images[2]).await;
    // linux/arm64/v8 is linux/arm64; aarch64 is arm64.
    push(dir.path(), &target(&reg, "strict/arm64v8:v1"), &["--platform", "linux/arm64/v8"])
        .run
        .ok();
    assert_manifest_is(&reg, "strict/arm64v8", "v1", &b, &images[1]).await;
    push(dir.path(), &target(&reg, "strict/aarch64:v1"), &["--platform", "linux/aarch64"]).run.ok();
    assert_manifest_is(&reg, "strict/aarch64", "v1", &b, &images[1]).await;

    // linux/arm/v6 is not linux/arm/v7 (an arm/v7 image does not run on arm/v6).
    let p = push(dir.path(), &target(&reg, "strict/armv6:v1"), &["--platform", "linux/arm/v6"]);
    assert_not_found(&p);
    let err = &p.run.stderr;
    assert!(err.contains("linux/arm/v6"), "names the wanted platform: {err}");
    for available in ["linux/amd64", "linux/arm64", "linux/arm/v7"] {
        assert!(err.contains(available), "lists {available}: {err}");
    }
    assert!(!err.contains("unknown/unknown"), "attestations are not available platforms: {err}");
    assert_eq!(p.report["error"]["reason"], "PlatformNotFound", "{}", p.report);
    assert!(reg.tags("strict/armv6").await.is_empty());
    for image in &images {
        assert_no_manifest(&reg, "strict/armv6", &image.digest).await;
    }

    // linux/amd64/v2 does not match a plain linux/amd64 image either.
    let p = push(dir.path(), &target(&reg, "strict/amd64v2:v1"), &["--platform", "linux/amd64/v2"]);
    assert_not_found(&p);
    assert!(p.run.stderr.contains("linux/amd64/v2"), "{}", p.run.stderr);
    assert!(reg.tags("strict/amd64v2").await.is_empty());
}

// 3.
#[tokio::test]
async fn attestation_manifests_are_never_chosen() {
    let reg = TestRegistry::start();

    // --platform unknown/unknown: the attestations' platform, but they are not images.
    let dir = tempfile::tempdir().unwrap();
    let (b, index, _images) = layout::multi_platform(dir.path(), "v1", THREE, true, true, 13);
    let p = push(dir.path(), &target(&reg, "att/unknown:v1"), &["--platform", "unknown/unknown"]);
    assert_not_found(&p);
    assert!(p.run.stderr.contains("unknown/unknown"), "{}", p.run.stderr);
    assert!(reg.tags("att/unknown").await.is_empty());
    for d in b.index_manifests(&index) {
        assert_no_manifest(&reg, "att/unknown", &d.digest).await;
    }

    // An attestation (by its annotations) whose descriptor claims linux/arm64 is still no
    // arm64 image.
    let dir2 = tempfile::tempdir().unwrap();
    let mut b2 = LayoutBuilder::new(dir2.path());
    let amd64 = b2.image(&ImageSpec::new(&[(1, 1000)], 1).platform("linux", "amd64", None));
    let mut att = b2.attestation_for(&amd64);
    att.json["platform"] = json!({ "architecture": "arm64", "os": "linux" });
    let index2 = b2.index(&[amd64.clone(), att.clone()], false);
    b2.tag(&index2, "v1");
    b2.write();
    let p = push(dir2.path(), &target(&reg, "att/disguised:v1"), &["--platform", "linux/arm64"]);
    assert_not_found(&p);
    assert!(reg.tags("att/disguised").await.is_empty());
    assert_no_manifest(&reg, "att/disguised", &att.digest).await;
    // The real image is still found.
    push(dir2.path(), &target(&reg, "att/real:v1"), &["--platform", "linux/amd64"]).run.ok();
    assert_manifest_is(&reg, "att/real", "v1", &b2, &amd64).await;

    // Index fallback: when only attestations are present, none of them is pushed, even for a
    // host "platform" of unknown/unknown.
    let dir3 = tempfile::tempdir().unwrap();
    let (b3, index3, images3) = layout::multi_platform(
        dir3.path(),
        "v1",
        &[("linux", "amd64", None), ("linux", "arm64", None)],
        true,
        true,
        14,
    );
    for image in &images3 {
        b3.remove_blob(&image.digest);
    }
    let p = push(
        dir3.path(),
        &target(&reg, "att/fallback:v1"),
        &["--host-platform", "unknown/unknown"],
    );
    assert_not_found(&p);
    assert!(reg.tags("att/fallback").await.is_empty());
    for d in b3.index_manifests(&index3) {
        assert_no_manifest(&reg, "att/fallback", &d.digest).await;
    }
}

// 4.
#[tokio::test]
async fn two_manifests_for_the_wanted_platform_are_a_conflict() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayoutBuilder::new(dir.path());
    let first = b.image(&ImageSpec::new(&[(1, 1000)], 1).platform("linux", "amd64", None));
    let second = b.image(&ImageSpec::new(&[(2, 1000)], 2).platform("linux", "amd64", None));
    // amd64/v1 is amd64 too.
    let third = b.image(&ImageSpec::new(&[(3, 1000)], 3).platform("linux", "amd64", Some("v1")));
    let arm64 = b.image(&ImageSpec::new(&[(4, 1000)], 4).platform("linux", "arm64", None));
    let index = b.index(&[first.clone(), arm64.clone(), second.clone()], false);
    b.tag(&index, "v1");
    let index_v1 = b.index(&[first.clone(), third.clone()], false);
    b.tag(&index_v1, "v1variant");
    b.write();

    let p = push(dir.path(), &target(&reg, "conflict/app:v1"), &["--platform", "linux/amd64"]);
    assert_not_found(&p);
    let err = &p.run.stderr;
    assert!(err.contains("matches 2"), "{err}");
    assert!(err.contains(&first.digest), "{err}");
    assert!(err.contains(&second.digest), "{err}");
    assert!(!err.contains(&arm64.digest), "{err}");
    assert_eq!(p.report["error"]["reason"], "PlatformConflict", "{}", p.report);
    assert!(reg.tags("conflict/app").await.is_empty());
    for d in [&first, &second] {
        assert_no_manifest(&reg, "conflict/app", &d.digest).await;
    }

    let p = push(
        dir.path(),
        &target(&reg, "conflict/variant:v1variant"),
        &["--platform", "linux/amd64"],
    );
    assert_not_found(&p);
    assert!(p.run.stderr.contains("matches 2"), "{}", p.run.stderr);
    assert!(
        p.run.stderr.contains(&first.digest) && p.run.stderr.contains(&third.digest),
        "{}",
        p.run.stderr
    );
    assert!(reg.tags("conflict/variant").await.is_empty());

    // The unambiguous platform of the same index is fine.
    push(dir.path(), &target(&reg, "conflict/arm:v1"), &["--platform", "linux/arm64"]).run.ok();
    assert_manifest_is(&reg, "conflict/arm", "v1", &b, &arm64).await;
}

// 5.
#[tokio::test]
async fn complete_index_without_platform_is_pushed_as_is() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, index, images) = layout::multi_platform(dir.path(), "v1", THREE, true, true, 15);
    let repo = "complete/app";

    // The host platform is irrelevant for a complete index (s390x runs none of them).
    let p =
        push(dir.path(), &target(&reg, &format!("{repo}:v1")), &["--host-platform", "linux/s390x"]);
    p.run.ok();

    assert_manifest_is(&reg, repo, "v1", &b, &index).await;
    assert_eq!(reg.tags(repo).await, ["v1"]);
    let children = b.index_manifests(&index);
    assert_eq!(children.len(), 6);
    assert_eq!(children.iter().filter(|d| is_attestation(d)).count(), 3);
    for child in &children {
        assert_manifest_is(&reg, repo, &child.digest, &b, child).await;
        for d in b.blob_digests(child) {
            assert!(reg.blob_exists(repo, &d).await, "blob {d} of {}", child.digest);
        }
    }
    assert_eq!(images.len(), 3);

    let r = &p.report;
    assert_eq!(r["digest"], index.digest.as_str());
    assert_eq!(r["mediaType"], OCI_INDEX);
    assert_eq!(r["tags"][0]["digest"], index.digest.as_str());
    assert!(r.get("manifestPushedInsteadOfIndex").is_none(), "{r}");
    assert!(r["tags"][0].get("manifestPushedInsteadOfIndex").is_none(), "{r}");
    assert!(!p.run.stdout.contains("instead"), "{}", p.run.stdout);
}

/// Checks a fallback push: the tag is `chosen`, the report records the fallback from `index`.
async fn assert_fallback(
    reg: &TestRegistry,
    p: &Pushed,
    repo: &str,
    b: &LayoutBuilder,
    index: &Desc,
    chosen: &Desc,
) {
    p.run.ok();
    assert_manifest_is(reg, repo, "v1", b, chosen).await;
    assert_eq!(reg.tags(repo).await, ["v1"]);
    assert_no_manifest(reg, repo, &index.digest).await;

    let r = &p.report;
    assert_eq!(r["digest"], chosen.digest.as_str(), "{r}");
    assert_eq!(r["mediaType"], OCI_MANIFEST, "{r}");
    assert_eq!(r["tags"][0]["digest"], chosen.digest.as_str(), "{r}");
    let f = &r["manifestPushedInsteadOfIndex"];
    assert_eq!(f["originalIndex"]["digest"], index.digest.as_str(), "{r}");
    assert_eq!(f["originalIndex"]["size"], index.size, "{r}");
    assert_eq!(f["originalIndex"]["mediaType"], OCI_INDEX, "{r}");
    assert_eq!(f["selectedManifest"]["digest"], chosen.digest.as_str(), "{r}");
    assert_eq!(f["selectedManifest"]["size"], chosen.size, "{r}");
    assert_eq!(f["selectedManifest"]["mediaType"], OCI_MANIFEST, "{r}");
    assert_eq!(f["selectedManifest"]["platform"], chosen.json["platform"], "{r}");
    // stdout says so.
    let out = &p.run.stdout;
    assert!(
        out.contains(&index.digest) && out.contains(&chosen.digest),
        "fallback not mentioned: {out}"
    );
}

// 6.
#[tokio::test]
async fn partial_index_falls_back_to_the_host_platform_manifest() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let platforms = &[("linux", "amd64", None), ("linux", "arm64", None), ("linux", "s390x", None)];
    let (b, index, images) = layout::multi_platform(dir.path(), "v1", platforms, true, true, 16);
    let (amd64, arm64, s390x) = (&images[0], &images[1], &images[2]);
    let arm64_blobs = unique_blobs(&b, arm64);
    b.remove_blob(&arm64.digest);

    let p =
        push(dir.path(), &target(&reg, "fallback/s390x:v1"), &["--host-platform", "linux/s390x"]);
    assert_fallback(&reg, &p, "fallback/s390x", &b, &index, s390x).await;
    assert!(p.run.stdout.contains("linux/s390x"), "{}", p.run.stdout);
    for d in arm64_blobs.iter().chain(&unique_blobs(&b, amd64)) {
        assert!(!reg.blob_exists("fallback/s390x", d).await, "{d}");
    }
    assert_no_manifest(&reg, "fallback/s390x", &amd64.digest).await;

    let p =
        push(dir.path(), &target(&reg, "fallback/amd64:v1"), &["--host-platform", "linux/amd64"]);
    assert_fallback(&reg, &p, "fallback/amd64", &b, &index, amd64).await;
    for d in arm64_blobs.iter().chain(&unique_blobs(&b, s390x)) {
        assert!(!reg.blob_exists("fallback/amd64", d).await, "{d}");
    }
    assert_no_manifest(&reg, "fallback/amd64", &s390x.digest).await;
}

// 6b: the host preference order, not the index order, decides.
#[tokio::test]
async fn fallback_prefers_the_best_host_match() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let platforms = &[
        ("linux", "arm", Some("v6")),
        ("linux", "arm", Some("v7")),
        ("linux", "amd64", None),
        ("linux", "arm64", None),
    ];
    let (b, index, images) = layout::multi_platform(dir.path(), "v1", platforms, false, true, 17);
    b.remove_blob(&images[3].digest);
    // An arm64 host without an arm64 image runs arm/v7 before arm/v6.
    let p =
        push(dir.path(), &target(&reg, "prefer/arm64host:v1"), &["--host-platform", "linux/arm64"]);
    assert_fallback(&reg, &p, "prefer/arm64host", &b, &index, &images[1]).await;
    // An arm/v6 host runs only arm/v6.
    let p = push(
        dir.path(),
        &target(&reg, "prefer/armv6host:v1"),
        &["--host-platform", "linux/arm/v6"],
    );
    assert_fallback(&reg, &p, "prefer/armv6host", &b, &index, &images[0]).await;
}

// 7.
#[tokio::test]
async fn partial_index_with_one_present_platform_pushes_it_whatever_the_host() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let platforms = &[("linux", "amd64", None), ("linux", "arm64", None)];
    let (b, index, images) = layout::multi_platform(dir.path(), "v1", platforms, true, true, 18);
    let (amd64, arm64) = (&images[0], &images[1]);
    // The arm64 manifest is there but one of its layers is not (and no registry has it).
    let (_, arm64_layers) = b.children(arm64);
    let arm64_layer = arm64_layers.last().unwrap().digest.clone();
    b.remove_blob(&arm64_layer);

    let p =
        push(dir.path(), &target(&reg, "single/riscv:v1"), &["--host-platform", "linux/riscv64"]);
    assert_fallback(&reg, &p, "single/riscv", &b, &index, amd64).await;
    assert_no_manifest(&reg, "single/riscv", &arm64.digest).await;
    assert!(!reg.blob_exists("single/riscv", &arm64_layer).await);
    // Attestations (present, unknown/unknown) do not count as platforms.
    for a in b.index_manifests(&index).iter().filter(|d| is_attestation(d)) {
        assert_no_manifest(&reg, "single/riscv", &a.digest).await;
    }

    let p = push(
        dir.path(),
        &target(&reg, "single/unknown:v1"),
        &["--host-platform", "unknown/unknown"],
    );
    assert_fallback(&reg, &p, "single/unknown", &b, &index, amd64).await;
}

// 8.
#[tokio::test]
async fn partial_index_without_a_host_match_fails_and_suggests_platform() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let platforms =
        &[("linux", "amd64", None), ("linux", "arm64", None), ("linux", "ppc64le", None)];
    let (b, _index, images) = layout::multi_platform(dir.path(), "v1", platforms, false, true, 19);
    b.remove_blob(&images[2].digest);

    let p = push(dir.path(), &target(&reg, "nohost/app:v1"), &["--host-platform", "linux/s390x"]);
    assert_not_found(&p);
    let err = &p.run.stderr;
    assert!(err.contains("linux/s390x"), "names the host: {err}");
    assert!(err.contains("--platform"), "suggests --platform: {err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "lists the present platforms: {err}"
    );
    assert!(reg.tags("nohost/app").await.is_empty());
    // Nothing was uploaded either.
    for image in &images[..2] {
        assert_no_manifest(&reg, "nohost/app", &image.digest).await;
        for d in b.blob_digests(image) {
            assert!(!reg.blob_exists("nohost/app", &d).await, "{d}");
        }
    }
    // --platform chooses one of the present ones.
    push(
        dir.path(),
        &target(&reg, "nohost/chosen:v1"),
        &["--host-platform", "linux/s390x", "--platform", "linux/arm64"],
    )
    .run
    .ok();
    assert_manifest_is(&reg, "nohost/chosen", "v1", &b, &images[1]).await;
}

// 9.
#[tokio::test]
async fn platform_on_a_single_manifest_checks_its_config() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = layout::simple_image(dir.path(), "v1", &[1000, 2000], 20);

    let p = push(dir.path(), &target(&reg, "single/manifest:v1"), &["--platform", "linux/arm64"]);
    assert_not_found(&p);
    let err = &p.run.stderr;
    assert!(err.contains("linux/arm64") && err.contains("linux/amd64"), "{err}");
    assert!(reg.tags("single/manifest").await.is_empty());
    assert_no_manifest(&reg, "single/manifest", &image.digest).await;

    let p = push(dir.path(), &target(&reg, "single/manifest:v1"), &["--platform", "linux/amd64"]);
    p.run.ok();
    assert_manifest_is(&reg, "single/manifest", "v1", &b, &image).await;
    assert_eq!(p.report["digest"], image.digest.as_str());
    assert!(p.report.get("manifestPushedInsteadOfIndex").is_none());

    // The config's platform is normalized too: an arm/v7 image is linux/arm.
    let dir2 = tempfile::tempdir().unwrap();
    let mut b2 = LayoutBuilder::new(dir2.path());
    let arm = b2.image(&ImageSpec::new(&[(5, 500)], 5).platform("linux", "arm", Some("v7")));
    b2.tag(&arm, "v1");
    b2.write();
    push(dir2.path(), &target(&reg, "single/arm:v1"), &["--platform", "linux/arm"]).run.ok();
    assert_manifest_is(&reg, "single/arm", "v1", &b2, &arm).await;
    let p = push(dir2.path(), &target(&reg, "single/armv6:v1"), &["--platform", "linux/arm/v6"]);
    assert_not_found(&p);
    assert!(reg.tags("single/armv6").await.is_empty());
}

// 10.
#[tokio::test]
async fn platform_from_a_docker_manifest_list_keeps_docker_media_types() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayoutBuilder::new(dir.path());
    let amd64 = b.image(
        &ImageSpec::new(&[(1, 3000), (2, 1000)], 1).platform("linux", "amd64", None).docker(true),
    );
    let arm64 = b.image(
        &ImageSpec::new(&[(1, 3000), (3, 1000)], 2).platform("linux", "arm64", None).docker(true),
    );
    let list = b.index(&[amd64.clone(), arm64.clone()], true);
    assert_eq!(list.media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(arm64.media_type, DOCKER_MANIFEST);
    b.tag(&list, "v1");
    b.write();

    let p = push(dir.path(), &target(&reg, "docker/arm64:v1"), &["--platform", "linux/arm64"]);
    p.run.ok();
    assert_manifest_is(&reg, "docker/arm64", "v1", &b, &arm64).await;
    let (_, content_type, _) = reg.manifest("docker/arm64", "v1").await.unwrap();
    assert_eq!(content_type, DOCKER_MANIFEST);
    assert_eq!(p.report["mediaType"], DOCKER_MANIFEST);
    assert_eq!(p.report["digest"], arm64.digest.as_str());
    assert_no_manifest(&reg, "docker/arm64", &list.digest).await;
    assert!(!reg.blob_exists("docker/arm64", &b.children(&amd64).1[1].digest).await);

    // Without --platform the complete manifest list goes as it is.
    push(dir.path(), &target(&reg, "docker/list:v1"), &[]).run.ok();
    assert_manifest_is(&reg, "docker/list", "v1", &b, &list).await;
    assert_manifest_is(&reg, "docker/list", &amd64.digest, &b, &amd64).await;
    assert_manifest_is(&reg, "docker/list", &arm64.digest, &b, &arm64).await;

    // And a partial one falls back to a Docker manifest.
    b.remove_blob(&b.children(&amd64).1[1].digest.clone());
    let p =
        push(dir.path(), &target(&reg, "docker/fallback:v1"), &["--host-platform", "linux/amd64"]);
    p.run.ok();
    assert_manifest_is(&reg, "docker/fallback", "v1", &b, &arm64).await;
    let f = &p.report["manifestPushedInsteadOfIndex"];
    assert_eq!(f["originalIndex"]["mediaType"], DOCKER_MANIFEST_LIST, "{}", p.report);
    assert_eq!(f["selectedManifest"]["mediaType"], DOCKER_MANIFEST, "{}", p.report);
}

// 11.
#[tokio::test]
async fn platform_finds_a_manifest_inside_a_nested_index() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayoutBuilder::new(dir.path());
    let amd64 = b.image(&ImageSpec::new(&[(1, 2000)], 1).platform("linux", "amd64", None));
    let arm64 = b.image(&ImageSpec::new(&[(2, 2000)], 2).platform("linux", "arm64", None));
    let s390x = b.image(&ImageSpec::new(&[(3, 2000)], 3).platform("linux", "s390x", None));
    let att = b.attestation_for(&arm64);
    let inner = b.index(&[amd64.clone(), arm64.clone(), att], false);
    let outer = b.index(&[inner.clone(), s390x.clone()], false);
    b.tag(&outer, "v1");
    b.write();

    let p = push(dir.path(), &target(&reg, "nested/arm64:v1"), &["--platform", "linux/arm64"]);
    p.run.ok();
    assert_manifest_is(&reg, "nested/arm64", "v1", &b, &arm64).await;
    assert_eq!(reg.tags("nested/arm64").await, ["v1"]);
    assert_no_manifest(&reg, "nested/arm64", &outer.digest).await;
    assert_no_manifest(&reg, "nested/arm64", &inner.digest).await;
    assert_eq!(p.report["digest"], arm64.digest.as_str());

    push(dir.path(), &target(&reg, "nested/s390x:v1"), &["--platform", "linux/s390x"]).run.ok();
    assert_manifest_is(&reg, "nested/s390x", "v1", &b, &s390x).await;

    let p = push(dir.path(), &target(&reg, "nested/ppc:v1"), &["--platform", "linux/ppc64le"]);
    assert_not_found(&p);
    for available in ["linux/amd64", "linux/arm64", "linux/s390x"] {
        assert!(p.run.stderr.contains(available), "lists {available}: {}", p.run.stderr);
    }
    assert!(reg.tags("nested/ppc").await.is_empty());

    // Complete, without --platform: the whole tree.
    push(dir.path(), &target(&reg, "nested/all:v1"), &[]).run.ok();
    assert_manifest_is(&reg, "nested/all", "v1", &b, &outer).await;
    for d in [&inner, &amd64, &arm64, &s390x] {
        assert_manifest_is(&reg, "nested/all", &d.digest, &b, d).await;
    }
}

// --platform applies to every tag of an all-tags push.
#[tokio::test]
async fn platform_applies_to_every_tag_of_an_all_tags_push() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayoutBuilder::new(dir.path());
    let mut arm64s = Vec::new();
    for (tag, seed) in [("v1", 1u64), ("v2", 2u64)] {
        let amd64 = b.image(
            &ImageSpec::new(&[(seed * 10, 1000)], seed * 10).platform("linux", "amd64", None),
        );
        let arm64 = b.image(
            &ImageSpec::new(&[(seed * 10 + 1, 1000)], seed * 10 + 1)
                .platform("linux", "arm64", None),
        );
        let index = b.index(&[amd64, arm64.clone()], false);
        b.tag(&index, tag);
        arm64s.push(arm64);
    }
    b.write();

    let p = push(dir.path(), &target(&reg, "alltags/app"), &["--platform", "linux/arm64"]);
    p.run.ok();
    assert_eq!(reg.tags("alltags/app").await, ["v1", "v2"]);
    assert_manifest_is(&reg, "alltags/app", "v1", &b, &arm64s[0]).await;
    assert_manifest_is(&reg, "alltags/app", "v2", &b, &arm64s[1]).await;
    let tags: Vec<(String, String)> = p.report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (t["tag"].as_str().unwrap().to_string(), t["digest"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("v1".to_string(), arm64s[0].digest.clone()),
            ("v2".to_string(), arm64s[1].digest.clone())
        ]
    );
}

// --platform on a partly present index picks that platform; no fallback is recorded.
#[tokio::test]
async fn platform_takes_precedence_over_the_index_fallback() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let platforms = &[("linux", "amd64", None), ("linux", "arm64", None)];
    let (b, _index, images) = layout::multi_platform(dir.path(), "v1", platforms, true, true, 21);
    b.remove_blob(&images[1].digest);

    let p = push(
        dir.path(),
        &target(&reg, "precedence/amd64:v1"),
        &["--platform", "linux/amd64", "--host-platform", "linux/arm64"],
    );
    p.run.ok();
    assert_manifest_is(&reg, "precedence/amd64", "v1", &b, &images[0]).await;
    assert!(p.report.get("manifestPushedInsteadOfIndex").is_none(), "{}", p.report);

    // The wanted platform's manifest is missing: not found, named, nothing tagged.
    let p = push(dir.path(), &target(&reg, "precedence/arm64:v1"), &["--platform", "linux/arm64"]);
    assert_not_found(&p);
    assert!(p.run.stderr.contains(&images[1].digest), "{}", p.run.stderr);
    assert!(reg.tags("precedence/arm64").await.is_empty());
    assert_no_manifest(&reg, "precedence/arm64", &images[0].digest).await;
}

// Bad platform strings are bad input (exit 2), found before anything is pushed.
#[tokio::test]
async fn invalid_platform_strings_are_bad_input() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (_b, _index, _images) = layout::multi_platform(dir.path(), "v1", THREE, false, true, 22);
    for (flag, value) in [
        ("--platform", "linux"),
        ("--platform", "linux/*"),
        ("--platform", "linux/amd64/v2/x"),
        ("--host-platform", "amd64"),
    ] {
        let p = push(dir.path(), &target(&reg, "invalid/app:v1"), &[flag, value]);
        p.run.expect_code(2);
        assert!(p.run.stderr.contains(value), "{flag} {value}: {}", p.run.stderr);
        assert_eq!(p.report["error"]["exitCode"], 2, "{}", p.report);
    }
    assert!(reg.tags("invalid/app").await.is_empty());
}
