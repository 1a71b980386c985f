//! Small inline SVG charts for the status page: a secondary's lag and its sync and
//! verification progress over the last hour, drawn on the server from the primary's
//! [`History`](crate::status::History). No script, no external asset: each chart is an
//! `<svg>` element with a polyline per series. The SVG holds only numbers and fixed labels
//! (the page escapes the site's name around it), and at most [`MAX_DRAWN`] points per
//! series whatever the ring holds, so the page stays small.

use std::fmt::Write as _;

use crate::status::history::WINDOW_MS;
use crate::status::Point;

const WIDTH: f64 = 280.0;
const HEIGHT: f64 = 72.0;
/// Room at the top for the scale's label and at the bottom for the time axis.
const TOP: f64 = 12.0;
const BOTTOM: f64 = 12.0;
/// Points drawn per series at most: the ring is bucketed down to this.
pub const MAX_DRAWN: usize = 120;
/// The narrowest time span drawn, so a few points do not fill the whole width.
const MIN_SPAN_MS: i64 = 10_000;

/// One line of a chart: how to read a point, how buckets combine, and its colour.
struct Series {
    name: &'static str,
    colour: &'static str,
    value: fn(&Point) -> f64,
    /// Lags keep a bucket's worst value; progress its latest.
    worst: bool,
}

/// A chart's frame: what it shows and how its scale reads.
struct Chart {
    label: &'static str,
    /// Formats the top of the scale.
    unit: fn(f64) -> String,
    /// A fixed top of the scale (percentages), else the largest value drawn.
    fixed_max: Option<f64>,
    series: &'static [Series],
}

const LAG_ENTRIES: Chart = Chart {
    label: "Lag, entries",
    unit: |v| format!("{v:.0}"),
    fixed_max: None,
    series: &[
        Series {
            name: "settings",
            colour: "#0969da",
            value: |p| p.settings_lag_entries as f64,
            worst: true,
        },
        Series {
            name: "events",
            colour: "#8250df",
            value: |p| p.events_lag_entries as f64,
            worst: true,
        },
    ],
};

const LAG_SECONDS: Chart = Chart {
    label: "Lag, seconds",
    unit: |v| format!("{v:.1} s"),
    fixed_max: None,
    series: &[Series {
        name: "lag",
        colour: "#bc4c00",
        value: |p| p.lag_ms as f64 / 1000.0,
        worst: true,
    }],
};

const PROGRESS: Chart = Chart {
    label: "Synced and verified, %",
    unit: |v| format!("{v:.0}%"),
    fixed_max: Some(100.0),
    series: &[
        Series {
            name: "synced",
            colour: "#1a7f37",
            value: |p| p.synced_pct,
            worst: false,
        },
        Series {
            name: "verified",
            colour: "#0a7d8c",
            value: |p| p.verified_pct,
            worst: false,
        },
    ],
};

/// The three charts of one site, as inline SVG.
pub fn site_charts(points: &[Point], now_ms: i64) -> String {
    [LAG_ENTRIES, LAG_SECONDS, PROGRESS]
        .iter()
        .map(|c| chart(c, points, now_ms))
        .collect()
}

/// The time span drawn: from the oldest point (at most an hour back) to now.
fn span(points: &[Point], now_ms: i64) -> i64 {
    let oldest = points.first().map_or(now_ms, |p| p.at_ms);
    (now_ms - oldest).clamp(MIN_SPAN_MS, WINDOW_MS)
}

/// A series bucketed to at most [`MAX_DRAWN`] points: (time, value).
fn bucketed(s: &Series, points: &[Point], now_ms: i64, span: i64) -> Vec<(i64, f64)> {
    let from = now_ms - span;
    let mut out: Vec<(usize, i64, f64)> = Vec::new();
    for p in points
        .iter()
        .filter(|p| p.at_ms >= from && p.at_ms <= now_ms)
    {
        let v = (s.value)(p);
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let bucket = ((p.at_ms - from) as f64 / span as f64 * MAX_DRAWN as f64) as usize;
        let bucket = bucket.min(MAX_DRAWN - 1);
        match out.last_mut() {
            Some(last) if last.0 == bucket => {
                last.1 = p.at_ms;
                last.2 = if s.worst { last.2.max(v) } else { v };
            }
            _ => out.push((bucket, p.at_ms, v)),
        }
    }
    out.into_iter().map(|(_, at, v)| (at, v)).collect()
}

fn chart(c: &Chart, points: &[Point], now_ms: i64) -> String {
    let span = span(points, now_ms);
    let lines: Vec<(&Series, Vec<(i64, f64)>)> = c
        .series
        .iter()
        .map(|s| (s, bucketed(s, points, now_ms, span)))
        .collect();
    let top = c.fixed_max.unwrap_or_else(|| {
        lines
            .iter()
            .flat_map(|(_, l)| l.iter().map(|(_, v)| *v))
            .fold(0.0, f64::max)
            .max(1.0)
    });
    let x = |at: i64| WIDTH * (1.0 - (now_ms - at) as f64 / span as f64).clamp(0.0, 1.0);
    let y = |v: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - (v / top).clamp(0.0, 1.0));
    let drawn = lines.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let mut svg = String::with_capacity(2048);
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{label}\" data-points=\"{drawn}\"><title>{label}</title>\
<rect x=\"0.5\" y=\"0.5\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\" stroke=\"#d1d9e0\"/>\
<line x1=\"0\" y1=\"{base}\" x2=\"{WIDTH}\" y2=\"{base}\" stroke=\"#d1d9e0\"/>",
        label = c.label,
        w = WIDTH - 1.0,
        h = HEIGHT - 1.0,
        base = y(0.0),
    );
    for (s, line) in &lines {
        let pts: Vec<String> = line
            .iter()
            .map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v)))
            .collect();
        if pts.len() > 1 {
            let _ = write!(
                svg,
                "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
                s.name,
                s.colour,
                pts.join(" ")
            );
        }
        if let Some((at, v)) = line.last() {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{}\"/>",
                x(*at),
                y(*v),
                s.colour
            );
        }
    }
    let legend: String = c
        .series
        .iter()
        .map(|s| format!("<tspan fill=\"{}\"> {}</tspan>", s.colour, s.name))
        .collect();
    let _ = write!(
        svg,
        "<text x=\"3\" y=\"9\" font-size=\"9\" fill=\"#59636e\">{label} · max {max}{legend}</text>\
<text x=\"3\" y=\"{ty}\" font-size=\"9\" fill=\"#59636e\">-{ago}</text>\
<text x=\"{tx}\" y=\"{ty}\" font-size=\"9\" fill=\"#59636e\" text-anchor=\"end\">now</text></svg>",
        label = c.label,
        max = (c.unit)(top),
        ty = HEIGHT - 2.0,
        tx = WIDTH - 3.0,
        ago = minutes(span),
    );
    svg
}

fn minutes(ms: i64) -> String {
    if ms >= 120_000 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at_ms: i64, lag: u64) -> Point {
        Point {
            at_ms,
            settings_lag_entries: lag,
            events_lag_entries: lag * 2,
            lag_ms: lag as i64 * 100,
            synced_pct: 40.0,
            verified_pct: f64::NAN,
        }
    }

    #[test]
    fn an_hour_of_points_is_drawn_with_at_most_the_bound() {
        let now = 10 * WINDOW_MS;
        let points: Vec<Point> = (0..3600)
            .map(|i| point(now - WINDOW_MS + i * 1000, i as u64))
            .collect();
        let svg = site_charts(&points, now);
        assert_eq!(svg.matches("<svg ").count(), 3);
        assert_eq!(svg.matches("</svg>").count(), 3);
        assert!(
            svg.contains(&format!("data-points=\"{MAX_DRAWN}\"")),
            "{svg}"
        );
        for poly in svg.split("points=\"").skip(1) {
            let pts = poly.split('"').next().unwrap_or("");
            assert!(pts.split(' ').count() <= MAX_DRAWN);
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // The largest lag is the top of the scale.
        assert!(svg.contains("max 7198"), "{svg}");
    }

    #[test]
    fn one_point_is_a_dot_and_none_is_an_empty_frame() {
        let one = site_charts(&[point(1_000, 3)], 2_000);
        assert!(one.contains("<circle"));
        assert!(!one.contains("<polyline"));
        let none = site_charts(&[], 2_000);
        assert!(none.contains("data-points=\"0\""));
        assert!(!none.contains("<circle"));
    }
}
