//! One reconcile of one ImagePush: gather the facts `decide` asks for, then carry out the
//! step it returns (create or delete a Job, write status, publish an event). Every step
//! looks at the world (the Jobs, their pods, logs and events), not at a memory of it, so a
//! restarted controller picks up where the last one was, and a finished generation costs no
//! API call at all. The decisions live in `decide`; nothing here chooses between outcomes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::decide::{self, Dependencies, Facts, Need, Presence, Problem, Step};
use super::facts::{self, ContainerState, JobFacts, WorkerFacts};
use super::status::{self, reasons};
use super::{Context, Error, job, knowledge, metrics, validate};
use crate::crd::{ImagePush, ImagePushStatus, Phase};
use crate::reference::Target;

/// How soon to look again while Jobs of an older generation stop.
const STOPPING_POLL: Duration = Duration::from_secs(2);
/// An events.k8s.io/v1 note holds at most 1 kB.
const NOTE_LIMIT: usize = 1024;

pub async fn reconcile(ip: Arc<ImagePush>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = ip.namespace().ok_or(Error::MissingField("ImagePush", "metadata.namespace"))?;
    ctx.metrics.reconciles.inc();
    let status = ip.status.clone().unwrap_or_default();
    let target = validate::validate(&ip.spec, &ctx.config.allowed_host_path_roots);
    let mut facts = Facts {
        namespace: &ns,
        generation: ip.metadata.generation.unwrap_or(1),
        target: &ip.spec.target,
        deleting: ip.metadata.deletion_timestamp.is_some(),
        status: &status,
        valid: target.as_ref().map(|_| ()).map_err(Clone::clone),
        jobs: None,
        dependencies: None,
        worker: None,
        now: Timestamp::now(),
    };
    loop {
        let step = match decide::decide(&facts) {
            Step::Need(need) => {
                gather(&ctx, &ip, &mut facts, need).await?;
                continue;
            }
            Step::Create { attempt } => {
                let target = target.as_ref().expect("decide creates only for a valid spec");
                match create_job(&ctx, &ip, target, facts.generation, attempt).await? {
                    Ok(name) => return started(&ctx, &ip, &facts, &name, attempt).await,
                    Err(refusal) => refusal,
                }
            }
            step => step,
        };
        return execute(&ctx, &ip, &facts, step).await;
    }
}

/// Fetches what `decide` asked for.
async fn gather(
    ctx: &Context,
    ip: &ImagePush,
    facts: &mut Facts<'_>,
    need: Need,
) -> Result<(), Error> {
    let ns = facts.namespace;
    match need {
        Need::Jobs => facts.jobs = Some(owned_jobs(ctx, ip, ns).await?),
        Need::Dependencies => facts.dependencies = Some(dependencies(ctx, ip, ns).await?),
        Need::Worker => {
            let jobs = facts.jobs.as_deref().unwrap_or_default();
            let job = decide::current_job(jobs, facts.generation)
                .expect("decide asks for the worker of a Job");
            facts.worker = Some(observe_worker(ctx, ns, job).await?);
        }
    }
    Ok(())
}

/// The ImagePush's worker Jobs of every generation (by label, then by owner uid).
async fn owned_jobs(ctx: &Context, ip: &ImagePush, ns: &str) -> Result<Vec<JobFacts>, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{}={}", job::LABEL_NAME, job::name_label(&ip.name_any()));
    let list = jobs.list(&ListParams::default().labels(&selector)).await?.items;
    Ok(list
        .iter()
        .filter(|j| j.owner_references().iter().any(|o| Some(&o.uid) == ip.metadata.uid.as_ref()))
        .map(facts::job_facts)
        .collect())
}

/// Whether the claim and the Secret the worker mounts exist (metadata only: the controller
/// never reads credentials).
async fn dependencies(ctx: &Context, ip: &ImagePush, ns: &str) -> Result<Dependencies, Error> {
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

/// The newest pod of `job`, the Warning events that say why it does not start (only while it
/// has not started), and what the worker wrote (the log's tail while it runs, the whole log
/// and the termination message once it ended).
async fn observe_worker(ctx: &Context, ns: &str, job: &JobFacts) -> Result<WorkerFacts, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list =
        pods.list(&ListParams::default().labels(&format!("job-name={}", job.name))).await?.items;
    let pod = facts::newest_pod(&list).map(facts::pod_facts);
    let mut worker = WorkerFacts { pod: pod.clone(), ..Default::default() };
    let Some(pod) = pod else {
        if job.finished.is_none() {
            worker.events = warning_events(ctx, ns, &job.uid).await?;
        }
        return Ok(worker);
    };
    let tail = match &pod.push {
        Some(ContainerState::Running) => Some(20),
        Some(ContainerState::Terminated { .. }) => None,
        None | Some(ContainerState::Waiting { .. }) => {
            if pod.phase == "Pending" && pod.unscheduled.is_none() {
                worker.events = warning_events(ctx, ns, &pod.uid).await?;
            }
            return Ok(worker);
        }
    };
    let params = LogParams {
        container: Some(job::CONTAINER.into()),
        tail_lines: tail,
        ..Default::default()
    };
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

/// Creates the worker Job. `Err(step)`: the API server refused it, and `step` says how that
/// is reported.
async fn create_job(
    ctx: &Context,
    ip: &ImagePush,
    target: &Target,
    generation: i64,
    attempt: u32,
) -> Result<Result<String, Step>, Error> {
    let ns = ip.namespace().unwrap_or_default();
    let pushes = ctx.store.state();
    let sources = knowledge::sources_for(target, &ns, pushes.iter().map(|p| p.as_ref()));
    let host_root = ip
        .spec
        .source
        .host_path
        .as_ref()
        .and_then(|hp| validate::host_path_root(&hp.path, &ctx.config.allowed_host_path_roots));
    let job = job::build(ip, generation, attempt, &ctx.config.worker, &sources, host_root);
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let params =
        PostParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() };
    match jobs.create(&params, &job).await {
        Ok(_) => {
            ctx.metrics.jobs_created.inc();
            info!(job = %name, attempt, "worker job created");
            Ok(Ok(name))
        }
        // Ours from an earlier reconcile (not yet in our list), or somebody else's.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = jobs.get_opt(&name).await?;
            let owner = existing.as_ref().and_then(|j| j.metadata.owner_references.as_ref());
            if owner
                .into_iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == ip.metadata.uid.as_ref())
            {
                return Ok(Ok(name));
            }
            let message = format!(
                "job {name} already exists and is not this ImagePush's; delete it to let the push start"
            );
            Ok(Err(Step::Wait {
                problem: Problem::new(reasons::JOB_NAME_CONFLICT, message),
                recheck: Duration::from_secs(120),
            }))
        }
        Err(kube::Error::Api(e)) => match decide::job_create_refused(e.code, &e.message) {
            Some(step) => Ok(Err(step)),
            None => Err(kube::Error::Api(e).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Deletes a worker Job; its pods are stopped gracefully. `Foreground`: the Job stays
/// visible (and its older generation blocks the next) until its pods are gone.
async fn delete_job(
    ctx: &Context,
    ns: &str,
    name: &str,
    policy: PropagationPolicy,
) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams { propagation_policy: Some(policy), ..Default::default() };
    match jobs.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A new worker Job exists: the status says so and, for the first attempt, an event too.
async fn started(
    ctx: &Context,
    ip: &ImagePush,
    facts: &Facts<'_>,
    name: &str,
    attempt: u32,
) -> Result<Action, Error> {
    let mut st = facts.status.clone();
    st.phase = Some(Phase::Running);
    st.job_name = Some(name.to_string());
    st.attempt = Some(attempt);
    st.next_attempt_time = None;
    st.progress = None;
    if attempt == 1 {
        st.start_time = Some(status::now());
        st.completion_time = None;
        st.message = None;
        status::mark_reconciling(
            &mut st,
            reasons::PROGRESSING,
            &format!("pushing to {} (job {name})", facts.target),
            facts.generation,
        );
        // The event first: if the status write fails, the next reconcile finds the Job and
        // does not start (or announce) it again.
        let note = format!("worker job {name} pushes to {}", facts.target);
        publish(ctx, ip, false, "PushStarted", note).await;
    } else {
        let why = st.message.clone().unwrap_or_default();
        status::mark_reconciling(
            &mut st,
            reasons::RETRYING,
            &format!("retrying after: {why} (job {name})"),
            facts.generation,
        );
    }
    write_status(ctx, ip, facts.status, &st).await?;
    Ok(Action::requeue(ctx.config.progress_interval))
}

/// Carries out every step but `Need` and `Create`.
async fn execute(
    ctx: &Context,
    ip: &ImagePush,
    facts: &Facts<'_>,
    step: Step,
) -> Result<Action, Error> {
    let old = facts.status;
    let generation = facts.generation;
    let mut st = old.clone();
    match step {
        Step::Idle => Ok(Action::await_change()),
        Step::Keep => Ok(Action::requeue(ctx.config.progress_interval)),
        Step::Need(_) | Step::Create { .. } => unreachable!("handled by reconcile"),
        Step::StopOlder { jobs } => {
            for name in &jobs {
                delete_job(ctx, facts.namespace, name, PropagationPolicy::Foreground).await?;
            }
            let message = format!(
                "stopping worker job {} of an earlier generation before pushing generation {generation}",
                jobs.join(", ")
            );
            st.phase = Some(Phase::Pending);
            status::mark_reconciling(&mut st, reasons::PROGRESSING, &message, generation);
            write_status(ctx, ip, old, &st).await?;
            publish(ctx, ip, false, "Superseded", message).await;
            Ok(Action::requeue(STOPPING_POLL))
        }
        Step::WaitForJobs { jobs } => {
            let message = format!("waiting for worker job {} to stop", jobs.join(", "));
            st.phase = Some(Phase::Pending);
            status::mark_reconciling(&mut st, reasons::PROGRESSING, &message, generation);
            write_status(ctx, ip, old, &st).await?;
            Ok(Action::requeue(STOPPING_POLL))
        }
        Step::Stall { problem, delete, spec } => {
            if let Some(name) = &delete {
                delete_job(ctx, facts.namespace, name, PropagationPolicy::Background).await?;
            }
            if spec {
                st.job_name = None;
                st.attempt = None;
            } else {
                count(&ctx.metrics, "failed");
            }
            ctx.metrics
                .push_failures
                .get_or_create(&metrics::ReasonLabel { reason: problem.reason.clone() })
                .inc();
            st.next_attempt_time = None;
            stall_with(ctx, ip, old, st, &problem, generation, status::mark_stalled).await?;
            Ok(Action::await_change())
        }
        Step::Wait { problem, recheck } => {
            stall_with(ctx, ip, old, st, &problem, generation, status::mark_waiting).await?;
            Ok(Action::requeue(recheck))
        }
        Step::Pending { job, problem } => {
            st.phase = Some(Phase::Pending);
            st.job_name = Some(job);
            status::mark_reconciling(&mut st, &problem.reason, &problem.message, generation);
            warn_on_new_reason(ctx, ip, old, &st, &problem).await?;
            Ok(Action::requeue(ctx.config.progress_interval))
        }
        Step::Running { job, attempt, progress } => {
            st.phase = Some(Phase::Running);
            st.job_name = Some(job.clone());
            st.attempt = Some(attempt);
            if let Some(p) = progress {
                st.progress = Some(status::progress_status(&p));
            }
            let message = format!("pushing to {} (job {job})", facts.target);
            status::mark_reconciling(&mut st, reasons::PROGRESSING, &message, generation);
            write_status(ctx, ip, old, &st).await?;
            Ok(Action::requeue(ctx.config.progress_interval))
        }
        Step::Succeeded { job, report } => {
            st.job_name = Some(job);
            st.next_attempt_time = None;
            status::apply_success(&mut st, &report, generation);
            if write_status(ctx, ip, old, &st).await? {
                count(&ctx.metrics, "succeeded");
                let m = &ctx.metrics;
                m.bytes_uploaded.inc_by(report.totals.bytes_uploaded);
                m.blobs_uploaded.inc_by(report.totals.uploaded);
                m.blobs_mounted.inc_by(report.totals.mounted);
                m.blobs_existed.inc_by(report.totals.existed);
                let note = status::condition(&st, status::READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                publish(ctx, ip, false, reasons::PUSHED, note).await;
            }
            Ok(Action::await_change())
        }
        Step::RetryAt { job, attempt, problem, at } => {
            let wait = decide::elapsed(facts.now, at);
            st.phase = Some(Phase::Running);
            st.job_name = Some(job);
            st.attempt = Some(attempt);
            st.next_attempt_time = Some(Time(at));
            st.message = Some(problem.message.clone());
            let message =
                format!("{}; attempt {} in {}s", problem.message, attempt + 1, wait.as_secs());
            status::mark_reconciling(&mut st, &problem.reason, &message, generation);
            warn_on_new_reason(ctx, ip, old, &st, &Problem::new(&problem.reason, message)).await?;
            Ok(Action::requeue(wait.max(Duration::from_secs(1))))
        }
    }
}

fn count(metrics: &metrics::Metrics, result: &str) {
    metrics.pushes.get_or_create(&metrics::ResultLabel { result: result.into() }).inc();
}

/// Writes the status and publishes a Warning event when the Ready reason changed.
async fn warn_on_new_reason(
    ctx: &Context,
    ip: &ImagePush,
    old: &ImagePushStatus,
    st: &ImagePushStatus,
    problem: &Problem,
) -> Result<(), Error> {
    let before = status::condition(old, status::READY).map(|c| c.reason.as_str());
    if write_status(ctx, ip, old, st).await? && before != Some(problem.reason.as_str()) {
        publish(ctx, ip, true, &problem.reason, problem.message.clone()).await;
    }
    Ok(())
}

/// Marks the status stalled (`mark`: for good, or waiting) and publishes a Warning event
/// when the reason or message changed.
async fn stall_with(
    ctx: &Context,
    ip: &ImagePush,
    old: &ImagePushStatus,
    mut st: ImagePushStatus,
    problem: &Problem,
    generation: i64,
    mark: fn(&mut ImagePushStatus, &str, &str, i64),
) -> Result<(), Error> {
    mark(&mut st, &problem.reason, &problem.message, generation);
    let before =
        status::condition(old, status::STALLED).map(|c| (c.reason.clone(), c.message.clone()));
    if write_status(ctx, ip, old, &st).await?
        && before != Some((problem.reason.clone(), st.message.clone().unwrap_or_default()))
    {
        publish(ctx, ip, true, &problem.reason, problem.message.clone()).await;
    }
    Ok(())
}

/// Writes `new` as the status if it differs from `old` (JSON merge patch of the whole status;
/// fields that disappeared are set to null).
async fn write_status(
    ctx: &Context,
    ip: &ImagePush,
    old: &ImagePushStatus,
    new: &ImagePushStatus,
) -> Result<bool, Error> {
    if old == new && ip.status.is_some() {
        return Ok(false);
    }
    let mut value = serde_json::to_value(new)?;
    if let (Some(obj), serde_json::Value::Object(old_obj)) =
        (value.as_object_mut(), serde_json::to_value(old)?)
    {
        for key in old_obj.keys() {
            obj.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    let api: Api<ImagePush> =
        Api::namespaced(ctx.client.clone(), ip.metadata.namespace.as_deref().unwrap_or_default());
    let patch = Patch::Merge(serde_json::json!({ "status": value }));
    api.patch_status(&ip.name_any(), &PatchParams::default(), &patch).await?;
    Ok(true)
}

async fn publish(ctx: &Context, ip: &ImagePush, warning: bool, reason: &str, note: String) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_string(),
        note: Some(status::truncate_utf8(&note, NOTE_LIMIT).to_string()),
        action: "Push".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ip.object_ref(&())).await {
        warn!(error = %e, "cannot publish event");
    }
}

pub fn error_policy(_ip: Arc<ImagePush>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %error, "reconcile failed");
    ctx.metrics
        .reconcile_failures
        .get_or_create(&metrics::ReasonLabel { reason: error.metric_label().into() })
        .inc();
    Action::requeue(Duration::from_secs(5))
}
