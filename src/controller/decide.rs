//! The reconcile's whole decision, as a pure function of what is known: the ImagePush
//! (its generation, whether its spec is valid, its status), its worker Jobs, the worker of
//! the Job that matters, and the time. It returns the next step, or which facts it still
//! needs: the executor (`reconcile`) gathers those and asks again, so a reconcile makes only
//! the API calls its situation needs.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::facts::{
    CREATING, ContainerState, EVENTS_AFTER, EventFacts, Finished, JobFacts, PodFacts, WorkerFacts,
};
use super::job::round;
use super::status::{reasons, says_suspended};
use super::validate::Invalid;
use crate::crd::{ImagePushStatus, Phase};
use crate::push::progress::ProgressLine;
use crate::push::report::PushReport;

/// Tries (worker Jobs) per generation for transient failures before giving up.
pub const MAX_ATTEMPTS: u32 = 4;

/// How long a pod may sit bound to a node that never starts it before we say so (less than
/// the pod garbage collector's 40 s quarantine, after which it replaces such a pod).
pub const NOT_STARTED_GRACE: Duration = Duration::from_secs(30);

/// The longest wait between two looks at a worker that is being started.
pub const STARTING_RECHECK_MAX: Duration = Duration::from_secs(30);

/// Longest the controller waits for a registry that asked to be left alone (its
/// `Retry-After`, copied by the worker into its report): beyond that, an attempt asks again.
pub const MAX_REGISTRY_WAIT: Duration = Duration::from_secs(6 * 3600);

/// How long an earlier generation's Job may take to stop before that is reported (its pod's
/// grace period is 30 s; longer usually means a node that is gone).
pub const STOPPING_TOO_LONG: Duration = Duration::from_secs(120);

/// The reasons of a worker that cannot start.
const CANNOT_START: [&str; 9] = [
    reasons::WORKER_POD_REJECTED,
    reasons::WORKER_UNSCHEDULABLE,
    reasons::WORKER_NOT_STARTED,
    reasons::WORKER_MOUNT_FAILED,
    reasons::WORKER_IMAGE_PULL_FAILED,
    reasons::WORKER_IMAGE_INVALID,
    reasons::WORKER_CREATE_FAILED,
    reasons::WORKER_START_FAILED,
    reasons::WORKER_CANNOT_START,
];

/// Wait before the next attempt: 30 s, 60 s, 120 s, ...
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_secs(30u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)))
}

/// Whether something outside the spec can be expected to fix itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// It may clear by itself (a node appears, a quota frees up, a registry comes back):
    /// keep reconciling, say why.
    Itself,
    /// A person must act outside the spec (create a Secret, relabel a namespace): stalled,
    /// but looked at again, and the push goes on when it clears.
    Person,
    /// Nothing will change it short of a new spec or controller configuration: stalled for
    /// this generation, and the Job is removed.
    Never,
}

/// A reason (CamelCase) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &str, message: impl Into<String>) -> Problem {
        Problem { reason: reason.to_string(), message: message.into() }
    }
}

/// Facts the decision may ask for before it can decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The ImagePush's worker Jobs (of every generation).
    Jobs,
    /// Whether the claim and the credentials Secret exist.
    Dependencies,
    /// The newest pod of this Job, why it cannot start, and what the worker wrote.
    Worker,
}

/// Whether an object the worker mounts exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Missing,
    /// The controller may not look (RBAC): the worker finds out.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependencies {
    /// The layout's claim, when the source is one (`None`: not a claim).
    pub claim: Option<(String, Presence)>,
    /// The credentials Secret, when the spec names one.
    pub secret: Option<(String, Presence)>,
}

/// Everything one decision looks at.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub namespace: &'a str,
    pub generation: i64,
    pub target: &'a str,
    /// The ImagePush is being deleted.
    pub deleting: bool,
    /// `spec.suspend`: start nothing new.
    pub suspended: bool,
    /// Its `imagepush.dev/requested-at` annotation: a value the status has not handled asks
    /// for the current spec to be pushed again.
    pub requested: Option<&'a str>,
    /// A hash of the spec but `suspend` (`spec_hash`).
    pub spec_hash: &'a str,
    pub status: &'a ImagePushStatus,
    /// The spec checks that need no API call.
    pub valid: Result<(), Invalid>,
    pub jobs: Option<Vec<JobFacts>>,
    pub dependencies: Option<Dependencies>,
    /// The worker of the current generation's newest Job.
    pub worker: Option<WorkerFacts>,
    pub now: Timestamp,
}

/// What the executor does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do and nothing to write.
    Idle,
    /// Gather these facts, then decide again.
    Need(Need),
    /// Stop the running Jobs of older generations (their pods are terminated gracefully)
    /// before this generation starts, so an older worker never tags after a newer one.
    StopOlder { jobs: Vec<String> },
    /// Jobs (older ones, or the current one someone deleted) are still stopping.
    WaitForJobs { jobs: Vec<String> },
    /// Failed for good for this generation (a spec problem or a permanent push failure);
    /// `delete`: a Job whose worker can never start.
    Stall { problem: Problem, delete: Option<String>, spec_invalid: bool },
    /// Stalled on something outside the spec; the generation stays open and is looked at
    /// again after `recheck`.
    Blocked { problem: Problem, recheck: Duration },
    /// The worker cannot start yet, but that may clear by itself.
    NotStarting { job: String, problem: Problem },
    /// Start attempt `attempt` of this generation.
    Create { attempt: u32 },
    /// A push would start, but `spec.suspend` holds it back. `finished`: the generation was
    /// pushed (or failed for good) before, and the push held back is a request to push again.
    Hold { finished: bool },
    /// Nothing to push, but the status is behind the spec: its `Suspended` condition, or the
    /// generation (a new one that only changed `suspend`).
    Refresh,
    /// Nothing new: a worker already reported as unable to start is still not running (a
    /// replacement pod that nobody has reported on yet says nothing new). Look again later.
    Keep,
    /// The worker runs (or is being started). `recheck`: while it is being started, when to
    /// look again (`None`: at the configured progress interval).
    Running { job: String, attempt: u32, progress: Option<ProgressLine>, recheck: Option<Duration> },
    /// `delete`: the Job, when a sidecar keeps its pod running after the push ended.
    Succeeded { job: String, report: Box<PushReport>, delete: Option<String> },
    /// A transient failure: attempt `attempt + 1` starts at `at` (the controller's clock);
    /// `delete` as for `Succeeded`.
    RetryAt { job: String, attempt: u32, problem: Problem, at: Timestamp, delete: Option<String> },
}

/// The generation was pushed, or failed for good: it, or an earlier one with the same spec
/// but `suspend`.
pub fn generation_finished(f: &Facts) -> bool {
    let same = f.status.observed_generation == Some(f.generation)
        || f.status.spec_hash.as_deref() == Some(f.spec_hash);
    same && matches!(f.status.phase, Some(Phase::Succeeded) | Some(Phase::Failed))
}

/// The generation is finished and no push of it was requested since.
fn finished(f: &Facts) -> bool {
    generation_finished(f)
        && (f.requested.is_none() || f.status.last_handled_requested_at.as_deref() == f.requested)
}

pub fn decide(f: &Facts) -> Step {
    match next(f) {
        Step::Create { .. } if f.suspended => Step::Hold { finished: generation_finished(f) },
        Step::Idle
            if !f.deleting
                && (says_suspended(f.status) != f.suspended
                    || f.status.observed_generation != Some(f.generation)) =>
        {
            Step::Refresh
        }
        step => step,
    }
}

/// A hash of everything in `spec` that says what to push and how: all of it but `suspend`.
pub fn spec_hash(spec: &crate::crd::ImagePushSpec) -> String {
    use sha2::Digest as _;
    let mut spec = spec.clone();
    spec.suspend = false;
    let json = serde_json::to_vec(&spec).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&json)[..8])
}

/// The next step as if the ImagePush were not suspended.
fn next(f: &Facts) -> Step {
    if f.deleting || finished(f) {
        return Step::Idle;
    }
    let Some(jobs) = &f.jobs else { return Step::Need(Need::Jobs) };
    let round = round(f.requested);
    // Older generations and requests first: even an invalid new spec must stop an older push.
    let older: Vec<&JobFacts> = jobs
        .iter()
        .filter(|j| {
            j.finished.is_none()
                && (j.generation < f.generation
                    || (j.generation == f.generation && j.round != round))
        })
        .collect();
    let running: Vec<String> =
        older.iter().filter(|j| !j.deleting).map(|j| j.name.clone()).collect();
    if !running.is_empty() {
        return Step::StopOlder { jobs: running };
    }
    if let Some(stuck) = older.iter().find(|j| stopping_too_long(j, f.now)) {
        let message = format!(
            "worker job {} of generation {} has been stopping for more than {}s: its pod may be on a \
             node that is gone (delete the pod with --force once the node is known to be down); \
             the new generation starts when it is gone",
            stuck.name,
            stuck.generation,
            STOPPING_TOO_LONG.as_secs()
        );
        let problem = Problem::new(reasons::PREVIOUS_WORKER_STOPPING, message);
        return Step::Blocked { problem, recheck: Duration::from_secs(30) };
    }
    if !older.is_empty() {
        return Step::WaitForJobs { jobs: older.iter().map(|j| j.name.clone()).collect() };
    }
    if let Err(invalid) = &f.valid {
        let problem = Problem::new(invalid.reason, invalid.message.clone());
        return Step::Stall { problem, delete: None, spec_invalid: true };
    }
    let Some(job) = current_job(jobs, f.generation, round.as_deref()) else {
        return before_the_first_job(f);
    };
    if job.deleting && job.finished.is_none() {
        return Step::WaitForJobs { jobs: vec![job.name.clone()] };
    }
    let Some(worker) = &f.worker else { return Step::Need(Need::Worker) };
    if let Some(fin) = &job.finished {
        return outcome(f, job, fin, worker);
    }
    match worker_state(worker, f.now) {
        WorkerState::Starting if reported_unable_to_start(f.status, job) => Step::Keep,
        WorkerState::Running => Step::Running {
            job: job.name.clone(),
            attempt: job.attempt,
            progress: worker.progress.clone(),
            recheck: None,
        },
        WorkerState::Starting => {
            let since = worker.pod.as_ref().map_or(job.created, |p| p.created);
            Step::Running {
                job: job.name.clone(),
                attempt: job.attempt,
                progress: worker.progress.clone(),
                recheck: Some(starting_recheck(since, f.now)),
            }
        }
        // The Job will not finish while the sidecar runs: once the outcome is known, it goes.
        WorkerState::PushEnded(fin) => match outcome(f, job, &fin, worker) {
            Step::Succeeded { job, report, .. } => {
                Step::Succeeded { delete: Some(job.clone()), job, report }
            }
            Step::RetryAt { job, attempt, problem, at, .. } => {
                Step::RetryAt { delete: Some(job.clone()), job, attempt, problem, at }
            }
            Step::Stall { problem, spec_invalid, .. } => {
                Step::Stall { problem, delete: Some(job.name.clone()), spec_invalid }
            }
            other => other,
        },
        WorkerState::CannotStart(problem, fix) => {
            let problem = Problem::new(
                &problem.reason,
                format!("worker job {} cannot start: {}", job.name, problem.message),
            );
            match fix {
                Fix::Itself => Step::NotStarting { job: job.name.clone(), problem },
                Fix::Person => Step::Blocked { problem, recheck: Duration::from_secs(30) },
                Fix::Never => {
                    Step::Stall { problem, delete: Some(job.name.clone()), spec_invalid: false }
                }
            }
        }
    }
}

/// When to look again at a worker that is still being started. Its pod's changes trigger a
/// reconcile anyway; this look is for what only events tell (a volume that cannot be
/// mounted, a pod the Job controller cannot create) and for a pod nobody starts, so it comes
/// once the start has taken `EVENTS_AFTER`, then the less often the longer it takes (half
/// its age, at most `STARTING_RECHECK_MAX`).
pub fn starting_recheck(since: Option<Timestamp>, now: Timestamp) -> Duration {
    let age = since.map(|t| elapsed(t, now)).unwrap_or_default();
    (age / 2).clamp(EVENTS_AFTER, STARTING_RECHECK_MAX)
}

/// Progress reads (a log tail, then a status write when it moved) the controller allows
/// itself per second over all running workers.
pub const PROGRESS_READS_PER_SECOND: f64 = 10.0;

/// How often one running worker's progress is read: every `interval`, or less often when
/// that many workers run that reading them all would pass `PROGRESS_READS_PER_SECOND` (a
/// thousand pushes at once must not become a thousand API calls a second).
pub fn progress_every(interval: Duration, running: usize) -> Duration {
    interval.max(Duration::from_secs_f64(running as f64 / PROGRESS_READS_PER_SECOND))
}

/// A Job whose deletion started `STOPPING_TOO_LONG` ago and has not ended.
fn stopping_too_long(job: &JobFacts, now: Timestamp) -> bool {
    job.deleting_since.is_some_and(|since| elapsed(since, now) > STOPPING_TOO_LONG)
}

/// The newest attempt's Job of `generation` and push request `round`.
pub fn current_job<'a>(
    jobs: &'a [JobFacts],
    generation: i64,
    round: Option<&str>,
) -> Option<&'a JobFacts> {
    jobs.iter()
        .filter(|j| j.generation == generation && j.round.as_deref() == round)
        .max_by_key(|j| j.attempt)
}

fn ready_condition(
    status: &ImagePushStatus,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == super::status::READY)
}

/// Whether the status already says this Job's worker cannot start.
fn reported_unable_to_start(status: &ImagePushStatus, job: &JobFacts) -> bool {
    status.job_name.as_deref() == Some(&job.name)
        && ready_condition(status).is_some_and(|c| CANNOT_START.contains(&c.reason.as_str()))
}

/// No Job yet: what the worker will mount must exist before it is started.
fn before_the_first_job(f: &Facts) -> Step {
    let Some(deps) = &f.dependencies else { return Step::Need(Need::Dependencies) };
    let missing = |what: &str, reason: &str, dep: &Option<(String, Presence)>| {
        dep.as_ref().filter(|(_, p)| *p == Presence::Missing).map(|(name, _)| {
            let message = format!("{what} {name:?} does not exist in namespace {}", f.namespace);
            // Not a spec error: it may appear; look again now and then, no storm.
            Step::Blocked {
                problem: Problem::new(reason, message),
                recheck: Duration::from_secs(120),
            }
        })
    };
    missing("PersistentVolumeClaim", reasons::PVC_NOT_FOUND, &deps.claim)
        .or_else(|| missing("credentials Secret", reasons::SECRET_NOT_FOUND, &deps.secret))
        .unwrap_or(Step::Create { attempt: 1 })
}

/// Where a worker that has not finished stands.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerState {
    /// Not running yet, for no reason anyone reported (the Job controller or kubelet is
    /// getting to it), or between the Job's own pod retries.
    Starting,
    Running,
    /// The `push` container ended while the pod goes on (an injected sidecar keeps it
    /// running, so the Job will not finish): its end is the worker's outcome.
    PushEnded(Finished),
    CannotStart(Problem, Fix),
}

/// What keeps a worker from starting, from its pod and the Warning events about it.
pub fn worker_state(w: &WorkerFacts, now: Timestamp) -> WorkerState {
    let Some(pod) = &w.pod else {
        // No pod: the Job controller could not create one (admission, quota, webhook).
        return match latest(&w.events, "FailedCreate") {
            Some(e) => {
                let fix = if ["exceeded quota", "failed calling webhook", "Internal error"]
                    .iter()
                    .any(|t| e.message.contains(t))
                {
                    Fix::Itself
                } else {
                    Fix::Person
                };
                WorkerState::CannotStart(
                    Problem::new(reasons::WORKER_POD_REJECTED, &e.message),
                    fix,
                )
            }
            None => WorkerState::Starting,
        };
    };
    if let Some((reason, message)) = &pod.unscheduled {
        let text = format!("pod {} is not scheduled ({reason}): {message}", pod.name);
        return WorkerState::CannotStart(
            Problem::new(reasons::WORKER_UNSCHEDULABLE, text),
            Fix::Itself,
        );
    }
    match &pod.push {
        Some(ContainerState::Running) => WorkerState::Running,
        Some(ContainerState::Terminated { exit_code, reason, message, finished_at }) => {
            if matches!(reason.as_str(), "StartError" | "ContainerCannotRun") {
                let text = format!("pod {}: {reason} (exit code {exit_code}): {message}", pod.name);
                return WorkerState::CannotStart(
                    Problem::new(reasons::WORKER_START_FAILED, text),
                    Fix::Never,
                );
            }
            if pod.phase == "Running" && pod.others_running {
                return WorkerState::PushEnded(Finished {
                    succeeded: *exit_code == 0,
                    reason: reason.clone(),
                    at: *finished_at,
                });
            }
            // The pod is done and the Job has not finished: it starts another pod.
            WorkerState::Starting
        }
        Some(ContainerState::Waiting { reason, message }) => {
            waiting(pod, reason, message, &w.events)
        }
        None => not_started(pod, now),
    }
}

/// A `push` container waiting to be created or started.
fn waiting(pod: &PodFacts, reason: &str, message: &str, events: &[EventFacts]) -> WorkerState {
    let problem =
        |ours: &str, text: &str| Problem::new(ours, format!("pod {}: {reason}: {text}", pod.name));
    match reason {
        r if CREATING.contains(&r) => match latest(events, "FailedMount") {
            // A Secret, ConfigMap or key that is not there needs a person; anything else
            // (a volume still attaching) usually passes.
            Some(e) => WorkerState::CannotStart(
                Problem::new(
                    reasons::WORKER_MOUNT_FAILED,
                    format!("pod {}: FailedMount: {}", pod.name, e.message),
                ),
                if e.message.contains("not found") || e.message.contains("non-existent") {
                    Fix::Person
                } else {
                    Fix::Itself
                },
            ),
            None => WorkerState::Starting,
        },
        "ErrImagePull" | "ImagePullBackOff" => WorkerState::CannotStart(
            problem(reasons::WORKER_IMAGE_PULL_FAILED, message),
            Fix::Itself,
        ),
        "InvalidImageName" | "ErrImageNeverPull" => {
            WorkerState::CannotStart(problem(reasons::WORKER_IMAGE_INVALID, message), Fix::Never)
        }
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            WorkerState::CannotStart(problem(reasons::WORKER_CREATE_FAILED, message), Fix::Person)
        }
        _ => WorkerState::CannotStart(problem(reasons::WORKER_CANNOT_START, message), Fix::Itself),
    }
}

/// A pod no kubelet has reported on: fine for a moment, worth saying after a while (a
/// `nodeName` that names no node leaves a pod like that).
fn not_started(pod: &PodFacts, now: Timestamp) -> WorkerState {
    let age = pod.created.map(|c| elapsed(c, now)).unwrap_or_default();
    if pod.phase != "Pending" || age < NOT_STARTED_GRACE {
        return WorkerState::Starting;
    }
    let node = pod.node_name.as_deref().unwrap_or("(none)");
    let text = format!(
        "pod {} has waited more than {}s on node {node} without being started (is {node} a node \
         of the cluster?)",
        pod.name,
        NOT_STARTED_GRACE.as_secs()
    );
    WorkerState::CannotStart(Problem::new(reasons::WORKER_NOT_STARTED, text), Fix::Itself)
}

fn latest<'a>(events: &'a [EventFacts], reason: &str) -> Option<&'a EventFacts> {
    events.iter().rev().find(|e| e.reason == reason)
}

/// `now - then`, where a negative difference (the cluster's clock ahead of ours) counts as
/// no time at all, never as "long ago".
pub fn elapsed(then: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or_default()
}

/// What a finished worker (or a `push` container that ended) means for the generation.
fn outcome(f: &Facts, job: &JobFacts, fin: &Finished, worker: &WorkerFacts) -> Step {
    let report = worker.report.as_ref();
    let error = report.and_then(|r| r.error.as_ref());
    if let Some(r) = report.filter(|r| r.error.is_none() && r.digest.is_some()) {
        let report = Box::new(r.clone());
        return Step::Succeeded { job: job.name.clone(), report, delete: None };
    }
    let stall = |problem: Problem| Step::Stall { problem, delete: None, spec_invalid: false };
    if fin.reason == "DeadlineExceeded" {
        // A worker that never started keeps the reason it could not (the cause to fix).
        if let Some(c) =
            ready_condition(f.status).filter(|_| reported_unable_to_start(f.status, job))
        {
            let message =
                format!("{} (the push timed out before its worker could start)", c.message);
            return stall(Problem::new(&c.reason, message));
        }
        let mut message = format!("the push did not finish within its timeout (job {})", job.name);
        if let Some(e) = error {
            message = format!("{message}: {}", e.message);
        }
        return stall(Problem::new(reasons::TIMED_OUT, message));
    }
    if let Some(e) = error.filter(|e| !e.transient) {
        return stall(Problem::new(&e.reason, e.message.clone()));
    }
    let problem = match error {
        Some(e) => Problem::new(&e.reason, e.message.clone()),
        None => Problem::new(reasons::WORKER_FAILED, died_without_report(job, fin, worker)),
    };
    if job.attempt >= MAX_ATTEMPTS {
        let message = format!(
            "gave up after {} attempts: {}: {}",
            job.attempt, problem.reason, problem.message
        );
        return stall(Problem::new(reasons::RETRIES_EXHAUSTED, message));
    }
    retry(f, job, problem, error.and_then(|e| e.retry_after_seconds))
}

fn died_without_report(job: &JobFacts, fin: &Finished, worker: &WorkerFacts) -> String {
    let why = if fin.reason.is_empty() { String::new() } else { format!(" ({})", fin.reason) };
    let mut text = format!("worker job {} failed{why} without a report", job.name);
    if let Some(ContainerState::Terminated { exit_code, reason, message, .. }) =
        worker.pod.as_ref().and_then(|p| p.push.as_ref())
    {
        text.push_str(&format!("; container push exited {exit_code} ({reason})"));
        if !message.is_empty() {
            text.push_str(&format!(": {message}"));
        }
    }
    text
}

/// The next attempt, not before the backoff and the registry's `Retry-After` (at most
/// `MAX_REGISTRY_WAIT`). The wait is counted from when the controller first sees the failure,
/// by its own clock (the Job's finish time is the cluster's clock, which may be ahead or
/// behind), and the time it then promises (`status.nextAttemptTime`, for this attempt)
/// stands across reconciles and restarts.
fn retry(f: &Facts, job: &JobFacts, problem: Problem, retry_after: Option<u64>) -> Step {
    let promised = f
        .status
        .next_attempt_time
        .as_ref()
        .filter(|_| {
            f.status.attempt == Some(job.attempt) && f.status.job_name.as_deref() == Some(&job.name)
        })
        .map(|t| t.0);
    let at = promised.unwrap_or_else(|| {
        let asked = Duration::from_secs(retry_after.unwrap_or(0)).min(MAX_REGISTRY_WAIT);
        later(f.now, retry_backoff(job.attempt).max(asked))
    });
    if at <= f.now {
        return Step::Create { attempt: job.attempt + 1 };
    }
    let delete = None;
    Step::RetryAt { job: job.name.clone(), attempt: job.attempt, problem, at, delete }
}

/// `now + wait`, saturating.
fn later(now: Timestamp, wait: Duration) -> Timestamp {
    k8s_openapi::jiff::SignedDuration::try_from(wait)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// How the API server's refusal of a new worker Job is handled (`None`: not a refusal, the
/// API failed: retry the reconcile).
pub fn job_create_refused(code: u16, message: &str) -> Option<Step> {
    let problem =
        |reason: &str| Problem::new(reason, format!("the worker Job was refused: {message}"));
    match code {
        // The Job as built is invalid: only a new spec (or controller) changes that.
        400 | 422 => Some(Step::Stall {
            problem: problem(reasons::WORKER_JOB_REJECTED),
            delete: None,
            spec_invalid: false,
        }),
        // RBAC, quota, an admission webhook: outside the spec, may change.
        403 => Some(Step::Blocked {
            problem: problem(reasons::WORKER_JOB_FORBIDDEN),
            recheck: Duration::from_secs(120),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
