//! Black-box tests of `imagepush push` around credentials, TLS and failure classes: where
//! credentials come from (--password-stdin, --registry-config files and Secret directories,
//! DOCKER_CONFIG / HOME discovery), that they never leak, how TLS is verified, and which exit
//! code, message and report reason each kind of bad input or unreachable registry gives.
//!
//! The TLS tests generate a CA and a server certificate at test time with `/usr/bin/openssl`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use common::cli::imagepush_traced;
use common::{
    Run, TestRegistry, imagepush, imagepush_env, imagepush_with_stdin, openssl, simple_image,
};

const USER: &str = "alice";
const PASSWORD: &str = "Correct-Horse-71";
/// A password distinctive enough to search for in every output.
const DISTINCTIVE: &str = "s3cr3t-Pa55-zzq";
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn b64(s: &str) -> String {
    STANDARD.encode(s.as_bytes())
}

/// A layout with one image tagged `v1` under `dir/layout`.
fn make_layout(dir: &Path, seed: u64) -> (PathBuf, common::Desc) {
    let root = dir.join("layout");
    let (_, image) = simple_image(&root, "v1", &[1500, 4000], seed);
    (root, image)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The tag resolves to `digest`, and the bytes hash to it.
async fn assert_tag_is(reg: &TestRegistry, repo: &str, tag: &str, digest: &str) {
    let (bytes, _ct, dcd) = reg
        .manifest(repo, tag)
        .await
        .unwrap_or_else(|| panic!("{repo}:{tag} does not exist on the registry"));
    assert_eq!(dcd, digest, "Docker-Content-Digest of {repo}:{tag}");
    assert_eq!(common::sha256_digest(&bytes), digest, "bytes of {repo}:{tag}");
}

/// The repository has no tags and holds none of the image's blobs.
async fn assert_nothing_pushed(
    reg: &TestRegistry,
    repo: &str,
    layout: &Path,
    image: &common::Desc,
) {
    assert!(reg.tags(repo).await.is_empty(), "{repo} has tags: {:?}", reg.tags(repo).await);
    assert!(reg.manifest(repo, "v1").await.is_none(), "{repo}:v1 exists");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(image.hex())).unwrap())
            .unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for l in manifest["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in digests {
        assert!(!reg.blob_exists(repo, &d).await, "blob {d} was pushed to {repo}");
    }
}

/// `{"auths": {key: entry}}`
fn docker_config(key: &str, entry: serde_json::Value) -> String {
    serde_json::json!({ "auths": { key: entry } }).to_string()
}

fn auth_entry(user: &str, password: &str) -> serde_json::Value {
    serde_json::json!({ "auth": b64(&format!("{user}:{password}")) })
}

fn report_error(path: &Path) -> serde_json::Value {
    let r = common::report(path);
    assert!(r["error"].is_object(), "report has no error object: {r:#}");
    r["error"].clone()
}

/// Asserts the report's error block: reason, exit code, transient.
fn assert_report_error(path: &Path, reason: &str, code: i64, transient: bool) {
    let e = report_error(path);
    assert_eq!(e["reason"], reason, "report error: {e:#}");
    assert_eq!(e["exitCode"], code, "report error: {e:#}");
    assert_eq!(e["transient"], transient, "report error: {e:#}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "report error: {e:#}");
}

/// Pushes `layout` to `reg`'s `repo:v1` with a `--registry-config PATH` and checks the tag.
async fn push_with_registry_config(reg: &TestRegistry, repo: &str, config: &Path, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), seed);
    let target = format!("{}/{repo}:v1", reg.host());
    imagepush(&["push", "--plain-http", "--registry-config", s(config), s(&layout), &target]).ok();
    assert_tag_is(reg, repo, "v1", &image.digest).await;
}

// ---------------------------------------------------------------------------------------------
// 1-3: --username/--password-stdin, wrong password, no credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_stdin_with_the_right_password_pushes() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 1);
    let target = format!("{}/auth/stdin:v1", reg.host());
    let run = imagepush_with_stdin(
        &["push", "--plain-http", "--username", USER, "--password-stdin", s(&layout), &target],
        Some(&format!("{PASSWORD}\n")),
    );
    run.ok();
    assert_tag_is(&reg, "auth/stdin", "v1", &image.digest).await;
    assert_eq!(reg.tags("auth/stdin").await, vec!["v1".to_string()]);
}

#[tokio::test]
async fn wrong_password_exits_4_and_reports_authentication_failed() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 2);
    let report = dir.path().join("report.json");
    let target = format!("{}/auth/wrong:v1", reg.host());
    let run = imagepush_with_stdin(
        &[
            "push",
            "--plain-http",
            "--username",
            USER,
            "--password-stdin",
            "--report",
            s(&report),
            s(&layout),
            &target,
        ],
        Some("not-the-password\n"),
    );
    run.expect_code(4);
    let err = run.stderr.to_lowercase();
    assert!(err.contains("authentication"), "stderr: {}", run.stderr);
    assert!(run.stderr.contains(&reg.host()), "stderr should name {}: {}", reg.host(), run.stderr);
    assert_nothing_pushed(&reg, "auth/wrong", &layout, &image).await;

    assert_report_error(&report, "AuthenticationFailed", 4, false);
    let r = common::report(&report);
    assert_eq!(r["target"], target.as_str(), "{r:#}");
    assert_eq!(r["repository"], format!("{}/auth/wrong", reg.host()).as_str(), "{r:#}");
    assert!(r["tags"].as_array().is_none_or(|t| t.is_empty()), "no tags on failure: {r:#}");
}

#[tokio::test]
async fn no_credentials_exits_4_saying_none_were_found_for_the_host() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 3);
    let report = dir.path().join("report.json");
    let target = format!("{}/auth/anon:v1", reg.host());
    let run = imagepush(&["push", "--plain-http", "--report", s(&report), s(&layout), &target]);
    run.expect_code(4);
    assert!(
        run.stderr.contains(&format!("no credentials were found for {}", reg.host())),
        "stderr: {}",
        run.stderr
    );
    assert_report_error(&report, "AuthenticationFailed", 4, false);
    assert_nothing_pushed(&reg, "auth/anon", &layout, &image).await;
}

// ---------------------------------------------------------------------------------------------
// 4: --registry-config with a docker config.json
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn registry_config_auth_field() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    fs::write(&config, docker_config(&reg.host(), auth_entry(USER, PASSWORD))).unwrap();
    push_with_registry_config(&reg, "cfg/auth", &config, 4).await;
}

#[tokio::test]
async fn registry_config_username_and_password_fields() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    fs::write(
        &config,
        docker_config(&reg.host(), serde_json::json!({ "username": USER, "password": PASSWORD })),
    )
    .unwrap();
    push_with_registry_config(&reg, "cfg/fields", &config, 5).await;
}

#[tokio::test]
async fn registry_config_url_style_key() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    fs::write(
        &config,
        docker_config(&format!("http://{}", reg.host()), auth_entry(USER, PASSWORD)),
    )
    .unwrap();
    push_with_registry_config(&reg, "cfg/url", &config, 6).await;
}

#[tokio::test]
async fn registry_config_for_another_registry_is_anonymous() {
    // An entry for a different port does not match: the push is anonymous and refused.
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 7);
    let config = dir.path().join("config.json");
    let other = format!("127.0.0.1:{}", if reg.port() == 65535 { 1 } else { reg.port() + 1 });
    fs::write(&config, docker_config(&other, auth_entry(USER, PASSWORD))).unwrap();
    let target = format!("{}/cfg/other:v1", reg.host());
    let run =
        imagepush(&["push", "--plain-http", "--registry-config", s(&config), s(&layout), &target]);
    run.expect_code(4);
    assert!(
        run.stderr.contains(&format!("no credentials were found for {}", reg.host())),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 5: default config discovery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn docker_config_env_is_discovered() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 8);
    let cfg_dir = dir.path().join("docker-config");
    fs::create_dir_all(&cfg_dir).unwrap();
    fs::write(cfg_dir.join("config.json"), docker_config(&reg.host(), auth_entry(USER, PASSWORD)))
        .unwrap();
    let target = format!("{}/env/dockerconfig:v1", reg.host());
    imagepush_env(
        &["push", "--plain-http", s(&layout), &target],
        &[("DOCKER_CONFIG", cfg_dir.as_os_str())],
        None,
    )
    .ok();
    assert_tag_is(&reg, "env/dockerconfig", "v1", &image.digest).await;
}

#[tokio::test]
async fn home_docker_config_is_discovered() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 9);
    let home = dir.path().join("home");
    fs::create_dir_all(home.join(".docker")).unwrap();
    fs::write(
        home.join(".docker/config.json"),
        docker_config(&reg.host(), auth_entry(USER, PASSWORD)),
    )
    .unwrap();
    let target = format!("{}/env/home:v1", reg.host());
    imagepush_env(
        &["push", "--plain-http", s(&layout), &target],
        &[("HOME", home.as_os_str())],
        None,
    )
    .ok();
    assert_tag_is(&reg, "env/home", "v1", &image.digest).await;
}

/// A `docker-credential-test` in `dir` that answers with `PASSWORD`-style credentials for
/// `host` only, and notes each server it was asked about in `dir/asked`.
fn credential_helper(dir: &Path, host: &str, user: &str, password: &str) {
    use std::os::unix::fs::PermissionsExt;
    let program = dir.join("docker-credential-test");
    let asked = dir.join("asked");
    fs::write(
        &program,
        format!(
            "#!/bin/sh
[ \"$1\" = get ] || exit 3
read -r url
echo \"$url\" >> '{}'
\
             if [ \"$url\" = '{host}' ]; then
  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$url\"
\
             else
  echo 'credentials not found in native keychain'; exit 1
fi
",
            asked.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn credential_helper_answers_for_its_registry_and_never_leaks() {
    let reg = TestRegistry::start_with_htpasswd(USER, DISTINCTIVE);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 31);
    let helpers = dir.path().join("helpers");
    fs::create_dir_all(&helpers).unwrap();
    credential_helper(&helpers, &reg.host(), USER, DISTINCTIVE);
    let config = dir.path().join("config.json");
    fs::write(&config, serde_json::json!({"credHelpers": {reg.host(): "test"}}).to_string())
        .unwrap();
    let path = std::env::join_paths(
        std::iter::once(helpers.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let target = format!("{}/helper/app:v1", reg.host());
    let args = ["push", "--plain-http", "--registry-config", s(&config), "--report", s(&report)];
    let run = imagepush_env(
        &[&args[..], &[s(&layout), &target]].concat(),
        &[("PATH", path.as_os_str())],
        None,
    );
    run.ok();
    assert_tag_is(&reg, "helper/app", "v1", &image.digest).await;
    assert_eq!(fs::read_to_string(helpers.join("asked")).unwrap(), format!("{}\n", reg.host()));
    assert_no_leak(&run, &report, &leak_needles(DISTINCTIVE));

    // Without the program on PATH: exit 2, naming the helper and the registry, nothing pushed.
    let target = format!("{}/helper/missing:v1", reg.host());
    let run = imagepush_env(
        &[&args[..], &[s(&layout), &target]].concat(),
        &[("PATH", "/usr/bin:/bin".as_ref())],
        None,
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("docker-credential-test") && run.stderr.contains("not on PATH"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&reg.host()), "{}", run.stderr);
    assert_report_error(&report, "CredentialsInvalid", 2, false);
    assert!(reg.tags("helper/missing").await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6: --registry-config DIR, a mounted Kubernetes Secret
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secret_dir_basic_auth() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    fs::create_dir_all(&secret).unwrap();
    fs::write(secret.join("username"), USER).unwrap();
    fs::write(secret.join("password"), format!("{PASSWORD}\n")).unwrap();
    push_with_registry_config(&reg, "secret/basic", &secret, 10).await;
}

#[tokio::test]
async fn secret_dir_dockerconfigjson() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    fs::create_dir_all(&secret).unwrap();
    fs::write(
        secret.join(".dockerconfigjson"),
        docker_config(&reg.host(), auth_entry(USER, PASSWORD)),
    )
    .unwrap();
    push_with_registry_config(&reg, "secret/dockerconfigjson", &secret, 11).await;
}

#[tokio::test]
async fn secret_dir_without_password_exits_2_naming_the_key() {
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 12);
    let secret = dir.path().join("secret");
    fs::create_dir_all(&secret).unwrap();
    fs::write(secret.join("username"), format!("{USER}\n")).unwrap();
    let report = dir.path().join("report.json");
    let target = format!("{}/secret/incomplete:v1", reg.host());
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--registry-config",
        s(&secret),
        "--report",
        s(&report),
        s(&layout),
        &target,
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("\"password\""), "stderr should name the key: {}", run.stderr);
    assert!(run.stderr.contains("missing"), "stderr: {}", run.stderr);
    assert!(run.stderr.contains(s(&secret)), "stderr should name the directory: {}", run.stderr);
    assert_report_error(&report, "CredentialsInvalid", 2, false);
    assert_nothing_pushed(&reg, "secret/incomplete", &layout, &image).await;
}

// ---------------------------------------------------------------------------------------------
// 7: credentials never leak
// ---------------------------------------------------------------------------------------------

fn assert_no_leak(run: &Run, report: &Path, secrets: &[String]) {
    let report_text =
        fs::read_to_string(report).unwrap_or_else(|e| panic!("read {}: {e}", report.display()));
    for secret in secrets {
        assert!(
            !run.stdout.contains(secret.as_str()),
            "stdout contains {secret:?}:\n{}",
            run.stdout
        );
        assert!(!run.stderr.contains(secret.as_str()), "stderr contains {secret:?}");
        assert!(
            !report_text.contains(secret.as_str()),
            "report contains {secret:?}:\n{report_text}"
        );
    }
}

fn leak_needles(password: &str) -> Vec<String> {
    vec![
        password.to_string(),
        b64(&format!("{USER}:{password}")),
        // Without padding, and as it would appear URL-safe encoded.
        b64(&format!("{USER}:{password}")).trim_end_matches('=').to_string(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{USER}:{password}")),
    ]
}

#[tokio::test]
async fn credentials_never_leak_on_success() {
    let reg = TestRegistry::start_with_htpasswd(USER, DISTINCTIVE);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 13);

    // --password-stdin
    let report = dir.path().join("report-stdin.json");
    let target = format!("{}/leak/ok:v1", reg.host());
    let run = imagepush_with_stdin(
        &[
            "--log-level",
            "trace",
            "push",
            "--plain-http",
            "--progress",
            "plain",
            "--username",
            USER,
            "--password-stdin",
            "--report",
            s(&report),
            s(&layout),
            &target,
        ],
        Some(DISTINCTIVE),
    );
    run.ok();
    assert_tag_is(&reg, "leak/ok", "v1", &image.digest).await;
    assert!(
        run.stderr.lines().count() > 10,
        "trace logging produced almost nothing:\n{}",
        run.stderr
    );
    assert_no_leak(&run, &report, &leak_needles(DISTINCTIVE));

    // --registry-config, JSON log format
    let config = dir.path().join("config.json");
    fs::write(&config, docker_config(&reg.host(), auth_entry(USER, DISTINCTIVE))).unwrap();
    let report = dir.path().join("report-config.json");
    let target = format!("{}/leak/ok-config:v1", reg.host());
    let run = imagepush(&[
        "--log-level",
        "trace",
        "--log-format",
        "json",
        "push",
        "--plain-http",
        "--progress",
        "plain",
        "--registry-config",
        s(&config),
        "--report",
        s(&report),
        s(&layout),
        &target,
    ]);
    run.ok();
    assert_tag_is(&reg, "leak/ok-config", "v1", &image.digest).await;
    assert_no_leak(&run, &report, &leak_needles(DISTINCTIVE));
}

#[tokio::test]
async fn credentials_never_leak_on_failure() {
    // The distinctive string is the WRONG password here.
    let reg = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 14);

    let report = dir.path().join("report-stdin.json");
    let target = format!("{}/leak/fail:v1", reg.host());
    let run = imagepush_with_stdin(
        &[
            "--log-level",
            "trace",
            "push",
            "--plain-http",
            "--progress",
            "plain",
            "--username",
            USER,
            "--password-stdin",
            "--report",
            s(&report),
            s(&layout),
            &target,
        ],
        Some(&format!("{DISTINCTIVE}\n")),
    );
    run.expect_code(4);
    assert!(
        run.stderr.lines().count() > 3,
        "trace logging produced almost nothing:\n{}",
        run.stderr
    );
    assert_no_leak(&run, &report, &leak_needles(DISTINCTIVE));
    assert_report_error(&report, "AuthenticationFailed", 4, false);

    let config = dir.path().join("config.json");
    fs::write(&config, docker_config(&reg.host(), auth_entry(USER, DISTINCTIVE))).unwrap();
    let report = dir.path().join("report-config.json");
    let run = imagepush(&[
        "--log-level",
        "trace",
        "--log-format",
        "json",
        "push",
        "--plain-http",
        "--registry-config",
        s(&config),
        "--report",
        s(&report),
        s(&layout),
        &target,
    ]);
    run.expect_code(4);
    assert_no_leak(&run, &report, &leak_needles(DISTINCTIVE));
    assert_nothing_pushed(&reg, "leak/fail", &layout, &image).await;
}

// ---------------------------------------------------------------------------------------------
// 8: TLS
// ---------------------------------------------------------------------------------------------

/// A throwaway CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`server.pem`, `server.key`) in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3",
            "-subj",
            "/CN=imagepush test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3",
            "-extfile",
            "server.ext",
        ],
    );
}

/// docker-registry serving HTTPS on 127.0.0.1 with a certificate from a test CA; anonymous.
struct TlsRegistry {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    client: reqwest::Client,
}

impl TlsRegistry {
    fn start() -> TlsRegistry {
        let dir = tempfile::Builder::new().prefix("imagepush-tls-registry-").tempdir().unwrap();
        make_certs(dir.path());
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).unwrap();
        common::ensure_crypto_provider();
        let ca =
            reqwest::Certificate::from_pem(&fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .build()
            .expect("reqwest client with the test CA");
        let log_path = dir.path().join("registry.log");
        let mut last = String::new();
        for attempt in 0..5 {
            let port = common::free_port();
            let config = format!(
                "version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: imagepush-test-http-secret
  tls:
    certificate: {cert}
    key: {key}
",
                storage = storage.display(),
                cert = dir.path().join("server.pem").display(),
                key = dir.path().join("server.key").display(),
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
            let _ = writeln!(&log, "---- attempt {attempt} on port {port} ----");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {REGISTRY_BIN}: {e}"));
            match wait_tls_ready(&mut child, port) {
                Ok(()) => return TlsRegistry { dir, child, port, client },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = why;
                    let text = fs::read_to_string(&log_path).unwrap_or_default();
                    if !text.contains("address already in use") && attempt >= 1 {
                        break;
                    }
                }
            }
        }
        panic!(
            "TLS docker-registry did not come up: {last}\n---- log ----\n{}",
            fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `(Docker-Content-Digest, sha256 of the body)` of a manifest over verified TLS, None on 404.
    async fn manifest_digest(&self, repo: &str, reference: &str) -> Option<(String, String)> {
        let resp = self
            .client
            .get(format!("https://{}/v2/{repo}/manifests/{reference}", self.host()))
            .header("Accept", common::registry::MANIFEST_ACCEPT)
            .send()
            .await
            .expect("GET manifest over TLS");
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(resp.status().is_success(), "GET manifest: {}", resp.status());
        let dcd = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.bytes().await.unwrap();
        Some((dcd, common::sha256_digest(&body)))
    }

    async fn tags(&self, repo: &str) -> Vec<String> {
        let resp = self
            .client
            .get(format!("https://{}/v2/{repo}/tags/list", self.host()))
            .send()
            .await
            .expect("GET tags/list over TLS");
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Vec::new();
        }
        let v: serde_json::Value = resp.json().await.unwrap();
        v["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    async fn assert_tag_is(&self, repo: &str, tag: &str, digest: &str) {
        let (dcd, body) = self
            .manifest_digest(repo, tag)
            .await
            .unwrap_or_else(|| panic!("{repo}:{tag} does not exist on the TLS registry"));
        assert_eq!(dcd, digest);
        assert_eq!(body, digest);
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the port accepts TCP connections and the server speaks TLS (the first byte of a
/// reply to a ClientHello-less probe is irrelevant; we only need the listener up).
fn wait_tls_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("docker-registry exited with {status}"));
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            // A plain HTTP request to a Go TLS server gets a "400 ... HTTP request to an HTTPS
            // server" answer: proof that the TLS listener is serving.
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if write!(s, "GET /v2/ HTTP/1.0\r\n\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf)
                    && n > 0
                {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{addr} did not answer within 15s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn tls_untrusted_certificate_exits_2_without_retrying_and_pushes_nothing() {
    let reg = TlsRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 20);
    let report = dir.path().join("report.json");
    let target = format!("{}/tls/untrusted:v1", reg.host());
    let run =
        imagepush(&["push", "--progress", "plain", "--report", s(&report), s(&layout), &target]);
    // A certificate that does not verify is a setting to fix: bad input, never retried.
    run.expect_code(2);
    assert!(!run.stdout.contains("Retrying"), "{}", run.stdout);
    let err = run.stderr.to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("tls"),
        "stderr should mention the certificate: {}",
        run.stderr
    );
    assert!(run.stderr.contains(&reg.host()), "stderr should name the host: {}", run.stderr);
    let e = report_error(&report);
    assert_eq!(e["exitCode"], 2, "{e:#}");
    assert_eq!(e["reason"], "TLSVerificationFailed", "{e:#}");
    assert_eq!(e["transient"], false, "{e:#}");
    assert!(reg.tags("tls/untrusted").await.is_empty());
    assert!(reg.manifest_digest("tls/untrusted", "v1").await.is_none());
}

#[tokio::test]
async fn tls_with_ca_file_pushes() {
    let reg = TlsRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 21);
    let target = format!("{}/tls/ca:v1", reg.host());
    imagepush(&["push", "--ca-file", s(&reg.ca_pem()), s(&layout), &target]).ok();
    reg.assert_tag_is("tls/ca", "v1", &image.digest).await;
    assert_eq!(reg.tags("tls/ca").await, vec!["v1".to_string()]);
}

#[tokio::test]
async fn tls_insecure_skip_verify_pushes() {
    let reg = TlsRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 22);
    let target = format!("{}/tls/insecure:v1", reg.host());
    imagepush(&["push", "--insecure-skip-tls-verify", s(&layout), &target]).ok();
    reg.assert_tag_is("tls/insecure", "v1", &image.digest).await;
}

#[tokio::test]
async fn tls_ca_file_that_is_not_pem_exits_2_naming_the_file() {
    let reg = TlsRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 23);
    let bogus = dir.path().join("not-a-cert.pem");
    fs::write(&bogus, "this is not a certificate\n").unwrap();
    let report = dir.path().join("report.json");
    let target = format!("{}/tls/badca:v1", reg.host());
    let run =
        imagepush(&["push", "--ca-file", s(&bogus), "--report", s(&report), s(&layout), &target]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(s(&bogus)),
        "stderr should name {}: {}",
        bogus.display(),
        run.stderr
    );
    assert_report_error(&report, "TLSConfigInvalid", 2, false);
    assert!(reg.tags("tls/badca").await.is_empty());

    // A missing CA file is the same class of error.
    let missing = dir.path().join("missing-ca.pem");
    let run = imagepush(&["push", "--ca-file", s(&missing), s(&layout), &target]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(s(&missing)),
        "stderr should name {}: {}",
        missing.display(),
        run.stderr
    );
}

/// The system's trust store (what rustls-native-certs reads: SSL_CERT_FILE / SSL_CERT_DIR
/// when set) is read only when a registry speaks TLS: a worker image without CA certificates
/// pushes over plain HTTP, and over TLS it fails saying what is missing.
#[tokio::test]
async fn the_system_trust_store_is_needed_only_for_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 24);
    let nothing = dir.path().join("no-such-store");
    let no_store = [("SSL_CERT_FILE", nothing.as_os_str()), ("SSL_CERT_DIR", nothing.as_os_str())];

    let plain = TestRegistry::start();
    let target = format!("{}/trust/plain:v1", plain.host());
    imagepush_env(&["push", "--plain-http", s(&layout), &target], &no_store, None).ok();
    assert_tag_is(&plain, "trust/plain", "v1", &image.digest).await;
    // With the machine's own store in place, a plain-HTTP push does not open it.
    let (run, opened) = imagepush_traced(&["push", "--plain-http", s(&layout), &target]);
    run.ok();
    let stores = ["/etc/ssl/", "/etc/pki/", "/usr/share/ca-certificates/"];
    let read: Vec<_> =
        opened.paths.iter().filter(|p| stores.iter().any(|d| p.starts_with(d))).collect();
    assert!(read.is_empty(), "a plain-HTTP push read the trust store: {read:?}");

    let reg = TlsRegistry::start();
    let target = format!("{}/trust/tls:v1", reg.host());
    let report = dir.path().join("report.json");
    let args = ["push", "--progress", "plain", "--report", s(&report), s(&layout), &target];
    let run = imagepush_env(&args, &no_store, None);
    run.expect_code(2);
    assert!(run.stderr.contains("no trusted CA certificates"), "{}", run.stderr);
    assert!(run.stderr.contains("--ca-file"), "{}", run.stderr);
    assert!(!run.stdout.contains("Retrying"), "a missing store is not retried: {}", run.stdout);
    assert_report_error(&report, "TLSVerificationFailed", 2, false);
    assert!(reg.tags("trust/tls").await.is_empty());

    // The store, when there is one, is what TLS trusts; --ca-file adds to it.
    let ca = reg.ca_pem();
    let ca_store = [("SSL_CERT_FILE", ca.as_os_str()), ("SSL_CERT_DIR", nothing.as_os_str())];
    imagepush_env(&["push", s(&layout), &target], &ca_store, None).ok();
    reg.assert_tag_is("trust/tls", "v1", &image.digest).await;
    imagepush_env(&["push", "--ca-file", s(&ca), s(&layout), &target], &no_store, None).ok();
}

// ---------------------------------------------------------------------------------------------
// 9: bad input and unreachable registries
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_target_reference_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 30);
    let report = dir.path().join("report.json");
    let target = "127.0.0.1:5000/Upper/app:v1";
    let run = imagepush(&["push", "--plain-http", "--report", s(&report), s(&layout), target]);
    run.expect_code(2);
    assert!(run.stderr.contains(target), "stderr should name the reference: {}", run.stderr);
    assert_report_error(&report, "ReferenceInvalid", 2, false);
}

#[test]
fn port_out_of_range_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 31);
    for target in ["127.0.0.1:70000/app:v1", "127.0.0.1:0/app:v1"] {
        let run = imagepush(&["push", "--plain-http", s(&layout), target]);
        run.expect_code(2);
        assert!(run.stderr.contains(target), "stderr should name {target}: {}", run.stderr);
        assert!(run.stderr.contains("port"), "stderr should mention the port: {}", run.stderr);
    }
}

#[test]
fn nonexistent_layout_exits_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-layout");
    let report = dir.path().join("report.json");
    // The registry is never contacted: a free port with nobody listening proves it (exit 5 otherwise).
    let target = format!("127.0.0.1:{}/app:v1", common::free_port());
    let run = imagepush(&["push", "--plain-http", "--report", s(&report), s(&missing), &target]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(s(&missing)),
        "stderr should name {}: {}",
        missing.display(),
        run.stderr
    );
    assert_report_error(&report, "LayoutInvalid", 2, false);
}

#[test]
fn zero_concurrent_uploads_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 32);
    let target = format!("127.0.0.1:{}/app:v1", common::free_port());
    let run =
        imagepush(&["push", "--plain-http", "--max-concurrent-uploads", "0", s(&layout), &target]);
    run.expect_code(2);
    assert!(run.stderr.contains("--max-concurrent-uploads"), "stderr: {}", run.stderr);
}

#[test]
fn invalid_platform_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 33);
    let report = dir.path().join("report.json");
    let target = format!("127.0.0.1:{}/app:v1", common::free_port());
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--platform",
        "linux//",
        "--report",
        s(&report),
        s(&layout),
        &target,
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("linux//"), "stderr should name the platform: {}", run.stderr);
    assert_report_error(&report, "PlatformInvalid", 2, false);
}

#[test]
fn password_stdin_without_username_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 34);
    let target = format!("127.0.0.1:{}/app:v1", common::free_port());
    // clap exits before reading standard input: the local runner tolerates the closed pipe.
    let run = imagepush_env(
        &["push", "--plain-http", "--password-stdin", s(&layout), &target],
        &[],
        Some("pw\n"),
    );
    run.expect_code(2);
    assert!(run.stderr.contains("--username"), "stderr should name --username: {}", run.stderr);
    assert!(run.stderr.contains("Usage"), "clap usage expected: {}", run.stderr);

    // And the other way round.
    let run = imagepush(&["push", "--plain-http", "--username", USER, s(&layout), &target]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--password-stdin"),
        "stderr should name --password-stdin: {}",
        run.stderr
    );
}

#[test]
fn empty_password_stdin_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 35);
    let target = format!("127.0.0.1:{}/app:v1", common::free_port());
    let run = imagepush_with_stdin(
        &["push", "--plain-http", "--username", USER, "--password-stdin", s(&layout), &target],
        Some("\n"),
    );
    run.expect_code(2);
    assert!(run.stderr.contains("--password-stdin"), "stderr: {}", run.stderr);
}

#[test]
fn unreachable_registry_exits_5_transient() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = make_layout(dir.path(), 36);
    let report = dir.path().join("report.json");
    let host = format!("127.0.0.1:{}", common::free_port());
    let target = format!("{host}/app:v1");
    let run = imagepush(&["push", "--plain-http", "--report", s(&report), s(&layout), &target]);
    run.expect_code(5);
    assert!(run.stderr.contains(&host), "stderr should name {host}: {}", run.stderr);
    assert_report_error(&report, "RegistryUnavailable", 5, true);
}

// ---------------------------------------------------------------------------------------------
// credentials stay with their registry
// ---------------------------------------------------------------------------------------------

/// A registry that names another host in its upload `Location` (here distribution's
/// `http.host` set to 127.0.0.2, where a proxy in front of the same registry records every
/// request): the requests that go there carry no credentials, so the registry refuses them
/// and the push fails saying where it was sent, with nothing tagged. Before credentials were
/// scoped to the registry's host, every upload request to 127.0.0.2 carried `Basic …`.
#[tokio::test]
async fn credentials_are_never_sent_to_another_host_named_by_a_location() {
    let port = common::free_port();
    let foreign = common::CountingProxy::start_on("127.0.0.2", ([127, 0, 0, 1], port).into());
    let reg = TestRegistry::start_with_htpasswd_naming(
        USER,
        PASSWORD,
        port,
        &format!("http://{}", foreign.host()),
    );
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 61);
    let report = dir.path().join("report.json");
    let target = format!("{}/auth/elsewhere:v1", reg.host());
    let run = imagepush_with_stdin(
        &[
            "push",
            "--plain-http",
            "--retries",
            "0",
            "--username",
            USER,
            "--password-stdin",
            "--report",
            s(&report),
            s(&layout),
            &target,
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    let seen = foreign.requests();
    assert!(!seen.is_empty(), "the registry never sent the push to 127.0.0.2: {}", run.stderr);
    let with_credentials: Vec<_> = seen.iter().filter(|r| r.authorization.is_some()).collect();
    assert!(with_credentials.is_empty(), "credentials went to 127.0.0.2: {with_credentials:?}");
    run.expect_code(4);
    assert!(
        run.stderr.contains(&foreign.host()) && run.stderr.contains("never sent to another host"),
        "stderr should say where the request went: {}",
        run.stderr
    );
    assert_report_error(&report, "AuthenticationFailed", 4, false);
    assert_nothing_pushed(&reg, "auth/elsewhere", &layout, &image).await;
}

/// HTTPS to a registry that serves plain HTTP: the handshake is answered in HTTP. That is a
/// setting to change, not a fault that passes: exit 2 at once, no retries, with the hint.
#[tokio::test]
async fn https_to_a_plain_http_registry_fails_at_once_with_a_hint() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (layout, image) = make_layout(dir.path(), 62);
    let report = dir.path().join("report.json");
    let target = format!("{}/plain/app:v1", reg.host());
    let started = Instant::now();
    let run = imagepush(&["push", "--report", s(&report), s(&layout), &target]);
    run.expect_code(2);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(run.stderr.contains("answered the TLS handshake in plain HTTP"), "{}", run.stderr);
    assert!(run.stderr.contains("--plain-http"), "{}", run.stderr);
    assert!(!run.stdout.contains("Retrying") && !run.stderr.contains("retrying"), "{run:?}");
    assert_report_error(&report, "RegistryNotTLS", 2, false);
    assert_nothing_pushed(&reg, "plain/app", &layout, &image).await;
}
