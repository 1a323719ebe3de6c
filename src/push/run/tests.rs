//! The blob state machine, manifests children first and tags last, over an in-memory source
//! and repository: what a registry sees, in what order.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use super::*;
use crate::push::destination::memory::MemoryRepository;
use crate::push::graph::Graph;
use crate::push::plan::Plan;
use crate::push::progress::Silent;
use crate::push::resolve::Root;
use crate::push::sources::{MountCandidates, SourceMap};
use crate::reference::Target;
use crate::shutdown::{Shutdown, Signal};
use crate::source::memory::MemorySource;

fn candidates(mount_from: &[&str], recorded: &[(&Descriptor, &str)]) -> MountCandidates {
    let target = Target::parse("registry.test/team/app:v1").unwrap();
    let mut map = SourceMap::new();
    for (d, repo) in recorded {
        map.entry(d.digest.clone()).or_default().insert(format!("registry.test/{repo}"));
    }
    let named: Vec<String> = mount_from.iter().map(|s| s.to_string()).collect();
    MountCandidates::new(&target, &named, map)
}

fn blobs_of(src: &MemorySource, manifest: &Descriptor) -> Vec<Descriptor> {
    let m: crate::oci::ImageManifest =
        serde_json::from_slice(&src.blobs[&manifest.digest]).unwrap();
    m.blobs().cloned().collect()
}

struct Pushed {
    blobs: Vec<BlobReport>,
    manifests: Vec<ManifestReport>,
    tags: Result<Vec<TagReport>, Error>,
}

async fn push(
    src: MemorySource,
    roots: Vec<Root>,
    repo: &MemoryRepository,
    cands: &MountCandidates,
    stop: &Shutdown,
) -> Pushed {
    let graph = Arc::new(Graph::open(Arc::new(src)).unwrap());
    let plan = Plan::build(&graph, roots).unwrap();
    let repositories = [Repository { destination: repo, plan, candidates: cands.clone() }];
    let runner = Runner::new(&repositories, &graph, Arc::new(Silent), 2);
    let blobs = runner.blobs().await.unwrap().remove(0);
    let manifests = runner.manifests().await.unwrap().remove(0);
    let tags = runner.tags(stop).await.map(|mut t| t.remove(0));
    Pushed { blobs, manifests, tags }
}

fn root(tag: Option<&str>, desc: &Descriptor) -> Root {
    Root { tag: tag.map(str::to_string), desc: desc.clone(), fallback: None }
}

fn position(calls: &[String], prefix: &str) -> Vec<usize> {
    calls.iter().enumerate().filter(|(_, c)| c.starts_with(prefix)).map(|(i, _)| i).collect()
}

#[tokio::test]
async fn blobs_then_children_then_tags_last() {
    let mut src = MemorySource::default();
    let amd = src.image("linux/amd64", 2, 300);
    let arm = src.image("linux/arm64", 2, 300);
    let index = src.index_of(&[amd.clone(), arm.clone()]);
    let repo = MemoryRepository::new();
    let p =
        push(src, vec![root(Some("v1"), &index)], &repo, &candidates(&[], &[]), &Shutdown::never())
            .await;
    assert_eq!(p.blobs.len(), 6);
    assert!(p.blobs.iter().all(|b| b.outcome == BlobOutcome::Uploaded));
    // The two children by digest; the tagged index only under its tag.
    let by_digest: BTreeSet<_> = p.manifests.iter().map(|m| m.digest.clone()).collect();
    assert_eq!(by_digest, [amd.digest.clone(), arm.digest.clone()].into());
    assert_eq!(p.tags.unwrap()[0].digest, index.digest);
    let calls = repo.calls();
    let last_upload = *position(&calls, "upload").last().unwrap();
    let first_manifest = position(&calls, "PUT manifest")[0];
    let tag = position(&calls, "PUT tag v1")[0];
    assert!(last_upload < first_manifest && first_manifest < tag, "{calls:#?}");
    assert_eq!(repo.state.lock().unwrap().tags["v1"], index.digest);
}

#[tokio::test]
async fn what_the_repository_has_is_left_and_reported_as_existing() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 3, 200);
    let blobs = blobs_of(&src, &image);
    let repo = MemoryRepository::new();
    {
        let mut st = repo.state.lock().unwrap();
        st.blobs.insert(blobs[1].digest.clone());
        st.blobs.insert(blobs[2].digest.clone());
    }
    let p =
        push(src, vec![root(Some("v1"), &image)], &repo, &candidates(&[], &[]), &Shutdown::never())
            .await;
    let outcomes: Vec<BlobOutcome> = p.blobs.iter().map(|b| b.outcome).collect();
    assert_eq!(
        outcomes,
        [BlobOutcome::Uploaded, BlobOutcome::Existed, BlobOutcome::Existed, BlobOutcome::Uploaded]
    );
    assert_eq!(repo.state.lock().unwrap().uploaded, blobs[0].size + blobs[3].size);
    // Pushed again: everything is there, nothing is uploaded or put again but the tag check.
    let mut again = MemorySource::default();
    let image2 = again.image("linux/amd64", 3, 200);
    assert_eq!(image2.digest, image.digest, "deterministic content");
    let before = repo.state.lock().unwrap().uploaded;
    let p = push(
        again,
        vec![root(Some("v1"), &image)],
        &repo,
        &candidates(&[], &[]),
        &Shutdown::never(),
    )
    .await;
    assert!(p.blobs.iter().all(|b| b.outcome == BlobOutcome::Existed));
    assert_eq!(repo.state.lock().unwrap().uploaded, before);
    assert!(
        !repo.calls().iter().rev().take(3).any(|c| c.starts_with("PUT")),
        "{:#?}",
        repo.calls()
    );
}

/// Mount candidates first; a registry that cannot mount opens a session the blob is uploaded
/// into (never a second session); a blob the source lacks comes only from a candidate.
#[tokio::test]
async fn blobs_are_mounted_where_a_candidate_has_them() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 2, 200);
    let blobs = blobs_of(&src, &image);
    // Thin: the first layer is not in the layout, a recorded repository has it.
    src.remove(&blobs[1].digest);
    let repo = MemoryRepository::new();
    {
        let mut st = repo.state.lock().unwrap();
        st.elsewhere
            .insert("team/base".into(), [blobs[1].digest.clone(), blobs[2].digest.clone()].into());
    }
    let cands = candidates(&[], &[(&blobs[1], "team/base"), (&blobs[2], "team/base")]);
    let p = push(src, vec![root(Some("v1"), &image)], &repo, &cands, &Shutdown::never()).await;
    let outcomes: Vec<(BlobOutcome, Option<String>)> =
        p.blobs.iter().map(|b| (b.outcome, b.from.clone())).collect();
    let from = Some("registry.test/team/base".to_string());
    assert_eq!(
        outcomes,
        [
            (BlobOutcome::Uploaded, None),
            (BlobOutcome::Mounted, from.clone()),
            (BlobOutcome::Mounted, from)
        ]
    );
    assert_eq!(repo.state.lock().unwrap().uploaded, blobs[0].size);

    // The registry answers every mount with a session (202): the blob goes into it.
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 200);
    let blobs = blobs_of(&src, &image);
    let mut repo = MemoryRepository::new();
    repo.refuse_mounts = true;
    let cands = candidates(&["team/base"], &[(&blobs[1], "team/base")]);
    let p = push(src, vec![root(Some("v1"), &image)], &repo, &cands, &Shutdown::never()).await;
    assert!(p.blobs.iter().all(|b| b.outcome == BlobOutcome::Uploaded));
    let calls = repo.calls();
    let mount = position(&calls, &format!("mount {}", blobs[1].digest))[0];
    let upload = position(&calls, &format!("upload {}", blobs[1].digest))[0];
    assert!(mount < upload, "{calls:#?}");
    // Every blob tried the named repository, and went into the session the refusal opened.
    assert!(position(&calls, "POST upload").is_empty(), "{calls:#?}");
    assert_eq!(position(&calls, "mount").len(), 2, "{calls:#?}");
}

/// A tag on a manifest that an index of the same push names goes in an earlier wave than the
/// index's tag (distribution rewrites links on every PUT).
#[tokio::test]
async fn tags_go_in_waves_children_first() {
    let mut src = MemorySource::default();
    let amd = src.image("linux/amd64", 1, 100);
    let index = src.index_of(std::slice::from_ref(&amd));
    let repo = MemoryRepository::new();
    let roots = vec![root(Some("all"), &index), root(Some("amd"), &amd)];
    let p = push(src, roots, &repo, &candidates(&[], &[]), &Shutdown::never()).await;
    let tags: Vec<String> = p.tags.unwrap().into_iter().map(|t| t.tag).collect();
    assert_eq!(tags, ["all", "amd"], "reported in the order chosen");
    let calls = repo.calls();
    assert!(position(&calls, "PUT tag amd")[0] < position(&calls, "PUT tag all")[0], "{calls:#?}");
}

#[tokio::test]
async fn a_stop_before_tagging_writes_no_tag() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 100);
    let repo = MemoryRepository::new();
    let (trigger, stop) = Shutdown::manual();
    trigger.request(Signal::Term);
    let p = push(src, vec![root(Some("v1"), &image)], &repo, &candidates(&[], &[]), &stop).await;
    let err = p.tags.unwrap_err();
    assert!(err.to_string().contains("no tag was written"), "{err}");
    assert!(position(&repo.calls(), "PUT tag").is_empty());
    let seen: HashSet<_> = repo.state.lock().unwrap().tags.keys().cloned().collect();
    assert!(seen.is_empty());
}
