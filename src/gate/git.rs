//! Git over SSH and HTTP: fetches always run; pushes are refused in maintenance mode with
//! the exact text git shows the user, and proxied to the primary from a secondary otherwise.
//!
//! Trade-off: the answer's shape is fixed by what each client displays, not by the deny
//! mode — gitlab-shell prints the message of a 401 `{"status":false,...}` from
//! `/internal/allowed` (a 403 would hide it), and git over HTTP prints a 403 `text/plain`
//! body. 503 mode is for HTTP API clients (CI runners) and does not apply to git.

use super::fence;
use super::rules::ids;
use super::{
    Decision, GateConfig, GitOp, GitProtocol, GitRequest, SiteRole, SiteView, Verdict,
    GIT_PUSH_MESSAGE,
};
use std::borrow::Cow;

/// `{"status":false,"message":"<GIT_PUSH_MESSAGE>"}`, what gitlab-shell expects.
const SSH_PUSH_BODY: &str = r#"{"status":false,"message":"Git push is not allowed because this GitLab instance is currently in (read-only) maintenance mode."}"#;
const SSH_NOT_PRIMARY_BODY: &str = r#"{"status":false,"message":"This site is not the primary: a push forwarded by a secondary must go to the primary site."}"#;
const NOT_PRIMARY_MESSAGE: &str =
    "This site is not the primary: a push forwarded by a secondary must go to the primary site.";

pub(crate) fn decide(req: &GitRequest, site: &SiteView, cfg: &GateConfig) -> Decision {
    if let Some(f) = &site.fenced {
        return match req.op {
            GitOp::UploadPack => Decision::allow(ids::GIT_PULL, "clone, fetch and pull are reads"),
            GitOp::ReceivePack => fence::git_push(req.protocol, f, cfg),
        };
    }
    if site.role == SiteRole::Primary && !site.maintenance {
        return Decision::allow(
            ids::MAINTENANCE_OFF,
            "maintenance mode is off on the primary",
        );
    }
    match req.op {
        GitOp::UploadPack => Decision::allow(ids::GIT_PULL, "clone, fetch and pull are reads"),
        GitOp::ReceivePack => push(req.protocol, req.proxied, site.role, site.maintenance),
    }
}

/// A push, given the site's role and whether maintenance mode applies to this request.
pub(crate) fn push(
    protocol: GitProtocol,
    proxied: bool,
    role: SiteRole,
    maintenance: bool,
) -> Decision {
    if maintenance {
        let reason = match (role, proxied) {
            (SiteRole::Primary, true) => {
                "push proxied from a secondary: the primary is in maintenance mode"
            }
            (SiteRole::Primary, false) => "push while the site is in maintenance mode",
            (SiteRole::Secondary, _) => {
                "push to a secondary: it is not proxied to the primary in maintenance mode"
            }
        };
        return refuse(
            protocol,
            ids::GIT_PUSH_MAINTENANCE,
            reason,
            GIT_PUSH_MESSAGE,
            SSH_PUSH_BODY,
        );
    }
    match (role, proxied) {
        (SiteRole::Primary, _) => Decision::allow(
            ids::MAINTENANCE_OFF,
            "maintenance mode is off on the primary",
        ),
        (SiteRole::Secondary, false) => Decision::proxy(
            ids::GIT_PUSH_PROXY,
            "push to a secondary: proxy it to the primary",
        ),
        // Forwarding again could loop between sites that disagree about who is primary
        // (a failover in progress); the forwarding site should retry against the primary.
        (SiteRole::Secondary, true) => refuse(
            protocol,
            ids::GIT_PUSH_NOT_PRIMARY,
            "a proxied push arrived at a secondary",
            NOT_PRIMARY_MESSAGE,
            SSH_NOT_PRIMARY_BODY,
        ),
    }
}

fn refuse(
    protocol: GitProtocol,
    rule: &'static str,
    reason: &'static str,
    message: &'static str,
    ssh_body: &'static str,
) -> Decision {
    let (status, content_type, body) = match protocol {
        GitProtocol::Ssh => (401, "application/json", ssh_body),
        GitProtocol::Http => (403, "text/plain", message),
    };
    Decision {
        verdict: Verdict::Deny,
        status,
        content_type: Cow::Borrowed(content_type),
        message: Some(Cow::Borrowed(message)),
        body: Some(Cow::Borrowed(body)),
        location: None,
        retry_after: None,
        granted_scopes: Vec::new(),
        rule,
        reason: Cow::Borrowed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_bodies_are_the_json_gitlab_shell_expects() {
        let v: serde_json::Value = serde_json::from_str(SSH_PUSH_BODY).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": false, "message": GIT_PUSH_MESSAGE})
        );
        let v: serde_json::Value = serde_json::from_str(SSH_NOT_PRIMARY_BODY).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": false, "message": NOT_PRIMARY_MESSAGE})
        );
    }
}
