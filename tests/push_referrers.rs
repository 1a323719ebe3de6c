//! Referrers travel with the image: SBOMs attached by a real tool (oras-py pushes them with a
//! `subject` to a registry, skopeo copies them into the layout beside the image), and a
//! cosign signature in cosign's published format under cosign's tag. Pushed to CNCF
//! distribution, which has no referrers API, so the referrers tag schema is exercised for
//! real and read back by skopeo; and to a registry with the referrers API (distribution
//! behind `tests/common/referrers_api.py`, which adds what the spec asks of one).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::layout::{Desc, LayoutBuilder, multi_platform};
use common::registry::skopeo_ok;
use common::{TestRegistry, free_port, imagepush, sha256_digest};
use serde_json::{Value, json};

/// The Python with oras-py: `$IMAGEPUSH_TEST_PYTHON`, else the venv `.ci/run` makes.
fn python() -> PathBuf {
    match std::env::var_os("IMAGEPUSH_TEST_PYTHON") {
        Some(p) => p.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python"),
    }
}

/// Attaches `file` (as `media_type`) to `subject` in `registry/repo:tag` with oras-py.
fn oras_attach(
    registry: &TestRegistry,
    repo: &str,
    tag: &str,
    subject: &Desc,
    dir: &Path,
    name: &str,
    media_type: &str,
) {
    let script = r#"
import sys, oras.client, oras.oci
target, path, subject_type, digest, size = sys.argv[1:6]
c = oras.client.OrasClient(insecure=True)
r = c.push(target=target, files=[path], disable_path_validation=True,
           manifest_annotations={"org.opencontainers.image.created": "2026-11-30T00:00:00Z"},
           subject=oras.oci.Subject(mediaType=subject_type, digest=digest, size=int(size)))
assert r.status_code == 201, r.status_code
"#;
    let file = dir.join(name);
    std::fs::write(&file, format!("{{\"spdxVersion\":\"SPDX-2.3\",\"name\":\"{name}\"}}")).unwrap();
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(format!("{}/{repo}:{tag}", registry.host()))
        .arg(format!("{}:{media_type}", file.display()))
        .arg(&subject.media_type)
        .arg(&subject.digest)
        .arg(subject.size.to_string())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (install oras-py: see .ci/run)", python().display()));
    assert!(out.status.success(), "oras-py: {}", String::from_utf8_lossy(&out.stderr));
}

/// skopeo copies `registry/repo:tag` into the layout under `tag`.
fn skopeo_into_layout(registry: &TestRegistry, repo: &str, tag: &str, layout: &Path) {
    skopeo_ok(&[
        "copy".into(),
        "--src-tls-verify=false".into(),
        "--preserve-digests".into(),
        format!("docker://{}/{repo}:{tag}", registry.host()),
        format!("oci:{}:{tag}", layout.display()),
    ]);
}

/// A cosign signature of `image` as cosign writes one (its published format): a simple
/// signing payload as the layer, with the signature in its annotation.
fn cosign_signature(b: &mut LayoutBuilder, image: &Desc, reference: &str) -> Desc {
    let payload = json!({"critical": {"identity": {"docker-reference": reference},
        "image": {"docker-manifest-digest": image.digest}, "type": "cosign container image signature"},
        "optional": null});
    let payload = serde_json::to_vec(&payload).unwrap();
    let (pd, ps) = b.blob(&payload);
    let config = json!({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": [pd]}});
    let (cd, cs) = b.blob(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd, "size": ps,
                    "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDexample/signature="}}]});
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let (md, ms) = b.blob(&bytes);
    common::layout::desc_from_json(
        &json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}),
    )
}

fn schema_tag(digest: &str) -> String {
    digest.replace(':', "-")
}

/// A signed two-platform image: the index tagged v1 with a cosign signature, and an SBOM of
/// each platform's manifest attached with oras-py and copied in with skopeo.
struct Signed {
    dir: tempfile::TempDir,
    layout: PathBuf,
    index: Desc,
    amd64: Desc,
    arm64: Desc,
    signature: Desc,
    source: TestRegistry,
}

fn signed() -> Signed {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let platforms = [("linux", "amd64", None), ("linux", "arm64", Some("v8"))];
    let (mut b, index, images) = multi_platform(&layout, "v1", &platforms, false, true, 61);
    let signature = cosign_signature(&mut b, &index, "registry.example/team/app");
    b.tag(&signature, &format!("{}.sig", schema_tag(&index.digest)));
    b.write();
    let source = TestRegistry::start();
    source.skopeo_copy_from_layout(&layout, "v1", "src/app:v1", true);
    for (image, name) in [(&images[0], "sbom-amd64"), (&images[1], "sbom-arm64")] {
        oras_attach(
            &source,
            "src/app",
            name,
            image,
            dir.path(),
            &format!("{name}.spdx.json"),
            "application/spdx+json",
        );
        skopeo_into_layout(&source, "src/app", name, &layout);
    }
    Signed {
        layout,
        index,
        amd64: images[0].clone(),
        arm64: images[1].clone(),
        signature,
        source,
        dir,
    }
}

fn report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The layout's manifest tagged `tag` (what skopeo copied in).
fn entry_digest(layout: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn sboms_and_signatures_travel_with_the_image_by_the_tag_schema() {
    let s = signed();
    let target = TestRegistry::start();
    let out = s.dir.path().join("report.json");
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--progress",
        "plain",
        "--report",
        out.to_str().unwrap(),
        s.layout.to_str().unwrap(),
        &format!("{}/team/app:v1", target.host()),
    ]);
    run.ok();
    let r = report(&out);
    let sbom_amd64 = entry_digest(&s.layout, "sbom-amd64");
    let sbom_arm64 = entry_digest(&s.layout, "sbom-arm64");
    let mut got: Vec<(String, String, String)> = r["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["digest"].as_str().unwrap().into(),
                x["subject"].as_str().unwrap().into(),
                x["knownBy"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (sbom_amd64.clone(), s.amd64.digest.clone(), "tagSchema".to_string()),
        (sbom_arm64.clone(), s.arm64.digest.clone(), "tagSchema".to_string()),
        (s.signature.digest.clone(), s.index.digest.clone(), "cosignTag".to_string()),
    ];
    want.sort();
    assert_eq!(got, want, "{}", run.stdout);
    assert_eq!(r["totals"]["referrers"], 3);
    assert!(r.get("referrersLeftOut").is_none(), "{r}");
    assert!(
        run.stdout.contains(&format!(
            "referrer {sbom_amd64} (application/vnd.unknown.config.v1+json) of {}",
            s.amd64.digest
        )),
        "{}",
        run.stdout
    );

    // skopeo reads the referrers index under the schema tag: the SBOM, with what the spec
    // says a listing carries, and the SBOM itself byte for byte.
    let listed: Value = serde_json::from_slice(
        &target.skopeo_inspect_raw(&format!("team/app:{}", schema_tag(&s.amd64.digest))),
    )
    .unwrap();
    assert_eq!(listed["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["manifests"][0]["digest"], sbom_amd64);
    assert_eq!(listed["manifests"][0]["artifactType"], "application/vnd.unknown.config.v1+json");
    assert_eq!(
        listed["manifests"][0]["annotations"]["org.opencontainers.image.created"],
        "2026-11-30T00:00:00Z"
    );
    let (bytes, _, _) = target.manifest("team/app", &sbom_amd64).await.unwrap();
    assert_eq!(sha256_digest(&bytes), sbom_amd64);
    let sbom: Value = serde_json::from_slice(&bytes).unwrap();
    let layer = sbom["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(target.blob("team/app", layer).await, s.source.blob("src/app", layer).await);
    // A client following the tag schema, for each platform: the index under the subject's
    // schema tag, then each referrer it lists, fetched by digest (skopeo), names that subject.
    for image in [&s.amd64, &s.arm64] {
        let listed: Value = serde_json::from_slice(
            &target.skopeo_inspect_raw(&format!("team/app:{}", schema_tag(&image.digest))),
        )
        .unwrap();
        for d in listed["manifests"].as_array().unwrap() {
            let digest = d["digest"].as_str().unwrap();
            let raw = target.skopeo_inspect_raw(&format!("team/app@{digest}"));
            assert_eq!(sha256_digest(&raw), digest);
            let referrer: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(referrer["subject"]["digest"], image.digest, "{referrer}");
            assert_eq!(d["size"], raw.len(), "{d}");
        }
    }
    // cosign finds its signature where it looks on a registry without the API.
    let sig = target.skopeo_inspect_raw(&format!("team/app:{}.sig", schema_tag(&s.index.digest)));
    assert_eq!(sha256_digest(&sig), s.signature.digest);
    let mut tags = target.tags("team/app").await;
    tags.sort();
    let mut want_tags = vec![
        "v1".to_string(),
        schema_tag(&s.amd64.digest),
        schema_tag(&s.arm64.digest),
        format!("{}.sig", schema_tag(&s.index.digest)),
    ];
    want_tags.sort();
    assert_eq!(tags, want_tags, "no tag of the layout's referrers (sbom-*) became a tag");

    // A second referrer of the amd64 image, attached later: both are listed, the first kept.
    oras_attach(
        &s.source,
        "src/app",
        "vex-amd64",
        &s.amd64,
        s.dir.path(),
        "vex.json",
        "application/vnd.openvex+json",
    );
    skopeo_into_layout(&s.source, "src/app", "vex-amd64", &s.layout);
    let vex = entry_digest(&s.layout, "vex-amd64");
    imagepush(&[
        "push",
        "--plain-http",
        s.layout.to_str().unwrap(),
        &format!("{}/team/app:v1", target.host()),
    ])
    .ok();
    let listed: Value = serde_json::from_slice(
        &target.skopeo_inspect_raw(&format!("team/app:{}", schema_tag(&s.amd64.digest))),
    )
    .unwrap();
    let digests: Vec<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [sbom_amd64.as_str(), vex.as_str()]);
}

#[tokio::test]
async fn another_platforms_referrers_are_left_out_and_none_pushes_none() {
    let s = signed();
    let target = TestRegistry::start();
    let out = s.dir.path().join("report.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--platform",
        "linux/amd64",
        "--report",
        out.to_str().unwrap(),
        s.layout.to_str().unwrap(),
        &format!("{}/team/app:v1", target.host()),
    ])
    .ok();
    let r = report(&out);
    let referrers = r["referrers"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{r}");
    assert_eq!(referrers[0]["subject"], s.amd64.digest);
    // The arm64 SBOM and the index's signature: what they refer to was not pushed.
    assert_eq!(r["referrersLeftOut"]["count"], 2, "{r}");
    assert!(r["referrersLeftOut"]["reason"].as_str().unwrap().contains("did not push"));

    let plain = TestRegistry::start();
    imagepush(&[
        "push",
        "--plain-http",
        "--referrers",
        "none",
        "--report",
        out.to_str().unwrap(),
        s.layout.to_str().unwrap(),
        &format!("{}/team/app:v1", plain.host()),
    ])
    .ok();
    assert_eq!(plain.tags("team/app").await, ["v1"]);
    assert!(report(&out).get("referrers").is_none());
}

/// distribution behind the referrers API front (`tests/common/referrers_api.py`).
struct ApiRegistry {
    upstream: TestRegistry,
    child: Child,
    port: u16,
}

impl ApiRegistry {
    fn start() -> ApiRegistry {
        let upstream = TestRegistry::start();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/referrers_api.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(upstream.host())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        ApiRegistry { upstream, child, port }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ApiRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_registry_with_the_referrers_api_lists_them_without_schema_tags() {
    let s = signed();
    let api = ApiRegistry::start();
    let out = s.dir.path().join("report.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--report",
        out.to_str().unwrap(),
        s.layout.to_str().unwrap(),
        &format!("{}/team/app:v1", api.host()),
    ])
    .ok();
    let r = report(&out);
    let known: Vec<(&str, &str)> = r["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["subject"].as_str().unwrap(), x["knownBy"].as_str().unwrap()))
        .collect();
    assert!(
        known.contains(&(s.amd64.digest.as_str(), "api"))
            && known.contains(&(s.arm64.digest.as_str(), "api")),
        "{r}"
    );
    assert!(known.contains(&(s.index.digest.as_str(), "cosignTag")), "{r}");
    let mut tags = api.upstream.tags("team/app").await;
    tags.sort();
    assert_eq!(tags, [format!("{}.sig", schema_tag(&s.index.digest)), "v1".to_string()]);
    // The API lists the SBOM as a referrer of its image.
    let url = format!("http://{}/v2/team/app/referrers/{}", api.host(), s.amd64.digest);
    let listed: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(listed["manifests"][0]["digest"], entry_digest(&s.layout, "sbom-amd64"));
    assert_eq!(listed["manifests"][0]["artifactType"], "application/vnd.unknown.config.v1+json");
}

#[tokio::test]
async fn every_tag_leaves_the_referrers_to_go_with_their_subjects() {
    let s = signed();
    let target = TestRegistry::start();
    let out = s.dir.path().join("report.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--report",
        out.to_str().unwrap(),
        s.layout.to_str().unwrap(),
        &format!("{}/team/all", target.host()),
    ])
    .ok();
    let r = report(&out);
    let tags: Vec<&str> =
        r["tags"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, ["v1"], "the SBOMs' and the signature's tags are not images: {r}");
    assert_eq!(r["totals"]["referrers"], 3, "{r}");
    let mut got = target.tags("team/all").await;
    got.sort();
    assert!(!got.iter().any(|t| t.starts_with("sbom")), "{got:?}");
    assert!(got.contains(&format!("{}.sig", schema_tag(&s.index.digest))), "{got:?}");
}
