//! Pushes the referrers of what a push put into each repository, once every tag of the push
//! is written: their blobs (mounted where they can be, like any blob), their manifests by
//! digest (cosign's under their tags), then, for a registry that did not index them itself
//! (no `OCI-Subject` in its answer), the referrers index of each subject under its schema
//! tag, read, merged and written back.

use std::collections::HashSet;
use std::sync::Arc;

use super::Error;
use super::destination::Destination;
use super::graph::Graph;
use super::plan::Plan;
use super::progress::{Event, Progress};
use super::referrers::{self, Found, KnownBy, Referrer};
use super::report::{BlobReport, LeftOut, ManifestReport, ReferrerReport, TagReport};
use super::resolve::Root;
use super::run::{Repository, Runner};
use crate::digest::Digest;
use crate::oci::{self, Descriptor};
use crate::reference::TagOrDigest;
use crate::shutdown::Shutdown;

/// What the referrers stage did, per repository where the push reports per repository.
#[derive(Debug, Default)]
pub struct Attached {
    pub blobs: Vec<Vec<BlobReport>>,
    pub manifests: Vec<Vec<ManifestReport>>,
    pub tags: Vec<Vec<TagReport>>,
    pub referrers: Vec<ReferrerReport>,
    pub left_out: Option<LeftOut>,
}

/// Which manifests each repository received, and which it might have (everything below the
/// chosen entries, before platform selection and the index fallback).
pub struct Pushed {
    pub manifests: HashSet<Digest>,
    pub related: HashSet<Digest>,
}

/// Pushes the referrers of `pushed[i]` into `repositories[i]`.
pub async fn attach<D: Destination>(
    graph: &Arc<Graph>,
    repositories: &[Repository<'_, D>],
    pushed: Vec<Pushed>,
    progress: Arc<dyn Progress>,
    max_concurrent_uploads: usize,
    qualified: bool,
    stop: &Shutdown,
) -> Result<Attached, Error> {
    let found: Vec<Found> = graph
        .off_thread(move |g| {
            pushed
                .iter()
                .map(|p| referrers::find(g, &p.manifests, &p.related))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let mut out = Attached { left_out: left_out(&found), ..Attached::default() };
    if found.iter().all(|f| f.referrers.is_empty()) {
        return Ok(out);
    }
    let stage = stage(graph, repositories, &found).await?;
    let mut runner = Runner::new(&stage, graph, progress.clone(), max_concurrent_uploads);
    runner.qualified = qualified;
    runner.referrers = true;
    out.blobs = super::until_stopped(stop, super::Stage::Referrers, runner.blobs()).await?;
    out.manifests = super::until_stopped(stop, super::Stage::Referrers, runner.manifests()).await?;
    out.tags = runner.tags(stop).await?;
    let indexed = std::mem::take(&mut *runner.indexed.lock().expect("not poisoned"));
    for (r, (repo, f)) in stage.iter().zip(&found).enumerate() {
        let known = |x: &Referrer| known_by(x, indexed.contains(&(r, x.desc.digest.clone())));
        let schema: Vec<&Referrer> =
            f.referrers.iter().filter(|x| known(x) == KnownBy::TagSchema).collect();
        let write = write_schema_indexes(repo.destination, &schema);
        super::until_stopped(stop, super::Stage::Referrers, write).await?;
        let shown = qualified.then(|| repo.destination.name());
        for x in &f.referrers {
            let report = referrer_report(x, known(x), shown.clone());
            progress.event(Event::Referrer {
                repository: report.repository.clone(),
                digest: report.digest.clone(),
                artifact_type: report.artifact_type.clone(),
                subject: report.subject.clone(),
                known_by: report.known_by,
            });
            out.referrers.push(report);
        }
    }
    Ok(out)
}

/// Each repository's referrers as a plan of their own (cosign's under their tags), pushed
/// into the same destination with the same mount candidates.
async fn stage<'a, D: Destination>(
    graph: &Arc<Graph>,
    repositories: &[Repository<'a, D>],
    found: &[Found],
) -> Result<Vec<Repository<'a, D>>, Error> {
    let mut stage = Vec::with_capacity(found.len());
    for (repo, f) in repositories.iter().zip(found) {
        let roots: Vec<Root> = f
            .referrers
            .iter()
            .map(|r| Root { tag: r.cosign_tag.clone(), desc: r.desc.clone(), fallback: None })
            .collect();
        let plan = graph.off_thread(move |g| Plan::build(g, roots)).await?;
        stage.push(Repository {
            destination: repo.destination,
            plan,
            candidates: repo.candidates.clone(),
        });
    }
    Ok(stage)
}

/// How the registry learned of `r`: it said so (`indexed`), else the tag schema for one with
/// a `subject`, else cosign's tag.
fn known_by(r: &Referrer, indexed: bool) -> KnownBy {
    if indexed {
        KnownBy::Api
    } else if r.has_subject {
        KnownBy::TagSchema
    } else {
        KnownBy::CosignTag
    }
}

fn referrer_report(r: &Referrer, known_by: KnownBy, repository: Option<String>) -> ReferrerReport {
    ReferrerReport {
        repository,
        digest: r.desc.digest.clone(),
        media_type: r.desc.media_type.clone(),
        artifact_type: r.listing.artifact_type.clone(),
        subject: r.subject.clone(),
        known_by,
        tag: r.cosign_tag.clone(),
    }
}

/// How many referrers were left out, and why (`None`: none).
fn left_out(found: &[Found]) -> Option<LeftOut> {
    let missed: HashSet<&Digest> =
        found.iter().flat_map(|f| f.left_out.iter().map(|(r, _)| r)).collect();
    let subjects: HashSet<&Digest> =
        found.iter().flat_map(|f| f.left_out.iter().map(|(_, s)| s)).collect();
    (!missed.is_empty()).then(|| LeftOut {
        count: missed.len() as u64,
        reason: format!(
            "they refer to {} manifest(s) of the layout that this push did not push (another platform's, or one the index fallback passed over)",
            subjects.len()
        ),
    })
}

/// For each subject of `schema` (referrers the registry did not index), its referrers index
/// under the schema tag: read, merged with these, written back when anything was added.
async fn write_schema_indexes<D: Destination>(dest: &D, schema: &[&Referrer]) -> Result<(), Error> {
    let mut subjects: Vec<&Digest> = schema.iter().map(|r| &r.subject).collect();
    subjects.sort();
    subjects.dedup();
    for subject in subjects {
        let tag = referrers::schema_tag(subject);
        let listed: Vec<Descriptor> =
            schema.iter().filter(|r| &r.subject == subject).map(|r| r.listing.clone()).collect();
        let existing = dest.get_manifest(&tag, referrers::INDEX_LIMIT).await?;
        let merged = referrers::merged_index(existing.as_ref().map(|(b, _)| b.as_slice()), &listed)
            .map_err(|reason| Error::ReferrersIndexInvalid {
                repository: dest.name(),
                tag: tag.clone(),
                reason,
            })?;
        if let Some(bytes) = merged {
            dest.put_manifest(TagOrDigest::Tag(&tag), &bytes, oci::OCI_INDEX, None).await?;
        }
    }
    Ok(())
}
