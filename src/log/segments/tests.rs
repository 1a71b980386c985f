use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::sim::SimIo;
use super::*;
use crate::log::GENESIS;

/// `n` chained entries after `prev` (at index `prev.index`), payloads of `size` bytes.
fn chain(prev: Head, n: usize, size: usize) -> Vec<Entry> {
    let mut hash = prev.hash;
    (0..n as u64)
        .map(|i| {
            let index = prev.index + 1 + i;
            let e = Entry::new(&hash, index, 1, 0, "a".into(), vec![index as u8; size]);
            hash = e.hash;
            e
        })
        .collect()
}

fn record_of(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_into(&mut out, &entry.encode());
    out
}

fn small(segment_bytes: u64) -> Options {
    Options { segment_bytes }
}

fn open_std(dir: &Path, opts: Options) -> Result<(SegmentLog, Recovery), LogStoreError> {
    SegmentLog::open(dir, Arc::new(StdIo), opts)
}

const FIRST: &str = "00000000000000000001.seg";

#[tokio::test]
async fn appends_reads_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let entries = chain(Head::default(), 5, 10);
    {
        let (log, recovery) = open_std(dir.path(), Options::default()).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(log.head(), Head::default());
        assert_eq!(log.append(&entries[..2]).await.unwrap(), 2);
        assert_eq!(log.append(&entries[2..]).await.unwrap(), 5);
        assert_eq!(log.read(3).unwrap().unwrap(), entries[2]);
        assert!(log.read(0).unwrap().is_none());
        assert!(log.read(6).unwrap().is_none());
        assert_eq!(log.range(2, 2).unwrap(), entries[1..3]);
        assert_eq!(log.range(4, 100).unwrap(), entries[3..]);
        log.close().await;
    }
    let (log, recovery) = open_std(dir.path(), Options::default()).unwrap();
    assert_eq!(
        (recovery.segments, recovery.entries, recovery.cut),
        (1, 5, None)
    );
    assert_eq!(log.head().hash, entries[4].hash);
    assert_eq!(log.range(1, 10).unwrap(), entries);
}

#[tokio::test]
async fn refuses_an_index_out_of_order_and_an_oversized_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_std(dir.path(), Options::default()).unwrap();
    let entries = chain(Head::default(), 3, 1);
    let err = log.append(&entries[1..]).await.unwrap_err();
    assert!(
        matches!(
            err,
            LogStoreError::NotContiguous {
                expected: 1,
                got: 2
            }
        ),
        "{err}"
    );
    let gap = [entries[0].clone(), entries[2].clone()];
    assert!(matches!(
        log.append(&gap).await.unwrap_err(),
        LogStoreError::NotContiguous { expected: 2, .. }
    ));
    let big = Entry::new(&GENESIS, 1, 1, 0, "a".into(), vec![0; record::MAX_ENTRY]);
    assert!(matches!(
        log.append(&[big]).await.unwrap_err(),
        LogStoreError::TooLarge { index: 1, .. }
    ));
    assert_eq!(log.head().index, 0);
    assert_eq!(log.append(&entries).await.unwrap(), 3);
}

#[tokio::test]
async fn segments_rotate_and_read_across() {
    let dir = tempfile::tempdir().unwrap();
    let entries = chain(Head::default(), 40, 100);
    {
        let (log, _) = open_std(dir.path(), small(1000)).unwrap();
        for batch in entries.chunks(7) {
            log.append(batch).await.unwrap();
        }
        assert_eq!(log.range(1, 100).unwrap(), entries);
        log.close().await;
    }
    let segments = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect::<Vec<_>>()
    };
    let files = segments().len();
    assert!(files > 4, "{files} segments");
    for seg in segments() {
        let len = seg.metadata().unwrap().len();
        assert!(len <= 1000, "a segment of {len} bytes");
    }
    let (log, recovery) = open_std(dir.path(), small(1000)).unwrap();
    assert_eq!((recovery.segments, recovery.entries), (files, 40));
    assert_eq!(log.range(1, 100).unwrap(), entries);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(log.read(i as u64 + 1).unwrap().as_ref(), Some(e));
    }
    let more = chain(log.head(), 3, 100);
    assert_eq!(log.append(&more).await.unwrap(), 43);
}

/// Writes three entries, closes, and hands back the first segment's path and the records.
async fn three_entries(dir: &Path) -> (PathBuf, Vec<Entry>) {
    let entries = chain(Head::default(), 4, 60);
    let (log, _) = open_std(dir, Options::default()).unwrap();
    log.append(&entries[..3]).await.unwrap();
    log.close().await;
    (dir.join(FIRST), entries)
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

async fn assert_cut(dir: &Path, entries: &[Entry], kept: u64, bytes: u64, reason: &str) {
    let (log, recovery) = open_std(dir, Options::default()).unwrap();
    let cut = recovery.cut.clone().expect("a cut");
    assert_eq!(
        (cut.segment.as_str(), cut.bytes, cut.reason),
        (FIRST, bytes, reason)
    );
    assert_eq!(log.head().index, kept);
    assert_eq!(log.range(1, 10).unwrap(), entries[..kept as usize]);
    let len = std::fs::metadata(dir.join(FIRST)).unwrap().len();
    assert_eq!(cut.offset, len);
    // The store goes on from there, and the next open finds nothing to cut.
    let next = chain(log.head(), 1, 5);
    log.append(&next).await.unwrap();
    log.close().await;
    drop(log);
    let (log, recovery) = open_std(dir, Options::default()).unwrap();
    assert_eq!(recovery.cut, None);
    assert_eq!(log.head().index, kept + 1);
}

#[tokio::test]
async fn a_torn_header_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = three_entries(dir.path()).await;
    append_bytes(&path, &record_of(&entries[3])[..5]);
    assert_cut(dir.path(), &entries, 3, 5, "short header").await;
}

#[tokio::test]
async fn a_torn_body_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = three_entries(dir.path()).await;
    append_bytes(&path, &record_of(&entries[3])[..50]);
    assert_cut(dir.path(), &entries, 3, 50, "short record").await;
}

#[tokio::test]
async fn a_bad_checksum_in_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = three_entries(dir.path()).await;
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip(&path, len - 3);
    let last = record_of(&entries[2]).len() as u64;
    assert_cut(
        dir.path(),
        &entries,
        2,
        last,
        "checksum mismatch in the last record",
    )
    .await;
}

#[tokio::test]
async fn a_bad_checksum_before_the_tail_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = three_entries(dir.path()).await;
    let second = record_of(&entries[0]).len();
    flip(&path, second + 20);
    let before = std::fs::read(&path).unwrap();
    let err = open_std(dir.path(), Options::default())
        .err()
        .expect("corrupt");
    match &err {
        LogStoreError::Corrupt {
            segment, offset, ..
        } => assert_eq!((segment.as_str(), *offset), (FIRST, second as u64)),
        other => panic!("{other}"),
    }
    assert_eq!(Classify::kind(&err), ErrorKind::Internal);
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was cut");
}

#[tokio::test]
async fn damage_in_a_segment_before_the_last_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open_std(dir.path(), small(300)).unwrap();
        log.append(&chain(Head::default(), 6, 100)).await.unwrap();
        log.close().await;
    }
    // A torn tail is only a torn tail at the very end of the log.
    let path = dir.path().join(FIRST);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let err = open_std(dir.path(), small(300)).err().expect("corrupt");
    assert!(
        matches!(&err, LogStoreError::Corrupt { segment, .. } if segment == FIRST),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_segment_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open_std(dir.path(), small(300)).unwrap();
        log.append(&chain(Head::default(), 6, 100)).await.unwrap();
        log.close().await;
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 3);
    std::fs::remove_file(dir.path().join(&names[1])).unwrap();
    let err = open_std(dir.path(), small(300)).err().expect("corrupt");
    assert!(err.to_string().contains("the log continues at"), "{err}");
}

#[tokio::test]
async fn a_failed_sync_stops_the_store_until_reopened() {
    let sim = SimIo::new();
    let (log, _) = SegmentLog::open("/l", Arc::new(sim.clone()), Options::default()).unwrap();
    let entries = chain(Head::default(), 3, 10);
    log.append(&entries[..1]).await.unwrap();
    sim.fail_after(1); // the write goes through, the sync fails
    let err = log.append(&entries[1..2]).await.unwrap_err();
    assert!(matches!(err, LogStoreError::Failed { .. }), "{err}");
    assert!(matches!(
        log.submit(&entries[1..2]),
        Err(LogStoreError::Failed { .. })
    ));
    assert_eq!(log.head().index, 1, "nothing unsynced is served");
    log.close().await;
    sim.power_loss(&mut StdRng::seed_from_u64(1));
    let (log, _) = SegmentLog::open("/l", Arc::new(sim.clone()), Options::default()).unwrap();
    // Entry 1 was acknowledged; entry 2 was written but never synced: it may or may not
    // have reached the disk, whole.
    let head = log.head().index;
    assert!(head == 1 || head == 2, "{head}");
    assert_eq!(log.range(1, 10).unwrap(), entries[..head as usize]);
    assert_eq!(
        log.append(&chain(log.head(), 1, 1)).await.unwrap(),
        head + 1
    );
}

#[tokio::test]
async fn after_a_failed_sync_nothing_unsynced_is_read_back_by_the_next_open() {
    let sim = SimIo::new();
    let (log, _) = SegmentLog::open("/l", Arc::new(sim.clone()), Options::default()).unwrap();
    let entries = chain(Head::default(), 2, 10);
    log.append(&entries[..1]).await.unwrap();
    // The write goes through, the sync fails with EIO: the bytes of entry 2 are in memory,
    // perhaps not on the disk, and a later sync would not write them again.
    sim.fail_once_after(1);
    let err = log.append(&entries[1..2]).await.unwrap_err();
    assert!(matches!(err, LogStoreError::Failed { .. }), "{err}");
    log.close().await;
    log.release();
    // Opened again in the same process, no power lost: entry 2 is not served.
    let (log, _) = SegmentLog::open("/l", Arc::new(sim.clone()), Options::default()).unwrap();
    assert_eq!(log.head().index, 1);
    assert_eq!(log.range(1, 10).unwrap(), entries[..1]);
    assert_eq!(log.append(&entries[1..2]).await.unwrap(), 2);
}

/// `appenders` tasks append one entry at a time, `each` times; returns the appends.
async fn concurrent_appends(log: Arc<SegmentLog>, appenders: usize, each: usize) -> u64 {
    let chain_tip = Arc::new(Mutex::new(log.head()));
    let acked = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (log, tip, acked) = (log.clone(), chain_tip.clone(), acked.clone());
            tokio::spawn(async move {
                for _ in 0..each {
                    let pending = {
                        let mut tip = tip.lock().unwrap();
                        let e = chain(*tip, 1, 64).pop().unwrap();
                        let p = log.submit(std::slice::from_ref(&e)).unwrap();
                        *tip = Head {
                            index: e.index,
                            hash: e.hash,
                            epoch: e.epoch,
                        };
                        p
                    };
                    pending.durable().await.unwrap();
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    acked.load(Ordering::Relaxed)
}

#[tokio::test]
async fn concurrent_appends_share_syncs_in_the_simulation() {
    let sim = SimIo::new();
    let (log, _) = SegmentLog::open("/g", Arc::new(sim.clone()), Options::default()).unwrap();
    let log = Arc::new(log);
    let before = sim.syncs();
    let appends = concurrent_appends(log.clone(), 8, 25).await;
    let syncs = sim.syncs() - before;
    assert_eq!(appends, 200);
    assert_eq!(log.syncs(), syncs);
    assert!(syncs * 4 <= appends, "{syncs} syncs for {appends} appends");
    assert_eq!(log.range(1, 1000).unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_std(dir.path(), Options::default()).unwrap();
    let log = Arc::new(log);
    let appends = concurrent_appends(log.clone(), 8, 30).await;
    let syncs = log.syncs();
    assert_eq!(appends, 240);
    assert!(syncs < appends, "{syncs} syncs for {appends} appends");
    let all = log.range(1, 1000).unwrap();
    assert_eq!(all.len(), 240);
    let mut prev = GENESIS;
    for e in all {
        assert_eq!(e.chained_hash(&prev), e.hash);
        prev = e.hash;
    }
}
