//! Client commands: talk to a site over gRPC and print what it says, as text or JSON.

use tonic::transport::Channel;
use tonic::Status;

use super::{ActorArgs, ClientArgs, MaintenanceCommand, ModeCommand, SettingsCommand};
use crate::config::read_token;
use crate::server::auth::Token;
use crate::server::client::{authorized, connect};
use crate::server::convert::{mode_json, rfc3339};
use crate::server::error::PRIMARY_METADATA;
use crate::server::pb;

/// Why a command could not give an answer (exit 2).
pub(super) enum Failure {
    Local(String),
    Rpc(Status),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Failure {
        Failure::Rpc(s)
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Local(s)
    }
}

pub(super) fn report(result: Result<u8, Failure>) -> u8 {
    match result {
        Ok(code) => code,
        Err(Failure::Local(msg)) => {
            eprintln!("error: {msg}");
            2
        }
        Err(Failure::Rpc(status)) => {
            eprintln!("error: {} ({:?})", status.message(), status.code());
            if let Some(primary) = status
                .metadata()
                .get(PRIMARY_METADATA)
                .and_then(|v| v.to_str().ok())
            {
                eprintln!("hint: the primary is at {primary}; use --addr {primary}");
            }
            2
        }
    }
}

pub(super) async fn channel(args: &ClientArgs) -> Result<Channel, Failure> {
    Ok(connect(&args.addr, &args.tls.load(&args.addr)?).await?)
}

pub(super) fn token(args: &ClientArgs) -> Result<Token, Failure> {
    args.check_token_transport()?;
    let token =
        match (&args.token, &args.token_file) {
            (Some(t), _) => Token::new(t).map_err(|e| format!("--token: {e}"))?,
            (None, Some(path)) => read_token(path, "admin token").map_err(|e| e.to_string())?,
            (None, None) => return Err(Failure::Local(
                "this command needs the admin token: --token-file FILE, --token or GEO_AGENT_TOKEN"
                    .into(),
            )),
        };
    Ok(token)
}

pub(super) fn actor(a: &ActorArgs) -> String {
    a.actor
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "admin".into())
}

pub(super) async fn admin(
    args: &ClientArgs,
) -> Result<(pb::admin_service_client::AdminServiceClient<Channel>, Token), Failure> {
    let token = token(args)?;
    let client = pb::admin_service_client::AdminServiceClient::new(channel(args).await?);
    Ok((client, token))
}

pub async fn mode(cmd: ModeCommand) -> u8 {
    report(match cmd {
        ModeCommand::Get(args) => mode_get(&args).await,
        ModeCommand::Watch(args) => mode_watch(&args).await,
    })
}

async fn mode_get(args: &ClientArgs) -> Result<u8, Failure> {
    let mut client = pb::mode_service_client::ModeServiceClient::new(channel(args).await?);
    let state = client.get_mode(pb::GetModeRequest {}).await?.into_inner();
    if args.json {
        println!("{}", mode_json(&state));
    } else {
        print!("{}", mode_text(&state));
    }
    Ok(0)
}

async fn mode_watch(args: &ClientArgs) -> Result<u8, Failure> {
    let mut client = pb::mode_service_client::ModeServiceClient::new(channel(args).await?);
    let mut stream = client
        .watch_mode(pb::WatchModeRequest {})
        .await?
        .into_inner();
    while let Some(state) = stream.message().await? {
        if args.json {
            println!("{}", mode_json(&state));
        } else {
            println!("{}", mode_line(&state));
        }
    }
    Err(Failure::Local(format!(
        "{} ended the stream (shutting down?)",
        args.addr
    )))
}

pub async fn maintenance(cmd: MaintenanceCommand) -> u8 {
    report(maintenance_inner(cmd).await)
}

async fn maintenance_inner(cmd: MaintenanceCommand) -> Result<u8, Failure> {
    let (enabled, message, actor_args, args) = match cmd {
        MaintenanceCommand::Enable {
            message,
            actor,
            client,
        } => (true, message, actor, client),
        MaintenanceCommand::Disable { actor, client } => (false, None, actor, client),
        MaintenanceCommand::Status(args) => return maintenance_status(&args).await,
        // Dispatched to `cli::schedule` before it gets here.
        MaintenanceCommand::Schedule(_) => {
            return Err(Failure::Local(
                "maintenance schedule is not handled here".into(),
            ))
        }
        MaintenanceCommand::Abort { id, actor, client } => {
            return abort_write(id, &actor, &client).await
        }
    };
    let (mut client, token) = admin(&args).await?;
    let req = pb::SetMaintenanceModeRequest {
        enabled,
        message: message.unwrap_or_default(),
        actor: actor(&actor_args),
    };
    let state = client
        .set_maintenance_mode(authorized(req, &token)?)
        .await?
        .into_inner();
    if args.json {
        println!("{}", mode_json(&state));
    } else {
        println!(
            "maintenance mode {} on {} (settings index {}); secondaries follow on their own",
            if state.maintenance_mode {
                "enabled"
            } else {
                "disabled"
            },
            state.site_id,
            state.settings_index
        );
    }
    Ok(0)
}

async fn maintenance_status(args: &ClientArgs) -> Result<u8, Failure> {
    let token = token(args)?;
    let mut client = pb::AdminClient::new(channel(args).await?);
    let req = authorized(pb::GetMaintenanceStatusRequest {}, &token)?;
    let st = client.get_maintenance_status(req).await?.into_inner();
    let mode = st.mode.clone().unwrap_or_default();
    if args.json {
        let head = |h: &Option<pb::LogHead>| {
            h.as_ref()
                .map(|h| serde_json::json!({"index": h.index, "hash": h.hash}))
        };
        let out = serde_json::json!({
            "mode": mode_json(&mode),
            "drained": st.drained,
            "in_flight": st.in_flight.iter().map(|w| serde_json::json!({
                "id": w.id, "what": w.what, "from": w.from, "since": rfc3339(&w.since),
            })).collect::<Vec<_>>(),
            "freeze_point": st.drained.then(|| serde_json::json!({
                "settings": head(&st.settings_head),
                "events": head(&st.events_head),
            })),
        });
        println!("{out}");
    } else {
        let on = if mode.maintenance_mode { "ON" } else { "off" };
        println!("{}: maintenance mode {on}", mode.site_id);
        if mode.maintenance_mode {
            println!("  message     {:?}", mode.message);
            println!(
                "  by          {} at {}",
                mode.updated_by,
                rfc3339(&mode.updated_at).unwrap_or_default()
            );
        }
        println!("  in flight   {} writes", st.in_flight.len());
        for w in &st.in_flight {
            println!(
                "    [{}] {} from {} since {}",
                w.id,
                w.what,
                w.from,
                rfc3339(&w.since).unwrap_or_default()
            );
        }
        if st.drained {
            let h = |h: &Option<pb::LogHead>| h.as_ref().map_or(0, |h| h.index);
            println!(
                "  drained     yes: safe to restart, upgrade or fail over\n  freeze point  settings log at {}, event log at {}",
                h(&st.settings_head),
                h(&st.events_head)
            );
        } else if mode.maintenance_mode {
            println!("  drained     no: writes are still running");
        } else {
            println!("  drained     no: maintenance mode is off");
        }
    }
    Ok(if st.drained { 0 } else { 1 })
}

async fn abort_write(id: u64, actor_args: &ActorArgs, args: &ClientArgs) -> Result<u8, Failure> {
    let (mut client, token) = admin(args).await?;
    let req = pb::AbortWriteRequest {
        id,
        actor: actor(actor_args),
    };
    match client.abort_write(authorized(req, &token)?).await {
        Ok(w) => {
            let w = w.into_inner();
            println!(
                "aborted write {}: {} from {} (in flight since {})",
                w.id,
                w.what,
                w.from,
                crate::server::convert::rfc3339(&w.since).unwrap_or_default()
            );
            Ok(0)
        }
        Err(s) if s.code() == tonic::Code::NotFound => {
            eprintln!("{}", s.message());
            Ok(1)
        }
        Err(s) => Err(s.into()),
    }
}

pub async fn settings(cmd: SettingsCommand) -> u8 {
    report(settings_inner(cmd).await)
}

async fn settings_inner(cmd: SettingsCommand) -> Result<u8, Failure> {
    match cmd {
        SettingsCommand::Get { key, client: args } => {
            let (mut client, token) = admin(&args).await?;
            let s = client
                .get_settings(authorized(pb::GetSettingsRequest {}, &token)?)
                .await?
                .into_inner();
            match key {
                Some(key) => match s.values.get(&key) {
                    Some(v) => println!("{v}"),
                    None => {
                        eprintln!("setting {key:?} is not set");
                        return Ok(1);
                    }
                },
                None if args.json => {
                    let values: serde_json::Map<String, serde_json::Value> = s
                        .values
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                serde_json::from_str(v).unwrap_or_else(|_| v.clone().into()),
                            )
                        })
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"settings_index": s.settings_index, "values": values})
                    );
                }
                None => {
                    let mut keys: Vec<_> = s.values.iter().collect();
                    keys.sort();
                    for (k, v) in keys {
                        println!("{k} = {v}");
                    }
                }
            }
            Ok(0)
        }
        SettingsCommand::Set {
            key,
            value,
            actor: a,
            client: args,
        } => {
            let req = pb::UpdateSettingsRequest {
                set: [(key.clone(), value)].into(),
                unset: vec![],
                actor: actor(&a),
            };
            update(&args, req, &format!("set {key}")).await
        }
        SettingsCommand::Unset {
            key,
            actor: a,
            client: args,
        } => {
            let req = pb::UpdateSettingsRequest {
                set: Default::default(),
                unset: vec![key.clone()],
                actor: actor(&a),
            };
            update(&args, req, &format!("unset {key}")).await
        }
    }
}

async fn update(
    args: &ClientArgs,
    req: pb::UpdateSettingsRequest,
    what: &str,
) -> Result<u8, Failure> {
    let (mut client, token) = admin(args).await?;
    let s = client
        .update_settings(authorized(req, &token)?)
        .await?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"settings_index": s.settings_index})
        );
    } else {
        println!("{what} (settings index {})", s.settings_index);
    }
    Ok(0)
}

fn mode_text(m: &pb::ModeState) -> String {
    let j = mode_json(m);
    let s = |k: &str| j[k].as_str().unwrap_or("").to_string();
    let mut out = format!(
        "maintenance mode  {}\n",
        if m.maintenance_mode { "ON" } else { "off" }
    );
    if !m.message.is_empty() {
        out += &format!("message           {}\n", m.message);
    }
    if !m.updated_by.is_empty() {
        out += &format!(
            "updated           {} by {}\n",
            s("updated_at"),
            m.updated_by
        );
    }
    out += &format!(
        "site              {} ({}, epoch {})\nsettings index    {}\n",
        m.site_id,
        s("role"),
        m.epoch,
        m.settings_index
    );
    if !m.fenced.is_empty() {
        out += &format!("FENCED            {}\n", m.fenced);
    }
    if let Some(w) = j.get("scheduled") {
        out += &format!(
            "scheduled         {}{}{}: {}\n",
            w["start"].as_str().unwrap_or("?"),
            w["end"]
                .as_str()
                .map(|e| format!(" until {e}"))
                .unwrap_or_default(),
            w["started_at"]
                .as_str()
                .map(|s| format!(" (started {s})"))
                .unwrap_or_default(),
            w["message"].as_str().unwrap_or("")
        );
    }
    if let Some(f) = j.get("follower") {
        out += &format!(
            "follower          {} {} (primary head {}){}\n",
            f["state"].as_str().unwrap_or(""),
            f["primary"].as_str().unwrap_or(""),
            f["primary_head_index"],
            match f["error"].as_str() {
                Some(e) if !e.is_empty() => format!(": {e}"),
                _ => String::new(),
            }
        );
    }
    out
}

fn mode_line(m: &pb::ModeState) -> String {
    let j = mode_json(m);
    let mut line = format!(
        "{} maintenance {} at index {}",
        j["site_id"].as_str().unwrap_or(""),
        if m.maintenance_mode { "ON " } else { "off" },
        m.settings_index
    );
    if !m.message.is_empty() {
        line += &format!(" {:?}", m.message);
    }
    if !m.updated_by.is_empty() {
        line += &format!(
            " (by {} at {})",
            m.updated_by,
            j["updated_at"].as_str().unwrap_or("")
        );
    }
    if let Some(w) = j.get("scheduled") {
        line += &format!(
            " [window {}{}: {:?}]",
            w["start"].as_str().unwrap_or("?"),
            w["end"]
                .as_str()
                .map(|e| format!(" until {e}"))
                .unwrap_or_default(),
            w["message"].as_str().unwrap_or("")
        );
    }
    line
}
