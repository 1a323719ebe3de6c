//! A TCP forwarder that counts the bytes going through it, so a test can see from the
//! registry's side what a client sent (e.g. "the second push uploaded no layer bytes").
//!
//! It runs on its own thread with its own current-thread tokio runtime, so it works from
//! `#[tokio::test]` and from plain `#[test]` alike, and outlives no test: dropping the proxy
//! stops the accept loop and every connection.
//!
//! Growing it into a fault-injection proxy: every byte passes through `pump`, once per
//! direction per connection, with the connection number and the running offset at hand. A
//! policy (drop the connection after N bytes to the server, delay, answer 5xx...) belongs in
//! `Shared`, consulted by `pump` before it forwards a chunk.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the code under test) to the server (the registry).
    ToServer,
    /// From the server back to the client.
    ToClient,
}

/// Counters shared by the accept loop and every connection.
#[derive(Default)]
pub struct Stats {
    to_server: AtomicU64,
    to_client: AtomicU64,
    connections: AtomicU64,
}

/// What every connection task sees. Fault policies would live here.
struct Shared {
    target: SocketAddr,
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
    /// Random mode: xorshift state (0: off), the chance in a million per forwarded chunk
    /// towards the server that the connection is cut, and how many cuts are left.
    random_state: std::sync::Mutex<u64>,
    random_per_million: AtomicU64,
    random_cuts_left: AtomicU64,
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
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        std_listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = std_listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            stats: Stats::default(),
            throttle: AtomicU64::new(0),
            cut_after: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            stall_after: AtomicU64::new(0),
            random_state: std::sync::Mutex::new(0),
            random_per_million: AtomicU64::new(0),
            random_cuts_left: AtomicU64::new(0),
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

    /// Bytes forwarded from the server to clients since start or the last `reset`.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.stats.to_client.load(Ordering::SeqCst)
    }

    /// Connections accepted since start or the last `reset`.
    pub fn connections(&self) -> u64 {
        self.shared.stats.connections.load(Ordering::SeqCst)
    }

    /// Zeroes the counters (connections already open keep being forwarded and counted).
    /// Cuts the next connection that sends `bytes` towards the server, mid-stream, once.
    pub fn cut_after(&self, bytes: u64) {
        self.shared.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Random mode with a fixed seed: each chunk towards the server has a `per_million` chance
    /// of having its connection cut, at most `max_cuts` times. The same seed and traffic give
    /// the same faults.
    pub fn random_cuts(&self, seed: u64, per_million: u64, max_cuts: u64) {
        *self.shared.random_state.lock().unwrap() = seed.max(1);
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

    pub fn reset(&self) {
        self.shared.stats.to_server.store(0, Ordering::SeqCst);
        self.shared.stats.to_client.store(0, Ordering::SeqCst);
        self.shared.stats.connections.store(0, Ordering::SeqCst);
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

async fn handle_connection(id: u64, client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.target).await else {
        return; // the client sees the connection close
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    tokio::join!(
        pump(id, Direction::ToServer, client_r, server_w, &shared),
        pump(id, Direction::ToClient, server_r, client_w, &shared),
    );
}

/// Copies one direction of one connection, counting every chunk; on EOF it half-closes the
/// other side so HTTP request/response framing is preserved.
async fn pump(
    _conn: u64,
    dir: Direction,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
) {
    let counter = match dir {
        Direction::ToServer => &shared.stats.to_server,
        Direction::ToClient => &shared.stats.to_client,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut _offset: u64 = 0;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Counted before forwarding, so the count never lags behind what the peer has seen.
        _offset += n as u64;
        let cut = shared.cut_after.load(Ordering::SeqCst);
        if dir == Direction::ToServer
            && cut > 0
            && _offset >= cut
            && shared.cut_after.compare_exchange(cut, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            // Forward only up to the cut, then drop the connection mid-request.
            let keep = n - (_offset - cut) as usize;
            counter.fetch_add(keep as u64, Ordering::SeqCst);
            let _ = to.write_all(&buf[..keep]).await;
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if dir == Direction::ToServer && shared.random_cuts_left.load(Ordering::SeqCst) > 0 {
            let roll = {
                let mut x = shared.random_state.lock().unwrap();
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                *x % 1_000_000
            };
            if roll < shared.random_per_million.load(Ordering::SeqCst)
                && shared.random_cuts_left.fetch_sub(1, Ordering::SeqCst) > 0
            {
                shared.cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        let stall = shared.stall_after.load(Ordering::SeqCst);
        if dir == Direction::ToServer
            && stall > 0
            && _offset >= stall
            && shared
                .stall_after
                .compare_exchange(stall, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            // Hold the connection open and forward nothing more, as a hung peer would.
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            let _keep = (from, to);
            let never: std::convert::Infallible = std::future::pending().await;
            match never {}
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
        // (fault-injection hook point: decide per chunk, knowing conn, dir and offset)
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let rate = shared.throttle.load(Ordering::Relaxed);
        if dir == Direction::ToServer && rate > 0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
    }
    let _ = to.shutdown().await;
}
