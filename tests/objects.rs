//! Replicated objects end to end: real processes on loopback, pushes and pulls over gRPC,
//! replication and verification on secondaries, forwarded pushes, maintenance mode, crashes.

mod common;

use common::*;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use geo_agent::gate::GIT_PUSH_MESSAGE;
use geo_agent::server::pb;
use tonic::Code;

const FAST_VERIFY: &[&str] = &["--reverify-interval", "500ms"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_the_primary_reaches_both_secondaries_verified() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let s2 = cluster.secondary("s2", &primary);

    let data = noise(1, 3 * 1024 * 1024 + 17);
    let sha = sha256_hex(&data);
    let pushed = push(&primary, token, "group/project.git", &data)
        .await
        .expect("push");
    let meta = pushed.object.expect("object");
    assert_eq!(
        (meta.sha256.as_str(), meta.size),
        (sha.as_str(), data.len() as u64)
    );
    assert!(!pushed.proxied);
    assert_eq!(pushed.committed_by, "primary");

    for s in [&s1, &s2] {
        let info = synced(s, token, "group/project.git", &sha).await;
        assert_eq!(info.object.unwrap().version, meta.version);
        let (header, got) = pull(s, token, "group/project.git").await.expect("pull");
        assert!(!header.read_through, "served from the local copy");
        assert_eq!(sha256_hex(&got), sha);
    }
    // The primary keeps its copy verified too.
    let here = stat(&primary, token, "group/project.git").await.unwrap();
    assert_eq!(
        here.replica.unwrap().verification,
        pb::VerificationState::Succeeded as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_at_a_secondary_is_forwarded_committed_and_replicated() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let s2 = cluster.secondary("s2", &primary);

    let data = noise(2, 700_000);
    let sha = sha256_hex(&data);
    let pushed = push(&s1, token, "uploads/a.png", &data)
        .await
        .expect("push at s1");
    assert!(pushed.proxied, "{pushed:?}");
    assert_eq!(pushed.committed_by, "primary");
    let meta = pushed.object.unwrap();
    assert!(meta.updated_by.contains("via s1"), "{meta:?}");

    let on_primary = stat(&primary, token, "uploads/a.png").await.unwrap();
    assert_eq!(on_primary.object.unwrap().sha256, sha);
    synced(&s2, token, "uploads/a.png", &sha).await;
    synced(&s1, token, "uploads/a.png", &sha).await;
    let (_, got) = pull(&s2, token, "uploads/a.png").await.unwrap();
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_refuses_new_pushes_everywhere_but_replication_and_pulls_go_on() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let mut s1 = cluster.secondary_with("s1", &primary, FAST_VERIFY);
    let s2 = cluster.secondary("s2", &primary);
    // Wait until s1 follows, then take it offline so replication is pending.
    eventually("s1 following", || async {
        let f = s1.get_mode().await.follower?;
        (f.state == pb::FollowerState::Following as i32).then_some(())
    })
    .await;
    s1.terminate();

    let mut expected = Vec::new();
    for i in 0..20u64 {
        let data = noise(100 + i, 10_000 + i as usize * 1000);
        let name = format!("repos/r{i}.git");
        push(&primary, token, &name, &data).await.expect("push");
        expected.push((name, sha256_hex(&data)));
    }
    set_maintenance(&primary, token, true, "failover drill")
        .await
        .unwrap();
    eventually("s2 in maintenance", || async {
        s2.get_mode().await.maintenance_mode.then_some(())
    })
    .await;

    // New pushes fail wherever they enter, with the SPEC's message.
    for (site, what) in [(&primary, "direct"), (&s2, "at a secondary")] {
        let err = push(site, token, "new.bin", b"x").await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{what}: {err:?}");
        assert_eq!(err.message(), GIT_PUSH_MESSAGE, "{what}");
    }
    // A forwarded push that reaches the primary (from a secondary that has not heard of the
    // mode yet) is refused by the primary itself.
    let forwarded = vec![
        pb::PushRequest {
            part: Some(pb::push_request::Part::Header(pb::PushHeader {
                name: "new.bin".into(),
                proxied_by: Some(pb::ProxiedBy {
                    site_id: Cluster::TEST_SITE.into(),
                    epoch: primary.get_mode().await.epoch,
                }),
                ..Default::default()
            })),
        },
        pb::PushRequest {
            part: Some(pb::push_request::Part::Trailer(pb::PushTrailer {
                size: 0,
                sha256: String::new(),
            })),
        },
    ];
    let err = primary
        .objects()
        .await
        .push(bearer(tokio_stream::iter(forwarded), &cluster.site_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), GIT_PUSH_MESSAGE);
    for site in [&primary, &s2] {
        let err = stat(site, token, "new.bin").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "nothing was stored");
    }

    // The secondary that was offline comes back *in* maintenance and still replicates and
    // verifies everything.
    s1.restart();
    assert!(
        s1.get_mode().await.maintenance_mode || {
            eventually("s1 in maintenance", || async {
                s1.get_mode().await.maintenance_mode.then_some(())
            })
            .await;
            true
        }
    );
    for (name, sha) in &expected {
        synced(&s1, token, name, sha).await;
    }
    let counts = s1.object_counts().await;
    assert_eq!(counts["synced"], 20, "{counts}");
    assert_eq!(counts["verified"], 20, "{counts}");
    // Re-verification keeps running in maintenance (interval 500ms here).
    let before = stat(&s1, token, "repos/r0.git")
        .await
        .unwrap()
        .replica
        .unwrap()
        .verified_at
        .unwrap();
    eventually("a re-verification in maintenance", || async {
        let r = stat(&s1, token, "repos/r0.git").await.ok()?.replica?;
        let at = r.verified_at?;
        (at.seconds > before.seconds || (at.seconds == before.seconds && at.nanos > before.nanos))
            .then_some(())
    })
    .await;
    // Pulls work on every site in maintenance.
    for site in [&primary, &s1, &s2] {
        let (_, got) = pull(site, token, "repos/r3.git")
            .await
            .expect("pull in maintenance");
        assert_eq!(sha256_hex(&got), expected[3].1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_in_flight_when_maintenance_starts_finishes_and_new_ones_are_refused() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    // The settings log holds the sites' registrations before any change.
    let base = primary.get_mode().await.settings_index;

    let data = noise(3, 2 * 1024 * 1024);
    let (tx, call) = open_push(&primary, token, "slow.bin").await;
    tx.send(pb::PushRequest {
        part: Some(pb::push_request::Part::Chunk(data[..1024 * 1024].to_vec())),
    })
    .await
    .unwrap();
    // The push is in flight once the site lists it.
    eventually("the push listed in flight", || async {
        let counts = primary.object_counts().await;
        let writes = counts["in_flight"].as_array()?.clone();
        writes
            .iter()
            .any(|w| w["what"] == "push slow.bin")
            .then_some(())
    })
    .await;
    set_maintenance(&primary, token, true, "").await.unwrap();
    let err = push(&primary, token, "late.bin", b"late")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Not drained while it runs: `maintenance status` names it (exit 1).
    let token_file = cluster.path("admin-token").display().to_string();
    let env = [("GEO_AGENT_TOKEN_FILE", token_file.as_str())];
    let status = || {
        let (code, out, err) = cli(
            &["maintenance", "status", "--json", "--addr", &primary.url()],
            &env,
        );
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}{err}"));
        (code, v)
    };
    let (code, v) = status();
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["drained"], false);
    assert_eq!(v["in_flight"][0]["what"], "push slow.bin");
    assert!(v["freeze_point"].is_null());
    tx.send(pb::PushRequest {
        part: Some(pb::push_request::Part::Chunk(data[1024 * 1024..].to_vec())),
    })
    .await
    .unwrap();
    drop(tx);
    let done = call.await.unwrap().expect("the push in flight completes");
    assert_eq!(done.into_inner().object.unwrap().sha256, sha256_hex(&data));
    let (_, got) = pull(&primary, token, "slow.bin").await.unwrap();
    assert_eq!(got, data);
    // Drained now, with the freeze point: the heads of both logs.
    let (code, v) = status();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["drained"], true);
    assert_eq!(v["freeze_point"]["events"]["index"], 1);
    assert_eq!(v["freeze_point"]["settings"]["index"], base + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_copy_is_detected_resynced_and_verified_again() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary_with("s1", &primary, FAST_VERIFY);

    let data = noise(4, 300_000);
    let sha = sha256_hex(&data);
    push(&primary, token, "lfs/ab/cdef", &data).await.unwrap();
    synced(&s1, token, "lfs/ab/cdef", &sha).await;
    let files = object_files(&cluster.path("s1"));
    assert_eq!(files.len(), 1, "{files:?}");
    // Flip bytes in the middle of the copy, as a failing disk would.
    let mut bad = std::fs::read(&files[0]).unwrap();
    for b in &mut bad[1000..1100] {
        *b ^= 0xff;
    }
    std::fs::write(&files[0], &bad).unwrap();

    eventually("the mismatch reported", || async {
        s1.logs()
            .contains("checksum does not match the primary")
            .then_some(())
    })
    .await;
    eventually("the copy re-synced with the primary's bytes", || async {
        let on_disk = std::fs::read(&files[0]).ok()?;
        let info = stat(&s1, token, "lfs/ab/cdef").await.ok()?;
        let r = info.replica?;
        (on_disk == data
            && r.sync == pb::SyncState::Synced as i32
            && r.verification == pb::VerificationState::Succeeded as i32
            && !r.checksum_mismatch)
            .then_some(())
    })
    .await;
    let (_, got) = pull(&s1, token, "lfs/ab/cdef").await.unwrap();
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_offline_during_a_thousand_pushes_catches_up() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let mut s1 = cluster.secondary("s1", &primary);
    s1.terminate();

    let pushes = (0..1000u64).map(|i| {
        let primary = &primary;
        async move {
            let name = format!("objects/{:03}/{i}", i % 37);
            let data = noise(1000 + i, 64 + (i as usize % 500));
            push(primary, token, &name, &data).await.expect("push");
            (name, sha256_hex(&data))
        }
    });
    // Eight pushes at a time.
    let names: Vec<(String, String)> = stream::iter(pushes).buffer_unordered(8).collect().await;
    assert_eq!(names.len(), 1000);

    s1.restart();
    let counts = eventually("s1 caught up", || async {
        let c = s1.object_counts().await;
        (c["synced"] == 1000 && c["verified"] == 1000).then_some(c)
    })
    .await;
    assert_eq!(counts["events_applied"], 1000, "{counts}");
    assert_eq!(counts["failed"], 0, "{counts}");
    for (name, sha) in names.iter().step_by(97) {
        let (_, got) = pull(&s1, token, name).await.unwrap();
        assert_eq!(&sha256_hex(&got), sha);
    }
    assert_eq!(object_files(&cluster.path("s1")).len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_in_the_middle_of_a_push_leaves_no_partial_object() {
    let cluster = Cluster::new();
    let token = cluster.admin_token.clone();
    let mut primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let kept = noise(5, 50_000);
    push(&primary, &token, "kept.bin", &kept).await.unwrap();
    synced(&s1, &token, "kept.bin", &sha256_hex(&kept)).await;

    let (tx, call) = open_push(&primary, &token, "big.bin").await;
    for i in 0..8 {
        tx.send(pb::PushRequest {
            part: Some(pb::push_request::Part::Chunk(noise(600 + i, 256 * 1024))),
        })
        .await
        .unwrap();
    }
    eventually("bytes of the push on disk", || async {
        let tmp = cluster.path("primary").join("objects/tmp");
        let size: u64 = std::fs::read_dir(tmp)
            .ok()?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        (size > 0).then_some(())
    })
    .await;
    primary.kill9();
    assert!(
        call.await.unwrap().is_err(),
        "the push cannot have succeeded"
    );
    drop(tx);

    primary.restart();
    for site in [&primary, &s1] {
        let err = stat(site, &token, "big.bin").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "at {}", site.name);
    }
    assert!(
        std::fs::read_dir(cluster.path("primary").join("objects/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(object_files(&cluster.path("primary")).len(), 1);
    // The registry recovered: the primary takes pushes again and they replicate.
    let after = noise(6, 10_000);
    push(&primary, &token, "after.bin", &after)
        .await
        .expect("push after restart");
    synced(&s1, &token, "after.bin", &sha256_hex(&after)).await;
    let (_, got) = pull(&primary, &token, "kept.bin").await.unwrap();
    assert_eq!(got, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_and_nothing_is_written_anywhere() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let long = "n".repeat(10_000);
    let names = [
        "../x",
        "/etc/passwd",
        "a\0b",
        long.as_str(),
        "a/../../b",
        "a//b",
        "",
    ];
    for site in [&primary, &s1] {
        for name in names {
            let err = push(site, token, name, b"payload").await.unwrap_err();
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{name:?} at {}",
                site.name
            );
            assert!(err.message().len() < 300, "the error quotes too much");
            let err = pull(site, token, name).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            let err = stat(site, token, name).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
        }
    }
    for site in [&primary, &s1] {
        let counts = site.object_counts().await;
        assert_eq!(counts["events_applied"], 0, "{counts}");
        assert_eq!(counts["objects"], 0, "{counts}");
        assert!(object_files(&cluster.path(&site.name)).is_empty());
        let tmp = cluster.path(&site.name).join("objects/tmp");
        assert!(std::fs::read_dir(tmp).unwrap().next().is_none());
    }
    // The wrong token is refused before anything else.
    let err = push(&primary, "not-a-valid-token-at-all", "ok", b"x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_one_name_end_with_the_same_version_everywhere() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let s2 = cluster.secondary("s2", &primary);

    let attempts = (0..12u64).map(|i| {
        let site = [&primary, &s1, &s2][i as usize % 3];
        async move {
            let data = noise(7000 + i, 20_000 + i as usize);
            push(site, token, "contended/name", &data)
                .await
                .expect("push")
        }
    });
    let mut versions: Vec<u64> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.object.unwrap().version)
        .collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 12, "every push got its own version");

    let last = stat(&primary, token, "contended/name")
        .await
        .unwrap()
        .object
        .unwrap();
    assert_eq!(last.version, *versions.last().unwrap());
    for s in [&s1, &s2] {
        let info = synced(s, token, "contended/name", &last.sha256).await;
        assert_eq!(info.object.unwrap().version, last.version);
    }
    let (_, a) = pull(&s1, token, "contended/name").await.unwrap();
    let (_, b) = pull(&s2, token, "contended/name").await.unwrap();
    assert_eq!(sha256_hex(&a), last.sha256);
    assert_eq!(a, b);
    // One file per site: replaced versions are removed.
    for site in ["primary", "s1", "s2"] {
        assert_eq!(object_files(&cluster.path(site)).len(), 1, "{site}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_that_cannot_sync_retries_and_reads_through_meanwhile() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    // Make every fetch at s1 fail: its temporary directory is replaced by a file (this
    // stops root too, unlike permissions).
    let tmp = cluster.path("s1").join("objects/tmp");
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();

    let data = noise(8, 123_456);
    let sha = sha256_hex(&data);
    push(&primary, token, "docs/manual.pdf", &data)
        .await
        .unwrap();
    let failed = eventually("the sync failure recorded", || async {
        let r = stat(&s1, token, "docs/manual.pdf").await.ok()?.replica?;
        (r.sync == pb::SyncState::Failed as i32).then_some(r)
    })
    .await;
    assert!(failed.retry_count >= 1, "{failed:?}");
    assert!(failed.next_retry_at.is_some(), "{failed:?}");
    assert!(failed.last_error.contains("cannot start writing"), "{failed:?}");
    let counts = s1.object_counts().await;
    assert_eq!(counts["failed"], 1, "{counts}");

    // Not synced here, so a pull reads it through from the primary and says so.
    let (header, got) = pull(&s1, token, "docs/manual.pdf").await.unwrap();
    assert!(header.read_through, "{header:?}");
    assert_eq!(got, data);

    // The disk is fixed: the next retry syncs it, and pulls are served locally.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    synced(&s1, token, "docs/manual.pdf", &sha).await;
    let (header, _) = pull(&s1, token, "docs/manual.pdf").await.unwrap();
    assert!(!header.read_through);

    // Unknown everywhere: NOT_FOUND, asked of the primary.
    let err = pull(&s1, token, "nowhere").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // With the primary gone, a push at the secondary is UNAVAILABLE and names the primary.
    primary.kill9();
    let err = push(&s1, token, "while-down", b"x").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&primary.url()), "{err:?}");
    // Local copies are still served.
    let (_, got) = pull(&s1, token, "docs/manual.pdf").await.unwrap();
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_replicate_and_lists_page_through_names() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let s2 = cluster.secondary("s2", &primary);
    for i in 0..25u64 {
        push(
            &primary,
            token,
            &format!("pkg/{i:02}"),
            &noise(900 + i, 100),
        )
        .await
        .unwrap();
    }
    push(&primary, token, "other", b"o").await.unwrap();
    for s in [&s1, &s2] {
        eventually("all synced", || async {
            (s.object_counts().await["synced"] == 26).then_some(())
        })
        .await;
    }

    // List by prefix, ten at a time, on a secondary.
    let mut names = Vec::new();
    let mut token_next = String::new();
    let mut client = s1.objects().await;
    loop {
        let req = pb::ListRequest {
            prefix: "pkg/".into(),
            page_size: 10,
            page_token: token_next.clone(),
        };
        let page = client.list(bearer(req, token)).await.unwrap().into_inner();
        assert!(page.objects.len() <= 10);
        names.extend(page.objects.into_iter().map(|o| o.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token_next = page.next_page_token;
    }
    let want: Vec<String> = (0..25).map(|i| format!("pkg/{i:02}")).collect();
    assert_eq!(names, want);

    // A delete on the primary and one forwarded by a secondary both reach every site, and
    // the copies' files go with them.
    let del = |site: &SiteProc, name: &str| {
        let req = pb::DeleteRequest {
            name: name.into(),
            ..Default::default()
        };
        let url = site.url();
        async move {
            pb::ObjectClient::new(channel(&url).await)
                .delete(bearer(req, token))
                .await
                .map(|r| r.into_inner())
        }
    };
    assert!(!del(&primary, "pkg/00").await.unwrap().proxied);
    assert!(del(&s2, "pkg/01").await.unwrap().proxied);
    let err = del(&primary, "pkg/00").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for (site, dir) in [(&s1, "s1"), (&s2, "s2"), (&primary, "primary")] {
        eventually("the deletes applied", || async {
            let gone = stat(site, token, "pkg/00").await.is_err()
                && stat(site, token, "pkg/01").await.is_err();
            (gone && object_files(&cluster.path(dir)).len() == 24).then_some(())
        })
        .await;
    }
}
