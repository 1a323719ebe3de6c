//! An OCI layout inside a tar archive, plain or gzip-compressed: what `skopeo copy …
//! oci-archive:`, `podman save --format oci-archive`, BuildKit's `type=oci` exporter and
//! `docker save` of Docker Engine 25+ write.
//!
//! Opening reads every header once (for gzip: decompresses the whole stream once, checking its
//! CRC) and keeps an index of entry names to data ranges; nothing is extracted and the archive
//! is never written. A plain tar is then read at random: a blob is a byte range of the file.
//! A gzip archive keeps its small layout files (`oci-layout`, `index.json`, manifests,
//! configs: up to `CACHE_BUDGET` in all) in memory from that pass, and a decompressor
//! checkpoint at the start of each larger blob (at most `MAX_CHECKPOINTS`, about 44 KiB each),
//! so reading a blob decompresses that blob and little else.
//!
//! Everything the directory reader refuses is refused here, plus what only an archive can
//! hold: names that are absolute or contain `..`, symlinks and hard links leading out of the
//! layout (resolved through the archive's own links), links where a layout file is read,
//! duplicate names, entries below a non-directory, devices and FIFOs, entry types that are not
//! files, directories or links, and archives that end early. Every refusal names the entry.

mod gzip;
mod tar;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BlobStream, Source};
use crate::digest::Digest;
use crate::layout::{
    BlobVerifier, EntryProblem, Error, IN_MEMORY_BLOB_LIMIT, INDEX_JSON_LIMIT, OCI_LAYOUT_LIMIT,
    content,
};
use crate::oci::{Descriptor, ImageIndex};
use gzip::{Checkpoint, Inflater};
use tar::{Kind, RawEntry, Scanner, TarStream};

/// Layout files of a gzip archive kept in memory from the indexing pass, in all.
const CACHE_BUDGET: u64 = 8 * 1024 * 1024;
/// Largest file kept in memory.
const CACHE_FILE_LIMIT: u64 = 1024 * 1024;
/// Decompressor checkpoints kept at most; past that every other one is dropped and the
/// spacing doubles.
const MAX_CHECKPOINTS: usize = 64;
/// Uncompressed bytes between checkpoints, at least (doubles as checkpoints are thinned).
const CHECKPOINT_SPACING: u64 = 1024 * 1024;

/// An OCI image layout in a tar archive.
pub struct ArchiveSource {
    /// Canonical path of the archive, for messages.
    path: PathBuf,
    file: Arc<File>,
    /// Every entry by normalized name (`blobs/sha256/…`, no `./`).
    entries: HashMap<Vec<u8>, Entry>,
    gzip: Option<GzipIndex>,
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    /// Where the data starts in the tar stream, and its length (a hard link: its target's).
    offset: u64,
    size: u64,
    /// A link's target as written.
    link: Vec<u8>,
}

/// What the indexing pass of a gzip archive keeps.
#[derive(Default)]
struct GzipIndex {
    /// Data of small layout files, by offset in the tar stream.
    cache: HashMap<u64, Arc<[u8]>>,
    /// Ascending by `out`.
    checkpoints: Vec<Checkpoint>,
}

/// How a file starts.
enum Format {
    Tar,
    Gzip,
}

impl ArchiveSource {
    /// Opens `path`, which must be a regular file holding a tar archive, plain or gzip, of an
    /// OCI image layout.
    pub fn open(path: &Path) -> Result<ArchiveSource, Error> {
        let canonical = fs::canonicalize(path).map_err(io_error(path))?;
        // O_NONBLOCK: a FIFO swapped in after the caller's check must not block the open.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&canonical)
            .map_err(io_error(path))?;
        let meta = file.metadata().map_err(io_error(path))?;
        if !meta.is_file() {
            return Err(not_a_layout(path, "it is neither a directory nor a regular file"));
        }
        let file = Arc::new(file);
        let mut first = [0u8; tar::BLOCK as usize];
        let n = read_at_most(&file, &mut first, 0).map_err(io_error(path))?;
        let format = sniff(&first[..n]).map_err(|reason| not_a_layout(path, reason))?;
        let mut source =
            ArchiveSource { path: canonical, file, entries: HashMap::new(), gzip: None };
        match format {
            Format::Tar => {
                let stream = FileStream { file: source.file.clone(), position: 0, len: meta.len() };
                source.scan(stream, None)?;
            }
            Format::Gzip => {
                let stream = GzipStream(Inflater::from_start(source.file.clone()));
                let mut gzip = GzipIndex::default();
                source.scan(stream, Some(&mut gzip))?;
                source.gzip = Some(gzip);
            }
        }
        source.check_layout()?;
        tracing::debug!(
            archive = %source.path.display(),
            entries = source.entries.len(),
            gzip = source.gzip.is_some(),
            checkpoints = source.gzip.as_ref().map_or(0, |g| g.checkpoints.len()),
            "opened OCI image layout archive"
        );
        Ok(source)
    }

    /// One pass over every header: names checked and normalized, duplicates refused, the
    /// data ranges recorded; for gzip, small layout files kept and checkpoints taken.
    fn scan<S: TarStream + Checkpoints>(
        &mut self,
        stream: S,
        mut gzip: Option<&mut GzipIndex>,
    ) -> Result<(), Error> {
        let mut scanner = Scanner::new(stream);
        let mut spacing = CHECKPOINT_SPACING;
        let mut cached: u64 = 0;
        let mut ancestors: HashSet<Vec<u8>> = HashSet::new();
        while let Some(raw) = scanner.next_entry().map_err(|e| self.scan_error(e))? {
            let name = self.entry_name(&raw)?;
            self.admit(&raw, &name, &mut ancestors)?;
            if let Some(gzip) = gzip.as_deref_mut()
                && raw.kind == Kind::File
                && raw.size > 0
            {
                if is_layout_file(&name)
                    && raw.size <= CACHE_FILE_LIMIT
                    && cached + raw.size <= CACHE_BUDGET
                {
                    let mut data = vec![0u8; raw.size as usize];
                    read_exact(&mut scanner.stream, &mut data).map_err(|e| self.stream_error(e))?;
                    cached += raw.size;
                    gzip.cache.insert(raw.offset, data.into());
                } else {
                    let last = gzip.checkpoints.last().map_or(0, |c| c.out);
                    if raw.offset >= last + spacing
                        && let Some(cp) = scanner.stream.checkpoint()
                    {
                        gzip.checkpoints.push(cp);
                        if gzip.checkpoints.len() > MAX_CHECKPOINTS {
                            let mut i = 0;
                            gzip.checkpoints.retain(|_| {
                                i += 1;
                                i % 2 == 0
                            });
                            spacing *= 2;
                        }
                    }
                }
            }
        }
        // The rest of the stream (zero padding): read for gzip, so its checksum is checked
        // and a stream cut off after the tar's end is still noticed.
        if gzip.is_some() {
            scanner.stream.drain().map_err(|e| self.stream_error(e))?;
        }
        self.check_links()
    }

    /// The entry's name, normalized: no `./`, no empty components; absolute names and `..`
    /// refused.
    fn entry_name(&self, raw: &RawEntry) -> Result<Vec<u8>, Error> {
        normalize(&raw.name).map_err(|problem| self.refuse(&raw.name, problem))
    }

    /// Records an entry after the checks that need only it and the entries before it.
    fn admit(
        &mut self,
        raw: &RawEntry,
        name: &[u8],
        ancestors: &mut HashSet<Vec<u8>>,
    ) -> Result<(), Error> {
        let refuse = |problem| self.refuse(&raw.name, problem);
        match raw.kind {
            Kind::Special(kind) => return Err(refuse(EntryProblem::Special { kind })),
            Kind::Unsupported(flag) => {
                return Err(refuse(EntryProblem::Unsupported { typeflag: flag as char }));
            }
            Kind::Symlink | Kind::HardLink if is_layout_file(name) => {
                let link = if raw.kind == Kind::Symlink { "symlink" } else { "hard link" };
                return Err(refuse(EntryProblem::LinkWhereFileRead { link }));
            }
            _ => {}
        }
        if name.is_empty() {
            // `./`: the layout's own directory.
            return if raw.kind == Kind::Dir {
                Ok(())
            } else {
                Err(refuse(EntryProblem::BadExtendedHeader { detail: "an empty name".into() }))
            };
        }
        if self.entries.contains_key(name) {
            return Err(refuse(EntryProblem::Duplicate));
        }
        // Below something that is not a directory (`blobs` a symlink, then `blobs/sha256/…`)?
        for (i, _) in name.iter().enumerate().filter(|(_, b)| **b == b'/') {
            if let Some(parent) = self.entries.get(&name[..i])
                && parent.kind != Kind::Dir
            {
                let parent = String::from_utf8_lossy(&name[..i]).into_owned();
                return Err(refuse(EntryProblem::UnderNonDirectory { parent }));
            }
            ancestors.insert(name[..i].to_vec());
        }
        // …or a non-directory where earlier entries made a directory.
        if raw.kind != Kind::Dir && ancestors.contains(name) {
            let parent = String::from_utf8_lossy(name).into_owned();
            return Err(refuse(EntryProblem::UnderNonDirectory { parent }));
        }
        let mut entry =
            Entry { kind: raw.kind, offset: raw.offset, size: raw.size, link: raw.link.clone() };
        if raw.kind == Kind::HardLink {
            // A hard link names an earlier entry of the archive, from the archive's top.
            let target = normalize(&raw.link).map_err(|_| {
                refuse(EntryProblem::LinkOutside { link: "hard link", target: lossy(&raw.link) })
            })?;
            match self.entries.get(&target) {
                Some(t) if t.kind == Kind::File => (entry.offset, entry.size) = (t.offset, t.size),
                _ => return Err(refuse(EntryProblem::HardLinkTarget { target: lossy(&raw.link) })),
            }
        }
        self.entries.insert(name.to_vec(), entry);
        Ok(())
    }

    /// Every symlink, resolved through the archive's other symlinks, must stay inside.
    fn check_links(&self) -> Result<(), Error> {
        let mut links: Vec<(&Vec<u8>, &Entry)> =
            self.entries.iter().filter(|(_, e)| e.kind == Kind::Symlink).collect();
        links.sort_by(|a, b| a.0.cmp(b.0));
        for (name, entry) in links {
            if !self.resolves_inside(name, &entry.link) {
                return Err(self.refuse(
                    name,
                    EntryProblem::LinkOutside { link: "symlink", target: lossy(&entry.link) },
                ));
            }
        }
        Ok(())
    }

    /// Whether the symlink `name` → `target` leads to a place inside the layout, following
    /// the archive's symlinks on the way (as a file system would after extraction).
    fn resolves_inside(&self, name: &[u8], target: &[u8]) -> bool {
        const MAX_LINKS: usize = 40;
        if target.starts_with(b"/") {
            return false;
        }
        // Components still to walk, the next one last; `resolved` is where the walk is.
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let push = |pending: &mut Vec<Vec<u8>>, path: &[u8]| {
            for c in path.split(|&b| b == b'/').rev().filter(|c| !c.is_empty() && *c != b".") {
                pending.push(c.to_vec());
            }
        };
        push(&mut pending, target);
        let mut resolved: Vec<Vec<u8>> = name.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        resolved.pop(); // the link's own directory
        let mut links = 0;
        while let Some(c) = pending.pop() {
            if c == b".." {
                if resolved.pop().is_none() {
                    return false;
                }
                continue;
            }
            resolved.push(c);
            let here = resolved.join(&b'/');
            if let Some(e) = self.entries.get(&here)
                && e.kind == Kind::Symlink
            {
                links += 1;
                if links > MAX_LINKS || e.link.starts_with(b"/") {
                    return false;
                }
                resolved.pop();
                push(&mut pending, &e.link);
            }
        }
        true
    }

    /// What a layout must have, checked as the directory reader checks it; and a clear word
    /// for a docker-archive or a layout one directory down.
    fn check_layout(&self) -> Result<(), Error> {
        let has = |name: &[u8]| self.entries.contains_key(name);
        if !has(b"index.json") && has(b"manifest.json") {
            return Err(Error::DockerArchive { archive: self.path.clone() });
        }
        if !has(b"oci-layout") {
            if let Some(dir) = self.nested_layout() {
                return Err(Error::ArchiveNested { archive: self.path.clone(), dir });
            }
            return Err(not_a_layout(&self.path, "it has no oci-layout file"));
        }
        let bytes = self.read_file(b"oci-layout", OCI_LAYOUT_LIMIT)?;
        content::check_oci_layout(&self.path.join("oci-layout"), &bytes)?;
        if !has(b"index.json") {
            return Err(not_a_layout(&self.path, "it has no index.json"));
        }
        Ok(())
    }

    /// The one top-level directory holding `oci-layout`, when that is where the layout is.
    fn nested_layout(&self) -> Option<String> {
        let mut tops = self.entries.keys().map(|k| k.split(|&b| b == b'/').next().unwrap_or(k));
        let top = tops.next()?.to_vec();
        let all_under = tops.all(|t| t == top.as_slice());
        let marker = [top.as_slice(), b"/oci-layout"].concat();
        (all_under && has_key(&self.entries, &marker)).then(|| lossy(&top))
    }

    /// A layout file read whole (at most `limit` bytes).
    fn read_file(&self, name: &[u8], limit: u64) -> Result<Vec<u8>, Error> {
        let path = self.path.join(String::from_utf8_lossy(name).as_ref());
        let entry =
            self.regular(name)?.ok_or_else(|| not_a_layout(&self.path, "it has no such file"))?;
        if entry.size > limit {
            return Err(Error::TooLarge { path, limit });
        }
        let mut bytes = Vec::with_capacity(entry.size as usize);
        self.data(&entry)
            .take(entry.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.stream_error(e))?;
        if bytes.len() as u64 != entry.size {
            return Err(Error::ArchiveTruncated {
                archive: self.path.clone(),
                detail: format!("{} ends early", String::from_utf8_lossy(name)),
            });
        }
        Ok(bytes)
    }

    /// The entry `name` when it is a regular file; `None` when there is none. A directory
    /// there is an error, as in a layout directory.
    fn regular(&self, name: &[u8]) -> Result<Option<Entry>, Error> {
        match self.entries.get(name) {
            None => Ok(None),
            Some(e) if matches!(e.kind, Kind::File | Kind::HardLink) => Ok(Some(e.clone())),
            Some(e) => Err(Error::NotARegularFile {
                path: self.path.join(String::from_utf8_lossy(name).as_ref()),
                kind: match e.kind {
                    Kind::Dir => "directory",
                    Kind::Symlink => "symlink",
                    _ => "special file",
                },
            }),
        }
    }

    /// The bytes of an entry's data, from its first byte. Opening does no I/O: a gzip
    /// archive decompresses from the nearest checkpoint on the first read.
    fn data(&self, entry: &Entry) -> Box<dyn Read + Send> {
        let Some(gzip) = &self.gzip else {
            return Box::new(FileRange {
                file: self.file.clone(),
                position: entry.offset,
                end: entry.offset + entry.size,
            });
        };
        if let Some(bytes) = gzip.cache.get(&entry.offset) {
            return Box::new(Cursor::new(bytes.clone()));
        }
        let i = gzip.checkpoints.partition_point(|c| c.out <= entry.offset);
        let inflater = match i.checked_sub(1) {
            Some(i) => Inflater::resume(self.file.clone(), &gzip.checkpoints[i]),
            None => Inflater::from_start(self.file.clone()),
        };
        Box::new(GzipRange { inflater, skip_to: entry.offset, left: entry.size })
    }

    fn blob_name(digest: &Digest) -> Vec<u8> {
        format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex()).into_bytes()
    }

    fn refuse(&self, name: &[u8], problem: EntryProblem) -> Error {
        Error::ArchiveEntry { archive: self.path.clone(), entry: lossy(name), problem }
    }

    fn scan_error(&self, e: tar::ScanError) -> Error {
        match e {
            tar::ScanError::Truncated(detail) => {
                Error::ArchiveTruncated { archive: self.path.clone(), detail }
            }
            tar::ScanError::Damaged(detail) => {
                Error::ArchiveDamaged { archive: self.path.clone(), detail }
            }
            tar::ScanError::Entry(name, problem) => self.refuse(&name, problem),
            tar::ScanError::Io(e) => self.stream_error(e),
        }
    }

    /// A failed read of the archive: cut short, corrupt, or the disk.
    fn stream_error(&self, e: io::Error) -> Error {
        let archive = self.path.clone();
        match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                Error::ArchiveTruncated { archive, detail: e.to_string() }
            }
            io::ErrorKind::InvalidData => Error::ArchiveDamaged { archive, detail: e.to_string() },
            _ => Error::Io { path: archive, source: e },
        }
    }
}

impl Source for ArchiveSource {
    fn location(&self) -> &Path {
        &self.path
    }

    fn index(&self) -> Result<ImageIndex, Error> {
        let bytes = self.read_file(b"index.json", INDEX_JSON_LIMIT)?;
        content::parse_index_json(&self.path.join("index.json"), &bytes)
    }

    fn contains(&self, digest: &Digest) -> Result<bool, Error> {
        Ok(self.regular(&Self::blob_name(digest))?.is_some())
    }

    fn read(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        if desc.size > IN_MEMORY_BLOB_LIMIT {
            return Err(Error::TooLarge {
                path: content::blob_path(&self.path, desc),
                limit: IN_MEMORY_BLOB_LIMIT,
            });
        }
        let (stream, mut verifier) = self.open(desc)?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        stream.take(desc.size + 1).read_to_end(&mut bytes).map_err(|e| self.stream_error(e))?;
        verifier.update(&bytes)?;
        verifier.finish()?;
        Ok(bytes)
    }

    fn open(&self, desc: &Descriptor) -> Result<BlobStream, Error> {
        let Some(entry) = self.regular(&Self::blob_name(&desc.digest))? else {
            return Err(Error::BlobMissing {
                digest: desc.digest.clone(),
                layout: self.path.clone(),
            });
        };
        if entry.size != desc.size {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: entry.size,
                layout: Some(self.path.clone()),
            });
        }
        Ok((self.data(&entry), BlobVerifier::in_layout(desc, &self.path)))
    }
}

/// What a file's first bytes say it is.
fn sniff(first: &[u8]) -> Result<Format, &'static str> {
    match first {
        [] => Err("it is an empty file"),
        [0x1f, 0x8b, ..] => Ok(Format::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Err(
            "it is zstd-compressed; imagepush reads a tar archive plain or gzip-compressed: decompress it first",
        ),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Err(
            "it is xz-compressed; imagepush reads a tar archive plain or gzip-compressed: decompress it first",
        ),
        [b'B', b'Z', b'h', ..] => Err(
            "it is bzip2-compressed; imagepush reads a tar archive plain or gzip-compressed: decompress it first",
        ),
        _ if tar::looks_like_tar(first) => Ok(Format::Tar),
        _ => Err("it is a file but not a tar archive (plain or gzip) holding one"),
    }
}

/// `name` without `./` and empty components; absolute names and `..` refused.
fn normalize(name: &[u8]) -> Result<Vec<u8>, EntryProblem> {
    if name.starts_with(b"/") {
        return Err(EntryProblem::Absolute);
    }
    let mut parts = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(EntryProblem::ParentDir),
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

/// The files a layout reader reads: only these are kept in memory, and none may be a link.
fn is_layout_file(name: &[u8]) -> bool {
    name == b"oci-layout" || name == b"index.json" || name.starts_with(b"blobs/")
}

fn has_key(entries: &HashMap<Vec<u8>, Entry>, name: &[u8]) -> bool {
    entries.contains_key(name)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn not_a_layout(path: &Path, reason: &'static str) -> Error {
    Error::NotALayout { path: path.to_path_buf(), reason }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_exact(stream: &mut impl TarStream, buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..])? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive ends in a file's data",
                ));
            }
            n => filled += n,
        }
    }
    Ok(())
}

/// A stream the indexing pass can take checkpoints of and read to its end.
trait Checkpoints {
    fn checkpoint(&self) -> Option<Checkpoint>;
    fn drain(&mut self) -> io::Result<()>;
}

/// A plain tar file read in order by positioned reads; skipping is free.
struct FileStream {
    file: Arc<File>,
    position: u64,
    len: u64,
}

impl TarStream for FileStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        // Data that would end past the file's end: the file is cut short.
        if self.position.saturating_add(n) > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "an entry's data needs {} bytes, the file has {}",
                    self.position + n,
                    self.len
                ),
            ));
        }
        self.position += n;
        Ok(())
    }

    fn position(&self) -> u64 {
        self.position
    }
}

impl Checkpoints for FileStream {
    fn checkpoint(&self) -> Option<Checkpoint> {
        None
    }

    fn drain(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The decompressed stream of a gzip archive.
struct GzipStream(Inflater);

impl TarStream for GzipStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.0).take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the gzip stream ends in an entry's data",
            ));
        }
        Ok(())
    }

    fn position(&self) -> u64 {
        self.0.position()
    }
}

impl Checkpoints for GzipStream {
    fn checkpoint(&self) -> Option<Checkpoint> {
        self.0.checkpoint()
    }

    fn drain(&mut self) -> io::Result<()> {
        io::copy(&mut self.0, &mut io::sink()).map(|_| ())
    }
}

/// `position..end` of a plain tar file, by positioned reads (each stream its own position).
struct FileRange {
    file: Arc<File>,
    position: u64,
    end: u64,
}

impl Read for FileRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.position).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// `left` bytes of a gzip archive's tar stream from `skip_to`, decompressed from a checkpoint
/// at or before it (the bytes in between decompressed and dropped on the first read).
struct GzipRange {
    inflater: Inflater,
    skip_to: u64,
    left: u64,
}

impl Read for GzipRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let gap = self.skip_to.saturating_sub(self.inflater.position());
        if gap > 0 && io::copy(&mut (&mut self.inflater).take(gap), &mut io::sink())? < gap {
            return Ok(0);
        }
        let want = self.left.min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.inflater.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
