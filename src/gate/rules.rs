//! The allowlist of SPEC §3 as data: one [`Row`] per route that may write while the site is
//! read-only, plus the stable rule ids every [`Decision`](super::Decision) carries.
//!
//! Trade-off: rows match on the normalised path with plain string matchers (exact, prefix,
//! contains, and two route shapes) instead of regexes or the Rails route table. That keeps a
//! check allocation-free and the table readable, at the price of guessing the route from
//! the path. The guesses are kept no broader than GitLab's own read-only middleware, which
//! asks the router: the compare row needs `<project>/-/compare` (or legacy
//! `<project>/compare`) and the git and LFS rows `<project>.git/...`, where no segment of
//! `<project>` is `-` or a word GitLab reserves for project routes (`blob`, `new`,
//! `create`, `files`, ...), so a file named `compare` or `info/lfs/objects/batch` created
//! through the web UI is not mistaken for them; the internal API is a prefix, not anywhere in
//! the path. Every matcher works on whole path segments (`/admin/geo` does not match
//! `/admin/geographic`), the first matching row decides, and the rows that restrict (body
//! checks, primary only) come first, so an overlap between rows can only tighten a decision.
//! Operator rows ([`AllowRoute`]) are consulted after the built-in ones and so cannot loosen
//! a built-in check (they cannot, for example, let GraphQL mutations through).

use super::path::validate_route_path;
use super::GateError;
use std::borrow::Cow;
use std::fmt;

/// Stable rule ids. Logs, metrics and front ends may key on these; never rename one.
pub mod ids {
    // General
    pub const MAINTENANCE_OFF: &str = "maintenance_off";
    pub const READ: &str = "read";
    pub const EXEMPT_CIDR: &str = "exempt_cidr";
    pub const PROXY_TO_PRIMARY: &str = "proxy_to_primary";
    pub const DENY_WRITE: &str = "deny.write";
    pub const DENY_PRIMARY_ONLY: &str = "deny.primary_only";
    pub const DENY_BODY_TOO_LARGE: &str = "deny.body_too_large";
    pub const ALLOW_EXTRA: &str = "allow.extra";
    /// A write refused because the site is fenced (a replaced primary, SPEC §5).
    pub const FENCED: &str = "fenced";

    // Built-in allowlist rows
    pub const ALLOW_GRAPHQL: &str = "allow.graphql";
    pub const ALLOW_LFS_BATCH: &str = "allow.lfs_batch";
    pub const ALLOW_ADMIN_SETTINGS: &str = "allow.admin_settings";
    pub const ALLOW_API_SETTINGS: &str = "allow.api_settings";
    pub const ALLOW_SIGN_IN: &str = "allow.sign_in";
    pub const ALLOW_OAUTH_TOKEN: &str = "allow.oauth_token";
    pub const ALLOW_GEO_SIGN_IN: &str = "allow.geo_sign_in";
    pub const ALLOW_GEO_SIGN_OUT: &str = "allow.geo_sign_out";
    pub const ALLOW_AUTH_CALLBACK: &str = "allow.auth_callback";
    pub const ALLOW_SIGN_OUT: &str = "allow.sign_out";
    pub const ALLOW_ADMIN_SESSION: &str = "allow.admin_session";
    pub const ALLOW_ADMIN_SESSION_DESTROY: &str = "allow.admin_session_destroy";
    pub const ALLOW_COMPARE: &str = "allow.compare";
    pub const ALLOW_GIT_UPLOAD_PACK: &str = "allow.git_upload_pack";
    pub const ALLOW_INTERNAL_API: &str = "allow.internal_api";
    pub const ALLOW_INTERNAL_API_V3: &str = "allow.internal_api_v3";
    pub const ALLOW_SIDEKIQ: &str = "allow.sidekiq";
    pub const ALLOW_ADMIN_GEO: &str = "allow.admin_geo";
    pub const ALLOW_GEO_REPLICATION: &str = "allow.geo_replication";
    pub const ALLOW_GEO_STATUS: &str = "allow.geo_status";
    pub const ALLOW_GEO_GRAPHQL: &str = "allow.geo_graphql";
    pub const ALLOW_JWT_AUTH: &str = "allow.jwt_auth";

    // Outcomes of the body checks of the GraphQL and LFS rows
    pub const GRAPHQL_GEO_MUTATION: &str = "allow.graphql.geo_registries_update";
    pub const GRAPHQL_NO_BODY: &str = "graphql.no_body";
    pub const GRAPHQL_UNPARSEABLE: &str = "graphql.unparseable";
    pub const GRAPHQL_NO_OPERATION: &str = "graphql.no_operation";
    pub const GRAPHQL_MUTATION: &str = "graphql.mutation";
    pub const GRAPHQL_TOO_COMPLEX: &str = "graphql.too_complex";
    pub const GRAPHQL_AMBIGUOUS: &str = "graphql.ambiguous";
    pub const GRAPHQL_MEDIA_TYPE: &str = "graphql.media_type";
    pub const LFS_NO_BODY: &str = "lfs.no_body";
    pub const LFS_UNPARSEABLE: &str = "lfs.unparseable";
    pub const LFS_UPLOAD: &str = "deny.lfs_upload";

    // Git
    pub const GIT_PULL: &str = "git.pull";
    pub const GIT_PUSH_MAINTENANCE: &str = "git.push.maintenance";
    pub const GIT_PUSH_PROXY: &str = "git.push.proxy";
    pub const GIT_PUSH_NOT_PRIMARY: &str = "git.push.not_primary";

    // Registry
    pub const REGISTRY_WRITE_DROPPED: &str = "registry.write_dropped";
    pub const REGISTRY_GRANTED: &str = "registry.granted";
}

/// The GraphQL endpoint, below the relative URL root.
pub(crate) const GRAPHQL_ROUTE: &str = "/api/graphql";

/// An HTTP method as the gate sees it. Anything but the three reads is a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Options,
    Post,
    Put,
    Patch,
    Delete,
    /// Any other method (`PROPFIND`, `MKCOL`, lowercase `get`, ...): treated as a write.
    Other,
}

impl Method {
    /// Case-sensitive, as RFC 9110 says: `get` is an unknown method, hence a write.
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    pub fn is_read(self) -> bool {
        matches!(self, Method::Get | Method::Head | Method::Options)
    }

    const fn bit(self) -> u8 {
        match self {
            Method::Get => 1,
            Method::Head => 1 << 1,
            Method::Options => 1 << 2,
            Method::Post => 1 << 3,
            Method::Put => 1 << 4,
            Method::Patch => 1 << 5,
            Method::Delete => 1 << 6,
            Method::Other => 1 << 7,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// A set of methods, as a bitset so a row check is one AND.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodSet(u8);

impl MethodSet {
    pub const POST: MethodSet = MethodSet(Method::Post.bit());
    pub const POST_PUT: MethodSet = MethodSet(Method::Post.bit() | Method::Put.bit());
    /// Every write method, unknown ones included.
    pub const ANY_WRITE: MethodSet = MethodSet(
        Method::Post.bit()
            | Method::Put.bit()
            | Method::Patch.bit()
            | Method::Delete.bit()
            | Method::Other.bit(),
    );

    pub const fn contains(self, m: Method) -> bool {
        self.0 & m.bit() != 0
    }

    /// `"POST"`, `"POST,PUT"` or `"*"` (every write method). Reads are never blocked, so
    /// listing them is a mistake worth reporting.
    pub fn parse(list: &str) -> Result<MethodSet, GateError> {
        let bad = |why: String| GateError::InvalidConfig(format!("methods {list:?}: {why}"));
        if list.trim() == "*" {
            return Ok(MethodSet::ANY_WRITE);
        }
        let mut set = 0u8;
        for name in list.split(',').map(str::trim) {
            let m = match name {
                "POST" => Method::Post,
                "PUT" => Method::Put,
                "PATCH" => Method::Patch,
                "DELETE" => Method::Delete,
                "GET" | "HEAD" | "OPTIONS" => {
                    return Err(bad(format!("{name} is a read and never blocked")));
                }
                other => {
                    return Err(bad(format!(
                        "unknown method {other:?} (use POST, PUT, PATCH, DELETE or *)"
                    )));
                }
            };
            set |= m.bit();
        }
        Ok(MethodSet(set))
    }
}

impl fmt::Debug for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = [
            Method::Get,
            Method::Head,
            Method::Options,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
            Method::Other,
        ];
        f.debug_set()
            .entries(all.iter().filter(|m| self.contains(**m)).map(|m| m.name()))
            .finish()
    }
}

/// How a row's pattern is compared with the normalised path below the relative root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// The whole path.
    Exact(&'static str),
    /// The path or anything below it (`/admin/geo`, `/admin/geo/sites`).
    Prefix(&'static str),
    /// A project route, `<project>/-/<tail>` or legacy `<project>/<tail>` (see
    /// [`project_path`]).
    Project(&'static str),
    /// A repository route, `<project>.git/<tail>`.
    Repo(&'static str),
    /// Whole segments anywhere in the path (`/api/v4/internal` in `/api/v4/internal/allowed`).
    Contains(&'static str),
}

impl Matcher {
    // Every row is tried against every write, so each check first compares one cheap byte
    // (the last, or the one after the leading '/') before comparing whole strings.
    pub fn matches(&self, path: &str) -> bool {
        match *self {
            Matcher::Exact(p) => path == p,
            Matcher::Prefix(p) => prefix_match(p, path),
            Matcher::Project(tail) => match route_head(path, tail) {
                Some(head) => project_path(head.strip_suffix("/-").unwrap_or(head)),
                None => false,
            },
            Matcher::Repo(tail) => match route_head(path, tail) {
                Some(head) => head.strip_suffix(".git").is_some_and(repository_path),
                None => false,
            },
            Matcher::Contains(p) => contains_segments(path.as_bytes(), p.as_bytes()),
        }
    }
}

/// `path` without `/<tail>`, if it ends that way.
fn route_head<'p>(path: &'p str, tail: &str) -> Option<&'p str> {
    if path.as_bytes().last() != tail.as_bytes().last() {
        return None;
    }
    path.strip_suffix(tail)?.strip_suffix('/')
}

/// Single-segment words GitLab reserves for project routes (`PathRegex`'s project wildcard
/// routes, plus `repository`): no project or group is called that, so a path with one of
/// them is a route inside a project (a file's path in `blob/`, `new/`, `create/`, ...).
const PROJECT_ROUTE_WORDS: &[&str] = &[
    "-",
    "badges",
    "blame",
    "blob",
    "builds",
    "commits",
    "create",
    "create_dir",
    "edit",
    "files",
    "find_file",
    "new",
    "preview",
    "raw",
    "refs",
    "repository",
    "tree",
    "update",
    "wikis",
];

/// Whether `p` (`/group/sub/project`) can be a project's full path: a namespace and a
/// name, no empty segment, none of them a word of a project route.
fn project_path(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let mut n = 0;
    for seg in rest.split('/') {
        if seg.is_empty() || PROJECT_ROUTE_WORDS.contains(&seg) {
            return false;
        }
        n += 1;
    }
    n >= 2
}

/// Whether `p` (`/group/sub/project`, before `.git`) can be a repository's path. GitLab's
/// router takes any `<namespace>/<project>.git/...` as a git route, so only the project's
/// own name must not be a project-route word, and no segment may be `-` (what follows `-`
/// is a route inside a project). Groups may have any name: refusing clones of projects in
/// a group called `files` or `new` would be a refusal GitLab does not make.
fn repository_path(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    segments.len() >= 2
        && segments.iter().all(|s| !s.is_empty() && *s != "-")
        && segments
            .last()
            .is_some_and(|name| !PROJECT_ROUTE_WORDS.contains(name))
}

fn prefix_match(pattern: &str, path: &str) -> bool {
    if path.as_bytes().get(1) != pattern.as_bytes().get(1) {
        return false;
    }
    match path.strip_prefix(pattern) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || pattern.ends_with('/'),
        None => false,
    }
}

/// Whether `pat` (which starts with '/') occurs in `hay` as whole segments. A match can
/// only start at a separator, so this scans bytes instead of building a substring searcher
/// per row per request.
fn contains_segments(hay: &[u8], pat: &[u8]) -> bool {
    let (Some(&b'/'), Some(&second)) = (pat.first(), pat.get(1)) else {
        return false;
    };
    if hay.len() < pat.len() {
        return false;
    }
    (0..=hay.len() - pat.len()).any(|i| {
        hay[i] == b'/'
            && hay[i + 1] == second
            && hay[i..i + pat.len()] == *pat
            && hay.get(i + pat.len()).is_none_or(|&b| b == b'/')
    })
}

/// What else must hold, beyond method and path, for a row to allow the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    None,
    /// Settings are only changed on the primary (SPEC §1); a secondary refuses.
    PrimaryOnly,
    /// An LFS batch body asking for `"operation": "upload"` is a write.
    LfsBatchBody,
    /// The GraphQL operation that would run must not be a mutation (bar `geoRegistriesUpdate`).
    GraphqlBody,
}

/// The outcome of a row's body check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// The row allows the write, under this rule id.
    Pass {
        rule: &'static str,
        reason: Cow<'static, str>,
    },
    /// The write is not what the row allows: treat it as any other write.
    Block {
        rule: &'static str,
        reason: Cow<'static, str>,
    },
}

/// One allowlist row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub id: &'static str,
    pub methods: MethodSet,
    pub matcher: Matcher,
    pub condition: Condition,
    /// Why the route is allowed; shown in the decision's reason.
    pub why: &'static str,
}

const fn row(
    id: &'static str,
    methods: MethodSet,
    matcher: Matcher,
    condition: Condition,
    why: &'static str,
) -> Row {
    Row {
        id,
        methods,
        matcher,
        condition,
        why,
    }
}

use Condition as C;
use Matcher as M;
use MethodSet as S;

/// SPEC §3's HTTP table. Paths are below the relative URL root. Restricting rows first.
// Kept as a hand-aligned table: it is read more often than it is edited.
#[rustfmt::skip]
pub static ALLOWLIST: &[Row] = &[
    row(ids::ALLOW_GRAPHQL, S::POST, M::Exact(GRAPHQL_ROUTE), C::GraphqlBody,
        "GraphQL queries pass; mutations are blocked"),
    row(ids::ALLOW_LFS_BATCH, S::POST, M::Repo("info/lfs/objects/batch"), C::LfsBatchBody,
        "LFS batch download"),
    row(ids::ALLOW_ADMIN_SETTINGS, S::POST_PUT, M::Exact("/admin/application_settings/general"),
        C::PrimaryOnly, "admins can turn maintenance mode off again"),
    row(ids::ALLOW_API_SETTINGS, S::POST_PUT, M::Prefix("/api/v4/application/settings"),
        C::PrimaryOnly, "admins can turn maintenance mode off again through the API"),
    row(ids::ALLOW_SIGN_IN, S::POST, M::Exact("/users/sign_in"), C::None, "log in"),
    row(ids::ALLOW_OAUTH_TOKEN, S::POST, M::Exact("/oauth/token"), C::None,
        "log in (also on a secondary for the first time)"),
    row(ids::ALLOW_GEO_SIGN_IN, S::POST, M::Exact("/users/auth/geo/sign_in"), C::None,
        "log in to a secondary"),
    row(ids::ALLOW_GEO_SIGN_OUT, S::POST, M::Exact("/users/auth/geo/sign_out"), C::None,
        "log out of a secondary"),
    row(ids::ALLOW_AUTH_CALLBACK, S::POST, M::Prefix("/users/auth/"), C::None,
        "log in through an identity provider (OmniAuth request and callback)"),
    row(ids::ALLOW_SIGN_OUT, S::POST, M::Exact("/users/sign_out"), C::None, "log out"),
    row(ids::ALLOW_ADMIN_SESSION, S::POST, M::Exact("/admin/session"), C::None,
        "enter admin mode"),
    row(ids::ALLOW_ADMIN_SESSION_DESTROY, S::POST, M::Exact("/admin/session/destroy"), C::None,
        "leave admin mode"),
    row(ids::ALLOW_COMPARE, S::POST, M::Project("compare"), C::None, "git revision compare"),
    row(ids::ALLOW_GIT_UPLOAD_PACK, S::POST, M::Repo("git-upload-pack"), C::None,
        "git clone / fetch / pull over HTTP"),
    row(ids::ALLOW_INTERNAL_API, S::ANY_WRITE, M::Prefix("/api/v4/internal/"), C::None,
        "internal API (gitlab-shell, workhorse)"),
    row(ids::ALLOW_INTERNAL_API_V3, S::ANY_WRITE, M::Prefix("/api/v3/internal/"), C::None,
        "internal API (gitlab-shell, workhorse)"),
    row(ids::ALLOW_SIDEKIQ, S::POST, M::Prefix("/admin/sidekiq"), C::None,
        "manage background jobs"),
    row(ids::ALLOW_ADMIN_GEO, S::POST, M::Prefix("/admin/geo"), C::None, "manage Geo sites"),
    row(ids::ALLOW_GEO_REPLICATION, S::POST, M::Contains("/api/v4/geo_replication"), C::None,
        "Geo admin actions on a secondary"),
    row(ids::ALLOW_GEO_STATUS, S::POST, M::Contains("/api/v4/geo/status"), C::None,
        "Geo status reports"),
    row(ids::ALLOW_GEO_GRAPHQL, S::POST, M::Contains("/api/v4/geo/graphql"), C::None,
        "Geo's own GraphQL endpoint"),
    row(ids::ALLOW_JWT_AUTH, S::POST, M::Exact("/jwt/auth"), C::None,
        "registry tokens (push scopes are filtered by the token service)"),
];

/// Rows whose writes are reads carried by a write method, and so still run on a fenced
/// site — and then only under these ids, i.e. when a body check proved the request a read.
pub static FENCED_READS: &[&str] = &[
    ids::ALLOW_GRAPHQL,
    ids::ALLOW_LFS_BATCH,
    ids::ALLOW_COMPARE,
    ids::ALLOW_GIT_UPLOAD_PACK,
];

/// The one place the table is read: the first built-in row for this method and path.
pub(crate) fn find(method: Method, path: &str) -> Option<&'static Row> {
    ALLOWLIST
        .iter()
        .find(|r| r.methods.contains(method) && r.matcher.matches(path))
}

/// Every rule id under which a write may be allowed on a read-only site. Anything else
/// that lets a write through in maintenance mode is a bug.
pub fn write_allowing_ids() -> impl Iterator<Item = &'static str> {
    ALLOWLIST.iter().map(|r| r.id).chain([
        ids::GRAPHQL_GEO_MUTATION,
        ids::GRAPHQL_NO_BODY,
        ids::GRAPHQL_NO_OPERATION,
        ids::LFS_NO_BODY,
        ids::LFS_UNPARSEABLE,
        ids::ALLOW_EXTRA,
        ids::EXEMPT_CIDR,
    ])
}

/// The path part of an operator allowlist row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoutePattern {
    /// Exactly this path.
    Exact(String),
    /// This path or anything below it.
    Prefix(String),
}

/// An operator-configured allowlist row: methods and a path below the relative URL root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowRoute {
    methods: MethodSet,
    pattern: RoutePattern,
}

impl AllowRoute {
    /// Validates the pattern: absolute, already normal, and not `/` (which would allow
    /// every write — turn maintenance mode off instead).
    pub fn new(methods: MethodSet, pattern: RoutePattern) -> Result<AllowRoute, GateError> {
        let p = match &pattern {
            RoutePattern::Exact(p) | RoutePattern::Prefix(p) => p,
        };
        let bad = |why: &str| GateError::InvalidConfig(format!("allowlist route {p:?}: {why}"));
        if p.len() > 1024 {
            return Err(bad("longer than 1024 bytes"));
        }
        validate_route_path(p).map_err(bad)?;
        if p.trim_end_matches('/').is_empty() {
            return Err(bad("would allow every write"));
        }
        if p.len() > 1 && p.ends_with('/') {
            return Err(bad("must not end with '/'"));
        }
        if methods == MethodSet(0) {
            return Err(bad("no methods"));
        }
        Ok(AllowRoute { methods, pattern })
    }

    /// Parses `"POST,PUT /api/v4/foo"` (exact) or `"POST /admin/foo/*"` (prefix).
    pub fn parse(spec: &str) -> Result<AllowRoute, GateError> {
        let Some((methods, path)) = spec.trim().split_once(char::is_whitespace) else {
            return Err(GateError::InvalidConfig(format!(
                "allowlist route {spec:?}: expected \"METHODS /path\" or \"METHODS /path/*\""
            )));
        };
        let methods = MethodSet::parse(methods)?;
        let path = path.trim();
        let pattern = match path.strip_suffix("/*") {
            Some(prefix) => RoutePattern::Prefix(prefix.to_string()),
            None => RoutePattern::Exact(path.to_string()),
        };
        AllowRoute::new(methods, pattern)
    }

    pub fn methods(&self) -> MethodSet {
        self.methods
    }

    pub fn pattern(&self) -> &RoutePattern {
        &self.pattern
    }

    pub(crate) fn matches(&self, method: Method, path: &str) -> bool {
        self.methods.contains(method)
            && match &self.pattern {
                RoutePattern::Exact(p) => path == p,
                RoutePattern::Prefix(p) => prefix_match(p, path),
            }
    }
}

impl fmt::Display for AllowRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            RoutePattern::Exact(p) => write!(f, "{:?} {p}", self.methods),
            RoutePattern::Prefix(p) => write!(f, "{:?} {p}/*", self.methods),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_and_rows_are_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for r in ALLOWLIST {
            assert!(seen.insert(r.id), "duplicate rule id {}", r.id);
            assert!(r.id.starts_with("allow."), "{}", r.id);
            assert!(!r.methods.contains(Method::Get) && !r.methods.contains(Method::Head));
            let p = match r.matcher {
                M::Exact(p) | M::Prefix(p) | M::Project(p) | M::Repo(p) | M::Contains(p) => p,
            };
            assert!(!p.contains(['%', '?', '\\']), "{p}");
            if let M::Contains(p) | M::Prefix(p) | M::Exact(p) = r.matcher {
                assert!(p.starts_with('/'), "{p} must start at a separator");
            }
        }
        let all: Vec<_> = write_allowing_ids().collect();
        let uniq: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), uniq.len());
    }

    #[test]
    fn matchers_work_on_whole_segments() {
        assert!(M::Prefix("/admin/geo").matches("/admin/geo"));
        assert!(M::Prefix("/admin/geo").matches("/admin/geo/sites/1"));
        assert!(!M::Prefix("/admin/geo").matches("/admin/geographic"));
        assert!(M::Prefix("/users/auth/").matches("/users/auth/saml/callback"));
        assert!(!M::Prefix("/users/auth/").matches("/users/auth"));
        assert!(M::Contains("/api/v4/internal").matches("/api/v4/internal"));
        assert!(M::Contains("/api/v4/internal").matches("/x/api/v4/internal/allowed"));
        assert!(!M::Contains("/api/v4/internal").matches("/api/v4/internal_tools"));
        assert!(!M::Contains("/api/v4/internal").matches("/api/v4/projects"));
        assert!(!M::Contains("/api/v4/internal").matches("/api/v4/interna"));
        assert!(!M::Contains("/api/v4/internal").matches("/x/api/v4/internalx/api/v4/internaly"));
        assert!(M::Contains("/api/v4/internal").matches("/x/api/v4/internalx/api/v4/internal"));
        assert!(!M::Contains("/api/v4/internal").matches(""));
        assert!(!M::Prefix("/admin/geo").matches(""));
        assert!(M::Project("compare").matches("/g/p/-/compare"));
        assert!(M::Project("compare").matches("/g/sub/p/compare"));
        assert!(!M::Project("compare").matches("/compare"));
        assert!(!M::Project("compare").matches("/p/compare"), "no namespace");
        assert!(
            !M::Project("compare").matches("/p/-/compare"),
            "no namespace"
        );
        assert!(!M::Project("compare").matches("/g/p/-/xcompare"));
        assert!(!M::Project("compare").matches("/g/p/-/-/compare"));
        assert!(!M::Project("compare").matches("/g/p/-/repository/files/compare"));
        assert!(!M::Project("compare").matches("/g/p/-/blob/main/compare"));
        assert!(!M::Project("compare").matches("/g/p/new/main/compare"));
        let upload = M::Repo("git-upload-pack");
        assert!(upload.matches("/g/p.git/git-upload-pack"));
        assert!(
            upload.matches("/g/files/new/p.git/git-upload-pack"),
            "groups may be called anything"
        );
        assert!(
            !upload.matches("/g/p/git-upload-pack"),
            "the router needs .git"
        );
        assert!(!upload.matches("/g/p/-/x.git/git-upload-pack"));
        assert!(
            !upload.matches("/g/new.git/git-upload-pack"),
            "a reserved project name"
        );
        assert!(!upload.matches("/p.git/git-upload-pack"), "no namespace");
        assert!(M::Repo("git-upload-pack").matches("/g/p.git/git-upload-pack"));
        assert!(M::Repo("git-upload-pack").matches("/g/sub/p.wiki.git/git-upload-pack"));
        assert!(!M::Repo("git-upload-pack").matches("/g/.git/git-upload-pack"));
        assert!(!M::Repo("git-upload-pack").matches("/.git/git-upload-pack"));
        assert!(!M::Repo("git-upload-pack").matches(".git/git-upload-pack"));
        assert!(!M::Repo("git-upload-pack").matches("/g/p/git-upload-pack"));
        assert!(!M::Repo("git-upload-pack").matches("/g/p/-/create/main/x.git/git-upload-pack"));
        assert!(!M::Repo("git-upload-pack").matches("/g/p.git/x-git-upload-pack"));
        assert!(M::Repo("info/lfs/objects/batch").matches("/g/p.git/info/lfs/objects/batch"));
        assert!(!M::Repo("info/lfs/objects/batch")
            .matches("/root/proj/new/master/app/info/lfs/objects/batch"));
        // GitLab's router takes this as the LFS batch of project root/proj/new/master/app
        // (git routes are drawn before project routes), not as a web "new file" request.
        assert!(M::Repo("info/lfs/objects/batch")
            .matches("/root/proj/new/master/app.git/info/lfs/objects/batch"));
        assert!(M::Prefix("/api/v4/internal/").matches("/api/v4/internal/allowed"));
        assert!(!M::Prefix("/api/v4/internal/").matches("/x/api/v4/internal/allowed"));
        assert!(!M::Prefix("/api/v4/internal/").matches("/api/v4/internal_tools"));
        assert!(M::Exact("/jwt/auth").matches("/jwt/auth"));
        assert!(!M::Exact("/jwt/auth").matches("/jwt/auth/x"));
    }

    #[test]
    fn first_matching_row_decides_and_restricting_rows_win_overlaps() {
        let r = find(
            Method::Post,
            "/api/v4/internal/g/p.git/info/lfs/objects/batch",
        );
        assert_eq!(r.map(|r| r.id), Some(ids::ALLOW_LFS_BATCH));
        let r = find(Method::Post, "/users/auth/geo/sign_in");
        assert_eq!(r.map(|r| r.id), Some(ids::ALLOW_GEO_SIGN_IN));
        assert_eq!(find(Method::Patch, "/users/sign_in"), None);
        assert_eq!(
            find(Method::Other, "/api/v4/internal/allowed").map(|r| r.id),
            Some(ids::ALLOW_INTERNAL_API)
        );
    }

    #[test]
    fn methods_parse_strictly() {
        assert_eq!(MethodSet::parse("*").unwrap(), MethodSet::ANY_WRITE);
        assert_eq!(MethodSet::parse("POST, PUT").unwrap(), MethodSet::POST_PUT);
        assert!(MethodSet::parse("GET").is_err());
        assert!(MethodSet::parse("post").is_err());
        assert!(MethodSet::parse("").is_err());
        assert_eq!(Method::parse("get"), Method::Other);
        assert!(!Method::parse("PROPFIND").is_read());
        assert_eq!(format!("{:?}", MethodSet::POST_PUT), r#"{"POST", "PUT"}"#);
    }

    #[test]
    fn operator_routes_parse_and_validate() {
        let r = AllowRoute::parse("POST,PUT /api/v4/custom").unwrap();
        assert!(r.matches(Method::Put, "/api/v4/custom"));
        assert!(!r.matches(Method::Put, "/api/v4/custom/x"));
        assert!(!r.matches(Method::Delete, "/api/v4/custom"));
        let r = AllowRoute::parse("* /hooks/*").unwrap();
        assert!(r.matches(Method::Delete, "/hooks/a/b"));
        assert!(r.matches(Method::Other, "/hooks"));
        assert!(!r.matches(Method::Post, "/hooksx"));
        assert_eq!(
            r.to_string(),
            r#"{"POST", "PUT", "PATCH", "DELETE", "OTHER"} /hooks/*"#
        );
        for bad in [
            "POST",
            "POST /",
            "POST /*",
            "POST x",
            "POST /a/../b",
            "POST /a%2Fb",
            "POST /a/",
            "GET /a",
            "POST /a?b",
            "POST //a",
        ] {
            assert!(AllowRoute::parse(bad).is_err(), "{bad}");
        }
    }
}
