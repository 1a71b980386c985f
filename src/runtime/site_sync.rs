//! Puts this site's replication settings from the primary in force as the settings log
//! brings them: the selection (a secondary walks its catalog once per change: backfill
//! and removal) and the bandwidth limits, without a restart. For each limit the
//! primary's per-site setting wins over this site's own `--sync-bandwidth-limit` /
//! `--verify-bandwidth-limit`; with no per-site setting the flag applies.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::SiteError;
use crate::replication::Bandwidth;
use crate::server::Site;
use crate::settings::{Limit, SiteSync};
use crate::types::format_rate;

/// This site's two limits and its own flags, which apply where the primary sets none.
pub(super) struct Limits {
    pub sync: Arc<Bandwidth>,
    pub verify: Arc<Bandwidth>,
    pub sync_flag: Option<u64>,
    pub verify_flag: Option<u64>,
}

/// The rate in force: the primary's per-site setting when there is one, else the flag.
fn effective(set: Option<Limit>, flag: Option<u64>) -> Option<u64> {
    match set {
        Some(l) => l.rate(),
        None => flag,
    }
}

fn shown(rate: Option<u64>) -> String {
    rate.map_or("unlimited".into(), format_rate)
}

/// Runs until shutdown; errors only when this site's storage fails during a walk.
pub(super) async fn follow(
    site: Arc<Site>,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), SiteError> {
    let mut changes = site.settings.log().subscribe();
    let mut last: Option<Option<SiteSync>> = None;
    loop {
        let now = site.settings.own_site_sync();
        let record_of = |s: &Option<SiteSync>| {
            s.as_ref()
                .map(|s| (s.selective.clone(), s.sync_bandwidth, s.verify_bandwidth))
        };
        if last.as_ref().map(record_of) != Some(record_of(&now)) {
            let (selective, sync_set, verify_set) = match &now {
                Some(s) => (s.selective.clone(), s.sync_bandwidth, s.verify_bandwidth),
                None => (None, None, None),
            };
            for (what, bw, set, flag) in [
                ("sync", &limits.sync, sync_set, limits.sync_flag),
                (
                    "verification",
                    &limits.verify,
                    verify_set,
                    limits.verify_flag,
                ),
            ] {
                let rate = effective(set, flag);
                if last.is_none() || bw.rate() != rate {
                    bw.set(rate);
                    let from = if set.is_some() {
                        "the primary's setting for this site"
                    } else {
                        "this site's flag"
                    };
                    info!(limit = %shown(rate), from, "{what} bandwidth limit in force");
                }
            }
            site.objects.apply_selection(selective).await?;
            last = Some(now);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primarys_setting_wins_over_the_flag() {
        assert_eq!(effective(None, Some(5 << 20)), Some(5 << 20));
        assert_eq!(effective(None, None), None);
        assert_eq!(
            effective(Some(Limit::BytesPerSecond(1 << 20)), Some(5 << 20)),
            Some(1 << 20)
        );
        assert_eq!(effective(Some(Limit::Unlimited), Some(5 << 20)), None);
    }
}
