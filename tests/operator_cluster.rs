//! What a real cluster does to the operator, on the strict node simulator: credentials as
//! kubelet writes them, workers that cannot start, Job names taken by others, Jobs the API
//! server refuses, a spec change during a push, sidecars, a skewed cluster clock, and the
//! limits of event notes. Each scenario runs the real `imagepush controller` against
//! `e2e/kube-double` (whose kubelet runs the worker as PID 1, as user 65532, in its own mount
//! namespace) and a real registry.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, condition, create, is_ready, is_stalled, wait_for};
use common::{TestRegistry, simple_image};
use imagepush::crd::ImagePush;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use serde_json::json;

const NS: &str = "e2e";
/// "Reported within a minute".
const MINUTE: Duration = Duration::from_secs(60);

async fn claim(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    create(
        &api,
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}
        }),
    )
    .await;
}

fn push_spec(
    ns: &str,
    name: &str,
    path: &str,
    target: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
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

async fn jobs_of(client: &kube::Client, ns: &str, name: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("imagepush.dev/name={name}")))
        .await
        .unwrap()
        .items
}

/// events.k8s.io/v1 events the controller published about `name`: (type, reason, note).
async fn events_of(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default())
        })
        .collect()
}

/// Waits (up to 10 s: an event follows the status write it announces) for an event about
/// `name` that `pred` accepts; returns it.
async fn event_about(
    client: &kube::Client,
    ns: &str,
    name: &str,
    pred: impl Fn(&str, &str, &str) -> bool,
) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = events_of(client, ns, name).await;
        if let Some(e) = events.iter().find(|(t, r, n)| pred(t, r, n)) {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "no such event about {name}: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reason_of(ip: &ImagePush) -> String {
    condition(ip, "Ready").map(|c| c.1).unwrap_or_default()
}

fn message_of(ip: &ImagePush) -> String {
    let st = ip.status.as_ref();
    st.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// POSTs of Jobs the double answered (any status), for counting retries.
fn job_creates(cluster: &Cluster, ns: &str) -> usize {
    cluster
        .requests()
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"] == format!("/apis/batch/v1/namespaces/{ns}/jobs")
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// 1. Credentials as kubelet writes them
// ---------------------------------------------------------------------------------------------

/// Basic-auth and dockerconfigjson Secrets push to an htpasswd registry. Kubelet writes the
/// Secret's files root-owned with the volume's mode (0440): the worker, user 65532, reads them
/// only because they belong to its fsGroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_dockerconfigjson_secrets_push_to_an_htpasswd_registry() {
    use base64::Engine as _;
    let registry = TestRegistry::start_with_htpasswd("alice", "s3cret-Pa55");
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    let (_b, image) =
        simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[3000, 1000], 81);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    create(
        &secrets,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": "basic", "namespace": NS},
               "stringData": {"username": "alice", "password": "s3cret-Pa55"}}),
    )
    .await;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-Pa55");
    let config = json!({"auths": {registry.host(): {"auth": auth}}}).to_string();
    create(
        &secrets,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
               "metadata": {"name": "dockercfg", "namespace": NS},
               "stringData": {".dockerconfigjson": config}}),
    )
    .await;
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    for (name, secret) in [("basic", "basic"), ("dockercfg", "dockercfg")] {
        let target = format!("{}/creds/{name}:v1", registry.host());
        create(
            &api,
            push_spec(NS, name, "app", &target, json!({"credentialsSecret": {"name": secret}})),
        )
        .await;
    }
    for name in ["basic", "dockercfg"] {
        let ip = wait_for(&cluster, &api, name, MINUTE, "Ready", is_ready).await;
        assert_eq!(ip.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
        assert_eq!(
            registry.manifest(&format!("creds/{name}"), "v1").await.unwrap().2,
            image.digest
        );
    }
    // The files the worker read, as the simulated kubelet wrote them.
    use std::os::unix::fs::MetadataExt;
    let pods = cluster.state_dir().join("pods").join(NS);
    let pod = std::fs::read_dir(&pods)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("basic-"))
        .unwrap();
    let file = pod.path().join("volumes/credentials/..data/password");
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, 65532, 0o440),
        "{}",
        file.display()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A worker that cannot start
// ---------------------------------------------------------------------------------------------

/// Pod Security refuses the pod, no node matches, a volume cannot be mounted, a node name is
/// no node: each is in the status with a reason and the cluster's own message, and in an
/// event, within a minute; what a person must fix stalls, what may clear by itself keeps
/// reconciling; and once the missing ConfigMap exists, that push goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_start_is_reported_within_a_minute() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start_with(&["--pod-gc-quarantine", "40"]);
    let client = cluster.client().await;
    let node = tempfile::tempdir().unwrap();
    let root = node.path().join("images");
    simple_image(&root.join("app"), "v1", &[2000], 82);
    // A namespace whose Pod Security level (baseline) forbids hostPath volumes.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(
        &namespaces,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "baseline",
               "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
    )
    .await;
    claim(&client, NS, "layouts").await;
    let (_b, image) = simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[2000], 83);
    cluster.start_controller(&["--allowed-host-path-root", root.to_str().unwrap()]);
    let host = registry.host();
    let host_path = |ns: &str, name: &str, placement: serde_json::Value| {
        let mut v = push_spec(ns, name, "-", &format!("{host}/cannot/{name}:v1"), json!({}));
        let mut source = json!({"path": root.join("app").to_str().unwrap()});
        for (k, val) in placement.as_object().cloned().unwrap_or_default() {
            source[k] = val;
        }
        v["spec"]["source"] = json!({"hostPath": source});
        v
    };
    let started = Instant::now();
    create(
        &Api::<ImagePush>::namespaced(client.clone(), "baseline"),
        host_path("baseline", "psa", json!({"nodeName": "sim-node"})),
    )
    .await;
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(&api, host_path(NS, "nowhere", json!({"nodeSelector": {"disk": "none"}}))).await;
    create(&api, host_path(NS, "ghost", json!({"nodeName": "ghost-node"}))).await;
    create(
        &api,
        push_spec(
            NS,
            "noca",
            "app",
            &format!("{host}/cannot/noca:v1"),
            json!({"connection": {"plainHttp": true, "ca": {"configMapName": "registry-ca"}}}),
        ),
    )
    .await;

    // (namespace, name, reason, stalled, piece of the cluster's message)
    let want = [
        (
            "baseline",
            "psa",
            "WorkerPodRejected",
            true,
            "violates PodSecurity \"baseline:latest\": hostPath volumes",
        ),
        (NS, "nowhere", "WorkerUnschedulable", false, "didn't match Pod's node affinity/selector"),
        (NS, "noca", "WorkerMountFailed", true, "configmap \"registry-ca\" not found"),
        (NS, "ghost", "WorkerNotStarted", false, "ghost-node"),
    ];
    for (ns, name, reason, stalled, text) in want {
        let api: Api<ImagePush> = Api::namespaced(client.clone(), ns);
        let ip = wait_for(
            &cluster,
            &api,
            name,
            MINUTE.saturating_sub(started.elapsed()),
            reason,
            |ip| reason_of(ip) == reason,
        )
        .await;
        assert_eq!(is_stalled(&ip), stalled, "{name}: {:?}", ip.status);
        assert_eq!(condition(&ip, "Reconciling").is_some(), !stalled, "{name}: {:?}", ip.status);
        let message = message_of(&ip);
        assert!(message.contains(text) && message.contains("cannot start"), "{name}: {message}");
        event_about(&client, ns, name, |t, r, note| {
            t == "Warning" && r == reason && note.contains(text)
        })
        .await;
    }
    assert!(started.elapsed() < MINUTE, "took {:?}", started.elapsed());
    // Once the ConfigMap exists, kubelet mounts it and the push goes on by itself.
    let dir = tempfile::tempdir().unwrap();
    common::openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
    );
    let pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    create(&maps, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "registry-ca", "namespace": NS}, "data": {"ca.crt": pem}})).await;
    let ip =
        wait_for(&cluster, &api, "noca", MINUTE, "Ready once the ConfigMap exists", is_ready).await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
    // The pod GC replaced the ghost's pod: the reason stayed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reason_of(&api.get("ghost").await.unwrap()), "WorkerNotStarted");
    assert!(
        registry.tags("cannot/psa").await.is_empty()
            && registry.tags("cannot/nowhere").await.is_empty()
    );
}

/// The worker image: one that cannot be pulled keeps reconciling with the pull error; an
/// invalid reference and an image without the imagepush entrypoint stall and their Job is
/// removed. Each in its own cluster, since the image is the controller's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_image_problems_are_reported_with_the_clusters_message() {
    let cases: [(&str, &[&str], &str, bool, &str); 3] = [
        (
            "registry.invalid/team/pusher:1",
            &[],
            "WorkerImagePullFailed",
            false,
            "registry.invalid/team/pusher:1",
        ),
        ("Registry.Invalid/Team/Pusher:1", &[], "WorkerImageInvalid", true, "InvalidImageName"),
        (
            "tools.test/other:1",
            &["--binary-map", "other=/usr/bin/true"],
            "WorkerStartFailed",
            true,
            "imagepush",
        ),
    ];
    for (image, double_args, reason, stalled, text) in cases {
        let mut cluster = Cluster::start_with(double_args);
        let client = cluster.client().await;
        claim(&client, NS, "layouts").await;
        simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[1000], 84);
        cluster.start_controller(&["--worker-image", image]);
        let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
        create(&api, push_spec(NS, "app", "app", "127.0.0.1:9/x/app:v1", json!({}))).await;
        let ip =
            wait_for(&cluster, &api, "app", MINUTE, reason, |ip| reason_of(ip) == reason).await;
        assert_eq!(is_stalled(&ip), stalled, "{image}: {:?}", ip.status);
        assert!(message_of(&ip).contains(text), "{image}: {}", message_of(&ip));
        event_about(&client, NS, "app", |t, r, _| t == "Warning" && r == reason).await;
        if stalled {
            // Nothing is left trying: the Job is gone, and no other was made.
            let deadline = Instant::now() + Duration::from_secs(15);
            while !jobs_of(&client, NS, "app").await.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "{image}: the Job was not removed\n{}",
                    cluster.diagnostics()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert_eq!(job_creates(&cluster, NS), 1, "{image}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3, 4. Job names taken by others; Jobs the API server refuses
// ---------------------------------------------------------------------------------------------

/// A Job with the worker's name that is not the ImagePush's (here made by someone else before
/// the controller runs) stalls the push once, with no create loop; an ImagePush deleted with
/// its Jobs orphaned and created again pushes without meeting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_name_taken_by_another_owner_never_loops() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    let (_b, image) = simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[1000], 85);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    let taken =
        create(&api, push_spec(NS, "taken", "app", &format!("{host}/names/taken:v1"), json!({})))
            .await;
    let name = imagepush::controller::job::job_name(
        "taken",
        taken.metadata.uid.as_deref().unwrap(),
        1,
        None,
        1,
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    create(
        &jobs,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
               "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "example.test/other:1", "command": ["true"]}]}}}}),
    )
    .await;
    cluster.start_controller(&[]);
    let ip = wait_for(&cluster, &api, "taken", MINUTE, "JobNameConflict", |ip| {
        reason_of(ip) == "JobNameConflict"
    })
    .await;
    assert!(is_stalled(&ip) && message_of(&ip).contains(&name), "{:?}", ip.status);
    let creates = job_creates(&cluster, NS);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(job_creates(&cluster, NS), creates, "the create is not retried in a loop");
    assert_eq!(creates, 2, "the test's own Job and one try of the controller's");

    // Deleted with its Jobs orphaned, then created again: a new uid, new Job names.
    create(&api, push_spec(NS, "again", "app", &format!("{host}/names/again:v1"), json!({}))).await;
    wait_for(&cluster, &api, "again", MINUTE, "Ready", is_ready).await;
    api.delete(
        "again",
        &DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..Default::default() },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.get_opt("again").await.unwrap().is_some() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    create(&api, push_spec(NS, "again", "app", &format!("{host}/names/again:v2"), json!({}))).await;
    let ip = wait_for(&cluster, &api, "again", MINUTE, "Ready again", is_ready).await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
    assert_eq!(jobs_of(&client, NS, "again").await.len(), 2, "the orphan and the new one");
}

/// The API server refuses the worker Job (422 invalid, 403 forbidden): the push stalls with
/// the server's message and an event, and is not retried every few seconds. What pod
/// validation would refuse is refused by the controller before any Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_job_creates_stall_with_the_servers_message() {
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[1000], 86);
    let refuse = |status: u16, reason: &str, message: &str| {
        json!([{"method": "POST", "pathRegex": "/namespaces/e2e/jobs$", "status": status,
                "reason": reason, "message": message}])
    };
    cluster.set_faults(refuse(403, "Forbidden", "jobs.batch is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, used: count/jobs.batch=5, limited: count/jobs.batch=5"));
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(&api, push_spec(NS, "quota", "app", "127.0.0.1:9/r/app:v1", json!({}))).await;
    let ip = wait_for(&cluster, &api, "quota", MINUTE, "WorkerJobForbidden", |ip| {
        reason_of(ip) == "WorkerJobForbidden"
    })
    .await;
    assert!(is_stalled(&ip), "{:?}", ip.status);
    assert!(message_of(&ip).contains("exceeded quota: jobs"), "{}", message_of(&ip));
    event_about(&client, NS, "quota", |t, r, n| {
        t == "Warning" && r == "WorkerJobForbidden" && n.contains("exceeded quota")
    })
    .await;
    let creates = job_creates(&cluster, NS);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(job_creates(&cluster, NS), creates, "no retry loop");
    assert!(jobs_of(&client, NS, "quota").await.is_empty());

    cluster.set_faults(refuse(
        422,
        "Invalid",
        "Job.batch \"x\" is invalid: spec.template.spec.containers[0].image: Invalid value: \"\"",
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    create(&api, push_spec(NS, "invalid", "app", "127.0.0.1:9/r/app:v1", json!({}))).await;
    let ip = wait_for(&cluster, &api, "invalid", MINUTE, "WorkerJobRejected", |ip| {
        reason_of(ip) == "WorkerJobRejected"
    })
    .await;
    assert!(is_stalled(&ip), "{:?}", ip.status);
    assert!(message_of(&ip).contains("containers[0].image: Invalid value"), "{}", message_of(&ip));
    event_about(&client, NS, "invalid", |t, r, _| t == "Warning" && r == "WorkerJobRejected").await;
    let creates = job_creates(&cluster, NS);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(job_creates(&cluster, NS), creates, "no retry loop");
    cluster.set_faults(json!([]));

    // Values a Pod would carry that the API server would refuse: refused before any Job.
    let bad = [
        (
            "badnode",
            json!({"source": {"hostPath": {"path": "/var/lib/images/app", "nodeName": "Node_1"}}}),
            "nodeName",
        ),
        (
            "badselector",
            json!({"source": {"hostPath": {"path": "/var/lib/images/app", "nodeSelector": {"bad key": "x"}}}}),
            "nodeSelector",
        ),
        (
            "badkey",
            json!({"connection": {"plainHttp": true, "ca": {"secretName": "ca", "key": ""}}}),
            "ca.key",
        ),
        ("badsecret", json!({"credentialsSecret": {"name": "Reg_Cred"}}), "credentialsSecret.name"),
    ];
    for (name, extra, field) in &bad {
        create(&api, push_spec(NS, name, "app", "127.0.0.1:9/r/app:v1", extra.clone())).await;
        let ip = wait_for(&cluster, &api, name, MINUTE, "Stalled", is_stalled).await;
        assert_eq!(reason_of(&ip), "SpecInvalid", "{name}");
        assert!(message_of(&ip).contains(field), "{name}: {}", message_of(&ip));
    }
    for (name, _, _) in &bad {
        assert!(jobs_of(&client, NS, name).await.is_empty(), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5, 6. A spec change or a deletion stops the running worker; it writes no tag after that
// ---------------------------------------------------------------------------------------------

/// Pods of `job` (by its name label), with their `push` container state.
async fn pods_of_job(client: &kube::Client, ns: &str, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("job-name={job}"))).await.unwrap().items
}

/// The worker's log lines (as the simulated kubelet kept them) of every pod of `job`.
fn worker_logs(cluster: &Cluster, ns: &str, job: &str) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(cluster.state_dir().join("pods").join(ns)).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("{job}-")) {
            out.push_str(
                &std::fs::read_to_string(e.path().join("containers/push/container.log"))
                    .unwrap_or_default(),
            );
        }
    }
    out
}

/// Generation 1 pushes a big image slowly (through a throttled proxy) to `:release`; the spec
/// changes to another layout, pushed fast (straight to the registry). The old worker is
/// stopped (SIGTERM, as PID 1) before the new one starts, and never tags: `release` ends at
/// the new image and stays there. Without the stop, the old worker would tag last. Beside it,
/// a change of the target's tag (`:a` to `:b`): only `:b` ever exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_stops_the_previous_generation_before_the_next_pushes() {
    let registry = TestRegistry::start();
    let proxy = common::CountingProxy::start(registry.addr());
    // 8 MB per old worker at 400 kB/s: 20 s, so a loaded machine cannot finish the old push
    // before the spec change reaches it (2 MB/s raced on CI).
    proxy.set_throttle(400_000);
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    let root = cluster.pvc_dir(NS, "layouts");
    let (_b1, old) = simple_image(&root.join("v1"), "v1", &[4_000_000, 4_000_000], 87);
    let (_b2, new) = simple_image(&root.join("v2"), "v2", &[3000], 88);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    // `app` keeps its tag across the change; `retag` changes it (`:a` to `:b`).
    for (name, tag) in [("app", "release"), ("retag", "a")] {
        let target = format!("{}/team/{name}:{tag}", proxy.host());
        create(&api, push_spec(NS, name, "v1", &target, json!({"maxConcurrentUploads": 1}))).await;
    }
    let mut old_jobs = Vec::new();
    for name in ["app", "retag"] {
        let running = wait_for(&cluster, &api, name, MINUTE, "uploading", |ip| {
            ip.status.as_ref().and_then(|s| s.progress.as_ref()).is_some_and(|p| p.bytes_done > 0)
        })
        .await;
        old_jobs.push(running.status.unwrap().job_name.unwrap());
    }
    let old_job = old_jobs[0].clone();

    for (name, tag) in [("app", "release"), ("retag", "b")] {
        let patch = json!({"spec": {"source": {"persistentVolumeClaim": {"claimName": "layouts", "path": "v2"}},
                                    "target": format!("{}/team/{name}:{tag}", registry.host())}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    }
    for name in ["app", "retag"] {
        let ip = wait_for(&cluster, &api, name, MINUTE, "Ready for generation 2", |ip| {
            is_ready(ip) && ip.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
        })
        .await;
        assert_eq!(ip.status.unwrap().digest.as_deref(), Some(new.digest.as_str()));
    }
    // The old Job is gone (deleted, foreground: with its pod), and its worker said why it stopped.
    assert!(
        jobs_of(&client, NS, "app")
            .await
            .iter()
            .all(|j| j.metadata.name.as_deref() != Some(&old_job))
    );
    assert!(pods_of_job(&client, NS, &old_job).await.is_empty());
    let log = worker_logs(&cluster, NS, &old_job);
    assert!(log.contains("\"reason\":\"Terminated\""), "the old worker's log:\n{log}");
    event_about(&client, NS, "app", |_, r, n| r == "Superseded" && n.contains(&old_job)).await;
    // Let the old upload's bandwidth go: nothing may tag after the new generation did.
    proxy.set_throttle(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(registry.tags("team/app").await, ["release"]);
    assert_eq!(registry.manifest("team/app", "release").await.unwrap().2, new.digest);
    assert_ne!(old.digest, new.digest);
    assert_eq!(registry.tags("team/retag").await, ["b"], "the old tag was never written");
    assert_eq!(registry.manifest("team/retag", "b").await.unwrap().2, new.digest);
    let log = worker_logs(&cluster, NS, &old_jobs[1]);
    assert!(log.contains("\"reason\":\"Terminated\""), "the old retag worker's log:\n{log}");
    let tag_puts: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PUT"
                && (r.target.ends_with("/manifests/release") || r.target.ends_with("/manifests/a"))
        })
        .collect();
    assert!(tag_puts.is_empty(), "the old worker tagged: {tag_puts:?}");
}

/// Deleting the ImagePush mid-push: the garbage collector deletes its Job and pod, kubelet
/// sends SIGTERM to the worker (PID 1 of its container), which stops at once, reports why and
/// writes no tag, instead of pushing on through the 30 s grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_imagepush_stops_its_worker_within_two_seconds() {
    let registry = TestRegistry::start();
    let proxy = common::CountingProxy::start(registry.addr());
    proxy.set_throttle(500_000);
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("big"), "v1", &[6_000_000], 89);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        push_spec(NS, "gone", "big", &format!("{}/team/gone:v1", proxy.host()), json!({})),
    )
    .await;
    let running = wait_for(&cluster, &api, "gone", MINUTE, "uploading", |ip| {
        ip.status.as_ref().and_then(|s| s.progress.as_ref()).is_some_and(|p| p.bytes_done > 0)
    })
    .await;
    let job = running.status.unwrap().job_name.unwrap();
    let pod = pods_of_job(&client, NS, &job).await.remove(0);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    // From the moment kubelet is told (the pod's deletionTimestamp) to the container's end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut told = None;
    loop {
        match pods.get_opt(pod.metadata.name.as_deref().unwrap()).await.unwrap() {
            Some(p) if p.metadata.deletion_timestamp.is_some() && told.is_none() => {
                told = Some(Instant::now())
            }
            Some(_) => {}
            None => break,
        }
        assert!(
            Instant::now() < deadline,
            "the worker pod was not gone after 30 s\n{}",
            cluster.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = told.map(|t| t.elapsed()).unwrap_or_default();
    assert!(stopped < Duration::from_secs(3), "the worker took {stopped:?} to stop");
    let log = worker_logs(&cluster, NS, &job);
    assert!(log.contains("\"reason\":\"Terminated\"") && log.contains("SIGTERM"), "{log}");
    proxy.set_throttle(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(registry.tags("team/gone").await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 8. Sidecars
// ---------------------------------------------------------------------------------------------

/// A mesh that injects a sidecar into every pod (Istio's webhook, simulated): the worker's
/// pod opts out, so its Job completes. And where the opt-out is not honoured, the push still
/// ends Ready: the controller reads the container named `push`, whatever runs beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_injecting_mesh_does_not_keep_a_push_from_finishing() {
    let registry = TestRegistry::start();
    for (opt_out, injected) in [(None, false), (Some("example.com/never=true"), true)] {
        let mut args = vec!["--inject-sidecar", "istio-proxy"];
        if let Some(o) = opt_out {
            args.extend(["--sidecar-opt-out", o]);
        }
        let mut cluster = Cluster::start_with(&args);
        let client = cluster.client().await;
        claim(&client, NS, "layouts").await;
        let (_b, image) =
            simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[2000], 90);
        cluster.start_controller(&[]);
        let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
        let target = format!(
            "{}/mesh/app:{}",
            registry.host(),
            if injected { "injected" } else { "optout" }
        );
        create(&api, push_spec(NS, "app", "app", &target, json!({}))).await;
        let ip = wait_for(&cluster, &api, "app", MINUTE, "Ready", is_ready).await;
        assert_eq!(ip.status.as_ref().unwrap().digest.as_deref(), Some(image.digest.as_str()));
        let job = ip.status.unwrap().job_name.unwrap();
        let pod = pods_of_job(&client, NS, &job).await.remove(0);
        let names: Vec<String> = pod.spec.unwrap().containers.into_iter().map(|c| c.name).collect();
        if injected {
            assert_eq!(names, ["istio-proxy", "push"], "the mesh injected its sidecar first");
            assert_eq!(
                pod.status.unwrap().phase.as_deref(),
                Some("Running"),
                "the sidecar keeps the pod running"
            );
        } else {
            assert_eq!(names, ["push"]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 9. A cluster clock ahead of the controller's
// ---------------------------------------------------------------------------------------------

/// The cluster's clock runs 10 minutes ahead. A registry that rate-limits (429, Retry-After
/// 600) ends the attempt; the Job's finish time then lies in the controller's future. That
/// counts as no time gone: the next attempt is the registry's 600 s away (by the
/// controller's clock), not at once, and not 600 s plus the skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_waits_hold_when_the_cluster_clock_is_ahead() {
    use common::proxy::HttpFault;
    let registry = TestRegistry::start();
    let proxy = common::CountingProxy::start(registry.addr());
    proxy.add_rule(HttpFault::new("PUT", "/manifests/", 429).retry_after(600).times(u64::MAX));
    let mut cluster = Cluster::start_with(&["--clock-skew", "600"]);
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[2000], 91);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        push_spec(NS, "skewed", "app", &format!("{}/team/skewed:v1", proxy.host()), json!({})),
    )
    .await;
    let ip = wait_for(&cluster, &api, "skewed", MINUTE, "a scheduled retry", |ip| {
        ip.status.as_ref().is_some_and(|s| s.next_attempt_time.is_some())
    })
    .await;
    let st = ip.status.unwrap();
    let next = st.next_attempt_time.unwrap().0;
    let ahead = next.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
    assert!((570..=600).contains(&ahead), "next attempt in {ahead}s by our clock");
    let job = st.job_name.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let finished = jobs
        .get(&job)
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .last_transition_time
        .unwrap()
        .0;
    assert!(finished > k8s_openapi::jiff::Timestamp::now(), "the cluster's clock is ahead");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(jobs_of(&client, NS, "skewed").await.len(), 1, "no early second attempt");
    assert_eq!(
        api.get("skewed").await.unwrap().status.unwrap().next_attempt_time.unwrap().0,
        next,
        "the promised time stands"
    );
}

// ---------------------------------------------------------------------------------------------
// 10, 11. hostPath roots that hide the image; notes and messages within their limits
// ---------------------------------------------------------------------------------------------

#[test]
fn host_path_roots_that_would_hide_the_worker_image_are_refused_at_start() {
    for root in ["/usr", "/usr/local/bin", "/lib64", "/etc", "/var/run", "/var/run/secrets/x"] {
        let run = common::imagepush(&[
            "controller",
            "--kubeconfig",
            "/nonexistent",
            "--allowed-host-path-root",
            root,
        ]);
        run.expect_code(2);
        assert!(
            run.stderr.contains("would hide the worker image's own files"),
            "{root}: {}",
            run.stderr
        );
    }
}

/// A failure whose message is long and multi-byte (a layout path of 600 two-byte
/// characters): the event the API server takes holds at most 1 kB of it (the double answers
/// 422 to a longer note, as the API server does), cut on a character.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_multibyte_messages_fit_an_event_note() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    // Six directories of 100 two-byte characters (a name may hold 255 bytes).
    let path = vec!["ü".repeat(100); 6].join("/");
    create(
        &api,
        push_spec(NS, "long", &path, &format!("{}/team/long:v1", registry.host()), json!({})),
    )
    .await;
    let ip = wait_for(&cluster, &api, "long", MINUTE, "Stalled", is_stalled).await;
    assert_eq!(reason_of(&ip), "LayoutInvalid");
    let message = message_of(&ip);
    assert!(message.len() > 1024, "{}", message.len());
    let (_, _, note) =
        event_about(&client, NS, "long", |t, r, _| t == "Warning" && r == "LayoutInvalid").await;
    assert!(note.len() <= 1024 && note.len() > 1000, "{} bytes", note.len());
    assert!(message.starts_with(note.as_str()));
    let refused: Vec<_> = cluster
        .requests()
        .into_iter()
        .filter(|r| {
            r["path"].as_str().unwrap_or_default().contains("/events") && r["status"] == 422
        })
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

// ---------------------------------------------------------------------------------------------
// 11. An archive as the source
// ---------------------------------------------------------------------------------------------

/// The source path may name a tar archive of a layout (here gzip, made by GNU tar, on the
/// claim as any pipeline would leave it): the worker, as user 65532 on the read-only claim,
/// pushes it like the directory, detected by content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_on_the_claim_pushes_like_its_layout() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    let scratch = tempfile::tempdir().unwrap();
    let (_b, image) = simple_image(&scratch.path().join("app"), "v1", &[300_000, 5000], 92);
    let archive = cluster.pvc_dir(NS, "layouts").join("builds/app.oci");
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(scratch.path().join("app"))
        .arg("-czf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let target = format!("{}/archive/app:v1", registry.host());
    create(&api, push_spec(NS, "app", "builds/app.oci", &target, json!({}))).await;
    let ip = wait_for(&cluster, &api, "app", MINUTE, "Ready", is_ready).await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
    assert_eq!(registry.manifest("archive/app", "v1").await.unwrap().2, image.digest);
}

/// The admin's worker defaults (`--worker-defaults`, the chart's `worker` values) place and
/// shape every worker: on a cluster whose only node is a tainted build node, the worker runs
/// through the defaults' toleration and node selector plus the ImagePush's own, reaches the
/// registry through the defaults' proxy, and carries their labels and the resources the
/// ImagePush chose; an ImagePush asking for more than the defaults allow stalls before any Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_defaults_and_spec_worker_place_and_shape_the_worker() {
    let registry = TestRegistry::start();
    // Forwards whatever it is sent to the registry: as an HTTP proxy it gets absolute-form
    // requests, which distribution serves like any other.
    let proxy = common::CountingProxy::start(registry.addr());
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = json!({"metadata": {"labels": {"pool": "builds", "zone": "a"}},
                      "spec": {"taints": [{"key": "dedicated", "value": "builds", "effect": "NoSchedule"}]}});
    nodes.patch("sim-node", &PatchParams::default(), &Patch::Merge(&node)).await.unwrap();
    claim(&client, NS, "layouts").await;
    let (_b, image) = simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[3000], 95);
    let defaults = cluster.state_dir().join("worker-defaults.yaml");
    std::fs::write(
        &defaults,
        format!(
            "resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{memory: 512Mi}}}}\n\
             tolerations: [{{key: dedicated, operator: Equal, value: builds, effect: NoSchedule}}]\n\
             nodeSelector: {{pool: builds}}\n\
             env: [{{name: HTTP_PROXY, value: \"{}\"}}]\n\
             labels: {{cost-center: builds}}\n",
            proxy.url()
        ),
    )
    .unwrap();
    cluster.start_controller(&["--worker-defaults", defaults.to_str().unwrap()]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    let worker =
        json!({"resources": {"limits": {"memory": "384Mi"}}, "nodeSelector": {"zone": "a"}});
    create(
        &api,
        push_spec(NS, "app", "app", &format!("{host}/defaults/app:v1"), json!({"worker": worker})),
    )
    .await;
    let greedy = json!({"resources": {"limits": {"memory": "1Gi"}}});
    create(
        &api,
        push_spec(
            NS,
            "greedy",
            "app",
            &format!("{host}/defaults/greedy:v1"),
            json!({"worker": greedy}),
        ),
    )
    .await;

    let ip = wait_for(&cluster, &api, "app", MINUTE, "Ready", is_ready).await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
    let through_proxy: Vec<_> =
        proxy.requests().into_iter().map(|r| format!("{} {}", r.method, r.target)).collect();
    assert!(
        through_proxy
            .iter()
            .any(|r| r.starts_with("PUT http://") && r.ends_with("/v2/defaults/app/manifests/v1")),
        "the worker's requests did not go through the defaults' proxy: {through_proxy:?}"
    );
    let jobs = jobs_of(&client, NS, "app").await;
    let template = jobs[0].spec.clone().unwrap().template;
    assert_eq!(template.metadata.unwrap().labels.unwrap()["cost-center"], "builds");
    let pod = template.spec.unwrap();
    let selector = pod.node_selector.unwrap();
    assert_eq!((selector["pool"].as_str(), selector["zone"].as_str()), ("builds", "a"));
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
    let resources = pod.containers[0].resources.clone().unwrap();
    assert_eq!(resources.limits.unwrap()["memory"].0, "384Mi");
    assert_eq!(resources.requests.unwrap()["memory"].0, "64Mi");

    let stalled = wait_for(&cluster, &api, "greedy", MINUTE, "Stalled", is_stalled).await;
    assert_eq!(reason_of(&stalled), "WorkerSettingsNotAllowed");
    assert!(
        message_of(&stalled)
            .contains("worker.resources.limits.memory 1Gi is above the cluster's limit of 512Mi")
    );
    assert!(jobs_of(&client, NS, "greedy").await.is_empty(), "a Job for a refused spec");
}

// ---------------------------------------------------------------------------------------------
// Workload identity: spec.serviceAccountName
// ---------------------------------------------------------------------------------------------

/// A credential helper for a worker image (dash builtins only): the pod's ServiceAccount token
/// as docker's identity token, or a failure saying there is none.
const IDENTITY_HELPER: &str = r#"#!/bin/sh
[ "$1" = get ] || exit 3
read -r url
token=/var/run/secrets/kubernetes.io/serviceaccount/token
if [ -r "$token" ]; then
  read -r jwt < "$token"
  printf '{"ServerURL":"%s","Username":"<token>","Secret":"%s"}' "$url" "$jwt"
else
  echo "no ServiceAccount token at $token"
  exit 1
fi
"#;

/// A worker image with a credential helper that turns the pod's ServiceAccount token into
/// registry credentials (as `docker-credential-ecr-login` or `-gcr` do with a cloud's workload
/// identity), and a registry that accepts only that identity: with `serviceAccountName` the push
/// goes through without any Secret; without it the worker has no token and the helper's reason
/// is in the status; a ServiceAccount that does not exist yet holds the push until it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_gives_the_worker_an_identity_the_registry_accepts() {
    use common::token_registry::{Accept, TokenRegistry};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let files = tempfile::tempdir().unwrap();
    let helper = files.path().join("docker-credential-k8s");
    std::fs::write(&helper, IDENTITY_HELPER).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let registry = TokenRegistry::start_accepting(Accept::Subject(format!(
        "system:serviceaccount:{NS}:pusher"
    )));
    let config = files.path().join("config.json");
    std::fs::write(&config, json!({"credHelpers": {registry.host(): "k8s"}}).to_string()).unwrap();
    let image = "registry.example.com/platform/imagepush-identity:1";
    let pattern = "*/imagepush-identity:*";
    let mut cluster = Cluster::start_with(&[
        "--image-file",
        pattern,
        "/bin/sh",
        "/bin/sh",
        "--image-file",
        pattern,
        "/usr/local/bin/docker-credential-k8s",
        helper.to_str().unwrap(),
        "--image-file",
        pattern,
        "/etc/imagepush/docker/config.json",
        config.to_str().unwrap(),
    ]);
    let client = cluster.client().await;
    claim(&client, NS, "layouts").await;
    let (_b, built) = simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[2000], 97);
    let defaults = cluster.state_dir().join("worker-defaults.yaml");
    std::fs::write(&defaults, "env: [{name: DOCKER_CONFIG, value: /etc/imagepush/docker}]\n")
        .unwrap();
    cluster.start_controller(&[
        "--worker-image",
        image,
        "--worker-defaults",
        defaults.to_str().unwrap(),
    ]);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    // The pod's automountServiceAccountToken wins over the account's.
    create(
        &accounts,
        json!({"metadata": {"name": "pusher", "namespace": NS}, "automountServiceAccountToken": false}),
    )
    .await;
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    let with = |account: &str| json!({"serviceAccountName": account});
    create(&api, push_spec(NS, "app", "app", &format!("{host}/identity/app:v1"), with("pusher")))
        .await;
    create(&api, push_spec(NS, "anon", "app", &format!("{host}/identity/anon:v1"), json!({})))
        .await;
    create(&api, push_spec(NS, "later", "app", &format!("{host}/identity/later:v1"), with("late")))
        .await;

    let ip = wait_for(&cluster, &api, "app", MINUTE, "Ready", is_ready).await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(built.digest.as_str()));
    assert!(
        registry.subjects().contains(&format!("system:serviceaccount:{NS}:pusher")),
        "{:?}",
        registry.subjects()
    );
    let pod = jobs_of(&client, NS, "app").await[0].spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(
        (pod.service_account_name.as_deref(), pod.automount_service_account_token),
        (Some("pusher"), Some(true))
    );

    // No ServiceAccount named: no token in the pod, and the helper says so.
    let anon = wait_for(&cluster, &api, "anon", MINUTE, "Stalled", is_stalled).await;
    assert_eq!(reason_of(&anon), "CredentialsInvalid", "{}", message_of(&anon));
    assert!(message_of(&anon).contains("no ServiceAccount token"), "{}", message_of(&anon));
    let pods = pods_of_job(
        &client,
        NS,
        &jobs_of(&client, NS, "anon").await[0].metadata.name.clone().unwrap(),
    )
    .await;
    let volumes = pods[0].spec.clone().unwrap().volumes.unwrap_or_default();
    assert!(volumes.iter().all(|v| !v.name.starts_with("kube-api-access-")), "{volumes:?}");

    // A ServiceAccount that does not exist: the cluster's refusal, until it is created.
    let held = wait_for(&cluster, &api, "later", MINUTE, "WorkerPodRejected", |ip| {
        reason_of(ip) == "WorkerPodRejected"
    })
    .await;
    assert!(
        message_of(&held).contains(&format!("error looking up service account {NS}/late")),
        "{}",
        message_of(&held)
    );
    create(&accounts, json!({"metadata": {"name": "late", "namespace": NS}})).await;
    let registry_late = format!("system:serviceaccount:{NS}:late");
    let later = wait_for(&cluster, &api, "later", 2 * MINUTE, "the push's own outcome", |ip| {
        reason_of(ip) != "WorkerPodRejected" && (is_ready(ip) || is_stalled(ip))
    })
    .await;
    // The registry accepts only `pusher`: `late` gets a token the registry refuses.
    assert_eq!(reason_of(&later), "AuthenticationFailed", "{}", message_of(&later));
    assert!(registry.subjects().contains(&registry_late), "{:?}", registry.subjects());
}
