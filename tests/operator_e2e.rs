//! End-to-end: the real `imagepush controller` against the Kubernetes API test double with
//! its node simulator (worker Jobs run the real `imagepush push` as local processes), and a
//! real registry. Each scenario applies ImagePush objects and waits for their status.

mod common;

use std::time::Duration;

use common::cluster::{
    Cluster, condition, copy_tree, create, create_pvc, is_ready, is_stalled, wait_for,
};
use common::{LayoutBuilder, TestRegistry, multi_platform, simple_image};
use imagepush::controller::FIELD_MANAGER;
use imagepush::crd::{ImagePush, Phase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const NS: &str = "e2e";
const TIMEOUT: Duration = Duration::from_secs(60);

async fn pvc(client: &kube::Client, name: &str) {
    create_pvc(client, NS, name).await
}

fn image_push(
    name: &str,
    claim: &str,
    path: &str,
    target: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut v = json!({
        "apiVersion": "imagepush.dev/v1alpha1", "kind": "ImagePush",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "source": {"persistentVolumeClaim": {"claimName": claim, "path": path}},
            "target": target,
            "connection": {"plainHttp": true}
        }
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, val) in extra {
            v["spec"][k] = val;
        }
    }
    v
}

async fn jobs_of(client: &kube::Client, name: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("imagepush.dev/name={name}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_push_becomes_ready_with_the_digest_and_is_idempotent() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let (_b, image) =
        simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[200_000, 3000], 1);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        image_push("app", "layouts", "app", &format!("{}/team/app:v1", registry.host()), json!({})),
    )
    .await;
    // A status as an earlier version of the controller wrote it (a merge patch): what the
    // push no longer has (a retry time, referrers left out, an old Job's name) is gone once
    // it is Ready.
    let earlier = json!({"status": {"phase": "Running", "jobName": "app-1-1-old",
        "nextAttemptTime": "2026-01-01T00:00:00Z", "referrersLeftOut": "earlier"}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch_status("app", &params, &Patch::Merge(earlier)).await.unwrap();
    cluster.start_controller(&[]);
    let ip = wait_for(&cluster, &api, "app", TIMEOUT, "Ready", is_ready).await;
    let st = ip.status.clone().unwrap();
    assert_eq!((st.next_attempt_time, st.referrers_left_out.as_deref()), (None, None));
    assert_ne!(st.job_name.as_deref(), Some("app-1-1-old"));
    let owners: Vec<_> = ip
        .managed_fields()
        .iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| (m.manager.clone().unwrap_or_default(), m.operation.clone().unwrap_or_default()))
        .collect();
    assert_eq!(owners, [(FIELD_MANAGER.to_string(), "Apply".to_string())]);
    assert_eq!(st.digest.as_deref(), Some(image.digest.as_str()));
    assert_eq!(st.phase, Some(Phase::Succeeded));
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.tags[0].tag, "v1");
    assert_eq!(st.blobs.as_ref().unwrap().uploaded, 3);
    assert_eq!(condition(&ip, "Ready").unwrap().1, "Pushed");
    assert!(condition(&ip, "Reconciling").is_none() && condition(&ip, "Stalled").is_none());
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, image.digest);
    assert_eq!(jobs_of(&client, "app").await.len(), 1);

    // A finished generation: a restarted controller reconciles it without writing anything.
    cluster.kill_controller();
    let before = cluster.requests().len();
    cluster.start_controller(&[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let writes: Vec<_> = cluster.requests()[before..]
        .iter()
        .filter(|r| {
            matches!(
                r["method"].as_str(),
                Some("POST") | Some("PATCH") | Some("PUT") | Some("DELETE")
            )
        })
        .filter(|r| {
            !r["path"].as_str().unwrap_or_default().contains("/leases")
                && !r["path"].as_str().unwrap_or_default().contains("/events")
        })
        .cloned()
        .collect();
    assert!(writes.is_empty(), "writes after restart: {writes:#?}");
    assert_eq!(jobs_of(&client, "app").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_tags_platform_and_promotion_with_mounts_from_earlier_pushes() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let root = cluster.pvc_dir(NS, "layouts");
    // Two tags in one layout.
    let mut b = LayoutBuilder::new(&root.join("tags"));
    let one = b.image(&common::ImageSpec::new(&[(1, 5000)], 1));
    let two = b.image(&common::ImageSpec::new(&[(2, 5000)], 2));
    b.tag(&one, "1.0");
    b.tag(&two, "2.0");
    b.write();
    // A multi-platform index.
    let (_mb, _index, images) = multi_platform(
        &root.join("multi"),
        "v1",
        &[("linux", "amd64", None), ("linux", "arm64", None)],
        true,
        true,
        3,
    );
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    create(&api, image_push("tags", "layouts", "tags", &format!("{host}/team/tags"), json!({})))
        .await;
    create(
        &api,
        image_push(
            "arm",
            "layouts",
            "multi",
            &format!("{host}/team/arm:v1"),
            json!({"platform": "linux/arm64"}),
        ),
    )
    .await;

    let tags = wait_for(&cluster, &api, "tags", TIMEOUT, "Ready", is_ready).await;
    let names: Vec<_> = tags
        .status
        .as_ref()
        .unwrap()
        .tags
        .iter()
        .map(|t| (t.tag.clone(), t.digest.clone()))
        .collect();
    assert_eq!(
        names,
        [("1.0".to_string(), one.digest.clone()), ("2.0".to_string(), two.digest.clone())]
    );
    assert_eq!(registry.tags("team/tags").await, ["1.0", "2.0"]);

    let arm = wait_for(&cluster, &api, "arm", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(arm.status.as_ref().unwrap().digest.as_deref(), Some(images[1].digest.as_str()));
    assert_eq!(registry.manifest("team/arm", "v1").await.unwrap().2, images[1].digest);

    // Promotion: the same layout to another repository, no mountFrom: the controller hands the
    // worker what the finished "arm" push recorded, so every blob is mounted.
    create(
        &api,
        image_push(
            "arm-prod",
            "layouts",
            "multi",
            &format!("{host}/prod/arm:v1"),
            json!({"platform": "linux/arm64"}),
        ),
    )
    .await;
    let prod = wait_for(&cluster, &api, "arm-prod", TIMEOUT, "Ready", is_ready).await;
    let st = prod.status.unwrap();
    let totals = st.blobs.unwrap();
    assert_eq!(totals.uploaded, 0, "{totals:?}");
    assert_eq!(totals.bytes_uploaded, 0);
    assert_eq!(totals.mounted as usize, st.mounts.len());
    assert!(totals.mounted >= 2);
    assert!(st.mounts.iter().all(|m| m.from == format!("{host}/team/arm")), "{:?}", st.mounts);
}

/// A mirror over a PVC layout of three images (named as `ctr export` names them) reaches
/// Ready with every image in its status and in the registry, the shared base uploaded once;
/// a later push of one of them to another repository mounts every blob from what the mirror
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_pushes_every_image_of_a_bundle_and_teaches_later_pushes() {
    use common::layout::{CONTAINERD_NAME, REF_NAME};
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let mut b = LayoutBuilder::new(&cluster.pvc_dir(NS, "layouts").join("bundle"));
    let names = ["docker.io/library/nginx:1.27", "ghcr.io/org/app:v1", "docker.io/library/redis:7"];
    let mut images = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let spec = common::ImageSpec::new(&[(7, 300_000), (70 + i as u64, 20_000)], 70 + i as u64);
        let image = b.image(&spec);
        b.name(&image, &[(CONTAINERD_NAME, name), (REF_NAME, name.rsplit_once(':').unwrap().1)]);
        images.push(image);
    }
    b.write();
    let base = b.children(&images[0]).1[0].digest.clone();
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    let target = format!("{host}/mirror");
    create(&api, image_push("bundle", "layouts", "bundle", &target, json!({"mirror": true}))).await;
    let ip = wait_for(&cluster, &api, "bundle", TIMEOUT, "Ready", is_ready).await;
    let st = ip.status.clone().unwrap();
    let seen: Vec<(String, Option<String>, String)> =
        st.images.iter().map(|i| (i.repository.clone(), i.tag.clone(), i.digest.clone())).collect();
    let paths = ["library/nginx", "org/app", "library/redis"];
    let tags = ["1.27", "v1", "7"];
    let want: Vec<(String, Option<String>, String)> = (0..3)
        .map(|i| {
            (format!("{target}/{}", paths[i]), Some(tags[i].to_string()), images[i].digest.clone())
        })
        .collect();
    assert_eq!(seen, want);
    assert_eq!(st.image_count, Some(3));
    assert!(st.tags.is_empty() && st.blob_digests.is_empty());
    assert_eq!(st.digest.as_deref(), Some(images[0].digest.as_str()));
    let totals = st.blobs.clone().unwrap();
    assert_eq!((totals.uploaded, totals.mounted, totals.existed), (7, 2, 0), "{totals:?}");
    assert!(st.mounts.is_empty(), "mounts inside the bundle are not listed: {:?}", st.mounts);
    assert_eq!(st.repository_blobs[0].repository, format!("{target}/library/nginx"));
    assert!(st.repository_blobs[0].digests.contains(&base));
    let held: usize = st.repository_blobs.iter().map(|h| h.digests.len()).sum();
    assert_eq!(held, 7, "each distinct blob once: {:?}", st.repository_blobs);
    let ready = condition(&ip, "Ready").unwrap();
    assert_eq!(ready.1, "Pushed");
    assert!(message_of_ready(&ip).contains("pushed 3 images to 3 repositories"), "{ip:?}");
    for i in 0..3 {
        let (_, _, digest) =
            registry.manifest(&format!("mirror/{}", paths[i]), tags[i]).await.unwrap();
        assert_eq!(digest, images[i].digest, "{}", paths[i]);
    }

    // One image of the bundle promoted alone: the mirror's knowledge makes every blob mount.
    create(
        &api,
        image_push(
            "redis-prod",
            "layouts",
            "bundle",
            &format!("{host}/prod/redis:7"),
            json!({"source": {"persistentVolumeClaim": {"claimName": "layouts", "path": "bundle"}, "ref": names[2]}}),
        ),
    )
    .await;
    let prod = wait_for(&cluster, &api, "redis-prod", TIMEOUT, "Ready", is_ready).await;
    let st = prod.status.unwrap();
    let totals = st.blobs.unwrap();
    assert_eq!((totals.uploaded, totals.mounted), (0, 3), "{totals:?}");
    let froms: std::collections::BTreeSet<&str> =
        st.mounts.iter().map(|m| m.from.as_str()).collect();
    let nginx = format!("{target}/library/nginx");
    let redis = format!("{target}/library/redis");
    assert_eq!(froms, [nginx.as_str(), redis.as_str()].into(), "{:?}", st.mounts);
    assert_eq!(registry.manifest("prod/redis", "7").await.unwrap().2, images[2].digest);
}

fn message_of_ready(ip: &ImagePush) -> String {
    let st = ip.status.as_ref();
    st.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_stall_with_a_reason_and_no_retry_storm() {
    let registry = TestRegistry::start_with_htpasswd("alice", "right-password");
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[1000], 4);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    create(
        &secrets,
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": "wrong", "namespace": NS},
            "stringData": {"username": "alice", "password": "wrong-password"}
        }),
    )
    .await;
    cluster.start_controller(&["--allowed-host-path-root", "/var/lib/images"]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    create(
        &api,
        image_push(
            "auth",
            "layouts",
            "app",
            &format!("{host}/team/app:v1"),
            json!({"credentialsSecret": {"name": "wrong"}}),
        ),
    )
    .await;
    create(
        &api,
        image_push("nolayout", "layouts", "missing", &format!("{host}/team/app:v2"), json!({})),
    )
    .await;
    create(&api, image_push("badref", "layouts", "app", "Registry/Upper:v1", json!({}))).await;
    let mut host_path =
        image_push("host", "layouts", "app", &format!("{host}/team/app:v3"), json!({}));
    host_path["spec"]["source"] = json!({"hostPath": {"path": "/etc", "nodeName": "sim-node"}});
    create(&api, host_path).await;

    let auth = wait_for(&cluster, &api, "auth", TIMEOUT, "Stalled", is_stalled).await;
    assert_eq!(condition(&auth, "Stalled").unwrap().1, "AuthenticationFailed");
    assert_eq!(condition(&auth, "Ready").unwrap(), ("False".into(), "AuthenticationFailed".into()));
    assert!(condition(&auth, "Reconciling").is_none());
    assert!(!serde_json::to_string(&auth).unwrap().contains("wrong-password"));
    let nolayout = wait_for(&cluster, &api, "nolayout", TIMEOUT, "Stalled", is_stalled).await;
    assert_eq!(condition(&nolayout, "Stalled").unwrap().1, "LayoutInvalid");
    let badref = wait_for(&cluster, &api, "badref", TIMEOUT, "Stalled", is_stalled).await;
    assert_eq!(condition(&badref, "Stalled").unwrap().1, "ReferenceInvalid");
    let hp = wait_for(&cluster, &api, "host", TIMEOUT, "Stalled", is_stalled).await;
    assert_eq!(condition(&hp, "Stalled").unwrap().1, "HostPathNotAllowed");
    // Spec errors start no Job; permanent push failures ran exactly one.
    assert!(jobs_of(&client, "badref").await.is_empty());
    assert!(jobs_of(&client, "host").await.is_empty());
    assert_eq!(jobs_of(&client, "auth").await.len(), 1);
    assert_eq!(jobs_of(&client, "nolayout").await.len(), 1);
    assert!(registry.tags("team/app").await.is_empty());
    // No retry storm: a few seconds later nothing new was created.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(jobs_of(&client, "auth").await.len(), 1);
    // Warning events with the reason.
    let events = cluster
        .requests()
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"].as_str().unwrap_or_default().contains("/events")
        })
        .count();
    assert!(events >= 4, "events posted: {events}");

    // The password is in no output of the scenario: controller log, worker logs and termination
    // messages, the API's request log, statuses, events.
    let mut outputs = vec![("controller log".to_string(), cluster.controller_log())];
    let mut stack = vec![cluster.state_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log" || x == "jsonl") {
                outputs.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap_or_default(),
                ));
            }
        }
    }
    assert!(outputs.iter().any(|(n, _)| n.ends_with("container.log")), "worker logs were read");
    let all = api.list(&ListParams::default()).await.unwrap();
    outputs.push(("imagepushes".into(), serde_json::to_string(&all).unwrap()));
    let ev: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    outputs.push((
        "events".into(),
        serde_json::to_string(&ev.list(&ListParams::default()).await.unwrap()).unwrap(),
    ));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NS);
    outputs.push((
        "pods (termination messages)".into(),
        serde_json::to_string(&pods.list(&ListParams::default()).await.unwrap()).unwrap(),
    ));
    for (name, text) in &outputs {
        assert!(!text.contains("wrong-password"), "the password leaked into {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_change_pushes_again_and_delete_removes_the_job() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let root = cluster.pvc_dir(NS, "layouts");
    let (_b1, first) = simple_image(&root.join("v1"), "v1", &[2000], 5);
    let (_b2, second) = simple_image(&root.join("v2"), "v2", &[2000], 6);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    create(
        &api,
        image_push("app", "layouts", "v1", &format!("{host}/team/app:release"), json!({})),
    )
    .await;
    wait_for(&cluster, &api, "app", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(registry.manifest("team/app", "release").await.unwrap().2, first.digest);

    api.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"source": {"persistentVolumeClaim": {"claimName": "layouts", "path": "v2"}}}})))
        .await
        .unwrap();
    let ip = wait_for(&cluster, &api, "app", TIMEOUT, "Ready for generation 2", |ip| {
        is_ready(ip) && ip.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(second.digest.as_str()));
    assert_eq!(registry.manifest("team/app", "release").await.unwrap().2, second.digest);
    assert_eq!(jobs_of(&client, "app").await.len(), 2, "one Job per generation");

    api.delete("app", &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !jobs_of(&client, "app").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "jobs not garbage-collected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_mid_push_ends_in_one_job_and_one_success() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    // 120 blobs: the report must reach the controller intact (far more than 4 KiB).
    let mut b = LayoutBuilder::new(&cluster.pvc_dir(NS, "layouts").join("big"));
    let layers: Vec<(u64, usize)> = (0..119).map(|i| (1000 + i, 40_000)).collect();
    let image = b.image(&common::ImageSpec::new(&layers, 9));
    b.tag(&image, "v1");
    b.write();
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        image_push(
            "big",
            "layouts",
            "big",
            &format!("{}/team/big:v1", registry.host()),
            json!({"maxConcurrentUploads": 1}),
        ),
    )
    .await;
    wait_for(&cluster, &api, "big", TIMEOUT, "running", |ip| {
        ip.status.as_ref().and_then(|s| s.job_name.clone()).is_some()
    })
    .await;
    cluster.kill_controller();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_controller(&[]);
    let ip = wait_for(&cluster, &api, "big", TIMEOUT, "Ready", is_ready).await;
    let st = ip.status.unwrap();
    assert_eq!(st.digest.as_deref(), Some(image.digest.as_str()));
    assert_eq!(st.blob_digests.len(), 120);
    assert_eq!(st.blobs.unwrap().uploaded, 120);
    assert_eq!(jobs_of(&client, "big").await.len(), 1, "exactly one Job for the generation");
    let pushed_events = cluster
        .requests()
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"].as_str().unwrap_or_default().contains("/events")
        })
        .count();
    assert!(pushed_events >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_copied_onto_a_pvc_pushes_and_a_missing_claim_stalls() {
    // A layout copied into a PVC directory works like one built there (the copy helper is what
    // a user's build job does).
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "builds").await;
    let src = tempfile::tempdir().unwrap();
    let (_b, image) = simple_image(&src.path().join("l"), "v1", &[1234], 7);
    copy_tree(&src.path().join("l"), &cluster.pvc_dir(NS, "builds").join("out/app"));
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        image_push(
            "copied",
            "builds",
            "out/app",
            &format!("{}/team/copied:v1", registry.host()),
            json!({}),
        ),
    )
    .await;
    let ip = wait_for(&cluster, &api, "copied", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
    // An ImagePush naming a claim that does not exist stalls without a Job.
    create(
        &api,
        image_push("noclaim", "nope", "x", &format!("{}/team/x:v1", registry.host()), json!({})),
    )
    .await;
    let ip = wait_for(&cluster, &api, "noclaim", TIMEOUT, "Stalled", is_stalled).await;
    assert_eq!(condition(&ip, "Stalled").unwrap().1, "PersistentVolumeClaimNotFound");
    assert!(jobs_of(&client, "noclaim").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_push_shows_progress_and_metrics_count_it() {
    let registry = TestRegistry::start();
    let proxy = common::CountingProxy::start(registry.addr());
    proxy.set_throttle(1_500_000);
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let (_b, image) =
        simple_image(&cluster.pvc_dir(NS, "layouts").join("slow"), "v1", &[1_500_000; 4], 8);
    cluster.start_controller(&[]);
    let (code, body) = cluster.controller_http("/healthz").await;
    assert_eq!((code, body.trim()), (200, "ok"));
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        image_push(
            "slow",
            "layouts",
            "slow",
            &format!("{}/team/slow:v1", proxy.host()),
            json!({"maxConcurrentUploads": 1}),
        ),
    )
    .await;
    // Watch the status while the push runs: progress moves between 0 and the total.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let ip = api.get("slow").await.unwrap();
        if let Some(p) = ip.status.as_ref().and_then(|s| s.progress.clone())
            && ip.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        {
            seen.push((p.bytes_done, p.bytes_total, p.summary.clone()));
        }
        if is_ready(&ip) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not Ready; progress seen {seen:?}\n{}",
            cluster.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total: u64 = 6_000_000;
    assert!(
        seen.iter().any(|(done, t, _)| *done > 0 && *done < *t && *t >= total),
        "no intermediate progress seen: {seen:?}"
    );
    assert!(seen.iter().all(|(_, _, s)| s.starts_with("blobs ")));
    let ip = api.get("slow").await.unwrap();
    assert_eq!(ip.status.as_ref().unwrap().digest.as_deref(), Some(image.digest.as_str()));
    // Progress writes are rate-bounded: far fewer status patches than progress lines.
    let status_patches = cluster
        .requests()
        .iter()
        .filter(|r| {
            r["method"] == "PATCH"
                && r["path"].as_str().unwrap_or_default().ends_with("/imagepushes/slow/status")
        })
        .count();
    assert!(status_patches <= 30, "{status_patches} status patches");

    // The counters follow the status write that made it Ready (the same reconcile, just after).
    let mut metrics = String::new();
    for _ in 0..50 {
        let (code, text) = cluster.controller_http("/metrics").await;
        assert_eq!(code, 200);
        metrics = text;
        if metrics.contains("imagepush_pushes_total{result=\"succeeded\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("imagepush_pushes_total{result=\"succeeded\"} 1"), "{metrics}");
    let bytes: u64 = metrics
        .lines()
        .find(|l| l.starts_with("imagepush_bytes_uploaded_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(bytes >= total, "{metrics}");
    assert!(metrics.contains("imagepush_reconciles_total"));
    // Durations: the push (about 3 s through the throttle) and every reconcile.
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name));
        line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    assert_eq!(
        value("imagepush_push_duration_seconds_count{result=\"succeeded\"}"),
        1.0,
        "{metrics}"
    );
    let took = value("imagepush_push_duration_seconds_sum{result=\"succeeded\"}");
    assert!((1.0..120.0).contains(&took), "push took {took} s: {metrics}");
    assert!(value("imagepush_reconcile_duration_seconds_count") >= 3.0, "{metrics}");
    assert_eq!(cluster.controller_http("/readyz").await.0, 200);
    // Each reconcile's log lines name the object.
    let log = cluster.controller_log();
    assert!(
        log.lines().any(|l| l.contains("reconcile{namespace=\"e2e\" name=slow generation=1}")
            && l.contains("worker job created")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader() {
    let registry = TestRegistry::start();
    let cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("a"), "v1", &[1000], 10);
    let logs = [cluster.dir.path().join("c1.log"), cluster.dir.path().join("c2.log")];
    let args = ["--leader-election", "--lease-namespace", NS];
    let mut first = cluster.spawn_controller(&logs[0], common::free_port(), &args);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut second = cluster.spawn_controller(&logs[1], common::free_port(), &args);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        image_push("a", "layouts", "a", &format!("{}/team/a:v1", registry.host()), json!({})),
    )
    .await;
    wait_for(&cluster, &api, "a", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(jobs_of(&client, "a").await.len(), 1);
    let log = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    let leaders = (0..2).filter(|i| log(*i).contains("leading")).count();
    assert_eq!(leaders, 1, "one leader:\n{}\n---\n{}", log(0), log(1));
    assert!(log(1).contains("waiting for leadership"), "{}", log(1));

    // The leader dies; the standby takes over and pushes the next one.
    let _ = first.kill();
    let _ = first.wait();
    create(
        &api,
        image_push("b", "layouts", "a", &format!("{}/team/b:v1", registry.host()), json!({})),
    )
    .await;
    wait_for(&cluster, &api, "b", Duration::from_secs(90), "Ready after failover", is_ready).await;
    assert!(log(1).contains("leading"), "{}", log(1));
    assert_eq!(jobs_of(&client, "b").await.len(), 1);
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_conflicts_and_errors_on_status_writes_and_a_killed_worker_still_end_ready_once() {
    let registry = TestRegistry::start();
    let proxy = common::CountingProxy::start(registry.addr());
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let (_b, image) =
        simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[1_000_000; 3], 12);
    // The API answers status writes with conflicts and server errors for a while.
    cluster.set_faults(json!([
        {"method": "PATCH", "pathRegex": "/imagepushes/[^/]+/status$", "status": 409, "times": 2},
        {"method": "PATCH", "pathRegex": "/imagepushes/[^/]+/status$", "status": 500, "times": 2}
    ]));
    // Slow enough that the worker can be killed mid-push.
    proxy.set_throttle(1_000_000);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        image_push(
            "app",
            "layouts",
            "app",
            &format!("{}/team/app:v1", proxy.host()),
            json!({"maxConcurrentUploads": 1}),
        ),
    )
    .await;

    // Kill the worker process once it runs (as a node losing the pod would).
    let http = common::http_client();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let killed = loop {
        let procs: serde_json::Value = http
            .get(format!("{}/_sim/processes", cluster.api_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let running = procs
            .as_array()
            .and_then(|a| a.first().cloned())
            .or_else(|| procs["processes"].as_array().and_then(|a| a.first().cloned()));
        if let Some(p) = running {
            let (ns, pod) = (
                p["namespace"].as_str().unwrap_or(NS).to_string(),
                p["pod"].as_str().or(p["name"].as_str()).unwrap_or_default().to_string(),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            let r = http
                .post(format!("{}/_sim/kill?namespace={ns}&pod={pod}", cluster.api_url))
                .send()
                .await
                .unwrap();
            break r.status().is_success();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker never ran\n{}",
            cluster.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(killed);
    proxy.set_throttle(0);
    let ip = wait_for(&cluster, &api, "app", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(ip.status.as_ref().unwrap().digest.as_deref(), Some(image.digest.as_str()));
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, image.digest);
    assert_eq!(jobs_of(&client, "app").await.len(), 1, "the Job retried its pod; no second Job");
    // Ready was reported once: a single Pushed event (and one PushStarted).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons.iter().filter(|r| *r == "Pushed").count(), 1, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "PushStarted").count(), 1, "{reasons:?}");
    let failed_status_writes = cluster
        .requests()
        .iter()
        .filter(|r| {
            r["method"] == "PATCH"
                && r["path"].as_str().unwrap_or_default().ends_with("/status")
                && r["status"].as_u64().unwrap_or(0) >= 400
        })
        .count();
    assert_eq!(failed_status_writes, 4, "the injected faults were hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_for_a_while_is_waited_for() {
    let port = common::free_port();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let (_b, image) = simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[5000], 13);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        image_push("late", "layouts", "app", &format!("127.0.0.1:{port}/team/app:v1"), json!({})),
    )
    .await;
    // Nothing listens yet: the worker retries. The registry comes up a few seconds later.
    wait_for(&cluster, &api, "late", TIMEOUT, "running", |ip| {
        ip.status.as_ref().and_then(|s| s.job_name.clone()).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let registry = TestRegistry::start_on(port);
    let ip = wait_for(&cluster, &api, "late", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, image.digest);
    assert_eq!(jobs_of(&client, "late").await.len(), 1);
}

/// hostPath sources: the worker gets the allowed root mounted and resolves the layout path
/// inside it, so a symlink on the node that stays under the root works and one that leads
/// out of it is refused, with nothing pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_symlinks_are_resolved_inside_the_allowed_root() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    let node = tempfile::tempdir().unwrap();
    let root = node.path().join("images");
    let (_b, image) = simple_image(&root.join("build-1"), "v1", &[5000], 31);
    std::os::unix::fs::symlink(root.join("build-1"), root.join("current")).unwrap();
    // A valid layout outside the root, reachable through a symlink under it.
    simple_image(&node.path().join("elsewhere"), "v1", &[5000], 32);
    std::os::unix::fs::symlink(node.path().join("elsewhere"), root.join("escape")).unwrap();
    cluster.start_controller(&["--allowed-host-path-root", root.to_str().unwrap()]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    for (name, dir, tag) in [("current", "current", "v1"), ("escape", "escape", "v2")] {
        let mut ip = image_push(name, "-", "-", &format!("{host}/node/app:{tag}"), json!({}));
        ip["spec"]["source"] = json!({"hostPath": {
            "path": root.join(dir).to_str().unwrap(), "nodeName": "sim-node"}});
        create(&api, ip).await;
    }

    let current = wait_for(&cluster, &api, "current", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(current.status.unwrap().digest.as_deref(), Some(image.digest.as_str()));
    assert_eq!(registry.manifest("node/app", "v1").await.unwrap().2, image.digest);
    let jobs = jobs_of(&client, "current").await;
    let pod = jobs[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "layout").unwrap();
    assert_eq!(volume.host_path.as_ref().unwrap().path, root.to_str().unwrap());

    let escape = wait_for(&cluster, &api, "escape", TIMEOUT, "Stalled", is_stalled).await;
    let (_, reason) = condition(&escape, "Stalled").unwrap();
    assert_eq!(reason, "LayoutOutsideRoot");
    let message = escape.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("elsewhere"), "{message}");
    assert_eq!(jobs_of(&client, "escape").await.len(), 1, "a permanent failure is not retried");
    assert_eq!(registry.tags("node/app").await, ["v1"]);
}

/// A rate-limited registry (429 with `Retry-After: 600`): the worker gives up at once (the
/// wait is past its retry time) and reports the wait; the controller schedules the next
/// attempt (Job) no sooner than the registry asked, instead of after its own 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_registry_is_left_alone_as_long_as_it_asks() {
    use common::proxy::HttpFault;
    let registry = TestRegistry::start();
    let proxy = common::CountingProxy::start(registry.addr());
    proxy.add_rule(HttpFault::new("PUT", "/manifests/", 429).retry_after(600).times(u64::MAX));
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[2000], 51);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let target = format!("{}/team/app:v1", proxy.host());
    create(&api, image_push("limited", "layouts", "app", &target, json!({}))).await;
    let waiting = |ip: &ImagePush| {
        ip.status.as_ref().is_some_and(|s| {
            s.next_attempt_time.is_some()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Reconciling" && c.message.contains("attempt 2 at"))
        })
    };
    let ip = wait_for(&cluster, &api, "limited", TIMEOUT, "waiting for attempt 2", waiting).await;
    let st = ip.status.unwrap();
    let c = st.conditions.iter().find(|c| c.type_ == "Reconciling").unwrap();
    assert_eq!(c.reason, "RegistryUnavailable", "{c:?}");
    let next = st.next_attempt_time.as_ref().unwrap().0;
    let secs = next.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
    assert!(secs > 500 && secs <= 600, "next attempt in {secs}s: {}", c.message);
    assert!(st.message.unwrap_or_default().contains("429"));
    // One Job so far; inside it, the pod's own tries for a transient failure (the kubelet's
    // backoff, not the registry's wait) at most; nothing tagged.
    assert_eq!(jobs_of(&client, "limited").await.len(), 1);
    let tries = 1 + imagepush::controller::job::BACKOFF_LIMIT as u64;
    assert!((1..=tries).contains(&proxy.http_faults()), "{} refused PUTs", proxy.http_faults());
    assert!(registry.tags("team/app").await.is_empty());
}

/// A signed image on a claim: the SBOM (an artifact whose `subject` is the image) goes with
/// it into a registry without the referrers API, listed under the schema tag, and the status
/// says so; `referrers: None` leaves it behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_travel_with_the_image_and_the_status_lists_them() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let root = cluster.pvc_dir(NS, "layouts").join("signed");
    let (mut b, image) = simple_image(&root, "v1", &[2000], 93);
    let (layer, layer_size) = b.blob(b"{\"spdxVersion\":\"SPDX-2.3\"}");
    let (config, config_size) = b.blob(b"{}");
    let sbom = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/spdx+json", "digest": layer, "size": layer_size}],
        "subject": {"mediaType": image.media_type, "digest": image.digest, "size": image.size}});
    let (sbom_digest, sbom_size) = b.blob(&serde_json::to_vec(&sbom).unwrap());
    b.add_untagged(&common::layout::desc_from_json(&json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sbom_digest, "size": sbom_size})));
    b.write();
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    for (name, extra) in [("signed", json!({})), ("unsigned", json!({"referrers": "None"}))] {
        let target = format!("{}/team/{name}:v1", registry.host());
        create(&api, image_push(name, "layouts", "signed", &target, extra)).await;
    }
    let ip = wait_for(&cluster, &api, "signed", TIMEOUT, "Ready", is_ready).await;
    let st = ip.status.unwrap();
    assert_eq!(st.digest.as_deref(), Some(image.digest.as_str()), "the layout's only image");
    assert_eq!(st.referrer_count, Some(1));
    let r = &st.referrers[0];
    assert_eq!(
        (r.digest.as_str(), r.subject.as_str()),
        (sbom_digest.as_str(), image.digest.as_str())
    );
    assert_eq!(
        (r.known_by.as_str(), r.artifact_type.as_deref()),
        ("tagSchema", Some("application/spdx+json"))
    );
    let schema = image.digest.replace(':', "-");
    let (listed, _, _) = registry.manifest("team/signed", &schema).await.unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed["manifests"][0]["digest"], sbom_digest);

    let ip = wait_for(&cluster, &api, "unsigned", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(ip.status.unwrap().referrer_count, None);
    assert_eq!(registry.tags("team/unsigned").await, ["v1"]);
}

/// The cluster admin allows only `<registry>/team/**`: a push there goes on; one elsewhere,
/// and a mirror whose prefix the pattern does not cover, stall with TargetNotAllowed before
/// any worker Job exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_outside_the_allowed_patterns_stall_before_a_job_exists() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    simple_image(&cluster.pvc_dir(NS, "layouts").join("app"), "v1", &[2000], 94);
    let pattern = format!("{}/team/**", registry.host());
    cluster.start_controller(&["--allowed-target", &pattern]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    for (name, target, extra) in [
        ("inside", format!("{host}/team/app:v1"), json!({})),
        ("outside", format!("{host}/other/app:v1"), json!({})),
        ("mirror", format!("{host}/mirror"), json!({"mirror": true})),
    ] {
        create(&api, image_push(name, "layouts", "app", &target, extra)).await;
    }
    wait_for(&cluster, &api, "inside", TIMEOUT, "Ready", is_ready).await;
    for name in ["outside", "mirror"] {
        let ip = wait_for(&cluster, &api, name, TIMEOUT, "Stalled", is_stalled).await;
        let stalled = ip.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Stalled");
        let (reason, message) = stalled.map(|c| (c.reason.clone(), c.message.clone())).unwrap();
        assert_eq!(reason, "TargetNotAllowed", "{message}");
        assert!(message.contains(&pattern), "{message}");
        assert!(jobs_of(&client, name).await.is_empty(), "{name}: a Job was created");
    }
    assert!(registry.tags("other/app").await.is_empty());
}

fn handled(ip: &ImagePush) -> Option<String> {
    ip.status.as_ref().and_then(|s| s.last_handled_requested_at.clone())
}

async fn request_push(api: &Api<ImagePush>, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"imagepush.dev/requested-at": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn suspend(api: &Api<ImagePush>, name: &str, on: bool) {
    let patch = json!({"spec": {"suspend": on}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// The layout on the claim changes under the same path and tag: nothing happens by itself; a
/// new `imagepush.dev/requested-at` value pushes it again; `spec.suspend` holds back a request
/// (and a first push) until it is false again, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_at_pushes_again_and_suspend_holds_back() {
    let registry = TestRegistry::start();
    let mut cluster = Cluster::start();
    let client = cluster.client().await;
    pvc(&client, "layouts").await;
    let root = cluster.pvc_dir(NS, "layouts");
    let (_b1, first) = simple_image(&root.join("app"), "v1", &[2000], 61);
    cluster.start_controller(&[]);
    let api: Api<ImagePush> = Api::namespaced(client.clone(), NS);
    let host = registry.host();
    create(&api, image_push("app", "layouts", "app", &format!("{host}/team/app:v1"), json!({})))
        .await;
    wait_for(&cluster, &api, "app", TIMEOUT, "Ready", is_ready).await;
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, first.digest);

    // A rebuilt layout: same path, same tag, other content.
    std::fs::remove_dir_all(root.join("app")).unwrap();
    let (_b2, second) = simple_image(&root.join("app"), "v1", &[2000], 62);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        jobs_of(&client, "app").await.len(),
        1,
        "a finished generation is not pushed again by itself"
    );

    request_push(&api, "app", "2026-11-30T10:00:00Z").await;
    let ip = wait_for(&cluster, &api, "app", TIMEOUT, "pushed again", |ip| {
        is_ready(ip) && handled(ip).as_deref() == Some("2026-11-30T10:00:00Z")
    })
    .await;
    assert_eq!(ip.status.unwrap().digest.as_deref(), Some(second.digest.as_str()));
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, second.digest);
    let jobs = jobs_of(&client, "app").await;
    assert_eq!(jobs.len(), 2, "one more Job for the request");
    assert!(
        jobs.iter().any(|j| j
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("imagepush.dev/request"))
    );

    // Suspended: a new request is held back, and the status says so without losing Ready.
    suspend(&api, "app", true).await;
    request_push(&api, "app", "2026-11-30T11:00:00Z").await;
    let ip = wait_for(&cluster, &api, "app", TIMEOUT, "Suspended", |ip| {
        condition(ip, "Suspended").is_some_and(|(s, _)| s == "True")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(is_ready(&api.get("app").await.unwrap()), "{:?}", ip.status);
    assert_eq!(jobs_of(&client, "app").await.len(), 2, "no Job while suspended");
    assert_eq!(handled(&api.get("app").await.unwrap()).as_deref(), Some("2026-11-30T10:00:00Z"));
    suspend(&api, "app", false).await;
    let ip = wait_for(&cluster, &api, "app", TIMEOUT, "the held request pushed", |ip| {
        is_ready(ip) && handled(ip).as_deref() == Some("2026-11-30T11:00:00Z")
    })
    .await;
    assert!(condition(&ip, "Suspended").is_none(), "{:?}", ip.status);
    assert_eq!(jobs_of(&client, "app").await.len(), 3);

    // Created suspended: nothing is pushed until it is resumed.
    create(
        &api,
        image_push(
            "held",
            "layouts",
            "app",
            &format!("{host}/team/held:v1"),
            json!({"suspend": true}),
        ),
    )
    .await;
    let ip = wait_for(&cluster, &api, "held", TIMEOUT, "held back", |ip| {
        condition(ip, "Ready").is_some_and(|(s, r)| s == "False" && r == "Suspended")
    })
    .await;
    assert_eq!(ip.status.unwrap().phase, Some(Phase::Pending));
    assert!(jobs_of(&client, "held").await.is_empty());
    assert!(registry.manifest("team/held", "v1").await.is_none());
    suspend(&api, "held", false).await;
    wait_for(&cluster, &api, "held", TIMEOUT, "Ready", is_ready).await;
}
