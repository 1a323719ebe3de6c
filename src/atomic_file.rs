//! Replacing a file so that readers see the old content or the new, never a part: write a
//! temporary file beside it, sync it, rename it over. Used for the report and the sources
//! file, which other processes (the operator, the next push) read.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` followed by a newline to `path`, atomically.
pub fn write_json_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
