//! The image graph: the manifests and indexes a push reads, each read from its `Source`,
//! checked against its descriptor and parsed once, however many questions are asked of it
//! (which tag names what, which platforms an index has, whether an index is complete, what
//! the plan holds). Everything below a root is reached by one walk (`closure`), with one
//! depth limit.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::Error;
use crate::digest::Digest;
use crate::layout::content;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};
use crate::platform::Platform;
use crate::source::Source;

/// How deep indexes may nest below a root (an index of indexes is 2).
pub const MAX_DEPTH: usize = 8;

/// A manifest or index of the source, with its bytes exactly as they are there.
#[derive(Debug)]
pub enum Node {
    Index { index: Box<ImageIndex>, bytes: Arc<[u8]> },
    Manifest { manifest: Box<ImageManifest>, bytes: Arc<[u8]> },
}

impl Node {
    pub fn bytes(&self) -> &Arc<[u8]> {
        match self {
            Node::Index { bytes, .. } | Node::Manifest { bytes, .. } => bytes,
        }
    }

    /// The content it refers to (its `subject`), when it is a referrer.
    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Node::Manifest { manifest, .. } => manifest.subject.as_ref(),
            Node::Index { index, .. } => index.subject.as_ref(),
        }
    }
}

/// A manifest or index that a walk reached.
#[derive(Debug, Clone)]
pub struct Reached {
    /// As the first index (or root) that named it has it: with its platform, annotations.
    pub desc: Descriptor,
    pub node: Arc<Node>,
    /// 0 for an image manifest; an index is one more than its highest child.
    pub height: usize,
    /// Named by an index of the walk (so it must exist by digest).
    pub child: bool,
}

/// Everything below some roots.
#[derive(Debug, Clone, Default)]
pub struct Closure {
    /// Manifests and indexes in the source, each once, children before parents.
    pub nodes: Vec<Reached>,
    /// Configs and layers, each once, in the order the manifests name them.
    pub blobs: Vec<Descriptor>,
    /// Manifests and indexes named but not in the source, each once.
    pub absent: Vec<Descriptor>,
    /// Every manifest and index, in the source or not, in the order the walk first met them
    /// (depth first, as the indexes name them), as first named.
    pub named: Vec<Descriptor>,
}

/// What a walk reads: all of it, or only indexes (to find what they name).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    Everything,
    IndexesOnly,
}

pub struct Graph {
    source: Arc<dyn Source>,
    index: ImageIndex,
    /// Manifests and indexes read so far; `None`: not in the source.
    nodes: Mutex<HashMap<Digest, Option<Arc<Node>>>>,
    blobs: Mutex<HashMap<Digest, bool>>,
}

impl Graph {
    /// The graph of `source`; reads its entries (`index.json`).
    pub fn open(source: Arc<dyn Source>) -> Result<Graph, Error> {
        let index = source.index()?;
        Ok(Graph { source, index, nodes: Mutex::default(), blobs: Mutex::default() })
    }

    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// Runs `f` on a thread where blocking is fine (what it asks the graph may read files
    /// and hash them), not on the async runtime's.
    pub async fn off_thread<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Graph) -> T + Send + 'static,
    ) -> T {
        let graph = self.clone();
        tokio::task::spawn_blocking(move || f(&graph)).await.expect("a graph task does not panic")
    }

    pub fn location(&self) -> &Path {
        self.source.location()
    }

    /// The entries the source names (`index.json`'s manifests), in order.
    pub fn entries(&self) -> &[Descriptor] {
        &self.index.manifests
    }

    /// The manifest or index `desc` names, read and checked the first time it is asked for;
    /// `None` when the source does not hold it.
    pub fn node(&self, desc: &Descriptor) -> Result<Option<Arc<Node>>, Error> {
        if let Some(known) = self.nodes.lock().expect("not poisoned").get(&desc.digest) {
            return Ok(known.clone());
        }
        let node = if !self.source.contains(&desc.digest)? {
            None
        } else if oci::is_index(&desc.media_type) {
            let bytes = self.source.read(desc)?;
            let index = content::parse_index(self.location(), desc, &bytes)?;
            Some(Arc::new(Node::Index { index: Box::new(index), bytes: bytes.into() }))
        } else if oci::is_manifest(&desc.media_type) {
            let bytes = self.source.read(desc)?;
            let manifest = content::parse_manifest(self.location(), desc, &bytes)?;
            Some(Arc::new(Node::Manifest { manifest: Box::new(manifest), bytes: bytes.into() }))
        } else {
            return Err(unsupported(desc));
        };
        self.nodes.lock().expect("not poisoned").insert(desc.digest.clone(), node.clone());
        Ok(node)
    }

    /// Whether the source holds a config or layer (asked once per digest).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool, Error> {
        if let Some(known) = self.blobs.lock().expect("not poisoned").get(digest) {
            return Ok(*known);
        }
        let present = self.source.contains(digest)?;
        self.blobs.lock().expect("not poisoned").insert(digest.clone(), present);
        Ok(present)
    }

    /// The platform an image's config declares, when the config is in the source.
    pub fn config_platform(&self, manifest: &ImageManifest) -> Result<Option<Platform>, Error> {
        if !self.has_blob(&manifest.config.digest)? {
            return Ok(None);
        }
        let bytes = self.source.read(&manifest.config)?;
        #[derive(serde::Deserialize)]
        struct Config {
            architecture: Option<String>,
            os: Option<String>,
            variant: Option<String>,
        }
        let Ok(c) = serde_json::from_slice::<Config>(&bytes) else { return Ok(None) };
        Ok(match (c.os, c.architecture) {
            (Some(os), Some(architecture)) => Some(Platform {
                architecture,
                os,
                os_version: None,
                os_features: Vec::new(),
                variant: c.variant,
            }),
            _ => None,
        })
    }

    /// Everything below `roots` (the roots included): the one walk every question about
    /// content goes through.
    pub fn closure(&self, roots: &[Descriptor]) -> Result<Closure, Error> {
        self.walk(roots, Depth::Everything)
    }

    /// Where `digest` is named: an entry, or a manifest or index inside one of the entries'
    /// indexes (whose descriptor, with its platform, is returned).
    pub fn find(&self, digest: &Digest) -> Result<Option<Descriptor>, Error> {
        let reached = self.walk(self.entries(), Depth::IndexesOnly)?;
        Ok(reached
            .nodes
            .into_iter()
            .map(|r| r.desc)
            .chain(reached.absent)
            .find(|d| &d.digest == digest))
    }

    fn walk(&self, roots: &[Descriptor], depth: Depth) -> Result<Closure, Error> {
        let mut walk = Walk {
            graph: self,
            depth,
            stack: Vec::new(),
            seen: HashMap::new(),
            out: Closure::default(),
            blobs_seen: HashSet::new(),
        };
        for root in roots {
            walk.visit(root, false)?;
        }
        let mut out = walk.out;
        // Children first: a stable sort keeps the walk's order within a height.
        out.nodes.sort_by_key(|r| r.height);
        Ok(out)
    }
}

fn unsupported(desc: &Descriptor) -> Error {
    Error::UnsupportedMediaType { digest: desc.digest.clone(), media_type: desc.media_type.clone() }
}

/// The state of one walk.
struct Walk<'g> {
    graph: &'g Graph,
    depth: Depth,
    /// The indexes being walked, root first (for cycles and the depth limit).
    stack: Vec<Digest>,
    /// Where each reached node is in `out.nodes`, or `None` for an absent one.
    seen: HashMap<Digest, Option<usize>>,
    blobs_seen: HashSet<Digest>,
    out: Closure,
}

impl Walk<'_> {
    /// Visits `desc` and everything below it; returns its height (`None`: absent).
    fn visit(&mut self, desc: &Descriptor, child: bool) -> Result<Option<usize>, Error> {
        if self.stack.contains(&desc.digest) || self.stack.len() > MAX_DEPTH {
            return Err(Error::IndexCycle { digest: desc.digest.clone() });
        }
        if let Some(known) = self.seen.get(&desc.digest) {
            return Ok(known.map(|i| {
                self.out.nodes[i].child |= child;
                self.out.nodes[i].height
            }));
        }
        self.out.named.push(desc.clone());
        let leaf = self.depth == Depth::IndexesOnly && !oci::is_index(&desc.media_type);
        if leaf && !oci::is_manifest(&desc.media_type) {
            return Err(unsupported(desc));
        }
        let node = if leaf { None } else { self.graph.node(desc)? };
        let Some(node) = node else {
            if !leaf {
                self.seen.insert(desc.digest.clone(), None);
            }
            self.out.absent.push(desc.clone());
            return Ok(None);
        };
        let height = match node.as_ref() {
            Node::Index { index, .. } => {
                self.stack.push(desc.digest.clone());
                let mut height = 1;
                for c in &index.manifests {
                    if let Some(h) = self.visit(c, true)? {
                        height = height.max(h + 1);
                    }
                }
                self.stack.pop();
                height
            }
            Node::Manifest { manifest, .. } => {
                for b in manifest.blobs() {
                    if self.blobs_seen.insert(b.digest.clone()) {
                        self.out.blobs.push(b.clone());
                    }
                }
                0
            }
        };
        self.seen.insert(desc.digest.clone(), Some(self.out.nodes.len()));
        self.out.nodes.push(Reached { desc: desc.clone(), node, height, child });
        Ok(Some(height))
    }
}

#[cfg(test)]
mod tests;
