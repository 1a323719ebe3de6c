//! Status as kstatus wants it: `Ready` always, `Reconciling` and `Stalled` only while true,
//! and the push report turned into status fields.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    BlobTotals, ImagePushStatus, ImageStatus, IndexFallbackStatus, MountStatus, ProgressStatus,
    RepositoryBlobs, TagStatus,
};
use crate::push::progress::ProgressLine;
use crate::push::report::{BlobOutcome, PushReport};

/// Images of a mirror listed in `status.images` (about 150 bytes each); `imageCount` has
/// them all, the report in the worker's log every one.
pub const MAX_STATUS_IMAGES: usize = 500;
/// Referrers listed in `status.referrers` (about 250 bytes each); `referrerCount` has them all.
pub const MAX_STATUS_REFERRERS: usize = 100;
/// Blob digests of a mirror kept as mount knowledge in `status.repositoryBlobs` (73 bytes
/// each); the sources handed to a worker are bounded anyway.
pub const MAX_STATUS_BLOB_DIGESTS: usize = 1000;
/// Mounts listed in `status.mounts` (a mirror lists only those from outside the bundle).
pub const MAX_STATUS_MOUNTS: usize = 256;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const SUSPENDED: &str = "Suspended";
/// The annotation whose new value pushes the current spec again.
pub const REQUESTED_AT: &str = "imagepush.dev/requested-at";

/// Condition reasons the controller sets itself (the push's own reasons come from the report).
pub mod reasons {
    pub const PUSHED: &str = "Pushed";
    pub const PROGRESSING: &str = "Progressing";
    pub const RETRYING: &str = "Retrying";
    pub const PVC_NOT_FOUND: &str = "PersistentVolumeClaimNotFound";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const WORKER_FAILED: &str = "WorkerFailed";
    pub const TIMED_OUT: &str = "PushTimedOut";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    /// The Job controller could not create the worker pod (Pod Security, quota, webhook).
    pub const WORKER_POD_REJECTED: &str = "WorkerPodRejected";
    /// No node can take the worker pod.
    pub const WORKER_UNSCHEDULABLE: &str = "WorkerUnschedulable";
    /// A pod bound to a node that does not start it.
    pub const WORKER_NOT_STARTED: &str = "WorkerNotStarted";
    /// Kubelet cannot mount a volume (a missing Secret, ConfigMap, claim or directory).
    pub const WORKER_MOUNT_FAILED: &str = "WorkerMountFailed";
    /// The worker image cannot be pulled (yet).
    pub const WORKER_IMAGE_PULL_FAILED: &str = "WorkerImagePullFailed";
    /// The worker image reference is invalid, or may not be pulled.
    pub const WORKER_IMAGE_INVALID: &str = "WorkerImageInvalid";
    /// Kubelet cannot create the container (CreateContainerConfigError, CreateContainerError).
    pub const WORKER_CREATE_FAILED: &str = "WorkerCreateFailed";
    /// The container runtime cannot start the worker's entrypoint.
    pub const WORKER_START_FAILED: &str = "WorkerStartFailed";
    /// Any other reason kubelet gives for a container that does not start.
    pub const WORKER_CANNOT_START: &str = "WorkerCannotStart";
    /// The API server refused the worker Job as invalid (422, 400).
    pub const WORKER_JOB_REJECTED: &str = "WorkerJobRejected";
    /// The API server forbade the worker Job (RBAC, quota, admission).
    pub const WORKER_JOB_FORBIDDEN: &str = "WorkerJobForbidden";
    /// An earlier generation's worker Job has not stopped after its deletion.
    pub const PREVIOUS_WORKER_STOPPING: &str = "PreviousWorkerStopping";
    /// A Job with the worker's name exists and is not this ImagePush's.
    pub const JOB_NAME_CONFLICT: &str = "JobNameConflict";
}

/// `text` cut to at most `max` bytes of UTF-8, on a character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Sets a condition, keeping its lastTransitionTime when the status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let status_text = if status { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status_text)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status_text.to_string(),
        reason: reason.to_string(),
        message: message.chars().take(1000).collect(),
        last_transition_time: transition,
        observed_generation: Some(generation),
    });
    conditions.sort_by_key(|c| match c.type_.as_str() {
        READY => 0,
        RECONCILING => 1,
        STALLED => 2,
        _ => 3,
    });
}

pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

pub fn condition<'a>(status: &'a ImagePushStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// In progress: Ready False (Progressing), Reconciling True, no Stalled.
pub fn mark_reconciling(
    status: &mut ImagePushStatus,
    reason: &str,
    message: &str,
    generation: i64,
) {
    set_condition(&mut status.conditions, READY, false, reason, message, generation);
    set_condition(&mut status.conditions, RECONCILING, true, reason, message, generation);
    remove_condition(&mut status.conditions, STALLED);
}

/// Finished for good without success: Ready False, Stalled True, no Reconciling.
pub fn mark_stalled(status: &mut ImagePushStatus, reason: &str, message: &str, generation: i64) {
    set_condition(&mut status.conditions, READY, false, reason, message, generation);
    set_condition(&mut status.conditions, STALLED, true, reason, message, generation);
    remove_condition(&mut status.conditions, RECONCILING);
    status.phase = Some(crate::crd::Phase::Failed);
    status.message = Some(message.chars().take(1000).collect());
    status.observed_generation = Some(generation);
    status.progress = None;
}

/// Stalled on something outside the spec that may appear (a claim, a Secret): Stalled True,
/// phase Pending, and the generation is *not* marked finished, so it is checked again.
pub fn mark_waiting(status: &mut ImagePushStatus, reason: &str, message: &str, generation: i64) {
    let finished_before = status.observed_generation.filter(|g| *g != generation);
    mark_stalled(status, reason, message, generation);
    status.phase = Some(crate::crd::Phase::Pending);
    status.observed_generation = finished_before;
}

/// The `Suspended` condition as `spec.suspend` says: True while suspended, absent otherwise.
pub fn show_suspension(status: &mut ImagePushStatus, suspended: bool, generation: i64) {
    if suspended {
        let message = "spec.suspend is true: no push starts until it is false";
        set_condition(&mut status.conditions, SUSPENDED, true, SUSPENDED, message, generation);
    } else {
        remove_condition(&mut status.conditions, SUSPENDED);
    }
}

/// The status (and its conditions) stand for `generation`.
pub fn observe(status: &mut ImagePushStatus, generation: i64) {
    status.observed_generation = Some(generation);
    for c in &mut status.conditions {
        c.observed_generation = Some(generation);
    }
}

/// Whether the status says the ImagePush is suspended.
pub fn says_suspended(status: &ImagePushStatus) -> bool {
    condition(status, SUSPENDED).is_some_and(|c| c.status == "True")
}

/// A push that would start now is held back: Ready False (Suspended), not reconciling, not
/// stalled, the generation not finished.
pub fn mark_held(status: &mut ImagePushStatus, generation: i64) {
    show_suspension(status, true, generation);
    let message = "no push starts while spec.suspend is true";
    set_condition(&mut status.conditions, READY, false, SUSPENDED, message, generation);
    remove_condition(&mut status.conditions, RECONCILING);
    remove_condition(&mut status.conditions, STALLED);
    status.phase = Some(crate::crd::Phase::Pending);
    status.next_attempt_time = None;
}

/// `blobs 3/8, 120.0/512.0 MiB`
pub fn progress_status(p: &ProgressLine) -> ProgressStatus {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    ProgressStatus {
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        blobs_done: p.blobs_done,
        blobs_total: p.blobs_total,
        summary: format!(
            "blobs {}/{}, {:.1}/{:.1} MiB",
            p.blobs_done,
            p.blobs_total,
            mib(p.bytes_done),
            mib(p.bytes_total)
        ),
    }
}

/// The referrers of a successful report: the first ones listed, all counted (the compact
/// report keeps only the count), and those left out said.
fn apply_referrers(status: &mut ImagePushStatus, report: &PushReport) {
    status.referrers = report
        .referrers
        .iter()
        .take(MAX_STATUS_REFERRERS)
        .map(|r| crate::crd::ReferrerStatus {
            digest: r.digest.to_string(),
            artifact_type: r.artifact_type.clone(),
            subject: r.subject.to_string(),
            known_by: serde_json::to_value(r.known_by)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        })
        .collect();
    status.referrer_count = (report.totals.referrers > 0).then_some(report.totals.referrers);
    status.referrers_left_out =
        report.referrers_left_out.as_ref().map(|l| format!("{} referrers: {}", l.count, l.reason));
}

/// A successful report as status: Ready True (Pushed), no Reconciling or Stalled. A mirror's
/// report (it has `images`) gives `images`, `imageCount` and `repositoryBlobs` instead of
/// `tags` and `blobDigests`; every list bounded, so a bundle of thousands of images still
/// fits the object.
pub fn apply_success(status: &mut ImagePushStatus, report: &PushReport, generation: i64) {
    let mirror = !report.images.is_empty() || report.images_omitted.is_some();
    status.phase = Some(crate::crd::Phase::Succeeded);
    status.observed_generation = Some(generation);
    status.digest = report.digest.as_ref().map(|d| d.to_string());
    status.size = report.size;
    status.media_type = report.media_type.clone();
    status.tags = report
        .tags
        .iter()
        .map(|t| TagStatus { tag: t.tag.clone(), digest: t.digest.to_string(), size: t.size })
        .collect();
    status.manifest_pushed_instead_of_index =
        report.manifest_pushed_instead_of_index.as_ref().map(|f| IndexFallbackStatus {
            original_index: f.original_index.digest.to_string(),
            selected_manifest: f.selected_manifest.digest.to_string(),
            platform: f.selected_manifest.platform.as_ref().map(|p| p.to_string()),
        });
    status.blobs = Some(BlobTotals {
        uploaded: report.totals.uploaded,
        mounted: report.totals.mounted,
        existed: report.totals.existed,
        bytes_uploaded: report.totals.bytes_uploaded,
    });
    let bundle: std::collections::HashSet<&str> =
        report.blobs.iter().filter_map(|b| b.repository.as_deref()).collect();
    let in_bundle = |from: &Option<String>| from.as_deref().is_some_and(|f| bundle.contains(f));
    status.mounts = report
        .blobs
        .iter()
        .filter(|b| b.outcome == BlobOutcome::Mounted && !in_bundle(&b.from))
        .take(MAX_STATUS_MOUNTS)
        .map(|b| MountStatus {
            digest: b.digest.to_string(),
            from: b.from.clone().unwrap_or_default(),
        })
        .collect();
    status.images = report
        .images
        .iter()
        .take(MAX_STATUS_IMAGES)
        .map(|i| ImageStatus {
            repository: i.repository.clone(),
            tag: i.tag.clone(),
            digest: i.digest.to_string(),
        })
        .collect();
    status.image_count =
        mirror.then(|| report.images.len() as u64 + report.images_omitted.unwrap_or(0));
    apply_referrers(status, report);
    if mirror {
        status.blob_digests = Vec::new();
        status.repository_blobs = first_holders(report);
    } else {
        status.blob_digests = report.blobs.iter().map(|b| b.digest.to_string()).collect();
        status.repository_blobs = Vec::new();
    }
    let total: u64 = report.blobs.iter().map(|b| b.size).sum();
    status.progress = Some(progress_status(&ProgressLine {
        bytes_done: total,
        bytes_total: total,
        blobs_done: report.blobs.len() as u64,
        blobs_total: report.blobs.len() as u64,
    }));
    status.completion_time = Some(now());
    status.message = None;
    let repositories: std::collections::BTreeSet<&str> =
        report.images.iter().map(|i| i.repository.as_str()).collect();
    let what = match (report.tags.len(), &report.digest) {
        _ if mirror => format!(
            "pushed {} images to {} repositories under {}",
            status.image_count.unwrap_or_default(),
            repositories.len(),
            report.repository
        ),
        (0, Some(d)) => format!("pushed {d} to {}", report.repository),
        (1, _) => format!(
            "pushed {}:{} as {}",
            report.repository, report.tags[0].tag, report.tags[0].digest
        ),
        (n, _) => format!("pushed {n} tags to {}", report.repository),
    };
    set_condition(&mut status.conditions, READY, true, reasons::PUSHED, &what, generation);
    remove_condition(&mut status.conditions, RECONCILING);
    remove_condition(&mut status.conditions, STALLED);
}

/// A mirror's mount knowledge: each distinct blob once, under the first repository of the
/// report that holds it (every repository of a successful mirror holds its blobs), at most
/// `MAX_STATUS_BLOB_DIGESTS` of them.
fn first_holders(report: &PushReport) -> Vec<RepositoryBlobs> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<RepositoryBlobs> = Vec::new();
    for b in &report.blobs {
        let Some(repository) = &b.repository else { continue };
        if seen.len() == MAX_STATUS_BLOB_DIGESTS || !seen.insert(&b.digest) {
            continue;
        }
        match out.iter_mut().find(|h| h.repository == *repository) {
            Some(h) => h.digests.push(b.digest.to_string()),
            None => out.push(RepositoryBlobs {
                repository: repository.clone(),
                digests: vec![b.digest.to_string()],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::push::report::{BlobReport, TagReport};

    fn report() -> PushReport {
        let mut r = PushReport::new("reg/app:v1".into(), "reg/app".into());
        let d = Digest::sha256(b"m");
        r.digest = Some(d.clone());
        r.size = Some(10);
        r.media_type = Some(crate::oci::OCI_MANIFEST.into());
        r.tags = vec![TagReport {
            tag: "v1".into(),
            digest: d,
            size: 10,
            media_type: crate::oci::OCI_MANIFEST.into(),
            manifest_pushed_instead_of_index: None,
        }];
        for (i, outcome) in [BlobOutcome::Uploaded, BlobOutcome::Mounted, BlobOutcome::Existed]
            .into_iter()
            .enumerate()
        {
            r.blobs.push(BlobReport {
                digest: Digest::sha256(&[i as u8]),
                size: 100,
                media_type: "x".into(),
                outcome,
                from: (outcome == BlobOutcome::Mounted).then(|| "reg/base".to_string()),
                repository: None,
            });
        }
        r.recount();
        r
    }

    #[test]
    fn success_sets_ready_and_clears_the_rest() {
        let mut s = ImagePushStatus::default();
        mark_reconciling(&mut s, reasons::PROGRESSING, "pushing", 2);
        assert_eq!(condition(&s, RECONCILING).unwrap().status, "True");
        apply_success(&mut s, &report(), 2);
        assert_eq!(s.observed_generation, Some(2));
        let ready = condition(&s, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Pushed"));
        assert!(condition(&s, RECONCILING).is_none() && condition(&s, STALLED).is_none());
        assert_eq!(s.blobs.as_ref().unwrap().mounted, 1);
        assert_eq!(s.blobs.as_ref().unwrap().bytes_uploaded, 100);
        assert_eq!(s.mounts.len(), 1);
        assert_eq!(s.mounts[0].from, "reg/base");
        assert_eq!(s.blob_digests.len(), 3);
        assert_eq!(s.tags[0].tag, "v1");
        assert_eq!(s.progress.as_ref().unwrap().summary, "blobs 3/3, 0.0/0.0 MiB");
    }

    /// Referrers: the first listed with how the registry learned of them, all counted, the
    /// left-out said; a compact report (a termination message) keeps the count only.
    #[test]
    fn referrers_are_listed_bounded_and_counted() {
        use crate::push::referrers::KnownBy;
        use crate::push::report::{LeftOut, ReferrerReport};
        let mut r = report();
        for i in 0..150u32 {
            r.referrers.push(ReferrerReport {
                repository: None,
                digest: Digest::sha256(&i.to_le_bytes()),
                media_type: crate::oci::OCI_MANIFEST.into(),
                artifact_type: Some("application/spdx+json".into()),
                subject: Digest::sha256(b"image"),
                known_by: if i == 0 { KnownBy::CosignTag } else { KnownBy::TagSchema },
                tag: None,
            });
        }
        r.referrers_left_out = Some(LeftOut { count: 2, reason: "another platform".into() });
        r.recount();
        let mut s = ImagePushStatus::default();
        apply_success(&mut s, &r, 1);
        assert_eq!((s.referrers.len(), s.referrer_count), (MAX_STATUS_REFERRERS, Some(150)));
        assert_eq!(s.referrers[0].known_by, "cosignTag");
        assert_eq!(s.referrers[1].known_by, "tagSchema");
        assert_eq!(s.referrers[1].subject, Digest::sha256(b"image").to_string());
        assert_eq!(s.referrers_left_out.as_deref(), Some("2 referrers: another platform"));
        let compact: PushReport = serde_json::from_str(&r.compact_json(4096)).unwrap();
        let mut s = ImagePushStatus::default();
        apply_success(&mut s, &compact, 1);
        assert_eq!((s.referrers.len(), s.referrer_count), (0, Some(150)));
        // Nothing pushed, nothing said.
        let mut s = ImagePushStatus::default();
        apply_success(&mut s, &report(), 1);
        assert_eq!((s.referrer_count, s.referrers_left_out.as_deref()), (None, None));
    }

    /// A mirror of 600 images sharing a base, with one blob mounted from outside: the images
    /// and knowledge bounded, the count whole, mounts inside the bundle left out.
    #[test]
    fn a_large_mirror_is_stored_bounded() {
        use crate::push::report::ImageReport;
        let mut r = PushReport::new("reg/m".into(), "reg/m".into());
        let base = Digest::sha256(b"base");
        let blob = |digest: &Digest, repo: &str, outcome, from: Option<&str>| BlobReport {
            digest: digest.clone(),
            size: 10,
            media_type: "x".into(),
            outcome,
            from: from.map(String::from),
            repository: Some(repo.to_string()),
        };
        for i in 0..600u32 {
            let repo = format!("reg/m/app{i}");
            r.images.push(ImageReport {
                repository: repo.clone(),
                tag: Some("v1".into()),
                digest: Digest::sha256(&i.to_le_bytes()),
                size: 5,
                media_type: crate::oci::OCI_MANIFEST.into(),
                manifest_pushed_instead_of_index: None,
            });
            r.blobs.push(match i {
                0 => blob(&base, &repo, BlobOutcome::Mounted, Some("reg/elsewhere")),
                _ => blob(&base, &repo, BlobOutcome::Mounted, Some("reg/m/app0")),
            });
            for own in [i + 1000, i + 2000] {
                let digest = Digest::sha256(&own.to_le_bytes());
                r.blobs.push(blob(&digest, &repo, BlobOutcome::Uploaded, None));
            }
        }
        r.recount();
        let mut s = ImagePushStatus::default();
        apply_success(&mut s, &r, 1);
        assert_eq!((s.images.len(), s.image_count), (MAX_STATUS_IMAGES, Some(600)));
        assert!(s.tags.is_empty() && s.blob_digests.is_empty());
        assert_eq!(s.mounts.len(), 1, "only the mount from outside the bundle: {:?}", s.mounts);
        let held: usize = s.repository_blobs.iter().map(|h| h.digests.len()).sum();
        assert_eq!(held, MAX_STATUS_BLOB_DIGESTS);
        assert_eq!(s.repository_blobs[0].repository, "reg/m/app0");
        assert_eq!(s.repository_blobs[0].digests[0], base.to_string());
        assert_eq!(
            condition(&s, READY).unwrap().message,
            "pushed 600 images to 600 repositories under reg/m"
        );
        let bytes = serde_json::to_vec(&s).unwrap().len();
        assert!(bytes < 256 * 1024, "{bytes} bytes of status");

        // The compact report of a termination message keeps the count.
        let compact: PushReport = serde_json::from_str(&r.compact_json(4096)).unwrap();
        let mut s = ImagePushStatus::default();
        apply_success(&mut s, &compact, 1);
        assert_eq!(s.image_count, Some(600));
        assert!(!s.images.is_empty());
    }

    #[test]
    fn waiting_for_a_dependency_leaves_the_generation_unfinished() {
        let mut s = ImagePushStatus { observed_generation: Some(1), ..Default::default() };
        mark_waiting(&mut s, reasons::PVC_NOT_FOUND, "no claim", 2);
        assert_eq!(s.phase, Some(crate::crd::Phase::Pending));
        assert_eq!(s.observed_generation, Some(1), "generation 2 is not finished");
        assert_eq!(condition(&s, STALLED).unwrap().reason, reasons::PVC_NOT_FOUND);
        mark_waiting(&mut s, reasons::PVC_NOT_FOUND, "no claim", 1);
        assert_eq!(s.observed_generation, None);
    }

    #[test]
    fn text_is_cut_on_a_character_boundary_within_the_byte_limit() {
        let text = "é".repeat(600) + "tail";
        let cut = truncate_utf8(&text, 1024);
        assert_eq!(cut.len(), 1024);
        assert!(text.starts_with(cut));
        // 3-byte characters: the limit falls inside one, which is left out whole.
        let wide = "€".repeat(400);
        assert_eq!(truncate_utf8(&wide, 1024).len(), 1023);
        assert_eq!(truncate_utf8("short", 1024), "short");
    }

    #[test]
    fn stalled_keeps_transition_time_while_unchanged() {
        let mut s = ImagePushStatus::default();
        mark_stalled(&mut s, "AuthenticationFailed", "no", 1);
        let t1 = condition(&s, READY).unwrap().last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        mark_stalled(&mut s, "AuthenticationFailed", "still no", 1);
        assert_eq!(condition(&s, READY).unwrap().last_transition_time, t1);
        assert_eq!(condition(&s, STALLED).unwrap().reason, "AuthenticationFailed");
        assert!(condition(&s, RECONCILING).is_none());
        assert_eq!(s.phase, Some(crate::crd::Phase::Failed));
    }

    #[test]
    fn a_held_push_is_pending_and_suspended_until_resumed() {
        let mut s = ImagePushStatus::default();
        mark_reconciling(&mut s, reasons::RETRYING, "again", 3);
        s.next_attempt_time = Some(now());
        mark_held(&mut s, 3);
        assert!(says_suspended(&s));
        assert_eq!(condition(&s, READY).unwrap().reason, SUSPENDED);
        assert!(condition(&s, RECONCILING).is_none() && condition(&s, STALLED).is_none());
        assert_eq!(
            (s.phase, s.next_attempt_time.clone()),
            (Some(crate::crd::Phase::Pending), None)
        );
        show_suspension(&mut s, false, 3);
        assert!(!says_suspended(&s) && condition(&s, SUSPENDED).is_none());
        // Shown on a pushed generation, Ready is left alone.
        let mut s = ImagePushStatus::default();
        set_condition(&mut s.conditions, READY, true, reasons::PUSHED, "pushed", 3);
        show_suspension(&mut s, true, 3);
        assert_eq!(condition(&s, READY).unwrap().status, "True");
        assert_eq!(condition(&s, SUSPENDED).unwrap().status, "True");
    }
}
