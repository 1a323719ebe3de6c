//! Leader election over a `coordination.k8s.io` Lease (kube-lease-manager): which replica
//! acts, and handing over fast when it stops. It owns the Lease and nothing else; what the
//! leader does is the caller's.
//!
//! How kube-lease-manager (0.13) writes the Lease: a candidate that finds it free takes it with
//! a server-side apply of `holderIdentity` (and the times), without `force`; it renews, counts
//! transitions and releases (clears the holder) with strategic merge patches. The apply is the
//! only guard against two candidates taking a free Lease at once: the API server refuses it
//! (409) when it would change a field that *another field manager* owns. Candidates that share
//! a field manager own the field together, so a late apply silently replaces the holder, and
//! both lead until the first loser's next renewal. So every candidate applies as its own
//! manager ([`field_manager`]).
//!
//! The library's standby reads the Lease again only when the holder's term, as it last saw it,
//! ends: up to the whole Lease duration after a leader released it. So a standby here also
//! reads the Lease every [`POLL`] (as client-go's candidates do every retry period, a GET the
//! RBAC already allows) and, when it finds it released, starts a fresh manager, which takes it
//! at once. A leader that stops releases the Lease ([`Candidacy::end`]).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use sha2::Digest as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::shutdown::Shutdown;

/// How long a leader's term lasts without renewal, and how long before its end it renews.
const LEASE_DURATION_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;
/// How often a standby reads the Lease to find it released.
pub const POLL: Duration = Duration::from_secs(1);
/// How long a stopping candidate waits for its release to reach the API server.
pub const RELEASE_WAIT: Duration = Duration::from_millis(750);
/// The API server's limit on a field manager's length.
const MAX_FIELD_MANAGER_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's `holderIdentity`.
    pub identity: String,
}

/// This replica's identity: `POD_NAME` (unique among a Deployment's pods), else the hostname,
/// the pid and a random part (as PID 1 in containers that share a hostname, every replica has
/// pid 1).
pub fn identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "imagepush".into());
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{hostname}-{}-{:08x}", std::process::id(), random as u32)
}

/// The field manager of one candidate's Lease writes: `imagepush-controller-<identity>`, with
/// anything but `[A-Za-z0-9._-]` replaced; when that changed the identity or made it longer
/// than the API server's 128 characters, cut and made unique again with a hash of the identity.
pub fn field_manager(identity: &str) -> String {
    let plain = format!("{}-{identity}", super::FIELD_MANAGER);
    let sanitized: String = plain
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    if sanitized == plain && plain.len() <= MAX_FIELD_MANAGER_LEN {
        return plain;
    }
    let hash = hex::encode(&sha2::Sha256::digest(identity.as_bytes())[..4]);
    let keep = MAX_FIELD_MANAGER_LEN - hash.len() - 1;
    let mut cut = sanitized;
    cut.truncate(keep); // ASCII only now
    format!("{cut}-{hash}")
}

/// Runs for as long as this replica is a candidate: waits for leadership, runs `lead()` while
/// it leads (again after losing and regaining it), and returns when `lead()` ends (it ends on
/// shutdown) or on shutdown while standing by, having released the Lease.
pub async fn run<F, Fut>(
    client: &Client,
    le: &LeaderElection,
    shutdown: &Shutdown,
    mut lead: F,
) -> Result<(), LeaseManagerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let leases: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
    'candidacy: loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &le.lease_name)
            .with_namespace(&le.namespace)
            .with_identity(&le.identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .with_field_manager(field_manager(&le.identity));
        let manager = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            manager = manager.build() => manager?,
        };
        let (leader, task) = manager.watch().await;
        let mut candidacy = Candidacy { leader, task };
        loop {
            while !*candidacy.leader.borrow_and_update() {
                info!(identity = %le.identity, "waiting for leadership");
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => {
                        candidacy.end(false).await;
                        return Ok(());
                    }
                    changed = candidacy.leader.changed() => {
                        // The manager's task ended (it logged why).
                        if changed.is_err() {
                            return Ok(());
                        }
                    }
                    () = released(&leases, &le.lease_name) => {
                        info!("the Lease was released; trying to take it");
                        candidacy.end(false).await;
                        continue 'candidacy;
                    }
                }
            }
            info!(identity = %le.identity, "leading");
            tokio::select! {
                biased;
                () = lost(&mut candidacy.leader) => {
                    warn!("lost leadership; stopping the controller");
                }
                () = displaced(&leases, &le.lease_name, &le.identity) => {
                    warn!("the Lease shows another holder, or no renewal of ours for a whole term; stopping the controller");
                    // Not released: what the Lease says now is someone else's.
                    candidacy.task.abort();
                    continue 'candidacy;
                }
                () = lead() => {
                    candidacy.end(true).await;
                    return Ok(());
                }
            }
        }
    }
}

/// One LeaseManager's watch: whether we lead, and the task that keeps the Lease.
struct Candidacy {
    leader: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Candidacy {
    /// Ends it. Dropping the receiver makes the manager's task release the Lease when this
    /// replica holds it (kube-lease-manager's `watch` contract: it clears `holderIdentity`);
    /// waits for that, at most `RELEASE_WAIT`, after which the Lease expires on its own.
    async fn end(self, leading: bool) {
        drop(self.leader);
        match tokio::time::timeout(RELEASE_WAIT, self.task).await {
            Ok(Ok(Ok(_))) if leading => info!("released the Lease"),
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                warn!(error = %e, "could not release the Lease; it expires on its own")
            }
            Ok(Err(e)) => warn!(error = %e, "the Lease manager's task failed"),
            Err(_) => {
                warn!("the Lease was not released within {RELEASE_WAIT:?}; it expires on its own")
            }
        }
    }
}

/// Resolves when leadership is lost (or the manager's task ended).
async fn lost(leader: &mut watch::Receiver<bool>) {
    while leader.changed().await.is_ok() {
        if !*leader.borrow() {
            return;
        }
    }
}

/// Resolves once the Lease shows that this replica no longer leads, whatever its manager
/// believes: another holder or none (a candidate's force-release), or no renewal of ours for
/// a whole term (renewals that do not land). The library keeps a leader leading while its
/// renewals fail; this is the check client-go's renew deadline makes. Read every `POLL`.
async fn displaced(leases: &Api<Lease>, name: &str, identity: &str) {
    let term = Duration::from_secs(LEASE_DURATION_SECONDS);
    loop {
        tokio::time::sleep(POLL).await;
        let spec = match leases.get_opt(name).await {
            Ok(Some(lease)) => lease.spec.unwrap_or_default(),
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the Lease");
                continue;
            }
        };
        if spec.holder_identity.as_deref() != Some(identity) {
            return;
        }
        // Our own clock wrote renewTime: comparing it with ours is sound.
        let now = k8s_openapi::jiff::Timestamp::now();
        if spec
            .renew_time
            .is_some_and(|t| now.duration_since(t.0).as_secs() > term.as_secs() as i64)
        {
            return;
        }
    }
}

/// Resolves once the Lease has no holder: read every `POLL`, starting one `POLL` from now (a
/// fresh manager takes a free Lease itself in that time).
async fn released(leases: &Api<Lease>, name: &str) {
    loop {
        tokio::time::sleep(POLL).await;
        match leases.get_opt(name).await {
            Ok(Some(lease)) if lease.spec.as_ref().is_none_or(|s| s.holder_identity.is_none()) => {
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_gets_its_own_valid_field_manager() {
        assert_eq!(
            field_manager("imagepush-7d9f-abcde"),
            "imagepush-controller-imagepush-7d9f-abcde"
        );
        let long = "a".repeat(300);
        let odd = "pod name/with:odd\u{e9}chars";
        for id in [long.as_str(), odd, "x".repeat(107).as_str(), "x".repeat(108).as_str()] {
            let m = field_manager(id);
            assert!(m.len() <= MAX_FIELD_MANAGER_LEN, "{m}");
            assert!(m.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)), "{m}");
            assert!(m.starts_with("imagepush-controller-"), "{m}");
        }
        // Cut or sanitized identities stay apart.
        assert_ne!(field_manager(&format!("{long}1")), field_manager(&format!("{long}2")));
        assert_ne!(field_manager("a/b"), field_manager("a:b"));
        assert_ne!(field_manager("a/b"), field_manager("a-b"));
    }
}
