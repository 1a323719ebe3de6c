//! Carries out plans: blobs (HEAD, mount, upload) with bounded concurrency, then manifests
//! and indexes children first, then tags. Nothing is tagged until everything under every tag
//! is in the registry. A push fills one repository; a mirror fills several over one graph,
//! and each distinct blob then travels once: uploaded into the first repository that needs
//! it (or found in one), mounted from there into the others.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt, future, stream};
use tokio::sync::Semaphore;

use super::destination::Destination;
use super::graph::Graph;
use super::plan::{Plan, PlannedManifest};
use super::progress::{BlobState, Event, Progress};
use super::report::{BlobOutcome, BlobReport, ManifestOutcome, ManifestReport, TagReport};
use super::resolve::Root;
use super::sources::MountCandidates;
use super::{Error, Stage};
use crate::digest::Digest;
use crate::oci::Descriptor;
use crate::reference::TagOrDigest;
use crate::registry::MountOutcome;
use crate::shutdown::Shutdown;

/// HEAD requests in flight at once (cheap for the registry).
const CHECK_CONCURRENCY: usize = 16;
/// Manifest and tag requests in flight at once.
const MANIFEST_CONCURRENCY: usize = 8;

/// One repository a push fills: where it is, what goes there, and where else on its registry
/// its blobs may be.
pub struct Repository<'a, D: Destination> {
    pub destination: &'a D,
    pub plan: Plan,
    pub candidates: MountCandidates,
}

/// Carries out the plans of one or more repositories of one registry, from one source.
/// Reports come back per repository, in the order of `repositories`.
pub struct Runner<'a, D: Destination> {
    pub repositories: &'a [Repository<'a, D>],
    pub graph: &'a Arc<Graph>,
    pub progress: Arc<dyn Progress>,
    /// Tags are named with their repository (`registry/repository:tag`) in events and
    /// messages (a mirror); else by themselves, as docker does.
    pub qualified: bool,
    /// Pushing referrers: their manifests are always PUT (the answer says whether the
    /// registry indexed them), and no "pushed by digest" line is said for them.
    pub referrers: bool,
    /// `(repository, referrer)` of every manifest the registry answered with `OCI-Subject`.
    pub indexed: Mutex<HashSet<(usize, Digest)>>,
    /// Mounts and uploads in flight, across every repository.
    uploads: Semaphore,
    checks: Semaphore,
}

/// A tag to write, with what it points at.
struct Tagging<'t> {
    repository: usize,
    tag: &'t String,
    root: &'t Root,
    manifest: &'t PlannedManifest,
    /// As messages name it: the tag, or `registry/repository:tag`.
    name: String,
    /// Its PUT is sent and unanswered (the registry may still commit it when the push stops
    /// then).
    on_wire: AtomicBool,
}

impl<'a, D: Destination> Runner<'a, D> {
    pub fn new(
        repositories: &'a [Repository<'a, D>],
        graph: &'a Arc<Graph>,
        progress: Arc<dyn Progress>,
        max_concurrent_uploads: usize,
    ) -> Self {
        Runner {
            repositories,
            graph,
            progress,
            qualified: repositories.len() > 1,
            referrers: false,
            indexed: Mutex::default(),
            uploads: Semaphore::new(max_concurrent_uploads),
            checks: Semaphore::new(CHECK_CONCURRENCY),
        }
    }

    fn blob_event(&self, desc: &Descriptor, state: BlobState) {
        self.progress.event(Event::Blob { digest: desc.digest.clone(), size: desc.size, state });
    }

    /// Notes that the registry indexed `m` as a referrer of its subject.
    fn note_answer(&self, r: usize, m: &PlannedManifest, answer: &crate::registry::PutAnswer) {
        if answer.subject.is_some() && answer.subject == m.subject {
            self.indexed.lock().expect("not poisoned").insert((r, m.desc.digest.clone()));
        }
    }

    /// The repository as events name it: only when tags are qualified.
    fn shown(&self, r: usize) -> Option<String> {
        self.qualified.then(|| self.repositories[r].destination.name())
    }

    /// Pushes every blob of every repository; the first failure cancels the others. Each
    /// distinct blob is handled once, for all the repositories that need it.
    pub async fn blobs(&self) -> Result<Vec<Vec<BlobReport>>, Error> {
        let mut distinct: Vec<(&Descriptor, Vec<usize>)> = Vec::new();
        let mut seen: HashMap<&Digest, usize> = HashMap::new();
        for (r, repo) in self.repositories.iter().enumerate() {
            for b in &repo.plan.blobs {
                let i = *seen.entry(&b.digest).or_insert_with(|| {
                    distinct.push((b, Vec::new()));
                    distinct.len() - 1
                });
                distinct[i].1.push(r);
            }
        }
        for (b, _) in &distinct {
            self.blob_event(b, BlobState::Preparing);
        }
        let done: Vec<Vec<(usize, BlobReport)>> = stream::iter(&distinct)
            .map(|(b, needing)| self.blob(b, needing))
            .buffer_unordered(CHECK_CONCURRENCY + self.uploads.available_permits())
            .try_collect()
            .await?;
        let mut by_repository: Vec<HashMap<Digest, BlobReport>> =
            self.repositories.iter().map(|_| HashMap::new()).collect();
        for (r, report) in done.into_iter().flatten() {
            by_repository[r].insert(report.digest.clone(), report);
        }
        // Each repository's blobs in the order its manifests name them.
        Ok(self
            .repositories
            .iter()
            .zip(by_repository)
            .map(|(repo, mut reports)| {
                repo.plan
                    .blobs
                    .iter()
                    .map(|b| reports.remove(&b.digest).expect("every blob is reported"))
                    .collect()
            })
            .collect())
    }

    /// One blob into every repository of `needing`: a HEAD in each; where it is missing,
    /// into the first that lacks it the usual way (a mount candidate, else an upload), then
    /// mounted into the others from a repository that has it.
    async fn blob(
        &self,
        desc: &Descriptor,
        needing: &[usize],
    ) -> Result<Vec<(usize, BlobReport)>, Error> {
        let held: Vec<bool> = future::try_join_all(needing.iter().map(|&r| async move {
            let _check = self.checks.acquire().await.expect("never closed");
            self.repositories[r].destination.blob_exists(&desc.digest).await
        }))
        .await?;
        let mut out = Vec::with_capacity(needing.len());
        let mut holder = None;
        let mut missing = Vec::new();
        for (&r, held) in needing.iter().zip(held) {
            if held {
                self.blob_event(desc, BlobState::Exists);
                out.push((r, blob_report(desc, BlobOutcome::Existed, None)));
                holder.get_or_insert(r);
            } else {
                missing.push(r);
            }
        }
        let mut rest = missing.as_slice();
        if holder.is_none()
            && let Some((&first, others)) = missing.split_first()
        {
            out.push((first, self.obtain(first, desc, None).await?));
            holder = Some(first);
            rest = others;
        }
        let from = holder.map(|h| self.repositories[h].destination.repository());
        let mounted = future::try_join_all(
            rest.iter()
                .map(|&r| async move { Ok::<_, Error>((r, self.obtain(r, desc, from).await?)) }),
        )
        .await?;
        out.extend(mounted);
        Ok(out)
    }

    /// A blob that repository `r` lacks: mounted from `holder` (a repository of this push
    /// that has it) or a mount candidate, else uploaded from the source.
    async fn obtain(
        &self,
        r: usize,
        desc: &Descriptor,
        holder: Option<&str>,
    ) -> Result<BlobReport, Error> {
        let repo = &self.repositories[r];
        let dest = repo.destination;
        let digest = desc.digest.clone();
        let local = self.graph.off_thread(move |g| g.has_blob(&digest)).await?;
        if self.uploads.available_permits() == 0 {
            self.blob_event(desc, BlobState::Waiting);
        }
        let _permit = self.uploads.acquire().await.expect("never closed");
        let mut sources: Vec<String> = holder.map(str::to_string).into_iter().collect();
        for c in repo.candidates.for_blob(&desc.digest) {
            if !sources.contains(&c) {
                sources.push(c);
            }
        }
        for source in sources {
            match dest.mount(&desc.digest, &source).await {
                Ok(MountOutcome::Mounted) => {
                    let from = format!("{}/{}", dest.registry(), source);
                    self.blob_event(desc, BlobState::Mounted { from: source.clone() });
                    return Ok(blob_report(desc, BlobOutcome::Mounted, Some(from)));
                }
                Ok(MountOutcome::Started(session)) if local => {
                    tracing::debug!(digest = %desc.digest, source, "mount not possible; uploading into the session the registry opened");
                    self.upload(dest, desc, session).await?;
                    return Ok(blob_report(desc, BlobOutcome::Uploaded, None));
                }
                Ok(MountOutcome::Started(session)) => {
                    dest.cancel_upload(session).await;
                }
                // A registry that checks pull access on the mount source refuses the mount
                // when our token lacks it; like docker, upload instead (a real credential
                // problem shows on the upload itself).
                Err(e) => {
                    tracing::warn!(digest = %desc.digest, source, error = %e, "mount failed; trying the next candidate");
                }
            }
        }
        if !local {
            return Err(Error::ContentMissing { digests: vec![desc.digest.clone()] });
        }
        let session = dest.start_upload().await?;
        self.upload(dest, desc, session).await?;
        Ok(blob_report(desc, BlobOutcome::Uploaded, None))
    }

    async fn upload(
        &self,
        dest: &D,
        desc: &Descriptor,
        session: crate::registry::UploadSession,
    ) -> Result<(), Error> {
        let progress = self.progress.clone();
        let digest = desc.digest.clone();
        let size = desc.size;
        let on_progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |done| {
            progress.event(Event::Blob {
                digest: digest.clone(),
                size,
                state: BlobState::Pushing { done },
            })
        });
        on_progress(0);
        let source = self.graph.source().clone();
        let open = || source.open(desc);
        dest.upload(session, &open, desc, on_progress).await?;
        self.blob_event(desc, BlobState::Pushed);
        Ok(())
    }

    /// Pushes manifests and indexes by digest, children first, in every repository. Roots
    /// that get a tag are left for `tags`, which pushes them under the tag (and so by digest
    /// as well).
    pub async fn manifests(&self) -> Result<Vec<Vec<ManifestReport>>, Error> {
        let mut reports: Vec<Vec<ManifestReport>> =
            self.repositories.iter().map(|_| Vec::new()).collect();
        let by_digest: Vec<Vec<&PlannedManifest>> =
            self.repositories.iter().map(|repo| needed_by_digest(&repo.plan)).collect();
        let max_height = by_digest.iter().flatten().map(|m| m.height).max().unwrap_or(0);
        for height in 0..=max_height {
            let level = by_digest.iter().enumerate().flat_map(|(r, ms)| {
                ms.iter().filter(move |m| m.height == height).map(move |m| (r, *m))
            });
            let mut done: Vec<(usize, ManifestReport)> = stream::iter(level)
                .map(|(r, m)| async move {
                    let dest = self.repositories[r].destination;
                    let ask = m.subject.is_some() && self.referrers;
                    let outcome = if !ask && dest.manifest_exists(&m.desc.digest).await? {
                        ManifestOutcome::Existed
                    } else {
                        let at = TagOrDigest::Digest(&m.desc.digest);
                        let answer =
                            dest.put_manifest(at, &m.bytes, &m.desc.media_type, None).await?;
                        self.note_answer(r, m, &answer);
                        ManifestOutcome::Pushed
                    };
                    Ok::<_, Error>((
                        r,
                        ManifestReport {
                            digest: m.desc.digest.clone(),
                            size: m.desc.size,
                            media_type: m.desc.media_type.clone(),
                            outcome,
                            repository: None,
                        },
                    ))
                })
                .buffer_unordered(MANIFEST_CONCURRENCY)
                .try_collect()
                .await?;
            done.sort_by(|a, b| (a.0, &a.1.digest).cmp(&(b.0, &b.1.digest)));
            for (r, m) in done {
                reports[r].push(m);
            }
        }
        for (r, repo) in self.repositories.iter().enumerate().filter(|_| !self.referrers) {
            for root in repo.plan.roots.iter().filter(|r| r.tag.is_none()) {
                self.progress.event(Event::PushedDigest {
                    repository: self.shown(r),
                    digest: root.desc.digest.clone(),
                    size: root.desc.size,
                });
            }
        }
        Ok(reports)
    }

    /// Points every tag of every repository at its root, last of all: no tag is written
    /// anywhere before every repository's content is in. Tags go in waves by height: a tag
    /// on a manifest that an index of this push names is written before the index's tag,
    /// never at the same time (distribution rewrites a manifest's link on every PUT, and a
    /// concurrent PUT of an index that names it can then find it missing).
    ///
    /// A stop requested on `stop` ends it: no tag PUT starts after the request and one in
    /// flight is dropped; the error names the tags already written.
    pub async fn tags(&self, stop: &Shutdown) -> Result<Vec<Vec<TagReport>>, Error> {
        let mut tagged: Vec<Tagging> = Vec::new();
        for (r, repo) in self.repositories.iter().enumerate() {
            for root in &repo.plan.roots {
                let Some(tag) = &root.tag else { continue };
                let manifest = repo
                    .plan
                    .manifests
                    .iter()
                    .find(|m| m.desc.digest == root.desc.digest)
                    .expect("every root is in the plan");
                let name = match self.qualified {
                    true => format!("{}:{tag}", repo.destination.name()),
                    false => tag.clone(),
                };
                tagged.push(Tagging {
                    repository: r,
                    tag,
                    root,
                    manifest,
                    name,
                    on_wire: AtomicBool::new(false),
                });
            }
        }
        let tagged = &tagged;
        let max_height = tagged.iter().map(|t| t.manifest.height).max().unwrap_or(0);
        let written = &Mutex::new(Vec::new());
        let stopped = |signal| Error::Terminated {
            signal,
            stage: Stage::Tagging {
                written: written.lock().expect("not poisoned").clone(),
                in_flight: tagged
                    .iter()
                    .filter(|t| t.on_wire.load(Ordering::SeqCst))
                    .map(|t| t.name.clone())
                    .collect(),
                total: tagged.len(),
            },
        };
        let stopped = &stopped;
        let waves = async {
            let mut reports = Vec::new();
            for height in 0..=max_height {
                let wave = tagged.iter().enumerate().filter(|(_, t)| t.manifest.height == height);
                let done: Vec<(usize, TagReport)> = stream::iter(wave)
                    .map(|(i, t)| async move {
                        let dest = self.repositories[t.repository].destination;
                        let root = t.root;
                        // A tag already on this digest is left alone (a HEAD is cheaper for
                        // the registry than a manifest PUT, which re-checks every reference).
                        // A referrer is put again all the same: only the answer says whether
                        // the registry indexed it.
                        let ask = self.referrers && t.manifest.subject.is_some();
                        let current = dest.tag_digest(t.tag).await?;
                        if ask || current.as_ref() != Some(&root.desc.digest) {
                            if let Some(signal) = stop.requested() {
                                return Err(stopped(signal));
                            }
                            let answer = dest
                                .put_manifest(
                                    TagOrDigest::Tag(t.tag),
                                    &t.manifest.bytes,
                                    &root.desc.media_type,
                                    Some(&t.on_wire),
                                )
                                .await?;
                            self.note_answer(t.repository, t.manifest, &answer);
                            written.lock().expect("not poisoned").push(t.name.clone());
                        }
                        self.progress.event(Event::Tagged {
                            repository: self.shown(t.repository),
                            tag: t.tag.clone(),
                            digest: root.desc.digest.clone(),
                            size: root.desc.size,
                        });
                        Ok::<_, Error>((
                            i,
                            TagReport {
                                tag: t.tag.clone(),
                                digest: root.desc.digest.clone(),
                                size: root.desc.size,
                                media_type: root.desc.media_type.clone(),
                                manifest_pushed_instead_of_index: root.fallback.clone(),
                            },
                        ))
                    })
                    .buffered(MANIFEST_CONCURRENCY)
                    .try_collect()
                    .await?;
                reports.extend(done);
            }
            Ok::<_, Error>(reports)
        };
        // Finished work wins over a signal that arrives with it: all tags written is a push.
        let mut reports = tokio::select! {
            biased;
            reports = waves => reports?,
            signal = stop.wait() => return Err(stopped(signal)),
        };
        // Each repository's tags in the order they were chosen.
        reports.sort_by_key(|(i, _)| *i);
        let mut out: Vec<Vec<TagReport>> = self.repositories.iter().map(|_| Vec::new()).collect();
        for (i, report) in reports {
            out[tagged[i].repository].push(report);
        }
        Ok(out)
    }
}

/// The manifests and indexes of a plan that go in by digest: all but the roots that get a
/// tag (unless an index of the plan names them too).
fn needed_by_digest(plan: &Plan) -> Vec<&PlannedManifest> {
    let tagged_roots: Vec<&Digest> =
        plan.roots.iter().filter(|r| r.tag.is_some()).map(|r| &r.desc.digest).collect();
    plan.manifests.iter().filter(|m| m.child || !tagged_roots.contains(&&m.desc.digest)).collect()
}

fn blob_report(desc: &Descriptor, outcome: BlobOutcome, from: Option<String>) -> BlobReport {
    BlobReport {
        digest: desc.digest.clone(),
        size: desc.size,
        media_type: desc.media_type.clone(),
        outcome,
        from,
        repository: None,
    }
}

#[cfg(test)]
mod tests;
