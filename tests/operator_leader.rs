//! Leader election of `imagepush controller` replicas against the Kubernetes API double:
//! replicas run as PID 1 of their own PID namespace (as in a Deployment's pods), leave at once
//! on SIGTERM, and a leader that leaves releases the Lease so a standby takes over in about a
//! second instead of after the Lease expires; no delayed write ever makes two leaders.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, append};
use common::pid1::{Pid1, wait_for_text};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

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

/// A replica named `name` as an ordinary child process.
fn replica(cluster: &Cluster, name: &str, log: &Path) -> Child {
    let mut cmd = cluster.controller_command(common::free_port(), &election_args());
    cmd.env("POD_NAME", name).stdout(append(log)).stderr(append(log));
    cmd.spawn().expect("start imagepush controller")
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
    // c1 wrote the Lease after its signal (the release), with its own field manager.
    let releases = cluster.requests()[requests_before..]
        .iter()
        .filter(|r| {
            r["method"] == "PATCH"
                && r["path"].as_str().is_some_and(|p| p.ends_with(&format!("/leases/{LEASE}")))
                && r["query"]
                    .as_str()
                    .is_some_and(|q| q.contains("fieldManager=imagepush-controller-c1"))
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

/// Polls both replicas' logs and the Lease for `window`; panics as soon as both lead at once.
async fn assert_never_two_leaders(
    cluster: &Cluster,
    client: &kube::Client,
    logs: &[PathBuf; 2],
    window: Duration,
) -> usize {
    let leading = |path: &PathBuf| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let led = text.lines().filter(|l| l.contains("leading")).count();
        let lost = text.lines().filter(|l| l.contains("lost leadership")).count();
        led > lost
    };
    let end = Instant::now() + window;
    let mut last = None;
    while Instant::now() < end {
        let now = [leading(&logs[0]), leading(&logs[1])];
        assert!(
            !(now[0] && now[1]),
            "two leaders at once (Lease holder {:?}):\n--- c1 ---\n{}\n--- c2 ---\n{}",
            holder(&lease(client).await),
            std::fs::read_to_string(&logs[0]).unwrap_or_default(),
            std::fs::read_to_string(&logs[1]).unwrap_or_default(),
        );
        last = now.iter().position(|l| *l).or(last);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = last.unwrap_or_else(|| panic!("nobody leads\n{}", cluster.diagnostics()));
    assert_eq!(holder(&lease(client).await).as_deref(), Some(["c1", "c2"][leader]));
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_first_lease_write_never_makes_two_leaders() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    // c1's first write to take the Lease hangs for 3 s in the API server; meanwhile c2 finds
    // the Lease free and takes it. When c1's write lands it must fail (the field belongs to
    // c2's field manager), not take the Lease from under c2. The same pattern matches the
    // one field manager all replicas used to share.
    cluster.set_faults(json!([{
        "method": "PATCH", "pathRegex": "/leases/",
        "queryRegex": "fieldManager=imagepush-controller(-c1)?(&|$)",
        "delaySeconds": 3, "times": 1
    }]));
    let logs = [cluster.dir.path().join("c1.log"), cluster.dir.path().join("c2.log")];
    let mut c1 = replica(&cluster, "c1", &logs[0]);
    // c1 has read the Lease (and found it free); its write follows at once and hangs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster
        .requests()
        .iter()
        .any(|r| r["method"] == "GET" && r["path"].as_str().is_some_and(|p| p.contains("/leases/")))
    {
        assert!(Instant::now() < deadline, "c1 never read the Lease\n{}", cluster.diagnostics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c2 = replica(&cluster, "c2", &logs[1]);

    // Longer than a renewal (every 10 s): a replica that took the Lease by mistake would only
    // notice at its next renewal.
    let leader = assert_never_two_leaders(&cluster, &client, &logs, Duration::from_secs(16)).await;
    assert_eq!(leader, 1, "c2 took the free Lease while c1's write hung");
    let delayed: Vec<_> = cluster
        .requests()
        .into_iter()
        .filter(|r| r["fault"] == true && r["method"] == "PATCH")
        .collect();
    assert_eq!(delayed.len(), 1, "the delay applied to c1's first Lease write");
    // The API server refused it: the holder belongs to c2's field manager.
    assert_eq!(delayed[0]["status"], 409, "{:#}", delayed[0]);
    let _ = c1.kill();
    let _ = c2.kill();
    let _ = c1.wait();
    let _ = c2.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_release_is_bounded_and_a_second_sigterm_exits_at_once() {
    let cluster = Cluster::start();
    let log = |name: &str| cluster.dir.path().join(format!("{name}.log"));
    // The next Lease write of `name` (its release) hangs in the API server for 5 s.
    let hang_release = |name: &str| {
        cluster.set_faults(json!([{
            "method": "PATCH", "pathRegex": "/leases/",
            "queryRegex": format!("fieldManager=imagepush-controller-{name}(&|$)"),
            "delaySeconds": 5, "times": 1
        }]))
    };

    // One signal: the release is waited for, but not for long; the exit is still clean.
    let mut c1 = replica_pid1(&cluster, "c1", &log("c1"));
    wait_for_text(&log("c1"), "leading", Duration::from_secs(20));
    hang_release("c1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(&mut c1, "c1", &log("c1"));
    assert!(std::fs::read_to_string(log("c1")).unwrap().contains("was not released within"));

    // Two signals: the second one ends the process at once, with 128 + 15.
    let mut c2 = replica_pid1(&cluster, "c2", &log("c2"));
    wait_for_text(&log("c2"), "leading", Duration::from_secs(30));
    hang_release("c2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = Instant::now();
    c2.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, _) = c2.stop_with(libc::SIGTERM, EXIT_WITHIN);
    let elapsed = first.elapsed();
    let text = std::fs::read_to_string(log("c2")).unwrap();
    assert_eq!(code, Some(143), "exit after a second SIGTERM:\n{text}");
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}\n{text}");
}

/// The Lease is taken away from a leader (another candidate force-released and took it, or
/// its renewals stopped landing): the leader's manager still believes it leads, but the
/// replica reads the Lease, sees another holder and stops acting within a few seconds,
/// without clearing the Lease it no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_shows_another_holder_stops_leading() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let log = cluster.dir.path().join("a.log");
    let mut a = replica(&cluster, "replica-a", &log);
    wait_for_text(&log, "leading", Duration::from_secs(20));
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let patch = json!({"spec": {"holderIdentity": "replica-z",
                                "renewTime": k8s_openapi::jiff::Timestamp::now().to_string()}});
    let taken = Instant::now();
    leases
        .patch(LEASE, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch))
        .await
        .unwrap();
    wait_for_text(&log, "the Lease shows another holder", Duration::from_secs(5));
    eprintln!("stopped leading {:?} after the Lease was taken", taken.elapsed());
    // Not cleared by the replica that lost it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holder(&lease(&client).await).as_deref(), Some("replica-z"));
    let _ = a.kill();
    let _ = a.wait();
}
