//! `imagepush controller`: reconciles `ImagePush` objects by running one worker Job per
//! generation (the same image, running `imagepush push`), reading the worker's report when
//! the Job ends, and writing status, conditions, events and metrics.
//!
//! The controller itself mounts nothing and never reads credentials: the worker Job mounts
//! the layout and the Secret. It must not write anything but ImagePush status, worker Jobs,
//! Events and its leader Lease.

mod decide;
mod error;
pub mod facts;
pub mod job;
pub mod knowledge;
pub mod metrics;
pub mod names;
mod reconcile;
pub mod status;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{error, info, warn};

pub use decide::MAX_ATTEMPTS;
pub use error::Error;
pub use reconcile::{error_policy, reconcile};

use crate::crd::ImagePush;

pub const FIELD_MANAGER: &str = "imagepush-controller";

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    pub worker: job::WorkerSettings,
    /// hostPath sources must lie under one of these (none: hostPath refused).
    pub allowed_host_path_roots: Vec<PathBuf>,
    /// How often a running push's progress is read.
    pub progress_interval: Duration,
    pub metrics_addr: SocketAddr,
    /// Lease-based leader election (for more than one replica).
    pub leader_election: Option<LeaderElection>,
}

#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Arc<metrics::Metrics>,
    /// All ImagePush objects the controller sees (for mount knowledge).
    pub store: Store<ImagePush>,
}

/// Runs until a shutdown signal (or until leadership is lost for good).
pub async fn run(
    client: Client,
    config: Config,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let metrics = Arc::new(metrics::Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let bound = metrics::serve(config.metrics_addr, metrics.clone(), ready.clone()).await?;
    info!(%bound, "serving /metrics, /healthz, /readyz");
    // Reachability check before declaring readiness.
    let version = client.apiserver_version().await?;
    info!(version = %version.git_version, "connected to the Kubernetes API");
    ready.store(true, Ordering::Relaxed);

    let Some(le) = config.leader_election.clone() else {
        run_controller(client, config, metrics).await;
        return Ok(());
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &le.lease_name)
        .with_namespace(&le.namespace)
        .with_identity(&le.identity)
        .with_duration(15)
        .with_grace(5)
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await?;
    let (mut leader, _task) = manager.watch().await;
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        while !*leader.borrow_and_update() {
            info!(identity = %le.identity, "waiting for leadership");
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { return Ok(()) },
                _ = &mut shutdown => return Ok(()),
            }
        }
        info!(identity = %le.identity, "leading");
        let controller = run_controller(client.clone(), config.clone(), metrics.clone());
        tokio::select! {
            _ = controller => return Ok(()),
            _ = async { while leader.changed().await.is_ok() { if !*leader.borrow() { break } } } => {
                warn!("lost leadership; stopping the controller");
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}

async fn run_controller(client: Client, config: Config, metrics: Arc<metrics::Metrics>) {
    let (pushes, jobs): (Api<ImagePush>, Api<Job>) = match &config.namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let controller = Controller::new(pushes, watcher::Config::default())
        .owns(
            jobs,
            watcher::Config::default().labels(&format!("{}=imagepush", job::LABEL_MANAGED_BY)),
        )
        .with_config(controller::Config::default().debounce(Duration::from_millis(200)))
        .shutdown_on_signal();
    let reporter =
        Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
        metrics,
        store: controller.store(),
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(namespace = obj.namespace.as_deref().unwrap_or_default(), name = %obj.name, "reconciled"),
                Err(controller::Error::ReconcilerFailed(e, obj)) => {
                    error!(namespace = obj.namespace.as_deref().unwrap_or_default(), name = %obj.name, error = %e, "reconcile failed")
                }
                Err(e) => warn!(error = %e, "controller"),
            }
        })
        .await;
}
