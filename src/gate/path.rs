//! Request-path normalisation: turns the raw request target into the path a router would
//! route on — query string stripped, percent-decoded once, repeated slashes collapsed, `.`
//! and `..` resolved (never above the root), a trailing slash dropped — and says whether
//! that path may be matched against the allowlist at all.
//!
//! Trade-off: front ends disagree about paths. nginx decodes and resolves dot segments
//! before matching locations but passes the raw target upstream; Rails squeezes slashes and
//! drops a trailing slash but neither decodes nor resolves dots. A gate that resolves
//! `/x/-/create/main/../../../users/sign_in` to `/users/sign_in` and allows it could let a
//! Rails glob route write a file. So a path is *resolved* (to classify it and to log it) but
//! marked *suspicious* — never matching an allowlist row — when the front ends could see it
//! differently: dot segments, an encoded `/`, `\` or `%`, a backslash, a control character,
//! bad escapes or invalid UTF-8. No legitimate client sends those on an allowlisted write
//! (browsers, git and curl resolve dot segments themselves), so failing closed costs
//! nothing. The clean path — nearly every request — is returned borrowed: no allocation.

use super::GateError;
use std::borrow::Cow;

/// A request target after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalPath<'a> {
    /// The normalised path, without query string.
    pub(crate) path: Cow<'a, str>,
    /// The raw query string (without `?`), `""` if none.
    pub(crate) query: &'a str,
    /// `Some(why)` when the path must not match any allowlist row.
    pub(crate) suspicious: Option<&'static str>,
}

impl NormalPath<'_> {
    /// The path below the relative URL root, or `None` when it is not under the root (the
    /// router would not route it to GitLab at all).
    pub(crate) fn under_root(&self, root: &str) -> Option<&str> {
        strip_root(&self.path, root)
    }
}

/// Normalises a raw request target. Never fails: what cannot be normalised is returned as
/// is and marked suspicious.
pub(crate) fn normalise(raw: &str) -> NormalPath<'_> {
    let (p, query) = match raw.split_once('?') {
        Some((p, q)) => (p, q),
        None => (raw, ""),
    };
    if !p.starts_with('/') {
        // asterisk-form (`OPTIONS *`) or absolute-form: not something a route matches.
        return NormalPath {
            path: Cow::Borrowed(p),
            query,
            suspicious: Some("the path is not absolute"),
        };
    }
    let mut suspicious = None;
    if p.bytes()
        .any(|b| b == b'\\' || b == b'#' || b.is_ascii_control())
    {
        suspicious = Some("the path contains a backslash, '#' or a control character");
    }
    let decoded = if p.contains('%') {
        match percent_decode(p) {
            Ok(s) => Cow::Owned(s),
            Err(why) => {
                suspicious = suspicious.or(Some(why));
                Cow::Borrowed(p)
            }
        }
    } else {
        Cow::Borrowed(p)
    };
    let (path, dotted) = resolve_segments(decoded);
    if dotted {
        suspicious = suspicious.or(Some("the path has '.' or '..' segments"));
    }
    NormalPath {
        path,
        query,
        suspicious,
    }
}

/// Decodes `%XX` escapes once. Refuses what would let an encoding change the path's shape
/// for one reader and not another.
fn percent_decode(p: &str) -> Result<String, &'static str> {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return Err("the path has a truncated percent escape");
        };
        let (Some(h), Some(l)) = (hex(h), hex(l)) else {
            return Err("the path has an invalid percent escape");
        };
        let d = (h << 4) | l;
        match d {
            b'/' | b'\\' => return Err("the path has an encoded '/' or '\\'"),
            b'%' => return Err("the path is double-encoded (an encoded '%')"),
            _ if d.is_ascii_control() => {
                return Err("the path has an encoded control character (NUL included)");
            }
            _ => out.push(d),
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| "the path is not valid UTF-8 once decoded")
}

pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Collapses empty segments, resolves `.` and `..` (never above `/`) and drops a trailing
/// slash. Returns the input untouched when it is already clean, and whether any dot segment
/// was seen.
fn resolve_segments(input: Cow<'_, str>) -> (Cow<'_, str>, bool) {
    let s: &str = &input;
    let mut dirty = s.len() > 1 && s.ends_with('/');
    let mut dotted = false;
    // The first split item is the empty string before the leading '/'.
    for seg in s.split('/').skip(1) {
        match seg {
            "." | ".." => {
                dotted = true;
                dirty = true;
            }
            "" => dirty = dirty || s.len() > 1,
            _ => {}
        }
    }
    if !dirty {
        return (input, false);
    }
    let mut stack: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            _ => stack.push(seg),
        }
    }
    let mut out = String::with_capacity(s.len());
    for seg in &stack {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    (Cow::Owned(out), dotted)
}

/// The part of `path` below `root` (`""` = no root), always starting with `/`.
pub(crate) fn strip_root<'p>(path: &'p str, root: &str) -> Option<&'p str> {
    if root.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// A relative URL root is `""` or an absolute, already-normal path: `/gitlab`, `/a/b`.
pub(crate) fn validate_root(root: &str) -> Result<(), GateError> {
    if root.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| GateError::InvalidConfig(format!("relative_url_root {root:?}: {why}"));
    if root.len() > 256 {
        return Err(bad("longer than 256 bytes"));
    }
    validate_route_path(root).map_err(bad)?;
    if root == "/" || root.ends_with('/') {
        return Err(bad("must not end with '/' (use \"\" for no root)"));
    }
    Ok(())
}

/// A configured path (root or allowlist pattern) must already be in the form
/// [`normalise`] produces, or it could never match — or match too much.
pub(crate) fn validate_route_path(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') {
        return Err("must start with '/'");
    }
    if p.bytes()
        .any(|b| matches!(b, b'%' | b'?' | b'#' | b'\\' | b' ') || b.is_ascii_control())
    {
        return Err("must not contain '%', '?', '#', '\\', spaces or control characters");
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("must not contain empty, '.' or '..' segments");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> (String, bool) {
        let n = normalise(raw);
        (n.path.into_owned(), n.suspicious.is_none())
    }

    #[test]
    fn clean_paths_are_borrowed_not_copied() {
        for p in [
            "/",
            "/users/sign_in",
            "/api/v4/internal/allowed",
            "/a/b.git/git-upload-pack",
        ] {
            let n = normalise(p);
            assert!(matches!(n.path, Cow::Borrowed(_)), "{p} was copied");
            assert_eq!(n.path, p);
            assert_eq!(n.suspicious, None);
        }
        let n = normalise("/users/sign_in?redirect=/admin");
        assert!(matches!(n.path, Cow::Borrowed("/users/sign_in")));
        assert_eq!(n.query, "redirect=/admin");
    }

    #[test]
    fn normalises_like_a_router() {
        let cases = [
            ("//users//sign_in", "/users/sign_in", true),
            ("/users/sign_in/", "/users/sign_in", true),
            ("/users/sign%5Fin", "/users/sign_in", true),
            ("/", "/", true),
            ("//", "/", true),
            (
                "/api/v4/projects/1/../../internal/x",
                "/api/v4/internal/x",
                false,
            ),
            (
                "/users/sign_in/../../api/v4/projects",
                "/api/v4/projects",
                false,
            ),
            ("/../../../users/sign_in", "/users/sign_in", false),
            ("/users/./sign_in", "/users/sign_in", false),
            ("/a/%2e%2e/users/sign_in", "/users/sign_in", false),
            ("/a/...", "/a/...", true),
            ("/a/.hidden", "/a/.hidden", true),
        ];
        for (raw, want, clean) in cases {
            assert_eq!(norm(raw), (want.to_string(), clean), "{raw}");
        }
    }

    #[test]
    fn encodings_that_change_the_shape_are_suspicious() {
        for raw in [
            "/users/sign_in%2F..%2F..%2Fapi",
            "/users%2fsign_in",
            "/users%5Csign_in",
            "/users\\sign_in",
            "/users/sign_in%00",
            "/users/sign_in%",
            "/users/sign_in%4",
            "/users/sign_in%zz",
            "/users/sign_in%252F",
            "/users/sign_in%FF",
            "/users/sign_in#x",
            "/users/sign_in\n",
            "users/sign_in",
            "*",
            "http://evil/users/sign_in",
        ] {
            assert!(
                normalise(raw).suspicious.is_some(),
                "{raw:?} should be suspicious"
            );
        }
    }

    #[test]
    fn query_string_is_stripped_before_decoding() {
        let n = normalise("/users/sign_in%3Fx?y=%2F");
        assert_eq!(n.path, "/users/sign_in?x");
        assert_eq!(n.query, "y=%2F");
        assert_eq!(n.suspicious, None);
    }

    #[test]
    fn root_is_stripped_on_a_segment_boundary() {
        assert_eq!(
            strip_root("/gitlab/users/sign_in", "/gitlab"),
            Some("/users/sign_in")
        );
        assert_eq!(strip_root("/gitlab", "/gitlab"), Some("/"));
        assert_eq!(strip_root("/gitlabx/users/sign_in", "/gitlab"), None);
        assert_eq!(strip_root("/users/sign_in", "/gitlab"), None);
        assert_eq!(strip_root("/users/sign_in", ""), Some("/users/sign_in"));
    }

    #[test]
    fn roots_are_validated() {
        for ok in ["", "/gitlab", "/a/b"] {
            assert!(validate_root(ok).is_ok(), "{ok}");
        }
        for bad in [
            "gitlab", "/", "/gitlab/", "//gitlab", "/a/../b", "/a%2Fb", "/a b", "/a?x",
        ] {
            assert!(validate_root(bad).is_err(), "{bad}");
        }
    }
}
