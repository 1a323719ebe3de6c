//! The push report: what `imagepush push --report FILE` writes and the operator reads.
//! Versioned (`apiVersion`/`kind`); fields are only ever added.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;

mod compact;

pub const REPORT_API_VERSION: &str = "imagepush.dev/v1alpha1";
pub const REPORT_KIND: &str = "PushReport";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    pub api_version: String,
    pub kind: String,
    /// The target as given on the command line (normalized).
    pub target: String,
    /// `registry/repository`.
    pub repository: String,
    /// The first pushed image (the only one unless all tags were pushed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One entry per pushed tag; empty for a push by digest and for a mirror (see `images`).
    #[serde(default)]
    pub tags: Vec<TagReport>,
    /// A mirror (`--mirror`): every image pushed, each in its repository, under its tag or by
    /// digest. Empty for a push to one repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageReport>,
    /// Set when an index was only partly in the layout and one of its manifests was pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_pushed_instead_of_index: Option<IndexFallback>,
    #[serde(default)]
    pub blobs: Vec<BlobReport>,
    #[serde(default)]
    pub manifests: Vec<ManifestReport>,
    pub totals: Totals,
    pub duration_ms: u64,
    /// Set when the push failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReportError>,
    /// Only in a compact report (a termination message): how many tags did not fit in `tags`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_omitted: Option<u64>,
    /// Only in a compact report: how many images did not fit in `images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_omitted: Option<u64>,
    /// Every referrer pushed (signatures, attestations, SBOMs of what was pushed). The
    /// compact report drops the list with the blobs; `totals.referrers` keeps the count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerReport>,
    /// Referrers in the layout that were not pushed, because what they refer to was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers_left_out: Option<LeftOut>,
}

/// A referrer pushed with the image it refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerReport {
    /// A mirror: the repository (`registry/repository`) it went into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub subject: Digest,
    /// How the registry learned of it.
    pub known_by: crate::push::referrers::KnownBy,
    /// cosign's tag it was pushed under (`sha256-<hex>.sig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Referrers that were left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftOut {
    pub count: u64,
    pub reason: String,
}

/// One image of a mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    /// `registry/repository`.
    pub repository: String,
    /// `None`: pushed by digest only (its name in the layout was pinned to a digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_pushed_instead_of_index: Option<IndexFallback>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagReport {
    pub tag: String,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_pushed_instead_of_index: Option<IndexFallback>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorSummary {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexFallback {
    pub original_index: DescriptorSummary,
    pub selected_manifest: DescriptorSummary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BlobOutcome {
    Uploaded,
    Mounted,
    Existed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobReport {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub outcome: BlobOutcome,
    /// For a mount: the repository (`registry/repository`) it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A mirror: the repository (`registry/repository`) the blob went into; a blob several
    /// repositories need has one entry for each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ManifestOutcome {
    Pushed,
    Existed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestReport {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub outcome: ManifestOutcome,
    /// A mirror: the repository (`registry/repository`) the manifest went into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub uploaded: u64,
    pub mounted: u64,
    pub existed: u64,
    pub bytes_uploaded: u64,
    /// Referrers pushed.
    #[serde(default)]
    pub referrers: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportError {
    /// CamelCase reason (`AuthenticationFailed`, `ContentMissing`, ...).
    pub reason: String,
    pub message: String,
    pub exit_code: i32,
    /// Whether the same push may succeed when tried again.
    pub transient: bool,
    /// How long the registry asked to be left alone (its `Retry-After`), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl PushReport {
    /// An empty report for `target`, filled as the push goes.
    pub fn new(target: String, repository: String) -> PushReport {
        PushReport {
            api_version: REPORT_API_VERSION.to_string(),
            kind: REPORT_KIND.to_string(),
            target,
            repository,
            digest: None,
            size: None,
            media_type: None,
            tags: Vec::new(),
            images: Vec::new(),
            manifest_pushed_instead_of_index: None,
            blobs: Vec::new(),
            manifests: Vec::new(),
            totals: Totals::default(),
            duration_ms: 0,
            error: None,
            tags_omitted: None,
            images_omitted: None,
            referrers: Vec::new(),
            referrers_left_out: None,
        }
    }

    /// Recomputes `totals` from `blobs` and `referrers`.
    pub fn recount(&mut self) {
        let mut t = Totals { referrers: self.referrers.len() as u64, ..Totals::default() };
        for b in &self.blobs {
            match b.outcome {
                BlobOutcome::Uploaded => {
                    t.uploaded += 1;
                    t.bytes_uploaded += b.size;
                }
                BlobOutcome::Mounted => t.mounted += 1,
                BlobOutcome::Existed => t.existed += 1,
            }
        }
        self.totals = t;
    }
}
