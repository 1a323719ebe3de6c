//! `imagepush push`: flags, credentials, progress, report file and exit codes.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::auth::{self, Credential, Secret};
use crate::platform::Platform;
use crate::push::progress::{Bars, JsonLines, Lines, Progress, Silent};
use crate::push::{self, DEFAULT_MAX_CONCURRENT_UPLOADS, Error, PushOptions, PushReport};
use crate::reference::PushTarget;
use crate::registry::ConnectOptions;
use crate::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Directory holding an OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    pub layout: PathBuf,
    /// Where to push: `registry[:port]/repository[:tag]` or `...@sha256:<hex>`.
    /// Without a tag and without --ref, every tag of the layout is pushed.
    /// With --mirror: `registry[:port][/prefix]`, no tag or digest.
    pub target: String,
    /// The layout entry to push: a full name (org.opencontainers.image.ref.name or
    /// io.containerd.image.name, such as docker.io/library/app:v1), a tag, or a digest.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Push every image of the layout to its own repository under TARGET
    /// (`registry[:port][/prefix]`), named by its full name (io.containerd.image.name, or an
    /// org.opencontainers.image.ref.name such as docker.io/library/nginx:1.27 →
    /// TARGET/library/nginx:1.27). Each distinct blob is uploaded once and mounted into the
    /// other repositories that need it.
    #[arg(long, conflicts_with = "reference")]
    pub mirror: bool,
    /// Whether the layout's referrers of what is pushed (signatures, attestations, SBOMs:
    /// manifests whose `subject` is pushed, cosign's `sha256-<hex>.sig` tags) are pushed too,
    /// after the tags.
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = ReferrersMode::All)]
    pub referrers: ReferrersMode,
    /// Refuse a LAYOUT that, with symlinks resolved, is not inside this directory (the
    /// operator's workers pass their volume's mount point, so a path cannot escape it).
    #[arg(long, value_name = "DIR")]
    pub layout_root: Option<PathBuf>,
    /// Push only this platform's manifest of an index (`os/arch[/variant]`).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Platform preferred when an index is only partly in the layout (default: this machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub host_platform: Option<String>,
    /// A repository on the target registry to mount blobs from (repeatable).
    #[arg(long, value_name = "REPO")]
    pub mount_from: Vec<String>,
    /// JSON file of known blob locations (digest -> ["registry/repository", ...]); a
    /// successful push adds the target to it.
    #[arg(long, value_name = "FILE")]
    pub sources: Option<PathBuf>,
    /// Known blob locations as inline JSON (same shape as --sources), read-only.
    #[arg(long, value_name = "JSON", env = "IMAGEPUSH_KNOWN_SOURCES", hide_env_values = true)]
    pub known_sources: Option<String>,
    /// Also write a compact report (no per-blob list, at most 4 KiB) to this file, e.g.
    /// /dev/termination-log in a Kubernetes worker.
    #[arg(long, value_name = "FILE")]
    pub termination_message: Option<PathBuf>,
    /// Blob uploads in flight at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT_UPLOADS)]
    pub max_concurrent_uploads: usize,
    /// Docker config.json, or a mounted Kubernetes Secret directory (.dockerconfigjson or
    /// username/password). Default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json.
    #[arg(long, value_name = "PATH")]
    pub registry_config: Option<PathBuf>,
    /// Username for basic authentication (the password comes from --password-stdin).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password (or token) from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Talk plain HTTP to the target registry.
    #[arg(long)]
    pub plain_http: bool,
    /// Trust the CA certificates in this PEM file (in addition to the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the registry's TLS certificate.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// Retries of a request that failed transiently (network, 408, 429, 5xx).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Stop retrying a request this many seconds after its first try.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub retry_max_time: u64,
    /// Abandon (and retry) an upload whose data stops moving for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub stall_timeout: u64,
    /// Write a JSON push report to this file (also on failure).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print only the pushed references (`repository:tag@digest`), no progress.
    #[arg(long, short)]
    pub quiet: bool,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReferrersMode {
    /// Every referrer of pushed content, recursively.
    All,
    /// None.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Progress bars.
    Bars,
    /// One line per state change.
    Plain,
    /// Nothing.
    None,
    /// JSON lines for machines: throttled `progress` events and the final `report`.
    Json,
}

impl PushArgs {
    fn json_mode(&self) -> bool {
        self.progress == ProgressMode::Json
    }
}

fn credential(args: &PushArgs, registry: &str) -> Result<Credential, Error> {
    if let Some(username) = &args.username {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password).map_err(|e| Error::InvalidOption {
            option: "--password-stdin",
            reason: format!("cannot read standard input: {e}"),
        })?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            return Err(Error::InvalidOption {
                option: "--password-stdin",
                reason: "standard input was empty".into(),
            });
        }
        return Ok(Credential::Basic {
            username: username.clone(),
            password: Secret::new(password),
        });
    }
    if let Some(path) = &args.registry_config {
        return Ok(auth::from_path(path, registry)?);
    }
    match auth::default_docker_config_path() {
        Some(path) if path.is_file() => Ok(auth::from_docker_config(&path, registry)?),
        _ => Ok(Credential::Anonymous),
    }
}

fn parse_platform(value: &Option<String>) -> Result<Option<Platform>, Error> {
    value.as_deref().map(|p| p.parse::<Platform>()).transpose().map_err(Error::from)
}

/// `layout`, with symlinks resolved, must lie inside `root`.
fn check_layout_root(layout: &Path, root: &Path) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidOption { option: "--layout-root", reason };
    let root_real =
        std::fs::canonicalize(root).map_err(|e| invalid(format!("{}: {e}", root.display())))?;
    // Where the path leads, even when it dangles: in a worker only the root is mounted, so a
    // symlink out of it points at nothing there, and must still be called what it is.
    let absolute = std::path::absolute(layout)
        .map_err(|e| invalid(format!("layout {}: {e}", layout.display())))?;
    let layout_real = crate::layout::resolve_lexically(&absolute)
        .map_err(|e| invalid(format!("layout {}: {e}", layout.display())))?;
    if !layout_real.starts_with(&root_real) {
        return Err(Error::LayoutOutsideRoot {
            layout: layout.to_path_buf(),
            resolved: layout_real,
            root: root.to_path_buf(),
        });
    }
    Ok(())
}

fn options(args: &PushArgs, target: PushTarget) -> Result<PushOptions, Error> {
    if let Some(root) = &args.layout_root {
        check_layout_root(&args.layout, root)?;
    }
    let credential = credential(args, target.registry())?;
    let known_sources = match args.known_sources.as_deref().map(str::trim) {
        None | Some("") => Default::default(),
        Some(json) => serde_json::from_str(json).map_err(|e| Error::InvalidOption {
            option: "--known-sources",
            reason: format!("expected a JSON object mapping blob digests to lists of registry/repository names: {e}"),
        })?,
    };
    Ok(PushOptions {
        layout: args.layout.clone(),
        reference: args.reference.clone(),
        platform: parse_platform(&args.platform)?,
        host_platform: parse_platform(&args.host_platform)?,
        mount_from: args.mount_from.clone(),
        sources: args.sources.clone(),
        known_sources,
        max_concurrent_uploads: args.max_concurrent_uploads,
        referrers: match args.referrers {
            ReferrersMode::All => push::referrers::Policy::All,
            ReferrersMode::None => push::referrers::Policy::None,
        },
        credential,
        connect: ConnectOptions {
            plain_http: args.plain_http,
            ca_file: args.ca_file.clone(),
            insecure_skip_tls_verify: args.insecure_skip_tls_verify,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            retry: crate::registry::retry::RetryPolicy {
                max_attempts: args.retries.saturating_add(1),
                max_elapsed: Duration::from_secs(args.retry_max_time),
                ..Default::default()
            },
            stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
        },
        target,
    })
}

fn progress_sink(
    args: &PushArgs,
    json: &Option<Arc<JsonLines<std::io::Stdout>>>,
) -> Arc<dyn Progress> {
    if let Some(j) = json {
        return j.clone();
    }
    if args.quiet {
        return Arc::new(Silent);
    }
    match args.progress {
        ProgressMode::Json => Arc::new(Silent),
        ProgressMode::None => Arc::new(Silent),
        ProgressMode::Plain => Arc::new(Lines::new(std::io::stdout())),
        ProgressMode::Bars => Arc::new(Bars::new()),
        ProgressMode::Auto if std::io::stdout().is_terminal() => Arc::new(Bars::new()),
        ProgressMode::Auto => Arc::new(Lines::new(std::io::stdout())),
    }
}

/// Writes `report` to `path` atomically (temporary file, then rename).
pub fn write_report(path: &Path, report: &PushReport) -> std::io::Result<()> {
    crate::atomic_file::write_json_file(
        path,
        &serde_json::to_vec_pretty(report).expect("a report serializes"),
    )
}

fn summary(report: &PushReport) -> String {
    let t = &report.totals;
    let images = match report.images.len() {
        0 => String::new(),
        n => {
            let mut repositories: Vec<&str> =
                report.images.iter().map(|i| i.repository.as_str()).collect();
            repositories.dedup();
            format!("pushed {n} images to {} repositories; ", repositories.len())
        }
    };
    format!(
        "{images}pushed {} blobs ({} uploaded, {} mounted, {} already existed), {} bytes uploaded in {:.1}s",
        report.blobs.len(),
        t.uploaded,
        t.mounted,
        t.existed,
        t.bytes_uploaded,
        report.duration_ms as f64 / 1000.0
    )
}

/// Runs `imagepush push`; returns the process exit code. A stop requested on `stop` (SIGTERM,
/// SIGINT) cancels the push; the reports say so and the exit code is 128 + the signal.
pub async fn run(args: PushArgs, stop: Shutdown) -> i32 {
    let started = Instant::now();
    let json = (args.progress == ProgressMode::Json)
        .then(|| Arc::new(JsonLines::new(std::io::stdout(), Duration::from_secs(1))));
    let result = match PushTarget::parse(&args.target, args.mirror) {
        Err(e) => Err((args.target.clone(), String::new(), Error::from(e))),
        Ok(target) => {
            let shown = target.to_string();
            let repo = target.repository_name();
            match options(&args, target) {
                Err(e) => Err((shown, repo, e)),
                Ok(opts) => push::push(&opts, progress_sink(&args, &json), &stop)
                    .await
                    .map_err(|e| (shown, repo, e)),
            }
        }
    };
    let report = match &result {
        Ok(report) => report.clone(),
        Err((target, repo, error)) => {
            push::failure_report(target, repo, error, started.elapsed().as_millis() as u64)
        }
    };
    if let Some(j) = &json {
        j.report(&report);
    }
    if let Some(path) = &args.termination_message
        && let Err(e) = std::fs::write(path, report.compact_json(4096))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
    }
    match result {
        Ok(report) => {
            if args.json_mode() {
                // The report line on stdout is the output.
            } else if args.quiet {
                for t in &report.tags {
                    println!("{}:{}@{}", report.repository, t.tag, t.digest);
                }
                for i in &report.images {
                    match &i.tag {
                        Some(tag) => println!("{}:{tag}@{}", i.repository, i.digest),
                        None => println!("{}@{}", i.repository, i.digest),
                    }
                }
                if report.tags.is_empty()
                    && report.images.is_empty()
                    && let Some(d) = &report.digest
                {
                    println!("{}@{d}", report.repository);
                }
            } else if args.progress != ProgressMode::None {
                println!("{}", summary(&report));
            }
            if let Some(path) = &args.report
                && let Err(e) = write_report(path, &report)
            {
                eprintln!("error: cannot write the report {}: {e}", path.display());
                return 1;
            }
            0
        }
        Err((_, _, error)) => {
            eprintln!("error: {error}");
            let code = error.class().exit_code();
            if let Some(path) = &args.report
                && let Err(e) = write_report(path, &report)
            {
                eprintln!("error: cannot write the report {}: {e}", path.display());
            }
            code
        }
    }
}
