use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

use serde_json::json;

use super::*;
use crate::layout::testutil::{Fixture, LAYOUT_1_0_0, descriptor, mkfifo, within_seconds};

/// Builds a broken file or directory at a path of the fixture.
type Setup = fn(&Fixture, &Path);
/// Whether an error is the one a case expects.
type Check = fn(&Error) -> bool;

fn regular(_: &Fixture, path: &Path) {
    fs::write(path, b"not the blob").unwrap();
}
fn remove(_: &Fixture, path: &Path) {
    let _ = fs::remove_file(path);
}
fn directory(_: &Fixture, path: &Path) {
    let _ = fs::remove_file(path);
    fs::create_dir(path).unwrap();
}
fn fifo(_: &Fixture, path: &Path) {
    let _ = fs::remove_file(path);
    mkfifo(path);
}
fn socket(_: &Fixture, path: &Path) {
    let _ = fs::remove_file(path);
    // Leaked on purpose: the socket file must outlive the listener's scope.
    std::mem::forget(std::os::unix::net::UnixListener::bind(path).unwrap());
}
/// Moves the file to a sibling directory of the layout and leaves a symlink to it.
fn symlink_outside(f: &Fixture, path: &Path) {
    let target = f.outside().join(path.file_name().unwrap());
    if fs::rename(path, &target).is_err() {
        fs::write(&target, b"{}").unwrap();
    }
    symlink(&target, path).unwrap();
}
/// Moves the file elsewhere inside the layout and leaves a relative symlink to it.
fn symlink_inside(f: &Fixture, path: &Path) {
    let target = f.path("elsewhere").join(path.file_name().unwrap());
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::rename(path, &target).unwrap();
    let depth = path.strip_prefix(f.root()).unwrap().components().count() - 1;
    let relative = PathBuf::from("../".repeat(depth)).join(target.strip_prefix(f.root()).unwrap());
    symlink(relative, path).unwrap();
}
fn dangling_symlink(f: &Fixture, path: &Path) {
    let _ = fs::remove_file(path);
    symlink(f.path("nowhere"), path).unwrap();
}
fn symlink_to_dev_null(_: &Fixture, path: &Path) {
    let _ = fs::remove_file(path);
    symlink("/dev/null", path).unwrap();
}

fn kind_is(err: &Error, want: &str) -> bool {
    matches!(err, Error::NotARegularFile { kind, .. } if *kind == want)
}
fn outside(err: &Error) -> bool {
    matches!(err, Error::OutsideLayout { .. })
}

// ---- open ---------------------------------------------------------------------------

#[test]
fn open_valid_layout() {
    let f = Fixture::new();
    let reader = f.reader();
    assert_eq!(reader.root(), f.root());
    let index = reader.index().unwrap();
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(index.manifests[0].digest, f.manifest.digest);
    assert_eq!(index.manifests[0].ref_name(), Some("latest"));
}

#[test]
fn root_is_canonical_when_opened_through_a_symlink() {
    let f = Fixture::new();
    let link = f.root().parent().unwrap().join("link");
    symlink(f.root(), &link).unwrap();
    let reader = LayoutReader::open(&link.join(".")).unwrap();
    assert_eq!(reader.root(), f.root());
}

#[test]
fn open_refuses_what_is_not_a_layout() {
    let f = Fixture::new();
    let file = f.path("oci-layout");
    let missing = f.path("missing");
    for (path, reason) in [(&missing, "does not exist"), (&file, "not a directory")] {
        let err = LayoutReader::open(path).unwrap_err();
        assert!(
            matches!(&err, Error::NotALayout { path: p, reason: r } if p == path && r.contains(reason)),
            "{err}"
        );
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
}

#[test]
fn open_checks_oci_layout_and_index_json() {
    let cases: Vec<(&str, &str, Setup, Check, &str)> = vec![
        (
            "no oci-layout",
            "oci-layout",
            remove,
            |e| matches!(e, Error::NotALayout { .. }),
            "no oci-layout file",
        ),
        (
            "oci-layout dir",
            "oci-layout",
            directory,
            |e| kind_is(e, "directory"),
            "oci-layout: is a directory",
        ),
        ("oci-layout FIFO", "oci-layout", fifo, |e| kind_is(e, "FIFO"), "oci-layout: is a FIFO"),
        ("oci-layout socket", "oci-layout", socket, |e| kind_is(e, "socket"), "is a socket"),
        ("oci-layout outside", "oci-layout", symlink_outside, outside, "outside the layout"),
        ("oci-layout inside", "oci-layout", symlink_inside, |_| false, ""),
        (
            "no index.json",
            "index.json",
            remove,
            |e| matches!(e, Error::NotALayout { .. }),
            "no index.json",
        ),
        ("index.json FIFO", "index.json", fifo, |e| kind_is(e, "FIFO"), "index.json: is a FIFO"),
        ("index.json dir", "index.json", directory, |e| kind_is(e, "directory"), "index.json"),
        ("index.json outside", "index.json", symlink_outside, outside, "index.json: resolves to"),
        (
            "index.json dangling",
            "index.json",
            dangling_symlink,
            |e| matches!(e, Error::NotALayout { .. }),
            "no index.json",
        ),
        ("index.json inside", "index.json", symlink_inside, |_| false, ""),
    ];
    for (name, file, setup, check, message) in cases {
        let f = Fixture::new();
        setup(&f, &f.path(file));
        let root = f.root().to_path_buf();
        let result = within_seconds(move || LayoutReader::open(&root));
        match result {
            Ok(_) if message.is_empty() => {}
            Ok(_) => panic!("{name}: opened"),
            Err(err) => {
                assert!(check(&err), "{name}: {err:?}");
                assert!(err.to_string().contains(message), "{name}: {err}");
            }
        }
    }
}

#[test]
fn open_checks_oci_layout_content() {
    let ok = ["1.0.0", "1.1.0", "1.0", "1.10.2"];
    let unsupported =
        ["2.0.0", "0.9.0", "", "1", "1.0.0-rc1", "v1.0.0", "10.0.0", "1..0", "1.0.0.0"];
    for version in ok.iter().chain(&unsupported) {
        let f = Fixture::new();
        f.write("oci-layout", json!({ "imageLayoutVersion": version }).to_string().as_bytes());
        match LayoutReader::open(f.root()) {
            Ok(_) => assert!(ok.contains(version), "{version:?} accepted"),
            Err(Error::UnsupportedVersion { path, version: v }) => {
                assert!(unsupported.contains(version), "{version:?} refused");
                assert_eq!(path, f.path("oci-layout"));
                assert_eq!(&v, version);
            }
            Err(e) => panic!("{version:?}: {e}"),
        }
    }

    let invalid: [&[u8]; 4] = [b"", b"not json", b"{}", br#"{"imageLayoutVersion":1}"#];
    for content in invalid {
        let f = Fixture::new();
        f.write("oci-layout", content);
        let err = LayoutReader::open(f.root()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidJson { path, .. } if path.ends_with("oci-layout")),
            "{err}"
        );
        assert!(err.to_string().contains("oci-layout: invalid JSON"), "{err}");
    }

    let f = Fixture::new();
    let mut big = LAYOUT_1_0_0.to_vec();
    big.resize(OCI_LAYOUT_LIMIT as usize + 1, b' ');
    f.write("oci-layout", &big);
    let err = LayoutReader::open(f.root()).unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: OCI_LAYOUT_LIMIT, .. }), "{err}");
}

#[test]
fn non_utf8_layout_path() {
    let f = Fixture::named(OsStr::from_bytes(b"lay\xffout"));
    let reader = LayoutReader::open(f.root()).unwrap();
    assert_eq!(reader.index().unwrap().manifests.len(), 1);
    assert_eq!(reader.read_manifest(&f.manifest).unwrap().layers, vec![f.layer.clone()]);
    let missing = descriptor("application/octet-stream", b"missing");
    let err = reader.read_blob(&missing).unwrap_err();
    assert!(matches!(err, Error::BlobMissing { .. }), "{err}");
    assert!(err.to_string().contains("lay\u{FFFD}out"), "{err}");
}

// ---- index.json ---------------------------------------------------------------------

#[test]
fn index_json_content() {
    let json_error: Check =
        |e| matches!(e, Error::InvalidJson { path, .. } if path.ends_with("index.json"));
    let manifest = |digest: &str| {
        json!({"schemaVersion": 2, "manifests": [
            {"mediaType": oci::OCI_MANIFEST, "digest": digest, "size": 1}
        ]})
        .to_string()
    };
    let cases: Vec<(&str, String, Check, &str)> = vec![
        (
            "truncated",
            r#"{"schemaVersion":2,"manifests":["#.into(),
            json_error,
            "index.json: invalid JSON",
        ),
        ("not JSON", "<html>".into(), json_error, "index.json: invalid JSON"),
        ("empty", "".into(), json_error, "index.json: invalid JSON"),
        ("no schemaVersion", r#"{"manifests":[]}"#.into(), json_error, "schemaVersion"),
        (
            "path in digest",
            manifest("sha256:../../etc"),
            json_error,
            "invalid digest \"sha256:../../etc\"",
        ),
        (
            "short digest",
            manifest("sha256:abc"),
            json_error,
            "index.json: invalid JSON: invalid digest",
        ),
        (
            "unknown algorithm",
            manifest("md5:d41d8cd98f00b204e9800998ecf8427e"),
            json_error,
            "unknown algorithm",
        ),
        (
            "schemaVersion 1",
            r#"{"schemaVersion":1,"manifests":[]}"#.into(),
            |e| matches!(e, Error::InvalidSchemaVersion { found: 1, .. }),
            "index.json: schemaVersion is 1, expected 2",
        ),
    ];
    for (name, content, check, message) in cases {
        let f = Fixture::new();
        let reader = f.reader();
        f.write("index.json", content.as_bytes());
        let err = reader.index().unwrap_err();
        assert!(check(&err), "{name}: {err:?}");
        assert!(err.to_string().contains(message), "{name}: {err}");
        assert!(err.to_string().contains(&*f.root().to_string_lossy()), "{name}: {err}");
    }
}

#[test]
fn index_json_size_limit() {
    let f = Fixture::new();
    let reader = f.reader();
    // Exactly at the limit: valid JSON padded with spaces.
    let mut padded = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
    padded.resize(INDEX_JSON_LIMIT as usize, b' ');
    f.write("index.json", &padded);
    assert!(reader.index().unwrap().manifests.is_empty());
    // One byte over (a sparse file: refused from its length, without reading it).
    let file = fs::OpenOptions::new().write(true).open(f.path("index.json")).unwrap();
    file.set_len(INDEX_JSON_LIMIT + 1).unwrap();
    let err = reader.index().unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { path, limit: INDEX_JSON_LIMIT } if path.ends_with("index.json")),
        "{err}"
    );
}

#[test]
fn index_json_replaced_after_open() {
    let cases: Vec<(&str, Setup, Check)> = vec![
        (
            "removed",
            remove,
            |e| matches!(e, Error::NotALayout { reason, .. } if reason.contains("index.json")),
        ),
        ("FIFO", fifo, |e| kind_is(e, "FIFO")),
        ("outside", symlink_outside, outside),
    ];
    for (name, setup, check) in cases {
        let f = Fixture::new();
        let reader = f.reader();
        setup(&f, &f.path("index.json"));
        let err = within_seconds(move || reader.index().unwrap_err());
        assert!(check(&err), "{name}: {err:?}");
    }
}

// ---- contains -----------------------------------------------------------------------

#[test]
fn contains_table() {
    type Expect = fn(&Result<bool, Error>) -> bool;
    let cases: Vec<(&str, Setup, Expect)> = vec![
        ("regular file", regular, |r| matches!(r, Ok(true))),
        ("absent", remove, |r| matches!(r, Ok(false))),
        ("symlink inside", symlink_inside, |r| matches!(r, Ok(true))),
        ("dangling symlink", dangling_symlink, |r| matches!(r, Ok(false))),
        ("symlink outside", symlink_outside, |r| matches!(r, Err(e) if outside(e))),
        ("symlink to /dev/null", symlink_to_dev_null, |r| matches!(r, Err(e) if outside(e))),
        ("directory", directory, |r| matches!(r, Err(e) if kind_is(e, "directory"))),
        ("FIFO", fifo, |r| matches!(r, Err(e) if kind_is(e, "FIFO"))),
    ];
    for (name, setup, expect) in cases {
        let f = Fixture::new();
        let reader = f.reader();
        let path = f.make_blob_dir(&f.layer.digest);
        setup(&f, &path);
        let digest = f.layer.digest.clone();
        let result = within_seconds(move || reader.contains(&digest));
        assert!(expect(&result), "{name}: {result:?}");
        if let Err(err) = result {
            assert!(err.to_string().contains(f.layer.digest.hex()), "{name}: {err}");
        }
    }
}

#[test]
fn contains_other_algorithms_and_escaping_blob_directories() {
    let f = Fixture::new();
    let reader = f.reader();
    let sha512: Digest = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
    assert!(!reader.contains(&sha512).unwrap());

    // blobs/sha256 itself is a symlink to a directory outside holding the same blobs.
    let outside = f.outside().join("sha256");
    fs::rename(f.path("blobs/sha256"), &outside).unwrap();
    symlink(&outside, f.path("blobs/sha256")).unwrap();
    let err = reader.contains(&f.layer.digest).unwrap_err();
    assert!(
        matches!(&err, Error::OutsideLayout { target, .. } if target.starts_with(&outside)),
        "{err}"
    );
}

// ---- read_blob ----------------------------------------------------------------------

#[test]
fn read_blob_returns_verified_bytes() {
    let f = Fixture::new();
    let reader = f.reader();
    assert_eq!(reader.read_blob(&f.layer).unwrap(), b"layer bytes");

    let mut h = crate::digest::Hasher::new(crate::digest::Algorithm::Sha512);
    h.update(b"sha512 content");
    let mut desc = descriptor("application/octet-stream", b"sha512 content");
    desc.digest = h.finish();
    fs::write(f.make_blob_dir(&desc.digest), b"sha512 content").unwrap();
    assert_eq!(reader.read_blob(&desc).unwrap(), b"sha512 content");
}

#[test]
fn read_blob_refuses_bad_blobs() {
    let cases: Vec<(&str, Setup, Check)> = vec![
        ("absent", remove, |e| matches!(e, Error::BlobMissing { .. })),
        ("dangling", dangling_symlink, |e| matches!(e, Error::BlobMissing { .. })),
        ("directory", directory, |e| kind_is(e, "directory")),
        ("FIFO", fifo, |e| kind_is(e, "FIFO")),
        ("outside", symlink_outside, outside),
        ("/dev/null", symlink_to_dev_null, outside),
        ("other content", regular, |e| {
            matches!(e, Error::SizeMismatch { expected: 11, actual: 12, layout: Some(_), .. })
        }),
        (
            "same length, other content",
            |_, path| fs::write(path, b"LAYER BYTES").unwrap(),
            |e| matches!(e, Error::DigestMismatch { actual, .. } if *actual == Digest::sha256(b"LAYER BYTES")),
        ),
    ];
    for (name, setup, check) in cases {
        let f = Fixture::new();
        let reader = f.reader();
        setup(&f, &f.make_blob_dir(&f.layer.digest));
        let layer = f.layer.clone();
        let err = within_seconds(move || reader.read_blob(&layer).unwrap_err());
        assert!(check(&err), "{name}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(f.layer.digest.hex()), "{name}: {message}");
        assert!(message.contains(&*f.root().to_string_lossy()), "{name}: {message}");
    }
}

#[test]
fn read_blob_size_mismatch_message() {
    let f = Fixture::new();
    let mut desc = f.layer.clone();
    desc.size = 34;
    let err = f.reader().read_blob(&desc).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob {} in layout {}: size is 11 bytes, descriptor says 34",
            desc.digest,
            f.root().display()
        )
    );
}

#[test]
fn read_blob_is_capped() {
    let f = Fixture::new();
    let reader = f.reader();
    let at_limit = vec![b'a'; IN_MEMORY_BLOB_LIMIT as usize];
    let desc = f.put_blob("application/octet-stream", &at_limit);
    assert_eq!(reader.read_blob(&desc).unwrap().len(), at_limit.len());

    let over = vec![b'a'; IN_MEMORY_BLOB_LIMIT as usize + 1];
    let desc = f.put_blob("application/octet-stream", &over);
    let err = reader.read_blob(&desc).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { path, limit: IN_MEMORY_BLOB_LIMIT } if path.ends_with(desc.digest.hex())),
        "{err}"
    );
    // Streaming is how large blobs are read.
    let (mut file, mut verifier) = reader.open_blob(&desc).unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    verifier.update(&bytes).unwrap();
    verifier.finish().unwrap();
}

// ---- read_index / read_manifest -----------------------------------------------------

#[test]
fn read_manifest_and_index() {
    let f = Fixture::new();
    let reader = f.reader();
    let manifest = reader.read_manifest(&f.manifest).unwrap();
    assert_eq!(manifest.config, f.config);
    assert_eq!(manifest.layers, vec![f.layer.clone()]);

    let nested =
        json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": [f.manifest]});
    let desc = f.put_blob(oci::OCI_INDEX, nested.to_string().as_bytes());
    assert_eq!(reader.read_index(&desc).unwrap().manifests, vec![f.manifest.clone()]);

    // No mediaType in the content is fine; Docker types are accepted.
    let bare = json!({"schemaVersion": 2, "manifests": []});
    let desc = f.put_blob(oci::DOCKER_MANIFEST_LIST, bare.to_string().as_bytes());
    assert!(reader.read_index(&desc).unwrap().manifests.is_empty());
}

#[test]
fn read_manifest_and_index_refuse_wrong_content() {
    #[derive(Clone, Copy)]
    enum Kind {
        Index,
        Manifest,
    }
    let manifest = |media_type: Option<&str>, schema: u32| {
        let mut m = json!({"schemaVersion": schema, "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::sha256(b"{}"), "size": 2}});
        if let Some(t) = media_type {
            m["mediaType"] = json!(t);
        }
        m.to_string()
    };
    let cases: Vec<(&str, Kind, &str, String, Check, &str)> = vec![
        (
            "manifest read as index",
            Kind::Index,
            oci::OCI_MANIFEST,
            manifest(None, 2),
            |e| matches!(e, Error::UnexpectedMediaType { wanted, .. } if wanted.contains("index")),
            "is not an image index media type",
        ),
        (
            "index read as manifest",
            Kind::Manifest,
            oci::OCI_INDEX,
            r#"{"schemaVersion":2,"manifests":[]}"#.into(),
            |e| matches!(e, Error::UnexpectedMediaType { wanted, .. } if wanted.contains("manifest")),
            "is not an image manifest media type",
        ),
        (
            "layer read as manifest",
            Kind::Manifest,
            "application/vnd.oci.image.layer.v1.tar",
            manifest(None, 2),
            |e| matches!(e, Error::UnexpectedMediaType { .. }),
            "application/vnd.oci.image.layer.v1.tar",
        ),
        (
            "content says docker",
            Kind::Manifest,
            oci::OCI_MANIFEST,
            manifest(Some(oci::DOCKER_MANIFEST), 2),
            |e| {
                matches!(e, Error::MediaTypeMismatch { descriptor, content, .. }
                    if descriptor == oci::OCI_MANIFEST && content == oci::DOCKER_MANIFEST)
            },
            "content says \"application/vnd.docker.distribution.manifest.v2+json\"",
        ),
        (
            "content says index",
            Kind::Index,
            oci::OCI_INDEX,
            json!({"schemaVersion": 2, "mediaType": oci::DOCKER_MANIFEST_LIST, "manifests": []}).to_string(),
            |e| matches!(e, Error::MediaTypeMismatch { .. }),
            "descriptor says media type \"application/vnd.oci.image.index.v1+json\"",
        ),
        (
            "schemaVersion 1",
            Kind::Manifest,
            oci::OCI_MANIFEST,
            manifest(None, 1),
            |e| matches!(e, Error::InvalidSchemaVersion { found: 1, .. }),
            "schemaVersion is 1, expected 2",
        ),
        (
            "not JSON",
            Kind::Manifest,
            oci::OCI_MANIFEST,
            "garbage".into(),
            |e| matches!(e, Error::InvalidJson { .. }),
            "invalid JSON",
        ),
        (
            "invalid layer digest",
            Kind::Manifest,
            oci::OCI_MANIFEST,
            json!({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:../../etc", "size": 1}})
                .to_string(),
            |e| matches!(e, Error::InvalidJson { .. }),
            "invalid digest",
        ),
    ];
    for (name, read, media_type, content, check, message) in cases {
        let f = Fixture::new();
        let reader = f.reader();
        let desc = f.put_blob(media_type, content.as_bytes());
        let err = match read {
            Kind::Index => reader.read_index(&desc).map(|_| ()),
            Kind::Manifest => reader.read_manifest(&desc).map(|_| ()),
        }
        .unwrap_err();
        assert!(check(&err), "{name}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(message), "{name}: {text}");
        assert!(text.contains(desc.digest.hex()), "{name}: {text}");
    }
}

#[test]
fn read_manifest_verifies_before_parsing() {
    let f = Fixture::new();
    let reader = f.reader();
    let path = f.make_blob_dir(&f.manifest.digest);
    let mut tampered = fs::read(&path).unwrap();
    tampered[0] = b' ';
    fs::write(&path, &tampered).unwrap();
    let err = reader.read_manifest(&f.manifest).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

// ---- open_blob ----------------------------------------------------------------------

#[test]
fn open_blob_streams_with_verifier() {
    let f = Fixture::new();
    let reader = f.reader();
    let (mut file, mut verifier) = reader.open_blob(&f.layer).unwrap();
    let mut buf = [0u8; 4];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]).unwrap();
    }
    assert_eq!(verifier.bytes_seen(), f.layer.size);
    verifier.finish().unwrap();
}

#[test]
fn open_blob_refuses_bad_blobs() {
    let cases: Vec<(&str, Setup, Check)> = vec![
        ("absent", remove, |e| matches!(e, Error::BlobMissing { .. })),
        ("FIFO", fifo, |e| kind_is(e, "FIFO")),
        ("directory", directory, |e| kind_is(e, "directory")),
        ("outside", symlink_outside, outside),
        ("longer file", regular, |e| {
            matches!(e, Error::SizeMismatch { expected: 11, actual: 12, .. })
        }),
    ];
    for (name, setup, check) in cases {
        let f = Fixture::new();
        let reader = f.reader();
        setup(&f, &f.make_blob_dir(&f.layer.digest));
        let layer = f.layer.clone();
        let err = within_seconds(move || reader.open_blob(&layer).map(|_| ()).unwrap_err());
        assert!(check(&err), "{name}: {err:?}");
    }
}

#[test]
fn open_blob_of_tampered_content_fails_in_the_verifier() {
    let f = Fixture::new();
    let reader = f.reader();
    fs::write(f.make_blob_dir(&f.layer.digest), b"LAYER BYTES").unwrap();
    let (mut file, mut verifier) = reader.open_blob(&f.layer).unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    verifier.update(&bytes).unwrap();
    let err = verifier.finish().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob {} in layout {}: content has digest {}",
            f.layer.digest,
            f.root().display(),
            Digest::sha256(b"LAYER BYTES")
        )
    );
}

#[test]
fn symlinked_blob_inside_reads_through_every_entry_point() {
    let f = Fixture::new();
    let reader = f.reader();
    symlink_inside(&f, &f.make_blob_dir(&f.layer.digest));
    assert!(reader.contains(&f.layer.digest).unwrap());
    assert_eq!(reader.read_blob(&f.layer).unwrap(), b"layer bytes");
    reader.open_blob(&f.layer).unwrap();

    // An absolute symlink into the layout is as good as a relative one.
    let path = f.make_blob_dir(&f.config.digest);
    let target = f.path("config.json");
    fs::rename(&path, &target).unwrap();
    symlink(&target, &path).unwrap();
    assert_eq!(reader.read_blob(&f.config).unwrap(), fs::read(&target).unwrap());
}
