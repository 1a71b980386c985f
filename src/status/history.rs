//! The last hour of each secondary, for the status page's charts: one [`Point`] per status
//! report, judged when it arrives, in a ring per site.
//!
//! Bounded whatever a secondary sends: only registered sites have a ring (a site may only
//! report as itself), a ring holds at most one point per [`MIN_SPACING_MS`] of the
//! primary's own clock (a report sooner than that replaces the last point) and nothing
//! older than [`WINDOW_MS`], so at most [`MAX_POINTS`] small points per site. A point
//! carries figures the primary judged, never text the secondary chose.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::SiteStatus;

/// How far back the charts go.
pub const WINDOW_MS: i64 = 3_600_000;
/// At most one point per this much time per site.
pub const MIN_SPACING_MS: i64 = 1_000;
/// Points a ring can hold: an hour at the closest spacing.
pub const MAX_POINTS: usize = (WINDOW_MS / MIN_SPACING_MS) as usize;

/// One report, as the charts draw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// When the primary received the report (its clock).
    pub at_ms: i64,
    pub settings_lag_entries: u64,
    pub events_lag_entries: u64,
    /// The larger of the two logs' lags, in ms.
    pub lag_ms: i64,
    /// Synced of the objects the site knows, 0–100.
    pub synced_pct: f64,
    /// Verified of the synced copies, 0–100.
    pub verified_pct: f64,
}

fn pct(part: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        (part as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    }
}

impl Point {
    /// The point of a judged report received at `at_ms`.
    pub fn of(status: &SiteStatus, at_ms: i64) -> Point {
        let c = &status.report.objects;
        Point {
            at_ms,
            settings_lag_entries: status.settings_lag.entries,
            events_lag_entries: status.events_lag.entries,
            lag_ms: status
                .settings_lag
                .millis
                .max(status.events_lag.millis)
                .max(0),
            synced_pct: pct(c.synced, c.objects),
            verified_pct: pct(c.verified, c.synced),
        }
    }
}

/// Every registered secondary's ring, by site id.
#[derive(Default)]
pub struct History {
    inner: Mutex<BTreeMap<String, VecDeque<Point>>>,
}

impl History {
    /// Adds `point` to `site`'s ring and drops the rings of sites `registered` no longer
    /// names (and the point, if `site` is not registered).
    pub fn record(&self, site: &str, point: Point, registered: impl Fn(&str) -> bool) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|id, _| registered(id));
        if !registered(site) {
            return;
        }
        let ring = m.entry(site.to_string()).or_default();
        // In the same second as the last one (or the clock went back): the newer replaces
        // it, so a ring holds one point per second of the primary's clock at most.
        let second = |at: i64| at.div_euclid(MIN_SPACING_MS);
        while ring
            .back()
            .is_some_and(|last| second(last.at_ms) >= second(point.at_ms))
        {
            ring.pop_back();
        }
        while ring
            .front()
            .is_some_and(|first| first.at_ms <= point.at_ms - WINDOW_MS)
        {
            ring.pop_front();
        }
        while ring.len() >= MAX_POINTS {
            ring.pop_front();
        }
        ring.push_back(point);
    }

    /// Each site's points of the last hour before `now_ms`, oldest first, by site id.
    pub fn all(&self, now_ms: i64) -> Vec<(String, Vec<Point>)> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|(id, ring)| {
                let recent = ring
                    .iter()
                    .filter(|p| p.at_ms > now_ms - WINDOW_MS)
                    .copied()
                    .collect();
                (id.clone(), recent)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Point {
        Point {
            at_ms: ms,
            settings_lag_entries: 1,
            events_lag_entries: 2,
            lag_ms: 3,
            synced_pct: 50.0,
            verified_pct: 25.0,
        }
    }

    #[test]
    fn a_ring_keeps_one_point_a_second_for_an_hour_and_no_more() {
        let h = History::default();
        let yes = |_: &str| true;
        // A flood: a report every 10 ms for two hours.
        for i in 0..(2 * WINDOW_MS / 10) {
            h.record("s1", at(i * 10), yes);
        }
        let all = h.all(2 * WINDOW_MS);
        let points = &all[0].1;
        assert!(points.len() <= MAX_POINTS, "{}", points.len());
        assert!(points.len() >= MAX_POINTS - 2, "{}", points.len());
        assert!(points
            .windows(2)
            .all(|w| w[1].at_ms / MIN_SPACING_MS > w[0].at_ms / MIN_SPACING_MS));
        assert!(points[0].at_ms > WINDOW_MS - 2 * MIN_SPACING_MS);
    }

    #[test]
    fn only_registered_sites_have_a_ring() {
        let h = History::default();
        h.record("s1", at(0), |_| true);
        h.record("s2", at(0), |id| id == "s2");
        assert_eq!(
            h.all(1)
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["s2"]
        );
        h.record("s3", at(5_000), |_| false);
        assert!(h.all(6_000).is_empty());
    }

    #[test]
    fn a_clock_that_goes_back_replaces_rather_than_grows() {
        let h = History::default();
        h.record("s1", at(10_000), |_| true);
        h.record("s1", at(5_000), |_| true);
        assert_eq!(h.all(10_000)[0].1, vec![at(5_000)]);
    }
}
