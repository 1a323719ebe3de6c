//! OCI layouts in tar archives, plain and gzip, as real tools write them: `skopeo copy …
//! oci-archive:`, GNU tar, `podman save --format oci-archive`, and `docker save` of Docker
//! Engine 25+ (built here by its published format: no Docker engine runs on these machines).
//! Each is pushed to a real registry and checked from the registry's side against the archive
//! as GNU tar extracts it (digests with skopeo, every blob byte for byte). Hostile archives,
//! made with Python's tarfile, are each refused with exit 2, a message naming the entry, no
//! tag written, and no file read but the archive (strace).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::imagepush_traced;
use common::layout::{self, REF_NAME};
use common::registry::skopeo_ok;
use common::{LayoutBuilder, TestRegistry, imagepush, multi_platform, sha256_digest, simple_image};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

/// Runs a command, panicking with its output unless it succeeds.
fn must(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// GNU tar of the layout directory's content (`tar -C DIR -cf OUT .`, `-z` for gzip).
fn gnu_tar(layout: &Path, out: &Path, gzip: bool) {
    let flags = if gzip { "-czf" } else { "-cf" };
    must(Command::new("tar").arg("-C").arg(layout).arg(flags).arg(out).arg("."));
}

/// The archive as GNU tar extracts it: the judge of what it holds.
fn extract(archive: &Path, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    must(Command::new("tar").arg("-C").arg(into).arg("-xf").arg(archive));
    into.to_path_buf()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// Checks that `repo:tag` in the registry is the image the extracted layout names `name`
/// (a ref name): skopeo reads the same manifest digest, and every manifest and blob below it
/// is in the registry byte for byte. Returns the digest.
async fn assert_pushed(
    registry: &TestRegistry,
    repo: &str,
    tag: &str,
    layout: &Path,
    name: &str,
) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"][REF_NAME] == name)
        .unwrap_or_else(|| panic!("{name} not in {index}"));
    let root = entry["digest"].as_str().unwrap().to_string();
    let raw = registry.skopeo_inspect_raw(&format!("{repo}:{tag}"));
    assert_eq!(sha256_digest(&raw), root, "skopeo reads {repo}:{tag}");
    let mut todo = vec![root.clone()];
    let mut blobs = 0;
    while let Some(digest) = todo.pop() {
        let bytes = std::fs::read(blob_path(layout, &digest)).unwrap();
        let (got, _, _) = registry.manifest(repo, &digest).await.expect("manifest in the registry");
        assert!(got == bytes, "manifest {digest} differs");
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        for child in m["manifests"].as_array().into_iter().flatten() {
            todo.push(child["digest"].as_str().unwrap().to_string());
        }
        let config = m.get("config").into_iter();
        for b in config.chain(m["layers"].as_array().into_iter().flatten()) {
            let d = b["digest"].as_str().unwrap();
            let want = std::fs::read(blob_path(layout, d)).unwrap();
            let got = registry.blob(repo, d).await.expect("blob in the registry");
            assert!(got == want, "blob {d} differs ({} bytes, want {})", got.len(), want.len());
            blobs += 1;
        }
    }
    assert!(blobs > 0);
    root
}

/// Pushes `archive` under strace: exit 0, and the only file of the test's read was the
/// archive.
fn push_archive(archive: &Path, target: &str, extra: &[&str]) -> common::Run {
    let mut args = vec!["push", "--plain-http", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.extend([archive.to_str().unwrap(), target]);
    let (run, opened) = imagepush_traced(&args);
    opened.assert_confined(archive, &[]);
    run.ok();
    run
}

/// A layout with an index of two platforms (shared base layer, attestations) and a tag v1,
/// plus a second image tagged v2 with layers of a few MiB.
fn rich_layout(root: &Path) -> LayoutBuilder {
    let platforms = [("linux", "amd64", None), ("linux", "arm64", Some("v8"))];
    let (mut b, _index, _) = multi_platform(root, "v1", &platforms, true, true, 31);
    let image =
        b.image(&common::ImageSpec::new(&[(901, 3 * MIB), (902, 2 * MIB + 5), (903, 10)], 32));
    b.tag(&image, "v2");
    b.write();
    b
}

#[tokio::test]
async fn skopeo_oci_archive_pushes_as_the_layout() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout");
    rich_layout(&source);
    // skopeo writes an uncompressed tar, the layout at its top, no links.
    let archive = dir.path().join("skopeo.tar");
    skopeo_ok(&[
        "copy".into(),
        "--all".into(),
        format!("oci:{}:v1", source.display()),
        format!("oci-archive:{}:v1", archive.display()),
    ]);
    let extracted = extract(&archive, &dir.path().join("x"));
    let target = format!("{}/archive/skopeo:v1", registry.host());
    push_archive(&archive, &target, &[]);
    assert_pushed(&registry, "archive/skopeo", "v1", &extracted, "v1").await;
    // The same archive gzipped (by gzip itself) pushes the same image.
    must(Command::new("gzip").arg("-k").arg(&archive));
    let gz = dir.path().join("skopeo.tar.gz");
    push_archive(&gz, &format!("{}/archive/skopeo-gz:v1", registry.host()), &[]);
    assert_pushed(&registry, "archive/skopeo-gz", "v1", &extracted, "v1").await;
}

#[tokio::test]
async fn gnu_tar_plain_and_gzip_detected_by_content() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout");
    rich_layout(&source);
    for (name, gzip) in [("plain.bin", false), ("gzip.bin", true), ("layout.tar.gz", true)] {
        let archive = dir.path().join(name);
        gnu_tar(&source, &archive, gzip);
        let repo = format!("archive/{}", name.replace('.', "-"));
        // Without a tag: every tag of the archive.
        let run = push_archive(&archive, &format!("{}/{repo}", registry.host()), &[]);
        assert!(
            run.stdout.contains("v1: digest:") && run.stdout.contains("v2: digest:"),
            "{}",
            run.stdout
        );
        for tag in ["v1", "v2"] {
            assert_pushed(&registry, &repo, tag, &source, tag).await;
        }
    }
}

/// podman with its own storage in `dir` (vfs: no kernel features needed), offline.
fn podman(dir: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root").arg(dir.join("root")).arg("--runroot").arg(dir.join("run"));
    cmd.args(["--storage-driver", "vfs"]).stdin(std::process::Stdio::null());
    cmd
}

#[tokio::test]
async fn podman_oci_archive_pushes_and_its_docker_archive_is_explained() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // podman unpacks layers on pull, so it needs real ones: the example layout has them.
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/layouts/hello");
    let pulled =
        must(podman(dir.path()).args(["pull", "-q"]).arg(format!("oci:{}:v1", hello.display())));
    let id = String::from_utf8_lossy(&pulled.stdout).trim().to_string();
    must(podman(dir.path()).args(["tag", &id, "localhost/demo/hello:v1"]));
    let oci = dir.path().join("podman-oci.tar");
    let docker = dir.path().join("podman-docker.tar");
    for (format, out) in [("oci-archive", &oci), ("docker-archive", &docker)] {
        must(
            podman(dir.path())
                .args(["save", "--format", format, "-o"])
                .arg(out)
                .arg("localhost/demo/hello:v1"),
        );
    }
    // podman names the entry by its full name; the target's tag finds it.
    let extracted = extract(&oci, &dir.path().join("x"));
    push_archive(&oci, &format!("{}/archive/podman:v1", registry.host()), &[]);
    assert_pushed(&registry, "archive/podman", "v1", &extracted, "localhost/demo/hello:v1").await;

    // A docker-archive is not an OCI layout: refused, saying what to do.
    let run = refused(&registry, &docker, &[]);
    assert!(
        run.stderr.contains("docker-archive (manifest.json without index.json)")
            && run.stderr.contains("skopeo copy docker-archive:"),
        "{}",
        run.stderr
    );
}

/// What `docker save` of Docker Engine 25+ writes (moby's image/tarexport): an OCI layout whose
/// index.json names each image by `io.containerd.image.name` and its tag, uncompressed layers,
/// plus the legacy `manifest.json` and `repositories`, tarred by Go's archive/tar.
fn docker_save_25(root: &Path) -> (LayoutBuilder, layout::Desc) {
    let mut b = LayoutBuilder::new(root);
    let spec = common::ImageSpec::new(&[(71, 300_000), (72, 4096)], 7);
    let mut image = b.image(&spec);
    let (config, layers) = b.children(&image);
    image.json["platform"] = json!({"architecture": "amd64", "os": "linux"});
    image.json["annotations"] = json!({
        "io.containerd.image.name": "docker.io/library/app:v1",
        REF_NAME: "v1",
    });
    let index =
        json!({"schemaVersion": 2, "mediaType": layout::OCI_INDEX, "manifests": [image.json]});
    std::fs::write(root.join("index.json"), index.to_string()).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let path = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let manifest = json!([{"Config": path(&config.digest), "RepoTags": ["app:v1"],
        "Layers": layers.iter().map(|l| path(&l.digest)).collect::<Vec<_>>()}]);
    std::fs::write(root.join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(root.join("repositories"), json!({"app": {"v1": "0123"}}).to_string()).unwrap();
    (b, image)
}

#[tokio::test]
async fn docker_save_25_archive_pushes() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout");
    docker_save_25(&source);
    let archive = dir.path().join("docker.tar");
    // Go's archive/tar names entries without `./`, directories first.
    must(
        Command::new("tar")
            .arg("-C")
            .arg(&source)
            .args(["--format=posix", "-cf"])
            .arg(&archive)
            .args(["blobs", "index.json", "manifest.json", "oci-layout", "repositories"]),
    );
    push_archive(&archive, &format!("{}/archive/docker:v1", registry.host()), &[]);
    assert_pushed(&registry, "archive/docker", "v1", &source, "v1").await;
    // Every tag of it, to an untagged target.
    push_archive(&archive, &format!("{}/archive/docker-all", registry.host()), &[]);
    assert_pushed(&registry, "archive/docker-all", "v1", &source, "v1").await;
}

#[tokio::test]
async fn layout_root_applies_to_archive_files() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let source = dir.path().join("layout");
    simple_image(&source, "v1", &[100], 41);
    let outside = dir.path().join("outside.tar");
    gnu_tar(&source, &outside, false);
    std::os::unix::fs::symlink(&outside, volume.join("app.tar")).unwrap();
    let target = format!("{}/archive/root:v1", registry.host());
    let root_args = ["push", "--plain-http", "--layout-root", volume.to_str().unwrap()];
    let (run, opened) = imagepush_traced(
        &[&root_args[..], &[volume.join("app.tar").to_str().unwrap(), &target]].concat(),
    );
    opened.assert_confined(&volume, &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("outside --layout-root"), "{}", run.stderr);
    assert!(registry.tags("archive/root").await.is_empty());
    let inside = volume.join("real.tar.gz");
    gnu_tar(&source, &inside, true);
    imagepush(&[&root_args[..], &[inside.to_str().unwrap(), &target]].concat()).ok();
    assert_eq!(registry.tags("archive/root").await, vec!["v1"]);
}

// ---------------------------------------------------------------------------------------
// Hostile archives
// ---------------------------------------------------------------------------------------

/// Makes hostile archives with Python's tarfile from a layout directory: `python3 - LAYOUT
/// OUT CASE`. Every case holds the whole layout plus (or instead of) one bad entry.
const HOSTILE: &str = r#"
import io, os, sys, tarfile
layout, out, case = sys.argv[1], sys.argv[2], sys.argv[3]
blobs = sorted(os.listdir(os.path.join(layout, "blobs", "sha256")))
big = max(blobs, key=lambda b: os.path.getsize(os.path.join(layout, "blobs", "sha256", b)))
big_name = "blobs/sha256/" + big

def info(name, type=tarfile.REGTYPE, size=0, link=""):
    i = tarfile.TarInfo(name)
    i.type, i.size, i.linkname, i.mode = type, size, link, 0o644
    return i

def layout_entries(t, skip=()):
    for root, dirs, files in os.walk(layout):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            name = os.path.relpath(path, layout)
            if name not in skip:
                t.add(path, arcname=name)

mode = "w:gz" if case.endswith("-gz") else "w"
case = case.removesuffix("-gz")
with tarfile.open(out, mode, format=tarfile.GNU_FORMAT) as t:
    if case == "dotdot":
        t.addfile(info("blobs/../../evil", size=4), io.BytesIO(b"evil"))
    elif case == "absolute":
        t.addfile(info("/etc/evil", size=4), io.BytesIO(b"evil"))
    elif case == "symlink-out":
        t.addfile(info("docs", tarfile.DIRTYPE))
        t.addfile(info("docs/passwd", tarfile.SYMTYPE, link="../../etc/passwd"))
    elif case == "hardlink-out":
        t.addfile(info("docs/passwd", tarfile.LNKTYPE, link="/etc/passwd"))
    elif case == "symlink-blob":
        t.addfile(info("elsewhere", size=4), io.BytesIO(b"data"))
    elif case == "under-symlink":
        t.addfile(info("blobs", tarfile.SYMTYPE, link="elsewhere"))
    elif case == "fifo":
        t.addfile(info("docs/fifo", tarfile.FIFOTYPE))
    elif case == "device":
        t.addfile(info("dev/null", tarfile.CHRTYPE))
    if case == "symlink-blob":
        layout_entries(t, skip=(big_name,))
        t.addfile(info(big_name, tarfile.SYMTYPE, link="../../elsewhere"))
    elif case == "wrong-size":
        layout_entries(t, skip=(big_name,))
        t.addfile(info(big_name, size=1000), io.BytesIO(b"x" * 1000))
    else:
        layout_entries(t)
    if case == "duplicate":
        data = b'{"schemaVersion": 2, "manifests": []}'
        t.addfile(info("index.json", size=len(data)), io.BytesIO(data))
print(big_name)
"#;

/// Pushes a hostile `archive` under strace: exit 2, every string of `wants` in the message,
/// nothing tagged, nothing read but the archive.
fn refused(registry: &TestRegistry, archive: &Path, wants: &[&str]) -> common::Run {
    let (run, opened) = imagepush_traced(&[
        "push",
        "--plain-http",
        archive.to_str().unwrap(),
        &format!("{}/hostile/archive:v1", registry.host()),
    ]);
    opened.assert_confined(archive, &[]);
    run.expect_code(2);
    for w in wants {
        assert!(run.stderr.contains(w), "wanted {w:?} in: {}", run.stderr);
    }
    run
}

/// `python3 HOSTILE layout out case`; returns the name of the layout's biggest blob entry.
fn hostile(layout: &Path, out: &Path, case: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-")
        .arg(layout)
        .arg(out)
        .arg(case)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), HOSTILE.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn hostile_archives_are_refused_naming_the_entry() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout");
    simple_image(&source, "v1", &[2 * MIB, 1000], 51);
    let path = |name: &str| dir.path().join(name);
    let cases: &[(&str, &[&str])] = &[
        ("dotdot", &[r#"entry "blobs/../../evil""#, "`..`"]),
        ("absolute", &[r#"entry "/etc/evil""#, "absolute name"]),
        (
            "symlink-out",
            &[r#"entry "docs/passwd""#, "symlink to \"../../etc/passwd\"", "leads out"],
        ),
        ("hardlink-out", &[r#"entry "docs/passwd""#, "hard link to \"/etc/passwd\"", "leads out"]),
        ("under-symlink", &["lies below \"blobs\", which is not a directory"]),
        ("fifo", &[r#"entry "docs/fifo""#, "is a FIFO"]),
        ("device", &[r#"entry "dev/null""#, "is a character device"]),
        ("duplicate", &[r#"entry "index.json""#, "appears more than once"]),
        ("dotdot-gz", &[r#"entry "blobs/../../evil""#]),
        ("symlink-out-gz", &[r#"entry "docs/passwd""#, "leads out"]),
    ];
    for (case, wants) in cases {
        let archive = path(&format!("{case}.tar"));
        hostile(&source, &archive, case);
        refused(&registry, &archive, wants);
    }

    // A symlink where a blob is read, even one that stays inside.
    let archive = path("symlink-blob.tar");
    let big = hostile(&source, &archive, "symlink-blob");
    refused(&registry, &archive, &[&format!("entry {big:?}"), "is a symlink"]);

    // A blob entry whose size is not its descriptor's: named by digest, refused before the
    // registry commits it.
    let archive = path("wrong-size.tar");
    let big = hostile(&source, &archive, "wrong-size");
    let digest = format!("sha256:{}", big.rsplit('/').next().unwrap());
    let run = refused(&registry, &archive, &[&digest, "size is 1000 bytes"]);
    assert!(!registry.blob_exists("hostile/archive", &digest).await, "{}", run.stdout);

    // Truncated: a tar cut in a blob's data, one cut after its last entry (no end block), and
    // a gzip stream cut in the middle.
    let whole = path("whole.tar");
    gnu_tar(&source, &whole, false);
    let bytes = std::fs::read(&whole).unwrap();
    let cut = path("cut.tar");
    std::fs::write(&cut, &bytes[..MIB]).unwrap();
    refused(&registry, &cut, &["the archive is truncated"]);
    let end = bytes.len() - bytes.iter().rev().position(|&b| b != 0).unwrap();
    std::fs::write(&cut, &bytes[..end.next_multiple_of(512)]).unwrap();
    refused(&registry, &cut, &["the archive is truncated"]);
    let gz = path("whole.tar.gz");
    gnu_tar(&source, &gz, true);
    let bytes = std::fs::read(&gz).unwrap();
    let cut = path("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(&registry, &cut, &["the archive is truncated", "gzip"]);
    // A gzip stream whose last bytes (its checksum) are lost.
    std::fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
    refused(&registry, &cut, &["the archive is truncated"]);

    // A legacy docker-archive (what docker save wrote before Engine 25): manifest.json, no
    // index.json.
    let legacy = path("legacy");
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(
        legacy.join("manifest.json"),
        r#"[{"Config":"c.json","RepoTags":["app:v1"],"Layers":["l/layer.tar"]}]"#,
    )
    .unwrap();
    std::fs::write(legacy.join("c.json"), "{}").unwrap();
    let archive = path("legacy.tar");
    gnu_tar(&legacy, &archive, false);
    refused(
        &registry,
        &archive,
        &["is a docker-archive", "skopeo copy docker-archive:", "Docker 25+"],
    );

    // Files that are no archive at all.
    let text = path("notes.txt");
    std::fs::write(&text, "an OCI layout, honest").unwrap();
    refused(&registry, &text, &["is not an OCI image layout", "not a tar archive"]);
    let nested = path("nested.tar");
    must(Command::new("tar").arg("-C").arg(dir.path()).arg("-cf").arg(&nested).arg("layout"));
    refused(&registry, &nested, &["holds the layout in its directory \"layout\""]);
    assert!(registry.tags("hostile/archive").await.is_empty());
}

/// What the directory reader refuses, the archive reader refuses too: each bad layout is
/// pushed as a directory and as a plain and a gzip tar of it; all three end with the same
/// exit code, name the same digest or file, and tag nothing.
#[tokio::test]
async fn the_directory_readers_refusals_hold_for_archives() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    type Break = fn(&Path, &layout::Desc, &LayoutBuilder) -> String;
    let cases: &[(&str, Break)] = &[
        ("a layer whose bytes are not its digest", |root, image, b| {
            let layer = b.children(image).1[0].clone();
            let path = root.join("blobs/sha256").join(layer.hex());
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[10] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            layer.digest
        }),
        ("a manifest edited in place", |root, image, _| {
            let path = root.join("blobs/sha256").join(image.hex());
            let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
            std::fs::write(&path, text.replacen("\"schemaVersion\":2", "\"schemaVersion\": 2", 1))
                .unwrap();
            image.digest.clone()
        }),
        ("index.json that is not JSON", |root, _, _| {
            std::fs::write(root.join("index.json"), "{\"schemaVersion\": 2, \"manifests\": [")
                .unwrap();
            "index.json".into()
        }),
        ("no oci-layout", |root, _, _| {
            std::fs::remove_file(root.join("oci-layout")).unwrap();
            "oci-layout".into()
        }),
        ("an unknown layout version", |root, _, _| {
            std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
            "2.0.0".into()
        }),
        ("a missing layer", |root, image, b| {
            let layer = b.children(image).1[1].clone();
            std::fs::remove_file(root.join("blobs/sha256").join(layer.hex())).unwrap();
            layer.digest
        }),
    ];
    for (i, (what, break_it)) in cases.iter().enumerate() {
        let root = dir.path().join(format!("case{i}"));
        let (b, image) = simple_image(&root, "v1", &[3000, 2000], 70 + i as u64);
        let named = break_it(&root, &image, &b);
        let plain = dir.path().join(format!("case{i}.tar"));
        let gzip = dir.path().join(format!("case{i}.tar.gz"));
        gnu_tar(&root, &plain, false);
        gnu_tar(&root, &gzip, true);
        let target = format!("{}/refused/case{i}:v1", registry.host());
        let mut codes = Vec::new();
        for source in [&root, &plain, &gzip] {
            let run = imagepush(&["push", "--plain-http", source.to_str().unwrap(), &target]);
            let code = run.code;
            assert!(
                code == 2 || code == 3,
                "{what} ({}): {code:?}\n{}",
                source.display(),
                run.stderr
            );
            assert!(
                run.stderr.contains(&named),
                "{what} ({}): wanted {named:?} in\n{}",
                source.display(),
                run.stderr
            );
            codes.push(code);
        }
        assert!(codes.iter().all(|c| *c == codes[0]), "{what}: exit codes {codes:?}");
        assert!(registry.tags(&format!("refused/case{i}")).await.is_empty(), "{what}");
    }
}
