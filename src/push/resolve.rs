//! For each chosen entry, what is pushed: a manifest as it is; an index whole, or one
//! platform's manifest (`--platform`), or, when the index is only partly there, the manifest
//! that best fits the host (docker's index fallback). Questions about content go to the
//! image graph; whether a blob the source lacks can be had elsewhere (the target, a mount
//! candidate) goes to the destination.

use std::collections::HashMap;
use std::sync::Arc;

use super::Error;
use super::destination::Destination;
use super::graph::{Graph, Node};
use super::report::{DescriptorSummary, IndexFallback};
use super::sources::MountCandidates;
use crate::digest::Digest;
use crate::oci::{self, Descriptor};
use crate::platform::{self, Platform};

/// One image to push and the name it gets.
#[derive(Debug, Clone)]
pub struct Root {
    /// `None`: pushed by digest only.
    pub tag: Option<String>,
    /// The manifest or index that is pushed.
    pub desc: Descriptor,
    pub fallback: Option<IndexFallback>,
}

/// Answers "can the push get this content?": a manifest or index only from the source (they
/// are never mounted); a config or layer from the source, a recorded source, the target
/// itself or a `--mount-from` repository. Answers are kept.
pub struct Availability<'a, D: Destination> {
    pub graph: &'a Arc<Graph>,
    pub destination: &'a D,
    pub candidates: &'a MountCandidates,
    blobs: HashMap<Digest, bool>,
}

impl<'a, D: Destination> Availability<'a, D> {
    pub fn new(graph: &'a Arc<Graph>, destination: &'a D, candidates: &'a MountCandidates) -> Self {
        Availability { graph, destination, candidates, blobs: HashMap::new() }
    }

    /// Whether a config or layer can be had.
    pub async fn blob(&mut self, digest: &Digest) -> Result<bool, Error> {
        if let Some(v) = self.blobs.get(digest) {
            return Ok(*v);
        }
        let d = digest.clone();
        let mut found = self.graph.off_thread(move |g| g.has_blob(&d)).await?
            || !self.candidates.recorded(digest).is_empty();
        if !found {
            found = self.destination.blob_exists(digest).await?;
        }
        for repo in self.candidates.named() {
            if found {
                break;
            }
            found = self.destination.blob_exists_in(repo, digest).await.unwrap_or(false);
        }
        self.blobs.insert(digest.clone(), found);
        Ok(found)
    }

    /// What cannot be had under `desc`: manifests and indexes the source lacks, and blobs
    /// nobody has. Empty: `desc` can be pushed whole.
    pub async fn missing(&mut self, roots: &[Descriptor]) -> Result<Vec<Digest>, Error> {
        let roots = roots.to_vec();
        let closure = self.graph.off_thread(move |g| g.closure(&roots)).await?;
        let mut missing: Vec<Digest> = closure.absent.iter().map(|d| d.digest.clone()).collect();
        for b in &closure.blobs {
            if !self.blob(&b.digest).await? && !missing.contains(&b.digest) {
                missing.push(b.digest.clone());
            }
        }
        Ok(missing)
    }
}

/// The platform manifests under an index (nested indexes flattened), in the order the
/// indexes name them, attestation manifests left out, whether the source holds them or not.
fn platform_manifests(graph: &Graph, index: &Descriptor) -> Result<Vec<Descriptor>, Error> {
    let closure = graph.closure(std::slice::from_ref(index))?;
    Ok(closure
        .named
        .into_iter()
        .filter(|d| oci::is_manifest(&d.media_type) && !d.is_attestation() && d.platform.is_some())
        .collect())
}

fn summary(d: &Descriptor) -> DescriptorSummary {
    DescriptorSummary {
        digest: d.digest.clone(),
        size: d.size,
        media_type: d.media_type.clone(),
        platform: d.platform.clone(),
    }
}

fn platform_text(d: &Descriptor) -> String {
    d.platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "unknown".into())
}

/// What `--platform`, or the index fallback, makes of one chosen entry.
pub struct Choice<'p> {
    pub wanted: Option<&'p Platform>,
    pub host: &'p Platform,
    /// The target names a digest (no platform may then be chosen out of an index).
    pub by_digest: bool,
}

/// Applies `--platform` or the index fallback to one root.
pub async fn resolve_root<D: Destination>(
    avail: &mut Availability<'_, D>,
    tag: Option<String>,
    desc: Descriptor,
    choice: &Choice<'_>,
) -> Result<Root, Error> {
    let graph = avail.graph;
    let d = desc.clone();
    let Some(node) = graph.off_thread(move |g| g.node(&d)).await? else {
        return Err(Error::ContentMissing { digests: vec![desc.digest.clone()] });
    };
    if let Node::Manifest { manifest, .. } = node.as_ref() {
        let manifest = manifest.clone();
        let actual = match choice.wanted {
            Some(_) => graph.off_thread(move |g| g.config_platform(&manifest)).await?,
            None => None,
        };
        if let (Some(w), Some(actual)) = (choice.wanted, actual)
            && !w.matches_strict(&actual)
        {
            return Err(Error::PlatformMismatch {
                wanted: w.to_string(),
                actual: actual.to_string(),
                digest: desc.digest.clone(),
            });
        }
        return Ok(Root { tag, desc, fallback: None });
    }
    let d = desc.clone();
    let candidates = graph.off_thread(move |g| platform_manifests(g, &d)).await?;
    if let Some(w) = choice.wanted {
        if choice.by_digest {
            return Err(Error::PlatformWithDigestTarget { digest: desc.digest.clone() });
        }
        return chosen_platform(tag, &desc, w, &candidates);
    }
    if avail.missing(std::slice::from_ref(&desc)).await?.is_empty() {
        return Ok(Root { tag, desc, fallback: None });
    }
    // Partly present: push one platform's manifest instead (docker's index fallback).
    let mut present = Vec::new();
    for c in &candidates {
        if avail.missing(std::slice::from_ref(c)).await?.is_empty() {
            present.push(c.clone());
        }
    }
    let chosen = match present.len() {
        0 => return Err(Error::ContentMissing { digests: avail.missing(&[desc]).await? }),
        1 => present[0].clone(),
        _ => {
            let platforms: Vec<&Platform> =
                present.iter().filter_map(|d| d.platform.as_ref()).collect();
            match platform::best_host_match(choice.host, platforms.iter().copied()) {
                Some(i) => present[i].clone(),
                None => {
                    return Err(Error::NoHostMatch {
                        index: desc.digest.clone(),
                        host: choice.host.to_string(),
                        available: present.iter().map(platform_text).collect(),
                    });
                }
            }
        }
    };
    Ok(Root {
        tag,
        fallback: Some(IndexFallback {
            original_index: summary(&desc),
            selected_manifest: summary(&chosen),
        }),
        desc: chosen,
    })
}

/// The one manifest of `candidates` that matches `wanted` strictly.
fn chosen_platform(
    tag: Option<String>,
    index: &Descriptor,
    wanted: &Platform,
    candidates: &[Descriptor],
) -> Result<Root, Error> {
    let matches: Vec<&Descriptor> = candidates
        .iter()
        .filter(|c| c.platform.as_ref().is_some_and(|p| wanted.matches_strict(p)))
        .collect();
    match matches.as_slice() {
        [] => Err(Error::PlatformNotFound {
            wanted: wanted.to_string(),
            index: index.digest.clone(),
            available: candidates.iter().map(platform_text).collect(),
        }),
        [one] => Ok(Root { tag, desc: (*one).clone(), fallback: None }),
        many => Err(Error::PlatformConflict {
            wanted: wanted.to_string(),
            index: index.digest.clone(),
            matches: many.iter().map(|d| d.digest.clone()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests;
