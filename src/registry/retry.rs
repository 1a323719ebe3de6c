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
    /// The wait before try `attempt + 1`, or `None` when the policy allows no more tries:
    /// out of attempts, or the wait (a long `Retry-After`) would end past `max_elapsed`.
    pub fn next_delay(
        &self,
        attempt: u32,
        started: Instant,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if !self.allows(attempt, started) {
            return None;
        }
        let delay = self.delay(attempt, retry_after);
        if started.elapsed() + delay > self.max_elapsed {
            tracing::warn!(
                delay_s = delay.as_secs(),
                max_elapsed_s = self.max_elapsed.as_secs(),
                "not retrying: the wait would end past the retry time limit"
            );
            return None;
        }
        Some(delay)
    }

    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        // The registry knows best when to come back; `max_delay` only caps our own backoff.
        if let Some(d) = retry_after {
            return d;
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
            Err(e) if e.is_transient() => {
                let Some(delay) = policy.next_delay(attempt, started, e.retry_after()) else {
                    return Err(e);
                };
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
    // Said once: by whoever observes retries (the push's output), else in the log.
    if observer.is_none() {
        tracing::warn!(what, attempt, max_attempts = policy.max_attempts, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
    }
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
    if let Ok(seconds) = v.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // An HTTP date: how long until then (nothing when it has passed); anything else: a second.
    match k8s_openapi::jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(v) {
        Ok(at) => {
            let now = k8s_openapi::jiff::Timestamp::now();
            Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
        }
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
        // Retry-After is honoured beyond the backoff's cap...
        assert_eq!(p.delay(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(p.delay(1, Some(Duration::from_millis(400))), Duration::from_millis(400));
        // ...unless it ends past the time limit: then no retry.
        let now = Instant::now();
        assert_eq!(
            p.next_delay(1, now, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(p.next_delay(1, now, Some(Duration::from_secs(3600))), None);
        assert_eq!(p.next_delay(p.max_attempts, now, None), None);
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        // HTTP dates: a past one means now; a future one, the time until then.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let soon =
            k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(120);
        let text = k8s_openapi::jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&soon)
            .unwrap();
        let wait = parse_retry_after(&text).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{text}: {wait:?}"
        );
        assert_eq!(parse_retry_after("soon"), Some(Duration::from_secs(1)));
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
