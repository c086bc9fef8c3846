//! The heartbeat: a host renews its lease every tenth of it, reads the
//! other members (for placement and for its peer connections), and every
//! lease declares dead the members whose lease lapsed a lease ago. Any
//! member may reap, and a reap is idempotent.
//!
//! The host's own lease deadline is kept on its monotonic clock, from the
//! moment before each heartbeat was sent: it passes before the store's, so
//! while the host holds its lease by that clock, no other host can own its
//! actors.

use std::sync::Weak;
use std::time::{Duration, Instant};

use crate::Inner;

/// Default lease: how long a member holds its actors without a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Default heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// Dead members' rows are forgotten this long after their lease lapsed.
const FORGET_DEAD_AFTER: Duration = Duration::from_secs(3600);

/// The heartbeat loop, for as long as the cluster lives.
pub(crate) async fn beat(inner: Weak<Inner>) {
    let mut last_reap = Instant::now();
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.renew().await {
            tracing::warn!(host = %inner.info.id, error = %e, "heartbeat failed; retrying (this host stops serving when its lease runs out)");
        }
        if let Err(e) = inner.refresh_members().await {
            tracing::warn!(error = %e, "reading the cluster's members failed; retrying");
        }
        if last_reap.elapsed() >= inner.lease {
            last_reap = Instant::now();
            let grace = inner.lease.as_millis() as i64;
            match inner.cluster().reap(grace, FORGET_DEAD_AFTER.as_millis() as i64).await {
                Ok(dead) if !dead.is_empty() => tracing::warn!(hosts = ?dead, "declared hosts dead: their leases lapsed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reaping dead hosts failed; retrying later"),
            }
        }
        let period = inner.heartbeat;
        drop(inner);
        tokio::time::sleep(period).await;
    }
}
