//! Refusals and bad input: a clear error, the right status code, and nothing stored
//! anywhere.

mod common;

use common::*;
use geo_agent::server::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_write_at_a_secondary_is_refused_naming_the_primary() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    // The settings log holds the sites' registrations before any change.
    let base = primary.get_mode().await.settings_index;
    eventually("s1 to apply the registrations", || async {
        (s1.get_mode().await.settings_index == base).then_some(())
    })
    .await;

    let err = set_maintenance(&s1, &cluster.admin_token, true, "at the wrong site")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&primary.url()), "{}", err.message());
    assert_eq!(
        err.metadata().get("geo-primary").unwrap().to_str().unwrap(),
        primary.url()
    );

    let req = pb::UpdateSettingsRequest {
        set: [("k".to_string(), "1".to_string())].into(),
        unset: vec![],
        actor: String::new(),
    };
    let err = s1
        .admin()
        .await
        .update_settings(bearer(req, &cluster.admin_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    for site in [&primary, &s1] {
        let m = site.get_mode().await;
        assert_eq!(m.settings_index, base, "{} changed", site.name);
        assert!(!m.maintenance_mode);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_stores_nothing() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let token = &cluster.admin_token;
    let base = primary.get_mode().await.settings_index;

    let err = set_maintenance(&primary, token, true, &"x".repeat(256))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "maintenance mode message is 256 characters; the limit is 255"
    );
    let err = set_maintenance(&primary, token, false, "a message without the mode")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let cases = [
        (("", "1"), "setting key must not be empty"),
        (("k", "{not json"), "is not valid JSON"),
        (("maintenance_mode", "\"yes\""), "must be true or false"),
        (
            ("maintenance_mode_message", "\"hi\""),
            "only be set while maintenance mode is enabled",
        ),
    ];
    for ((key, value), want) in cases {
        let req = pb::UpdateSettingsRequest {
            set: [(key.to_string(), value.to_string())].into(),
            unset: vec![],
            actor: String::new(),
        };
        let err = primary
            .admin()
            .await
            .update_settings(bearer(req, token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key}={value}");
        assert!(
            err.message().contains(want),
            "{key}={value}: {}",
            err.message()
        );
    }
    assert_eq!(
        primary.get_mode().await.settings_index,
        base,
        "nothing was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_never_logged() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let base = primary.get_mode().await.settings_index;
    let req = || pb::SetMaintenanceModeRequest {
        enabled: true,
        message: String::new(),
        actor: String::new(),
    };
    let mut admin = primary.admin().await;
    let missing = admin.set_maintenance_mode(req()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = admin
        .set_maintenance_mode(bearer(req(), "not-the-admin-token-at-all"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let site = admin
        .set_maintenance_mode(bearer(req(), &cluster.site_token))
        .await
        .unwrap_err();
    assert_eq!(site.code(), Code::PermissionDenied);

    let stream = pb::StreamLogRequest {
        from_index: 1,
        site_id: "x".into(),
        epoch: 0,
        proof: None,
    };
    let err = primary
        .replication()
        .await
        .stream_settings(bearer(stream, &cluster.admin_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    assert_eq!(primary.get_mode().await.settings_index, base);
    // A secondary that uses the site token, and an admin change, then look at every log.
    let s1 = cluster.secondary("s1", &primary);
    let on = set_maintenance(&primary, &cluster.admin_token, true, "m")
        .await
        .unwrap();
    eventually("s1 to follow", || async {
        (s1.get_mode().await.settings_index == on.settings_index).then_some(())
    })
    .await;
    for site in [&primary, &s1] {
        let logs = site.logs();
        assert!(!logs.is_empty());
        assert!(
            !logs.contains(&cluster.admin_token),
            "{} logged the admin token",
            site.name
        );
        assert!(
            !logs.contains(&cluster.site_token),
            "{} logged the site token",
            site.name
        );
    }
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("geo.toml");
    std::fs::write(&file, "site_id = \"p\"\nlisten_addr = \"127.0.0.1:0\"\n").unwrap();
    let (code, _out, err) = cli(
        &[
            "run",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `listen_addr`"), "{err}");
    assert!(!dir.path().join("d").exists(), "nothing was created");
}
