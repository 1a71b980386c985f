//! Container registry token scopes: in maintenance mode a token is still issued, but with
//! the write actions (`push`, `delete`, `*`) of repository scopes dropped, so `docker pull`
//! works and `docker push` is told `denied: requested access to the resource is denied`.
//!
//! Trade-off: scopes are parsed strictly (the Docker token grammar, GitLab's resource types
//! and actions only) and a malformed one fails the whole request with an error instead of
//! being dropped quietly: a token service that guesses at a scope can grant the wrong one.
//! `registry:catalog:*` keeps its `*`, which there means "list the catalog" — a read.

use super::rules::ids;
use super::{Decision, GateError, SiteView, REGISTRY_WRITE_DENIED};
use crate::types::truncate_chars;
use std::fmt;

/// Most scopes one token request may ask for.
pub const MAX_SCOPES: usize = 64;
/// Longest scope string accepted.
pub const MAX_SCOPE_BYTES: usize = 512;
/// Longest repository name (the distribution spec's limit).
const MAX_NAME_BYTES: usize = 255;

/// One parsed scope: `type[(class)]:name:action[,action...]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryScope {
    /// `repository` or `registry`.
    pub resource_type: String,
    /// `plugin` in `repository(plugin):...`.
    pub resource_class: Option<String>,
    pub name: String,
    /// Deduplicated, in request order.
    pub actions: Vec<String>,
}

impl RegistryScope {
    pub fn parse(s: &str) -> Result<RegistryScope, GateError> {
        let bad = |why: &str| {
            GateError::InvalidInput(format!(
                "registry scope {:?}: {why} (expected TYPE:NAME:ACTIONS, \
                 e.g. repository:group/app:pull,push)",
                truncate_chars(s, 80)
            ))
        };
        if s.is_empty() || s.len() > MAX_SCOPE_BYTES {
            return Err(bad("empty or too long"));
        }
        let (ty, rest) = s.split_once(':').ok_or_else(|| bad("missing ':'"))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("missing actions"))?;
        let (resource_type, resource_class) = match ty.split_once('(') {
            None => (ty, None),
            Some((t, class)) => {
                let class = class
                    .strip_suffix(')')
                    .filter(|c| !c.is_empty() && c.bytes().all(is_lower_alnum))
                    .ok_or_else(|| bad("invalid resource class"))?;
                (t, Some(class))
            }
        };
        let action_list: Vec<&str> = actions.split(',').collect();
        match resource_type {
            "repository" => {
                if !valid_repository_name(name) {
                    return Err(bad("invalid repository name"));
                }
                if let Some(a) = action_list
                    .iter()
                    .find(|a| !matches!(**a, "pull" | "push" | "delete" | "*"))
                {
                    return Err(bad(&format!(
                        "unknown action {a:?} (pull, push, delete or *)"
                    )));
                }
            }
            "registry" => {
                if resource_class.is_some() {
                    return Err(bad("the registry resource has no class"));
                }
                if name != "catalog" {
                    return Err(bad("the only registry resource is \"catalog\""));
                }
                if action_list.iter().any(|a| *a != "*") {
                    return Err(bad("the catalog's only action is \"*\""));
                }
            }
            other => {
                return Err(bad(&format!(
                    "unknown resource type {:?} (repository or registry)",
                    truncate_chars(other, 80)
                )));
            }
        }
        let mut uniq: Vec<String> = Vec::with_capacity(action_list.len());
        for a in action_list {
            if !uniq.iter().any(|u| u == a) {
                uniq.push(a.to_string());
            }
        }
        Ok(RegistryScope {
            resource_type: resource_type.to_string(),
            resource_class: resource_class.map(str::to_string),
            name: name.to_string(),
            actions: uniq,
        })
    }

    /// The scope with write actions removed, or `None` if nothing is left.
    fn read_only(&self) -> Option<RegistryScope> {
        if self.resource_type != "repository" {
            return Some(self.clone());
        }
        let actions: Vec<String> = self
            .actions
            .iter()
            .filter(|a| *a == "pull")
            .cloned()
            .collect();
        (!actions.is_empty()).then(|| RegistryScope {
            actions,
            ..self.clone()
        })
    }
}

impl fmt::Display for RegistryScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(c) = &self.resource_class {
            write!(f, "({c})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `component(/component)*`, each `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_repository_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !is_lower_alnum(first) || !is_lower_alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

pub(crate) fn decide(req: &super::RegistryRequest, site: &SiteView) -> Result<Decision, GateError> {
    if req.scopes.len() > MAX_SCOPES {
        return Err(GateError::InvalidInput(format!(
            "{} registry scopes requested, at most {MAX_SCOPES} allowed",
            req.scopes.len()
        )));
    }
    let scopes = req
        .scopes
        .iter()
        .map(|s| RegistryScope::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if site.fenced.is_none() && !site.maintenance {
        let mut d = Decision::allow(
            ids::MAINTENANCE_OFF,
            "maintenance mode is off: every requested scope is granted",
        );
        d.granted_scopes = scopes.iter().map(ToString::to_string).collect();
        return Ok(d);
    }
    let mut dropped = false;
    let mut granted = Vec::with_capacity(scopes.len());
    for scope in &scopes {
        match scope.read_only() {
            Some(ro) => {
                dropped |= ro.actions.len() != scope.actions.len();
                granted.push(ro.to_string());
            }
            None => dropped = true,
        }
    }
    let mut d = match &site.fenced {
        // A fenced site issues pull-only tokens whatever its maintenance setting says.
        Some(f) if dropped => Decision::allow(
            ids::FENCED,
            format!("{REGISTRY_WRITE_DENIED}: {}", f.message()),
        ),
        _ if dropped => Decision::allow(ids::REGISTRY_WRITE_DROPPED, REGISTRY_WRITE_DENIED),
        Some(_) => Decision::allow(
            ids::REGISTRY_GRANTED,
            "fenced site: only read access was requested",
        ),
        None => Decision::allow(
            ids::REGISTRY_GRANTED,
            "maintenance mode: only read access was requested",
        ),
    };
    d.granted_scopes = granted;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gitlab_scopes() {
        let s = RegistryScope::parse("repository:group/sub/app:pull,push").unwrap();
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.name, "group/sub/app");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:group/sub/app:pull,push");
        let p = RegistryScope::parse("repository(plugin):a/b:pull,pull,*").unwrap();
        assert_eq!(p.resource_class.as_deref(), Some("plugin"));
        assert_eq!(p.to_string(), "repository(plugin):a/b:pull,*");
        assert_eq!(
            RegistryScope::parse("registry:catalog:*")
                .unwrap()
                .to_string(),
            "registry:catalog:*"
        );
        for ok in [
            "repository:a:pull",
            "repository:a.b_c__d--e/f-1:delete",
            "repository:0:*",
        ] {
            assert!(RegistryScope::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_scopes_with_a_clear_error() {
        for bad in [
            "",
            "repository",
            "repository:app",
            "repository::pull",
            "repository:app:",
            "repository:app:pull,",
            "repository:app:read",
            "repository:App:pull",
            "repository:/app:pull",
            "repository:app/:pull",
            "repository:a//b:pull",
            "repository:-a:pull",
            "repository:a..b:pull",
            "repository:a___b:pull",
            "repository:a b:pull",
            "repository:host:5000/app:pull",
            "repository(:a:pull",
            "repository():a:pull",
            "repository(Plugin):a:pull",
            "registry:catalog:pull",
            "registry:other:*",
            "registry(x):catalog:*",
            "blob:a:pull",
            "REPOSITORY:a:pull",
            "repository:a:pull\n",
        ] {
            match RegistryScope::parse(bad) {
                Err(GateError::InvalidInput(m)) => assert!(m.contains("registry scope"), "{m}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let long = format!("repository:{}:pull", "a".repeat(600));
        assert!(RegistryScope::parse(&long).is_err());
        let long_name = format!("repository:{}:pull", ["a"; 200].join("/"));
        assert!(
            RegistryScope::parse(&long_name).is_err(),
            "name over 255 bytes"
        );
    }
}
