//! What a push shows while it runs: docker-like lines (`<id>: Pushed`), progress bars on a
//! terminal, or nothing. The engine only emits `Event`s; sinks decide how they look.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Digest;
use crate::worker::WorkerLine;

/// One state change of a push.
#[derive(Debug, Clone)]
pub enum Event {
    /// The push starts; `repository` is `registry/repository`.
    Start {
        repository: String,
    },
    /// A mirror starts: `repositories` repositories under `root` (`registry[/prefix]`).
    StartMirror {
        root: String,
        repositories: usize,
    },
    Blob {
        digest: Digest,
        size: u64,
        state: BlobState,
    },
    /// An index was only partly in the layout; one manifest is pushed instead.
    Fallback {
        index: Digest,
        manifest: Digest,
        platform: String,
    },
    /// A tag now points at `digest`; `repository` (`registry/repository`) is set in a mirror.
    Tagged {
        repository: Option<String>,
        tag: String,
        digest: Digest,
        size: u64,
    },
    /// The image was pushed by digest (no tag); `repository` is set in a mirror.
    PushedDigest {
        repository: Option<String>,
        digest: Digest,
        size: u64,
    },
    /// A referrer of pushed content is in the registry; `repository` is set in a mirror.
    Referrer {
        repository: Option<String>,
        digest: Digest,
        artifact_type: Option<String>,
        subject: Digest,
        known_by: crate::push::referrers::KnownBy,
    },
    /// A request failed transiently and will be tried again.
    Retry {
        what: String,
        attempt: u32,
        max_attempts: u32,
        delay: Duration,
        error: String,
    },
}

/// `Retrying HEAD blob ... in 1.2s (attempt 2 of 6): <error>`
pub fn retry_line(
    what: &str,
    attempt: u32,
    max_attempts: u32,
    delay: Duration,
    error: &str,
) -> String {
    format!(
        "Retrying {what} in {:.1}s (attempt {} of {max_attempts}): {error}",
        delay.as_secs_f64(),
        attempt + 1
    )
}

#[derive(Debug, Clone, PartialEq)]
pub enum BlobState {
    Preparing,
    Waiting,
    Pushing { done: u64 },
    Pushed,
    Mounted { from: String },
    Exists,
}

/// What a sink prints for the events every sink shows as a line (all but blob states and
/// retries, which each shows its own way).
fn status_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::Start { repository } => format!("The push refers to repository [{repository}]"),
        Event::StartMirror { root, repositories } => {
            format!("The push refers to {repositories} repositories under [{root}]")
        }
        Event::Fallback { index, manifest, platform } => format!(
            "index {index} is only partly in the layout; pushing the {platform} manifest {manifest} instead"
        ),
        Event::Tagged { repository: None, tag, digest, size } => {
            format!("{tag}: digest: {digest} size: {size}")
        }
        Event::Tagged { repository: Some(r), tag, digest, size } => {
            format!("{r}:{tag}: digest: {digest} size: {size}")
        }
        Event::PushedDigest { repository: None, digest, size } => {
            format!("digest: {digest} size: {size}")
        }
        Event::PushedDigest { repository: Some(r), digest, size } => {
            format!("{r}: digest: {digest} size: {size}")
        }
        Event::Retry { what, attempt, max_attempts, delay, error } => {
            retry_line(what, *attempt, *max_attempts, *delay, error)
        }
        Event::Referrer { repository, digest, artifact_type, subject, known_by } => referrer_line(
            repository.as_deref(),
            digest,
            artifact_type.as_deref(),
            subject,
            *known_by,
        ),
        Event::Blob { .. } => return None,
    })
}

/// `referrer sha256:… (application/vnd.dev.cosign.simplesigning.v1+json) of sha256:…: in
/// the referrers tag sha256-…`
fn referrer_line(
    repository: Option<&str>,
    digest: &Digest,
    artifact_type: Option<&str>,
    subject: &Digest,
    known_by: crate::push::referrers::KnownBy,
) -> String {
    use crate::push::referrers::{KnownBy, schema_tag};
    let how = match known_by {
        KnownBy::Api => "listed by the registry's referrers API".to_string(),
        KnownBy::TagSchema => format!("listed in the referrers tag {}", schema_tag(subject)),
        KnownBy::CosignTag => "under cosign's tag".to_string(),
    };
    let at = repository.map(|r| format!("{r}: ")).unwrap_or_default();
    let kind = artifact_type.map(|t| format!(" ({t})")).unwrap_or_default();
    format!("{at}referrer {digest}{kind} of {subject}: {how}")
}

/// Receives push events. Must be cheap: `Pushing` arrives for every chunk sent.
pub trait Progress: Send + Sync {
    fn event(&self, event: Event);
    /// Whether `Event::Retry` shows (else a retry is said in the log instead).
    fn shows_retries(&self) -> bool {
        true
    }
}

/// Shows nothing.
pub struct Silent;
impl Progress for Silent {
    fn event(&self, _: Event) {}
    fn shows_retries(&self) -> bool {
        false
    }
}

/// The 12-hex short id docker shows for a blob.
pub fn short_id(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// Docker's non-terminal output: one line per state change, no byte counts.
pub struct Lines<W: Write + Send> {
    out: Mutex<W>,
    pushing_shown: Mutex<std::collections::HashSet<Digest>>,
}

impl<W: Write + Send> Lines<W> {
    pub fn new(out: W) -> Self {
        Lines { out: Mutex::new(out), pushing_shown: Mutex::default() }
    }
}

impl<W: Write + Send> Progress for Lines<W> {
    fn event(&self, event: Event) {
        let line = match event {
            Event::Blob { digest, state, .. } => {
                let id = short_id(&digest);
                match state {
                    BlobState::Preparing => format!("{id}: Preparing"),
                    BlobState::Waiting => format!("{id}: Waiting"),
                    BlobState::Pushing { .. } => {
                        if !self.pushing_shown.lock().unwrap().insert(digest.clone()) {
                            return;
                        }
                        format!("{id}: Pushing")
                    }
                    BlobState::Pushed => format!("{id}: Pushed"),
                    BlobState::Mounted { from } => format!("{id}: Mounted from {from}"),
                    BlobState::Exists => format!("{id}: Layer already exists"),
                }
            }
            other => status_line(&other).expect("a status line"),
        };
        let mut out = self.out.lock().unwrap();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Terminal output: a bar per blob, redrawn at a bounded rate, with the same final lines.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
        Bars { multi, bars: Mutex::default() }
    }

    fn bar(&self, digest: &Digest, size: u64) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap();
        bars.entry(digest.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: {msg:<22} {bar:30} {bytes}/{total_bytes}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(short_id(digest).to_string());
                bar
            })
            .clone()
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Bars {
    fn event(&self, event: Event) {
        match event {
            Event::Blob { digest, size, state } => {
                let bar = self.bar(&digest, size);
                match state {
                    BlobState::Preparing => bar.set_message("Preparing"),
                    BlobState::Waiting => bar.set_message("Waiting"),
                    BlobState::Pushing { done } => {
                        bar.set_message("Pushing");
                        bar.set_position(done);
                    }
                    BlobState::Pushed => bar.finish_with_message("Pushed"),
                    BlobState::Mounted { from } => {
                        bar.finish_with_message(format!("Mounted from {from}"))
                    }
                    BlobState::Exists => bar.finish_with_message("Layer already exists"),
                }
            }
            other => {
                let _ = self.multi.println(status_line(&other).expect("a status line"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_docker() {
        let d = Digest::sha256(b"layer");
        let sink = Lines::new(Vec::new());
        sink.event(Event::Start { repository: "127.0.0.1:5000/team/app".into() });
        for state in [
            BlobState::Preparing,
            BlobState::Pushing { done: 1 },
            BlobState::Pushing { done: 2 },
            BlobState::Pushed,
            BlobState::Mounted { from: "team/base".into() },
            BlobState::Exists,
        ] {
            sink.event(Event::Blob { digest: d.clone(), size: 5, state });
        }
        sink.event(Event::Tagged {
            repository: None,
            tag: "v1".into(),
            digest: d.clone(),
            size: 5,
        });
        let text = String::from_utf8(sink.out.into_inner().unwrap()).unwrap();
        let id = &d.hex()[..12];
        assert_eq!(
            text,
            format!(
                "The push refers to repository [127.0.0.1:5000/team/app]\n{id}: Preparing\n{id}: Pushing\n{id}: Pushed\n{id}: Mounted from team/base\n{id}: Layer already exists\nv1: digest: {d} size: 5\n"
            )
        );
        // A mirror names its repositories.
        let sink = Lines::new(Vec::new());
        sink.event(Event::StartMirror { root: "reg:5000/m".into(), repositories: 2 });
        let repository = Some("reg:5000/m/library/a".to_string());
        sink.event(Event::Tagged {
            repository: repository.clone(),
            tag: "v1".into(),
            digest: d.clone(),
            size: 5,
        });
        sink.event(Event::PushedDigest { repository, digest: d.clone(), size: 5 });
        let text = String::from_utf8(sink.out.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                "The push refers to 2 repositories under [reg:5000/m]\nreg:5000/m/library/a:v1: digest: {d} size: 5\nreg:5000/m/library/a: digest: {d} size: 5\n"
            )
        );
    }
}

/// Machine-readable progress for the operator: JSON lines on `out`, at most one
/// `{"event":"progress",...}` line per `interval` (plus one when the push ends), so the
/// controller can read movement from the worker's log without a flood.
pub struct JsonLines<W: Write + Send> {
    out: Mutex<W>,
    state: Mutex<JsonState>,
    interval: Duration,
}

#[derive(Default)]
struct JsonState {
    sizes: HashMap<Digest, u64>,
    in_flight: HashMap<Digest, u64>,
    /// Blobs in their (first) repository: a mirror mounts a blob into more repositories
    /// after that, which moves nothing.
    finished: std::collections::HashSet<Digest>,
    finished_bytes: u64,
    last: Option<Instant>,
}

/// One `progress` line of `--progress json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressLine {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub blobs_done: u64,
    pub blobs_total: u64,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W, interval: Duration) -> Self {
        JsonLines { out: Mutex::new(out), state: Mutex::default(), interval }
    }

    fn snapshot(s: &JsonState) -> ProgressLine {
        ProgressLine {
            bytes_done: s.finished_bytes + s.in_flight.values().sum::<u64>(),
            bytes_total: s.sizes.values().sum(),
            blobs_done: s.finished.len() as u64,
            blobs_total: s.sizes.len() as u64,
        }
    }

    fn write(&self, line: WorkerLine) {
        let mut out = self.out.lock().unwrap();
        let _ = writeln!(out, "{}", line.to_line());
        let _ = out.flush();
    }

    /// Writes the last progress and the final report.
    pub fn report(&self, report: &crate::push::PushReport) {
        let progress = {
            let s = self.state.lock().unwrap();
            Self::snapshot(&s)
        };
        self.write(WorkerLine::Progress { progress });
        self.write(WorkerLine::Report { report: Box::new(report.clone()) });
    }
}

impl<W: Write + Send> Progress for JsonLines<W> {
    fn event(&self, event: Event) {
        if let Event::Retry { what, attempt, max_attempts, delay, error } = &event {
            self.write(WorkerLine::Retry {
                what: what.clone(),
                attempt: *attempt,
                max_attempts: *max_attempts,
                delay_ms: delay.as_millis() as u64,
                error: error.clone(),
            });
            return;
        }
        let line = {
            let mut s = self.state.lock().unwrap();
            if let Event::Blob { digest, size, state } = &event {
                match state {
                    BlobState::Preparing => {
                        s.sizes.insert(digest.clone(), *size);
                    }
                    BlobState::Pushing { done } => {
                        s.in_flight.insert(digest.clone(), *done);
                    }
                    BlobState::Pushed | BlobState::Mounted { .. } | BlobState::Exists => {
                        s.in_flight.remove(digest);
                        if s.finished.insert(digest.clone()) {
                            s.finished_bytes += size;
                        }
                    }
                    BlobState::Waiting => {}
                }
            }
            let due = s.last.is_none_or(|t| t.elapsed() >= self.interval);
            if !due {
                return;
            }
            s.last = Some(Instant::now());
            Self::snapshot(&s)
        };
        self.write(WorkerLine::Progress { progress: line });
    }
}
