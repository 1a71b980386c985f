//! Commit locks: one per object name, so commits of different names run side by side and
//! share the event log's syncs, and one for the site, which closing takes to wait for the
//! commits under way.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, OwnedMutexGuard, RwLock, RwLockReadGuard};

/// Names kept in the map before unused ones are dropped from it.
const PRUNE_FROM: usize = 1024;

#[derive(Default)]
pub struct CommitLocks {
    names: std::sync::Mutex<Names>,
    site: RwLock<()>,
}

#[derive(Default)]
struct Names {
    held: HashMap<String, Weak<Mutex<()>>>,
    prune_at: usize,
}

/// Held while one name commits.
pub struct CommitGuard<'a> {
    _name: OwnedMutexGuard<()>,
    _site: RwLockReadGuard<'a, ()>,
}

impl CommitLocks {
    /// Waits until no other commit of `name` runs, then holds it off (and the site's close)
    /// until the guard is dropped.
    pub async fn lock(&self, name: &str) -> CommitGuard<'_> {
        let site = self.site.read().await;
        let mutex = {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            match names.held.get(name).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(Mutex::new(()));
                    names.held.insert(name.to_string(), Arc::downgrade(&m));
                    if names.held.len() >= names.prune_at.max(PRUNE_FROM) {
                        names.held.retain(|_, w| w.strong_count() > 0);
                        names.prune_at = names.held.len() * 2;
                    }
                    m
                }
            }
        };
        CommitGuard {
            _name: mutex.lock_owned().await,
            _site: site,
        }
    }

    /// Waits for every commit under way; the caller then marks the site closed, and commits
    /// that start later see it.
    pub async fn quiesce(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.site.write().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_name_waits_for_itself_and_not_for_others() {
        let locks = CommitLocks::default();
        let a = locks.lock("a").await;
        // Another name goes ahead at once.
        let b = locks.lock("b").await;
        drop(b);
        // The same name waits until the first commit ends.
        let again = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(
            again.is_err(),
            "a second commit of one name ran beside the first"
        );
        drop(a);
        drop(locks.lock("a").await);
    }

    #[tokio::test]
    async fn closing_waits_for_commits_under_way() {
        let locks = CommitLocks::default();
        let a = locks.lock("a").await;
        let closing = tokio::time::timeout(Duration::from_millis(50), locks.quiesce()).await;
        assert!(closing.is_err(), "close did not wait for the commit");
        drop(a);
        drop(locks.quiesce().await);
    }

    #[tokio::test]
    async fn unused_names_do_not_pile_up() {
        let locks = CommitLocks::default();
        for i in 0..10 * PRUNE_FROM {
            drop(locks.lock(&format!("n{i}")).await);
        }
        let held = locks.names.lock().unwrap().held.len();
        assert!(held <= 2 * PRUNE_FROM, "{held} names kept");
    }
}
