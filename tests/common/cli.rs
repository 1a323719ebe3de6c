//! Runs the real `imagepush` binary, as a user or the operator's worker would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }
}

/// `imagepush <args>` with no standard input, no docker config from the environment.
pub fn imagepush(args: &[&str]) -> Run {
    imagepush_with_stdin(args, None)
}

/// `imagepush <args>` with `stdin` piped in (for --password-stdin).
pub fn imagepush_with_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    imagepush_env(args, &[], stdin)
}

/// `imagepush <args>` with extra environment variables. HOME is an empty directory and
/// DOCKER_CONFIG and IMAGEPUSH_LOG are removed unless `envs` sets them; a child that exits
/// without reading its standard input is not an error.
pub fn imagepush_env(args: &[&str], envs: &[(&str, &std::ffi::OsStr)], stdin: Option<&str>) -> Run {
    run_command(args, envs, stdin, None)
}

/// `imagepush <args>` under strace: the run, and every file the binary opened for reading.
pub fn imagepush_traced(args: &[&str]) -> (Run, Opened) {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let run = run_command(args, &[], None, Some(trace.path()));
    (run, Opened::read(trace.path()))
}

/// The command for `imagepush <args>` (see `imagepush_env`), under strace recording every
/// open into `trace` when given. Returns the temporary HOME with it; keep it alive.
pub fn command(args: &[&str], trace: Option<&Path>) -> (Command, tempfile::TempDir) {
    let empty_home = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_imagepush");
    let mut cmd = match trace {
        None => Command::new(bin),
        Some(trace) => {
            let mut cmd = Command::new(strace());
            // -xx: every string in hex, so any byte of a path survives; -f: all threads.
            cmd.args(["-f", "-qq", "-xx", "-e", "trace=open,openat,openat2,creat", "-o"])
                .arg(trace)
                .arg(bin);
            cmd
        }
    };
    cmd.args(args)
        .env_remove("DOCKER_CONFIG")
        .env("HOME", empty_home.path())
        .env_remove("IMAGEPUSH_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (cmd, empty_home)
}

fn run_command(
    args: &[&str],
    envs: &[(&str, &std::ffi::OsStr)],
    stdin: Option<&str>,
    trace: Option<&Path>,
) -> Run {
    let (mut cmd, _home) = command(args, trace);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run imagepush");
    if let Some(input) = stdin {
        // The binary may exit before reading (usage errors): a broken pipe is not a failure.
        match child.stdin.take().unwrap().write_all(input.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// strace, which `.ci/run` installs; the confinement tests cannot be made without it.
fn strace() -> &'static str {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("strace").is_file()));
    assert!(found, "strace is needed to record the files imagepush opens (apt-get install strace)");
    "strace"
}

/// Where a process may read outside the layout: its libraries, name resolution, CA
/// certificates, what the Rust runtime reads about its own process and CPU quota, and what
/// glibc's allocator reads about the kernel's memory settings.
const SYSTEM_READS: &[&str] = &[
    "/etc/ld.so.cache",
    "/lib/",
    "/lib64/",
    "/usr/lib/",
    "/usr/lib64/",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl/",
    "/etc/pki/",
    "/usr/share/ca-certificates/",
    "/proc/self/",
    "/sys/fs/cgroup/",
    "/sys/devices/system/cpu/",
    "/proc/sys/vm/overcommit_memory",
    "/sys/kernel/mm/transparent_hugepage/",
];

/// The files a traced run opened with read access and that the kernel let it open.
#[derive(Debug)]
pub struct Opened {
    pub paths: Vec<std::path::PathBuf>,
}

impl Opened {
    /// Reads a trace written by a command from `command(.., Some(trace))`.
    pub fn read(trace: &Path) -> Opened {
        Opened::parse(&std::fs::read(trace).unwrap())
    }

    /// Parses strace's `-f -xx` output of the open family. A call strace split in two
    /// (`<unfinished ...>` then `<... openat resumed>`) is joined by thread id. Write-only
    /// opens (a report file) and failed opens are not reads.
    pub fn parse(trace: &[u8]) -> Opened {
        let text = String::from_utf8_lossy(trace);
        let mut pending: std::collections::HashMap<&str, &str> = Default::default();
        let mut paths = Vec::new();
        for line in text.lines() {
            let Some((tid, rest)) = line.split_once(' ') else { continue };
            let rest = rest.trim_start();
            let call = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
                pending.insert(tid, head);
                continue;
            } else if rest.starts_with("<... ") {
                let Some(head) = pending.remove(tid) else { continue };
                let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
                format!("{head}{tail}")
            } else {
                rest.to_string()
            };
            if !call.starts_with("open") && !call.starts_with("creat") {
                continue;
            }
            let Some((args, result)) = call.rsplit_once(" = ") else { continue };
            if result.trim_start().starts_with('-') || args.contains("O_WRONLY") {
                continue;
            }
            let dirfd_ok = call.starts_with("open(") || args.contains("AT_FDCWD");
            let path = decode_hex_string(args);
            assert!(
                dirfd_ok || path.is_absolute(),
                "an open relative to a directory descriptor cannot be attributed: {call}"
            );
            paths.push(path);
        }
        Opened { paths }
    }

    /// Panics, naming each one, if a file outside `layout` (symlinks resolved), outside
    /// `also` and outside the system's runtime files was opened for reading.
    pub fn assert_confined(&self, layout: &Path, also: &[&Path]) {
        let root = std::fs::canonicalize(layout).unwrap_or_else(|_| layout.to_path_buf());
        let outside: Vec<String> = self
            .paths
            .iter()
            .filter(|p| {
                // What the path names now (the tests do not change the tree after the run).
                let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                !real.starts_with(&root)
                    && !also.iter().any(|a| p.starts_with(a))
                    && !SYSTEM_READS.iter().any(|s| p.to_string_lossy().starts_with(s))
            })
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            outside.is_empty(),
            "imagepush read files outside the layout {}:\n{}",
            root.display(),
            outside.join("\n")
        );
    }
}

/// The first `"\xHH..."` string of a strace `-xx` argument list, as a path.
fn decode_hex_string(args: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let start = args.find('"').expect("a quoted path") + 1;
    let end = start + args[start..].find('"').expect("a closing quote");
    let hex = args[start..end].replace("\\x", "");
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("strace -xx hex"))
        .collect();
    std::ffi::OsString::from_vec(bytes).into()
}

/// Reads a `--report` file.
pub fn report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read report {}: {e}", path.display()));
    serde_json::from_str(&text).expect("report is JSON")
}

/// `(outcome, from)` of every blob in a report, by digest.
pub fn blob_outcomes(
    report: &serde_json::Value,
) -> std::collections::BTreeMap<String, (String, Option<String>)> {
    report["blobs"]
        .as_array()
        .expect("blobs array")
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_string(),
                (
                    b["outcome"].as_str().unwrap().to_string(),
                    b["from"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}
