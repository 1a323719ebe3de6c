//! A whole push over an in-memory source and registry (everything but reading a layout from
//! disk and connecting): a mirror of several repositories sharing a base, where each distinct
//! blob travels once and no tag is written anywhere before every repository's content.

use std::sync::Arc;

use super::destination::memory::{MemoryRepository, Registry};
use super::*;
use crate::oci::{CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use crate::reference::MirrorRoot;
use crate::source::memory::MemorySource;

fn options(target: PushTarget) -> PushOptions {
    PushOptions {
        layout: "/memory/layout".into(),
        target,
        reference: None,
        platform: None,
        host_platform: None,
        mount_from: vec![],
        sources: None,
        known_sources: Default::default(),
        max_concurrent_uploads: 2,
        referrers: referrers::Policy::All,
        credential: Credential::Anonymous,
        connect: ConnectOptions::default(),
    }
}

/// Three images on one 4000-byte base, each with a layer of its own, named as containerd
/// and as an OCI layout writer name them.
fn bundle() -> (MemorySource, Vec<crate::oci::Descriptor>, crate::oci::Descriptor) {
    let mut src = MemorySource::default();
    let base = src.layer(4000);
    let mut images = Vec::new();
    for (i, name) in
        ["docker.io/library/nginx:1.27", "ghcr.io/org/app:v1", "docker.io/library/redis:7"]
            .iter()
            .enumerate()
    {
        let own = src.layer(1000 + i);
        let image = src.image_of("linux/amd64", &[base.clone(), own]);
        let key = if i == 1 { REF_NAME_ANNOTATION } else { CONTAINERD_NAME_ANNOTATION };
        src.name(&image, &[(key, name)]);
        images.push(image);
    }
    (src, images, base)
}

struct Mirrored {
    report: Result<PushReport, Error>,
    repositories: Vec<MemoryRepository>,
    registry: Registry,
}

/// Mirrors `src` to `registry.test/mirror`; `seed` puts blobs into repositories first.
async fn mirror(src: MemorySource, seed: &[(&str, &Digest)], stop: &Shutdown) -> Mirrored {
    let opts = options(PushTarget::Mirror(MirrorRoot::parse("registry.test/mirror").unwrap()));
    let graph = Arc::new(Graph::open(Arc::new(src)).unwrap());
    let selected = select::select(&graph, &opts.target, None).unwrap();
    let registry = Registry::default();
    let repositories: Vec<MemoryRepository> = selected
        .iter()
        .map(|d| MemoryRepository::in_registry(&d.target.repository, &registry))
        .collect();
    for (repo, digest) in seed {
        repositories.iter().find(|r| r.repository == *repo).unwrap().seed(digest);
    }
    let candidates =
        sources::MountCandidates::for_registry("registry.test", &[], Default::default());
    let silent: Arc<dyn Progress> = Arc::new(progress::Silent);
    let report = execute(&opts, &graph, &selected, &repositories, &candidates, silent, stop).await;
    Mirrored { report, repositories, registry }
}

use crate::digest::Digest;

#[tokio::test]
async fn a_shared_base_is_uploaded_once_and_mounted_into_the_other_repositories() {
    let (src, images, base) = bundle();
    let m = mirror(src, &[], &Shutdown::never()).await;
    let report = m.report.unwrap();
    let repos: Vec<&str> = m.repositories.iter().map(|r| r.repository.as_str()).collect();
    assert_eq!(repos, ["mirror/library/nginx", "mirror/org/app", "mirror/library/redis"]);

    // Every image, in its repository under its tag.
    let images_seen: Vec<(String, Option<String>, Digest)> = report
        .images
        .iter()
        .map(|i| (i.repository.clone(), i.tag.clone(), i.digest.clone()))
        .collect();
    let tag = |t: &str| Some(t.to_string());
    assert_eq!(
        images_seen,
        [
            ("registry.test/mirror/library/nginx".into(), tag("1.27"), images[0].digest.clone()),
            ("registry.test/mirror/org/app".into(), tag("v1"), images[1].digest.clone()),
            ("registry.test/mirror/library/redis".into(), tag("7"), images[2].digest.clone()),
        ]
    );
    assert_eq!(
        (report.target.as_str(), report.repository.as_str()),
        ("registry.test/mirror", "registry.test/mirror")
    );
    assert!(report.tags.is_empty());
    assert_eq!(report.digest.as_ref(), Some(&images[0].digest));

    // The base: uploaded into the first repository, mounted from there into the two others.
    let base_entries: Vec<(Option<&str>, BlobOutcome, Option<&str>)> = report
        .blobs
        .iter()
        .filter(|b| b.digest == base.digest)
        .map(|b| (b.repository.as_deref(), b.outcome, b.from.as_deref()))
        .collect();
    let first = Some("registry.test/mirror/library/nginx");
    assert_eq!(
        base_entries,
        [
            (first, BlobOutcome::Uploaded, None),
            (Some("registry.test/mirror/org/app"), BlobOutcome::Mounted, first),
            (Some("registry.test/mirror/library/redis"), BlobOutcome::Mounted, first),
        ]
    );
    // Bytes uploaded are the distinct blobs' bytes: the base once, each own layer and config.
    let uploaded: u64 = m.repositories.iter().map(|r| r.state.lock().unwrap().uploaded).sum();
    let distinct: u64 = {
        let mut seen = std::collections::HashSet::new();
        report.blobs.iter().filter(|b| seen.insert(b.digest.clone())).map(|b| b.size).sum()
    };
    assert_eq!(uploaded, distinct);
    assert_eq!(report.totals.bytes_uploaded, distinct);
    assert_eq!((report.totals.uploaded, report.totals.mounted, report.totals.existed), (7, 2, 0));
    assert_eq!(report.blobs.len(), 9);
    assert!(report.manifests.iter().all(|m| m.repository.is_some()));

    // No tag anywhere before every repository's blobs and manifests are in.
    let calls = m.registry.lock().unwrap().calls.clone();
    let first_tag = calls.iter().position(|c| c.contains(": PUT tag")).unwrap();
    let last_content = calls
        .iter()
        .rposition(|c| {
            c.contains(": upload") || c.contains(": mount") || c.contains(": PUT manifest")
        })
        .unwrap();
    assert!(last_content < first_tag, "{calls:#?}");
    for (repo, image) in m.repositories.iter().zip(&images) {
        let st = repo.state.lock().unwrap();
        assert_eq!(st.tags.values().collect::<Vec<_>>(), [&image.digest]);
    }
}

#[tokio::test]
async fn a_blob_one_repository_has_is_mounted_from_it_and_uploaded_nowhere() {
    let (src, _, base) = bundle();
    let m = mirror(src, &[("mirror/org/app", &base.digest)], &Shutdown::never()).await;
    let report = m.report.unwrap();
    let outcomes: Vec<(&str, BlobOutcome, Option<&str>)> = report
        .blobs
        .iter()
        .filter(|b| b.digest == base.digest)
        .map(|b| (b.repository.as_deref().unwrap(), b.outcome, b.from.as_deref()))
        .collect();
    let holder = Some("registry.test/mirror/org/app");
    assert_eq!(
        outcomes,
        [
            ("registry.test/mirror/library/nginx", BlobOutcome::Mounted, holder),
            ("registry.test/mirror/org/app", BlobOutcome::Existed, None),
            ("registry.test/mirror/library/redis", BlobOutcome::Mounted, holder),
        ]
    );
    let calls = m.registry.lock().unwrap().calls.clone();
    assert!(!calls.iter().any(|c| c.ends_with(&format!("upload {}", base.digest))), "{calls:#?}");
}

#[tokio::test]
async fn a_stop_before_tagging_leaves_every_repository_untagged() {
    let (src, _, _) = bundle();
    let (trigger, stop) = Shutdown::manual();
    trigger.request(crate::shutdown::Signal::Term);
    let m = mirror(src, &[], &stop).await;
    let e = m.report.unwrap_err();
    assert!(matches!(e, Error::Terminated { .. }), "{e}");
    let calls = m.registry.lock().unwrap().calls.clone();
    assert!(!calls.iter().any(|c| c.contains("PUT tag")), "{calls:#?}");
}

#[tokio::test]
async fn a_digest_pinned_name_is_pushed_by_digest_and_platform_choice_applies_per_repository() {
    let mut src = MemorySource::default();
    let amd = src.image("linux/amd64", 1, 300);
    let arm = src.image("linux/arm64", 1, 300);
    let index = src.index_of(&[amd.clone(), arm.clone()]);
    src.name(&index, &[(CONTAINERD_NAME_ANNOTATION, "docker.io/library/multi:1")]);
    let single = src.image("linux/arm64", 1, 200);
    let pinned = format!("ghcr.io/org/pinned@{}", single.digest);
    src.name(&single, &[(CONTAINERD_NAME_ANNOTATION, &pinned)]);
    let graph = Arc::new(Graph::open(Arc::new(src)).unwrap());
    let mut opts = options(PushTarget::Mirror(MirrorRoot::parse("registry.test").unwrap()));
    opts.platform = Some("linux/arm64".parse().unwrap());
    let selected = select::select(&graph, &opts.target, None).unwrap();
    let registry = Registry::default();
    let repositories: Vec<MemoryRepository> = selected
        .iter()
        .map(|d| MemoryRepository::in_registry(&d.target.repository, &registry))
        .collect();
    let candidates =
        sources::MountCandidates::for_registry("registry.test", &[], Default::default());
    let silent: Arc<dyn Progress> = Arc::new(progress::Silent);
    // --platform picks arm64 out of the tagged index, as for one push; the image pinned by
    // digest (a manifest of that platform) goes in by digest, untagged.
    let report =
        execute(&opts, &graph, &selected, &repositories, &candidates, silent, &Shutdown::never())
            .await
            .unwrap();
    let seen: Vec<(&str, Option<&str>, &Digest)> = report
        .images
        .iter()
        .map(|i| (i.repository.as_str(), i.tag.as_deref(), &i.digest))
        .collect();
    assert_eq!(
        seen,
        [
            ("registry.test/library/multi", Some("1"), &arm.digest),
            ("registry.test/org/pinned", None, &single.digest),
        ]
    );
    assert!(repositories[1].state.lock().unwrap().tags.is_empty());
    assert!(repositories[1].state.lock().unwrap().manifests.contains_key(&single.digest));
}

// ---------------------------------------------------------------------------------------
// Referrers
// ---------------------------------------------------------------------------------------

/// Pushes `src` to `registry.test/team/app:v1` in `repo`.
async fn push_one(
    src: MemorySource,
    repo: &MemoryRepository,
    policy: referrers::Policy,
) -> PushReport {
    let mut opts = one_repository();
    opts.referrers = policy;
    push_with(&opts, src, repo).await
}

/// The options of a push to `registry.test/team/app:v1`.
fn one_repository() -> PushOptions {
    options(PushTarget::parse("registry.test/team/app:v1", false).unwrap())
}

/// Pushes `src` into `repo` with `opts`.
async fn push_with(opts: &PushOptions, src: MemorySource, repo: &MemoryRepository) -> PushReport {
    let graph = Arc::new(Graph::open(Arc::new(src)).unwrap());
    let selected = select::select(&graph, &opts.target, None).unwrap();
    let candidates =
        sources::MountCandidates::for_registry("registry.test", &[], Default::default());
    let silent: Arc<dyn Progress> = Arc::new(progress::Silent);
    let repos = std::slice::from_ref(repo);
    execute(opts, &graph, &selected, repos, &candidates, silent, &Shutdown::never()).await.unwrap()
}

#[tokio::test]
async fn referrers_go_after_the_tag_and_a_registry_without_the_api_gets_the_schema_index() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 300);
    src.tag(&image, "v1");
    let sig = src.artifact("application/vnd.dev.cosign.artifact.sig.v1+json", Some(&image), "sig");
    src.tag(&sig, "");
    let cosign = src.artifact("application/vnd.dev.cosign.simplesigning.v1+json", None, "legacy");
    let cosign_tag = format!("{}.sig", referrers::schema_tag(&image.digest));
    src.tag(&cosign, &cosign_tag);
    let repo = MemoryRepository::new();
    let report = push_one(src.clone(), &repo, referrers::Policy::All).await;

    let known: Vec<(Digest, referrers::KnownBy, Option<String>)> =
        report.referrers.iter().map(|r| (r.digest.clone(), r.known_by, r.tag.clone())).collect();
    assert_eq!(known.len(), 2, "{known:?}");
    assert!(known.contains(&(sig.digest.clone(), referrers::KnownBy::TagSchema, None)));
    assert!(known.contains(&(
        cosign.digest.clone(),
        referrers::KnownBy::CosignTag,
        Some(cosign_tag.clone())
    )));
    assert_eq!(report.totals.referrers, 2);
    assert_eq!(report.tags.len(), 1, "cosign's tag is reported with the referrers, not as a tag");
    // Their blobs are in the totals: the image's config and layer, and each artifact's layer
    // and empty config (once).
    assert!(report.blobs.len() >= 4, "{:?}", report.blobs);
    let calls = {
        let st = repo.state.lock().unwrap();
        assert_eq!(st.tags.get(&cosign_tag), Some(&cosign.digest));
        let schema = st.tags.get(&referrers::schema_tag(&image.digest)).expect("the schema index");
        let index: serde_json::Value = serde_json::from_slice(&st.manifests[schema]).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(index["manifests"][0]["digest"], sig.digest.to_string());
        assert_eq!(
            index["manifests"][0]["artifactType"],
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        );
        assert_eq!(index["manifests"][0]["annotations"]["note"], "sig");
        st.calls.clone()
    };
    // Nothing referring was written before the image's tag.
    let tagged = calls.iter().position(|c| c == "PUT tag v1").unwrap();
    let first_referrer = calls
        .iter()
        .position(|c| c.contains(&sig.digest.to_string()) && c.starts_with("PUT"))
        .unwrap();
    assert!(tagged < first_referrer, "{calls:?}");

    // A later push of another referrer of the same image keeps the first in the index.
    let sbom = src.artifact("application/spdx+json", Some(&image), "sbom");
    src.tag(&sbom, "");
    let report = push_one(src.clone(), &repo, referrers::Policy::All).await;
    assert_eq!(report.totals.referrers, 3);
    let st = repo.state.lock().unwrap();
    let schema = st.tags.get(&referrers::schema_tag(&image.digest)).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&st.manifests[schema]).unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [sig.digest.to_string(), sbom.digest.to_string()]);
}

#[tokio::test]
async fn a_registry_with_the_referrers_api_needs_no_schema_tag_and_none_pushes_none() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 300);
    src.tag(&image, "v1");
    let sbom = src.artifact("application/spdx+json", Some(&image), "sbom");
    src.tag(&sbom, "");
    let mut repo = MemoryRepository::new();
    repo.referrers_api = true;
    let report = push_one(src.clone(), &repo, referrers::Policy::All).await;
    assert_eq!(report.referrers.len(), 1);
    assert_eq!(report.referrers[0].known_by, referrers::KnownBy::Api);
    assert_eq!(report.referrers[0].subject, image.digest);
    assert!(!repo.state.lock().unwrap().tags.contains_key(&referrers::schema_tag(&image.digest)));
    // Pushed again, the referrer already there is put again (the answer is what tells).
    let report = push_one(src.clone(), &repo, referrers::Policy::All).await;
    assert_eq!(report.referrers[0].known_by, referrers::KnownBy::Api);

    let plain = MemoryRepository::new();
    let report = push_one(src, &plain, referrers::Policy::None).await;
    assert!(report.referrers.is_empty() && report.referrers_left_out.is_none());
    assert!(!plain.state.lock().unwrap().manifests.contains_key(&sbom.digest));
}

#[tokio::test]
async fn a_mirror_pushes_each_referrer_into_its_subjects_repository() {
    let (mut src, images, _) = bundle();
    let sig =
        src.artifact("application/vnd.dev.cosign.artifact.sig.v1+json", Some(&images[1]), "sig");
    src.tag(&sig, "");
    let m = mirror(src, &[], &Shutdown::never()).await;
    let report = m.report.unwrap();
    assert_eq!(report.images.len(), 3, "the signature is no image of the bundle");
    assert_eq!(report.referrers.len(), 1);
    let r = &report.referrers[0];
    assert_eq!(r.repository.as_deref(), Some("registry.test/mirror/org/app"));
    assert_eq!(
        (r.subject.clone(), r.known_by),
        (images[1].digest.clone(), referrers::KnownBy::TagSchema)
    );
    let schema = referrers::schema_tag(&images[1].digest);
    for repo in &m.repositories {
        let st = repo.state.lock().unwrap();
        let here = repo.repository == "mirror/org/app";
        assert_eq!(st.tags.contains_key(&schema), here, "{}", repo.repository);
        assert_eq!(st.manifests.contains_key(&sig.digest), here, "{}", repo.repository);
    }
}

#[tokio::test]
async fn the_sources_file_records_the_referrers_blobs_too() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 300);
    src.tag(&image, "v1");
    let sbom = src.artifact("application/spdx+json", Some(&image), "sbom");
    src.tag(&sbom, "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sources.json");
    let mut opts = one_repository();
    opts.sources = Some(path.clone());
    push_with(&opts, src, &MemoryRepository::new()).await;
    let recorded = sources::load(&path).unwrap();
    let payload = Digest::sha256(b"payload sbom");
    assert!(
        recorded.get(&payload).is_some_and(|at| at.iter().any(|r| r == "registry.test/team/app")),
        "{recorded:?}"
    );
}
