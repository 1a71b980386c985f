//! A self-healing primary: a copy on the primary that rots, shrinks or disappears is put
//! back from a secondary's verified copy, and stays CRITICAL with the reason when no site
//! holds one. Real processes; times are printed, never asserted.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use geo_agent::server::pb;

fn data(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) ^ seed) as u8)
        .collect()
}

/// A primary that re-verifies every second, and a secondary it can reach at the address the
/// secondary advertises.
fn deployment(cluster: &Cluster) -> (SiteProc, SiteProc) {
    deployment_verifying_every(cluster, "1s")
}

/// [`deployment`] with the primary re-verifying every `interval`.
fn deployment_verifying_every(cluster: &Cluster, interval: &str) -> (SiteProc, SiteProc) {
    let primary = cluster.primary_with("primary", &["--reverify-interval", interval]);
    let secondary = cluster.advertised_secondary("s1", &primary);
    (primary, secondary)
}

/// The primary's own status: (health, the verification channel's reasons).
async fn primary_health(primary: &SiteProc) -> Option<(pb::Health, Vec<String>)> {
    let mut client = pb::status_service_client::StatusServiceClient::new(primary.channel().await);
    let status = client
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await
        .ok()?
        .into_inner();
    let own = status.sites.into_iter().next()?;
    let reasons = own
        .channels
        .into_iter()
        .find(|c| c.name == "verification")?
        .reasons;
    Some((pb::Health::try_from(own.health).ok()?, reasons))
}

/// A way to damage a file.
type Damage = fn(&PathBuf);

/// The primary's only object file.
fn primary_file(primary: &SiteProc) -> PathBuf {
    let files = object_files(&primary.data_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Waits until the primary serves `bytes` as `name` again and says it is OK; returns how
/// long that took since `damaged`.
async fn repaired(
    primary: &SiteProc,
    token: &str,
    name: &str,
    bytes: &[u8],
    damaged: Instant,
) -> u128 {
    eventually(&format!("{name} repaired at the primary"), || async {
        let (_, got) = pull(primary, token, name).await.ok()?;
        let (health, _) = primary_health(primary).await?;
        (got == bytes && health == pb::Health::Ok).then_some(())
    })
    .await;
    damaged.elapsed().as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_copy_on_the_primary_is_repaired_from_a_secondary() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let (primary, s1) = deployment(&cluster);
    let bytes = data(7, 600_000);
    let sha = sha256_hex(&bytes);
    push(&primary, token, "lfs/big", &bytes).await.unwrap();
    synced(&s1, token, "lfs/big", &sha).await;
    let file = primary_file(&primary);

    let cases: [(&str, Damage); 3] = [
        ("bit rot", |f| {
            let mut b = std::fs::read(f).unwrap();
            b[123_456] ^= 0x10;
            std::fs::write(f, b).unwrap();
        }),
        ("a truncated file", |f| {
            let b = std::fs::read(f).unwrap();
            std::fs::write(f, &b[..1000]).unwrap();
        }),
        ("a deleted file", |f| std::fs::remove_file(f).unwrap()),
    ];
    for (what, damage) in cases {
        damage(&file);
        let at = Instant::now();
        let ms = repaired(&primary, token, "lfs/big", &bytes, at).await;
        eprintln!("RELIABILITY {what} on the primary: repaired in {ms} ms");
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "{what}");
    }
    let (_, metrics) = primary.http_get("/metrics").await;
    assert!(
        metrics.contains("geo_repairs_total{result=\"repaired\"} 3\n"),
        "{metrics}"
    );
    // The secondary was never disturbed.
    synced(&s1, token, "lfs/big", &sha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_copy_damaged_the_primary_stays_critical_and_says_why() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let (primary, s1) = deployment(&cluster);
    let bytes = data(9, 50_000);
    let sha = sha256_hex(&bytes);
    push(&primary, token, "uploads/a", &bytes).await.unwrap();
    synced(&s1, token, "uploads/a", &sha).await;
    // The secondary's copy rots before its own verifier looks again (once a week), so it
    // still believes it verified: the primary must not take its word for the bytes.
    for file in [
        object_files(&s1.data_dir)[0].clone(),
        primary_file(&primary),
    ] {
        let mut b = std::fs::read(&file).unwrap();
        b[100] ^= 0x01;
        std::fs::write(&file, b).unwrap();
    }
    let want = format!("no site holds a verified copy of uploads/a sha256 {sha}");
    let reasons = eventually("the primary says why it cannot repair", || async {
        let (health, reasons) = primary_health(&primary).await?;
        (health == pb::Health::Critical && reasons.iter().any(|r| r.contains(&want)))
            .then_some(reasons)
    })
    .await;
    assert!(
        reasons.iter().any(|r| r.contains("asked s1")),
        "{reasons:?}"
    );
    let (_, metrics) = primary.http_get("/metrics").await;
    assert!(
        metrics.contains("geo_repairs_total{result=\"repaired\"} 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("geo_repairs_total{result=\"failed\"} 0\n"),
        "{metrics}"
    );
    // Nothing was put back, and the damaged bytes are handed to no one.
    let err = pull(&primary, token, "uploads/a").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("failed verification"), "{err:?}");
    let on_disk = object_files(&cluster.path("primary"));
    assert!(on_disk
        .iter()
        .all(|f| std::fs::read(f).map_or(true, |b| b != bytes)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_finds_the_file_gone_has_it_repaired_at_once() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    // The verifier alone would not look for an hour.
    let (primary, s1) = deployment_verifying_every(&cluster, "1h");
    let bytes = data(11, 100_000);
    push(&primary, token, "uploads/b", &bytes).await.unwrap();
    synced(&s1, token, "uploads/b", &sha256_hex(&bytes)).await;
    eventually("the primary knows where s1 is", || async {
        let (_, body) = primary.http_get("/metrics").await;
        // Any report from s1 carries its address; its figures show once one arrived.
        body.contains("site=\"s1\"").then_some(())
    })
    .await;
    // A secondary serves other sites only a verified copy with the sha256 they ask for
    // (to callers its own copy of the registry knows: wait until it has it).
    let head = primary.get_mode().await.settings_index;
    eventually("s1 has the registry", || async {
        (s1.try_get_mode().await?.settings_index >= head).then_some(())
    })
    .await;
    let fetch = |sha: String| {
        let s1 = &s1;
        let token = cluster.site_token.clone();
        async move {
            let req = pb::FetchObjectRequest {
                name: "uploads/b".into(),
                sha256: sha,
                site_id: Cluster::TEST_SITE.into(),
            };
            s1.replication()
                .await
                .fetch_object(bearer(req, &token))
                .await
        }
    };
    let Err(refused) = fetch("0".repeat(64)).await else {
        panic!("another sha256 must be refused");
    };
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(
        refused.message().contains("holds no verified copy"),
        "{refused:?}"
    );
    assert!(fetch(sha256_hex(&bytes)).await.is_ok());

    std::fs::remove_file(primary_file(&primary)).unwrap();
    let at = Instant::now();
    assert!(
        pull(&primary, token, "uploads/b").await.is_err(),
        "the file is gone"
    );
    let ms = repaired(&primary, token, "uploads/b", &bytes, at).await;
    eprintln!("RELIABILITY a deleted file on the primary, found by a read: repaired in {ms} ms");
}
