//! Leader election of `imagepush controller` replicas against the Kubernetes API double:
//! replicas run as PID 1 of their own PID namespace (as in a Deployment's pods), leave at once
//! on SIGTERM, and a leader that leaves releases the Lease so a standby takes over in about a
//! second instead of after the Lease expires.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, append};
use common::pid1::{Pid1, wait_for_text};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

const NS: &str = "e2e";
const LEASE: &str = "imagepush-controller";
const EXIT_WITHIN: Duration = Duration::from_secs(2);

fn election_args() -> [&'static str; 3] {
    ["--leader-election", "--lease-namespace", NS]
}

/// A replica named `name` (its POD_NAME, so its Lease identity) as PID 1, logging to `log`.
fn replica_pid1(cluster: &Cluster, name: &str, log: &Path) -> Pid1 {
    let mut cmd = cluster.controller_command(common::free_port(), &election_args());
    cmd.env("POD_NAME", name);
    Pid1::spawn(&cmd, append(log).into(), append(log).into())
}

async fn lease(client: &kube::Client) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), NS).get_opt(LEASE).await.unwrap()
}

fn holder(lease: &Option<Lease>) -> Option<String> {
    lease.as_ref()?.spec.as_ref()?.holder_identity.clone()
}

fn transitions(lease: &Option<Lease>) -> i32 {
    lease.as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.lease_transitions).unwrap_or(0)
}

/// Stops `replica` with SIGTERM; it must exit 0 within `EXIT_WITHIN`. Returns when it did.
fn stop(replica: &mut Pid1, name: &str, log: &Path) -> Duration {
    let (code, elapsed) = replica.stop_with(libc::SIGTERM, EXIT_WITHIN);
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(code, Some(0), "{name}: exit after SIGTERM (after {elapsed:?}):\n{log}");
    eprintln!("{name} exited {elapsed:?} after SIGTERM");
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_leave_on_sigterm_and_the_leader_hands_the_lease_over_at_once() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let log = |name: &str| cluster.dir.path().join(format!("{name}.log"));
    let mut c1 = replica_pid1(&cluster, "c1", &log("c1"));
    wait_for_text(&log("c1"), "leading", Duration::from_secs(20));
    let mut c2 = replica_pid1(&cluster, "c2", &log("c2"));
    let mut c3 = replica_pid1(&cluster, "c3", &log("c3"));
    wait_for_text(&log("c2"), "waiting for leadership", Duration::from_secs(20));
    wait_for_text(&log("c3"), "waiting for leadership", Duration::from_secs(20));
    let before = lease(&client).await;
    assert_eq!(holder(&before).as_deref(), Some("c1"));
    // Well inside the Lease's 15 s: without a release, a standby would wait for its expiry.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A standby leaves.
    stop(&mut c3, "c3", &log("c3"));

    // The leader leaves: it releases the Lease, and the remaining standby leads in about a
    // second (its next look at the Lease), not when the 15 s Lease would have expired.
    let requests_before = cluster.requests().len();
    let signalled = Instant::now();
    stop(&mut c1, "c1", &log("c1"));
    let led = wait_for_text(&log("c2"), "leading", Duration::from_secs(20));
    let failover = led - signalled;
    eprintln!("c2 leads {failover:?} after c1's SIGTERM");
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?}\n{}",
        cluster.diagnostics()
    );
    assert!(std::fs::read_to_string(log("c1")).unwrap().contains("released the Lease"));
    // c1 wrote the Lease after its signal (the release).
    let releases = cluster.requests()[requests_before..]
        .iter()
        .filter(|r| {
            r["method"] == "PATCH"
                && r["path"].as_str().is_some_and(|p| p.ends_with(&format!("/leases/{LEASE}")))
                && r["query"]
                    .as_str()
                    .is_some_and(|q| q.contains("fieldManager=imagepush-controller"))
        })
        .count();
    assert!(releases >= 1, "c1 did not write the Lease after SIGTERM");
    let after = lease(&client).await;
    assert_eq!(holder(&after).as_deref(), Some("c2"));
    assert_eq!(transitions(&after), transitions(&before) + 1);

    // The new leader leaves too: nobody holds the Lease afterwards.
    stop(&mut c2, "c2", &log("c2"));
    assert_eq!(holder(&lease(&client).await), None, "the last leader released the Lease");
}
