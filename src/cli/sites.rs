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
    /// List the registered sites (any site answers).
    List(ClientArgs),
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

pub async fn sites(cmd: SitesCommand) -> u8 {
    report(match cmd {
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
    })
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
