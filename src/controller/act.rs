//! The writes of a reconcile: carrying out the step `decide` chose. One function per step;
//! each creates or deletes a Job when the step says so, applies the status (only when it
//! changed, with the object's resourceVersion as a precondition) and publishes an event
//! when something a person should know changed.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::decide::{self, Facts, Problem, Step};
use super::observe::controlled_by;
use super::pod_settings::PodSettings;
use super::status::{self, reasons};
use super::{Context, Error, facts, job, knowledge, metrics, status_apply, validate};
use crate::crd::{ImagePush, ImagePushStatus, Phase};
use crate::push::report::PushReport;
use crate::reference::PushTarget;

/// How soon to look again while Jobs of an older generation stop.
const STOPPING_POLL: Duration = Duration::from_secs(2);
/// An events.k8s.io/v1 note holds at most 1 kB.
const NOTE_LIMIT: usize = 1024;

/// What one step needs besides itself.
pub struct Act<'a> {
    pub ctx: &'a Context,
    pub ip: &'a ImagePush,
    pub facts: &'a Facts<'a>,
}

impl Act<'_> {
    /// The status the step starts from: as read, with the `Suspended` condition as the spec
    /// now says.
    fn status(&self) -> ImagePushStatus {
        let mut st = self.facts.status.clone();
        status::show_suspension(&mut st, self.facts.suspended, self.generation());
        if decide::generation_finished(self.facts) {
            // A new generation that only changed `suspend`: the earlier push stands for it.
            status::observe(&mut st, self.generation());
        }
        st
    }

    /// A finished push handled this spec and the request the annotation holds (if any).
    fn handled(&self, st: &mut ImagePushStatus) {
        st.spec_hash = Some(self.facts.spec_hash.to_string());
        if let Some(r) = self.facts.requested {
            st.last_handled_requested_at = Some(r.to_string());
        }
    }

    /// Carries out every step but `Need` and `Create`.
    pub async fn step(&self, step: Step) -> Result<Action, Error> {
        match step {
            Step::Idle => Ok(Action::await_change()),
            Step::Keep => Ok(Action::requeue(self.ctx.config.progress_interval)),
            Step::Hold { finished } => {
                let mut st = self.status();
                if !finished {
                    status::mark_held(&mut st, self.generation());
                }
                if self.write(&st).await? && !status::says_suspended(self.facts.status) {
                    let note = "spec.suspend is true: the push waits until it is false".into();
                    self.publish(false, status::SUSPENDED, note).await;
                }
                Ok(Action::await_change())
            }
            Step::Refresh => {
                self.write(&self.status()).await?;
                Ok(Action::await_change())
            }
            Step::Need(_) | Step::Create { .. } => unreachable!("handled by reconcile"),
            Step::StopOlder { jobs } => self.stop_older(jobs).await,
            Step::WaitForJobs { jobs } => {
                let message = format!("waiting for worker job {} to stop", jobs.join(", "));
                self.pending(&message).await?;
                Ok(Action::requeue(STOPPING_POLL))
            }
            Step::Stall { problem, delete, spec_invalid } => {
                self.stall(problem, delete, spec_invalid).await
            }
            Step::Blocked { problem, recheck } => {
                self.flag(problem, status::mark_waiting).await?;
                Ok(Action::requeue(recheck))
            }
            Step::NotStarting { job, problem } => self.not_starting(job, problem).await,
            Step::Running { job, attempt, progress, recheck } => {
                let mut st = self.status();
                st.phase = Some(Phase::Running);
                st.job_name = Some(job.clone());
                st.attempt = Some(attempt);
                if let Some(p) = progress {
                    st.progress = Some(status::progress_status(&p));
                }
                let message = format!("pushing to {} (job {job})", self.facts.target);
                status::mark_reconciling(
                    &mut st,
                    reasons::PROGRESSING,
                    &message,
                    self.generation(),
                );
                self.write(&st).await?;
                let running = self.ctx.jobs.state().iter().filter(|j| facts::unfinished(j)).count();
                let every = decide::progress_every(self.ctx.config.progress_interval, running);
                Ok(Action::requeue(recheck.map_or(every, |r| r.max(every))))
            }
            Step::Succeeded { job, report, delete } => self.succeeded(job, *report, delete).await,
            Step::RetryAt { job, attempt, problem, at, delete } => {
                self.retry_at(job, attempt, problem, at, delete).await
            }
        }
    }

    fn generation(&self) -> i64 {
        self.facts.generation
    }

    /// Observes the push's duration: from its first worker Job (`status.startTime`) to now.
    fn push_took(&self, result: &str) {
        let Some(start) = &self.facts.status.start_time else { return };
        let took = decide::elapsed(start.0, self.facts.now).as_secs_f64();
        let label = metrics::ResultLabel { result: result.into() };
        self.ctx.metrics.push_duration.get_or_create(&label).observe(took);
    }

    /// Deletes the running Jobs of older generations (foreground: each stays visible until
    /// its pod is gone, so the next generation waits for it).
    async fn stop_older(&self, jobs: Vec<String>) -> Result<Action, Error> {
        for name in &jobs {
            if let Err(refused) = self.delete_job(name, PropagationPolicy::Foreground).await? {
                self.flag(refused, status::mark_waiting).await?;
                return Ok(Action::requeue(Duration::from_secs(120)));
            }
        }
        let message = format!(
            "stopping worker job {} of an earlier generation or push request before pushing generation {}",
            jobs.join(", "),
            self.generation()
        );
        self.pending(&message).await?;
        self.publish(false, "Superseded", message).await;
        Ok(Action::requeue(STOPPING_POLL))
    }

    /// Phase Pending, reconciling with `message`.
    async fn pending(&self, message: &str) -> Result<(), Error> {
        let mut st = self.status();
        st.phase = Some(Phase::Pending);
        status::mark_reconciling(&mut st, reasons::PROGRESSING, message, self.generation());
        self.write(&st).await.map(|_| ())
    }

    async fn stall(
        &self,
        problem: Problem,
        delete: Option<String>,
        spec_invalid: bool,
    ) -> Result<Action, Error> {
        let mut st = self.status();
        if spec_invalid {
            st.job_name = None;
            st.attempt = None;
        }
        st.next_attempt_time = None;
        self.handled(&mut st);
        let written = self.flag_status(st, &problem, status::mark_stalled).await?;
        if written {
            if !spec_invalid {
                count(&self.ctx.metrics, "failed");
                self.push_took("failed");
            }
            let reason = metrics::ReasonLabel { reason: problem.reason.clone() };
            self.ctx.metrics.push_failures.get_or_create(&reason).inc();
        }
        // After the status, so that a reconcile the deletion starts sees a finished generation.
        if let Some(name) = &delete {
            let _ = self.delete_job(name, PropagationPolicy::Background).await?;
        }
        Ok(Action::await_change())
    }

    async fn not_starting(&self, job: String, problem: Problem) -> Result<Action, Error> {
        let mut st = self.status();
        st.phase = Some(Phase::Pending);
        st.job_name = Some(job);
        st.next_attempt_time = None;
        status::mark_reconciling(&mut st, &problem.reason, &problem.message, self.generation());
        self.warn_on_new_reason(&st, &problem).await?;
        Ok(Action::requeue(self.ctx.config.progress_interval))
    }

    async fn succeeded(
        &self,
        job: String,
        report: PushReport,
        delete: Option<String>,
    ) -> Result<Action, Error> {
        let mut st = self.status();
        st.job_name = Some(job);
        st.next_attempt_time = None;
        self.handled(&mut st);
        status::apply_success(&mut st, &report, self.generation());
        if self.write(&st).await? {
            count(&self.ctx.metrics, "succeeded");
            self.push_took("succeeded");
            let m = &self.ctx.metrics;
            m.bytes_uploaded.inc_by(report.totals.bytes_uploaded);
            m.blobs_uploaded.inc_by(report.totals.uploaded);
            m.blobs_mounted.inc_by(report.totals.mounted);
            m.blobs_existed.inc_by(report.totals.existed);
            let note = status::condition(&st, status::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            self.publish(false, reasons::PUSHED, note).await;
        }
        if let Some(name) = &delete {
            let _ = self.delete_job(name, PropagationPolicy::Background).await?;
        }
        Ok(Action::await_change())
    }

    async fn retry_at(
        &self,
        job: String,
        attempt: u32,
        problem: Problem,
        at: Timestamp,
        delete: Option<String>,
    ) -> Result<Action, Error> {
        let mut st = self.status();
        st.phase = Some(Phase::Running);
        st.job_name = Some(job);
        st.attempt = Some(attempt);
        st.next_attempt_time = Some(Time(at));
        st.message = Some(problem.message.clone());
        // The time, not the seconds left: the message (and so the status) stays the same
        // until the attempt starts.
        let when = at.round(k8s_openapi::jiff::Unit::Second).unwrap_or(at);
        let message = format!("{}; attempt {} at {when}", problem.message, attempt + 1);
        status::mark_reconciling(&mut st, &problem.reason, &message, self.generation());
        self.warn_on_new_reason(&st, &Problem::new(&problem.reason, message)).await?;
        if let Some(name) = &delete {
            let _ = self.delete_job(name, PropagationPolicy::Background).await?;
        }
        let wait = decide::elapsed(self.facts.now, at);
        Ok(Action::requeue(wait.max(Duration::from_secs(1))))
    }

    /// Creates the worker Job. `Err(step)`: the API server refused it, and `step` says how
    /// that is reported.
    pub async fn create_job(
        &self,
        target: &PushTarget,
        pod: &PodSettings,
        attempt: u32,
    ) -> Result<Result<String, Step>, Error> {
        let (ctx, ip) = (self.ctx, self.ip);
        let ns = self.facts.namespace;
        let pushes = ctx.store.state();
        let sources = knowledge::sources_for(target, ns, pushes.iter().map(|p| p.as_ref()));
        let roots = &ctx.config.allowed_host_path_roots;
        let host_root = ip
            .spec
            .source
            .host_path
            .as_ref()
            .and_then(|hp| validate::host_path_root(&hp.path, roots));
        let settings = &ctx.config.worker;
        let job = job::build(ip, self.generation(), attempt, settings, pod, &sources, host_root);
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
        let params =
            PostParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() };
        match jobs.create(&params, &job).await {
            Ok(_) => {
                ctx.metrics.jobs_created.inc();
                info!(job = %name, attempt, "worker job created");
                Ok(Ok(name))
            }
            // Ours from an earlier reconcile (not yet in our list), or somebody else's.
            Err(kube::Error::Api(e)) if e.code == 409 => match jobs.get_opt(&name).await? {
                Some(existing) if controlled_by(&existing, ip) => Ok(Ok(name)),
                // Gone again in between: the next reconcile tries anew.
                None => Err(kube::Error::Api(e).into()),
                Some(_) => {
                    let message = format!(
                        "job {name} already exists and is not this ImagePush's; delete it to let the push start"
                    );
                    Ok(Err(Step::Blocked {
                        problem: Problem::new(reasons::JOB_NAME_CONFLICT, message),
                        recheck: Duration::from_secs(120),
                    }))
                }
            },
            Err(kube::Error::Api(e)) => match decide::job_create_refused(e.code, &e.message) {
                Some(step) => Ok(Err(step)),
                None => Err(kube::Error::Api(e).into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// A new worker Job exists: the status says so and, for the first attempt, an event too.
    pub async fn started(&self, name: &str, attempt: u32) -> Result<Action, Error> {
        let mut st = self.status();
        st.phase = Some(Phase::Running);
        st.job_name = Some(name.to_string());
        st.attempt = Some(attempt);
        st.next_attempt_time = None;
        st.progress = None;
        let target = self.facts.target;
        if attempt == 1 {
            st.start_time = Some(status::now());
            st.completion_time = None;
            st.message = None;
            let message = format!("pushing to {target} (job {name})");
            status::mark_reconciling(&mut st, reasons::PROGRESSING, &message, self.generation());
            // The event first: if the status write fails, the next reconcile finds the Job
            // and does not start (or announce) it again.
            let note = format!("worker job {name} pushes to {target}");
            self.publish(false, "PushStarted", note).await;
        } else {
            let why = st.message.clone().unwrap_or_default();
            let message = format!("retrying after: {why} (job {name})");
            status::mark_reconciling(&mut st, reasons::RETRYING, &message, self.generation());
        }
        self.write(&st).await?;
        Ok(Action::requeue(self.ctx.config.progress_interval))
    }

    /// Deletes a worker Job; its pods are stopped gracefully. `Err(problem)`: the API server
    /// forbade it (RBAC), which a person must fix.
    async fn delete_job(
        &self,
        name: &str,
        policy: PropagationPolicy,
    ) -> Result<Result<(), Problem>, Error> {
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), self.facts.namespace);
        let params = DeleteParams { propagation_policy: Some(policy), ..Default::default() };
        match jobs.delete(name, &params).await {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Ok(())),
            Err(kube::Error::Api(e)) if e.code == 403 => Ok(Err(Problem::new(
                reasons::WORKER_JOB_FORBIDDEN,
                format!("the worker job {name} cannot be deleted: {}", e.message),
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the status and publishes a Warning event when the Ready reason changed.
    async fn warn_on_new_reason(
        &self,
        st: &ImagePushStatus,
        problem: &Problem,
    ) -> Result<(), Error> {
        let before = status::condition(self.facts.status, status::READY).map(|c| c.reason.as_str());
        if self.write(st).await? && before != Some(problem.reason.as_str()) {
            self.publish(true, &problem.reason, problem.message.clone()).await;
        }
        Ok(())
    }

    /// Marks the status stalled (`mark`: for good, or waiting) and publishes a Warning event
    /// when the reason or message changed.
    async fn flag(
        &self,
        problem: Problem,
        mark: fn(&mut ImagePushStatus, &str, &str, i64),
    ) -> Result<bool, Error> {
        self.flag_status(self.status(), &problem, mark).await
    }

    async fn flag_status(
        &self,
        mut st: ImagePushStatus,
        problem: &Problem,
        mark: fn(&mut ImagePushStatus, &str, &str, i64),
    ) -> Result<bool, Error> {
        mark(&mut st, &problem.reason, &problem.message, self.generation());
        let before = status::condition(self.facts.status, status::STALLED)
            .map(|c| (c.reason.clone(), c.message.clone()));
        let written = self.write(&st).await?;
        if written
            && before != Some((problem.reason.clone(), st.message.clone().unwrap_or_default()))
        {
            self.publish(true, &problem.reason, problem.message.clone()).await;
        }
        Ok(written)
    }

    /// Writes `new` as the status if it differs from what the reconcile started from: a
    /// server-side apply of the whole status (`status_apply`), on the resourceVersion the
    /// decision was made on. A newer object (409) means the decision was made on old facts:
    /// the write is refused and the reconcile runs again.
    async fn write(&self, new: &ImagePushStatus) -> Result<bool, Error> {
        let old = self.facts.status;
        if old == new && self.ip.status.is_some() {
            return Ok(false);
        }
        let mut rv = self.ip.resource_version();
        if let Some(managed) =
            status_apply::upgraded(self.ip.managed_fields(), super::FIELD_MANAGER)
        {
            rv = self.upgrade_field_manager(managed, rv.as_deref()).await?.resource_version();
        }
        self.apply_status(new, rv.as_deref()).await?;
        Ok(true)
    }

    /// Replaces the object's managedFields (through the main resource: a subresource write
    /// ignores them; a merge patch replaces the list whole), on `rv`.
    async fn upgrade_field_manager(
        &self,
        managed: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry>,
        rv: Option<&str>,
    ) -> Result<ImagePush, Error> {
        let api: Api<ImagePush> = Api::namespaced(self.ctx.client.clone(), self.facts.namespace);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": rv, "managedFields": managed},
        });
        let params =
            PatchParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() };
        info!(name = %self.ip.name_any(), "status fields of a merge patch handed over to server-side apply");
        Ok(api.patch(&self.ip.name_any(), &params, &Patch::Merge(patch)).await?)
    }

    async fn apply_status(
        &self,
        st: &ImagePushStatus,
        rv: Option<&str>,
    ) -> Result<ImagePush, Error> {
        let api: Api<ImagePush> = Api::namespaced(self.ctx.client.clone(), self.facts.namespace);
        let name = self.ip.name_any();
        let body = status_apply::body(st, &name, rv)?;
        let params = PatchParams::apply(super::FIELD_MANAGER).force();
        Ok(api.patch_status(&name, &params, &Patch::Apply(body)).await?)
    }

    async fn publish(&self, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(status::truncate_utf8(&note, NOTE_LIMIT).to_string()),
            action: "Push".to_string(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&event, &self.ip.object_ref(&())).await {
            warn!(error = %e, "cannot publish event");
        }
    }
}

fn count(metrics: &metrics::Metrics, result: &str) {
    metrics.pushes.get_or_create(&metrics::ResultLabel { result: result.into() }).inc();
}
