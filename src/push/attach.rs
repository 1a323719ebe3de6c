//! Pushes the referrers of what a push put into each repository, once every tag of the push
//! is written: their blobs (mounted where they can be, like any blob), their manifests by
//! digest (cosign's under their tags), then, for a registry that did not index them itself
//! (no `OCI-Subject` in its answer), the referrers index of each subject under its schema
//! tag, read, merged and written back.

use std::collections::HashSet;
use std::sync::Arc;

use super::destination::Destination;
use super::graph::Graph;
use super::plan::Plan;
use super::progress::{Event, Progress};
use super::referrers::{self, Found, KnownBy, Referrer, Why};
use super::report::{BlobReport, LeftOut, ManifestReport, ReferrerReport};
use super::resolve::Root;
use super::run::{Repository, Runner};
use super::{Error, Stage};
use crate::digest::Digest;
use crate::oci::{self, Descriptor};
use crate::reference::TagOrDigest;
use crate::shutdown::Shutdown;

/// What the referrers stage did, per repository where the push reports per repository.
#[derive(Debug, Default)]
pub struct Attached {
    pub blobs: Vec<Vec<BlobReport>>,
    pub manifests: Vec<Vec<ManifestReport>>,
    pub referrers: Vec<ReferrerReport>,
    pub left_out: Option<LeftOut>,
}

/// Which manifests each repository received, and which it might have (everything below the
/// chosen entries, before platform selection and the index fallback).
pub struct Pushed {
    pub manifests: HashSet<Digest>,
    pub related: HashSet<Digest>,
}

/// What the stage needs besides the repositories.
pub struct Context<'a> {
    pub graph: &'a Arc<Graph>,
    pub progress: Arc<dyn Progress>,
    pub max_concurrent_uploads: usize,
    /// A mirror: reports and events name each referrer's repository.
    pub qualified: bool,
    pub stop: &'a Shutdown,
}

/// Pushes the referrers of `pushed[i]` into `repositories[i]`, generation by generation: a
/// referrer's content, manifest, cosign tag and schema listing are all in before a referrer
/// of it is pushed.
pub async fn attach<D: Destination>(
    cx: &Context<'_>,
    repositories: &[Repository<'_, D>],
    pushed: Vec<Pushed>,
) -> Result<Attached, Error> {
    let found: Vec<Found> = cx
        .graph
        .off_thread(move |g| {
            let candidates = referrers::candidates(g);
            pushed
                .iter()
                .map(|p| referrers::find(g, &candidates, &p.manifests, &p.related))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let mut out = Attached { left_out: left_out(&found), ..Attached::default() };
    out.blobs = repositories.iter().map(|_| Vec::new()).collect();
    out.manifests = repositories.iter().map(|_| Vec::new()).collect();
    let generations = found.iter().flat_map(|f| &f.referrers).map(|r| r.generation).max();
    for generation in 1..=generations.unwrap_or(0) {
        let now: Vec<Vec<&Referrer>> = found
            .iter()
            .map(|f| f.referrers.iter().filter(|r| r.generation == generation).collect())
            .collect();
        one_generation(cx, repositories, &now, &mut out).await?;
    }
    Ok(out)
}

/// Pushes one generation of referrers into every repository and reports them.
async fn one_generation<D: Destination>(
    cx: &Context<'_>,
    repositories: &[Repository<'_, D>],
    now: &[Vec<&Referrer>],
    out: &mut Attached,
) -> Result<(), Error> {
    let stage = stage(cx.graph, repositories, now).await?;
    let mut runner = Runner::new(&stage, cx.graph, cx.progress.clone(), cx.max_concurrent_uploads);
    runner.qualified = cx.qualified;
    runner.referrers = true;
    let blobs = super::until_stopped(cx.stop, Stage::Referrers, runner.blobs()).await?;
    let manifests = super::until_stopped(cx.stop, Stage::Referrers, runner.manifests()).await?;
    runner.tags(cx.stop).await.map_err(in_referrers_stage)?;
    let indexed = std::mem::take(&mut *runner.indexed.lock().expect("not poisoned"));
    for (r, (repo, referrers)) in stage.iter().zip(now).enumerate() {
        let known = |x: &Referrer| known_by(x, indexed.contains(&(r, x.desc.digest.clone())));
        let schema: Vec<&Referrer> =
            referrers.iter().copied().filter(|x| known(x) == KnownBy::TagSchema).collect();
        let write = write_schema_indexes(repo.destination, &schema);
        super::until_stopped(cx.stop, Stage::Referrers, write).await?;
        let shown = cx.qualified.then(|| repo.destination.name());
        for x in referrers {
            let report = referrer_report(x, known(x), shown.clone());
            cx.progress.event(Event::Referrer {
                repository: report.repository.clone(),
                digest: report.digest.clone(),
                artifact_type: report.artifact_type.clone(),
                subject: report.subject.clone(),
                known_by: report.known_by,
            });
            out.referrers.push(report);
        }
    }
    for (r, (b, m)) in blobs.into_iter().zip(manifests).enumerate() {
        out.blobs[r].extend(b);
        out.manifests[r].extend(m);
    }
    Ok(())
}

/// A stop while cosign's tags are written comes after every tag of the images.
fn in_referrers_stage(e: Error) -> Error {
    match e {
        Error::Terminated { signal, .. } => Error::Terminated { signal, stage: Stage::Referrers },
        e => e,
    }
}

/// Each repository's referrers as a plan of their own (cosign's under their tags), pushed
/// into the same destination with the same mount candidates.
async fn stage<'a, D: Destination>(
    graph: &Arc<Graph>,
    repositories: &[Repository<'a, D>],
    now: &[Vec<&Referrer>],
) -> Result<Vec<Repository<'a, D>>, Error> {
    let mut stage = Vec::with_capacity(now.len());
    for (repo, referrers) in repositories.iter().zip(now) {
        let roots: Vec<Root> = referrers
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

/// How many referrers were left out, and why (`None`: none).
fn left_out(found: &[Found]) -> Option<LeftOut> {
    let all: Vec<&referrers::LeftOut> = found.iter().flat_map(|f| &f.left_out).collect();
    let count = |why| {
        all.iter().filter(|l| l.why == why).map(|l| &l.referrer).collect::<HashSet<_>>().len()
    };
    let (not_pushed, incomplete) = (count(Why::NotPushed), count(Why::Incomplete));
    let mut reasons = Vec::new();
    if not_pushed > 0 {
        reasons.push(format!("{not_pushed} refer to content of the layout that this push did not push (another platform's manifest, one the index fallback passed over, or a referrer left out)"));
    }
    if incomplete > 0 {
        let named: Vec<String> = all
            .iter()
            .filter(|l| l.why == Why::Incomplete)
            .map(|l| l.referrer.to_string())
            .collect();
        reasons.push(format!("{incomplete} lack content in the layout ({})", named.join(", ")));
    }
    (!reasons.is_empty())
        .then(|| LeftOut { count: (not_pushed + incomplete) as u64, reason: reasons.join("; ") })
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
        let existing = existing.as_ref().map(|(b, t)| (b.as_slice(), t.as_str()));
        let merged = referrers::merged_index(existing, &listed).map_err(|reason| {
            Error::ReferrersIndexInvalid { repository: dest.name(), tag: tag.clone(), reason }
        })?;
        if let Some(bytes) = merged {
            dest.put_manifest(TagOrDigest::Tag(&tag), &bytes, oci::OCI_INDEX, None).await?;
        }
    }
    Ok(())
}
