//! Test helpers: small layouts in temporary directories, FIFOs, and a guard against hangs.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use super::LayoutReader;
use crate::digest::Digest;
use crate::oci::{self, Descriptor};

pub const LAYOUT_1_0_0: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A sha256 descriptor of `bytes`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: Digest::sha256(bytes),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
        urls: Vec::new(),
        artifact_type: None,
    }
}

pub fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Runs `f` on another thread and fails the test if it has not returned within 10 s
/// (a FIFO opened for reading without O_NONBLOCK would block forever).
pub fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("hung (or panicked) reading a special file")
}

/// A valid layout: `oci-layout` 1.0.0 and an `index.json` with one manifest tagged
/// `latest`, whose config and one layer are in `blobs/sha256/`.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layer: Descriptor,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::named(OsStr::new("layout"))
    }

    /// The layout in a directory called `name` (which need not be UTF-8).
    pub fn named(name: &OsStr) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap().join(name);
        fs::create_dir(&root).unwrap();
        let mut f = Fixture {
            _tmp: tmp,
            root,
            manifest: descriptor("", b""),
            config: descriptor("", b""),
            layer: descriptor("", b""),
        };
        f.write("oci-layout", LAYOUT_1_0_0);
        f.config = f.put_blob(
            "application/vnd.oci.image.config.v1+json",
            br#"{"architecture":"amd64","os":"linux"}"#,
        );
        f.layer = f.put_blob("application/vnd.oci.image.layer.v1.tar", b"layer bytes");
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": f.config,
            "layers": [f.layer],
        });
        f.manifest = f.put_blob(oci::OCI_MANIFEST, manifest.to_string().as_bytes());
        let mut tagged = f.manifest.clone();
        tagged.annotations.insert(oci::REF_NAME_ANNOTATION.to_string(), "latest".to_string());
        f.write_index(&[tagged]);
        f
    }

    /// The layout's canonical path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A sibling directory of the layout, for symlink targets outside it.
    pub fn outside(&self) -> PathBuf {
        let dir = self.root.parent().unwrap().join("outside");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    pub fn write_index(&self, manifests: &[Descriptor]) {
        let index = json!({ "schemaVersion": 2, "manifests": manifests });
        self.write("index.json", index.to_string().as_bytes());
    }

    /// Writes `bytes` as a sha256 blob and returns its descriptor.
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let desc = descriptor(media_type, bytes);
        fs::write(self.make_blob_dir(&desc.digest), bytes).unwrap();
        desc
    }

    /// The blob's path, with its directory created (for special files and symlinks).
    pub fn make_blob_dir(&self, digest: &Digest) -> PathBuf {
        let dir = self.path(&format!("blobs/{}", digest.algorithm().as_str()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(digest.hex())
    }

    pub fn reader(&self) -> LayoutReader {
        LayoutReader::open(&self.root).unwrap()
    }
}
