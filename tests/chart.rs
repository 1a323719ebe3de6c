//! The Helm chart (`charts/imagepush`), rendered without Helm by `e2e/helm-render` (Go's
//! text/template + sprig, Helm's engines): with default and with non-default values, every
//! object parses as its Kubernetes type with no field the type does not know, the controller
//! Deployment is locked down and its arguments are accepted by the real command line, and the
//! RBAC rules allow every API call the real controller makes in an end-to-end run against the
//! API test double, and nothing it does not make.
//!
//! Needs `go` with Debian's `golang-github-masterminds-sprig-dev`, `golang-k8s-sigs-yaml-dev` and `golang-github-xeipuuv-gojsonschema-dev`
//! (`.ci/run` installs them). Without `go` the tests are skipped with a message, except in CI
//! (`CI=true`), where they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::cluster::{
    Cluster, condition, create, create_basic_auth_secret, create_pvc, is_ready, is_stalled,
    wait_for,
};
use common::helm::{self, RELEASE_NS, all_options_values, chart_dir, repo, run_render};
use common::{TestRegistry, simple_image};
use imagepush::controller::pod_settings::PodSettings;
use imagepush::crd::ImagePush;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::Digest as _;

/// The test's own API requests carry this user agent, so they can be told from the controller's.
const TEST_USER_AGENT: &str = "imagepush-chart-test";

/// The renderer, or `None` (with a message) when `go` is missing outside CI; in CI a missing
/// `go` fails the test.
fn helm_render() -> Option<&'static Path> {
    match helm::renderer() {
        Ok(bin) => Some(bin),
        Err(missing) => {
            assert!(!helm::ci(), "CI: {missing}");
            eprintln!("SKIPPED: {missing}");
            None
        }
    }
}

/// Skips the calling test (returns) when the renderer is unavailable outside CI.
macro_rules! renderer_or_skip {
    () => {
        match helm_render() {
            Some(bin) => bin,
            None => return,
        }
    };
}

/// The rendered manifests of the chart as JSON objects (`-o json`).
struct Rendered(Vec<Value>);

fn render(bin: &Path, args: &[&str]) -> Rendered {
    Rendered(helm::render_json(bin, args))
}

impl Rendered {
    fn kinds(&self) -> Vec<String> {
        self.0.iter().map(|o| o["kind"].as_str().unwrap().to_string()).collect()
    }
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|o| o["kind"] == kind).collect()
    }
    fn one<T: DeserializeOwned + Serialize>(&self, kind: &str) -> T {
        let found = self.of_kind(kind);
        assert_eq!(
            found.len(),
            1,
            "one {kind} expected, found {}: {:?}",
            found.len(),
            self.kinds()
        );
        typed(found[0])
    }
    fn typed_all<T: DeserializeOwned + Serialize>(&self, kind: &str) -> Vec<T> {
        self.of_kind(kind).into_iter().map(typed).collect()
    }
    fn controller(&self) -> (Deployment, Container) {
        let d: Deployment = self.one("Deployment");
        let c = d.spec.template.spec.as_ref().unwrap().containers[0].clone();
        (d, c)
    }
    /// The file `path` of the controller container as mounted from a rendered ConfigMap.
    fn mounted_file(&self, path: &str) -> String {
        let (d, c) = self.controller();
        let pod = d.spec.template.spec.unwrap();
        let mount = c
            .volume_mounts
            .unwrap_or_default()
            .into_iter()
            .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"));
        assert_eq!(mount.read_only, Some(true), "{mount:?}");
        let key = &path[mount.mount_path.len() + 1..];
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
        let name = volume.config_map.expect("a ConfigMap volume").name;
        let maps: Vec<ConfigMap> = self.typed_all("ConfigMap");
        let map = maps.iter().find(|m| m.metadata.name.as_deref() == Some(name.as_str()));
        let map =
            map.unwrap_or_else(|| panic!("the Deployment mounts ConfigMap {name}, not rendered"));
        map.data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .unwrap_or_else(|| panic!("{name} has no {key}"))
    }
    /// The worker defaults the controller reads, and the pod annotation that restarts it
    /// when they change.
    fn worker_defaults(&self) -> PodSettings {
        let (d, c) = self.controller();
        let arg = args_of(&c)
            .into_iter()
            .find_map(|a| a.strip_prefix("--worker-defaults=").map(String::from));
        let text = self.mounted_file(&arg.expect("--worker-defaults"));
        let annotations = d.spec.template.metadata.unwrap().annotations.unwrap();
        let digest = format!("{:x}", sha2::Sha256::digest(text.trim_end().as_bytes()));
        assert_eq!(annotations["checksum/worker-defaults"], digest, "the checksum covers the file");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker-defaults.yaml");
        std::fs::write(&path, &text).unwrap();
        PodSettings::load(&path).unwrap_or_else(|e| panic!("the controller refuses {text}: {e}"))
    }
}

/// Parses `value` as `T` and checks nothing was lost on the way: a field `T` does not know (a
/// typo, a misplaced key) would be dropped by serde and show up as a difference here.
fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let what = format!("{} {}", value["kind"], value["metadata"]["name"]);
    let t: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse: {e}\n{value:#}"));
    let back = serde_json::to_value(&t).unwrap();
    assert!(
        same_json(&back, value),
        "{what}: the typed round trip differs, so the manifest has fields the Kubernetes type does not know:\n{back:#}\n---\n{value:#}"
    );
    t
}

/// JSON equality where `64` and `64.0` are the same number (Go writes floats without `.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(u, v)| same_json(u, v))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, u)| y.get(k).is_some_and(|v| same_json(u, v)))
        }
        _ => a == b,
    }
}

fn args_of(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

/// Parses the container's arguments with the real `imagepush` command line.
fn assert_cli_accepts(c: &Container) {
    use clap::Parser;
    let mut argv = vec!["imagepush".to_string()];
    argv.extend(args_of(c));
    if let Err(e) = imagepush::cli::Cli::try_parse_from(&argv) {
        panic!("imagepush does not accept the Deployment's arguments {argv:?}:\n{e}");
    }
}

fn env_of(c: &Container) -> BTreeMap<String, Value> {
    c.env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name.clone(), serde_json::to_value(&e).unwrap()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The chart's files
// ---------------------------------------------------------------------------------------------

/// One source of truth: the chart ships the generated CRD byte for byte.
#[test]
fn chart_crd_is_the_generated_crd() {
    let dir = chart_dir().join("crds");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        ["imagepush.dev_imagepushes.yaml"],
        "charts/imagepush/crds/ holds exactly the generated CRD"
    );
    let top = std::fs::read(repo().join("crds/imagepush.dev_imagepushes.yaml")).unwrap();
    let chart = std::fs::read(dir.join("imagepush.dev_imagepushes.yaml")).unwrap();
    assert!(
        top == chart,
        "charts/imagepush/crds/imagepush.dev_imagepushes.yaml differs from crds/imagepush.dev_imagepushes.yaml: \
         copy it (`cp crds/imagepush.dev_imagepushes.yaml charts/imagepush/crds/`)"
    );
    assert_eq!(
        String::from_utf8(chart).unwrap(),
        imagepush::crd::crd_yaml(),
        "and both are what the types generate"
    );
}

/// The chart installs the version of the binary this tree builds.
#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["apiVersion"], "v2");
    // What Artifact Hub shows: the image of this version, the CRD by its real name, an
    // example the API server and the controller accept.
    let ann = &chart["annotations"];
    let yaml = |key: &str| -> Value {
        serde_saphyr::from_str(ann[key].as_str().unwrap_or_else(|| panic!("annotation {key}")))
            .unwrap()
    };
    assert_eq!(
        yaml("artifacthub.io/images")[0]["image"],
        format!("imagepush:{}", env!("CARGO_PKG_VERSION"))
    );
    use kube::CustomResourceExt;
    let crd = ImagePush::crd();
    let listed = &yaml("artifacthub.io/crds")[0];
    assert_eq!(listed["name"], crd.metadata.name.clone().unwrap());
    assert_eq!(
        (listed["kind"].as_str(), listed["version"].as_str()),
        (Some("ImagePush"), Some("v1alpha1"))
    );
    for example in yaml("artifacthub.io/crdsExamples").as_array().unwrap() {
        let ip: ImagePush = typed(example);
        imagepush::controller::validate::validate(&ip.spec, &[]).expect("the example validates");
    }
}

/// `helm test`: a pod (a test hook, after the release's objects) that asks the controller's
/// `/readyz` through the metrics Service, under the restricted Pod Security Standard.
#[test]
fn helm_test_asks_the_controller_through_its_service() {
    let bin = renderer_or_skip!();
    let r = render(bin, &["--set", "metrics.service.port=9443"]);
    assert_eq!(r.kinds().last().map(String::as_str), Some("Pod"), "hooks come last");
    let pod: k8s_openapi::api::core::v1::Pod = r.one("Pod");
    let ann = pod.metadata.annotations.clone().unwrap();
    assert_eq!(ann["helm.sh/hook"], "test");
    let svc: Service = r.one("Service");
    let url =
        format!("http://{}.{RELEASE_NS}.svc:9443/readyz", svc.metadata.name.as_deref().unwrap());
    let spec = pod.spec.unwrap();
    assert_eq!(spec.containers[0].command.as_ref().unwrap().last(), Some(&url));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let sc = spec.containers[0].security_context.clone().unwrap();
    assert_eq!(
        (sc.allow_privilege_escalation, sc.read_only_root_filesystem),
        (Some(false), Some(true))
    );
    assert_eq!(spec.security_context.unwrap().run_as_non_root, Some(true));
    let off = render(bin, &["--set", "metrics.service.enabled=false"]);
    assert!(off.of_kind("Pod").is_empty(), "no Service, no test");
}

/// values.schema.json: a misspelled key or a wrong type fails the install with the value's
/// path, as Helm reports it; every documented value passes.
#[test]
fn the_values_schema_refuses_typos_and_wrong_types() {
    let bin = renderer_or_skip!();
    let chart = chart_dir();
    for (set, want) in [
        ("replicaCount=two", "- replicaCount: Invalid type. Expected: integer, given: string"),
        ("controler.logLevel=debug", "- (root): Additional property controler is not allowed"),
        (
            "worker.resource.limits.memory=1Gi",
            "- worker: Additional property resource is not allowed",
        ),
        (
            "controller.logFormat=xml",
            "- controller.logFormat: controller.logFormat must be one of the following",
        ),
        ("image.digest=sha256:abc", "- image.digest: Does not match pattern"),
        ("metrics.port=70000", "- metrics.port: Must be less than or equal to 65535"),
    ] {
        let err = run_render(bin, &chart, &["--set", set]).unwrap_err();
        assert!(
            err.contains("values don't meet the specifications of the schema(s) in the following chart(s):\nimagepush:\n"),
            "{set}: {err}"
        );
        assert!(err.contains(want), "{set}: {err}");
    }
    // The schema knows every value (none refused by additionalProperties).
    let f = all_options_values();
    assert!(run_render(bin, &chart, &["-f", &f]).is_ok());
    assert!(run_render(bin, &chart, &["--set", "worker.resources.limits.cpu=2"]).is_ok());
}

/// More than one replica: a PodDisruptionBudget lets a drain take one at a time; one replica:
/// none (it would block every drain).
#[test]
fn a_disruption_budget_comes_with_more_than_one_replica() {
    let bin = renderer_or_skip!();
    assert!(render(bin, &[]).of_kind("PodDisruptionBudget").is_empty());
    let r = render(bin, &["--set", "replicaCount=3"]);
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = r.one("PodDisruptionBudget");
    let spec = pdb.spec.unwrap();
    assert_eq!(serde_json::to_value(&spec.max_unavailable).unwrap(), 1);
    let (d, _) = r.controller();
    let pod_labels = d.spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in spec.selector.unwrap().match_labels.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v), "selector {k}");
    }
}

/// Every value in values.yaml has a comment (on itself or on the object it belongs to), and
/// every commented value is listed in the chart's README.
#[test]
fn every_value_is_commented_and_documented() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let reference = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    // (indent, key) of the ancestors, and whether each has a comment.
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    let mut previous_comment = false;
    let mut missing_comment = Vec::new();
    let mut missing_doc = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            previous_comment = false;
            continue;
        }
        if trimmed.starts_with('#') {
            previous_comment = true;
            continue;
        }
        if trimmed.starts_with("- ") {
            previous_comment = false;
            continue; // list items belong to their key
        }
        let Some((key, rest)) = trimmed.split_once(':') else { continue };
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        let covered = previous_comment || stack.iter().any(|(_, _, c)| *c);
        let path: Vec<&str> = stack.iter().map(|(_, k, _)| k.as_str()).chain([key]).collect();
        let path = path.join(".");
        let leaf = !rest.trim().is_empty();
        if leaf && !covered {
            missing_comment.push(path.clone());
        }
        if previous_comment && !reference.contains(&format!("`{path}`")) {
            missing_doc.push(path.clone());
        }
        stack.push((indent, key.to_string(), previous_comment));
        previous_comment = false;
    }
    assert!(missing_comment.is_empty(), "values without a comment: {missing_comment:?}");
    assert!(
        missing_doc.is_empty(),
        "values missing from charts/imagepush/README.md: {missing_doc:?}"
    );
}

/// The image definition cannot be built here (no container engine): check what can be read.
#[test]
fn dockerfile_builds_the_one_binary_for_both_roles() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: build, then runtime: {froms:?}");
    assert!(
        froms[1].starts_with("FROM gcr.io/distroless/") && froms[1].ends_with(":nonroot"),
        "{}",
        froms[1]
    );
    assert!(text.contains("cargo build --release --locked"), "a locked release build");
    for copied in
        lines.iter().filter_map(|l| l.strip_prefix("COPY ")).filter(|l| !l.starts_with("--from"))
    {
        for src in copied.split_whitespace().rev().skip(1) {
            assert!(repo().join(src).exists(), "COPY {src}: not in the repository");
        }
    }
    assert!(
        lines.contains(&"USER 65532:65532"),
        "runs as the distroless nonroot user, as the worker Job expects"
    );
    assert!(lines.contains(&r#"ENTRYPOINT ["imagepush"]"#));
    // Worker Jobs run `command: [imagepush]`: it must be on distroless' PATH.
    assert!(text.contains("/usr/local/bin/imagepush"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target/" || l.trim() == "target"),
        ".dockerignore keeps target/ out"
    );
}

// ---------------------------------------------------------------------------------------------
// The renderer itself: Helm's semantics on a fixture chart
// ---------------------------------------------------------------------------------------------

#[test]
fn renderer_reproduces_helm_semantics() {
    let bin = renderer_or_skip!();
    let fixture = repo().join("e2e/helm-render/testdata/semantics");
    let out = run_render(
        bin,
        &fixture,
        &["--set", "count=7,nested.list={a,b}", "--set", "removeMe=null"],
    )
    .unwrap();
    for want in [
        "# Source: semantics/templates/configmap.yaml",
        "name: imagepush-cm",
        "namespace: imagepush-system",
        // include + nindent of a define from a partial
        "  labels:\n    app: semantics\n    chart: semantics-1.2.3\n",
        // tpl renders a value as a template, with access to the chart's defines
        "tpl: \"release imagepush says from-a\"",
        // two partials define the same name: Helm parses _b.tpl before _a.tpl, the last wins
        "word: from-a",
        // toYaml (sigs.k8s.io/yaml: sorted keys, no trailing newline) and --set lists
        "  nested: |\n    a: one\n    b: 2\n    list:\n    - a\n    - b\n",
        // a missing value prints nothing, not "<no value>"
        "missing: \"\"",
        // null from --set deletes a default
        "removed: \"false\"",
        // --set types integers as int64
        "countType: \"int64\"",
        "count: \"7\"",
        // lookup finds nothing without a cluster
        "lookup: \"0\"",
        "hasApps: \"true\"",
        "hasMonitoring: \"false\"",
        "template: \"semantics/templates/configmap.yaml\"",
        "appVersion: \"9.9\"",
        "revision: \"1\"",
        "service: \"Helm\"",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains("not a manifest"), "NOTES.txt is not a manifest");
    assert!(!out.contains("<no value>"));

    // JSON: values.yaml numbers are float64 (YAML through JSON, as Helm reads them); YAML 1.1
    // booleans (`y`) are what Helm's YAML library makes of them; comment-only documents vanish.
    let json: Vec<Value> =
        serde_json::from_str(&run_render(bin, &fixture, &["-o", "json"]).unwrap()).unwrap();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["data"]["countType"], "float64");
    assert_eq!(json[0]["data"]["nested"], "a: one\nb: 2\nlist:\n- x\n- true\n");
    assert_eq!(json[0]["data"]["removed"], "true");

    // -f files, later --set wins; `required` fails rendering with its message.
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(values.path(), "required: from-file\ngreeting: null\n").unwrap();
    let f = values.path().to_str().unwrap();
    let json: Vec<Value> = serde_json::from_str(
        &run_render(bin, &fixture, &["-o", "json", "-f", f, "--set", "required=from-set"]).unwrap(),
    )
    .unwrap();
    assert_eq!(json.len(), 2);
    assert_eq!(json[1]["metadata"]["name"], "from-set");
    let err = run_render(bin, &fixture, &["--set", "mustFail=true"]).unwrap_err();
    assert!(err.contains("mustFail says: a required value is missing"), "{err}");
    assert!(err.contains("fails.yaml"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Default values
// ---------------------------------------------------------------------------------------------

#[test]
fn default_values_render_a_locked_down_controller() {
    let bin = renderer_or_skip!();
    let r = render(bin, &[]);
    assert_eq!(
        r.kinds(),
        [
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "Pod"
        ]
    );
    // The worker defaults are the binary's own.
    assert_eq!(r.worker_defaults(), PodSettings::default());
    let sa: ServiceAccount = r.one("ServiceAccount");
    let role: ClusterRole = r.one("ClusterRole");
    let binding: ClusterRoleBinding = r.one("ClusterRoleBinding");
    let svc: Service = r.one("Service");
    let (d, c) = r.controller();

    assert_eq!(d.metadata.namespace.as_deref(), Some(RELEASE_NS));
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.automount_service_account_token, Some(true));

    // Non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp.
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.privileged, None);
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(caps.add, None);

    // Probes on the metrics port, which is where --metrics-addr listens.
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("metrics"), 8080));
    for (probe, path) in [(&c.liveness_probe, "/healthz"), (&c.readiness_probe, "/readyz")] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(serde_json::to_value(&get.port).unwrap(), "metrics");
    }

    // The one binary, as controller, with the chart's own image as the worker image.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(c.image.as_deref(), Some(format!("imagepush:{version}").as_str()));
    let args = args_of(&c);
    assert_eq!(args[0], "controller");
    for want in [
        format!("--worker-image=imagepush:{version}"),
        "--worker-image-pull-policy=IfNotPresent".into(),
        "--metrics-addr=0.0.0.0:8080".into(),
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    for absent in
        ["--leader-election", "--namespace", "--allowed-host-path-root", "--allowed-target"]
    {
        assert!(!args.iter().any(|a| a.starts_with(absent)), "{absent} in {args:?}");
    }
    assert_cli_accepts(&c);
    let env = env_of(&c);
    assert_eq!(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    let resources = c.resources.as_ref().unwrap();
    assert!(resources.requests.as_ref().unwrap().contains_key("memory"));
    assert!(resources.limits.as_ref().unwrap().contains_key("memory"));

    // Cluster-wide role bound to the controller's ServiceAccount; no lease role without
    // leader election; Secrets only for the existence check.
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), Some(&subject.name), subject.namespace.as_deref()),
        ("ServiceAccount", sa.metadata.name.as_ref(), Some(RELEASE_NS))
    );
    let rules = role.rules.clone().unwrap();
    assert!(
        rules.iter().any(|r| r.resources.as_ref().unwrap().contains(&"secrets".to_string())
            && r.verbs == ["get"])
    );
    // Delete only on its own worker Jobs (a superseded generation, a worker that can never
    // start); no wildcards, no update.
    let deletes = |r: &&PolicyRule| r.verbs.iter().any(|v| v == "delete");
    assert!(
        rules
            .iter()
            .filter(deletes)
            .all(|r| r.api_groups.as_deref() == Some(&["batch".to_string()][..])
                && r.resources.as_deref() == Some(&["jobs".to_string()][..])),
        "delete only on Jobs: {rules:?}"
    );
    assert!(
        rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*" || v == "update")
            && !r.resources.as_ref().unwrap().contains(&"*".to_string())),
        "no wildcards, no update: {rules:?}"
    );

    // The metrics Service selects the controller pods and targets the named port.
    let svc_spec = svc.spec.as_ref().unwrap();
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    for (k, v) in svc_spec.selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "selector {k}");
    }
    assert_eq!(
        serde_json::to_value(&svc_spec.ports.as_ref().unwrap()[0].target_port).unwrap(),
        "metrics"
    );
}

// ---------------------------------------------------------------------------------------------
// Non-default values
// ---------------------------------------------------------------------------------------------

#[test]
fn non_default_values_reach_every_object() {
    let bin = renderer_or_skip!();
    let f = all_options_values();
    let r = render(bin, &["-f", &f]);
    assert_eq!(
        r.kinds(),
        [
            "PodDisruptionBudget",
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "Deployment",
            "ServiceMonitor",
            "Pod"
        ]
    );
    let sa: ServiceAccount = r.one("ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some("imagepush-sa"));
    assert_eq!(sa.metadata.annotations.as_ref().unwrap()["example.com/role"], "pusher");
    let (d, c) = r.controller();
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("imagepush-sa"));
    assert_eq!(pod.node_selector.as_ref().unwrap()["kubernetes.io/os"], "linux");
    assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
    assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "platform-pull");
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert_eq!(
        spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()["team"],
        "platform"
    );
    assert_eq!(
        c.image.as_deref(),
        Some(
            "registry.example.com/platform/imagepush@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "1");
    assert_eq!(limits["memory"].0, "512Mi");
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9090);
    let args = args_of(&c);
    for want in [
        "--worker-image=registry.example.com/platform/imagepush-worker:0.1.0",
        "--worker-image-pull-policy=IfNotPresent",
        "--metrics-addr=0.0.0.0:9090",
        "--progress-interval=2",
        "--default-timeout=1800",
        "--namespace=builds",
        "--allowed-host-path-root=/var/lib/image-bundles",
        "--allowed-host-path-root=/srv/layouts",
        "--allowed-target=registry.example.com/prod/**",
        "--allowed-target=registry.internal:5000/team-*/app",
        "--leader-election",
        "--lease-name=imagepush-leader",
        "--lease-namespace=imagepush-system",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    assert_cli_accepts(&c);
    let env = env_of(&c);
    assert_eq!(env["IMAGEPUSH_LOG"]["value"], "debug");
    assert_eq!(env["EXTRA"]["value"], "1");
    // Every worker value reaches the controller's defaults file.
    let w = r.worker_defaults();
    assert_eq!(w.resources.limits["cpu"].0, "2");
    assert_eq!(w.resources.requests["memory"].0, "128Mi");
    assert_eq!(w.tolerations[0].value.as_deref(), Some("builds"));
    assert_eq!(w.node_selector["pool"], "builds");
    assert!(w.affinity.as_ref().unwrap().node_affinity.is_some());
    assert_eq!(w.priority_class_name.as_deref(), Some("batch-low"));
    assert_eq!(w.image_pull_secrets[0].name, "worker-pull");
    assert_eq!(w.env[0].name, "HTTPS_PROXY");
    assert_eq!(w.labels["cost-center"], "builds");
    assert_eq!(w.annotations["example.com/owner"], "platform");

    // Watching one namespace: a Role there, no cluster-wide permission at all; checkSecrets
    // off: no Secret access; the lease Role is in the release namespace, by name.
    assert!(r.of_kind("ClusterRole").is_empty() && r.of_kind("ClusterRoleBinding").is_empty());
    let roles: Vec<Role> = r.typed_all("Role");
    let controller_role =
        roles.iter().find(|r| r.metadata.namespace.as_deref() == Some("builds")).unwrap();
    assert!(!serde_json::to_string(controller_role).unwrap().contains("secrets"));
    let lease_role =
        roles.iter().find(|r| r.metadata.namespace.as_deref() == Some(RELEASE_NS)).unwrap();
    let lease_rules = lease_role.rules.as_ref().unwrap();
    assert!(
        lease_rules.iter().all(|r| r.resources.as_deref() == Some(&["leases".to_string()][..]))
    );
    assert!(
        lease_rules
            .iter()
            .any(|r| r.resource_names.as_deref() == Some(&["imagepush-leader".to_string()][..]))
    );
    let bindings: Vec<RoleBinding> = r.typed_all("RoleBinding");
    for b in &bindings {
        assert_eq!(b.subjects.as_ref().unwrap()[0].name, "imagepush-sa");
        assert_eq!(b.subjects.as_ref().unwrap()[0].namespace.as_deref(), Some(RELEASE_NS));
        let role =
            roles.iter().find(|r| r.metadata.name.as_ref() == Some(&b.role_ref.name)).unwrap();
        assert_eq!(
            role.metadata.namespace, b.metadata.namespace,
            "a RoleBinding refers to a Role of its namespace"
        );
    }

    let svc: Service = r.one("Service");
    assert_eq!(svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 9443);
    assert_eq!(svc.metadata.annotations.as_ref().unwrap()["prometheus.io/scrape"], "true");
    // ServiceMonitor: no k8s-openapi type; checked as JSON against the Service it scrapes.
    let sm = &r.of_kind("ServiceMonitor")[0];
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], "monitoring");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([RELEASE_NS]));
    assert_eq!(
        sm["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}])
    );
    let svc_labels = svc.metadata.labels.clone().unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            svc_labels.get(k).map(|s| s.as_str()),
            v.as_str(),
            "ServiceMonitor selector {k}"
        );
    }
    assert_eq!(
        svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].name.as_deref(),
        Some("metrics")
    );
}

/// `--include-crds` (what `helm install` applies first): the CRD is a valid
/// CustomResourceDefinition, the same the types generate.
#[test]
fn crds_render_as_a_custom_resource_definition() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    let bin = renderer_or_skip!();
    let r = render(bin, &["--include-crds"]);
    assert_eq!(r.kinds()[0], "CustomResourceDefinition");
    let crd: CustomResourceDefinition = r.one("CustomResourceDefinition");
    assert!(same_json(
        &serde_json::to_value(&crd).unwrap(),
        &serde_json::to_value(ImagePush::crd()).unwrap()
    ));
}

#[test]
fn set_overrides_files_and_leader_election_follows_replicas() {
    let bin = renderer_or_skip!();
    let f = all_options_values();
    let (d, c) =
        render(bin, &["-f", &f, "--set", "replicaCount=1,controller.leaderElection.enabled=false"])
            .controller();
    assert_eq!(d.spec.replicas, Some(1));
    assert!(!args_of(&c).contains(&"--leader-election".to_string()));
    let r = render(bin, &["--set", "controller.leaderElection.enabled=true"]);
    let (_, c) = r.controller();
    assert!(args_of(&c).contains(&"--leader-election".to_string()));
    assert_eq!(r.of_kind("Role").len(), 1, "the lease Role");
    let r = render(bin, &["--set", "replicaCount=3"]);
    assert!(args_of(&r.controller().1).contains(&"--leader-election".to_string()));
    // Turning things off.
    let r = render(
        bin,
        &[
            "--set",
            "rbac.create=false,serviceAccount.create=false,serviceAccount.name=existing,metrics.service.enabled=false",
        ],
    );
    assert_eq!(r.kinds(), ["ConfigMap", "Deployment"], "the worker defaults are always there");
    assert_eq!(
        r.controller().0.spec.template.spec.unwrap().service_account_name.as_deref(),
        Some("existing")
    );
}

/// One strategy for every replica count and leader-election setting: `helm upgrade` between
/// them must not change the strategy's type, which the API refuses while `rollingUpdate` is
/// set (helm/helm#5144). No surge and one unavailable: an old pod goes before its replacement
/// comes, so there are never more controller pods than replicas.
#[test]
fn the_deployment_strategy_is_the_same_for_every_replica_count() {
    use k8s_openapi::api::apps::v1::{DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let bin = renderer_or_skip!();
    let promised = DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(0)),
            max_unavailable: Some(IntOrString::Int(1)),
        }),
    };
    for (replicas, leader_election) in [(1, false), (1, true), (2, false), (2, true)] {
        let set =
            format!("replicaCount={replicas},controller.leaderElection.enabled={leader_election}");
        let (d, c) = render(bin, &["--set", &set]).controller();
        assert_eq!(
            args_of(&c).contains(&"--leader-election".to_string()),
            leader_election || replicas > 1,
            "{set}"
        );
        assert_eq!(d.spec.replicas, Some(replicas));
        assert_eq!(d.spec.strategy.as_ref(), Some(&promised), "{set}");
    }
}

#[test]
fn bad_values_fail_rendering_with_a_reason() {
    let bin = renderer_or_skip!();
    for (set, wanted) in [
        // The schema's word, before any template runs.
        (
            "controller.allowedHostPathRoots={relative/dir}",
            "controller.allowedHostPathRoots.0: Does not match pattern '^/'",
        ),
        ("controller.allowedHostPathRoots={/}", "whole node"),
        (
            "serviceMonitor.enabled=true,metrics.service.enabled=false",
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
        ("serviceAccount.create=false", "serviceAccount.name is required"),
        ("image.repository=", "image.repository: String length must be greater than or equal to 1"),
    ] {
        let err = run_render(bin, &chart_dir(), &["--set", set]).expect_err(set);
        assert!(err.contains(wanted), "{set}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC against the calls of a real controller
// ---------------------------------------------------------------------------------------------

/// One API request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    group: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    verb: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// Maps a request to RBAC attributes; `Ok(None)` for discovery and /version (non-resource
/// URLs every authenticated user may GET).
fn rbac_call(method: &str, path: &str, query: &str) -> Result<Option<Call>, String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["version"] | ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _] => {
            return Ok(None);
        }
        ["api", "v1", rest @ ..] => ("".to_string(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return Err(format!("not an API path: {path}")),
    };
    let (group, mut rest) = rest;
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    let (namespace, resource, name, sub) = match rest {
        ["namespaces", ns, resource, tail @ ..] => {
            (Some(ns.to_string()), *resource, tail.first().copied(), tail.get(1).copied())
        }
        [resource, tail @ ..] => (None, *resource, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(format!("no resource in {path}")),
    };
    let watch = watch_path
        || query
            .split('&')
            .any(|kv| matches!(kv.split_once('='), Some(("watch", v)) if v == "true" || v == "1"));
    let verb = match (method, name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(format!("unexpected method {method} {path}")),
    };
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    // A POST names no object (its name is in the body), a sub-resource's name is the parent's.
    let name = if verb == "create" && sub.is_none() { None } else { name.map(str::to_string) };
    Ok(Some(Call { group, resource, verb: verb.to_string(), namespace, name }))
}

/// A rule granted to the controller's ServiceAccount, where it applies.
#[derive(Debug, Clone)]
struct Grant {
    /// `None`: everywhere (ClusterRole through a ClusterRoleBinding).
    namespace: Option<String>,
    role: String,
    rule: PolicyRule,
}

fn rule_matches(rule: &PolicyRule, call: &Call) -> bool {
    let any = |list: &Option<Vec<String>>, want: &str| {
        list.as_ref().is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
    };
    any(&rule.api_groups, &call.group)
        && any(&rule.resources, &call.resource)
        && rule.verbs.iter().any(|v| v == "*" || *v == call.verb)
        && match &rule.resource_names {
            Some(names) if !names.is_empty() => {
                call.name.as_ref().is_some_and(|n| names.contains(n))
            }
            _ => true,
        }
}

fn grant_allows(g: &Grant, call: &Call) -> bool {
    (g.namespace.is_none() || g.namespace == call.namespace) && rule_matches(&g.rule, call)
}

/// Every rule bound to the ServiceAccount `sa` of `sa_ns` in the rendered objects.
fn grants(r: &Rendered, sa: &str, sa_ns: &str) -> Vec<Grant> {
    let cluster_roles: Vec<ClusterRole> = r.typed_all("ClusterRole");
    let roles: Vec<Role> = r.typed_all("Role");
    let binds_sa = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(sa_ns)
        })
    };
    let mut out = Vec::new();
    for b in r.typed_all::<ClusterRoleBinding>("ClusterRoleBinding") {
        if !binds_sa(&b.subjects) {
            continue;
        }
        assert_eq!(b.role_ref.kind, "ClusterRole");
        let role = cluster_roles
            .iter()
            .find(|c| c.metadata.name.as_ref() == Some(&b.role_ref.name))
            .expect("bound ClusterRole is rendered");
        for rule in role.rules.clone().unwrap_or_default() {
            out.push(Grant { namespace: None, role: b.role_ref.name.clone(), rule });
        }
    }
    for b in r.typed_all::<RoleBinding>("RoleBinding") {
        if !binds_sa(&b.subjects) {
            continue;
        }
        let ns = b.metadata.namespace.clone();
        let rules = match b.role_ref.kind.as_str() {
            "Role" => roles
                .iter()
                .find(|x| {
                    x.metadata.name.as_ref() == Some(&b.role_ref.name) && x.metadata.namespace == ns
                })
                .expect("bound Role is rendered in the binding's namespace")
                .rules
                .clone(),
            _ => cluster_roles
                .iter()
                .find(|c| c.metadata.name.as_ref() == Some(&b.role_ref.name))
                .unwrap()
                .rules
                .clone(),
        };
        for rule in rules.unwrap_or_default() {
            out.push(Grant { namespace: ns.clone(), role: b.role_ref.name.clone(), rule });
        }
    }
    out
}

/// Granted but possibly unused in a short run, and why.
const MAY_BE_UNUSED: &[(&str, &str, &str, &str)] = &[
    (
        "events.k8s.io",
        "events",
        "patch",
        "kube-runtime's Recorder patches an Event only when the same event repeats within its cache window",
    ),
    (
        "batch",
        "jobs",
        "delete",
        "only when a spec change supersedes a running push or a worker can never start (operator_e2e covers both)",
    ),
    (
        "batch",
        "jobs",
        "get",
        "only when creating a Job answers 409, to see whether the Job there is the ImagePush's",
    ),
    (
        "",
        "events",
        "list",
        "only once a worker's start has waited 5 s, which a fast push never does",
    ),
    (
        "imagepush.dev",
        "imagepushes",
        "patch",
        "only once per object whose status an earlier version wrote with a merge patch (operator_e2e covers it)",
    ),
];

/// Checks the calls against the grants both ways; returns a report of problems.
fn rbac_problems(calls: &[Call], grants: &[Grant]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut denied: BTreeSet<&Call> = BTreeSet::new();
    for call in calls {
        if !grants.iter().any(|g| grant_allows(g, call)) {
            denied.insert(call);
        }
    }
    for call in denied {
        problems.push(format!("the controller made a call no rule allows: {call:?}"));
    }
    for g in grants {
        for group in g.rule.api_groups.iter().flatten() {
            for resource in g.rule.resources.iter().flatten() {
                for verb in &g.rule.verbs {
                    let used = calls.iter().any(|c| {
                        c.group == *group
                            && c.resource == *resource
                            && c.verb == *verb
                            && grant_allows(g, c)
                    });
                    let excused = MAY_BE_UNUSED
                        .iter()
                        .any(|(gr, res, v, _)| gr == group && res == resource && v == verb);
                    if !used && !excused {
                        problems.push(format!(
                            "{} grants {verb} on {group}/{resource} (namespace {:?}) but the controller never used it",
                            g.role, g.namespace
                        ));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn rbac_call_mapping() {
    let c = |m, p, q| rbac_call(m, p, q).unwrap();
    assert_eq!(c("GET", "/version", ""), None);
    assert_eq!(c("GET", "/apis/batch/v1", ""), None);
    let call = c("GET", "/apis/imagepush.dev/v1alpha1/imagepushes", "watch=true&resourceVersion=1")
        .unwrap();
    assert_eq!(
        (call.group.as_str(), call.resource.as_str(), call.verb.as_str(), call.namespace),
        ("imagepush.dev", "imagepushes", "watch", None)
    );
    let call = c("GET", "/api/v1/namespaces/a/pods/p-1/log", "container=push").unwrap();
    assert_eq!(
        (call.resource.as_str(), call.verb.as_str(), call.name.as_deref()),
        ("pods/log", "get", Some("p-1"))
    );
    let call =
        c("PATCH", "/apis/imagepush.dev/v1alpha1/namespaces/a/imagepushes/x/status", "").unwrap();
    assert_eq!((call.resource.as_str(), call.verb.as_str()), ("imagepushes/status", "patch"));
    assert_eq!(c("POST", "/apis/batch/v1/namespaces/a/jobs", "").unwrap().verb, "create");
    assert_eq!(c("GET", "/api/v1/namespaces/a/secrets", "").unwrap().verb, "list");
    assert_eq!(c("DELETE", "/api/v1/namespaces/a/secrets/s", "").unwrap().verb, "delete");
    assert_eq!(
        c("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l", "").unwrap().verb,
        "update"
    );
    assert_eq!(c("GET", "/api/v1/watch/namespaces/a/pods", "").unwrap().verb, "watch");
    // Names restrict: a rule with resourceNames allows only those objects.
    let rule = PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        resource_names: Some(vec!["mine".into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    assert!(rule_matches(
        &rule,
        &c("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/mine", "").unwrap()
    ));
    assert!(!rule_matches(
        &rule,
        &c("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/other", "").unwrap()
    ));
}

/// `imagepush controller` started the way the rendered Deployment starts it (its args and
/// env, with the in-cluster pieces replaced: a kubeconfig for the API double, a free local
/// port for --metrics-addr). Killed on drop.
struct DeployedController {
    child: Child,
    metrics_port: u16,
    log: PathBuf,
}

impl Drop for DeployedController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_as_deployed(cluster: &Cluster, r: &Rendered, pod_name: &str) -> DeployedController {
    let (_, container) = r.controller();
    let container = &container;
    let metrics_port = common::free_port();
    let mut args = Vec::new();
    for a in args_of(container) {
        if a.starts_with("--metrics-addr=") {
            args.push(format!("--metrics-addr=127.0.0.1:{metrics_port}"));
        } else if let Some(path) = a.strip_prefix("--worker-defaults=") {
            // The ConfigMap as kubelet would mount it.
            let file = cluster.dir.path().join(format!("{pod_name}-worker-defaults.yaml"));
            std::fs::write(&file, r.mounted_file(path)).unwrap();
            args.push(format!("--worker-defaults={}", file.display()));
        } else {
            args.push(a);
        }
    }
    assert_eq!(args[0], "controller");
    args.insert(1, format!("--kubeconfig={}", cluster.kubeconfig.display()));
    let log = cluster.dir.path().join(format!("{pod_name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagepush"));
    cmd.args(&args).env_remove("KUBECONFIG").stdout(out.try_clone().unwrap()).stderr(out);
    for e in container.env.clone().unwrap_or_default() {
        let value = match (&e.value, e.value_from.as_ref().and_then(|v| v.field_ref.as_ref())) {
            (Some(v), _) => v.clone(),
            (None, Some(f)) if f.field_path == "metadata.name" => pod_name.to_string(),
            (None, Some(f)) if f.field_path == "metadata.namespace" => RELEASE_NS.to_string(),
            other => panic!("env {} has a source the test cannot provide: {other:?}", e.name),
        };
        cmd.env(&e.name, value);
    }
    let child = cmd.spawn().expect("start imagepush controller");
    DeployedController { child, metrics_port, log }
}

/// A kube client whose requests are marked as the test's own.
async fn test_client(cluster: &Cluster) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    config.headers.push((
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_static(TEST_USER_AGENT),
    ));
    kube::Client::try_from(config).unwrap()
}

fn image_push(ns: &str, name: &str, target: &str, path: &str, extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "source": {"persistentVolumeClaim": {"claimName": "layouts", "path": path}},
            "target": target,
            "connection": {"plainHttp": true}
        }
    });
    for (k, val) in extra.as_object().cloned().unwrap_or_default() {
        v["spec"][k] = val;
    }
    v
}

/// The controller's own requests from the double's log, as RBAC calls (after checking that
/// the rest are discovery).
fn controller_calls(cluster: &Cluster) -> Vec<Call> {
    let mut calls = Vec::new();
    for r in cluster.requests() {
        if r["userAgent"] == TEST_USER_AGENT {
            continue;
        }
        let (method, path, query) = (
            r["method"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
            r["query"].as_str().unwrap_or(""),
        );
        let Some(call) = rbac_call(method, path, query).unwrap() else { continue };
        // The double's own reading of the request agrees.
        if let Some(verb) = r["verb"].as_str() {
            assert_eq!(verb, call.verb, "{r}");
            assert_eq!(r["apiGroup"].as_str(), Some(call.group.as_str()), "{r}");
        }
        calls.push(call);
    }
    calls
}

async fn check_probes(controller: &DeployedController, container: &Container) {
    for (probe, path) in
        [(&container.liveness_probe, "/healthz"), (&container.readiness_probe, "/readyz")]
    {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        let url = format!("http://127.0.0.1:{}{path}", controller.metrics_port);
        let mut status = 0;
        for _ in 0..50 {
            if let Ok(resp) = common::http_client().get(&url).send().await {
                status = resp.status().as_u16();
                if status == 200 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, 200, "{url}");
    }
}

fn assert_rbac(cluster: &Cluster, r: &Rendered, controller: &DeployedController) -> Vec<Call> {
    let (d, _) = r.controller();
    let sa = d.spec.template.spec.unwrap().service_account_name.unwrap();
    let grants = grants(r, &sa, RELEASE_NS);
    let calls = controller_calls(cluster);
    assert!(calls.len() > 10, "too few controller calls seen: {calls:?}");
    let problems = rbac_problems(&calls, &grants);
    let distinct: BTreeSet<String> = calls
        .iter()
        .map(|c| format!("{} {}/{} ns={:?}", c.verb, c.group, c.resource, c.namespace))
        .collect();
    eprintln!(
        "controller calls seen:\n  {}",
        distinct.iter().cloned().collect::<Vec<_>>().join("\n  ")
    );
    assert!(
        problems.is_empty(),
        "RBAC does not match what the controller does:\n  {}\ncalls seen:\n  {}\n--- controller log ---\n{}",
        problems.join("\n  "),
        distinct.into_iter().collect::<Vec<_>>().join("\n  "),
        std::fs::read_to_string(&controller.log).unwrap_or_default()
    );
    calls
}

/// Default values plus two replicas (leader election): ClusterRole, lease Role. A push with
/// credentials succeeds, one with wrong credentials stalls, one naming a missing Secret and
/// one naming a missing claim stall before any Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_covers_exactly_the_calls_of_a_cluster_wide_controller() {
    let bin = renderer_or_skip!();
    let r = render(bin, &["--set", "replicaCount=2,controller.progressInterval=1"]);
    let (_, container) = r.controller();
    assert!(args_of(&container).contains(&"--leader-election".to_string()));

    let registry = TestRegistry::start_with_htpasswd("alice", "right-password");
    let cluster = Cluster::start();
    let client = test_client(&cluster).await;
    let ns = "team-a";
    create_pvc(&client, ns, "layouts").await;
    simple_image(&cluster.pvc_dir(ns, "layouts").join("app"), "v1", &[3000, 1000], 21);
    create_basic_auth_secret(&client, ns, "good", "right-password").await;
    create_basic_auth_secret(&client, ns, "bad", "wrong-password").await;

    let controller = start_as_deployed(&cluster, &r, "imagepush-0");
    check_probes(&controller, &container).await;
    let api: Api<ImagePush> = Api::namespaced(client.clone(), ns);
    let host = registry.host();
    create(
        &api,
        image_push(
            ns,
            "good",
            &format!("{host}/team/app:v1"),
            "app",
            json!({"credentialsSecret": {"name": "good"}}),
        ),
    )
    .await;
    create(
        &api,
        image_push(
            ns,
            "bad",
            &format!("{host}/team/app:v2"),
            "app",
            json!({"credentialsSecret": {"name": "bad"}}),
        ),
    )
    .await;
    create(
        &api,
        image_push(
            ns,
            "nosecret",
            &format!("{host}/team/app:v3"),
            "app",
            json!({"credentialsSecret": {"name": "absent"}}),
        ),
    )
    .await;
    let mut noclaim = image_push(ns, "noclaim", &format!("{host}/team/app:v4"), "app", json!({}));
    noclaim["spec"]["source"]["persistentVolumeClaim"]["claimName"] = json!("absent");
    create(&api, noclaim).await;

    let timeout = Duration::from_secs(60);
    wait_for(&cluster, &api, "good", timeout, "Ready", is_ready).await;
    let bad = wait_for(&cluster, &api, "bad", timeout, "Stalled", is_stalled).await;
    assert_eq!(condition(&bad, "Stalled").unwrap().1, "AuthenticationFailed");
    let nosecret = wait_for(&cluster, &api, "nosecret", timeout, "Stalled", is_stalled).await;
    assert_eq!(condition(&nosecret, "Stalled").unwrap().1, "SecretNotFound");
    let noclaim = wait_for(&cluster, &api, "noclaim", timeout, "Stalled", is_stalled).await;
    assert_eq!(condition(&noclaim, "Stalled").unwrap().1, "PersistentVolumeClaimNotFound");
    // Long enough for the leader to renew its Lease at least once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_rbac(&cluster, &r, &controller);
}

/// The non-default values (one watched namespace: a Role there; checkSecrets off; leader
/// election): the controller stays inside its namespace, and its Role covers what it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_covers_exactly_the_calls_of_a_single_namespace_controller() {
    let bin = renderer_or_skip!();
    let f = all_options_values();
    let registry = TestRegistry::start();
    // The test registry's repositories are the allowed targets (the deployed controller gets
    // them as --allowed-target).
    let allowed = format!("controller.allowedTargets={{{}/team/**}}", registry.host());
    let r = render(bin, &["-f", &f, "--set", "controller.progressInterval=1", "--set", &allowed]);
    let (_, container) = r.controller();

    let cluster = Cluster::start();
    let client = test_client(&cluster).await;
    for ns in ["builds", "elsewhere"] {
        create_pvc(&client, ns, "layouts").await;
        simple_image(&cluster.pvc_dir(ns, "layouts").join("app"), "v1", &[2000], 22);
    }
    // The node is a dedicated build node, as the values' worker defaults expect: the worker
    // runs only if their toleration and node selector reach its pod.
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": {"pool": "builds"}},
                       "spec": {"taints": [{"key": "dedicated", "value": "builds", "effect": "NoSchedule"}]}});
    nodes.patch("sim-node", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let controller = start_as_deployed(&cluster, &r, "imagepush-1");
    check_probes(&controller, &container).await;
    let host = registry.host();
    let builds: Api<ImagePush> = Api::namespaced(client.clone(), "builds");
    let elsewhere: Api<ImagePush> = Api::namespaced(client.clone(), "elsewhere");
    create(&builds, image_push("builds", "good", &format!("{host}/team/app:v1"), "app", json!({})))
        .await;
    create(
        &builds,
        image_push("builds", "nolayout", &format!("{host}/team/app:v2"), "missing", json!({})),
    )
    .await;
    create(
        &elsewhere,
        image_push("elsewhere", "ignored", &format!("{host}/team/app:v3"), "app", json!({})),
    )
    .await;

    let timeout = Duration::from_secs(60);
    wait_for(&cluster, &builds, "good", timeout, "Ready", is_ready).await;
    let nolayout = wait_for(&cluster, &builds, "nolayout", timeout, "Stalled", is_stalled).await;
    assert_eq!(condition(&nolayout, "Stalled").unwrap().1, "LayoutInvalid");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ignored = elsewhere.get("ignored").await.unwrap();
    assert!(
        ignored.status.is_none(),
        "an ImagePush outside the watched namespace was touched: {:?}",
        ignored.status
    );

    let calls = assert_rbac(&cluster, &r, &controller);
    for c in &calls {
        match c.group.as_str() {
            "coordination.k8s.io" => assert_eq!(c.namespace.as_deref(), Some(RELEASE_NS), "{c:?}"),
            _ => assert_eq!(c.namespace.as_deref(), Some("builds"), "outside its namespace: {c:?}"),
        }
        assert_ne!(
            c.resource, "secrets",
            "checkSecrets=false and no credentials: no Secret access"
        );
    }
}
