//! Site status and failover readiness: what each site reports, how healthy that is, and
//! whether a secondary can be promoted now — as pure functions of reports and heads, so
//! every answer the runbook commands give is computed one way and tested against the truth.
//!
//! A secondary sends its [`Report`] to the primary periodically (also in maintenance mode:
//! GitLab once blocked these reports and every secondary turned "unhealthy"); the primary
//! keeps the latest per site in a [`Reports`] table and judges them against its own heads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::objects::{Counts, Write};
use crate::replication::FollowerState;
use crate::types::Role;

/// A report older than this makes the site's contact WARNING …
pub const CONTACT_WARNING_MS: i64 = 10_000;
/// … and older than this CRITICAL.
pub const CONTACT_CRITICAL_MS: i64 = 60_000;
/// Behind the primary for longer than this: WARNING …
pub const LAG_WARNING_MS: i64 = 10_000;
/// … and CRITICAL.
pub const LAG_CRITICAL_MS: i64 = 60_000;

/// How one log stands at a site.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub applied: u64,
    /// Hex hash of the applied head ("" when empty).
    pub applied_hash: String,
    /// The follower (secondaries): its state, the primary's head as last heard, and when.
    pub follower: Option<FollowerView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerView {
    pub state: FollowerState,
    pub primary_head: u64,
    pub last_contact_ms: Option<i64>,
    pub error: Option<String>,
}

/// What a site knows of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub site_id: String,
    pub role: Role,
    pub epoch: u64,
    pub maintenance: bool,
    pub settings: LogPosition,
    pub events: LogPosition,
    pub objects: Counts,
    pub writes_in_flight: u64,
    /// When the site made the report (its clock).
    pub at_ms: i64,
    /// Where the site serves gRPC to other sites (`advertise_url`), when it says: the
    /// primary repairs a damaged copy of its own from there.
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// The data directory's disk, when the site knows it (carried in reports, so the
    /// primary's view shows a secondary's full disk).
    #[serde(default)]
    pub disk: Option<DiskView>,
    /// The bucket object bytes are kept in, when they are (`--objects-backend s3`).
    #[serde(default)]
    pub object_storage: Option<StorageView>,
}

/// A site's bucket and whether it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageView {
    /// `bucket B (prefix P) at ENDPOINT`.
    pub location: String,
    /// The bucket's last answer was an error or none at all.
    pub failing: bool,
    pub error: Option<String>,
    /// Since when it fails.
    pub since_ms: Option<i64>,
}

impl StorageView {
    /// The bucket of `blobs`, when they are in one.
    pub fn of(blobs: &crate::objects::Blobs) -> Option<StorageView> {
        let bucket = blobs.bucket()?;
        let fault = bucket.fault();
        Some(StorageView {
            location: bucket.describe().to_string(),
            failing: fault.is_some(),
            since_ms: fault.as_ref().map(|f| f.since_ms),
            error: fault.map(|f| f.error),
        })
    }
}

/// Free space under a site's data directory (see `store::disk`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskView {
    pub path: String,
    pub free_bytes: u64,
    /// Writes are refused until space is freed.
    pub full: bool,
    /// The reserve file is in place.
    pub reserve: bool,
}

impl From<crate::store::DiskState> for DiskView {
    fn from(s: crate::store::DiskState) -> DiskView {
        DiskView {
            path: s.path.display().to_string(),
            free_bytes: s.free,
            full: s.full,
            reserve: s.reserve,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    Ok,
    Warning,
    Critical,
}

/// One aspect of a site's health, with the reasons when it is not OK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Channel {
    pub name: &'static str,
    pub health: Health,
    pub reasons: Vec<String>,
}

/// Lag of one log at one site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lag {
    pub entries: u64,
    pub millis: i64,
}

/// A site as the runbook sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SiteStatus {
    pub report: Report,
    pub settings_head: u64,
    pub events_head: u64,
    pub settings_lag: Lag,
    pub events_lag: Lag,
    /// When the site was last heard from (for the primary itself: now).
    pub last_contact_ms: Option<i64>,
    pub channels: Vec<Channel>,
    pub health: Health,
}

/// What to judge a report against.
#[derive(Clone, Debug, Default)]
pub struct Judge {
    pub now_ms: i64,
    pub settings_head: u64,
    pub events_head: u64,
    /// How long ago the first entry the site lacks was written, per log (the primary looks
    /// it up in its own log; 0 when in step).
    pub settings_lag_ms: Option<i64>,
    pub events_lag_ms: Option<i64>,
    /// Objects in the primary's catalog.
    pub primary_objects: u64,
}

impl Judge {
    /// Evaluates `report`, last heard of at `contact_ms`.
    pub fn site(&self, report: Report, contact_ms: Option<i64>) -> SiteStatus {
        let settings_lag = Lag {
            entries: self.settings_head.saturating_sub(report.settings.applied),
            millis: self.settings_lag_ms.unwrap_or(0).max(0),
        };
        let events_lag = Lag {
            entries: self.events_head.saturating_sub(report.events.applied),
            millis: self.events_lag_ms.unwrap_or(0).max(0),
        };
        let mut channels = vec![
            self.contact(contact_ms),
            log_channel("settings", &report.settings, settings_lag),
            log_channel("events", &report.events, events_lag),
            self.objects(&report),
            verification(&report),
        ];
        if let Some(d) = &report.disk {
            channels.push(disk_channel(d));
        }
        if let Some(b) = &report.object_storage {
            channels.push(storage_channel(b, self.now_ms));
        }
        channels.retain(|c| !(c.name == "contact" && report.role == Role::Primary));
        let health = channels
            .iter()
            .map(|c| c.health)
            .max()
            .unwrap_or(Health::Ok);
        SiteStatus {
            settings_head: self.settings_head,
            events_head: self.events_head,
            report,
            settings_lag,
            events_lag,
            last_contact_ms: contact_ms,
            channels,
            health,
        }
    }

    fn contact(&self, contact_ms: Option<i64>) -> Channel {
        let mut c = Channel::ok("contact");
        match contact_ms {
            None => c.raise(Health::Critical, "never reported to the primary".into()),
            Some(at) => {
                let age = self.now_ms - at;
                if age > CONTACT_CRITICAL_MS {
                    c.raise(Health::Critical, format!("no report for {}", secs(age)));
                } else if age > CONTACT_WARNING_MS {
                    c.raise(Health::Warning, format!("no report for {}", secs(age)));
                }
            }
        }
        c
    }

    fn objects(&self, report: &Report) -> Channel {
        let mut c = Channel::ok("objects");
        let o = &report.objects;
        if o.failed > 0 {
            c.raise(
                Health::Warning,
                format!(
                    "{} of {} objects failed to sync (retrying)",
                    o.failed, o.objects
                ),
            );
        }
        if let (Some(sel), Role::Secondary) = (&o.selective, report.role) {
            c.reasons.push(format!(
                "selective sync ({sel}): {} of {} objects selected; the counts are of the selection",
                o.selected(),
                o.objects
            ));
        }
        if report.role == Role::Secondary && o.objects < self.primary_objects {
            // Not an error while events are still arriving; the events channel says so.
            c.reasons.push(format!(
                "{} of {} objects known here",
                o.objects, self.primary_objects
            ));
        }
        // A resync or reverification an admin asked for: progress, not a problem.
        c.reasons.extend(o.progress.iter().cloned());
        c
    }
}

/// CRITICAL while the bucket does not answer: nothing can be stored or served from it, and
/// the copies there cannot be verified, until it does.
fn storage_channel(b: &StorageView, now_ms: i64) -> Channel {
    let mut c = Channel::ok("object storage");
    if b.failing {
        let since = b
            .since_ms
            .map(|at| format!(" for {}", secs(now_ms.saturating_sub(at).max(0))))
            .unwrap_or_default();
        c.raise(
            Health::Critical,
            format!(
                "object storage {} is failing{since}: {}; objects cannot be stored or read until it answers",
                b.location,
                b.error.as_deref().unwrap_or("no answer")
            ),
        );
    }
    c
}

/// CRITICAL while the disk is full: the site serves reads, the mode and the gate, and
/// refuses writes until space is freed.
fn disk_channel(d: &DiskView) -> Channel {
    let mut c = Channel::ok("disk");
    if d.full {
        c.raise(
            Health::Critical,
            format!(
                "disk full at {}: {} bytes free; writes are refused until space is freed",
                d.path, d.free_bytes
            ),
        );
    } else if !d.reserve {
        c.raise(
            Health::Warning,
            format!(
                "the disk reserve at {} is not in place ({} bytes free)",
                d.path, d.free_bytes
            ),
        );
    }
    c
}

fn log_channel(name: &'static str, pos: &LogPosition, lag: Lag) -> Channel {
    let mut c = Channel::ok(name);
    if let Some(f) = &pos.follower {
        match f.state {
            FollowerState::Diverged => c.raise(
                Health::Critical,
                format!(
                    "{name} log diverged from the primary's: {}",
                    f.error.as_deref().unwrap_or("stopped applying")
                ),
            ),
            FollowerState::Refused => c.raise(
                Health::Critical,
                format!(
                    "{name} log follower stopped: {}",
                    f.error
                        .as_deref()
                        .unwrap_or("the primary sent an entry this site refuses")
                ),
            ),
            FollowerState::PrimaryFenced => c.raise(
                Health::Critical,
                format!(
                    "the site this one follows was replaced as the primary: {}; repoint this site at the current primary",
                    f.error.as_deref().unwrap_or("it is fenced")
                ),
            ),
            FollowerState::Connecting => c.raise(
                Health::Warning,
                format!(
                    "not following the primary: {}",
                    f.error.as_deref().unwrap_or("connecting")
                ),
            ),
            FollowerState::Following => {}
        }
    }
    if lag.entries > 0 {
        let reason = format!("{} entries behind, for {}", lag.entries, secs(lag.millis));
        if lag.millis > LAG_CRITICAL_MS {
            c.raise(Health::Critical, reason);
        } else if lag.millis > LAG_WARNING_MS {
            c.raise(Health::Warning, reason);
        } else {
            c.reasons.push(reason);
        }
    }
    c
}

fn verification(report: &Report) -> Channel {
    let mut c = Channel::ok("verification");
    let failed = report.objects.verification_failed;
    if failed > 0 {
        match report.role {
            Role::Primary => {
                c.raise(
                    Health::Critical,
                    format!("{failed} objects do not match the checksum recorded at push"),
                );
                // Why each one (the first few) is not repaired yet.
                c.reasons.extend(report.objects.damaged.iter().cloned());
            }
            Role::Secondary => c.raise(
                Health::Warning,
                format!("{failed} copies did not match the primary's checksum (re-syncing)"),
            ),
        }
    }
    c
}

impl Channel {
    fn ok(name: &'static str) -> Channel {
        Channel {
            name,
            health: Health::Ok,
            reasons: Vec::new(),
        }
    }

    fn raise(&mut self, to: Health, reason: String) {
        self.health = self.health.max(to);
        self.reasons.push(reason);
    }
}

fn secs(ms: i64) -> String {
    format!("{:.1} s", ms.max(0) as f64 / 1000.0)
}

/// One criterion of failover readiness, with the figure behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Criterion {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// DESIGN's readiness list for promoting `target`, judged by the primary: maintenance on at
/// the primary and at the target; both logs applied to the primary's head; every object
/// synced and verified; nothing in flight at the primary; the target in contact recently.
pub fn readiness(
    primary: &SiteStatus,
    in_flight: &[Write],
    target_id: &str,
    target: Option<&SiteStatus>,
    now_ms: i64,
) -> Vec<Criterion> {
    let c = |name: String, ok: bool, detail: String| Criterion { name, ok, detail };
    let mut out = vec![c(
        "maintenance mode on at the primary".into(),
        primary.report.maintenance,
        if primary.report.maintenance {
            "on"
        } else {
            "off"
        }
        .into(),
    )];
    let Some(t) = target else {
        out.push(c(
            format!("{target_id} reports to the primary"),
            false,
            format!("no report from a site named {target_id:?}"),
        ));
        return out;
    };
    let r = &t.report;
    out.push(c(
        format!("maintenance mode on at {target_id}"),
        r.maintenance,
        if r.maintenance { "on" } else { "off" }.into(),
    ));
    for (name, pos, head) in [
        ("settings", &r.settings, t.settings_head),
        ("event", &r.events, t.events_head),
    ] {
        let stopped = pos.follower.as_ref().and_then(|f| match f.state {
            FollowerState::Diverged => Some("diverged from the primary's history".to_string()),
            FollowerState::Refused => Some(format!(
                "stopped: {}",
                f.error.as_deref().unwrap_or("refused an entry")
            )),
            _ => None,
        });
        let detail = stopped
            .clone()
            .unwrap_or_else(|| format!("applied {} of {head}", pos.applied));
        out.push(c(
            format!("{target_id} applied the {name} log to the primary's head"),
            pos.applied == head && stopped.is_none(),
            detail,
        ));
    }
    let o = &r.objects;
    let total = primary.report.objects.objects;
    if let Some(sel) = &o.selective {
        out.extend(selective_readiness(target_id, o, total, sel));
    } else {
        out.push(c(
            format!("all objects synced at {target_id}"),
            o.synced == total && o.objects == total && o.pending == 0 && o.failed == 0,
            format!(
                "{} of {total} synced ({}), {} pending, {} failed",
                o.synced,
                percent(o.synced, total),
                o.pending,
                o.failed
            ),
        ));
        out.push(c(
            format!("all objects verified at {target_id}"),
            o.verified == total && o.verification_failed == 0,
            format!(
                "{} of {total} verified ({}), {} failed verification",
                o.verified,
                percent(o.verified, total),
                o.verification_failed
            ),
        ));
    }
    out.push(c(
        "nothing in flight at the primary".into(),
        in_flight.is_empty(),
        match in_flight {
            [] => "0 writes in flight".into(),
            writes => format!(
                "{} writes in flight: {}",
                writes.len(),
                writes
                    .iter()
                    .take(3)
                    .map(|w| format!("{} from {}", w.what, w.from))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    ));
    let age = t.last_contact_ms.map(|at| now_ms - at);
    out.push(c(
        format!("{target_id} in contact recently"),
        age.is_some_and(|a| a <= CONTACT_WARNING_MS),
        match age {
            Some(a) => format!("last report {} ago", secs(a)),
            None => "never reported".into(),
        },
    ));
    out
}

/// What a secondary can say of its own readiness when the primary cannot be asked: the
/// primary's answer is the first (failing) criterion; the rest is judged against what this
/// site last heard from the primary, which is what a forced promotion would keep.
pub fn readiness_without_primary(own: &SiteStatus, primary: &str, error: &str) -> Vec<Criterion> {
    let r = &own.report;
    let id = &r.site_id;
    let o = &r.objects;
    let mut out = vec![Criterion {
        name: format!("the primary at {primary} answers"),
        ok: false,
        detail: error.to_string(),
    }];
    for (name, pos, head) in [
        ("settings", &r.settings, own.settings_head),
        ("event", &r.events, own.events_head),
    ] {
        out.push(Criterion {
            name: format!("{id} applied the {name} log to the primary's last known head"),
            ok: pos.applied >= head,
            detail: format!("applied {} of {head}", pos.applied),
        });
    }
    if let Some(sel) = &o.selective {
        out.extend(selective_readiness(id, o, o.objects, sel));
        return out;
    }
    out.push(Criterion {
        name: format!("all objects synced at {id}"),
        ok: o.synced == o.objects && o.failed == 0 && o.pending == 0,
        detail: format!(
            "{} of {} known objects synced ({}), {} pending, {} failed",
            o.synced,
            o.objects,
            percent(o.synced, o.objects),
            o.pending,
            o.failed
        ),
    });
    out.push(Criterion {
        name: format!("all objects verified at {id}"),
        ok: o.verified == o.objects && o.verification_failed == 0,
        detail: format!(
            "{} of {} known objects verified ({})",
            o.verified,
            o.objects,
            percent(o.verified, o.objects)
        ),
    });
    out
}

/// The object criteria for a selectively synced target: its selection synced and verified,
/// and a criterion that fails while it holds less than everything, naming what a
/// promotion would leave behind (`total`: objects in the primary's catalog).
fn selective_readiness(
    id: &str,
    o: &crate::objects::Counts,
    total: u64,
    sel: &crate::settings::Selection,
) -> Vec<Criterion> {
    let selected = o.selected();
    let missing = total.saturating_sub(selected);
    vec![
        Criterion {
            name: format!("all selected objects synced at {id}"),
            ok: o.objects >= total && o.pending == 0 && o.failed == 0,
            detail: format!(
                "{} of {selected} selected synced ({}), {} pending, {} failed",
                o.synced,
                percent(o.synced, selected),
                o.pending,
                o.failed
            ),
        },
        Criterion {
            name: format!("all selected objects verified at {id}"),
            ok: o.verified == selected && o.verification_failed == 0,
            detail: format!(
                "{} of {selected} selected verified ({}), {} failed verification",
                o.verified,
                percent(o.verified, selected),
                o.verification_failed
            ),
        },
        Criterion {
            name: format!("{id} replicates every object"),
            ok: missing == 0,
            detail: format!(
                "selective sync ({sel}): {missing} of {total} objects are not replicated at {id}; a promotion leaves them behind"
            ),
        },
    ]
}

fn percent(part: u64, total: u64) -> String {
    if total == 0 {
        "100.0%".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / total as f64)
    }
}

/// The latest report of each registered secondary, as the primary received them: one per
/// site, so the table is as large as the site registry and no larger.
#[derive(Default)]
pub struct Reports {
    inner: Mutex<BTreeMap<String, (Report, i64)>>,
    /// The last hour of each site's reports, judged, for the charts.
    pub history: History,
}

impl Reports {
    /// Keeps `report` in place of its site's last one, and drops the reports of sites that
    /// `registered` no longer names (nor this one, if it is not registered).
    pub fn record(&self, report: Report, received_ms: i64, registered: impl Fn(&str) -> bool) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|id, _| registered(id));
        if registered(&report.site_id) {
            m.insert(report.site_id.clone(), (report, received_ms));
        }
    }

    /// Every site's latest report and when it arrived, by site id.
    pub fn all(&self) -> Vec<(Report, i64)> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.values().cloned().collect()
    }

    pub fn get(&self, site_id: &str) -> Option<(Report, i64)> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.get(site_id).cloned()
    }
}

pub mod history;
mod local;
pub use history::{History, Point};
pub use local::Local;
pub mod metrics;

#[cfg(test)]
mod tests;
