use super::*;
use crate::crd::{HostPathSource, WorkerOverrides};

fn spec(worker: Option<WorkerOverrides>) -> ImagePushSpec {
    let mut s = ImagePushSpec::from_claim("layouts", Some("app"), "registry.example.com/team/app");
    s.worker = worker;
    s
}

fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

fn res(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> WorkerResources {
    WorkerResources { requests: q(requests), limits: q(limits) }
}

fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
    let s = |x: &str| (!x.is_empty()).then(|| x.to_string());
    Toleration {
        key: s(key),
        operator: s(operator),
        value: s(value),
        effect: s(effect),
        toleration_seconds: None,
    }
}

fn selector(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Defaults as a platform team would set them: limits, a build-node taint and pool.
fn defaults() -> PodSettings {
    PodSettings {
        resources: res(&[("cpu", "100m"), ("memory", "64Mi")], &[("cpu", "2"), ("memory", "1Gi")]),
        tolerations: vec![toleration("dedicated", "Equal", "builds", "NoSchedule")],
        node_selector: selector(&[("pool", "builds")]),
        ..PodSettings::default()
    }
}

#[test]
fn without_spec_worker_the_defaults_apply_as_they_are() {
    let d = defaults();
    assert_eq!(d.resolve(&spec(None)).unwrap(), d);
    assert_eq!(d.resolve(&spec(Some(WorkerOverrides::default()))).unwrap(), d);
}

#[test]
fn a_spec_chooses_resources_within_the_limits_and_adds_tolerations_and_labels() {
    let w = WorkerOverrides {
        resources: Some(res(
            &[("memory", "512Mi")],
            &[("memory", "1Gi"), ("ephemeral-storage", "2Gi")],
        )),
        tolerations: vec![toleration("gpu", "Exists", "", "")],
        node_selector: selector(&[("zone", "a"), ("pool", "builds")]),
    };
    let got = defaults().resolve(&spec(Some(w))).unwrap();
    assert_eq!(
        got.resources,
        res(
            &[("cpu", "100m"), ("memory", "512Mi")],
            &[("cpu", "2"), ("memory", "1Gi"), ("ephemeral-storage", "2Gi")]
        )
    );
    assert_eq!(got.tolerations.len(), 2, "the default's toleration stays, the spec's is added");
    assert_eq!(got.node_selector, selector(&[("pool", "builds"), ("zone", "a")]));
    let r = got.requirements();
    assert_eq!(r.requests.unwrap()["memory"], Quantity("512Mi".into()));
    assert!(r.claims.is_none());
}

#[test]
fn a_host_path_selector_joins_the_defaults_selector() {
    let mut s = spec(None);
    s.source.persistent_volume_claim = None;
    s.source.host_path = Some(HostPathSource {
        path: "/var/lib/images/app".into(),
        node_name: None,
        node_selector: Some(selector(&[("disk", "ssd")])),
    });
    let got = defaults().resolve(&s).unwrap();
    assert_eq!(got.node_selector, selector(&[("disk", "ssd"), ("pool", "builds")]));
    s.source.host_path.as_mut().unwrap().node_selector = Some(selector(&[("pool", "gpu")]));
    let e = defaults().resolve(&s).unwrap_err();
    assert_eq!(e.reason, NOT_ALLOWED);
    assert!(e.message.contains("source.hostPath.nodeSelector: pool"), "{e:?}");
}

#[test]
fn refuses_what_goes_beyond_the_defaults_or_the_api_servers_rules() {
    let w =
        |resources: Option<WorkerResources>, tolerations: Vec<Toleration>, sel: &[(&str, &str)]| {
            Some(WorkerOverrides { resources, tolerations, node_selector: selector(sel) })
        };
    // (spec.worker, reason, piece of the message)
    let cases = [
        (
            w(Some(res(&[("memory", "2Gi")], &[])), vec![], &[]),
            NOT_ALLOWED,
            "worker.resources.requests.memory 2Gi is above the cluster's limit of 1Gi",
        ),
        (
            w(Some(res(&[], &[("cpu", "2500m")])), vec![], &[]),
            NOT_ALLOWED,
            "worker.resources.limits.cpu 2500m is above the cluster's limit of 2",
        ),
        (
            w(Some(res(&[], &[("nvidia.com/gpu", "1")])), vec![], &[]),
            NOT_ALLOWED,
            "only cpu, memory, ephemeral-storage may be set here",
        ),
        (
            w(Some(res(&[("memory", "lots")], &[])), vec![], &[]),
            "SpecInvalid",
            "worker.resources.requests.memory: \"lots\" is not a quantity",
        ),
        (
            w(Some(res(&[("cpu", "-1")], &[])), vec![], &[]),
            "SpecInvalid",
            "\"-1\" is not a quantity",
        ),
        (
            w(Some(res(&[("memory", "512Mi")], &[("memory", "256Mi")])), vec![], &[]),
            "SpecInvalid",
            "the memory request 512Mi is above its limit 256Mi",
        ),
        // The default request (64Mi) above a lower limit the spec chose.
        (
            w(Some(res(&[], &[("memory", "32Mi")])), vec![], &[]),
            "SpecInvalid",
            "the memory request 64Mi is above its limit 32Mi",
        ),
        (
            w(None, vec![toleration("", "Equal", "x", "")], &[]),
            "SpecInvalid",
            "worker.tolerations[0]: operator must be Exists when key is empty",
        ),
        (
            w(None, vec![toleration("a", "Exists", "x", "")], &[]),
            "SpecInvalid",
            "value must be empty when operator is Exists",
        ),
        (
            w(None, vec![toleration("a", "In", "x", "")], &[]),
            "SpecInvalid",
            "operator \"In\" is not Equal or Exists",
        ),
        (
            w(None, vec![toleration("a", "", "x", "NoRun")], &[]),
            "SpecInvalid",
            "effect \"NoRun\" is not NoSchedule",
        ),
        (
            w(None, vec![toleration("bad key", "Exists", "", "")], &[]),
            "SpecInvalid",
            "worker.tolerations[0]: key:",
        ),
        (
            w(
                None,
                vec![Toleration {
                    toleration_seconds: Some(30),
                    ..toleration("a", "Exists", "", "NoSchedule")
                }],
                &[],
            ),
            "SpecInvalid",
            "tolerationSeconds needs effect NoExecute",
        ),
        (
            w(None, vec![], &[("pool", "gpu")]),
            NOT_ALLOWED,
            "worker.nodeSelector: pool is \"builds\" for every worker of this cluster, not \"gpu\"",
        ),
        (w(None, vec![], &[("bad key", "x")]), "SpecInvalid", "worker.nodeSelector:"),
        (w(None, vec![], &[("zone", "not a value")]), "SpecInvalid", "worker.nodeSelector.zone:"),
    ];
    for (worker, reason, text) in cases {
        let e = defaults().resolve(&spec(worker.clone())).unwrap_err();
        assert_eq!(e.reason, reason, "{worker:?}: {e:?}");
        assert!(e.message.contains(text), "{worker:?}: {:?} lacks {text:?}", e.message);
    }
    // Valid tolerations of each shape pass.
    let fine = vec![
        toleration("", "Exists", "", ""),
        toleration("a", "", "b", "NoExecute"),
        Toleration { toleration_seconds: Some(30), ..toleration("a", "Exists", "", "NoExecute") },
    ];
    assert!(defaults().resolve(&spec(w(None, fine, &[]))).is_ok());
}

#[test]
fn without_a_default_limit_a_spec_may_ask_for_more() {
    let d = PodSettings { resources: res(&[("memory", "64Mi")], &[]), ..PodSettings::default() };
    let got = d.resolve(&spec(Some(WorkerOverrides {
        resources: Some(res(&[("cpu", "4"), ("memory", "8Gi")], &[])),
        ..Default::default()
    })));
    assert_eq!(got.unwrap().resources, res(&[("cpu", "4"), ("memory", "8Gi")], &[]));
}

fn reserved() -> Reserved {
    Reserved {
        labels: vec!["app.kubernetes.io/managed-by"],
        annotations: vec!["sidecar.istio.io/inject"],
        env_prefix: "IMAGEPUSH_",
    }
}

#[test]
fn defaults_files_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        let path = dir.path().join("worker.yaml");
        std::fs::write(&path, text).unwrap();
        PodSettings::load(&path)
    };
    assert_eq!(load("").unwrap(), PodSettings::default());
    assert_eq!(load("{}\n").unwrap().resources, builtin_resources());
    let full = load(
        r#"
resources: {requests: {cpu: 250m, memory: 1}, limits: {memory: 1Gi}}
tolerations: [{key: dedicated, operator: Equal, value: builds, effect: NoSchedule}]
nodeSelector: {pool: builds}
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: arch, operator: In, values: [amd64]}]}]}}}
priorityClassName: ""
imagePullSecrets: [{name: mirror-pull}]
env: [{name: HTTPS_PROXY, value: "http://proxy.internal:3128"}, {name: NO_PROXY, value: ".svc,10.0.0.0/8"}]
labels: {team: platform}
annotations: {cost-center: "42"}
"#,
    )
    .unwrap();
    assert_eq!(
        full.resources.requests["memory"],
        Quantity("1".into()),
        "a YAML number is a quantity"
    );
    assert_eq!(full.priority_class_name, None, "the chart's empty string means unset");
    assert_eq!(full.env[0].value.as_deref(), Some("http://proxy.internal:3128"));
    assert!(full.affinity.is_some());
    for (text, want) in [
        (
            "resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}",
            "the memory request 2Gi is above its limit 1Gi",
        ),
        ("tolerations: [{operator: Equal, value: x}]", "tolerations[0]: operator must be Exists"),
        ("labels: {imagepush.dev/name: x}", "labels: imagepush.dev/name is the operator's"),
        (
            "labels: {app.kubernetes.io/managed-by: me}",
            "labels: app.kubernetes.io/managed-by is the operator's",
        ),
        (
            "annotations: {sidecar.istio.io/inject: \"true\"}",
            "annotations: sidecar.istio.io/inject is the operator's",
        ),
        ("labels: {job-name: x}", "labels: job-name is the Job controller's"),
        (
            "labels: {batch.kubernetes.io/controller-uid: x}",
            "labels: batch.kubernetes.io/controller-uid is the Job controller's",
        ),
        ("env: [{name: IMAGEPUSH_LOG, value: debug}]", "env: IMAGEPUSH_LOG is the operator's"),
        ("priorityClassName: Not_A_Name", "priorityClassName:"),
        ("securityContext: {privileged: true}", "unknown field `securityContext`"),
    ] {
        let e = load(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e:?} lacks {want:?}");
    }
    let missing = PodSettings::load(&dir.path().join("absent.yaml")).unwrap_err();
    assert!(missing.contains("cannot read it"), "{missing}");
    assert!(PodSettings::default().check(&reserved()).is_ok());
}
