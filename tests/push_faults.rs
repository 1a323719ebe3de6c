//! Pushing through faults between the engine and a real registry: a fault-injecting proxy
//! cuts connections mid-upload; the push must finish, byte-identical.
//!
//! CNCF distribution 2.8 cannot resume an interrupted PATCH (its upload `_state` records the
//! offset of the last completed request, and a GET after partial data cancels the session:
//! "upload resumed at wrong offset"), so against it imagepush starts that one blob over and
//! re-sends at most the part that was cut. Resuming from the registry's `Range` is tested
//! against a registry that keeps partial data (`src/registry/tests.rs`).

mod common;

use common::{CountingProxy, TestRegistry, imagepush, report, simple_image};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn an_upload_cut_mid_blob_is_retried_and_lands_byte_identical() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", &[8 * MIB as usize], 21);
    let layer = b.children(&image).1[0].clone();
    // Cut the connection once, 3 MiB into the request stream.
    proxy.cut_after(3 * MIB);
    let report_path = dir.path().join("r.json");
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
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", &[4 * MIB as usize], 22);
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
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(
        &layout,
        "v1",
        &[3 * MIB as usize, 2 * MIB as usize, MIB as usize, 100_000],
        23,
    );
    let image_bytes: u64 = b.blob_digests(&image).iter().map(|d| b.read_blob(d).len() as u64).sum();
    // Chunks are up to 64 KiB: about one cut per 2 MiB, four at most.
    proxy.random_cuts(42, 30_000, 4);
    let report_path = dir.path().join("r.json");
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--progress",
        "plain",
        "--retries",
        "8",
        "--report",
        report_path.to_str().unwrap(),
        layout.to_str().unwrap(),
        &format!("{}/team/app:v1", proxy.host()),
    ]);
    run.ok();
    let cuts = proxy.cuts();
    assert!(cuts >= 1, "faults were injected");
    for d in b.blob_digests(&image) {
        assert_eq!(registry.blob("team/app", &d).await.unwrap(), b.read_blob(&d), "{d}");
    }
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, image.digest);
    // Each cut costs at most a re-send of the blob it hit (distribution cannot resume).
    let sent = proxy.bytes_to_server();
    assert!(
        sent < image_bytes + cuts * 3 * MIB + MIB,
        "sent {sent} for {image_bytes} with {cuts} cuts"
    );
    eprintln!("random faults: {cuts} cuts, {sent} bytes sent for a {image_bytes}-byte image");
}
