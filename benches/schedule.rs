//! How close to its time a scheduled maintenance window starts: a real primary process
//! (and one secondary) on loopback; each round schedules a window 1 s ahead with
//! `AdminService.ScheduleMaintenance`, waits until the mode is on at both sites (read from
//! `ModeService.WatchMode` streams opened beforehand), then ends the window with
//! `SetMaintenanceMode(false)`. Per round, against the window's start:
//!
//! - **entry**: the settings entry's timestamp (the primary's clock when its scheduler
//!   appended the step; `updated_at`);
//! - **primary**: when the bench saw the mode on at the primary (the entry is durable and
//!   applied there by then);
//! - **secondary**: when it saw it on at the secondary.
//!
//! Everything runs on one machine, so the sites and the bench share one wall clock.
//! `SCHEDULE_BENCH_ROUNDS` (default 30) sets the rounds; `GEO_AGENT_BIN` another binary.
//!
//! Run with `cargo bench --bench schedule`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{bearer, DEADLINE};
use geo_agent::server::pb;
use support::*;

/// How far ahead each window starts.
const LEAD_MS: i64 = 1_000;

fn main() {
    support::run("schedule", |bench, rt| rt.block_on(measure(bench)));
}

fn now_ms() -> i64 {
    geo_agent::log::now_ms()
}

/// Reads `stream` until the mode is `on`; returns when that state arrived and the state.
async fn until_mode(
    stream: &mut tonic::Streaming<pb::ModeState>,
    on: bool,
) -> (i64, pb::ModeState) {
    loop {
        let next = tokio::time::timeout(DEADLINE, stream.message()).await;
        let state = next
            .expect("the mode changes in time")
            .expect("the watch stream")
            .expect("the watch stream stays open");
        if state.maintenance_mode == on {
            return (now_ms(), state);
        }
    }
}

fn summary(label: &str, table: &mut Table, mut ms: Vec<i64>) {
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    table.row(
        label,
        &[
            at(0.0).to_string(),
            at(0.5).to_string(),
            at(0.9).to_string(),
            at(1.0).to_string(),
        ],
    );
}

async fn measure(bench: &Bench) -> String {
    let rounds: usize = env_or("SCHEDULE_BENCH_ROUNDS", 30).max(1);
    let primary = bench.primary("primary");
    let secondary = bench.secondary("s1", &primary);
    let token = &bench.admin_token;
    let mut admin = primary.admin().await;
    async fn watch(site: &common::SiteProc) -> tonic::Streaming<pb::ModeState> {
        site.mode()
            .await
            .watch_mode(pb::WatchModeRequest {})
            .await
            .expect("watch the mode")
            .into_inner()
    }
    let (mut at_primary, mut at_secondary) = (watch(&primary).await, watch(&secondary).await);
    let (mut entry, mut seen_p, mut seen_s) = (vec![], vec![], vec![]);
    eprintln!("{rounds} windows, each scheduled {LEAD_MS} ms ahead…");
    for _ in 0..rounds {
        let start = now_ms() + LEAD_MS;
        let req = pb::ScheduleMaintenanceRequest {
            start: Some(prost_types::Timestamp {
                seconds: start.div_euclid(1000),
                nanos: (start.rem_euclid(1000) * 1_000_000) as i32,
            }),
            end: None,
            message: "bench window".into(),
            actor: "bench".into(),
        };
        admin
            .schedule_maintenance(bearer(req, token))
            .await
            .expect("schedule a window");
        let (p, state) = until_mode(&mut at_primary, true).await;
        let (s, _) = until_mode(&mut at_secondary, true).await;
        let updated = state.updated_at.expect("updated_at");
        let appended = updated.seconds * 1000 + i64::from(updated.nanos) / 1_000_000;
        assert_eq!(state.updated_by, "maintenance-schedule");
        entry.push(appended - start);
        seen_p.push(p - start);
        seen_s.push(s - start);
        let off = pb::SetMaintenanceModeRequest {
            enabled: false,
            message: String::new(),
            actor: "bench".into(),
        };
        admin
            .set_maintenance_mode(bearer(off, token))
            .await
            .expect("end the window");
        until_mode(&mut at_primary, false).await;
        until_mode(&mut at_secondary, false).await;
    }
    let mut table = Table::new(&["min ms", "p50 ms", "p90 ms", "max ms"]);
    table.section(&format!(
        "{rounds} windows: after its start, the mode went on (target: within 1 s at the primary)"
    ));
    summary("entry appended by the primary", &mut table, entry);
    summary("seen on at the primary", &mut table, seen_p);
    summary("seen on at the secondary", &mut table, seen_s);
    table.render()
}
