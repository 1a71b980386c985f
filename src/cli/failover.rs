//! `promote`, `demote` and `repoint`: changing which site is the primary.

use std::path::PathBuf;

use super::client::{actor, channel, report, token, Failure};
use super::{ActorArgs, ClientArgs};
use crate::failover::next_epoch;
use crate::failover::promotion::{self, PrivateKey};
use crate::server::client::authorized;
use crate::server::pb;

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// Promote even if the failover check fails; prints what could be lost.
    #[arg(long)]
    pub force: bool,
    /// The admins' promotion private key (from `geo-agent promotion-key generate`): the
    /// site takes a promotion only with a proof signed by it.
    #[arg(long, env = "GEO_AGENT_PROMOTION_KEY_FILE")]
    pub promotion_key_file: PathBuf,
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
    let key = promotion::read_key_file(&args.promotion_key_file)?;
    let channel = channel(&args.client).await?;
    // Sign what the site itself says it is and has seen: its id, and the epoch after the
    // highest it knows. Should that move before the promotion lands, the site refuses.
    let mode = pb::ModeClient::new(channel.clone())
        .get_mode(pb::GetModeRequest {})
        .await?
        .into_inner();
    let epoch = next_epoch(mode.epoch).map_err(|e| e.to_string())?;
    let proof = key.sign(&mode.site_id, epoch);
    let mut client = pb::AdminClient::new(channel);
    let req = pb::PromoteRequest {
        force: args.force,
        actor: actor(&args.actor),
        proof: Some(crate::server::convert::promotion(&proof)),
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

#[derive(clap::Args, Debug)]
pub struct GenerateKeyArgs {
    /// Where to write the private key (hex PKCS#8, mode 0600); an existing file is never
    /// overwritten.
    #[arg(long)]
    pub out: PathBuf,
}

/// `geo-agent promotion-key generate`: a deployment's key pair, once.
pub fn generate_key(args: GenerateKeyArgs) -> u8 {
    let written = PrivateKey::generate()
        .and_then(|(key, der)| promotion::write_key_file(&args.out, &der).map(|()| key));
    match written {
        Ok(key) => {
            println!("{}", key.public_key().to_hex());
            eprintln!(
                "wrote the promotion private key to {} (mode 0600): keep it with the admins, off the sites. Give every site the public key above (--promotion-public-key or promotion_public_key)",
                args.out.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct FenceArgs {
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn fence_show(args: FenceArgs) -> u8 {
    report(fence_inner(&args, false).await)
}

pub async fn fence_clear(args: FenceArgs) -> u8 {
    report(fence_inner(&args, true).await)
}

async fn fence_inner(args: &FenceArgs, clear: bool) -> Result<u8, Failure> {
    let token = token(&args.client)?;
    let mut client = pb::AdminClient::new(channel(&args.client).await?);
    let state = if clear {
        let req = pb::ClearFenceRequest {
            actor: actor(&args.actor),
        };
        match client.clear_fence(authorized(req, &token)?).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                eprintln!("refused: {}", s.message());
                return Ok(1);
            }
            Err(s) => return Err(s.into()),
        }
    } else {
        client
            .get_fence(authorized(pb::GetFenceRequest {}, &token)?)
            .await?
            .into_inner()
    };
    print_fence(&state, args.client.json, clear);
    Ok(0)
}

fn print_fence(s: &pb::FenceState, json: bool, cleared: bool) {
    let proof = s.proof.as_ref();
    if json {
        let out = serde_json::json!({
            "fenced": !s.fenced.is_empty(),
            "reason": s.fenced,
            "epoch": s.epoch,
            "lead_epoch": s.lead_epoch,
            "replaced_by": s.replaced_by,
            "proof": proof.map(|p| serde_json::json!({
                "site_id": p.site_id,
                "epoch": p.epoch,
                "signature": hex::encode(&p.signature),
                "valid": s.proof_valid,
                "error": s.proof_error,
            })),
            "cleared": cleared,
        });
        println!("{out}");
        return;
    }
    if cleared {
        println!(
            "cleared; before, the site stood as follows (ask again with geo-agent fence show):"
        );
    }
    if s.fenced.is_empty() {
        println!("not fenced");
    } else {
        println!("fenced: {}", s.fenced);
    }
    println!("highest epoch seen: {}", s.epoch);
    if s.lead_epoch > 0 {
        println!("leads (or led) at epoch: {}", s.lead_epoch);
    }
    if !s.replaced_by.is_empty() {
        println!("replaced by: {}", s.replaced_by);
    }
    match proof {
        Some(p) => println!(
            "proof: site {} promoted to epoch {}, signature {}",
            p.site_id,
            p.epoch,
            if s.proof_valid {
                "valid (signed by an admin)".to_string()
            } else {
                format!("NOT valid: {}", s.proof_error)
            }
        ),
        None => println!("proof: none held"),
    }
}
