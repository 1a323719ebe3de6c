//! One reconcile of one ImagePush. Every step looks at the world (the Jobs of this
//! generation, their pods and logs), not at a memory of it, so a restarted controller picks
//! up where the last one was, and a finished generation costs no write at all.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::status::{self, reasons};
use super::{Context, Error, job, knowledge, validate};
use crate::crd::{ImagePush, ImagePushStatus, Phase};
use crate::push::progress::ProgressLine;
use crate::push::report::PushReport;

/// Tries (worker Jobs) per generation for transient failures before giving up.
pub const MAX_ATTEMPTS: u32 = 4;

/// Wait before the next attempt: 30 s, 60 s, 120 s, ...
fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_secs(30u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)))
}

fn job_finished(job: &Job) -> Option<(bool, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions {
        if c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed") {
            return Some((c.type_ == "Complete", c.reason.clone().unwrap_or_default()));
        }
    }
    None
}

fn job_finished_at(job: &Job) -> Option<k8s_openapi::jiff::Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

fn attempt_of(job: &Job) -> u32 {
    job.labels().get(job::LABEL_ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(1)
}

/// What the worker said: the full report from its log (`{"event":"report"}` line), else the
/// compact one from its termination message.
/// `tail_lines`: only the end of the log (enough for the latest progress line of a running
/// worker); `None` for the whole log, where the final report is.
async fn worker_output(
    ctx: &Context,
    ns: &str,
    job_name: &str,
    tail_lines: Option<i64>,
) -> Result<(Option<PushReport>, Option<ProgressLine>, Option<String>), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut list =
        pods.list(&ListParams::default().labels(&format!("job-name={job_name}"))).await?.items;
    list.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let Some(pod) = list.last() else { return Ok((None, None, None)) };
    let pod_name = pod.name_any();
    let mut report = None;
    let mut progress = None;
    match pods
        .logs(
            &pod_name,
            &LogParams { container: Some("push".into()), tail_lines, ..Default::default() },
        )
        .await
    {
        Ok(log) => {
            for line in log.lines().rev() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                match v.get("event").and_then(|e| e.as_str()) {
                    Some("report") if report.is_none() => {
                        report = serde_json::from_value::<PushReport>(v["report"].clone()).ok();
                    }
                    Some("progress") if progress.is_none() => {
                        progress =
                            serde_json::from_value::<ProgressLine>(v["progress"].clone()).ok();
                    }
                    _ => {}
                }
                if report.is_some() && progress.is_some() {
                    break;
                }
            }
        }
        Err(e) => warn!(pod = %pod_name, error = %e, "cannot read the worker's log"),
    }
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if report.is_none()
        && let Some(message) = terminated.and_then(|t| t.message.as_ref())
    {
        report = serde_json::from_str::<PushReport>(message).ok();
    }
    // A pod that cannot start (missing Secret, bad volume) says so while waiting.
    let waiting = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .filter(|w| {
            matches!(
                w.reason.as_deref(),
                Some("CreateContainerConfigError")
                    | Some("ImagePullBackOff")
                    | Some("ErrImagePull")
            )
        })
        .map(|w| {
            format!(
                "{}: {}",
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default()
            )
        });
    Ok((report, progress, waiting))
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
    api.patch_status(
        &ip.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": value })),
    )
    .await?;
    Ok(true)
}

async fn publish(
    ctx: &Context,
    ip: &ImagePush,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ip.object_ref(&())).await {
        warn!(error = %e, "cannot publish event");
    }
}

/// Stalls with `reason` and counts it as a failed push; publishes a Warning event only when
/// the reason or message changed.
async fn stall(
    ctx: &Context,
    ip: &ImagePush,
    old: &ImagePushStatus,
    st: ImagePushStatus,
    reason: &str,
    message: &str,
    generation: i64,
) -> Result<(), Error> {
    ctx.metrics
        .push_failures
        .get_or_create(&super::metrics::ReasonLabel { reason: reason.into() })
        .inc();
    stall_with(ctx, ip, old, st, reason, message, generation, status::mark_stalled).await
}

/// Like `stall`, for something that may appear later: the generation stays unfinished.
async fn wait_for_dependency(
    ctx: &Context,
    ip: &ImagePush,
    old: &ImagePushStatus,
    st: ImagePushStatus,
    reason: &str,
    message: &str,
    generation: i64,
) -> Result<(), Error> {
    stall_with(ctx, ip, old, st, reason, message, generation, status::mark_waiting).await
}

#[allow(clippy::too_many_arguments)]
async fn stall_with(
    ctx: &Context,
    ip: &ImagePush,
    old: &ImagePushStatus,
    mut st: ImagePushStatus,
    reason: &str,
    message: &str,
    generation: i64,
    mark: fn(&mut ImagePushStatus, &str, &str, i64),
) -> Result<(), Error> {
    mark(&mut st, reason, message, generation);
    let before =
        status::condition(old, status::STALLED).map(|c| (c.reason.clone(), c.message.clone()));
    if write_status(ctx, ip, old, &st).await?
        && before != Some((reason.to_string(), st.message.clone().unwrap_or_default()))
    {
        publish(ctx, ip, true, reason, "Push", message.to_string()).await;
    }
    Ok(())
}

pub async fn reconcile(ip: Arc<ImagePush>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = ip.namespace().ok_or(Error::MissingField("ImagePush", "metadata.namespace"))?;
    let name = ip.name_any();
    let generation = ip.metadata.generation.unwrap_or(1);
    ctx.metrics.reconciles.inc();
    if ip.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let old = ip.status.clone().unwrap_or_default();
    if old.observed_generation == Some(generation)
        && matches!(old.phase, Some(Phase::Succeeded) | Some(Phase::Failed))
    {
        // This generation is finished: nothing to check, nothing to write.
        return Ok(Action::await_change());
    }
    let mut st = old.clone();

    let target = match validate::validate(&ip.spec, &ctx.config.allowed_host_path_roots) {
        Ok(t) => t,
        Err(invalid) => {
            st.job_name = None;
            st.attempt = None;
            stall(&ctx, &ip, &old, st, invalid.reason, &invalid.message, generation).await?;
            return Ok(Action::await_change());
        }
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!(
        "{}={},{}={}",
        job::LABEL_NAME,
        job::name_label(&name),
        job::LABEL_GENERATION,
        generation
    );
    let mut mine: Vec<Job> = jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|o| Some(&o.uid) == ip.metadata.uid.as_ref()))
        .collect();
    mine.sort_by_key(attempt_of);
    let latest = mine.last().cloned();

    // What the worker will mount must exist before it is started; once a Job runs, it is the
    // Job's to find out (no API reads for it on every progress poll).
    if latest.is_none() {
        if let Some(pvc) = &ip.spec.source.persistent_volume_claim {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
            if pvcs.get_metadata_opt(&pvc.claim_name).await?.is_none() {
                let msg = format!(
                    "PersistentVolumeClaim {:?} does not exist in namespace {ns}",
                    pvc.claim_name
                );
                wait_for_dependency(&ctx, &ip, &old, st, reasons::PVC_NOT_FOUND, &msg, generation)
                    .await?;
                // Not a spec error: the claim may appear; look again now and then, no storm.
                return Ok(Action::requeue(Duration::from_secs(120)));
            }
        }
        if let Some(secret) = &ip.spec.credentials_secret {
            // Metadata only: the controller never reads credentials.
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            match secrets.get_metadata_opt(&secret.name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let msg = format!(
                        "credentials Secret {:?} does not exist in namespace {ns}",
                        secret.name
                    );
                    wait_for_dependency(
                        &ctx,
                        &ip,
                        &old,
                        st,
                        reasons::SECRET_NOT_FOUND,
                        &msg,
                        generation,
                    )
                    .await?;
                    return Ok(Action::requeue(Duration::from_secs(120)));
                }
                // Not allowed to look (the chart's rbac.checkSecrets=false): the worker finds out.
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    tracing::debug!(secret = %secret.name, "no permission to check the Secret; the worker will");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    let create = |attempt: u32| {
        let ctx = ctx.clone();
        let ip = ip.clone();
        let target = target.clone();
        let ns = ns.clone();
        async move {
            let pushes = ctx.store.state();
            let sources = knowledge::sources_for(&target, &ns, pushes.iter().map(|p| p.as_ref()));
            let host_root = ip.spec.source.host_path.as_ref().and_then(|hp| {
                validate::host_path_root(&hp.path, &ctx.config.allowed_host_path_roots)
            });
            let job = job::build(&ip, generation, attempt, &ctx.config.worker, &sources, host_root);
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            match jobs
                .create(
                    &PostParams {
                        field_manager: Some(super::FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &job,
                )
                .await
            {
                Ok(_) => {
                    ctx.metrics.jobs_created.inc();
                    info!(
                        job = job.metadata.name.as_deref().unwrap_or_default(),
                        attempt, "worker job created"
                    );
                    Ok(job.metadata.name.unwrap_or_default())
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(job.metadata.name.unwrap_or_default())
                }
                Err(e) => Err(Error::from(e)),
            }
        }
    };

    let Some(job) = latest else {
        let job_name = create(1).await?;
        st.phase = Some(Phase::Running);
        st.job_name = Some(job_name.clone());
        st.attempt = Some(1);
        st.start_time = Some(status::now());
        st.completion_time = None;
        st.progress = None;
        st.message = None;
        status::mark_reconciling(
            &mut st,
            reasons::PROGRESSING,
            &format!("pushing to {} (job {job_name})", ip.spec.target),
            generation,
        );
        // The event first: if the status write fails, the next reconcile finds the Job and
        // does not start (or announce) it again.
        publish(
            &ctx,
            &ip,
            false,
            "PushStarted",
            "Push",
            format!("worker job {job_name} pushes to {}", ip.spec.target),
        )
        .await;
        write_status(&ctx, &ip, &old, &st).await?;
        return Ok(Action::requeue(ctx.config.progress_interval));
    };
    let job_name = job.name_any();
    let attempt = attempt_of(&job);

    let Some((succeeded, job_reason)) = job_finished(&job) else {
        // Running: show progress at a bounded rate, and what keeps a pod from starting.
        let (_, progress, waiting) = worker_output(&ctx, &ns, &job_name, Some(20)).await?;
        st.phase = Some(Phase::Running);
        st.job_name = Some(job_name.clone());
        st.attempt = Some(attempt);
        if let Some(p) = progress {
            st.progress = Some(status::progress_status(&p));
        }
        let message = match &waiting {
            Some(w) => format!("worker job {job_name} cannot start: {w}"),
            None => format!("pushing to {} (job {job_name})", ip.spec.target),
        };
        status::mark_reconciling(&mut st, reasons::PROGRESSING, &message, generation);
        write_status(&ctx, &ip, &old, &st).await?;
        return Ok(Action::requeue(ctx.config.progress_interval));
    };

    let (report, _, _) = worker_output(&ctx, &ns, &job_name, None).await?;
    st.job_name = Some(job_name.clone());
    st.attempt = Some(attempt);
    match (succeeded, report) {
        (true, Some(report)) if report.error.is_none() => {
            status::apply_success(&mut st, &report, generation);
            if write_status(&ctx, &ip, &old, &st).await? {
                ctx.metrics
                    .pushes
                    .get_or_create(&super::metrics::ResultLabel { result: "succeeded".into() })
                    .inc();
                ctx.metrics.bytes_uploaded.inc_by(report.totals.bytes_uploaded);
                ctx.metrics.blobs_uploaded.inc_by(report.totals.uploaded);
                ctx.metrics.blobs_mounted.inc_by(report.totals.mounted);
                ctx.metrics.blobs_existed.inc_by(report.totals.existed);
                let note = status::condition(&st, status::READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                publish(&ctx, &ip, false, reasons::PUSHED, "Push", note).await;
            }
            Ok(Action::await_change())
        }
        (_, Some(report)) if report.error.as_ref().is_some_and(|e| !e.transient) => {
            let e = report.error.expect("checked");
            ctx.metrics
                .pushes
                .get_or_create(&super::metrics::ResultLabel { result: "failed".into() })
                .inc();
            stall(&ctx, &ip, &old, st, &e.reason, &e.message, generation).await?;
            Ok(Action::await_change())
        }
        (_, report) => {
            // Transient (registry or network), or the worker died without a report.
            let (reason, message) = match (&report, job_reason.as_str()) {
                // A worker stopped at its deadline reports `Terminated`: still a timeout.
                (_, "DeadlineExceeded") => {
                    let msg =
                        format!("the push did not finish within its timeout (job {job_name})");
                    stall(&ctx, &ip, &old, st, reasons::TIMED_OUT, &msg, generation).await?;
                    return Ok(Action::await_change());
                }
                (Some(r), _) => {
                    let e = r.error.as_ref();
                    (
                        e.map(|e| e.reason.clone())
                            .unwrap_or_else(|| reasons::WORKER_FAILED.into()),
                        e.map(|e| e.message.clone())
                            .unwrap_or_else(|| "the worker finished without success".into()),
                    )
                }
                (None, r) => (
                    reasons::WORKER_FAILED.to_string(),
                    format!("worker job {job_name} failed ({r}) without a report"),
                ),
            };
            if attempt >= MAX_ATTEMPTS {
                let msg = format!("gave up after {attempt} attempts: {reason}: {message}");
                let reason = reasons::RETRIES_EXHAUSTED;
                stall(&ctx, &ip, &old, st, reason, &msg, generation).await?;
                return Ok(Action::await_change());
            }
            // Not before the registry said it would take us back (a rate limit's Retry-After).
            let registry_wait = report
                .as_ref()
                .and_then(|r| r.error.as_ref())
                .and_then(|e| e.retry_after_seconds)
                .map(Duration::from_secs)
                .unwrap_or_default();
            let wait = retry_backoff(attempt).max(registry_wait);
            let since = job_finished_at(&job)
                .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t));
            let elapsed = since.and_then(|d| Duration::try_from(d).ok()).unwrap_or(wait);
            if elapsed < wait {
                st.phase = Some(Phase::Running);
                let msg = format!(
                    "{message}; attempt {} in {}s",
                    attempt + 1,
                    (wait - elapsed).as_secs()
                );
                status::mark_reconciling(&mut st, &reason, &msg, generation);
                st.message = Some(message.clone());
                if write_status(&ctx, &ip, &old, &st).await?
                    && status::condition(&old, status::READY).map(|c| c.reason.as_str())
                        != Some(reason.as_str())
                {
                    publish(&ctx, &ip, true, &reason, "Push", msg).await;
                }
                return Ok(Action::requeue(wait - elapsed));
            }
            let next = create(attempt + 1).await?;
            st.phase = Some(Phase::Running);
            st.job_name = Some(next.clone());
            st.attempt = Some(attempt + 1);
            st.progress = None;
            status::mark_reconciling(
                &mut st,
                reasons::RETRYING,
                &format!("retrying after: {message} (job {next})"),
                generation,
            );
            write_status(&ctx, &ip, &old, &st).await?;
            Ok(Action::requeue(ctx.config.progress_interval))
        }
    }
}

pub fn error_policy(_ip: Arc<ImagePush>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %error, "reconcile failed");
    ctx.metrics
        .reconcile_failures
        .get_or_create(&super::metrics::ReasonLabel { reason: error.metric_label().into() })
        .inc();
    Action::requeue(Duration::from_secs(5))
}
