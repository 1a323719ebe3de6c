//! CNCF distribution configured for token authentication (`auth: token`), with a small token
//! issuer of our own that signs ES256 JWTs (ring, key and certificate from `openssl`). The
//! issuer checks basic credentials, records every scope asked for, and grants what is asked
//! except pull on repositories under `denied/` — so tests can watch a mount ask for pull on
//! its source, and what happens when that scope is refused.
//!
//! Started with [`Accept::Subject`], the issuer is instead a registry that accepts a pod's
//! identity: docker's identity-token flow (`POST` with `grant_type=refresh_token`) where the
//! refresh token is a Kubernetes ServiceAccount token whose `sub` names the expected account
//! (its signature is not checked: the test double's tokens are signed with its own key).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use super::openssl;

pub struct TokenRegistry {
    pub dir: tempfile::TempDir,
    child: Child,
    port: u16,
    /// Scope lists of every token request, in order.
    pub scopes: Arc<Mutex<Vec<Vec<String>>>>,
    /// The `sub` of every refresh token presented, in order.
    pub subjects: Arc<Mutex<Vec<String>>>,
}

/// Whom the issuer grants tokens to.
#[derive(Clone)]
pub enum Accept {
    /// `Authorization: Basic` with this username and password.
    Basic(String, String),
    /// A refresh token (a JWT) whose `sub` claim is this.
    Subject(String),
}

/// One HTTP request: its head and its body (by Content-Length).
fn read_request(sock: &mut std::net::TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    while let Ok(n) = sock.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            if body.len() >= length {
                return (head.to_string(), body.to_string());
            }
        }
    }
    (String::from_utf8_lossy(&buf).to_string(), String::new())
}

/// The `sub` claim of a JWT, unverified.
fn subject_of(jwt: &str) -> Option<String> {
    let payload = URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1)?.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Grants the actions asked for, minus pull (and so everything) under `denied/`.
fn grant(scope: &str) -> Option<serde_json::Value> {
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
    let actions: Vec<&str> =
        if name.starts_with("denied/") { vec![] } else { actions.split(',').collect() };
    Some(serde_json::json!({ "type": kind, "name": name, "actions": actions }))
}

impl TokenRegistry {
    pub fn start(user: &str, password: &str) -> TokenRegistry {
        TokenRegistry::start_accepting(Accept::Basic(user.into(), password.into()))
    }

    pub fn start_accepting(accept: Accept) -> TokenRegistry {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=imagepush-test-issuer",
                "-addext",
                "keyUsage=critical,digitalSignature,keyCertSign",
            ],
        );
        openssl(
            dir.path(),
            &["pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.p8"],
        );
        openssl(dir.path(), &["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
        let key_der = std::fs::read(dir.path().join("key.p8")).unwrap();
        let cert_der = std::fs::read(dir.path().join("cert.der")).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_der,
            &SystemRandom::new(),
        )
        .unwrap();

        // The token issuer.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let token_port = listener.local_addr().unwrap().port();
        let scopes: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let seen = scopes.clone();
        let subjects: Arc<Mutex<Vec<String>>> = Arc::default();
        let presented = subjects.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut sock) = stream else { continue };
                let (head, body) = read_request(&mut sock);
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                // A GET carries its parameters in the query, a POST in a form body.
                let form = if body.is_empty() { query.to_string() } else { body.clone() };
                let field = |name: &str| {
                    form.split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| percent_decode(v))
                };
                let asked: Vec<String> = form
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k == "scope")
                    .map(|(_, v)| percent_decode(v))
                    .collect();
                seen.lock().unwrap().push(asked.clone());
                let (authorized, user) = match &accept {
                    Accept::Basic(user, password) => {
                        let expected =
                            format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
                        let ok = head.lines().any(|l| {
                            l.to_ascii_lowercase().starts_with("authorization:")
                                && l[14..].trim() == expected
                        });
                        (ok, user.clone())
                    }
                    Accept::Subject(want) => {
                        let sub = (field("grant_type").as_deref() == Some("refresh_token"))
                            .then(|| field("refresh_token").and_then(|t| subject_of(&t)))
                            .flatten();
                        if let Some(sub) = &sub {
                            presented.lock().unwrap().push(sub.clone());
                        }
                        (sub.as_deref() == Some(want.as_str()), want.clone())
                    }
                };
                let (status, body) = if !authorized {
                    ("401 Unauthorized", r#"{"details":"bad credentials"}"#.to_string())
                } else {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(&cert_der)]});
                    let claims = serde_json::json!({
                        "iss": "imagepush-test-issuer", "sub": user, "aud": "imagepush-test-registry",
                        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", asked.len()),
                        "access": asked.iter().filter_map(|s| grant(s)).collect::<Vec<_>>(),
                    });
                    let input = format!(
                        "{}.{}",
                        URL_SAFE_NO_PAD.encode(header.to_string()),
                        URL_SAFE_NO_PAD.encode(claims.to_string())
                    );
                    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
                    let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
                    (
                        "200 OK",
                        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300})
                            .to_string(),
                    )
                };
                let _ = write!(
                    sock,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });

        // The registry.
        let port = super::free_port();
        let config = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {root}}}\n  delete: {{enabled: true}}\nhttp: {{addr: 127.0.0.1:{port}, secret: token-test}}\nauth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: imagepush-test-registry\n    issuer: imagepush-test-issuer\n    rootcertbundle: {cert}\n",
            root = dir.path().join("storage").display(),
            cert = dir.path().join("cert.pem").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "token registry did not start: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TokenRegistry { dir, child, port, scopes, subjects }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn scope_requests(&self) -> Vec<Vec<String>> {
        self.scopes.lock().unwrap().clone()
    }

    pub fn subjects(&self) -> Vec<String> {
        self.subjects.lock().unwrap().clone()
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
