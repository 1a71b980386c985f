//! The gate: a pure rule engine that says whether one request may run while a site is in
//! maintenance mode (SPEC §3). Every front end asks it — nginx through `auth_request`, git
//! through the pre-receive hook or the SSH `allowed` check, the registry's token service,
//! gRPC clients — and gets back a [`Decision`] that already carries the exact answer to send
//! (status, content type, body, redirect target, `Retry-After`).
//!
//! Trade-off: the gate does no I/O and keeps no state. The caller passes the current mode
//! ([`SiteView`], read cheaply from a watch channel) and the configuration on every call, so
//! a decision is a function of its inputs and can be tested as one. The price is that the
//! gate cannot look anything up (the Rails route table, the primary's address, who the user
//! is): it decides on what the request itself shows, and where that is not enough it fails
//! closed for writes and open for reads. The allowlist is a static table of rows
//! ([`rules::ALLOWLIST`]) read in one place, so what is allowed can be read, listed and
//! tested as data rather than reverse-engineered from a chain of `if`s.

mod action;
mod cidr;
mod fence;
mod form;
mod git;
mod graphql;
mod http;
mod lfs;
mod path;
mod registry;
pub mod rules;
#[cfg(test)]
mod tests;

pub use action::KNOWN_ACTIONS;
pub use cidr::Cidr;
pub use registry::RegistryScope;
pub use rules::{AllowRoute, Method, MethodSet, RoutePattern};

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// What GitLab says when a write is refused (SPEC §3).
pub const READ_ONLY_MESSAGE: &str = "You cannot perform write operations on a read-only instance";
/// The exact JSON body of the default (403) refusal.
pub const READ_ONLY_JSON_BODY: &str =
    r#"{"message":"You cannot perform write operations on a read-only instance"}"#;
/// The exact text a refused `git push` shows the user.
pub const GIT_PUSH_MESSAGE: &str = "Git push is not allowed because this GitLab instance is currently in (read-only) maintenance mode.";
/// The 503-mode message when the admin set none.
pub const DEFAULT_MAINTENANCE_MESSAGE: &str = "GitLab is undergoing maintenance";
/// What the registry token service logs when it drops write actions.
pub const REGISTRY_WRITE_DENIED: &str = "Write access denied in maintenance mode";
/// Longest request path (query string included) the gate accepts; longer is malformed input.
/// nginx's default `large_client_header_buffers` is 8 KiB, so nothing legitimate is longer.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
/// Longest header value (Accept, Content-Type, Referer) the gate accepts.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Default bound on a body the gate will inspect (GraphQL, LFS batch).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Upper bound for `max_body_bytes`: the gate keeps bodies in memory to parse them.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Upper bound for `Retry-After` in 503 mode (one day).
pub const MAX_RETRY_AFTER_SECS: u32 = 86_400;
/// `Retry-After` of a fenced site's refusals when the deny mode sets none (403 mode).
pub const DEFAULT_FENCED_RETRY_AFTER_SECS: u32 = 300;

/// Which kind of Geo site is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteRole {
    Primary,
    Secondary,
}

/// The site's current mode, as the caller last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteView {
    pub role: SiteRole,
    pub maintenance: bool,
    /// The admin's `maintenance_mode_message`; shown in 503 mode.
    pub message: Option<String>,
    /// Set when this site is a former primary that was replaced (SPEC §5). It then refuses
    /// every write whatever `role` and `maintenance` say: it is not the primary, and must not
    /// forward writes either.
    pub fenced: Option<Fenced>,
}

/// Why a fenced site refuses writes: another site leads at a higher epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    /// The highest epoch this site has seen (the new primary's).
    pub epoch: u64,
    /// The site that now takes writes, when known (an address or a name).
    pub new_primary: Option<String>,
}

impl Fenced {
    /// The sentence every refusal of a fenced site carries (SPEC §5).
    pub fn message(&self) -> String {
        // The name goes into text/plain bodies and log lines: a name with control
        // characters or no text at all is treated as unknown rather than shown.
        let target = self
            .new_primary
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty() && p.len() <= 512 && !p.chars().any(char::is_control));
        match target {
            Some(p) => format!(
                "This site was replaced as the primary (epoch {}); send writes to {p}.",
                self.epoch
            ),
            None => format!(
                "This site was replaced as the primary (epoch {}).",
                self.epoch
            ),
        }
    }
}

/// How a refused HTTP write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyMode {
    /// GitLab's classic answer: 403 JSON for API clients, a 301 back to the page for browsers.
    #[default]
    Forbidden403,
    /// GitLab 18.2's answer: CI runners that get a 403 disable themselves for an hour, so
    /// answer 503 with `Retry-After` and they simply try again later.
    Unavailable503 { retry_after_secs: u32 },
}

/// The gate's configuration. Build it once, [`GateConfig::validate`] it, and pass it by
/// reference to every [`decide`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// `""` or a path such as `/gitlab` under which every GitLab route sits.
    pub relative_url_root: String,
    /// Operator-added rows, consulted after the built-in allowlist.
    pub extra_allowlist: Vec<AllowRoute>,
    pub deny_mode: DenyMode,
    /// Clients from these networks are exempt from maintenance mode (operators' own hosts).
    pub exempt_cidrs: Vec<Cidr>,
    /// Bodies longer than this are not inspected: a write that needs inspection is refused.
    pub max_body_bytes: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            relative_url_root: String::new(),
            extra_allowlist: Vec::new(),
            deny_mode: DenyMode::Forbidden403,
            exempt_cidrs: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl GateConfig {
    /// Checks every value; call it once when the configuration is loaded. [`decide`] does not
    /// re-validate on the hot path, but an invalid root can only make it refuse more.
    pub fn validate(&self) -> Result<(), GateError> {
        path::validate_root(&self.relative_url_root)?;
        if let DenyMode::Unavailable503 { retry_after_secs } = self.deny_mode {
            if !(1..=MAX_RETRY_AFTER_SECS).contains(&retry_after_secs) {
                return Err(GateError::InvalidConfig(format!(
                    "deny_mode 503: retry_after_secs must be between 1 and {MAX_RETRY_AFTER_SECS}, got {retry_after_secs}"
                )));
            }
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(GateError::InvalidConfig(format!(
                "max_body_bytes must be between 1 and {MAX_BODY_BYTES_LIMIT}, got {}",
                self.max_body_bytes
            )));
        }
        Ok(())
    }

    /// `Retry-After` for a fenced site's 503s: the configured one, else the default.
    pub(crate) fn fenced_retry_after(&self) -> u32 {
        match self.deny_mode {
            DenyMode::Unavailable503 { retry_after_secs } => retry_after_secs,
            DenyMode::Forbidden403 => DEFAULT_FENCED_RETRY_AFTER_SECS,
        }
    }

    /// The root without a trailing slash (`"/"` and `""` both mean "no root").
    pub(crate) fn root(&self) -> &str {
        self.relative_url_root.trim_end_matches('/')
    }
}

/// One question to the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Http(HttpRequest),
    Git(GitRequest),
    Registry(RegistryRequest),
    Action(ActionRequest),
}

/// An HTTP request as the front end saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// Case-sensitive, as HTTP methods are: `get` is not `GET` (and so counts as a write).
    pub method: String,
    /// The request target as received, query string included (`/users/sign_in?x=1`).
    pub path: String,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub referer: Option<String>,
    /// Only needed for `/api/graphql` and LFS batch requests; `None` when the front end
    /// cannot send it (nginx `auth_request` never does).
    pub body: Option<Vec<u8>>,
    pub client_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GitOp {
    /// clone, fetch, pull
    UploadPack,
    /// push
    ReceivePack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GitProtocol {
    Ssh,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GitRequest {
    pub op: GitOp,
    pub protocol: GitProtocol,
    /// A push that a secondary forwarded to this site (which should be the primary).
    pub proxied: bool,
}

/// A container registry token request: `repository:group/app:pull,push`, `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryRequest {
    pub scopes: Vec<String>,
}

/// A named action of a subsystem that is not an HTTP request (see [`KNOWN_ACTIONS`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionRequest {
    pub action: String,
    /// Where it comes from; for `create_user`: `signup`, `ldap` or `saml`.
    pub source: Option<String>,
}

/// What the front end should do with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Run it here.
    Allow,
    /// This site is a secondary outside maintenance mode and the request writes: forward it
    /// to the primary, which will ask its own gate.
    ProxyToPrimary,
    /// Refuse it with the answer in the decision.
    Deny,
}

impl Verdict {
    /// `allow`, `proxy_to_primary` or `deny`: for headers, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::ProxyToPrimary => "proxy_to_primary",
            Verdict::Deny => "deny",
        }
    }
}

/// The gate's answer. Text fields are `Cow<'static, str>` so that the common decisions
/// (every allow, the default refusals) borrow constants and allocate nothing; they serialise
/// exactly like `String`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// 200 for allow and proxy; 403, 401, 503 or 301 for a refusal.
    pub status: u16,
    /// The content type of `body`; empty when the gate has no body of its own to send.
    pub content_type: Cow<'static, str>,
    /// The user-facing message: the flash alert for a 301, the text of a JSON error.
    pub message: Option<Cow<'static, str>>,
    /// The exact response body to send.
    pub body: Option<Cow<'static, str>>,
    /// Redirect target for a 301 (the Referer, else the root page).
    pub location: Option<String>,
    /// Seconds for the `Retry-After` header in 503 mode.
    pub retry_after: Option<u32>,
    /// Registry scopes the token may carry.
    pub granted_scopes: Vec<String>,
    /// A stable rule id (see [`rules::ids`]): for logs, metrics and tests.
    pub rule: &'static str,
    /// Why, for a human reading the log.
    pub reason: Cow<'static, str>,
}

impl Decision {
    pub(crate) fn allow(rule: &'static str, reason: impl Into<Cow<'static, str>>) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            status: 200,
            content_type: Cow::Borrowed(""),
            message: None,
            body: None,
            location: None,
            retry_after: None,
            granted_scopes: Vec::new(),
            rule,
            reason: reason.into(),
        }
    }

    pub(crate) fn proxy(rule: &'static str, reason: impl Into<Cow<'static, str>>) -> Decision {
        Decision {
            verdict: Verdict::ProxyToPrimary,
            ..Decision::allow(rule, reason)
        }
    }

    /// Whether the request may run on this site.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// Why the gate could not decide. Refusals are not errors: they are [`Decision`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateError {
    /// The request itself is malformed (overlong path, bad scope, unknown action, ...).
    InvalidInput(String),
    /// A configuration value is invalid.
    InvalidConfig(String),
}

impl crate::types::Classify for GateError {
    fn kind(&self) -> crate::types::ErrorKind {
        crate::types::ErrorKind::Invalid
    }
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::InvalidInput(msg) => write!(f, "invalid input: {msg}"),
            GateError::InvalidConfig(msg) => write!(f, "invalid configuration: {msg}"),
        }
    }
}

impl std::error::Error for GateError {}

/// Decides one request. Errors only for malformed input; every well-formed request gets a
/// [`Decision`], refusals included.
pub fn decide(req: &Request, site: &SiteView, cfg: &GateConfig) -> Result<Decision, GateError> {
    match req {
        Request::Http(r) => http::decide(r, site, cfg),
        Request::Git(r) => Ok(git::decide(r, site, cfg)),
        Request::Registry(r) => registry::decide(r, site),
        Request::Action(r) => action::decide(r, site, cfg),
    }
}
