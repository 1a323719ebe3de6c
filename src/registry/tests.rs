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
                        format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\"\r\n"),
                        String::new(),
                    )
                } else if url.path() == "/token" && request_line.starts_with("POST") {
                    seen.lock().unwrap().token_posts.push(String::from_utf8_lossy(&body_in).to_string());
                    ("200 OK", String::new(), serde_json::json!({ "access_token": "from-refresh" }).to_string())
                } else if url.path() == "/token" {
                    let scopes: Vec<String> =
                        url.query_pairs().filter(|(k, _)| k == "scope").map(|(_, v)| v.to_string()).collect();
                    let refused = refuse_source && scopes.iter().any(|s| s.contains("denied/"));
                    let token = format!("tok:{}", scopes.join(" "));
                    let mut s = seen.lock().unwrap();
                    s.token_scopes.push(scopes);
                    s.token_auth.push(auth.clone());
                    if refused {
                        ("401 Unauthorized", String::new(), "{}".to_string())
                    } else {
                        ("200 OK", String::new(), serde_json::json!({ "token": token, "expires_in": 300 }).to_string())
                    }
                } else if url.path().ends_with("/blobs/uploads/") {
                    seen.lock().unwrap().registry_auth.push((target.clone(), auth.clone()));
                    let from = url.query_pairs().find(|(k, _)| k == "from").map(|(_, v)| v.to_string());
                    let covered = from.as_ref().is_some_and(|f| {
                        auth.as_deref().unwrap_or_default().contains(&format!("repository:{f}:pull"))
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
    RegistryClient::new(&target, credential, &ConnectOptions { plain_http: true, ..Default::default() })
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
    assert_eq!(seen.token_scopes[1], ["repository:team/app:pull,push", "repository:team/base:pull"]);
    // The token service got the credentials as basic auth; the registry only ever a token.
    assert!(seen.token_auth.iter().all(|a| a.as_deref().is_some_and(|a| a.starts_with("Basic "))));
    assert!(seen.registry_auth.iter().all(|(_, a)| a.as_deref().is_some_and(|a| a.starts_with("Bearer tok:"))));
}

#[tokio::test]
async fn refused_source_scope_falls_back_to_an_upload_session() {
    let (addr, seen) = fake_registry(true).await;
    let c = client(&addr, alice());
    let digest = crate::digest::Digest::sha256(b"layer");
    let outcome = c.mount("team/app", &digest, "denied/base").await.unwrap();
    match outcome {
        MountOutcome::Started(session) => assert!(session.location.ends_with("/v2/session/1"), "{session:?}"),
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
