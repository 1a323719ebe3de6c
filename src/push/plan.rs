//! The push plan: every blob, manifest and index under the chosen roots, deduplicated and
//! ordered children first, with the manifest bytes exactly as the layout holds them.

use std::collections::HashMap;

use super::Error;
use super::resolve::{Availability, Root};
use crate::digest::Digest;
use crate::layout::LayoutReader;
use crate::oci::{self, Descriptor};

/// A manifest or index to push, with its bytes as they are in the layout.
#[derive(Debug, Clone)]
pub struct PlannedManifest {
    pub desc: Descriptor,
    pub bytes: Vec<u8>,
    /// 0 for an image manifest; an index is one more than its highest child.
    pub height: usize,
    /// Named by an index of the plan (so it must exist by digest).
    pub child: bool,
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
    /// Walks every root. Content that resolution accepted is read and parsed again here,
    /// so the plan holds the exact bytes that will be pushed.
    pub fn build(layout: &LayoutReader, roots: Vec<Root>) -> Result<Plan, Error> {
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut blob_seen: HashMap<Digest, ()> = HashMap::new();
        let mut manifests: HashMap<Digest, PlannedManifest> = HashMap::new();
        let mut order: Vec<Digest> = Vec::new();
        for root in &roots {
            let mut stack = Vec::new();
            walk(
                layout,
                &root.desc,
                false,
                &mut stack,
                &mut blobs,
                &mut blob_seen,
                &mut manifests,
                &mut order,
            )?;
        }
        let mut planned: Vec<PlannedManifest> =
            order.iter().map(|d| manifests.remove(d).expect("recorded in order")).collect();
        planned.sort_by_key(|m| m.height);
        Ok(Plan { roots, blobs, manifests: planned })
    }

    /// Blobs that are not in the layout and no candidate can provide.
    pub async fn missing(
        &self,
        layout: &LayoutReader,
        avail: &mut Availability<'_>,
    ) -> Result<Vec<Digest>, Error> {
        let mut missing = Vec::new();
        for b in &self.blobs {
            if !layout.contains(&b.digest)? && !avail.blob(&b.digest).await? {
                missing.push(b.digest.clone());
            }
        }
        Ok(missing)
    }
}

#[allow(clippy::too_many_arguments)]
fn walk(
    layout: &LayoutReader,
    desc: &Descriptor,
    is_child: bool,
    stack: &mut Vec<Digest>,
    blobs: &mut Vec<Descriptor>,
    blob_seen: &mut HashMap<Digest, ()>,
    manifests: &mut HashMap<Digest, PlannedManifest>,
    order: &mut Vec<Digest>,
) -> Result<usize, Error> {
    if stack.contains(&desc.digest) || stack.len() > 8 {
        return Err(Error::IndexCycle { digest: desc.digest.clone() });
    }
    if let Some(m) = manifests.get_mut(&desc.digest) {
        m.child |= is_child;
        return Ok(m.height);
    }
    if !layout.contains(&desc.digest)? {
        return Err(Error::ContentMissing { digests: vec![desc.digest.clone()] });
    }
    let height = if oci::is_index(&desc.media_type) {
        let index = layout.read_index(desc)?;
        stack.push(desc.digest.clone());
        let mut h = 0;
        for child in &index.manifests {
            h = h.max(walk(layout, child, true, stack, blobs, blob_seen, manifests, order)? + 1);
        }
        stack.pop();
        h.max(1)
    } else if oci::is_manifest(&desc.media_type) {
        let manifest = layout.read_manifest(desc)?;
        for b in manifest.blobs() {
            if blob_seen.insert(b.digest.clone(), ()).is_none() {
                blobs.push(b.clone());
            }
        }
        0
    } else {
        return Err(Error::UnsupportedMediaType {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
        });
    };
    let bytes = layout.read_blob(desc)?;
    manifests.insert(
        desc.digest.clone(),
        PlannedManifest { desc: desc.clone(), bytes, height, child: is_child },
    );
    order.push(desc.digest.clone());
    Ok(height)
}
