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
    let empty_home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagepush"));
    cmd.args(args)
        .env_remove("DOCKER_CONFIG")
        .env("HOME", empty_home.path())
        .env_remove("IMAGEPUSH_LOG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
