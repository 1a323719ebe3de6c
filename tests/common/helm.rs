//! The Helm chart (`charts/imagepush`) rendered without Helm by `e2e/helm-render` (Go's
//! text/template + sprig, Helm's engines), for `tests/chart.rs` and `tests/k8s_schemas.rs`.
//!
//! Needs `go` with Debian's `golang-github-masterminds-sprig-dev` and `golang-k8s-sigs-yaml-dev`
//! (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The release name and namespace every rendering uses.
pub const RELEASE: &str = "imagepush";
pub const RELEASE_NS: &str = "imagepush-system";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart_dir() -> PathBuf {
    repo().join("charts/imagepush")
}

/// `charts/imagepush/ci/all-options-values.yaml`, for `-f`.
pub fn all_options_values() -> String {
    chart_dir().join("ci/all-options-values.yaml").display().to_string()
}

/// Whether this is a CI run (`CI` set to something other than empty, `false` or `0`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

const INSTALL_GO: &str = "apt-get install golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev golang-github-xeipuuv-gojsonschema-dev \
     (.ci/run installs them)";

/// Builds `e2e/helm-render` once per test binary (GOPATH mode against Debian's Go packages,
/// offline). `Err` says what is missing when `go` is not installed.
pub fn renderer() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if Command::new("go").arg("version").output().map(|o| !o.status.success()).unwrap_or(true) {
            return Err(format!(
                "`go` is not installed, so charts/imagepush cannot be rendered: {INSTALL_GO}"
            ));
        }
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let bin = tmp.join("helm-render");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg("./e2e/helm-render")
            .current_dir(repo())
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOFLAGS", "")
            .env("GOCACHE", tmp.join("go-build-cache"))
            .output()
            .expect("run go build");
        assert!(
            out.status.success(),
            "building e2e/helm-render failed (are golang-github-masterminds-sprig-dev, golang-k8s-sigs-yaml-dev and golang-github-xeipuuv-gojsonschema-dev installed?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(bin)
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// Runs the renderer on `chart` as release `RELEASE` in `RELEASE_NS`; Ok(stdout) or
/// Err(stderr).
pub fn run_render(bin: &Path, chart: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args([RELEASE])
        .arg(chart)
        .args(["--namespace", RELEASE_NS])
        .args(args)
        .output()
        .expect("run helm-render");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every document of `charts/imagepush` rendered with `args` (`-o json`), as JSON objects.
pub fn render_json(bin: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let text = run_render(bin, &chart_dir(), &all)
        .unwrap_or_else(|e| panic!("rendering with {args:?} failed:\n{e}"));
    serde_json::from_str(&text).expect("helm-render -o json prints a JSON array")
}
