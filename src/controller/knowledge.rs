//! Mount knowledge across pushes: which repositories of which registry hold which blobs,
//! taken from the statuses of finished pushes in the namespace (the cluster's version of
//! containerd's distribution-source labels). Handed to the worker as read-only sources.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{ImagePush, Phase};
use crate::reference::{PushTarget, Target};

/// Largest sources document handed to a worker (it travels in an environment variable).
pub const MAX_SOURCES_BYTES: usize = 96 * 1024;

/// The JSON sources map for a push to `target` from `namespace`: blobs that other finished
/// pushes in the namespace put into other repositories of the same registry (a push to one
/// repository: `blobDigests` in its target; a mirror: `repositoryBlobs`, each in the
/// repository it names). For a mirror target, every repository of the registry counts (the
/// push leaves out each repository's own).
pub fn sources_for<'a>(
    target: &PushTarget,
    namespace: &str,
    pushes: impl IntoIterator<Item = &'a ImagePush>,
) -> String {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |repository: &str, digests: &[String]| {
        let Ok(other) = Target::parse(repository) else { return };
        if other.registry != target.registry()
            || Some(other.repository.as_str()) == target.repository()
        {
            return;
        }
        for d in digests {
            map.entry(d.clone()).or_default().insert(other.repository_name());
        }
    };
    for ip in pushes {
        if ip.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let Some(status) = &ip.status else { continue };
        if status.phase != Some(Phase::Succeeded) {
            continue;
        }
        if ip.spec.mirror {
            for held in &status.repository_blobs {
                add(&held.repository, &held.digests);
            }
        } else if !status.blob_digests.is_empty() {
            add(&ip.spec.target, &status.blob_digests);
        }
    }
    let mut text = serde_json::to_string(&map).expect("strings serialize");
    while text.len() > MAX_SOURCES_BYTES && !map.is_empty() {
        // Keep it bounded: drop the largest entries first (most often shared base layers are
        // also the best candidates, but a bounded hint beats an unbounded Pod spec).
        let drop = map.len() / 4 + 1;
        let keys: Vec<String> = map.keys().rev().take(drop).cloned().collect();
        for k in keys {
            map.remove(&k);
        }
        text = serde_json::to_string(&map).expect("strings serialize");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ImagePushSpec, ImagePushStatus, RepositoryBlobs};

    fn pushed(ns: &str, target: &str, phase: Phase, blobs: &[&str]) -> ImagePush {
        let mut ip = ImagePush::new("x", ImagePushSpec::from_claim("c", None, target));
        ip.metadata.namespace = Some(ns.into());
        ip.status = Some(ImagePushStatus {
            phase: Some(phase),
            blob_digests: blobs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        ip
    }

    #[test]
    fn only_finished_pushes_to_other_repositories_of_the_same_registry_in_the_namespace() {
        let target = PushTarget::parse("reg:5000/prod/app:v1", false).unwrap();
        let pushes = [
            pushed("ns", "reg:5000/dev/app:v1", Phase::Succeeded, &["sha256:a", "sha256:b"]),
            pushed("ns", "reg:5000/base/app:v1", Phase::Succeeded, &["sha256:a"]),
            pushed("ns", "reg:5000/prod/app:v0", Phase::Succeeded, &["sha256:c"]),
            pushed("ns", "other:5000/dev/app:v1", Phase::Succeeded, &["sha256:d"]),
            pushed("ns", "reg:5000/failed/app:v1", Phase::Failed, &["sha256:e"]),
            pushed("elsewhere", "reg:5000/dev/app:v1", Phase::Succeeded, &["sha256:f"]),
        ];
        let json: serde_json::Value =
            serde_json::from_str(&sources_for(&target, "ns", &pushes)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sha256:a": ["reg:5000/base/app", "reg:5000/dev/app"],
                "sha256:b": ["reg:5000/dev/app"],
            })
        );
    }

    /// A mirror's knowledge is per repository; a mirror target learns from every repository
    /// of its registry.
    #[test]
    fn mirrors_teach_and_learn_per_repository() {
        let mut mirror = pushed("ns", "reg:5000/m", Phase::Succeeded, &[]);
        mirror.spec.mirror = true;
        mirror.status.as_mut().unwrap().repository_blobs = vec![
            RepositoryBlobs {
                repository: "reg:5000/m/library/nginx".into(),
                digests: vec!["sha256:a".into(), "sha256:b".into()],
            },
            RepositoryBlobs {
                repository: "reg:5000/prod/app".into(),
                digests: vec!["sha256:c".into()],
            },
            RepositoryBlobs { repository: "other:5000/x".into(), digests: vec!["sha256:d".into()] },
        ];
        let single = pushed("ns", "reg:5000/dev/app:v1", Phase::Succeeded, &["sha256:e"]);
        let pushes = [mirror, single];
        let to_one = PushTarget::parse("reg:5000/prod/app:v1", false).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&sources_for(&to_one, "ns", &pushes)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sha256:a": ["reg:5000/m/library/nginx"],
                "sha256:b": ["reg:5000/m/library/nginx"],
                "sha256:e": ["reg:5000/dev/app"],
            })
        );
        let to_mirror = PushTarget::parse("reg:5000/m2", true).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&sources_for(&to_mirror, "ns", &pushes)).unwrap();
        assert_eq!(json["sha256:c"], serde_json::json!(["reg:5000/prod/app"]));
        assert_eq!(json["sha256:e"], serde_json::json!(["reg:5000/dev/app"]));
        assert!(json.get("sha256:d").is_none());
    }
}
