//! Mount knowledge across pushes: which repositories of which registry hold which blobs,
//! taken from the statuses of finished pushes in the namespace (the cluster's version of
//! containerd's distribution-source labels). Handed to the worker as read-only sources.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{ImagePush, Phase};
use crate::reference::Target;

/// Largest sources document handed to a worker (it travels in an environment variable).
pub const MAX_SOURCES_BYTES: usize = 96 * 1024;

/// The JSON sources map for a push to `target` from `namespace`: blobs that other finished
/// pushes in the namespace put into other repositories of the same registry.
pub fn sources_for<'a>(
    target: &Target,
    namespace: &str,
    pushes: impl IntoIterator<Item = &'a ImagePush>,
) -> String {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ip in pushes {
        if ip.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let Some(status) = &ip.status else { continue };
        if status.phase != Some(Phase::Succeeded) || status.blob_digests.is_empty() {
            continue;
        }
        let Ok(other) = Target::parse(&ip.spec.target) else { continue };
        if other.registry != target.registry || other.repository == target.repository {
            continue;
        }
        for d in &status.blob_digests {
            map.entry(d.clone()).or_default().insert(other.repository_name());
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
    use crate::crd::{ImagePushSpec, ImagePushStatus};

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
        let target = Target::parse("reg:5000/prod/app:v1").unwrap();
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
}
