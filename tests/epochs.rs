//! Epochs rise only with an admin's signed promotion: what a holder of the site token (a
//! compromised secondary) gets for claiming a higher epoch with hand-made requests, against
//! real processes — and that a real promotion still fences the old primary.

mod common;

use common::*;
use geo_agent::failover::promotion::PrivateKey;
use geo_agent::server::pb;
use tonic::Code;

const UNPROVEN: &str = "is not proven by an admin's promotion";

fn proof(site_id: &str, epoch: u64, signature: Vec<u8>) -> Option<pb::Promotion> {
    Some(pb::Promotion {
        site_id: site_id.into(),
        epoch,
        signature,
    })
}

/// What an attacker can put in a proof: nothing, zeros, or a signature by its own key.
fn forgeries(site_id: &str, epoch: u64) -> Vec<Option<pb::Promotion>> {
    let own = PrivateKey::generate().unwrap().0.sign(site_id, epoch);
    vec![
        None,
        proof(site_id, epoch, vec![0; 64]),
        proof(site_id, epoch, own.signature),
        proof(site_id, epoch, vec![1; 7]),
    ]
}

fn stream(epoch: u64, proof: Option<pb::Promotion>) -> pb::StreamLogRequest {
    pb::StreamLogRequest {
        from_index: 1,
        site_id: "s1".into(),
        epoch,
        proof,
    }
}

fn report(epoch: u64, proof: Option<pb::Promotion>) -> pb::SiteReport {
    pb::SiteReport {
        site_id: "s1".into(),
        role: pb::Role::Secondary as i32,
        epoch,
        settings: Some(pb::LogPosition::default()),
        events: Some(pb::LogPosition::default()),
        objects: Some(pb::ObjectCounts::default()),
        proof,
        ..Default::default()
    }
}

fn refused<T>(r: Result<T, tonic::Status>, what: &str) -> tonic::Status {
    match r {
        Ok(_) => panic!("{what} must be refused"),
        Err(s) => s,
    }
}

fn refused_as_unproven(status: tonic::Status) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains(UNPROVEN), "{}", status.message());
}

/// Sends every unproven claim of epoch `epoch` this site's token allows to `site`.
async fn claim_everything(site: &SiteProc, token: &str, epoch: u64) {
    for forged in forgeries("s1", epoch) {
        let mut r = site.replication().await;
        let settings = r.stream_settings(bearer(stream(epoch, forged.clone()), token));
        refused_as_unproven(refused(settings.await, "StreamSettings"));
        let events = r.stream_events(bearer(stream(epoch, forged.clone()), token));
        refused_as_unproven(refused(events.await, "StreamEvents"));
        let fence = pb::FenceRequest {
            epoch,
            site_id: "s1".into(),
            proof: forged.clone(),
        };
        refused_as_unproven(r.fence(bearer(fence, token)).await.unwrap_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unproven_epoch_claim_is_refused_stored_nowhere_and_not_passed_on() {
    let cluster = Cluster::new();
    let mut primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    // s1's own credential: a compromised secondary claims epochs as itself.
    let token = &cluster.token_of("s1");

    claim_everything(&primary, token, u64::MAX).await;
    for forged in forgeries("s1", u64::MAX) {
        let err = primary
            .replication()
            .await
            .report_status(bearer(report(u64::MAX, forged), token))
            .await
            .unwrap_err();
        refused_as_unproven(err);
    }
    // A proof of a lower epoch does not cover a higher claim, even a real one's shape.
    let mut r = primary.replication().await;
    let low = proof("s1", 2, vec![0; 64]);
    refused_as_unproven(
        r.stream_settings(bearer(stream(3, low), token))
            .await
            .err()
            .unwrap(),
    );
    // A fence whose proof is of another site's promotion is refused too.
    let fence = pb::FenceRequest {
        epoch: 5,
        site_id: "s1".into(),
        proof: proof("s2", 5, vec![0; 64]),
    };
    refused_as_unproven(r.fence(bearer(fence, token)).await.unwrap_err());
    assert!(primary
        .logs()
        .contains("refused an epoch no admin's promotion proves"));

    // The same claims sent to the secondary stop there. (Once it has applied the sites'
    // registrations: it authenticates callers by its own copy of the registry.)
    let head = primary.get_mode().await.settings_index;
    eventually("s1 has the registry", || async {
        (s1.try_get_mode().await?.settings_index >= head).then_some(())
    })
    .await;
    claim_everything(&s1, token, u64::MAX).await;

    // The primary still leads at epoch 1 and takes changes; the secondary follows it (so
    // its follower and reports have met the primary since the claims).
    set_maintenance(&primary, &cluster.admin_token, true, "after the attack")
        .await
        .unwrap();
    eventually("s1 applying the change", || async {
        let m = s1.try_get_mode().await?;
        (m.maintenance_mode && m.message == "after the attack").then_some(())
    })
    .await;
    for site in [&primary, &s1] {
        let m = site.get_mode().await;
        assert_eq!(m.epoch, 1, "{m:?}");
        assert_eq!(m.fenced, "", "{m:?}");
    }

    // Nothing was stored: after a restart the primary is still not fenced.
    primary.terminate();
    primary.restart();
    let m = primary.get_mode().await;
    assert_eq!((m.epoch, m.fenced.as_str()), (1, ""), "{m:?}");
    set_maintenance(&primary, &cluster.admin_token, false, "")
        .await
        .unwrap();
}

fn run(args: &[&str], env: &[(&'static str, String)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cli(args, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_promotion_signed_with_the_admins_key_raises_the_epoch_and_fences() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let env = cluster.admin_env();

    // A key that is not the deployment's: refused, nothing changes.
    let other = cluster.path("other-key");
    let (code, out, _) = run(
        &[
            "promotion-key",
            "generate",
            "--out",
            other.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim().len(), 64, "{out}");
    let mut wrong = env.clone();
    wrong[1].1 = other.display().to_string();
    let (code, _, err) = run(&["promote", "--force", "--addr", &s1.url()], &wrong);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("promotion proof is refused"), "{err}");
    assert_eq!(s1.get_mode().await.role, pb::Role::Secondary as i32);

    // A raw Promote with a proof for the wrong epoch: the race message.
    let key = geo_agent::failover::promotion::read_key_file(&cluster.promotion_key_file()).unwrap();
    let stale = key.sign("s1", 7);
    let req = pb::PromoteRequest {
        force: true,
        actor: "test".into(),
        proof: proof(&stale.site_id, stale.epoch, stale.signature),
    };
    let err = s1
        .admin()
        .await
        .promote(bearer(req, &cluster.admin_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("run promote again"),
        "{}",
        err.message()
    );

    // The real thing: the old primary is fenced by the proven epoch.
    let (code, out, err) = run(&["promote", "--force", "--addr", &s1.url()], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("s1 is now the primary at epoch 2"), "{out}");
    let fenced = eventually("the old primary fenced", || async {
        let m = primary.try_get_mode().await?;
        (!m.fenced.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(fenced.epoch, 2);

    let (code, out, err) = run(&["fence", "show", "--addr", &primary.url()], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replaced by: s1"), "{out}");
    assert!(
        out.contains("proof: site s1 promoted to epoch 2, signature valid"),
        "{out}"
    );
    // A fence a valid proof backs is not cleared: repoint instead.
    let (code, _, err) = run(&["fence", "clear", "--addr", &primary.url()], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("repoint"), "{err}");

    // The new primary's settings log records the proof with the promotion.
    let (code, out, err) = run(
        &["settings", "get", "geo_primary", "--addr", &s1.url()],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"signature\""), "{out}");
}

#[test]
fn run_refuses_to_start_without_a_valid_promotion_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_refused(dir.path(), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no promotion public key"), "{err}");
    assert!(err.contains("promotion-key generate"), "{err}");
    let (code, err) = run_refused(dir.path(), &["--promotion-public-key", "not-hex"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("promotion_public_key"), "{err}");
}
