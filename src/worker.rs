//! The contract between the operator and its workers, typed on both sides: the arguments of
//! the `imagepush push` a worker Job runs (`WorkerCommand`, which the controller builds and a
//! test parses back with the real command line), and the JSON lines a worker writes
//! (`WorkerLine`, written by `--progress json` and read by the controller).

use serde::{Deserialize, Serialize};

use crate::push::PushReport;
use crate::push::progress::ProgressLine;

/// What a worker is told to do: `imagepush push` with these options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The volume's mount point: the layout must resolve inside it.
    pub layout_root: String,
    /// The layout, at or below `layout_root`.
    pub layout: String,
    pub target: String,
    /// Push every named image of the layout under `target` (`registry[/prefix]`).
    pub mirror: bool,
    /// Where kubelet reads the termination message.
    pub termination_message: String,
    /// The mounted credentials Secret.
    pub registry_config: Option<String>,
    pub plain_http: bool,
    pub insecure_skip_tls_verify: bool,
    /// The mounted CA bundle.
    pub ca_file: Option<String>,
    pub reference: Option<String>,
    pub platform: Option<String>,
    pub mount_from: Vec<String>,
    pub max_concurrent_uploads: Option<u32>,
    /// `--referrers none`: push no referrers.
    pub no_referrers: bool,
}

impl WorkerCommand {
    /// The container's arguments (after the `imagepush` entrypoint).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> =
            ["push", "--progress", "json", "--termination-message"].map(String::from).to_vec();
        args.push(self.termination_message.clone());
        args.extend(["--layout-root".into(), self.layout_root.clone()]);
        let mut opt = |flag: &str, value: &Option<String>| {
            if let Some(v) = value {
                args.extend([flag.to_string(), v.clone()]);
            }
        };
        opt("--registry-config", &self.registry_config);
        opt("--ca-file", &self.ca_file);
        opt("--ref", &self.reference);
        opt("--platform", &self.platform);
        opt("--max-concurrent-uploads", &self.max_concurrent_uploads.map(|n| n.to_string()));
        if self.mirror {
            args.push("--mirror".into());
        }
        if self.no_referrers {
            args.extend(["--referrers".into(), "none".into()]);
        }
        if self.plain_http {
            args.push("--plain-http".into());
        }
        if self.insecure_skip_tls_verify {
            args.push("--insecure-skip-tls-verify".into());
        }
        for repo in &self.mount_from {
            args.extend(["--mount-from".into(), repo.clone()]);
        }
        // `--` keeps a layout path or target that starts with '-' from reading as a flag.
        args.extend(["--".into(), self.layout.clone(), self.target.clone()]);
        args
    }
}

/// One line of `--progress json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum WorkerLine {
    /// How far the push is (throttled).
    Progress { progress: ProgressLine },
    /// A request is tried again.
    #[serde(rename_all = "camelCase")]
    Retry { what: String, attempt: u32, max_attempts: u32, delay_ms: u64, error: String },
    /// The outcome, last.
    Report { report: Box<PushReport> },
}

impl WorkerLine {
    /// The line as written (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a worker line serializes")
    }

    /// A worker line, when `line` is one (other output, such as log lines, is not).
    pub fn parse(line: &str) -> Option<WorkerLine> {
        serde_json::from_str(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// What the controller builds is what the worker's command line reads, field by field.
    #[test]
    fn the_worker_reads_what_the_controller_writes() {
        let full = WorkerCommand {
            layout_root: "/var/lib/images".into(),
            layout: "/var/lib/images/-odd dir".into(),
            target: "registry.example.com:5000/team/app:v1".into(),
            mirror: false,
            termination_message: "/dev/termination-log".into(),
            registry_config: Some("/var/run/imagepush/credentials".into()),
            plain_http: true,
            insecure_skip_tls_verify: true,
            ca_file: Some("/var/run/imagepush/ca/ca.crt".into()),
            reference: Some("docker.io/library/app:v1".into()),
            platform: Some("linux/arm64/v8".into()),
            mount_from: vec!["team/base".into(), "registry.example.com:5000/other".into()],
            max_concurrent_uploads: Some(3),
            no_referrers: true,
        };
        let plain = WorkerCommand {
            layout_root: "/layout".into(),
            layout: "/layout".into(),
            target: "reg/app".into(),
            termination_message: "/dev/termination-log".into(),
            ..Default::default()
        };
        let mirror = WorkerCommand {
            target: "registry.example.com:5000/mirror".into(),
            mirror: true,
            reference: None,
            ..full.clone()
        };
        for sent in [full, plain, mirror] {
            let cli = Cli::try_parse_from(["imagepush".to_string()].into_iter().chain(sent.args()))
                .unwrap_or_else(|e| panic!("{e}\n{:?}", sent.args()));
            let Command::Push(got) = cli.command else { panic!("not a push") };
            let read = WorkerCommand {
                layout_root: got.layout_root.unwrap().display().to_string(),
                layout: got.layout.display().to_string(),
                target: got.target,
                mirror: got.mirror,
                termination_message: got.termination_message.unwrap().display().to_string(),
                registry_config: got.registry_config.map(|p| p.display().to_string()),
                plain_http: got.plain_http,
                insecure_skip_tls_verify: got.insecure_skip_tls_verify,
                ca_file: got.ca_file.map(|p| p.display().to_string()),
                reference: got.reference,
                platform: got.platform,
                mount_from: got.mount_from,
                max_concurrent_uploads: sent
                    .max_concurrent_uploads
                    .map(|_| got.max_concurrent_uploads as u32),
                no_referrers: got.referrers == crate::cli::push::ReferrersMode::None,
            };
            assert_eq!(read, sent);
            assert_eq!(got.progress, crate::cli::push::ProgressMode::Json);
            assert!(
                got.username.is_none() && !got.password_stdin,
                "no credential on the command line"
            );
        }
    }

    #[test]
    fn worker_lines_round_trip_and_other_lines_are_not_ones() {
        let lines = [
            WorkerLine::Progress {
                progress: ProgressLine {
                    bytes_done: 1,
                    bytes_total: 2,
                    blobs_done: 0,
                    blobs_total: 1,
                },
            },
            WorkerLine::Retry {
                what: "HEAD blob".into(),
                attempt: 1,
                max_attempts: 6,
                delay_ms: 300,
                error: "503".into(),
            },
            WorkerLine::Report { report: Box::new(PushReport::new("r/a:v1".into(), "r/a".into())) },
        ];
        for line in lines {
            let text = line.to_line();
            assert_eq!(WorkerLine::parse(&text), Some(line), "{text}");
        }
        let progress = WorkerLine::Progress { progress: ProgressLine::default() }.to_line();
        assert!(progress.starts_with(r#"{"event":"progress","progress":{"#), "{progress}");
        assert_eq!(WorkerLine::parse(r#"{"timestamp":"x","level":"INFO","fields":{}}"#), None);
        assert_eq!(WorkerLine::parse("not json"), None);
    }
}
