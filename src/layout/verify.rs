//! `BlobVerifier`: checks a blob's size and digest while it streams, so content is verified
//! on the way to the registry without reading it twice.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Error;
use crate::digest::{Digest, Hasher};
use crate::oci::Descriptor;

/// Feed every byte read from the blob; `finish` checks total size and digest.
pub struct BlobVerifier {
    digest: Digest,
    size: u64,
    seen: u64,
    hasher: Hasher,
    /// Named in errors when the blob came from a layout.
    layout: Option<PathBuf>,
}

impl BlobVerifier {
    pub fn new(desc: &Descriptor) -> BlobVerifier {
        BlobVerifier {
            digest: desc.digest.clone(),
            size: desc.size,
            seen: 0,
            hasher: Hasher::new(desc.digest.algorithm()),
            layout: None,
        }
    }

    /// A verifier whose errors name the layout the blob is read from.
    pub(crate) fn in_layout(desc: &Descriptor, layout: &Path) -> BlobVerifier {
        BlobVerifier { layout: Some(layout.to_path_buf()), ..BlobVerifier::new(desc) }
    }

    /// Hashes `bytes`. Errors (`SizeMismatch`) as soon as more bytes than the descriptor's
    /// size have arrived; those bytes are counted but not hashed.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let total = self.seen.saturating_add(bytes.len() as u64);
        self.seen = total;
        if total > self.size {
            return Err(self.size_mismatch());
        }
        self.hasher.update(bytes);
        Ok(())
    }

    /// Checks that exactly the descriptor's size arrived and that it has the descriptor's
    /// digest: `SizeMismatch`, then `DigestMismatch`.
    pub fn finish(self) -> Result<(), Error> {
        if self.seen != self.size {
            return Err(self.size_mismatch());
        }
        let actual = self.hasher.finish();
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                expected: self.digest,
                actual,
                layout: self.layout,
            });
        }
        Ok(())
    }

    /// How many bytes were fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    fn size_mismatch(&self) -> Error {
        Error::SizeMismatch {
            digest: self.digest.clone(),
            expected: self.size,
            actual: self.seen,
            layout: self.layout.clone(),
        }
    }
}

impl fmt::Debug for BlobVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobVerifier")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("seen", &self.seen)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::layout::testutil::descriptor;

    /// What went wrong, if anything, as (variant, expected, actual).
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Ok,
        Size { expected: u64, actual: u64 },
        Digest,
    }

    fn run(desc: &Descriptor, chunks: &[&[u8]]) -> (Outcome, u64) {
        let mut v = BlobVerifier::new(desc);
        let mut outcome = None;
        for chunk in chunks {
            if let Err(e) = v.update(chunk) {
                outcome = Some(e);
                break;
            }
        }
        let seen = v.bytes_seen();
        let result = match outcome {
            Some(e) => Err(e),
            None => v.finish(),
        };
        let outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(Error::SizeMismatch { digest, expected, actual, layout: None })
                if digest == desc.digest =>
            {
                Outcome::Size { expected, actual }
            }
            Err(Error::DigestMismatch { expected, actual, layout: None })
                if expected == desc.digest && actual != desc.digest =>
            {
                Outcome::Digest
            }
            Err(other) => panic!("unexpected error {other:?}"),
        };
        (outcome, seen)
    }

    #[test]
    fn table() {
        let desc = descriptor("application/octet-stream", b"hello world");
        let cases: Vec<(&str, Vec<&[u8]>, Outcome, u64)> = vec![
            ("whole", vec![b"hello world"], Outcome::Ok, 11),
            ("chunked", vec![b"hel", b"", b"lo wor", b"ld"], Outcome::Ok, 11),
            ("short", vec![b"hello"], Outcome::Size { expected: 11, actual: 5 }, 5),
            ("empty", vec![], Outcome::Size { expected: 11, actual: 0 }, 0),
            (
                "long in one chunk",
                vec![b"hello world!"],
                Outcome::Size { expected: 11, actual: 12 },
                12,
            ),
            (
                "long in a later chunk",
                vec![b"hello world", b"!!"],
                Outcome::Size { expected: 11, actual: 13 },
                13,
            ),
            ("tampered", vec![b"hello World"], Outcome::Digest, 11),
        ];
        for (name, chunks, want, want_seen) in cases {
            let (got, seen) = run(&desc, &chunks);
            assert_eq!(got, want, "{name}");
            assert_eq!(seen, want_seen, "{name}");
        }
    }

    #[test]
    fn update_errors_at_the_first_excess_byte() {
        let desc = descriptor("application/octet-stream", b"abc");
        let mut v = BlobVerifier::new(&desc);
        v.update(b"abc").unwrap();
        let err = v.update(b"d").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("blob {}: size is 4 bytes, descriptor says 3", desc.digest)
        );
    }

    #[test]
    fn sha512_descriptors_hash_with_sha512() {
        let mut desc = descriptor("application/octet-stream", b"abc");
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        desc.digest = h.finish();
        assert_eq!(run(&desc, &[b"abc"]).0, Outcome::Ok);
        assert_eq!(run(&desc, &[b"abd"]).0, Outcome::Digest);
    }

    #[test]
    fn errors_name_the_layout() {
        let desc = descriptor("application/octet-stream", b"abc");
        let mut v = BlobVerifier::in_layout(&desc, Path::new("/layouts/app"));
        v.update(b"abd").unwrap();
        let err = v.finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "blob {} in layout /layouts/app: content has digest {}",
                desc.digest,
                Digest::sha256(b"abd")
            )
        );
    }
}
