//! What one reconcile knows about the world, as plain values: the ImagePush's worker Jobs,
//! the newest pod of the Job that matters, the events that say why it cannot start, and what
//! the worker wrote. Built from API objects by pure functions here; `decide` reasons over
//! them and never sees an API object or a client.

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod, PodSpec};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{decide, job};
use crate::push::progress::ProgressLine;
use crate::push::report::PushReport;
use crate::worker::WorkerLine;

/// One worker Job of the ImagePush (owned by it).
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    pub name: String,
    pub uid: String,
    pub generation: i64,
    /// The push request it serves (`job::round`), `None` for none.
    pub round: Option<String>,
    pub attempt: u32,
    /// When the API server created it (the cluster's clock).
    pub created: Option<Timestamp>,
    /// `Complete` or `Failed` is True (pods are done: the Job controller writes these only
    /// once its pods have terminated).
    pub finished: Option<Finished>,
    /// `deletionTimestamp` is set: its pods are being stopped.
    pub deleting: bool,
    /// Since when (the cluster's clock).
    pub deleting_since: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub succeeded: bool,
    /// The condition's reason (`BackoffLimitExceeded`, `DeadlineExceeded`, ...).
    pub reason: String,
    /// When the condition became true, by the cluster's clock.
    pub at: Option<Timestamp>,
}

/// The `push` container as kubelet reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    Waiting { reason: String, message: String },
    Running,
    Terminated { exit_code: i32, reason: String, message: String, finished_at: Option<Timestamp> },
}

/// The newest pod of a worker Job.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    pub name: String,
    pub uid: String,
    /// Pending, Running, Succeeded or Failed.
    pub phase: String,
    pub node_name: Option<String>,
    pub created: Option<Timestamp>,
    /// `PodScheduled=False`: its reason and the scheduler's message.
    pub unscheduled: Option<(String, String)>,
    /// The `push` container; `None` until kubelet reports it.
    pub push: Option<ContainerState>,
    /// Whether any other container (an injected sidecar) is still running.
    pub others_running: bool,
}

/// A Warning event about the Job or its pod.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFacts {
    pub reason: String,
    pub message: String,
    pub last: Option<Timestamp>,
}

/// What the worker of one Job looks like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerFacts {
    pub pod: Option<PodFacts>,
    /// Warning events on the Job (when it has no pod) or on its pending pod, oldest first.
    pub events: Vec<EventFacts>,
    /// The latest progress line of a running push.
    pub progress: Option<ProgressLine>,
    /// The worker's report, from its log or its termination message.
    pub report: Option<PushReport>,
}

/// A worker Job as the watch cache keeps it: what `job_facts`, `controlled_by` and the pod
/// trigger read (metadata and status), without its spec (the pod template is most of it)
/// or managedFields.
pub fn slim_job(job: &mut Job) {
    job.spec = None;
    job.metadata.managed_fields = None;
    job.metadata.annotations = None;
}

/// A worker pod as the watch cache keeps it: what `pod_facts` and the pod trigger read
/// (metadata, the node it is bound to, its status), nothing of the rest of its spec.
pub fn slim_pod(pod: &mut Pod) {
    let node_name = pod.spec.as_mut().and_then(|s| s.node_name.take());
    pod.spec = Some(PodSpec { node_name, ..Default::default() });
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
}

/// The `Complete` or `Failed` condition that is True, if one is.
fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
}

/// Whether the Job has not finished (its worker is starting or running).
pub fn unfinished(job: &Job) -> bool {
    finished_condition(job).is_none()
}

pub fn job_facts(job: &Job) -> JobFacts {
    let label = |key: &str| job.labels().get(key).and_then(|v| v.parse().ok());
    let finished = finished_condition(job).map(|c| Finished {
        succeeded: c.type_ == "Complete",
        reason: c.reason.clone().unwrap_or_default(),
        at: c.last_transition_time.as_ref().map(|t| t.0),
    });
    JobFacts {
        name: job.name_any(),
        uid: job.uid().unwrap_or_default(),
        generation: label(job::LABEL_GENERATION).unwrap_or(0),
        round: job.labels().get(job::LABEL_REQUEST).cloned(),
        attempt: label(job::LABEL_ATTEMPT).map(|a: i64| a as u32).unwrap_or(1),
        created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
        finished,
        deleting: job.metadata.deletion_timestamp.is_some(),
        deleting_since: job.metadata.deletion_timestamp.as_ref().map(|t| t.0),
    }
}

fn container_state(c: &ContainerStatus) -> Option<ContainerState> {
    let state = c.state.as_ref()?;
    if let Some(t) = &state.terminated {
        return Some(ContainerState::Terminated {
            exit_code: t.exit_code,
            reason: t.reason.clone().unwrap_or_default(),
            message: t.message.clone().unwrap_or_default(),
            finished_at: t.finished_at.as_ref().map(|t| t.0),
        });
    }
    if state.running.is_some() {
        return Some(ContainerState::Running);
    }
    state.waiting.as_ref().map(|w| ContainerState::Waiting {
        reason: w.reason.clone().unwrap_or_default(),
        message: w.message.clone().unwrap_or_default(),
    })
}

pub fn pod_facts(pod: &Pod) -> PodFacts {
    let status = pod.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    let unscheduled = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()));
    PodFacts {
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        unscheduled,
        push: containers.iter().find(|c| c.name == job::CONTAINER).and_then(container_state),
        others_running: containers.iter().any(|c| {
            c.name != job::CONTAINER && c.state.as_ref().is_some_and(|s| s.running.is_some())
        }),
    }
}

/// The newest of `pods` (a retry pod replaces a failed one).
pub fn newest_pod<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<&'a Pod> {
    pods.into_iter().max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How long a worker may be on its way before the events are read for why it waits: a
/// worker that starts at once costs no look at all.
pub const EVENTS_AFTER: Duration = Duration::from_secs(5);

/// What kubelet says while it prepares a container (mounts its volumes, runs init
/// containers): the only wait a `FailedMount` event explains.
pub const CREATING: [&str; 3] = ["ContainerCreating", "PodInitializing", ""];

/// The uid of the object whose Warning events say why the worker of `job` does not start
/// (the Job while it has no pod, a scheduled pod while its `push` container waits to be
/// created), once it has waited `EVENTS_AFTER`; `None` when nothing is waiting, or not yet.
pub fn events_wanted<'a>(
    job: &'a JobFacts,
    pod: Option<&'a PodFacts>,
    now: Timestamp,
) -> Option<&'a str> {
    let waited =
        |since: Option<Timestamp>| since.is_some_and(|t| decide::elapsed(t, now) >= EVENTS_AFTER);
    match pod {
        None if job.finished.is_none() && waited(job.created) => Some(&job.uid),
        None => None,
        Some(p) => {
            let creating = matches!(&p.push,
                Some(ContainerState::Waiting { reason, .. }) if CREATING.contains(&reason.as_str()));
            let pending = p.phase == "Pending" && p.unscheduled.is_none();
            (job.finished.is_none() && creating && pending && waited(p.created))
                .then_some(p.uid.as_str())
        }
    }
}

/// Warning events, oldest first.
pub fn warning_events(events: &[Event]) -> Vec<EventFacts> {
    let mut out: Vec<EventFacts> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| EventFacts {
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            last: e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        })
        .collect();
    out.sort_by_key(|e| e.last);
    out
}

/// The report and the latest progress in a worker's log (its `WorkerLine`s among other
/// output), reading from the end.
pub fn parse_worker_log(log: &str) -> (Option<PushReport>, Option<ProgressLine>) {
    let mut report = None;
    let mut progress = None;
    for line in log.lines().rev() {
        match WorkerLine::parse(line) {
            Some(WorkerLine::Report { report: r }) if report.is_none() => report = Some(*r),
            Some(WorkerLine::Progress { progress: p }) if progress.is_none() => progress = Some(p),
            _ => {}
        }
        if report.is_some() && progress.is_some() {
            break;
        }
    }
    (report, progress)
}

/// The compact report the worker left as its termination message, if it is one.
pub fn termination_report(pod: &PodFacts) -> Option<PushReport> {
    match &pod.push {
        Some(ContainerState::Terminated { message, .. }) => serde_json::from_str(message).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_push_container_is_found_by_name_behind_a_sidecar() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "app-1-1-abcde-x", "uid": "u"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "istio-proxy", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {}}},
                {"name": "push", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": "{}",
                                          "finishedAt": "2026-11-30T10:00:00Z"}}}
            ]}
        }));
        let f = pod_facts(&p);
        assert!(f.others_running);
        assert_eq!(f.phase, "Running");
        match f.push {
            Some(ContainerState::Terminated {
                exit_code: 0,
                ref reason,
                finished_at: Some(_),
                ..
            }) => {
                assert_eq!(reason, "Completed")
            }
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unscheduled_pods_say_why() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available"}]}
        }));
        let f = pod_facts(&p);
        assert_eq!(f.unscheduled, Some(("Unschedulable".into(), "0/1 nodes are available".into())));
        assert_eq!(f.push, None);
    }

    #[test]
    fn the_log_gives_the_last_report_and_progress() {
        let log = [
            r#"{"event":"progress","progress":{"bytesDone":1,"bytesTotal":9,"blobsDone":0,"blobsTotal":2}}"#,
            "not json",
            r#"{"event":"progress","progress":{"bytesDone":5,"bytesTotal":9,"blobsDone":1,"blobsTotal":2}}"#,
        ]
        .join("\n");
        let (report, progress) = parse_worker_log(&log);
        assert!(report.is_none());
        assert_eq!(progress.unwrap().bytes_done, 5);
    }

    fn job_at(created: &str, finished: bool) -> JobFacts {
        JobFacts {
            name: "app-1-1-abcde".into(),
            uid: "job-uid".into(),
            generation: 1,
            round: None,
            attempt: 1,
            created: Some(created.parse().unwrap()),
            finished: finished.then(|| Finished {
                succeeded: false,
                reason: String::new(),
                at: None,
            }),
            deleting: false,
            deleting_since: None,
        }
    }

    fn pod_at(created: &str, phase: &str, push: Option<ContainerState>) -> PodFacts {
        PodFacts {
            name: "p".into(),
            uid: "pod-uid".into(),
            phase: phase.into(),
            node_name: Some("n".into()),
            created: Some(created.parse().unwrap()),
            unscheduled: None,
            push,
            others_running: false,
        }
    }

    /// Events are read only about a wait they can explain, and only once it has lasted.
    #[test]
    fn events_are_read_for_a_wait_that_lasted() {
        let now: Timestamp = "2026-11-30T12:00:10Z".parse().unwrap();
        let (old, young) = ("2026-11-30T12:00:00Z", "2026-11-30T12:00:08Z");
        let wait = |reason: &str| {
            Some(ContainerState::Waiting { reason: reason.into(), message: String::new() })
        };
        let unscheduled = PodFacts {
            unscheduled: Some(("Unschedulable".into(), String::new())),
            ..pod_at(old, "Pending", None)
        };
        let table: [(&str, JobFacts, Option<PodFacts>, Option<&str>); 10] = [
            ("no pod for 10 s", job_at(old, false), None, Some("job-uid")),
            ("no pod for 2 s", job_at(young, false), None, None),
            ("finished, no pod", job_at(old, true), None, None),
            (
                "mounting",
                job_at(old, false),
                Some(pod_at(old, "Pending", wait("ContainerCreating"))),
                Some("pod-uid"),
            ),
            (
                "init containers",
                job_at(old, false),
                Some(pod_at(old, "Pending", wait("PodInitializing"))),
                Some("pod-uid"),
            ),
            (
                "mounting for 2 s",
                job_at(old, false),
                Some(pod_at(young, "Pending", wait("ContainerCreating"))),
                None,
            ),
            (
                "image pull",
                job_at(old, false),
                Some(pod_at(old, "Pending", wait("ErrImagePull"))),
                None,
            ),
            ("not reported", job_at(old, false), Some(pod_at(old, "Pending", None)), None),
            ("unscheduled", job_at(old, false), Some(unscheduled), None),
            (
                "running",
                job_at(old, false),
                Some(pod_at(old, "Running", Some(ContainerState::Running))),
                None,
            ),
        ];
        for (name, job, pod, want) in table {
            assert_eq!(events_wanted(&job, pod.as_ref(), now), want, "{name}");
        }
    }

    /// What a reconcile knows of a Job or pod is the same from the slim copy in the cache.
    #[test]
    fn slim_copies_give_the_same_facts() {
        let mut p = pod(serde_json::json!({
            "metadata": {"name": "app-1-1-abcde-x", "uid": "u", "namespace": "ns",
                         "creationTimestamp": "2026-11-30T10:00:00Z", "labels": {"controller-uid": "j"},
                         "annotations": {"a": "b"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "app-1-1-abcde",
                                              "uid": "j", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "push", "image": "i", "args": ["push"]}],
                     "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "push", "image": "i", "imageID": "", "ready": false,
                        "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}
        }));
        let before = pod_facts(&p);
        let owners = p.metadata.owner_references.clone();
        slim_pod(&mut p);
        assert_eq!(pod_facts(&p), before);
        assert_eq!(p.metadata.owner_references, owners);
        assert!(p.spec.as_ref().unwrap().containers.is_empty());
        let mut j: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app-1-1-abcde", "uid": "j", "namespace": "ns",
                         "creationTimestamp": "2026-11-30T10:00:00Z",
                         "labels": {"imagepush.dev/generation": "1", "imagepush.dev/attempt": "1"},
                         "ownerReferences": [{"apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
                                              "name": "app", "uid": "ip", "controller": true}]},
            "spec": {"template": {"spec": {"containers": [{"name": "push", "image": "i"}]}}},
            "status": {"conditions": [{"type": "Complete", "status": "True", "reason": "Done",
                                       "lastTransitionTime": "2026-11-30T10:01:00Z"}]}
        }))
        .unwrap();
        let before = job_facts(&j);
        slim_job(&mut j);
        assert_eq!(job_facts(&j), before);
        assert!(j.spec.is_none() && j.metadata.owner_references.is_some());
    }
}
