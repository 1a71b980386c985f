//! `geo-agent objects`: this site's copies one by one (`list`), and the admin's resync and
//! reverification of one, the failed or all of them.

use clap::{Args, Subcommand};

use super::client::{actor, channel, report, token, Failure};
use super::{ActorArgs, ClientArgs};
use crate::objects::{StateFilter, DEFAULT_PAGE, MAX_PAGE};
use crate::server::client::authorized;
use crate::server::convert::{object_json, rfc3339};
use crate::server::pb;

#[derive(Subcommand, Debug)]
pub enum ObjectsCommand {
    /// This site's copies in name order, a page at a time: name, kind, size, version, sync
    /// and verification state, attempts, next retry, last failure.
    List(ListArgs),
    /// At a secondary: fetch objects again (they show as pending until the sync workers
    /// have them); progress in `geo-agent status`. Needs the admin token.
    Resync(MarkArgs),
    /// Re-hash copies now (on the primary a mismatch is CRITICAL and repaired from a
    /// secondary; on a secondary the copy is synced again). Needs the admin token.
    Reverify(MarkArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only objects in this state: synced, pending, started, failed, verification-failed.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<StateFilter>,
    /// Only names that start with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Names after this one: the `--after` the previous page printed.
    #[arg(long, default_value = "")]
    pub after: String,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = DEFAULT_PAGE, value_parser = parse_limit)]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "failed", "all"])))]
pub struct MarkArgs {
    /// One object.
    pub name: Option<String>,
    /// Every object whose sync or verification failed.
    #[arg(long)]
    pub failed: bool,
    /// Every object.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_state(s: &str) -> Result<StateFilter, String> {
    s.parse()
}

fn parse_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(format!("the limit is 1 to {MAX_PAGE}")),
    }
}

pub async fn objects(cmd: ObjectsCommand) -> u8 {
    report(match cmd {
        ObjectsCommand::List(a) => list(a).await,
        ObjectsCommand::Resync(a) => mark(a, true).await,
        ObjectsCommand::Reverify(a) => mark(a, false).await,
    })
}

fn filter(s: Option<StateFilter>) -> pb::ObjectStateFilter {
    use pb::ObjectStateFilter as F;
    match s {
        None => F::Unspecified,
        Some(StateFilter::Synced) => F::Synced,
        Some(StateFilter::Pending) => F::Pending,
        Some(StateFilter::Started) => F::Started,
        Some(StateFilter::Failed) => F::Failed,
        Some(StateFilter::VerificationFailed) => F::VerificationFailed,
    }
}

fn sync_name(raw: i32) -> &'static str {
    match pb::SyncState::try_from(raw) {
        Ok(pb::SyncState::Pending) => "pending",
        Ok(pb::SyncState::Started) => "started",
        Ok(pb::SyncState::Synced) => "synced",
        Ok(pb::SyncState::Failed) => "failed",
        _ => "unknown",
    }
}

fn verification_name(raw: i32) -> &'static str {
    match pb::VerificationState::try_from(raw) {
        Ok(pb::VerificationState::Pending) => "pending",
        Ok(pb::VerificationState::Succeeded) => "succeeded",
        Ok(pb::VerificationState::Failed) => "failed",
        _ => "unknown",
    }
}

fn entry_json(o: &pb::ListedObject) -> serde_json::Value {
    let r = o.replica.clone().unwrap_or_default();
    serde_json::json!({
        "name": o.name,
        "object": o.object.as_ref().map(object_json),
        "sync": sync_name(r.sync),
        "verification": verification_name(r.verification),
        "attempts": r.retry_count,
        "last_failure": Some(r.last_error).filter(|e| !e.is_empty()),
        "next_retry_at": rfc3339(&r.next_retry_at),
        "local_version": r.local_version,
        "verified_at": rfc3339(&r.verified_at),
        "checksum_mismatch": r.checksum_mismatch,
        "verification_failure": Some(r.verification_failure).filter(|e| !e.is_empty()),
    })
}

async fn list(a: ListArgs) -> Result<u8, Failure> {
    let token = token(&a.client)?;
    let mut client = pb::ObjectClient::new(channel(&a.client).await?);
    let req = pb::ListObjectsRequest {
        state: filter(a.state) as i32,
        prefix: a.prefix,
        after: a.after,
        limit: Some(a.limit as u32),
    };
    let page = client
        .list_objects(authorized(req, &token)?)
        .await?
        .into_inner();
    if a.client.json {
        let out = serde_json::json!({
            "objects": page.objects.iter().map(entry_json).collect::<Vec<_>>(),
            "next_after": Some(page.next_after.clone()).filter(|n| !n.is_empty()),
        });
        println!("{out}");
        return Ok(0);
    }
    println!(
        "{:<40} {:<10} {:>12} {:>8} {:<8} {:<12} {:>8} {:<24} LAST FAILURE",
        "NAME", "KIND", "SIZE", "VERSION", "SYNC", "VERIFIED", "ATTEMPTS", "NEXT RETRY"
    );
    for o in &page.objects {
        let r = o.replica.clone().unwrap_or_default();
        let m = o.object.clone().unwrap_or_default();
        let failure = [r.last_error.as_str(), r.verification_failure.as_str()]
            .into_iter()
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "{:<40} {:<10} {:>12} {:>8} {:<8} {:<12} {:>8} {:<24} {}",
            o.name,
            if o.object.is_some() {
                m.kind.as_str()
            } else {
                "(deleted)"
            },
            m.size,
            m.version,
            sync_name(r.sync),
            verification_name(r.verification),
            r.retry_count,
            rfc3339(&r.next_retry_at).unwrap_or_else(|| "-".into()),
            if failure.is_empty() { "-" } else { &failure },
        );
    }
    if !page.next_after.is_empty() {
        println!("more: --after {}", page.next_after);
    }
    Ok(0)
}

async fn mark(a: MarkArgs, resync: bool) -> Result<u8, Failure> {
    let token = token(&a.client)?;
    let mut client = pb::ObjectClient::new(channel(&a.client).await?);
    let scope = match (a.failed, a.all) {
        (true, _) => pb::ObjectsScope::Failed,
        (_, true) => pb::ObjectsScope::All,
        _ => pb::ObjectsScope::Unspecified,
    } as i32;
    let (name, actor) = (a.name.clone().unwrap_or_default(), actor(&a.actor));
    let result = (if resync {
        let req = pb::ResyncObjectsRequest { name, scope, actor };
        client
            .resync_objects(authorized(req, &token)?)
            .await?
            .into_inner()
            .result
    } else {
        let req = pb::ReverifyObjectsRequest { name, scope, actor };
        client
            .reverify_objects(authorized(req, &token)?)
            .await?
            .into_inner()
            .result
    })
    .unwrap_or_default();
    if a.client.json {
        let out = serde_json::json!({
            "marked": result.marked,
            "skipped": result.skipped,
            "progress": result.progress,
        });
        println!("{out}");
    } else {
        println!(
            "{} {} object{} for {}{}",
            if resync { "resync:" } else { "reverify:" },
            result.marked,
            if result.marked == 1 { "" } else { "s" },
            if resync {
                "a fresh fetch"
            } else {
                "verification now"
            },
            if result.skipped > 0 {
                format!(" ({} with nothing to do)", result.skipped)
            } else {
                String::new()
            }
        );
        if !result.progress.is_empty() {
            println!("{}", result.progress);
        }
        println!("follow it with `geo-agent status`");
    }
    Ok(0)
}
