//! The status page's list of objects that need a look: failed syncs first, then failed
//! verifications, fetches in progress and pending ones (`Objects::attention`), a bounded
//! few, so the page costs the same at a million objects.

use std::fmt::Write as _;

use super::page::esc;
use crate::objects::{Listed, SyncState, Verification};

/// How many objects the page lists.
pub const LISTED: usize = 25;

fn sync_text(s: SyncState) -> &'static str {
    match s {
        SyncState::Pending => "pending",
        SyncState::Started => "started",
        SyncState::Synced => "synced",
        SyncState::Failed => "failed",
    }
}

fn verification_text(v: Verification) -> &'static str {
    match v {
        Verification::Pending => "pending",
        Verification::Succeeded => "succeeded",
        Verification::Failed => "failed",
    }
}

/// The section, for the page to put after the writes in flight.
pub fn render(objects: &[Listed], now_ms: i64) -> String {
    let mut out = String::new();
    let h = &mut out;
    h.push_str("<h2>Objects that need a look</h2>\n");
    if objects.is_empty() {
        h.push_str("<p class=\"sub\" id=\"objects\">None: every object is synced.</p>\n");
        return out;
    }
    h.push_str("<table id=\"objects\"><thead><tr><th>Object</th><th>Kind</th><th>Size</th><th>Version</th><th>Sync</th><th>Verification</th><th>Attempts</th><th>Next retry</th><th>Last failure</th></tr></thead><tbody>\n");
    for o in objects {
        let r = &o.row;
        let failed = r.sync == SyncState::Failed || r.verification == Verification::Failed;
        let (kind, size, version) = match &o.meta {
            Some(m) => (m.kind.as_str(), m.size.to_string(), m.version.to_string()),
            None => ("(deleted)", "-".into(), "-".into()),
        };
        let next = if r.sync == SyncState::Failed && r.next_retry_ms > 0 {
            let secs = (r.next_retry_ms - now_ms).max(0) / 1000;
            format!("in {secs}s")
        } else {
            "-".into()
        };
        let failure = [r.last_error.as_deref(), r.verification_failure.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{size}</td><td>{version}</td><td>{}</td><td>{}</td><td>{}</td><td>{next}</td><td>{}</td></tr>",
            if failed { " class=\"failed\"" } else { "" },
            esc(&o.name),
            esc(kind),
            sync_text(r.sync),
            verification_text(r.verification),
            r.retries,
            if failure.is_empty() { "-".to_string() } else { esc(&failure) },
        );
    }
    h.push_str("</tbody></table>\n");
    out
}
