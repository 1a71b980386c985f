//! Bounds on what enters a replicated log, end to end: a hostile client cannot write an
//! entry that would stop replication, and the CLI and the daemon refuse unsafe tokens.

mod common;

use common::*;
use geo_agent::server::pb;
use tonic::Code;

/// Pushes `data` as `name` with the given header fields.
async fn push_as(
    site: &SiteProc,
    token: &str,
    name: &str,
    kind: &str,
    actor: &str,
    data: &[u8],
) -> Result<pb::PushResponse, tonic::Status> {
    let header = pb::PushHeader {
        name: name.into(),
        kind: kind.into(),
        actor: actor.into(),
        ..Default::default()
    };
    push_on(&mut site.objects().await, token, header, data).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_push_is_refused_and_replication_goes_on() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);

    // Just under the 4 MiB message limit: it would have made an event-log entry no stream
    // message can carry.
    let huge_actor = "a".repeat((4 << 20) - 4096);
    let huge_name = format!("n/{}", "x".repeat(200)).repeat(10_000);
    let cases: [(&SiteProc, &str, &str, &str, &str); 6] = [
        (&primary, "big", "blob", &huge_actor, "actor"),
        (&s1, "big", "blob", &huge_actor, "actor"),
        (&primary, "big", "blob", "eve\u{1b}[2J", "actor"),
        (&primary, &huge_name, "blob", "eve", "bytes long"),
        (&primary, "big", &"k".repeat(4 << 19), "eve", "not a label"),
        (&s1, "../big", "blob", "eve", "`..`"),
    ];
    for (site, name, kind, actor, why) in cases {
        let err = push_as(site, token, name, kind, actor, b"payload")
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{why}: {err:?}");
        assert!(err.message().contains(why), "{why}: {}", err.message());
        assert!(err.message().len() < 1000, "the error quotes too much");
    }
    let err = stat(&primary, token, "big").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(object_files(&cluster.path("primary")).is_empty());

    // A settings change larger than an entry may be is refused as well.
    let set = (0..5)
        .map(|i| (format!("k{i}"), format!("\"{}\"", "v".repeat(15_000))))
        .collect();
    let req = pb::UpdateSettingsRequest {
        set,
        unset: vec![],
        actor: "eve".into(),
    };
    let err = primary
        .admin()
        .await
        .update_settings(bearer(req, token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("the limit is"), "{}", err.message());

    // Replication is unharmed: the next ordinary push is the first event, and reaches s1.
    let data = b"ordinary bytes".to_vec();
    let sha = sha256_hex(&data);
    let pushed = push_as(&s1, token, "ok/one", "blob", "alice", &data)
        .await
        .expect("an ordinary push");
    let meta = pushed.object.unwrap();
    assert_eq!(meta.version, 1, "nothing was appended before: {meta:?}");
    assert_eq!(meta.updated_by, "alice via s1");
    synced(&s1, token, "ok/one", &sha).await;
    let mode = s1.get_mode().await;
    let follower = mode.follower.expect("s1 follows");
    assert_eq!(follower.state, pb::FollowerState::Following as i32);
    set_maintenance(&primary, token, true, "after the attack")
        .await
        .unwrap();
    eventually("s1 sees maintenance mode", || async {
        s1.get_mode().await.maintenance_mode.then_some(())
    })
    .await;
}

#[test]
fn the_cli_keeps_tokens_off_plain_http_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_private(&token, "0123456789abcdef0123");
    let token = token.display().to_string();
    let env = [("GEO_AGENT_TOKEN_FILE", token.as_str())];
    // 192.0.2.0/24 is reserved for documentation: nothing answers there, so an answer
    // other than the refusal would be a connection timeout.
    let (code, _, err) = cli(
        &["maintenance", "status", "--addr", "http://192.0.2.1:7600"],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing to send the token"), "{err}");
    assert!(err.contains("--allow-plaintext"), "{err}");
}

#[test]
fn a_site_refuses_to_start_when_its_two_tokens_are_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_private(&token, "0123456789abcdef0123");
    let token = token.display().to_string();
    let (code, err) = run_refused(
        dir.path(),
        &["--admin-token-file", &token, "--site-token-file", &token],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the admin token and the site token are the same"),
        "{err}"
    );
}
