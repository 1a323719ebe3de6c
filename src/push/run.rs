//! Carries out a plan: blobs (HEAD, mount, upload) with bounded concurrency, then
//! manifests and indexes children first, then tags. Nothing is tagged until everything
//! under the tag is in the registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::sync::Semaphore;

use super::destination::Destination;
use super::graph::Graph;
use super::plan::{Plan, PlannedManifest};
use super::progress::{BlobState, Event, Progress};
use super::report::{BlobOutcome, BlobReport, ManifestOutcome, ManifestReport, TagReport};
use super::sources::MountCandidates;
use super::{Error, Stage};
use crate::oci::Descriptor;
use crate::reference::TagOrDigest;
use crate::registry::MountOutcome;
use crate::shutdown::Shutdown;

/// HEAD requests in flight at once (cheap for the registry).
const CHECK_CONCURRENCY: usize = 16;
/// Manifest and tag requests in flight at once.
const MANIFEST_CONCURRENCY: usize = 8;

/// Carries out a plan from a source into a destination.
pub struct Runner<'a, D: Destination> {
    pub destination: &'a D,
    pub graph: &'a Arc<Graph>,
    pub candidates: &'a MountCandidates,
    pub progress: Arc<dyn Progress>,
    pub uploads: Semaphore,
    pub checks: Semaphore,
}

impl<'a, D: Destination> Runner<'a, D> {
    pub fn new(
        destination: &'a D,
        graph: &'a Arc<Graph>,
        candidates: &'a MountCandidates,
        progress: Arc<dyn Progress>,
        max_concurrent_uploads: usize,
    ) -> Self {
        Runner {
            destination,
            graph,
            candidates,
            progress,
            uploads: Semaphore::new(max_concurrent_uploads),
            checks: Semaphore::new(CHECK_CONCURRENCY),
        }
    }

    fn blob_event(&self, desc: &Descriptor, state: BlobState) {
        self.progress.event(Event::Blob { digest: desc.digest.clone(), size: desc.size, state });
    }

    /// Pushes every blob; the first failure cancels the others.
    pub async fn blobs(&self, plan: &Plan) -> Result<Vec<BlobReport>, Error> {
        for b in &plan.blobs {
            self.blob_event(b, BlobState::Preparing);
        }
        let mut reports: Vec<(usize, BlobReport)> = stream::iter(plan.blobs.iter().enumerate())
            .map(|(i, b)| async move { self.blob(b).await.map(|r| (i, r)) })
            .buffer_unordered(CHECK_CONCURRENCY + self.uploads.available_permits())
            .try_collect()
            .await?;
        reports.sort_by_key(|(i, _)| *i);
        Ok(reports.into_iter().map(|(_, r)| r).collect())
    }

    async fn blob(&self, desc: &Descriptor) -> Result<BlobReport, Error> {
        let dest = self.destination;
        let report = |outcome, from| BlobReport {
            digest: desc.digest.clone(),
            size: desc.size,
            media_type: desc.media_type.clone(),
            outcome,
            from,
        };
        {
            let _check = self.checks.acquire().await.expect("never closed");
            if dest.blob_exists(&desc.digest).await? {
                self.blob_event(desc, BlobState::Exists);
                return Ok(report(BlobOutcome::Existed, None));
            }
        }
        let digest = desc.digest.clone();
        let local = self.graph.off_thread(move |g| g.has_blob(&digest)).await?;
        if self.uploads.available_permits() == 0 {
            self.blob_event(desc, BlobState::Waiting);
        }
        let _permit = self.uploads.acquire().await.expect("never closed");
        for source in self.candidates.for_blob(&desc.digest) {
            match dest.mount(&desc.digest, &source).await {
                Ok(MountOutcome::Mounted) => {
                    let from = format!("{}/{}", dest.registry(), source);
                    self.blob_event(desc, BlobState::Mounted { from: source.clone() });
                    return Ok(report(BlobOutcome::Mounted, Some(from)));
                }
                Ok(MountOutcome::Started(session)) if local => {
                    tracing::debug!(digest = %desc.digest, source, "mount not possible; uploading into the session the registry opened");
                    self.upload(desc, session).await?;
                    return Ok(report(BlobOutcome::Uploaded, None));
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
        self.upload(desc, session).await?;
        Ok(report(BlobOutcome::Uploaded, None))
    }

    async fn upload(
        &self,
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
        self.destination.upload(session, &open, desc, on_progress).await?;
        self.blob_event(desc, BlobState::Pushed);
        Ok(())
    }

    /// Pushes manifests and indexes by digest, children first. Roots that get a tag are
    /// left for `tags`, which pushes them under the tag (and so by digest as well).
    pub async fn manifests(&self, plan: &Plan) -> Result<Vec<ManifestReport>, Error> {
        let tagged_roots: Vec<_> =
            plan.roots.iter().filter(|r| r.tag.is_some()).map(|r| r.desc.digest.clone()).collect();
        let needed_by_digest =
            |m: &PlannedManifest| m.child || !tagged_roots.contains(&m.desc.digest);
        let mut reports = Vec::new();
        let max_height = plan.manifests.iter().map(|m| m.height).max().unwrap_or(0);
        for height in 0..=max_height {
            let level: Vec<&PlannedManifest> = plan
                .manifests
                .iter()
                .filter(|m| m.height == height && needed_by_digest(m))
                .collect();
            let mut done: Vec<ManifestReport> = stream::iter(level)
                .map(|m| async move {
                    let dest = self.destination;
                    let outcome = if dest.manifest_exists(&m.desc.digest).await? {
                        ManifestOutcome::Existed
                    } else {
                        let at = TagOrDigest::Digest(&m.desc.digest);
                        dest.put_manifest(at, &m.bytes, &m.desc.media_type, None).await?;
                        ManifestOutcome::Pushed
                    };
                    Ok::<_, Error>(ManifestReport {
                        digest: m.desc.digest.clone(),
                        size: m.desc.size,
                        media_type: m.desc.media_type.clone(),
                        outcome,
                    })
                })
                .buffer_unordered(MANIFEST_CONCURRENCY)
                .try_collect()
                .await?;
            done.sort_by(|a, b| a.digest.cmp(&b.digest));
            reports.extend(done);
        }
        for root in plan.roots.iter().filter(|r| r.tag.is_none()) {
            self.progress.event(Event::PushedDigest {
                digest: root.desc.digest.clone(),
                size: root.desc.size,
            });
        }
        Ok(reports)
    }

    /// Points every tag at its root, last of all. Tags go in waves by height: a tag on a
    /// manifest that an index of this push names is written before the index's tag, never at
    /// the same time (distribution rewrites a manifest's link on every PUT, and a concurrent
    /// PUT of an index that names it can then find it missing).
    ///
    /// A stop requested on `stop` ends it: no tag PUT starts after the request and one in
    /// flight is dropped; the error names the tags already written.
    pub async fn tags(&self, plan: &Plan, stop: &Shutdown) -> Result<Vec<TagReport>, Error> {
        let planned = |d: &Descriptor| {
            plan.manifests
                .iter()
                .find(|m| m.desc.digest == d.digest)
                .expect("every root is in the plan")
        };
        let tagged: Vec<(&String, &crate::push::resolve::Root)> =
            plan.roots.iter().filter_map(|r| r.tag.as_ref().map(|t| (t, r))).collect();
        let max_height = tagged.iter().map(|(_, r)| planned(&r.desc).height).max().unwrap_or(0);
        let written = &Mutex::new(Vec::new());
        // Each tag's PUT, while one is sent and unanswered (the registry may still commit it
        // when the push stops then).
        let on_wire: Vec<(&String, AtomicBool)> =
            tagged.iter().map(|(t, _)| (*t, AtomicBool::new(false))).collect();
        let on_wire = &on_wire;
        let wire_of = |tag: &String| &on_wire.iter().find(|(t, _)| *t == tag).expect("tagged").1;
        let stopped = |signal| Error::Terminated {
            signal,
            stage: Stage::Tagging {
                written: written.lock().expect("not poisoned").clone(),
                in_flight: on_wire
                    .iter()
                    .filter(|(_, w)| w.load(Ordering::SeqCst))
                    .map(|(t, _)| (*t).clone())
                    .collect(),
                total: tagged.len(),
            },
        };
        let stopped = &stopped;
        let waves = async {
            let mut reports = Vec::new();
            for height in 0..=max_height {
                let wave = tagged.iter().filter(|(_, r)| planned(&r.desc).height == height);
                let done: Vec<TagReport> = stream::iter(wave)
                    .map(|(tag, root)| async move {
                        let m = planned(&root.desc);
                        // A tag already on this digest is left alone (a HEAD is cheaper for
                        // the registry than a manifest PUT, which re-checks every reference).
                        let current = self.destination.tag_digest(tag).await?;
                        if current.as_ref() != Some(&root.desc.digest) {
                            if let Some(signal) = stop.requested() {
                                return Err(stopped(signal));
                            }
                            self.destination
                                .put_manifest(
                                    TagOrDigest::Tag(tag),
                                    &m.bytes,
                                    &root.desc.media_type,
                                    Some(wire_of(tag)),
                                )
                                .await?;
                            written.lock().expect("not poisoned").push((*tag).clone());
                        }
                        self.progress.event(Event::Tagged {
                            tag: (*tag).clone(),
                            digest: root.desc.digest.clone(),
                            size: root.desc.size,
                        });
                        Ok::<_, Error>(TagReport {
                            tag: (*tag).clone(),
                            digest: root.desc.digest.clone(),
                            size: root.desc.size,
                            media_type: root.desc.media_type.clone(),
                            manifest_pushed_instead_of_index: root.fallback.clone(),
                        })
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
        // Report tags in the order they were chosen.
        reports.sort_by_key(|t| tagged.iter().position(|(tag, _)| **tag == t.tag));
        Ok(reports)
    }
}

#[cfg(test)]
mod tests;
