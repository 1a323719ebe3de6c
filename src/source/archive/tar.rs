//! Tar headers, as GNU tar, Go's archive/tar (skopeo, podman, docker, BuildKit) and Python's
//! tarfile write them: ustar and v7 headers, GNU long names (`L`, `K`), PAX extended headers
//! (`x`: `path`, `linkpath`, `size`). It walks a stream of headers and says where each entry's
//! data starts; it never extracts anything and reads no more than a header (and an extended
//! header's data, capped) into memory.

use std::io;

use crate::layout::EntryProblem;

pub const BLOCK: u64 = 512;
/// Largest PAX extended header or GNU long name read.
const EXTENDED_HEADER_LIMIT: u64 = 64 * 1024;

/// What kind of entry a header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Dir,
    /// A device, FIFO or socket: named for messages.
    Special(&'static str),
    /// A type flag imagepush does not read.
    Unsupported(u8),
}

impl Kind {
    fn from_typeflag(flag: u8) -> Kind {
        match flag {
            b'0' | 0 | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'5' => Kind::Dir,
            b'3' => Kind::Special("character device"),
            b'4' => Kind::Special("block device"),
            b'6' => Kind::Special("FIFO"),
            other => Kind::Unsupported(other),
        }
    }

    /// Whether data blocks follow the header (as tar readers decide it: regular files and
    /// types they do not know carry data; links, directories and devices do not).
    fn has_data(self) -> bool {
        matches!(self, Kind::File | Kind::Unsupported(_))
    }
}

/// One entry, its name as written (after long names and PAX records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    /// Where the entry's data starts in the tar stream.
    pub offset: u64,
}

/// Why reading headers stopped.
#[derive(Debug)]
pub enum ScanError {
    /// The stream ended early: (what was being read, at which byte).
    Truncated(String),
    /// Not a tar stream here.
    Damaged(String),
    /// An entry refused for what it is (its name as written).
    Entry(Vec<u8>, EntryProblem),
    /// The stream failed (a gzip error, the disk).
    Io(io::Error),
}

/// The tar stream a scanner reads: sequential, with a way to skip data.
pub trait TarStream {
    /// Reads up to `buf.len()` bytes (0 only at the end).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Moves `n` bytes forward; an error when the stream ends first.
    fn skip(&mut self, n: u64) -> io::Result<()>;
    /// Bytes of the tar stream consumed so far.
    fn position(&self) -> u64;
}

/// Walks the headers of a tar stream.
pub struct Scanner<S> {
    pub stream: S,
    /// Where the next header starts.
    next_header: u64,
    /// The name of the entry last returned (its data is what a cut stream cuts).
    last: Option<Vec<u8>>,
    done: bool,
}

impl<S: TarStream> Scanner<S> {
    pub fn new(stream: S) -> Self {
        let next_header = stream.position();
        Scanner { stream, next_header, last: None, done: false }
    }

    /// The next entry, with the stream at the start of its data (the caller may read some of
    /// it); `None` after the end-of-archive block. Metadata entries (PAX, GNU long names) are
    /// applied to the entry they describe, never returned.
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>, ScanError> {
        if self.done {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax = Pax::default();
        loop {
            let at = self.next_header;
            let skip = at - self.stream.position();
            self.stream.skip(skip).map_err(|e| match (e.kind(), &self.last) {
                (io::ErrorKind::UnexpectedEof, Some(name)) => ScanError::Truncated(format!(
                    "entry {:?} is cut short ({e})",
                    String::from_utf8_lossy(name)
                )),
                _ => eof_as(e, "an entry's data", at),
            })?;
            let mut block = [0u8; BLOCK as usize];
            if self.stream.read(&mut block[..1]).map_err(|e| eof_as(e, "a header", at))? == 0 {
                return Err(ScanError::Truncated(format!(
                    "it ends at byte {at} without the end-of-archive block"
                )));
            }
            self.read_exact(&mut block[1..], "a header", at + 1)?;
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            let header = Header(&block);
            if !header.checksum_ok() {
                return Err(ScanError::Damaged(format!(
                    "the header at byte {at} has a wrong checksum (not a tar archive, or damaged)"
                )));
            }
            let flag = block[156];
            let name = long_name.take().unwrap_or_else(|| header.name());
            let size = match pax.size.take() {
                Some(size) => size,
                None => header.size().map_err(|e| ScanError::Entry(name.clone(), e))?,
            };
            let data = at + BLOCK;
            let end = data.checked_add(padded(size)).ok_or_else(|| {
                ScanError::Entry(name.clone(), bad_header(format!("size {size} is too large")))
            })?;
            match flag {
                b'x' | b'L' | b'K' | b'g' => {
                    if size > EXTENDED_HEADER_LIMIT {
                        return Err(ScanError::Entry(
                            name,
                            bad_header(format!(
                                "{size} bytes, more than the {EXTENDED_HEADER_LIMIT}-byte limit"
                            )),
                        ));
                    }
                    let mut bytes = vec![0u8; size as usize];
                    self.read_exact(&mut bytes, "an extended header", data)?;
                    self.next_header = end;
                    match flag {
                        b'L' => long_name = Some(until_nul(&bytes).to_vec()),
                        b'K' => long_link = Some(until_nul(&bytes).to_vec()),
                        b'x' => pax = Pax::parse(&bytes).map_err(|e| ScanError::Entry(name, e))?,
                        _ => Pax::check_global(&bytes).map_err(|e| ScanError::Entry(name, e))?,
                    }
                    continue;
                }
                _ => {}
            }
            let kind = Kind::from_typeflag(flag);
            let name = pax.path.take().unwrap_or(name);
            let link = pax.linkpath.take().or(long_link.take()).unwrap_or_else(|| header.link());
            if pax.sparse {
                return Err(ScanError::Entry(name, EntryProblem::Unsupported { typeflag: 'S' }));
            }
            let size = if kind.has_data() { size } else { 0 };
            self.next_header = data + padded(size);
            self.last = Some(name.clone());
            return Ok(Some(RawEntry { name, link, kind, size, offset: data }));
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str, at: u64) -> Result<(), ScanError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(ScanError::Truncated(format!(
                        "it ends in {what} at byte {} (of the tar stream)",
                        at + filled as u64
                    )));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(eof_as(e, what, at)),
            }
        }
        Ok(())
    }
}

fn eof_as(e: io::Error, what: &str, at: u64) -> ScanError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ScanError::Truncated(format!("it ends in {what} at byte {at} ({e})"))
    } else {
        ScanError::Io(e)
    }
}

fn bad_header(detail: String) -> EntryProblem {
    EntryProblem::BadExtendedHeader { detail }
}

/// `size` rounded up to whole blocks.
fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.iter().position(|&b| b == 0).map_or(bytes, |i| &bytes[..i])
}

/// Whether `block` (the first 512 bytes of a file) is a tar header: its checksum is right
/// (ustar, GNU and v7 headers alike), or it is the end-of-archive block of an empty archive.
pub fn looks_like_tar(block: &[u8]) -> bool {
    block.len() >= BLOCK as usize
        && (Header(block[..BLOCK as usize].try_into().unwrap()).checksum_ok()
            || block[..BLOCK as usize].iter().all(|&b| b == 0))
}

struct Header<'a>(&'a [u8; BLOCK as usize]);

impl Header<'_> {
    fn checksum_ok(&self) -> bool {
        let Some(stored) = octal(&self.0[148..156]) else { return false };
        let (mut unsigned, mut signed) = (0u64, 0i64);
        for (i, &b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
    }

    fn is_ustar(&self) -> bool {
        &self.0[257..263] == b"ustar\0"
    }

    /// The name field, with the POSIX ustar prefix (GNU headers use that space for times).
    fn name(&self) -> Vec<u8> {
        let name = until_nul(&self.0[0..100]);
        let prefix = until_nul(&self.0[345..500]);
        if self.is_ustar() && !prefix.is_empty() {
            [prefix, b"/", name].concat()
        } else {
            name.to_vec()
        }
    }

    fn link(&self) -> Vec<u8> {
        until_nul(&self.0[157..257]).to_vec()
    }

    /// The size field: octal, or GNU's base-256 for large files.
    fn size(&self) -> Result<u64, EntryProblem> {
        let field = &self.0[124..136];
        if field[0] & 0x80 != 0 {
            if field[0] & 0x40 != 0 {
                return Err(bad_header("a negative size".into()));
            }
            let mut value: u64 = u64::from(field[0] & 0x3f);
            for &b in &field[1..] {
                value = value
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or_else(|| bad_header("a size beyond 2^64".into()))?;
            }
            return Ok(value);
        }
        octal(field).ok_or_else(|| bad_header("the size field is not an octal number".into()))
    }
}

/// An octal field: optional leading spaces, digits, then NULs or spaces.
fn octal(field: &[u8]) -> Option<u64> {
    let text = field.iter().skip_while(|&&b| b == b' ');
    let mut value: u64 = 0;
    let mut digits = 0;
    let mut ended = false;
    for &b in text {
        match b {
            b'0'..=b'7' if !ended => {
                value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
                digits += 1;
            }
            0 | b' ' => ended = true,
            _ => return None,
        }
    }
    (digits > 0).then_some(value)
}

/// What a PAX extended header says about the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    sparse: bool,
}

impl Pax {
    fn parse(bytes: &[u8]) -> Result<Pax, EntryProblem> {
        let mut pax = Pax::default();
        for (key, value) in records(bytes)? {
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| bad_header("the size record is not a number".into()))?;
                    pax.size = Some(size);
                }
                k if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
                _ => {}
            }
        }
        Ok(pax)
    }

    /// A global header may carry comments and times; one that would rename or resize every
    /// entry after it is refused.
    fn check_global(bytes: &[u8]) -> Result<(), EntryProblem> {
        for (key, _) in records(bytes)? {
            if matches!(key, b"path" | b"linkpath" | b"size") {
                return Err(bad_header(format!(
                    "a global {:?} record",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        Ok(())
    }
}

/// A PAX record: key and value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// `<length> <key>=<value>\n` records.
fn records(mut bytes: &[u8]) -> Result<Vec<Record<'_>>, EntryProblem> {
    let mut out = Vec::new();
    let bad = || bad_header("a malformed record".into());
    while !bytes.is_empty() && bytes[0] != 0 {
        let space = bytes.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&bytes[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > bytes.len() || bytes[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &bytes[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((&record[..eq], &record[eq + 1..]));
        bytes = &bytes[len..];
    }
    Ok(out)
}

/// Tar archives made in memory, for tests.
#[cfg(test)]
pub(super) mod testutil {
    use super::*;
    use std::io::Read;

    /// A `TarStream` over any reader, for tests and for data already in memory.
    pub struct ReadStream<R> {
        pub inner: R,
        pub position: u64,
    }

    impl<R: Read> TarStream for ReadStream<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.position += n as u64;
            Ok(n)
        }

        fn skip(&mut self, n: u64) -> io::Result<()> {
            let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
            self.position += copied;
            if copied < n {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends"));
            }
            Ok(())
        }

        fn position(&self) -> u64 {
            self.position
        }
    }

    /// A ustar header for `name` with type `flag` and `size` bytes of data.
    pub fn header(name: &[u8], flag: u8, size: u64, link: &[u8]) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) })
            .sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// An entry: name, type flag, data, link target.
    pub type Part<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

    /// `parts` and the end-of-archive blocks.
    pub fn archive(parts: &[Part<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, flag, data, link) in parts {
            out.extend_from_slice(&header(name, *flag, data.len() as u64, link));
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(512), 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn scan(bytes: &[u8]) -> Result<Vec<RawEntry>, ScanError> {
        let mut s = Scanner::new(ReadStream { inner: bytes, position: 0 });
        let mut out = Vec::new();
        while let Some(e) = s.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn entries_offsets_and_kinds() {
        let bytes = archive(&[
            (b"./", b'5', b"", b""),
            (b"./index.json", b'0', b"{}", b""),
            (b"l", b'2', b"", b"index.json"),
            (b"fifo", b'6', b"", b""),
        ]);
        let entries = scan(&bytes).unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.kind, e.size, e.offset))
            .collect();
        assert_eq!(
            got,
            vec![
                ("./".into(), Kind::Dir, 0, 512),
                ("./index.json".into(), Kind::File, 2, 1024),
                ("l".into(), Kind::Symlink, 0, 2048),
                ("fifo".into(), Kind::Special("FIFO"), 0, 2560),
            ]
        );
        assert_eq!(entries[2].link, b"index.json");
    }

    #[test]
    fn pax_and_gnu_long_names() {
        let long = format!("blobs/sha512/{}", "a".repeat(128));
        let pax = format!("{} path={long}\n", long.len() + 7 + 3);
        let pax = format!("{} path={long}\n", pax.len());
        let bytes = archive(&[
            (b"PaxHeaders/x", b'x', pax.as_bytes(), b""),
            (b"short", b'0', b"abc", b""),
            (b"././@LongLink", b'L', format!("{long}2\0").as_bytes(), b""),
            (b"short2", b'0', b"", b""),
        ]);
        let entries = scan(&bytes).unwrap();
        assert_eq!(entries[0].name, long.as_bytes());
        assert_eq!(entries[0].size, 3);
        assert_eq!(entries[1].name, format!("{long}2").as_bytes());
    }

    #[test]
    fn truncated_and_damaged() {
        let bytes = archive(&[(b"a", b'0', &[7u8; 1000], b"")]);
        // Cut in the data, in the end block, and with no end block at all.
        for cut in [700, 512 + 1024, 512 + 1024 + 100] {
            match scan(&bytes[..cut]) {
                Err(ScanError::Truncated(_)) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        let mut bad = bytes.clone();
        bad[0] = b'b';
        assert!(matches!(scan(&bad), Err(ScanError::Damaged(_))));
    }

    #[test]
    fn detection() {
        let bytes = archive(&[(b"a", b'0', b"x", b"")]);
        assert!(looks_like_tar(&bytes));
        assert!(looks_like_tar(&[0u8; 1024]));
        assert!(!looks_like_tar(b"{\"imageLayoutVersion\": \"1.0.0\"}"));
        assert!(!looks_like_tar(&[b'a'; 512]));
    }

    #[test]
    fn octal_and_base256_sizes() {
        assert_eq!(octal(b"00000000017\0"), Some(15));
        assert_eq!(octal(b"   17 \0\0"), Some(15));
        assert_eq!(octal(b"1x"), None);
        let mut h = header(b"big", b'0', 0, b"");
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(Header(&h).size().unwrap(), 1 << 16);
    }
}
