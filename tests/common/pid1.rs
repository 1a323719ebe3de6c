//! Runs a command as PID 1 of a new PID namespace, as a container's entrypoint runs: the
//! kernel drops every signal such a process has no handler for (SIGKILL excepted), so a test
//! here sees what kubelet's SIGTERM really does to it.
//!
//! `unshare --pid --fork --kill-child -- CMD`: unshare forks a child that is PID 1 of the new
//! namespace and execs CMD; a signal sent to unshare is not forwarded, so [`Pid1::signal`]
//! goes to that child by its pid in the test's namespace. Dropping a `Pid1` SIGKILLs unshare,
//! and `--kill-child` takes the namespace down with it.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Pid1 {
    unshare: Child,
    /// The pid, in the test's namespace, of the process that is PID 1 in its own.
    pub pid: i32,
    status: Option<ExitStatus>,
}

impl Pid1 {
    /// Runs `cmd` (its program, arguments, environment and directory) as PID 1 with these
    /// standard streams (std cannot read them back from `cmd`), and waits until the forked
    /// child has exec'd the program.
    pub fn spawn(cmd: &Command, stdout: Stdio, stderr: Stdio) -> Pid1 {
        let program = std::fs::canonicalize(cmd.get_program()).expect("an absolute program path");
        let mut wrapped = Command::new("unshare");
        wrapped.args(["--pid", "--fork", "--kill-child", "--"]).arg(&program).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let unshare = wrapped
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("run unshare (util-linux) --pid --fork");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let children = std::fs::read_to_string(format!(
                "/proc/{}/task/{}/children",
                unshare.id(),
                unshare.id()
            ))
            .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok())
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == program)
            {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "unshare's child never exec'd {}",
                program.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let inner: String = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .unwrap_or_default()
            .to_string();
        assert!(inner.trim_end().ends_with("\t1"), "not PID 1 of its namespace: {inner}");
        Pid1 { unshare, pid, status: None }
    }

    /// Whether the process has a handler for `signal` now (`SigCgt` in /proc/PID/status): as
    /// PID 1 it ignores the signal otherwise.
    pub fn handles(&self, signal: i32) -> bool {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
    }

    /// Sends `signal` (libc::SIGTERM, ...) to the PID-1 process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid this test started and has not reaped.
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}): {}", self.pid, std::io::Error::last_os_error());
    }

    /// The exit status once the process has ended, waiting at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.status.is_none() {
                self.status = self.unshare.try_wait().unwrap();
            }
            if self.status.is_some() || Instant::now() >= deadline {
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` and measures how long the process takes to exit (at most `timeout`):
    /// `(exit code or None when still running, elapsed)`.
    pub fn stop_with(&mut self, signal: i32, timeout: Duration) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        self.signal(signal);
        let status = self.wait_timeout(timeout);
        (status.map(|s| s.code().unwrap_or(-1)), sent.elapsed())
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// Waits until `path` contains `needle` (a log line); panics with the file after `timeout`.
pub fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {} after {timeout:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
