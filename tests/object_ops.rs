//! Objects one by one, as an operator runs a Geo deployment day to day, against real
//! processes: `objects list` by state, prefix and page; `objects resync` and `objects
//! reverify` of one, the failed or all objects (admin token only, in maintenance too, with
//! progress in the status); and a pull at a secondary whose primary is gone, served from
//! the newest verified copy and marked stale.

mod common;

use std::path::PathBuf;

use common::*;
use geo_agent::server::pb;
use tonic::Code;

/// Where `site` keeps its copy of `name` with these bytes.
fn copy_path(site: &SiteProc, name: &str, data: &[u8]) -> PathBuf {
    let id = sha256_hex(name.as_bytes());
    site.data_dir
        .join("objects")
        .join(&id[..2])
        .join(format!("{id}-{}", sha256_hex(data)))
}

/// Flips bytes in the middle of a file, as a failing disk would.
fn damage(path: &PathBuf) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + 64] {
        *x ^= 0xff;
    }
    std::fs::write(path, b).unwrap();
}

/// Makes every fetch at `site` fail (its temporary directory becomes a file), or undoes it.
fn break_fetches(site: &SiteProc, broken: bool) {
    let tmp = site.data_dir.join("objects/tmp");
    if broken {
        std::fs::remove_dir(&tmp).unwrap();
        std::fs::write(&tmp, b"not a directory").unwrap();
    } else {
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
    }
}

/// `geo-agent ARGS --addr SITE` as an admin.
fn admin(cluster: &Cluster, site: &SiteProc, args: &[&str]) -> (i32, String, String) {
    let url = site.url();
    let mut all = args.to_vec();
    all.extend(["--addr", url.as_str()]);
    cluster.admin_cli(&all)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The objects channel's reasons in `site`'s own status.
async fn progress(site: &SiteProc) -> Vec<String> {
    let mut client = pb::status_service_client::StatusServiceClient::new(site.channel().await);
    let Ok(status) = client
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await
    else {
        return Vec::new();
    };
    let own = status.into_inner().sites.into_iter().next();
    own.and_then(|s| s.channels.into_iter().find(|c| c.name == "objects"))
        .map(|c| c.reasons)
        .unwrap_or_default()
}

/// Waits until `site` holds exactly `data` as `name`, synced and verified.
async fn holds(site: &SiteProc, token: &str, name: &str, data: &[u8]) {
    let path = copy_path(site, name, data);
    eventually(&format!("{name} synced, verified and intact"), || async {
        let r = stat(site, token, name).await.ok()?.replica?;
        (std::fs::read(&path).ok()? == data
            && r.sync == pb::SyncState::Synced as i32
            && r.verification == pb::VerificationState::Succeeded as i32)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverify_finds_a_damaged_copy_and_resync_fetches_again_in_maintenance_too() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    // The default re-verification interval (a week): nothing but an admin looks again.
    let s1 = cluster.secondary("s1", &primary);
    let names = ["grp/a", "grp/b", "grp/c"];
    let data: Vec<Vec<u8>> = (0..3).map(|i| noise(i + 1, 150_000 + i as usize)).collect();
    for (name, d) in names.iter().zip(&data) {
        push(&primary, token, name, d).await.unwrap();
    }
    for (name, d) in names.iter().zip(&data) {
        holds(&s1, token, name, d).await;
    }
    // One object s1 cannot fetch: the one `--failed` is about.
    break_fetches(&s1, true);
    let d = noise(9, 70_000);
    push(&primary, token, "grp/d", &d).await.unwrap();
    eventually("grp/d failed at s1", || async {
        let r = stat(&s1, token, "grp/d").await.ok()?.replica?;
        (r.sync == pb::SyncState::Failed as i32).then_some(())
    })
    .await;

    // Maintenance on: the admin's resync and reverify go on, like replication.
    let (code, _, err) = admin(
        &cluster,
        &primary,
        &["maintenance", "enable", "--message", "drill"],
    );
    assert_eq!(code, 0, "{err}");
    eventually("maintenance at s1", || async {
        s1.try_get_mode().await.filter(|m| m.maintenance_mode)
    })
    .await;

    // A site's token is refused; the admin's is needed.
    let s1_token = cluster.token_of("s1");
    let (code, _, err) = cli(
        &["objects", "reverify", "--all", "--addr", &s1.url()],
        &[("GEO_AGENT_TOKEN", &s1_token)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PermissionDenied"), "{err}");

    // --failed marks exactly the failed one; once fetches work again it arrives.
    let (code, out, err) = admin(&cluster, &s1, &["objects", "resync", "--failed", "--json"]);
    assert_eq!(code, 0, "{err}");
    let marked = json(&out);
    assert_eq!(marked["marked"], 1, "{marked}");
    break_fetches(&s1, false);
    holds(&s1, token, "grp/d", &d).await;

    // reverify NAME finds the damage nothing else noticed, and s1 fetches the copy again.
    let a = copy_path(&s1, "grp/a", &data[0]);
    damage(&a);
    let (code, out, err) = admin(&cluster, &s1, &["objects", "reverify", "grp/a"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reverify: 1 object"), "{out}");
    eventually("the mismatch reported", || async {
        s1.logs()
            .contains("checksum does not match the primary")
            .then_some(())
    })
    .await;
    holds(&s1, token, "grp/a", &data[0]).await;

    // resync NAME fetches again even though the registry thinks the copy is fine.
    let b = copy_path(&s1, "grp/b", &data[1]);
    damage(&b);
    let (code, _, err) = admin(&cluster, &s1, &["objects", "resync", "grp/b"]);
    assert_eq!(code, 0, "{err}");
    holds(&s1, token, "grp/b", &data[1]).await;

    // --all, with progress in the status until done.
    let c = copy_path(&s1, "grp/c", &data[2]);
    damage(&c);
    let (code, out, err) = admin(&cluster, &s1, &["objects", "reverify", "--all", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["marked"], 4, "{out}");
    holds(&s1, token, "grp/c", &data[2]).await;
    eventually("reverify progress: done", || async {
        progress(&s1)
            .await
            .into_iter()
            .find(|l| l.starts_with("reverify of all objects") && l.ends_with("(done)"))
    })
    .await;
    let (code, out, err) = admin(&cluster, &s1, &["objects", "resync", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resync: 4 objects"), "{out}");
    let line = eventually("resync progress: done", || async {
        progress(&s1)
            .await
            .into_iter()
            .find(|l| l.starts_with("resync of all objects") && l.ends_with("(done)"))
    })
    .await;
    assert!(line.contains("4 marked"), "{line}");
    for (name, d) in names.iter().zip(&data) {
        holds(&s1, token, name, d).await;
    }
    // The CLI status shows it too.
    let (_, out, _) = admin(&cluster, &s1, &["status"]);
    assert!(out.contains("resync of all objects"), "{out}");

    // The primary's copies are the originals: nothing to resync them from.
    let (code, _, err) = admin(&cluster, &primary, &["objects", "resync", "--all"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(err.contains("is the primary"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverify_at_the_primary_reports_the_damage_and_repairs_it_from_a_secondary() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.advertised_secondary("s1", &primary);
    let data = noise(3, 300_000);
    push(&primary, token, "lfs/x", &data).await.unwrap();
    holds(&s1, token, "lfs/x", &data).await;
    let file = copy_path(&primary, "lfs/x", &data);
    damage(&file);
    let (code, out, err) = admin(&cluster, &primary, &["objects", "reverify", "lfs/x"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reverify: 1 object"), "{out}");
    eventually("the mismatch reported at the primary", || async {
        primary
            .logs()
            .contains("checksum does not match the one recorded at push")
            .then_some(())
    })
    .await;
    eventually("the primary's copy repaired", || async {
        (std::fs::read(&file).ok()? == data).then_some(())
    })
    .await;
    let (_, metrics) = primary.http_get("/metrics").await;
    assert!(
        metrics.contains("geo_repairs_total{result=\"repaired\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_primary_gone_a_secondary_serves_its_verified_older_copy_marked_stale() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let v1 = noise(1, 200_000);
    let first = push(&primary, token, "docs/guide", &v1).await.unwrap();
    let v1_version = first.object.unwrap().version;
    holds(&s1, token, "docs/guide", &v1).await;

    // s1 learns of a newer version and of a new object but cannot fetch either.
    break_fetches(&s1, true);
    let v2 = noise(2, 210_000);
    let second = push(&primary, token, "docs/guide", &v2).await.unwrap();
    let v2_version = second.object.unwrap().version;
    push(&primary, token, "docs/new", b"never here")
        .await
        .unwrap();
    for name in ["docs/guide", "docs/new"] {
        eventually(&format!("{name} failed at s1"), || async {
            let r = stat(&s1, token, name).await.ok()?.replica?;
            (r.sync == pb::SyncState::Failed as i32).then_some(())
        })
        .await;
    }
    // The current version comes through from the primary while it is up.
    let (header, got) = pull(&s1, token, "docs/guide").await.unwrap();
    assert!(header.read_through && header.stale.is_none(), "{header:?}");
    assert_eq!(got, v2);

    primary.kill9();
    let (header, got) = pull(&s1, token, "docs/guide").await.unwrap();
    let stale = header.stale.clone().expect("marked stale");
    assert_eq!(got, v1, "the verified older copy");
    assert_eq!(header.object.unwrap().version, v1_version);
    assert_eq!(
        (stale.version, stale.current_version),
        (v1_version, v2_version)
    );
    assert!(stale.verified_at.is_some() && stale.superseded_at.is_some());
    assert!(stale.age_seconds >= 0.0);
    assert!(stale.reason.contains(&primary.url()), "{stale:?}");

    // The CLI says so.
    let out_file = cluster.path("guide.out");
    let (code, _, err) = admin(
        &cluster,
        &s1,
        &["pull", "docs/guide", "-o", out_file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("STALE"), "{err}");
    assert!(err.contains(&format!("version {v1_version}")), "{err}");
    assert_eq!(std::fs::read(&out_file).unwrap(), v1);

    // --no-stale keeps the strict answer, naming the primary.
    let (code, _, err) = admin(&cluster, &s1, &["pull", "docs/guide", "--no-stale"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Unavailable"), "{err}");
    assert!(err.contains(&primary.url()), "{err}");
    let mut client = s1.objects().await;
    let strict = pb::PullRequest {
        name: "docs/guide".into(),
        no_stale: true,
    };
    let err = client.pull(bearer(strict, token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // No verified copy here at all: UNAVAILABLE, nothing served.
    let err = pull(&s1, token, "docs/new").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_list_filters_pages_prints_json_and_refuses_bad_input() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let names = ["p/a/1", "p/a/2", "p/a/3", "p/b/1", "q/1"];
    for (i, name) in names.iter().enumerate() {
        let d = noise(i as u64 + 10, 1000 + i);
        push(&primary, token, name, &d).await.unwrap();
        holds(&s1, token, name, &d).await;
    }
    break_fetches(&s1, true);
    push(&primary, token, "p/c/broken", b"x").await.unwrap();

    let failed = eventually("p/c/broken listed as failed", || async {
        let (code, out, _) = admin(
            &cluster,
            &s1,
            &["objects", "list", "--state", "failed", "--json"],
        );
        let v = json(&out);
        (code == 0 && v["objects"].as_array()?.len() == 1).then_some(v)
    })
    .await;
    let o = &failed["objects"][0];
    assert_eq!(o["name"], "p/c/broken", "{failed}");
    assert_eq!(o["sync"], "failed");
    assert_eq!(o["object"]["kind"], "upload", "{o}");
    assert!(o["attempts"].as_u64().unwrap() >= 1, "{o}");
    assert!(o["next_retry_at"].is_string(), "{o}");
    assert!(
        o["last_failure"]
            .as_str()
            .unwrap()
            .contains("cannot start writing"),
        "{o}"
    );

    // Pages under a prefix, continued with --after.
    let (code, out, err) = admin(
        &cluster,
        &s1,
        &[
            "objects", "list", "--prefix", "p/a/", "--limit", "2", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let page = json(&out);
    let listed = |v: &serde_json::Value| -> Vec<String> {
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&page), ["p/a/1", "p/a/2"]);
    assert_eq!(page["next_after"], "p/a/2");
    let (_, out, _) = admin(
        &cluster,
        &s1,
        &[
            "objects", "list", "--prefix", "p/a/", "--limit", "2", "--after", "p/a/2", "--json",
        ],
    );
    let page = json(&out);
    assert_eq!(listed(&page), ["p/a/3"]);
    assert!(page["next_after"].is_null(), "{page}");

    // Text, in one state.
    let (code, out, err) = admin(
        &cluster,
        &s1,
        &["objects", "list", "--state", "synced", "--prefix", "p/"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    for name in ["p/a/1", "p/a/3", "p/b/1"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(!out.contains("p/c/broken") && !out.contains("q/1"), "{out}");

    // The status page lists the failed one.
    let (status, page) = s1.http_get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"objects\""), "{page}");
    assert!(
        page.contains("<tr class=\"failed\"><td>p/c/broken</td>"),
        "{page}"
    );

    // Bad input: a clear CLI error, INVALID_ARGUMENT over gRPC.
    for (args, says) in [
        (&["--state", "lost"][..], "unknown state"),
        (&["--limit", "0"][..], "the limit is 1 to 1000"),
        (&["--limit", "100000"][..], "the limit is 1 to 1000"),
        (&["--prefix", "../x"][..], "cannot begin a name"),
        (&["--after", "/abs"][..], "after is not a name"),
    ] {
        let mut all = vec!["objects", "list"];
        all.extend_from_slice(args);
        let (code, _, err) = admin(&cluster, &s1, &all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let mut client = s1.objects().await;
    for req in [
        pb::ListObjectsRequest {
            limit: Some(0),
            ..Default::default()
        },
        pb::ListObjectsRequest {
            limit: Some(1001),
            ..Default::default()
        },
        pb::ListObjectsRequest {
            state: 99,
            ..Default::default()
        },
        pb::ListObjectsRequest {
            prefix: "a\u{0}".into(),
            ..Default::default()
        },
        pb::ListObjectsRequest {
            prefix: "x".repeat(2000),
            ..Default::default()
        },
    ] {
        let err = client
            .list_objects(bearer(req.clone(), token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
    }
    for (name, scope) in [("", 0), ("a", 2), ("x", 7), ("../x", 0)] {
        let req = pb::ReverifyObjectsRequest {
            name: name.into(),
            scope,
            actor: String::new(),
        };
        let err = client
            .reverify_objects(bearer(req, token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name} {scope}: {err:?}");
    }
    // An object that is not there.
    let (code, _, err) = admin(&cluster, &s1, &["objects", "reverify", "no/such"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("NotFound"), "{err}");
}
