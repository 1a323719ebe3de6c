//! Every docker-push rule of the README over an in-memory source and repository: which entry
//! a target names, platform choice, the index fallback, thin layouts.

use std::sync::Arc;

use super::*;
use crate::push::destination::memory::MemoryRepository;
use crate::push::select::select_roots;
use crate::push::sources::{MountCandidates, SourceMap};
use crate::reference::Target;
use crate::source::memory::MemorySource;

fn target(t: &str) -> Target {
    Target::parse(t).unwrap()
}

fn graph(src: MemorySource) -> Arc<Graph> {
    Arc::new(Graph::open(Arc::new(src)).unwrap())
}

fn no_candidates() -> MountCandidates {
    MountCandidates::new(&target("registry.test/team/app"), &[], SourceMap::new())
}

fn selected(g: &Graph, t: &str, r: Option<&str>) -> Result<Vec<(Option<String>, Digest)>, Error> {
    Ok(select_roots(g, &target(t), r)?.into_iter().map(|(tag, d)| (tag, d.digest)).collect())
}

#[test]
fn which_entries_a_target_names() {
    let mut src = MemorySource::default();
    let one = src.image("linux/amd64", 1, 10);
    let two = src.image("linux/amd64", 1, 11);
    let inner = src.image("linux/arm64", 1, 12);
    let index = src.index_of(std::slice::from_ref(&inner));
    src.tag(&one, "one");
    src.tag(&two, "docker.io/library/app:two");
    src.tag(&index, "multi");
    let g = graph(src);
    let t = "registry.test/team/app";
    let tag = |s: &str| Some(s.to_string());
    // The target's tag names the entry (also as the tag of a full name).
    assert_eq!(
        selected(&g, &format!("{t}:one"), None).unwrap(),
        [(tag("one"), one.digest.clone())]
    );
    assert_eq!(
        selected(&g, &format!("{t}:two"), None).unwrap(),
        [(tag("two"), two.digest.clone())]
    );
    // --ref wins, by name, full name or digest; the target's tag is what gets written.
    assert_eq!(
        selected(&g, &format!("{t}:x"), Some("one")).unwrap(),
        [(tag("x"), one.digest.clone())]
    );
    let by_full = selected(&g, &format!("{t}:x"), Some("docker.io/library/app:two")).unwrap();
    assert_eq!(by_full, [(tag("x"), two.digest.clone())]);
    let by_digest = selected(&g, &format!("{t}:x"), Some(&one.digest.to_string())).unwrap();
    assert_eq!(by_digest, [(tag("x"), one.digest.clone())]);
    // Untagged: every tag, each as itself; with --ref, that entry under its tag.
    let all = selected(&g, t, None).unwrap();
    assert_eq!(
        all.iter().map(|(t, _)| t.clone().unwrap()).collect::<Vec<_>>(),
        ["one", "two", "multi"]
    );
    assert_eq!(selected(&g, t, Some("one")).unwrap(), [(tag("one"), one.digest.clone())]);
    // By digest: an entry, or a manifest inside an index; no tag.
    let d = selected(&g, &format!("{t}@{}", inner.digest), None).unwrap();
    assert_eq!(d, [(None, inner.digest.clone())]);
    // Several entries, none named like the target: refused, listing the tags.
    let err = selected(&g, &format!("{t}:three"), None).unwrap_err();
    assert!(matches!(err, Error::AmbiguousSource { .. }), "{err:?}");
    let err = selected(&g, &format!("{t}:x"), Some("nope")).unwrap_err();
    assert!(matches!(err, Error::RefNotFound { .. }), "{err:?}");
}

#[test]
fn a_single_entry_goes_under_any_tag_and_a_tag_must_name_one_image() {
    let mut src = MemorySource::default();
    let only = src.image("linux/amd64", 1, 10);
    src.tag(&only, "whatever");
    let g = graph(src);
    let got = selected(&g, "registry.test/team/app:only", None).unwrap();
    assert_eq!(got, [(Some("only".to_string()), only.digest.clone())]);

    let mut src = MemorySource::default();
    let a = src.image("linux/amd64", 1, 10);
    let b = src.image("linux/amd64", 1, 11);
    src.tag(&a, "v1");
    src.tag(&b, "docker.io/x/app:v1");
    let g = graph(src);
    for (t, r) in [
        ("registry.test/team/app:v1", None),
        ("registry.test/team/app", None),
        ("registry.test/team/app:x", Some("v1")),
    ] {
        let err = selected(&g, t, r).unwrap_err();
        assert!(matches!(err, Error::AmbiguousTag { .. }), "{t} {r:?}: {err:?}");
        assert!(
            err.to_string().contains(&a.digest.to_string())
                && err.to_string().contains(&b.digest.to_string())
        );
    }
    // As `ctr export` names entries: the short tag as the ref name, the full name beside;
    // --ref chooses by that full name.
    let mut src = MemorySource::default();
    let a = src.image("linux/amd64", 1, 10);
    let b = src.image("linux/amd64", 1, 11);
    let ctr = crate::oci::CONTAINERD_NAME_ANNOTATION;
    let oci = crate::oci::REF_NAME_ANNOTATION;
    src.name(&a, &[(ctr, "docker.io/library/a:v1"), (oci, "v1")]);
    src.name(&b, &[(ctr, "docker.io/library/b:v1"), (oci, "v1")]);
    let g = graph(src);
    let got = selected(&g, "registry.test/team/app", Some("docker.io/library/b:v1")).unwrap();
    assert_eq!(got, [(Some("v1".to_string()), b.digest.clone())]);
    let err = selected(&g, "registry.test/team/app", Some("v1")).unwrap_err();
    assert!(matches!(err, Error::AmbiguousTag { .. }), "{err:?}");

    let untagged = MemorySource::default();
    let err = selected(&graph(untagged), "registry.test/team/app", None).unwrap_err();
    assert!(matches!(err, Error::NoTags { .. }), "{err:?}");
}

/// A four-platform index (one attestation manifest beside) and what choices make of it.
fn multi() -> (MemorySource, Descriptor, Vec<Descriptor>) {
    let mut src = MemorySource::default();
    let mut children: Vec<Descriptor> = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
        .iter()
        .map(|p| src.image(p, 1, 20))
        .collect();
    let mut attestation = src.image("unknown/unknown", 1, 20);
    attestation
        .annotations
        .insert(oci::DOCKER_REFERENCE_TYPE.into(), oci::ATTESTATION_MANIFEST.into());
    children.push(attestation);
    let index = src.index_of(&children);
    src.tag(&index, "v1");
    (src, index, children)
}

fn choose<'p>(wanted: Option<&'p Platform>, host: &'p Platform) -> Choice<'p> {
    Choice { wanted, host, by_digest: false }
}

async fn resolve_one(
    src: MemorySource,
    desc: &Descriptor,
    choice: &Choice<'_>,
    repo: &MemoryRepository,
) -> Result<Root, Error> {
    let g = graph(src);
    let cands = no_candidates();
    let mut avail = Availability::new(&g, repo, &cands);
    resolve_root(&mut avail, Some("v1".into()), desc.clone(), choice).await
}

#[tokio::test]
async fn a_platform_is_chosen_by_strict_match_never_an_attestation() {
    let host: Platform = "linux/amd64".parse().unwrap();
    let repo = MemoryRepository::new();
    let (src, index, children) = multi();
    let arm: Platform = "linux/arm64/v8".parse().unwrap();
    let r = resolve_one(src, &index, &choose(Some(&arm), &host), &repo).await.unwrap();
    assert_eq!(r.desc.digest, children[1].digest);
    assert!(r.fallback.is_none());
    // Windows is nowhere: the message lists what there is, the attestation left out.
    let (src, index, _) = multi();
    let windows: Platform = "windows/amd64".parse().unwrap();
    let err = resolve_one(src, &index, &choose(Some(&windows), &host), &repo).await.unwrap_err();
    match &err {
        Error::PlatformNotFound { available, .. } => {
            assert_eq!(available, &["linux/amd64", "linux/arm64", "linux/arm/v7"])
        }
        other => panic!("{other:?}"),
    }
    let (src, index, _) = multi();
    let unknown: Platform = "unknown/unknown".parse().unwrap();
    assert!(matches!(
        resolve_one(src, &index, &choose(Some(&unknown), &host), &repo).await,
        Err(Error::PlatformNotFound { .. })
    ));
}

#[tokio::test]
async fn a_complete_index_is_pushed_whole_and_a_partial_one_falls_back_to_the_host() {
    let amd: Platform = "linux/amd64".parse().unwrap();
    let arm: Platform = "linux/arm64/v8".parse().unwrap();
    let repo = MemoryRepository::new();
    let (src, index, _) = multi();
    let r = resolve_one(src, &index, &choose(None, &amd), &repo).await.unwrap();
    assert_eq!(r.desc.digest, index.digest, "complete: the index itself");
    // Only arm64 and arm are there: the host's (arm64) is pushed instead, and said so.
    let (mut src, index, children) = multi();
    src.remove(&children[0].digest);
    let r = resolve_one(src, &index, &choose(None, &arm), &repo).await.unwrap();
    assert_eq!(r.desc.digest, children[1].digest);
    let f = r.fallback.unwrap();
    assert_eq!(
        (f.original_index.digest, f.selected_manifest.digest),
        (index.digest.clone(), children[1].digest.clone())
    );
    // Nothing there runs on the host: refused, listing what is.
    let (mut src, index, children) = multi();
    src.remove(&children[0].digest);
    let s390: Platform = "linux/s390x".parse().unwrap();
    let err = resolve_one(src, &index, &choose(None, &s390), &repo).await.unwrap_err();
    assert!(matches!(err, Error::NoHostMatch { .. }), "{err:?}");
    // Nothing there at all: every missing digest named.
    let (mut src, index, children) = multi();
    for c in &children {
        src.remove(&c.digest);
    }
    let err = resolve_one(src, &index, &choose(None, &amd), &repo).await.unwrap_err();
    match err {
        Error::ContentMissing { digests } => assert_eq!(digests.len(), 4),
        other => panic!("{other:?}"),
    }
}

/// A layer the layout lacks is fine when the target already has it: the index is complete.
#[tokio::test]
async fn a_thin_layout_is_complete_with_what_the_registry_has() {
    let host: Platform = "linux/amd64".parse().unwrap();
    let (mut src, index, children) = multi();
    let m: oci::ImageManifest = serde_json::from_slice(&src.blobs[&children[0].digest]).unwrap();
    let layer = m.layers[0].digest.clone();
    src.remove(&layer);
    let repo = MemoryRepository::new();
    // Not in the repository either: amd64 is incomplete, and nothing else runs on the host.
    let err = resolve_one(src.clone(), &index, &choose(None, &host), &repo).await.unwrap_err();
    assert!(matches!(err, Error::NoHostMatch { .. }), "{err:?}");
    // In the repository: complete, the index itself.
    repo.state.lock().unwrap().blobs.insert(layer);
    let r = resolve_one(src, &index, &choose(None, &host), &repo).await.unwrap();
    assert_eq!(r.desc.digest, index.digest);
    assert!(r.fallback.is_none());
}

#[tokio::test]
async fn a_manifest_for_another_platform_is_refused() {
    let mut src = MemorySource::default();
    let image = src.image("linux/arm64", 1, 10);
    src.tag(&image, "v1");
    let repo = MemoryRepository::new();
    let amd: Platform = "linux/amd64".parse().unwrap();
    let err = resolve_one(src, &image, &choose(Some(&amd), &amd), &repo).await.unwrap_err();
    assert!(matches!(err, Error::PlatformMismatch { .. }), "{err:?}");
}
