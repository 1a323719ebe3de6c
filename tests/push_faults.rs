//! Pushing through faults between the engine and a real registry. A fault-injecting proxy
//! (`tests/common/proxy.rs`) sits between the `imagepush` binary and CNCF distribution: it
//! cuts, stalls or throttles connections, and answers chosen requests itself with scripted
//! statuses (503 bursts, 429 with `Retry-After`, a dropped upload session, a 500 storm)
//! that the registry never sees. Each push must finish byte-identical, or fail with the
//! registry-unavailable class and leave no tag behind.
//!
//! CNCF distribution 2.8 cannot resume an interrupted PATCH (its upload `_state` records the
//! offset of the last completed request, and a GET after partial data cancels the session:
//! "upload resumed at wrong offset"), so against it imagepush starts that one blob over and
//! re-sends at most the part that was cut; a request refused before it reached the registry
//! leaves an empty session, which distribution reports as `Range: 0-0` (ambiguous: zero bytes
//! or one), so that blob starts over too. Resuming from the registry's `Range` is tested
//! against a registry that keeps partial data (`src/registry/tests.rs`).

mod common;

use std::time::{Duration, Instant};

use common::proxy::{HttpFault, RequestRecord};
use common::{
    CountingProxy, Desc, LayoutBuilder, Run, TestRegistry, imagepush, report, simple_image,
};

const MIB: u64 = 1024 * 1024;

/// Request heads and small bodies (POST, GET, HEAD, the commit PUT) of one push: far less
/// than this, far more than any head, so a re-sent blob cannot hide in it.
const OVERHEAD: u64 = 64 * 1024;

/// The generous bound on a push through faults.
const PUSH_BOUND: Duration = Duration::from_secs(60);

/// The least gap between a refused request and its retry that honours `Retry-After: 1`, as
/// the proxy sees it (a little under a second, for timer rounding).
const RETRY_AFTER_1S: Duration = Duration::from_millis(990);

/// Bytes of the image: every blob and the manifest.
fn image_bytes(b: &LayoutBuilder, image: &Desc) -> u64 {
    b.blob_digests(image).iter().map(|d| b.read_blob(d).len() as u64).sum::<u64>() + image.size
}

/// `imagepush push --plain-http --progress plain <extra> <layout> <proxy>/team/app:v1`, timed.
fn push_through(
    proxy: &CountingProxy,
    layout: &std::path::Path,
    extra: &[&str],
) -> (Run, Duration) {
    let target = format!("{}/team/app:v1", proxy.host());
    let mut args = vec!["push", "--plain-http", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(layout.to_str().unwrap());
    args.push(&target);
    let started = Instant::now();
    let run = imagepush(&args);
    (run, started.elapsed())
}

/// A real registry, the proxy in front of it, and a one-image layout of `layer_sizes`.
struct Scene {
    registry: TestRegistry,
    proxy: CountingProxy,
    dir: tempfile::TempDir,
    layout: std::path::PathBuf,
    b: LayoutBuilder,
    image: Desc,
}

fn scene(layer_sizes: &[usize], seed: u64) -> Scene {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", layer_sizes, seed);
    Scene { registry, proxy, dir, layout, b, image }
}

/// Every blob and the manifest are in the registry, byte for byte, under `team/app:v1`.
async fn assert_landed(registry: &TestRegistry, b: &LayoutBuilder, image: &Desc) {
    for d in b.blob_digests(image) {
        assert_eq!(
            registry.blob("team/app", &d).await.as_deref(),
            Some(b.read_blob(&d).as_slice()),
            "{d}"
        );
    }
    let (bytes, _, digest) = registry.manifest("team/app", "v1").await.expect("tag v1");
    assert_eq!(digest, image.digest);
    assert_eq!(bytes, b.read_blob(&image.digest));
}

/// The upload session a request targets (`/v2/<repo>/blobs/uploads/<uuid>?...`).
fn upload_uuid(r: &RequestRecord) -> Option<&str> {
    let rest = &r.target[r.target.find("/blobs/uploads/")? + "/blobs/uploads/".len()..];
    let uuid = rest.split('?').next().unwrap_or("");
    (!uuid.is_empty()).then_some(uuid)
}

/// How many requests with `method` whose target contains `part` the proxy forwarded
/// (`answered` false) or answered itself (`answered` true).
fn count(requests: &[RequestRecord], method: &str, part: &str, answered: bool) -> usize {
    requests
        .iter()
        .filter(|r| {
            r.method == method && r.target.contains(part) && r.answered.is_some() == answered
        })
        .count()
}

/// Time between consecutive requests with `method` whose target contains `part`.
fn gaps(requests: &[RequestRecord], method: &str, part: &str) -> Vec<Duration> {
    let at: Vec<Duration> = requests
        .iter()
        .filter(|r| r.method == method && r.target.contains(part))
        .map(|r| r.at)
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The request log, one line each, for failure messages.
fn show(requests: &[RequestRecord]) -> String {
    requests
        .iter()
        .map(|r| {
            format!(
                "{:>7.3}s #{} {} {} {}",
                r.at.as_secs_f64(),
                r.conn,
                r.method,
                r.target.split('?').next().unwrap_or(""),
                r.answered.map(|s| format!("-> {s} (proxy)")).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn an_upload_cut_mid_blob_is_retried_and_lands_byte_identical() {
    let Scene { registry, proxy, dir, layout, b, image } = scene(&[8 * MIB as usize], 21);
    let layer = b.children(&image).1[0].clone();
    // Cut the connection once, 3 MiB into the request stream.
    proxy.cut_after(3 * MIB);
    let report_path = dir.path().join("r.json");
    let started = Instant::now();
    let run = imagepush(&[
        "--log-level",
        "info",
        "push",
        "--plain-http",
        "--progress",
        "plain",
        "--max-concurrent-uploads",
        "1",
        "--report",
        report_path.to_str().unwrap(),
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    run.ok();
    assert!(started.elapsed() < PUSH_BOUND, "{:?}", started.elapsed());
    assert_eq!(proxy.cuts(), 1, "the fault fired");
    assert!(run.stdout.contains("Retrying upload"), "{}", run.stdout);
    // Byte-identical in the registry.
    assert_eq!(registry.blob("team/app", &layer.digest).await.unwrap(), b.read_blob(&layer.digest));
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, image.digest);
    // Only the cut part was sent twice: the layer once, plus the 3 MiB before the cut.
    let sent = proxy.bytes_to_server();
    assert!(
        sent < 11 * MIB + MIB / 2,
        "sent {sent} bytes for an {}-byte layer\n{}",
        8 * MIB,
        run.stderr
    );
    assert!(run.stderr.contains("starting a new upload"), "{}", run.stderr);
    assert_eq!(report(&report_path)["totals"]["uploaded"], 2);
}

#[tokio::test]
async fn a_stalled_upload_is_abandoned_and_retried() {
    let Scene { registry, proxy, dir: _dir, layout, b, image } = scene(&[4 * MIB as usize], 22);
    let layer = b.children(&image).1[0].clone();
    // The connection stops moving 1 MiB in, without closing.
    proxy.stall_after(MIB);
    let started = std::time::Instant::now();
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--progress",
        "plain",
        "--max-concurrent-uploads",
        "1",
        "--stall-timeout",
        "2",
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    run.ok();
    assert_eq!(proxy.cuts(), 1, "the stall fired");
    assert!(run.stdout.contains("stalled"), "{}", run.stdout);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(registry.blob("team/app", &layer.digest).await.unwrap(), b.read_blob(&layer.digest));
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, image.digest);
}

#[tokio::test]
async fn random_connection_cuts_with_a_fixed_seed_still_push_byte_identical() {
    // The same seed twice, each time into a fresh registry: the same cuts, the same bytes.
    let mut figures = Vec::new();
    for _ in 0..2 {
        let Scene { registry, proxy, dir, layout, b, image } =
            scene(&[3 * MIB as usize, 2 * MIB as usize, MIB as usize, 100_000], 23);
        let image_bytes = image_bytes(&b, &image);
        // One roll per 64 KiB of a request: about one cut per 2 MiB, four at most.
        proxy.random_cuts(42, 30_000, 4);
        let report_path = dir.path().join("r.json");
        let started = Instant::now();
        let run = imagepush(&[
            "push",
            "--plain-http",
            "--progress",
            "plain",
            "--retries",
            "8",
            // One upload at a time, so the requests (and so the cuts) come in the same order.
            "--max-concurrent-uploads",
            "1",
            "--report",
            report_path.to_str().unwrap(),
            layout.to_str().unwrap(),
            &format!("{}/team/app:v1", proxy.host()),
        ]);
        let elapsed = started.elapsed();
        run.ok();
        let cuts = proxy.cuts();
        assert!(cuts >= 1, "faults were injected");
        assert_landed(&registry, &b, &image).await;
        // Each cut costs at most a re-send of the blob it hit (distribution cannot resume).
        let sent = proxy.bytes_to_server();
        assert!(
            sent < image_bytes + cuts * 3 * MIB + MIB,
            "sent {sent} for {image_bytes} with {cuts} cuts"
        );
        assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
        eprintln!(
            "random faults: {cuts} cuts, {sent} bytes sent for a {image_bytes}-byte image, {elapsed:.2?}"
        );
        figures.push((cuts, sent));
    }
    // The same cuts; the bytes differ only in headers (the registry's upload `_state` tokens
    // and ports vary in length from run to run).
    let ((cuts_a, sent_a), (cuts_b, sent_b)) = (figures[0], figures[1]);
    assert_eq!(cuts_a, cuts_b, "cuts of two runs with one seed: {figures:?}");
    assert!(sent_a.abs_diff(sent_b) < 4096, "bytes sent by two runs with one seed: {figures:?}");
}

#[tokio::test]
async fn a_burst_of_503s_on_upload_starts_waits_out_retry_after_and_costs_no_blob_bytes() {
    let Scene { registry, proxy, dir: _dir, layout, b, image } =
        scene(&[2 * MIB as usize, MIB as usize, 10_000], 31);
    let image_bytes = image_bytes(&b, &image);
    let blobs = b.blob_digests(&image).len();
    // Three POSTs in a row refused; one upload at a time, so they are one blob's three tries.
    proxy.add_rule(HttpFault::new("POST", "/blobs/uploads/", 503).retry_after(1).times(3));
    let (run, elapsed) = push_through(&proxy, &layout, &["--max-concurrent-uploads", "1"]);
    run.ok();
    let requests = proxy.requests();
    assert_eq!(proxy.http_faults(), 3, "{}", show(&requests));
    assert_eq!(run.stdout.matches("Retrying POST upload").count(), 3, "{}", run.stdout);
    // Said once each: the output shows them, the log does not repeat them.
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    assert_landed(&registry, &b, &image).await;
    // The refused POSTs never opened a session: one per blob reached the registry.
    assert_eq!(count(&requests, "POST", "/blobs/uploads/", false), blobs, "{}", show(&requests));
    // Each retry waited out the registry's Retry-After (upload.rs reads it from the response).
    let waits = gaps(&requests, "POST", "/blobs/uploads/");
    assert!(waits[..3].iter().all(|w| *w >= RETRY_AFTER_1S), "{waits:.2?}\n{}", show(&requests));
    // A POST carries no body: the faults cost no blob bytes.
    let sent = proxy.bytes_to_server();
    assert!(sent >= image_bytes && sent < image_bytes + OVERHEAD, "sent {sent} for {image_bytes}");
    assert!(proxy.bytes_discarded() < 4 * 1024, "discarded {}", proxy.bytes_discarded());
    assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
    eprintln!(
        "503 burst (Retry-After: 1) on POST uploads: {} faults injected, waits {:.2?}, {sent} bytes sent for a {image_bytes}-byte image, {elapsed:.2?}",
        proxy.http_faults(),
        &waits[..3]
    );
}

#[tokio::test]
async fn a_429_on_the_tag_put_is_retried_and_the_tag_lands_only_on_a_complete_image() {
    let Scene { registry, proxy, dir: _dir, layout, b, image } = scene(&[MIB as usize, 50_000], 32);
    let image_bytes = image_bytes(&b, &image);
    proxy.add_rule(HttpFault::new("PUT", "/manifests/", 429).retry_after(1).times(2));
    let push = {
        let layout = layout.clone();
        let proxy_host = proxy.host();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let run = imagepush(&[
                "push",
                "--plain-http",
                "--progress",
                "plain",
                layout.to_str().unwrap(),
                &format!("{proxy_host}/team/app:v1"),
            ]);
            (run, started.elapsed())
        })
    };
    // While the registry refuses the tag, all of the image is there and no tag is.
    let waiting = Instant::now();
    while proxy.http_faults() == 0 && waiting.elapsed() < PUSH_BOUND && !push.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(proxy.http_faults() >= 1, "the first tag PUT was refused");
    assert!(registry.tags("team/app").await.is_empty(), "no tag while the PUT is refused");
    for d in b.blob_digests(&image) {
        assert!(registry.blob_exists("team/app", &d).await, "{d} is there before the tag");
    }
    let (run, elapsed) = push.await.unwrap();
    run.ok();
    let requests = proxy.requests();
    assert_eq!(proxy.http_faults(), 2, "{}", show(&requests));
    assert_eq!(run.stdout.matches("Retrying PUT manifest").count(), 2, "{}", run.stdout);
    assert_landed(&registry, &b, &image).await;
    assert_eq!(registry.tags("team/app").await, ["v1"]);
    // Every blob commit came before the first manifest PUT, and the third PUT went through.
    let is_tag_put = |r: &RequestRecord| r.method == "PUT" && r.target.contains("/manifests/");
    let first_put = requests.iter().position(is_tag_put).unwrap();
    let last_commit =
        requests.iter().rposition(|r| r.method == "PUT" && r.target.contains("digest=")).unwrap();
    assert!(last_commit < first_put, "{}", show(&requests));
    let puts: Vec<Option<u16>> =
        requests.iter().filter(|r| is_tag_put(r)).map(|r| r.answered).collect();
    assert_eq!(puts, [Some(429), Some(429), None], "{}", show(&requests));
    // The manifest reached the registry once; the refused PUTs' bodies stayed in the proxy.
    let sent = proxy.bytes_to_server();
    assert!(sent >= image_bytes && sent < image_bytes + OVERHEAD, "sent {sent} for {image_bytes}");
    assert!(proxy.bytes_discarded() >= 2 * image.size, "discarded {}", proxy.bytes_discarded());
    assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
    eprintln!(
        "429 on the tag PUT: {} faults injected, waits {:.2?}, {sent} bytes sent for a {image_bytes}-byte image, {elapsed:.2?}",
        proxy.http_faults(),
        gaps(&requests, "PUT", "/manifests/")
    );
}

#[tokio::test]
async fn retry_after_on_the_tag_put_is_waited_out() {
    let Scene { registry, proxy, dir: _dir, layout, b, image } = scene(&[50_000], 37);
    proxy.add_rule(HttpFault::new("PUT", "/manifests/", 429).retry_after(1).times(2));
    let (run, elapsed) = push_through(&proxy, &layout, &[]);
    run.ok();
    let requests = proxy.requests();
    assert_eq!(proxy.http_faults(), 2, "{}", show(&requests));
    assert_landed(&registry, &b, &image).await;
    let waits = gaps(&requests, "PUT", "/manifests/");
    eprintln!(
        "429 + Retry-After: 1 on the tag PUT: {} faults injected, waits {waits:.2?}, {elapsed:.2?}",
        proxy.http_faults()
    );
    assert_eq!(waits.len(), 2, "{}", show(&requests));
    assert!(
        waits.iter().all(|w| *w >= RETRY_AFTER_1S),
        "waited {waits:.2?} after each Retry-After: 1\n{}",
        show(&requests)
    );
    assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
}

#[tokio::test]
/// The refused PATCH never reached the registry, so its session is empty; distribution
/// reports that as `Range: 0-0`, which cannot be told from one byte received, so the engine
/// starts that blob over in a new session instead of guessing.
async fn a_503_on_a_patch_that_never_reached_the_registry_resends_only_that_blob() {
    let Scene { registry, proxy, dir: _dir, layout, b, image } =
        scene(&[4 * MIB as usize, 3 * MIB as usize], 33);
    let image_bytes = image_bytes(&b, &image);
    let blobs = b.blob_digests(&image).len();
    // Each blob goes in one PATCH; the second multi-MiB layer's is refused.
    proxy.add_rule(HttpFault::new("PATCH", "/blobs/uploads/", 503).min_body(MIB).skip(1));
    let (run, elapsed) =
        push_through(&proxy, &layout, &["--log-level", "debug", "--max-concurrent-uploads", "1"]);
    let requests = proxy.requests();
    let sent = proxy.bytes_to_server();
    let discarded = proxy.bytes_discarded();
    eprintln!(
        "503 on a PATCH: {} fault injected, exit {}, {sent} bytes sent to the registry + {discarded} swallowed by the proxy, for a {image_bytes}-byte image, {elapsed:.2?}",
        proxy.http_faults(),
        run.code
    );
    assert_eq!(proxy.http_faults(), 1, "{}", show(&requests));
    assert!(run.stdout.contains("Retrying upload"), "{}", run.stdout);
    run.ok();
    assert_landed(&registry, &b, &image).await;
    // The refused PATCH carried one whole blob (one PATCH per blob).
    let faulted = requests.iter().find(|r| r.answered.is_some()).unwrap();
    let uuid = upload_uuid(faulted).expect("PATCH to a session");
    let blob_size = faulted.content_length.expect("a PATCH with a length");
    // The engine asked for the old session's status, cancelled it, and opened one new one.
    assert!(
        requests.iter().any(|r| r.method == "GET" && upload_uuid(r) == Some(uuid)),
        "{}",
        show(&requests)
    );
    assert!(
        requests.iter().any(|r| r.method == "DELETE" && upload_uuid(r) == Some(uuid)),
        "{}",
        show(&requests)
    );
    assert_eq!(
        count(&requests, "POST", "/blobs/uploads/", false),
        blobs + 1,
        "{}",
        show(&requests)
    );
    assert!(run.stderr.contains("does not say how much it has"), "{}", run.stderr);
    // The registry got the image once; the client re-sent at most that one PATCH.
    assert!(sent >= image_bytes && sent < image_bytes + OVERHEAD, "sent {sent} for {image_bytes}");
    assert!(blob_size >= MIB, "a multi-MiB layer was hit: {blob_size}");
    assert!(
        discarded >= blob_size && discarded < blob_size + OVERHEAD,
        "discarded {discarded}, blob {blob_size}"
    );
    assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
}

#[tokio::test]
async fn a_dropped_upload_session_starts_a_fresh_upload() {
    let Scene { registry, proxy, dir: _dir, layout, b, image } =
        scene(&[3 * MIB as usize, MIB as usize], 34);
    let image_bytes = image_bytes(&b, &image);
    let blobs = b.blob_digests(&image).len();
    let layer = b.children(&image).1[0].clone();
    // The 3 MiB layer's session is gone: its PATCH, and a status GET if the engine asks (no
    // other upload has failed, so that GET can only be for this session), answer 404.
    let unknown = r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}"#;
    let patch = proxy
        .add_rule(HttpFault::new("PATCH", "/blobs/uploads/", 404).min_body(2 * MIB).body(unknown));
    proxy.add_rule(HttpFault::new("GET", "/blobs/uploads/", 404).body(unknown));
    let (run, elapsed) =
        push_through(&proxy, &layout, &["--log-level", "debug", "--max-concurrent-uploads", "1"]);
    let requests = proxy.requests();
    let sent = proxy.bytes_to_server();
    let discarded = proxy.bytes_discarded();
    eprintln!(
        "404 BLOB_UPLOAD_UNKNOWN on a PATCH: {} fault(s) injected, exit {}, {sent} bytes sent to the registry + {discarded} swallowed by the proxy, for a {image_bytes}-byte image, {elapsed:.2?}",
        proxy.http_faults(),
        run.code
    );
    assert_eq!(proxy.rule_faults(patch), 1, "{}", show(&requests));
    run.ok();
    assert_landed(&registry, &b, &image).await;
    // One more session than blobs: the fresh one for the blob whose session was dropped.
    assert_eq!(
        count(&requests, "POST", "/blobs/uploads/", false),
        blobs + 1,
        "{}",
        show(&requests)
    );
    // The refused PATCH never reached the registry: it got the image once, the client sent
    // the layer twice.
    assert!(sent >= image_bytes && sent < image_bytes + OVERHEAD, "sent {sent} for {image_bytes}");
    assert!(
        discarded >= layer.size && discarded < layer.size + OVERHEAD,
        "discarded {discarded} of a {}-byte layer",
        layer.size
    );
    assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
}

#[tokio::test]
async fn bursts_of_503_on_the_ping_and_on_blob_heads_are_retried() {
    let Scene { registry, proxy, dir: _dir, layout, b, image } = scene(&[MIB as usize, 20_000], 35);
    let image_bytes = image_bytes(&b, &image);
    let ping = proxy.add_rule(HttpFault::new("GET", "/v2/", 503).exact_path().times(2));
    // The layer's first HEAD is told to come back in a second (rate limiting); rules answer
    // in the order added, so this one goes first.
    let layer = b.children(&image).1[0].digest.clone();
    let limited =
        proxy.add_rule(HttpFault::new("HEAD", &format!("/blobs/{layer}"), 429).retry_after(1));
    // The other layer's HEAD meets a burst of three 503s.
    let other = b.children(&image).1[1].digest.clone();
    let heads = proxy.add_rule(HttpFault::new("HEAD", &format!("/blobs/{other}"), 503).times(3));
    let (run, elapsed) = push_through(&proxy, &layout, &[]);
    let requests = proxy.requests();
    run.ok();
    assert_eq!(proxy.rule_faults(ping), 2, "{}", show(&requests));
    assert_eq!(proxy.rule_faults(heads), 3, "{}", show(&requests));
    assert_eq!(proxy.rule_faults(limited), 1, "{}", show(&requests));
    assert_eq!(proxy.http_faults(), 6);
    let waits = gaps(&requests, "HEAD", &format!("/blobs/{layer}"));
    assert!(
        waits.first().is_some_and(|w| *w >= RETRY_AFTER_1S),
        "{waits:.2?}\n{}",
        show(&requests)
    );
    assert!(run.stdout.contains("Retrying GET /v2/"), "{}", run.stdout);
    assert!(run.stdout.contains("Retrying HEAD blob"), "{}", run.stdout);
    assert_landed(&registry, &b, &image).await;
    let sent = proxy.bytes_to_server();
    assert!(sent >= image_bytes && sent < image_bytes + OVERHEAD, "sent {sent} for {image_bytes}");
    assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
    eprintln!(
        "503 bursts on GET /v2/ and blob HEADs, a 429 on one: {} faults injected, {sent} bytes sent for a {image_bytes}-byte image, {elapsed:.2?}",
        proxy.http_faults()
    );
}

#[tokio::test]
async fn a_500_storm_on_the_tag_put_outlasting_the_retries_fails_without_a_tag() {
    let Scene { registry, proxy, dir, layout, b, image } = scene(&[MIB as usize], 36);
    let image_bytes = image_bytes(&b, &image);
    proxy.add_rule(HttpFault::new("PUT", "/manifests/", 500).times(u64::MAX));
    let report_path = dir.path().join("r.json");
    let (run, elapsed) = push_through(
        &proxy,
        &layout,
        &["--retries", "2", "--report", report_path.to_str().unwrap()],
    );
    // Exit 5: the registry failed (`ErrorClass::Registry`).
    run.expect_code(5);
    // The first try and two retries.
    assert_eq!(proxy.http_faults(), 3, "{}", show(&proxy.requests()));
    assert_eq!(run.stdout.matches("Retrying PUT manifest").count(), 2, "{}", run.stdout);
    // The error names the request and the status.
    let error = run.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        error.contains("PUT") && error.contains("/manifests/v1") && error.contains("500"),
        "{}",
        run.stderr
    );
    assert!(registry.tags("team/app").await.is_empty(), "no tag after a failed push");
    assert!(registry.manifest("team/app", &image.digest).await.is_none(), "nor the manifest");
    let r = report(&report_path);
    assert_eq!(r["error"]["reason"], "RegistryUnavailable", "{r}");
    assert_eq!(r["error"]["exitCode"], 5, "{r}");
    let sent = proxy.bytes_to_server();
    assert!(sent < image_bytes + OVERHEAD, "sent {sent} for {image_bytes}");
    assert!(elapsed < PUSH_BOUND, "{elapsed:?}");
    eprintln!(
        "500 storm on the tag PUT, --retries 2: {} faults injected, exit {}, {sent} bytes sent for a {image_bytes}-byte image, {elapsed:.2?}; {error}",
        proxy.http_faults(),
        run.code,
    );
}

/// The proxy itself: scripted answers (status, `Retry-After`, JSON body, no body for HEAD,
/// `Connection: close`), and request framing followed across keep-alive and chunked bodies,
/// so the scenarios above can trust what it injects and counts.
#[tokio::test]
async fn the_proxy_answers_scripted_requests_and_forwards_the_rest_intact() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let client = common::http_client();
    let url = |path: &str| format!("{}{path}", proxy.url());

    let ping = proxy.add_rule(HttpFault::new("GET", "/v2/", 503).exact_path().retry_after(7));
    let resp = client.get(url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(resp.headers()["connection"], "close");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    assert_eq!(client.get(url("/v2/")).send().await.unwrap().status(), 200, "once only");
    assert_eq!(proxy.rule_faults(ping), 1);

    // A chunked PATCH that a rule answers is swallowed whole; the registry never sees it.
    let blob = common::layout::pseudo_random_bytes(41, 300_000);
    let chunked = |bytes: Vec<u8>| {
        let parts: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(70_000).map(|c| Ok(c.to_vec())).collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(parts))
    };
    let resp = client.post(url("/v2/selftest/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') { url(&location) } else { location };
    proxy.add_rule(HttpFault::new("PATCH", "/blobs/uploads/", 503));
    let before = proxy.bytes_to_server();
    let resp = client.patch(&location).body(chunked(blob.clone())).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(proxy.bytes_discarded() > blob.len() as u64, "{}", proxy.bytes_discarded());
    assert_eq!(proxy.bytes_to_server(), before, "nothing of it was forwarded");

    // The same PATCH again is forwarded, chunked, and the commit that follows on the same
    // keep-alive connection is found after its last chunk.
    let resp = client.patch(&location).body(chunked(blob.clone())).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') { url(&location) } else { location };
    let digest = common::sha256_digest(&blob);
    let resp = client.put(&location).query(&[("digest", &digest)]).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(registry.blob("selftest", &digest).await.unwrap(), blob);

    // HEAD gets the status and headers, no body.
    proxy.add_rule(HttpFault::new("HEAD", "/blobs/", 404));
    let resp = client.head(url(&format!("/v2/selftest/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.bytes().await.unwrap().is_empty());

    let log = proxy.requests();
    let seen: Vec<(&str, Option<u16>)> =
        log.iter().map(|r| (r.method.as_str(), r.answered)).collect();
    assert_eq!(
        seen,
        [
            ("GET", Some(503)),
            ("GET", None),
            ("POST", None),
            ("PATCH", Some(503)),
            ("PATCH", None),
            ("PUT", None),
            ("HEAD", Some(404)),
        ],
        "{}",
        show(&log)
    );
    assert_eq!(log[4].conn, log[5].conn, "the commit followed the chunked PATCH on one connection");
    assert_eq!(proxy.http_faults(), 3);
}

/// A registry that asks to come back in an hour (rate limited) when the retry time left is
/// five minutes: the push gives up at once, with no tag, instead of hammering it.
#[tokio::test]
async fn a_retry_after_beyond_the_retry_time_limit_fails_at_once() {
    let Scene { registry, proxy, dir: _dir, layout, b: _b, image: _image } = scene(&[50_000], 38);
    proxy.add_rule(HttpFault::new("PUT", "/manifests/", 429).retry_after(3600).times(u64::MAX));
    let report_path = layout.with_extension("report.json");
    let (run, elapsed) =
        push_through(&proxy, &layout, &["--report", report_path.to_str().unwrap()]);
    run.expect_code(5);
    // The report hands the wait on (the operator schedules its next attempt by it).
    let r = report(&report_path);
    assert_eq!(r["error"]["retryAfterSeconds"], 3600, "{r}");
    assert_eq!(r["error"]["transient"], true, "{r}");
    assert_eq!(proxy.http_faults(), 1, "{}", show(&proxy.requests()));
    assert!(!run.stdout.contains("Retrying PUT manifest"), "{}", run.stdout);
    let error = run.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.contains("429"), "{}", run.stderr);
    assert!(registry.tags("team/app").await.is_empty());
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}
