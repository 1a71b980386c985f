//! The command line: clap definitions and what each command does.
//!
//! Exit codes (DESIGN): 0 success; 1 a negative answer (a setting that is not set, …);
//! 2 usage, connection or server error.

mod client;
mod daemon;
mod docs;
mod failover;
mod gate;
mod object_ops;
mod objects;
mod schedule;
mod sites;
mod status;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::RunArgs;

pub const DEFAULT_ADDR: &str = "http://127.0.0.1:7600";
pub const DEFAULT_DEV_SECONDARIES: usize = 2;
pub const DEFAULT_DEV_DATA_DIR: &str = "geo-agent-dev";
pub const DEFAULT_DEV_BASE_PORT: u16 = 7600;

/// Replicates maintenance mode across Geo sites.
#[derive(Parser, Debug)]
#[command(name = "geo-agent", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=geo_agent=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "GEO_AGENT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon for one site.
    Run(Box<RunArgs>),
    /// Run a primary and secondaries on loopback in one process, to try things out.
    Dev(DevArgs),
    /// Read the maintenance mode.
    #[command(subcommand)]
    Mode(ModeCommand),
    /// Turn maintenance mode on or off (on the primary; needs the admin token).
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Read and change application settings (needs the admin token).
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Ask a site's gate whether a request may run (exit 0 allowed, 1 denied, 2 error).
    #[command(subcommand)]
    Check(gate::CheckCommand),
    /// Git hooks that ask the gate.
    #[command(subcommand)]
    Hook(gate::HookCommand),
    /// Push an object (committed by the primary; a secondary forwards it). Exit 1 when
    /// refused by maintenance mode.
    Push(objects::PushArgs),
    /// Pull an object from any site, checking its sha256.
    Pull(objects::PullArgs),
    /// This site's copies one by one; resync and reverify them (admin).
    #[command(subcommand)]
    Objects(object_ops::ObjectsCommand),
    /// Replication status of every site (at the primary) or of this site (exit 0 all OK,
    /// 1 a warning, 2 critical or error).
    Status(ClientArgs),
    /// The failover runbook.
    #[command(subcommand)]
    Failover(FailoverCommand),
    /// Make this secondary the primary (epoch + 1). Refused (exit 1) unless ready or --force.
    Promote(failover::PromoteArgs),
    /// Make this primary a fenced, read-only site (maintenance mode must be on).
    Demote(failover::DemoteArgs),
    /// Point this secondary (or fenced site) at a new primary.
    Repoint(failover::RepointArgs),
    /// Register, list and remove sites, each with its own token (at the primary; needs the
    /// admin token).
    #[command(subcommand)]
    Sites(sites::SitesCommand),
    /// The admins' promotion key pair: promotions are signed with it.
    #[command(subcommand)]
    PromotionKey(PromotionKeyCommand),
    /// A former primary's fence: show it, or clear one no admin's proof backs (needs the
    /// admin token).
    #[command(subcommand)]
    Fence(FenceCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Write the man pages.
    Man(docs::ManArgs),
}

#[derive(Subcommand, Debug)]
pub enum PromotionKeyCommand {
    /// Create the deployment's key pair: writes the private key to --out, prints the
    /// public key every site is configured with.
    Generate(failover::GenerateKeyArgs),
}

#[derive(Subcommand, Debug)]
pub enum FenceCommand {
    /// Whether the site is fenced, at which epoch, by whom, and the proof behind it.
    Show(failover::FenceArgs),
    /// Clear a fence no admin's proof backs (left by an unproven epoch claim); refused
    /// when a valid proof of a higher epoch fences the site (repoint it instead).
    Clear(failover::FenceArgs),
}

#[derive(Subcommand, Debug)]
pub enum FailoverCommand {
    /// Is it safe to promote a secondary now? Each criterion with its figure (exit 0 ready,
    /// 1 not ready, 2 error).
    Check(status::FailoverCheckArgs),
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of secondaries.
    #[arg(long, default_value_t = DEFAULT_DEV_SECONDARIES)]
    pub secondaries: usize,
    /// Directory for the sites' data (one subdirectory each) and the tokens.
    #[arg(long, default_value = DEFAULT_DEV_DATA_DIR)]
    pub data_dir: PathBuf,
    /// gRPC port of the primary; site N uses base+10N (gRPC) and base+10N+1 (HTTP). 0 picks
    /// free ports.
    #[arg(long, default_value_t = DEFAULT_DEV_BASE_PORT)]
    pub base_port: u16,
}

/// How to reach a site.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The site's gRPC address.
    #[arg(long, env = "GEO_AGENT_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// The admin token (prefer --token-file or GEO_AGENT_TOKEN: flags show in `ps`).
    #[arg(long, env = "GEO_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the admin token.
    #[arg(long, env = "GEO_AGENT_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Send the token over plain `http://` to a host that is not loopback (it crosses the
    /// network in clear text). Without it such a command is refused before connecting.
    #[arg(long, env = "GEO_AGENT_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ClientArgs {
    /// Whether the token may be sent to `addr`: over TLS, to loopback, or with
    /// `--allow-plaintext`.
    pub fn check_token_transport(&self) -> Result<(), String> {
        crate::types::normalize_url(&self.addr)?;
        crate::types::check_plaintext(&self.addr, false, self.allow_plaintext).map_err(|_| {
            format!(
                "refusing to send the token to {} over plain HTTP: it would cross the network in clear text. Use https://, or pass --allow-plaintext (or GEO_AGENT_ALLOW_PLAINTEXT=true) if the network is trusted",
                self.addr
            )
        })
    }
}

/// TLS for `https://` addresses.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) that signs the site's certificate [default: the system's roots].
    #[arg(long, env = "GEO_AGENT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for a site that requires one.
    #[arg(long, env = "GEO_AGENT_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "GEO_AGENT_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS settings for connecting to `addr`. TLS flags with an `http://` address are an
    /// error: the operator wanted TLS, and would get plain text.
    pub fn load(&self, addr: &str) -> Result<crate::server::tls::ClientTls, String> {
        let plain = crate::types::normalize_url(addr)?.starts_with("http://");
        let flags = self.ca_cert.is_some() || self.client_cert.is_some();
        if plain && flags {
            return Err(format!(
                "--ca-cert, --client-cert and --client-key are for https:// addresses, and {addr} is plain HTTP: use https://"
            ));
        }
        crate::server::tls::ClientTls::load(
            self.ca_cert.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
        )
    }
}

/// Who a change is recorded as.
#[derive(Args, Debug, Clone)]
pub struct ActorArgs {
    /// Recorded as `updated_by` [default: $USER, else admin].
    #[arg(long, env = "GEO_AGENT_ACTOR")]
    pub actor: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModeCommand {
    /// Print the site's maintenance mode.
    Get(ClientArgs),
    /// Print the mode, then every change, until interrupted.
    Watch(ClientArgs),
}

#[derive(Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// Turn maintenance mode on.
    Enable {
        /// Banner message shown to users (at most 255 characters).
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        actor: ActorArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn maintenance mode off (clears the message).
    Disable {
        #[command(flatten)]
        actor: ActorArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes in flight and whether the site is drained, with the freeze point (exit 0
    /// drained, 1 not drained).
    Status(ClientArgs),
    /// Schedule a maintenance window at the primary: announced at every site at once, the
    /// mode goes on at --start and off at --end; or --cancel it.
    Schedule(schedule::ScheduleArgs),
    /// Abort a push in flight, by the id `maintenance status` shows: its client gets an
    /// error and nothing of it is stored (exit 1 when no such write is in flight).
    Abort {
        id: u64,
        #[command(flatten)]
        actor: ActorArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum SettingsCommand {
    /// Print all settings, or the JSON value of one.
    Get {
        key: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set KEY to VALUE (JSON: true, 42, "text", {"a": 1}).
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        actor: ActorArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove KEY.
    Unset {
        key: String,
        #[command(flatten)]
        actor: ActorArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(args) => daemon::run(*args).await,
        Command::Dev(args) => daemon::dev(args).await,
        Command::Mode(c) => client::mode(c).await,
        Command::Maintenance(MaintenanceCommand::Schedule(args)) => schedule::schedule(args).await,
        Command::Maintenance(c) => client::maintenance(c).await,
        Command::Settings(c) => client::settings(c).await,
        Command::Check(c) => gate::check(c).await,
        Command::Hook(c) => gate::hook(c).await,
        Command::Push(a) => objects::push(a).await,
        Command::Status(a) => status::status(a).await,
        Command::Failover(FailoverCommand::Check(a)) => status::failover_check(a).await,
        Command::Promote(a) => failover::promote(a).await,
        Command::Demote(a) => failover::demote(a).await,
        Command::Repoint(a) => failover::repoint(a).await,
        Command::PromotionKey(PromotionKeyCommand::Generate(a)) => failover::generate_key(a),
        Command::Fence(FenceCommand::Show(a)) => failover::fence_show(a).await,
        Command::Fence(FenceCommand::Clear(a)) => failover::fence_clear(a).await,
        Command::Pull(a) => objects::pull(a).await,
        Command::Objects(c) => object_ops::objects(c).await,
        Command::Sites(c) => sites::sites(c).await,
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    fn client(args: &[&str]) -> ClientArgs {
        let mut argv = vec!["geo-agent", "mode", "get"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Mode(ModeCommand::Get(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_token_goes_in_clear_text_only_to_loopback_or_when_allowed() {
        for ok in [
            "http://127.0.0.1:7600",
            "localhost:7600",
            "http://[::1]:7600",
            "https://geo.example:7600",
        ] {
            assert!(
                client(&["--addr", ok]).check_token_transport().is_ok(),
                "{ok}"
            );
        }
        for plain in ["http://geo.example:7600", "10.0.0.5:7600"] {
            let err = client(&["--addr", plain])
                .check_token_transport()
                .unwrap_err();
            assert!(err.contains("--allow-plaintext"), "{err}");
            assert!(client(&["--addr", plain, "--allow-plaintext"])
                .check_token_transport()
                .is_ok());
        }
        assert!(client(&["--addr", "ftp://x"])
            .check_token_transport()
            .is_err());
    }
}
