//! The failover runbook end to end, with three sites as processes: status, readiness,
//! promotion, repointing and fencing — planned and unplanned.

mod common;

use common::*;
use geo_agent::server::pb;
use tonic::Code;

fn data(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn run(args: &[&str], cluster: &Cluster) -> (i32, String, String) {
    cluster.admin_cli(args)
}

/// Replaces a site's temporary directory by a file: every sync there fails until undone.
fn break_sync(cluster: &Cluster, site: &str) -> std::path::PathBuf {
    let tmp = cluster.path(site).join("objects/tmp");
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"x").unwrap();
    tmp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_from_the_runbook() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let s2 = cluster.secondary("s2", &primary);
    let mut pushed = Vec::new();
    for i in 0..15u64 {
        let bytes = data(i, 20_000 + i as usize);
        let name = format!("repos/{i}.git");
        push(&primary, token, &name, &bytes).await.unwrap();
        pushed.push((name, sha256_hex(&bytes)));
    }

    // Not in maintenance: not ready, and the check says why.
    let p = primary.url();
    let (code, out, _) = run(
        &["failover", "check", "--site", "s1", "--addr", &p],
        &cluster,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("✗ maintenance mode on at the primary: off"),
        "{out}"
    );

    run(
        &[
            "maintenance",
            "enable",
            "--message",
            "failover",
            "--addr",
            &p,
        ],
        &cluster,
    );
    let (code, out, err) = run(
        &[
            "failover",
            "check",
            "--site",
            "s1",
            "--wait",
            "--timeout",
            "60s",
            "--addr",
            &p,
        ],
        &cluster,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("failover to s1: READY"), "{out}");
    // Ready means ready: everything is on s1, verified.
    for (name, sha) in &pushed {
        synced(&s1, token, name, sha).await;
    }
    let (code, out, _) = run(&["maintenance", "status", "--addr", &p], &cluster);
    assert_eq!(code, 0, "drained: {out}");
    assert!(out.contains("freeze point"), "{out}");

    let (code, out, err) = run(&["promote", "--addr", &s1.url()], &cluster);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("s1 is now the primary at epoch 2"), "{out}");
    let now = eventually("s1 serving as the primary", || async {
        let m = s1.try_get_mode().await?;
        (m.role == pb::Role::Primary as i32).then_some(m)
    })
    .await;
    assert_eq!(now.epoch, 2);
    assert!(
        now.maintenance_mode,
        "maintenance stays on until an admin turns it off"
    );
    // The old primary hears of epoch 2 and fences itself.
    let fenced = eventually("the old primary fenced", || async {
        let m = primary.try_get_mode().await?;
        (!m.fenced.is_empty()).then_some(m)
    })
    .await;
    assert!(fenced.fenced.contains("epoch 2"), "{fenced:?}");
    // Once the new primary's fence has reached it, its gate says where writes go now.
    let ask = serde_json::json!({ "action": "git-receive-pack", "protocol": "ssh" });
    eventually("the old primary's gate naming s1", || async {
        let (status, body) =
            http_request(primary.http, "POST", "/api/v4/internal/allowed", Some(&ask)).await;
        (status == 401
            && body.contains("This site was replaced as the primary (epoch 2); send writes to s1."))
        .then_some(())
    })
    .await;

    let (code, _, err) = run(&["maintenance", "disable", "--addr", &s1.url()], &cluster);
    assert_eq!(code, 0, "{err}\n{}", s1.logs());
    let (code, _, err) = run(
        &["repoint", "--primary", &s1.url(), "--addr", &s2.url()],
        &cluster,
    );
    assert_eq!(code, 0, "{err}");
    eventually("s2 following s1 out of maintenance", || async {
        let m = s2.try_get_mode().await?;
        let f = m.follower.clone()?;
        (f.primary == s1.url()
            && f.state == pb::FollowerState::Following as i32
            && !m.maintenance_mode)
            .then_some(())
    })
    .await;

    // New writes on s1 reach s2, verified; a push at s2 goes to s1.
    let fresh = data(99, 30_000);
    let reply = push(&s1, token, "after/failover", &fresh)
        .await
        .expect("push at the new primary");
    assert_eq!(reply.committed_by, "s1");
    synced(&s2, token, "after/failover", &sha256_hex(&fresh)).await;
    let reply = push(&s2, token, "after/forwarded", b"via s2")
        .await
        .expect("forwarded");
    assert!(reply.proxied);
    assert_eq!(reply.committed_by, "s1");
    for (name, sha) in pushed.iter().take(3) {
        synced(&s2, token, name, sha).await;
    }

    // The old primary, started again, still refuses writes and says why.
    assert!(primary.terminate().success());
    primary.restart();
    let m = primary.get_mode().await;
    assert!(!m.fenced.is_empty(), "{m:?}");
    assert_eq!(m.epoch, 2, "it knows the epoch that fenced it");
    let err = push(&primary, token, "split/brain", b"no")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("fenced"), "{err:?}");
    let err = set_maintenance(&primary, token, false, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Exactly one site takes writes.
    assert!(push(&s1, token, "still/fine", b"ok").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplanned_failover_fences_the_old_primary_and_reports_its_divergence() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary("primary");
    let mut s1 = cluster.secondary("s1", &primary);
    let mut s2 = cluster.secondary("s2", &primary);
    let kept = data(1, 10_000);
    push(&primary, token, "kept", &kept).await.unwrap();
    synced(&s1, token, "kept", &sha256_hex(&kept)).await;
    synced(&s2, token, "kept", &sha256_hex(&kept)).await;

    // The secondaries lose the primary; it goes on taking writes, then dies.
    s1.terminate();
    s2.terminate();
    for i in 0..5u64 {
        push(&primary, token, &format!("lost/{i}"), &data(10 + i, 1000))
            .await
            .unwrap();
    }
    set_maintenance(&primary, token, true, "written only on the old primary")
        .await
        .unwrap();
    primary.kill9();
    s1.restart();
    s2.restart();

    // Not ready: the primary cannot be asked. Refused without --force, saying what is at stake.
    let (code, out, err) = run(&["promote", "--addr", &s1.url()], &cluster);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not ready to be promoted"), "{err}");
    assert!(
        err.contains(&format!("✗ the primary at {} answers", primary.url())),
        "{err}"
    );
    assert_eq!(s1.get_mode().await.role, pb::Role::Secondary as i32);

    let (code, out, err) = run(&["promote", "--force", "--addr", &s1.url()], &cluster);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(forced)"), "{out}");
    assert!(out.contains("✗ the primary at"), "{out}");
    eventually("s1 serving as the primary", || async {
        (s1.try_get_mode().await?.role == pb::Role::Primary as i32).then_some(())
    })
    .await;
    let (code, _, err) = run(
        &["repoint", "--primary", &s1.url(), "--addr", &s2.url()],
        &cluster,
    );
    assert_eq!(code, 0, "{err}");
    let after = data(50, 5000);
    push(&s1, token, "after", &after)
        .await
        .expect("the new primary takes writes");
    synced(&s2, token, "after", &sha256_hex(&after)).await;

    // The old primary comes back: fenced before anyone can use it, and its unreplicated
    // history, once it is pointed at the new primary, is reported as diverged.
    primary.restart();
    eventually("the old primary fenced", || async {
        (!primary.try_get_mode().await?.fenced.is_empty()).then_some(())
    })
    .await;
    let err = push(&primary, token, "split/brain", b"no")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let (code, _, err) = run(
        &["repoint", "--primary", &s1.url(), "--addr", &primary.url()],
        &cluster,
    );
    assert_eq!(code, 0, "{err}");
    let m = eventually("the old primary's divergence reported", || async {
        let m = primary.try_get_mode().await?;
        (m.follower.as_ref()?.state == pb::FollowerState::Diverged as i32).then_some(m)
    })
    .await;
    assert!(!m.follower.unwrap().error.is_empty());
    // Its lost writes are applied nowhere.
    for site in [&s1, &s2] {
        for i in 0..5 {
            let err = stat(site, token, &format!("lost/{i}")).await.unwrap_err();
            assert_eq!(err.code(), Code::NotFound);
        }
        assert!(!site.get_mode().await.maintenance_mode);
    }
    let (code, out, _) = run(&["status", "--json", "--addr", &primary.url()], &cluster);
    assert_eq!(code, 2, "diverged is critical: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_figures_are_the_truth_with_failures_and_a_corrupted_copy() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let s2 = cluster.secondary_with("s2", &primary, &["--reverify-interval", "300ms"]);
    let mut names = Vec::new();
    for i in 0..10u64 {
        let bytes = data(200 + i, 4000);
        let name = format!("obj/{i}");
        push(&primary, token, &name, &bytes).await.unwrap();
        names.push((name, sha256_hex(&bytes)));
    }
    for (name, sha) in &names {
        synced(&s1, token, name, sha).await;
        synced(&s2, token, name, sha).await;
    }
    // s1 cannot sync any more: three new objects fail there.
    break_sync(&cluster, "s1");
    for i in 10..13u64 {
        let name = format!("obj/{i}");
        push(&primary, token, &name, &data(200 + i, 4000))
            .await
            .unwrap();
        names.push((name, String::new()));
    }
    // s2: a copy goes bad and cannot be re-synced (its sync is broken too).
    eventually("s2 has the new objects", || async {
        (s2.object_counts().await["synced"] == 13).then_some(())
    })
    .await;
    break_sync(&cluster, "s2");
    let victim = object_files(&cluster.path("s2"))[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();

    // The truth, object by object, from each site's registry.
    let truth = |site: &'static str| {
        let s = if site == "s1" { &s1 } else { &s2 };
        let names = names.clone();
        async move {
            let mut t = [0u64; 5]; // synced, pending, failed, verified, verification failed
            for (name, _) in &names {
                let Some(r) = stat(s, token, name).await.ok().and_then(|i| i.replica) else {
                    continue;
                };
                match pb::SyncState::try_from(r.sync) {
                    Ok(pb::SyncState::Synced) => t[0] += 1,
                    Ok(pb::SyncState::Failed) => t[2] += 1,
                    _ => t[1] += 1,
                }
                match pb::VerificationState::try_from(r.verification) {
                    Ok(pb::VerificationState::Succeeded)
                        if r.sync == pb::SyncState::Synced as i32 =>
                    {
                        t[3] += 1
                    }
                    Ok(pb::VerificationState::Failed) => t[4] += 1,
                    _ => {}
                }
            }
            t
        }
    };
    let figures = |v: &serde_json::Value, site: &str| {
        let s = v["sites"]
            .as_array()?
            .iter()
            .find(|s| s["site_id"] == site)?
            .clone();
        let o = &s["objects"];
        let n = |k: &str| o[k].as_u64().unwrap_or(u64::MAX);
        Some((
            [
                n("synced"),
                n("pending"),
                n("failed"),
                n("verified"),
                n("verification_failed"),
            ],
            s,
        ))
    };
    let (s1_status, s2_status) = eventually("the primary's figures equal the truth", || async {
        let (_, out, _) = run(&["status", "--json", "--addr", &primary.url()], &cluster);
        let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        let (f1, st1) = figures(&v, "s1")?;
        let (f2, st2) = figures(&v, "s2")?;
        let (t1, t2) = (truth("s1").await, truth("s2").await);
        (f1 == t1 && f2 == t2 && t1[2] == 3 && t2[4] == 1).then_some((st1, st2))
    })
    .await;
    assert_eq!(s1_status["health"], "WARNING", "{s1_status}");
    assert_eq!(s1_status["channels"]["objects"]["health"], "WARNING");
    assert!(s1_status["channels"]["objects"]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("3 of 13 objects failed to sync"));
    assert_eq!(
        s2_status["channels"]["verification"]["health"], "WARNING",
        "{s2_status}"
    );
    assert_eq!(s2_status["events"]["applied"], 13);
    assert_eq!(s2_status["events"]["lag_entries"], 0);
    // The primary's view of each site equals the site's own.
    // (Read as one moment: failed syncs keep retrying, so a figure may move between the
    // site's answer and the registry's.)
    for (site, proc_) in [("s1", &s1), ("s2", &s2)] {
        eventually("the site's own figures equal the truth", || async {
            let (_, out, _) = run(&["status", "--json", "--addr", &proc_.url()], &cluster);
            let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
            let own = figures(&v, site)?.0;
            (own == truth(site).await).then_some(())
        })
        .await;
    }
    let (code, out, _) = run(&["status", "--addr", &primary.url()], &cluster);
    assert_eq!(code, 1, "warnings only: {out}");
    assert!(out.contains("3 of 13 objects failed to sync"), "{out}");
    // failover check names what is missing, without waiting.
    set_maintenance(&primary, token, true, "").await.unwrap();
    let (code, out, _) = run(
        &[
            "failover",
            "check",
            "--site",
            "s1",
            "--addr",
            &primary.url(),
        ],
        &cluster,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("✗ all objects synced at s1: 10 of 13 synced (76.9%), 0 pending, 3 failed"),
        "{out}"
    );
    let (code, out, _) = run(
        &[
            "failover",
            "check",
            "--site",
            "nope",
            "--addr",
            &primary.url(),
        ],
        &cluster,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no report from a site named \"nope\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_is_read_only_until_repointed() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut old = cluster.primary("old");
    let p = old.url();
    let (code, _, err) = run(&["demote", "--addr", &p], &cluster);
    assert_eq!(code, 2, "refused outside maintenance");
    assert!(err.contains("turn maintenance mode on first"), "{err}");
    push(&old, token, "before", b"x").await.unwrap();

    set_maintenance(&old, token, true, "moving").await.unwrap();
    let (code, out, err) = run(&["demote", "--addr", &p], &cluster);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("old is demoted"), "{out}");
    let m = eventually("demoted", || async {
        let m = old.try_get_mode().await?;
        (!m.fenced.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(m.role, pb::Role::Secondary as i32);
    assert!(m.fenced.contains("demoted"), "{m:?}");
    // It survives a restart, refuses writes and settings, and still serves reads.
    assert!(old.terminate().success());
    old.restart();
    let err = push(&old, token, "after", b"y").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("demoted"), "{err:?}");
    assert_eq!(
        set_maintenance(&old, token, false, "")
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let (_, got) = pull(&old, token, "before").await.unwrap();
    assert_eq!(got, b"x");
    // Its gate says why a git push fails: it was replaced, whatever maintenance says.
    let ask = |action: &str| serde_json::json!({ "action": action, "protocol": "ssh" });
    let (status, body) = http_request(
        old.http,
        "POST",
        "/api/v4/internal/allowed",
        Some(&ask("git-receive-pack")),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("This site was replaced as the primary (epoch "),
        "{body}"
    );
    let (status, body) = http_request(
        old.http,
        "POST",
        "/api/v4/internal/allowed",
        Some(&ask("git-upload-pack")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A bad address is refused before anything changes.
    let (code, _, err) = run(&["repoint", "--primary", "ftp://x", "--addr", &p], &cluster);
    assert_eq!(code, 2);
    assert!(err.contains("scheme"), "{err}");
}
