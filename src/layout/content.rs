//! Parsing a manifest or an index read from a layout (or any source of layout content), with
//! the checks the layout reader makes: the descriptor's media type is of the right kind, the
//! content's `schemaVersion` is 2, and its own `mediaType`, when it has one, is the
//! descriptor's. `location` (the layout or archive) is named in errors.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::Error;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};

/// Where a blob sits in a layout, for messages.
pub fn blob_path(location: &Path, desc: &Descriptor) -> PathBuf {
    location.join("blobs").join(desc.digest.algorithm().as_str()).join(desc.digest.hex())
}

pub fn parse_index(location: &Path, desc: &Descriptor, bytes: &[u8]) -> Result<ImageIndex, Error> {
    expect_media_type(location, desc, oci::is_index, "an image index media type")?;
    let index: ImageIndex = parse(&blob_path(location, desc), bytes)?;
    check_schema_version(&blob_path(location, desc), index.schema_version)?;
    check_content_media_type(location, desc, index.media_type.as_deref())?;
    Ok(index)
}

pub fn parse_manifest(
    location: &Path,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<ImageManifest, Error> {
    expect_media_type(location, desc, oci::is_manifest, "an image manifest media type")?;
    let manifest: ImageManifest = parse(&blob_path(location, desc), bytes)?;
    check_schema_version(&blob_path(location, desc), manifest.schema_version)?;
    check_content_media_type(location, desc, manifest.media_type.as_deref())?;
    Ok(manifest)
}

/// Checks an `oci-layout` file's content: `imageLayoutVersion` "1.0.0" or any other 1.x.
pub(crate) fn check_oci_layout(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    #[derive(serde::Deserialize)]
    struct OciLayoutFile {
        #[serde(rename = "imageLayoutVersion")]
        image_layout_version: String,
    }
    let layout: OciLayoutFile = parse(path, bytes)?;
    if !is_supported_version(&layout.image_layout_version) {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            version: layout.image_layout_version,
        });
    }
    tracing::debug!(path = %path.display(), version = %layout.image_layout_version, "OCI image layout");
    Ok(())
}

/// Parses `index.json`: schemaVersion must be 2.
pub(crate) fn parse_index_json(path: &Path, bytes: &[u8]) -> Result<ImageIndex, Error> {
    let index: ImageIndex = parse(path, bytes)?;
    check_schema_version(path, index.schema_version)?;
    Ok(index)
}

/// "1.0.0" and any other 1.x (`1.<minor>` or `1.<minor>.<patch>`, decimal numbers).
pub(super) fn is_supported_version(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts[0] == "1"
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

pub(super) fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(Error::json(path))
}

pub(super) fn check_schema_version(path: &Path, found: u32) -> Result<(), Error> {
    if found == 2 {
        Ok(())
    } else {
        Err(Error::InvalidSchemaVersion { path: path.to_path_buf(), found })
    }
}

fn expect_media_type(
    location: &Path,
    desc: &Descriptor,
    accepts: fn(&str) -> bool,
    wanted: &'static str,
) -> Result<(), Error> {
    if accepts(&desc.media_type) {
        return Ok(());
    }
    Err(Error::UnexpectedMediaType {
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        wanted,
        layout: location.to_path_buf(),
    })
}

fn check_content_media_type(
    location: &Path,
    desc: &Descriptor,
    content: Option<&str>,
) -> Result<(), Error> {
    match content {
        Some(content) if content != desc.media_type => Err(Error::MediaTypeMismatch {
            digest: desc.digest.clone(),
            descriptor: desc.media_type.clone(),
            content: content.to_string(),
            layout: location.to_path_buf(),
        }),
        _ => Ok(()),
    }
}
