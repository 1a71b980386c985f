//! `kill -9` of a secondary during a burst of settings updates loses nothing and applies
//! nothing twice: afterwards its log equals the primary's, entry for entry.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use geo_agent::server::pb;

const UPDATES: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_secondary_during_a_burst_loses_nothing() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let mut s1 = cluster.secondary("s1", &primary);
    // The settings log holds the sites' registrations before the burst.
    let base = primary.get_mode().await.settings_index;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("kill points seed: {seed}");
    let mut kill_at: Vec<u64> = (0..4)
        .map(|i| (seed.wrapping_mul(6364136223846793005).rotate_left(i * 13)) % (UPDATES - 50) + 25)
        .collect();
    kill_at.sort();

    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let done = Arc::clone(&done);
        let mut admin = primary.admin().await;
        let token = cluster.admin_token.clone();
        tokio::spawn(async move {
            for i in 1..=UPDATES {
                let req = pb::UpdateSettingsRequest {
                    set: [("counter".to_string(), i.to_string())].into(),
                    unset: vec![],
                    actor: "burst".into(),
                };
                let reply = admin
                    .update_settings(bearer(req, &token))
                    .await
                    .expect("update on the primary")
                    .into_inner();
                assert_eq!(reply.settings_index, base + i);
                done.store(i, Ordering::Release);
            }
        })
    };

    for at in kill_at {
        eventually("the burst to reach the kill point", || async {
            (done.load(Ordering::Acquire) >= at).then_some(())
        })
        .await;
        s1.kill9();
        s1.restart();
    }
    writer.await.expect("writer");

    let head = eventually("s1 to apply the whole burst", || async {
        let m = s1.get_mode().await;
        (m.settings_index == base + UPDATES).then_some(m)
    })
    .await;
    assert_eq!(head.settings_hash, primary.get_mode().await.settings_hash);

    let ours = settings_log(&primary, &cluster.site_token, base + UPDATES).await;
    let theirs = settings_log(&s1, &cluster.site_token, base + UPDATES).await;
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a.index, i as u64 + 1, "the primary's log is contiguous");
        assert_eq!(a, b, "entry {} differs", a.index);
    }

    let settings = s1
        .admin()
        .await
        .get_settings(bearer(pb::GetSettingsRequest {}, &cluster.admin_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(settings.values["counter"], UPDATES.to_string());
}
