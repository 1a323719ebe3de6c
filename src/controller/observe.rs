//! The reads of a reconcile: the ImagePush's worker Jobs, whether what a worker mounts
//! exists, and the worker of one Job (its newest pod, the warnings about it, what it wrote).
//! Each returns the plain facts `decide` reasons over; none writes anything.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};
use tracing::warn;

use super::decide::{Dependencies, Presence};
use super::facts::{self, ContainerState, JobFacts, WorkerFacts};
use super::{Context, Error, job};
use crate::crd::ImagePush;

/// Lines of a running worker's log read for its latest progress.
const PROGRESS_TAIL: i64 = 20;

/// Whether `ip` is `job`'s controller (ownerReferences can be written by anyone who may
/// create Jobs; only a controller reference with the ImagePush's uid counts).
pub fn controlled_by(job: &Job, ip: &ImagePush) -> bool {
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == ip.metadata.uid.as_ref())
}

/// The ImagePush's worker Jobs of every generation, from the watch cache: by label,
/// controlled by it, and named as the controller names them for their generation, push
/// request and attempt.
pub fn owned_jobs(ctx: &Context, ip: &ImagePush, ns: &str) -> Vec<JobFacts> {
    let name = ip.name_any();
    let label = job::name_label(&name);
    let uid = ip.metadata.uid.clone().unwrap_or_default();
    ctx.jobs
        .state()
        .iter()
        .filter(|j| j.namespace().as_deref() == Some(ns))
        .filter(|j| j.labels().get(job::LABEL_NAME) == Some(&label))
        .filter(|j| controlled_by(j, ip))
        .map(|j| facts::job_facts(j))
        .filter(|f| {
            f.name == job::job_name(&name, &uid, f.generation, f.round.as_deref(), f.attempt)
        })
        .collect()
}

/// Whether the claim and the Secret the worker mounts exist (metadata only: the controller
/// never reads credentials).
pub async fn dependencies(ctx: &Context, ip: &ImagePush, ns: &str) -> Result<Dependencies, Error> {
    let mut deps = Dependencies { claim: None, secret: None };
    if let Some(pvc) = &ip.spec.source.persistent_volume_claim {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        let found = claims.get_metadata_opt(&pvc.claim_name).await?.is_some();
        deps.claim = Some((pvc.claim_name.clone(), presence(found)));
    }
    if let Some(secret) = &ip.spec.credentials_secret {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let seen = match secrets.get_metadata_opt(&secret.name).await {
            Ok(found) => presence(found.is_some()),
            // Not allowed to look (the chart's rbac.checkSecrets=false): the worker finds out.
            Err(kube::Error::Api(e)) if e.code == 403 => Presence::Unknown,
            Err(e) => return Err(e.into()),
        };
        deps.secret = Some((secret.name.clone(), seen));
    }
    Ok(deps)
}

fn presence(found: bool) -> Presence {
    if found { Presence::Present } else { Presence::Missing }
}

/// The newest pod of `job` (by the Job's uid, never by its reusable name; from the watch
/// cache), the Warning events that say why it does not start (`facts::events_wanted`), and
/// what the worker wrote: the log's tail while it runs, the whole log and the termination
/// message when its end matters (the Job finished, or a sidecar keeps the pod running after
/// it).
pub async fn worker(
    ctx: &Context,
    ns: &str,
    job: &JobFacts,
    now: Timestamp,
) -> Result<WorkerFacts, Error> {
    let cached = ctx.pods.state();
    let of_job = cached
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.labels().get("controller-uid") == Some(&job.uid));
    let pod = facts::newest_pod(of_job).map(facts::pod_facts);
    let mut worker = WorkerFacts { pod: pod.clone(), ..Default::default() };
    if let Some(uid) = facts::events_wanted(job, pod.as_ref(), now) {
        worker.events = warning_events(ctx, ns, uid).await?;
    }
    let Some(pod) = pod else { return Ok(worker) };
    let tail = match &pod.push {
        // A finished Job whose pod the cache still shows running: its end matters, read it all.
        Some(ContainerState::Running) if job.finished.is_some() => None,
        Some(ContainerState::Running) => Some(PROGRESS_TAIL),
        Some(ContainerState::Terminated { .. }) if job.finished.is_some() || pod.others_running => {
            None
        }
        Some(ContainerState::Terminated { .. }) | Some(ContainerState::Waiting { .. }) | None => {
            return Ok(worker);
        }
    };
    let params = LogParams {
        container: Some(job::CONTAINER.into()),
        tail_lines: tail,
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match pods.logs(&pod.name, &params).await {
        Ok(log) => (worker.report, worker.progress) = facts::parse_worker_log(&log),
        Err(e) => warn!(pod = %pod.name, error = %e, "cannot read the worker's log"),
    }
    if worker.report.is_none() {
        worker.report = facts::termination_report(&pod);
    }
    Ok(worker)
}

/// Warning events about the object with this uid (core/v1, where the Job controller,
/// scheduler and kubelet write them).
async fn warning_events(
    ctx: &Context,
    ns: &str,
    uid: &str,
) -> Result<Vec<facts::EventFacts>, Error> {
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), ns);
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid},type=Warning"));
    Ok(facts::warning_events(&events.list(&params).await?.items))
}
