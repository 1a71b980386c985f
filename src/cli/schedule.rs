//! `geo-agent maintenance schedule`: announce a maintenance window at the primary, which
//! turns maintenance mode on at its start and off at its end by itself (SPEC §6), or
//! cancel it. Times are RFC 3339 (`2026-12-01T22:00:00Z`, `2026-12-01T23:00:00+01:00`).

use clap::Args;

use super::client::{actor, admin, report, Failure};
use super::{ActorArgs, ClientArgs};
use crate::server::client::authorized;
use crate::server::convert::{schedule_json, timestamp};
use crate::server::pb;

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// When maintenance mode goes on (RFC 3339, in the future of the primary's clock).
    #[arg(long, required_unless_present = "cancel")]
    pub start: Option<String>,
    /// When it goes off again (RFC 3339, after --start); without it, an admin turns it off.
    #[arg(long)]
    pub end: Option<String>,
    /// The banner message, announced at once and shown during the window (1-255 characters).
    #[arg(long, required_unless_present = "cancel")]
    pub message: Option<String>,
    /// Remove the scheduled window instead (exit 1 when none is scheduled). One in progress
    /// leaves the mode on: turn it off with `maintenance disable`.
    #[arg(long, conflicts_with_all = ["start", "end", "message"])]
    pub cancel: bool,
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// An RFC 3339 time in ms since the Unix epoch.
fn parse_time(flag: &str, text: &str) -> Result<i64, Failure> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            Failure::Local(format!(
                "{flag} {text:?} is not an RFC 3339 time ({e}); for example 2026-12-01T22:00:00Z"
            ))
        })
}

pub async fn schedule(args: ScheduleArgs) -> u8 {
    report(run(args).await)
}

async fn run(args: ScheduleArgs) -> Result<u8, Failure> {
    let (mut client, token) = admin(&args.client).await?;
    let who = actor(&args.actor);
    if args.cancel {
        let req = pb::CancelMaintenanceScheduleRequest { actor: who };
        let reply = match client
            .cancel_maintenance_schedule(authorized(req, &token)?)
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                eprintln!("{}", s.message());
                return Ok(1);
            }
            Err(s) => return Err(s.into()),
        };
        let cancelled = reply.cancelled.unwrap_or_default();
        if args.client.json {
            println!(
                "{}",
                serde_json::json!({"cancelled": schedule_json(&cancelled)})
            );
        } else {
            let j = schedule_json(&cancelled);
            print!(
                "cancelled the maintenance window of {}: {}\n{}",
                j["start"].as_str().unwrap_or("?"),
                cancelled.message,
                if cancelled.started_at.is_some() {
                    "it had started: maintenance mode stays on until `geo-agent maintenance disable`\n"
                } else {
                    ""
                }
            );
        }
        return Ok(0);
    }
    let start = parse_time("--start", args.start.as_deref().unwrap_or_default())?;
    let end = args
        .end
        .as_deref()
        .map(|e| parse_time("--end", e))
        .transpose()?;
    let req = pb::ScheduleMaintenanceRequest {
        start: Some(timestamp(start)),
        end: end.map(timestamp),
        message: args.message.unwrap_or_default(),
        actor: who,
    };
    let reply = client
        .schedule_maintenance(authorized(req, &token)?)
        .await?
        .into_inner();
    let window = reply.schedule.unwrap_or_default();
    let j = schedule_json(&window);
    if args.client.json {
        println!("{}", serde_json::json!({"scheduled": j}));
    } else {
        println!(
            "maintenance scheduled for {}{}: {}\nevery site announces it now; the primary turns maintenance mode on at the start{}",
            j["start"].as_str().unwrap_or("?"),
            j["end"]
                .as_str()
                .map(|e| format!(" until {e}"))
                .unwrap_or_default(),
            window.message,
            if window.end.is_some() {
                " and off at the end"
            } else {
                " (turn it off with `geo-agent maintenance disable`)"
            }
        );
    }
    Ok(0)
}
