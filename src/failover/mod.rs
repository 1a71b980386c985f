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

pub mod promotion;

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::settings::{Settings, SettingsError};
use crate::status::Criterion;
use crate::store::{Placement, Store, StoreError};
use crate::types::{check_plaintext, normalize_url, Classify, ErrorKind, Promotion, Role};

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
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for FailoverError {
    fn kind(&self) -> ErrorKind {
        match self {
            FailoverError::Refused(_) | FailoverError::NotReady { .. } => ErrorKind::Refused,
            FailoverError::Invalid(_) => ErrorKind::Invalid,
            FailoverError::Settings(e) => e.kind(),
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
/// site itself) judged and an admin's `proof` that names this site and exactly the next
/// epoch; returns the new epoch. Not ready refuses unless `force`.
pub async fn promote(
    settings: &Settings,
    store: &Store,
    criteria: &[Criterion],
    force: bool,
    proof: Option<&Promotion>,
) -> Result<(u64, Next), FailoverError> {
    promotable(settings)?;
    let me = settings.site_id().to_string();
    let epoch = next_epoch(settings.epoch())?;
    let proof = check_promotion(settings, proof, epoch)?;
    let failed: Vec<Criterion> = criteria.iter().filter(|c| !c.ok).cloned().collect();
    if !failed.is_empty() && !force {
        return Err(FailoverError::NotReady { site: me, failed });
    }
    let placement = Placement {
        role: Role::Primary,
        primary: None,
        fenced: None,
        fence_target: settings.primary().map(str::to_string),
        replaced_by: None,
    };
    store.promote(epoch, &placement, proof).await?;
    warn!(
        epoch,
        forced = !failed.is_empty(),
        "promoted to primary; opening again as the primary"
    );
    Ok((epoch, Next::Reopen))
}

/// The proof a promotion of this site to `epoch` needs: an admin's, for this site, for
/// exactly that epoch.
pub fn check_promotion<'p>(
    settings: &Settings,
    proof: Option<&'p Promotion>,
    epoch: u64,
) -> Result<&'p Promotion, FailoverError> {
    let me = settings.site_id();
    let Some(proof) = proof else {
        return Err(FailoverError::Refused(format!(
            "a promotion needs an admin's proof (geo-agent promote --promotion-key-file FILE): site {me} would lead at epoch {epoch}"
        )));
    };
    settings.check_proof(proof).map_err(|e| {
        warn!(error = %e, "refused a promotion whose proof is not an admin's");
        FailoverError::Refused(format!("the promotion proof is refused: {e}"))
    })?;
    if proof.site_id != me {
        return Err(FailoverError::Refused(format!(
            "the promotion proof names site {}, but this is site {me}",
            proof.site_id
        )));
    }
    if proof.epoch != epoch {
        return Err(FailoverError::Refused(format!(
            "the promotion proof is for epoch {}, but site {me} would lead at epoch {epoch}: the site's epoch moved; run promote again",
            proof.epoch
        )));
    }
    Ok(proof)
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

/// `by` is the primary at `epoch`, as the admin's `proof` of its promotion shows: a primary
/// that leads at a lower epoch fences itself — durably, and refusing writes from this
/// moment, before it opens again read-only. Without a proof that names `by` and `epoch`,
/// nothing is stored.
pub async fn fence(
    settings: &Settings,
    store: &Store,
    epoch: u64,
    by: &str,
    proof: Option<&Promotion>,
) -> Result<Next, FailoverError> {
    if settings.role() == Role::Primary && epoch <= settings.primary_epoch() {
        return Err(FailoverError::Refused(format!(
            "site {} leads at epoch {}, not lower than {epoch}",
            settings.site_id(),
            settings.primary_epoch()
        )));
    }
    if let Some(p) = proof.filter(|p| p.site_id != by || p.epoch != epoch) {
        let reason = format!(
            "the fence's proof is of site {}'s promotion to epoch {}, not of {by}'s to {epoch}",
            p.site_id, p.epoch
        );
        warn!(epoch, by, %reason, "refused a fence");
        return Err(SettingsError::from(crate::settings::Unproven {
            epoch,
            from: by.to_string(),
            reason,
        })
        .into());
    }
    settings.observe_epoch(epoch, proof, by).await?;
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

/// What a site knows of its fence (`geo-agent fence show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceState {
    /// Why the site refuses writes as a former primary, when it does.
    pub fenced: Option<String>,
    /// The highest epoch the site has seen.
    pub epoch: u64,
    /// The epoch it leads (or led) at; 0 if it never was a primary.
    pub lead_epoch: u64,
    /// The site that replaced it, when a fence named one.
    pub replaced_by: Option<String>,
    /// The admin's proof of the highest epoch seen, and whether it checks out.
    pub proof: Option<Promotion>,
    pub proof_check: Result<(), String>,
}

pub fn fence_state(settings: &Settings, store: &Store) -> Result<FenceState, FailoverError> {
    let proof = settings.proof();
    let proof_check = match &proof {
        Some(p) => settings.check_proof(p),
        None => Err("no proof is held".into()),
    };
    Ok(FenceState {
        fenced: settings.fenced(),
        epoch: settings.epoch(),
        lead_epoch: settings.primary_epoch(),
        replaced_by: store.placement()?.and_then(|p| p.replaced_by),
        proof,
        proof_check,
    })
}

/// Clears a fence no admin's proof backs — an epoch some site claimed without proof, as
/// older versions stored it: the highest epoch seen goes back to the highest this site can
/// justify, and a fenced former primary becomes the primary again. Refused when a valid
/// proof of a higher epoch fences it: then the answer is to repoint it.
pub async fn clear_fence(
    settings: &Settings,
    store: &Store,
    actor: &str,
) -> Result<Next, FailoverError> {
    let me = settings.site_id();
    let lead = settings.primary_epoch();
    let proven = settings
        .proof()
        .filter(|p| settings.check_proof(p).is_ok())
        .map_or(0, |p| p.epoch);
    if lead > 0 && proven > lead {
        return Err(FailoverError::Refused(format!(
            "site {me} led at epoch {lead}, and an admin's signed promotion proves epoch {proven}: the fence stands; repoint this site at the current primary (geo-agent repoint)"
        )));
    }
    let floor = lead
        .max(proven)
        .max(settings.log().head().epoch)
        .max(settings.epoch().min(crate::types::UNPROVEN_EPOCHS));
    let placement = store.placement()?;
    let fenced_by_epoch = placement
        .as_ref()
        .is_some_and(|p| p.fenced.is_some() && p.replaced_by.is_some());
    if !fenced_by_epoch && settings.epoch() <= floor {
        return Err(FailoverError::Refused(format!(
            "site {me} holds no unproven epoch and no fence to clear{}",
            if settings.fenced().is_some() {
                " (it was demoted by an admin: repoint it at the current primary)"
            } else {
                ""
            }
        )));
    }
    let placement = match placement {
        Some(_) if fenced_by_epoch && lead > 0 => Placement {
            role: Role::Primary,
            primary: None,
            fenced: None,
            fence_target: None,
            replaced_by: None,
        },
        Some(p) => p,
        None => Placement {
            role: settings.role(),
            primary: settings.primary().map(str::to_string),
            fenced: None,
            fence_target: None,
            replaced_by: None,
        },
    };
    store.clear_fence(floor, &placement).await?;
    warn!(
        actor,
        from = settings.epoch(),
        to = floor,
        role = %placement.role,
        "an admin cleared an unproven fence; opening again"
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
    /// Tells the site at `target` that `site_id` is the primary at `epoch`, as `proof` (the
    /// admin's proof of its promotion) shows.
    fn send(
        &self,
        target: &str,
        site_id: &str,
        epoch: u64,
        proof: Option<Promotion>,
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
    let proof = store.lead_proof()?;
    let backoff = ExponentialBackoffBuilder::new()
        .with_initial_interval(FENCE_RETRY_INITIAL)
        .with_max_interval(FENCE_RETRY_MAX)
        .with_max_elapsed_time(None)
        .build();
    let attempts = backoff::future::retry(backoff, || async {
        match sender
            .send(target, settings.site_id(), epoch, proof.clone())
            .await
        {
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
        async fn send(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: Option<Promotion>,
        ) -> Result<(), DeliveryError> {
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
        let proof = Promotion {
            site_id: "s1".into(),
            epoch: 2,
            signature: vec![0; 64],
        };
        store.promote(2, &placement, &proof).await.unwrap();
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
        store.raise_epoch(u64::MAX).await.unwrap();
        let settings = Settings::open(
            store.clone(),
            "s1",
            Role::Secondary,
            Some("http://127.0.0.1:7600".into()),
            None,
        )
        .await
        .unwrap();
        let err = promote(&settings, &store, &[], true, None)
            .await
            .unwrap_err();
        assert!(matches!(err, FailoverError::Refused(_)), "{err}");
        assert_eq!(store.primary_epoch().unwrap(), None);
        assert_eq!(store.highest_epoch().unwrap(), u64::MAX);
    }

    #[tokio::test]
    async fn an_unproven_fence_is_refused_and_stores_nothing() {
        let (_dir, settings, store) = promoted().await;
        for proof in [
            None,
            Some(Promotion {
                site_id: "evil".into(),
                epoch: u64::MAX,
                signature: vec![0; 64],
            }),
        ] {
            let err = fence(&settings, &store, u64::MAX, "evil", proof.as_ref())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Refused);
            assert!(err.to_string().contains("is not proven"), "{err}");
        }
        assert_eq!(store.highest_epoch().unwrap(), 2);
        assert_eq!(settings.epoch(), 2);
        assert!(settings.fenced().is_none());
    }

    #[tokio::test]
    async fn an_unproven_fence_left_by_an_older_version_is_cleared_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        drop(Settings::open(store.clone(), "p", Role::Primary, None, None).await);
        // What an older version stored on a bogus claim: the epoch and a fence naming it.
        store.raise_epoch(u64::MAX).await.unwrap();
        let fenced = Placement {
            role: Role::Secondary,
            primary: None,
            fenced: Some("fenced by epoch u64::MAX".into()),
            fence_target: None,
            replaced_by: Some("evil".into()),
        };
        store.set_placement(&fenced).await.unwrap();
        let settings = Settings::open(store.clone(), "p", Role::Secondary, None, fenced.fenced)
            .await
            .unwrap();
        assert_eq!(
            clear_fence(&settings, &store, "admin").await.unwrap(),
            Next::Reopen
        );
        assert_eq!(store.highest_epoch().unwrap(), 1);
        let placement = store.placement().unwrap().unwrap();
        assert_eq!((placement.role, placement.fenced), (Role::Primary, None));
        // The site opens again, as after any placement change.
        drop(settings);
        let settings = Settings::open(store.clone(), "p", Role::Primary, None, None)
            .await
            .unwrap();
        assert!(settings.fenced().is_none());
        let err = clear_fence(&settings, &store, "admin").await.unwrap_err();
        assert!(
            err.to_string().contains("nothing") || err.to_string().contains("no unproven"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_promotion_needs_a_proof_for_this_site_and_the_next_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = promotion::PrivateKey::generate().unwrap().0;
        let settings = Settings::open(
            store.clone(),
            "s1",
            Role::Secondary,
            Some("http://127.0.0.1:7600".into()),
            None,
        )
        .await
        .unwrap()
        .verifying(std::sync::Arc::new(key.public_key()));
        let other = promotion::PrivateKey::generate().unwrap().0;
        for (proof, why) in [
            (None, "needs an admin's proof"),
            (Some(other.sign("s1", 1)), "is refused"),
            (Some(key.sign("s2", 1)), "names site s2"),
            (Some(key.sign("s1", 2)), "run promote again"),
        ] {
            let err = promote(&settings, &store, &[], true, proof.as_ref())
                .await
                .unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(store.primary_epoch().unwrap(), None);
        }
        let proof = key.sign("s1", 1);
        let (epoch, next) = promote(&settings, &store, &[], true, Some(&proof))
            .await
            .unwrap();
        assert_eq!((epoch, next), (1, Next::Reopen));
        assert_eq!(store.lead_proof().unwrap(), Some(proof.clone()));
        assert_eq!(store.proof().unwrap(), Some(proof));
    }
}
