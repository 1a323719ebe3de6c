//! The official Kubernetes schemas, as PyPI's `kubernetes-validate` carries them (the OpenAPI
//! definitions of each Kubernetes release as JSON schemas), checked with `--strict`: a field
//! the schema does not know is an error, like a wrong type or a missing required field.
//!
//! Every document is validated against the oldest Kubernetes the project supports and the
//! newest the pinned `kubernetes-validate` carries. The tool is found at
//! `$IMAGEPUSH_KUBERNETES_VALIDATE`, else in the venv `.ci/run` makes
//! (`target/ci-venv/bin/kubernetes-validate`), else on `PATH`; without it the tests fail, they
//! never pass unchecked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The oldest supported Kubernetes (README: "Needs Kubernetes 1.26 or later").
pub const OLDEST: &str = "1.26";
/// The newest Kubernetes whose schemas the pinned `kubernetes-validate` carries (the package's
/// version is that Kubernetes version; `validator()` checks they agree).
pub const NEWEST: &str = "1.37";
pub const VERSIONS: [&str; 2] = [OLDEST, NEWEST];

/// Names the `kubernetes-validate` executable to use.
pub const ENV: &str = "IMAGEPUSH_KUBERNETES_VALIDATE";
/// Where `.ci/run` installs it, relative to the repository.
pub const VENV_BIN: &str = "target/ci-venv/bin/kubernetes-validate";

const INSTALL: &str = "python3 -m venv target/ci-venv && \
     target/ci-venv/bin/pip install -r .ci/kubernetes-validate-requirements.txt";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The `kubernetes-validate` executable (see the module comment); panics with how to install
/// it when there is none, or when it does not carry the schemas of `NEWEST`.
pub fn validator() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let tool = match std::env::var_os(ENV) {
            Some(p) => PathBuf::from(p),
            None => Some(repo().join(VENV_BIN))
                .filter(|p| p.is_file())
                .or_else(|| on_path("kubernetes-validate"))
                .unwrap_or_else(|| {
                    panic!(
                        "kubernetes-validate is missing, so nothing can be checked against the \
                         official Kubernetes schemas. Install it as .ci/run does: `{INSTALL}` \
                         (or set {ENV} to its path)"
                    )
                }),
        };
        let out = Command::new(&tool)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({ENV} or {VENV_BIN}): {e}", tool.display()));
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && version.starts_with(&format!("{NEWEST}.")),
            "{} --version says {version:?}: the tests validate against Kubernetes {NEWEST}, the \
             newest the pinned kubernetes-validate carries. Install the pinned one (`{INSTALL}`), \
             or, when the pin moved, move NEWEST in tests/common/k8s_schemas.rs with it.\n{}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        tool
    })
}

/// A document and the name failure messages give it.
pub type Named = (String, Value);

/// What is wrong with each document against the official schemas of `versions` (usually
/// `VERSIONS`), one entry per failing document: its name, the validator's lines about it and
/// the document. A document passes only when the validator says it passed against each
/// version; an unknown kind (the validator only warns) is a failure, so callers leave out what
/// Kubernetes does not define. The validator names the first problem of a document per
/// version, not all of them.
pub fn problems(docs: &[Named], versions: &[&str]) -> Vec<String> {
    assert!(!docs.is_empty() && !versions.is_empty(), "nothing to validate");
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, (_, doc))| {
            // JSON is YAML, which is what the validator reads.
            let file = dir.path().join(format!("{i:03}.json"));
            std::fs::write(&file, serde_json::to_string_pretty(doc).unwrap()).unwrap();
            file
        })
        .collect();
    let mut cmd = Command::new(validator());
    cmd.arg("--strict");
    for v in versions {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = cmd.args(&files).output().expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut problems = Vec::new();
    for ((name, doc), file) in docs.iter().zip(&files) {
        let mentions = format!(" {} ", file.display());
        let lines: Vec<&str> = stdout.lines().filter(|l| l.contains(&mentions)).collect();
        let passed = |v: &str| {
            lines.iter().any(|l| {
                l.starts_with(&format!("INFO{mentions}passed for resource "))
                    && l.ends_with(&format!(" against version {v}"))
            })
        };
        let bad: Vec<&str> = lines.iter().copied().filter(|l| !l.starts_with("INFO ")).collect();
        if !bad.is_empty() || !versions.iter().all(|v| passed(v)) {
            problems.push(format!(
                "{name} ({} {}):\n    {}\n  document:\n{}",
                doc["apiVersion"],
                doc["kind"],
                if lines.is_empty() {
                    vec!["(the validator said nothing about it)"]
                } else {
                    lines
                }
                .join("\n    ")
                .replace(&file.display().to_string(), "<document>"),
                serde_json::to_string_pretty(doc).unwrap()
            ));
        }
    }
    let unattributed: Vec<&str> = stdout
        .lines()
        .filter(|l| !files.iter().any(|f| l.contains(&format!(" {} ", f.display()))))
        .collect();
    if !unattributed.is_empty() {
        problems
            .push(format!("kubernetes-validate also said:\n    {}", unattributed.join("\n    ")));
    }
    if problems.is_empty() {
        assert!(
            out.status.success(),
            "kubernetes-validate failed although every document passed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else if !out.stderr.is_empty() {
        problems
            .push(format!("kubernetes-validate stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    problems
}

/// Fails, naming every document that breaks the official schemas of `versions`.
pub fn assert_valid(what: &str, docs: &[Named], versions: &[&str]) {
    let problems = problems(docs, versions);
    assert!(
        problems.is_empty(),
        "{what}: {} of {} documents do not validate against the official Kubernetes {} schemas \
         (kubernetes-validate --strict):\n\n{}",
        problems.len(),
        docs.len(),
        versions.join(" and "),
        problems.join("\n\n")
    );
    eprintln!(
        "{what}: {} documents valid against Kubernetes {}:\n  {}",
        docs.len(),
        versions.join(" and "),
        docs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join("\n  ")
    );
}

/// `Kind namespace/name` of a Kubernetes object, for messages.
pub fn describe(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("?");
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}
