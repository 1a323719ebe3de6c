//! A TCP forwarder between a client (the code under test) and a server (the registry) that
//! counts the bytes going through it and injects faults, so a test can see from the
//! registry's side what a client sent ("the second push uploaded no layer bytes") and how it
//! copes with a network or a registry that misbehaves.
//!
//! It runs on its own thread with its own current-thread tokio runtime, so it works from
//! `#[tokio::test]` and from plain `#[test]` alike, and outlives no test: dropping the proxy
//! stops the accept loop and every connection.
//!
//! Two kinds of faults:
//! - **TCP faults** on the bytes towards the server: cut a connection after N bytes, stall it,
//!   throttle it, or cut connections at random with a fixed seed.
//! - **HTTP faults** ([`HttpFault`], [`CountingProxy::add_rule`]): the proxy answers a
//!   matching request itself with a scripted status (plus `Retry-After`, a distribution-style
//!   JSON error body and `Connection: close`) and never forwards it, so the registry does not
//!   see it at all.
//!
//! How it works: each connection has two pumps. The one towards the server follows HTTP/1.1
//! request framing (head up to CRLFCRLF, then a `Content-Length` or chunked body), so it
//! knows where each request on a keep-alive connection starts; every request is logged
//! ([`CountingProxy::requests`]). A request that a rule claims is read to its end and thrown
//! away, then the scripted response goes to the client and the connection is closed. This is
//! safe because the clients here (hyper, reqwest) do not pipeline: the previous response has
//! reached the client before the next request head arrives. The pump towards the client
//! shares the client's write half with it for that reason. Bytes that do not look like an
//! HTTP request (TLS, garbage) switch the connection to plain forwarding. The TCP faults
//! apply to what is forwarded, read by read, so `bytes_to_server` always means "bytes the
//! server was sent"; what a rule swallowed is counted apart (`bytes_discarded`).
//!
//! Growing it further: a new TCP fault belongs in `forward` (one call per read from the
//! client, with the connection's offset at hand), a new kind of HTTP fault in `HttpFault` and
//! `Shared::on_request` (one call per request head, before any of the request is forwarded).
//! Faults on responses would need `pump_to_client` to follow response framing too (HEAD,
//! 204/304 and close-delimited bodies). Not supported: `Expect: 100-continue` (reqwest does
//! not send it) and pipelining (neither hyper nor reqwest pipelines).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A scripted answer: the proxy answers the matching requests itself instead of forwarding
/// them. Matching requests are counted from the moment the rule is added; the first `skip`
/// of them are forwarded, the next `times` are answered, the rest forwarded again.
///
/// ```ignore
/// proxy.add_rule(HttpFault::new("PATCH", "/blobs/uploads/", 503).min_body(1 << 20).skip(1));
/// proxy.add_rule(HttpFault::new("PUT", "/manifests/", 429).retry_after(1).times(2));
/// proxy.add_rule(HttpFault::new("GET", "/v2/", 503).exact_path().times(2));
/// ```
#[derive(Debug, Clone)]
pub struct HttpFault {
    /// The request method, exactly (`"PATCH"`); empty matches any method.
    pub method: String,
    /// A part of the request target (path and query), or all of it with `exact_path`.
    pub path_contains: String,
    /// The target must equal `path_contains` rather than contain it.
    pub exact_path: bool,
    /// Only requests whose `Content-Length` is at least this (0: any request, chunked too).
    pub min_body: u64,
    pub status: u16,
    /// Seconds for a `Retry-After` header; None sends none.
    pub retry_after: Option<u32>,
    /// How many matching requests to answer.
    pub times: u64,
    /// How many matching requests to forward before answering any.
    pub skip: u64,
    /// The response body; None: `{"errors":[...]}` with a code fitting the status.
    pub body: Option<String>,
}

impl HttpFault {
    /// Answers the next matching request with `status`.
    pub fn new(method: &str, path_contains: &str, status: u16) -> HttpFault {
        HttpFault {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            exact_path: false,
            min_body: 0,
            status,
            retry_after: None,
            times: 1,
            skip: 0,
            body: None,
        }
    }

    pub fn times(mut self, times: u64) -> HttpFault {
        self.times = times;
        self
    }

    pub fn skip(mut self, skip: u64) -> HttpFault {
        self.skip = skip;
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> HttpFault {
        self.retry_after = Some(seconds);
        self
    }

    pub fn body(mut self, body: &str) -> HttpFault {
        self.body = Some(body.to_string());
        self
    }

    pub fn exact_path(mut self) -> HttpFault {
        self.exact_path = true;
        self
    }

    /// Only requests that announce a body of at least `bytes` (to pick a large blob's PATCH).
    pub fn min_body(mut self, bytes: u64) -> HttpFault {
        self.min_body = bytes;
        self
    }

    fn matches(&self, head: &RequestHead) -> bool {
        let target = head.target.as_str();
        (self.method.is_empty() || self.method == head.method)
            && if self.exact_path {
                target == self.path_contains
            } else {
                target.contains(&self.path_contains)
            }
            && (self.min_body == 0 || head.content_length().is_some_and(|n| n >= self.min_body))
    }

    /// The whole response; a HEAD gets the headers only.
    fn response(&self, head_only: bool) -> Vec<u8> {
        let body = self.body.clone().unwrap_or_else(|| {
            let (code, message) = match self.status {
                401 => ("UNAUTHORIZED", "authentication required"),
                403 => ("DENIED", "requested access to the resource is denied"),
                429 => ("TOOMANYREQUESTS", "too many requests"),
                503 => ("UNAVAILABLE", "service unavailable"),
                _ => ("UNKNOWN", "unknown error"),
            };
            let message = format!("{message} (injected by the test proxy)");
            serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string()
        });
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json; charset=utf-8\r\n\
             Docker-Distribution-Api-Version: registry/2.0\r\n",
            self.status,
            reason_phrase(self.status)
        );
        if let Some(s) = self.retry_after {
            head.push_str(&format!("Retry-After: {s}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

/// Identifies a rule added with [`CountingProxy::add_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(usize);

/// One request the proxy saw, in the order the heads arrived.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The connection (0, 1, ... in accept order).
    pub conn: u64,
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Its `Content-Length` (None when chunked).
    pub content_length: Option<u64>,
    /// When the head was complete, since the proxy started.
    pub at: Duration,
    /// The status the proxy answered in the server's place; None: forwarded.
    pub answered: Option<u16>,
    /// The scheme of its `Authorization` header (`Basic`, `Bearer`), if it had one.
    pub authorization: Option<String>,
    /// The body as sent, after [`CountingProxy::record_bodies`] (empty before, and for chunked
    /// bodies, which are not decoded).
    pub body: Vec<u8>,
}

struct RuleState {
    fault: HttpFault,
    /// Matching requests seen since the rule was added.
    seen: u64,
    /// Requests this rule answered.
    fired: u64,
}

/// Counters shared by the accept loop and every connection.
#[derive(Default)]
pub struct Stats {
    to_server: AtomicU64,
    to_client: AtomicU64,
    connections: AtomicU64,
    /// Bytes of requests a rule answered, read from the client and never forwarded.
    discarded: AtomicU64,
    http_faults: AtomicU64,
}

/// What every connection task sees: counters and fault policies.
struct Shared {
    target: SocketAddr,
    started: Instant,
    stats: Stats,
    /// Bytes per second towards the server; 0 = unlimited.
    throttle: AtomicU64,
    /// Cut the first connection that has sent this many bytes towards the server (0: never);
    /// cleared when it fires.
    cut_after: AtomicU64,
    cuts: AtomicU64,
    /// Stop forwarding (but keep the connection open) on the first connection that has sent
    /// this many bytes towards the server (0: never); cleared when it fires.
    stall_after: AtomicU64,
    /// Random mode: the seed, the chance in a million per 64 KiB of a request that its
    /// connection is cut there, and how many cuts are left (0: off).
    random_seed: std::sync::Mutex<u64>,
    /// How often each (method, body length) was seen: with the seed, it names a request's
    /// random decisions, whatever order requests come in.
    random_seen: std::sync::Mutex<std::collections::HashMap<(String, Option<u64>), u64>>,
    random_per_million: AtomicU64,
    random_cuts_left: AtomicU64,
    /// HTTP faults, in the order added.
    rules: std::sync::Mutex<Vec<RuleState>>,
    requests: std::sync::Mutex<Vec<RequestRecord>>,
    /// Keep the `Content-Length` bodies of forwarded requests in their records.
    record_bodies: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The key of a request's random decisions: its method and body length, and how many
    /// such requests came before it (so a retried request gets new decisions).
    fn request_key(&self, head: &RequestHead) -> u64 {
        let mut seen = self.random_seen.lock().unwrap();
        let n = seen.entry((head.method.clone(), head.content_length())).or_insert(0);
        *n += 1;
        let mut key = splitmix64(*n);
        for b in head.method.bytes() {
            key = splitmix64(key ^ u64::from(b));
        }
        splitmix64(key ^ head.content_length().unwrap_or(u64::MAX))
    }

    /// Logs a request and decides whether a rule answers it: every rule that matches counts
    /// it, the first one whose window is open answers it. Also returns the index of the
    /// request's record when its body is to be recorded there.
    fn on_request(&self, conn: u64, head: &RequestHead) -> (Option<Vec<u8>>, Option<usize>) {
        let mut answer = None;
        let mut status = None;
        for rule in self.rules.lock().unwrap().iter_mut() {
            if !rule.fault.matches(head) {
                continue;
            }
            let index = rule.seen;
            rule.seen += 1;
            if answer.is_none()
                && index >= rule.fault.skip
                && index < rule.fault.skip.saturating_add(rule.fault.times)
            {
                rule.fired += 1;
                status = Some(rule.fault.status);
                answer = Some(rule.fault.response(head.method == "HEAD"));
            }
        }
        if answer.is_some() {
            self.stats.http_faults.fetch_add(1, Ordering::SeqCst);
        }
        let mut requests = self.requests.lock().unwrap();
        requests.push(RequestRecord {
            conn,
            method: head.method.clone(),
            target: head.target.clone(),
            content_length: head.content_length(),
            at: self.started.elapsed(),
            answered: status,
            authorization: head.authorization.clone(),
            body: Vec::new(),
        });
        let record = (answer.is_none()
            && head.content_length().is_some()
            && self.record_bodies.load(Ordering::SeqCst))
        .then(|| requests.len() - 1);
        (answer, record)
    }

    fn record_body(&self, record: Option<usize>, bytes: &[u8]) {
        if let Some(i) = record {
            self.requests.lock().unwrap()[i].body.extend_from_slice(bytes);
        }
    }
}

pub struct CountingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Listens on 127.0.0.1 (free port) and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> CountingProxy {
        Self::start_on("127.0.0.1", target)
    }

    /// Listens on `ip` (a free port; any 127.x.y.z is this machine, a host of its own for a
    /// client) and forwards every connection to `target`.
    pub fn start_on(ip: &str, target: SocketAddr) -> CountingProxy {
        let std_listener = std::net::TcpListener::bind((ip, 0)).expect("bind proxy listener");
        std_listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = std_listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            started: Instant::now(),
            stats: Stats::default(),
            throttle: AtomicU64::new(0),
            cut_after: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            stall_after: AtomicU64::new(0),
            random_seed: std::sync::Mutex::new(0),
            random_seen: Default::default(),
            random_per_million: AtomicU64::new(0),
            random_cuts_left: AtomicU64::new(0),
            rules: std::sync::Mutex::new(Vec::new()),
            requests: std::sync::Mutex::new(Vec::new()),
            record_bodies: Default::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("counting-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                    accept_loop(listener, thread_shared, rx).await;
                });
                // Dropping the runtime here cancels every connection task.
            })
            .expect("spawn proxy thread");
        CountingProxy { addr, shared, shutdown: Some(tx), thread: Some(thread) }
    }

    /// Starts a proxy in front of a `host:port` string such as `TestRegistry::host()`.
    pub fn start_to(target: &str) -> CountingProxy {
        Self::start(target.parse().expect("proxy target must be IP:PORT"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` of the proxy: use it in place of the registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Bytes forwarded from clients to the server since start or the last `reset`.
    pub fn bytes_to_server(&self) -> u64 {
        self.shared.stats.to_server.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the server to clients since start or the last `reset` (the
    /// proxy's own answers are not counted).
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.stats.to_client.load(Ordering::SeqCst)
    }

    /// Bytes of requests that a rule answered (head and body), which clients sent and the
    /// server never saw, since start or the last `reset`.
    pub fn bytes_discarded(&self) -> u64 {
        self.shared.stats.discarded.load(Ordering::SeqCst)
    }

    /// Connections accepted since start or the last `reset`.
    pub fn connections(&self) -> u64 {
        self.shared.stats.connections.load(Ordering::SeqCst)
    }

    /// Cuts the next connection that sends `bytes` towards the server, mid-stream, once.
    pub fn cut_after(&self, bytes: u64) {
        self.shared.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Random mode with a fixed seed: each 64 KiB of a request towards the server has a
    /// `per_million` chance of having its connection cut there, at most `max_cuts` times. A
    /// decision depends on the seed, the request's method and body length, how many such
    /// requests came before, and the offset, so the same seed and traffic give the same cuts
    /// in whatever order concurrent requests arrive (as long as `max_cuts` is not reached).
    pub fn random_cuts(&self, seed: u64, per_million: u64, max_cuts: u64) {
        *self.shared.random_seed.lock().unwrap() = seed.max(1);
        self.shared.random_per_million.store(per_million, Ordering::SeqCst);
        self.shared.random_cuts_left.store(max_cuts, Ordering::SeqCst);
    }

    /// Stalls the next connection that sends `bytes` towards the server, once.
    pub fn stall_after(&self, bytes: u64) {
        self.shared.stall_after.store(bytes, Ordering::SeqCst);
    }

    /// How many connections were cut or stalled.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Limits each connection's bytes towards the server to `bytes_per_second` (0: no limit),
    /// to make a push last long enough to watch.
    pub fn set_throttle(&self, bytes_per_second: u64) {
        self.shared.throttle.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Adds an HTTP fault; rules are consulted in the order added.
    pub fn add_rule(&self, fault: HttpFault) -> RuleId {
        let mut rules = self.shared.rules.lock().unwrap();
        rules.push(RuleState { fault, seen: 0, fired: 0 });
        RuleId(rules.len() - 1)
    }

    /// How many requests the proxy answered itself, all rules together.
    pub fn http_faults(&self) -> u64 {
        self.shared.stats.http_faults.load(Ordering::SeqCst)
    }

    /// How many requests one rule answered.
    pub fn rule_faults(&self, rule: RuleId) -> u64 {
        self.shared.rules.lock().unwrap()[rule.0].fired
    }

    /// From now on, keeps the body of every forwarded request with a `Content-Length` in its
    /// record (`RequestRecord::body`), e.g. to see the objects a client sent to an API.
    pub fn record_bodies(&self) {
        self.shared.record_bodies.store(true, Ordering::SeqCst);
    }

    /// Every request seen so far (forwarded or answered), in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Zeroes the byte and connection counters (connections already open keep being
    /// forwarded and counted). Fault counters, rules and the request log stay.
    pub fn reset(&self) {
        self.shared.stats.to_server.store(0, Ordering::SeqCst);
        self.shared.stats.to_client.store(0, Ordering::SeqCst);
        self.shared.stats.connections.store(0, Ordering::SeqCst);
        self.shared.stats.discarded.store(0, Ordering::SeqCst);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.stats.connections.fetch_add(1, Ordering::SeqCst);
                let id = next_id;
                next_id += 1;
                tokio::spawn(handle_connection(id, client, shared.clone()));
            }
        }
    }
}

/// The client's write half: the pump towards the client writes the server's responses to it,
/// the pump towards the server its own answers.
type ClientWriter = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;

/// How the pump towards the server ended.
enum Ended {
    /// The client closed its side (or the connection broke): let the responses drain.
    Eof,
    /// The proxy answered a request itself and the connection is to be closed now.
    Answered,
}

async fn handle_connection(id: u64, client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.target).await else {
        return; // the client sees the connection close
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let client_w: ClientWriter = Arc::new(tokio::sync::Mutex::new(client_w));
    let to_server = pump_to_server(id, client_r, server_w, client_w.clone(), &shared);
    let to_client = pump_to_client(server_r, client_w, &shared);
    tokio::pin!(to_server, to_client);
    tokio::select! {
        ended = &mut to_server => {
            if let Ended::Eof = ended {
                to_client.await;
            }
            // Answered: returning drops both sockets, the server's included.
        }
        () = &mut to_client => {
            to_server.await;
        }
    }
}

/// Copies the server's bytes to the client, counting them; on EOF it half-closes the
/// client's side so HTTP response framing is preserved.
async fn pump_to_client(mut from: OwnedReadHalf, to: ClientWriter, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Counted before forwarding, so the count never lags behind what the peer has seen.
        shared.stats.to_client.fetch_add(n as u64, Ordering::SeqCst);
        if to.lock().await.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.lock().await.shutdown().await;
}

/// What the pump towards the server does with the bytes of one read from the client.
#[derive(Default)]
struct ReadPlan {
    /// Bytes to forward, in order.
    forward: Vec<u8>,
    /// Where in `forward` a request begins, and the key of its random decisions.
    starts: Vec<(usize, u64)>,
    /// Bytes a rule swallowed.
    discarded: u64,
    /// The proxy's own answer, once the request it answers has been read to its end.
    answer: Option<Vec<u8>>,
}

/// Copies the client's bytes to the server, request by request, applying the TCP faults to
/// what it forwards and answering requests a rule claims. On EOF it half-closes the server's
/// side.
async fn pump_to_server(
    conn: u64,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    client: ClientWriter,
    shared: &Shared,
) -> Ended {
    let mut buf = vec![0u8; 64 * 1024];
    let mut requests = RequestTracker::new(conn);
    let mut offset = Offsets::default();
    'reading: loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let plan = requests.feed(&buf[..n], shared);
        shared.stats.discarded.fetch_add(plan.discarded, Ordering::SeqCst);
        // Piece by piece, so the request offset starts over where a request begins.
        let mut cuts: Vec<usize> = plan.starts.iter().map(|(at, _)| *at).collect();
        cuts.push(plan.forward.len());
        let mut from_index = 0;
        for to_index in cuts {
            if let Some((_, key)) = plan.starts.iter().find(|(at, _)| *at == from_index) {
                offset.request = 0;
                offset.request_key = *key;
            }
            if to_index > from_index {
                let piece = &plan.forward[from_index..to_index];
                match forward(piece, &mut offset, &mut to, shared).await {
                    Forwarded::Ok => {}
                    Forwarded::Cut => return Ended::Eof,
                    Forwarded::Stalled => {
                        // Hold the connection open and forward nothing more, as a hung peer
                        // would.
                        let _keep = (from, to);
                        let never: std::convert::Infallible = std::future::pending().await;
                        match never {}
                    }
                    Forwarded::Closed => break 'reading,
                }
            }
            from_index = to_index;
        }
        if let Some(answer) = plan.answer {
            let mut w = client.lock().await;
            let _ = w.write_all(&answer).await;
            let _ = w.shutdown().await;
            let _ = to.shutdown().await;
            return Ended::Answered;
        }
    }
    let _ = to.shutdown().await;
    Ended::Eof
}

enum Forwarded {
    Ok,
    /// A TCP fault cut the connection.
    Cut,
    /// A TCP fault stalled the connection.
    Stalled,
    /// The server's side is gone.
    Closed,
}

/// Forwards the bytes of one read towards the server, after the TCP faults had their say.
/// A well-mixed 64-bit hash of `x` (SplitMix64's finalizer).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Random cuts are decided once per this many bytes of a request.
const RANDOM_UNIT: u64 = 64 * 1024;

/// How far a connection's stream towards the server has come, and its current request
/// (with the key of its random decisions).
#[derive(Default)]
struct Offsets {
    connection: u64,
    request: u64,
    request_key: u64,
}

/// In random mode, how much of the last `n` bytes of the current request to forward before
/// cutting the connection, if a roll says so.
fn random_cut(n: usize, offsets: &Offsets, shared: &Shared) -> Option<usize> {
    if shared.random_cuts_left.load(Ordering::SeqCst) == 0 {
        return None;
    }
    // One roll per RANDOM_UNIT of each request, not per read (reads vary in size with timing)
    // nor of the connection (which requests share a pooled connection varies too).
    let before = offsets.request - n as u64;
    let mut boundary = (before / RANDOM_UNIT + 1) * RANDOM_UNIT;
    while boundary <= offsets.request {
        let seed = *shared.random_seed.lock().unwrap();
        let roll = splitmix64(seed ^ offsets.request_key ^ splitmix64(boundary)) % 1_000_000;
        if roll < shared.random_per_million.load(Ordering::SeqCst)
            && shared.random_cuts_left.fetch_sub(1, Ordering::SeqCst) > 0
        {
            return Some((boundary - before) as usize);
        }
        boundary += RANDOM_UNIT;
    }
    None
}

async fn forward(
    data: &[u8],
    offsets: &mut Offsets,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
) -> Forwarded {
    let n = data.len();
    let counter = &shared.stats.to_server;
    offsets.connection += n as u64;
    offsets.request += n as u64;
    let offset = &offsets.connection;
    // Where to cut this piece, if anywhere: the one-shot `cut_after`, else a random roll.
    let cut = shared.cut_after.load(Ordering::SeqCst);
    let keep = if cut > 0
        && *offset >= cut
        && shared.cut_after.compare_exchange(cut, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    {
        Some(n - (*offset - cut) as usize)
    } else {
        random_cut(n, offsets, shared)
    };
    if let Some(keep) = keep {
        // Forward only up to the cut, then drop the connection mid-request.
        counter.fetch_add(keep as u64, Ordering::SeqCst);
        let _ = to.write_all(&data[..keep]).await;
        shared.cuts.fetch_add(1, Ordering::SeqCst);
        return Forwarded::Cut;
    }
    let stall = shared.stall_after.load(Ordering::SeqCst);
    if stall > 0
        && *offset >= stall
        && shared.stall_after.compare_exchange(stall, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    {
        shared.cuts.fetch_add(1, Ordering::SeqCst);
        return Forwarded::Stalled;
    }
    // Counted before forwarding, so the count never lags behind what the peer has seen.
    counter.fetch_add(n as u64, Ordering::SeqCst);
    if to.write_all(data).await.is_err() {
        return Forwarded::Closed;
    }
    let rate = shared.throttle.load(Ordering::Relaxed);
    if rate > 0 {
        tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
    }
    Forwarded::Ok
}

/// The parts of a request head the proxy needs.
struct RequestHead {
    method: String,
    target: String,
    body: Body,
    /// The `Authorization` header's scheme (`Basic`, `Bearer`), never its credentials.
    authorization: Option<String>,
}

impl RequestHead {
    fn content_length(&self) -> Option<u64> {
        match self.body {
            Body::Length(n) => Some(n),
            Body::Chunked(_) => None,
        }
    }
}

/// Where a request body ends.
#[derive(Debug, PartialEq)]
enum Body {
    /// `Content-Length` (0 when the head has neither it nor chunked encoding).
    Length(u64),
    Chunked(Chunked),
}

/// Progress through a chunked body.
#[derive(Debug, PartialEq)]
enum Chunked {
    /// Reading a chunk-size line (the bytes so far).
    Size(Vec<u8>),
    /// Inside a chunk's data: bytes left, then its CRLF.
    Data(u64),
    /// The CRLF after a chunk's data: bytes left.
    DataEnd(u8),
    /// After the last (0) chunk: reading trailer lines until an empty one (the current line).
    Trailer(Vec<u8>),
}

impl Body {
    /// Consumes what belongs to this body from `data`: (bytes used, whether the body ended).
    fn advance(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        match self {
            Body::Length(left) => {
                let used = (*left).min(data.len() as u64);
                *left -= used;
                Ok((used as usize, *left == 0))
            }
            Body::Chunked(state) => {
                let mut used = 0;
                while used < data.len() {
                    let rest = &data[used..];
                    match state {
                        Chunked::Size(line) | Chunked::Trailer(line) => {
                            let (take, complete) = match rest.iter().position(|&b| b == b'\n') {
                                Some(i) => (i + 1, true),
                                None => (rest.len(), false),
                            };
                            line.extend_from_slice(&rest[..take]);
                            used += take;
                            if line.len() > 8 * 1024 {
                                return Err(());
                            }
                            if !complete {
                                continue;
                            }
                            let text = String::from_utf8_lossy(line).trim().to_string();
                            let next = match state {
                                Chunked::Size(_) => {
                                    let hex = text.split(';').next().unwrap_or("").trim();
                                    match u64::from_str_radix(hex, 16).map_err(|_| ())? {
                                        0 => Chunked::Trailer(Vec::new()),
                                        size => Chunked::Data(size),
                                    }
                                }
                                _ if text.is_empty() => return Ok((used, true)),
                                _ => Chunked::Trailer(Vec::new()),
                            };
                            *state = next;
                        }
                        Chunked::Data(left) => {
                            let take = (*left).min(rest.len() as u64);
                            *left -= take;
                            used += take as usize;
                            if *left == 0 {
                                *state = Chunked::DataEnd(2);
                            }
                        }
                        Chunked::DataEnd(left) => {
                            let take = (*left as usize).min(rest.len());
                            *left -= take as u8;
                            used += take;
                            if *left == 0 {
                                *state = Chunked::Size(Vec::new());
                            }
                        }
                    }
                }
                Ok((used, false))
            }
        }
    }

    fn is_empty(&self) -> bool {
        *self == Body::Length(0)
    }
}

/// Where the client is in its stream of requests.
enum Phase {
    /// Reading a request head (the bytes so far).
    Head(Vec<u8>),
    /// Inside a body; `answer` is the proxy's own response when a rule claimed the request,
    /// `record` the request's record when its body is kept there.
    Body { body: Body, answer: Option<Vec<u8>>, record: Option<usize> },
    /// Not HTTP, or framing the proxy does not follow: forward everything as it comes.
    Raw,
}

/// Follows the request framing of one connection.
struct RequestTracker {
    conn: u64,
    phase: Phase,
}

/// A longer head is not a request this proxy follows.
const MAX_HEAD: usize = 64 * 1024;

impl RequestTracker {
    fn new(conn: u64) -> RequestTracker {
        RequestTracker { conn, phase: Phase::Head(Vec::new()) }
    }

    /// Splits one read from the client into what to forward and what a rule swallows.
    fn feed(&mut self, data: &[u8], shared: &Shared) -> ReadPlan {
        let mut plan = ReadPlan::default();
        let mut rest = data;
        while !rest.is_empty() {
            match &mut self.phase {
                Phase::Raw => {
                    plan.forward.extend_from_slice(rest);
                    rest = &[];
                }
                Phase::Head(head) => {
                    let before = head.len();
                    head.extend_from_slice(rest);
                    let Some(end) = find_head_end(head) else {
                        if !plausible_request_start(head) || head.len() > MAX_HEAD {
                            plan.forward.append(head);
                            self.phase = Phase::Raw;
                        }
                        rest = &[];
                        continue;
                    };
                    rest = &rest[end - before..];
                    head.truncate(end);
                    let Some(parsed) = parse_head(head) else {
                        plan.forward.append(head);
                        self.phase = Phase::Raw;
                        continue;
                    };
                    let (answer, record) = shared.on_request(self.conn, &parsed);
                    if answer.is_some() {
                        plan.discarded += head.len() as u64;
                    } else {
                        plan.starts.push((plan.forward.len(), shared.request_key(&parsed)));
                        plan.forward.append(head);
                    }
                    if parsed.body.is_empty() {
                        if answer.is_some() {
                            plan.answer = answer;
                            return plan;
                        }
                        self.phase = Phase::Head(Vec::new());
                    } else {
                        self.phase = Phase::Body { body: parsed.body, answer, record };
                    }
                }
                Phase::Body { body, answer, record } => {
                    let Ok((used, done)) = body.advance(rest) else {
                        // A chunked body this proxy cannot follow: stop following.
                        if answer.is_some() {
                            plan.answer = answer.take();
                            return plan;
                        }
                        plan.forward.extend_from_slice(rest);
                        self.phase = Phase::Raw;
                        rest = &[];
                        continue;
                    };
                    if answer.is_some() {
                        plan.discarded += used as u64;
                    } else {
                        shared.record_body(*record, &rest[..used]);
                        plan.forward.extend_from_slice(&rest[..used]);
                    }
                    rest = &rest[used..];
                    if done {
                        if answer.is_some() {
                            // Whatever follows is dropped with the connection.
                            plan.answer = answer.take();
                            return plan;
                        }
                        self.phase = Phase::Head(Vec::new());
                    }
                }
            }
        }
        plan
    }
}

/// The length of the head (through CRLFCRLF), once it is all there.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Whether the bytes so far can begin an HTTP request (`METHOD SP`), so that TLS or other
/// protocols are not held back waiting for a CRLFCRLF that never comes.
fn plausible_request_start(buf: &[u8]) -> bool {
    let token = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if token > 16 {
        return false;
    }
    match buf.get(token) {
        None => true,
        Some(b' ') => token > 0,
        Some(_) => false,
    }
}

fn parse_head(head: &[u8]) -> Option<RequestHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?.to_string();
    if !request_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let mut length = None;
    let mut chunked = false;
    let mut authorization = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.split(' ').next().unwrap_or_default().to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|c| c.trim() == "chunked");
        }
    }
    let body = if chunked {
        Body::Chunked(Chunked::Size(Vec::new()))
    } else {
        Body::Length(length.unwrap_or(0))
    };
    Some(RequestHead { method, target, body, authorization })
}
