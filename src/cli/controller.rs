//! `imagepush controller` and `imagepush crd`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::controller::pod_settings::PodSettings;
use crate::controller::{self, LeaderElection, job::WorkerSettings};
use crate::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, value_name = "NS", env = "IMAGEPUSH_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of the worker Jobs (this binary's image).
    #[arg(long, value_name = "IMAGE", env = "IMAGEPUSH_WORKER_IMAGE", default_value = concat!("imagepush:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,
    /// imagePullPolicy of the worker container.
    #[arg(long, value_name = "POLICY", env = "IMAGEPUSH_WORKER_IMAGE_PULL_POLICY")]
    pub worker_image_pull_policy: Option<String>,
    /// YAML file with the worker pods' defaults: resources, tolerations, nodeSelector,
    /// affinity, priorityClassName, imagePullSecrets, env, labels, annotations (see
    /// docs/reference.md). An ImagePush's spec.worker chooses within them.
    #[arg(long, value_name = "FILE", env = "IMAGEPUSH_WORKER_DEFAULTS")]
    pub worker_defaults: Option<PathBuf>,
    /// A node directory under which hostPath sources are allowed (repeatable; none: hostPath refused).
    #[arg(long = "allowed-host-path-root", value_name = "DIR")]
    pub allowed_host_path_roots: Vec<PathBuf>,
    /// Repositories ImagePush objects may push to (repeatable; none: any): registry[:port]/path,
    /// `*` within a part, a last part `**` for everything below (ghcr.io/acme/**). A mirror's
    /// target needs a `**` pattern at or above its prefix.
    #[arg(long = "allowed-target", value_name = "PATTERN")]
    pub allowed_targets: Vec<String>,
    /// Seconds between progress updates of a running push.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub progress_interval: u64,
    /// Push timeout when the spec gives none, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub default_timeout: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so that only one replica acts.
    #[arg(long)]
    pub leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, value_name = "NAME", default_value = "imagepush-controller")]
    pub lease_name: String,
}

async fn client(
    kubeconfig: &Option<PathBuf>,
) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Runs `imagepush controller` until `shutdown` (exit 0); returns the process exit code.
pub async fn run(args: ControllerArgs, shutdown: Shutdown) -> i32 {
    for root in &args.allowed_host_path_roots {
        if let Err(why) = controller::validate::check_allowed_root(root) {
            eprintln!("error: --allowed-host-path-root {}: {why}", root.display());
            return 2;
        }
    }
    let mut allowed_targets = Vec::new();
    for pattern in &args.allowed_targets {
        match pattern.parse::<controller::policy::TargetPattern>() {
            Ok(p) => allowed_targets.push(p),
            Err(why) => {
                eprintln!("error: --allowed-target {why}");
                return 2;
            }
        }
    }
    let pod = match &args.worker_defaults {
        None => PodSettings::default(),
        Some(path) => match PodSettings::load(path) {
            Ok(pod) => pod,
            Err(why) => {
                eprintln!("error: --worker-defaults {}: {why}", path.display());
                return 2;
            }
        },
    };
    let client = match client(&args.kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot configure the Kubernetes client: {e}");
            return 2;
        }
    };
    let config = controller::Config {
        namespace: args.namespace,
        worker: WorkerSettings {
            image: args.worker_image,
            image_pull_policy: args.worker_image_pull_policy,
            default_timeout: Duration::from_secs(args.default_timeout.max(1)),
            pod,
        },
        allowed_host_path_roots: args.allowed_host_path_roots,
        allowed_targets,
        progress_interval: Duration::from_secs(args.progress_interval.max(1)),
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_election.then_some(LeaderElection {
            namespace: args.lease_namespace,
            lease_name: args.lease_name,
            identity: controller::leader::identity(),
        }),
    };
    match controller::run(client, config, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            5
        }
    }
}
