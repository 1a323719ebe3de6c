//! The worker Job of one generation (and attempt) of an ImagePush: the same image running
//! `imagepush push`, with the layout mounted read-only, the credentials Secret as files, and
//! nothing else — no service account token, no capabilities, a read-only root filesystem.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    HostPathVolumeSource, KeyToPath, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use sha2::Digest as _;

use super::pod_settings::{PodSettings, Reserved};
use crate::crd::{CaSource, ImagePush, ImagePushSpec, LocalObjectReference};
use crate::worker::WorkerCommand;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "imagepush.dev/name";
pub const LABEL_GENERATION: &str = "imagepush.dev/generation";
pub const LABEL_ATTEMPT: &str = "imagepush.dev/attempt";
/// The push request (`imagepush.dev/requested-at`) a Job serves, as [`round`] names it.
pub const LABEL_REQUEST: &str = "imagepush.dev/request";

/// The worker's container; the controller reads its state and log by this name, whatever
/// other containers (an injected sidecar) the pod has.
pub const CONTAINER: &str = "push";
const TERMINATION_LOG: &str = "/dev/termination-log";
const LAYOUT_MOUNT: &str = "/layout";
const TMP_MOUNT: &str = "/tmp";
const CREDENTIALS_MOUNT: &str = "/var/run/imagepush/credentials";
const CA_MOUNT: &str = "/var/run/imagepush/ca";
/// Where the worker's own volumes go; a hostPath root must not cover or replace them.
pub const WORKER_MOUNTS: [&str; 4] = [LAYOUT_MOUNT, TMP_MOUNT, CREDENTIALS_MOUNT, CA_MOUNT];
/// The worker's user (distroless "nonroot").
const WORKER_UID: i64 = 65532;

/// Exit codes of `imagepush push` that no retry can fix (bad input, not found, auth).
pub const PERMANENT_EXIT_CODES: [i32; 4] = [1, 2, 3, 4];
/// Tries of the worker pod inside one Job for transient failures (exit 5).
pub const BACKOFF_LIMIT: i32 = 2;

/// How the controller wants workers built.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// Push timeout (the Job's activeDeadlineSeconds) when the spec gives none.
    pub default_timeout: Duration,
    /// The admin's defaults for the pod (`--worker-defaults`); `spec.worker` chooses within.
    pub pod: PodSettings,
}

/// The labels, annotations and variables the operator sets on every worker pod, which the
/// admin's defaults may not set.
pub fn reserved() -> Reserved {
    Reserved {
        labels: vec![LABEL_MANAGED_BY, LABEL_NAME, LABEL_GENERATION, LABEL_ATTEMPT, LABEL_REQUEST],
        annotations: POD_ANNOTATIONS.iter().map(|(k, _)| *k).collect(),
        env_prefix: "IMAGEPUSH_",
    }
}

/// Which push request a Job serves: the first six hex digits of the SHA-256 of the
/// `imagepush.dev/requested-at` value (`None` without the annotation). Each new value is a new
/// round of Jobs for the same generation.
pub fn round(requested: Option<&str>) -> Option<String> {
    requested.map(|r| hex::encode(&sha2::Sha256::digest(r.as_bytes())[..3]))
}

/// The ImagePush's `imagepush.dev/requested-at` annotation.
pub fn requested(ip: &ImagePush) -> Option<&str> {
    ip.metadata.annotations.as_ref()?.get(super::status::REQUESTED_AT).map(String::as_str)
}

/// A DNS-label-safe name: `<name>-<gen>[r<round>]-<attempt>-<uid>` where `<uid>` is the first
/// five hex digits of the ImagePush's uid, shortened with a hash when too long (a Job name
/// must leave room for the pod suffix). The uid keeps a deleted and re-created ImagePush (or
/// one whose old Jobs were orphaned) from colliding with Jobs it does not own.
pub fn job_name(
    name: &str,
    uid: &str,
    generation: i64,
    round: Option<&str>,
    attempt: u32,
) -> String {
    let uid: String = uid.chars().filter(char::is_ascii_hexdigit).take(5).collect();
    let round = round.map(|r| format!("r{r}")).unwrap_or_default();
    let suffix = format!("-{generation}{round}-{attempt}-{}", uid.to_ascii_lowercase());
    let max = 52;
    if name.len() + suffix.len() <= max {
        return format!("{name}{suffix}");
    }
    let hash = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..4]);
    let keep = max - suffix.len() - hash.len() - 1;
    let prefix = name[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}{suffix}")
}

/// A label value for the ImagePush name (names can be longer than label values).
pub fn name_label(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let hash = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..4]);
    format!("{}-{hash}", name[..54].trim_end_matches(['-', '.']))
}

/// The worker's volumes and where its container mounts them.
#[derive(Default)]
struct Mounts {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

impl Mounts {
    fn add(&mut self, volume: Volume, mount_path: &str, read_only: bool) {
        self.mounts.push(VolumeMount {
            name: volume.name.clone(),
            mount_path: mount_path.into(),
            read_only: read_only.then_some(true),
            ..Default::default()
        });
        self.volumes.push(volume);
    }
}

/// Where the layout is: the volume holding it is mounted at `root`; the layout is `dir`, at
/// or below it. A hostPath layout may name the node the worker must run on (its node
/// selector is merged into the pod's by `PodSettings::resolve`).
struct LayoutSource {
    volume: Volume,
    root: String,
    dir: String,
    node_name: Option<String>,
}

fn layout_source(spec: &ImagePushSpec, host_root: Option<&Path>) -> LayoutSource {
    let volume = |v: Volume| Volume { name: "layout".into(), ..v };
    if let Some(hp) = &spec.source.host_path {
        // The allowed root is mounted, at its own path, rather than the layout directory:
        // the kubelet would follow a symlink on the way to the layout wherever it leads,
        // while the worker resolves the path inside the root and refuses what leaves it.
        // Absolute symlinks that stay under the root work as they do on the node.
        let root = host_root.map_or_else(|| hp.path.clone(), |r| r.display().to_string());
        return LayoutSource {
            volume: volume(Volume {
                host_path: Some(HostPathVolumeSource {
                    path: root.clone(),
                    type_: Some("Directory".into()),
                }),
                ..Default::default()
            }),
            root,
            dir: hp.path.clone(),
            node_name: hp.node_name.clone(),
        };
    }
    let pvc = spec.source.persistent_volume_claim.as_ref();
    let dir = match pvc.and_then(|p| p.path.as_deref()).map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("{LAYOUT_MOUNT}/{p}"),
        _ => LAYOUT_MOUNT.to_string(),
    };
    LayoutSource {
        volume: volume(Volume {
            persistent_volume_claim: pvc.map(|p| PersistentVolumeClaimVolumeSource {
                claim_name: p.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        }),
        root: LAYOUT_MOUNT.to_string(),
        dir,
        node_name: None,
    }
}

/// The credentials Secret as files, readable by the worker's group: kubelet writes Secret
/// files root-owned with the volume's mode and gives their group to the pod's `fsGroup`
/// (which `pod_spec` sets to the worker's gid), so 0440 is readable by the worker and by
/// nobody else in the pod.
fn credentials_volume(secret: &LocalObjectReference) -> Volume {
    Volume {
        name: "credentials".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The CA bundle from a Secret or a ConfigMap, as `ca.crt`.
fn ca_volume(ca: &CaSource) -> Volume {
    let key = ca.key.clone().unwrap_or_else(|| "ca.crt".into());
    let items = Some(vec![KeyToPath { key, path: "ca.crt".into(), ..Default::default() }]);
    let mut v = Volume { name: "ca".into(), ..Default::default() };
    if let Some(s) = &ca.secret_name {
        v.secret =
            Some(SecretVolumeSource { secret_name: Some(s.clone()), items, ..Default::default() });
    } else if let Some(c) = &ca.config_map_name {
        v.config_map = Some(ConfigMapVolumeSource { name: c.clone(), items, ..Default::default() });
    }
    v
}

/// The volumes and mounts of the worker, and the `imagepush push` arguments that point at
/// them.
fn volumes_and_args(spec: &ImagePushSpec, layout: LayoutSource) -> (Mounts, Vec<String>) {
    let mut m = Mounts::default();
    let mut cmd = WorkerCommand {
        layout_root: layout.root.clone(),
        layout: layout.dir.clone(),
        target: spec.target.clone(),
        mirror: spec.mirror,
        termination_message: TERMINATION_LOG.into(),
        reference: spec.source.reference.clone(),
        platform: spec.platform.clone(),
        mount_from: spec.mount_from.clone(),
        max_concurrent_uploads: spec.max_concurrent_uploads,
        no_referrers: spec.referrers == Some(crate::crd::ReferrersPolicy::None),
        ..Default::default()
    };
    m.add(layout.volume, &layout.root, true);
    // The root filesystem is read-only; the engine needs no scratch space, but a small
    // tmpfs keeps libraries that want /tmp happy.
    let tmp = EmptyDirVolumeSource {
        medium: Some("Memory".into()),
        size_limit: Some(Quantity("16Mi".into())),
        ..Default::default()
    };
    m.add(
        Volume { name: "tmp".into(), empty_dir: Some(tmp), ..Default::default() },
        TMP_MOUNT,
        false,
    );
    if let Some(secret) = &spec.credentials_secret {
        m.add(credentials_volume(secret), CREDENTIALS_MOUNT, true);
        cmd.registry_config = Some(CREDENTIALS_MOUNT.into());
    }
    let connection = spec.connection.clone().unwrap_or_default();
    cmd.plain_http = connection.plain_http;
    cmd.insecure_skip_tls_verify = connection.insecure_skip_tls_verify;
    if let Some(ca) = &connection.ca {
        m.add(ca_volume(ca), CA_MOUNT, true);
        cmd.ca_file = Some(format!("{CA_MOUNT}/ca.crt"));
    }
    let args = cmd.args();
    (m, args)
}

fn env(known_sources: &str, extra: &[EnvVar]) -> Vec<EnvVar> {
    let var = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    };
    let mut env = Vec::new();
    if !known_sources.is_empty() && known_sources != "{}" {
        env.push(var("IMAGEPUSH_KNOWN_SOURCES", known_sources));
    }
    env.push(var("IMAGEPUSH_LOG", "info"));
    env.push(var("IMAGEPUSH_LOG_FORMAT", "json"));
    env.extend(extra.iter().cloned());
    env
}

/// The `push` container: the image's binary, no privileges, a read-only root.
fn container(
    settings: &WorkerSettings,
    resources: ResourceRequirements,
    args: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: CONTAINER.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        command: Some(vec!["imagepush".into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("File".into()),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's own security settings: the worker's uid and gid, and its gid as `fsGroup` so
/// that kubelet gives it the Secret files (see `credentials_volume`). Ownership is changed
/// only where it does not already match (`OnRootMismatch`); kubelet never changes it on
/// read-only or hostPath volumes, so the layout is left alone.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(WORKER_UID),
        run_as_group: Some(WORKER_UID),
        fs_group: Some(WORKER_UID),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Annotations that keep service meshes from injecting a sidecar: a Job whose pod keeps a
/// sidecar running never completes.
const POD_ANNOTATIONS: [(&str, &str); 2] =
    [("sidecar.istio.io/inject", "false"), ("linkerd.io/inject", "disabled")];

/// The admin's annotations, then the operator's.
fn pod_annotations(pod: &PodSettings) -> BTreeMap<String, String> {
    let mut out = pod.annotations.clone();
    out.extend(POD_ANNOTATIONS.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    out
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// Fails the Job at once on the exit codes no retry can fix; a disrupted pod (evicted,
/// preempted, its node drained) is not counted against the backoff limit.
fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.into()),
                    operator: "In".into(),
                    values: PERMANENT_EXIT_CODES.to_vec(),
                }),
                // Empty, not absent: Kubernetes 1.26's schema requires the field (1.27 made
                // it optional), and tools validating against 1.26 refuse the Job without it.
                on_pod_conditions: Some(vec![]),
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: Some("True".into()),
                }]),
            },
        ],
    }
}

/// Builds the worker Job. `known_sources` is the JSON map of blob locations the namespace's
/// earlier pushes recorded (may be empty); `host_root` is the allowed root a hostPath source
/// lies under (see `validate::host_path_root`).
pub fn build(
    ip: &ImagePush,
    generation: i64,
    attempt: u32,
    settings: &WorkerSettings,
    pod: &PodSettings,
    known_sources: &str,
    host_root: Option<&Path>,
) -> Job {
    let name = ip.metadata.name.clone().unwrap_or_default();
    let uid = ip.metadata.uid.clone().unwrap_or_default();
    let mut labels = pod.labels.clone();
    labels.extend([
        (LABEL_MANAGED_BY.to_string(), "imagepush".to_string()),
        (LABEL_NAME.to_string(), name_label(&name)),
        (LABEL_GENERATION.to_string(), generation.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]);
    let round = round(requested(ip));
    if let Some(r) = &round {
        labels.insert(LABEL_REQUEST.to_string(), r.clone());
    }
    let layout = layout_source(&ip.spec, host_root);
    // The source's node selector is in `pod`'s, merged with the admin's.
    let node_name = layout.node_name.clone();
    let (mounts, args) = volumes_and_args(&ip.spec, layout);
    let timeout = ip
        .spec
        .timeout
        .as_deref()
        .and_then(super::validate::parse_duration)
        .unwrap_or(settings.default_timeout);
    let container =
        container(settings, pod.requirements(), args, env(known_sources, &pod.env), mounts.mounts);
    let pod_spec = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: ip.spec.service_account_name.clone(),
        automount_service_account_token: Some(ip.spec.service_account_name.is_some()),
        enable_service_links: Some(false),
        node_name,
        node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
        affinity: pod.affinity.clone(),
        tolerations: non_empty(pod.tolerations.clone()),
        priority_class_name: pod.priority_class_name.clone(),
        image_pull_secrets: non_empty(pod.image_pull_secrets.clone()),
        security_context: Some(pod_security_context()),
        containers: vec![container],
        volumes: Some(mounts.volumes),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, &uid, generation, round.as_deref(), attempt)),
            namespace: ip.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: ip.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            // Finished Jobs (and their logs) stay a day for people to look at.
            ttl_seconds_after_finished: Some(86_400),
            active_deadline_seconds: Some(timeout.as_secs() as i64),
            pod_failure_policy: Some(pod_failure_policy()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations(pod)),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        Connection, HostPathSource, ImagePushSpec, LocalObjectReference, PvcSource, Source,
    };

    /// The whole claim `layouts`.
    fn claim_source() -> Source {
        Source {
            persistent_volume_claim: Some(PvcSource { claim_name: "layouts".into(), path: None }),
            host_path: None,
            reference: None,
        }
    }

    fn ip(source: Source) -> ImagePush {
        let mut ip = ImagePush::new(
            "app",
            ImagePushSpec {
                source,
                target: "reg.example.com/team/app:v1".into(),
                mirror: false,
                platform: Some("linux/arm64".into()),
                credentials_secret: Some(LocalObjectReference { name: "regcred".into() }),
                service_account_name: None,
                mount_from: vec!["team/base".into()],
                referrers: None,
                connection: Some(Connection { plain_http: true, ..Default::default() }),
                max_concurrent_uploads: Some(3),
                timeout: Some("10m".into()),
                worker: None,
                suspend: false,
            },
        );
        ip.metadata.namespace = Some("ns".into());
        ip.metadata.uid = Some("0a1b2c3d-0000-4000-8000-000000000001".into());
        ip
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            image: "imagepush:test".into(),
            image_pull_policy: None,
            default_timeout: Duration::from_secs(3600),
            pod: PodSettings::default(),
        }
    }

    #[test]
    fn pvc_worker_is_locked_down_and_runs_the_push() {
        let source = Source {
            persistent_volume_claim: Some(PvcSource {
                claim_name: "layouts".into(),
                path: Some("builds/app".into()),
            }),
            host_path: None,
            reference: Some("v1".into()),
        };
        let job = build(
            &ip(source),
            3,
            1,
            &settings(),
            &PodSettings::default(),
            r#"{"sha256:x":["reg/a"]}"#,
            None,
        );
        assert_eq!(job.metadata.name.as_deref(), Some("app-3-1-0a1b2"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ImagePush", "0a1b2c3d-0000-4000-8000-000000000001", Some(true))
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(BACKOFF_LIMIT));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let policy = spec.pod_failure_policy.unwrap();
        assert_eq!(policy.rules[0].on_exit_codes.as_ref().unwrap().values, vec![1, 2, 3, 4]);
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        // Kubelet gives Secret files (root-owned, 0440) to the fsGroup: the worker's gid.
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(65532), Some(65532), Some(65532))
        );
        let annotations = spec.template.metadata.as_ref().unwrap().annotations.clone().unwrap();
        assert_eq!(annotations["sidecar.istio.io/inject"], "false");
        assert_eq!(annotations["linkerd.io/inject"], "disabled");
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        assert_eq!(c.name, CONTAINER);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let args = c.args.clone().unwrap();
        assert_eq!(args[0], "push");
        assert_eq!(&args[args.len() - 2..], ["/layout/builds/app", "reg.example.com/team/app:v1"]);
        assert!(!args.iter().any(|a| a == "--mirror"), "{args:?}");
        for want in [
            "--plain-http",
            "--ref",
            "v1",
            "--platform",
            "linux/arm64",
            "--mount-from",
            "team/base",
            "--max-concurrent-uploads",
            "3",
            "--registry-config",
            CREDENTIALS_MOUNT,
            "--progress",
            "json",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        let volumes = pod.volumes.unwrap();
        let layout = volumes.iter().find(|v| v.name == "layout").unwrap();
        assert_eq!(layout.persistent_volume_claim.as_ref().unwrap().read_only, Some(true));
        assert_eq!(
            volumes
                .iter()
                .find(|v| v.name == "credentials")
                .unwrap()
                .secret
                .as_ref()
                .unwrap()
                .secret_name
                .as_deref(),
            Some("regcred")
        );
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().filter(|m| m.name != "tmp").all(|m| m.read_only == Some(true)));
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "IMAGEPUSH_KNOWN_SOURCES"));
        // Without defaults: the built-in resources, nothing else placed.
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["memory"], Quantity("64Mi".into()));
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("256Mi".into()));
        assert!(pod.tolerations.is_none() && pod.node_selector.is_none() && pod.affinity.is_none());
        assert!(pod.image_pull_secrets.is_none() && pod.priority_class_name.is_none());
        // No credential material in the Job itself.
        assert!(!serde_json::to_string(&pod.containers).unwrap().contains("password"));
    }

    #[test]
    fn the_admins_settings_shape_the_pod_and_never_replace_the_operators() {
        let source = claim_source();
        let pod: PodSettings = serde_json::from_value(serde_json::json!({
            "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"}],
            "nodeSelector": {"pool": "builds"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]}]}]}}},
            "priorityClassName": "batch-low",
            "imagePullSecrets": [{"name": "mirror-pull"}],
            "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "labels": {"team": "platform"},
            "annotations": {"cost-center": "42"}
        }))
        .unwrap();
        let job = build(&ip(source), 1, 1, &settings(), &pod, "", None);
        assert_eq!(job.metadata.labels.as_ref().unwrap()["team"], "platform");
        let spec = job.spec.unwrap();
        let meta = spec.template.metadata.unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(
            (labels["team"].as_str(), labels[LABEL_MANAGED_BY].as_str()),
            ("platform", "imagepush")
        );
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations["cost-center"], "42");
        assert_eq!(annotations["sidecar.istio.io/inject"], "false");
        let p = spec.template.spec.unwrap();
        assert_eq!(p.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
        assert_eq!(p.node_selector.unwrap()["pool"], "builds");
        assert!(p.affinity.unwrap().node_affinity.is_some());
        assert_eq!(p.priority_class_name.as_deref(), Some("batch-low"));
        assert_eq!(p.image_pull_secrets.unwrap()[0].name, "mirror-pull");
        let c = &p.containers[0];
        let names: Vec<_> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["IMAGEPUSH_LOG", "IMAGEPUSH_LOG_FORMAT", "HTTPS_PROXY"]);
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"], Quantity("1".into()));
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("1Gi".into()));
        // The hardening is the operator's whatever the settings.
        assert_eq!(p.automount_service_account_token, Some(false));
        assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
        assert_eq!(p.security_context.unwrap().run_as_user, Some(65532));
    }

    #[test]
    fn a_mirror_worker_is_told_so() {
        let mut ip = ip(claim_source());
        ip.spec.mirror = true;
        ip.spec.target = "reg.example.com/mirror".into();
        let job = build(&ip, 1, 1, &settings(), &PodSettings::default(), "", None);
        let args = job.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.iter().any(|a| a == "--mirror"), "{args:?}");
        assert_eq!(&args[args.len() - 2..], ["/layout", "reg.example.com/mirror"]);
    }

    #[test]
    fn a_service_account_is_the_only_way_to_a_token() {
        let mut ip = ip(claim_source());
        let pod_of = |ip: &ImagePush| {
            build(ip, 1, 1, &settings(), &PodSettings::default(), "", None)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        let p = pod_of(&ip);
        assert_eq!(
            (p.service_account_name, p.automount_service_account_token),
            (None, Some(false))
        );
        ip.spec.service_account_name = Some("registry-pusher".into());
        let p = pod_of(&ip);
        assert_eq!(
            (p.service_account_name.as_deref(), p.automount_service_account_token),
            (Some("registry-pusher"), Some(true))
        );
    }

    #[test]
    fn host_path_worker_is_pinned_to_its_node() {
        let source = Source {
            persistent_volume_claim: None,
            host_path: Some(HostPathSource {
                path: "/var/lib/images/app".into(),
                node_name: Some("node-7".into()),
                node_selector: None,
            }),
            reference: None,
        };
        let pod = PodSettings::default();
        let job =
            build(&ip(source), 1, 2, &settings(), &pod, "", Some(Path::new("/var/lib/images")));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_name.as_deref(), Some("node-7"));
        let hp = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "layout")
            .unwrap()
            .host_path
            .unwrap();
        // The allowed root is mounted at its own path; the worker resolves the layout in it.
        assert_eq!(hp.path, "/var/lib/images");
        let c = &pod.containers[0];
        let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "layout").unwrap();
        assert_eq!(mount.mount_path, "/var/lib/images");
        assert_eq!(mount.read_only, Some(true));
        let args = c.args.as_ref().unwrap();
        let root_at = args.iter().position(|a| a == "--layout-root").unwrap();
        assert_eq!(args[root_at + 1], "/var/lib/images");
        assert_eq!(args[args.len() - 2], "/var/lib/images/app");
        assert!(
            !pod.containers[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == "IMAGEPUSH_KNOWN_SOURCES")
        );
    }

    #[test]
    fn job_names_fit_and_are_stable() {
        let uid = "7F3A9c01-2b3c-4d5e-8f00-aabbccddeeff";
        assert_eq!(job_name("app", uid, 1, None, 1), "app-1-1-7f3a9");
        // A re-created ImagePush (new uid) never collides with its predecessor's Jobs.
        assert_ne!(job_name("app", "0c3a9c01-0000", 1, None, 1), job_name("app", uid, 1, None, 1));
        let long = "a".repeat(80);
        let n = job_name(&long, uid, 12, None, 3);
        assert!(n.len() <= 52, "{n}");
        assert!(n.ends_with("-12-3-7f3a9"));
        assert_eq!(n, job_name(&long, uid, 12, None, 3));
        assert_ne!(job_name(&format!("{long}b"), uid, 12, None, 3), n);
        // A push request (imagepush.dev/requested-at) is its own round of Jobs.
        let first = round(Some("2026-11-30T10:00:00Z")).unwrap();
        assert_eq!(first.len(), 6);
        assert_ne!(round(Some("2026-11-30T10:05:00Z")), Some(first.clone()));
        assert_eq!(round(None), None);
        assert_eq!(job_name("app", uid, 2, Some(&first), 1), format!("app-2r{first}-1-7f3a9"));
        let n = job_name(&long, uid, 12, Some(&first), 3);
        assert!(n.len() <= 52 && n.ends_with(&format!("-12r{first}-3-7f3a9")), "{n}");
        for name in [n.as_str(), &name_label(&long), &name_label("app")] {
            assert!(super::super::names::dns_label(name).is_ok(), "{name}");
        }
    }
}
