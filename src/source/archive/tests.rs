use std::io::Write;

use super::tar::testutil::{Part, archive};
use super::*;
use crate::oci;

const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn desc(bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: "application/octet-stream".into(),
        digest: Digest::sha256(bytes),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
        urls: vec![],
        artifact_type: None,
    }
}

fn blob_name(bytes: &[u8]) -> Vec<u8> {
    format!("blobs/sha256/{}", Digest::sha256(bytes).hex()).into_bytes()
}

fn index_json(entries: &[&Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX,
        "manifests": entries}))
    .unwrap()
}

/// Writes `bytes` to a file (gzipped by the system's gzip when `gzip`) and opens it.
fn open(bytes: &[u8], gzip: bool) -> (tempfile::TempDir, Result<ArchiveSource, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, bytes).unwrap();
    if gzip {
        let status = std::process::Command::new("gzip").arg("-1").arg(&path).status().unwrap();
        assert!(status.success());
        std::fs::rename(dir.path().join("a.tar.gz"), &path).unwrap();
    }
    let source = ArchiveSource::open(&path);
    (dir, source)
}

/// Pseudo-random bytes (incompressible).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

#[test]
fn blobs_read_back_from_plain_and_gzip_archives_through_checkpoints() {
    let blobs: Vec<Vec<u8>> = vec![
        b"small config".to_vec(),
        noise(1, 3 << 20),
        noise(2, 1_500_000),
        noise(3, 5 << 20),
        noise(4, 100),
    ];
    let names: Vec<Vec<u8>> = blobs.iter().map(|b| blob_name(b)).collect();
    let first = desc(&blobs[0]);
    let index = index_json(&[&first]);
    let mut parts: Vec<Part<'_>> = vec![
        (b"./", b'5', b"", b""),
        (b"./oci-layout", b'0', LAYOUT, b""),
        (b"./blobs/", b'5', b"", b""),
        (b"./blobs/sha256/", b'5', b"", b""),
    ];
    for (name, blob) in names.iter().zip(&blobs) {
        parts.push((name, b'0', blob, b""));
    }
    parts.push((b"./index.json", b'0', &index, b""));
    let bytes = archive(&parts);
    for gzip in [false, true] {
        let (_dir, source) = open(&bytes, gzip);
        let source = source.unwrap();
        if gzip {
            let g = source.gzip.as_ref().unwrap();
            // The first big blob is read from the start (3 KiB in); the next two start 1 MiB
            // or more after it: a checkpoint each.
            assert_eq!(g.checkpoints.len(), 2, "{:?}", g.checkpoints);
            assert_eq!(g.cache.len(), 4, "oci-layout, index.json, the two small blobs");
        }
        assert_eq!(source.index().unwrap().manifests[0].digest, first.digest);
        // In reverse order, each from its first byte, and twice.
        for blob in blobs.iter().rev().chain(&blobs) {
            let d = desc(blob);
            assert!(source.contains(&d.digest).unwrap());
            let (mut stream, mut verifier) = source.open(&d).unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            verifier.update(&got).unwrap();
            verifier.finish().unwrap();
        }
        assert!(!source.contains(&Digest::sha256(b"absent")).unwrap());
        let mut wrong = desc(&blobs[1]);
        wrong.size += 1;
        assert!(
            matches!(source.open(&wrong), Err(Error::SizeMismatch { actual, .. }) if actual == wrong.size - 1)
        );
    }
}

#[test]
fn many_checkpoints_are_thinned() {
    // 100 blobs of 1 MiB + 1: more than MAX_CHECKPOINTS starts 1 MiB apart.
    let blobs: Vec<Vec<u8>> = (0..100).map(|i| noise(i, (1 << 20) + 1)).collect();
    let names: Vec<Vec<u8>> = blobs.iter().map(|b| blob_name(b)).collect();
    let index = index_json(&[]);
    let mut parts: Vec<Part<'_>> =
        vec![(b"oci-layout", b'0', LAYOUT, b""), (b"index.json", b'0', &index, b"")];
    for (name, blob) in names.iter().zip(&blobs) {
        parts.push((name, b'0', blob, b""));
    }
    let (_dir, source) = open(&archive(&parts), true);
    let source = source.unwrap();
    let n = source.gzip.as_ref().unwrap().checkpoints.len();
    assert!((MAX_CHECKPOINTS / 2..=MAX_CHECKPOINTS).contains(&n), "{n} checkpoints");
    for blob in [&blobs[99], &blobs[0], &blobs[51]] {
        let (mut stream, _) = source.open(&desc(blob)).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert!(got == *blob);
    }
}

#[test]
fn names_are_normalized_and_confined() {
    type Case<'a> = (&'a [u8], Result<&'a [u8], EntryProblem>);
    let cases: &[Case<'_>] = &[
        (b"./blobs//sha256/./x", Ok(b"blobs/sha256/x")),
        (b"index.json", Ok(b"index.json")),
        (b"./", Ok(b"")),
        (b"/etc/passwd", Err(EntryProblem::Absolute)),
        (b"blobs/../../x", Err(EntryProblem::ParentDir)),
        (b"..", Err(EntryProblem::ParentDir)),
    ];
    for (name, want) in cases {
        let want = want.clone().map(<[u8]>::to_vec);
        assert_eq!(normalize(name), want, "{name:?}");
    }
}

#[test]
fn symlinks_are_resolved_through_other_symlinks() {
    let index = index_json(&[]);
    let base: Vec<Part<'_>> =
        vec![(b"oci-layout", b'0', LAYOUT, b""), (b"index.json", b'0', &index, b"")];
    // (symlinks as name and target, the one refused)
    type Case<'a> = (&'a [(&'a [u8], &'a [u8])], Option<&'a str>);
    let cases: &[Case<'_>] = &[
        (&[(b"docs/readme", b"../index.json")], None),
        (&[(b"a", b"b/c"), (b"b", b".")], None),
        (&[(b"up", b"..")], Some("up")),
        (&[(b"abs", b"/etc/passwd")], Some("abs")),
        // Each link stays inside on its own; `d/s/../..` climbs out through `s` -> `..`.
        (&[(b"d/s", b".."), (b"x", b"d/s/../..")], Some("x")),
        (&[(b"loop1", b"loop2/x"), (b"loop2", b"loop1/y")], Some("loop1")),
    ];
    for (links, refused) in cases {
        let mut parts = base.clone();
        for (name, target) in *links {
            parts.push((name, b'2', b"", target));
        }
        let (_dir, source) = open(&archive(&parts), false);
        match (refused, source) {
            (None, Ok(_)) => {}
            (Some(name), Err(Error::ArchiveEntry { entry, problem, .. })) => {
                assert_eq!(&entry, name);
                assert!(matches!(problem, EntryProblem::LinkOutside { .. }), "{problem}");
            }
            (want, got) => panic!("{links:?}: want {want:?}, got {:?}", got.err()),
        }
    }
}

#[test]
fn files_that_are_not_archives_say_what_they_are() {
    for (bytes, reason) in [
        (&b""[..], "empty"),
        (b"\x28\xb5\x2f\xfd rest", "zstd"),
        (b"\xfd7zXZ\x00 rest", "xz"),
        (b"BZh91AY&SY", "bzip2"),
        (b"{\"imageLayoutVersion\": \"1.0.0\"}", "not a tar archive"),
    ] {
        let (_dir, got) = open(bytes, false);
        match got {
            Err(Error::NotALayout { reason: r, .. }) => assert!(r.contains(reason), "{r}"),
            other => panic!("{reason}: {:?}", other.err()),
        }
    }
}

#[test]
fn gzip_that_is_cut_or_corrupt_is_refused_when_opened() {
    let index = index_json(&[]);
    let big = noise(9, 300_000);
    let bytes = archive(&[
        (b"oci-layout", b'0', LAYOUT, b""),
        (b"index.json", b'0', &index, b""),
        (b"blobs/sha256/x", b'0', &big, b""),
    ]);
    let (dir, whole) = open(&bytes, true);
    whole.unwrap();
    let gz = std::fs::read(dir.path().join("a.tar")).unwrap();
    let write = |bytes: &[u8]| {
        let path = dir.path().join("b.tar");
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        ArchiveSource::open(&path)
    };
    for cut in [gz.len() / 2, gz.len() - 1] {
        assert!(matches!(write(&gz[..cut]), Err(Error::ArchiveTruncated { .. })), "cut at {cut}");
    }
    let mut flipped = gz.clone();
    let n = flipped.len();
    flipped[n - 6] ^= 0xff; // the CRC
    assert!(matches!(write(&flipped), Err(Error::ArchiveDamaged { .. })));
}
