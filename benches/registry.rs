//! The object registry's hot path at scale: what `Objects::counts()` (every status report,
//! readiness answer, `/metrics` scrape and `/objects` page reads it) costs with 1,000,
//! 100,000 and 1,000,000 registry rows, and what a whole status render costs (this site's
//! report, its judgement and the Prometheus text, as `/metrics` builds them).
//!
//! Each size is loaded into a fresh secondary's database through the real apply path: the
//! event log's `apply_batch`, `LOAD_BATCH` put events per transaction, each recording a
//! catalog record, a pending registry row and a queue marker. Every sample first makes one
//! registry transition (a failed sync, then its deferral back to pending, alternately, on
//! names spread over the registry), as a busy secondary does between two status reports,
//! and then times the read. The transition itself is timed too, and so is
//! `Objects::open` after closing and opening the database again (three times; the OS page
//! cache stays warm). With one row in a hundred failed (spread over the registry), it times
//! what `geo-agent objects list --state failed --limit 100` asks of the registry (a page of
//! the state index, each name's row and catalog record), and a page of every row under a
//! prefix. The process RSS is printed after each load and after the
//! reads.
//!
//! `cargo bench --bench registry`. `REGISTRY_BENCH_SIZES=1000,100000` picks the sizes
//! (default `1000,100000,1000000`); `REGISTRY_BENCH_DIR` where the databases go (default:
//! the temp dir); `REGISTRY_BENCH_SECS` the time budget of each measured row (default 5;
//! at least 20 and at most 2,000 samples are taken).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geo_agent::log::{Entry, GENESIS};
use geo_agent::objects::{Event, Objects, StateFilter};
use geo_agent::settings::Settings;
use geo_agent::status::{metrics, Local, Reports};
use geo_agent::store::Store;
use geo_agent::types::Role;

/// Put events per `apply_batch` while loading (one transaction, one flush each).
const LOAD_BATCH: usize = 10_000;
const MIN_SAMPLES: usize = 20;
const MAX_SAMPLES: usize = 2_000;
/// Times the database is closed and opened again.
const RESTARTS: usize = 3;

fn main() {
    let sizes: Vec<usize> = std::env::var("REGISTRY_BENCH_SIZES")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("a size"))
                .collect()
        })
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000]);
    let budget = Duration::from_secs_f64(
        std::env::var("REGISTRY_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5.0),
    );
    let base = std::env::var_os("REGISTRY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");

    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>8}",
        "registry rows, measured", "p50", "p99", "max", "samples"
    );
    for size in sizes {
        let dir = tempfile::tempdir_in(&base).expect("a scratch directory");
        let started = Instant::now();
        let (store, objects) = rt.block_on(load(dir.path(), size));
        eprintln!(
            "loaded {size} rows in {:.1} s; RSS {} MiB",
            started.elapsed().as_secs_f64(),
            rss_mib()
        );
        let mut step = 0usize;
        // Each sample follows one transition, so nothing the site may cache still holds.
        let mut transition = || {
            let i = (step / 2).wrapping_mul(7919) % size;
            let (name, version) = (name(i), i as u64 + 1);
            if step.is_multiple_of(2) {
                objects
                    .fail_sync(&name, Some(version), "bench", 0, 1.0)
                    .expect("fail");
            } else {
                objects.defer_sync(&name, version, 0).expect("defer");
            }
            step += 1;
        };

        let moves = sample(budget, || {
            let t = Instant::now();
            transition();
            t.elapsed()
        });
        row(&format!("{size}: one transition"), &moves);

        let counts = sample(budget, || {
            transition();
            let t = Instant::now();
            let c = objects.counts().expect("counts");
            let took = t.elapsed();
            assert_eq!(c.objects, size as u64);
            took
        });
        row(&format!("{size}: counts()"), &counts);

        // One row in a hundred failed, spread over the registry, for the listings.
        for i in (0..size).step_by(100) {
            objects
                .fail_sync(&name(i), Some(i as u64 + 1), "bench failure", 0, 1.0)
                .expect("fail");
        }
        // Before each listing, one more failure (a failed sync, which only adds to the
        // failed rows: the alternating transition above would put them back to pending).
        let mut k = 0usize;
        let mut fail_one = || {
            let j = k.wrapping_mul(7919) % size;
            k += 1;
            objects
                .fail_sync(&name(j), Some(j as u64 + 1), "bench failure", 0, 1.0)
                .expect("fail");
        };
        let want = (size / 100).clamp(1, 100);
        let failed = sample(budget, || {
            fail_one();
            let t = Instant::now();
            let (page, _) = objects
                .list_rows(Some(StateFilter::Failed), "", "", 100)
                .expect("list");
            let took = t.elapsed();
            assert!(page.len() >= want, "{} of {want}", page.len());
            took
        });
        row(&format!("{size}: list failed, limit 100"), &failed);
        let prefixed = sample(budget, || {
            fail_one();
            let t = Instant::now();
            let (page, _) = objects
                .list_rows(None, &name(size / 2)[..10], "", 100)
                .expect("list");
            let took = t.elapsed();
            assert!(!page.is_empty());
            took
        });
        row(&format!("{size}: list a prefix, limit 100"), &prefixed);

        let reports = Reports::default();
        let render = sample(budget, || {
            transition();
            let t = Instant::now();
            let local = Local {
                settings: objects.settings(),
                objects: &objects,
                settings_follower: None,
                events_follower: None,
                reports: &reports,
                advertise_url: None,
            };
            let statuses = local.statuses().expect("statuses");
            let text = metrics::render(&metrics::Scrape {
                version: "bench",
                serving: true,
                fenced: false,
                statuses: &statuses,
                gate_decisions: Vec::new(),
                replication_errors: Default::default(),
                repairs: Default::default(),
                proxy: None,
                scheduled: None,
                tls_not_after: None,
            });
            let took = t.elapsed();
            assert!(text.contains("geo_objects"), "{text}");
            took
        });
        row(&format!("{size}: status + metrics render"), &render);
        eprintln!("after the reads: RSS {} MiB", rss_mib());

        // A restart: the database closed and opened again (sled's cache starts empty), then
        // the objects, which read every row once (orphan collection, the counters' check).
        drop((objects, store));
        let mut opens = Vec::new();
        for _ in 0..RESTARTS {
            let (took, objects) = rt.block_on(reopen(dir.path()));
            opens.push(took);
            // Nothing to rebuild: the open only checks.
            assert_eq!(objects.counters_rebuilt(), None);
            assert_eq!(objects.index_rebuilt(), None);
            drop(objects);
        }
        opens.sort();
        row(&format!("{size}: Objects::open after a restart"), &opens);
    }
}

/// Opens the database under `dir` again, once sled has let go of it; the time
/// `Objects::open` took.
async fn reopen(dir: &Path) -> (Duration, Objects) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let store = loop {
        match Store::open(dir) {
            Ok(store) => break store,
            Err(e) if e.to_string().contains("lock") && Instant::now() < deadline => {
                std::thread::yield_now()
            }
            Err(e) => panic!("cannot open the store again: {e}"),
        }
    };
    let settings = Arc::new(
        Settings::open(store.clone(), "s1", Role::Secondary, Some("p".into()), None)
            .await
            .expect("open the settings"),
    );
    let t = Instant::now();
    let objects = Objects::open(&store, dir, settings)
        .await
        .expect("open the objects again");
    (t.elapsed(), objects)
}

fn name(i: usize) -> String {
    format!("bench/{i:07}")
}

/// A secondary holding `size` objects, one put event each, applied in batches.
async fn load(dir: &Path, size: usize) -> (Store, Objects) {
    let store = Store::open(dir).expect("open the store");
    let settings = Arc::new(
        Settings::open(store.clone(), "s1", Role::Secondary, Some("p".into()), None)
            .await
            .expect("open the settings"),
    );
    let objects = Objects::open(&store, dir, settings)
        .await
        .expect("open the objects");
    let mut hash = GENESIS;
    let mut index = 0u64;
    while (index as usize) < size {
        let end = (index as usize + LOAD_BATCH).min(size);
        let mut batch = Vec::with_capacity(end - index as usize);
        for i in index as usize..end {
            let event = Event::Put {
                name: name(i),
                kind: "blob".into(),
                size: 1,
                sha256: format!("{i:064x}"),
            };
            let entry = Entry::new(&hash, i as u64 + 1, 1, 0, "bench".into(), event.encode());
            hash = entry.hash;
            batch.push(entry);
        }
        index = end as u64;
        objects.log().apply_batch(batch).await.expect("apply");
    }
    (store, objects)
}

/// Runs `f` until `budget` is spent (within the sample bounds); its durations, sorted.
fn sample(budget: Duration, mut f: impl FnMut() -> Duration) -> Vec<Duration> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < MIN_SAMPLES || (out.len() < MAX_SAMPLES && start.elapsed() < budget) {
        out.push(f());
    }
    out.sort();
    out
}

fn row(label: &str, sorted: &[Duration]) {
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<34} {:>10} {:>10} {:>10} {:>8}",
        show(at(0.5)),
        show(at(0.99)),
        show(sorted[sorted.len() - 1]),
        sorted.len()
    );
}

fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// This process's resident set, from `/proc/self/status`.
fn rss_mib() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: Option<u64> = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}
