//! The `ImagePush` resource (`imagepush.dev/v1alpha1`). The CRD is generated from these
//! types (`imagepush crd`); doc comments become the field descriptions users read with
//! `kubectl explain`, and the checked-in `crds/imagepush.dev_imagepushes.yaml` must equal
//! what this file generates (a test compares them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pushes an OCI image layout from a PersistentVolumeClaim or a node's disk to a registry,
/// with `docker push` semantics, and records the digest and what happened to every blob.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "imagepush.dev",
    version = "v1alpha1",
    kind = "ImagePush",
    plural = "imagepushes",
    shortname = "ipush",
    namespaced,
    status = "ImagePushStatus",
    doc = "Pushes an OCI image layout from a PersistentVolumeClaim or a node's disk to a registry. A new value of the annotation imagepush.dev/requested-at pushes the current spec again; spec.suspend holds back new pushes.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.digest","priority":0}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.summary","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.mirror) || !self.mirror || !has(self.source.ref)",
        "message": "source.ref cannot be set with mirror: a mirror pushes every named image of the layout"
    },
    {
        "rule": "!has(self.mirror) || !self.mirror || !(self.target.contains('@') || self.target.matches('/[^/]*:[^/]*$'))",
        "message": "a mirror target is registry[:port][/prefix], without a tag or digest"
    }
]))]
pub struct ImagePushSpec {
    /// Where the OCI image layout is: exactly one of persistentVolumeClaim or hostPath.
    pub source: Source,
    /// Where to push: `registry[:port]/repository[:tag]` pushes one tag, a target without a tag
    /// pushes every tag of the layout, `...@sha256:<hex>` pushes that digest. With `mirror`:
    /// `registry[:port][/prefix]`, no tag or digest.
    #[schemars(length(min = 1, max = 512))]
    pub target: String,
    /// Push every image of the layout to its own repository under the target
    /// (`registry[:port][/prefix]`), named by its full name (`io.containerd.image.name`, or an
    /// `org.opencontainers.image.ref.name` such as `docker.io/library/nginx:1.27`, which goes
    /// to `<target>/library/nginx:1.27`). Each distinct blob is uploaded once and mounted into
    /// the other repositories. Not with `source.ref`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirror: bool,
    /// Push only this platform's manifest of an index (`os/arch[/variant]`, strict match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9._-]+/[a-z0-9._-]+(/[a-z0-9._-]+)?$"))]
    pub platform: Option<String>,
    /// A Secret in this namespace with the registry credentials: type
    /// `kubernetes.io/dockerconfigjson` (key `.dockerconfigjson`) or `kubernetes.io/basic-auth`
    /// (keys `username`, `password`). Omit for anonymous registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<LocalObjectReference>,
    /// Run the worker under this ServiceAccount of the namespace, with its token mounted at
    /// `/var/run/secrets/kubernetes.io/serviceaccount` (only then: by default the worker has no
    /// token). For registries that accept the pod's identity (cloud workload identity through
    /// a credential helper in the worker image); `credentialsSecret` stays optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Repositories of the target registry to mount blobs from, in addition to what earlier
    /// pushes in this namespace recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_from: Vec<String>,
    /// Whether the layout's referrers of what is pushed (signatures, attestations, SBOMs:
    /// manifests whose `subject` is pushed, cosign's `sha256-<hex>.sig` tags) are pushed
    /// after the image: `All` (default) or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers: Option<ReferrersPolicy>,
    /// How to reach the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// Blob uploads in flight at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_uploads: Option<u32>,
    /// Longest time one push may take, as a duration (`90s`, `30m`, `1h`); default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub timeout: Option<String>,
    /// Settings of the worker pod that a namespace may choose; the cluster's defaults (the
    /// chart's `worker` values) apply to everything else and bound these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerOverrides>,
    /// Start no new push (a push already running finishes); the `Suspended` condition says
    /// so. Setting it back to false starts what was held back. To push the current spec
    /// again, set the annotation `imagepush.dev/requested-at` to a new value (such as the
    /// time); `status.lastHandledRequestedAt` holds the last value whose push finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// What an ImagePush may choose about its worker pod. Nothing here can weaken the pod's
/// hardening: its user, security context, volumes and environment are the operator's.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerOverrides {
    /// Requests and limits of the worker container, by resource (`cpu`, `memory`,
    /// `ephemeral-storage`); each replaces the cluster default for that resource, and none
    /// may exceed the cluster default's limit for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<WorkerResources>,
    /// Tolerations added to the cluster's default tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node labels the worker's node must have, added to the cluster's default node
    /// selector (a key the default sets cannot be given another value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// Requests and limits by resource name, as in a container's `resources`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResources {
    /// Minimum amounts the worker is scheduled with (`cpu: 250m`, `memory: 128Mi`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    /// Maximum amounts the worker may use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// The layout's location. Exactly one of persistentVolumeClaim and hostPath.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.persistentVolumeClaim) != has(self.hostPath)",
    "message": "set exactly one of persistentVolumeClaim and hostPath"
}]))]
pub struct Source {
    /// A PersistentVolumeClaim in this namespace holding the layout; mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcSource>,
    /// A directory on a node; only under the roots the cluster admin allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSource>,
    /// The layout entry to push: a full name (`docker.io/library/app:v1`, as
    /// `org.opencontainers.image.ref.name` or `io.containerd.image.name` holds it), a tag, or a
    /// digest.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub reference: Option<String>,
}

/// A layout on a PersistentVolumeClaim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    /// Name of the PersistentVolumeClaim (same namespace).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub claim_name: String,
    /// The layout inside the volume (a directory, or a tar archive of one, plain or gzip),
    /// relative, without `..` (default: the volume root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.startsWith('/') && self != '..' && !self.startsWith('../') && !self.endsWith('/..') && !self.contains('/../')",
        "message": "path must be relative and must not contain '..'"
    }]))]
    #[schemars(length(max = 4096))]
    pub path: Option<String>,
}

/// A layout in a directory of a node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.nodeName) && has(self.nodeSelector))",
    "message": "set at most one of nodeName and nodeSelector"
}]))]
pub struct HostPathSource {
    /// Absolute path on the node of the layout directory, or of a tar archive of one.
    #[schemars(regex(pattern = r"^/"), length(max = 4096))]
    pub path: String,
    /// The node holding the layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub node_name: Option<String>,
    /// Labels selecting the nodes holding the layout (any one of them is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// A reference to an object in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object in the ImagePush's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Transport settings for the target registry.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// Talk plain HTTP to the registry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_http: bool,
    /// Do not verify the registry's TLS certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
    /// CA certificates (PEM) to trust besides the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaSource>,
}

/// A PEM bundle in a Secret or a ConfigMap of this namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.secretName) != has(self.configMapName)",
    "message": "set exactly one of secretName and configMapName"
}]))]
pub struct CaSource {
    /// A Secret in this namespace holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
    /// A ConfigMap in this namespace holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub config_map_name: Option<String>,
    /// The key holding the PEM bundle (default `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// Which referrers a push takes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReferrersPolicy {
    /// Every referrer of pushed content, recursively.
    All,
    /// None.
    None,
}

/// A referrer pushed with the image.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerStatus {
    /// Digest of the referrer's manifest.
    pub digest: String,
    /// What it is (`artifactType`, else its config's media type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Digest of what it refers to.
    pub subject: String,
    /// How the registry learned of it: `api` (the registry's referrers API), `tagSchema` (the
    /// index tagged `sha256-<hex>` of the subject) or `cosignTag` (cosign's tag).
    pub known_by: String,
}

/// What the last push of the resource did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePushStatus {
    /// The generation whose push finished (successfully or for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the annotation `imagepush.dev/requested-at` when the last push finished:
    /// a new value of the annotation pushes the current spec again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_requested_at: Option<String>,
    /// A hash of the spec (all of it but `suspend`) whose push finished: a new generation
    /// that only changed `suspend` is not pushed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// `Ready` summarizes; `Reconciling`, `Stalled` and `Suspended` are present only while true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Digest of the pushed manifest or index (the first, when all tags were pushed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Size in bytes of that manifest or index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Media type of that manifest or index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Every pushed tag (of a push to one repository).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagStatus>,
    /// A mirror: the images pushed, each in its repository (the first 500; `imageCount` says
    /// how many there are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageStatus>,
    /// A mirror: how many images were pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_count: Option<u64>,
    /// The referrers pushed with the image (the first 100; `referrerCount` says how many).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerStatus>,
    /// How many referrers were pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_count: Option<u64>,
    /// Referrers in the layout that were not pushed because what they refer to was not
    /// (another platform's manifest): how many, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers_left_out: Option<String>,
    /// Set when an index was only partly in the layout and one manifest was pushed instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_pushed_instead_of_index: Option<IndexFallbackStatus>,
    /// Blob counts of the last push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs: Option<BlobTotals>,
    /// Blobs mounted from other repositories, and from where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountStatus>,
    /// Digests of every blob the target repository now holds for this image (the mount
    /// knowledge later pushes in the namespace use). Empty for a mirror (see
    /// `repositoryBlobs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blob_digests: Vec<String>,
    /// A mirror: each distinct blob once, under the first repository that holds it (the mount
    /// knowledge later pushes in the namespace use); at most 1000 digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_blobs: Vec<RepositoryBlobs>,
    /// Progress of a running push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressStatus>,
    /// When the worker Job of this generation was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the push of this generation finished successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The worker Job of the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Which try of the current generation the worker Job is (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// After a transient failure: when the next attempt starts (the controller's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// What went wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagStatus {
    /// The tag in the target repository.
    pub tag: String,
    /// Digest the tag now points at.
    pub digest: String,
    /// Size in bytes of that manifest or index.
    pub size: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// `registry/repository` the image went to.
    pub repository: String,
    /// Its tag there; absent for an image pushed by digest (named by digest in the layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Digest of the pushed manifest or index.
    pub digest: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryBlobs {
    /// `registry/repository` that holds the blobs.
    pub repository: String,
    /// Digests of the blobs.
    pub digests: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexFallbackStatus {
    /// The index named by the layout, which was only partly there.
    pub original_index: String,
    /// The manifest pushed instead.
    pub selected_manifest: String,
    /// Platform (`os/arch[/variant]`) of the manifest pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobTotals {
    /// Blobs uploaded from the layout.
    pub uploaded: u64,
    /// Blobs mounted from another repository of the registry (no bytes sent).
    pub mounted: u64,
    /// Blobs the target repository already had.
    pub existed: u64,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MountStatus {
    /// The blob mounted.
    pub digest: String,
    /// `registry/repository` the blob was mounted from.
    pub from: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressStatus {
    /// Bytes of blobs handled so far (uploaded, mounted or found).
    pub bytes_done: u64,
    /// Bytes of all blobs of the push.
    pub bytes_total: u64,
    /// Blobs handled so far.
    pub blobs_done: u64,
    /// Blobs of the push.
    pub blobs_total: u64,
    /// `blobs 3/8, 120.0/512.0 MiB` for `kubectl get -o wide`.
    pub summary: String,
}

impl ImagePushSpec {
    /// A spec pushing the layout at `path` on claim `claim` to `target`, nothing else set.
    pub fn from_claim(claim: &str, path: Option<&str>, target: &str) -> ImagePushSpec {
        ImagePushSpec {
            source: Source {
                persistent_volume_claim: Some(PvcSource {
                    claim_name: claim.into(),
                    path: path.map(str::to_string),
                }),
                host_path: None,
                reference: None,
            },
            target: target.into(),
            mirror: false,
            platform: None,
            credentials_secret: None,
            service_account_name: None,
            mount_from: vec![],
            referrers: None,
            connection: None,
            max_concurrent_uploads: None,
            timeout: None,
            worker: None,
            suspend: false,
        }
    }
}

/// The CRD as YAML, as `imagepush crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = ImagePush::crd();
    let mut out = String::from("# Generated by `imagepush crd` from src/crd.rs; do not edit.\n");
    out.push_str(&serde_saphyr::to_string(&crd).expect("the CRD serializes"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in CRD must be what the code generates: run `imagepush crd >
    /// crds/imagepush.dev_imagepushes.yaml` after changing the types.
    #[test]
    fn checked_in_crd_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/imagepush.dev_imagepushes.yaml");
        let checked_in =
            std::fs::read_to_string(path).expect("crds/imagepush.dev_imagepushes.yaml");
        assert!(
            checked_in == crd_yaml(),
            "crds/imagepush.dev_imagepushes.yaml is stale: regenerate it with `imagepush crd`"
        );
    }

    #[test]
    fn crd_has_the_promised_shape() {
        use kube::CustomResourceExt;
        let crd = ImagePush::crd();
        assert_eq!(crd.spec.group, "imagepush.dev");
        assert_eq!(crd.spec.names.plural, "imagepushes");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["ipush".to_string()][..]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for want in ["Ready", "Target", "Digest", "Age"] {
            assert!(columns.contains(&want), "{columns:?}");
        }
        let yaml = crd_yaml();
        assert!(yaml.contains("has(self.persistentVolumeClaim) != has(self.hostPath)"));
        assert!(yaml.contains("must not contain '..'"));
    }
}
