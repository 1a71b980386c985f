//! Scheduled maintenance windows (SPEC §6), with real processes: a window is announced at
//! every site as soon as it is scheduled (`mode get --json`, the status page, `/metrics`),
//! the primary turns maintenance mode on at its start and off at its end, a primary that
//! was down at the start does it when it comes back, bad windows are refused with nothing
//! stored, and an admin who turns the mode off during a window wins. Also the status page
//! with the announcement and the secondaries' charts, in a real Chromium.

mod common;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use common::*;
use serde_json::Value;

/// An RFC 3339 time `ms` from now.
fn from_now(ms: i64) -> String {
    (Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ms_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("RFC 3339")
        .timestamp_millis()
}

/// `geo-agent mode get --json` at `site`, as the CLI prints it.
fn mode_json(site: &SiteProc) -> Value {
    let (code, out, err) = cli(&["mode", "get", "--json", "--addr", &site.url()], &[]);
    assert_eq!(code, 0, "mode get: {out}{err}");
    serde_json::from_str(&out).expect("mode get --json prints JSON")
}

/// Waits until `probe` holds for `site`'s `mode get --json`, and returns that answer.
fn wait_mode(what: &str, site: &SiteProc, probe: impl Fn(&Value) -> bool) -> Value {
    wait_until(
        &format!("{what} at {}", site.name),
        Instant::now() + DEADLINE,
        Duration::from_millis(50),
        || Some(mode_json(site)).filter(|m| probe(m)),
    )
}

fn schedule(cluster: &Cluster, primary: &SiteProc, extra: &[&str]) -> (i32, String, String) {
    let url = primary.url();
    let mut args = vec![
        "maintenance",
        "schedule",
        "--addr",
        url.as_str(),
        "--actor",
        "alice",
    ];
    args.extend_from_slice(extra);
    cluster.admin_cli(&args)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_window_is_announced_everywhere_then_turns_the_mode_on_and_off_by_itself() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let sites = [
        cluster.secondary("s1", &primary),
        cluster.secondary("s2", &primary),
    ];
    let message = "Database upgrade <b>&</b> failover drill";

    // First a window an hour ahead: the announcement, everywhere.
    let later = from_now(3_600_000);
    let (code, out, err) = schedule(
        &cluster,
        &primary,
        &["--start", &later, "--message", message],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("maintenance scheduled for"), "{out}");
    for site in std::iter::once(&primary).chain(&sites) {
        let m = wait_mode("the window announced", site, |m| !m["scheduled"].is_null());
        assert_eq!(m["scheduled"]["message"], message, "{m}");
        assert_eq!(m["scheduled"]["scheduled_by"], "alice", "{m}");
        assert_eq!(
            ms_of(m["scheduled"]["start"].as_str().unwrap_or("")),
            ms_of(&later)
        );
        assert!(m["scheduled"]["started_at"].is_null(), "{m}");
        assert_eq!(m["maintenance_mode"], false, "announced, not started: {m}");
        let (status, page) = site.http_get_blocking("/");
        assert_eq!(status, 200);
        assert!(page.contains("id=\"maintenance-scheduled\""), "{page}");
        assert!(page.contains("Maintenance scheduled for "), "{page}");
        assert!(
            page.contains("Database upgrade &lt;b&gt;&amp;&lt;/b&gt; failover drill"),
            "the message is escaped: {page}"
        );
        assert!(!page.contains("id=\"maintenance-banner\""), "{page}");
        let (status, text) = site.http_get_blocking("/metrics");
        assert_eq!(status, 200);
        promtool_check(&text);
        let start = metric(&text, "geo_maintenance_scheduled_start_timestamp_seconds");
        assert_eq!(start, Some(ms_of(&later) as f64 / 1000.0), "{text}");
    }
    // The window is the schedule's own: the generic settings call cannot touch it.
    let (code, _, err) = cluster.admin_cli(&[
        "settings",
        "set",
        "geo.maintenance.schedule",
        "{}",
        "--addr",
        &primary.url(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("maintenance schedule"), "{err}");

    // Then replaced by one starting 2 s from now and ending 3 s later, watched at every
    // site with `mode watch --json` (started first, so no state can slip by unseen).
    let mut watchers: Vec<Watcher> = std::iter::once(&primary)
        .chain(&sites)
        .map(Watcher::start)
        .collect();
    let (start, end) = (from_now(2_000), from_now(5_000));
    let (code, out, err) = schedule(
        &cluster,
        &primary,
        &["--start", &start, "--end", &end, "--message", message],
    );
    assert_eq!(code, 0, "{out}{err}");
    for w in &mut watchers {
        let on = w.until(|m| m["maintenance_mode"] == true);
        assert_eq!(on["message"], message, "{on}");
        assert_eq!(on["updated_by"], "maintenance-schedule", "{on}");
        let started = ms_of(on["scheduled"]["started_at"].as_str().expect("started_at"));
        assert!(started >= ms_of(&start), "never before its start: {on}");
        assert_eq!(
            ms_of(on["scheduled"]["end"].as_str().unwrap_or("")),
            ms_of(&end)
        );
        let off = w.until(|m| m["maintenance_mode"] == false);
        assert!(off["scheduled"].is_null(), "the window is over: {off}");
        assert_eq!(off["updated_by"], "maintenance-schedule", "{off}");
        assert!(
            ms_of(off["updated_at"].as_str().unwrap_or("")) >= ms_of(&end),
            "{off}"
        );
    }
    for site in std::iter::once(&primary).chain(&sites) {
        let (_, text) = site.http_get_blocking("/metrics");
        assert_eq!(
            metric(&text, "geo_maintenance_scheduled_start_timestamp_seconds"),
            Some(0.0)
        );
    }
}

/// `geo-agent mode watch --json` at a site, read line by line on a thread of its own.
struct Watcher {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    site: String,
}

impl Watcher {
    fn start(site: &SiteProc) -> Watcher {
        let mut child = std::process::Command::new(BIN)
            .args(["mode", "watch", "--json", "--addr", &site.url()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run mode watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher {
            child,
            lines,
            site: site.name.clone(),
        }
    }

    /// The next state the watch prints for which `probe` holds.
    fn until(&mut self, probe: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out watching {}", self.site));
            let state: Value = serde_json::from_str(&line).expect("mode watch --json prints JSON");
            if probe(&state) {
                return state;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_primary_down_at_the_start_turns_the_mode_on_when_it_comes_back() {
    let cluster = Cluster::new();
    let mut primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let start = from_now(2_000);
    let (code, out, err) = schedule(
        &cluster,
        &primary,
        &["--start", &start, "--message", "back soon"],
    );
    assert_eq!(code, 0, "{out}{err}");
    wait_mode("the window announced", &s1, |m| !m["scheduled"].is_null());
    primary.kill9();
    // Well past the start (a start taken over a second after its time is called late),
    // with the primary down: the secondary shows the window and never
    // acts on it (only the primary's clock decides).
    poll_until(Instant::now() + DEADLINE, || {
        if Utc::now().timestamp_millis() > ms_of(&start) + 1_500 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(Duration::from_millis(50))
        }
    })
    .expect("the start passes");
    let m = mode_json(&s1);
    assert_eq!(m["maintenance_mode"], false, "a secondary never acts: {m}");
    assert!(m["scheduled"]["started_at"].is_null(), "{m}");

    primary.restart();
    for site in [&primary, &s1] {
        let m = wait_mode("maintenance on after the restart", site, |m| {
            m["maintenance_mode"] == true
        });
        assert_eq!(m["message"], "back soon", "{m}");
        let started = ms_of(m["scheduled"]["started_at"].as_str().expect("started_at"));
        assert!(started > ms_of(&start), "late, and it says so: {m}");
        assert!(m["scheduled"]["end"].is_null(), "{m}");
    }
    let logs = primary.logs();
    assert!(logs.contains("maintenance window started late"), "{logs}");
    let (_, page) = primary.http_get_blocking("/");
    assert!(
        page.contains("late: the primary was not running at"),
        "{page}"
    );
}

#[test]
fn a_window_survives_a_failover_and_the_new_primary_starts_it() {
    let cluster = Cluster::new();
    let mut primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let start = from_now(3_000);
    let (code, out, err) = schedule(
        &cluster,
        &primary,
        &["--start", &start, "--message", "after the failover"],
    );
    assert_eq!(code, 0, "{out}{err}");
    wait_mode("the window announced", &s1, |m| !m["scheduled"].is_null());
    // The primary is lost; s1 is promoted by force and carries the window on: it takes the
    // start at its time, or as soon as it is the primary if the promotion took longer.
    primary.kill9();
    let (code, out, err) = cluster.admin_cli(&["promote", "--force", "--addr", &s1.url()]);
    assert_eq!(code, 0, "{out}{err}");
    let m = wait_mode("maintenance on at the new primary", &s1, |m| {
        m["role"] == "primary" && m["maintenance_mode"] == true
    });
    assert_eq!(m["updated_by"], "maintenance-schedule", "{m}");
    assert_eq!(m["epoch"], 2, "{m}");
    assert_eq!(m["message"], "after the failover", "{m}");
    let started = ms_of(m["scheduled"]["started_at"].as_str().expect("started_at"));
    assert!(started >= ms_of(&start), "{m}");
}

#[test]
fn bad_windows_are_refused_with_clear_errors_and_nothing_stored() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    wait_mode("the secondary follows", &s1, |m| {
        m["settings_index"] == mode_json(&primary)["settings_index"]
    });
    let before = mode_json(&primary)["settings_index"].clone();
    let (past, soon, later) = (from_now(-60_000), from_now(60_000), from_now(120_000));
    let long = "x".repeat(256);
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["--start", &past, "--message", "m"],
            "InvalidArgument",
            "is not in the future",
        ),
        (
            &["--start", &later, "--end", &soon, "--message", "m"],
            "InvalidArgument",
            "must be after its start",
        ),
        (
            &["--start", &soon, "--end", &soon, "--message", "m"],
            "InvalidArgument",
            "must be after its start",
        ),
        (
            &["--start", &soon, "--message", &long],
            "InvalidArgument",
            "256 characters; the limit is 255",
        ),
        (
            &["--start", &soon, "--message", " "],
            "InvalidArgument",
            "message",
        ),
        (
            &["--start", "tomorrow at noon", "--message", "m"],
            "",
            "is not an RFC 3339 time",
        ),
    ];
    for (args, code_name, want) in cases {
        let (code, out, err) = schedule(&cluster, &primary, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains(code_name), "{args:?}: {err}");
    }
    // At a secondary: refused, naming the primary.
    let url = s1.url();
    let (code, _, err) = cluster.admin_cli(&[
        "maintenance",
        "schedule",
        "--addr",
        &url,
        "--start",
        &soon,
        "--message",
        "m",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(err.contains(&primary.url()), "names the primary: {err}");
    for site in [&primary, &s1] {
        let m = mode_json(site);
        assert_eq!(m["settings_index"], before, "nothing stored: {m}");
        assert!(m["scheduled"].is_null(), "{m}");
    }

    // Cancel: the announcement goes away everywhere; a second cancel has nothing to cancel.
    let (code, out, err) = schedule(&cluster, &primary, &["--start", &later, "--message", "m"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_mode("the window announced", &s1, |m| !m["scheduled"].is_null());
    let (code, out, err) = schedule(&cluster, &primary, &["--cancel"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cancelled the maintenance window"), "{out}");
    for site in [&primary, &s1] {
        let m = wait_mode("the window gone", site, |m| m["scheduled"].is_null());
        assert_eq!(m["maintenance_mode"], false, "{m}");
    }
    let (code, _, err) = schedule(&cluster, &primary, &["--cancel"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no maintenance window is scheduled"), "{err}");
}

#[test]
fn an_admin_who_turns_the_mode_off_during_a_window_wins() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let (start, end) = (from_now(1_500), from_now(3_600_000));
    let (code, out, err) = schedule(
        &cluster,
        &primary,
        &["--start", &start, "--end", &end, "--message", "window"],
    );
    assert_eq!(code, 0, "{out}{err}");
    wait_mode("the window started", &primary, |m| {
        m["maintenance_mode"] == true
    });
    // A window in progress cannot be replaced.
    let (code, _, err) = schedule(&cluster, &primary, &["--start", &end, "--message", "again"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in progress"), "{err}");

    let (code, out, err) = cluster.admin_cli(&["maintenance", "disable", "--addr", &primary.url()]);
    assert_eq!(code, 0, "{out}{err}");
    for site in [&primary, &s1] {
        let m = wait_mode("the mode off and the window over", site, |m| {
            m["maintenance_mode"] == false && m["scheduled"].is_null()
        });
        assert_ne!(m["updated_by"], "maintenance-schedule", "{m}");
    }
    // With the window gone there is nothing left to turn the mode on again.
    let (code, _, err) = schedule(&cluster, &primary, &["--cancel"]);
    assert_eq!(code, 1, "{err}");
}

/// The page's charts: each `<svg>` under #charts, parsed as XML by the browser itself.
const CHARTS: &str = "const svgs = [...document.querySelectorAll('#charts svg')];
return svgs.map(s => {
  const doc = new DOMParser().parseFromString(s.outerHTML, 'image/svg+xml');
  return { site: s.closest('[data-site]').getAttribute('data-site'),
           label: s.getAttribute('aria-label'),
           points: Number(s.getAttribute('data-points')),
           polyline: (s.querySelector('polyline') || {getAttribute: () => ''}).getAttribute('points'),
           wellFormed: doc.getElementsByTagName('parsererror').length === 0
                       && doc.documentElement.nodeName === 'svg',
           width: s.getBoundingClientRect().width,
           height: s.getBoundingClientRect().height };
});";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_charts_and_the_announcement_in_chromium() {
    if !have(
        &["chromedriver", "--version"],
        "the Debian packages chromium and chromium-driver",
    ) {
        return;
    }
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let _s1 = cluster.secondary("s1", &primary);
    let _s2 = cluster.secondary("s2", &primary);
    for i in 0..3 {
        let data = format!("object {i}").into_bytes();
        push(&primary, &cluster.admin_token, &format!("o{i}"), &data)
            .await
            .expect("push");
    }
    let start = from_now(3_600_000);
    let (code, out, err) = schedule(
        &cluster,
        &primary,
        &[
            "--start",
            &start,
            "--message",
            "Upgrade to 18.6 & failover drill",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    let browser = Browser::start().await;
    browser
        .open(&format!("http://{}/?refresh=1", primary.http))
        .await;
    // Reports arrive every 200 ms and a ring keeps one a second: wait for lines, not dots.
    let charts = eventually("both secondaries charted with lines", || async {
        let c = browser.run(CHARTS).await.ok()?;
        let all = c.as_array()?;
        let drawn = |site: &str| {
            all.iter()
                .filter(|s| s["site"] == site && s["points"].as_u64().unwrap_or(0) >= 2)
                .count()
        };
        (drawn("s1") == 3 && drawn("s2") == 3).then(|| c.clone())
    })
    .await;
    for chart in charts.as_array().expect("an array") {
        assert_eq!(chart["wellFormed"], true, "{chart}");
        assert!(chart["width"].as_f64().unwrap_or(0.0) > 100.0, "{chart}");
        assert!(chart["height"].as_f64().unwrap_or(0.0) > 40.0, "{chart}");
        let points = chart["polyline"].as_str().unwrap_or("");
        assert!(
            points.split(' ').filter(|p| p.contains(',')).count() >= 2,
            "a line of points: {chart}"
        );
    }
    let labels: Vec<&str> = charts
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|c| c["label"].as_str())
        .collect();
    for want in ["Lag, entries", "Lag, seconds", "Synced and verified, %"] {
        assert!(labels.contains(&want), "{labels:?}");
    }
    let banner = browser
        .run("const b = document.getElementById('maintenance-scheduled'); return b && { text: b.innerText, top: b.getBoundingClientRect().top };")
        .await
        .expect("read the page");
    let text = banner["text"].as_str().unwrap_or("");
    assert!(text.contains("Maintenance scheduled for"), "{banner}");
    assert!(
        text.contains("Upgrade to 18.6 & failover drill"),
        "{banner}"
    );
    assert_eq!(
        banner["top"], 0.0,
        "the announcement is at the top: {banner}"
    );

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-charts.png");
    std::fs::write(&shot, &png).expect("save the screenshot");
    eprintln!("screenshot: {}", shot.display());
}
