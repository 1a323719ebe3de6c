//! Where the content of a push comes from: a `Source` says which entries it names (its
//! `index.json`), whether it holds a blob, and gives blobs out, each checked against its
//! descriptor. A layout directory (`LayoutReader`) is one; a tar archive of one, plain or
//! gzip (`archive::ArchiveSource`), is another; `open` tells them apart. Everything
//! above (the image graph, planning, the push) reads content only through this seam.
//!
//! Its methods block (files, hashing): async callers run them off the runtime's threads.

pub mod archive;

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use crate::digest::Digest;
use crate::layout::{BlobVerifier, Error, LayoutReader};
use crate::oci::{Descriptor, ImageIndex};

/// Opens what `path` holds, told by its content, not its name: a directory is a layout
/// (`LayoutReader`), a regular file a tar archive of one, plain or gzip (`ArchiveSource`).
/// Anything else is `NotALayout`, with the reason.
pub fn open(path: &Path) -> Result<Arc<dyn Source>, Error> {
    let not_a_layout = |reason| Error::NotALayout { path: path.to_path_buf(), reason };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(Arc::new(LayoutReader::open(path)?)),
        Ok(meta) if meta.is_file() => Ok(Arc::new(archive::ArchiveSource::open(path)?)),
        Ok(_) => Err(not_a_layout("it is neither a directory nor a regular file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_a_layout("it does not exist")),
        Err(source) => Err(Error::Io { path: path.to_path_buf(), source }),
    }
}

/// A stream of one blob's bytes, with the verifier to feed them to.
pub type BlobStream = (Box<dyn Read + Send>, BlobVerifier);

pub trait Source: Send + Sync {
    /// The layout's path (or the archive's), for messages.
    fn location(&self) -> &Path;
    /// The entries the source names (an OCI layout's `index.json`).
    fn index(&self) -> Result<ImageIndex, Error>;
    /// Whether the source holds the blob.
    fn contains(&self, digest: &Digest) -> Result<bool, Error>;
    /// A small blob (manifest, index, config) read whole, its size and digest checked.
    fn read(&self, desc: &Descriptor) -> Result<Vec<u8>, Error>;
    /// A blob to stream from its first byte.
    fn open(&self, desc: &Descriptor) -> Result<BlobStream, Error>;
}

impl Source for LayoutReader {
    fn location(&self) -> &Path {
        self.root()
    }

    fn index(&self) -> Result<ImageIndex, Error> {
        LayoutReader::index(self)
    }

    fn contains(&self, digest: &Digest) -> Result<bool, Error> {
        LayoutReader::contains(self, digest)
    }

    fn read(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        self.read_blob(desc)
    }

    fn open(&self, desc: &Descriptor) -> Result<BlobStream, Error> {
        let (file, verifier) = self.open_blob(desc)?;
        Ok((Box::new(file), verifier))
    }
}

/// An in-memory source, for tests of everything above the seam.
#[cfg(test)]
pub mod memory {
    use std::collections::HashMap;
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use super::{BlobStream, Source};
    use crate::digest::Digest;
    use crate::layout::{BlobVerifier, Error};
    use crate::oci::{self, Descriptor, ImageIndex};
    use crate::platform::Platform;

    /// Entries and blobs; build with `image`, `index`, `tag`; `remove` makes it thin.
    #[derive(Clone)]
    pub struct MemorySource {
        pub index: ImageIndex,
        pub blobs: HashMap<Digest, Vec<u8>>,
        location: PathBuf,
        seed: u64,
    }

    impl Default for MemorySource {
        fn default() -> Self {
            MemorySource {
                index: ImageIndex {
                    schema_version: 2,
                    media_type: Some(oci::OCI_INDEX.into()),
                    artifact_type: None,
                    manifests: vec![],
                    subject: None,
                    annotations: Default::default(),
                },
                blobs: HashMap::new(),
                location: PathBuf::from("/memory/layout"),
                seed: 0,
            }
        }
    }

    impl MemorySource {
        pub fn put(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
            let digest = Digest::sha256(&bytes);
            let desc = Descriptor {
                media_type: media_type.into(),
                digest: digest.clone(),
                size: bytes.len() as u64,
                annotations: Default::default(),
                platform: None,
                urls: vec![],
                artifact_type: None,
            };
            self.blobs.insert(digest, bytes);
            desc
        }

        /// An image with `layers` layers of `layer_size` bytes each (distinct content) and a
        /// config for `platform` (`os/arch[/variant]`); returns its manifest's descriptor,
        /// with the platform set as an index would set it.
        pub fn image(&mut self, platform: &str, layers: usize, layer_size: usize) -> Descriptor {
            let layers: Vec<Descriptor> = (0..layers).map(|_| self.layer(layer_size)).collect();
            self.image_of(platform, &layers)
        }

        /// A layer of `size` bytes of content no other layer has.
        pub fn layer(&mut self, size: usize) -> Descriptor {
            let bytes = format!("layer {} ", self.seed).into_bytes().repeat(size / 8 + 1);
            self.seed += 1;
            self.put("application/vnd.oci.image.layer.v1.tar+gzip", bytes[..size].to_vec())
        }

        /// An image of `layers` (which other images may share), as `image` builds it.
        pub fn image_of(&mut self, platform: &str, layer_descs: &[Descriptor]) -> Descriptor {
            let p: Platform = platform.parse().expect("a platform");
            let config = serde_json::json!({"os": p.os, "architecture": p.architecture,
                "variant": p.variant, "rootfs": {"type": "layers", "diff_ids": []}, "seed": self.seed});
            self.seed += 1;
            let config = self
                .put("application/vnd.oci.image.config.v1+json", config.to_string().into_bytes());
            let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
                "config": config, "layers": layer_descs});
            let mut desc = self.put(oci::OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap());
            desc.platform = Some(p);
            desc
        }

        /// An index of `children`.
        pub fn index_of(&mut self, children: &[Descriptor]) -> Descriptor {
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX,
                "manifests": children});
            self.put(oci::OCI_INDEX, serde_json::to_vec(&index).unwrap())
        }

        /// Names `desc` in `index.json` as `name` (an empty name: an untagged entry).
        pub fn tag(&mut self, desc: &Descriptor, name: &str) {
            let mut entry = desc.clone();
            entry.platform = None;
            if !name.is_empty() {
                entry.annotations.insert(oci::REF_NAME_ANNOTATION.into(), name.into());
            }
            self.index.manifests.push(entry);
        }

        /// Names `desc` in `index.json` with these annotations (`io.containerd.image.name`,
        /// `org.opencontainers.image.ref.name`, ...).
        pub fn name(&mut self, desc: &Descriptor, annotations: &[(&str, &str)]) {
            let mut entry = desc.clone();
            entry.platform = None;
            for (k, v) in annotations {
                entry.annotations.insert(k.to_string(), v.to_string());
            }
            self.index.manifests.push(entry);
        }

        /// An artifact manifest of `kind` (`artifactType`, an empty config, one layer of that
        /// media type) with the annotation `note`, referring to `subject` when given (without
        /// one: a cosign signature as cosign writes it, tied to its image by a tag only).
        pub fn artifact(
            &mut self,
            kind: &str,
            subject: Option<&Descriptor>,
            note: &str,
        ) -> Descriptor {
            let config = self.put("application/vnd.oci.empty.v1+json", b"{}".to_vec());
            let layer = self.put(kind, format!("payload {note}").into_bytes());
            let mut manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
                "artifactType": kind, "config": config, "layers": [layer],
                "annotations": {"org.opencontainers.image.created": "2026-11-30T00:00:00Z", "note": note}});
            if let Some(s) = subject {
                manifest["subject"] = serde_json::json!({"mediaType": s.media_type,
                    "digest": s.digest, "size": s.size});
            }
            self.put(oci::OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap())
        }

        /// Takes a blob out (a thin layout).
        pub fn remove(&mut self, digest: &Digest) {
            self.blobs.remove(digest);
        }
    }

    impl Source for MemorySource {
        fn location(&self) -> &Path {
            &self.location
        }

        fn index(&self) -> Result<ImageIndex, Error> {
            Ok(self.index.clone())
        }

        fn contains(&self, digest: &Digest) -> Result<bool, Error> {
            Ok(self.blobs.contains_key(digest))
        }

        fn read(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
            let (mut stream, mut verifier) = self.open(desc)?;
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).expect("memory");
            verifier.update(&bytes)?;
            verifier.finish()?;
            Ok(bytes)
        }

        fn open(&self, desc: &Descriptor) -> Result<BlobStream, Error> {
            let bytes = self.blobs.get(&desc.digest).ok_or_else(|| Error::BlobMissing {
                digest: desc.digest.clone(),
                layout: self.location.clone(),
            })?;
            Ok((Box::new(std::io::Cursor::new(bytes.clone())), BlobVerifier::new(desc)))
        }
    }
}
