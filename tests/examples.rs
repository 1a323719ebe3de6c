//! The manifests in `examples/`: every ImagePush validates against the CRD's
//! openAPIV3Schema (types, required fields, patterns, lengths, ranges, enums, unknown fields as
//! `kubectl apply`'s strict field validation reports them, and the CEL rules of
//! `x-kubernetes-validations` evaluated by equivalent Rust checks), deserializes into
//! `imagepush::crd::ImagePush` and passes the controller's own spec validation; every Secret
//! parses as a Kubernetes Secret of the right type whose keys the worker can read as
//! credentials; every other object parses as its Kubernetes type and validates against the
//! official schemas of the oldest and newest supported Kubernetes (`common::k8s_schemas`).
//! Broken variants of the examples fail with the reason the API server would give.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imagepush::controller::pod_settings::PodSettings;
use imagepush::crd::ImagePush;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The hostPath root the examples assume the admin allowed (hostpath-source.yaml says so).
const ALLOWED_HOST_PATH_ROOT: &str = "/var/lib/image-bundles";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `examples/*.yaml` with its documents as JSON.
fn examples() -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let docs = docs.into_iter().filter(|d| !d.is_null()).collect();
            (p.file_name().unwrap().to_string_lossy().into_owned(), docs)
        })
        .collect()
}

fn example(name: &str) -> Vec<Value> {
    examples().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("examples/{name}")).1
}

// ---------------------------------------------------------------------------------------------
// A structural-schema validator for the subset the CRD uses
// ---------------------------------------------------------------------------------------------

fn crd_schema() -> Value {
    let text = std::fs::read_to_string(repo().join("crds/imagepush.dev_imagepushes.yaml")).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let v = versions
        .iter()
        .find(|v| v["name"] == "v1alpha1" && v["served"] == true)
        .expect("v1alpha1 is served");
    v["schema"]["openAPIV3Schema"].clone()
}

/// The CEL rules of the CRD, each with an equivalent check in Rust. A rule that is not here
/// fails validation, so a new rule in src/crd.rs needs its counterpart.
fn cel(rule: &str, s: &Value) -> Option<bool> {
    let has = |k: &str| s.get(k).is_some_and(|v| !v.is_null());
    Some(match rule {
        "has(self.persistentVolumeClaim) != has(self.hostPath)" => {
            has("persistentVolumeClaim") != has("hostPath")
        }
        "!(has(self.nodeName) && has(self.nodeSelector))" => {
            !(has("nodeName") && has("nodeSelector"))
        }
        "has(self.secretName) != has(self.configMapName)" => {
            has("secretName") != has("configMapName")
        }
        "!has(self.mirror) || !self.mirror || !has(self.source.ref)" => {
            s["mirror"] != true || s["source"].get("ref").is_none_or(Value::is_null)
        }
        "!has(self.mirror) || !self.mirror || !(self.target.contains('@') || self.target.matches('/[^/]*:[^/]*$'))" =>
        {
            if s["mirror"] != true {
                return Some(true);
            }
            let t = s["target"].as_str()?;
            !(t.contains('@') || regex::Regex::new("/[^/]*:[^/]*$").unwrap().is_match(t))
        }
        "!self.startsWith('/') && self != '..' && !self.startsWith('../') && !self.endsWith('/..') && !self.contains('/../')" =>
        {
            let p = s.as_str()?;
            !p.starts_with('/')
                && p != ".."
                && !p.starts_with("../")
                && !p.ends_with("/..")
                && !p.contains("/../")
        }
        _ => return None,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Appends `path: problem` for every way `value` breaks `schema`.
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{path}: must not be null"));
        }
        return;
    }
    if let Some(t) = schema["type"].as_str() {
        let actual = type_name(value);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            errors.push(format!("{path}: must be of type {t}, not {actual}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64()
                && len < min
            {
                errors.push(format!("{path}: shorter than {min}"));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && len > max
            {
                errors.push(format!("{path}: longer than {max}"));
            }
            if let Some(p) = schema["pattern"].as_str()
                && !regex::Regex::new(p).expect("the CRD's pattern compiles").is_match(s)
            {
                errors.push(format!("{path}: {s:?} does not match {p}"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap();
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                errors.push(format!("{path}: less than {min}"));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                errors.push(format!("{path}: greater than {max}"));
            }
            let fits = match schema["format"].as_str() {
                Some("uint32") => n.as_u64().is_some_and(|v| v <= u32::MAX as u64),
                Some("uint64") => n.as_u64().is_some(),
                Some("int32") => n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
                Some("int64") => n.as_i64().is_some(),
                _ => true,
            };
            if !fits {
                errors.push(format!("{path}: {n} does not fit format {}", schema["format"]));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            for key in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(key.as_str().unwrap()) {
                    errors.push(format!("{path}.{}: Required value", key.as_str().unwrap()));
                }
            }
            for (k, v) in map {
                let child = format!("{path}.{k}");
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    validate(s, v, &child, errors);
                } else if schema["additionalProperties"].is_object() {
                    validate(&schema["additionalProperties"], v, &child, errors);
                } else if schema["x-kubernetes-preserve-unknown-fields"] != true {
                    errors.push(format!("{child}: unknown field"));
                }
            }
        }
        _ => {}
    }
    for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
        let text = rule["rule"].as_str().unwrap();
        match cel(text, value) {
            Some(true) => {}
            Some(false) => errors.push(format!(
                "{path}: Invalid value: {}",
                rule["message"].as_str().unwrap_or(text)
            )),
            None => errors
                .push(format!("{path}: the test has no Rust equivalent of the CEL rule {text:?}")),
        }
    }
}

/// What the API server would say about an ImagePush: the root fields every object has, then
/// the schema (status is a subresource: a create ignores it, so examples must not carry one).
fn api_errors(obj: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if obj["apiVersion"] != "imagepush.dev/v1alpha1" {
        errors.push(format!("apiVersion: {}", obj["apiVersion"]));
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let dns_subdomain =
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .unwrap();
    if name.is_empty() || name.len() > 253 || !dns_subdomain.is_match(name) {
        errors.push(format!("metadata.name: {name:?} is not a DNS subdomain"));
    }
    if obj.get("status").is_some() {
        errors.push("status: set by the controller, not by a manifest".into());
    }
    let mut body = obj.clone();
    let body = body.as_object_mut().unwrap();
    for k in ["apiVersion", "kind", "metadata"] {
        body.remove(k);
    }
    validate(&crd_schema(), &Value::Object(body.clone()), "", &mut errors);
    errors
}

/// Parses `value` as `T` and checks that nothing was dropped on the way (unknown fields).
fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let t: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value:#}"));
    assert_eq!(serde_json::to_value(&t).unwrap(), *value, "fields the type does not know");
    t
}

// ---------------------------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------------------------

#[test]
fn the_promised_examples_exist() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    for want in [
        "pvc-source.yaml",
        "hostpath-source.yaml",
        "all-tags.yaml",
        "platform.yaml",
        "promotion.yaml",
        "secret-basic-auth.yaml",
        "secret-dockerconfigjson.yaml",
        "quickstart.yaml",
        "mirror.yaml",
        "worker-settings.yaml",
        "workload-identity.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "examples/{want} is missing: {names:?}");
    }
}

#[test]
fn every_image_push_validates_against_the_crd_and_the_controller() {
    let roots = vec![PathBuf::from(ALLOWED_HOST_PATH_ROOT)];
    let mut seen = 0;
    for (file, docs) in examples() {
        for doc in docs.iter().filter(|d| d["kind"] == "ImagePush") {
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            let errors = api_errors(doc);
            assert!(
                errors.is_empty(),
                "{file} {name}: the API server would refuse it:\n  {}",
                errors.join("\n  ")
            );
            let ip: ImagePush = serde_json::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            // Nothing in the example is silently dropped by the Rust types.
            let mut back = serde_json::to_value(&ip).unwrap();
            back.as_object_mut().unwrap().remove("status");
            assert_eq!(back, *doc, "{file} {name}: the Rust types drop or change a field");
            if let Err(invalid) = imagepush::controller::validate::validate(&ip.spec, &roots) {
                panic!(
                    "{file} {name}: the controller would stall it: {} {}",
                    invalid.reason, invalid.message
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} ImagePush examples");
}

#[test]
fn examples_cover_the_features_they_are_named_after() {
    let spec = |file: &str, i: usize| example(file)[i]["spec"].clone();
    assert!(spec("pvc-source.yaml", 0)["source"]["persistentVolumeClaim"].is_object());
    let hp = spec("hostpath-source.yaml", 0);
    assert!(
        hp["source"]["hostPath"]["path"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{ALLOWED_HOST_PATH_ROOT}/"))
    );
    let all = spec("all-tags.yaml", 0);
    let target = imagepush::reference::Target::parse(all["target"].as_str().unwrap()).unwrap();
    assert_eq!(target.to_string(), all["target"].as_str().unwrap());
    assert!(
        !all["target"].as_str().unwrap().rsplit('/').next().unwrap().contains(':'),
        "no tag: every tag is pushed"
    );
    assert_eq!(spec("platform.yaml", 0)["platform"], "linux/arm64");
    let mirror = spec("mirror.yaml", 0);
    assert_eq!(mirror["mirror"], true);
    let root = imagepush::reference::MirrorRoot::parse(mirror["target"].as_str().unwrap()).unwrap();
    assert_eq!(root.to_string(), mirror["target"].as_str().unwrap());
    let promotion = example("promotion.yaml");
    assert_eq!(promotion.len(), 2);
    let (dev, prod) = (&promotion[0]["spec"], &promotion[1]["spec"]);
    assert_eq!(dev["source"], prod["source"], "the same layout");
    let dev_target = imagepush::reference::Target::parse(dev["target"].as_str().unwrap()).unwrap();
    let prod_target =
        imagepush::reference::Target::parse(prod["target"].as_str().unwrap()).unwrap();
    assert_eq!(dev_target.registry, prod_target.registry, "a mount needs one registry");
    assert_ne!(dev_target.repository, prod_target.repository);
    assert_eq!(prod["mountFrom"], json!([dev_target.repository]), "prod mounts from dev");
    // Within the chart's (and the binary's) default worker settings.
    let ip: ImagePush = typed(&example("worker-settings.yaml")[0]);
    let pod = PodSettings::default().resolve(&ip.spec).expect("within the defaults");
    assert_eq!(pod.resources.requests["cpu"].0, "1");
    assert_eq!(pod.resources.limits["memory"].0, "256Mi", "the default limit stays");
    assert_eq!(pod.tolerations.len(), 1);
    assert_eq!(pod.node_selector["topology.kubernetes.io/zone"], "eu-west-1a");
}

/// Every credentialsSecret an example names is one of the example Secrets, so applying the
/// examples directory works as is.
#[test]
fn credentials_secrets_refer_to_example_secrets() {
    let all: Vec<Value> = examples().into_iter().flat_map(|(_, d)| d).collect();
    let secrets: Vec<&str> = all
        .iter()
        .filter(|d| d["kind"] == "Secret")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    for d in all.iter().filter(|d| d["kind"] == "ImagePush") {
        if let Some(name) = d["spec"]["credentialsSecret"]["name"].as_str() {
            assert!(
                secrets.contains(&name),
                "{} names Secret {name}, not among {secrets:?}",
                d["metadata"]["name"]
            );
        }
    }
}

/// Writes a Secret's keys as files, the way the worker Job mounts it.
fn mount(secret: &Secret, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut keys = BTreeMap::new();
    for (k, v) in secret.data.clone().unwrap_or_default() {
        keys.insert(k, v.0);
    }
    for (k, v) in secret.string_data.clone().unwrap_or_default() {
        keys.insert(k, v.into_bytes());
    }
    for (k, v) in &keys {
        std::fs::write(dir.join(k), v).unwrap();
    }
    keys
}

#[test]
fn secrets_have_the_right_type_and_keys_and_read_as_credentials() {
    use imagepush::auth::Credential;
    let cases = [
        ("secret-basic-auth.yaml", "kubernetes.io/basic-auth", vec!["password", "username"]),
        (
            "secret-dockerconfigjson.yaml",
            "kubernetes.io/dockerconfigjson",
            vec![".dockerconfigjson"],
        ),
    ];
    for (file, ty, keys) in cases {
        let docs = example(file);
        assert_eq!(docs.len(), 1, "{file}");
        let secret: Secret = typed(&docs[0]);
        assert_eq!(secret.type_.as_deref(), Some(ty), "{file}");
        let dir = tempfile::tempdir().unwrap();
        let mounted = mount(&secret, dir.path());
        assert_eq!(mounted.keys().map(String::as_str).collect::<Vec<_>>(), keys, "{file}");
        match imagepush::auth::from_path(dir.path(), "registry.example.com")
            .unwrap_or_else(|e| panic!("{file}: {e}"))
        {
            Credential::Basic { username, password } => {
                assert_eq!(username, "example-user");
                assert!(
                    password.expose().contains("not-a-real-password"),
                    "{file}: obviously fake"
                );
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn other_objects_parse_as_their_kubernetes_types() {
    for (file, docs) in examples() {
        for doc in docs {
            match doc["kind"].as_str().unwrap() {
                "ImagePush" | "Secret" => {}
                "PersistentVolumeClaim" => drop(typed::<PersistentVolumeClaim>(&doc)),
                "Pod" => drop(typed::<Pod>(&doc)),
                "Deployment" => drop(typed::<Deployment>(&doc)),
                "Service" => drop(typed::<Service>(&doc)),
                "ServiceAccount" => drop(typed::<k8s_openapi::api::core::v1::ServiceAccount>(&doc)),
                other => panic!("{file}: add a typed check for {other}"),
            }
        }
    }
}

#[test]
fn other_objects_validate_against_the_official_kubernetes_schemas() {
    use common::k8s_schemas::{self, Named, describe};
    let docs: Vec<Named> = examples()
        .into_iter()
        .flat_map(|(file, docs)| {
            docs.into_iter()
                .filter(|d| d["kind"] != "ImagePush")
                .map(move |d| (format!("examples/{file}: {}", describe(&d)), d))
        })
        .collect();
    assert!(docs.len() >= 6, "{docs:?}");
    k8s_schemas::assert_valid("the examples", &docs, &k8s_schemas::VERSIONS);
}

// ---------------------------------------------------------------------------------------------
// The validator refuses what the API server refuses
// ---------------------------------------------------------------------------------------------

#[test]
fn broken_variants_of_an_example_are_refused() {
    let base = example("pvc-source.yaml").remove(0);
    assert!(api_errors(&base).is_empty());
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "both sources",
            |v| v["spec"]["source"]["hostPath"] = json!({"path": "/var/lib/image-bundles/x"}),
            "set exactly one of persistentVolumeClaim and hostPath",
        ),
        (
            "no source",
            |v| v["spec"]["source"] = json!({}),
            "set exactly one of persistentVolumeClaim and hostPath",
        ),
        (
            "../ path",
            |v| v["spec"]["source"]["persistentVolumeClaim"]["path"] = json!("../other"),
            "must not contain '..'",
        ),
        (
            "inner .. path",
            |v| v["spec"]["source"]["persistentVolumeClaim"]["path"] = json!("a/../../b"),
            "must not contain '..'",
        ),
        (
            "absolute path",
            |v| v["spec"]["source"]["persistentVolumeClaim"]["path"] = json!("/abs"),
            "must be relative",
        ),
        ("bad platform", |v| v["spec"]["platform"] = json!("linux"), "does not match"),
        ("upper-case platform", |v| v["spec"]["platform"] = json!("Linux/AMD64"), "does not match"),
        ("empty target", |v| v["spec"]["target"] = json!(""), "shorter than 1"),
        (
            "no target",
            |v| drop(v["spec"].as_object_mut().unwrap().remove("target")),
            ".spec.target: Required value",
        ),
        (
            "no claim name",
            |v| {
                drop(
                    v["spec"]["source"]["persistentVolumeClaim"]
                        .as_object_mut()
                        .unwrap()
                        .remove("claimName"),
                )
            },
            "claimName: Required value",
        ),
        (
            "relative hostPath",
            |v| v["spec"]["source"] = json!({"hostPath": {"path": "var/lib"}}),
            "does not match ^/",
        ),
        (
            "nodeName and nodeSelector",
            |v| v["spec"]["source"] = json!({"hostPath": {"path": "/var/lib/image-bundles/a", "nodeName": "n", "nodeSelector": {"a": "b"}}}),
            "set at most one of nodeName and nodeSelector",
        ),
        ("zero uploads", |v| v["spec"]["maxConcurrentUploads"] = json!(0), "less than 1"),
        ("too many uploads", |v| v["spec"]["maxConcurrentUploads"] = json!(65), "greater than 64"),
        (
            "string uploads",
            |v| v["spec"]["maxConcurrentUploads"] = json!("4"),
            "must be of type integer",
        ),
        ("bad timeout", |v| v["spec"]["timeout"] = json!("1d"), "does not match"),
        ("unknown field", |v| v["spec"]["targett"] = json!("x"), ".spec.targett: unknown field"),
        (
            "mirror to a tag",
            |v| v["spec"]["mirror"] = json!(true),
            "a mirror target is registry[:port][/prefix], without a tag or digest",
        ),
        (
            "mirror to a digest",
            |v| {
                v["spec"]["mirror"] = json!(true);
                v["spec"]["target"] =
                    json!(format!("registry.example.com/m@sha256:{}", "a".repeat(64)));
            },
            "without a tag or digest",
        ),
        (
            "mirror with a ref",
            |v| {
                v["spec"]["mirror"] = json!(true);
                v["spec"]["target"] = json!("registry.example.com:5000/mirror");
                v["spec"]["source"]["ref"] = json!("v1");
            },
            "source.ref cannot be set with mirror",
        ),
        ("string mirror", |v| v["spec"]["mirror"] = json!("yes"), "must be of type boolean"),
        (
            "ca from both",
            |v| v["spec"]["connection"]["ca"] = json!({"secretName": "a", "configMapName": "b"}),
            "set exactly one of secretName and configMapName",
        ),
        ("float ref", |v| v["spec"]["source"]["ref"] = json!(1.0), "must be of type string"),
        ("bad name", |v| v["metadata"]["name"] = json!("Hello_World"), "DNS subdomain"),
    ];
    for (what, edit, wanted) in cases {
        let mut v = base.clone();
        edit(&mut v);
        let errors = api_errors(&v);
        assert!(
            errors.iter().any(|e| e.contains(wanted)),
            "{what}: wanted {wanted:?}, got {errors:?}"
        );
    }
}

/// The validator knows every CEL rule of the CRD (a new rule needs its Rust equivalent above).
#[test]
fn every_cel_rule_of_the_crd_has_an_equivalent() {
    fn walk(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(m) => {
                for rule in m
                    .get("x-kubernetes-validations")
                    .and_then(|r| r.as_array())
                    .into_iter()
                    .flatten()
                {
                    out.push(rule["rule"].as_str().unwrap().to_string());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut rules = Vec::new();
    walk(&crd_schema(), &mut rules);
    assert_eq!(rules.len(), 6, "{rules:?}");
    for r in rules {
        assert!(
            cel(&r, &json!({})).is_some() || cel(&r, &json!("x")).is_some(),
            "no Rust equivalent of {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// docs/reference.md is complete
// ---------------------------------------------------------------------------------------------

fn reference() -> String {
    std::fs::read_to_string(repo().join("docs/reference.md")).unwrap()
}

/// `spec.source.hostPath.path`, `status.tags[].tag`, ... (not inside metav1.Condition).
fn crd_field_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    if !path.is_empty() {
        out.push(path.to_string());
    }
    if path == "status.conditions" {
        return;
    }
    for (k, v) in schema["properties"].as_object().into_iter().flatten() {
        let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        crd_field_paths(v, &child, out);
    }
    if schema["items"]["properties"].is_object() {
        for (k, v) in schema["items"]["properties"].as_object().unwrap() {
            crd_field_paths(v, &format!("{path}[].{k}"), out);
        }
    }
}

#[test]
fn reference_documents_every_crd_field_and_no_other() {
    let doc = reference();
    let mut paths = Vec::new();
    crd_field_paths(&crd_schema(), "", &mut paths);
    let missing: Vec<&String> = paths.iter().filter(|p| !doc.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "CRD fields missing from docs/reference.md: {missing:?}");
    let row = regex::Regex::new(r"(?m)^\| `((?:spec|status)\.[A-Za-z.\[\]]+)`").unwrap();
    let stale: Vec<String> =
        row.captures_iter(&doc).map(|c| c[1].to_string()).filter(|p| !paths.contains(p)).collect();
    assert!(
        stale.is_empty(),
        "docs/reference.md documents fields the CRD does not have: {stale:?}"
    );
}

fn source(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn reference_documents_every_condition_reason() {
    let doc = reference();
    let mut reasons = BTreeMap::new();
    let patterns = [
        ("src/controller/status.rs", r#"pub const [A-Z_]+: &str = "([A-Za-z]+)";"#),
        ("src/controller/validate.rs", r#"invalid\(\s*"([A-Za-z]+)""#),
        ("src/push/error.rs", r#"=> "([A-Z][A-Za-z]+)","#),
    ];
    for (file, pattern) in patterns {
        let re = regex::Regex::new(pattern).unwrap();
        for c in re.captures_iter(&source(file)) {
            reasons.insert(c[1].to_string(), file);
        }
    }
    assert!(reasons.len() >= 25, "the reason scan found too few: {reasons:?}");
    let missing: Vec<_> =
        reasons.iter().filter(|(r, _)| !doc.contains(&format!("`{r}`"))).collect();
    assert!(missing.is_empty(), "condition reasons missing from docs/reference.md: {missing:?}");
}

#[test]
fn reference_documents_every_metric_and_exit_code() {
    let doc = reference();
    // Every metric the controller registers, by the name a query uses: counters with
    // `_total`, histograms by their base name (told by the field's type).
    let src = source("src/controller/metrics.rs");
    let fields: BTreeMap<String, String> = regex::Regex::new(r"pub ([a-z_]+): ([^\n]+),")
        .unwrap()
        .captures_iter(&src)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let register =
        regex::Regex::new(r#"register\(\s*"([a-z_]+)",\s*"[^"]*",\s*m\.([a-z_]+)\.clone\(\)"#)
            .unwrap();
    let metrics: Vec<String> = register
        .captures_iter(&src)
        .map(|c| match fields[&c[2]].contains("Histogram") {
            true => format!("`imagepush_{}`", &c[1]),
            false => format!("`imagepush_{}_total`", &c[1]),
        })
        .collect();
    assert!(metrics.len() >= 11, "{metrics:?}");
    assert!(metrics.contains(&"`imagepush_push_duration_seconds`".to_string()), "{metrics:?}");
    for m in metrics {
        assert!(doc.contains(&m), "{m} missing from docs/reference.md");
    }
    let codes = regex::Regex::new(r"ErrorClass::[A-Za-z]+ => (\d+)").unwrap();
    let codes: Vec<String> =
        codes.captures_iter(&source("src/push/error.rs")).map(|c| c[1].to_string()).collect();
    assert_eq!(codes.len(), 5, "{codes:?}");
    for code in codes.iter().map(String::as_str).chain(["0"]) {
        assert!(
            doc.contains(&format!("\n| `{code}` |")),
            "exit code {code} missing from docs/reference.md"
        );
    }
}
