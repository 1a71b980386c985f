//! `geo-agent sites`: the registry of sites at the primary, each known by the sha256 of
//! its own token. `add` creates the site's token file when it does not exist (0600, never
//! overwriting one); only the hash crosses the network.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::client::{actor, admin, report, Failure};
use super::{ActorArgs, ClientArgs};
use crate::config::{read_token, write_token};
use crate::server::auth::Token;
use crate::server::client::authorized;
use crate::server::convert::rfc3339;
use crate::server::pb;
use crate::settings::token_sha256;

#[derive(Subcommand, Debug)]
pub enum SitesCommand {
    /// Register SITE at the primary with the token in --site-token-file (generated there,
    /// mode 0600, when the file does not exist). Copy that file to the site and start it
    /// with `run --site-token-file FILE`.
    Add(AddArgs),
    /// List the registered sites and their replication settings (any site answers).
    List(ClientArgs),
    /// Change SITE's replication settings at the primary: which objects it replicates
    /// (selective sync) and how fast it moves bytes. Kept in the settings log, so every
    /// site applies it and it survives a failover; the site follows without a restart.
    Set(SetArgs),
    /// Unregister SITE: its token is refused from then on (exit 1 when not registered).
    Remove {
        site: String,
        #[command(flatten)]
        actor: ActorArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The site's id, as it runs with `--site-id`.
    pub site: String,
    /// The site's token file: read when it exists, else created with a fresh 256-bit token
    /// (mode 0600). Not `--token-file`, which names the admin token.
    #[arg(long)]
    pub site_token_file: PathBuf,
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// The site's id.
    pub site: String,
    /// Replicate only objects whose name starts with PREFIX (repeat for several, e.g.
    /// group-a/). Replaces the site's selection; with --selective-sync-kind too, an object
    /// must match both.
    #[arg(long = "selective-sync-prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// Replicate only objects of KIND (repeat for several, e.g. lfs).
    #[arg(long = "selective-sync-kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Replicate every object again (what the site lacks is backfilled).
    #[arg(long, conflicts_with_all = ["prefixes", "kinds"])]
    pub selective_sync_off: bool,
    /// Byte rate for the site's sync transfers: RATE (e.g. 50MiB/s), `unlimited`, or
    /// `default` (the site's own --sync-bandwidth-limit decides). Overrides that flag.
    #[arg(long, value_name = "RATE", value_parser = parse_limit)]
    pub sync_bandwidth_limit: Option<LimitArg>,
    /// Byte rate for the site's re-verification reads, as --sync-bandwidth-limit.
    #[arg(long, value_name = "RATE", value_parser = parse_limit)]
    pub verify_bandwidth_limit: Option<LimitArg>,
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A limit as `sites set` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitArg {
    Rate(u64),
    Unlimited,
    /// Clear the per-site setting: the site's own flag decides.
    Default,
}

fn parse_limit(raw: &str) -> Result<LimitArg, String> {
    match raw {
        "unlimited" => Ok(LimitArg::Unlimited),
        "default" => Ok(LimitArg::Default),
        _ => crate::types::parse_rate(raw)
            .map(LimitArg::Rate)
            .map_err(|e| format!("{e}, `unlimited` or `default`")),
    }
}

/// The request's (value, clear) pair for a limit argument.
fn limit_fields(arg: &Option<LimitArg>) -> (Option<pb::BandwidthLimit>, bool) {
    use pb::bandwidth_limit::Limit;
    let set = |l: Limit| Some(pb::BandwidthLimit { limit: Some(l) });
    match arg {
        None => (None, false),
        Some(LimitArg::Default) => (None, true),
        Some(LimitArg::Unlimited) => (set(Limit::Unlimited(true)), false),
        Some(LimitArg::Rate(r)) => (set(Limit::BytesPerSecond(*r)), false),
    }
}

pub async fn sites(cmd: SitesCommand) -> u8 {
    report(match cmd {
        SitesCommand::Set(a) => set(a).await,
        SitesCommand::Add(a) => add(a).await,
        SitesCommand::List(args) => list(&args).await,
        SitesCommand::Remove {
            site,
            actor: a,
            client,
        } => remove(&site, &a, &client).await,
    })
}

/// The token in `path`, created there when the file does not exist: whether it was.
fn site_token(path: &Path) -> Result<(Token, bool), Failure> {
    let fresh = Token::generate();
    match write_token(path, &fresh) {
        Ok(()) => Ok((fresh, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let token = read_token(path, "site token").map_err(|e| e.to_string())?;
            Ok((token, false))
        }
        Err(e) => Err(Failure::Local(format!(
            "cannot write the site token file {}: {e}",
            path.display()
        ))),
    }
}

async fn add(a: AddArgs) -> Result<u8, Failure> {
    crate::types::validate_site_id(&a.site)?;
    let (mut client, token) = admin(&a.client).await?;
    let (site_token, created) = site_token(&a.site_token_file)?;
    if site_token.same_secret(&token) {
        return Err(Failure::Local(format!(
            "{} holds the admin token: a site needs a token of its own",
            a.site_token_file.display()
        )));
    }
    let req = pb::AddSiteRequest {
        site_id: a.site.clone(),
        token_sha256: token_sha256(site_token.expose().as_bytes()),
        actor: actor(&a.actor),
    };
    let r = client
        .add_site(authorized(req, &token)?)
        .await?
        .into_inner();
    let file = a.site_token_file.display().to_string();
    if a.client.json {
        println!(
            "{}",
            serde_json::json!({"site": record_json(&r), "added": r.added, "token_file": file, "token_file_created": created})
        );
    } else {
        let what = if r.added {
            "registered"
        } else {
            "already registered with this token:"
        };
        let made = if created {
            " (new token written there)"
        } else {
            ""
        };
        println!("{what} site {} — its token is in {file}{made}", r.site_id);
    }
    Ok(0)
}

fn record_json(r: &pb::SiteRecord) -> serde_json::Value {
    serde_json::json!({
        "site_id": r.site_id,
        "token_sha256": r.token_sha256,
        "added_by": r.added_by,
        "added_at": rfc3339(&r.added_at),
        "sync": r.sync.as_ref().map(|s| serde_json::json!({
            "selective_sync": s.selective_sync.as_ref().map(|sel| serde_json::json!({
                "prefixes": sel.prefixes, "kinds": sel.kinds,
            })),
            "sync_bandwidth_limit": limit_text(&s.sync_bandwidth),
            "verify_bandwidth_limit": limit_text(&s.verify_bandwidth),
            "updated_by": s.updated_by,
            "updated_at": rfc3339(&s.updated_at),
        })),
    })
}

/// A limit as shown: `50MiB/s`, `unlimited`, or `default` (the site's own flag).
fn limit_text(l: &Option<pb::BandwidthLimit>) -> String {
    use pb::bandwidth_limit::Limit;
    match l.as_ref().and_then(|l| l.limit) {
        Some(Limit::BytesPerSecond(r)) => crate::types::format_rate(r),
        Some(Limit::Unlimited(_)) => "unlimited".into(),
        None => "default".into(),
    }
}

/// The replication settings of a site, as one line.
fn sync_text(s: &Option<pb::SiteSync>) -> String {
    let Some(s) = s else {
        return "replicates everything; bandwidth: the site's own flags".into();
    };
    let what = match &s.selective_sync {
        Some(sel) => format!("selective sync: {}", super::status::selection_text(sel)),
        None => "replicates everything".into(),
    };
    format!(
        "{what}; sync bandwidth {}, verify bandwidth {} (default: the site's own flag) — set by {}",
        limit_text(&s.sync_bandwidth),
        limit_text(&s.verify_bandwidth),
        s.updated_by
    )
}

async fn set(a: SetArgs) -> Result<u8, Failure> {
    crate::types::validate_site_id(&a.site)?;
    let (mut client, token) = admin(&a.client).await?;
    let selective = (!a.prefixes.is_empty() || !a.kinds.is_empty()).then(|| pb::SelectiveSync {
        prefixes: a.prefixes.clone(),
        kinds: a.kinds.clone(),
    });
    let (sync_bandwidth, clear_sync_bandwidth) = limit_fields(&a.sync_bandwidth_limit);
    let (verify_bandwidth, clear_verify_bandwidth) = limit_fields(&a.verify_bandwidth_limit);
    let req = pb::SetSiteSyncRequest {
        site_id: a.site.clone(),
        selective_sync: selective,
        selective_sync_off: a.selective_sync_off,
        sync_bandwidth,
        clear_sync_bandwidth,
        verify_bandwidth,
        clear_verify_bandwidth,
        actor: actor(&a.actor),
    };
    let r = match client.set_site_sync(authorized(req, &token)?).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => {
            eprintln!("{}", s.message());
            return Ok(1);
        }
        Err(s) => return Err(s.into()),
    };
    let sync = r.site.as_ref().and_then(|s| s.sync.clone());
    if a.client.json {
        let site = r.site.as_ref().map(record_json);
        println!(
            "{}",
            serde_json::json!({"site": site, "settings_index": r.settings_index})
        );
    } else {
        println!(
            "site {}: {} (settings index {})",
            a.site,
            sync_text(&sync),
            r.settings_index
        );
    }
    Ok(0)
}

async fn list(args: &ClientArgs) -> Result<u8, Failure> {
    let (mut client, token) = admin(args).await?;
    let r = client
        .list_sites(authorized(pb::ListSitesRequest {}, &token)?)
        .await?
        .into_inner();
    if args.json {
        let sites: Vec<_> = r.sites.iter().map(record_json).collect();
        println!(
            "{}",
            serde_json::json!({"settings_index": r.settings_index, "sites": sites})
        );
    } else {
        for s in &r.sites {
            let j = record_json(s);
            println!(
                "{:<24} sha256 {}…  added by {} at {}",
                s.site_id,
                &s.token_sha256[..s.token_sha256.len().min(16)],
                s.added_by,
                j["added_at"].as_str().unwrap_or("")
            );
            println!("    {}", sync_text(&s.sync));
        }
    }
    Ok(0)
}

async fn remove(site: &str, a: &ActorArgs, args: &ClientArgs) -> Result<u8, Failure> {
    let (mut client, token) = admin(args).await?;
    let req = pb::RemoveSiteRequest {
        site_id: site.to_string(),
        actor: actor(a),
    };
    match client.remove_site(authorized(req, &token)?).await {
        Ok(r) => {
            let index = r.into_inner().settings_index;
            if args.json {
                println!("{}", serde_json::json!({"settings_index": index}));
            } else {
                println!("removed site {site} (settings index {index})");
            }
            Ok(0)
        }
        Err(s) if s.code() == tonic::Code::NotFound => {
            eprintln!("{}", s.message());
            Ok(1)
        }
        Err(s) => Err(s.into()),
    }
}
