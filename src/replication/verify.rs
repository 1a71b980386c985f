//! The verifier (every site): re-hashes local copies on an interval and compares them with
//! the checksum the primary recorded in the event log. One copy at a time, on a blocking
//! thread: verification is meant to use one core, not to compete with serving.
//!
//! On the primary a copy that fails is repaired at once from a secondary's verified copy
//! ([`super::repair`]); one that cannot be stays failed (CRITICAL, with the reason) and is
//! looked at again within [`crate::objects::REPAIR_RETRY`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::repair::{self, Outcome, Peers};
use super::Bandwidth;
use crate::log::now_ms;
use crate::objects::{ObjectError, Objects};
use crate::types::Role;

/// How often a copy is re-verified when the configuration does not say.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Copies taken per scan of the registry.
const BATCH: usize = 256;
/// How long verification waits after the bucket did not answer.
const UNANSWERED_PAUSE: Duration = Duration::from_secs(5);
/// What a failed verification says on a secondary.
pub const MISMATCH: &str = "checksum does not match the primary";
/// What it says on the primary, which compares with the checksum taken when it was pushed.
pub const MISMATCH_PRIMARY: &str = "checksum does not match the one recorded at push";

/// Runs until shutdown. Errors only when this site's storage fails.
pub async fn run<P: Peers>(
    objects: Arc<Objects>,
    peers: Arc<P>,
    interval: Duration,
    bandwidth: Arc<Bandwidth>,
    shutdown: CancellationToken,
) -> Result<(), ObjectError> {
    info!(interval_s = interval.as_secs_f64(), "verifier started");
    let role = objects.settings().role();
    let mismatch = match role {
        Role::Primary => MISMATCH_PRIMARY,
        Role::Secondary => MISMATCH,
    };
    'scan: loop {
        let due = objects.verification_due(now_ms(), interval, BATCH)?;
        for (name, local) in &due.now {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let paced = Arc::clone(&bandwidth);
            let digest = objects
                .blobs()
                .digest(name, &local.sha256, move |n| paced.take_blocking(n))
                .await;
            // A copy the bucket would not give says nothing of the copy unless the bucket
            // shows it answers and is still this site's (a bucket removed or replaced
            // answers "not found" for everything): no verdict until then, and the copy is
            // read again.
            if let Err(e) = &digest {
                if !objects.blobs().answers().await {
                    warn!(object = %name, error = %e, "cannot read the copy from object storage; its verification waits");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(UNANSWERED_PAUSE) => {}
                    }
                    continue 'scan;
                }
            }
            let outcome = match digest {
                Ok(d) if d.hex() == local.sha256 && d.size == local.size => Ok(()),
                Ok(d) => Err(format!(
                    "{mismatch}: found sha256 {} ({} bytes), expected {} ({} bytes)",
                    d.hex(),
                    d.size,
                    local.sha256,
                    local.size
                )),
                Err(e) => Err(format!("cannot read the local copy: {e}")),
            };
            debug!(object = %name, ok = outcome.is_ok(), "verified");
            let failure = outcome.as_ref().err().cloned();
            // Recorded first: the copy shows as damaged (CRITICAL) while it is repaired.
            objects
                .record_verification(name, local, outcome, now_ms())
                .await?;
            let (Some(failure), Role::Primary) = (failure, role) else {
                continue;
            };
            if let Outcome::Failed(reason) =
                repair::repair(&objects, peers.as_ref(), name, local).await?
            {
                objects
                    .record_verification(name, local, Err(format!("{failure}; {reason}")), now_ms())
                    .await?;
            }
        }
        if !due.now.is_empty() {
            continue;
        }
        // Nothing due: sleep until the next copy is, or an interval at most (copies synced
        // meanwhile were hashed as they were written and fall due an interval later).
        let wait = due.next_ms.map_or(interval, |at| {
            Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = objects.suspected() => {}
            _ = tokio::time::sleep(wait.min(interval).max(Duration::from_millis(10))) => {}
        }
    }
}
