//! Retries of registry requests: exponential backoff with jitter, `Retry-After` honoured,
//! bounded in attempts and in time. Every retry is logged and reported to the push's
//! progress sink, so people see why a push is slow.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::Error;

/// How hard to try before giving up on a transient failure.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per request, the first included.
    pub max_attempts: u32,
    /// No new try starts after this much time since the first.
    pub max_elapsed: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(300),
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Default::default() }
    }

    /// Whether attempt `attempt` (1-based, just failed) may be followed by another.
    pub fn allows(&self, attempt: u32, started: Instant) -> bool {
        attempt < self.max_attempts && started.elapsed() < self.max_elapsed
    }

    /// Delay before attempt `attempt + 1`: the registry's `Retry-After` when it gave one
    /// (capped by max_delay), else base·2^(attempt-1) with ±25% jitter.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let exp = self.base_delay.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
        let capped = exp.min(self.max_delay);
        // Jitter from the clock's nanoseconds: enough to spread concurrent retries.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let factor = 0.75 + (nanos % 1000) as f64 / 2000.0;
        capped.mul_f64(factor)
    }
}

/// A retry about to happen, for progress output.
#[derive(Debug, Clone)]
pub struct RetryNotice {
    pub what: String,
    /// The attempt that failed (1-based).
    pub attempt: u32,
    pub max_attempts: u32,
    pub delay: Duration,
    pub error: String,
}

/// Receives retry notices.
pub type RetryObserver = Arc<dyn Fn(RetryNotice) + Send + Sync>;

/// Runs `op` until it succeeds, fails for good, or the policy gives up.
pub async fn retrying<T, F, Fut>(
    policy: &RetryPolicy,
    observer: Option<&RetryObserver>,
    what: &str,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && policy.allows(attempt, started) => {
                let delay = policy.delay(attempt, e.retry_after());
                notify(observer, what, attempt, policy, delay, &e);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn notify(
    observer: Option<&RetryObserver>,
    what: &str,
    attempt: u32,
    policy: &RetryPolicy,
    delay: Duration,
    e: &Error,
) {
    tracing::warn!(what, attempt, max_attempts = policy.max_attempts, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
    if let Some(o) = observer {
        o(RetryNotice {
            what: what.to_string(),
            attempt,
            max_attempts: policy.max_attempts,
            delay,
            error: e.to_string(),
        });
    }
}

/// Parses a `Retry-After` header: delay-seconds (HTTP-dates are treated as 1 s).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse::<u64>() {
        Ok(s) => Some(Duration::from_secs(s)),
        Err(_) => Some(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        let d1 = p.delay(1, None);
        let d3 = p.delay(3, None);
        assert!(d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(125), "{d1:?}");
        assert!(d3 >= Duration::from_millis(300) && d3 <= Duration::from_millis(500), "{d3:?}");
        assert!(p.delay(20, None) <= Duration::from_millis(1250));
        assert_eq!(p.delay(1, Some(Duration::from_secs(3))), Duration::from_secs(1));
        assert_eq!(p.delay(1, Some(Duration::from_millis(400))), Duration::from_millis(400));
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(1))
        );
        assert!(!RetryPolicy::none().allows(1, Instant::now()));
    }

    #[tokio::test]
    async fn retries_transient_errors_only_and_stops() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            ..Default::default()
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let observer: RetryObserver =
            Arc::new(move |n: RetryNotice| s2.lock().unwrap().push(n.attempt));
        let mut calls = 0;
        let r: Result<(), Error> = retrying(&p, Some(&observer), "HEAD x", || {
            calls += 1;
            async {
                Err(Error::Status {
                    method: "HEAD",
                    url: "u".into(),
                    status: 503,
                    code: None,
                    message: String::new(),
                    retry_after: None,
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
        assert_eq!(*seen.lock().unwrap(), [1, 2]);
        let mut calls = 0;
        let r: Result<(), Error> = retrying(&p, None, "PUT x", || {
            calls += 1;
            async {
                Err(Error::Status {
                    method: "PUT",
                    url: "u".into(),
                    status: 400,
                    code: None,
                    message: String::new(),
                    retry_after: None,
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "permanent errors are not retried");
    }
}
