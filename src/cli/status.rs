//! The runbook's questions: `status`, `maintenance status` and `failover check`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::client::{channel, report, Failure};
use super::ClientArgs;
use crate::config::parse_duration;
use crate::server::convert::{health_name, millis, rfc3339};
use crate::server::pb;

/// How often `failover check --wait` asks again.
const WAIT_POLL: Duration = Duration::from_millis(500);
pub const DEFAULT_WAIT_TIMEOUT: &str = "30m";

#[derive(clap::Args, Debug)]
pub struct FailoverCheckArgs {
    /// The secondary to promote [default: the site asked, when it is a secondary].
    #[arg(long)]
    pub site: Option<String>,
    /// Wait until ready (or the timeout), showing progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 90s, 30m.
    #[arg(long, default_value = DEFAULT_WAIT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn status(args: ClientArgs) -> u8 {
    report(status_inner(&args).await)
}

pub async fn failover_check(args: FailoverCheckArgs) -> u8 {
    report(failover_check_inner(&args).await)
}

fn pct(part: u64, total: u64) -> String {
    if total == 0 {
        "100%".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / total as f64)
    }
}

fn ago(t: &Option<prost_types::Timestamp>, now_ms: i64) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let ms = now_ms - millis(t);
            if ms < 1000 {
                "now".into()
            } else {
                format!("{:.1} s ago", ms as f64 / 1000.0)
            }
        }
    }
}

async fn status_inner(args: &ClientArgs) -> Result<u8, Failure> {
    let mut client = pb::StatusClient::new(channel(args).await?);
    let status = client
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await?
        .into_inner();
    let worst = status.sites.iter().map(|s| s.health).max().unwrap_or(0);
    if args.json {
        println!("{}", status_json(&status));
    } else {
        print!("{}", status_text(&status));
    }
    Ok(match pb::Health::try_from(worst) {
        Ok(pb::Health::Ok) => 0,
        Ok(pb::Health::Warning) => 1,
        _ => 2,
    })
}

fn status_text(status: &pb::ReplicationStatus) -> String {
    let now = status.generated_at.as_ref().map_or(0, millis);
    let mut out = format!(
        "{:<16} {:<9} {:>5} {:<5} {:<8} {:>13} {:>13} {:>22} {:>18} {}\n",
        "SITE",
        "ROLE",
        "EPOCH",
        "MODE",
        "HEALTH",
        "SETTINGS",
        "EVENTS",
        "SYNCED",
        "VERIFIED",
        "CONTACT"
    );
    for s in &status.sites {
        let r = s.report.clone().unwrap_or_default();
        let o = r.objects.unwrap_or_default();
        let role = match pb::Role::try_from(r.role) {
            Ok(pb::Role::Primary) => "primary",
            _ => "secondary",
        };
        let log = |p: &Option<pb::LogPosition>, head: u64| {
            format!("{}/{}", p.as_ref().map_or(0, |p| p.applied), head)
        };
        // A selectively synced site is judged on its selection: the objects it holds a row
        // for (synced, pending or failed).
        let selected = o.synced.saturating_add(o.pending).saturating_add(o.failed);
        let total = if o.selective_sync.is_some() {
            selected
        } else if role == "primary" {
            o.objects
        } else {
            // Against the primary's catalog when the primary answers.
            status
                .sites
                .first()
                .and_then(|p| p.report.as_ref())
                .and_then(|p| p.objects.as_ref())
                .map_or(o.objects, |p| p.objects.max(o.objects))
        };
        let mut synced = format!("{}/{} {}", o.synced, total, pct(o.synced, total));
        if o.failed > 0 {
            synced.push_str(&format!(" ({} failed)", o.failed));
        }
        out.push_str(&format!(
            "{:<16} {:<9} {:>5} {:<5} {:<8} {:>13} {:>13} {:>22} {:>18} {}\n",
            r.site_id,
            role,
            r.epoch,
            if r.maintenance_mode { "maint" } else { "-" },
            health_name(s.health),
            log(&r.settings, s.settings_head),
            log(&r.events, s.events_head),
            synced,
            format!("{}/{} {}", o.verified, total, pct(o.verified, total)),
            ago(&s.last_contact, now),
        ));
        // A resync or reverification an admin asked for.
        for line in &o.progress {
            out.push_str(&format!("    {:<14} {:<8} {line}\n", "objects", "progress"));
        }
        if let Some(sel) = &o.selective_sync {
            out.push_str(&format!(
                "    selective sync: {} — {selected} of {} objects selected, counts above are of the selection\n",
                selection_text(sel),
                o.objects
            ));
        }
        for c in &s.channels {
            if c.health != pb::Health::Ok as i32 {
                for reason in &c.reasons {
                    out.push_str(&format!(
                        "    {:<14} {:<8} {reason}\n",
                        c.name,
                        health_name(c.health)
                    ));
                }
            }
        }
    }
    out
}

fn status_json(status: &pb::ReplicationStatus) -> serde_json::Value {
    let position = |p: &Option<pb::LogPosition>, head: u64, lag: &Option<pb::Lag>| {
        let p = p.clone().unwrap_or_default();
        let lag = lag.unwrap_or_default();
        serde_json::json!({
            "applied": p.applied,
            "head": head,
            "lag_entries": lag.entries,
            "lag_seconds": lag.seconds,
            "follower": p.follower.map(|f| serde_json::json!({
                "state": match pb::FollowerState::try_from(f.state) {
                    Ok(pb::FollowerState::Following) => "following",
                    Ok(pb::FollowerState::Diverged) => "diverged",
                    Ok(pb::FollowerState::Refused) => "refused",
                    Ok(pb::FollowerState::PrimaryFenced) => "primary fenced",
                    _ => "connecting",
                },
                "error": f.error,
            })),
        })
    };
    let sites: Vec<_> = status
        .sites
        .iter()
        .map(|s| {
            let r = s.report.clone().unwrap_or_default();
            let o = r.objects.unwrap_or_default();
            let channels: serde_json::Map<_, _> = s
                .channels
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        serde_json::json!({"health": health_name(c.health), "reasons": c.reasons}),
                    )
                })
                .collect();
            serde_json::json!({
                "site_id": r.site_id,
                "role": match pb::Role::try_from(r.role) { Ok(pb::Role::Primary) => "primary", _ => "secondary" },
                "epoch": r.epoch,
                "maintenance_mode": r.maintenance_mode,
                "health": health_name(s.health),
                "channels": channels,
                "settings": position(&r.settings, s.settings_head, &s.settings_lag),
                "events": position(&r.events, s.events_head, &s.events_lag),
                "objects": {
                    "objects": o.objects, "synced": o.synced, "pending": o.pending,
                    "failed": o.failed, "verified": o.verified,
                    "verification_failed": o.verification_failed,
                    "selective_sync": o.selective_sync.as_ref().map(|s| serde_json::json!({
                        "prefixes": s.prefixes, "kinds": s.kinds,
                        "selected": o.synced.saturating_add(o.pending).saturating_add(o.failed),
                    })),
                },
                "writes_in_flight": r.writes_in_flight,
                "last_contact": rfc3339(&s.last_contact),
            })
        })
        .collect();
    serde_json::json!({
        "answered_by": status.answered_by,
        "generated_at": rfc3339(&status.generated_at),
        "sites": sites,
    })
}

async fn failover_check_inner(args: &FailoverCheckArgs) -> Result<u8, Failure> {
    let mut client = pb::StatusClient::new(channel(&args.client).await?);
    let req = pb::CheckFailoverReadinessRequest {
        site_id: args.site.clone().unwrap_or_default(),
    };
    let deadline = Instant::now() + args.timeout;
    let live = args.wait && !args.client.json && std::io::stdout().is_terminal();
    let mut last_text = String::new();
    let mut shown_lines = 0;
    loop {
        let answer = client
            .check_failover_readiness(req.clone())
            .await?
            .into_inner();
        let done = answer.ready || !args.wait || Instant::now() >= deadline;
        if args.client.json {
            if done {
                println!("{}", readiness_json(&answer));
            }
        } else {
            let text = readiness_text(&answer);
            if live {
                // Redraw in place: move up over the previous answer.
                if shown_lines > 0 {
                    print!("\x1b[{shown_lines}A\x1b[J");
                }
                print!("{text}");
                shown_lines = text.lines().count();
            } else if text != last_text {
                print!("{text}");
                if args.wait && !done {
                    println!();
                }
            }
            last_text = text;
        }
        if done {
            if args.wait && !answer.ready && !args.client.json {
                eprintln!("timed out after {:?}: not ready", args.timeout);
            }
            return Ok(if answer.ready { 0 } else { 1 });
        }
        tokio::time::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

fn readiness_text(r: &pb::FailoverReadiness) -> String {
    let mut out = format!(
        "failover to {}: {} (judged by {})\n",
        r.site_id,
        if r.ready { "READY" } else { "NOT READY" },
        r.judged_by
    );
    for c in &r.criteria {
        out.push_str(&format!(
            "  {} {}: {}\n",
            if c.ok { "✓" } else { "✗" },
            c.name,
            c.detail
        ));
    }
    out
}

fn readiness_json(r: &pb::FailoverReadiness) -> serde_json::Value {
    serde_json::json!({
        "site_id": r.site_id,
        "ready": r.ready,
        "judged_by": r.judged_by,
        "criteria": r.criteria.iter().map(|c| serde_json::json!({
            "name": c.name, "ok": c.ok, "detail": c.detail,
        })).collect::<Vec<_>>(),
    })
}

/// A selection as one line: `prefixes a/, b/; kinds lfs`.
pub(super) fn selection_text(s: &pb::SelectiveSync) -> String {
    let mut parts = Vec::new();
    if !s.prefixes.is_empty() {
        parts.push(format!("prefixes {}", s.prefixes.join(", ")));
    }
    if !s.kinds.is_empty() {
        parts.push(format!("kinds {}", s.kinds.join(", ")));
    }
    parts.join("; ")
}
