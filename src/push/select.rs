//! Which entries of the source a push takes, and under which tags: the target's tag, `--ref`
//! (a full name, a tag or a digest), or every tag. A tag must stand for one image. A mirror
//! takes every entry, each to its own repository (`bundle`). Pure over the image graph's
//! entries.

use std::path::Path;

use super::Error;
use super::graph::Graph;
use super::referrers;
use crate::digest::Digest;
use crate::oci::{CONTAINERD_NAME_ANNOTATION, Descriptor};
use crate::reference::{PushTarget, Target, is_valid_tag};

/// One repository a push goes to and the entries that go there, each under its tag (`None`:
/// by digest only).
#[derive(Debug, Clone)]
pub struct Destined {
    pub target: Target,
    pub roots: Vec<(Option<String>, Descriptor)>,
}

/// The repositories a push goes to, and what goes into each: one for a target repository,
/// one per named repository of the layout for a mirror.
pub fn select(
    graph: &Graph,
    target: &PushTarget,
    reference: Option<&str>,
) -> Result<Vec<Destined>, Error> {
    match target {
        PushTarget::Repository(t) => {
            Ok(vec![Destined { target: t.clone(), roots: select_roots(graph, t, reference)? }])
        }
        PushTarget::Mirror(root) => super::bundle::select(graph, root),
    }
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

fn names(graph: &Graph) -> Vec<String> {
    graph.entries().iter().filter_map(|d| d.ref_name().map(str::to_string)).collect()
}

/// Finds `reference` (a full name, a tag or a digest) in the layout: among `index.json`'s entries
/// first, then (for a digest) inside nested indexes.
fn find_ref(graph: &Graph, reference: &str) -> Result<Descriptor, Error> {
    if reference.contains(':')
        && !reference.contains('/')
        && let Ok(digest) = reference.parse::<Digest>()
    {
        return graph.find(&digest)?.ok_or_else(|| Error::RefNotFound {
            reference: reference.to_string(),
            layout: graph.location().to_path_buf(),
            available: names(graph),
        });
    }
    // A full name (`docker.io/library/app:v1`, as `org.opencontainers.image.ref.name` or
    // containerd's `io.containerd.image.name` holds it) chooses exactly; a tag must name one
    // image, whether entries carry it as their whole name or as the tag of a full one.
    let carrying: Vec<&Descriptor> = if is_valid_tag(reference) {
        entries_tagged(graph, reference)
    } else {
        graph
            .entries()
            .iter()
            .filter(|d| {
                d.ref_name() == Some(reference)
                    || d.annotations.get(CONTAINERD_NAME_ANNOTATION).map(String::as_str)
                        == Some(reference)
            })
            .collect()
    };
    match one_image(graph, reference, &carrying)? {
        Some(d) => Ok(d.clone()),
        None => Err(Error::RefNotFound {
            reference: reference.to_string(),
            layout: graph.location().to_path_buf(),
            available: names(graph),
        }),
    }
}

/// The entries whose name is `tag` or ends in `:tag`.
fn entries_tagged<'a>(graph: &'a Graph, tag: &str) -> Vec<&'a Descriptor> {
    graph
        .entries()
        .iter()
        .filter(|d| {
            d.ref_name().and_then(|n| tag_of(n, graph.location()).ok()).is_some_and(|t| t == tag)
        })
        .collect()
}

/// The one image `entries` name (entries may repeat it), `None` for none; several different
/// images are refused, naming every entry: which one the user meant is theirs to say.
fn one_image<'a>(
    graph: &Graph,
    tag: &str,
    entries: &[&'a Descriptor],
) -> Result<Option<&'a Descriptor>, Error> {
    let Some(first) = entries.first() else { return Ok(None) };
    if entries.iter().all(|d| d.digest == first.digest) {
        return Ok(Some(first));
    }
    Err(Error::AmbiguousTag {
        tag: tag.to_string(),
        layout: graph.location().to_path_buf(),
        entries: entries
            .iter()
            .map(|d| format!("{} ({})", d.ref_name().unwrap_or_default(), d.digest))
            .collect(),
    })
}

/// The entries that are images of their own, not referrers of others (signatures,
/// attestations, SBOMs: pushed with what they refer to).
fn images(graph: &Graph) -> Vec<&Descriptor> {
    graph.entries().iter().filter(|e| !referrers::is_referrer_entry(graph, e)).collect()
}

/// Chooses the layout entries to push and their tags (before platform selection).
pub fn select_roots(
    graph: &Graph,
    target: &Target,
    reference: Option<&str>,
) -> Result<Vec<(Option<String>, Descriptor)>, Error> {
    if let Some(digest) = &target.digest {
        let desc = match reference {
            Some(r) => {
                let d = find_ref(graph, r)?;
                if &d.digest != digest {
                    return Err(Error::RefNotFound {
                        reference: format!("{r} (as {digest})"),
                        layout: graph.location().to_path_buf(),
                        available: vec![format!("{r} is {}", d.digest)],
                    });
                }
                d
            }
            None => graph.find(digest)?.ok_or_else(|| Error::RefNotFound {
                reference: digest.to_string(),
                layout: graph.location().to_path_buf(),
                available: names(graph),
            })?,
        };
        return Ok(vec![(None, desc)]);
    }
    if let Some(tag) = &target.tag {
        let desc = match reference {
            Some(r) => find_ref(graph, r)?,
            None => match find_ref(graph, tag) {
                Ok(d) => d,
                Err(e @ Error::AmbiguousTag { .. }) => return Err(e),
                Err(_) if graph.entries().len() == 1 => graph.entries()[0].clone(),
                Err(_) if images(graph).len() == 1 => images(graph)[0].clone(),
                Err(_) => {
                    return Err(Error::AmbiguousSource {
                        layout: graph.location().to_path_buf(),
                        tag: tag.clone(),
                        count: graph.entries().len(),
                        tags: names(graph),
                    });
                }
            },
        };
        return Ok(vec![(Some(tag.clone()), desc)]);
    }
    if let Some(r) = reference {
        let desc = find_ref(graph, r)?;
        let tag =
            if r.parse::<Digest>().is_ok() { None } else { Some(tag_of(r, graph.location())?) };
        return Ok(vec![(tag, desc)]);
    }
    // Untagged target: every tag of the layout ("all tags"), each naming one image.
    let mut roots: Vec<(Option<String>, Descriptor)> = Vec::new();
    for d in graph.entries() {
        if let Some(name) = d.ref_name() {
            let tag = tag_of(name, graph.location())?;
            // Referrers go with what they refer to, after the tags, not as tags of their own.
            if referrers::is_referrers_tag(&tag) || referrers::is_referrer_entry(graph, d) {
                continue;
            }
            if !roots.iter().any(|(t, _)| t.as_deref() == Some(&tag)) {
                one_image(graph, &tag, &entries_tagged(graph, &tag))?;
                roots.push((Some(tag), d.clone()));
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::NoTags { layout: graph.location().to_path_buf() });
    }
    Ok(roots)
}
