//! The sync bandwidth limit against the rate it was set to, over ten seconds of transfer.
//!
//! For each rate (`BANDWIDTH_BENCH_RATES`, default `20MiB/s,50MiB/s`): a primary and a
//! secondary (release build) on loopback. The secondary is first selectively synced to a
//! prefix nothing has, and the primary gets 40 objects holding ten seconds' worth of bytes
//! at that rate (not timed). Then one `sites set` at the primary sets the secondary's sync
//! limit and turns selective sync off; the secondary backfills everything, 8 transfers at
//! a time sharing the one limit. Timed from that command's return until the secondary's
//! `/objects` counts every object synced. An unlimited run of the same size shows what the
//! machine does without a limit, so a rate near it would not prove the limit works.
//!
//! Run with `cargo bench --bench bandwidth`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;

const OBJECTS: usize = 40;
const SECONDS: f64 = 10.0;

/// Seconds the secondary takes to backfill `total` bytes once `limit` is set.
async fn backfill(limit: &str, total: u64) -> f64 {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let secondary = cluster.secondary("s1", &primary);
    let url = primary.url();
    let set = |args: &[&str]| {
        let mut all = vec!["sites", "set", "s1", "--addr", &url];
        all.extend_from_slice(args);
        let (code, out, err) = cluster.admin_cli(&all);
        assert_eq!(code, 0, "{out}{err}");
    };
    set(&["--selective-sync-prefix", "nothing-here/"]);
    let each = (total / OBJECTS as u64) as usize;
    for i in 0..OBJECTS {
        push(
            &primary,
            token,
            &format!("bench/{i}"),
            &noise(i as u64, each),
        )
        .await
        .expect("push");
    }
    eventually("the secondary knowing every object", || async {
        (secondary.object_counts().await["objects"] == OBJECTS as u64).then_some(())
    })
    .await;
    set(&["--sync-bandwidth-limit", limit, "--selective-sync-off"]);
    let start = Instant::now();
    let deadline = start + std::time::Duration::from_secs(600);
    poll_until_async(deadline, std::time::Duration::from_millis(20), || async {
        (secondary.object_counts().await["synced"] == OBJECTS as u64).then_some(())
    })
    .await
    .expect("the backfill ends");
    start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rates = std::env::var("BANDWIDTH_BENCH_RATES").unwrap_or("20MiB/s,50MiB/s".into());
    println!("| limit | bytes | took | measured rate | off by |");
    println!("| --- | --- | --- | --- | --- |");
    let mut largest = 0;
    for raw in rates.split(',') {
        let rate = geo_agent::types::parse_rate(raw).expect("a rate like 20MiB/s");
        let total = (rate as f64 * SECONDS) as u64;
        largest = largest.max(total);
        let took = backfill(raw, total).await;
        let measured = total as f64 / took;
        println!(
            "| {raw} | {} MiB | {took:.2} s | {:.2} MiB/s | {:+.1} % |",
            total >> 20,
            measured / (1 << 20) as f64,
            (measured / rate as f64 - 1.0) * 100.0
        );
    }
    let took = backfill("unlimited", largest).await;
    println!(
        "| unlimited | {} MiB | {took:.2} s | {:.2} MiB/s | |",
        largest >> 20,
        largest as f64 / took / (1 << 20) as f64
    );
}
