//! Named actions of subsystems that are not HTTP requests: email, user creation by sign-up,
//! LDAP or SAML, feature flags, incidents, pipelines, background jobs (SPEC §3 "CI/CD, email,
//! background jobs, feature flags, incidents"). Like the HTTP allowlist, they are a table.
//!
//! Trade-off: an unknown action name is an error, not a default. A default would either
//! block something that must keep running (Geo replication, status reports) or let a new
//! kind of write through unnoticed; an error makes the caller add a row.

use super::fence;
use super::http::{deny, Client};
use super::rules::ids;
use super::{ActionRequest, Decision, GateConfig, GateError, SiteRole, SiteView};
use std::borrow::Cow;

struct ActionRow {
    name: &'static str,
    /// The rule id of the decision.
    rule: &'static str,
    /// Whether it may run in maintenance mode, and on a fenced site.
    policy: Policy,
    /// Accepted `source` values; empty means any (the source is then only logged).
    sources: &'static [&'static str],
    why: &'static str,
}

const fn a(
    name: &'static str,
    rule: &'static str,
    policy: Policy,
    sources: &'static [&'static str],
    why: &'static str,
) -> ActionRow {
    ActionRow {
        name,
        rule,
        policy,
        sources,
        why,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// A write: refused in maintenance mode.
    Block,
    /// A write that must go on in maintenance mode; refused on a fenced site, which must
    /// write nothing (a former primary's jobs would fork its data from the new primary's).
    Run,
    /// Writes nothing: runs everywhere, fenced sites included.
    Read,
}

const BLOCK: Policy = Policy::Block;
const RUN: Policy = Policy::Run;
const READ: Policy = Policy::Read;

#[rustfmt::skip]
static ACTIONS: &[ActionRow] = &[
    a("incoming_email", "action.incoming_email", BLOCK, &[],
      "incoming email cannot create issues, replies or merge requests"),
    a("create_user", "action.create_user", BLOCK, &["signup", "ldap", "saml"],
      "no new users: sign-up and user creation through LDAP sync or SAML are blocked"),
    a("feature_flag_toggle", "action.feature_flag_toggle", BLOCK, &[],
      "feature flags cannot be toggled"),
    a("feature_flag_check", "action.feature_flag_check", READ, &[],
      "feature flag checks keep answering"),
    a("create_incident", "action.create_incident", BLOCK, &[],
      "creating incidents is paused"),
    a("create_alert", "action.create_alert", BLOCK, &[], "creating alerts is paused"),
    a("outgoing_email", "action.outgoing_email", READ, &[],
      "notification email continues"),
    a("password_reset_email", "action.password_reset_email", BLOCK, &[],
      "a password reset email needs a database write"),
    a("pipeline_create", "action.pipeline_create", BLOCK, &[],
      "no new pipelines or jobs"),
    a("pipeline_retry", "action.pipeline_retry", BLOCK, &[],
      "pipelines cannot be retried"),
    a("pipeline_cancel", "action.pipeline_cancel", BLOCK, &[],
      "pipelines cannot be cancelled"),
    a("runner_job_request", "action.runner_job_request", BLOCK, &[],
      "runners get no new jobs"),
    a("job_trace_update", "action.job_trace_update", BLOCK, &[],
      "job logs stop updating until the mode ends"),
    a("job_status_update", "action.job_status_update", BLOCK, &[],
      "job statuses stop updating until the mode ends"),
    a("background_job", "action.background_job", RUN, &[],
      "background jobs keep running (disable non-Geo cron jobs by hand before a failover)"),
    a("geo_status_report", "action.geo_status_report", RUN, &[],
      "Geo status reports continue, or every secondary would look unhealthy"),
    a("geo_replication", "action.geo_replication", RUN, &[],
      "replication continues: it is what makes a planned failover possible"),
    a("geo_verification", "action.geo_verification", RUN, &[],
      "verification continues: it is what makes a planned failover possible"),
];

/// Every action name the gate knows, for help texts and error messages.
pub const KNOWN_ACTIONS: &[&str] = &[
    "incoming_email",
    "create_user",
    "feature_flag_toggle",
    "feature_flag_check",
    "create_incident",
    "create_alert",
    "outgoing_email",
    "password_reset_email",
    "pipeline_create",
    "pipeline_retry",
    "pipeline_cancel",
    "runner_job_request",
    "job_trace_update",
    "job_status_update",
    "background_job",
    "geo_status_report",
    "geo_replication",
    "geo_verification",
];

const MAX_NAME: usize = 64;

pub(crate) fn decide(
    req: &ActionRequest,
    site: &SiteView,
    cfg: &GateConfig,
) -> Result<Decision, GateError> {
    let name = req.action.as_str();
    let Some(row) = ACTIONS.iter().find(|r| r.name == name) else {
        let shown: String = name.chars().take(MAX_NAME).collect();
        return Err(GateError::InvalidInput(format!(
            "unknown action {shown:?}; known actions: {}",
            KNOWN_ACTIONS.join(", ")
        )));
    };
    if let Some(source) = req.source.as_deref() {
        let known = row.sources.is_empty() || row.sources.contains(&source);
        if !known || source.len() > MAX_NAME || source.is_empty() {
            let shown: String = source.chars().take(MAX_NAME).collect();
            return Err(GateError::InvalidInput(format!(
                "action {name}: unknown source {shown:?}{}",
                if row.sources.is_empty() {
                    String::new()
                } else {
                    format!(" (expected {})", row.sources.join(", "))
                }
            )));
        }
    }
    let why: Cow<'static, str> = match req.source.as_deref() {
        Some(source) if !row.sources.is_empty() => format!("{} (source: {source})", row.why).into(),
        _ => row.why.into(),
    };
    if let Some(f) = &site.fenced {
        return Ok(match row.policy {
            Policy::Read => Decision::allow(row.rule, why),
            Policy::Block | Policy::Run => fence::action(f, cfg, name),
        });
    }
    if site.role == SiteRole::Primary && !site.maintenance {
        return Ok(Decision::allow(
            ids::MAINTENANCE_OFF,
            "maintenance mode is off on the primary",
        ));
    }
    if row.policy != Policy::Block {
        return Ok(Decision::allow(row.rule, why));
    }
    if !site.maintenance {
        // A secondary's database is a read-only replica: the primary does the write.
        return Ok(Decision::proxy(
            ids::PROXY_TO_PRIMARY,
            format!("secondary site: the primary performs {name}"),
        ));
    }
    Ok(deny(row.rule, why, Client::Json, None, site, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_actions_list_matches_the_table() {
        let names: Vec<_> = ACTIONS.iter().map(|r| r.name).collect();
        assert_eq!(names, KNOWN_ACTIONS);
        for r in ACTIONS {
            assert_eq!(r.rule, format!("action.{}", r.name));
        }
    }
}
