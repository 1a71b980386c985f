//! Health and readiness, table by table.

use super::*;

const NOW: i64 = 1_000_000;

fn position(applied: u64, state: FollowerState) -> LogPosition {
    LogPosition {
        applied,
        applied_hash: String::new(),
        follower: Some(FollowerView {
            state,
            primary_head: applied,
            last_contact_ms: Some(NOW),
            error: None,
        }),
    }
}

fn counts(objects: u64, synced: u64, failed: u64, verified: u64, vfailed: u64) -> Counts {
    Counts {
        objects,
        synced,
        pending: objects - synced - failed,
        failed,
        verified,
        verification_failed: vfailed,
        events_applied: 0,
        selective: None,
        damaged: Vec::new(),
        progress: Vec::new(),
    }
}

fn secondary(applied: (u64, u64), objects: Counts, maintenance: bool) -> Report {
    Report {
        site_id: "s1".into(),
        role: Role::Secondary,
        epoch: 1,
        maintenance,
        settings: position(applied.0, FollowerState::Following),
        events: position(applied.1, FollowerState::Following),
        objects,
        writes_in_flight: 0,
        at_ms: NOW,
        advertise_url: None,
        disk: None,
        object_storage: None,
    }
}

fn primary(objects: u64, maintenance: bool) -> Report {
    Report {
        site_id: "p".into(),
        role: Role::Primary,
        epoch: 1,
        maintenance,
        settings: LogPosition {
            applied: 3,
            ..LogPosition::default()
        },
        events: LogPosition {
            applied: 10,
            ..LogPosition::default()
        },
        objects: counts(objects, objects, 0, objects, 0),
        writes_in_flight: 0,
        at_ms: NOW,
        advertise_url: None,
        disk: None,
        object_storage: None,
    }
}

fn judge() -> Judge {
    Judge {
        now_ms: NOW,
        settings_head: 3,
        events_head: 10,
        settings_lag_ms: None,
        events_lag_ms: None,
        primary_objects: 5,
    }
}

fn channel<'a>(s: &'a SiteStatus, name: &str) -> &'a Channel {
    s.channels.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn a_site_in_step_is_ok() {
    let s = judge().site(secondary((3, 10), counts(5, 5, 0, 5, 0), false), Some(NOW));
    assert_eq!(s.health, Health::Ok, "{:?}", s.channels);
    assert_eq!(s.settings_lag, Lag::default());
}

#[test]
fn health_follows_contact_lag_failures_and_divergence() {
    let j = judge();
    /// (what, report, last contact, channel, expected health, a reason contains)
    type Case = (
        &'static str,
        Report,
        Option<i64>,
        &'static str,
        Health,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "old report",
            secondary((3, 10), counts(5, 5, 0, 5, 0), false),
            Some(NOW - 20_000),
            "contact",
            Health::Warning,
            "no report for 20.0 s",
        ),
        (
            "very old report",
            secondary((3, 10), counts(5, 5, 0, 5, 0), false),
            Some(NOW - 120_000),
            "contact",
            Health::Critical,
            "no report for 120.0 s",
        ),
        (
            "never reported",
            secondary((3, 10), counts(5, 5, 0, 5, 0), false),
            None,
            "contact",
            Health::Critical,
            "never reported",
        ),
        (
            "failed syncs",
            secondary((3, 10), counts(5, 3, 2, 3, 0), false),
            Some(NOW),
            "objects",
            Health::Warning,
            "2 of 5 objects failed",
        ),
        (
            "a corrupted copy",
            secondary((3, 10), counts(5, 5, 0, 4, 1), false),
            Some(NOW),
            "verification",
            Health::Warning,
            "1 copies did not match",
        ),
    ];
    for (what, report, contact, name, health, reason) in cases {
        let s = j.site(report, contact);
        let c = channel(&s, name);
        assert_eq!(c.health, health, "{what}: {c:?}");
        assert!(
            c.reasons.iter().any(|r| r.contains(reason)),
            "{what}: {c:?}"
        );
        assert_eq!(s.health, health, "{what}: the worst channel decides");
    }
}

#[test]
fn lag_is_judged_by_how_long_the_site_has_been_behind() {
    let mut j = judge();
    let report = secondary((1, 10), counts(5, 5, 0, 5, 0), false);
    j.settings_lag_ms = Some(500);
    let s = j.site(report.clone(), Some(NOW));
    assert_eq!(
        s.settings_lag,
        Lag {
            entries: 2,
            millis: 500
        }
    );
    assert_eq!(channel(&s, "settings").health, Health::Ok, "catching up");
    j.settings_lag_ms = Some(30_000);
    assert_eq!(
        channel(&j.site(report.clone(), Some(NOW)), "settings").health,
        Health::Warning
    );
    j.settings_lag_ms = Some(90_000);
    assert_eq!(
        channel(&j.site(report, Some(NOW)), "settings").health,
        Health::Critical
    );
}

#[test]
fn divergence_is_critical() {
    let mut report = secondary((3, 10), counts(5, 5, 0, 5, 0), false);
    report.events.follower.as_mut().unwrap().state = FollowerState::Diverged;
    let s = judge().site(report, Some(NOW));
    assert_eq!(channel(&s, "events").health, Health::Critical);
    assert_eq!(s.health, Health::Critical);
}

#[test]
fn a_corrupt_object_on_the_primary_is_critical() {
    let mut p = primary(5, false);
    p.objects.verification_failed = 1;
    let s = judge().site(p, Some(NOW));
    assert_eq!(channel(&s, "verification").health, Health::Critical);
    assert!(s.channels.iter().all(|c| c.name != "contact"));
}

fn ready_case(
    p_maint: bool,
    s: Report,
    in_flight: &[Write],
    contact: Option<i64>,
) -> Vec<(String, bool, String)> {
    let j = judge();
    let p = j.site(primary(5, p_maint), Some(NOW));
    let t = j.site(s, contact);
    readiness(&p, in_flight, "s1", Some(&t), NOW)
        .into_iter()
        .map(|c| (c.name, c.ok, c.detail))
        .collect()
}

#[test]
fn ready_when_every_criterion_holds() {
    let got = ready_case(
        true,
        secondary((3, 10), counts(5, 5, 0, 5, 0), true),
        &[],
        Some(NOW),
    );
    assert_eq!(got.len(), 8);
    assert!(got.iter().all(|c| c.1), "{got:#?}");
    assert!(got
        .iter()
        .any(|c| c.2 == "5 of 5 synced (100.0%), 0 pending, 0 failed"));
}

#[test]
fn each_missing_criterion_is_named_with_its_figure() {
    let write = Write {
        id: 1,
        what: "push a".into(),
        from: "10.0.0.9:5000".into(),
        since_ms: NOW - 5,
    };
    let got = ready_case(
        false,
        secondary((2, 9), counts(5, 3, 1, 2, 0), false),
        &[write],
        Some(NOW - 30_000),
    );
    let failing: Vec<_> = got
        .iter()
        .filter(|c| !c.1)
        .map(|c| (&c.0[..], &c.2[..]))
        .collect();
    assert_eq!(
        failing,
        [
            ("maintenance mode on at the primary", "off"),
            ("maintenance mode on at s1", "off"),
            (
                "s1 applied the settings log to the primary's head",
                "applied 2 of 3"
            ),
            (
                "s1 applied the event log to the primary's head",
                "applied 9 of 10"
            ),
            (
                "all objects synced at s1",
                "3 of 5 synced (60.0%), 1 pending, 1 failed"
            ),
            (
                "all objects verified at s1",
                "2 of 5 verified (40.0%), 0 failed verification"
            ),
            (
                "nothing in flight at the primary",
                "1 writes in flight: push a from 10.0.0.9:5000"
            ),
            ("s1 in contact recently", "last report 30.0 s ago"),
        ]
    );
}

#[test]
fn an_unknown_site_is_not_ready() {
    let j = judge();
    let p = j.site(primary(5, true), Some(NOW));
    let got = readiness(&p, &[], "s9", None, NOW);
    assert!(
        got.iter().any(|c| !c.ok && c.detail.contains("\"s9\"")),
        "{got:?}"
    );
}

#[test]
fn a_selectively_synced_target_is_judged_on_its_selection_and_names_what_it_lacks() {
    let selection = crate::settings::Selection {
        prefixes: vec!["group-a/".into()],
        kinds: vec![],
    };
    // 5 objects at the primary, 2 of them selected at s1, both synced and verified.
    let mut c = counts(5, 2, 0, 2, 0);
    c.pending = 0;
    c.selective = Some(selection.clone());
    let got = ready_case(true, secondary((3, 10), c.clone(), true), &[], Some(NOW));
    let find = |name: &str| got.iter().find(|g| g.0 == name).cloned();
    let synced = find("all selected objects synced at s1").expect("judged on the selection");
    assert!(synced.1, "{got:#?}");
    assert_eq!(
        synced.2,
        "2 of 2 selected synced (100.0%), 0 pending, 0 failed"
    );
    assert!(find("all selected objects verified at s1").unwrap().1);
    let lacks = find("s1 replicates every object").unwrap();
    assert!(!lacks.1);
    assert_eq!(
        lacks.2,
        "selective sync (prefixes group-a/): 3 of 5 objects are not replicated at s1; a promotion leaves them behind"
    );
    assert!(find("all objects synced at s1").is_none());
    // A selected object still pending fails the synced criterion.
    c.pending = 1;
    let got = ready_case(true, secondary((3, 10), c, true), &[], Some(NOW));
    let synced = got
        .iter()
        .find(|g| g.0 == "all selected objects synced at s1")
        .unwrap();
    assert!(!synced.1, "{got:#?}");
}
