//! Reading a gzip file (one member or several) with positioned reads, never whole: an
//! `Inflater` decompresses from the start, or from a `Checkpoint` taken on an earlier pass (the
//! decompressor's state and its 32 KiB window, and where in the file it was), so a read in the
//! middle of the stream costs only what lies between the checkpoint and the data.
//!
//! An inflater started at a member's first byte checks the member's CRC-32 and length; one
//! resumed from a checkpoint cannot (the blob digests are checked instead).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Compressed bytes read from the file at a time.
const INPUT_BUFFER: usize = 64 * 1024;

/// Where an inflater can start again: the state after `out` bytes of output.
#[derive(Clone)]
pub struct Checkpoint {
    /// Uncompressed bytes before this point.
    pub out: u64,
    /// The file offset of the first compressed byte not yet consumed.
    input: u64,
    state: Box<InflateState>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint").field("out", &self.out).field("input", &self.input).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before a member's header.
    Header,
    Body,
    End,
}

pub struct Inflater {
    file: Arc<File>,
    /// File offset of the next byte to fetch into `buf`.
    next: u64,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    state: Box<InflateState>,
    phase: Phase,
    out: u64,
    /// CRC-32 and length of the member so far, when it was read from its start.
    check: Option<(crc32fast::Hasher, u32)>,
}

impl Inflater {
    /// Decompresses from the first byte of the file.
    pub fn from_start(file: Arc<File>) -> Inflater {
        Inflater {
            file,
            next: 0,
            buf: vec![0u8; INPUT_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            state: InflateState::new_boxed(DataFormat::Raw),
            phase: Phase::Header,
            out: 0,
            check: None,
        }
    }

    /// Decompresses from `checkpoint` on.
    pub fn resume(file: Arc<File>, checkpoint: &Checkpoint) -> Inflater {
        Inflater {
            next: checkpoint.input,
            state: checkpoint.state.clone(),
            phase: Phase::Body,
            out: checkpoint.out,
            ..Inflater::from_start(file)
        }
    }

    /// Where this inflater is now, to resume from later (inside a member's body).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        (self.phase == Phase::Body).then(|| Checkpoint {
            out: self.out,
            input: self.next - (self.end - self.start) as u64,
            state: self.state.clone(),
        })
    }

    /// Uncompressed bytes produced so far.
    pub fn position(&self) -> u64 {
        self.out
    }

    /// The compressed bytes read so far (for messages).
    fn input_position(&self) -> u64 {
        self.next - (self.end - self.start) as u64
    }

    /// Refills the input buffer when it is empty; `false` at the end of the file.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        let n = loop {
            match self.file.read_at(&mut self.buf, self.next) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        self.next += n as u64;
        self.start = 0;
        self.end = n;
        Ok(n > 0)
    }

    fn byte(&mut self, what: &str) -> io::Result<u8> {
        if !self.fill()? {
            return Err(truncated(format!("the gzip stream ends in {what}")));
        }
        self.start += 1;
        Ok(self.buf[self.start - 1])
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> io::Result<[u8; N]> {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.byte(what)?;
        }
        Ok(out)
    }

    /// A member header (RFC 1952); the magic is checked by the caller.
    fn header(&mut self) -> io::Result<()> {
        let what = "a member header";
        let [id1, id2, method, flags] = self.bytes::<4>(what)?;
        if [id1, id2] != [0x1f, 0x8b] {
            return Err(invalid(format!("no gzip header at byte {}", self.input_position() - 4)));
        }
        if method != 8 || flags & 0xe0 != 0 {
            return Err(invalid(format!(
                "a gzip member with method {method} and flags {flags:#x}, which are not deflate's"
            )));
        }
        self.bytes::<6>(what)?; // mtime, extra flags, OS
        if flags & 0x04 != 0 {
            let len = u16::from_le_bytes(self.bytes::<2>(what)?);
            for _ in 0..len {
                self.byte(what)?;
            }
        }
        for flag in [0x08, 0x10] {
            if flags & flag != 0 {
                while self.byte(what)? != 0 {}
            }
        }
        if flags & 0x02 != 0 {
            self.bytes::<2>(what)?;
        }
        self.state.reset(DataFormat::Raw);
        self.check = Some((crc32fast::Hasher::new(), 0));
        self.phase = Phase::Body;
        Ok(())
    }

    /// After a member's deflate data: its trailer, then another member or the end (zero
    /// padding after the last member is allowed, as gzip allows it).
    fn end_member(&mut self) -> io::Result<()> {
        let trailer = self.bytes::<8>("a member trailer")?;
        if let Some((hasher, len)) = self.check.take() {
            let crc = u32::from_le_bytes(trailer[..4].try_into().unwrap());
            let size = u32::from_le_bytes(trailer[4..].try_into().unwrap());
            if hasher.finalize() != crc || len != size {
                return Err(invalid("the gzip checksum does not match the data".into()));
            }
        }
        loop {
            if !self.fill()? {
                self.phase = Phase::End;
                return Ok(());
            }
            match self.buf[self.start] {
                0x1f => {
                    self.phase = Phase::Header;
                    return Ok(());
                }
                0 => self.start += 1,
                _ => {
                    return Err(invalid(format!(
                        "data that is not gzip after the end of the gzip stream, at byte {}",
                        self.input_position()
                    )));
                }
            }
        }
    }
}

impl Read for Inflater {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            match self.phase {
                Phase::End => return Ok(0),
                Phase::Header => {
                    self.header()?;
                    continue;
                }
                Phase::Body => {}
            }
            let more = self.fill()?;
            let result =
                inflate(&mut self.state, &self.buf[self.start..self.end], dst, MZFlush::None);
            self.start += result.bytes_consumed;
            let n = result.bytes_written;
            self.out += n as u64;
            if let Some((hasher, len)) = &mut self.check {
                hasher.update(&dst[..n]);
                *len = len.wrapping_add(n as u32);
            }
            match result.status {
                Ok(MZStatus::StreamEnd) if n == 0 => self.end_member()?,
                Ok(_) if n > 0 => return Ok(n),
                Ok(_) | Err(MZError::Buf) if !more => {
                    return Err(truncated(format!(
                        "the gzip stream ends early, after {} bytes of data",
                        self.out
                    )));
                }
                Ok(_) | Err(MZError::Buf) => {}
                Err(e) => {
                    return Err(invalid(format!(
                        "corrupt deflate data near byte {} ({e:?})",
                        self.input_position()
                    )));
                }
            }
        }
    }
}

fn truncated(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, detail)
}

fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `data` gzipped by the system's gzip (an independent writer), as a file.
    fn gzip_file(data: &[u8], args: &[&str]) -> (tempfile::NamedTempFile, Arc<File>) {
        let mut child = std::process::Command::new("gzip")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&out.stdout).unwrap();
        let file = Arc::new(File::open(f.path()).unwrap());
        (f, file)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7919) % 251) as u8 ^ (i / 4096) as u8).collect()
    }

    #[test]
    fn reads_what_gzip_wrote_and_resumes_from_checkpoints() {
        let data = data(3 << 20);
        let (_f, file) = gzip_file(&data, &["-6", "-c"]);
        let mut inflater = Inflater::from_start(file.clone());
        let mut got = vec![0u8; 1_000_003];
        inflater.read_exact(&mut got).unwrap();
        let cp = inflater.checkpoint().unwrap();
        let mut rest = Vec::new();
        inflater.read_to_end(&mut rest).unwrap();
        got.extend_from_slice(&rest);
        assert_eq!(got, data);
        let mut resumed = Vec::new();
        Inflater::resume(file, &cp).read_to_end(&mut resumed).unwrap();
        assert_eq!(resumed, data[1_000_003..]);
    }

    #[test]
    fn several_members_and_trailing_zeros() {
        let (a, b) = (data(70_000), data(5_000));
        let (fa, _) = gzip_file(&a, &["-c"]);
        let (fb, _) = gzip_file(&b, &["-c"]);
        let mut bytes = std::fs::read(fa.path()).unwrap();
        bytes.extend(std::fs::read(fb.path()).unwrap());
        bytes.extend([0u8; 100]);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        let mut got = Vec::new();
        Inflater::from_start(Arc::new(File::open(f.path()).unwrap()))
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, [a, b].concat());
    }

    #[test]
    fn truncated_and_corrupt_streams_fail() {
        let data = data(200_000);
        let (f, _) = gzip_file(&data, &["-c"]);
        let whole = std::fs::read(f.path()).unwrap();
        let read = |bytes: &[u8]| {
            let mut t = tempfile::NamedTempFile::new().unwrap();
            t.write_all(bytes).unwrap();
            let mut out = Vec::new();
            Inflater::from_start(Arc::new(File::open(t.path()).unwrap()))
                .read_to_end(&mut out)
                .map(|_| out)
        };
        for cut in [5, 100, whole.len() / 2, whole.len() - 4] {
            let err = read(&whole[..cut]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {err}");
        }
        let mut crc = whole.clone();
        let n = crc.len();
        crc[n - 8] ^= 1;
        assert_eq!(read(&crc).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut garbage = whole.clone();
        garbage.extend(b"junk");
        assert_eq!(read(&garbage).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
