//! Bundles (`--mirror`): a layout that holds several repositories, each named image pushed
//! to `REGISTRY[/PREFIX]/<its repository path>:<tag>`. This module owns the names: which
//! entries a mirror takes and which repository and tag each goes to. Pure over the image
//! graph's entries; pushing them is the same push as for one repository, with one
//! destination per repository over the one graph.

use std::path::Path;

use super::Error;
use super::graph::Graph;
use super::select::Destined;
use crate::digest::Digest;
use crate::oci::{CONTAINERD_NAME_ANNOTATION, Descriptor, REF_NAME_ANNOTATION};
use crate::reference::{MirrorRoot, Target, looks_like_host};

/// The full name an entry carries, as far as a mirror needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// The repository path in its registry, docker.io's normalized (`library/nginx`).
    pub path: String,
    pub tag: Option<String>,
    /// A digest-pinned name (`...@sha256:…`): it must be the entry's own digest.
    pub digest: Option<Digest>,
}

/// The full name of a layout entry: `io.containerd.image.name` first, else
/// `org.opencontainers.image.ref.name` when it is a full name. Why not, when it has none.
pub fn image_name(desc: &Descriptor) -> Result<ImageName, String> {
    let (key, name) = match (
        desc.annotations.get(CONTAINERD_NAME_ANNOTATION),
        desc.annotations.get(REF_NAME_ANNOTATION),
    ) {
        (Some(n), _) => (CONTAINERD_NAME_ANNOTATION, n),
        (None, Some(n)) => (REF_NAME_ANNOTATION, n),
        (None, None) => return Err("no name".into()),
    };
    full_name(name).map_err(|why| format!("{key} {name:?} {why}"))
}

/// `registry/path[:tag][@digest]`, with the registry written out (`nginx:1.27` and
/// `library/nginx:1.27` are not full names: which registry they came from is a guess).
pub fn full_name(name: &str) -> Result<ImageName, String> {
    let (rest, digest) = match name.split_once('@') {
        Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|e| format!("has {}", e.reason))?)),
        None => (name, None),
    };
    match rest.split_once('/') {
        Some((first, _)) if looks_like_host(first) => {}
        _ => {
            return Err(
                "is not a full name (registry/repository:tag, such as docker.io/library/nginx:1.27)"
                    .into(),
            );
        }
    }
    let target = Target::parse(rest).map_err(|e| format!("is not a valid name: {}", e.reason))?;
    if target.tag.is_none() && digest.is_none() {
        return Err("has neither a tag nor a digest".into());
    }
    let docker_hub = matches!(
        target.registry.as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    );
    let path = if docker_hub && !target.repository.contains('/') {
        format!("library/{}", target.repository)
    } else {
        target.repository
    };
    Ok(ImageName { path, tag: target.tag, digest })
}

/// How messages name an entry: its place in `index.json`, digest and names.
fn describe(i: usize, d: &Descriptor) -> String {
    let names: Vec<String> = [CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION]
        .iter()
        .filter_map(|k| d.annotations.get(*k).map(|v| format!("{k}={v:?}")))
        .collect();
    let names = if names.is_empty() { "no name".to_string() } else { names.join(", ") };
    format!("index.json entry {} ({}, {names})", i + 1, d.digest)
}

/// Every entry of the layout, each to its repository under `root` (the repositories in the
/// order `index.json` first names them, each one's entries in that order). Refused, naming every
/// entry at fault: entries without a full name, names whose digest is not the entry's, and a
/// repository:tag that two entries name for different images.
pub fn select(graph: &Graph, root: &MirrorRoot) -> Result<Vec<Destined>, Error> {
    // Referrers (signatures, attestations, SBOMs) go with what they refer to, unless the
    // layout names them as images of their own (a full name).
    let is_image =
        |e: &Descriptor| image_name(e).is_ok() || !super::referrers::is_referrer_entry(graph, e);
    select_entries(graph.entries(), &is_image, graph.location(), root)
}

fn select_entries(
    entries: &[Descriptor],
    is_image: &dyn Fn(&Descriptor) -> bool,
    layout: &Path,
    root: &MirrorRoot,
) -> Result<Vec<Destined>, Error> {
    let mut out: Vec<Destined> = Vec::new();
    let mut unnamed = Vec::new();
    // (repository:tag, entries naming it) of every tag named more than once.
    let mut named: Vec<(String, Vec<(usize, &Descriptor)>)> = Vec::new();
    for (i, d) in entries.iter().enumerate().filter(|(_, d)| is_image(d)) {
        let name = match image_name(d) {
            Ok(n) => n,
            Err(why) => {
                unnamed.push(format!("{}: {why}", describe(i, d)));
                continue;
            }
        };
        if let Some(pinned) = name.digest.as_ref().filter(|p| **p != d.digest) {
            unnamed.push(format!("{}: the name is pinned to {pinned}", describe(i, d)));
            continue;
        }
        let target = match root.repository(&name.path) {
            Ok(t) => t,
            Err(e) => {
                unnamed.push(format!("{}: {}", describe(i, d), e.reason));
                continue;
            }
        };
        let at = match out.iter().position(|r| r.target.repository == target.repository) {
            Some(at) => at,
            None => {
                out.push(Destined { target, roots: Vec::new() });
                out.len() - 1
            }
        };
        let repo = &mut out[at];
        // A tag goes in once (the same image named twice is pushed once; two images under
        // one name are refused below); a digest-only name once per digest.
        let taken =
            repo.roots.iter().any(|(t, r)| *t == name.tag && (t.is_some() || r.digest == d.digest));
        if !taken {
            repo.roots.push((name.tag.clone(), d.clone()));
        }
        if let Some(tag) = &name.tag {
            let key = format!("{}:{tag}", repo.target.repository_name());
            match named.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push((i, d)),
                None => named.push((key, vec![(i, d)])),
            }
        }
    }
    if !unnamed.is_empty() {
        return Err(Error::UnnamedEntries { layout: layout.to_path_buf(), entries: unnamed });
    }
    let conflicts: Vec<String> = named
        .iter()
        .filter(|(_, list)| list.iter().any(|(_, d)| d.digest != list[0].1.digest))
        .map(|(name, list)| {
            let entries: Vec<String> = list.iter().map(|(i, d)| describe(*i, d)).collect();
            format!("{name} is named by {}", entries.join(" and "))
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(Error::AmbiguousNames { layout: layout.to_path_buf(), conflicts });
    }
    if out.is_empty() {
        return Err(Error::NoImages { layout: layout.to_path_buf() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_repository_paths() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let ok: &[(&str, &str, Option<&str>, bool)] = &[
            ("docker.io/library/nginx:1.27", "library/nginx", Some("1.27"), false),
            ("docker.io/nginx:1.27", "library/nginx", Some("1.27"), false),
            ("index.docker.io/nginx:1.27", "library/nginx", Some("1.27"), false),
            ("ghcr.io/org/app:v1", "org/app", Some("v1"), false),
            ("registry.example.com:5000/a/b/c:latest", "a/b/c", Some("latest"), false),
            ("localhost/app:v1", "app", Some("v1"), false),
            ("localhost:5000/app:v1", "app", Some("v1"), false),
            (&format!("docker.io/library/nginx@{d}"), "library/nginx", None, true),
            (&format!("quay.io/org/app:v2@{d}"), "org/app", Some("v2"), true),
        ];
        for (name, path, tag, pinned) in ok {
            let n = full_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((n.path.as_str(), n.tag.as_deref()), (*path, *tag), "{name}");
            assert_eq!(n.digest.is_some(), *pinned, "{name}");
        }
        let refused: &[(&str, &str)] = &[
            ("nginx:1.27", "not a full name"),
            ("library/nginx:1.27", "not a full name"),
            ("v1", "not a full name"),
            ("docker.io/library/nginx", "neither a tag nor a digest"),
            ("ghcr.io/Org/app:v1", "lowercase"),
            ("ghcr.io/org/app:bad tag", "not a valid name"),
            ("ghcr.io/org/app@sha256:abc", "64 hex"),
        ];
        for (name, want) in refused {
            let e = full_name(name).unwrap_err();
            assert!(e.contains(want), "{name}: {e}");
        }
    }

    /// A repository's entries as (tag, digest).
    type Roots = Vec<(Option<String>, Digest)>;

    fn entry(n: u8, annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: crate::oci::OCI_MANIFEST.into(),
            digest: Digest::sha256(&[n]),
            size: 100,
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            platform: None,
            urls: vec![],
            artifact_type: None,
        }
    }

    fn select(entries: &[Descriptor], root: &str) -> Result<Vec<(String, Roots)>, Error> {
        let root = MirrorRoot::parse(root).unwrap();
        Ok(select_entries(entries, &|_| true, Path::new("/l"), &root)?
            .into_iter()
            .map(|d| {
                (
                    d.target.repository_name(),
                    d.roots.into_iter().map(|(t, r)| (t, r.digest)).collect(),
                )
            })
            .collect())
    }

    #[test]
    fn entries_go_to_their_repositories_under_the_prefix() {
        let ctr = CONTAINERD_NAME_ANNOTATION;
        let oci = REF_NAME_ANNOTATION;
        let entries = [
            // containerd's name wins over the short ref name it writes beside it.
            entry(1, &[(ctr, "docker.io/library/nginx:1.27"), (oci, "1.27")]),
            entry(2, &[(oci, "ghcr.io/org/app:v1")]),
            entry(3, &[(oci, "docker.io/library/nginx:latest")]),
            // The same image under the same name twice: pushed once.
            entry(2, &[(ctr, "ghcr.io/org/app:v1")]),
            entry(4, &[(ctr, &format!("ghcr.io/org/app@{}", Digest::sha256(&[4])))]),
        ];
        let tag = |t: &str| Some(t.to_string());
        assert_eq!(
            select(&entries, "reg:5000/mirror").unwrap(),
            [
                (
                    "reg:5000/mirror/library/nginx".to_string(),
                    vec![
                        (tag("1.27"), Digest::sha256(&[1])),
                        (tag("latest"), Digest::sha256(&[3]))
                    ]
                ),
                (
                    "reg:5000/mirror/org/app".to_string(),
                    vec![(tag("v1"), Digest::sha256(&[2])), (None, Digest::sha256(&[4]))]
                ),
            ]
        );
        let bare = select(&entries[1..2], "reg:5000").unwrap();
        assert_eq!(bare[0].0, "reg:5000/org/app");
    }

    #[test]
    fn unnamed_pinned_elsewhere_and_conflicting_entries_are_refused_by_name() {
        let oci = REF_NAME_ANNOTATION;
        let ctr = CONTAINERD_NAME_ANNOTATION;
        let e = select(
            &[
                entry(1, &[(oci, "docker.io/library/a:v1")]),
                entry(2, &[(oci, "v1")]),
                entry(3, &[]),
                entry(4, &[(ctr, &format!("docker.io/library/a@{}", Digest::sha256(&[9])))]),
            ],
            "reg:5000/m",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, Error::UnnamedEntries { ref entries, .. } if entries.len() == 3),
            "{text}"
        );
        for want in
            ["entry 2", "\"v1\" is not a full name", "entry 3", "no name", "entry 4", "pinned to"]
        {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(!text.contains("entry 1 "), "{text}");
        assert_eq!(e.class().exit_code(), 2);

        let e = select(
            &[
                entry(1, &[(oci, "docker.io/library/a:v1")]),
                entry(2, &[(oci, "docker.io/library/b:v1")]),
                entry(3, &[(ctr, "docker.io/a:v1")]),
            ],
            "reg:5000/m",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::AmbiguousNames { .. }), "{text}");
        assert!(
            text.contains("reg:5000/m/library/a:v1")
                && text.contains("entry 1")
                && text.contains("entry 3"),
            "{text}"
        );
        assert!(!text.contains("entry 2"), "{text}");
        assert_eq!((e.class().exit_code(), e.reason()), (2, "RefAmbiguous"));

        let e = select(&[], "reg:5000/m").unwrap_err();
        assert!(matches!(e, Error::NoImages { .. }), "{e}");
        // A prefix that makes a repository name too long names the entry too.
        let long = format!("docker.io/{}/x:v1", "a".repeat(252));
        let e = select(&[entry(1, &[(oci, &long)])], "reg:5000/m").unwrap_err().to_string();
        assert!(e.contains("entry 1") && e.contains("255"), "{e}");
    }
}
