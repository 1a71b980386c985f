//! Prometheus metrics: counters the site keeps as it runs, and the text exposition format
//! (version 0.0.4) rendered from them and from the same [`SiteStatus`] judgements that
//! `geo-agent status` prints — so a dashboard and the runbook never disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::{Health, SiteStatus};
use crate::replication::FollowerState;
use crate::types::Role;

/// Events counted since the site opened (Prometheus' `rate()` copes with the reset when a
/// promotion or repoint opens it again).
#[derive(Default)]
pub struct Counters {
    gate: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    repairs: Mutex<BTreeMap<&'static str, u64>>,
    /// What the gating proxy did (see `proxy`).
    pub proxy: ProxyCounters,
}

/// Upper bounds (seconds) of the upstream latency histogram's buckets.
pub const UPSTREAM_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Why a proxied request got no answer from the upstream, always shown (at 0 until one
/// happens): connect (refused, unreachable, connect timeout), timeout (no answer within the
/// response timeout), broken (the connection failed mid-exchange).
pub const UPSTREAM_ERRORS: [&str; 3] = ["connect", "timeout", "broken"];

/// The gating proxy's counters: its gate decisions by rule and verdict, how long the
/// upstream took to answer (from the request sent to the response head), and why it failed.
#[derive(Default)]
pub struct ProxyCounters {
    decisions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<Histogram>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Default, Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Counts per bucket of [`UPSTREAM_BUCKETS`] (not cumulative), then the overflow.
    pub buckets: [u64; UPSTREAM_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl ProxyCounters {
    pub fn decision(&self, rule: &'static str, verdict: &'static str) {
        let mut d = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        *d.entry((rule, verdict)).or_insert(0) += 1;
    }

    pub fn upstream_latency(&self, seconds: f64) {
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let i = UPSTREAM_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(UPSTREAM_BUCKETS.len());
        h.buckets[i] += 1;
        h.sum += seconds;
        h.count += 1;
    }

    /// One failure of `kind`, one of [`UPSTREAM_ERRORS`].
    pub fn upstream_error(&self, kind: &'static str) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *e.entry(kind).or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> ProxyScrape {
        let decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        ProxyScrape {
            decisions: decisions.iter().map(|(&(r, v), &n)| (r, v, n)).collect(),
            latency: self
                .latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// What a scrape shows of the gating proxy.
#[derive(Default, Clone, Debug)]
pub struct ProxyScrape {
    pub decisions: Vec<(&'static str, &'static str, u64)>,
    pub latency: Histogram,
    pub errors: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// One gate decision by `rule` (a stable rule id) with `verdict`.
    pub fn gate_decision(&self, rule: &'static str, verdict: &'static str) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        *gate.entry((rule, verdict)).or_insert(0) += 1;
    }

    /// One replication failure of `kind`.
    pub fn replication_error(&self, kind: &'static str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(kind).or_insert(0) += 1;
    }

    /// One repair of a damaged copy (primary) that ended with `result`.
    pub fn repair(&self, result: &'static str) {
        let mut repairs = self.repairs.lock().unwrap_or_else(|p| p.into_inner());
        *repairs.entry(result).or_insert(0) += 1;
    }

    pub fn repairs(&self) -> BTreeMap<&'static str, u64> {
        self.repairs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn gate_decisions(&self) -> Vec<(&'static str, &'static str, u64)> {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        gate.iter().map(|(&(r, v), &n)| (r, v, n)).collect()
    }

    pub fn replication_errors(&self) -> BTreeMap<&'static str, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Everything one scrape shows.
pub struct Scrape<'a> {
    pub version: &'a str,
    /// What `grpc.health.v1.Health` says.
    pub serving: bool,
    pub fenced: bool,
    /// This site first, then (on the primary) every secondary that reported.
    pub statuses: &'a [SiteStatus],
    pub gate_decisions: Vec<(&'static str, &'static str, u64)>,
    /// Replication failures by kind: settings, events (log streams lost), sync (fetches
    /// failed), report (status reports not delivered).
    pub replication_errors: BTreeMap<&'static str, u64>,
    /// Repairs of damaged copies by result: repaired, failed (no site sent the bytes), moot
    /// (replaced or deleted meanwhile).
    pub repairs: BTreeMap<&'static str, u64>,
    /// The gating proxy's figures, when this site runs one.
    pub proxy: Option<ProxyScrape>,
    /// The maintenance window scheduled or in progress (SPEC §6): its start and end, in ms.
    pub scheduled: Option<(i64, Option<i64>)>,
    /// When the gRPC port's certificate expires (Unix seconds), when it serves TLS.
    pub tls_not_after: Option<i64>,
}

/// Repair results always shown, at 0 until one happens.
pub const REPAIR_RESULTS: [&str; 3] = ["repaired", "failed", "moot"];

/// Replication error kinds always shown, at 0 until one happens, so an alert on
/// `increase(...)` has a series to watch from the start.
pub const ERROR_KINDS: [&str; 4] = ["settings", "events", "sync", "report"];

/// Every follower state with its `state` label, all shown so an alert sees a 0 turn into 1.
const FOLLOWER_STATES: [(FollowerState, &str); 5] = [
    (FollowerState::Connecting, "connecting"),
    (FollowerState::Following, "following"),
    (FollowerState::Diverged, "diverged"),
    (FollowerState::Refused, "refused"),
    (FollowerState::PrimaryFenced, "primary_fenced"),
];

struct Out(String);

/// The two replicated logs, as the `log` label names them.
#[derive(Clone, Copy)]
enum Log {
    Settings,
    Events,
}

impl Log {
    fn label(self) -> &'static str {
        match self {
            Log::Settings => "settings",
            Log::Events => "events",
        }
    }
}

impl SiteStatus {
    fn lag(&self, log: Log) -> &super::Lag {
        match log {
            Log::Settings => &self.settings_lag,
            Log::Events => &self.events_lag,
        }
    }
}

impl Out {
    /// A gauge with one sample per site and log.
    fn per_site_log(
        &mut self,
        name: &str,
        help: &str,
        statuses: &[SiteStatus],
        value: impl Fn(&SiteStatus, Log) -> f64,
    ) {
        self.family(name, "gauge", help);
        for st in statuses {
            for log in [Log::Settings, Log::Events] {
                let labels = [("site", st.report.site_id.as_str()), ("log", log.label())];
                self.sample(name, &labels, value(st, log));
            }
        }
    }

    /// A counter family with one sample per value of one label: every value in `values`,
    /// at 0 until `counts` has it.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        (label, values): (&str, &[&str]),
        counts: &BTreeMap<&'static str, u64>,
    ) {
        self.family(name, "counter", help);
        for value in values {
            let n = counts.get(value).copied().unwrap_or(0);
            self.sample(name, &[(label, value)], n);
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn flag(b: bool) -> u8 {
    u8::from(b)
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// The exposition text.
pub fn render(s: &Scrape<'_>) -> String {
    let mut o = Out(String::new());
    let Some(own) = s.statuses.first() else {
        return o.0;
    };
    let me = own.report.site_id.as_str();
    o.family(
        "geo_build_info",
        "gauge",
        "The running geo-agent: version and site, always 1.",
    );
    o.sample("geo_build_info", &[("version", s.version), ("site", me)], 1);
    o.family(
        "geo_serving",
        "gauge",
        "1 while the site serves; 0 while it starts or drains to stop.",
    );
    o.sample("geo_serving", &[], flag(s.serving));
    o.family(
        "geo_maintenance_mode",
        "gauge",
        "1 while maintenance mode is on at this site.",
    );
    o.sample("geo_maintenance_mode", &[], flag(own.report.maintenance));
    o.family(
        "geo_maintenance_scheduled_start_timestamp_seconds",
        "gauge",
        "Start of the scheduled or running maintenance window, Unix seconds; 0 when none is scheduled.",
    );
    let (start, end) = s.scheduled.map_or((0, None), |(st, e)| (st, e));
    o.sample(
        "geo_maintenance_scheduled_start_timestamp_seconds",
        &[],
        seconds(start),
    );
    o.family(
        "geo_maintenance_scheduled_end_timestamp_seconds",
        "gauge",
        "End of the scheduled or running maintenance window, Unix seconds; 0 when none is scheduled or it has no end.",
    );
    o.sample(
        "geo_maintenance_scheduled_end_timestamp_seconds",
        &[],
        seconds(end.unwrap_or(0)),
    );
    o.family(
        "geo_primary",
        "gauge",
        "1 if this site takes writes as the primary; more than one across sites is a split brain.",
    );
    o.sample(
        "geo_primary",
        &[],
        flag(own.report.role == Role::Primary && !s.fenced),
    );
    o.family(
        "geo_fenced",
        "gauge",
        "1 if this site learned of a newer primary and refuses writes.",
    );
    o.sample("geo_fenced", &[], flag(s.fenced));
    o.family(
        "geo_epoch",
        "gauge",
        "The highest primary epoch this site has seen.",
    );
    o.sample("geo_epoch", &[], own.report.epoch);
    o.family(
        "geo_writes_in_flight",
        "gauge",
        "Writes (pushes, deletes) running at this site now.",
    );
    o.sample("geo_writes_in_flight", &[], own.report.writes_in_flight);

    o.family(
        "geo_log_head_index",
        "gauge",
        "The primary's last log entry as this site knows it.",
    );
    for (log, head) in [("settings", own.settings_head), ("events", own.events_head)] {
        o.sample("geo_log_head_index", &[("log", log)], head);
    }
    o.per_site_log(
        "geo_log_applied_index",
        "The last log entry applied, per site.",
        s.statuses,
        |st, log| match log {
            Log::Settings => st.report.settings.applied as f64,
            Log::Events => st.report.events.applied as f64,
        },
    );
    o.per_site_log(
        "geo_replication_lag_seconds",
        "Seconds a site is behind: on the primary, the age of the oldest entry each site has not applied; on a secondary, how long it has been behind since it last heard from its primary (0 when in step).",
        s.statuses,
        |st, log| seconds(st.lag(log).millis),
    );
    o.per_site_log(
        "geo_replication_lag_entries",
        "Log entries a site has not applied yet.",
        s.statuses,
        |st, log| st.lag(log).entries as f64,
    );
    o.family(
        "geo_follower_state",
        "gauge",
        "A secondary's log follower, per site and log: 1 for the state it is in, 0 for the others. diverged, refused and primary_fenced have stopped and need an operator.",
    );
    for st in s.statuses {
        for log in [Log::Settings, Log::Events] {
            let pos = match log {
                Log::Settings => &st.report.settings,
                Log::Events => &st.report.events,
            };
            let Some(f) = &pos.follower else { continue };
            for (state, label) in FOLLOWER_STATES {
                let labels = [
                    ("site", st.report.site_id.as_str()),
                    ("log", log.label()),
                    ("state", label),
                ];
                o.sample("geo_follower_state", &labels, flag(f.state == state));
            }
        }
    }
    o.family(
        "geo_site_last_contact_seconds",
        "gauge",
        "Seconds since a site's last contact: on the primary, each secondary's last report (0 for itself); on a secondary, its primary's last message.",
    );
    let now = own.report.at_ms;
    for st in s.statuses {
        if let Some(at) = st.last_contact_ms {
            o.sample(
                "geo_site_last_contact_seconds",
                &[("site", st.report.site_id.as_str())],
                seconds(now - at),
            );
        }
    }
    o.family(
        "geo_site_health",
        "gauge",
        "Health per site and channel: 0 OK, 1 warning, 2 critical (as `geo-agent status`).",
    );
    for st in s.statuses {
        let site = st.report.site_id.as_str();
        for c in &st.channels {
            o.sample(
                "geo_site_health",
                &[("site", site), ("channel", c.name)],
                health_value(c.health),
            );
        }
    }

    if let Some(at) = s.tls_not_after {
        o.family(
            "geo_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the gRPC port's certificate (tls_cert, read at start) expires, in Unix seconds.",
        );
        o.sample("geo_tls_certificate_expiry_timestamp_seconds", &[], at);
    }
    if let Some(d) = &own.report.disk {
        o.family(
            "geo_disk_free_bytes",
            "gauge",
            "Bytes free under this site's data directory (the disk reserve not counted).",
        );
        o.sample(
            "geo_disk_free_bytes",
            &[("path", d.path.as_str())],
            d.free_bytes,
        );
        o.family(
            "geo_disk_full",
            "gauge",
            "1 while this site's disk is full and writes are refused.",
        );
        o.sample("geo_disk_full", &[], flag(d.full));
    }
    if let Some(b) = &own.report.object_storage {
        o.family(
            "geo_object_storage_up",
            "gauge",
            "1 while the bucket this site keeps object bytes in answers (--objects-backend s3).",
        );
        o.sample(
            "geo_object_storage_up",
            &[("location", b.location.as_str())],
            flag(!b.failing),
        );
    }
    o.family(
        "geo_objects",
        "gauge",
        "Objects in the catalog, as far as each site has applied the event log.",
    );
    for st in s.statuses {
        o.sample(
            "geo_objects",
            &[("site", st.report.site_id.as_str())],
            st.report.objects.objects,
        );
    }
    o.family(
        "geo_objects_sync",
        "gauge",
        "Objects per site by sync state.",
    );
    for st in s.statuses {
        let c = &st.report.objects;
        let site = st.report.site_id.as_str();
        for (state, n) in [
            ("synced", c.synced),
            ("pending", c.pending),
            ("failed", c.failed),
        ] {
            o.sample("geo_objects_sync", &[("site", site), ("state", state)], n);
        }
    }
    o.family(
        "geo_objects_verification",
        "gauge",
        "Objects per site by verification state (unverified: synced, not yet checked).",
    );
    for st in s.statuses {
        let c = &st.report.objects;
        let site = st.report.site_id.as_str();
        let unverified = c.synced.saturating_sub(c.verified + c.verification_failed);
        for (state, n) in [
            ("verified", c.verified),
            ("failed", c.verification_failed),
            ("unverified", unverified),
        ] {
            o.sample(
                "geo_objects_verification",
                &[("site", site), ("state", state)],
                n,
            );
        }
    }

    o.family(
        "geo_gate_decisions_total",
        "counter",
        "Gate decisions by rule and verdict.",
    );
    for (rule, verdict, n) in &s.gate_decisions {
        o.sample(
            "geo_gate_decisions_total",
            &[("rule", rule), ("verdict", verdict)],
            n,
        );
    }
    o.counters(
        "geo_replication_errors_total",
        "Replication failures at this site by kind: settings and events (a log stream lost or refused), sync (an object fetch failed), report (a status report not delivered).",
        ("kind", &ERROR_KINDS),
        &s.replication_errors,
    );
    o.counters(
        "geo_repairs_total",
        "Repairs of a damaged copy on the primary from a secondary's verified copy, by result: repaired, failed (no site sent the recorded bytes), moot (replaced or deleted meanwhile).",
        ("result", &REPAIR_RESULTS),
        &s.repairs,
    );
    if let Some(p) = &s.proxy {
        render_proxy(&mut o, p);
    }
    o.0
}

fn render_proxy(o: &mut Out, p: &ProxyScrape) {
    o.family(
        "geo_proxy_decisions_total",
        "counter",
        "Requests the gating proxy judged, by gate rule and verdict.",
    );
    for (rule, verdict, n) in &p.decisions {
        o.sample(
            "geo_proxy_decisions_total",
            &[("rule", rule), ("verdict", verdict)],
            n,
        );
    }
    let name = "geo_proxy_upstream_seconds";
    o.family(
        name,
        "histogram",
        "Time from a request sent to the proxy's upstream to its response head.",
    );
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (i, bound) in UPSTREAM_BUCKETS.iter().enumerate() {
        cumulative += p.latency.buckets[i];
        o.sample(&bucket, &[("le", &bound.to_string())], cumulative);
    }
    o.sample(&bucket, &[("le", "+Inf")], p.latency.count);
    o.sample(&format!("{name}_sum"), &[], p.latency.sum);
    o.sample(&format!("{name}_count"), &[], p.latency.count);
    o.counters(
        "geo_proxy_upstream_errors_total",
        "Proxied requests that got no answer from the upstream, by kind: connect (refused or unreachable), timeout (504), broken (the connection failed mid-exchange).",
        ("kind", &UPSTREAM_ERRORS),
        &p.errors,
    );
}

fn health_value(h: Health) -> u8 {
    match h {
        Health::Ok => 0,
        Health::Warning => 1,
        Health::Critical => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Judge, Report};

    fn status(site: &str, role: Role, maintenance: bool) -> SiteStatus {
        let report = Report {
            site_id: site.into(),
            role,
            epoch: 1,
            maintenance,
            settings: Default::default(),
            events: Default::default(),
            objects: Default::default(),
            writes_in_flight: 0,
            at_ms: 10_000,
            advertise_url: None,
            disk: None,
            object_storage: None,
        };
        Judge {
            now_ms: 10_000,
            ..Judge::default()
        }
        .site(report, Some(10_000))
    }

    #[test]
    fn renders_families_once_with_escaped_labels() {
        let statuses = [
            status("primary", Role::Primary, true),
            status("s\"1", Role::Secondary, true),
        ];
        let counters = Counters::default();
        counters.gate_decision("maintenance.git_push", "deny");
        counters.gate_decision("maintenance.git_push", "deny");
        counters.replication_error("sync");
        counters.proxy.decision("graphql.mutation", "deny");
        counters.proxy.upstream_latency(0.003);
        counters.proxy.upstream_latency(100.0);
        let text = render(&Scrape {
            version: "1.2.3",
            serving: true,
            fenced: false,
            statuses: &statuses,
            gate_decisions: counters.gate_decisions(),
            replication_errors: counters.replication_errors(),
            repairs: counters.repairs(),
            proxy: Some(counters.proxy.snapshot()),
            scheduled: Some((1_800_000_000_500, None)),
            tls_not_after: Some(1_800_000_000),
        });
        assert!(text.contains("geo_tls_certificate_expiry_timestamp_seconds 1800000000\n"));
        assert!(text.contains("geo_maintenance_mode 1\n"), "{text}");
        assert!(
            text.contains("geo_maintenance_scheduled_start_timestamp_seconds 1800000000.5\n"),
            "{text}"
        );
        assert!(text.contains("geo_maintenance_scheduled_end_timestamp_seconds 0\n"));
        assert!(text.contains("geo_primary 1\n"), "{text}");
        assert!(text.contains(
            "geo_gate_decisions_total{rule=\"maintenance.git_push\",verdict=\"deny\"} 2\n"
        ));
        assert!(text.contains("geo_replication_errors_total{kind=\"sync\"} 1\n"));
        assert!(text.contains("geo_replication_errors_total{kind=\"report\"} 0\n"));
        assert!(
            text.contains("geo_repairs_total{result=\"repaired\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("site=\"s\\\"1\""), "{text}");
        assert!(text
            .contains("geo_proxy_decisions_total{rule=\"graphql.mutation\",verdict=\"deny\"} 1\n"));
        assert!(text.contains("geo_proxy_upstream_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("geo_proxy_upstream_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("geo_proxy_upstream_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("geo_proxy_upstream_seconds_count 2\n"));
        assert!(text.contains("geo_proxy_upstream_errors_total{kind=\"timeout\"} 0\n"));
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), types, "each family is declared once");
    }

    #[test]
    fn a_followers_state_is_one_of_five_per_site_and_log() {
        let mut s1 = status("s1", Role::Secondary, false);
        s1.report.settings.follower = Some(crate::status::FollowerView {
            state: FollowerState::Diverged,
            primary_head: 3,
            last_contact_ms: None,
            error: None,
        });
        let statuses = [status("primary", Role::Primary, false), s1];
        let text = render(&Scrape {
            version: "1",
            serving: true,
            fenced: false,
            statuses: &statuses,
            gate_decisions: Vec::new(),
            replication_errors: BTreeMap::new(),
            repairs: BTreeMap::new(),
            proxy: None,
            scheduled: None,
            tls_not_after: None,
        });
        let diverged = "geo_follower_state{site=\"s1\",log=\"settings\",state=\"diverged\"} 1\n";
        assert!(text.contains(diverged), "{text}");
        let following = "geo_follower_state{site=\"s1\",log=\"settings\",state=\"following\"} 0\n";
        assert!(text.contains(following), "{text}");
        let series = text
            .lines()
            .filter(|l| l.starts_with("geo_follower_state{"));
        assert_eq!(
            series.count(),
            5,
            "the primary has no follower; s1's events log none set"
        );
    }

    #[test]
    fn a_fenced_primary_is_not_counted_as_one() {
        let statuses = [status("old", Role::Primary, false)];
        let text = render(&Scrape {
            version: "1",
            serving: true,
            fenced: true,
            statuses: &statuses,
            gate_decisions: Vec::new(),
            replication_errors: BTreeMap::new(),
            repairs: BTreeMap::new(),
            proxy: None,
            scheduled: None,
            tls_not_after: None,
        });
        assert!(!text.contains("geo_proxy"), "{text}");
        assert!(text.contains("geo_primary 0\n"), "{text}");
        assert!(text.contains("geo_fenced 1\n"), "{text}");
    }
}
