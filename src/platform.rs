//! Platforms (`os/arch[/variant]`): parsing, strict matching for `--platform`, and the
//! host-platform preference order used when an index has to fall back to one manifest.

use serde::{Deserialize, Serialize};

/// An OCI platform as it appears in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}
