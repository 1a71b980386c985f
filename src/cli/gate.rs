//! `geo-agent check …` and `geo-agent hook pre-receive`: ask a site's gate.
//!
//! Exit codes: 0 allowed (also "proxy to the primary"), 1 denied, 2 error.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::ClientArgs;
use crate::server::client::connect;
use crate::server::convert::decision_json;
use crate::server::pb;

/// Largest body `check http --body` sends.
pub const MAX_CHECK_BODY: u64 = 16 * 1024 * 1024;

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// May this HTTP request run? e.g. `check http POST /api/v4/projects`.
    Http(HttpCheckArgs),
    /// May a git push or pull run?
    Git {
        #[arg(value_enum)]
        operation: GitOperation,
        #[arg(long, value_enum, default_value_t = Protocol::Ssh)]
        protocol: Protocol,
        /// The push was forwarded by a secondary.
        #[arg(long)]
        proxied: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Which registry scopes would a token get? e.g. `repository:group/app:pull,push`.
    Registry {
        #[arg(required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// May a named action run? (incoming_email, create_user --source signup, …)
    Action {
        name: String,
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug)]
pub struct HttpCheckArgs {
    method: String,
    /// The request target, query string included.
    path: String,
    /// File with the request body ("-" for standard input), for GraphQL and LFS batch.
    #[arg(long)]
    body: Option<PathBuf>,
    #[arg(long)]
    accept: Option<String>,
    #[arg(long)]
    content_type: Option<String>,
    #[arg(long)]
    referer: Option<String>,
    /// The client's IP address (for exempt networks).
    #[arg(long)]
    client_ip: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum GitOperation {
    Push,
    Pull,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Protocol {
    Ssh,
    Http,
}

#[derive(Subcommand, Debug)]
pub enum HookCommand {
    /// Install as a repository's hooks/pre-receive (reads GEO_AGENT_ADDR): refuses pushes
    /// while the site is in maintenance mode, with the message git shows as `remote: …`.
    PreReceive {
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn read_body(path: &PathBuf) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let limit = MAX_CHECK_BODY + 1;
    let n = if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut buf))
    }
    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if n as u64 > MAX_CHECK_BODY {
        return Err(format!(
            "{} is larger than {MAX_CHECK_BODY} bytes",
            path.display()
        ));
    }
    Ok(buf)
}

fn git(op: GitOperation, protocol: Protocol, proxied: bool) -> pb::check_request::Request {
    pb::check_request::Request::Git(pb::GitCheck {
        operation: match op {
            GitOperation::Push => pb::GitOperation::ReceivePack,
            GitOperation::Pull => pb::GitOperation::UploadPack,
        } as i32,
        protocol: match protocol {
            Protocol::Ssh => pb::GitProtocol::Ssh,
            Protocol::Http => pb::GitProtocol::Http,
        } as i32,
        proxied,
    })
}

async fn ask(
    client: &ClientArgs,
    request: pb::check_request::Request,
) -> Result<pb::Decision, String> {
    let channel = connect(&client.addr, &client.tls.load(&client.addr)?).await?;
    pb::gate_service_client::GateServiceClient::new(channel)
        .check(pb::CheckRequest {
            request: Some(request),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{} ({:?})", s.message(), s.code()))
}

pub async fn check(cmd: CheckCommand) -> u8 {
    let (client, request) = match cmd {
        CheckCommand::Http(a) => {
            let body = match a.body.as_ref().map(read_body).transpose() {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            };
            let request = pb::check_request::Request::Http(pb::HttpCheck {
                method: a.method,
                path: a.path,
                accept: a.accept.unwrap_or_default(),
                content_type: a.content_type.unwrap_or_default(),
                referer: a.referer.unwrap_or_default(),
                body,
                client_ip: a.client_ip.unwrap_or_default(),
            });
            (a.client, request)
        }
        CheckCommand::Git {
            operation,
            protocol,
            proxied,
            client,
        } => (client, git(operation, protocol, proxied)),
        CheckCommand::Registry { scopes, client } => (
            client,
            pb::check_request::Request::Registry(pb::RegistryCheck { scopes }),
        ),
        CheckCommand::Action {
            name,
            source,
            client,
        } => (
            client,
            pb::check_request::Request::Action(pb::ActionCheck {
                action: name,
                source: source.unwrap_or_default(),
            }),
        ),
    };
    let d = match ask(&client, request).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if client.json {
        println!("{}", decision_json(&d));
    } else {
        println!("{}", decision_text(&d));
    }
    exit_code(&d)
}

fn exit_code(d: &pb::Decision) -> u8 {
    if d.verdict == pb::Verdict::Deny as i32 {
        1
    } else {
        0
    }
}

fn decision_text(d: &pb::Decision) -> String {
    let head = match pb::Verdict::try_from(d.verdict) {
        Ok(pb::Verdict::Allow) => "allowed".to_string(),
        Ok(pb::Verdict::ProxyToPrimary) => "allowed: proxy to the primary".to_string(),
        _ => format!("denied with {}", d.status),
    };
    let mut out = format!("{head} (rule {}): {}", d.rule, d.reason);
    if !d.message.is_empty() {
        out += &format!("\nmessage: {}", d.message);
    }
    if !d.granted_scopes.is_empty() {
        out += &format!("\ngranted scopes: {}", d.granted_scopes.join(" "));
    }
    if !d.location.is_empty() {
        out += &format!("\nredirect to: {}", d.location);
    }
    out
}

pub async fn hook(cmd: HookCommand) -> u8 {
    let HookCommand::PreReceive { client } = cmd;
    // git writes the ref updates to the hook's stdin; read them so git never sees a broken
    // pipe, whatever the answer.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    let protocol = match std::env::var("GL_PROTOCOL").as_deref() {
        Ok("http") => Protocol::Http,
        _ => Protocol::Ssh,
    };
    match ask(&client, git(GitOperation::Push, protocol, false)).await {
        Ok(d) if d.verdict == pb::Verdict::Allow as i32 => 0,
        Ok(d) if d.verdict == pb::Verdict::ProxyToPrimary as i32 => {
            eprintln!("This site is a Geo secondary: push to the primary instead.");
            1
        }
        Ok(d) => {
            eprintln!(
                "{}",
                if d.message.is_empty() {
                    &d.reason
                } else {
                    &d.message
                }
            );
            1
        }
        Err(e) => {
            // Fail closed: a push that cannot be checked could slip past maintenance mode.
            eprintln!("geo-agent: cannot check whether pushes are allowed: {e}");
            1
        }
    }
}
