//! Prometheus metrics (`imagepush_*`) and the small HTTP endpoint serving them with
//! `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_failures: Family<ReasonLabel, Counter>,
    pub pushes: Family<ResultLabel, Counter>,
    pub push_failures: Family<ReasonLabel, Counter>,
    pub jobs_created: Counter,
    pub bytes_uploaded: Counter,
    pub blobs_uploaded: Counter,
    pub blobs_mounted: Counter,
    pub blobs_existed: Counter,
    /// Seconds one reconcile took (its API calls included).
    pub reconcile_duration: Histogram,
    /// Seconds from a push's first worker Job to its end, by result.
    pub push_duration: Family<ResultLabel, Histogram>,
}

/// 5 ms to about 80 s.
fn reconcile_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// 1 s to about 4.5 h.
fn push_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("imagepush");
        let m = Metrics {
            reconciles: Counter::default(),
            reconcile_failures: Family::default(),
            pushes: Family::default(),
            push_failures: Family::default(),
            jobs_created: Counter::default(),
            bytes_uploaded: Counter::default(),
            blobs_uploaded: Counter::default(),
            blobs_mounted: Counter::default(),
            blobs_existed: Counter::default(),
            reconcile_duration: reconcile_buckets(),
            push_duration: Family::new_with_constructor(push_buckets),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Reconciles run", m.reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error",
            m.reconcile_failures.clone(),
        );
        registry.register(
            "pushes",
            "Finished pushes, by result (succeeded, failed)",
            m.pushes.clone(),
        );
        registry.register(
            "push_failures",
            "Failed pushes, by condition reason",
            m.push_failures.clone(),
        );
        registry.register("worker_jobs_created", "Worker Jobs created", m.jobs_created.clone());
        registry.register(
            "bytes_uploaded",
            "Blob bytes uploaded by finished pushes",
            m.bytes_uploaded.clone(),
        );
        registry.register(
            "blobs_uploaded",
            "Blobs uploaded by finished pushes",
            m.blobs_uploaded.clone(),
        );
        registry.register(
            "blobs_mounted",
            "Blobs mounted from other repositories by finished pushes",
            m.blobs_mounted.clone(),
        );
        registry.register(
            "blobs_existed",
            "Blobs already in the target repository",
            m.blobs_existed.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, API calls included",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "push_duration_seconds",
            "Time from a push's first worker Job to its end (all attempts), by result",
            m.push_duration.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` (ready once `ready` is set) until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((mut sock, _)) = accepted else { continue };
            let metrics = metrics.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                let (status, content_type, body) = match path {
                    "/metrics" => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        metrics.encode(),
                    ),
                    "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                    "/readyz" if ready.load(Ordering::Relaxed) => {
                        ("200 OK", "text/plain", "ok\n".to_string())
                    }
                    "/readyz" => {
                        ("503 Service Unavailable", "text/plain", "not ready\n".to_string())
                    }
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}
