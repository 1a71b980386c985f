//! Configuration for `geo-agent run`: a TOML file, `GEO_AGENT_*` environment variables and
//! flags, merged (flags > environment > file > defaults) and validated into one [`Config`].
//!
//! A typo in the file is an error, not a silently ignored key. Tokens are read from files;
//! when none is given, one is generated into a 0600 file in the data directory and the
//! caller is told where, so a first run needs no setup at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

mod objects;
mod proxy;

pub use objects::{ObjectsArgs, ObjectsFile};
pub use proxy::{ProxyArgs, ProxyFile};

use crate::failover::promotion::PublicKey;
use crate::gate::{AllowRoute, Cidr, DenyMode, GateConfig};
use crate::objects::Backend;
use crate::proxy::ProxyConfig;
use crate::server::auth::Token;
use crate::server::limits::{self, Limits};
use crate::server::tls::{ClientTls, ServerTls};
use crate::types::{check_plaintext, normalize_url, Role};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7601";
pub const DEFAULT_DATA_DIR: &str = "geo-agent-data";
pub const DEFAULT_PRIMARY_SITE_ID: &str = "primary";
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
pub const DEFAULT_SYNC_CONCURRENCY: usize = crate::replication::sync::DEFAULT_CONCURRENCY;
pub const MAX_SYNC_CONCURRENCY: usize = 256;
pub const DEFAULT_REVERIFY_INTERVAL: Duration = crate::replication::verify::DEFAULT_INTERVAL;
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const SITE_TOKEN_FILE: &str = "site-token";
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `geo-agent run`; each also reads a `GEO_AGENT_*` variable.
#[derive(Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// TOML configuration file (keys as the flags, with underscores: site_id, http_listen, …).
    #[arg(long, env = "GEO_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// This site's name, unique in the deployment [default for a primary: primary].
    #[arg(long, env = "GEO_AGENT_SITE_ID")]
    pub site_id: Option<String>,
    /// primary or secondary [default: primary].
    #[arg(long, env = "GEO_AGENT_ROLE")]
    pub role: Option<Role>,
    /// gRPC listen address [default: 127.0.0.1:7600].
    #[arg(long, env = "GEO_AGENT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address (status page, /metrics, /healthz, the gate for nginx)
    /// [default: 127.0.0.1:7601].
    #[arg(long, env = "GEO_AGENT_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Where the site keeps its database and tokens [default: ./geo-agent-data].
    #[arg(long, env = "GEO_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The primary's gRPC address (secondaries only), e.g. http://primary.example:7600.
    #[arg(long, env = "GEO_AGENT_PRIMARY")]
    pub primary: Option<String>,
    /// Where other sites reach this site's gRPC port, e.g. https://geo2.example:7600 (with
    /// TLS: a name in its certificate). A secondary reports it to the primary, which then
    /// repairs a damaged copy of its own from this site's verified copy [default: none].
    #[arg(long, env = "GEO_AGENT_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// File holding the admin token [default: generated into <data dir>/admin-token].
    #[arg(long, env = "GEO_AGENT_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding this site's own token, registered at the primary with `geo-agent sites
    /// add` [default on a primary: generated into <data dir>/site-token; required on a
    /// secondary].
    #[arg(long, env = "GEO_AGENT_SITE_TOKEN_FILE")]
    pub site_token_file: Option<PathBuf>,
    /// How often a site sends heartbeats on replication streams, e.g. 500ms, 1s [default: 1s].
    #[arg(long, env = "GEO_AGENT_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Objects a secondary fetches at once [default: 8].
    #[arg(long, env = "GEO_AGENT_SYNC_CONCURRENCY")]
    pub sync_concurrency: Option<usize>,
    /// How often each local copy is re-hashed and compared with the primary's checksum,
    /// e.g. 12h, 7d [default: 7d].
    #[arg(long, env = "GEO_AGENT_REVERIFY_INTERVAL", value_parser = parse_duration)]
    pub reverify_interval: Option<Duration>,
    /// Byte rate all sync transfers together may use, e.g. 50MiB/s [default: unlimited].
    /// A limit set for this site at the primary (`sites set`) overrides it.
    #[arg(long, env = "GEO_AGENT_SYNC_BANDWIDTH_LIMIT", value_parser = crate::types::parse_rate)]
    pub sync_bandwidth_limit: Option<u64>,
    /// Byte rate re-verification may read local copies at, e.g. 20MiB/s [default:
    /// unlimited]. A limit set for this site at the primary overrides it.
    #[arg(long, env = "GEO_AGENT_VERIFY_BANDWIDTH_LIMIT", value_parser = crate::types::parse_rate)]
    pub verify_bandwidth_limit: Option<u64>,
    /// This site's TLS certificate chain (PEM). With it, the gRPC port serves TLS only, and
    /// the site presents it when it connects to other sites.
    #[arg(long, env = "GEO_AGENT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "GEO_AGENT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign the other sites' certificates: verifies the primary
    /// and, on this site's port, client certificates [default: the system's roots].
    #[arg(long, env = "GEO_AGENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Refuse gRPC clients without a certificate signed by --tls-ca (mutual TLS);
    /// `--require-client-cert=false` overrides the file.
    #[arg(long, env = "GEO_AGENT_REQUIRE_CLIENT_CERT", num_args = 0..=1, default_missing_value = "true")]
    pub require_client_cert: Option<bool>,
    /// Serve and connect without TLS beyond loopback (tokens cross the network in clear
    /// text); `--allow-plaintext=false` overrides the file.
    #[arg(long, env = "GEO_AGENT_ALLOW_PLAINTEXT", num_args = 0..=1, default_missing_value = "true")]
    pub allow_plaintext: Option<bool>,
    /// How long a stopping site waits for writes in flight, e.g. 30s [default: 30s].
    #[arg(long, env = "GEO_AGENT_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Largest gRPC message, in bytes [default: 4194304; at least 1048576].
    #[arg(long, env = "GEO_AGENT_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// How long a push may send nothing before it is abandoned, e.g. 60s [default: 60s].
    #[arg(long, env = "GEO_AGENT_STREAM_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub stream_idle_timeout: Option<Duration>,
    /// gRPC calls one client address may have open at once [default: 256].
    #[arg(long, env = "GEO_AGENT_MAX_STREAMS_PER_CLIENT")]
    pub max_streams_per_client: Option<usize>,
    /// How long an HTTP client may take to send a request's headers, e.g. 10s [default: 10s].
    #[arg(long, env = "GEO_AGENT_HTTP_HEADER_TIMEOUT", value_parser = parse_duration)]
    pub http_header_timeout: Option<Duration>,
    /// How long an HTTP request may take, body included, before it gets 408 [default: 30s].
    #[arg(long, env = "GEO_AGENT_HTTP_REQUEST_TIMEOUT", value_parser = parse_duration)]
    pub http_request_timeout: Option<Duration>,
    /// HTTP connections open at once, from all clients [default: 1024].
    #[arg(long, env = "GEO_AGENT_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// HTTP connections one client address may have open at once [default: 256].
    #[arg(long, env = "GEO_AGENT_HTTP_MAX_CONNECTIONS_PER_CLIENT")]
    pub http_max_connections_per_client: Option<usize>,
    /// The admins' promotion public key (64 hex digits, from `geo-agent promotion-key
    /// generate`): checks the proofs without which no higher epoch is taken from another
    /// site. Required by `run`.
    #[arg(long, env = "GEO_AGENT_PROMOTION_PUBLIC_KEY")]
    pub promotion_public_key: Option<String>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    pub objects: ObjectsArgs,
}

/// The configuration file's shape. Every key is optional; unknown keys are errors.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub site_id: Option<String>,
    pub role: Option<Role>,
    pub listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub primary: Option<String>,
    pub advertise_url: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub site_token_file: Option<PathBuf>,
    pub heartbeat_interval: Option<String>,
    pub sync_concurrency: Option<usize>,
    pub reverify_interval: Option<String>,
    pub sync_bandwidth_limit: Option<String>,
    pub verify_bandwidth_limit: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub require_client_cert: Option<bool>,
    pub allow_plaintext: Option<bool>,
    pub shutdown_timeout: Option<String>,
    pub max_message_bytes: Option<usize>,
    pub stream_idle_timeout: Option<String>,
    pub max_streams_per_client: Option<usize>,
    pub http_header_timeout: Option<String>,
    pub http_request_timeout: Option<String>,
    pub http_max_connections: Option<usize>,
    pub http_max_connections_per_client: Option<usize>,
    pub promotion_public_key: Option<String>,
    #[serde(default)]
    pub gate: GateFile,
    /// The `[proxy]` table: the gating reverse proxy (off unless listen and upstream are set).
    #[serde(default)]
    pub proxy: ProxyFile,
    /// The `[objects]` table: where object bytes are kept (the data directory unless said).
    #[serde(default)]
    pub objects: ObjectsFile,
}

/// The `[gate]` table: how maintenance mode is enforced (SPEC §3).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    /// e.g. "/gitlab" when GitLab is served under a path.
    pub relative_url_root: Option<String>,
    /// "403" (default) or "503" (with Retry-After and the admin's message).
    pub deny_mode: Option<String>,
    /// Seconds for Retry-After in 503 mode [default: 300].
    pub retry_after: Option<u32>,
    /// Client networks exempt from maintenance, e.g. ["10.1.2.0/24"] (admins' hosts).
    #[serde(default)]
    pub exempt_cidrs: Vec<String>,
    /// Extra allowlisted routes, e.g. ["POST /api/v4/custom/ping", "POST,PUT /hooks/*"].
    #[serde(default)]
    pub allow: Vec<String>,
    /// Largest body the gate inspects (GraphQL, LFS batch) [default: 1 MiB].
    pub max_body_bytes: Option<usize>,
}

/// Seconds for Retry-After in 503 mode when the file does not say.
pub const DEFAULT_RETRY_AFTER: u32 = 300;

impl GateFile {
    fn into_config(self) -> Result<GateConfig, ConfigError> {
        let invalid = |e: crate::gate::GateError| ConfigError::Invalid(format!("[gate] {e}"));
        let mut c = GateConfig::default();
        if let Some(root) = self.relative_url_root {
            c.relative_url_root = root;
        }
        c.deny_mode = match self.deny_mode.as_deref() {
            None | Some("403") => DenyMode::Forbidden403,
            Some("503") => DenyMode::Unavailable503 {
                retry_after_secs: self.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            },
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "[gate] deny_mode must be \"403\" or \"503\", not {other:?}"
                )))
            }
        };
        c.exempt_cidrs = self
            .exempt_cidrs
            .iter()
            .map(|s| Cidr::parse(s))
            .collect::<Result<_, _>>()
            .map_err(invalid)?;
        c.extra_allowlist = self
            .allow
            .iter()
            .map(|s| AllowRoute::parse(s))
            .collect::<Result<_, _>>()
            .map_err(invalid)?;
        if let Some(n) = self.max_body_bytes {
            c.max_body_bytes = n;
        }
        c.validate().map_err(invalid)?;
        Ok(c)
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub site_id: String,
    pub role: Role,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// URL of the primary (secondaries only).
    pub primary: Option<String>,
    /// Where other sites reach this one (reported to the primary for repairs).
    pub advertise_url: Option<String>,
    pub admin_token: Token,
    pub site_token: Token,
    pub heartbeat: Duration,
    /// Objects a secondary fetches at once.
    pub sync_concurrency: usize,
    /// How often local copies are re-verified.
    pub reverify_interval: Duration,
    /// This site's own byte-rate limits (bytes/s; `None`: unlimited) for sync and for
    /// re-verification; a limit the primary sets for the site overrides each.
    pub sync_bandwidth_limit: Option<u64>,
    pub verify_bandwidth_limit: Option<u64>,
    /// How the gate enforces maintenance mode.
    pub gate: GateConfig,
    /// TLS on the gRPC port (none: plain TCP).
    pub tls: Option<ServerTls>,
    /// How this site connects to `https://` sites.
    pub client_tls: ClientTls,
    /// Message size, idle push and open-call limits of the gRPC port.
    pub limits: Limits,
    /// How long a stopping site waits for writes in flight.
    pub shutdown_timeout: Duration,
    /// Plain gRPC beyond loopback is allowed (serving and connecting).
    pub allow_plaintext: bool,
    /// Token files this load generated, to tell the operator about.
    pub generated: Vec<(&'static str, PathBuf)>,
    /// Checks admins' promotion proofs; `run` refuses to start without it.
    pub promotion_key: Option<PublicKey>,
    /// The gating reverse proxy, when asked for.
    pub proxy: Option<ProxyConfig>,
    /// Where object bytes are kept.
    pub objects: Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// Merges flags (and their environment variables, which clap has already read) over the
    /// file over the defaults, validates, and loads or generates the tokens.
    pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => read_file(path)?,
        };
        let role = args.role.or(file.role).unwrap_or(Role::Primary);
        let site_id = match args.site_id.clone().or(file.site_id) {
            Some(id) => id,
            None if role == Role::Primary => DEFAULT_PRIMARY_SITE_ID.to_string(),
            None => {
                return Err(ConfigError::Invalid(
                    "a secondary needs a site id: --site-id or GEO_AGENT_SITE_ID".into(),
                ))
            }
        };
        validate_site_id(&site_id)?;
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| default_addr(DEFAULT_LISTEN));
        let http_listen = args
            .http_listen
            .or(file.http_listen)
            .unwrap_or_else(|| default_addr(DEFAULT_HTTP_LISTEN));
        if listen == http_listen && listen.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "listen and http_listen are both {listen}"
            )));
        }
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let primary = match (role, args.primary.clone().or(file.primary)) {
            (Role::Secondary, None) => {
                return Err(ConfigError::Invalid(
                    "a secondary needs the primary's address: --primary URL or GEO_AGENT_PRIMARY"
                        .into(),
                ))
            }
            (Role::Primary, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--primary is for secondaries; this site is configured as the primary".into(),
                ))
            }
            (_, p) => p
                .map(|p| {
                    normalize_url(&p).map_err(|e| ConfigError::Invalid(format!("primary: {e}")))
                })
                .transpose()?,
        };
        let heartbeat = match (args.heartbeat_interval, file.heartbeat_interval) {
            (Some(d), _) => d,
            (None, Some(text)) => parse_duration(&text)
                .map_err(|e| ConfigError::Invalid(format!("heartbeat_interval: {e}")))?,
            (None, None) => DEFAULT_HEARTBEAT,
        };
        if heartbeat < Duration::from_millis(10) || heartbeat > Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "heartbeat_interval must be between 10ms and 60s".into(),
            ));
        }
        let sync_concurrency = args
            .sync_concurrency
            .or(file.sync_concurrency)
            .unwrap_or(DEFAULT_SYNC_CONCURRENCY);
        if !(1..=MAX_SYNC_CONCURRENCY).contains(&sync_concurrency) {
            return Err(ConfigError::Invalid(format!(
                "sync_concurrency must be between 1 and {MAX_SYNC_CONCURRENCY}"
            )));
        }
        let reverify_interval = match (args.reverify_interval, file.reverify_interval) {
            (Some(d), _) => d,
            (None, Some(text)) => parse_duration(&text)
                .map_err(|e| ConfigError::Invalid(format!("reverify_interval: {e}")))?,
            (None, None) => DEFAULT_REVERIFY_INTERVAL,
        };
        if reverify_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "reverify_interval must be at least 100ms".into(),
            ));
        }
        let rate = |flag: Option<u64>, text: Option<String>, key: &str| match (flag, text) {
            (Some(r), _) => Ok(Some(r)),
            (None, Some(t)) => crate::types::parse_rate(&t)
                .map(Some)
                .map_err(|e| ConfigError::Invalid(format!("{key}: {e}"))),
            (None, None) => Ok(None),
        };
        let sync_bandwidth_limit = rate(
            args.sync_bandwidth_limit,
            file.sync_bandwidth_limit,
            "sync_bandwidth_limit",
        )?;
        let verify_bandwidth_limit = rate(
            args.verify_bandwidth_limit,
            file.verify_bandwidth_limit,
            "verify_bandwidth_limit",
        )?;
        let gate = file.gate.into_config()?;
        let duration = |flag: Option<Duration>, text: Option<String>, key: &str| match (flag, text)
        {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(text)) => parse_duration(&text)
                .map(Some)
                .map_err(|e| ConfigError::Invalid(format!("{key}: {e}"))),
            (None, None) => Ok(None),
        };
        let tls_cert = args.tls_cert.clone().or(file.tls_cert);
        let tls_key = args.tls_key.clone().or(file.tls_key);
        let tls_ca = args.tls_ca.clone().or(file.tls_ca);
        let require_client_cert = args
            .require_client_cert
            .or(file.require_client_cert)
            .unwrap_or(false);
        let tls = match (&tls_cert, &tls_key) {
            (Some(cert), Some(key)) => Some(
                ServerTls::load(cert, key, tls_ca.as_deref(), require_client_cert)
                    .map_err(ConfigError::Invalid)?,
            ),
            (None, None) if require_client_cert => {
                return Err(ConfigError::Invalid(
                    "require_client_cert needs TLS: tls_cert and tls_key".into(),
                ))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key come together".into(),
                ))
            }
        };
        let allow_plaintext = args
            .allow_plaintext
            .or(file.allow_plaintext)
            .unwrap_or(false);
        if tls.is_none() && !listen.ip().is_loopback() && !allow_plaintext {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve gRPC without TLS on {listen}, which is not loopback: tokens would cross the network in clear text. Set tls_cert and tls_key, or allow_plaintext = true if the network is trusted"
            )));
        }
        if let Some(p) = &primary {
            check_plaintext(p, tls.is_some(), allow_plaintext)
                .map_err(|e| ConfigError::Invalid(format!("primary: {e}")))?;
        }
        let advertise_url = args
            .advertise_url
            .clone()
            .or(file.advertise_url)
            .map(|url| {
                normalize_url(&url)
                    .and_then(|url| {
                        check_plaintext(&url, tls.is_some(), allow_plaintext).map(|()| url)
                    })
                    .map_err(|e| ConfigError::Invalid(format!("advertise_url: {e}")))
            })
            .transpose()?;
        // A site presents its own certificate to the sites it connects to.
        let client_tls =
            ClientTls::load(tls_ca.as_deref(), tls_cert.as_deref(), tls_key.as_deref())
                .map_err(ConfigError::Invalid)?;
        let shutdown_timeout = duration(
            args.shutdown_timeout,
            file.shutdown_timeout,
            "shutdown_timeout",
        )?
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
        let mut limits = Limits::default();
        if let Some(n) = args.max_message_bytes.or(file.max_message_bytes) {
            if n < limits::MIN_MAX_MESSAGE_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "max_message_bytes must be at least {} (pushes send 256 KiB chunks)",
                    limits::MIN_MAX_MESSAGE_BYTES
                )));
            }
            limits.max_message_bytes = n;
        }
        if let Some(d) = duration(
            args.stream_idle_timeout,
            file.stream_idle_timeout,
            "stream_idle_timeout",
        )? {
            if d < Duration::from_millis(100) {
                return Err(ConfigError::Invalid(
                    "stream_idle_timeout must be at least 100ms".into(),
                ));
            }
            limits.stream_idle_timeout = d;
        }
        if let Some(n) = args.max_streams_per_client.or(file.max_streams_per_client) {
            if n == 0 {
                return Err(ConfigError::Invalid(
                    "max_streams_per_client must be at least 1".into(),
                ));
            }
            limits.max_streams_per_client = n;
        }
        let http = &mut limits.http;
        for (arg, file, key, into) in [
            (
                args.http_header_timeout,
                &file.http_header_timeout,
                "http_header_timeout",
                &mut http.header_timeout,
            ),
            (
                args.http_request_timeout,
                &file.http_request_timeout,
                "http_request_timeout",
                &mut http.request_timeout,
            ),
        ] {
            if let Some(d) = duration(arg, file.clone(), key)? {
                if d < Duration::from_millis(100) {
                    return Err(ConfigError::Invalid(format!(
                        "{key} must be at least 100ms"
                    )));
                }
                *into = d;
            }
        }
        for (value, key, into) in [
            (
                args.http_max_connections.or(file.http_max_connections),
                "http_max_connections",
                &mut http.max_connections,
            ),
            (
                args.http_max_connections_per_client
                    .or(file.http_max_connections_per_client),
                "http_max_connections_per_client",
                &mut http.max_connections_per_client,
            ),
        ] {
            if let Some(n) = value {
                if n == 0 {
                    return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
                }
                *into = n;
            }
        }
        let proxy = proxy::load(&args.proxy, file.proxy)?;
        let objects = objects::load(&args.objects, file.objects, allow_plaintext, |k| {
            std::env::var(k).ok()
        })?;
        if let Some(p) = &proxy {
            if p.listen.port() != 0 && (p.listen == listen || p.listen == http_listen) {
                return Err(ConfigError::Invalid(format!(
                    "[proxy] listen {} is already the gRPC or HTTP address",
                    p.listen
                )));
            }
        }
        let promotion_key = args
            .promotion_public_key
            .clone()
            .or(file.promotion_public_key)
            .map(|k| PublicKey::parse(&k))
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("promotion_public_key: {e}")))?;
        let mut generated = Vec::new();
        let admin_token = token(
            args.admin_token_file.clone().or(file.admin_token_file),
            &data_dir,
            ADMIN_TOKEN_FILE,
            "admin token",
            &mut generated,
        )?;
        let site_token_file = args.site_token_file.clone().or(file.site_token_file);
        if role == Role::Secondary && site_token_file.is_none() {
            return Err(ConfigError::Invalid(
                "a secondary needs its own site token: --site-token-file FILE (at the primary, `geo-agent sites add SITE --site-token-file FILE` writes and registers one)".into(),
            ));
        }
        let site_token = token(
            site_token_file,
            &data_dir,
            SITE_TOKEN_FILE,
            "site token",
            &mut generated,
        )?;
        if admin_token.same_secret(&site_token) {
            return Err(ConfigError::Invalid(
                "the admin token and the site token are the same: every secondary holds the site token, so it would also be an admin of every site. Give the admin token its own file (--admin-token-file), or remove the copy so a new one is generated".into(),
            ));
        }
        Ok(Config {
            site_id,
            role,
            listen,
            http_listen,
            data_dir,
            primary,
            advertise_url,
            admin_token,
            site_token,
            heartbeat,
            sync_concurrency,
            reverify_interval,
            sync_bandwidth_limit,
            verify_bandwidth_limit,
            gate,
            tls,
            client_tls,
            limits,
            shutdown_timeout,
            allow_plaintext,
            generated,
            promotion_key,
            proxy,
            objects,
        })
    }

    /// A site with every setting at its default but the ones named (for `dev` and
    /// benchmarks, which build configurations without a file).
    pub fn new(
        site_id: &str,
        role: Role,
        data_dir: PathBuf,
        admin_token: Token,
        site_token: Token,
    ) -> Config {
        Config {
            site_id: site_id.to_string(),
            role,
            listen: default_addr(DEFAULT_LISTEN),
            http_listen: default_addr(DEFAULT_HTTP_LISTEN),
            data_dir,
            primary: None,
            advertise_url: None,
            admin_token,
            site_token,
            heartbeat: DEFAULT_HEARTBEAT,
            sync_concurrency: DEFAULT_SYNC_CONCURRENCY,
            reverify_interval: DEFAULT_REVERIFY_INTERVAL,
            sync_bandwidth_limit: None,
            verify_bandwidth_limit: None,
            gate: GateConfig::default(),
            tls: None,
            client_tls: ClientTls::default(),
            limits: Limits::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            allow_plaintext: false,
            generated: Vec::new(),
            promotion_key: None,
            proxy: None,
            objects: Backend::Disk,
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn default_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Site ids are 1–64 characters of `[A-Za-z0-9_.-]`: they appear in logs, metrics labels
/// and file names.
pub fn validate_site_id(id: &str) -> Result<(), ConfigError> {
    crate::types::validate_site_id(id).map_err(ConfigError::Invalid)
}

/// Reads the token from `file`, or from `<data dir>/<default_name>` (generating it there
/// with mode 0600 when it does not exist).
fn token(
    file: Option<PathBuf>,
    data_dir: &Path,
    default_name: &str,
    what: &'static str,
    generated: &mut Vec<(&'static str, PathBuf)>,
) -> Result<Token, ConfigError> {
    if let Some(path) = file {
        return read_token(&path, what);
    }
    let path = data_dir.join(default_name);
    if path.exists() {
        return read_token(&path, what);
    }
    let token = Token::generate();
    write_token(&path, &token).map_err(|source| ConfigError::Io {
        what: "cannot write the token file",
        path: path.clone(),
        source,
    })?;
    generated.push((what, path));
    Ok(token)
}

/// Reads and validates a token file, which must be private to its owner (as ssh wants of
/// a key): one that group or others may read or write is refused.
pub fn read_token(path: &Path, what: &str) -> Result<Token, ConfigError> {
    check_private(path, what)?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        what: "cannot read the token file",
        path: path.to_path_buf(),
        source,
    })?;
    Token::new(&text)
        .map_err(|e| ConfigError::Invalid(format!("{what} in {}: {e}", path.display())))
}

/// Refuses a secret's file that group or others may read or write (mode & 0o077).
pub fn check_private(path: &Path, what: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        what: "cannot read the secret's file",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Invalid(format!(
            "the {what} file {} has mode {mode:04o}: group or others can read or write it, and anyone who can has the secret. Run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Writes a token to a new file readable by its owner only.
pub fn write_token(path: &Path, token: &Token) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token.expose().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Parses `250ms`, `2s`, `5m`, `1h` (or a bare number of seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 2s, 5m, 7d"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m, h or d"
            ))
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_sample_configuration_is_valid() {
        let text = include_str!("../contrib/geo-agent.toml");
        let file: FileConfig = toml::from_str(text).expect("contrib/geo-agent.toml parses");
        for d in [
            &file.heartbeat_interval,
            &file.reverify_interval,
            &file.shutdown_timeout,
            &file.stream_idle_timeout,
        ] {
            parse_duration(d.as_deref().expect("set in the sample")).expect("a duration");
        }
        assert_eq!(file.role, Some(Role::Secondary));
        assert!(file.primary.is_some_and(|p| normalize_url(&p).is_ok()));
        assert!(file.max_message_bytes >= Some(limits::MIN_MAX_MESSAGE_BYTES));
        file.gate.into_config().expect("the [gate] table");
        let key = file.promotion_public_key.expect("set in the sample");
        PublicKey::parse(&key).expect("a public key");
    }

    fn args(dir: &Path) -> RunArgs {
        RunArgs {
            data_dir: Some(dir.to_path_buf()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn no_configuration_means_a_primary_with_generated_private_tokens() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&args(dir.path())).unwrap();
        assert_eq!(c.role, Role::Primary);
        assert_eq!(c.site_id, "primary");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.generated.len(), 2);
        let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second start reuses the tokens.
        let again = Config::load(&args(dir.path())).unwrap();
        assert!(again.generated.is_empty());
        assert_eq!(again.admin_token.expose(), c.admin_token.expose());
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("geo.toml");
        std::fs::write(
            &file,
            "site_id = \"from-file\"\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let mut a = args(dir.path());
        a.config = Some(file);
        a.site_id = Some("from-flag".into());
        let c = Config::load(&a).unwrap();
        assert_eq!(c.site_id, "from-flag");
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("geo.toml");
        std::fs::write(&file, "site_idd = \"x\"\n").unwrap();
        let mut a = args(dir.path());
        a.config = Some(file);
        let err = Config::load(&a).unwrap_err().to_string();
        assert!(err.contains("unknown field `site_idd`"), "{err}");
    }

    #[test]
    fn a_secondary_needs_its_primary_and_the_site_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.role = Some(Role::Secondary);
        a.site_id = Some("s1".into());
        assert!(Config::load(&a)
            .unwrap_err()
            .to_string()
            .contains("--primary"));
        a.primary = Some("127.0.0.1:7600".into());
        assert!(Config::load(&a)
            .unwrap_err()
            .to_string()
            .contains("site token"));
        let token = dir.path().join("tok");
        std::fs::write(&token, "0123456789abcdef0123").unwrap();
        private(&token);
        a.site_token_file = Some(token);
        let c = Config::load(&a).unwrap();
        assert_eq!(c.primary.as_deref(), Some("http://127.0.0.1:7600"));
        assert_eq!(c.advertise_url, None, "none unless configured");
        // Where the primary fetches repairs: normalized, and the plaintext rule applies.
        a.advertise_url = Some("127.0.0.1:7700".into());
        let c = Config::load(&a).unwrap();
        assert_eq!(c.advertise_url.as_deref(), Some("http://127.0.0.1:7700"));
        a.advertise_url = Some("http://eu-1.example.com:7600".into());
        let err = Config::load(&a).unwrap_err().to_string();
        assert!(
            err.contains("advertise_url") && err.contains("clear text"),
            "{err}"
        );
    }

    fn private(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("tok");
        std::fs::write(&token, "0123456789abcdef0123").unwrap();
        for mode in [0o644, 0o640, 0o602] {
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_token(&token, "site token").unwrap_err().to_string();
            assert!(err.contains("chmod 600") && err.contains("tok"), "{err}");
        }
        private(&token);
        assert!(read_token(&token, "site token").is_ok());
    }

    #[test]
    fn the_admin_and_the_site_token_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::write(&shared, "0123456789abcdef0123\n").unwrap();
        let copy = dir.path().join("copy");
        std::fs::write(&copy, "0123456789abcdef0123").unwrap();
        private(&shared);
        private(&copy);
        let mut a = args(dir.path());
        a.admin_token_file = Some(shared.clone());
        a.site_token_file = Some(copy);
        let err = Config::load(&a).unwrap_err().to_string();
        assert!(
            err.contains("the admin token and the site token are the same"),
            "{err}"
        );
        a.site_token_file = Some(shared);
        assert!(Config::load(&a).is_err());
        // Generated tokens always differ.
        let fresh = tempfile::tempdir().unwrap();
        let c = Config::load(&args(fresh.path())).unwrap();
        assert_ne!(c.admin_token.expose(), c.site_token.expose());
    }

    #[test]
    fn the_gate_table_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("geo.toml");
        let mut a = args(dir.path());
        a.config = Some(file.clone());
        std::fs::write(
            &file,
            "[gate]\nrelative_url_root = \"/gitlab\"\ndeny_mode = \"503\"\nexempt_cidrs = [\"10.1.0.0/16\"]\nallow = [\"POST /api/v4/ping\"]\n",
        )
        .unwrap();
        let c = Config::load(&a).unwrap();
        assert_eq!(c.gate.relative_url_root, "/gitlab");
        assert_eq!(
            c.gate.deny_mode,
            DenyMode::Unavailable503 {
                retry_after_secs: 300
            }
        );
        assert_eq!(c.gate.exempt_cidrs.len(), 1);
        assert_eq!(c.gate.extra_allowlist.len(), 1);
        for bad in [
            "deny_mode = \"418\"",
            "exempt_cidrs = [\"10.1.0.1/16\"]",
            "colour = 1",
        ] {
            std::fs::write(&file, format!("[gate]\n{bad}\n")).unwrap();
            assert!(Config::load(&a).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.site_id = Some("bad id".into());
        assert!(Config::load(&a).is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }
}
