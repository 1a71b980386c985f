//! Which site is the primary: promotion, demotion, repointing and fencing, decided by epochs
//! that only go up.
//!
//! Every step here decides on the site's [`Settings`] and [`Store`] and returns what the
//! runtime must do next ([`Next`]): a step that changes the placement asks for the site to
//! open again in it. A promotion writes the new epoch, the epoch the site leads at and its
//! placement in one durable batch; once open again as the primary the site records the epoch
//! in its settings log. The former primary learns the epoch — from the fence the new primary
//! delivers ([`deliver_fence`], through a [`FenceSender`]), or from any stream, report or
//! forwarded write that carries it — and from then on refuses writes
//! ([`Settings::fenced`]); a fence also makes that durable as a read-only placement. A
//! repointed site follows only a primary whose history extends its own: the follower's
//! checks report anything else as divergence.

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::settings::Settings;
use crate::status::Criterion;
use crate::store::{Placement, Store, StoreError};
use crate::types::{check_plaintext, normalize_url, Classify, ErrorKind, Role};

/// First retry of a fence that could not be delivered, and the longest wait between two.
const FENCE_RETRY_INITIAL: Duration = Duration::from_millis(100);
const FENCE_RETRY_MAX: Duration = Duration::from_secs(1);

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

impl Classify for FailoverError {
    fn kind(&self) -> ErrorKind {
        match self {
            FailoverError::Refused(_) | FailoverError::NotReady { .. } => ErrorKind::Refused,
            FailoverError::Invalid(_) => ErrorKind::Invalid,
            FailoverError::Store(_) => ErrorKind::Internal,
        }
    }
}

fn list(failed: &[Criterion]) -> String {
    failed
        .iter()
        .map(|c| format!("✗ {}: {}", c.name, c.detail))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// What the runtime must do after a failover step.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The placement changed: stop (letting requests in flight finish) and open again in it.
    Reopen,
    /// Nothing changed here.
    Stay,
}

/// Whether this site may be promoted at all, before readiness is asked: not a primary
/// already, not a fenced former primary.
pub fn promotable(settings: &Settings) -> Result<(), FailoverError> {
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
    settings: &Settings,
    store: &Store,
    criteria: &[Criterion],
    force: bool,
) -> Result<(u64, Next), FailoverError> {
    promotable(settings)?;
    let me = settings.site_id().to_string();
    let failed: Vec<Criterion> = criteria.iter().filter(|c| !c.ok).cloned().collect();
    if !failed.is_empty() && !force {
        return Err(FailoverError::NotReady { site: me, failed });
    }
    let epoch = next_epoch(settings.epoch())?;
    let placement = Placement {
        role: Role::Primary,
        primary: None,
        fenced: None,
        fence_target: settings.primary().map(str::to_string),
        replaced_by: None,
    };
    store.promote(epoch, &placement).await?;
    warn!(
        epoch,
        forced = !failed.is_empty(),
        "promoted to primary; opening again as the primary"
    );
    Ok((epoch, Next::Reopen))
}

/// The epoch a promotion leads at. Epochs never go back, so one that would wrap is refused
/// rather than starting again at 0.
pub fn next_epoch(seen: u64) -> Result<u64, FailoverError> {
    seen.checked_add(1).ok_or_else(|| {
        FailoverError::Refused(format!(
            "cannot promote: this site has seen epoch {seen}, the last there is, so no later epoch exists; the deployment must be rebuilt from a backup"
        ))
    })
}

/// Makes this primary a fenced, read-only site. Maintenance mode must be on, so users see
/// why writes fail.
pub async fn demote(
    settings: &Settings,
    store: &Store,
    actor: &str,
) -> Result<Next, FailoverError> {
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
        replaced_by: None,
    };
    store.set_placement(&placement).await?;
    warn!(actor, "demoted; opening again read-only");
    Ok(Next::Reopen)
}

/// How this site may connect to other sites, which a new primary's address must respect.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    /// The site serves TLS, so it connects only over `https://`.
    pub serves_tls: bool,
    /// Plain gRPC to other hosts is allowed.
    pub allow_plaintext: bool,
}

/// Points this secondary, or a fenced former primary, at `primary`; returns its URL.
pub async fn repoint(
    settings: &Settings,
    store: &Store,
    transport: Transport,
    primary: &str,
) -> Result<(String, Next), FailoverError> {
    let url = normalize_url(primary).map_err(FailoverError::Invalid)?;
    check_plaintext(&url, transport.serves_tls, transport.allow_plaintext)
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
        replaced_by: None,
    };
    store.set_placement(&placement).await?;
    warn!(primary = %url, "repointed; opening again to follow the new primary");
    Ok((url, Next::Reopen))
}

/// `by` is the primary at `epoch`: a primary that leads at a lower epoch fences itself —
/// durably, and refusing writes from this moment, before it opens again read-only.
pub async fn fence(
    settings: &Settings,
    store: &Store,
    epoch: u64,
    by: &str,
) -> Result<Next, FailoverError> {
    if settings.role() == Role::Primary && epoch <= settings.primary_epoch() {
        return Err(FailoverError::Refused(format!(
            "site {} leads at epoch {}, not lower than {epoch}",
            settings.site_id(),
            settings.primary_epoch()
        )));
    }
    settings.observe_epoch(epoch).await?;
    if settings.role() != Role::Primary {
        return Ok(Next::Stay);
    }
    let placement = Placement {
        role: Role::Secondary,
        primary: None,
        fenced: Some(format!(
            "site {} was the primary at epoch {}; {by} is the primary at epoch {epoch}: this site is fenced and read-only until repointed at it",
            settings.site_id(),
            settings.primary_epoch()
        )),
        fence_target: None,
        replaced_by: Some(by.to_string()),
    };
    store.set_placement(&placement).await?;
    warn!(
        new_primary = by,
        epoch, "fenced by a newer primary; opening again read-only"
    );
    Ok(Next::Reopen)
}

/// Why a fence was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The former primary answered and refused the fence: trying again will not change that.
    #[error("{0}")]
    Refused(String),
    /// The former primary could not be reached or did not answer: try again later.
    #[error("{0}")]
    Unreachable(String),
}

/// How a new primary tells a former one its epoch (the gRPC client, in production).
pub trait FenceSender: Send + Sync {
    /// Tells the site at `target` that `site_id` is the primary at `epoch`.
    fn send(
        &self,
        target: &str,
        site_id: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Tells the former primary at `target` this site's epoch until it has heard it, then
/// forgets the target. Retries with capped exponential backoff: the former primary may be
/// down for a while. Returns early, leaving the target for the next start, on `shutdown`.
pub async fn deliver_fence(
    sender: &impl FenceSender,
    settings: &Settings,
    store: &Store,
    target: &str,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let epoch = settings.primary_epoch();
    let backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(FENCE_RETRY_INITIAL)
        .with_max_interval(FENCE_RETRY_MAX)
        .with_max_elapsed_time(None)
        .build();
    let attempts = backoff::future::retry(backoff, || async {
        match sender.send(target, settings.site_id(), epoch).await {
            Ok(()) => Ok(()),
            Err(e @ DeliveryError::Refused(_)) => Err(backoff::Error::permanent(e)),
            Err(e) => {
                debug!(%target, error = %e, "cannot fence the former primary yet");
                Err(backoff::Error::transient(e))
            }
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        sent = attempts => match sent {
            Ok(()) => info!(%target, epoch, "the former primary is fenced"),
            Err(error) => warn!(%target, %error, "the former primary did not take the fence"),
        },
    }
    if let Some(mut p) = store.placement()? {
        p.fence_target = None;
        store.set_placement(&p).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fails `failures` times as unreachable, then refuses or takes the fence.
    struct Scripted {
        failures: usize,
        refuse: bool,
        calls: AtomicUsize,
    }

    impl FenceSender for Scripted {
        async fn send(&self, _: &str, _: &str, _: u64) -> Result<(), DeliveryError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err(DeliveryError::Unreachable("connection refused".into()))
            } else if self.refuse {
                Err(DeliveryError::Refused("leads at a higher epoch".into()))
            } else {
                Ok(())
            }
        }
    }

    async fn promoted() -> (tempfile::TempDir, Settings, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let placement = Placement {
            role: Role::Primary,
            primary: None,
            fenced: None,
            fence_target: Some("http://127.0.0.1:1".into()),
            replaced_by: None,
        };
        store.promote(2, &placement).await.unwrap();
        let settings = Settings::open(store.clone(), "s1", Role::Primary, None, None)
            .await
            .unwrap();
        (dir, settings, store)
    }

    fn scripted(failures: usize, refuse: bool) -> Scripted {
        Scripted {
            failures,
            refuse,
            calls: AtomicUsize::new(0),
        }
    }

    fn target(store: &Store) -> Option<String> {
        store.placement().unwrap().and_then(|p| p.fence_target)
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_is_retried_until_heard_then_forgotten() {
        let (_dir, settings, store) = promoted().await;
        let sender = scripted(5, false);
        let stop = CancellationToken::new();
        deliver_fence(&sender, &settings, &store, "http://127.0.0.1:1", &stop)
            .await
            .unwrap();
        assert_eq!(sender.calls.load(Ordering::SeqCst), 6);
        assert_eq!(target(&store), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_fence_is_not_retried() {
        let (_dir, settings, store) = promoted().await;
        let sender = scripted(0, true);
        let stop = CancellationToken::new();
        deliver_fence(&sender, &settings, &store, "http://127.0.0.1:1", &stop)
            .await
            .unwrap();
        assert_eq!(sender.calls.load(Ordering::SeqCst), 1);
        assert_eq!(target(&store), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_site_keeps_the_target_for_its_next_start() {
        let (_dir, settings, store) = promoted().await;
        let sender = scripted(usize::MAX, false);
        let stop = CancellationToken::new();
        let delivery = deliver_fence(&sender, &settings, &store, "http://127.0.0.1:1", &stop);
        let cancel = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        };
        let (delivered, ()) = tokio::join!(delivery, cancel);
        delivered.unwrap();
        assert!(sender.calls.load(Ordering::SeqCst) > 5);
        assert_eq!(target(&store).as_deref(), Some("http://127.0.0.1:1"));
    }

    #[test]
    fn the_next_epoch_never_wraps() {
        assert_eq!(next_epoch(0).unwrap(), 1);
        assert_eq!(next_epoch(u64::MAX - 1).unwrap(), u64::MAX);
        let err = next_epoch(u64::MAX).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert!(err.to_string().contains("no later epoch"), "{err}");
    }

    #[tokio::test]
    async fn a_promotion_past_the_last_epoch_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let settings = Settings::open(
            store.clone(),
            "s1",
            Role::Secondary,
            Some("http://127.0.0.1:7600".into()),
            None,
        )
        .await
        .unwrap();
        settings.observe_epoch(u64::MAX).await.unwrap();
        let err = promote(&settings, &store, &[], true).await.unwrap_err();
        assert!(matches!(err, FailoverError::Refused(_)), "{err}");
        assert_eq!(store.primary_epoch().unwrap(), None);
        assert_eq!(store.highest_epoch().unwrap(), u64::MAX);
    }
}
