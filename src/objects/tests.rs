//! The registry's counters against a recount from the rows, on a real sled database:
//! after random events and transitions (applies re-run by sled included), across reopens,
//! and for databases that never had counters or hold a broken record.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use sled::transaction::ConflictableTransactionError;

use super::registry::DAMAGED_LISTED;
use super::state::{self, key, REGISTRY};
use super::*;
use crate::log::{now_ms, Machine, GENESIS};

const NAMES: [&str; 3] = ["a", "b/c", "d"];
const CONTENTS: [&[u8]; 3] = [b"zero", b"one", b"two"];

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn content_of(sha256: &str) -> Option<&'static [u8]> {
    CONTENTS.iter().copied().find(|c| sha(c) == sha256)
}

/// What a recount from the rows says, as `counts()` and `queued()` would: counted here the
/// way the registry was scanned before it kept counters, not with its own helpers.
fn recounted(objects: &Objects) -> (Counts, u64) {
    let state = objects.log().state();
    let mut c = Counts {
        objects: state.scan_prefix([state::CATALOG]).count() as u64,
        events_applied: objects.log().head().index,
        ..Counts::default()
    };
    for item in state.scan_prefix([REGISTRY]) {
        let (k, v) = item.unwrap();
        let row: Row = state::decode(&v, "a registry row").unwrap();
        match row.sync {
            SyncState::Synced => c.synced += 1,
            SyncState::Failed => c.failed += 1,
            SyncState::Pending | SyncState::Started => c.pending += 1,
        }
        match row.verification {
            Verification::Succeeded if row.sync == SyncState::Synced => c.verified += 1,
            Verification::Failed => {
                c.verification_failed += 1;
                if c.damaged.len() < DAMAGED_LISTED {
                    let name = std::str::from_utf8(&k[1..]).unwrap();
                    let why = row.verification_failure.as_deref().unwrap_or("failed");
                    c.damaged.push(format!("{name}: {why}"));
                }
            }
            _ => {}
        }
    }
    let queued = state.scan_prefix([state::QUEUE]).count() as u64;
    (c, queued)
}

fn assert_counted(objects: &Objects, after: &str) {
    let (counts, queued) = recounted(objects);
    let mut c = objects.counts().unwrap();
    c.progress.clear();
    assert_eq!(c, counts, "after {after}");
    assert_eq!(objects.queued().unwrap(), queued, "after {after}");
    let st = objects.log().state();
    assert_eq!(
        state::index_keys(st).unwrap(),
        state::expected_index(st).unwrap(),
        "the state index after {after}"
    );
}

/// One site's objects on a real database under `dir`.
struct Site {
    dir: tempfile::TempDir,
    role: Role,
    objects: Option<Objects>,
    /// The next event's index and the hash it chains to (events applied through the log).
    next: (u64, crate::log::Hash),
    /// Indices for events applied beside the log (a re-run apply), apart from the log's.
    side: u64,
}

impl Site {
    async fn new(role: Role) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let objects = open(dir.path(), role).await;
        Site {
            dir,
            role,
            objects: Some(objects),
            next: (1, GENESIS),
            side: 1 << 40,
        }
    }

    fn objects(&self) -> &Objects {
        self.objects.as_ref().unwrap()
    }

    async fn reopen(&mut self) {
        self.objects = None;
        self.objects = Some(open(self.dir.path(), self.role).await);
    }

    fn entry(&mut self, event: &Event) -> Entry {
        let (index, prev) = self.next;
        let e = Entry::new(&prev, index, 1, now_ms(), "t".into(), event.encode());
        self.next = (index + 1, e.hash);
        e
    }

    /// Applies `events` through the log in one transaction.
    async fn apply(&mut self, events: &[Event]) {
        let entries: Vec<Entry> = events.iter().map(|e| self.entry(e)).collect();
        self.objects().log().apply_batch(entries).await.unwrap();
    }

    /// Applies `event` the way sled re-runs a transaction: the first run's writes are
    /// thrown away (a conflict), the second commits.
    fn apply_rerun(&mut self, event: &Event) {
        self.side += 1;
        let entry = Entry::new(&GENESIS, self.side, 1, now_ms(), "t".into(), event.encode());
        let machine = EventsMachine {
            authoritative: self.role == Role::Primary,
            selection: Default::default(),
        };
        let runs = std::cell::Cell::new(0);
        self.objects()
            .log()
            .state()
            .transaction(|t| {
                runs.set(runs.get() + 1);
                machine
                    .apply(t, &entry)
                    .map_err(ConflictableTransactionError::Abort)?;
                if runs.get() == 1 {
                    return Err(ConflictableTransactionError::Conflict);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(runs.get(), 2);
    }
}

async fn open(dir: &Path, role: Role) -> Objects {
    // sled lets go of its lock when the last handle drops, which the helper thread of a
    // flush may do a moment after the flush returned.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let store = loop {
        match Store::open(dir) {
            Ok(store) => break store,
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::yield_now()
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    };
    let primary = (role == Role::Secondary).then(|| "http://p".to_string());
    let settings = Arc::new(
        Settings::open(store.clone(), "s1", role, primary, None)
            .await
            .unwrap(),
    );
    Objects::open(&store, dir, settings).await.unwrap()
}

async fn temp_with(objects: &Objects, bytes: &[u8]) -> (Staged, Digested) {
    let mut sink = objects.blobs().sink(None, None).unwrap();
    sink.write(bytes.to_vec()).await.unwrap();
    sink.finish().await.unwrap()
}

#[derive(Clone, Debug)]
enum Ev {
    Put(usize, usize),
    Delete(usize),
}

impl Ev {
    fn event(&self) -> Event {
        match *self {
            Ev::Put(n, c) => Event::Put {
                name: NAMES[n].into(),
                kind: "blob".into(),
                size: CONTENTS[c].len() as u64,
                sha256: sha(CONTENTS[c]),
            },
            Ev::Delete(n) => Event::Delete {
                name: NAMES[n].into(),
            },
        }
    }
}

/// What happens to a fetch a sync worker started.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Fetched,
    /// Bytes of another version: the catalog moved on meanwhile.
    Stale,
    Failed,
    Deferred,
}

#[derive(Clone, Debug)]
enum Op {
    /// Events applied through the log, in one transaction.
    Events(Vec<Ev>),
    /// One event applied in a transaction sled runs twice.
    Rerun(Ev),
    /// A sync worker's whole turn on a name.
    Sync(usize, Outcome),
    /// A fetch started now and finished by a later `Finish` (other ops in between).
    Start(usize),
    Finish(usize, Outcome),
    Verify(usize, bool),
    Suspect(usize),
    /// The primary puts back a damaged copy.
    Restore(usize),
    /// An admin's resync or reverify of one name, the failed ones or all.
    Resync(Option<usize>, bool),
    Reverify(Option<usize>, bool),
    Reopen,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => (0..NAMES.len(), 0..CONTENTS.len()).prop_map(|(n, c)| Ev::Put(n, c)),
        1 => (0..NAMES.len()).prop_map(Ev::Delete),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        5 => Just(Outcome::Fetched),
        1 => Just(Outcome::Stale),
        2 => Just(Outcome::Failed),
        1 => Just(Outcome::Deferred),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        3 => proptest::collection::vec(ev(), 1..4).prop_map(Op::Events),
        1 => ev().prop_map(Op::Rerun),
        6 => (name.clone(), outcome()).prop_map(|(n, o)| Op::Sync(n, o)),
        1 => name.clone().prop_map(Op::Start),
        1 => (0..4usize, outcome()).prop_map(|(i, o)| Op::Finish(i, o)),
        3 => (name.clone(), any::<bool>()).prop_map(|(n, ok)| Op::Verify(n, ok)),
        1 => name.clone().prop_map(Op::Suspect),
        1 => name.clone().prop_map(Op::Restore),
        1 => (proptest::option::of(name.clone()), any::<bool>()).prop_map(|(n, f)| Op::Resync(n, f)),
        1 => (proptest::option::of(name), any::<bool>()).prop_map(|(n, f)| Op::Reverify(n, f)),
        1 => Just(Op::Reopen),
    ]
}

/// Ends a fetch of `meta` the way `outcome` says.
async fn finish(objects: &Objects, meta: &ObjectMeta, outcome: Outcome) {
    let now = now_ms();
    match outcome {
        Outcome::Fetched | Outcome::Stale => {
            let bytes = match outcome {
                Outcome::Fetched => content_of(&meta.sha256).unwrap(),
                _ => CONTENTS
                    .iter()
                    .copied()
                    .find(|c| sha(c) != meta.sha256)
                    .unwrap(),
            };
            let (temp, digest) = temp_with(objects, bytes).await;
            let fetched = ObjectMeta {
                sha256: digest.hex(),
                size: digest.size,
                ..meta.clone()
            };
            objects
                .finish_fetch(&fetched, temp, digest, now)
                .await
                .unwrap();
        }
        Outcome::Failed => {
            objects
                .fail_sync(&meta.name, Some(meta.version), "refused", now, 1.0)
                .unwrap();
        }
        Outcome::Deferred => objects.defer_sync(&meta.name, meta.version, now).unwrap(),
    }
}

async fn run(site: &mut Site, op: &Op, held: &mut Vec<(ObjectMeta, Started)>) {
    let now = now_ms();
    match op {
        Op::Events(evs) => {
            let events: Vec<Event> = evs.iter().map(Ev::event).collect();
            site.apply(&events).await;
        }
        Op::Rerun(e) => site.apply_rerun(&e.event()),
        Op::Sync(n, outcome) => {
            let objects = site.objects();
            match objects.start_sync(NAMES[*n], now).unwrap() {
                SyncJob::Fetch(meta, _started) => finish(objects, &meta, *outcome).await,
                SyncJob::Remove(local) => match outcome {
                    Outcome::Failed => {
                        objects
                            .fail_sync(NAMES[*n], None, "cannot remove", now, 1.0)
                            .unwrap();
                    }
                    _ => objects.finish_remove(NAMES[*n], &local).await.unwrap(),
                },
                SyncJob::Nothing => {}
            }
        }
        Op::Start(n) => {
            if let SyncJob::Fetch(meta, started) =
                site.objects().start_sync(NAMES[*n], now).unwrap()
            {
                held.push((meta, started));
            }
        }
        Op::Finish(i, outcome) => {
            if !held.is_empty() {
                let (meta, _started) = held.remove(i % held.len());
                finish(site.objects(), &meta, *outcome).await;
            }
        }
        Op::Verify(n, ok) => {
            let objects = site.objects();
            if let Some(Row {
                sync: SyncState::Synced,
                local: Some(local),
                ..
            }) = objects.row(NAMES[*n]).unwrap()
            {
                let outcome = if *ok {
                    Ok(())
                } else {
                    Err(format!("mismatch {now}"))
                };
                objects
                    .record_verification(NAMES[*n], &local, outcome, now)
                    .await
                    .unwrap();
            }
        }
        Op::Suspect(n) => site.objects().suspect(NAMES[*n]).unwrap(),
        Op::Restore(n) => {
            let objects = site.objects();
            if site.role == Role::Primary {
                if let Some(local) = objects.row(NAMES[*n]).unwrap().and_then(|r| r.local) {
                    let (temp, digest) =
                        temp_with(objects, content_of(&local.sha256).unwrap()).await;
                    objects
                        .restore(NAMES[*n], &local, temp, digest, now)
                        .await
                        .unwrap();
                }
            }
        }
        Op::Resync(n, failed) | Op::Reverify(n, failed) => {
            let scope = match (n, failed) {
                (Some(n), _) => Scope::One(NAMES[*n].to_string()),
                (None, true) => Scope::Failed,
                (None, false) => Scope::All,
            };
            let objects = site.objects();
            let done = match op {
                Op::Resync(..) => objects.resync(&scope, "t"),
                _ => objects.reverify(&scope, "t"),
            };
            match done {
                Ok(_) | Err(ObjectError::NotFound(_)) => {}
                Err(ObjectError::Refused { .. }) if site.role == Role::Primary => {}
                Err(e) => panic!("{op:?}: {e}"),
            }
        }
        Op::Reopen => {
            // Fetches in progress end with their process.
            held.clear();
            let mut before = site.objects().counts().unwrap();
            // What an admin asked for is kept in memory only.
            before.progress.clear();
            site.reopen().await;
            assert_eq!(
                site.objects().counters_rebuilt(),
                None,
                "the counters were right"
            );
            assert_eq!(site.objects().counts().unwrap(), before, "across a reopen");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever happens, the counters say what a recount of the rows says.
    #[test]
    fn counts_equal_a_recount_after_any_events_and_transitions(
        primary in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let role = if primary { Role::Primary } else { Role::Secondary };
            let mut site = Site::new(role).await;
            let mut held = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                run(&mut site, op, &mut held).await;
                assert_counted(site.objects(), &format!("op {i}: {op:?}"));
            }
            held.clear();
            site.reopen().await;
            assert_eq!(site.objects().counters_rebuilt(), None);
            assert_counted(site.objects(), "the last reopen");
        });
    }
}

/// Everything a scripted history touches: synced, failed and verified objects deleted.
#[tokio::test]
async fn deleting_synced_failed_and_damaged_objects_takes_them_out_of_the_counts() {
    let mut site = Site::new(Role::Secondary).await;
    let puts: Vec<Event> = (0..3).map(|n| Ev::Put(n, n).event()).collect();
    site.apply(&puts).await;
    let objects = site.objects();
    for (n, outcome) in [
        (0, Outcome::Fetched),
        (1, Outcome::Failed),
        (2, Outcome::Fetched),
    ] {
        let SyncJob::Fetch(meta, _started) = objects.start_sync(NAMES[n], now_ms()).unwrap() else {
            panic!("{} needs a fetch", NAMES[n]);
        };
        finish(objects, &meta, outcome).await;
    }
    let local = objects.row("d").unwrap().unwrap().local.unwrap();
    objects
        .record_verification("d", &local, Err("bit rot".into()), now_ms())
        .await
        .unwrap();
    let c = objects.counts().unwrap();
    assert_eq!(
        (c.objects, c.synced, c.pending, c.failed, c.verified),
        (3, 1, 1, 1, 1)
    );
    assert_eq!(
        (c.verification_failed, c.damaged),
        (1, vec!["d: bit rot".to_string()])
    );
    assert_eq!(objects.queued().unwrap(), 2);
    assert_counted(objects, "syncs");

    let deletes: Vec<Event> = (0..3).map(|n| Ev::Delete(n).event()).collect();
    site.apply(&deletes).await;
    assert_counted(site.objects(), "the deletes");
    // "a" still has its copy to remove; "b/c" and "d" had none.
    let objects = site.objects();
    let SyncJob::Remove(local) = objects.start_sync("a", now_ms()).unwrap() else {
        panic!("a's copy must be removed");
    };
    objects.finish_remove("a", &local).await.unwrap();
    for name in ["b/c", "d"] {
        assert!(matches!(
            objects.start_sync(name, now_ms()).unwrap(),
            SyncJob::Nothing
        ));
    }
    let c = objects.counts().unwrap();
    assert_eq!(
        c,
        Counts {
            events_applied: 6,
            ..Counts::default()
        }
    );
    assert_eq!(objects.queued().unwrap(), 0);
}

#[tokio::test]
async fn a_fetch_in_progress_shows_as_started_but_is_never_stored() {
    let mut site = Site::new(Role::Secondary).await;
    site.apply(&[Ev::Put(0, 0).event()]).await;
    let objects = site.objects();
    let stored = |objects: &Objects| -> Row {
        let raw = objects
            .log()
            .state()
            .get(key(REGISTRY, "a"))
            .unwrap()
            .unwrap();
        state::decode(&raw, "a row").unwrap()
    };
    let SyncJob::Fetch(meta, started) = objects.start_sync("a", now_ms()).unwrap() else {
        panic!("a needs a fetch");
    };
    assert_eq!(objects.row("a").unwrap().unwrap().sync, SyncState::Started);
    assert_eq!(stored(objects).sync, SyncState::Pending);
    assert_eq!(objects.counts().unwrap().pending, 1);
    finish(objects, &meta, Outcome::Failed).await;
    drop(started);
    assert_eq!(objects.row("a").unwrap().unwrap().sync, SyncState::Failed);
    // A retry leaves it failed, in the row as in the counts, until it succeeds.
    let SyncJob::Fetch(meta, _started) = objects.start_sync("a", now_ms()).unwrap() else {
        panic!("a needs another fetch");
    };
    assert_eq!(objects.row("a").unwrap().unwrap().sync, SyncState::Failed);
    assert_eq!(objects.counts().unwrap().failed, 1);
    finish(objects, &meta, Outcome::Fetched).await;
    assert_eq!(objects.row("a").unwrap().unwrap().sync, SyncState::Synced);
    assert_eq!(objects.counts().unwrap().synced, 1);
}

#[tokio::test]
async fn a_row_stored_started_by_an_earlier_version_reads_and_counts_as_pending() {
    let mut site = Site::new(Role::Secondary).await;
    site.apply(&[Ev::Put(0, 0).event()]).await;
    let state = site.objects().log().state();
    let mut row = Row::pending(None);
    row.sync = SyncState::Started;
    state
        .insert(key(REGISTRY, "a"), state::encode(&row))
        .unwrap();
    site.reopen().await;
    let objects = site.objects();
    assert_eq!(objects.row("a").unwrap().unwrap().sync, SyncState::Pending);
    assert_eq!(objects.counts().unwrap().pending, 1);
    // And its sync goes on as for any pending row.
    let SyncJob::Fetch(meta, _started) = objects.start_sync("a", now_ms()).unwrap() else {
        panic!("a needs a fetch");
    };
    finish(objects, &meta, Outcome::Fetched).await;
    assert_eq!(objects.counts().unwrap().synced, 1);
    assert_counted(objects, "the fetch");
}

/// A database from before the counters: rows, no counters, no damaged index.
#[tokio::test]
async fn a_database_without_counters_gets_them_rebuilt_at_open() {
    let mut site = Site::new(Role::Primary).await;
    let puts: Vec<Event> = (0..3).map(|n| Ev::Put(n, n).event()).collect();
    site.apply(&puts).await;
    let objects = site.objects();
    let local = objects.row("b/c").unwrap().unwrap().local.unwrap();
    objects
        .record_verification("b/c", &local, Err("bit rot".into()), now_ms())
        .await
        .unwrap();
    let before = objects.counts().unwrap();
    let state = objects.log().state();
    state.remove(b"#counts").unwrap();
    state.remove(key(state::DAMAGED, "b/c")).unwrap();
    assert!(matches!(objects.counts(), Err(ObjectError::Corrupt(_))));

    site.reopen().await;
    let objects = site.objects();
    assert_eq!(objects.counters_rebuilt(), Some(state::MISSING));
    assert_eq!(objects.counts().unwrap(), before);
    assert_eq!(before.damaged, ["b/c: bit rot"]);
    assert_counted(objects, "the rebuild");
    // Rebuilt once: the next open finds them right.
    site.reopen().await;
    assert_eq!(site.objects().counters_rebuilt(), None);
}

/// A counter record that cannot be read, or that would go out of range, never fails the
/// change that moves it (the event log applies only durable entries): the record is marked
/// wrong and reads as an error — never as figures, never a panic — until the next open
/// counts again.
#[tokio::test]
async fn broken_counters_are_errors_and_the_next_open_rebuilds_them() {
    let mut site = Site::new(Role::Secondary).await;
    site.apply(&[Ev::Put(0, 0).event(), Ev::Put(1, 1).event()])
        .await;
    let state = || site.objects().log().state();

    state().insert(b"#counts", &b"garbage"[..]).unwrap();
    let objects = site.objects();
    assert!(matches!(objects.counts(), Err(ObjectError::Corrupt(_))));
    assert!(matches!(objects.queued(), Err(ObjectError::Corrupt(_))));
    // A transition and an event still go through; the counters stay an error.
    objects.fail_sync("a", Some(1), "x", now_ms(), 1.0).unwrap();
    site.apply(&[Ev::Put(2, 2).event()]).await;
    let err = site.objects().counts().unwrap_err().to_string();
    assert!(err.contains("unreadable"), "{err}");
    site.reopen().await;
    assert!(site
        .objects()
        .counters_rebuilt()
        .unwrap()
        .contains("unreadable"));
    assert_counted(site.objects(), "a rebuild of unreadable counters");

    // Readable but wrong: a counter that would go below zero marks the record, which reads
    // as that error until open counts again.
    let zero = |site: &Site| {
        let state = site.objects().log().state();
        let mut zero = state.get(b"#counts").unwrap().unwrap().to_vec();
        zero[1..].fill(0);
        state.insert(b"#counts", zero).unwrap();
    };
    zero(&site);
    // "b/c" is pending at version 2: failing it takes one from pending, which is 0.
    site.objects()
        .fail_sync("b/c", Some(2), "x", now_ms(), 1.0)
        .unwrap();
    let err = site.objects().counts().unwrap_err().to_string();
    assert!(err.contains("would go out of range"), "{err}");
    assert!(
        err.contains("counted again when the site next opens"),
        "{err}"
    );
    site.reopen().await;
    let why = site.objects().counters_rebuilt().unwrap();
    assert!(why.contains("would go out of range"), "{why}");
    assert_counted(site.objects(), "a rebuild of counters out of range");

    // The same found by an event: applied, and counted again at the next open.
    zero(&site);
    site.apply(&[Ev::Delete(0).event()]).await;
    assert!(site.objects().counts().is_err());
    site.reopen().await;
    let why = site.objects().counters_rebuilt().unwrap();
    assert!(why.contains("objects would go out of range"), "{why}");
    assert_counted(site.objects(), "a rebuild after an event");
    let before = site.objects().counts().unwrap();

    // A damaged-index entry no row stands for is dropped at open.
    let state = site.objects().log().state();
    state.insert(key(state::DAMAGED, "a"), "stale").unwrap();
    assert_eq!(site.objects().counts().unwrap().damaged, ["a: stale"]);
    site.reopen().await;
    assert!(site
        .objects()
        .counters_rebuilt()
        .unwrap()
        .contains("damaged index"));
    assert_eq!(site.objects().counts().unwrap(), before);
}

/// A page of the rows in one state comes from the state index, under a prefix, after a
/// cursor; a database without the index gets it built at open.
#[tokio::test]
async fn rows_are_listed_by_state_from_the_index_and_a_missing_index_is_built() {
    let mut site = Site::new(Role::Secondary).await;
    let puts: Vec<Event> = (0..3).map(|n| Ev::Put(n, n).event()).collect();
    site.apply(&puts).await;
    let objects = site.objects();
    objects
        .fail_sync("b/c", Some(2), "refused", now_ms(), 1.0)
        .unwrap();
    fn listed(
        objects: &Objects,
        state: Option<StateFilter>,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> (Vec<String>, Option<String>) {
        let (page, next) = objects.list_rows(state, prefix, after, limit).unwrap();
        (page.into_iter().map(|l| l.name).collect(), next)
    }
    let names = |state, prefix, after, limit| listed(site.objects(), state, prefix, after, limit);
    assert_eq!(names(Some(StateFilter::Failed), "", "", 10).0, ["b/c"]);
    assert_eq!(names(Some(StateFilter::Pending), "", "", 10).0, ["a", "d"]);
    assert_eq!(
        names(Some(StateFilter::Pending), "", "", 1),
        (vec!["a".to_string()], Some("a".to_string()))
    );
    assert_eq!(names(Some(StateFilter::Pending), "", "a", 1).0, ["d"]);
    assert_eq!(names(None, "b/", "", 10).0, ["b/c"]);
    assert!(names(Some(StateFilter::Synced), "", "", 10).0.is_empty());
    // A fetch in progress shows as started, not pending.
    let SyncJob::Fetch(_, started) = site.objects().start_sync("a", now_ms()).unwrap() else {
        panic!("a fetch");
    };
    assert_eq!(names(Some(StateFilter::Started), "", "", 10).0, ["a"]);
    assert_eq!(names(Some(StateFilter::Pending), "", "", 10).0, ["d"]);
    drop(started);

    // As an older database holds it: no index.
    let st = site.objects().log().state();
    for k in state::index_keys(st).unwrap() {
        st.remove(k).unwrap();
    }
    st.remove(b"#index").unwrap();
    site.reopen().await;
    let (failed, _) = listed(site.objects(), Some(StateFilter::Failed), "", "", 10);
    assert_eq!(failed, ["b/c"]);
    assert_counted(site.objects(), "the index rebuilt");
}

/// Starts and completes a fetch of `name`'s current version.
async fn fetch_now(objects: &Objects, name: &str) {
    match objects.start_sync(name, now_ms()).unwrap() {
        SyncJob::Fetch(meta, started) => {
            finish(objects, &meta, Outcome::Fetched).await;
            drop(started);
        }
        other => panic!("{name}: {other:?}"),
    }
}

/// A secondary keeps serving the copy it verified while a newer version cannot be fetched;
/// never one that failed a check, and resync fetches even a copy whose checksum matches.
#[tokio::test]
async fn the_stale_copy_is_the_newest_verified_one_and_never_a_damaged_one() {
    let mut site = Site::new(Role::Secondary).await;
    site.apply(&[Ev::Put(0, 0).event()]).await;
    let objects = site.objects();
    fetch_now(objects, "a").await;
    // The current version, verified.
    let copy = objects.stale_copy("a").unwrap().unwrap();
    assert_eq!(copy.meta.sha256, sha(CONTENTS[0]));

    // A newer version the site cannot fetch: the older verified copy is what it has.
    site.apply(&[Ev::Put(0, 1).event()]).await;
    let objects = site.objects();
    objects
        .fail_sync("a", Some(2), "refused", now_ms(), 1.0)
        .unwrap();
    let copy = objects.stale_copy("a").unwrap().unwrap();
    assert_eq!((copy.meta.version, copy.current.version), (1, 2));
    assert_eq!(copy.meta.sha256, sha(CONTENTS[0]));
    let path = objects.blobs().file("a", &copy.meta.sha256).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), CONTENTS[0]);
    // Across a reopen too.
    site.reopen().await;
    assert!(site.objects().stale_copy("a").unwrap().is_some());

    // A resync makes that copy suspect: no longer served stale; reverify has nothing to
    // verify on a pending row.
    let objects = site.objects();
    assert_eq!(objects.resync(&Scope::All, "t").unwrap().marked, 1);
    assert!(objects.stale_copy("a").unwrap().is_none());
    assert_eq!(objects.reverify(&Scope::All, "t").unwrap().skipped, 1);
    let counts = objects.counts().unwrap();
    assert_eq!(counts.progress.len(), 2, "{counts:?}");
    assert!(counts.progress[0].starts_with("resync of all objects asked by t"));

    // Fetched: the current version, verified; then a check finds it damaged: nothing.
    fetch_now(objects, "a").await;
    let local = objects.row("a").unwrap().unwrap().local.unwrap();
    objects
        .record_verification("a", &local, Err("rot".into()), now_ms())
        .await
        .unwrap();
    assert!(objects.stale_copy("a").unwrap().is_none());

    // A copy whose checksum matches is fetched again when an admin asks.
    fetch_now(objects, "a").await;
    assert!(matches!(
        objects.start_sync("a", now_ms()).unwrap(),
        SyncJob::Nothing
    ));
    objects.resync(&Scope::One("a".into()), "t").unwrap();
    assert!(matches!(
        objects.start_sync("a", now_ms()).unwrap(),
        SyncJob::Fetch(..)
    ));
    assert_counted(objects, "a resync");
}
