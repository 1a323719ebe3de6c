//! The bearer-token flow against a scripted registry and token service on 127.0.0.1:
//! a mount asks for pull scope on the source, and falls back when that scope is refused.
//! (Basic auth, anonymous registries and real mounts are covered against CNCF distribution
//! in `tests/`.)

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::auth::Secret;

#[derive(Default)]
struct Seen {
    token_scopes: Vec<Vec<String>>,
    token_auth: Vec<Option<String>>,
    registry_auth: Vec<(String, Option<String>)>,
    token_posts: Vec<String>,
}

/// Serves `/v2/` with a Bearer challenge, `/token` (refusing any scope on `denied/*` when
/// `refuse_source`), and mounts: 201 when the request's token covers the source, else 202.
async fn fake_registry(refuse_source: bool) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (addr2, seen2) = (addr.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let seen = seen2.clone();
            let addr = addr2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = String::from_utf8_lossy(&buf[..split]).to_string();
                let length: usize = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
                    .and_then(|l| l[15..].trim().parse().ok())
                    .unwrap_or(0);
                let mut body_in = buf[split..].to_vec();
                while body_in.len() < length {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    body_in.extend_from_slice(&chunk[..n]);
                }
                let mut lines = head.lines();
                let request_line = lines.next().unwrap_or_default().to_string();
                let target = request_line.split(' ').nth(1).unwrap_or_default().to_string();
                let auth = lines
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map(|l| l["authorization:".len()..].trim().to_string());
                let url = url::Url::parse(&format!("http://{addr}{target}")).unwrap();
                let (status, extra, body) = if url.path() == "/v2/" && auth.is_none() {
                    (
                        "401 Unauthorized",
                        format!(
                            "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\"\r\n"
                        ),
                        String::new(),
                    )
                } else if url.path() == "/token" && request_line.starts_with("POST") {
                    seen.lock()
                        .unwrap()
                        .token_posts
                        .push(String::from_utf8_lossy(&body_in).to_string());
                    (
                        "200 OK",
                        String::new(),
                        serde_json::json!({ "access_token": "from-refresh" }).to_string(),
                    )
                } else if url.path() == "/token" {
                    let scopes: Vec<String> = url
                        .query_pairs()
                        .filter(|(k, _)| k == "scope")
                        .map(|(_, v)| v.to_string())
                        .collect();
                    let refused = refuse_source && scopes.iter().any(|s| s.contains("denied/"));
                    let token = format!("tok:{}", scopes.join(" "));
                    let mut s = seen.lock().unwrap();
                    s.token_scopes.push(scopes);
                    s.token_auth.push(auth.clone());
                    if refused {
                        ("401 Unauthorized", String::new(), "{}".to_string())
                    } else {
                        (
                            "200 OK",
                            String::new(),
                            serde_json::json!({ "token": token, "expires_in": 300 }).to_string(),
                        )
                    }
                } else if url.path().ends_with("/blobs/uploads/") {
                    seen.lock().unwrap().registry_auth.push((target.clone(), auth.clone()));
                    let from =
                        url.query_pairs().find(|(k, _)| k == "from").map(|(_, v)| v.to_string());
                    let covered = from.as_ref().is_some_and(|f| {
                        auth.as_deref()
                            .unwrap_or_default()
                            .contains(&format!("repository:{f}:pull"))
                    });
                    if covered {
                        ("201 Created", String::new(), String::new())
                    } else {
                        ("202 Accepted", "Location: /v2/session/1\r\n".to_string(), String::new())
                    }
                } else {
                    ("404 Not Found", String::new(), String::new())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

fn client(addr: &str, credential: Credential) -> RegistryClient {
    let target = Target::parse(&format!("{addr}/team/app:v1")).unwrap();
    RegistryClient::new(
        &target,
        credential,
        &ConnectOptions { plain_http: true, ..Default::default() },
    )
    .unwrap()
}

fn alice() -> Credential {
    Credential::Basic { username: "alice".into(), password: Secret::new("pw-not-logged") }
}

#[tokio::test]
async fn mount_token_carries_pull_scope_on_the_source() {
    let (addr, seen) = fake_registry(false).await;
    let c = client(&addr, alice());
    c.check_push_access("team/app").await.unwrap();
    let digest = crate::digest::Digest::sha256(b"layer");
    let outcome = c.mount("team/app", &digest, "team/base").await.unwrap();
    assert!(matches!(outcome, MountOutcome::Mounted), "{outcome:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.token_scopes[0], ["repository:team/app:pull,push"]);
    assert_eq!(
        seen.token_scopes[1],
        ["repository:team/app:pull,push", "repository:team/base:pull"]
    );
    // The token service got the credentials as basic auth; the registry only ever a token.
    assert!(seen.token_auth.iter().all(|a| a.as_deref().is_some_and(|a| a.starts_with("Basic "))));
    assert!(
        seen.registry_auth
            .iter()
            .all(|(_, a)| a.as_deref().is_some_and(|a| a.starts_with("Bearer tok:")))
    );
}

#[tokio::test]
async fn refused_source_scope_falls_back_to_an_upload_session() {
    let (addr, seen) = fake_registry(true).await;
    let c = client(&addr, alice());
    let digest = crate::digest::Digest::sha256(b"layer");
    let outcome = c.mount("team/app", &digest, "denied/base").await.unwrap();
    match outcome {
        MountOutcome::Started(session) => {
            assert!(session.location.ends_with("/v2/session/1"), "{session:?}")
        }
        other => panic!("expected an upload session, got {other:?}"),
    }
    let seen = seen.lock().unwrap();
    let last = seen.token_scopes.last().unwrap();
    assert_eq!(last, &["repository:team/app:pull,push"], "fell back to the target scope alone");
    assert_eq!(seen.registry_auth.len(), 1, "one mount request, with the narrower token");
}

#[tokio::test]
async fn identity_token_is_used_as_refresh_token() {
    let (addr, seen) = fake_registry(false).await;
    let c = client(&addr, Credential::IdentityToken(Secret::new("refresh-me")));
    c.check_push_access("team/app").await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.token_scopes.is_empty(), "no GET to the token service");
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(seen.token_posts[0].as_bytes()).into_owned().collect();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "refresh-me");
    assert_eq!(form["service"], "fake");
    assert_eq!(form["scope"], "repository:team/app:pull,push");
}

/// A registry that answers `/v2/` with 200 and the first `failures` other requests with
/// `status` (and `Retry-After: 1` when asked), then 404; counts requests.
async fn flaky_registry(
    failures: usize,
    status: &'static str,
    retry_after: bool,
) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(Mutex::new(0usize));
    let c2 = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let count = c2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = if path == "/v2/" {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                        .to_string()
                } else {
                    let n = {
                        let mut c = count.lock().unwrap();
                        *c += 1;
                        *c
                    };
                    if n <= failures {
                        let extra = if retry_after { "Retry-After: 1\r\n" } else { "" };
                        format!(
                            "HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                };
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, count)
}

fn flaky_client(
    addr: &str,
    attempts: u32,
) -> (RegistryClient, Arc<Mutex<Vec<retry::RetryNotice>>>) {
    let target = Target::parse(&format!("{addr}/team/app:v1")).unwrap();
    let opts = ConnectOptions {
        plain_http: true,
        retry: retry::RetryPolicy {
            max_attempts: attempts,
            base_delay: std::time::Duration::from_millis(10),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut c = RegistryClient::new(&target, Credential::Anonymous, &opts).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    c.set_retry_observer(Arc::new(move |n| s2.lock().unwrap().push(n)));
    (c, seen)
}

#[tokio::test]
async fn transient_statuses_are_retried_with_backoff_and_retry_after() {
    let digest = crate::digest::Digest::sha256(b"layer");
    // 503 twice, then the answer.
    let (addr, count) = flaky_registry(2, "503 Service Unavailable", false).await;
    let (c, seen) = flaky_client(&addr, 4);
    assert!(!c.manifest_exists("team/app", &digest).await.unwrap());
    assert_eq!(*count.lock().unwrap(), 3);
    assert_eq!(seen.lock().unwrap().iter().map(|n| n.attempt).collect::<Vec<_>>(), [1, 2]);
    // 429 with Retry-After: 1 is honoured.
    let (addr, count) = flaky_registry(1, "429 Too Many Requests", true).await;
    let (c, seen) = flaky_client(&addr, 4);
    let started = std::time::Instant::now();
    assert!(!c.manifest_exists("team/app", &digest).await.unwrap());
    assert!(started.elapsed() >= std::time::Duration::from_millis(950), "{:?}", started.elapsed());
    assert_eq!(*count.lock().unwrap(), 2);
    assert_eq!(seen.lock().unwrap()[0].delay, std::time::Duration::from_secs(1));
    // Bounded: a registry that keeps failing gives up after max_attempts with the error.
    let (addr, count) = flaky_registry(100, "502 Bad Gateway", false).await;
    let (c, _) = flaky_client(&addr, 3);
    let e = c.manifest_exists("team/app", &digest).await.unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("502"), "{e}");
    assert_eq!(*count.lock().unwrap(), 3);
    // Permanent statuses are not retried.
    let (addr, count) = flaky_registry(100, "400 Bad Request", false).await;
    let (c, seen) = flaky_client(&addr, 5);
    assert!(c.manifest_exists("team/app", &digest).await.is_err());
    assert_eq!(*count.lock().unwrap(), 1);
    assert!(seen.lock().unwrap().is_empty());
}

/// A registry that keeps partial upload data, as the distribution spec allows: the first
/// PATCH is cut after `cut` bytes; GET on the session answers `Range: 0-<received-1>`; the
/// next PATCH must continue at that offset (`Content-Range`); PUT checks the digest.
async fn resumable_registry(cut: usize) -> (String, Arc<Mutex<(Vec<u8>, Vec<String>)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // (received bytes, request log)
    let state = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let s2 = state.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let state = s2.clone();
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..split]).to_string();
                    let header = |name: &str| {
                        head.lines()
                            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                            .map(|l| l[name.len() + 1..].trim().to_string())
                    };
                    let length: usize =
                        header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let method = line.split(' ').next().unwrap_or_default().to_string();
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    state.lock().unwrap().1.push(format!(
                        "{method} {} {}",
                        path.split('?').next().unwrap_or(""),
                        header("content-range").unwrap_or_default()
                    ));
                    let mut body = buf[split..].to_vec();
                    let first_patch = method == "PATCH" && state.lock().unwrap().0.is_empty();
                    while body.len() < length {
                        if first_patch && body.len() >= cut {
                            state.lock().unwrap().0.extend_from_slice(&body[..cut]);
                            return; // drop the connection mid-request
                        }
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    let reply = match (method.as_str(), path.as_str()) {
                        ("GET", "/v2/") => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string(),
                        ("POST", _) => "HTTP/1.1 202 Accepted\r\nLocation: /v2/team/app/blobs/uploads/s1\r\nContent-Length: 0\r\n\r\n".to_string(),
                        ("GET", _) => {
                            let n = state.lock().unwrap().0.len();
                            format!("HTTP/1.1 204 No Content\r\nRange: 0-{}\r\nLocation: /v2/team/app/blobs/uploads/s1\r\nContent-Length: 0\r\n\r\n", n.max(1) - 1)
                        }
                        ("PATCH", _) => {
                            let mut st = state.lock().unwrap();
                            let offset = st.0.len();
                            let ok = header("content-range").is_some_and(|r| r.starts_with(&format!("{offset}-")));
                            if !ok {
                                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n".to_string()
                            } else {
                                st.0.extend_from_slice(&body);
                                "HTTP/1.1 202 Accepted\r\nLocation: /v2/team/app/blobs/uploads/s1\r\nContent-Length: 0\r\n\r\n".to_string()
                            }
                        }
                        ("PUT", p) => {
                            let got = crate::digest::Digest::sha256(&state.lock().unwrap().0).to_string();
                            if p.contains(&got.replace(':', "%3A")) {
                                "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_string()
                            } else {
                                "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_string()
                            }
                        }
                        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                    };
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, state)
}

#[tokio::test]
async fn an_interrupted_upload_resumes_from_the_registrys_range() {
    let size = 3 * 1024 * 1024 + 17;
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &bytes).unwrap();
    let desc = crate::oci::Descriptor {
        media_type: "application/octet-stream".into(),
        digest: crate::digest::Digest::sha256(&bytes),
        size: size as u64,
        annotations: Default::default(),
        platform: None,
        urls: vec![],
        artifact_type: None,
    };
    let (addr, state) = resumable_registry(1024 * 1024).await;
    let (c, seen) = flaky_client(&addr, 4);
    let session = c.start_upload("team/app").await.unwrap();
    let open = || {
        let file: Box<dyn std::io::Read + Send> = Box::new(std::fs::File::open(&path).unwrap());
        Ok((file, crate::layout::BlobVerifier::new(&desc)))
    };
    c.upload("team/app", session, &open, &desc.digest, desc.size, Arc::new(|_| {})).await.unwrap();
    let (received, log) = state.lock().unwrap().clone();
    assert_eq!(received, bytes, "the registry holds exactly the blob");
    assert!(log.iter().any(|l| l.starts_with("GET /v2/team/app/blobs/uploads/s1")), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l
                == &format!("PATCH /v2/team/app/blobs/uploads/s1 {}-{}", 1024 * 1024, size - 1)),
        "{log:#?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "one retry");
}

/// A registry that refuses tokens older than 1.5 s (401) although they claim 300 s: a token
/// revoked or expired early, as after clock skew. The client must renew and go on.
async fn expiring_token_registry() -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let issued = Arc::new(Mutex::new(0usize));
    let (addr2, i2) = (addr.clone(), issued.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (addr, issued) = (addr2.clone(), i2.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let now_ms = || {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                };
                let bearer = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization: bearer t-"))
                    .and_then(|l| {
                        l["authorization: bearer t-".len()..].trim().parse::<u128>().ok()
                    });
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\"\r\n"
                );
                let reply = if path.starts_with("/token") {
                    *issued.lock().unwrap() += 1;
                    let body = format!("{{\"token\":\"t-{}\",\"expires_in\":300}}", now_ms());
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    match bearer {
                        Some(t) if now_ms() - t <= 1500 => {
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                        }
                        _ => format!("HTTP/1.1 401 Unauthorized\r\n{challenge}Content-Length: 0\r\nConnection: close\r\n\r\n"),
                    }
                };
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, issued)
}

#[tokio::test]
async fn an_expired_token_is_renewed_and_the_push_goes_on() {
    let (addr, issued) = expiring_token_registry().await;
    let c = client(&addr, alice());
    let digest = crate::digest::Digest::sha256(b"x");
    c.check_push_access("team/app").await.unwrap();
    assert!(!c.manifest_exists("team/app", &digest).await.unwrap());
    // Past the registry's real lifetime: the cached token is refused, renewed, and the request
    // is sent again.
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    assert!(!c.manifest_exists("team/app", &digest).await.unwrap());
    assert!(*issued.lock().unwrap() >= 2, "a second token was fetched");
}

/// A server on `ip` answering each request head with `answer(request line, has
/// Authorization)`; records (request line, Authorization present).
async fn scripted(
    ip: &str,
    answer: impl Fn(&str, bool) -> String + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<(String, bool)>>>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let (answer, log) = (Arc::new(answer), seen.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let line = head.lines().next().unwrap_or_default().to_string();
                let auth =
                    head.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:"));
                log.lock().unwrap().push((line.clone(), auth));
                let _ = sock.write_all(answer(&line, auth).as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

/// The registry redirects a blob `HEAD` to another host (as registries with a storage
/// backend do for blobs): the redirected request carries no credentials.
#[tokio::test]
async fn a_redirect_to_another_host_carries_no_credentials() {
    let (elsewhere, elsewhere_seen) = scripted("127.0.0.2", |_, _| {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
    })
    .await;
    let to = format!("http://{elsewhere}/blob");
    let (registry, registry_seen) = scripted("127.0.0.1", move |line, auth| match (line, auth) {
        (l, false) if l.starts_with("GET /v2/ ") => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        (l, true) if l.starts_with("HEAD /v2/team/app/blobs/") => {
            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        _ => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    })
    .await;
    let c = client(&registry, alice());
    c.check_push_access("team/app").await.unwrap();
    let exists = c.blob_exists("team/app", &Digest::sha256(b"x")).await.unwrap();
    assert!(!exists);
    let heads: Vec<_> = registry_seen.lock().unwrap().clone();
    assert!(heads.iter().any(|(l, auth)| l.starts_with("HEAD") && *auth), "{heads:?}");
    let redirected = elsewhere_seen.lock().unwrap().clone();
    assert_eq!(redirected.len(), 1, "{redirected:?}");
    assert!(!redirected[0].1, "credentials followed the redirect: {redirected:?}");
}

/// Requests that miss the token cache together wait for one fetch (single-flight per scope
/// set); another scope set gets its own.
#[tokio::test]
async fn concurrent_token_misses_fetch_once() {
    let (addr, seen) = fake_registry(false).await;
    let c = std::sync::Arc::new(client(&addr, alice()));
    let scopes = [push_scope("team/app")];
    let gets: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            let scopes = scopes.clone();
            tokio::spawn(async move { c.token(&scopes).await.unwrap() })
        })
        .collect();
    for g in gets {
        assert_eq!(g.await.unwrap(), "tok:repository:team/app:pull,push");
    }
    c.token(&[pull_scope("team/base")]).await.unwrap();
    let fetched = seen.lock().unwrap().token_scopes.clone();
    assert_eq!(
        fetched,
        [
            vec!["repository:team/app:pull,push".to_string()],
            vec!["repository:team/base:pull".to_string()]
        ]
    );
}
