//! The push plan: every blob, manifest and index under the chosen roots, each once, children
//! first, with the manifest bytes exactly as the source holds them. One walk of the image
//! graph.

use std::sync::Arc;

use super::Error;
use super::graph::Graph;
use super::resolve::Root;
use crate::oci::Descriptor;

/// A manifest or index to push, with its bytes as they are in the source.
#[derive(Debug, Clone)]
pub struct PlannedManifest {
    pub desc: Descriptor,
    pub bytes: Arc<[u8]>,
    /// 0 for an image manifest; an index is one more than its highest child.
    pub height: usize,
    /// Named by an index of the plan (so it must exist by digest).
    pub child: bool,
    /// The `subject` it names (a referrer): its PUT tells whether the registry indexed it.
    pub subject: Option<crate::digest::Digest>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub roots: Vec<Root>,
    /// Configs and layers, each once, in the order the manifests name them.
    pub blobs: Vec<Descriptor>,
    /// Children before parents (ascending height).
    pub manifests: Vec<PlannedManifest>,
}

impl Plan {
    /// Everything under `roots`. A manifest or index the source lacks cannot be pushed (they
    /// are never mounted): that fails here, naming every one.
    pub fn build(graph: &Graph, roots: Vec<Root>) -> Result<Plan, Error> {
        let descs: Vec<Descriptor> = roots.iter().map(|r| r.desc.clone()).collect();
        let closure = graph.closure(&descs)?;
        if !closure.absent.is_empty() {
            return Err(Error::ContentMissing {
                digests: closure.absent.iter().map(|d| d.digest.clone()).collect(),
            });
        }
        let manifests = closure
            .nodes
            .into_iter()
            .map(|r| PlannedManifest {
                subject: r.node.subject().map(|s| s.digest.clone()),
                desc: r.desc,
                bytes: r.node.bytes().clone(),
                height: r.height,
                child: r.child,
            })
            .collect();
        Ok(Plan { roots, blobs: closure.blobs, manifests })
    }
}
