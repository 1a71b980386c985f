//! Peak RSS: how much memory a 1 GiB transfer takes. `VmHWM` in `/proc/<pid>/status` of a
//! fresh primary (a real `geo-agent run` process from the release build, on loopback)
//! while a 1 GiB file of random bytes is pushed to it with the CLI (`geo-agent push`); then
//! of a fresh secondary while it syncs that object (and of the primary serving it); then of
//! the secondary while it forwards a 1 GiB push (the same bytes under the same name, so the
//! secondary has nothing to fetch after it). Between the parts the peak is reset by writing
//! `5` to `/proc/<pid>/clear_refs`. Beside each: the RSS before the transfer, its time,
//! and the CPU seconds every other process used meanwhile.
//!
//! Environment (see `benches/support/mod.rs`): `OBJECTS_BENCH_SCALE` (the object's size),
//! `OBJECTS_BENCH_DIR`, `OBJECTS_BENCH_KEEP`, `OBJECTS_BENCH_SYNC_CONCURRENCY`,
//! `OBJECTS_BENCH_SECONDARY_ARGS`, `OBJECTS_BENCH_STRACE`, `GEO_AGENT_BIN`.
//!
//! Run with `cargo bench --bench rss`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use support::*;

fn main() {
    support::run("rss", |bench, rt| peak_rss(bench, rt, bench.big_object()));
}

fn peak_rss(bench: &Bench, rt: &tokio::runtime::Runtime, size: u64) -> String {
    let file = bench.dir.join("rss-object");
    write_random_file(&file, size);
    let label = size_label(size);
    eprintln!("peak RSS: pushing {label} to a fresh primary with the CLI…");
    let mut primary = bench.primary("primary");
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let idle = primary.status_kib("VmHWM");
    let (meter, p0) = (Meter::start(), primary.cpu().total());
    let (push, took) = cli_push(bench, &primary, "rss/object", &file);
    assert!(push, "the CLI push to the primary failed");
    let primary_push = primary.status_kib("VmHWM");
    let other_push = meter.other(primary.cpu().total() - p0);
    eprintln!(
        "  pushed in {:.1} s: primary VmHWM {} MiB (idle {} MiB)",
        took.as_secs_f64(),
        mib(primary_push),
        mib(idle)
    );
    let mut table = Table::new(&["VmHWM MiB", "idle MiB", "seconds", "MB/s", "other"]);
    table.section(&format!("one {label} object"));
    let rate = |d: Duration| format!("{:.0}", size as f64 / 1e6 / d.as_secs_f64());
    table.row(
        "primary, taking a CLI push",
        &[
            mib(primary_push),
            mib(idle),
            format!("{:.2}", took.as_secs_f64()),
            rate(took),
            format!("{other_push:.2}"),
        ],
    );

    // A fresh secondary syncs it (the primary serves it).
    let reset = primary.reset_peak();
    let (meter, p0) = (Meter::start(), primary.cpu().total());
    let since = Instant::now();
    let mut secondary = bench.secondary("secondary", &primary);
    let head = primary.counts().events_applied;
    let secondary_idle = secondary.status_kib("VmRSS");
    let waited = secondary.wait_caught_up(bench, rt, since, head, 1);
    let secondary_sync = secondary.status_kib("VmHWM");
    let primary_serve = primary.status_kib("VmHWM");
    let other_sync = meter.other(primary.cpu().total() - p0 + secondary.cpu().total());
    table.row(
        "secondary, syncing it (spawn -> synced)",
        &[
            mib(secondary_sync),
            mib(secondary_idle),
            format!("{:.2}", waited.done.as_secs_f64()),
            rate(waited.done),
            format!("{other_sync:.2}"),
        ],
    );
    table.row(
        if reset {
            "primary, serving it to the secondary"
        } else {
            "primary, serving it (peak not reset: includes the push)"
        },
        &[
            mib(primary_serve),
            String::new(),
            String::new(),
            String::new(),
        ],
    );

    // The secondary forwards a push of the same bytes under the same name (nothing to
    // fetch afterwards, so its peak is the forward's alone).
    let reset_s = secondary.reset_peak();
    let reset_p = primary.reset_peak();
    let secondary_before = secondary.status_kib("VmRSS");
    let (meter, c0) = (
        Meter::start(),
        primary.cpu().total() + secondary.cpu().total(),
    );
    let (push, took) = cli_push(bench, &secondary, "rss/object", &file);
    assert!(push, "the CLI push through the secondary failed");
    let secondary_forward = secondary.status_kib("VmHWM");
    let primary_forwarded = primary.status_kib("VmHWM");
    let other_forward = meter.other(primary.cpu().total() + secondary.cpu().total() - c0);
    let head = primary.counts().events_applied;
    secondary.wait_caught_up(bench, rt, Instant::now(), head, 1);
    table.row(
        if reset_s {
            "secondary, forwarding a CLI push"
        } else {
            "secondary, forwarding a CLI push (peak not reset: includes the sync)"
        },
        &[
            mib(secondary_forward),
            mib(secondary_before),
            format!("{:.2}", took.as_secs_f64()),
            rate(took),
            format!("{other_forward:.2}"),
        ],
    );
    table.row(
        if reset_p {
            "primary, taking that forwarded push"
        } else {
            "primary, taking that forwarded push (peak not reset)"
        },
        &[
            mib(primary_forwarded),
            String::new(),
            String::new(),
            String::new(),
        ],
    );
    secondary.stop();
    primary.stop();
    let _ = std::fs::remove_file(&file);
    format!(
        "peak RSS (VmHWM; 'idle' is the RSS before the transfer; MB = 10^6 bytes; other = CPU \
         seconds of every other process but the bench and the CLI meanwhile)\n{}",
        table.render()
    )
}
