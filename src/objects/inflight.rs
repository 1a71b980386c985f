//! Writes in flight, as live guards: a write is listed exactly while its [`WriteGuard`]
//! exists, so "drained" is read off what is really running and cannot drift the way a
//! counter can (SPEC §4).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::log::now_ms;

/// One write that is running.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Write {
    pub id: u64,
    /// e.g. `push group/project.git`.
    pub what: String,
    /// Who asked: a peer address, or the secondary that forwarded it.
    pub from: String,
    pub since_ms: i64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Each write, and its abort token if it can be aborted.
    writes: BTreeMap<u64, (Write, Option<CancellationToken>)>,
}

/// What [`InFlight::abort`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Abort {
    /// The write was told to stop; it stays listed until it has.
    Aborted(Write),
    /// The write finishes on its own (a delete) and cannot be aborted.
    Unabortable(Write),
    /// No such write is in flight.
    NotFound,
}

/// The writes in flight at this site.
#[derive(Clone)]
pub struct InFlight {
    inner: Arc<Mutex<Inner>>,
    /// How many writes are in flight, for waiting on a drain.
    count: Arc<watch::Sender<usize>>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            inner: Arc::default(),
            count: Arc::new(watch::channel(0).0),
        }
    }
}

impl InFlight {
    /// Registers a write that finishes on its own (a delete); it is in flight until the
    /// guard is dropped.
    pub fn begin(&self, what: String, from: String) -> WriteGuard {
        self.register(what, from, false)
    }

    /// Registers a write an admin may abort (a push, which waits on its client): the
    /// writer must stop when [`WriteGuard::aborted`] resolves.
    pub fn begin_abortable(&self, what: String, from: String) -> WriteGuard {
        self.register(what, from, true)
    }

    fn register(&self, what: String, from: String, abortable: bool) -> WriteGuard {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let abort = CancellationToken::new();
        inner.writes.insert(
            id,
            (
                Write {
                    id,
                    what,
                    from,
                    since_ms: now_ms(),
                },
                abortable.then(|| abort.clone()),
            ),
        );
        self.count.send_replace(inner.writes.len());
        WriteGuard {
            inflight: self.clone(),
            id,
            abort,
        }
    }

    /// The writes in flight now, oldest first.
    pub fn list(&self) -> Vec<Write> {
        self.lock()
            .writes
            .values()
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// Asks write `id` to stop (see [`WriteGuard::aborted`]).
    pub fn abort(&self, id: u64) -> Abort {
        let inner = self.lock();
        match inner.writes.get(&id) {
            None => Abort::NotFound,
            Some((write, None)) => Abort::Unabortable(write.clone()),
            Some((write, Some(abort))) => {
                abort.cancel();
                Abort::Aborted(write.clone())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().writes.is_empty()
    }

    /// Resolves once no write is in flight.
    pub async fn drained(&self) {
        let mut count = self.subscribe();
        // The sender lives in `self`, so the wait cannot fail while `self` is borrowed.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Changes whenever a write begins or ends.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps a write listed as in flight (see [`InFlight::begin`]).
pub struct WriteGuard {
    inflight: InFlight,
    id: u64,
    abort: CancellationToken,
}

impl WriteGuard {
    /// Resolves once an admin aborts this write ([`InFlight::abort`]).
    pub async fn aborted(&self) {
        self.abort.cancelled().await
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut inner = self.inflight.lock();
        inner.writes.remove(&self.id);
        self.inflight.count.send_replace(inner.writes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_listed_exactly_while_its_guard_lives() {
        let f = InFlight::default();
        assert!(f.is_empty());
        let a = f.begin("push a".into(), "127.0.0.1:1".into());
        let b = f.begin("push b".into(), "s2".into());
        assert_eq!(
            f.list().iter().map(|w| w.what.as_str()).collect::<Vec<_>>(),
            ["push a", "push b"]
        );
        drop(a);
        assert_eq!(f.list().len(), 1);
        // A guard dropped by a panicking task still ends its write.
        let f2 = f.clone();
        let _ = std::thread::spawn(move || {
            let _g = f2.begin("push c".into(), "x".into());
            panic!("boom");
        })
        .join();
        assert_eq!(f.list().len(), 1);
        drop(b);
        assert!(f.is_empty());
        assert_eq!(*f.subscribe().borrow(), 0);
    }

    #[tokio::test]
    async fn an_aborted_write_is_told_and_stays_listed_until_it_stops() {
        let f = InFlight::default();
        let a = f.begin_abortable("push a".into(), "x".into());
        let b = f.begin_abortable("push b".into(), "y".into());
        let d = f.begin("delete c".into(), "z".into());
        let ids: Vec<u64> = f.list().iter().map(|w| w.id).collect();
        assert!(matches!(f.abort(ids[0]), Abort::Aborted(w) if w.what == "push a"));
        a.aborted().await;
        assert!(!b.abort.is_cancelled(), "only the write asked for");
        assert!(matches!(f.abort(ids[2]), Abort::Unabortable(w) if w.what == "delete c"));
        assert!(!d.abort.is_cancelled());
        assert_eq!(f.list().len(), 3);
        drop(a);
        assert_eq!(f.abort(ids[0]), Abort::NotFound, "no longer in flight");
        drop((b, d));
    }
}
