//! The worker (`imagepush push`) as PID 1 of its own PID namespace, as in a Job's container:
//! kubelet's SIGTERM (pod deleted, activeDeadlineSeconds passed) must stop the push at once,
//! with no tag written after the signal and a report that says why.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pid1::Pid1;
use common::proxy::HttpFault;
use common::{CountingProxy, TestRegistry, simple_image};

/// How long a worker may take to exit after SIGTERM.
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// `imagepush push` as the operator's worker runs it, as PID 1, its stdout (JSON lines) and
/// stderr in files under `dir`; with the temporary HOME to keep while it runs.
fn worker(dir: &Path, layout: &Path, target: &str) -> (Pid1, tempfile::TempDir) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "push".to_string(),
        "--plain-http".into(),
        "--progress".into(),
        "json".into(),
        "--max-concurrent-uploads".into(),
        "1".into(),
        "--report".into(),
        s(&dir.join("report.json")),
        "--termination-message".into(),
        s(&dir.join("termination-log")),
        s(layout),
        target.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (cmd, home) = common::cli::command(&args, None);
    let pid1 = Pid1::spawn(
        &cmd,
        std::fs::File::create(dir.join("stdout")).unwrap().into(),
        std::fs::File::create(dir.join("stderr")).unwrap().into(),
    );
    (pid1, home)
}

/// Waits (at most 30 s) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the worker with SIGTERM and checks everything it says about why: exit 143 within
/// `EXIT_WITHIN`, the report file, the JSON report line and the termination message.
/// Returns the error message.
fn stop_and_check_reports(worker: &mut Pid1, dir: &Path) -> String {
    let handled = worker.handles(libc::SIGTERM);
    let (code, elapsed) = worker.stop_with(libc::SIGTERM, EXIT_WITHIN);
    let output = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(dir.join("stdout")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        )
    };
    assert!(
        code.is_some(),
        "still running {elapsed:?} after SIGTERM (a SIGTERM handler installed: {handled})\n{}",
        output()
    );
    assert_eq!(code, Some(143), "exit code after SIGTERM\n{}", output());
    eprintln!("worker exited {elapsed:?} after SIGTERM");

    let report = common::report(&dir.join("report.json"));
    let error = &report["error"];
    assert_eq!(error["reason"], "Terminated", "{report:#}");
    assert_eq!(error["exitCode"], 143, "{report:#}");
    assert_eq!(error["transient"], true, "{report:#}");
    let message = error["message"].as_str().unwrap().to_string();
    assert!(message.contains("SIGTERM") && message.contains("no tag was written"), "{message}");

    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap();
    let line: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["event"] == "report")
        .unwrap_or_else(|| panic!("no report line\n{}", output()));
    assert_eq!(line["report"]["error"], *error);

    let termination = std::fs::read(dir.join("termination-log")).unwrap();
    assert!(termination.len() <= 4096);
    let compact: imagepush::push::PushReport = serde_json::from_slice(&termination).unwrap();
    let compact_error = compact.error.expect("an error in the termination message");
    assert_eq!(
        (compact_error.reason.as_str(), compact_error.exit_code, compact_error.transient),
        ("Terminated", 143, true)
    );
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_upload_stops_the_worker_before_any_tag() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    proxy.set_throttle(400_000);
    let dir = tempfile::tempdir().unwrap();
    simple_image(&dir.path().join("layout"), "v1", &[3_000_000, 3_000_000], 41);
    let target = format!("{}/team/app:v1", proxy.host());
    let (mut worker, _home) = worker(dir.path(), &dir.path().join("layout"), &target);

    // Mid-upload: some of the first layer's bytes are through, most are not.
    wait_until("the upload is under way", || proxy.bytes_to_server() > 600_000);
    let message = stop_and_check_reports(&mut worker, dir.path());
    assert!(message.contains("before tagging"), "{message}");
    assert!(proxy.bytes_to_server() < 6_000_000, "the upload was not cut short");

    assert!(registry.tags("team/app").await.is_empty());
    // Nothing left behind goes on to tag later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(registry.tags("team/app").await.is_empty());
    assert!(registry.manifest("team/app", "v1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_tag_put_waits_to_be_retried_writes_no_tag() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    // The tag PUT is asked to come back in 4 s: the worker is waiting for that when stopped.
    let rule = proxy.add_rule(HttpFault::new("PUT", "/manifests/v1", 429).retry_after(4));
    let dir = tempfile::tempdir().unwrap();
    simple_image(&dir.path().join("layout"), "v1", &[20_000], 42);
    let target = format!("{}/team/app:v1", proxy.host());
    let (mut worker, _home) = worker(dir.path(), &dir.path().join("layout"), &target);

    wait_until("the tag PUT was answered 429", || proxy.rule_faults(rule) == 1);
    let message = stop_and_check_reports(&mut worker, dir.path());
    assert!(message.contains("while tagging"), "{message}");

    // Past the moment the retry would have written the tag.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(registry.tags("team/app").await.is_empty());
    let tag_puts = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.target.ends_with("/manifests/v1"))
        .count();
    assert_eq!(tag_puts, 1, "a tag PUT after the signal");
}
