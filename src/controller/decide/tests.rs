use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::*;
use crate::digest::Digest;
use crate::push::report::ReportError;

fn t0() -> Timestamp {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

fn job(generation: i64, attempt: u32) -> JobFacts {
    JobFacts {
        name: format!("app-{generation}-{attempt}-0a1b2"),
        uid: format!("job-uid-{generation}-{attempt}"),
        generation,
        round: None,
        attempt,
        created: Some(t0() - secs(6)),
        finished: None,
        deleting: false,
        deleting_since: None,
    }
}

fn finished_job(
    generation: i64,
    attempt: u32,
    succeeded: bool,
    reason: &str,
    ago: i64,
) -> JobFacts {
    JobFacts {
        finished: Some(Finished { succeeded, reason: reason.into(), at: Some(t0() - secs(ago)) }),
        ..job(generation, attempt)
    }
}

fn pod(phase: &str, push: Option<ContainerState>) -> PodFacts {
    PodFacts {
        name: "app-2-1-0a1b2-xyz12".into(),
        uid: "pod-uid".into(),
        phase: phase.into(),
        node_name: Some("node-1".into()),
        created: Some(t0() - secs(5)),
        unscheduled: None,
        push,
        others_running: false,
    }
}

fn waiting(reason: &str, message: &str) -> Option<ContainerState> {
    Some(ContainerState::Waiting { reason: reason.into(), message: message.into() })
}

fn terminated(exit_code: i32, reason: &str, message: &str) -> Option<ContainerState> {
    Some(ContainerState::Terminated {
        exit_code,
        reason: reason.into(),
        message: message.into(),
        finished_at: Some(t0() - secs(1)),
    })
}

fn event(reason: &str, message: &str) -> EventFacts {
    EventFacts { reason: reason.into(), message: message.into(), last: Some(t0()) }
}

fn ok_report() -> PushReport {
    let mut r = PushReport::new("reg/app:v1".into(), "reg/app".into());
    r.digest = Some(Digest::sha256(b"m"));
    r
}

fn failed_report(reason: &str, transient: bool, retry_after: Option<u64>) -> PushReport {
    let mut r = PushReport::new("reg/app:v1".into(), "reg/app".into());
    r.error = Some(ReportError {
        reason: reason.into(),
        message: format!("{reason} happened"),
        exit_code: if transient { 5 } else { 4 },
        transient,
        retry_after_seconds: retry_after,
    });
    r
}

struct Case {
    status: ImagePushStatus,
    valid: Result<(), Invalid>,
    jobs: Option<Vec<JobFacts>>,
    deps: Option<Dependencies>,
    worker: Option<WorkerFacts>,
    deleting: bool,
    suspended: bool,
    requested: Option<&'static str>,
}

fn case() -> Case {
    Case {
        status: ImagePushStatus::default(),
        valid: Ok(()),
        jobs: Some(vec![]),
        deps: Some(Dependencies {
            claim: Some(("layouts".into(), Presence::Present)),
            secret: None,
        }),
        worker: None,
        deleting: false,
        suspended: false,
        requested: None,
    }
}

impl Case {
    fn jobs(mut self, jobs: Vec<JobFacts>) -> Case {
        self.jobs = Some(jobs);
        self
    }
    fn worker(
        mut self,
        pod: Option<PodFacts>,
        events: Vec<EventFacts>,
        report: Option<PushReport>,
    ) -> Case {
        self.worker = Some(WorkerFacts { pod, events, progress: None, report });
        self
    }
    fn decide(&self) -> Step {
        decide(&Facts {
            namespace: "ns",
            generation: 2,
            target: "reg/app:v1",
            deleting: self.deleting,
            suspended: self.suspended,
            requested: self.requested,
            spec_hash: "spec-2",
            status: &self.status,
            valid: self.valid.clone(),
            jobs: self.jobs.clone(),
            dependencies: self.deps.clone(),
            worker: self.worker.clone(),
            now: t0(),
        })
    }
}

fn problem(step: &Step) -> Option<&Problem> {
    match step {
        Step::Stall { problem, .. }
        | Step::Blocked { problem, .. }
        | Step::NotStarting { problem, .. }
        | Step::RetryAt { problem, .. } => Some(problem),
        _ => None,
    }
}

fn reason(step: &Step) -> &str {
    problem(step).map_or("", |p| p.reason.as_str())
}

fn message(step: &Step) -> &str {
    problem(step).map_or("", |p| p.message.as_str())
}

#[test]
fn finished_or_deleted_objects_need_nothing() {
    let mut c = case();
    c.deleting = true;
    assert_eq!(c.decide(), Step::Idle);
    for phase in [Phase::Succeeded, Phase::Failed] {
        let mut c = case();
        c.jobs = None;
        c.status = ImagePushStatus {
            observed_generation: Some(2),
            phase: Some(phase),
            ..Default::default()
        };
        assert_eq!(c.decide(), Step::Idle, "{phase:?}");
    }
    // An earlier generation finished: this one is not.
    let mut c = case();
    c.jobs = None;
    c.status = ImagePushStatus {
        observed_generation: Some(1),
        phase: Some(Phase::Succeeded),
        ..Default::default()
    };
    assert_eq!(c.decide(), Step::Need(Need::Jobs));
}

#[test]
fn older_generations_are_stopped_before_anything_else() {
    let older = job(1, 2);
    let stopping = JobFacts { deleting: true, ..job(1, 1) };
    let done = finished_job(1, 1, true, "CompletionsReached", 100);
    // Even a spec that no longer validates stops the older push.
    let mut c = case().jobs(vec![older.clone(), done.clone()]);
    c.valid = Err(Invalid { reason: "ReferenceInvalid", message: "bad".into() });
    assert_eq!(c.decide(), Step::StopOlder { jobs: vec![older.name.clone()] });
    let c = case().jobs(vec![stopping.clone(), done.clone()]);
    assert_eq!(c.decide(), Step::WaitForJobs { jobs: vec![stopping.name.clone()] });
    // Finished older Jobs are history.
    assert_eq!(case().jobs(vec![done]).decide(), Step::Create { attempt: 1 });
}

#[test]
fn a_spec_problem_stalls_for_good() {
    let mut c = case();
    c.valid = Err(Invalid { reason: "HostPathNotAllowed", message: "no".into() });
    match c.decide() {
        Step::Stall { problem, delete: None, spec_invalid: true } => {
            assert_eq!(problem.reason, "HostPathNotAllowed")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_first_job_waits_for_what_it_mounts() {
    let mut c = case();
    c.deps = None;
    assert_eq!(c.decide(), Step::Need(Need::Dependencies));
    let with = |claim: Presence, secret: Option<Presence>| {
        let mut c = case();
        c.deps = Some(Dependencies {
            claim: Some(("layouts".into(), claim)),
            secret: secret.map(|p| ("regcred".to_string(), p)),
        });
        c.decide()
    };
    let step = with(Presence::Missing, Some(Presence::Missing));
    assert_eq!(reason(&step), reasons::PVC_NOT_FOUND);
    assert!(message(&step).contains("\"layouts\" does not exist in namespace ns"), "{step:?}");
    assert!(matches!(step, Step::Blocked { recheck, .. } if recheck == Duration::from_secs(120)));
    assert_eq!(
        reason(&with(Presence::Present, Some(Presence::Missing))),
        reasons::SECRET_NOT_FOUND
    );
    // Not allowed to look: the worker finds out.
    assert_eq!(with(Presence::Present, Some(Presence::Unknown)), Step::Create { attempt: 1 });
    assert_eq!(with(Presence::Present, None), Step::Create { attempt: 1 });
}

#[test]
fn a_running_job_is_observed_then_reported() {
    let c = case().jobs(vec![job(2, 1)]);
    assert_eq!(c.decide(), Step::Need(Need::Worker));
    let mut c = c.worker(Some(pod("Running", Some(ContainerState::Running))), vec![], None);
    let progress = ProgressLine { bytes_done: 5, bytes_total: 9, blobs_done: 1, blobs_total: 2 };
    c.worker.as_mut().unwrap().progress = Some(progress.clone());
    assert_eq!(
        c.decide(),
        Step::Running { job: job(2, 1).name, attempt: 1, progress: Some(progress), recheck: None }
    );
    // Someone deleted the current Job: wait until it is gone, then start over.
    let deleting = JobFacts { deleting: true, ..job(2, 1) };
    assert_eq!(
        case().jobs(vec![deleting.clone()]).decide(),
        Step::WaitForJobs { jobs: vec![deleting.name] }
    );
}

/// Every way a worker can fail to start, with the reason, what fixes it and a piece of the
/// cluster's message that must reach the status.
#[test]
fn a_worker_that_cannot_start_says_why() {
    enum Want {
        Running,
        Pending,
        Wait,
        StallAndDelete,
    }
    let psa = "pods \"app-2-1-x\" is forbidden: violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"layout\")";
    let quota = "pods \"app-2-1-x\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=10, limited: pods=10";
    let mount =
        "MountVolume.SetUp failed for volume \"credentials\" : secret \"regcred\" not found";
    let old = PodFacts { created: Some(t0() - secs(120)), ..pod("Pending", None) };
    let unscheduled = PodFacts {
        unscheduled: Some((
            "Unschedulable".into(),
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.".into(),
        )),
        ..pod("Pending", None)
    };
    let sidecar_kept =
        PodFacts { others_running: true, ..pod("Running", terminated(5, "Error", "")) };
    type Row<'a> = (&'a str, Option<PodFacts>, Vec<EventFacts>, Want, &'a str, &'a str);
    let cases: Vec<Row> = vec![
        ("no pod yet", None, vec![], Want::Running, "", ""),
        (
            "pod security",
            None,
            vec![event("FailedCreate", &format!("Error creating: {psa}"))],
            Want::Wait,
            reasons::WORKER_POD_REJECTED,
            "violates PodSecurity",
        ),
        (
            "quota",
            None,
            vec![event("FailedCreate", quota)],
            Want::Pending,
            reasons::WORKER_POD_REJECTED,
            "exceeded quota",
        ),
        (
            "unschedulable",
            Some(unscheduled),
            vec![],
            Want::Pending,
            reasons::WORKER_UNSCHEDULABLE,
            "didn't match Pod's node affinity/selector",
        ),
        (
            "mount",
            Some(pod("Pending", waiting("ContainerCreating", ""))),
            vec![event("FailedMount", mount)],
            Want::Wait,
            reasons::WORKER_MOUNT_FAILED,
            "secret \"regcred\" not found",
        ),
        (
            "creating",
            Some(pod("Pending", waiting("ContainerCreating", ""))),
            vec![event("FailedScheduling", "old")],
            Want::Running,
            "",
            "",
        ),
        (
            "attaching",
            Some(pod("Pending", waiting("ContainerCreating", ""))),
            vec![event(
                "FailedMount",
                "Unable to attach or mount volumes: timed out waiting for the condition",
            )],
            Want::Pending,
            reasons::WORKER_MOUNT_FAILED,
            "timed out waiting",
        ),
        (
            "pull",
            Some(pod("Pending", waiting("ErrImagePull", "failed to pull image \"x\": not found"))),
            vec![],
            Want::Pending,
            reasons::WORKER_IMAGE_PULL_FAILED,
            "failed to pull image",
        ),
        (
            "backoff",
            Some(pod("Pending", waiting("ImagePullBackOff", "Back-off pulling image \"x\""))),
            vec![],
            Want::Pending,
            reasons::WORKER_IMAGE_PULL_FAILED,
            "Back-off pulling",
        ),
        (
            "invalid image",
            Some(pod(
                "Pending",
                waiting("InvalidImageName", "Failed to apply default image tag \"Bad:x\""),
            )),
            vec![],
            Want::StallAndDelete,
            reasons::WORKER_IMAGE_INVALID,
            "Bad:x",
        ),
        (
            "config",
            Some(pod(
                "Pending",
                waiting(
                    "CreateContainerConfigError",
                    "container has runAsNonRoot and image will run as root",
                ),
            )),
            vec![],
            Want::Wait,
            reasons::WORKER_CREATE_FAILED,
            "runAsNonRoot",
        ),
        (
            "create",
            Some(pod(
                "Pending",
                waiting("CreateContainerError", "failed to create containerd container"),
            )),
            vec![],
            Want::Wait,
            reasons::WORKER_CREATE_FAILED,
            "containerd",
        ),
        (
            "start error",
            Some(pod(
                "Failed",
                terminated(
                    128,
                    "StartError",
                    "exec: \"imagepush\": executable file not found in $PATH",
                ),
            )),
            vec![],
            Want::StallAndDelete,
            reasons::WORKER_START_FAILED,
            "executable file not found",
        ),
        (
            "pod retry pending",
            Some(pod("Failed", terminated(5, "Error", ""))),
            vec![],
            Want::Running,
            "",
            "",
        ),
        ("never started", Some(old), vec![], Want::Pending, reasons::WORKER_NOT_STARTED, "node-1"),
        ("just bound", Some(pod("Pending", None)), vec![], Want::Running, "", ""),
        (
            "unknown waiting",
            Some(pod("Pending", waiting("PreCreateHookError", "hook"))),
            vec![],
            Want::Pending,
            reasons::WORKER_CANNOT_START,
            "hook",
        ),
        ("sidecar keeps a failed pod", Some(sidecar_kept), vec![], Want::Running, "", ""),
    ];
    for (name, p, events, want, want_reason, text) in cases {
        let c = case().jobs(vec![job(2, 1)]).worker(p, events, None);
        let step = c.decide();
        let shape = match (&want, &step) {
            (Want::Running, Step::Running { .. }) => true,
            (Want::Pending, Step::NotStarting { .. }) => true,
            (Want::Wait, Step::Blocked { recheck, .. }) => *recheck <= Duration::from_secs(60),
            (Want::StallAndDelete, Step::Stall { delete: Some(j), spec_invalid: false, .. }) => {
                *j == job(2, 1).name
            }
            _ => false,
        };
        if name == "sidecar keeps a failed pod" {
            // The push ended with a transient failure and no report while a sidecar runs: the
            // Job will not retry the pod, so the attempt counts as finished.
            assert!(matches!(step, Step::RetryAt { .. }), "{name}: {step:?}");
            continue;
        }
        assert!(shape, "{name}: {step:?}");
        assert_eq!(reason(&step), want_reason, "{name}: {step:?}");
        assert!(message(&step).contains(text), "{name}: {step:?}");
        if !want_reason.is_empty() {
            assert!(
                message(&step).contains("worker job app-2-1-0a1b2 cannot start"),
                "{name}: {step:?}"
            );
            // A reason the worker cannot start is one that stays until there is news.
            assert!(CANNOT_START.contains(&want_reason), "{want_reason} is not in CANNOT_START");
        }
    }
}

/// A pod the pod garbage collector replaced (it was bound to no node) starts out with no
/// news: what was reported about the Job stays until something new is known.
#[test]
fn a_reported_start_problem_stays_until_there_is_news() {
    let mut c = case().jobs(vec![job(2, 1)]).worker(Some(pod("Pending", None)), vec![], None);
    c.status.job_name = Some(job(2, 1).name);
    let mut conditions = vec![];
    crate::controller::status::set_condition(
        &mut conditions,
        "Ready",
        false,
        reasons::WORKER_NOT_STARTED,
        "x",
        2,
    );
    c.status.conditions = conditions;
    assert_eq!(c.decide(), Step::Keep);
    // News: it runs.
    c.worker.as_mut().unwrap().pod = Some(pod("Running", Some(ContainerState::Running)));
    assert!(matches!(c.decide(), Step::Running { .. }));
    // Another Job's report says nothing about this one.
    let mut other = case().jobs(vec![job(2, 1)]).worker(Some(pod("Pending", None)), vec![], None);
    other.status = c.status.clone();
    other.status.job_name = Some("app-1-1-0a1b2".into());
    assert!(matches!(other.decide(), Step::Running { .. }));
}

#[test]
fn a_push_that_ended_beside_a_sidecar_is_the_outcome() {
    let p = PodFacts { others_running: true, ..pod("Running", terminated(0, "Completed", "")) };
    let c = case().jobs(vec![job(2, 1)]).worker(Some(p), vec![], Some(ok_report()));
    // The Job would not finish while the sidecar runs: it goes once the outcome is known.
    let name = job(2, 1).name;
    let want =
        Step::Succeeded { job: name.clone(), report: Box::new(ok_report()), delete: Some(name) };
    assert_eq!(c.decide(), want);
}

#[test]
fn finished_jobs_end_in_success_a_stall_or_a_retry() {
    let with = |j: JobFacts, report: Option<PushReport>, p: Option<PodFacts>| {
        case().jobs(vec![j]).worker(p, vec![], report).decide()
    };
    assert!(matches!(
        with(finished_job(2, 1, true, "CompletionsReached", 1), Some(ok_report()), None),
        Step::Succeeded { .. }
    ));
    let auth = with(
        finished_job(2, 1, false, "PodFailurePolicy", 1),
        Some(failed_report("AuthenticationFailed", false, None)),
        None,
    );
    assert!(matches!(&auth, Step::Stall { delete: None, spec_invalid: false, .. }), "{auth:?}");
    assert_eq!(reason(&auth), "AuthenticationFailed");
    // The deadline ends a push for good, whatever the worker said as it was stopped.
    let late = with(
        finished_job(2, 1, false, "DeadlineExceeded", 1),
        Some(failed_report("Terminated", true, None)),
        None,
    );
    assert_eq!(reason(&late), reasons::TIMED_OUT);
    assert!(message(&late).contains("Terminated happened"), "{late:?}");
    let exhausted = with(
        finished_job(2, 4, false, "BackoffLimitExceeded", 1),
        Some(failed_report("RegistryUnavailable", true, None)),
        None,
    );
    assert_eq!(reason(&exhausted), reasons::RETRIES_EXHAUSTED);
    assert!(
        message(&exhausted).contains("gave up after 4 attempts: RegistryUnavailable"),
        "{exhausted:?}"
    );
    // No report: what the container said.
    let died = with(
        finished_job(2, 1, false, "BackoffLimitExceeded", 1),
        None,
        Some(pod("Failed", terminated(137, "OOMKilled", ""))),
    );
    assert_eq!(reason(&died), reasons::WORKER_FAILED);
    assert!(
        message(&died).contains(
            "(BackoffLimitExceeded) without a report; container push exited 137 (OOMKilled)"
        ),
        "{died:?}"
    );
}

#[test]
fn retries_wait_for_the_backoff_and_the_registry_and_survive_clock_skew() {
    let retry = |ago: i64, retry_after: Option<u64>, status: ImagePushStatus| {
        let mut c = case()
            .jobs(vec![finished_job(2, 1, false, "BackoffLimitExceeded", ago)])
            .worker(None, vec![], Some(failed_report("RegistryUnavailable", true, retry_after)));
        c.status = status;
        c.decide()
    };
    let at = |step: Step| match step {
        Step::RetryAt { at, attempt: 1, delete: None, .. } => at,
        other => panic!("{other:?}"),
    };
    // Counted from when the controller first sees the failure, by its own clock: the Job's
    // finish time is the cluster's clock. Whether that says 10 s ago, 10 minutes ago (a
    // controller clock ahead of the cluster's, or a controller that was down) or 5 minutes
    // from now (a cluster clock ahead), the whole 30 s backoff is waited.
    for ago in [10, 600, -300] {
        assert_eq!(at(retry(ago, None, Default::default())), t0() + secs(30), "{ago}");
    }
    // The registry asked for 600 s.
    assert_eq!(at(retry(10, Some(600), Default::default())), t0() + secs(600));
    // A registry asking for ever is asked again after 6 hours, and nothing overflows.
    assert_eq!(at(retry(10, Some(u64::MAX), Default::default())), t0() + secs(6 * 3600));
    // Once promised (this attempt, this Job), the time stands, whatever the cluster's clock.
    let promised = |t: Timestamp| ImagePushStatus {
        attempt: Some(1),
        job_name: Some(job(2, 1).name),
        next_attempt_time: Some(Time(t)),
        ..Default::default()
    };
    assert_eq!(at(retry(-300, None, promised(t0() + secs(7)))), t0() + secs(7));
    assert_eq!(retry(-300, None, promised(t0() - secs(1))), Step::Create { attempt: 2 });
    // A promise about another attempt does not count.
    let mut other = promised(t0() - secs(1));
    other.attempt = Some(3);
    assert_eq!(at(retry(10, None, other)), t0() + secs(30));
}

/// An earlier generation's Job that does not go away (its pod on a node that is gone) is
/// waited for, and after two minutes that is said, stalled, with the Job named.
#[test]
fn an_earlier_worker_that_does_not_stop_is_reported() {
    let stopping = |for_secs: i64| JobFacts {
        deleting: true,
        deleting_since: Some(t0() - secs(for_secs)),
        ..job(1, 1)
    };
    let waiting = case().jobs(vec![stopping(60)]).decide();
    assert_eq!(waiting, Step::WaitForJobs { jobs: vec![job(1, 1).name] });
    let step = case().jobs(vec![stopping(180)]).decide();
    assert!(matches!(step, Step::Blocked { .. }), "{step:?}");
    assert_eq!(reason(&step), reasons::PREVIOUS_WORKER_STOPPING);
    assert!(message(&step).contains(&job(1, 1).name), "{step:?}");
    assert!(message(&step).contains("--force"), "{step:?}");
}

/// A worker that never started, whose Job then ran out of time, stalls with the reason it
/// could not start (what is to fix), not as a timed-out push.
#[test]
fn a_timeout_keeps_the_reason_the_worker_could_not_start() {
    let mut c = case().jobs(vec![finished_job(2, 1, false, "DeadlineExceeded", 1)]).worker(
        None,
        vec![],
        None,
    );
    c.status.job_name = Some(job(2, 1).name);
    let mut conditions = vec![];
    let text = "pod p: FailedMount: secret \"regcred\" not found";
    crate::controller::status::set_condition(
        &mut conditions,
        "Ready",
        false,
        reasons::WORKER_MOUNT_FAILED,
        text,
        2,
    );
    c.status.conditions = conditions;
    let step = c.decide();
    assert!(matches!(step, Step::Stall { .. }), "{step:?}");
    assert_eq!(reason(&step), reasons::WORKER_MOUNT_FAILED);
    assert!(message(&step).contains("regcred"), "{step:?}");
    assert!(message(&step).contains("timed out"), "{step:?}");
}

#[test]
fn elapsed_time_is_never_negative() {
    assert_eq!(elapsed(t0(), t0() + secs(3)), Duration::from_secs(3));
    assert_eq!(elapsed(t0() + secs(3), t0()), Duration::ZERO);
}

#[test]
fn refused_jobs_stall_or_wait_with_the_server_message() {
    let invalid = job_create_refused(
        422,
        "Job.batch \"x\" is invalid: spec.template.spec.nodeName: Invalid value",
    )
    .unwrap();
    assert!(
        matches!(invalid, Step::Stall { delete: None, spec_invalid: false, .. }),
        "{invalid:?}"
    );
    assert_eq!(reason(&invalid), reasons::WORKER_JOB_REJECTED);
    assert!(message(&invalid).contains("nodeName: Invalid value"));
    let forbidden = job_create_refused(403, "jobs.batch is forbidden: exceeded quota").unwrap();
    assert_eq!(reason(&forbidden), reasons::WORKER_JOB_FORBIDDEN);
    assert!(matches!(forbidden, Step::Blocked { .. }));
    for transient in [429, 500, 503, 504] {
        assert_eq!(job_create_refused(transient, "busy"), None, "{transient}");
    }
}

fn pushed(generation: i64, handled: Option<&str>, suspended: bool) -> ImagePushStatus {
    let mut st = ImagePushStatus {
        observed_generation: Some(generation),
        phase: Some(Phase::Succeeded),
        last_handled_requested_at: handled.map(String::from),
        ..Default::default()
    };
    crate::controller::status::show_suspension(&mut st, suspended, generation);
    st
}

/// A Job of generation 2 serving push request `value`.
fn requested_job(value: &str, attempt: u32) -> JobFacts {
    JobFacts { round: round(Some(value)), ..job(2, attempt) }
}

#[test]
fn a_new_requested_at_value_pushes_the_finished_generation_again() {
    // Handled, or never asked: nothing to do.
    for (requested, handled) in [(None, None), (None, Some("t1")), (Some("t1"), Some("t1"))] {
        let mut c = case();
        c.jobs = None;
        c.requested = requested;
        c.status = pushed(2, handled, false);
        assert_eq!(c.decide(), Step::Idle, "{requested:?} {handled:?}");
    }
    // A value the status has not handled: a new round of Jobs, from attempt 1, even though
    // the generation's earlier Jobs (no request, or an older one) finished.
    let mut c = case().jobs(vec![finished_job(2, 3, true, "CompletionsReached", 60)]);
    c.requested = Some("t2");
    c.status = pushed(2, Some("t1"), false);
    assert_eq!(c.decide(), Step::Create { attempt: 1 });
    let mut c = case().jobs(vec![JobFacts {
        finished: Some(Finished { succeeded: true, reason: String::new(), at: Some(t0()) }),
        ..requested_job("t1", 1)
    }]);
    c.requested = Some("t2");
    c.status = pushed(2, Some("t1"), false);
    assert_eq!(c.decide(), Step::Create { attempt: 1 });
    // The round's own Job is the current one.
    let mut c = case().jobs(vec![requested_job("t2", 1)]);
    c.requested = Some("t2");
    c.status = pushed(2, Some("t1"), false);
    assert_eq!(c.decide(), Step::Need(Need::Worker));
    // A push of an earlier request still running is stopped first, like an older generation.
    let mut c = case().jobs(vec![requested_job("t1", 1)]);
    c.requested = Some("t2");
    c.status = ImagePushStatus { phase: Some(Phase::Running), ..Default::default() };
    assert_eq!(c.decide(), Step::StopOlder { jobs: vec![requested_job("t1", 1).name] });
    // The annotation set before the first push: that push handles it.
    let mut c = case();
    c.requested = Some("t1");
    assert_eq!(c.decide(), Step::Create { attempt: 1 });
}

#[test]
fn suspend_holds_back_what_would_start_and_only_that() {
    // Nothing pushed yet: held, and the status says so.
    let mut c = case();
    c.suspended = true;
    assert_eq!(c.decide(), Step::Hold { finished: false });
    // A retry that is due: held too.
    let mut c = case().jobs(vec![finished_job(2, 1, false, "BackoffLimitExceeded", 300)]).worker(
        None,
        vec![],
        Some(failed_report("RegistryUnavailable", true, None)),
    );
    c.suspended = true;
    let failed = finished_job(2, 1, false, "BackoffLimitExceeded", 300);
    c.status = ImagePushStatus {
        phase: Some(Phase::Running),
        job_name: Some(failed.name.clone()),
        attempt: Some(1),
        next_attempt_time: Some(Time(t0() - secs(1))),
        ..Default::default()
    };
    assert_eq!(c.decide(), Step::Hold { finished: false });
    c.suspended = false;
    assert_eq!(c.decide(), Step::Create { attempt: 2 });
    // A request to push a finished generation again: held; the generation stays finished.
    let mut c = case().jobs(vec![]);
    c.suspended = true;
    c.requested = Some("t2");
    c.status = pushed(2, Some("t1"), true);
    assert_eq!(c.decide(), Step::Hold { finished: true });
    // A push already running goes on.
    let mut c = case().jobs(vec![job(2, 1)]).worker(
        Some(pod("Running", Some(ContainerState::Running))),
        vec![],
        None,
    );
    c.suspended = true;
    assert!(matches!(c.decide(), Step::Running { .. }), "{:?}", c.decide());
    // An older generation's push is still stopped.
    let mut c = case().jobs(vec![job(1, 1)]);
    c.suspended = true;
    assert_eq!(c.decide(), Step::StopOlder { jobs: vec![job(1, 1).name] });
    // Finished: only the condition follows the spec, both ways.
    for (suspended, shown) in [(true, false), (false, true)] {
        let mut c = case();
        c.jobs = None;
        c.suspended = suspended;
        c.status = pushed(2, None, shown);
        assert_eq!(c.decide(), Step::Refresh, "suspend {suspended}");
        c.status = pushed(2, None, suspended);
        assert_eq!(c.decide(), Step::Idle, "suspend {suspended}, shown");
    }
    // Resumed: what was held starts.
    let mut c = case();
    c.status = ImagePushStatus::default();
    crate::controller::status::mark_held(&mut c.status, 2);
    assert_eq!(c.decide(), Step::Create { attempt: 1 });
}

#[test]
fn a_generation_that_only_toggles_suspend_is_not_pushed_again() {
    // Generation 1 pushed spec-2; generation 2 is the same spec with `suspend` set.
    let mut c = case();
    c.jobs = None;
    c.suspended = true;
    c.status = pushed(1, None, false);
    c.status.spec_hash = Some("spec-2".into());
    assert_eq!(c.decide(), Step::Refresh, "the status takes the generation, nothing is pushed");
    // Already refreshed: nothing at all.
    c.status = pushed(2, None, true);
    c.status.spec_hash = Some("spec-2".into());
    assert_eq!(c.decide(), Step::Idle);
    // Another spec: a push (held back while suspended).
    c.status = pushed(1, None, false);
    c.status.spec_hash = Some("spec-1".into());
    assert_eq!(c.decide(), Step::Need(Need::Jobs));
    c.jobs = Some(vec![]);
    assert_eq!(c.decide(), Step::Hold { finished: false });
}

#[test]
fn the_spec_hash_ignores_suspend_only() {
    let mut spec = crate::crd::ImagePushSpec::from_claim("c", Some("p"), "reg/app:v1");
    let h = spec_hash(&spec);
    spec.suspend = true;
    assert_eq!(spec_hash(&spec), h);
    spec.timeout = Some("5m".into());
    assert_ne!(spec_hash(&spec), h);
}

/// A worker on its way is looked at again when events may say why it waits, then the less
/// often the longer it takes; a running one at the progress interval.
#[test]
fn a_starting_worker_is_looked_at_less_often_the_longer_it_takes() {
    let at = |age: i64| starting_recheck(Some(t0() - secs(age)), t0());
    let table = [(0, 5), (4, 5), (10, 5), (14, 7), (40, 20), (60, 30), (3600, 30)];
    for (age, want) in table {
        assert_eq!(at(age), Duration::from_secs(want), "age {age}s");
    }
    // The cluster's clock ahead of ours, or no timestamp at all: as if just created.
    assert_eq!(at(-90), EVENTS_AFTER);
    assert_eq!(starting_recheck(None, t0()), EVENTS_AFTER);
    // Pending pod created 5 s ago (the `pod` helper): the pod's age counts, not the Job's.
    let c = case().jobs(vec![JobFacts { created: Some(t0() - secs(100)), ..job(2, 1) }]);
    let starting = c.worker(Some(pod("Pending", waiting("ContainerCreating", ""))), vec![], None);
    assert!(
        matches!(starting.decide(), Step::Running { recheck: Some(r), .. } if r == EVENTS_AFTER)
    );
    // No pod yet: the Job's age.
    let c = case().jobs(vec![JobFacts { created: Some(t0() - secs(100)), ..job(2, 1) }]);
    let no_pod = c.worker(None, vec![], None);
    assert!(
        matches!(no_pod.decide(), Step::Running { recheck: Some(r), .. } if r == STARTING_RECHECK_MAX)
    );
    let running = case().jobs(vec![job(2, 1)]).worker(
        Some(pod("Running", Some(ContainerState::Running))),
        vec![],
        None,
    );
    assert!(matches!(running.decide(), Step::Running { recheck: None, .. }));
}

/// Progress is read at the configured interval until so many workers run that the reads
/// would pass the budget; then each is read less often.
#[test]
fn progress_reads_stay_within_the_budget() {
    let s = Duration::from_secs;
    let table = [(s(5), 0, s(5)), (s(5), 50, s(5)), (s(5), 100, s(10)), (s(1), 1000, s(100))];
    for (interval, running, want) in table {
        assert_eq!(progress_every(interval, running), want, "{interval:?} x {running}");
    }
}
