//! Which site is the primary: promotion, demotion, repointing and fencing, decided by epochs
//! that only go up.
//!
//! A promotion writes the new epoch, the epoch the site leads at and its placement in one
//! durable batch, then the site opens again as the primary (see `site::run`) and records the
//! epoch in its settings log. The former primary learns the epoch — from the fence the new
//! primary delivers, or from any stream, report or forwarded write that carries it — and from
//! then on refuses writes ([`crate::settings::Settings::fenced`]); a fence also makes that
//! durable as a read-only placement. A repointed site follows only a primary whose history
//! extends its own: the follower's checks report anything else as divergence.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::types::{check_plaintext, normalize_url, Role};
use crate::site::Site;
use crate::status::Criterion;
use crate::store::{Placement, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// Not allowed in this site's state (already primary, fenced, maintenance off, …).
    #[error("{0}")]
    Refused(String),
    /// The readiness check failed and the promotion was not forced.
    #[error("site {site} is not ready to be promoted:\n  {}\nwait (geo-agent failover check --wait), or promote with --force and lose what the primary has that this site lacks", list(.failed))]
    NotReady {
        site: String,
        failed: Vec<Criterion>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(failed: &[Criterion]) -> String {
    failed
        .iter()
        .map(|c| format!("✗ {}: {}", c.name, c.detail))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Whether this site may be promoted at all, before readiness is asked: not a primary
/// already, not a fenced former primary.
pub fn promotable(site: &Site) -> Result<(), FailoverError> {
    let settings = &site.settings;
    if let Some(reason) = settings.fenced() {
        return Err(FailoverError::Refused(format!(
            "{reason}; repoint it and let it catch up before promoting it"
        )));
    }
    if settings.role() == Role::Primary {
        return Err(FailoverError::Refused(format!(
            "site {} is already the primary (epoch {})",
            settings.site_id(),
            settings.primary_epoch()
        )));
    }
    Ok(())
}

/// Promotes this secondary given the readiness criteria the primary (or, failing that, the
/// site itself) judged; returns the new epoch. Not ready refuses unless `force`.
pub async fn promote(
    site: &Site,
    criteria: &[Criterion],
    force: bool,
) -> Result<u64, FailoverError> {
    promotable(site)?;
    let settings = &site.settings;
    let me = settings.site_id().to_string();
    let failed: Vec<Criterion> = criteria.iter().filter(|c| !c.ok).cloned().collect();
    if !failed.is_empty() && !force {
        return Err(FailoverError::NotReady { site: me, failed });
    }
    let epoch = settings.epoch() + 1;
    let placement = Placement {
        role: Role::Primary,
        primary: None,
        fenced: None,
        fence_target: settings.primary().map(str::to_string),
    };
    site.store.promote(epoch, &placement).await?;
    warn!(
        epoch,
        forced = !failed.is_empty(),
        "promoted to primary; opening again as the primary"
    );
    site.reopen();
    Ok(epoch)
}

/// Makes this primary a fenced, read-only site. Maintenance mode must be on, so users see
/// why writes fail.
pub async fn demote(site: &Site, actor: &str) -> Result<(), FailoverError> {
    let settings = &site.settings;
    if settings.role() != Role::Primary {
        return Err(FailoverError::Refused(format!(
            "site {} is not a primary",
            settings.site_id()
        )));
    }
    if !settings.mode().maintenance.enabled {
        return Err(FailoverError::Refused(
            "turn maintenance mode on first: a demoted site refuses writes, and users should see why".into(),
        ));
    }
    let placement = Placement {
        role: Role::Secondary,
        primary: None,
        fenced: Some(format!(
            "site {} was demoted by {actor} at epoch {}: it is read-only until repointed at the current primary",
            settings.site_id(),
            settings.primary_epoch()
        )),
        fence_target: None,
    };
    site.store.set_placement(&placement).await?;
    warn!(actor, "demoted; opening again read-only");
    site.reopen();
    Ok(())
}

/// Points this secondary, or a fenced former primary, at `primary`.
pub async fn repoint(site: &Site, primary: &str) -> Result<String, FailoverError> {
    let settings = &site.settings;
    let url = normalize_url(primary).map_err(FailoverError::Invalid)?;
    check_plaintext(&url, site.server_tls.is_some(), site.allow_plaintext)
        .map_err(FailoverError::Invalid)?;
    if settings.role() == Role::Primary && settings.fenced().is_none() {
        return Err(FailoverError::Refused(format!(
            "site {} is the primary; demote it first",
            settings.site_id()
        )));
    }
    let placement = Placement {
        role: Role::Secondary,
        primary: Some(url.clone()),
        fenced: None,
        fence_target: None,
    };
    site.store.set_placement(&placement).await?;
    warn!(primary = %url, "repointed; opening again to follow the new primary");
    site.reopen();
    Ok(url)
}

/// `by` is the primary at `epoch`: a primary that leads at a lower epoch fences itself —
/// durably, and refusing writes from this moment, before it opens again read-only.
pub async fn fence(site: &Site, epoch: u64, by: &str) -> Result<(), FailoverError> {
    let settings = &site.settings;
    if settings.role() == Role::Primary && epoch <= settings.primary_epoch() {
        return Err(FailoverError::Refused(format!(
            "site {} leads at epoch {}, not lower than {epoch}",
            settings.site_id(),
            settings.primary_epoch()
        )));
    }
    settings.observe_epoch(epoch).await?;
    if settings.role() == Role::Primary {
        let placement = Placement {
            role: Role::Secondary,
            primary: None,
            fenced: Some(format!(
                "site {} was the primary at epoch {}; {by} is the primary at epoch {epoch}: this site is fenced and read-only until repointed at it",
                settings.site_id(),
                settings.primary_epoch()
            )),
            fence_target: None,
        };
        site.store.set_placement(&placement).await?;
        warn!(
            new_primary = by,
            epoch, "fenced by a newer primary; opening again read-only"
        );
        site.reopen();
    }
    Ok(())
}

/// Tells the former primary at `target` this site's epoch until it has heard it, then
/// forgets the target. Retries with backoff: the former primary may be down for a while.
pub async fn deliver_fence(
    site: Arc<Site>,
    target: String,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    let epoch = site.settings.primary_epoch();
    let mut delay = Duration::from_millis(100);
    loop {
        let sent = crate::server::client::fence(
            &target,
            &site.client_tls,
            &site.site_token,
            site.settings.site_id(),
            epoch,
        )
        .await;
        match sent {
            Ok(()) => {
                info!(%target, epoch, "the former primary is fenced");
                break;
            }
            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                warn!(%target, error = %e.message(), "the former primary did not take the fence");
                break;
            }
            Err(e) => debug!(%target, error = %e.message(), "cannot fence the former primary yet"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    if let Some(mut p) = site.store.placement()? {
        p.fence_target = None;
        site.store.set_placement(&p).await?;
    }
    Ok(())
}
