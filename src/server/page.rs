//! The status page at `/`: for people, at a glance. The maintenance banner with the
//! admin's message on top, then the sites with their lag and sync and verification
//! progress, then what is in flight and whether the site is drained. Plain HTML and CSS,
//! rendered on the server, refreshing itself; no script.

use std::fmt::Write as _;

use crate::gate::DEFAULT_MAINTENANCE_MESSAGE;
use crate::objects::Write;
use crate::settings::schedule::rfc3339;
use crate::settings::ModeView;
use crate::status::{Health, Lag, Point, SiteStatus};

pub const DEFAULT_REFRESH_SECS: u32 = 5;
pub const MAX_REFRESH_SECS: u32 = 3600;

/// What the page shows.
pub struct Page<'a> {
    pub mode: &'a ModeView,
    /// This site's primary (secondaries).
    pub primary: Option<&'a str>,
    /// This site first, then every secondary the primary heard from.
    pub statuses: &'a [SiteStatus],
    pub in_flight: &'a [Write],
    /// The section listing this site's objects that need a look, as `objects_page`
    /// renders it.
    pub objects: &'a str,
    pub now_ms: i64,
    pub refresh_secs: u32,
    pub version: &'a str,
    /// Each secondary's last hour, for the charts (the primary's page).
    pub history: &'a [(String, Vec<Point>)],
}

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now_ms: i64, at_ms: i64) -> String {
    let secs = (now_ms - at_ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m {}s ago", secs / 60, secs % 60),
        _ => format!("{}h {}m ago", secs / 3600, secs % 3600 / 60),
    }
}

fn lag(l: &Lag) -> String {
    if l.entries == 0 {
        "in step".into()
    } else {
        format!(
            "{} behind, {:.1}s",
            plural(l.entries, "entry", "entries"),
            l.millis.max(0) as f64 / 1000.0
        )
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn health_class(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Warning => "warning",
        Health::Critical => "critical",
    }
}

/// A progress bar with its figure: `part` of `total`.
fn progress(part: u64, total: u64, extra: &str) -> String {
    let pct = if total == 0 {
        100.0
    } else {
        part as f64 * 100.0 / total as f64
    };
    format!(
        "<div class=\"bar\" role=\"progressbar\" aria-valuenow=\"{pct:.0}\" aria-valuemin=\"0\" aria-valuemax=\"100\"><span style=\"width:{pct:.1}%\"></span></div><div class=\"figure\">{part} of {total} ({pct:.1}%){extra}</div>"
    )
}

const STYLE: &str = r#"
:root { color-scheme: light; --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --ok:#1a7f37; --warn:#9a6700; --crit:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:#f6f8fa; }
.banner { background:#fff8c5; border-bottom:2px solid #d4a72c; padding:14px 24px; font-size:16px; }
.banner strong { margin-right:8px; }
.banner.fenced { background:#ffebe9; border-color:var(--crit); }
header { padding:18px 24px 6px; }
h1 { font-size:22px; margin:0; }
h2 { font-size:17px; margin:26px 0 8px; }
.sub { color:var(--muted); }
main { padding:0 24px 24px; max-width:1200px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-top:12px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px; min-width:150px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:18px; font-weight:600; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); border-radius:8px; overflow:hidden; }
th, td { text-align:left; padding:8px 12px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f0f3f6; font-size:13px; color:var(--muted); font-weight:600; }
tr:last-child td { border-bottom:none; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
.pill.ok { background:var(--ok); } .pill.warning { background:var(--warn); } .pill.critical { background:var(--crit); }
.v.ok { color:var(--ok); } .v.warning { color:var(--warn); } .v.critical { color:var(--crit); }
.bar { width:160px; height:8px; background:#e6eaef; border-radius:4px; overflow:hidden; }
.bar span { display:block; height:100%; background:var(--ok); }
.figure, .reasons { font-size:12px; color:var(--muted); }
tr.failed td { background:#fff5f5; }
.reasons { margin:2px 0 0; padding-left:16px; }
.banner.scheduled { background:#ddf4ff; border-color:#54aeff; }
.charts { display:flex; flex-wrap:wrap; gap:10px; margin-bottom:8px; }
.charts svg { display:block; }
h3 { font-size:14px; margin:14px 0 6px; }
footer { color:var(--muted); font-size:12px; padding:0 24px 24px; }
"#;

/// The whole page.
pub fn render(p: &Page<'_>) -> String {
    let mode = p.mode;
    let site = esc(&mode.site_id);
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{refresh}\">\
<title>{title}geo-agent · {site}</title><style>{STYLE}</style></head><body>\n",
        refresh = p.refresh_secs,
        title = if mode.maintenance.enabled {
            "[maintenance] "
        } else {
            ""
        },
    );
    if mode.maintenance.enabled {
        let message = mode
            .maintenance
            .message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(DEFAULT_MAINTENANCE_MESSAGE);
        let by = match (&mode.maintenance.updated_by, mode.maintenance.updated_at_ms) {
            (Some(who), Some(at)) => format!(
                " <span class=\"sub\">(set by {} {})</span>",
                esc(who),
                ago(p.now_ms, at)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            h,
            "<div class=\"banner\" id=\"maintenance-banner\" role=\"alert\"><strong>Maintenance mode</strong><span id=\"maintenance-message\">{}</span>{by}</div>",
            esc(message)
        );
    }
    h.push_str(&scheduled_banner(mode, p.now_ms));
    if let Some(reason) = &mode.fenced {
        let _ = writeln!(
            h,
            "<div class=\"banner fenced\" id=\"fenced-banner\" role=\"alert\"><strong>Fenced</strong>{}</div>",
            esc(reason)
        );
    }
    let own = p.statuses.first();
    let role = if mode.fenced.is_some() {
        "former primary (fenced)".to_string()
    } else {
        mode.role.to_string()
    };
    let _ = write!(
        h,
        "<header><h1>{site}</h1><div class=\"sub\">{role} · epoch {}{}</div></header>\n<main>\n",
        mode.epoch,
        p.primary
            .map(|u| format!(" · primary {}", esc(u)))
            .unwrap_or_default()
    );

    let drained = mode.maintenance.enabled && p.in_flight.is_empty();
    let (drained_text, drained_class) = match (mode.maintenance.enabled, drained) {
        (false, _) => ("not in maintenance", ""),
        (true, true) => ("yes", "ok"),
        (true, false) => ("no", "warning"),
    };
    let health = own.map_or(Health::Ok, |s| s.health);
    let _ = writeln!(
        h,
        "<div class=\"cards\">\
<div class=\"card\"><div class=\"k\">Maintenance</div><div class=\"v\" id=\"maintenance-state\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Drained</div><div class=\"v {drained_class}\" id=\"drained\">{drained_text}</div></div>\
<div class=\"card\"><div class=\"k\">Writes in flight</div><div class=\"v\" id=\"in-flight-count\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Health</div><div class=\"v {hc}\">{hc}</div></div>\
<div class=\"card\"><div class=\"k\">Settings log</div><div class=\"v\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Event log</div><div class=\"v\">{}</div></div>\
</div>",
        if mode.maintenance.enabled { "on" } else { "off" },
        p.in_flight.len(),
        own.map_or(0, |s| s.report.settings.applied),
        own.map_or(0, |s| s.report.events.applied),
        hc = health_class(health),
    );

    h.push_str("<h2>Sites</h2>\n<table id=\"sites\"><thead><tr><th>Site</th><th>Role</th><th>Health</th><th>Settings</th><th>Events</th><th>Synced</th><th>Verified</th><th>Last contact</th></tr></thead><tbody>\n");
    for st in p.statuses {
        let r = &st.report;
        let c = &r.objects;
        let reasons: Vec<String> = st
            .channels
            .iter()
            .flat_map(|ch| {
                ch.reasons
                    .iter()
                    .map(move |why| format!("{}: {why}", ch.name))
            })
            .collect();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(
                "<ul class=\"reasons\">{}</ul>",
                reasons
                    .iter()
                    .map(|r| format!("<li>{}</li>", esc(r)))
                    .collect::<String>()
            )
        };
        let pending = if c.pending > 0 || c.failed > 0 {
            format!(", {} pending, {} failed", c.pending, c.failed)
        } else {
            String::new()
        };
        let vfailed = if c.verification_failed > 0 {
            format!(", {} failed", c.verification_failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            h,
            "<tr><td><strong>{}</strong></td><td>{}</td><td><span class=\"pill {hc}\">{hc}</span>{reasons}</td><td>{}<div class=\"figure\">at {} of {}</div></td><td>{}<div class=\"figure\">at {} of {}</div></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.site_id),
            r.role,
            esc(&lag(&st.settings_lag)),
            r.settings.applied,
            st.settings_head,
            esc(&lag(&st.events_lag)),
            r.events.applied,
            st.events_head,
            // A selectively synced site is measured against its selection (the objects
            // channel's reason says which).
            progress(
                c.synced,
                if c.selective.is_some() {
                    c.selected()
                } else {
                    c.objects
                },
                &pending
            ),
            progress(c.verified, c.synced, &vfailed),
            st.last_contact_ms
                .map_or_else(|| "never".to_string(), |at| ago(p.now_ms, at)),
            hc = health_class(st.health),
        );
    }
    h.push_str("</tbody></table>\n");

    h.push_str(&charts(p));

    h.push_str("<h2>Writes in flight</h2>\n");
    if p.in_flight.is_empty() {
        h.push_str("<p class=\"sub\" id=\"in-flight\">None.</p>\n");
    } else {
        h.push_str("<table id=\"in-flight\"><thead><tr><th>Id</th><th>Write</th><th>From</th><th>Since</th></tr></thead><tbody>\n");
        for w in p.in_flight {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                w.id,
                esc(&w.what),
                esc(&w.from),
                ago(p.now_ms, w.since_ms)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str(p.objects);
    let _ = write!(
        h,
        "</main>\n<footer>geo-agent {} · refreshes every {}s · <a href=\"/metrics\">metrics</a></footer>\n</body></html>\n",
        esc(p.version),
        p.refresh_secs
    );
    h
}

/// How long until `at_ms`, roughly.
fn within(now_ms: i64, at_ms: i64) -> String {
    let secs = (at_ms - now_ms).max(0) / 1000;
    match secs {
        0..=59 => format!("in {secs}s"),
        60..=3599 => format!("in {}m {}s", secs / 60, secs % 60),
        86_400.. => format!("in {}d {}h", secs / 86_400, secs % 86_400 / 3600),
        _ => format!("in {}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// SPEC §6: a window not yet started is announced as "Maintenance scheduled for START:
/// MESSAGE"; one in progress says when it ends.
fn scheduled_banner(mode: &ModeView, now_ms: i64) -> String {
    let Some(w) = &mode.scheduled else {
        return String::new();
    };
    let until = w
        .end_ms
        .map(|e| format!(" until {}", rfc3339(e)))
        .unwrap_or_default();
    if w.started() {
        return format!(
            "<div class=\"banner scheduled\" id=\"maintenance-window\" role=\"status\"><strong>Scheduled maintenance</strong>since {}{}{}</div>\n",
            rfc3339(w.started_at_ms.unwrap_or(w.start_ms)),
            if until.is_empty() { " until an admin ends it".to_string() } else { until },
            match w.started_at_ms {
                Some(s) if s - w.start_ms >= 1000 => format!(
                    " <span class=\"sub\">(started {}s late: the primary was not running at {})</span>",
                    (s - w.start_ms) / 1000,
                    rfc3339(w.start_ms)
                ),
                _ => String::new(),
            }
        );
    }
    format!(
        "<div class=\"banner scheduled\" id=\"maintenance-scheduled\" role=\"status\"><strong>Maintenance scheduled for {}{until}:</strong><span id=\"scheduled-message\">{}</span> <span class=\"sub\">({}; maintenance mode goes on by itself)</span></div>\n",
        rfc3339(w.start_ms),
        esc(&w.message),
        within(now_ms, w.start_ms),
    )
}

/// The secondaries' last hour as small charts (the history lives on the primary).
fn charts(p: &Page<'_>) -> String {
    let mut h = String::from("<h2>Last hour</h2>\n<div id=\"charts\">\n");
    if p.history.is_empty() {
        h.push_str(if p.mode.role == crate::types::Role::Primary {
            "<p class=\"sub\">No secondary has reported yet.</p>\n"
        } else {
            "<p class=\"sub\">Every secondary's charts are on the primary's status page.</p>\n"
        });
    }
    for (site, points) in p.history {
        let _ = writeln!(
            h,
            "<h3>{site}</h3><div class=\"charts\" data-site=\"{site}\">{}</div>",
            super::charts::site_charts(points, p.now_ms),
            site = esc(site),
        );
    }
    h.push_str("</div>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Maintenance;
    use crate::types::Role;

    fn mode(enabled: bool, message: Option<&str>) -> ModeView {
        ModeView {
            maintenance: Maintenance {
                enabled,
                message: message.map(str::to_string),
                updated_by: Some("ops".into()),
                updated_at_ms: Some(1_000),
            },
            settings_index: 3,
            settings_hash: Default::default(),
            epoch: 1,
            site_id: "primary".into(),
            role: Role::Primary,
            fenced: None,
            scheduled: None,
        }
    }

    fn page(mode: &ModeView) -> String {
        render(&Page {
            mode,
            primary: None,
            statuses: &[],
            in_flight: &[],
            objects: "",
            now_ms: 61_000,
            refresh_secs: 5,
            version: "0.1.0",
            history: &[],
        })
    }

    #[test]
    fn the_banner_carries_the_escaped_message_only_in_maintenance() {
        let on = page(&mode(true, Some("Failover at 22:00 <UTC> & back soon")));
        assert!(on.contains("id=\"maintenance-banner\""));
        assert!(on.contains("Failover at 22:00 &lt;UTC&gt; &amp; back soon"));
        assert!(on.contains("set by ops 1m 0s ago"));
        let off = page(&mode(false, None));
        assert!(!off.contains("maintenance-banner"));
        assert!(off.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    }

    #[test]
    fn no_message_shows_the_default_one() {
        let on = page(&mode(true, None));
        assert!(on.contains(DEFAULT_MAINTENANCE_MESSAGE));
    }
}
