//! `imagepush controller`: reconciles `ImagePush` objects by running one worker Job per
//! generation (the same image, running `imagepush push`), reading the worker's report when
//! the Job ends, and writing status, conditions, events and metrics.
//!
//! The controller itself mounts nothing and never reads credentials: the worker Job mounts
//! the layout and the Secret. It must not write anything but ImagePush status, worker Jobs,
//! Events and its leader Lease.

mod act;
mod decide;
mod error;
pub mod facts;
pub mod job;
pub mod knowledge;
pub mod leader;
pub mod metrics;
pub mod names;
mod observe;
pub mod pod_settings;
pub mod policy;
mod quantity;
mod reconcile;
pub mod status;
mod status_apply;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{error, info, warn};

pub use decide::MAX_ATTEMPTS;
pub use error::Error;
pub use leader::LeaderElection;
pub use reconcile::{error_policy, reconcile};

use crate::crd::ImagePush;
use crate::shutdown::Shutdown;

pub const FIELD_MANAGER: &str = "imagepush-controller";

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    pub worker: job::WorkerSettings,
    /// hostPath sources must lie under one of these (none: hostPath refused).
    pub allowed_host_path_roots: Vec<PathBuf>,
    /// Targets must match one of these (none: any target).
    pub allowed_targets: Vec<policy::TargetPattern>,
    /// How often a running push's progress is read.
    pub progress_interval: Duration,
    pub metrics_addr: SocketAddr,
    /// Lease-based leader election (for more than one replica).
    pub leader_election: Option<LeaderElection>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Arc<metrics::Metrics>,
    /// All ImagePush objects the controller sees (for mount knowledge).
    pub store: Store<ImagePush>,
    /// The worker Jobs and their pods (`app.kubernetes.io/managed-by=imagepush`), from watches:
    /// a reconcile reads them here instead of listing them.
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
}

/// Reconciles in flight at once (the rest wait in the queue): a thousand objects created
/// at once do not become a thousand requests and their buffers at once.
const MAX_CONCURRENT_RECONCILES: u16 = 32;

/// How long a stopping controller lets the reconciles in flight finish.
pub const DRAIN: Duration = Duration::from_millis(750);

/// What a reconcile is triggered by: the generation and the push request annotation.
fn trigger_key(ip: &ImagePush) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(ip).hash(&mut h);
    job::requested(ip).hash(&mut h);
    Some(h.finish())
}

/// The ImagePush that controls the Job that controls `pod`, as the Job cache has it.
fn imagepush_of_pod(jobs: &Store<Job>, pod: &Pod) -> Option<ObjectRef<ImagePush>> {
    let ns = pod.namespace()?;
    let owner = pod.owner_references().iter().find(|o| o.controller == Some(true))?;
    let job = jobs.get(&ObjectRef::new(&owner.name).within(&ns))?;
    if job.uid().as_deref() != Some(owner.uid.as_str()) {
        return None;
    }
    let ip = job.owner_references().iter().find(|o| o.controller == Some(true))?;
    let ours = ip.kind == "ImagePush" && ip.api_version.starts_with("imagepush.dev/");
    ours.then(|| ObjectRef::new(&ip.name).within(&ns))
}

/// Runs until `shutdown` is requested: serves metrics, and reconciles (as the leader, with
/// leader election). On shutdown the reconciles in flight get `DRAIN` to finish, then a
/// leader releases its Lease, so a standby takes over at once.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let metrics = Arc::new(metrics::Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let bound =
        metrics::serve(config.metrics_addr, metrics.clone(), ready.clone(), shutdown.clone())
            .await?;
    info!(%bound, "serving /metrics, /healthz, /readyz");
    // Reachability check before declaring readiness.
    let version = tokio::select! {
        biased;
        _ = shutdown.wait() => return Ok(()),
        version = client.apiserver_version() => version?,
    };
    info!(version = %version.git_version, "connected to the Kubernetes API");
    ready.store(true, Ordering::Relaxed);

    let Some(le) = config.leader_election.clone() else {
        run_controller(client, config, metrics, shutdown).await;
        return Ok(());
    };
    let lead = || run_controller(client.clone(), config.clone(), metrics.clone(), shutdown.clone());
    leader::run(&client, &le, &shutdown, lead).await?;
    Ok(())
}

/// Reconciles until `shutdown`: from then on no reconcile starts, and the ones in flight get
/// at most `DRAIN` to finish before they are dropped.
async fn run_controller(
    client: Client,
    config: Config,
    metrics: Arc<metrics::Metrics>,
    shutdown: Shutdown,
) {
    let (pushes, jobs, pods): (Api<ImagePush>, Api<Job>, Api<Pod>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    let managed =
        watcher::Config::default().labels(&format!("{}=imagepush", job::LABEL_MANAGED_BY));
    // Worker Jobs: cached, and their changes trigger their ImagePush's reconcile.
    let (job_store, job_writer) = reflector::store();
    // (Slim copies: a thousand pushes keep a thousand Jobs and pods in memory.)
    let owned = watcher(jobs, managed.clone())
        .default_backoff()
        .modify(facts::slim_job)
        .reflect(job_writer)
        .touched_objects();
    // Worker pods: cached, and their changes trigger the reconcile of the ImagePush whose
    // Job they belong to (a worker that starts, or cannot, is seen at once, not at a poll).
    let (pod_store, pod_writer) = reflector::store();
    let pod_changes = watcher(pods, managed)
        .default_backoff()
        .modify(facts::slim_pod)
        .reflect(pod_writer)
        .touched_objects();
    let owner_of_pod = {
        let jobs = job_store.clone();
        move |pod: Pod| imagepush_of_pod(&jobs, &pod)
    };
    // Spec changes (a new generation) and push requests trigger a reconcile; status writes,
    // the controller's own output, do not: a reconcile that wrote status is not run again at
    // once for it. (Owned Jobs and the requeue timers trigger the rest.)
    let (store, writer) = reflector::store();
    let trigger = watcher(pushes, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_key, Default::default());
    let controller = Controller::for_stream(trigger, store)
        .owns_stream(owned)
        .watches_stream(pod_changes, owner_of_pod)
        .with_config(
            controller::Config::default()
                .debounce(Duration::from_millis(200))
                .concurrency(MAX_CONCURRENT_RECONCILES),
        );
    let reporter =
        Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
        metrics,
        store: controller.store(),
        jobs: job_store,
        pods: pod_store,
    });
    // Each reconcile runs holding a read lock; the shutdown takes the write lock, which waits
    // for those in flight and holds back any that would start. (kube-runtime's own graceful
    // shutdown waits for its cache to fill first, which a signal at startup can make last.)
    let running = Arc::new(tokio::sync::RwLock::new(()));
    let reconciler = {
        let running = running.clone();
        move |obj, ctx: Arc<Context>| {
            let running = running.clone();
            async move {
                let _running = running.read().await;
                // Decide on full caches only: an empty one would look like no worker at all.
                let _ = ctx.jobs.wait_until_ready().await;
                let _ = ctx.pods.wait_until_ready().await;
                reconcile(obj, ctx).await
            }
        }
    };
    let reconciles = controller.run(reconciler, error_policy, ctx).for_each(|result| async move {
        match result {
            Ok((obj, _)) => tracing::debug!(namespace = obj.namespace.as_deref().unwrap_or_default(), name = %obj.name, "reconciled"),
            Err(controller::Error::ReconcilerFailed(e, obj)) => {
                error!(namespace = obj.namespace.as_deref().unwrap_or_default(), name = %obj.name, error = %e, "reconcile failed")
            }
            Err(e) => warn!(error = %e, "controller"),
        }
    });
    tokio::select! {
        () = reconciles => {}
        () = async {
            shutdown.wait().await;
            if tokio::time::timeout(DRAIN, running.write()).await.is_err() {
                warn!("reconciles still running {DRAIN:?} after the signal; abandoning them");
            }
        } => {}
    }
}
