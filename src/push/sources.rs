//! Mount candidates: where else on the target registry a blob may already be.
//!
//! Two inputs, as containerd has them: repositories the user names (`--mount-from`), and a
//! sources file — a JSON map from blob digest to `registry/repository` names, the file form
//! of containerd's `distribution.source` labels — that a successful push extends with its
//! target, so the next push of the same blobs to another repository mounts them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::Error;
use crate::digest::Digest;
use crate::reference::{Target, looks_like_host};

/// The sources file's content: digest → `registry/repository` names.
pub type SourceMap = BTreeMap<Digest, BTreeSet<String>>;

/// Largest sources file read (the file grows by one name per blob and repository).
const MAX_SOURCES_FILE: u64 = 64 * 1024 * 1024;

/// Reads a sources file; a missing file is an empty map.
pub fn load(path: &Path) -> Result<SourceMap, Error> {
    let err = |reason: String| Error::Sources { path: path.to_path_buf(), reason };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SourceMap::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX_SOURCES_FILE {
        return Err(err(format!("larger than {MAX_SOURCES_FILE} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(SourceMap::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        err(format!(
            "expected a JSON object mapping blob digests to lists of registry/repository names: {e}"
        ))
    })
}

/// Adds each repository (`registry/repository`) for every digest it was given and writes
/// the file once, atomically (a temporary file beside it, then rename).
pub fn record(path: &Path, held: &[(String, Vec<Digest>)]) -> Result<(), Error> {
    let mut map = load(path)?;
    for (repository, digests) in held {
        for d in digests {
            map.entry(d.clone()).or_default().insert(repository.clone());
        }
    }
    let io = |source: std::io::Error| Error::Io { path: path.to_path_buf(), source };
    let text = serde_json::to_vec_pretty(&map).expect("a map of strings serializes");
    crate::atomic_file::write_json_file(path, &text).map_err(io)
}

fn same_registry(a: &str, b: &str) -> bool {
    let norm = |r: &str| match r {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    };
    norm(a) == norm(b)
}

/// Mount candidates for one repository pushed to.
#[derive(Debug, Clone)]
pub struct MountCandidates {
    registry: String,
    target_repository: String,
    /// `--mount-from` repositories on the target registry, in the order given, the target
    /// left out.
    named: Vec<String>,
    /// All of them (another repository of a mirror may be among them).
    named_all: Arc<[String]>,
    sources: Arc<SourceMap>,
}

impl MountCandidates {
    /// `mount_from` entries may be `repository` or `registry/repository`; entries naming
    /// another registry are dropped with a warning (mounts only work within one registry).
    pub fn new(target: &Target, mount_from: &[String], sources: SourceMap) -> MountCandidates {
        MountCandidates::for_registry(&target.registry, mount_from, sources)
            .for_repository(&target.repository)
    }

    /// Candidates on `registry` for no repository yet (see `for_repository`).
    pub fn for_registry(registry: &str, mount_from: &[String], sources: SourceMap) -> Self {
        let mut named: Vec<String> = Vec::new();
        for m in mount_from {
            let m = m.trim().trim_matches('/');
            let repo = match m.split_once('/') {
                Some((first, rest)) if looks_like_host(first) => {
                    if !same_registry(first, registry) {
                        tracing::warn!(
                            candidate = m,
                            registry,
                            "--mount-from names another registry; ignored"
                        );
                        continue;
                    }
                    rest.to_string()
                }
                _ => m.to_string(),
            };
            if !repo.is_empty() && !named.contains(&repo) {
                named.push(repo);
            }
        }
        MountCandidates {
            registry: registry.to_string(),
            target_repository: String::new(),
            named: named.clone(),
            named_all: named.into(),
            sources: Arc::new(sources),
        }
    }

    /// The same candidates for a push to `repository` (of the same registry), which is never
    /// its own candidate. Shares the sources map.
    pub fn for_repository(&self, repository: &str) -> MountCandidates {
        MountCandidates {
            registry: self.registry.clone(),
            target_repository: repository.to_string(),
            named: self.named_all.iter().filter(|r| *r != repository).cloned().collect(),
            named_all: self.named_all.clone(),
            sources: self.sources.clone(),
        }
    }

    /// Repositories named with `--mount-from`.
    pub fn named(&self) -> &[String] {
        &self.named
    }

    /// Repositories of the target registry the sources file says hold `digest`.
    pub fn recorded(&self, digest: &Digest) -> Vec<String> {
        let mut out = Vec::new();
        for name in self.sources.get(digest).into_iter().flatten() {
            if let Some((registry, repo)) = name.split_once('/')
                && same_registry(registry, &self.registry)
                && repo != self.target_repository
                && !out.iter().any(|r| r == repo)
            {
                out.push(repo.to_string());
            }
        }
        out
    }

    /// Every candidate for `digest`, best first: recorded sources and named repositories,
    /// ordered by the length of the path prefix they share with the target (docker's rule),
    /// never the target itself.
    pub fn for_blob(&self, digest: &Digest) -> Vec<String> {
        let mut all = self.recorded(digest);
        for n in &self.named {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        let target: Vec<&str> = self.target_repository.split('/').collect();
        let shared =
            |repo: &String| repo.split('/').zip(target.iter()).take_while(|(a, b)| a == *b).count();
        // Stable sort keeps recorded-before-named order among equal prefixes.
        all.sort_by_key(|r| std::cmp::Reverse(shared(r)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    #[test]
    fn orders_by_shared_prefix_and_skips_target() {
        let target = Target::parse("reg.example.com:5000/team/app/web:v1").unwrap();
        let mut sources = SourceMap::new();
        sources.insert(
            d(1),
            [
                "reg.example.com:5000/other/base",
                "reg.example.com:5000/team/app/api",
                "reg.example.com:5000/team/app/web",
                "elsewhere.io/team/app/x",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        );
        let c = MountCandidates::new(
            &target,
            &[
                "team/lib".into(),
                "reg.example.com:5000/zzz".into(),
                "ghcr.io/x/y".into(),
                "team/app/web".into(),
            ],
            sources,
        );
        assert_eq!(c.named(), ["team/lib", "zzz"]);
        assert_eq!(c.for_blob(&d(1)), ["team/app/api", "team/lib", "other/base", "zzz"]);
        assert_eq!(c.for_blob(&d(2)), ["team/lib", "zzz"]);
        // Another repository of the same push (a mirror) has the others as candidates.
        let lib = c.for_repository("team/lib");
        assert_eq!(lib.named(), ["zzz", "team/app/web"]);
        assert_eq!(lib.recorded(&d(1)), ["other/base", "team/app/api", "team/app/web"]);
    }

    #[test]
    fn sources_file_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sources.json");
        assert!(load(&path).unwrap().is_empty());
        record(&path, &[("r:5000/a".into(), vec![d(1), d(2)])]).unwrap();
        record(&path, &[("r:5000/b".into(), vec![d(1)]), ("r:5000/c".into(), vec![d(1)])]).unwrap();
        let map = load(&path).unwrap();
        assert_eq!(map[&d(1)].len(), 3);
        assert_eq!(map[&d(2)].iter().collect::<Vec<_>>(), ["r:5000/a"]);
        std::fs::write(&path, b"[1,2]").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("sources.json") && e.contains("JSON object"), "{e}");
        std::fs::write(&path, br#"{"sha256:abc": ["x/y"]}"#).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("64 hex"));
    }
}
