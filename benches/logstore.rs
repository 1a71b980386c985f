//! The segment log store on the real file system: 4 KiB entries appended by 1, 4 and 16
//! concurrent appenders (each waits for its own acknowledgement, i.e. its `fdatasync`),
//! beside a bare `write + fdatasync` loop on the same disk as the floor. Then the whole
//! `Log` as the primary's event log uses it (`Log::append` of a push's event: queued, synced,
//! applied to the sled state, published), by 1 and 16 concurrent appenders.
//!
//! `cargo bench --bench logstore`; `LOGSTORE_SECS` (default 3) per row, `LOGSTORE_DIR`
//! (default: the current directory) for where the files go.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geo_agent::log::segments::{Options, SegmentLog, StdIo};
use geo_agent::log::{Entry, Head, Log};
use geo_agent::objects::catalog::{Event, EventsMachine};
use geo_agent::store::Store;

const ENTRY_PAYLOAD: usize = 4096;

fn main() {
    let secs: u64 = std::env::var("LOGSTORE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let base = std::env::var("LOGSTORE_DIR").unwrap_or_else(|_| ".".into());
    let run_for = Duration::from_secs(secs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    println!(
        "{:<44} {:>10} {:>10} {:>12}",
        "log store, 4 KiB entries", "entries/s", "syncs/s", "entries/sync"
    );
    let floor = bare_fdatasync(&base, run_for);
    println!(
        "{:<44} {:>10.0} {:>10.0} {:>12.2}",
        "floor: write 4 KiB + fdatasync, one thread", floor, floor, 1.0
    );
    for appenders in [1usize, 4, 16] {
        let (entries, syncs, took) = rt.block_on(store_run(&base, appenders, run_for));
        let secs = took.as_secs_f64();
        println!(
            "{:<44} {:>10.0} {:>10.0} {:>12.2}",
            format!("segment log, {appenders} concurrent appender(s)"),
            entries as f64 / secs,
            syncs as f64 / secs,
            entries as f64 / syncs.max(1) as f64
        );
    }
    for appenders in [1usize, 16] {
        let (entries, syncs, took) = rt.block_on(log_run(&base, appenders, run_for));
        let secs = took.as_secs_f64();
        println!(
            "{:<44} {:>10.0} {:>10.0} {:>12.2}",
            format!("event log (Log::append), {appenders} appender(s)"),
            entries as f64 / secs,
            syncs as f64 / secs,
            entries as f64 / syncs.max(1) as f64
        );
    }
}

/// `Log::append` of push events (a new name each) by `appenders` tasks.
async fn log_run(base: &str, appenders: usize, run_for: Duration) -> (u64, u64, Duration) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let machine = EventsMachine {
        authoritative: true,
        selection: Default::default(),
    };
    let log = Arc::new(Log::open(&store, "events", machine).await.unwrap());
    let syncs_before = log.syncs();
    let appended = Arc::clone(&log);
    let (acked, took) = drive(appenders, run_for, move |a, i| {
        let log = Arc::clone(&appended);
        async move {
            let event = Event::Put {
                name: format!("bench/{a}/{i}"),
                kind: "upload".into(),
                size: 4096,
                sha256: format!("{i:064x}"),
            };
            log.append(1, "bench", event.encode()).await.unwrap();
        }
    })
    .await;
    let syncs = log.syncs() - syncs_before;
    log.close().await;
    (acked, syncs, took)
}

/// Runs `appenders` tasks for `run_for`, each calling `append(task, n)` for its n-th
/// append and waiting for it; returns how many appends finished and how long it took.
async fn drive<F, Fut>(appenders: usize, run_for: Duration, append: F) -> (u64, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let append = Arc::new(append);
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let (append, acked) = (Arc::clone(&append), Arc::clone(&acked));
            tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < run_for {
                    append(a, i).await;
                    acked.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (acked.load(Ordering::Relaxed), start.elapsed())
}

/// Appends (4 KiB) per second of one thread that writes and `fdatasync`s each.
fn bare_fdatasync(base: &str, run_for: Duration) -> f64 {
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut file = std::fs::File::create(dir.path().join("floor")).unwrap();
    let block = vec![7u8; ENTRY_PAYLOAD + 100];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run_for {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn store_run(base: &str, appenders: usize, run_for: Duration) -> (u64, u64, Duration) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let (log, _) = SegmentLog::open(dir.path(), Arc::new(StdIo), Options::default()).unwrap();
    let log = Arc::new(log);
    let tip = Arc::new(Mutex::new(Head::default()));
    let syncs_before = log.syncs();
    let appended = Arc::clone(&log);
    let (acked, took) = drive(appenders, run_for, move |_, _| {
        let pending = {
            let mut tip = tip.lock().unwrap();
            let e = Entry::new(
                &tip.hash,
                tip.index + 1,
                1,
                0,
                "bench".into(),
                vec![tip.index as u8; ENTRY_PAYLOAD],
            );
            *tip = Head {
                index: e.index,
                hash: e.hash,
                epoch: 1,
            };
            appended.submit(&[e]).unwrap()
        };
        async move {
            pending.durable().await.unwrap();
        }
    })
    .await;
    let syncs = log.syncs() - syncs_before;
    log.close().await;
    (acked, syncs, took)
}
