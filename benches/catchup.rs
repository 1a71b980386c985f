//! Catch-up: how fast a secondary that was not running catches up on a long event log.
//!
//! A fresh primary (a real `geo-agent run` process from the release build, on loopback)
//! commits 100,000 pushes of tiny objects over 1,000 names (100 versions each, every version
//! different bytes; 16 pushes at a time from the bench over gRPC). Then a fresh secondary
//! starts and is timed until its event log is at the primary's head (events/s: when a
//! `StreamEvents` call on the secondary from that index delivers the entry, i.e. once it
//! is durable there), and until every object is synced (the first `/objects` that says
//! so; before, the bench only counts the files in the secondary's object directory). The
//! CPU seconds of the secondary, the primary and every other process are reported beside.
//!
//! Environment (see `benches/support/mod.rs`): `OBJECTS_BENCH_SCALE` (the pushes and
//! names), `OBJECTS_BENCH_DIR`, `OBJECTS_BENCH_KEEP`, `OBJECTS_BENCH_SYNC_CONCURRENCY`,
//! `OBJECTS_BENCH_SECONDARY_ARGS`, `OBJECTS_BENCH_STRACE`, `GEO_AGENT_BIN`.
//!
//! Run with `cargo bench --bench catchup`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use support::*;

fn main() {
    support::run("catchup", |bench, rt| {
        let events = bench.scaled(100_000.0);
        let names = (events / 100).max(1);
        catch_up(bench, rt, events, names)
    });
}

fn catch_up(bench: &Bench, rt: &tokio::runtime::Runtime, events: usize, names: usize) -> String {
    eprintln!(
        "catch-up: {} pushes over {} names to a fresh primary…",
        group(events as u64),
        group(names as u64)
    );
    let mut primary = bench.primary("primary");
    let items: Vec<_> = (0..events)
        .map(|i| {
            let name = format!("catchup/o{:05}", i % names);
            // Every version different bytes, so each push is a new file on the primary.
            (name, move || {
                format!("version {i} of a tiny object\n").into_bytes()
            })
        })
        .collect();
    let (meter, primary_cpu) = (Meter::start(), primary.cpu());
    let t = Instant::now();
    rt.block_on(push_all(&primary, &bench.admin_token, items, 16));
    let pushed = t.elapsed();
    let push_cpu = primary.cpu() - primary_cpu;
    let push_other = meter.other(push_cpu.total());
    eprintln!(
        "  primary CPU during the pushes: {push_cpu:?}; by thread: {}",
        primary.thread_cpu()
    );
    let at_primary = primary.counts();
    let head = at_primary.events_applied;
    assert_eq!(at_primary.objects, names as u64, "{at_primary:?}");
    assert!(head >= events as u64, "{at_primary:?}");
    eprintln!(
        "  {} pushes in {:.1} s ({:.0}/s)",
        group(events as u64),
        pushed.as_secs_f64(),
        events as f64 / pushed.as_secs_f64()
    );
    sync_disks();
    let (meter, primary_cpu) = (Meter::start(), primary.cpu());
    let since = Instant::now();
    let mut secondary = bench.secondary("secondary", &primary);
    let n = names as u64;
    let waited = secondary.wait_caught_up(bench, rt, since, head, n);
    let (secondary_cpu, serving_cpu) = (secondary.cpu(), primary.cpu() - primary_cpu);
    let other = meter.other(secondary_cpu.total() + serving_cpu.total());
    eprintln!(
        "  head after {:.2} s, all synced after {:.2} s ({} polls of {:.1} ms); CPU: \
         secondary {secondary_cpu:?}, primary {serving_cpu:?}, others {other:.2} s; {:?}",
        waited.head.as_secs_f64(),
        waited.done.as_secs_f64(),
        waited.polls,
        waited.poll_mean.as_secs_f64() * 1e3,
        waited.last
    );
    secondary.stop();
    primary.stop();

    let mut table = Table::new(&["seconds", "events/s", "dst cpu", "src cpu", "other"]);
    table.section(&format!(
        "{} events ({} pushes over {} names, ~40 B each), secondary started after",
        group(head),
        group(events as u64),
        group(n)
    ));
    table.row(
        "spawn -> event log at the primary's head",
        &[
            format!("{:.2}", waited.head.as_secs_f64()),
            format!("{:.0}", head as f64 / waited.head.as_secs_f64()),
        ],
    );
    table.row(
        &format!("spawn -> all {} objects synced", group(n)),
        &[
            format!("{:.2}", waited.done.as_secs_f64()),
            String::new(),
            format!("{:.2}", secondary_cpu.total()),
            format!("{:.2}", serving_cpu.total()),
            format!("{other:.2}"),
        ],
    );
    table.row(
        "for scale: the primary committing the pushes (16 at a time)",
        &[
            format!("{:.2}", pushed.as_secs_f64()),
            format!("{:.0}", events as f64 / pushed.as_secs_f64()),
            format!("{:.2}", push_cpu.total()),
            String::new(),
            format!("{push_other:.2}"),
        ],
    );
    format!(
        "catch-up of a secondary that was not running (CPU seconds: the secondary (dst), \
         the primary (src), every other process but the bench (other))\n{}",
        table.render()
    )
}
