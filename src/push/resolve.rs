//! What to push: which layout entries under which tags, and for an index, whether to push
//! it whole, one platform's manifest (`--platform`), or the host's manifest because the
//! index is only partly in the layout (docker's index fallback).

use std::collections::HashMap;
use std::path::Path;

use super::Error;
use super::report::{DescriptorSummary, IndexFallback};
use super::sources::MountCandidates;
use crate::digest::Digest;
use crate::layout::LayoutReader;
use crate::oci::{self, Descriptor, ImageIndex};
use crate::platform::{self, Platform};
use crate::reference::{Target, is_valid_tag};
use crate::registry::RegistryClient;

/// One image to push and the name it gets.
#[derive(Debug, Clone)]
pub struct Root {
    /// `None`: pushed by digest only.
    pub tag: Option<String>,
    /// The manifest or index that is pushed.
    pub desc: Descriptor,
    pub fallback: Option<IndexFallback>,
}

/// The tag a layout's `org.opencontainers.image.ref.name` stands for: the name itself, or
/// the tag part of a full reference (`registry/app:v1`, as containerd exports write it).
pub fn tag_of(name: &str, layout: &Path) -> Result<String, Error> {
    if is_valid_tag(name) {
        return Ok(name.to_string());
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    let last = last.split('@').next().unwrap_or(last);
    if let Some((_, tag)) = last.rsplit_once(':')
        && is_valid_tag(tag)
    {
        return Ok(tag.to_string());
    }
    Err(Error::InvalidTagName { name: name.to_string(), layout: layout.to_path_buf() })
}

fn names(index: &ImageIndex) -> Vec<String> {
    index.manifests.iter().filter_map(|d| d.ref_name().map(str::to_string)).collect()
}

/// Finds `reference` (a tag name or a digest) in the layout: among `index.json`'s entries
/// first, then (for a digest) inside nested indexes.
fn find_ref(
    layout: &LayoutReader,
    index: &ImageIndex,
    reference: &str,
) -> Result<Descriptor, Error> {
    if reference.contains(':')
        && !reference.contains('/')
        && let Ok(digest) = reference.parse::<Digest>()
    {
        return find_digest(layout, index, &digest)?.ok_or_else(|| Error::RefNotFound {
            reference: reference.to_string(),
            layout: layout.root().to_path_buf(),
            available: names(index),
        });
    }
    // A full name (`docker.io/library/app:v1`) chooses exactly; a tag must name one image,
    // whether entries carry it as their whole name or as the tag of a full one.
    let carrying: Vec<&Descriptor> = if is_valid_tag(reference) {
        entries_tagged(layout, index, reference)
    } else {
        index.manifests.iter().filter(|d| d.ref_name() == Some(reference)).collect()
    };
    match one_image(layout, reference, &carrying)? {
        Some(d) => Ok(d.clone()),
        None => Err(Error::RefNotFound {
            reference: reference.to_string(),
            layout: layout.root().to_path_buf(),
            available: names(index),
        }),
    }
}

/// The entries whose name is `tag` or ends in `:tag`.
fn entries_tagged<'a>(
    layout: &LayoutReader,
    index: &'a ImageIndex,
    tag: &str,
) -> Vec<&'a Descriptor> {
    index
        .manifests
        .iter()
        .filter(|d| {
            d.ref_name().and_then(|n| tag_of(n, layout.root()).ok()).is_some_and(|t| t == tag)
        })
        .collect()
}

/// The one image `entries` name (entries may repeat it), `None` for none; several different
/// images are refused, naming every entry: which one the user meant is theirs to say.
fn one_image<'a>(
    layout: &LayoutReader,
    tag: &str,
    entries: &[&'a Descriptor],
) -> Result<Option<&'a Descriptor>, Error> {
    let Some(first) = entries.first() else { return Ok(None) };
    if entries.iter().all(|d| d.digest == first.digest) {
        return Ok(Some(first));
    }
    Err(Error::AmbiguousTag {
        tag: tag.to_string(),
        layout: layout.root().to_path_buf(),
        entries: entries
            .iter()
            .map(|d| format!("{} ({})", d.ref_name().unwrap_or_default(), d.digest))
            .collect(),
    })
}

fn find_digest(
    layout: &LayoutReader,
    index: &ImageIndex,
    digest: &Digest,
) -> Result<Option<Descriptor>, Error> {
    let mut queue: Vec<Descriptor> = index.manifests.clone();
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = queue.pop() {
        if &d.digest == digest {
            return Ok(Some(d));
        }
        if oci::is_index(&d.media_type)
            && seen.insert(d.digest.clone())
            && layout.contains(&d.digest)?
        {
            queue.extend(layout.read_index(&d)?.manifests);
        }
    }
    Ok(None)
}

/// Chooses the layout entries to push and their tags (before platform selection).
pub fn select_roots(
    layout: &LayoutReader,
    index: &ImageIndex,
    target: &Target,
    reference: Option<&str>,
) -> Result<Vec<(Option<String>, Descriptor)>, Error> {
    if let Some(digest) = &target.digest {
        let desc = match reference {
            Some(r) => {
                let d = find_ref(layout, index, r)?;
                if &d.digest != digest {
                    return Err(Error::RefNotFound {
                        reference: format!("{r} (as {digest})"),
                        layout: layout.root().to_path_buf(),
                        available: vec![format!("{r} is {}", d.digest)],
                    });
                }
                d
            }
            None => find_digest(layout, index, digest)?.ok_or_else(|| Error::RefNotFound {
                reference: digest.to_string(),
                layout: layout.root().to_path_buf(),
                available: names(index),
            })?,
        };
        return Ok(vec![(None, desc)]);
    }
    if let Some(tag) = &target.tag {
        let desc = match reference {
            Some(r) => find_ref(layout, index, r)?,
            None => match find_ref(layout, index, tag) {
                Ok(d) => d,
                Err(e @ Error::AmbiguousTag { .. }) => return Err(e),
                Err(_) if index.manifests.len() == 1 => index.manifests[0].clone(),
                Err(_) => {
                    return Err(Error::AmbiguousSource {
                        layout: layout.root().to_path_buf(),
                        tag: tag.clone(),
                        count: index.manifests.len(),
                        tags: names(index),
                    });
                }
            },
        };
        return Ok(vec![(Some(tag.clone()), desc)]);
    }
    if let Some(r) = reference {
        let desc = find_ref(layout, index, r)?;
        let tag = if r.parse::<Digest>().is_ok() { None } else { Some(tag_of(r, layout.root())?) };
        return Ok(vec![(tag, desc)]);
    }
    // Untagged target: every tag of the layout ("all tags"), each naming one image.
    let mut roots: Vec<(Option<String>, Descriptor)> = Vec::new();
    for d in &index.manifests {
        if let Some(name) = d.ref_name() {
            let tag = tag_of(name, layout.root())?;
            if !roots.iter().any(|(t, _)| t.as_deref() == Some(&tag)) {
                one_image(layout, &tag, &entries_tagged(layout, index, &tag))?;
                roots.push((Some(tag), d.clone()));
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::NoTags { layout: layout.root().to_path_buf() });
    }
    Ok(roots)
}

/// Answers "can the push get this content?" for resolution: from the layout, or for a blob
/// from a mount candidate or the target itself. Answers are cached.
pub struct Availability<'a> {
    pub layout: &'a LayoutReader,
    pub client: &'a RegistryClient,
    pub candidates: &'a MountCandidates,
    pub target: &'a Target,
    blobs: HashMap<Digest, bool>,
}

impl<'a> Availability<'a> {
    pub fn new(
        layout: &'a LayoutReader,
        client: &'a RegistryClient,
        candidates: &'a MountCandidates,
        target: &'a Target,
    ) -> Self {
        Availability { layout, client, candidates, target, blobs: HashMap::new() }
    }

    /// A layer or config: in the layout, recorded in the sources file for this registry,
    /// already in the target repository, or in a `--mount-from` repository.
    pub async fn blob(&mut self, digest: &Digest) -> Result<bool, Error> {
        if let Some(v) = self.blobs.get(digest) {
            return Ok(*v);
        }
        let mut found =
            self.layout.contains(digest)? || !self.candidates.recorded(digest).is_empty();
        if !found {
            found = self.client.blob_exists(&self.target.repository, digest).await?;
        }
        if !found {
            for repo in self.candidates.named() {
                if self.client.blob_exists(repo, digest).await.unwrap_or(false) {
                    found = true;
                    break;
                }
            }
        }
        self.blobs.insert(digest.clone(), found);
        Ok(found)
    }

    /// An image manifest is available when its own bytes are in the layout (manifests are
    /// never mounted) and every blob it names is available.
    pub async fn image(&mut self, desc: &Descriptor) -> Result<bool, Error> {
        if !self.layout.contains(&desc.digest)? {
            return Ok(false);
        }
        let manifest = self.layout.read_manifest(desc)?;
        for b in manifest.blobs() {
            if !self.blob(&b.digest).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether everything under `desc` (manifest or index, recursively) is available.
    pub async fn complete(&mut self, desc: &Descriptor, depth: usize) -> Result<bool, Error> {
        if depth > 8 {
            return Err(Error::IndexCycle { digest: desc.digest.clone() });
        }
        if oci::is_manifest(&desc.media_type) {
            return self.image(desc).await;
        }
        if !oci::is_index(&desc.media_type) {
            return Err(Error::UnsupportedMediaType {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            });
        }
        if !self.layout.contains(&desc.digest)? {
            return Ok(false);
        }
        let index = self.layout.read_index(desc)?;
        for child in &index.manifests {
            if !Box::pin(self.complete(child, depth + 1)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The platform manifests of an index (nested indexes flattened), attestations excluded.
fn platform_manifests(
    layout: &LayoutReader,
    index_desc: &Descriptor,
    depth: usize,
) -> Result<Vec<Descriptor>, Error> {
    if depth > 8 {
        return Err(Error::IndexCycle { digest: index_desc.digest.clone() });
    }
    let mut out = Vec::new();
    if !layout.contains(&index_desc.digest)? {
        return Ok(out);
    }
    for child in layout.read_index(index_desc)?.manifests {
        if oci::is_index(&child.media_type) {
            out.extend(platform_manifests(layout, &child, depth + 1)?);
        } else if oci::is_manifest(&child.media_type)
            && !child.is_attestation()
            && child.platform.is_some()
        {
            out.push(child);
        }
    }
    Ok(out)
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

/// The platform an image's config declares.
fn config_platform(
    layout: &LayoutReader,
    manifest_desc: &Descriptor,
) -> Result<Option<Platform>, Error> {
    let manifest = layout.read_manifest(manifest_desc)?;
    if !layout.contains(&manifest.config.digest)? {
        return Ok(None);
    }
    let bytes = layout.read_blob(&manifest.config)?;
    #[derive(serde::Deserialize)]
    struct Config {
        architecture: Option<String>,
        os: Option<String>,
        variant: Option<String>,
    }
    let Ok(c) = serde_json::from_slice::<Config>(&bytes) else { return Ok(None) };
    match (c.os, c.architecture) {
        (Some(os), Some(architecture)) => Ok(Some(Platform {
            architecture,
            os,
            os_version: None,
            os_features: Vec::new(),
            variant: c.variant,
        })),
        _ => Ok(None),
    }
}

/// Applies `--platform` or the index fallback to one root.
pub async fn resolve_root(
    avail: &mut Availability<'_>,
    tag: Option<String>,
    desc: Descriptor,
    wanted: Option<&Platform>,
    host: &Platform,
    by_digest: bool,
) -> Result<Root, Error> {
    let layout = avail.layout;
    if !layout.contains(&desc.digest)? {
        return Err(Error::ContentMissing { digests: vec![desc.digest.clone()] });
    }
    if oci::is_manifest(&desc.media_type) {
        if let Some(w) = wanted
            && let Some(actual) = config_platform(layout, &desc)?
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
    if !oci::is_index(&desc.media_type) {
        return Err(Error::UnsupportedMediaType {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
        });
    }
    let candidates = platform_manifests(layout, &desc, 0)?;
    if let Some(w) = wanted {
        if by_digest {
            return Err(Error::PlatformWithDigestTarget { digest: desc.digest.clone() });
        }
        let matches: Vec<&Descriptor> = candidates
            .iter()
            .filter(|c| c.platform.as_ref().is_some_and(|p| w.matches_strict(p)))
            .collect();
        return match matches.as_slice() {
            [] => Err(Error::PlatformNotFound {
                wanted: w.to_string(),
                index: desc.digest.clone(),
                available: candidates.iter().map(platform_text).collect(),
            }),
            [one] => Ok(Root { tag, desc: (*one).clone(), fallback: None }),
            many => Err(Error::PlatformConflict {
                wanted: w.to_string(),
                index: desc.digest.clone(),
                matches: many.iter().map(|d| d.digest.clone()).collect(),
            }),
        };
    }
    if avail.complete(&desc, 0).await? {
        return Ok(Root { tag, desc, fallback: None });
    }
    // Partly present: push one platform's manifest instead (docker's index fallback).
    let mut present = Vec::new();
    for c in &candidates {
        if avail.image(c).await? {
            present.push(c.clone());
        }
    }
    let chosen = match present.len() {
        0 => {
            let mut missing = Vec::new();
            collect_missing(avail, &desc, &mut missing, 0).await?;
            return Err(Error::ContentMissing { digests: missing });
        }
        1 => present[0].clone(),
        _ => {
            let platforms: Vec<&Platform> =
                present.iter().filter_map(|d| d.platform.as_ref()).collect();
            match platform::best_host_match(host, platforms.iter().copied()) {
                Some(i) => present[i].clone(),
                None => {
                    return Err(Error::NoHostMatch {
                        index: desc.digest.clone(),
                        host: host.to_string(),
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

/// Every digest under `desc` that cannot be had, for the ContentMissing error.
async fn collect_missing(
    avail: &mut Availability<'_>,
    desc: &Descriptor,
    out: &mut Vec<Digest>,
    depth: usize,
) -> Result<(), Error> {
    if depth > 8 {
        return Err(Error::IndexCycle { digest: desc.digest.clone() });
    }
    if !avail.layout.contains(&desc.digest)? {
        if !out.contains(&desc.digest) {
            out.push(desc.digest.clone());
        }
        return Ok(());
    }
    if oci::is_index(&desc.media_type) {
        for child in avail.layout.read_index(desc)?.manifests {
            Box::pin(collect_missing(avail, &child, out, depth + 1)).await?;
        }
    } else if oci::is_manifest(&desc.media_type) {
        let manifest = avail.layout.read_manifest(desc)?;
        for b in manifest.blobs() {
            if !avail.blob(&b.digest).await? && !out.contains(&b.digest) {
                out.push(b.digest.clone());
            }
        }
    }
    Ok(())
}
