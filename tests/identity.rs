//! Site identity: every site has its own token, registered at the primary, and a token
//! lets its holder act as its own site and no other. Real processes, plain gRPC clients.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use geo_agent::server::pb;
use sha2::Digest;
use tonic::Code;

fn stream_req(site_id: &str) -> pb::StreamLogRequest {
    pb::StreamLogRequest {
        from_index: 1,
        site_id: site_id.into(),
        ..Default::default()
    }
}

fn report(site_id: &str) -> pb::SiteReport {
    pb::SiteReport {
        site_id: site_id.into(),
        role: pb::Role::Secondary as i32,
        settings: Some(pb::LogPosition::default()),
        events: Some(pb::LogPosition::default()),
        ..Default::default()
    }
}

async fn reported(primary: &SiteProc, site_id: &str) -> usize {
    let mut client = pb::status_service_client::StatusServiceClient::new(primary.channel().await);
    let status = client
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await
        .expect("GetReplicationStatus")
        .into_inner();
    status
        .sites
        .iter()
        .filter(|s| s.report.as_ref().is_some_and(|r| r.site_id == site_id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_token_acts_as_its_own_site_and_no_other() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let _s1 = cluster.secondary("s1", &primary);
    let s1 = cluster.token_of("s1");
    let s2 = cluster.token_of("s2");
    cluster.register(&primary, "s2", &s2);
    let mut repl = primary.replication().await;

    // A token nobody registered is not a site.
    let bogus = "bogus-site-token-0123456789abcdef";
    let e = repl
        .stream_settings(bearer(stream_req("s1"), bogus))
        .await
        .expect_err("an unregistered token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = repl
        .report_status(bearer(report("s1"), bogus))
        .await
        .expect_err("an unregistered token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // s1's token cannot stream, report, fetch, fence or forward as s2.
    let e = repl
        .stream_settings(bearer(stream_req("s2"), &s1))
        .await
        .expect_err("streaming as another site");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = repl
        .stream_events(bearer(stream_req("s2"), &s1))
        .await
        .expect_err("streaming as another site");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = repl
        .report_status(bearer(report("s2"), &s1))
        .await
        .expect_err("reporting as another site");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let fetch = pb::FetchObjectRequest {
        name: "a/b".into(),
        site_id: "s2".into(),
        ..Default::default()
    };
    let e = repl
        .fetch_object(bearer(fetch, &s1))
        .await
        .expect_err("fetching as another site");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The epoch stays 0: the caller is refused before it is looked at.
    let fence = pb::FenceRequest {
        site_id: "s2".into(),
        ..Default::default()
    };
    let e = repl
        .fence(bearer(fence, &s1))
        .await
        .expect_err("fencing as another site");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let forwarded = vec![pb::PushRequest {
        part: Some(pb::push_request::Part::Header(pb::PushHeader {
            name: "forged.bin".into(),
            proxied_by: Some(pb::ProxiedBy {
                site_id: "s2".into(),
                epoch: 1,
            }),
            ..Default::default()
        })),
    }];
    let e = primary
        .objects()
        .await
        .push(bearer(tokio_stream::iter(forwarded), &s1))
        .await
        .expect_err("forwarding as another site");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(primary.get_mode().await.epoch, 1, "nothing was fenced");

    // A site token writes only what its site forwards: not on its own account.
    let e = push(&primary, &s1, "direct.bin", b"x")
        .await
        .expect_err("a direct push with a site token");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let delete = pb::DeleteRequest {
        name: "direct.bin".into(),
        ..Default::default()
    };
    let e = primary
        .objects()
        .await
        .delete(bearer(delete, &s1))
        .await
        .expect_err("a direct delete with a site token");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // As itself, s1 is heard; its report is kept once, however often it reports.
    let mut stream = repl
        .stream_settings(bearer(stream_req("s1"), &s1))
        .await
        .expect("s1 streams as itself")
        .into_inner();
    assert!(stream.message().await.expect("a message").is_some());
    drop(stream);
    for _ in 0..3 {
        repl.report_status(bearer(report("s1"), &s1))
            .await
            .expect("s1 reports as itself");
    }
    assert_eq!(reported(&primary, "s1").await, 1);
    // An absurd report is refused.
    let mut big = report("s1");
    big.settings = Some(pb::LogPosition {
        follower: Some(pb::FollowerStatus {
            error: "x".repeat(64 * 1024),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = repl
        .report_status(bearer(big, &s1))
        .await
        .expect_err("a 64 KiB error string");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // The admin token is not a site's, nor a site's token the admin's.
    let e = repl
        .report_status(bearer(report("s1"), &cluster.admin_token))
        .await
        .expect_err("the admin token at replication");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = primary
        .admin()
        .await
        .list_sites(bearer(pb::ListSitesRequest {}, &s1))
        .await
        .expect_err("a site token at the admin API");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The registry is not an ordinary setting.
    let update = pb::UpdateSettingsRequest {
        set: [("geo.sites.evil".to_string(), "{}".to_string())].into(),
        ..Default::default()
    };
    let e = primary
        .admin()
        .await
        .update_settings(bearer(update, &cluster.admin_token))
        .await
        .expect_err("writing the registry as a setting");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("site registry"), "{e:?}");

    // s2 reports, then is removed: its token is refused and its report dropped.
    repl.report_status(bearer(report("s2"), &s2))
        .await
        .expect("s2 reports as itself");
    assert_eq!(reported(&primary, "s2").await, 1);
    let env = [
        ("GEO_AGENT_ADDR", primary.url()),
        (
            "GEO_AGENT_TOKEN_FILE",
            cluster.path("admin-token").display().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = cli(&["sites", "remove", "s2"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&["sites", "remove", "s2"], &env);
    assert_eq!(code, 1, "removing it again is a negative answer: {err}");
    assert_eq!(reported(&primary, "s2").await, 0);
    let e = repl
        .report_status(bearer(report("s2"), &s2))
        .await
        .expect_err("a removed site");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let (code, out, err) = cli(&["sites", "list", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let ids: Vec<&str> = listed["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["site_id"].as_str())
        .collect();
    assert!(ids.contains(&"s1") && !ids.contains(&"s2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_add_writes_a_private_token_file_and_never_overwrites_one() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let addr = primary.url();
    let admin = cluster.path("admin-token").display().to_string();
    let env = [
        ("GEO_AGENT_ADDR", addr.as_str()),
        ("GEO_AGENT_TOKEN_FILE", admin.as_str()),
    ];
    let file = cluster.path("new-site-token");
    let f = file.display().to_string();
    let (code, out, err) = cli(&["sites", "add", "s5", "--site-token-file", &f], &env);
    assert_eq!(code, 0, "{out}{err}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(token.trim().len(), 64, "256 bits, hex");

    // Again: the file is read, not replaced, and nothing changes.
    let (code, out, err) = cli(&["sites", "add", "s5", "--site-token-file", &f], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already registered"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), token);
    // One token names one site.
    let (code, _, err) = cli(&["sites", "add", "s6", "--site-token-file", &f], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already registered for site s5"), "{err}");

    // An existing token is registered as it is: only its sha256 is sent.
    let own = cluster.path("own-token");
    write_private(&own, "my-own-token-0123456789abcdef");
    let (code, out, err) = cli(
        &[
            "sites",
            "add",
            "s7",
            "--site-token-file",
            &own.display().to_string(),
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        v["site"]["token_sha256"],
        hex::encode(sha2::Sha256::digest(b"my-own-token-0123456789abcdef"))
    );
    assert!(!primary.logs().contains("my-own-token-0123456789abcdef"));
    // A secondary started with it follows.
    let s7 = Spawn::new(cluster.dir.path(), "s7")
        .args(["--role", "secondary", "--primary", addr.as_str()])
        .args(["--heartbeat-interval", "200ms"]);
    std::fs::copy(&own, cluster.path("s7.site-token")).unwrap();
    let s7 = s7.start();
    eventually("s7 follows with its own token", || async {
        let f = s7.get_mode().await.follower?;
        (f.state == pb::FollowerState::Following as i32).then_some(())
    })
    .await;
}

#[test]
fn a_token_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    write_private(&token, "0123456789abcdef0123-admin");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let t = token.display().to_string();
    let (code, err) = run_refused(dir.path(), &["--admin-token-file", &t]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&t) && err.contains("chmod 600"), "{err}");
    let (code, _, err) = cli(&["settings", "get", "--token-file", &t], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}
