//! Referrers: the signatures, attestations and SBOMs of a layout travel with the images they
//! describe. Which manifests of the source refer to pushed content (`subject`, cosign's tags
//! and `cosign save`'s kinds) is decided here over the image graph, as is how a registry
//! without the referrers API learns of them (the distribution spec's referrers tag schema:
//! an index tagged `<alg>-<hex>` of the subject's digest). Pushing their content is the same
//! push as any other, into the same destinations.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::Error;
use super::graph::{Graph, Node};
use crate::digest::Digest;
use crate::oci::{self, Descriptor};

/// `cosign save` marks each entry of its layout with this annotation.
const COSIGN_KIND: &str = "kind";
/// The kinds of the image entry a `cosign save` layout holds.
const COSIGN_IMAGE_KINDS: [&str; 2] =
    ["dev.cosignproject.cosign/image", "dev.cosignproject.cosign/imageIndex"];
/// The kinds of its signature, attestation and SBOM entries, with cosign's tag suffixes.
const COSIGN_KINDS: [(&str, &str); 3] = [
    ("dev.cosignproject.cosign/sigs", "sig"),
    ("dev.cosignproject.cosign/atts", "att"),
    ("dev.cosignproject.cosign/sboms", "sbom"),
];
/// The suffixes of cosign's tags (`sha256-<hex>.sig`).
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];
/// The largest referrers index read back from a registry.
pub const INDEX_LIMIT: usize = 4 * 1024 * 1024;

/// Whether `--referrers` pushes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Policy {
    #[default]
    All,
    None,
}

/// How the registry learned of a referrer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KnownBy {
    /// The registry answered its PUT with `OCI-Subject`: its referrers API lists it.
    Api,
    /// Listed in the index tagged `<alg>-<hex>` of its subject (the referrers tag schema).
    TagSchema,
    /// Pushed under cosign's tag `sha256-<hex>.sig` (`.att`, `.sbom`), without a `subject`.
    CosignTag,
}

/// A manifest or index of the source that refers to pushed content.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    /// As the source names it (what is pushed).
    pub desc: Descriptor,
    /// As a referrers index lists it: media type, digest, size, `artifactType` and the
    /// manifest's annotations.
    pub listing: Descriptor,
    pub subject: Digest,
    /// Whether it names the subject in its `subject` field (else only cosign's convention
    /// ties it to the subject).
    pub has_subject: bool,
    /// cosign's tag for it, when the source names it so.
    pub cosign_tag: Option<String>,
    /// 1 for a referrer of pushed content, 2 for a referrer of one of those, and so on (0
    /// until `find` places it).
    pub generation: usize,
}

/// The referrers a push takes, and those it leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Each once, generation by generation (a referrer before the referrers of it).
    pub referrers: Vec<Referrer>,
    pub left_out: Vec<LeftOut>,
}

/// A referrer of the source that a push does not take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub referrer: Digest,
    pub subject: Digest,
    pub why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// What it refers to is related to the push but not pushed (another platform's manifest
    /// of an index, or a referrer left out itself).
    NotPushed,
    /// Part of its own content is not in the source.
    Incomplete,
}

impl LeftOut {
    fn incomplete(r: &Referrer) -> LeftOut {
        LeftOut {
            referrer: r.desc.digest.clone(),
            subject: r.subject.clone(),
            why: Why::Incomplete,
        }
    }
}

/// The tag of the referrers index of `subject` (`sha256-<hex>`).
pub fn schema_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm().as_str(), subject.hex())
}

/// The subject digest a cosign tag (`sha256-<hex>.sig`, `.att`, `.sbom`) names.
pub fn cosign_subject(tag: &str) -> Option<Digest> {
    let (name, suffix) = tag.rsplit_once('.')?;
    if !COSIGN_SUFFIXES.contains(&suffix) {
        return None;
    }
    schema_subject(name)
}

/// The digest a referrers tag schema tag (`sha256-<hex>`) stands for.
fn schema_subject(tag: &str) -> Option<Digest> {
    let (alg, hex) = tag.split_once('-')?;
    format!("{alg}:{hex}").parse().ok()
}

/// Tags that the referrers conventions own (`sha256-<hex>`, with or without a cosign suffix):
/// an untagged target's "every tag" leaves them to the referrers.
pub fn is_referrers_tag(tag: &str) -> bool {
    cosign_subject(tag).is_some() || schema_subject(tag).is_some()
}

/// Whether a layout entry is a referrer rather than an image of its own: it carries a
/// referrers tag, a cosign kind other than the image's, or a `subject`.
pub fn is_referrer_entry(graph: &Graph, entry: &Descriptor) -> bool {
    if entry.ref_name().is_some_and(|n| is_referrers_tag(tag_part(n)))
        || cosign_kind(entry).is_some()
    {
        return true;
    }
    match graph.node(entry) {
        Ok(Some(node)) => node.subject().is_some(),
        _ => false,
    }
}

/// The tag of a ref name (`docker.io/library/app:v1` → `v1`; a bare tag as it is).
fn tag_part(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() => tag,
        _ => name,
    }
}

fn cosign_kind(entry: &Descriptor) -> Option<&'static str> {
    let kind = entry.annotations.get(COSIGN_KIND)?;
    COSIGN_KINDS.iter().find(|(k, _)| k == kind).map(|(_, suffix)| *suffix)
}

/// How a referrers index lists `desc`: `artifactType` (else, for a manifest, its config's
/// media type) and the manifest's own annotations, as the distribution spec says.
pub fn listing(desc: &Descriptor, node: &Node) -> Descriptor {
    let (artifact_type, annotations) = match node {
        Node::Manifest { manifest, .. } => (
            manifest.artifact_type.clone().or_else(|| Some(manifest.config.media_type.clone())),
            manifest.annotations.clone(),
        ),
        Node::Index { index, .. } => (index.artifact_type.clone(), index.annotations.clone()),
    };
    Descriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        annotations,
        platform: None,
        urls: vec![],
        artifact_type,
    }
}

/// Every referrer candidate of the source: manifests and indexes with a `subject` anywhere
/// below an entry, entries under cosign's tags, and a `cosign save` layout's signatures and
/// attestations (of its one image entry). Entries that cannot be read are skipped here (a
/// push of another entry must not fail for them).
pub fn candidates(graph: &Graph) -> Vec<Referrer> {
    let mut out: Vec<Referrer> = Vec::new();
    let cosign_image: Vec<&Descriptor> = graph
        .entries()
        .iter()
        .filter(|e| {
            e.annotations.get(COSIGN_KIND).is_some_and(|k| COSIGN_IMAGE_KINDS.contains(&k.as_str()))
        })
        .collect();
    for entry in graph.entries() {
        let closure = match graph.closure(std::slice::from_ref(entry)) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(entry = %entry.digest, error = %e, "entry skipped while looking for referrers");
                continue;
            }
        };
        for reached in &closure.nodes {
            if let Some(subject) = reached.node.subject() {
                add(
                    &mut out,
                    Referrer {
                        desc: plain(&reached.desc),
                        listing: listing(&reached.desc, &reached.node),
                        subject: subject.digest.clone(),
                        has_subject: true,
                        cosign_tag: None,
                        generation: 0,
                    },
                );
            }
        }
        if let Some(r) = cosign_referrer(entry, &closure, &cosign_image) {
            add(&mut out, r);
        }
    }
    out
}

/// An entry that cosign's conventions tie to an image: its tag `sha256-<hex>.sig` (`.att`,
/// `.sbom`), or a `cosign save` kind beside the layout's one image entry.
fn cosign_referrer(
    entry: &Descriptor,
    closure: &super::graph::Closure,
    cosign_image: &[&Descriptor],
) -> Option<Referrer> {
    let tag = entry.ref_name().map(tag_part).filter(|t| cosign_subject(t).is_some());
    let by_tag = tag.map(|t| (t.to_string(), cosign_subject(t).expect("checked")));
    let by_kind = match (cosign_kind(entry), cosign_image) {
        (Some(suffix), [image]) => {
            Some((format!("{}.{suffix}", schema_tag(&image.digest)), image.digest.clone()))
        }
        _ => None,
    };
    let (tag, subject) = by_tag.or(by_kind)?;
    let root = closure.nodes.iter().find(|r| r.desc.digest == entry.digest)?;
    Some(Referrer {
        desc: plain(entry),
        listing: listing(entry, &root.node),
        subject,
        has_subject: false,
        cosign_tag: Some(tag),
        generation: 0,
    })
}

/// `desc` without what `index.json` adds to it (its name, a platform).
fn plain(desc: &Descriptor) -> Descriptor {
    Descriptor { annotations: Default::default(), platform: None, ..desc.clone() }
}

/// Adds a candidate, or merges what a second way of finding the same one adds (a cosign
/// tag on a manifest that also has a `subject`).
fn add(out: &mut Vec<Referrer>, r: Referrer) {
    match out.iter_mut().find(|o| o.desc.digest == r.desc.digest) {
        Some(o) => {
            if o.cosign_tag.is_none() {
                o.cosign_tag = r.cosign_tag;
            }
            if r.has_subject && !o.has_subject {
                o.has_subject = true;
                o.subject = r.subject;
            }
        }
        None => out.push(r),
    }
}

/// The referrers of `pushed` (every manifest and index a repository received) among
/// `candidates`, generation by generation (a signature of an SBOM comes one generation after
/// the SBOM), with the manifests below each referrer counted as pushed too. Left out: those
/// whose content is not all in the source, and the referrers of `related` content (or of a
/// referrer left out) that is not pushed.
pub fn find(
    graph: &Graph,
    candidates: &[Referrer],
    pushed: &HashSet<Digest>,
    related: &HashSet<Digest>,
) -> Result<Found, Error> {
    let mut by_subject: HashMap<&Digest, Vec<&Referrer>> = HashMap::new();
    for r in candidates {
        by_subject.entry(&r.subject).or_default().push(r);
    }
    let mut found = Found::default();
    let mut reached: HashSet<Digest> = pushed.clone();
    let mut taken: HashSet<Digest> = HashSet::new();
    let mut incomplete: Vec<Digest> = Vec::new();
    let mut level: Vec<Digest> = sorted(pushed.iter().cloned());
    let mut generation = 0;
    while !level.is_empty() {
        generation += 1;
        let mut next = Vec::new();
        for d in &level {
            for r in by_subject.get(d).into_iter().flatten() {
                if !taken.insert(r.desc.digest.clone()) {
                    continue;
                }
                let closure = graph.closure(std::slice::from_ref(&r.desc))?;
                if !closure.absent.is_empty() || !all_held(graph, &closure.blobs)? {
                    found.left_out.push(LeftOut::incomplete(r));
                    incomplete.push(r.desc.digest.clone());
                    continue;
                }
                found.referrers.push(Referrer { generation, ..(*r).clone() });
                next.extend(closure.nodes.into_iter().map(|n| n.desc.digest));
            }
        }
        level = sorted(next.into_iter().filter(|d| reached.insert(d.clone())));
    }
    // Left out as well: referrers of related content the push did not take, and theirs.
    let mut missed: Vec<Digest> =
        related.iter().filter(|d| !reached.contains(*d)).cloned().collect();
    missed.sort();
    missed.extend(incomplete);
    let mut seen: HashSet<Digest> = HashSet::new();
    while let Some(d) = missed.pop() {
        for r in by_subject.get(&d).into_iter().flatten() {
            if !taken.contains(&r.desc.digest) && seen.insert(r.desc.digest.clone()) {
                found.left_out.push(LeftOut {
                    referrer: r.desc.digest.clone(),
                    subject: d.clone(),
                    why: Why::NotPushed,
                });
                missed.push(r.desc.digest.clone());
            }
        }
    }
    Ok(found)
}

fn sorted(digests: impl Iterator<Item = Digest>) -> Vec<Digest> {
    let mut v: Vec<Digest> = digests.collect();
    v.sort();
    v
}

/// Whether the source holds every one of `blobs`.
fn all_held(graph: &Graph, blobs: &[Descriptor]) -> Result<bool, Error> {
    for b in blobs {
        if !graph.has_blob(&b.digest)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The referrers index of a subject after adding `new` to `existing` (what the registry
/// holds under the schema tag, if any, with its media type): everything listed stays as it is
/// (fields this code does not know included), nothing is listed twice, new ones are appended
/// in order. `None` when nothing changes (no write needed). Anything there that is not an OCI
/// image index is refused, never overwritten.
pub fn merged_index(
    existing: Option<(&[u8], &str)>,
    new: &[Descriptor],
) -> Result<Option<Vec<u8>>, String> {
    let mut index = match existing {
        Some((bytes, media_type)) => existing_index(bytes, media_type)?,
        None => {
            serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": []})
        }
    };
    let manifests = index["manifests"].as_array_mut().expect("checked");
    let before = manifests.len();
    for d in new {
        let digest = d.digest.to_string();
        let listed = manifests.iter().any(|m| m["digest"].as_str() == Some(digest.as_str()));
        if !listed {
            manifests.push(serde_json::to_value(d).expect("a descriptor serializes"));
        }
    }
    if existing.is_some() && manifests.len() == before {
        return Ok(None);
    }
    Ok(Some(serde_json::to_vec(&index).expect("an index serializes")))
}

/// The index under a schema tag, when it is one: an OCI image index (by the registry's
/// media type or its own `mediaType`), schema version 2, with a list of manifests.
fn existing_index(bytes: &[u8], media_type: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not JSON: {e}"))?;
    let own_type = value.get("mediaType").and_then(|t| t.as_str());
    let is_index = own_type.map_or(media_type.starts_with(oci::OCI_INDEX), |t| t == oci::OCI_INDEX)
        && value.get("schemaVersion") == Some(&serde_json::json!(2))
        && value.get("manifests").is_some_and(|m| m.is_array());
    if !is_index {
        return Err(format!(
            "it is a {}, not an OCI image index with a list of manifests",
            own_type.unwrap_or(media_type)
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
