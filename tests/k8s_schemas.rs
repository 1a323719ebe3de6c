//! Every object the controller creates and the chart renders validates against the official
//! Kubernetes schemas of the oldest supported Kubernetes (1.26) and of the newest that the
//! pinned `kubernetes-validate` carries (1.37), with `--strict` (unknown fields are errors):
//!
//! - the worker Jobs, for every source kind and spec option, the events.k8s.io/v1 Events and
//!   the coordination.k8s.io/v1 Lease of leader election, as the real `imagepush controller`
//!   sends them to the API test double (a recording proxy sits between them); and the same
//!   objects as the double then holds them, with its defaults, status and the controller's
//!   patches, against the Kubernetes version the double reports and the newest;
//! - every document of the chart rendered with default values, with `ci/all-options-values.yaml`
//!   (one watched namespace, leader election) and with the other variants `tests/chart.rs`
//!   renders, the CRD included.
//!
//! Needs `kubernetes-validate` (see `common::k8s_schemas`) and `go` for the renderer (see
//! `common::helm`); without either, the tests fail.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{
    Cluster, create, create_basic_auth_secret, create_pvc, is_ready, is_stalled, wait_for,
};
use common::helm::{self, all_options_values};
use common::k8s_schemas::{self, Named, describe};
use common::{CountingProxy, TestRegistry, simple_image};
use imagepush::crd::ImagePush;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::{Value, json};

const NS: &str = "schemas";
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The chart
// ---------------------------------------------------------------------------------------------

/// The oldest version validated against is the one the chart and the README promise.
#[test]
fn the_oldest_version_is_the_one_promised() {
    let oldest = k8s_schemas::OLDEST;
    let chart = std::fs::read_to_string(helm::chart_dir().join("Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&chart).unwrap();
    assert_eq!(chart["kubeVersion"], format!(">={oldest}.0-0"), "Chart.yaml kubeVersion");
    let readme = std::fs::read_to_string(helm::repo().join("README.md")).unwrap();
    assert!(readme.contains(&format!("Needs Kubernetes {oldest} or later")), "README.md");
}

/// API groups the chart may render that Kubernetes itself does not define, so there is no
/// official schema for them (`tests/chart.rs` checks them as JSON).
const NOT_KUBERNETES: [&str; 1] = ["monitoring.coreos.com/v1"];

#[test]
fn every_chart_document_validates() {
    let bin = helm::renderer().unwrap_or_else(|missing| panic!("{missing}"));
    let all_options = all_options_values();
    let variants: [(&str, Vec<&str>); 7] = [
        ("defaults, with the CRD", vec!["--include-crds"]),
        ("ci/all-options-values.yaml", vec!["-f", &all_options]),
        ("replicaCount=2", vec!["--set", "replicaCount=2"]),
        ("leader election, one replica", vec!["--set", "controller.leaderElection.enabled=true"]),
        (
            "watchNamespace, hostPath roots",
            vec![
                "--set",
                "controller.watchNamespace=builds,controller.allowedHostPathRoots={/var/lib/image-bundles}",
            ],
        ),
        (
            "ServiceMonitor, NodePort Service",
            vec!["--set", "serviceMonitor.enabled=true,metrics.service.type=NodePort"],
        ),
        (
            "nothing optional",
            vec![
                "--set",
                "rbac.create=false,serviceAccount.create=false,serviceAccount.name=existing,metrics.service.enabled=false",
            ],
        ),
    ];
    let mut docs: Vec<Named> = Vec::new();
    let mut kinds = BTreeSet::new();
    let mut skipped = BTreeSet::new();
    for (variant, args) in &variants {
        for doc in helm::render_json(bin, args) {
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            if NOT_KUBERNETES.contains(&api_version.as_str()) {
                skipped.insert(format!("{api_version} {}", doc["kind"]));
                continue;
            }
            kinds.insert(doc["kind"].as_str().unwrap_or_default().to_string());
            docs.push((format!("chart ({variant}): {}", describe(&doc)), doc));
        }
    }
    // The variants reach every kind the chart has (a template that renders nothing anywhere
    // would go unchecked).
    let want = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Pod",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, want.iter().map(|k| k.to_string()).collect(), "kinds rendered");
    assert_eq!(skipped.len(), 1, "only the ServiceMonitor has no official schema: {skipped:?}");
    k8s_schemas::assert_valid("the chart", &docs, &k8s_schemas::VERSIONS);
}

// ---------------------------------------------------------------------------------------------
// What the controller creates
// ---------------------------------------------------------------------------------------------

/// Every object of one kind in `NS`, as the API serves it (not through a k8s-openapi type,
/// which would drop fields it does not know), with its apiVersion and kind.
async fn list_raw<K>(client: &kube::Client) -> Vec<Value>
where
    K: kube::Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .map(|o| {
            let mut v = serde_json::to_value(&o).unwrap();
            v["apiVersion"] = json!(resource.api_version);
            v["kind"] = json!(resource.kind);
            v
        })
        .collect()
}

/// The ImagePush specs whose Jobs are validated: every source kind and every option that
/// changes the Job. `{host}` is the test registry, `{root}` the allowed hostPath root.
fn cases(host: &str, root: &str) -> Vec<(&'static str, Value)> {
    let target = |name: &str| format!("{host}/schemas/{name}:v1");
    let plain = json!({"plainHttp": true});
    let claim = json!({"persistentVolumeClaim": {"claimName": "layouts", "path": "app"}});
    let ca = |ca: Value| json!({"connection": {"ca": ca}});
    let specs: Vec<(&str, Value)> = vec![
        ("pvc-path", json!({"source": claim, "connection": plain})),
        (
            "pvc-root",
            json!({"source": {"persistentVolumeClaim": {"claimName": "whole"}}, "connection": plain}),
        ),
        (
            "host-node-name",
            json!({"source": {"hostPath": {"path": format!("{root}/app"), "nodeName": "sim-node"}},
                   "connection": plain}),
        ),
        (
            "host-node-selector",
            json!({"source": {"hostPath": {"path": format!("{root}/app"),
                                           "nodeSelector": {"kubernetes.io/hostname": "sim-node"}}},
                   "connection": plain}),
        ),
        (
            "credentials",
            json!({"source": claim, "credentialsSecret": {"name": "regcred"}, "connection": plain}),
        ),
        ("ca-secret", ca(json!({"secretName": "registry-ca"}))),
        ("ca-secret-key", ca(json!({"secretName": "registry-ca", "key": "tls.crt"}))),
        ("ca-configmap", ca(json!({"configMapName": "registry-ca"}))),
        ("ca-configmap-key", ca(json!({"configMapName": "registry-ca", "key": "ca.pem"}))),
        ("insecure", json!({"connection": {"insecureSkipTlsVerify": true}})),
        (
            "options",
            json!({"source": {"persistentVolumeClaim": {"claimName": "layouts", "path": "app"},
                              "ref": "v1"},
                   "platform": "linux/amd64",
                   "mountFrom": ["schemas/pvc-path", "schemas/pvc-root"],
                   "maxConcurrentUploads": 2,
                   "timeout": "10m30s",
                   "connection": plain}),
        ),
    ];
    specs
        .into_iter()
        .map(|(name, mut spec)| {
            if spec.get("source").is_none() {
                spec["source"] = claim.clone();
            }
            spec["target"] = json!(target(name));
            (name, spec)
        })
        .collect()
}

fn image_push(name: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec
    })
}

/// Waits until each of `names` has a worker Job.
async fn wait_for_jobs(cluster: &Cluster, client: &kube::Client, names: &[&str]) {
    let api: Api<Job> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let with_job: BTreeSet<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter_map(|j| j.metadata.labels.as_ref()?.get("imagepush.dev/name").cloned())
            .collect();
        let missing: Vec<&&str> = names.iter().filter(|n| !with_job.contains(**n)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no worker Job after {TIMEOUT:?} for {missing:?}\n{}",
            cluster.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The objects the controller sent: the bodies of its creates (POST) and replacements (PUT)
/// of Jobs, Events and Leases, as the proxy between it and the API saw them. (Patches are
/// partial objects; what they make is checked in what the API holds.)
fn sent_objects(proxy: &CountingProxy) -> Vec<Value> {
    let path = regex::Regex::new(
        r"^/apis/(batch|events\.k8s\.io|coordination\.k8s\.io)/v1/namespaces/[^/]+/(jobs|events|leases)(/[^/?]+)?(\?|$)",
    )
    .unwrap();
    proxy
        .requests()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT") && path.is_match(&r.target))
        .map(|r| {
            serde_json::from_slice(&r.body).unwrap_or_else(|e| {
                panic!("{} {}: the body is not JSON ({e}): {:?}", r.method, r.target, r.body)
            })
        })
        .collect()
}

/// A name for messages: the Job with its ImagePush, the Event with its type and reason.
fn named(prefix: &str, doc: Value) -> Named {
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    let name = match doc["kind"].as_str() {
        Some("Job") => format!(
            "Job {name} (ImagePush {})",
            doc["metadata"]["labels"]["imagepush.dev/name"].as_str().unwrap_or("?")
        ),
        Some("Event") => format!(
            "Event {name} ({} {} on {})",
            doc["type"].as_str().unwrap_or("?"),
            doc["reason"].as_str().unwrap_or("?"),
            doc["regarding"]["name"].as_str().unwrap_or("?")
        ),
        _ => describe(&doc),
    };
    (format!("{prefix}: {name}"), doc)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The real controller (leader election on, one hostPath root allowed) against the API double,
/// through a proxy that records what it sends: ImagePushes covering every source kind and
/// option each get a Job; one push succeeds and a later one to another repository gets the
/// mount knowledge it recorded (an extra env var); one stalls on a bad target.
///
/// What the controller sent (Jobs, Events, the Lease) validates against `VERSIONS`. What the
/// API then holds (with the defaults, status and patches the double adds, as the API server
/// whose version it reports would) validates against that version and `NEWEST`: the double's
/// defaults include fields newer than 1.26 (`podReplacementPolicy`, 1.28).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_events_and_leases_the_controller_creates_validate() {
    // Fail before the run when the validator is missing.
    k8s_schemas::validator();
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    let proxy = CountingProxy::start_to(cluster.api_url.trim_start_matches("http://"));
    proxy.record_bodies();
    cluster.route_controllers_through(&proxy.url());
    create_pvc(&client, NS, "layouts").await;
    create_pvc(&client, NS, "whole").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[2000, 1000], 61);
    simple_image(&cluster.pvc_dir(NS, "whole"), "v1", &[2000], 62);
    let node = tempfile::tempdir().unwrap();
    let root = node.path().join("bundles");
    simple_image(&root.join("app"), "v1", &[2000], 63);
    create_basic_auth_secret(&client, NS, "regcred", "not-checked").await;
    // The CA Secret and ConfigMap do not exist: those workers wait (Pending) for them, which
    // is all this test needs of them.
    let root = root.to_str().unwrap().to_string();
    cluster.start_controller(&[
        "--allowed-host-path-root",
        &root,
        "--leader-election",
        "--lease-namespace",
        NS,
        "--lease-name",
        "imagepush-schemas",
    ]);

    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    let cases = cases(&host, &root);
    for (name, spec) in &cases {
        create(&api, image_push(name, spec)).await;
    }
    let mut stalled = cases[0].1.clone();
    stalled["target"] = json!("Registry/Upper:v1");
    create(&api, image_push("stalled", &stalled)).await;

    let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    wait_for_jobs(&cluster, &client, &names).await;
    wait_for(&cluster, &api, "pvc-path", TIMEOUT, "Ready", is_ready).await;
    wait_for(&cluster, &api, "stalled", TIMEOUT, "Stalled", is_stalled).await;
    // Another repository of the same registry after pvc-path finished: the Job carries what
    // that push recorded (IMAGEPUSH_KNOWN_SOURCES).
    let mut promoted = cases[0].1.clone();
    promoted["target"] = json!(format!("{host}/schemas-prod/app:v1"));
    create(&api, image_push("promoted", &promoted)).await;
    wait_for_jobs(&cluster, &client, &["promoted"]).await;
    wait_for(&cluster, &api, "promoted", TIMEOUT, "Ready", is_ready).await;

    let sent = sent_objects(&proxy);
    let sent_jobs = of_kind(&sent, "Job");
    let with_jobs: BTreeSet<&str> = sent_jobs
        .iter()
        .filter_map(|j| j["metadata"]["labels"]["imagepush.dev/name"].as_str())
        .collect();
    let mut want: BTreeSet<&str> = names.iter().copied().collect();
    want.insert("promoted");
    assert_eq!(with_jobs, want, "a Job for every ImagePush but the stalled one");
    let env_of = |j: &Value| j["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        sent_jobs.iter().any(|j| env_of(j).contains("IMAGEPUSH_KNOWN_SOURCES")),
        "no Job got mount knowledge"
    );
    let reasons: BTreeSet<&str> =
        of_kind(&sent, "Event").iter().filter_map(|e| e["reason"].as_str()).collect();
    for want in ["PushStarted", "Pushed", "ReferenceInvalid"] {
        assert!(reasons.contains(want), "no {want} event sent: {reasons:?}");
    }
    assert!(!of_kind(&sent, "Lease").is_empty(), "no Lease sent");

    let mut stored = Vec::new();
    stored.extend(list_raw::<Job>(&client).await);
    stored.extend(list_raw::<Event>(&client).await);
    let leases = list_raw::<Lease>(&client).await;
    assert_eq!(leases.len(), 1, "the leader's Lease: {leases:?}");
    stored.extend(leases);
    let served = client.apiserver_version().await.unwrap();
    let served = format!("{}.{}", served.major, served.minor.trim_end_matches('+'));

    let sent: Vec<Named> = sent.into_iter().map(|d| named("as sent", d)).collect();
    k8s_schemas::assert_valid("what the controller sent", &sent, &k8s_schemas::VERSIONS);
    let stored: Vec<Named> =
        stored.into_iter().map(|d| named(&format!("as the API ({served}) holds it"), d)).collect();
    k8s_schemas::assert_valid("what the API holds", &stored, &[&served, k8s_schemas::NEWEST]);
}

/// The validator is really looking: an unknown field, a wrong type, a missing required field
/// and a kind it has no schema for all fail, and the message names the document.
#[test]
fn the_validator_refuses_broken_objects() {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l", "namespace": NS},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    });
    let good: Named = ("a good Lease".into(), lease.clone());
    let mut unknown = lease.clone();
    unknown["spec"]["holder"] = json!("a");
    let mut wrong_type = lease.clone();
    wrong_type["spec"]["leaseDurationSeconds"] = json!("15");
    let missing = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": NS},
        "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": NS}]
    });
    let unknown_kind = json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "m", "namespace": NS}, "spec": {}
    });
    let docs: Vec<Named> = vec![
        good,
        ("unknown field".into(), unknown),
        ("wrong type".into(), wrong_type),
        ("no roleRef".into(), missing),
        ("no schema".into(), unknown_kind),
    ];
    let problems = k8s_schemas::problems(&docs, &k8s_schemas::VERSIONS);
    let expect = [
        ("unknown field", "'holder' was unexpected"),
        ("wrong type", "'15' is not of type 'integer'"),
        ("no roleRef", "'roleRef' is a required property"),
        ("no schema", "Couldn't find schema for kind ServiceMonitor"),
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for ((name, said), problem) in expect.iter().zip(&problems) {
        assert!(problem.starts_with(name), "{problem}");
        assert!(problem.contains(said), "{name}: {problem}");
        for v in k8s_schemas::VERSIONS {
            assert!(problem.contains(&format!("version {v}")), "{name} against {v}: {problem}");
        }
    }
}
