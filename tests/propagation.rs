//! Maintenance mode propagates from the primary to every secondary: real processes on
//! loopback, real gRPC, real restarts.

mod common;

use common::*;
use geo_agent::server::pb;
use tokio_stream::StreamExt;

const MESSAGE: &str = "Planned failover at 22:00 UTC — back by 23:00";

/// Reads a WatchMode stream until `pred` holds for a message, or the deadline passes.
async fn watch_until(
    stream: &mut tonic::Streaming<pb::ModeState>,
    what: &str,
    pred: impl Fn(&pb::ModeState) -> bool,
) -> pb::ModeState {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        let state = next.expect("stream ended").expect("stream failed");
        if pred(&state) {
            return state;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_and_disable_reach_both_secondaries_watch_streams() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let s2 = cluster.secondary("s2", &primary);

    let mut watches = Vec::new();
    for s in [&s1, &s2] {
        let mut stream = s
            .mode()
            .await
            .watch_mode(pb::WatchModeRequest {})
            .await
            .expect("WatchMode")
            .into_inner();
        let first = watch_until(&mut stream, "the current state", |_| true).await;
        assert!(!first.maintenance_mode, "{first:?}");
        assert_eq!(first.role, pb::Role::Secondary as i32);
        assert_eq!(first.site_id, s.name);
        watches.push(stream);
    }

    let on = set_maintenance(&primary, &cluster.admin_token, true, MESSAGE)
        .await
        .expect("enable");
    assert!(on.maintenance_mode);
    assert_eq!(on.updated_by, "test");
    for w in &mut watches {
        let got = watch_until(w, "maintenance on", |m| m.maintenance_mode).await;
        assert_eq!(got.message, MESSAGE);
        assert_eq!(got.updated_by, "test");
        assert_eq!(got.updated_at, on.updated_at);
        assert_eq!(got.settings_index, on.settings_index);
        assert_eq!(got.settings_hash, on.settings_hash);
    }

    let off = set_maintenance(&primary, &cluster.admin_token, false, "")
        .await
        .expect("disable");
    for w in &mut watches {
        let got = watch_until(w, "maintenance off", |m| !m.maintenance_mode).await;
        assert_eq!(got.message, "", "the message is cleared with the mode");
        assert_eq!(got.settings_index, off.settings_index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_that_was_down_catches_up_to_the_same_state_and_hash() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let mut s1 = cluster.secondary("s1", &primary);
    // The settings log holds the sites' registrations before any change.
    let base = primary.get_mode().await.settings_index;
    eventually("s1 to follow", || async {
        let m = s1.get_mode().await;
        let f = m.follower?;
        (f.state == pb::FollowerState::Following as i32).then_some(())
    })
    .await;

    assert!(s1.terminate().success(), "SIGTERM exits 0");
    for (enabled, msg) in [(true, "first"), (false, ""), (true, "third and last")] {
        set_maintenance(&primary, &cluster.admin_token, enabled, msg)
            .await
            .expect("change while s1 is down");
    }
    let want = primary.get_mode().await;
    assert_eq!(want.settings_index, base + 3);

    s1.restart();
    let got = eventually("s1 to catch up", || async {
        let m = s1.get_mode().await;
        (m.settings_index == want.settings_index).then_some(m)
    })
    .await;
    assert!(got.maintenance_mode);
    assert_eq!(got.message, "third and last");
    assert_eq!(got.settings_hash, want.settings_hash);
    assert_eq!(got.updated_at, want.updated_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondaries_survive_a_primary_restart_and_every_site_keeps_its_settings() {
    let cluster = Cluster::new();
    let mut primary = cluster.primary("primary");
    let mut s1 = cluster.secondary("s1", &primary);
    let mut s2 = cluster.secondary("s2", &primary);
    let base = primary.get_mode().await.settings_index;
    set_maintenance(&primary, &cluster.admin_token, true, "before restart")
        .await
        .unwrap();
    for s in [&s1, &s2] {
        eventually("the first change", || async {
            (s.get_mode().await.settings_index == base + 1).then_some(())
        })
        .await;
    }

    assert!(primary.terminate().success());
    primary.restart();
    let after = primary.get_mode().await;
    assert!(
        after.maintenance_mode,
        "the primary kept the mode: {after:?}"
    );
    assert_eq!(after.message, "before restart");

    // The secondaries reconnect by themselves and follow new changes.
    set_maintenance(&primary, &cluster.admin_token, true, "after restart")
        .await
        .unwrap();
    let want = primary.get_mode().await;
    for s in [&s1, &s2] {
        let m = eventually("secondaries to follow after the restart", || async {
            let m = s.get_mode().await;
            (m.settings_index == want.settings_index).then_some(m)
        })
        .await;
        assert_eq!(m.message, "after restart");
        assert_eq!(m.settings_hash, want.settings_hash);
    }

    // Every site restarted: all of them still know the mode.
    for s in [&mut primary, &mut s1, &mut s2] {
        assert!(s.terminate().success());
        s.restart();
        let m = s.get_mode().await;
        assert!(m.maintenance_mode, "{} lost the mode", s.name);
        assert_eq!(m.message, "after restart");
        assert_eq!(m.settings_hash, want.settings_hash);
    }
}
