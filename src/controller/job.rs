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

use crate::crd::ImagePush;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "imagepush.dev/name";
pub const LABEL_GENERATION: &str = "imagepush.dev/generation";
pub const LABEL_ATTEMPT: &str = "imagepush.dev/attempt";

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
}

/// A DNS-label-safe name: `<name>-<gen>-<attempt>`, shortened with a hash when too long
/// (a Job name must leave room for the pod suffix).
pub fn job_name(name: &str, generation: i64, attempt: u32) -> String {
    let suffix = format!("-{generation}-{attempt}");
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
    if name.len() <= 63 { name.to_string() } else { job_name(name, 0, 0) }
}

/// Builds the worker Job. `known_sources` is the JSON map of blob locations the namespace's
/// earlier pushes recorded (may be empty); `host_root` is the allowed root a hostPath source
/// lies under (see `validate::host_path_root`).
pub fn build(
    ip: &ImagePush,
    generation: i64,
    attempt: u32,
    settings: &WorkerSettings,
    known_sources: &str,
    host_root: Option<&Path>,
) -> Job {
    let name = ip.metadata.name.clone().unwrap_or_default();
    let spec = &ip.spec;
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_MANAGED_BY.to_string(), "imagepush".to_string());
    labels.insert(LABEL_NAME.to_string(), name_label(&name));
    labels.insert(LABEL_GENERATION.to_string(), generation.to_string());
    labels.insert(LABEL_ATTEMPT.to_string(), attempt.to_string());

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut node_name = None;
    let mut node_selector = None;
    // The volume is mounted at `layout_root`; the layout is `layout_dir`, at or below it.
    let (layout_root, layout_dir) = if let Some(pvc) = &spec.source.persistent_volume_claim {
        volumes.push(Volume {
            name: "layout".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        let dir = match pvc.path.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
            Some(p) => format!("{LAYOUT_MOUNT}/{p}"),
            None => LAYOUT_MOUNT.to_string(),
        };
        (LAYOUT_MOUNT.to_string(), dir)
    } else if let Some(hp) = &spec.source.host_path {
        // The allowed root is mounted, at its own path, rather than the layout directory:
        // the kubelet would follow a symlink on the way to the layout wherever it leads,
        // while the worker resolves the path inside the root and refuses what leaves it.
        // Absolute symlinks that stay under the root work as they do on the node.
        let root = host_root.map_or_else(|| hp.path.clone(), |r| r.display().to_string());
        volumes.push(Volume {
            name: "layout".into(),
            host_path: Some(HostPathVolumeSource {
                path: root.clone(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        });
        node_name = hp.node_name.clone();
        node_selector = hp.node_selector.clone();
        (root, hp.path.clone())
    } else {
        (LAYOUT_MOUNT.to_string(), LAYOUT_MOUNT.to_string())
    };
    mounts.push(VolumeMount {
        name: "layout".into(),
        mount_path: layout_root.clone(),
        read_only: Some(true),
        ..Default::default()
    });
    // The root filesystem is read-only; the engine needs no scratch space, but a small
    // tmpfs keeps libraries that want /tmp happy.
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("16Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: TMP_MOUNT.into(),
        ..Default::default()
    });

    let mut args: Vec<String> = vec![
        "push".into(),
        "--progress".into(),
        "json".into(),
        "--termination-message".into(),
        "/dev/termination-log".into(),
        // Symlinks in the volume must not lead the worker out of it.
        "--layout-root".into(),
        layout_root,
    ];
    if let Some(secret) = &spec.credentials_secret {
        volumes.push(Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "credentials".into(),
            mount_path: CREDENTIALS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.extend(["--registry-config".into(), CREDENTIALS_MOUNT.into()]);
    }
    let connection = spec.connection.clone().unwrap_or_default();
    if connection.plain_http {
        args.push("--plain-http".into());
    }
    if connection.insecure_skip_tls_verify {
        args.push("--insecure-skip-tls-verify".into());
    }
    if let Some(ca) = &connection.ca {
        let key = ca.key.clone().unwrap_or_else(|| "ca.crt".into());
        let items = Some(vec![KeyToPath { key, path: "ca.crt".into(), ..Default::default() }]);
        let mut v = Volume { name: "ca".into(), ..Default::default() };
        if let Some(s) = &ca.secret_name {
            v.secret = Some(SecretVolumeSource {
                secret_name: Some(s.clone()),
                items,
                ..Default::default()
            });
        } else if let Some(c) = &ca.config_map_name {
            v.config_map =
                Some(ConfigMapVolumeSource { name: c.clone(), items, ..Default::default() });
        }
        volumes.push(v);
        mounts.push(VolumeMount {
            name: "ca".into(),
            mount_path: CA_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.extend(["--ca-file".into(), format!("{CA_MOUNT}/ca.crt")]);
    }
    if let Some(r) = &spec.source.reference {
        args.extend(["--ref".into(), r.clone()]);
    }
    if let Some(p) = &spec.platform {
        args.extend(["--platform".into(), p.clone()]);
    }
    for m in &spec.mount_from {
        args.extend(["--mount-from".into(), m.clone()]);
    }
    if let Some(n) = spec.max_concurrent_uploads {
        args.extend(["--max-concurrent-uploads".into(), n.to_string()]);
    }
    args.push(layout_dir);
    args.push(spec.target.clone());

    let mut env = Vec::new();
    if !known_sources.is_empty() && known_sources != "{}" {
        env.push(EnvVar {
            name: "IMAGEPUSH_KNOWN_SOURCES".into(),
            value: Some(known_sources.to_string()),
            value_from: None,
        });
    }
    env.push(EnvVar { name: "IMAGEPUSH_LOG".into(), value: Some("info".into()), value_from: None });
    env.push(EnvVar {
        name: "IMAGEPUSH_LOG_FORMAT".into(),
        value: Some("json".into()),
        value_from: None,
    });

    let timeout = spec
        .timeout
        .as_deref()
        .and_then(super::validate::parse_duration)
        .unwrap_or(settings.default_timeout);

    let container = Container {
        name: "push".into(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        command: Some(vec!["imagepush".into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        ..Default::default()
    };

    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, generation, attempt)),
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
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some("push".into()),
                            operator: "In".into(),
                            values: PERMANENT_EXIT_CODES.to_vec(),
                        }),
                        on_pod_conditions: None,
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
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    node_name,
                    node_selector,
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(WORKER_UID),
                        run_as_group: Some(WORKER_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
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

    fn ip(source: Source) -> ImagePush {
        let mut ip = ImagePush::new(
            "app",
            ImagePushSpec {
                source,
                target: "reg.example.com/team/app:v1".into(),
                platform: Some("linux/arm64".into()),
                credentials_secret: Some(LocalObjectReference { name: "regcred".into() }),
                mount_from: vec!["team/base".into()],
                connection: Some(Connection { plain_http: true, ..Default::default() }),
                max_concurrent_uploads: Some(3),
                timeout: Some("10m".into()),
            },
        );
        ip.metadata.namespace = Some("ns".into());
        ip.metadata.uid = Some("uid-1".into());
        ip
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            image: "imagepush:test".into(),
            image_pull_policy: None,
            default_timeout: Duration::from_secs(3600),
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
        let job = build(&ip(source), 3, 1, &settings(), r#"{"sha256:x":["reg/a"]}"#, None);
        assert_eq!(job.metadata.name.as_deref(), Some("app-3-1"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ImagePush", "uid-1", Some(true))
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
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
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
        // No credential material in the Job itself.
        assert!(!serde_json::to_string(&pod.containers).unwrap().contains("password"));
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
        let job = build(&ip(source), 1, 2, &settings(), "", Some(Path::new("/var/lib/images")));
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
        assert_eq!(job_name("app", 1, 1), "app-1-1");
        let long = "a".repeat(80);
        let n = job_name(&long, 12, 3);
        assert!(n.len() <= 52, "{n}");
        assert!(n.ends_with("-12-3"));
        assert_eq!(n, job_name(&long, 12, 3));
        assert_ne!(job_name(&format!("{long}b"), 12, 3), n);
    }
}
