//! The OCI image layout reader: everything imagepush reads from a layout on disk.
//!
//! This module owns opening a layout (`oci-layout`, `index.json`), turning validated
//! digests into `blobs/<alg>/<hex>` paths, confining every file access to the layout
//! (symlinks may point anywhere inside it, never outside), refusing FIFOs, devices,
//! sockets and directories without opening them, capping what is read into memory, and
//! checking the size and digest of every blob against its descriptor.
//!
//! It never writes the layout: nothing is created, modified, locked or removed, and
//! every file is opened read-only.

pub mod content;
mod error;
mod files;
mod reader;
#[cfg(test)]
mod testutil;
mod verify;

pub use error::{EntryProblem, Error};
pub use files::resolve_lexically;
pub use reader::{IN_MEMORY_BLOB_LIMIT, INDEX_JSON_LIMIT, LayoutReader, OCI_LAYOUT_LIMIT};
pub use verify::BlobVerifier;
