//! The request to stop: SIGTERM (kubelet deleting the pod, a Job's `activeDeadlineSeconds`)
//! or SIGINT (Ctrl+C), as one value every part of the process waits on.
//!
//! In a container the process is PID 1 of its PID namespace, and the kernel drops every signal
//! PID 1 has no handler for: without these handlers kubelet's SIGTERM does nothing and the
//! SIGKILL comes 30 s later. So the handlers are installed before any work starts. The first
//! signal asks everything to stop (the worker cancels its push, the controller stops and
//! releases its Lease); a second one ends the process at once with 128 + its number, as a
//! shell reports a death by that signal.
//!
//! This module owns the handlers and nothing else: what stopping means is up to each waiter.

use std::fmt;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// The signals that ask the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
}

impl Signal {
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
        }
    }

    /// `SIGTERM`, `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        }
    }

    /// What a shell or a container runtime reports for a process this signal ended: 128 + N
    /// (143 for SIGTERM, 130 for SIGINT).
    pub fn exit_code(self) -> i32 {
        128 + self.number()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether, and by which signal, the process was asked to stop. Cheap to clone; every clone
/// sees the same request.
#[derive(Debug, Clone)]
pub struct Shutdown {
    requested: watch::Receiver<Option<Signal>>,
}

/// Requests a stop on a [`Shutdown`] made by [`Shutdown::manual`] (library callers, tests).
#[derive(Debug)]
pub struct Trigger(watch::Sender<Option<Signal>>);

impl Trigger {
    pub fn request(&self, signal: Signal) {
        self.0.send_replace(Some(signal));
    }
}

impl Shutdown {
    /// Installs the SIGTERM and SIGINT handlers. Must run inside the tokio runtime.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, requested) = watch::channel(None);
        tokio::spawn(async move {
            let mut next = async || {
                tokio::select! {
                    _ = term.recv() => Signal::Term,
                    _ = int.recv() => Signal::Int,
                }
            };
            let first = next().await;
            tracing::info!(
                signal = first.name(),
                "stopping; a second signal ends the process at once"
            );
            tx.send_replace(Some(first));
            let second = next().await;
            eprintln!("{second} again: exiting at once");
            std::process::exit(second.exit_code());
        });
        Ok(Shutdown { requested })
    }

    /// A stop requested only through the returned [`Trigger`].
    pub fn manual() -> (Trigger, Shutdown) {
        let (tx, requested) = watch::channel(None);
        (Trigger(tx), Shutdown { requested })
    }

    /// A stop that is never requested.
    pub fn never() -> Shutdown {
        Shutdown::manual().1
    }

    /// The signal, if a stop was requested.
    pub fn requested(&self) -> Option<Signal> {
        *self.requested.borrow()
    }

    /// Resolves when a stop is requested (at once if it was), with the signal.
    pub async fn wait(&self) -> Signal {
        let mut requested = self.requested.clone();
        let signal = requested.wait_for(Option::is_some).await.map(|s| *s);
        match signal {
            Ok(signal) => signal.expect("waited for Some"),
            // The trigger is gone without a request: none will come.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_wakes_every_clone_and_never_stays_pending() {
        let (trigger, shutdown) = Shutdown::manual();
        let other = shutdown.clone();
        assert_eq!(shutdown.requested(), None);
        let waiter = tokio::spawn(async move { other.wait().await });
        trigger.request(Signal::Term);
        assert_eq!(waiter.await.unwrap(), Signal::Term);
        assert_eq!(shutdown.requested(), Some(Signal::Term));
        assert_eq!(shutdown.wait().await, Signal::Term);

        let never = Shutdown::never();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), never.wait()).await;
        assert!(waited.is_err());
        assert_eq!((Signal::Term.exit_code(), Signal::Int.exit_code()), (143, 130));
    }
}
