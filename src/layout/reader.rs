//! `LayoutReader`: opens a layout, parses `index.json`, and reads or streams blobs.
//! Every file goes through `files` (confined to the layout, regular files only) and every
//! blob is checked against its descriptor's size and digest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{BlobVerifier, Error, content, files};
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};

/// Largest `oci-layout` file read.
pub const OCI_LAYOUT_LIMIT: u64 = 64 * 1024;
/// Largest `index.json` read.
pub const INDEX_JSON_LIMIT: u64 = 16 * 1024 * 1024;
/// Largest blob `read_blob` reads into memory (distribution's manifest limit).
pub const IN_MEMORY_BLOB_LIMIT: u64 = 4 * 1024 * 1024;

/// Reads one OCI image layout; never writes it.
#[derive(Debug, Clone)]
pub struct LayoutReader {
    /// Canonical: absolute, no symlinks. Every path read must stay below it.
    root: PathBuf,
}

impl LayoutReader {
    /// Opens a layout: `path` must be a directory with an `oci-layout` file whose
    /// `imageLayoutVersion` is "1.0.0" (or any 1.x), and an `index.json`.
    pub fn open(path: &Path) -> Result<LayoutReader, Error> {
        let not_a_layout =
            |path: &Path, reason| Error::NotALayout { path: path.to_path_buf(), reason };
        let root = match fs::canonicalize(path) {
            Ok(root) => root,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_a_layout(path, "it does not exist"));
            }
            Err(e) => return Err(Error::io(path)(e)),
        };
        if !fs::metadata(&root).map_err(Error::io(path))?.is_dir() {
            return Err(not_a_layout(path, "it is not a directory"));
        }

        let marker = root.join("oci-layout");
        let Some((file, meta)) = files::open_inside(&root, &marker)? else {
            return Err(not_a_layout(&root, "it has no oci-layout file"));
        };
        let bytes = files::read_capped(file, &meta, &marker, OCI_LAYOUT_LIMIT)?;
        content::check_oci_layout(&marker, &bytes)?;

        let reader = LayoutReader { root };
        if files::resolve(&reader.root, &reader.index_json_path())?.is_none() {
            return Err(not_a_layout(&reader.root, "it has no index.json"));
        }
        tracing::debug!(layout = %reader.root.display(), "opened OCI image layout");
        Ok(reader)
    }

    /// The layout's canonical path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Parses index.json (at most `INDEX_JSON_LIMIT` bytes); schemaVersion must be 2.
    pub fn index(&self) -> Result<ImageIndex, Error> {
        let path = self.index_json_path();
        let Some((file, meta)) = files::open_inside(&self.root, &path)? else {
            return Err(Error::NotALayout {
                path: self.root.clone(),
                reason: "it has no index.json",
            });
        };
        let bytes = files::read_capped(file, &meta, &path, INDEX_JSON_LIMIT)?;
        content::parse_index_json(&path, &bytes)
    }

    /// Whether the blob is present as a regular file inside the layout. `Ok(false)` when
    /// absent (or a dangling symlink). Errors when the path exists but resolves outside
    /// the layout, or is not a regular file (FIFO, device, directory, socket).
    pub fn contains(&self, digest: &Digest) -> Result<bool, Error> {
        Ok(files::resolve(&self.root, &self.blob_path(digest))?.is_some())
    }

    /// Reads a small blob (index, manifest, config) fully into memory, at most
    /// `IN_MEMORY_BLOB_LIMIT` bytes, checking its size and digest against `desc`.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        if desc.size > IN_MEMORY_BLOB_LIMIT {
            return Err(Error::TooLarge {
                path: self.blob_path(&desc.digest),
                limit: IN_MEMORY_BLOB_LIMIT,
            });
        }
        let (file, mut verifier) = self.open_blob(desc)?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        // One byte more than the descriptor's size, so a file that grew is noticed.
        file.take(desc.size + 1)
            .read_to_end(&mut bytes)
            .map_err(Error::io(&self.blob_path(&desc.digest)))?;
        verifier.update(&bytes)?;
        verifier.finish()?;
        Ok(bytes)
    }

    /// Reads and parses an index blob: `desc` must have an index media type, the content's
    /// schemaVersion must be 2 and its `mediaType`, if present, must equal the descriptor's.
    pub fn read_index(&self, desc: &Descriptor) -> Result<ImageIndex, Error> {
        let bytes = self.read_checked(desc, oci::is_index)?;
        content::parse_index(&self.root, desc, &bytes)
    }

    /// Reads and parses a manifest blob, with the same checks as `read_index`.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<ImageManifest, Error> {
        let bytes = self.read_checked(desc, oci::is_manifest)?;
        content::parse_manifest(&self.root, desc, &bytes)
    }

    /// The blob's bytes when its media type is of the kind `accepts`; otherwise nothing is
    /// read and the parser names the wrong media type.
    fn read_checked(&self, desc: &Descriptor, accepts: fn(&str) -> bool) -> Result<Vec<u8>, Error> {
        if accepts(&desc.media_type) { self.read_blob(desc) } else { Ok(Vec::new()) }
    }

    /// Opens a blob for streaming: checks it is a regular file inside the layout whose
    /// length equals `desc.size`, and returns it with a verifier to feed what is read.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<(File, BlobVerifier), Error> {
        let path = self.blob_path(&desc.digest);
        let Some((file, meta)) = files::open_inside(&self.root, &path)? else {
            return Err(Error::BlobMissing {
                digest: desc.digest.clone(),
                layout: self.root.clone(),
            });
        };
        if meta.len() != desc.size {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: meta.len(),
                layout: Some(self.root.clone()),
            });
        }
        Ok((file, BlobVerifier::in_layout(desc, &self.root)))
    }

    fn index_json_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// `blobs/<alg>/<hex>`; `Digest` guarantees both parts are safe path components.
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm().as_str()).join(digest.hex())
    }
}

#[cfg(test)]
mod tests;
