//! A log follower: resume from the applied index, apply in order (in batches while catching
//! up), reconnect with capped exponential backoff and jitter, stop for good on divergence.
//! The same follower keeps the settings log and the event log in step with the primary's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoffBuilder;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::log::{now_ms, Entry, Head, LogError, Replica, ReplicaError};
use crate::types::Promotion;

/// First retry after a lost stream.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between retries: a healed link propagates the mode within about this long.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Most entries applied in one transaction while catching up.
pub const APPLY_BATCH: usize = 512;

/// One message from the primary's stream.
#[derive(Debug, Clone)]
pub enum Received {
    Entry(Entry),
    Heartbeat {
        head: Head,
        primary_time_ms: i64,
        /// The admin's proof of the primary's epoch (none while it needs none).
        proof: Option<Promotion>,
    },
    /// A message that arrived but cannot be an entry (malformed, or larger than a stream
    /// message may be). The primary would send it again on every connection, so following
    /// stops.
    Unreadable(String),
}

/// Why a stream could not be opened or broke off.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Why a stream could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// Not now (unreachable, refused for now): try again after a backoff.
    #[error(transparent)]
    Failed(#[from] SourceError),
    /// The site followed was replaced as the primary and serves nothing: only repointing
    /// this site helps. The message says at which epoch and by whom, when it knows.
    #[error("{0}")]
    Fenced(String),
}

/// Where the follower reads the primary's log from (the gRPC client, in production).
pub trait LogSource: Send + Sync + 'static {
    type Stream: Stream<Item = Result<Received, SourceError>> + Send + Unpin;

    /// Opens a stream of entries from `from_index` on, telling the primary the highest epoch
    /// this site has seen and presenting the admin's proof of it.
    fn open(
        &self,
        from_index: u64,
        epoch: u64,
        proof: Option<Promotion>,
    ) -> impl Future<Output = Result<Self::Stream, OpenError>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowerState {
    Connecting,
    Following,
    /// Stopped: the primary's history does not extend ours. Needs an operator.
    Diverged,
    /// Stopped: the primary sent an entry this site cannot take (too large, malformed, or
    /// breaking the rules the primary itself should have applied). Needs an operator.
    Refused,
    /// The site followed was replaced as the primary (it is fenced) and serves nothing;
    /// this site keeps asking, but needs to be repointed at the current primary.
    PrimaryFenced,
}

/// What the follower is doing, for `GetMode` and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    pub state: FollowerState,
    pub primary: String,
    pub primary_head: u64,
    pub last_contact_ms: Option<i64>,
    pub error: Option<String>,
    /// Streams lost or refused since the follower started.
    pub errors: u64,
}

/// A failure that makes following impossible: the site itself is broken.
#[derive(Debug, thiserror::Error)]
#[error("{log} log follower stopped: {detail}")]
pub struct FollowerError {
    pub log: String,
    pub detail: String,
}

/// How one stream ended.
enum Ended {
    /// Lost or refused; try again after a backoff.
    Retry(String),
    /// The histories differ; never apply again without an operator.
    Diverged(String),
    /// The primary sent an entry no log may hold; it would send it again on every retry.
    Refused(String),
    Shutdown,
    /// The site followed is fenced: nothing to apply until this site is repointed.
    Fenced(String),
}

pub struct Follower<S: LogSource, R: Replica> {
    replica: Arc<R>,
    source: S,
    status: watch::Sender<FollowerStatus>,
    /// No message for this long means the stream is dead (half-open TCP, stalled primary).
    idle_timeout: Duration,
}

impl<S: LogSource, R: Replica> Follower<S, R> {
    pub fn new(
        replica: Arc<R>,
        source: S,
        primary: String,
        idle_timeout: Duration,
    ) -> (Follower<S, R>, watch::Receiver<FollowerStatus>) {
        let (status, rx) = watch::channel(FollowerStatus {
            state: FollowerState::Connecting,
            primary,
            primary_head: 0,
            last_contact_ms: None,
            error: None,
            errors: 0,
        });
        (
            Follower {
                replica,
                source,
                status,
                idle_timeout,
            },
            rx,
        )
    }

    /// Follows until shutdown or divergence. Errors only when this site's storage fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), FollowerError> {
        let log = self.replica.log_name().to_string();
        let mut backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(BACKOFF_INITIAL)
            .with_max_interval(BACKOFF_MAX)
            .with_randomization_factor(0.5)
            .with_multiplier(2.0)
            .with_max_elapsed_time(None)
            .build();
        loop {
            match self.follow_once(&shutdown, &mut backoff).await? {
                Ended::Shutdown => return Ok(()),
                Ended::Diverged(reason) => {
                    error!(%log, primary = %self.status.borrow().primary, %reason, "log diverged from the primary's; stopped applying");
                    self.status.send_modify(|s| {
                        s.state = FollowerState::Diverged;
                        s.errors += 1;
                        s.error = Some(reason);
                    });
                    shutdown.cancelled().await;
                    return Ok(());
                }
                Ended::Refused(reason) => {
                    let reason =
                        format!("stopped: the primary sent an entry this site refuses: {reason}");
                    error!(%log, primary = %self.status.borrow().primary, %reason, "stopped following the primary's log");
                    self.status.send_modify(|s| {
                        s.state = FollowerState::Refused;
                        s.errors += 1;
                        s.error = Some(reason);
                    });
                    shutdown.cancelled().await;
                    return Ok(());
                }
                Ended::Fenced(reason) => {
                    // Nothing from a fenced site is applied; ask again slowly, in case it
                    // is not fenced any more (an admin cleared an unproven fence).
                    warn!(%log, %reason, "the site followed is fenced; repoint this site at the current primary");
                    self.status.send_modify(|s| {
                        s.state = FollowerState::PrimaryFenced;
                        s.errors += 1;
                        s.error = Some(reason);
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(BACKOFF_MAX) => {}
                    }
                }
                Ended::Retry(reason) => {
                    let delay = backoff.next_backoff().unwrap_or(BACKOFF_MAX);
                    warn!(%log, %reason, retry_in_ms = delay.as_millis() as u64, "log stream lost");
                    self.status.send_modify(|s| {
                        s.state = FollowerState::Connecting;
                        s.errors += 1;
                        s.error = Some(reason);
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn follow_once(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut backoff::ExponentialBackoff,
    ) -> Result<Ended, FollowerError> {
        let from = self.replica.head().index + 1;
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
            r = self.source.open(from, self.replica.epoch(), self.replica.proof()) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(OpenError::Failed(e)) => return Ok(Ended::Retry(e.0)),
            Err(OpenError::Fenced(why)) => return Ok(Ended::Fenced(why)),
        };
        info!(
            log = self.replica.log_name(),
            from, "following the primary's log"
        );
        // A message read while gathering a batch that is not an entry, handled next.
        let mut held: Option<Option<Result<Received, SourceError>>> = None;
        loop {
            let next = match held.take() {
                Some(n) => Ok(n),
                None => tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
                    n = tokio::time::timeout(self.idle_timeout, stream.next()) => n,
                },
            };
            let message = match next {
                Err(_) => {
                    return Ok(Ended::Retry(format!(
                        "nothing from the primary for {:?}",
                        self.idle_timeout
                    )))
                }
                Ok(None) => return Ok(Ended::Retry("the primary closed the stream".into())),
                Ok(Some(Err(e))) => return Ok(Ended::Retry(e.0)),
                Ok(Some(Ok(m))) => m,
            };
            backoff.reset();
            match message {
                Received::Entry(entry) => {
                    // Take whatever else has already arrived, to apply it in one commit.
                    let mut batch = vec![entry];
                    while batch.len() < APPLY_BATCH {
                        match ready(&mut stream).await {
                            None => break,
                            Some(Some(Ok(Received::Entry(e)))) => batch.push(e),
                            Some(other) => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    let last = batch.last().map_or(0, |e| e.index);
                    match self.replica.apply(batch).await {
                        Ok(()) => {
                            // Bind first: a `borrow()` guard inside the call would still be
                            // held when `contact` takes the write lock.
                            let known = self.status.borrow().primary_head;
                            self.contact(last.max(known));
                        }
                        Err(ReplicaError::Refused(e)) if e.is_divergence() => {
                            return Ok(Ended::Diverged(e.to_string()))
                        }
                        Err(ReplicaError::Refused(e)) if e.is_inadmissible() => {
                            return Ok(Ended::Refused(e.to_string()))
                        }
                        Err(ReplicaError::Unproven(e)) => {
                            return Ok(Ended::Retry(e));
                        }
                        // A full disk is a state the site waits out: nothing was stored,
                        // so the same entries are asked for again after the backoff.
                        Err(ReplicaError::DiskFull(e)) => return Ok(Ended::Retry(e)),
                        Err(ReplicaError::Refused(
                            e @ (LogError::Gap { .. }
                            | LogError::StaleEpoch { .. }
                            | LogError::Apply { .. }),
                        )) => {
                            warn!(error = %e, "refused entries from the primary");
                            return Ok(Ended::Retry(e.to_string()));
                        }
                        Err(e) => {
                            return Err(FollowerError {
                                log: self.replica.log_name().to_string(),
                                detail: e.to_string(),
                            })
                        }
                    }
                }
                Received::Unreadable(reason) => return Ok(Ended::Refused(reason)),
                Received::Heartbeat { head, proof, .. } => {
                    if let Some(reason) = self.check_heartbeat(head) {
                        return Ok(match reason {
                            HeartbeatVerdict::Diverged(r) => Ended::Diverged(r),
                            HeartbeatVerdict::Refused(r) => Ended::Retry(r),
                        });
                    }
                    match self.replica.observe_epoch(head.epoch, proof).await {
                        Ok(()) => {}
                        // Logged where it was refused; nothing was stored.
                        Err(ReplicaError::Unproven(e) | ReplicaError::DiskFull(e)) => {
                            return Ok(Ended::Retry(e))
                        }
                        Err(e) => {
                            return Err(FollowerError {
                                log: self.replica.log_name().to_string(),
                                detail: e.to_string(),
                            })
                        }
                    }
                    self.contact(head.index);
                }
            }
        }
    }

    /// A heartbeat also proves things about history: the primary's head can never be
    /// behind ours, and at the same index it must be the same entry.
    fn check_heartbeat(&self, primary: Head) -> Option<HeartbeatVerdict> {
        let ours = self.replica.head();
        let seen = self.replica.epoch();
        let log = self.replica.log_name();
        if primary.index > 0 && primary.epoch < seen {
            return Some(HeartbeatVerdict::Refused(format!(
                "the primary is at epoch {}, lower than epoch {seen} seen here: it is not the current primary",
                primary.epoch
            )));
        }
        if primary.index < ours.index {
            return Some(HeartbeatVerdict::Diverged(format!(
                "the primary's {log} log ends at {} but this site has applied up to {}",
                primary.index, ours.index
            )));
        }
        if primary.index == ours.index && primary.hash != ours.hash {
            return Some(HeartbeatVerdict::Diverged(format!(
                "{log} log entry {} differs between the primary and this site",
                ours.index
            )));
        }
        None
    }

    fn contact(&self, primary_head: u64) {
        self.status.send_modify(|s| {
            s.state = FollowerState::Following;
            s.primary_head = primary_head;
            s.last_contact_ms = Some(now_ms());
            s.error = None;
        });
    }
}

/// The stream's next item if it has already arrived: `None` when it would have to wait.
async fn ready<St: Stream + Unpin>(stream: &mut St) -> Option<Option<St::Item>> {
    std::future::poll_fn(|cx| match Pin::new(&mut *stream).poll_next(cx) {
        Poll::Ready(item) => Poll::Ready(Some(item)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

enum HeartbeatVerdict {
    Diverged(String),
    Refused(String),
}

#[cfg(test)]
mod tests {
    //! The follower against an in-memory source that offers bad entries.
    use super::*;
    use crate::log::{Entry, GENESIS};
    use crate::settings::{Change, Settings};
    use crate::store::Store;
    use crate::types::Role;
    use std::sync::Mutex;

    /// Serves a fixed list of messages per connection, then ends the stream.
    struct Script(Mutex<Vec<Vec<Received>>>);

    impl LogSource for Script {
        type Stream = tokio_stream::Iter<std::vec::IntoIter<Result<Received, SourceError>>>;
        async fn open(
            &self,
            _from: u64,
            _epoch: u64,
            _proof: Option<Promotion>,
        ) -> Result<Self::Stream, OpenError> {
            let mut scripts = self.0.lock().unwrap();
            if scripts.is_empty() {
                return Err(SourceError("no more connections".into()).into());
            }
            let msgs: Vec<_> = scripts.remove(0).into_iter().map(Ok).collect();
            Ok(tokio_stream::iter(msgs))
        }
    }

    fn entry(prev: &Entry, epoch: u64, enabled: bool) -> Entry {
        let payload = serde_json::to_vec(&Change::maintenance(enabled, None)).unwrap();
        Entry::new(&prev.hash, prev.index + 1, epoch, 0, "a".into(), payload)
    }

    fn first(epoch: u64) -> Entry {
        let payload = serde_json::to_vec(&Change::maintenance(true, None)).unwrap();
        Entry::new(&GENESIS, 1, epoch, 0, "a".into(), payload)
    }

    async fn run(script: Vec<Vec<Received>>) -> (tempfile::TempDir, Arc<Settings>, FollowerStatus) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let settings = Arc::new(
            Settings::open(store, "s1", Role::Secondary, Some("p".into()), None)
                .await
                .unwrap()
                .verifying(Arc::new(Trust)),
        );
        let (f, mut rx) = Follower::new(
            Arc::clone(&settings),
            Script(Mutex::new(script)),
            "p".into(),
            Duration::from_secs(5),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(f.run(shutdown.clone()));
        // Wait for the script to be used up: the follower then reports the last error.
        let status = rx
            .wait_for(|s| {
                matches!(s.state, FollowerState::Diverged | FollowerState::Refused)
                    || s.error.as_deref() == Some("no more connections")
            })
            .await
            .unwrap()
            .clone();
        let before = settings.log().head();
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(settings.log().head(), before);
        (dir, settings, status)
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_hash_chain_stops_the_follower() {
        let one = first(1);
        let mut two = entry(&one, 1, false);
        two.hash[0] ^= 1;
        let (_d, s, status) = run(vec![vec![Received::Entry(one), Received::Entry(two)]]).await;
        assert_eq!(status.state, FollowerState::Diverged);
        assert!(status.error.unwrap().contains("hash chain"));
        assert_eq!(s.log().head().index, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_is_refused_and_the_follower_retries() {
        let one = first(1);
        let two = entry(&one, 1, false);
        let three = entry(&two, 1, true);
        let (_d, s, _) = run(vec![
            vec![Received::Entry(one.clone()), Received::Entry(three)],
            vec![Received::Entry(two)],
        ])
        .await;
        // The gap was refused; the second connection resumed at 2.
        assert_eq!(s.log().head().index, 2);
        assert!(!s.mode().maintenance.enabled);
    }

    /// Takes the signature "admin" as an admin's.
    struct Trust;

    impl crate::settings::ProofCheck for Trust {
        fn check(&self, proof: &Promotion) -> Result<(), String> {
            (proof.signature == b"admin")
                .then_some(())
                .ok_or_else(|| "forged".to_string())
        }
    }

    fn heartbeat(epoch: u64, signature: Option<&[u8]>) -> Received {
        Received::Heartbeat {
            head: Head {
                index: 0,
                hash: GENESIS,
                epoch,
            },
            primary_time_ms: 0,
            proof: signature.map(|s| Promotion {
                site_id: "p".into(),
                epoch,
                signature: s.to_vec(),
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_epoch_is_refused() {
        let one = first(2);
        let two = entry(&one, 1, false);
        let (_d, s, status) = run(vec![
            vec![heartbeat(2, Some(b"admin")), Received::Entry(one)],
            vec![Received::Entry(two)],
        ])
        .await;
        assert_eq!(s.log().head().index, 1);
        assert_eq!(s.epoch(), 2);
        assert_ne!(status.state, FollowerState::Diverged);
    }

    /// An entry the primary should never have written stops the follower with the reason,
    /// instead of being offered again on every reconnection.
    #[tokio::test(start_paused = true)]
    async fn an_inadmissible_entry_stops_the_follower() {
        let one = first(1);
        let huge = Entry::new(
            &one.hash,
            2,
            1,
            0,
            "a".repeat(crate::log::MAX_ENTRY_BYTES),
            b"{}".to_vec(),
        );
        let bad_key = Entry::new(
            &one.hash,
            2,
            1,
            0,
            "a".into(),
            br#"{"set":{"no spaces":1}}"#.to_vec(),
        );
        let unreadable = Entry::new(&one.hash, 2, 1, 0, "a".into(), b"not json".to_vec());
        for (bad, why) in [
            (huge, "the limit is"),
            (bad_key, "contains ' '"),
            (unreadable, "not a settings change"),
        ] {
            let (_d, s, status) = run(vec![
                vec![Received::Entry(one.clone()), Received::Entry(bad.clone())],
                vec![Received::Entry(bad)],
            ])
            .await;
            assert_eq!(status.state, FollowerState::Refused, "{why}");
            let error = status.error.unwrap();
            assert!(error.contains(why), "{error}");
            assert_eq!(status.errors, 1, "it must not have reconnected");
            assert_eq!(s.log().head().index, 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_message_stops_the_follower() {
        let (_d, _s, status) = run(vec![vec![
            Received::Entry(first(1)),
            Received::Unreadable("decoded message length too large".into()),
        ]])
        .await;
        assert_eq!(status.state, FollowerState::Refused);
        assert!(status.error.unwrap().contains("too large"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unproven_epoch_is_neither_stored_nor_applied() {
        let (_d, s, status) = run(vec![
            vec![heartbeat(u64::MAX, None)],
            vec![heartbeat(u64::MAX, Some(b"forged"))],
            vec![Received::Entry(first(7))],
        ])
        .await;
        assert_eq!(s.epoch(), 0);
        assert_eq!(s.proof(), None);
        assert_eq!(s.log().head().index, 0);
        assert_eq!(status.state, FollowerState::Connecting);
        assert_eq!(
            status.errors, 4,
            "each refusal is retried, then the script ends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_proven_epoch_is_kept_with_its_proof() {
        let (_d, s, _) = run(vec![vec![
            heartbeat(3, Some(b"admin")),
            Received::Entry(first(3)),
        ]])
        .await;
        assert_eq!(s.epoch(), 3);
        assert_eq!(s.proof().unwrap().epoch, 3);
        assert_eq!(s.log().head().index, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_primary_behind_us_is_divergence() {
        let one = first(1);
        let head = Head {
            index: 0,
            hash: GENESIS,
            epoch: 1,
        };
        let (_d, _s, status) = run(vec![vec![
            Received::Entry(one),
            Received::Heartbeat {
                head,
                primary_time_ms: 0,
                proof: None,
            },
        ]])
        .await;
        assert_eq!(status.state, FollowerState::Diverged);
        assert!(status.error.unwrap().contains("ends at 0"));
    }
}
