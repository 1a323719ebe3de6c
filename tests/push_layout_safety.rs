//! Damaged and hostile layouts: every one is refused with the right exit code and a message
//! naming what is at fault, nothing is tagged, bad content never lands in the registry, and
//! the layout itself is never written (checked against a snapshot of every entry taken just
//! before the push: kind, mode, size, mtime, ctime, content hash, symlink target).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::layout::{self, ImageSpec, LayoutBuilder, REF_NAME, desc_from_json};
use common::{CountingProxy, Desc, Run, TestRegistry, sha256_digest, simple_image};
use serde_json::json;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

/// One entry of a layout directory, as far as "was it written?" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryState {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// sha256 of a regular file's content.
    content: Option<String>,
    /// Where a symlink points (never followed).
    link: Option<PathBuf>,
}

type Snapshot = BTreeMap<PathBuf, EntryState>;

/// Every entry below (and including) `root`, never following symlinks and never opening
/// anything but regular files (a FIFO in the layout must not block the snapshot).
fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else {
            "other"
        };
        if ft.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        let content = ft.is_file().then(|| sha256_digest(&fs::read(&path).unwrap()));
        let link = ft.is_symlink().then(|| fs::read_link(&path).unwrap());
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            EntryState {
                kind,
                mode: meta.mode(),
                size: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
                content,
                link,
            },
        );
    }
    out
}

/// Panics, listing every difference, unless the layout is exactly as `before`.
fn assert_layout_unchanged(root: &Path, before: &Snapshot) {
    let after = snapshot(root);
    if &after == before {
        return;
    }
    let mut diffs = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => diffs.push(format!("removed: {}", p.display())),
            Some(a) if a != b => {
                diffs.push(format!("changed: {}\n  before {b:?}\n  after  {a:?}", p.display()))
            }
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        diffs.push(format!("created: {}", p.display()));
    }
    panic!("the push wrote the layout {}:\n{}", root.display(), diffs.join("\n"));
}

fn push_args<'a>(layout: &'a Path, target: &'a str) -> Vec<&'a str> {
    vec!["push", "--plain-http", "--progress", "plain", layout.to_str().unwrap(), target]
}

/// `imagepush push --plain-http LAYOUT TARGET`, under strace: panics if the binary opened a
/// file outside the layout for reading.
fn push(layout: &Path, target: &str) -> Run {
    let (run, opened) = common::cli::imagepush_traced(&push_args(layout, target));
    opened.assert_confined(layout, &[]);
    run
}

/// Like `push`, but kills the binary and fails the test when it has not exited within
/// `timeout` (for layouts that could make a careless reader block, such as a FIFO).
fn push_with_timeout(layout: &Path, target: &str, timeout: Duration) -> Run {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let (mut cmd, _home) = common::cli::command(&push_args(layout, target), Some(trace.path()));
    let mut child = cmd.stdin(Stdio::null()).spawn().expect("run imagepush");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "imagepush did not exit within {timeout:?} (killed); stdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    common::cli::Opened::read(trace.path()).assert_confined(layout, &[]);
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Asserts the exit code, that stderr names every one of `needles`, and that `repo` has no tag.
async fn assert_refused(
    run: &Run,
    code: i32,
    needles: &[&str],
    registry: &TestRegistry,
    repo: &str,
) {
    eprintln!("[{repo}] exit {}; stderr:\n{}", run.code, run.stderr);
    run.expect_code(code);
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "stderr does not mention {needle:?}; stdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
    let tags = registry.tags(repo).await;
    assert!(
        tags.is_empty(),
        "{repo} got tags {tags:?} from a failed push; stderr:\n{}",
        run.stderr
    );
}

/// XORs the byte at `offset` of `path` with 0xff (same size, different content).
fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

/// Waits (a little) for the proxy to have forwarded at least `at_least` bytes to the server;
/// returns what it counted.
fn wait_bytes_to_server(proxy: &CountingProxy, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.bytes_to_server() < at_least && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.bytes_to_server()
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

fn canonical(p: &Path) -> String {
    fs::canonicalize(p).unwrap().display().to_string()
}

fn layer_descs(b: &LayoutBuilder, image: &Desc) -> Vec<Desc> {
    b.children(image).1
}

// ---------------------------------------------------------------------------------------
// 1. Corrupt layer content, same size: fails while streaming, never committed
// ---------------------------------------------------------------------------------------

async fn corrupt_layer_is_not_committed(offset_of: fn(usize) -> usize, repo: &str) {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * MIB;
    let (b, image) = simple_image(dir.path(), "v1", &[size], 101);
    let layer = layer_descs(&b, &image).remove(0);
    assert_eq!(layer.size, size as u64);
    flip_byte(&b.blob_path(&layer.digest), offset_of(size));
    let before = snapshot(dir.path());

    let target = format!("{}/{repo}:v1", proxy.host());
    let run = push(dir.path(), &target);
    assert_refused(&run, 2, &[&layer.digest, "content has digest"], &registry, repo).await;

    // It failed while streaming: most of the layer went out before the digest was known to
    // be wrong (the upload is verified on the way, not by reading the blob twice).
    let sent = wait_bytes_to_server(&proxy, MIB as u64);
    eprintln!("[{repo}] {sent} bytes to the registry");
    assert!(
        sent >= MIB as u64,
        "only {sent} bytes went to the registry; the corrupt layer was not streamed"
    );

    assert!(
        !registry.blob_exists(repo, &layer.digest).await,
        "the registry committed the corrupt layer {}",
        layer.digest
    );
    assert!(
        registry.manifest(repo, &image.digest).await.is_none(),
        "manifest pushed over a corrupt layer"
    );
    assert_layout_unchanged(dir.path(), &before);
}

#[tokio::test]
async fn corrupt_layer_same_size_middle_is_not_committed() {
    corrupt_layer_is_not_committed(|size| size / 2, "safety/corrupt-middle").await;
}

#[tokio::test]
async fn corrupt_layer_same_size_last_byte_is_not_committed() {
    corrupt_layer_is_not_committed(|size| size - 1, "safety/corrupt-last").await;
}

/// A small layer (sent whole in the commit `PUT`) is verified before any of it is sent.
#[tokio::test]
async fn corrupt_small_layer_is_refused_before_sending_it() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[200_000], 102);
    let layer = layer_descs(&b, &image).remove(0);
    flip_byte(&b.blob_path(&layer.digest), 100_000);
    let before = snapshot(dir.path());
    let run = push(dir.path(), &format!("{}/small/app:v1", proxy.host()));
    assert_refused(&run, 2, &[&layer.digest, "content has digest"], &registry, "small/app").await;
    let sent = proxy.bytes_to_server();
    assert!(sent < 100_000, "{sent} bytes went to the registry for a corrupt 200 kB layer");
    assert!(!registry.blob_exists("small/app", &layer.digest).await);
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 2./3. Layer file shorter or longer than its descriptor
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn truncated_layer_is_refused_naming_the_size() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let size = 300 * KIB;
    let (b, image) = simple_image(dir.path(), "v1", &[size], 102);
    let layer = layer_descs(&b, &image).remove(0);
    let path = b.blob_path(&layer.digest);
    let bytes = fs::read(&path).unwrap();
    let short = size / 3;
    fs::write(&path, &bytes[..short]).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/truncated";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(
        &run,
        2,
        &[&layer.digest, "size", &short.to_string(), &size.to_string()],
        &registry,
        repo,
    )
    .await;
    assert!(!registry.blob_exists(repo, &layer.digest).await);
    assert!(registry.manifest(repo, &image.digest).await.is_none());
    assert_layout_unchanged(dir.path(), &before);
}

#[tokio::test]
async fn layer_longer_than_its_descriptor_is_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let size = 300 * KIB;
    let (b, image) = simple_image(dir.path(), "v1", &[size], 103);
    let layer = layer_descs(&b, &image).remove(0);
    let path = b.blob_path(&layer.digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"trailing garbage");
    fs::write(&path, &bytes).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/longer";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &[&layer.digest, "size", &size.to_string()], &registry, repo).await;
    assert!(!registry.blob_exists(repo, &layer.digest).await);
    assert!(registry.manifest(repo, &image.digest).await.is_none());
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 4. Symlinks leaving the layout
// ---------------------------------------------------------------------------------------

/// A layer replaced by a symlink to a file outside the layout holding exactly the layer's
/// bytes: only the confinement check can refuse it. Nothing of it may be sent.
#[tokio::test]
async fn layer_symlink_outside_the_layout_is_refused() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let size = MIB;
    let (b, image) = simple_image(dir.path(), "v1", &[size], 104);
    let layer = layer_descs(&b, &image).remove(0);
    let blob = b.blob_path(&layer.digest);
    let outside_file = outside.path().join("layer");
    fs::rename(&blob, &outside_file).unwrap();
    std::os::unix::fs::symlink(&outside_file, &blob).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/symlink-out";
    let run = push(dir.path(), &format!("{}/{repo}:v1", proxy.host()));
    assert_refused(&run, 2, &[layer.hex(), "outside the layout"], &registry, repo).await;
    let sent = proxy.bytes_to_server();
    eprintln!("[{repo}] {sent} bytes to the registry");
    assert!(
        sent < 100 * KIB as u64,
        "{sent} bytes went to the registry (outside file is {size} bytes)"
    );
    assert!(!registry.blob_exists(repo, &layer.digest).await);
    assert_layout_unchanged(dir.path(), &before);
}

/// A relative symlink climbing out of the layout (to a system file).
#[tokio::test]
async fn layer_relative_symlink_to_system_file_is_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[4096], 105);
    let layer = layer_descs(&b, &image).remove(0);
    let blob = b.blob_path(&layer.digest);
    fs::remove_file(&blob).unwrap();
    // blobs/sha256/<hex> -> ../../../../../../../../etc/passwd
    std::os::unix::fs::symlink(format!("{}etc/passwd", "../".repeat(24)), &blob).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/symlink-rel";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &[layer.hex(), "outside the layout"], &registry, repo).await;
    assert!(!registry.blob_exists(repo, &layer.digest).await);
    assert_layout_unchanged(dir.path(), &before);
}

/// A layer that is a symlink out of the layout to nothing (what a link to the node's disk
/// looks like in a worker, where only the volume is mounted): refused as leaving the layout,
/// not taken for a missing blob.
#[tokio::test]
async fn layer_symlink_outside_the_layout_to_nothing_is_refused_as_leaving_it() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[4096], 106);
    let layer = layer_descs(&b, &image).remove(0);
    let blob = b.blob_path(&layer.digest);
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/nonexistent-node-dir/layers/layer", &blob).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/symlink-dangling";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &[layer.hex(), "outside the layout"], &registry, repo).await;
    assert_layout_unchanged(dir.path(), &before);
}

/// `blobs/sha256` itself is a symlink to a directory outside the layout holding valid blobs.
#[tokio::test]
async fn blobs_directory_symlink_outside_the_layout_is_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[4096], 106);
    let sha_dir = dir.path().join("blobs").join("sha256");
    let moved = outside.path().join("sha256");
    fs::rename(&sha_dir, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &sha_dir).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/symlink-dir";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &["outside the layout"], &registry, repo).await;
    for d in b.blob_digests(&image) {
        assert!(!registry.blob_exists(repo, &d).await, "{d} was pushed from outside the layout");
    }
    assert!(registry.manifest(repo, &image.digest).await.is_none());
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 5. FIFOs where files should be: refused at once, never opened for a blocking read
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn fifo_instead_of_a_file_is_refused_without_hanging() {
    let registry = TestRegistry::start();
    for which in ["layer", "manifest", "index.json"] {
        let dir = tempfile::tempdir().unwrap();
        let (b, image) = simple_image(dir.path(), "v1", &[64 * KIB], 107);
        let layer = layer_descs(&b, &image).remove(0);
        let (path, name) = match which {
            "layer" => (b.blob_path(&layer.digest), layer.hex().to_string()),
            "manifest" => (b.blob_path(&image.digest), image.hex().to_string()),
            _ => (dir.path().join("index.json"), "index.json".to_string()),
        };
        fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let before = snapshot(dir.path());

        let repo = format!("safety/fifo-{}", which.replace('.', "-"));
        let started = Instant::now();
        let run = push_with_timeout(
            dir.path(),
            &format!("{}/{repo}:v1", registry.host()),
            Duration::from_secs(30),
        );
        let took = started.elapsed();
        assert_refused(&run, 2, &[&name, "FIFO", "not a regular file"], &registry, &repo).await;
        assert!(took < Duration::from_secs(15), "{which}: refusing the FIFO took {took:?}");
        assert!(!registry.blob_exists(&repo, &layer.digest).await, "{which}");
        assert_layout_unchanged(dir.path(), &before);
    }
}

// ---------------------------------------------------------------------------------------
// 6. Invalid digests never become paths
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn index_json_with_path_traversal_digest_is_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (_b, image) = simple_image(dir.path(), "v1", &[1000], 108);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": layout::OCI_INDEX,
        "manifests": [{
            "mediaType": layout::OCI_MANIFEST,
            "digest": "sha256:../../etc/passwd",
            "size": image.size,
            "annotations": { REF_NAME: "v1" },
        }],
    });
    fs::write(dir.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/bad-digest-index";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &["index.json", "invalid digest", "../../etc/passwd"], &registry, repo)
        .await;
    assert_layout_unchanged(dir.path(), &before);
}

/// The same inside a manifest (a layer descriptor), where the digest would name a blob path.
#[tokio::test]
async fn manifest_with_path_traversal_layer_digest_is_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut b, image) = simple_image(dir.path(), "v1", &[1000], 109);
    let (config, _) = b.children(&image);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": layout::OCI_MANIFEST,
        "config": config.json,
        "layers": [{
            "mediaType": layout::OCI_LAYER_GZIP,
            "digest": "sha256:../../../../../../etc/passwd",
            "size": 10,
        }],
    });
    let (digest, size) = b.blob(&serde_json::to_vec(&manifest).unwrap());
    let bad = desc_from_json(
        &json!({ "mediaType": layout::OCI_MANIFEST, "digest": digest, "size": size }),
    );
    b.tag(&bad, "v1");
    b.write();
    let before = snapshot(dir.path());

    let repo = "safety/bad-digest-manifest";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &[bad.hex(), "invalid digest"], &registry, repo).await;
    assert!(registry.manifest(repo, &bad.digest).await.is_none());
    assert!(
        !registry.blob_exists(repo, &config.digest).await,
        "config uploaded for an invalid manifest"
    );
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 7.-9. index.json and oci-layout
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn index_json_not_json_or_truncated_is_refused() {
    let registry = TestRegistry::start();
    for (i, variant) in ["not json", "truncated"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        simple_image(dir.path(), "v1", &[1000], 110);
        let path = dir.path().join("index.json");
        let good = fs::read(&path).unwrap();
        let damaged = match variant {
            "not json" => b"this is not JSON at all\n".to_vec(),
            _ => good[..good.len() / 2].to_vec(),
        };
        fs::write(&path, damaged).unwrap();
        let before = snapshot(dir.path());

        let repo = format!("safety/index-json-{i}");
        let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
        assert_refused(&run, 2, &["index.json"], &registry, &repo).await;
        assert_layout_unchanged(dir.path(), &before);
    }
}

#[tokio::test]
async fn missing_oci_layout_file_is_not_a_layout() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    simple_image(dir.path(), "v1", &[1000], 111);
    fs::remove_file(dir.path().join(layout::OCI_LAYOUT_FILE)).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/no-oci-layout";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    let root = canonical(dir.path());
    assert_refused(&run, 2, &[&root, "not an OCI image layout", "oci-layout"], &registry, repo)
        .await;
    assert_layout_unchanged(dir.path(), &before);
}

#[tokio::test]
async fn unsupported_image_layout_version_is_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    simple_image(dir.path(), "v1", &[1000], 112);
    fs::write(dir.path().join(layout::OCI_LAYOUT_FILE), br#"{"imageLayoutVersion":"2.0.0"}"#)
        .unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/layout-v2";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &["oci-layout", "2.0.0"], &registry, repo).await;
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 10. A manifest whose bytes do not match its digest
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn manifest_edited_in_place_is_refused() {
    let registry = TestRegistry::start();
    for variant in ["same size", "longer"] {
        let dir = tempfile::tempdir().unwrap();
        let (b, image) = simple_image(dir.path(), "v1", &[1000], 113);
        let path = b.blob_path(&image.digest);
        let text = fs::read_to_string(&path).unwrap();
        let edited = match variant {
            // Still valid JSON of the same length: one hex digit of the config digest changed.
            "same size" => {
                let (config, _) = b.children(&image);
                let hex = config.hex();
                let first = hex.as_bytes()[0];
                let swapped = if first == b'0' { '1' } else { '0' };
                let new_hex = format!("{swapped}{}", &hex[1..]);
                let edited = text.replacen(hex, &new_hex, 1);
                assert_eq!(edited.len(), text.len());
                edited
            }
            _ => format!("{text} "),
        };
        fs::write(&path, edited).unwrap();
        let before = snapshot(dir.path());

        let repo = format!("safety/manifest-edited-{}", variant.replace(' ', "-"));
        let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
        assert_refused(&run, 2, &[&image.digest], &registry, &repo).await;
        assert!(
            registry.manifest(&repo, &image.digest).await.is_none(),
            "{variant}: a manifest was pushed under {}",
            image.digest
        );
        for d in b.blob_digests(&image) {
            assert!(
                !registry.blob_exists(&repo, &d).await,
                "{variant}: {d} uploaded for a corrupt manifest"
            );
        }
        assert_layout_unchanged(dir.path(), &before);
    }
}

// ---------------------------------------------------------------------------------------
// 11. An index.json entry that is neither a manifest nor an index
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn entry_with_non_manifest_media_type_is_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut b, image) = simple_image(dir.path(), "v1", &[1000], 114);
    let bad = desc_from_json(&json!({
        "mediaType": "application/octet-stream",
        "digest": image.digest,
        "size": image.size,
    }));
    b.tag(&bad, "v1");
    b.write();
    let before = snapshot(dir.path());

    let repo = "safety/octet-stream";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    assert_refused(&run, 2, &["application/octet-stream", &image.digest], &registry, repo).await;
    assert!(registry.manifest(repo, &image.digest).await.is_none());
    for d in b.blob_digests(&image) {
        assert!(!registry.blob_exists(repo, &d).await, "{d} uploaded for an unpushable entry");
    }
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 12. Nesting: a real cycle cannot be built (an index would have to contain its own digest),
//     so indexes nested deeper than the reader allows stand in for it.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn indexes_nested_too_deep_are_refused() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayoutBuilder::new(dir.path());
    let image = b.image(&ImageSpec::new(&[(115, 1000)], 115).platform("linux", "amd64", None));
    let mut indexes = Vec::new();
    let mut top = image.clone();
    for _ in 0..12 {
        top = b.index(&[top], false);
        indexes.push(top.digest.clone());
    }
    b.tag(&top, "v1");
    b.write();
    let before = snapshot(dir.path());

    let repo = "safety/deep";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    eprintln!("[{repo}] exit {}; stderr:\n{}", run.code, run.stderr);
    run.expect_code(2);
    let lower = run.stderr.to_lowercase();
    assert!(lower.contains("cycle") || lower.contains("nest"), "stderr:\n{}", run.stderr);
    assert!(
        indexes.iter().any(|d| run.stderr.contains(d.as_str())),
        "stderr names none of the nested indexes:\n{}",
        run.stderr
    );
    assert!(registry.tags(repo).await.is_empty());
    assert!(registry.manifest(repo, &image.digest).await.is_none());
    assert!(registry.manifest(repo, &top.digest).await.is_none());
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 13. Thin layout, content missing everywhere: exit 3 before anything is uploaded
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn thin_layout_without_mount_candidate_uploads_nothing() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[2 * MIB, 1000, 3000], 116);
    let layers = layer_descs(&b, &image);
    b.remove_blob(&layers[1].digest);
    b.remove_blob(&layers[2].digest);
    let before = snapshot(dir.path());

    let repo = "safety/thin";
    let run = push(dir.path(), &format!("{}/{repo}:v1", proxy.host()));
    assert_refused(&run, 3, &[&layers[1].digest, &layers[2].digest], &registry, repo).await;
    let sent = proxy.bytes_to_server();
    eprintln!("[{repo}] {sent} bytes to the registry");
    assert!(
        sent < 100 * KIB as u64,
        "{sent} bytes went to the registry although the push could not succeed (present layer: 2 MiB)"
    );
    assert!(!registry.blob_exists(repo, &layers[0].digest).await, "the present layer was uploaded");
    assert!(registry.manifest(repo, &image.digest).await.is_none());
    assert_layout_unchanged(dir.path(), &before);
}

// ---------------------------------------------------------------------------------------
// 14. Controls: intact layouts push and are not written
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn intact_layout_pushes_and_is_not_written() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[3 * MIB, 1000], 117);
    let before = snapshot(dir.path());

    let repo = "safety/good";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    run.ok();
    assert_eq!(registry.tags(repo).await, vec!["v1".to_string()]);
    let (bytes, _, dcd) = registry.manifest(repo, "v1").await.expect("tagged manifest");
    assert_eq!(dcd, image.digest);
    assert_eq!(sha256_digest(&bytes), image.digest);
    for d in b.blob_digests(&image) {
        assert!(registry.blob_exists(repo, &d).await, "{d}");
    }
    assert_layout_unchanged(dir.path(), &before);
}

/// Symlinks that stay inside the layout are fine (some tools deduplicate that way).
#[tokio::test]
async fn symlink_inside_the_layout_pushes() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[64 * KIB], 118);
    let layer = layer_descs(&b, &image).remove(0);
    let blob = b.blob_path(&layer.digest);
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    fs::rename(&blob, store.join("layer")).unwrap();
    std::os::unix::fs::symlink("../../store/layer", &blob).unwrap();
    let before = snapshot(dir.path());

    let repo = "safety/symlink-in";
    let run = push(dir.path(), &format!("{}/{repo}:v1", registry.host()));
    run.ok();
    assert_eq!(registry.tags(repo).await, vec!["v1".to_string()]);
    assert_eq!(
        registry.blob(repo, &layer.digest).await.unwrap(),
        fs::read(store.join("layer")).unwrap()
    );
    assert_layout_unchanged(dir.path(), &before);
}
