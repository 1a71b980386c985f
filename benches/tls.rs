//! What TLS costs: the same measurements over plain gRPC and over mutual TLS (`--tls-cert`,
//! `--tls-key`, `--tls-ca`, `--require-client-cert` on every site; a CA, a site
//! certificate and a client certificate made with rcgen, ECDSA P-256), with real
//! `geo-agent run` processes from the release build on loopback:
//!
//! - a fresh secondary syncing 1,000 files of 1 MiB of random bytes from its primary,
//!   timed from its spawn until its `/objects` says every object is synced and its event
//!   log is at the primary's head, as `cargo bench --bench replication` times it (the
//!   filling of each transport's primary, 8 pushes at a time, is reported for scale);
//! - one `geo-agent push` of 1 GiB of random bytes to a fresh primary, as
//!   `cargo bench --bench rss` pushes it.
//!
//! Each runs `OBJECTS_BENCH_REPEAT` times per transport, the two taking turns; the median
//! counts, with the range and the ratio TLS / plain of the median times, and the CPU
//! seconds of the receiving side, the sending side and every other process.
//!
//! Environment (see `benches/support/mod.rs`): `OBJECTS_BENCH_SCALE` (the file count and
//! the object's size), `OBJECTS_BENCH_REPEAT` (default 3), `OBJECTS_BENCH_DIR`,
//! `OBJECTS_BENCH_KEEP`, `OBJECTS_BENCH_SYNC_CONCURRENCY`, `OBJECTS_BENCH_SECONDARY_ARGS`,
//! `OBJECTS_BENCH_STRACE`, `GEO_AGENT_BIN`.
//!
//! Run with `cargo bench --bench tls`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use support::*;

fn main() {
    support::run("tls", |bench, rt| {
        let set = bench.big_data_set();
        tls_cost(bench, rt, &set, bench.big_object())
    });
}

/// Plain gRPC against mutual TLS, in the same run: (a) a fresh secondary syncing `set` from
/// its primary, timed as the replication bench times it ([`geo_sync`]); (b) one
/// `geo-agent push` of `size` random bytes to a fresh primary ([`cli_push`]). Each is repeated
/// `OBJECTS_BENCH_REPEAT` times per transport; the transports take turns and swap who goes
/// first every run. The median counts.
fn tls_cost(bench: &Bench, rt: &tokio::runtime::Runtime, set: &DataSet, size: u64) -> String {
    let tls = bench.with_tls();
    let transports: [(&str, &Bench); 2] = [("plain gRPC", bench), ("mutual TLS", &tls)];
    let n = set.files.len() as u64;
    let bytes = set.bytes();

    // (a) One primary per transport, filled once (the fill is timed, for scale).
    let mut primaries = Vec::new();
    let mut fills = Vec::new();
    for (i, (label, b)) in transports.iter().enumerate() {
        eprintln!(
            "tls: {label}: pushing {} to a fresh primary…",
            set.describe()
        );
        let primary = b.primary(&format!("primary-{i}"));
        sync_disks();
        let (meter, p0, own) = (Meter::start(), primary.cpu(), own_cpu());
        let t = Instant::now();
        rt.block_on(push_all(
            &primary,
            &b.admin_token,
            push_items(set),
            PUSH_CONCURRENCY,
        ));
        let wall = t.elapsed();
        let receiver = primary.cpu() - p0;
        let client = own_cpu() - own;
        let fill = Transfer {
            wall,
            receiver,
            sender: Cpu {
                user: client,
                sys: 0.0,
            },
            other: meter.other(receiver.total()),
        };
        eprintln!(
            "  pushed in {:.2} s; primary CPU {:?}, bench (client) CPU {client:.2} s",
            wall.as_secs_f64(),
            fill.receiver
        );
        fills.push(fill);
        let c = primary.counts();
        assert_eq!(c.objects, n, "the primary holds every object: {c:?}");
        primaries.push((primary, c.events_applied));
    }
    let mut syncs: [Vec<Transfer>; 2] = [Vec::new(), Vec::new()];
    for run in 0..bench.repeat {
        eprintln!("tls: replication, run {} of {}", run + 1, bench.repeat);
        for k in 0..2 {
            let i = (run + k) % 2;
            let (label, b) = transports[i];
            let (primary, events) = &primaries[i];
            eprintln!("  {label}:");
            let (t, ..) = geo_sync(b, rt, primary, *events, n, b.sync_concurrency, false);
            syncs[i].push(t);
        }
    }
    for (mut primary, _) in primaries {
        primary.stop();
    }

    // (b) One CLI push of a big file to a fresh primary.
    let file = bench.dir.join("tls-object");
    write_random_file(&file, size);
    let mut cli: [Vec<Transfer>; 2] = [Vec::new(), Vec::new()];
    for run in 0..bench.repeat {
        eprintln!(
            "tls: geo-agent push of {}, run {} of {}",
            size_label(size),
            run + 1,
            bench.repeat
        );
        for k in 0..2 {
            let i = (run + k) % 2;
            let (label, b) = transports[i];
            let mut primary = b.primary("primary-push");
            sync_disks();
            let (meter, p0, c0) = (Meter::start(), primary.cpu(), children_cpu());
            let (ok, wall) = cli_push(b, &primary, "tls/object", &file);
            assert!(ok, "the CLI push ({label}) failed");
            let receiver = primary.cpu() - p0;
            // The CLI has exited and been reaped: its CPU is in the bench's children's.
            let sender = children_cpu() - c0;
            let other = meter.other(receiver.total());
            eprintln!(
                "  {label}: {:.2} s; primary {receiver:?} (by thread: {}); CLI {sender:?}",
                wall.as_secs_f64(),
                primary.thread_cpu()
            );
            primary.stop();
            cli[i].push(Transfer {
                wall,
                receiver,
                sender,
                other,
            });
        }
    }
    let _ = std::fs::remove_file(&file);

    let mut table = Table::new(&[
        "seconds",
        "range",
        "MB/s",
        "TLS/plain",
        "dst usr",
        "dst sys",
        "src cpu",
        "other",
    ]);
    let row = |t: &Transfer, bytes: u64, range: String, ratio: String| {
        let s = t.wall.as_secs_f64();
        [
            format!("{s:.2}"),
            range,
            format!("{:.0}", bytes as f64 / 1e6 / s),
            ratio,
            format!("{:.2}", t.receiver.user),
            format!("{:.2}", t.receiver.sys),
            format!("{:.2}", t.sender.total()),
            format!("{:.2}", t.other),
        ]
    };
    let rows = |table: &mut Table, what: &str, runs: &mut [Vec<Transfer>; 2], bytes: u64| {
        let plain = median_of(&mut runs[0]).wall.as_secs_f64();
        for (i, (label, _)) in transports.iter().enumerate() {
            let runs = &mut runs[i];
            let t = median_of(runs).wall.as_secs_f64();
            eprintln!(
                "tls: {label}: {what}: {}",
                runs.iter()
                    .map(|r| format!("{:.2} s", r.wall.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let range = format!(
                "{:.2}-{:.2}",
                runs[0].wall.as_secs_f64(),
                runs[runs.len() - 1].wall.as_secs_f64()
            );
            let ratio = format!("{:.2}", t / plain);
            let median = &runs[runs.len() / 2];
            table.row(
                &format!("{label}: {what}"),
                &row(median, bytes, range, ratio),
            );
        }
    };
    table.section(&format!(
        "{}: a fresh secondary, spawn -> all synced",
        set.describe()
    ));
    rows(&mut table, "secondary", &mut syncs, bytes);
    let fill_plain = fills[0].wall.as_secs_f64();
    for (fill, (label, _)) in fills.iter().zip(&transports) {
        table.row(
            &format!("for scale: {label}: filling the primary, 8 pushes at a time (1 run)"),
            &row(
                fill,
                bytes,
                String::new(),
                format!("{:.2}", fill.wall.as_secs_f64() / fill_plain),
            ),
        );
    }
    table.section(&format!(
        "one {} object: `geo-agent push` to a fresh primary",
        size_label(size)
    ));
    rows(&mut table, "geo-agent push", &mut cli, size);
    format!(
        "what TLS costs: plain gRPC against mutual TLS (both sides present certificates; \
         ECDSA P-256), {} runs each, taking turns (MB = 10^6 bytes; seconds: the median; \
         TLS/plain: the ratio of the median times; CPU seconds of the median run: the \
         receiving side (dst: the secondary; the primary taking a push), the sending side \
         (src: the primary serving the sync; the CLI; for the fills, the bench's own \
         process), and every other process (other))\n{}",
        bench.repeat,
        table.render()
    )
}
