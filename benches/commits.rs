//! The primary's write path: how many small pushes a primary commits per second, one at a
//! time and 16 at a time, beside the floor of the same disk work done bare.
//!
//! A fresh primary (a real `geo-agent run` process from the release build, on loopback)
//! takes 20,000 pushes of 4 KiB over gRPC, each a new name, from 1 or 16 concurrent
//! clients (one HTTP/2 connection). Each push is acknowledged once its file is written,
//! fsynced and renamed into place (its directory fsynced) and its event is durable in the
//! event log (fdatasync, shared by concurrent pushes). The floor is the same file work
//! without anything else: write 4 KiB, fsync, rename into one of 256 shard directories,
//! fsync the directory, on 16 threads (`support::disk_floor`). The event log's syncs are
//! counted from its metrics.
//!
//! Environment (see `benches/support/mod.rs`): `OBJECTS_BENCH_SCALE` (the pushes),
//! `OBJECTS_BENCH_DIR`, `OBJECTS_BENCH_KEEP`, `GEO_AGENT_BIN`.
//!
//! Run with `cargo bench --bench commits`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use support::*;

const FILE: usize = 4096;

fn main() {
    support::run("commits", |bench, rt| {
        let pushes = bench.scaled(20_000.0);
        commits(bench, rt, pushes)
    });
}

fn commits(bench: &Bench, rt: &tokio::runtime::Runtime, pushes: usize) -> String {
    let set = DataSet::generate(&bench.dir.join("data"), "c", pushes, FILE);
    let mut table = Table::new(&["seconds", "commits/s", "vs floor", "usr", "sys"]);
    table.section(&format!(
        "{} pushes of 4 KiB, each a new name, to a fresh primary",
        group(pushes as u64)
    ));
    // The floor runs last: deleting its files first would leave the file system's inode
    // allocator skipping the recently freed inodes while the primary creates its files.
    let mut rows = Vec::new();
    for (label, clients, n) in [
        (
            "geo-agent, 1 client (one push at a time)",
            1,
            (pushes / 10).max(1),
        ),
        ("geo-agent, 16 concurrent clients", 16, pushes),
    ] {
        rows.push((label, n, push_set(bench, rt, &set, clients, n, label)));
    }
    sync_disks();
    let floor = disk_floor(&bench.dir.join("floor"), &set, 16);
    let floor_rate = pushes as f64 / floor.wall.as_secs_f64();
    for (label, n, (wall, cpu)) in rows {
        let rate = n as f64 / wall.as_secs_f64();
        table.row(
            &format!("{label} ({} pushes)", group(n as u64)),
            &[
                format!("{:.2}", wall.as_secs_f64()),
                format!("{rate:.0}"),
                format!("{:.2}", rate / floor_rate),
                format!("{:.2}", cpu.user),
                format!("{:.2}", cpu.sys),
            ],
        );
    }
    table.row(
        "floor: write+fsync+rename+fsync dir, 16 threads",
        &[
            format!("{:.2}", floor.wall.as_secs_f64()),
            format!("{floor_rate:.0}"),
            "1.00".into(),
            format!("{:.2}", floor.receiver.user),
            format!("{:.2}", floor.receiver.sys),
        ],
    );
    format!(
        "the primary's commits of small pushes (vs floor: commits/s over the floor's files/s; \
         usr, sys: CPU seconds of the primary, or of the floor's threads)\n{}",
        table.render()
    )
}

/// Pushes the first `n` files of `set` to a fresh primary, `clients` at a time; the time
/// and the primary's CPU seconds.
fn push_set(
    bench: &Bench,
    rt: &tokio::runtime::Runtime,
    set: &DataSet,
    clients: usize,
    n: usize,
    label: &str,
) -> (Duration, Cpu) {
    let mut primary = bench.primary(&format!("p{clients}"));
    let items: Vec<_> = set
        .files
        .iter()
        .take(n)
        .map(|(name, path)| {
            let path = path.clone();
            (format!("commits/{name}"), move || {
                std::fs::read(&path).expect("read a data-set file")
            })
        })
        .collect();
    sync_disks();
    let cpu = primary.cpu();
    let t = Instant::now();
    rt.block_on(push_all(&primary, &bench.admin_token, items, clients));
    let wall = t.elapsed();
    let cpu = primary.cpu() - cpu;
    let counts = primary.counts();
    assert_eq!(counts.objects, n as u64, "{counts:?}");
    eprintln!(
        "  {label}: {n} pushes in {:.2} s ({:.0}/s), primary CPU {cpu:?}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    primary.stop();
    (wall, cpu)
}
