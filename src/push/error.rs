use std::path::PathBuf;

use crate::digest::Digest;
use crate::shutdown::Signal;

/// Why a push failed. Each variant is one failure class; `class()` maps it to an exit code
/// and `reason()` to the CamelCase reason the operator writes into conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error(transparent)]
    Layout(#[from] crate::layout::Error),
    #[error(transparent)]
    Credentials(#[from] crate::auth::Error),
    #[error("{option}: {reason}")]
    InvalidOption { option: &'static str, reason: String },
    #[error("the layout {layout} resolves to {resolved}, outside --layout-root {root}")]
    LayoutOutsideRoot { layout: PathBuf, resolved: PathBuf, root: PathBuf },
    #[error("sources file {path}: {reason}")]
    Sources { path: PathBuf, reason: String },
    #[error("{reference:?} is not in the layout {layout} (it has {})", list_or_none(.available))]
    RefNotFound { reference: String, layout: PathBuf, available: Vec<String> },
    #[error(
        "the layout {layout} has no tagged entries to push to an untagged target; add a tag to the target or pass --ref"
    )]
    NoTags { layout: PathBuf },
    #[error("the layout {layout} has {count} entries and none is named {tag:?}; pass --ref to choose one (tags: {})", list_or_none(.tags))]
    AmbiguousSource { layout: PathBuf, tag: String, count: usize, tags: Vec<String> },
    #[error("tag {tag} stands for different images in {layout}: {}; choose one with --ref and its full name (spec.source.ref)", .entries.join(", "))]
    AmbiguousTag { tag: String, layout: PathBuf, entries: Vec<String> },
    #[error("--mirror pushes every entry of {layout} under its full name (io.containerd.image.name, or org.opencontainers.image.ref.name such as docker.io/library/nginx:1.27), and these have none: {}", .entries.join("; "))]
    UnnamedEntries { layout: PathBuf, entries: Vec<String> },
    #[error("names in {layout} stand for different images: {}; a mirror pushes each name once", .conflicts.join("; "))]
    AmbiguousNames { layout: PathBuf, conflicts: Vec<String> },
    #[error("the layout {layout} has no entries to mirror")]
    NoImages { layout: PathBuf },
    #[error("{name:?} in {layout} is not a valid tag")]
    InvalidTagName { name: String, layout: PathBuf },
    #[error("no manifest for platform {wanted} in {index} (available: {})", list_or_none(.available))]
    PlatformNotFound { wanted: String, index: Digest, available: Vec<String> },
    #[error("platform {wanted} matches {} manifests of {index}: {}", .matches.len(), .matches.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    PlatformConflict { wanted: String, index: Digest, matches: Vec<Digest> },
    #[error("the image {digest} is for {actual}, not {wanted}")]
    PlatformMismatch { wanted: String, actual: String, digest: Digest },
    #[error("the index {index} is only partly in the layout and none of its present manifests ({}) runs on the host platform {host}; pass --platform to choose one", list_or_none(.available))]
    NoHostMatch { index: Digest, host: String, available: Vec<String> },
    #[error("content missing from the layout and from every mount candidate: {}", .digests.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    ContentMissing { digests: Vec<Digest> },
    #[error(
        "{digest} has media type {media_type:?}, which is neither an image manifest nor an index"
    )]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("index {digest} is nested more than 8 levels deep or contains itself (a cycle)")]
    IndexCycle { digest: Digest },
    #[error("--platform cannot pick a manifest when the target names the index {digest} by digest")]
    PlatformWithDigestTarget { digest: Digest },
    #[error("the referrers index {repository}:{tag} in the registry cannot be merged: {reason}")]
    ReferrersIndexInvalid { repository: String, tag: String, reason: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A signal stopped the push; nothing was started after it.
    #[error("stopped by {signal} {stage}")]
    Terminated { signal: Signal, stage: Stage },
}

/// Where a push was when it was stopped, and so what it left undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Reading the layout, checking access, deciding what to push.
    Preparing,
    Blobs,
    Manifests,
    /// Tags are the last step: `written` of `total` were pointed at their images; the PUTs of
    /// `in_flight` had been sent and may have been written.
    Tagging {
        written: Vec<String>,
        in_flight: Vec<String>,
        total: usize,
    },
    /// After every tag was written: pushing the referrers.
    Referrers,
}

impl std::fmt::Display for Stage {
    /// Says what was not done, after "stopped by SIGTERM".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Preparing => f.write_str("before anything was pushed; no tag was written"),
            Stage::Blobs => f.write_str("while pushing blobs, before tagging; no tag was written"),
            Stage::Manifests => {
                f.write_str("while pushing manifests, before tagging; no tag was written")
            }
            Stage::Referrers => f.write_str(
                "after every tag was written, while pushing referrers; some may not be in the registry",
            ),
            Stage::Tagging { written, in_flight, .. }
                if written.is_empty() && in_flight.is_empty() =>
            {
                f.write_str("while tagging; no tag was written")
            }
            Stage::Tagging { written, in_flight, total } => {
                write!(f, "while tagging; {} of {total} tags were written", written.len())?;
                if !written.is_empty() {
                    write!(f, " ({})", written.join(", "))?;
                }
                if !in_flight.is_empty() {
                    write!(
                        f,
                        ", {} may have been (their PUT was under way)",
                        in_flight.join(", ")
                    )?;
                }
                f.write_str(", the others were not")
            }
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".to_string() } else { items.join(", ") }
}

/// The failure classes, each with its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Something else went wrong (exit 1).
    Internal,
    /// Usage, layout, reference or option is wrong (exit 2).
    BadInput,
    /// A tag, platform or content the push needs is not there (exit 3).
    NotFound,
    /// The registry refused the credentials (exit 4).
    Authentication,
    /// The registry failed or could not be reached (exit 5).
    Registry,
    /// A signal stopped the push (exit 128 + the signal's number: 143 for SIGTERM).
    Terminated(Signal),
}

impl ErrorClass {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Internal => 1,
            ErrorClass::BadInput => 2,
            ErrorClass::NotFound => 3,
            ErrorClass::Authentication => 4,
            ErrorClass::Registry => 5,
            ErrorClass::Terminated(signal) => signal.exit_code(),
        }
    }
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        use Error::*;
        match self {
            Reference(_)
            | Platform(_)
            | Layout(_)
            | Credentials(_)
            | InvalidOption { .. }
            | LayoutOutsideRoot { .. }
            | Sources { .. }
            | InvalidTagName { .. }
            | AmbiguousTag { .. }
            | UnnamedEntries { .. }
            | AmbiguousNames { .. }
            | UnsupportedMediaType { .. }
            | IndexCycle { .. }
            | PlatformWithDigestTarget { .. } => ErrorClass::BadInput,
            RefNotFound { .. }
            | NoTags { .. }
            | NoImages { .. }
            | AmbiguousSource { .. }
            | PlatformNotFound { .. }
            | PlatformConflict { .. }
            | PlatformMismatch { .. }
            | NoHostMatch { .. }
            | ContentMissing { .. } => ErrorClass::NotFound,
            Registry(crate::registry::Error::Unauthorized { .. })
            | Registry(crate::registry::Error::CredentialsWithheld { .. }) => {
                ErrorClass::Authentication
            }
            Registry(crate::registry::Error::Content(_)) => ErrorClass::BadInput,
            Registry(crate::registry::Error::CaFile { .. }) => ErrorClass::BadInput,
            // A certificate that does not verify is a connection setting to fix, not a fault
            // that passes: exit 2 so workers are not retried.
            Registry(crate::registry::Error::Tls { .. }) => ErrorClass::BadInput,
            // HTTPS to an HTTP-only registry: a setting to change (--plain-http).
            Registry(crate::registry::Error::PlainHttpServer { .. }) => ErrorClass::BadInput,
            Registry(_) | ReferrersIndexInvalid { .. } => ErrorClass::Registry,
            Io { .. } => ErrorClass::Internal,
            Terminated { signal, .. } => ErrorClass::Terminated(*signal),
        }
    }

    /// A CamelCase reason for conditions and reports.
    pub fn reason(&self) -> &'static str {
        use Error::*;
        match self {
            Reference(_) => "ReferenceInvalid",
            Platform(_) => "PlatformInvalid",
            Layout(_) | IndexCycle { .. } | UnsupportedMediaType { .. } => "LayoutInvalid",
            Registry(crate::registry::Error::Content(_)) => "LayoutInvalid",
            Credentials(_) => "CredentialsInvalid",
            InvalidOption { .. } | PlatformWithDigestTarget { .. } => "SpecInvalid",
            LayoutOutsideRoot { .. } => "LayoutOutsideRoot",
            Sources { .. } => "SourcesInvalid",
            RefNotFound { .. }
            | NoTags { .. }
            | NoImages { .. }
            | AmbiguousSource { .. }
            | InvalidTagName { .. } => "RefNotFound",
            AmbiguousTag { .. } | AmbiguousNames { .. } => "RefAmbiguous",
            UnnamedEntries { .. } => "ImageNameMissing",
            PlatformNotFound { .. } | PlatformMismatch { .. } => "PlatformNotFound",
            PlatformConflict { .. } | NoHostMatch { .. } => "PlatformConflict",
            ContentMissing { .. } => "ContentMissing",
            Registry(crate::registry::Error::Unauthorized { .. })
            | Registry(crate::registry::Error::CredentialsWithheld { .. }) => {
                "AuthenticationFailed"
            }
            Registry(crate::registry::Error::CaFile { .. }) => "TLSConfigInvalid",
            Registry(crate::registry::Error::Tls { .. }) => "TLSVerificationFailed",
            Registry(crate::registry::Error::PlainHttpServer { .. }) => "RegistryNotTLS",
            Registry(_) => "RegistryUnavailable",
            ReferrersIndexInvalid { .. } => "ReferrersIndexInvalid",
            Io { .. } => "InternalError",
            Terminated { .. } => "Terminated",
        }
    }

    /// How long the registry asked to wait before trying again (its `Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Registry(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether retrying the same push later may succeed (a stopped push may).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Registry(e) => e.is_transient(),
            Error::Terminated { .. } => true,
            _ => false,
        }
    }
}
