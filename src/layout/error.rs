//! `layout::Error`: every way reading an OCI image layout can fail, one failure class per
//! variant. Messages name the file or the digest (and the layout) at fault.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Why a layout, or something in it, could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist, is not a directory, or lacks `oci-layout` / `index.json`.
    #[error("{} is not an OCI image layout: {reason}", .path.display())]
    NotALayout { path: PathBuf, reason: &'static str },

    /// `oci-layout` names an `imageLayoutVersion` other than 1.x.
    #[error("{}: imageLayoutVersion {version:?} is not supported (1.x is)", .path.display())]
    UnsupportedVersion { path: PathBuf, version: String },

    /// The operating system refused or failed a read.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A JSON file or blob does not parse into what it must be. This includes descriptors
    /// whose digest is not a valid digest (`sha256:../../etc`).
    #[error("{}: invalid JSON: {source}", .path.display())]
    InvalidJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// An index or manifest whose `schemaVersion` is not 2.
    #[error("{}: schemaVersion is {found}, expected 2", .path.display())]
    InvalidSchemaVersion { path: PathBuf, found: u32 },

    /// A file that is read into memory is larger than the limit for its kind.
    #[error("{}: larger than the {limit}-byte limit for reading it into memory", .path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    /// A path in the layout resolves (through a symlink) to somewhere outside the layout.
    #[error(
        "{}: resolves to {}, outside the layout {}",
        .path.display(),
        .target.display(),
        .layout.display()
    )]
    OutsideLayout { path: PathBuf, target: PathBuf, layout: PathBuf },

    /// A path in the layout is a directory, FIFO, socket or device instead of a regular file.
    #[error("{}: is a {kind}, not a regular file", .path.display())]
    NotARegularFile { path: PathBuf, kind: &'static str },

    /// The blob is not in the layout.
    #[error("blob {digest} is not in layout {}", .layout.display())]
    BlobMissing { digest: Digest, layout: PathBuf },

    /// The blob's length differs from the descriptor's size (`actual` is the count so far
    /// when a stream went past `expected`).
    #[error("blob {digest}{}: size is {actual} bytes, descriptor says {expected}", in_layout(.layout))]
    SizeMismatch { digest: Digest, expected: u64, actual: u64, layout: Option<PathBuf> },

    /// The blob's content does not hash to the descriptor's digest.
    #[error("blob {expected}{}: content has digest {actual}", in_layout(.layout))]
    DigestMismatch { expected: Digest, actual: Digest, layout: Option<PathBuf> },

    /// The descriptor's media type is not the kind of content asked for (`read_index` on a
    /// manifest descriptor, `read_manifest` on an index descriptor, or an unknown type).
    #[error(
        "blob {digest} in layout {}: descriptor media type {media_type:?} is not {wanted}",
        .layout.display()
    )]
    UnexpectedMediaType {
        digest: Digest,
        media_type: String,
        wanted: &'static str,
        layout: PathBuf,
    },

    /// An entry of an archive that imagepush refuses, whatever the rest holds.
    #[error("{}: entry {}: {problem}", .archive.display(), entry_name(.entry))]
    ArchiveEntry { archive: PathBuf, entry: String, problem: EntryProblem },

    /// The archive ends before its end: a tar whose last entry is cut short or that lacks its
    /// end-of-archive block, or a gzip stream that stops early.
    #[error("{}: the archive is truncated: {detail}", .archive.display())]
    ArchiveTruncated { archive: PathBuf, detail: String },

    /// Not a valid tar or gzip stream: a header with a wrong checksum, corrupt deflate data, a
    /// gzip checksum that does not match.
    #[error("{}: the archive is damaged: {detail}", .archive.display())]
    ArchiveDamaged { archive: PathBuf, detail: String },

    /// A docker-archive (the legacy `docker save` format), which is not an OCI layout.
    #[error(
        "{} is a docker-archive (manifest.json without index.json): convert it with `skopeo copy docker-archive:{} oci-archive:OUT.tar` or load it with Docker 25+ and save it again",
        .archive.display(), .archive.display()
    )]
    DockerArchive { archive: PathBuf },

    /// The archive holds the layout one directory down (`tar -cf x.tar app/` instead of
    /// `tar -C app -cf x.tar .`).
    #[error(
        "{} holds the layout in its directory {dir:?}, not at its top: make the archive from inside the layout (`tar -C {dir} -cf FILE .`)",
        .archive.display()
    )]
    ArchiveNested { archive: PathBuf, dir: String },

    /// The content's own `mediaType` field contradicts the descriptor's media type.
    #[error(
        "blob {digest} in layout {}: descriptor says media type {descriptor:?}, content says {content:?}",
        .layout.display()
    )]
    MediaTypeMismatch { digest: Digest, descriptor: String, content: String, layout: PathBuf },
}

/// What is wrong with an archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// `/etc/passwd`.
    Absolute,
    /// `../x`, `blobs/../../x`.
    ParentDir,
    /// A symlink or hard link whose target, resolved inside the archive, leaves it.
    LinkOutside { link: &'static str, target: String },
    /// A hard link to something that is not a regular file before it in the archive.
    HardLinkTarget { target: String },
    /// A symlink or hard link where imagepush reads a file (`oci-layout`, `index.json`,
    /// `blobs/...`).
    LinkWhereFileRead { link: &'static str },
    /// The same name twice.
    Duplicate,
    /// Below an entry that is not a directory.
    UnderNonDirectory { parent: String },
    /// A device, FIFO or socket.
    Special { kind: &'static str },
    /// An entry type imagepush does not read (GNU sparse files, volume labels, ...).
    Unsupported { typeflag: char },
    /// A PAX extended header or GNU long name that cannot be used.
    BadExtendedHeader { detail: String },
}

impl std::fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryProblem::Absolute => f.write_str("an absolute name leads out of the layout"),
            EntryProblem::ParentDir => f.write_str("a name with `..` leads out of the layout"),
            EntryProblem::LinkOutside { link, target } => {
                write!(f, "a {link} to {target:?}, which leads out of the layout")
            }
            EntryProblem::HardLinkTarget { target } => write!(
                f,
                "a hard link to {target:?}, which is not a regular file earlier in the archive"
            ),
            EntryProblem::LinkWhereFileRead { link } => write!(
                f,
                "is a {link}; oci-layout, index.json and everything under blobs/ must be regular files in an archive"
            ),
            EntryProblem::Duplicate => f.write_str("appears more than once"),
            EntryProblem::UnderNonDirectory { parent } => {
                write!(f, "lies below {parent:?}, which is not a directory")
            }
            EntryProblem::Special { kind } => {
                write!(f, "is a {kind}; an image archive holds only files, directories and links")
            }
            EntryProblem::Unsupported { typeflag } => {
                write!(f, "has the entry type {typeflag:?}, which imagepush does not read")
            }
            EntryProblem::BadExtendedHeader { detail } => {
                write!(f, "bad extended header: {detail}")
            }
        }
    }
}

/// An entry name as written in messages: quoted, control characters escaped.
fn entry_name(name: &str) -> String {
    format!("{name:?}")
}

impl Error {
    /// Whether retrying later may succeed: only I/O failures the storage can recover from
    /// (EIO, a stale NFS handle, timeouts, running out of file descriptors or memory).
    /// Everything else is a property of the layout and stays until the layout changes.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                ) || matches!(
                    source.raw_os_error(),
                    Some(libc::EIO | libc::ESTALE | libc::ENOMEM | libc::EMFILE | libc::ENFILE)
                )
            }
            _ => false,
        }
    }

    pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_path_buf(), source }
    }

    pub(super) fn json(path: &Path) -> impl FnOnce(serde_json::Error) -> Error + '_ {
        move |source| Error::InvalidJson { path: path.to_path_buf(), source }
    }
}

fn in_layout(layout: &Option<PathBuf>) -> String {
    match layout {
        Some(path) => format!(" in layout {}", path.display()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Error>();
    }

    #[test]
    fn messages_name_what_is_at_fault() {
        let d = Digest::sha256(b"x");
        let cases: Vec<(Error, String)> = vec![
            (
                Error::SizeMismatch {
                    digest: d.clone(),
                    expected: 34,
                    actual: 12,
                    layout: Some(PathBuf::from("/x")),
                },
                format!("blob {d} in layout /x: size is 12 bytes, descriptor says 34"),
            ),
            (
                Error::SizeMismatch { digest: d.clone(), expected: 34, actual: 12, layout: None },
                format!("blob {d}: size is 12 bytes, descriptor says 34"),
            ),
            (
                Error::NotARegularFile { path: PathBuf::from("/x/blobs/sha256/ab"), kind: "FIFO" },
                "/x/blobs/sha256/ab: is a FIFO, not a regular file".to_string(),
            ),
            (
                Error::BlobMissing { digest: d.clone(), layout: PathBuf::from("/x") },
                format!("blob {d} is not in layout /x"),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn only_recoverable_io_is_transient() {
        let io = |e: io::Error| Error::Io { path: PathBuf::from("/x"), source: e };
        assert!(io(io::Error::from_raw_os_error(libc::EIO)).is_transient());
        assert!(io(io::Error::from(io::ErrorKind::TimedOut)).is_transient());
        assert!(!io(io::Error::from(io::ErrorKind::NotFound)).is_transient());
        assert!(!io(io::Error::from_raw_os_error(libc::ELOOP)).is_transient());
        assert!(!Error::TooLarge { path: PathBuf::from("/x"), limit: 1 }.is_transient());
    }
}
