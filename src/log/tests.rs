//! The log: ordering and checks, durability before anyone hears, group commit, and the
//! state brought back to the log on open.

use super::*;
use crate::store::Store;

/// Counts entries and remembers the last payload: enough to see atomic apply.
struct Counter;

impl Machine for Counter {
    type View = (u64, Vec<u8>);

    fn apply(&self, state: &TransactionalTree, entry: &Entry) -> Result<(), String> {
        if entry.payload == b"poison" {
            return Err("poisoned payload".into());
        }
        let n = state
            .get(b"n")
            .map_err(|e| e.to_string())?
            .map(|raw| crate::store::decode_u64(&raw, "n").map_err(|e| e.to_string()))
            .transpose()?
            .unwrap_or(0);
        state
            .insert(b"n", &(n + 1).to_be_bytes())
            .map_err(|e| e.to_string())?;
        state
            .insert(b"last", entry.payload.as_slice())
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn check(&self, entry: &Entry) -> Result<(), String> {
        if entry.payload == b"unchecked" {
            return Err("payload breaks the rules".into());
        }
        Ok(())
    }

    fn view(&self, state: &sled::Tree) -> Result<Self::View, String> {
        let n = match state.get(b"n").map_err(|e| e.to_string())? {
            None => 0,
            Some(raw) => crate::store::decode_u64(&raw, "n").map_err(|e| e.to_string())?,
        };
        let last = state
            .get(b"last")
            .map_err(|e| e.to_string())?
            .map(|v| v.to_vec())
            .unwrap_or_default();
        Ok((n, last))
    }
}

/// A site's database in a temporary directory, removed when dropped.
struct Site {
    store: Store,
    dir: tempfile::TempDir,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    Site {
        store: Store::open(dir.path()).unwrap(),
        dir,
    }
}

async fn open(site: &Site) -> Arc<Log<Counter>> {
    Arc::new(Log::open(&site.store, "t", Counter).await.unwrap())
}

/// Opens the log of `site`, appends `payloads`, and closes it again: the head.
async fn written(site: &Site, payloads: &[&str]) -> Head {
    let log = open(site).await;
    for p in payloads {
        log.append(1, "a", p.as_bytes().to_vec()).await.unwrap();
    }
    log.head()
}

/// A log in a fresh site of its own, removed with it.
struct Fresh {
    log: Arc<Log<Counter>>,
    _site: Site,
}

impl std::ops::Deref for Fresh {
    type Target = Arc<Log<Counter>>;
    fn deref(&self) -> &Arc<Log<Counter>> {
        &self.log
    }
}

async fn fresh() -> Fresh {
    let site = site();
    Fresh {
        log: open(&site).await,
        _site: site,
    }
}

async fn primary_with(n: usize) -> Fresh {
    let log = fresh().await;
    for i in 0..n {
        log.append(1, "alice", format!("p{i}").into_bytes())
            .await
            .unwrap();
    }
    log
}

#[tokio::test]
async fn append_chains_hashes_and_applies_state() {
    let log = primary_with(3).await;
    let entries = log.range(1, 10).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let mut prev = GENESIS;
    for e in &entries {
        assert_eq!(e.chained_hash(&prev), e.hash);
        prev = e.hash;
    }
    assert_eq!(log.head().hash, prev);
    assert_eq!(*log.view(), (3, b"p2".to_vec()));
}

#[tokio::test]
async fn a_secondary_replays_to_the_same_head_and_state() {
    let primary = primary_with(5).await;
    let secondary = fresh().await;
    for e in primary.range(1, 100).unwrap() {
        assert_eq!(secondary.apply(e).await.unwrap(), Applied::New);
    }
    assert_eq!(secondary.head(), primary.head());
    assert_eq!(*secondary.view(), *primary.view());
    let again = primary.entry(5).unwrap().unwrap();
    assert_eq!(secondary.apply(again).await.unwrap(), Applied::Duplicate);
    assert_eq!(secondary.view().0, 5);
}

#[tokio::test]
async fn refuses_a_gap() {
    let primary = primary_with(3).await;
    let secondary = fresh().await;
    let third = primary.entry(3).unwrap().unwrap();
    let err = secondary.apply(third).await.unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Gap {
                expected: 1,
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not contiguous"), "{err}");
    assert_eq!(secondary.head(), Head::default());
}

#[tokio::test]
async fn refuses_a_broken_hash_chain() {
    let primary = primary_with(2).await;
    let secondary = fresh().await;
    secondary
        .apply(primary.entry(1).unwrap().unwrap())
        .await
        .unwrap();
    let mut forged = primary.entry(2).unwrap().unwrap();
    forged.payload = b"tampered".to_vec();
    let err = secondary.apply(forged).await.unwrap_err();
    assert!(err.is_divergence(), "{err}");
    assert!(err.to_string().contains("diverged"), "{err}");
    assert_eq!(secondary.head().index, 1);
    assert_eq!(*secondary.view(), (1, b"p0".to_vec()));
}

#[tokio::test]
async fn refuses_an_entry_from_another_history() {
    let ours = primary_with(2).await;
    let theirs = fresh().await;
    theirs
        .append(1, "mallory", b"other".to_vec())
        .await
        .unwrap();
    let err = ours
        .apply(theirs.entry(1).unwrap().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict { index: 1, .. }), "{err}");
}

#[tokio::test]
async fn refuses_a_lower_epoch() {
    let primary = fresh().await;
    primary.append(3, "a", b"x".to_vec()).await.unwrap();
    let secondary = fresh().await;
    secondary
        .apply(primary.entry(1).unwrap().unwrap())
        .await
        .unwrap();
    let stale = Entry::new(&secondary.head().hash, 2, 2, 0, "old".into(), b"y".to_vec());
    let err = secondary.apply(stale).await.unwrap_err();
    assert!(
        matches!(
            err,
            LogError::StaleEpoch {
                epoch: 2,
                current: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = primary.append(2, "a", b"y".to_vec()).await.unwrap_err();
    assert!(matches!(err, LogError::StaleEpoch { .. }), "{err}");
}

#[tokio::test]
async fn a_failed_apply_stops_the_log_and_opening_it_again_is_refused_loudly() {
    let site = site();
    let log = open(&site).await;
    log.append(1, "a", b"ok".to_vec()).await.unwrap();
    // The machine breaks its contract: it refuses an entry its check let through, which is
    // durable by then. The state stays behind, and the log takes nothing more.
    let err = log.append(1, "a", b"poison".to_vec()).await.unwrap_err();
    assert!(matches!(err, LogError::Apply { index: 2, .. }), "{err}");
    assert_eq!(log.head().index, 1);
    assert!(
        log.entry(2).unwrap().is_none(),
        "only applied entries are served"
    );
    let err = log.append(1, "a", b"later".to_vec()).await.unwrap_err();
    assert!(matches!(err, LogError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("opens it again"), "{err}");
    drop(log);
    // Opening replays the durable entry, and says which one cannot be applied.
    let err = match Log::open(&site.store, "t", Counter).await {
        Err(e) => e,
        Ok(_) => panic!("a log whose entry cannot be applied opened"),
    };
    assert!(matches!(err, LogError::Apply { index: 2, .. }), "{err}");
}

#[tokio::test]
async fn append_refuses_an_entry_over_the_cap_and_stores_nothing() {
    let log = primary_with(1).await;
    let head = log.head();
    let err = log
        .append(1, "a", vec![b'x'; MAX_ENTRY_BYTES])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::TooLarge {
                index: 2,
                limit: MAX_ENTRY_BYTES,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        crate::types::Classify::kind(&err),
        crate::types::ErrorKind::Invalid
    );
    assert!(err.is_inadmissible());
    assert!(err.to_string().contains("the limit is 65536"), "{err}");
    let err = log
        .append(1, &"m".repeat(MAX_ENTRY_BYTES), b"p".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::TooLarge { .. }), "{err}");
    assert_eq!(log.head(), head);
    assert!(log.entry(2).unwrap().is_none());
    // Just under the cap is fine.
    let fits = MAX_ENTRY_BYTES - Entry::new(&GENESIS, 1, 1, 0, "a".into(), vec![]).encoded_len();
    let e = log.append(1, "a", vec![b'y'; fits]).await.unwrap();
    assert_eq!(e.encoded_len(), MAX_ENTRY_BYTES);
}

#[tokio::test]
async fn append_refuses_a_bad_author() {
    let log = primary_with(0).await;
    for author in ["", "a\nb", "a\u{7}", &"x".repeat(MAX_AUTHOR_BYTES + 1)] {
        let err = log.append(1, author, b"p".to_vec()).await.unwrap_err();
        assert!(matches!(err, LogError::Invalid { .. }), "{author:?}: {err}");
        assert!(err.to_string().contains("author"), "{err}");
    }
    log.append(1, &"x".repeat(MAX_AUTHOR_BYTES), b"p".to_vec())
        .await
        .unwrap();
    assert_eq!(log.head().index, 1);
}

#[tokio::test]
async fn a_secondary_refuses_an_oversized_or_unchecked_entry() {
    let primary = primary_with(1).await;
    let secondary = fresh().await;
    secondary
        .apply(primary.entry(1).unwrap().unwrap())
        .await
        .unwrap();
    // Well chained, but larger than any log may hold (a primary from before the cap).
    let big = Entry::new(
        &secondary.head().hash,
        2,
        1,
        0,
        "a".into(),
        vec![0; MAX_ENTRY_BYTES],
    );
    let err = secondary.apply(big).await.unwrap_err();
    assert!(matches!(err, LogError::TooLarge { index: 2, .. }), "{err}");
    // Refused by the machine's check, as its primary would have refused it.
    let bad = Entry::new(
        &secondary.head().hash,
        2,
        1,
        0,
        "a".into(),
        b"unchecked".to_vec(),
    );
    let err = secondary.apply(bad).await.unwrap_err();
    assert!(matches!(err, LogError::Invalid { index: 2, .. }), "{err}");
    assert!(err.is_inadmissible());
    assert_eq!(secondary.head().index, 1);
    assert_eq!(secondary.view().0, 1);
}

#[tokio::test]
async fn reopening_keeps_head_and_state() {
    let site = site();
    let head = written(&site, &["one", "two"]).await;
    let log = open(&site).await;
    assert_eq!(log.head(), head);
    assert_eq!(*log.view(), (2, b"two".to_vec()));
}

#[tokio::test]
async fn tail_yields_existing_then_new_entries() {
    let site = site();
    let log = Arc::new(open(&site).await);
    log.append(1, "a", b"p0".to_vec()).await.unwrap();
    log.append(1, "a", b"p1".to_vec()).await.unwrap();
    let mut tail = log.tail(2);
    let first = tail.next_batch(10).await.unwrap().unwrap();
    assert_eq!(first.iter().map(|e| e.index).collect::<Vec<_>>(), [2]);
    let waiter = tokio::spawn(async move { tail.next_batch(10).await.unwrap().unwrap() });
    log.append(1, "a", b"late".to_vec()).await.unwrap();
    let next = waiter.await.unwrap();
    assert_eq!(next[0].index, 3);
    assert_eq!(next[0].payload, b"late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs_and_each_returns_once_durable_and_applied() {
    let log = Arc::new(fresh().await);
    let before = log.syncs();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let e = log
                    .append(1, "a", format!("c{i}").into_bytes())
                    .await
                    .unwrap();
                // Once append returns, the entry is published and readable.
                assert!(log.head().index >= e.index);
                assert_eq!(log.entry(e.index).unwrap().unwrap(), e);
                e.index
            })
        })
        .collect();
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap());
    }
    indices.sort();
    assert_eq!(indices, (1..=64).collect::<Vec<_>>());
    assert_eq!(log.head().index, 64);
    assert_eq!(log.view().0, 64, "every entry applied once");
    let syncs = log.syncs() - before;
    assert!(syncs <= 64, "{syncs} syncs for 64 appends");
    let mut prev = GENESIS;
    for e in log.range(1, 100).unwrap() {
        assert_eq!(e.chained_hash(&prev), e.hash);
        prev = e.hash;
    }
}

#[tokio::test]
async fn a_state_behind_the_log_is_brought_up_to_it_on_open() {
    let site = site();
    let head = written(&site, &["one", "two", "three"]).await;
    // As if sled lost its latest writes (its flush is not a sync): the state is at entry 1.
    let state = site.store.db().open_tree("t/state").unwrap();
    let meta = site.store.db().open_tree("t/meta").unwrap();
    state.insert(b"n", &1u64.to_be_bytes()).unwrap();
    state.insert(b"last", b"one").unwrap();
    let first = open(&site).await;
    let one = first.entry(1).unwrap().unwrap();
    drop(first);
    meta.insert(HEAD_KEY, head_of(&one).encode()).unwrap();
    let log = open(&site).await;
    assert_eq!(log.head(), head);
    assert_eq!(
        *log.view(),
        (3, b"three".to_vec()),
        "entries 2 and 3 applied once"
    );
}

#[tokio::test]
async fn a_state_ahead_of_or_unlike_the_log_is_refused_loudly_and_left_as_it_is() {
    let site = site();
    let head = written(&site, &["one", "two"]).await;
    let meta = site.store.db().open_tree("t/meta").unwrap();
    let state = site.store.db().open_tree("t/state").unwrap();
    let open_err = || async {
        match Log::open(&site.store, "t", Counter).await {
            Err(e) => e,
            Ok(_) => panic!("a state that does not match its log was taken"),
        }
    };
    // Ahead: the log store lost acknowledged entries.
    let ahead = Head {
        index: 9,
        hash: [7; HASH_LEN],
        epoch: 1,
    };
    meta.insert(HEAD_KEY, ahead.encode()).unwrap();
    let err = open_err().await;
    assert!(matches!(err, LogError::Corrupt { index: 9, .. }), "{err}");
    assert!(err.to_string().contains("missing from"), "{err}");
    // Not the log's entry at that index.
    let unlike = Head {
        index: 2,
        hash: [7; HASH_LEN],
        epoch: 1,
    };
    meta.insert(HEAD_KEY, unlike.encode()).unwrap();
    let err = open_err().await;
    assert!(
        err.to_string().contains("not the log store's entry"),
        "{err}"
    );
    // Nothing was wiped.
    assert_eq!(meta.get(HEAD_KEY).unwrap().unwrap(), unlike.encode());
    assert_eq!(state.get(b"last").unwrap().unwrap(), b"two");
    // An unreadable state is refused too.
    meta.insert(HEAD_KEY, head.encode()).unwrap();
    state.insert(b"n", b"not a number").unwrap();
    let err = open_err().await;
    assert!(err.to_string().contains("expected 8 bytes"), "{err}");
}

#[tokio::test]
async fn an_append_whose_caller_goes_away_is_still_applied_and_published() {
    let log = fresh().await;
    let mut rx = log.subscribe();
    // Polled once (far enough to queue the entry), then dropped.
    {
        use std::future::Future;
        let mut append = std::pin::pin!(log.append(1, "a", b"dropped".to_vec()));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            append.as_mut().poll(&mut cx).is_pending(),
            "the append finished in its first poll"
        );
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while rx.borrow_and_update().head.index < 1 {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the dropped append was published");
    assert_eq!(*log.view(), (1, b"dropped".to_vec()));
}

#[tokio::test]
async fn a_closed_log_takes_nothing_more_and_opens_again_where_it_was() {
    let site = site();
    let log = open(&site).await;
    log.append(1, "a", b"one".to_vec()).await.unwrap();
    let head = log.head();
    log.close().await;
    let err = log.append(1, "a", b"late".to_vec()).await.unwrap_err();
    assert!(err.is_local_failure(), "{err}");
    // Reads keep working, and a new instance opens at once beside the closed one.
    assert_eq!(log.entry(1).unwrap().unwrap().payload, b"one");
    let again = open(&site).await;
    assert_eq!(again.head(), head);
    again.append(1, "a", b"two".to_vec()).await.unwrap();
    assert_eq!(*again.view(), (2, b"two".to_vec()));
}

#[tokio::test]
async fn entries_an_older_layout_kept_in_sled_move_into_the_log_store_once() {
    let site = site();
    let mut entries = Vec::new();
    let mut prev = GENESIS;
    for i in 1..=5u64 {
        let e = Entry::new(&prev, i, 1, 0, "a".into(), format!("p{i}").into_bytes());
        prev = e.hash;
        entries.push(e);
    }
    let old = site.store.db().open_tree("t/entries").unwrap();
    for e in &entries {
        old.insert(e.index.to_be_bytes(), e.encode()).unwrap();
    }
    // The older layout's state had applied entry 3 when it stopped.
    {
        let log = open(&site).await;
        assert_eq!(log.head().index, 5);
        assert_eq!(*log.view(), (5, b"p5".to_vec()));
        assert_eq!(log.range(1, 10).unwrap(), entries);
    }
    assert!(!site
        .store
        .db()
        .tree_names()
        .iter()
        .any(|t| t.as_ref() == b"t/entries"));
    let log = open(&site).await;
    assert_eq!(log.range(1, 10).unwrap(), entries);
    assert!(site.dir.path().join("logs/t").is_dir());
}

#[tokio::test]
async fn a_second_instance_of_an_open_log_waits_for_the_first_to_let_go() {
    let site = site();
    let first = open(&site).await;
    first.append(1, "a", b"one".to_vec()).await.unwrap();
    let store = site.store.clone();
    let second =
        tokio::spawn(async move { Log::open(&store, "t", Counter).await.map(|l| l.head()) });
    tokio::task::yield_now().await;
    drop(first);
    assert_eq!(second.await.unwrap().unwrap().index, 1);
}
