//! The operator's test bed: the Kubernetes API test double with its node simulator
//! (`e2e/kube-double/kube_double.py`), the real `imagepush controller` binary connected to
//! it through a kubeconfig, and a kube client for the test itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagepush::crd::ImagePush;
use kube::api::{Api, PostParams};

/// The API double plus (optionally) a running controller.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// The kubeconfig controllers are started with: `kubeconfig` unless
    /// `route_controllers_through` changed it.
    controller_kubeconfig: PathBuf,
    pub api_url: String,
    double: Option<Child>,
    controller: Option<Child>,
    pub controller_log: PathBuf,
    /// Port of the controller's /metrics, /healthz, /readyz.
    pub metrics_port: u16,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Cluster {
    /// Starts the API double (or uses `IMAGEPUSH_E2E_KUBECONFIG`).
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// Starts the API double with more of its options (`--inject-sidecar istio-proxy`,
    /// `--clock-skew 600`, ...; see its README).
    pub fn start_with(double_args: &[&str]) -> Cluster {
        super::ensure_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let mut child = Command::new("python3")
            .arg(repo_root().join("e2e/kube-double/kube_double.py"))
            .args(["--port", "0", "--state-dir"])
            .arg(&state)
            .arg("--binary-map")
            .arg(format!("imagepush={}", env!("CARGO_BIN_EXE_imagepush")))
            // Worker images are pulled by name: one renamed in a chart's values is still ours.
            .args(["--binary-image", "*imagepush*=imagepush"])
            .arg("--fault-file")
            .arg(state.join("faults.json"))
            .args(double_args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("double.log")).unwrap())
            .spawn()
            .expect("start python3 e2e/kube-double/kube_double.py");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut api_url = String::new();
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("READY ") => {
                    api_url = line["READY ".len()..].trim().to_string();
                    break;
                }
                Some(Ok(_)) => continue,
                _ => break,
            }
        }
        assert!(
            !api_url.is_empty(),
            "the API double did not start: {}",
            std::fs::read_to_string(dir.path().join("double.log")).unwrap_or_default()
        );
        // Keep draining its stdout so it never blocks.
        std::thread::spawn(move || for _ in lines {});
        Cluster {
            kubeconfig: state.join("kubeconfig"),
            controller_kubeconfig: state.join("kubeconfig"),
            api_url,
            controller_log: dir.path().join("controller.log"),
            dir,
            double: Some(child),
            controller: None,
            metrics_port: super::free_port(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where the node simulator keeps a PersistentVolumeClaim's files.
    pub fn pvc_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        let d = self.state_dir().join("pvcs").join(namespace).join(claim);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Makes the controllers started from now on talk to the API through `proxy_url` (e.g. a
    /// `CountingProxy` in front of `api_url` that records what they send); the test's own
    /// clients still talk to the double directly.
    pub fn route_controllers_through(&mut self, proxy_url: &str) {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        assert!(text.contains(&self.api_url), "the kubeconfig names {}:\n{text}", self.api_url);
        let path = self.dir.path().join("kubeconfig-proxied");
        std::fs::write(&path, text.replace(&self.api_url, proxy_url)).unwrap();
        self.controller_kubeconfig = path;
    }

    /// Starts `imagepush controller` against the double, with `extra` arguments.
    pub fn start_controller(&mut self, extra: &[&str]) {
        assert!(self.controller.is_none(), "controller already running");
        let child = self.spawn_controller(&self.controller_log.clone(), self.metrics_port, extra);
        self.controller = Some(child);
    }

    /// Starts another controller process (for leader election), logging to `log`; the caller
    /// owns it.
    pub fn spawn_controller(&self, log: &Path, metrics_port: u16, extra: &[&str]) -> Child {
        let log = append(log);
        self.controller_command(metrics_port, extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start imagepush controller")
    }

    /// The command line of `imagepush controller` against the double (standard streams not set).
    pub fn controller_command(&self, metrics_port: u16, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagepush"));
        cmd.args(["--log-level", "info,imagepush=debug", "controller", "--kubeconfig"])
            .arg(&self.controller_kubeconfig)
            .args(["--progress-interval", "1"])
            .args(if extra.contains(&"--worker-image") {
                &[][..]
            } else {
                &["--worker-image", "imagepush:e2e"][..]
            })
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(extra)
            .env_remove("KUBECONFIG");
        cmd
    }

    /// GET on the controller's metrics endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub async fn controller_http(&self, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        for _ in 0..50 {
            if let Ok(resp) = super::http_client().get(&url).send().await {
                let status = resp.status().as_u16();
                return (status, resp.text().await.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{url} did not answer");
    }

    /// Kills the controller (SIGKILL, as a crash would).
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(&self.controller_log).unwrap_or_default()
    }

    /// Every request the double served, as JSON values (method, path, query, status...).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state_dir().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Makes the double answer matching requests with an error status (see its README).
    pub fn set_faults(&self, rules: serde_json::Value) {
        std::fs::write(self.state_dir().join("faults.json"), rules.to_string()).unwrap();
    }

    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Everything useful when a test fails.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- controller log ---\n{}\n--- double log ---\n{}",
            tail(&self.controller_log(), 60),
            tail(
                &std::fs::read_to_string(self.dir.path().join("double.log")).unwrap_or_default(),
                40
            )
        )
    }
}

/// `path` opened for appending (a log several processes may share).
pub fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_controller();
        if let Some(mut d) = self.double.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// Creates an object from JSON.
pub async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

/// Creates a PersistentVolumeClaim `name` in `ns` (the node simulator backs it with
/// `Cluster::pvc_dir`).
pub async fn create_pvc(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    create(
        &api,
        serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}
        }),
    )
    .await;
}

/// Creates a `kubernetes.io/basic-auth` Secret `name` in `ns` for user `alice`.
pub async fn create_basic_auth_secret(client: &kube::Client, ns: &str, name: &str, password: &str) {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    create(
        &api,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"username": "alice", "password": password}
        }),
    )
    .await;
}

/// Waits until `pred` holds for the ImagePush, returning it; panics after `timeout` with
/// the last status and the cluster's diagnostics.
pub async fn wait_for(
    cluster: &Cluster,
    api: &Api<ImagePush>,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&ImagePush) -> bool,
) -> ImagePush {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(Some(ip)) = api.get_opt(name).await {
            if pred(&ip) {
                return ip;
            }
            last = Some(ip);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{name}: not {what} after {timeout:?}; last status: {}\n{}",
        serde_json::to_string_pretty(&last.and_then(|i| i.status)).unwrap(),
        cluster.diagnostics()
    );
}

/// The condition `type_` of an ImagePush as (status, reason).
pub fn condition(ip: &ImagePush, type_: &str) -> Option<(String, String)> {
    ip.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

pub fn is_ready(ip: &ImagePush) -> bool {
    condition(ip, "Ready").is_some_and(|(s, _)| s == "True")
}

pub fn is_stalled(ip: &ImagePush) -> bool {
    condition(ip, "Stalled").is_some_and(|(s, _)| s == "True")
}

/// Copies a directory tree (a layout into a PVC directory).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
