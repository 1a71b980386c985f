//! `promote`, `demote` and `repoint`: changing which site is the primary.

use super::client::{actor, channel, report, token, Failure};
use super::{ActorArgs, ClientArgs};
use crate::server::client::authorized;
use crate::server::pb;

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// Promote even if the failover check fails; prints what could be lost.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct RepointArgs {
    /// The new primary's gRPC address.
    #[arg(long)]
    pub primary: String,
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct DemoteArgs {
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn promote(args: PromoteArgs) -> u8 {
    report(promote_inner(&args).await)
}

pub async fn demote(args: DemoteArgs) -> u8 {
    report(demote_inner(&args).await)
}

pub async fn repoint(args: RepointArgs) -> u8 {
    report(repoint_inner(&args).await)
}

async fn promote_inner(args: &PromoteArgs) -> Result<u8, Failure> {
    let token = token(&args.client)?;
    let mut client = pb::AdminClient::new(channel(&args.client).await?);
    let req = pb::PromoteRequest {
        force: args.force,
        actor: actor(&args.actor),
    };
    let reply = match client.promote(authorized(req, &token)?).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            eprintln!("refused: {}", s.message());
            return Ok(1);
        }
        Err(s) => return Err(s.into()),
    };
    if args.client.json {
        let out = serde_json::json!({
            "site_id": reply.site_id,
            "epoch": reply.epoch,
            "forced": reply.forced,
            "failed": reply.failed.iter().map(|c| serde_json::json!({
                "name": c.name, "detail": c.detail,
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!(
            "{} is now the primary at epoch {}{}",
            reply.site_id,
            reply.epoch,
            if reply.forced { " (forced)" } else { "" }
        );
        if reply.forced {
            println!("what the former primary had and this site may lack:");
            for c in &reply.failed {
                println!("  ✗ {}: {}", c.name, c.detail);
            }
        }
        println!(
            "maintenance mode is unchanged: turn it off here when ready (geo-agent maintenance disable --addr {}),\nand repoint the other secondaries (geo-agent repoint --primary {} --addr SECONDARY)",
            args.client.addr, args.client.addr
        );
    }
    Ok(0)
}

async fn demote_inner(args: &DemoteArgs) -> Result<u8, Failure> {
    let token = token(&args.client)?;
    let mut client = pb::AdminClient::new(channel(&args.client).await?);
    let req = pb::DemoteRequest {
        actor: actor(&args.actor),
    };
    let state = client.demote(authorized(req, &token)?).await?.into_inner();
    println!(
        "{} is demoted: read-only until repointed at the current primary",
        state.site_id
    );
    Ok(0)
}

async fn repoint_inner(args: &RepointArgs) -> Result<u8, Failure> {
    let token = token(&args.client)?;
    let mut client = pb::AdminClient::new(channel(&args.client).await?);
    let req = pb::SetPrimaryRequest {
        primary: args.primary.clone(),
        actor: actor(&args.actor),
    };
    let state = client
        .set_primary(authorized(req, &token)?)
        .await?
        .into_inner();
    println!(
        "{} now follows {}; it applies nothing if its history is not a prefix of the primary's (see geo-agent mode get)",
        state.site_id, args.primary
    );
    Ok(0)
}
