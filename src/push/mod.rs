//! The push engine: from an OCI image layout to a registry with `docker push` semantics.
//!
//! A `Source` (a layout) gives content; the image `graph` reads each manifest and index of it
//! once; `select` picks the entries and tags (for a mirror, `bundle` sends each named entry
//! to its own repository), `resolve` the platform or the index fallback, `plan` lists the
//! content children first, and `run` pushes it into one `Destination` per repository (all
//! of one registry): blobs, then manifests and indexes, then tags. `report` is what comes
//! out. The engine never writes the source; the only file it may write is the sources file,
//! after a successful push.

mod attach;
pub mod bundle;
pub mod destination;
mod error;
pub mod graph;
pub mod plan;
pub mod progress;
pub mod referrers;
pub mod report;
pub mod resolve;
mod run;
pub mod select;
pub mod sources;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use error::{Error, ErrorClass, Stage};
pub use progress::{Event, Progress};
pub use report::{BlobOutcome, PushReport};

use destination::{Destination, RegistryRepository};
use futures_util::{StreamExt, TryStreamExt, stream};
use graph::Graph;
use select::Destined;

use crate::auth::Credential;
use crate::platform::Platform;
use crate::reference::PushTarget;
use crate::registry::{ConnectOptions, RegistryClient};
use crate::shutdown::Shutdown;

/// Uploads in flight at once unless told otherwise. Measured on a 2-core machine against
/// distribution 2.8: 4 streams reach the registry's CPU limit; more only add contention.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 4;

/// Everything a push needs.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The OCI image layout: a directory, or a tar archive of one (plain or gzip).
    pub layout: PathBuf,
    /// One repository, or (`--mirror`) a registry and prefix for every named image.
    pub target: PushTarget,
    /// A tag (`org.opencontainers.image.ref.name`) or digest in the layout.
    pub reference: Option<String>,
    /// `os/arch[/variant]`: push only this platform's manifest of an index.
    pub platform: Option<Platform>,
    /// The platform preferred by the index fallback (default: this machine's).
    pub host_platform: Option<Platform>,
    /// Extra repositories (on the target registry) to mount blobs from.
    pub mount_from: Vec<String>,
    /// Known blob locations; extended with the target after a successful push.
    pub sources: Option<PathBuf>,
    /// More known blob locations, read-only (the operator hands these to its workers).
    pub known_sources: sources::SourceMap,
    pub max_concurrent_uploads: usize,
    /// Whether the referrers of what is pushed (signatures, attestations, SBOMs in the
    /// layout) are pushed too.
    pub referrers: referrers::Policy,
    pub credential: Credential,
    pub connect: ConnectOptions,
}

/// Pushes the layout to the target and returns what happened. A stop requested on `stop`
/// (a signal) ends the push at once with [`Error::Terminated`]: requests in flight are
/// dropped, nothing more is started, and above all no tag PUT starts after it.
pub async fn push(
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
    stop: &Shutdown,
) -> Result<PushReport, Error> {
    let started = Instant::now();
    if opts.max_concurrent_uploads == 0 {
        return Err(Error::InvalidOption {
            option: "--max-concurrent-uploads",
            reason: "must be at least 1".into(),
        });
    }
    let (graph, selected, candidates) =
        until_stopped(stop, Stage::Preparing, read_source(opts)).await?;
    let client = until_stopped(stop, Stage::Preparing, connect(opts, &selected, &progress)).await?;
    let destinations: Vec<RegistryRepository> = selected
        .iter()
        .map(|d| RegistryRepository { client: &client, target: &d.target })
        .collect();
    let mut report =
        execute(opts, &graph, &selected, &destinations, &candidates, progress, stop).await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The push once the source is read and the registry reached: each repository's plan, then
/// the blobs, manifests and tags of all of them, the report, and the sources file.
async fn execute<D: Destination>(
    opts: &PushOptions,
    graph: &Arc<Graph>,
    selected: &[Destined],
    destinations: &[D],
    candidates: &sources::MountCandidates,
    progress: Arc<dyn Progress>,
    stop: &Shutdown,
) -> Result<PushReport, Error> {
    let mut repositories = Vec::with_capacity(selected.len());
    for (destined, destination) in selected.iter().zip(destinations) {
        let candidates = candidates.for_repository(&destined.target.repository);
        let plan = until_stopped(
            stop,
            Stage::Preparing,
            plan(opts, graph, destined.roots.clone(), destination, &candidates, &progress),
        )
        .await?;
        repositories.push(run::Repository { destination, plan, candidates });
    }
    let mirror = matches!(opts.target, PushTarget::Mirror(_));
    let mut runner =
        run::Runner::new(&repositories, graph, progress.clone(), opts.max_concurrent_uploads);
    runner.qualified = mirror;
    let blobs = until_stopped(stop, Stage::Blobs, runner.blobs()).await?;
    let manifests = until_stopped(stop, Stage::Manifests, runner.manifests()).await?;
    let tags = runner.tags(stop).await?;
    let attached =
        attach_referrers(opts, graph, selected, &repositories, &progress, mirror, stop).await?;
    let blobs = per_repository(blobs, attached.blobs);
    let manifests = per_repository(manifests, attached.manifests);
    // Every blob each repository now holds, the referrers' included, for the sources file.
    let held: Vec<(String, Vec<_>)> = repositories
        .iter()
        .zip(&blobs)
        .map(|(r, b)| (r.destination.name(), b.iter().map(|x| x.digest.clone()).collect()))
        .collect();
    let mut report = assemble(&opts.target, &repositories, blobs, manifests, tags);
    report.referrers = attached.referrers;
    report.referrers_left_out = attached.left_out;
    report.recount();
    if let Some(path) = opts.sources.clone() {
        tokio::task::spawn_blocking(move || sources::record(&path, &held))
            .await
            .expect("recording sources does not panic")?;
    }
    Ok(report)
}

/// Each repository's entries of `first`, then its entries of `then` (which may have none).
fn per_repository<T>(first: Vec<Vec<T>>, then: Vec<Vec<T>>) -> Vec<Vec<T>> {
    let mut then = then.into_iter();
    first
        .into_iter()
        .map(|mut a| {
            a.extend(then.next().unwrap_or_default());
            a
        })
        .collect()
}

/// Pushes the referrers of what each repository received (unless `--referrers none`).
async fn attach_referrers<D: Destination>(
    opts: &PushOptions,
    graph: &Arc<Graph>,
    selected: &[Destined],
    repositories: &[run::Repository<'_, D>],
    progress: &Arc<dyn Progress>,
    mirror: bool,
    stop: &Shutdown,
) -> Result<attach::Attached, Error> {
    if opts.referrers == referrers::Policy::None {
        return Ok(attach::Attached::default());
    }
    let mut pushed = Vec::with_capacity(repositories.len());
    for (destined, repo) in selected.iter().zip(repositories) {
        let manifests = repo.plan.manifests.iter().map(|m| m.desc.digest.clone()).collect();
        let entries: Vec<_> = destined.roots.iter().map(|(_, d)| d.clone()).collect();
        let related = graph
            .off_thread(move |g| Ok::<_, Error>(g.closure(&entries)?.named))
            .await?
            .into_iter()
            .map(|d| d.digest)
            .collect();
        pushed.push(attach::Pushed { manifests, related });
    }
    let cx = attach::Context {
        graph,
        progress: progress.clone(),
        max_concurrent_uploads: opts.max_concurrent_uploads,
        qualified: mirror,
        stop,
    };
    attach::attach(&cx, repositories, pushed).await
}

/// The report of a finished push: the first image's digest, size and media type; for one
/// repository its tags, blobs and manifests; for a mirror every image, and every
/// repository's blobs and manifests, each named with its repository. Totals across all.
fn assemble<D: Destination>(
    target: &PushTarget,
    repositories: &[run::Repository<D>],
    blobs: Vec<Vec<report::BlobReport>>,
    manifests: Vec<Vec<report::ManifestReport>>,
    tags: Vec<Vec<report::TagReport>>,
) -> PushReport {
    let mut report = PushReport::new(target.to_string(), target.repository_name());
    let roots = || repositories.iter().flat_map(|r| &r.plan.roots);
    if let Some(first) = roots().next() {
        report.digest = Some(first.desc.digest.clone());
        report.size = Some(first.desc.size);
        report.media_type = Some(first.desc.media_type.clone());
    }
    report.manifest_pushed_instead_of_index = roots().find_map(|r| r.fallback.clone());
    if let PushTarget::Repository(_) = target {
        report.tags = tags.into_iter().flatten().collect();
        report.blobs = blobs.into_iter().flatten().collect();
        report.manifests = manifests.into_iter().flatten().collect();
        report.recount();
        return report;
    }
    let per_repository = repositories.iter().zip(blobs).zip(manifests).zip(tags);
    for (((repo, blobs), manifests), tags) in per_repository {
        let name = repo.destination.name();
        for root in &repo.plan.roots {
            let tagged = tags.iter().find(|t| Some(&t.tag) == root.tag.as_ref());
            report.images.push(report::ImageReport {
                repository: name.clone(),
                tag: tagged.map(|t| t.tag.clone()),
                digest: root.desc.digest.clone(),
                size: root.desc.size,
                media_type: root.desc.media_type.clone(),
                manifest_pushed_instead_of_index: root.fallback.clone(),
            });
        }
        let named = Some(name);
        report.blobs.extend(
            blobs.into_iter().map(|b| report::BlobReport { repository: named.clone(), ..b }),
        );
        report.manifests.extend(
            manifests
                .into_iter()
                .map(|m| report::ManifestReport { repository: named.clone(), ..m }),
        );
    }
    report.recount();
    report
}

/// `work`, unless a stop is requested first: then `work` is dropped (with its requests) and
/// the push ends as stopped at `stage`.
async fn until_stopped<T>(
    stop: &Shutdown,
    stage: Stage,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        signal = stop.wait() => Err(Error::Terminated { signal, stage }),
        result = work => result,
    }
}

/// What a push reads from files before the registry is contacted: the source's image graph,
/// the entries the push takes, and the mount candidates (the sources file). Off the runtime's
/// threads: it reads and hashes files.
async fn read_source(opts: &PushOptions) -> Result<SourceRead, Error> {
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || {
        let source = crate::source::open(&opts.layout)?;
        let graph = Arc::new(Graph::open(source)?);
        let selected = select::select(&graph, &opts.target, opts.reference.as_deref())?;
        Ok((graph, selected, mount_candidates(&opts)?))
    })
    .await
    .expect("reading the source does not panic")
}

/// What `read_source` gives.
type SourceRead = (Arc<Graph>, Vec<Destined>, sources::MountCandidates);

fn mount_candidates(opts: &PushOptions) -> Result<sources::MountCandidates, Error> {
    let mut source_map = match &opts.sources {
        Some(path) => sources::load(path)?,
        None => sources::SourceMap::new(),
    };
    for (digest, names) in &opts.known_sources {
        source_map.entry(digest.clone()).or_default().extend(names.iter().cloned());
    }
    Ok(sources::MountCandidates::for_registry(opts.target.registry(), &opts.mount_from, source_map))
}

/// Repositories whose push access is checked at once.
const ACCESS_CHECKS: usize = 8;

/// The registry client for every repository of the push, its retries reported as progress,
/// with push access checked (a wrong password fails before anything is read or sent).
async fn connect(
    opts: &PushOptions,
    selected: &[Destined],
    progress: &Arc<dyn Progress>,
) -> Result<RegistryClient, Error> {
    let target = &opts.target;
    let mut client = RegistryClient::for_repositories(
        target.registry(),
        target.endpoint(),
        selected.iter().map(|d| d.target.repository.clone()),
        opts.credential.clone(),
        &opts.connect,
    )?;
    // Each retry is said once: in the output when it shows them, else in the log.
    let retry_progress = progress.clone();
    client.set_retry_observer(Arc::new(move |n: crate::registry::retry::RetryNotice| {
        if !retry_progress.shows_retries() {
            let delay_ms = n.delay.as_millis() as u64;
            tracing::warn!(what = %n.what, attempt = n.attempt, max_attempts = n.max_attempts, delay_ms, error = %n.error, "retrying");
            return;
        }
        retry_progress.event(Event::Retry {
            what: n.what,
            attempt: n.attempt,
            max_attempts: n.max_attempts,
            delay: n.delay,
            error: n.error,
        })
    }));
    stream::iter(selected)
        .map(|d| client.check_push_access(&d.target.repository))
        .buffer_unordered(ACCESS_CHECKS)
        .try_collect::<()>()
        .await?;
    progress.event(match target {
        PushTarget::Repository(t) => Event::Start { repository: t.repository_name() },
        PushTarget::Mirror(m) => {
            Event::StartMirror { root: m.to_string(), repositories: selected.len() }
        }
    });
    Ok(client)
}

/// What is pushed into one repository: each chosen entry through `--platform` or the index
/// fallback, then the plan, with no content missing everywhere.
async fn plan<D: Destination>(
    opts: &PushOptions,
    graph: &Arc<Graph>,
    selected: Vec<(Option<String>, crate::oci::Descriptor)>,
    destination: &D,
    candidates: &sources::MountCandidates,
    progress: &Arc<dyn Progress>,
) -> Result<plan::Plan, Error> {
    let host = opts.host_platform.clone().unwrap_or_else(Platform::host);
    let mut avail = resolve::Availability::new(graph, destination, candidates);
    let mut roots = Vec::new();
    for (tag, desc) in selected {
        let choice = resolve::Choice {
            wanted: opts.platform.as_ref(),
            host: &host,
            // A mirror pushes an entry named by digest (`…@sha256:`) by that digest.
            by_digest: match &opts.target {
                PushTarget::Repository(t) => t.digest.is_some(),
                PushTarget::Mirror(_) => tag.is_none(),
            },
        };
        let root = resolve::resolve_root(&mut avail, tag, desc, &choice).await?;
        if let Some(f) = &root.fallback {
            progress.event(Event::Fallback {
                index: f.original_index.digest.clone(),
                manifest: f.selected_manifest.digest.clone(),
                platform: f
                    .selected_manifest
                    .platform
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown".into()),
            });
        }
        roots.push(root);
    }
    let plan = graph.off_thread(move |g| plan::Plan::build(g, roots)).await?;
    let missing =
        avail.missing(&plan.roots.iter().map(|r| r.desc.clone()).collect::<Vec<_>>()).await?;
    if !missing.is_empty() {
        return Err(Error::ContentMissing { digests: missing });
    }
    Ok(plan)
}

/// The report written when a push fails: target, error reason, message and exit code.
pub fn failure_report(
    target: &str,
    repository: &str,
    error: &Error,
    duration_ms: u64,
) -> PushReport {
    let mut report = PushReport::new(target.to_string(), repository.to_string());
    report.duration_ms = duration_ms;
    report.error = Some(report::ReportError {
        reason: error.reason().to_string(),
        message: error.to_string(),
        exit_code: error.class().exit_code(),
        transient: error.is_transient(),
        retry_after_seconds: error
            .retry_after()
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
    });
    report
}

#[cfg(test)]
mod tests;
