//! Confined, read-only file access below a layout root.
//!
//! A path is resolved (symlinks followed) and must land inside the canonical root; the
//! result must be a regular file, which is checked before anything is opened so a FIFO or
//! a device is never opened. The open itself uses `O_NOFOLLOW | O_NONBLOCK` on the
//! canonical path and re-checks what was opened, so a path swapped in between cannot make
//! the reader block on a FIFO or read outside the layout.

use std::fs::{self, File, FileType, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Error;

/// Resolves `path` (below `root`, which must be canonical) to its canonical form.
///
/// `Ok(None)` when nothing is there, including a dangling symlink. Errors when the path
/// resolves outside `root` or is not a regular file.
pub(super) fn resolve(root: &Path, path: &Path) -> Result<Option<PathBuf>, Error> {
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path)(e)),
    }
    let canonical = match fs::canonicalize(path) {
        Ok(canonical) => canonical,
        // The entry exists but a symlink on the way dangles: nothing there, unless it leads
        // out of the layout (in a container, what lies outside is usually not mounted, so
        // such a link dangles there while it resolves on the machine that wrote it).
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let lexical = resolve_lexically(path).map_err(Error::io(path))?;
            ensure_inside(root, path, &lexical)?;
            return Ok(None);
        }
        Err(e) => return Err(Error::io(path)(e)),
    };
    ensure_inside(root, path, &canonical)?;
    // The canonical path has no symlinks left, so this is the file itself.
    let meta = fs::symlink_metadata(&canonical).map_err(Error::io(path))?;
    ensure_regular(path, meta.file_type())?;
    Ok(Some(canonical))
}

/// Where `path` (absolute) leads with every symlink on the way followed as far as the file
/// system has it: like `canonicalize`, but a dangling link or a missing component ends the
/// walk instead of failing it, so where a link *points* is known even when nothing is there.
pub fn resolve_lexically(path: &Path) -> io::Result<PathBuf> {
    use std::path::Component;
    const MAX_LINKS: usize = 40; // Linux's own limit (ELOOP)
    // Components still to walk, the next one last.
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    let push_components = |pending: &mut Vec<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push(n.to_os_string()),
                Component::ParentDir => pending.push("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push_components(&mut pending, path);
    let mut resolved = PathBuf::from("/");
    let mut links = 0;
    let mut exists = true;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(&name);
        if !exists {
            continue;
        }
        match fs::symlink_metadata(&resolved) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = fs::read_link(&resolved)?;
                resolved.pop();
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                push_components(&mut pending, &target);
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => exists = false,
            Err(e) => return Err(e),
        }
    }
    Ok(resolved)
}

/// Resolves and opens `path` read-only. `Ok(None)` when nothing is there.
/// Returns the open file and its metadata (taken from the open file).
pub(super) fn open_inside(root: &Path, path: &Path) -> Result<Option<(File, Metadata)>, Error> {
    let Some(canonical) = resolve(root, path)? else {
        return Ok(None);
    };
    open_resolved(root, path, &canonical).map(Some)
}

/// Opens the already resolved `canonical` form of `path` and checks what was opened.
fn open_resolved(root: &Path, path: &Path, canonical: &Path) -> Result<(File, Metadata), Error> {
    // O_NONBLOCK: if a FIFO was swapped in after `resolve`, open must not wait for a
    // writer. It has no effect on reads from the regular file this turns out to be.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(canonical)
        .map_err(Error::io(path))?;
    let meta = file.metadata().map_err(Error::io(path))?;
    ensure_regular(path, meta.file_type())?;
    #[cfg(target_os = "linux")]
    {
        // A directory on the way could have been replaced by a symlink between
        // canonicalize and open; the kernel knows where the open file really is.
        use std::os::fd::AsRawFd;
        if let Ok(opened) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            ensure_inside(root, path, &opened)?;
        }
    }
    Ok((file, meta))
}

/// Reads all of `file`, at most `limit` bytes: `Error::TooLarge` beyond that.
pub(super) fn read_capped(
    mut file: File,
    meta: &Metadata,
    path: &Path,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    let too_large = || Error::TooLarge { path: path.to_path_buf(), limit };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte more than allowed, to notice a file that grew since the metadata was read.
    (&mut file).take(limit + 1).read_to_end(&mut bytes).map_err(Error::io(path))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn ensure_inside(root: &Path, path: &Path, resolved: &Path) -> Result<(), Error> {
    if resolved.starts_with(root) {
        Ok(())
    } else {
        Err(Error::OutsideLayout {
            path: path.to_path_buf(),
            target: resolved.to_path_buf(),
            layout: root.to_path_buf(),
        })
    }
}

fn ensure_regular(path: &Path, file_type: FileType) -> Result<(), Error> {
    if file_type.is_file() {
        Ok(())
    } else {
        Err(Error::NotARegularFile { path: path.to_path_buf(), kind: kind_name(file_type) })
    }
}

/// A name for a kind of file, for messages.
fn kind_name(file_type: FileType) -> &'static str {
    if file_type.is_file() {
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::testutil::{mkfifo, within_seconds};

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn kinds_of_special_files() {
        let (_dir, root) = root();
        fs::create_dir(root.join("dir")).unwrap();
        mkfifo(&root.join("fifo"));
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        let cases = [("dir", "directory"), ("fifo", "FIFO"), ("sock", "socket")];
        for (name, kind) in cases {
            let (root, path) = (root.clone(), root.join(name));
            let err = within_seconds(move || open_inside(&root, &path).unwrap_err());
            assert!(
                matches!(err, Error::NotARegularFile { kind: k, .. } if k == kind),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn fifo_swapped_in_after_resolve_does_not_block_open() {
        // Skip `resolve` to model a FIFO that replaced a checked file: the open must
        // return at once (O_NONBLOCK) and the check on the open file must refuse it.
        let (_dir, root) = root();
        let path = root.join("fifo");
        mkfifo(&path);
        let err = within_seconds(move || open_resolved(&root, &path, &path).unwrap_err());
        assert!(matches!(err, Error::NotARegularFile { kind: "FIFO", .. }), "{err}");
    }

    #[test]
    fn symlink_swapped_in_after_resolve_is_not_followed() {
        let (_dir, root) = root();
        fs::write(root.join("target"), b"x").unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink(root.join("target"), &link).unwrap();
        let err = open_resolved(&root, &link, &link).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ELOOP)),
            "{err}"
        );
    }

    #[test]
    fn char_device_reached_through_symlink_is_outside() {
        let (_dir, root) = root();
        std::os::unix::fs::symlink("/dev/null", root.join("null")).unwrap();
        let err = resolve(&root, &root.join("null")).unwrap_err();
        assert!(
            matches!(&err, Error::OutsideLayout { target, .. } if target == Path::new("/dev/null")),
            "{err}"
        );
    }

    #[test]
    fn missing_and_dangling_are_absent() {
        let (_dir, root) = root();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        assert!(resolve(&root, &root.join("missing")).unwrap().is_none());
        assert!(resolve(&root, &root.join("dangling")).unwrap().is_none());
        assert!(open_inside(&root, &root.join("dangling")).unwrap().is_none());
    }

    #[test]
    fn read_capped_enforces_limit() {
        let (_dir, root) = root();
        let path = root.join("f");
        fs::write(&path, b"12345").unwrap();
        for (limit, ok) in [(5, true), (4, false)] {
            let (file, meta) = open_inside(&root, &path).unwrap().unwrap();
            let got = read_capped(file, &meta, &path, limit);
            match (ok, got) {
                (true, Ok(bytes)) => assert_eq!(bytes, b"12345"),
                (false, Err(Error::TooLarge { limit: l, .. })) => assert_eq!(l, limit),
                (_, other) => panic!("limit {limit}: {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod lexical_tests {
    use super::resolve_lexically;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_followed_as_far_as_they_go_even_when_they_dangle() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        symlink(base.join("elsewhere/layout"), root.join("out")).unwrap();
        symlink("a/b", root.join("rel")).unwrap();
        symlink("../../out", root.join("a/b/up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        for (path, want) in [
            (root.join("out"), base.join("elsewhere/layout")),
            (root.join("out/x/y"), base.join("elsewhere/layout/x/y")),
            (root.join("rel/c"), root.join("a/b/c")),
            (root.join("rel/up"), base.join("elsewhere/layout")),
            (root.join("a/../a/b"), root.join("a/b")),
            (root.join("missing/../a"), root.join("a")),
        ] {
            assert_eq!(resolve_lexically(&path).unwrap(), want, "{}", path.display());
        }
        assert!(resolve_lexically(&root.join("loop1")).is_err());
    }
}
