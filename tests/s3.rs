//! Objects kept in an S3 bucket instead of the data directory, end to end: which keys a
//! site writes, disk and S3 sites converging verified (in maintenance too), a large object
//! stored in parts in bounded memory, a push killed midway leaving nothing, rot in the
//! bucket found and repaired, an outage reported and recovered from, and the starts that
//! are refused. Real geo-agent processes, a real S3 server (Garage, one per test, fresh
//! buckets), and rclone to look into the bucket as an operator would.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use geo_agent::server::pb;
use sha2::{Digest, Sha256};
use tonic::Code;

#[test]
fn garage_serves_a_bucket() {
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("harness");
    assert!(bucket.keys("").is_empty());
    let bytes = noise(1, 100_000);
    bucket.write("p/objects/ab/one", &bytes);
    bucket.write("p/tmp/two", b"2");
    assert_eq!(bucket.read("p/objects/ab/one"), bytes);
    assert_eq!(bucket.keys("p/objects"), ["p/objects/ab/one"]);
    assert_eq!(bucket.keys(""), ["p/objects/ab/one", "p/tmp/two"]);
    assert!(bucket.keys("q").is_empty());
    assert!(bucket.multipart_uploads().is_empty());
    // An upload cut short stays listed as incomplete.
    let mut upload = bucket.rcat("p/tmp/cut");
    upload
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&noise(2, 6 << 20))
        .unwrap();
    wait_until(
        "an incomplete multipart upload",
        Instant::now() + DEADLINE,
        Duration::from_millis(50),
        || (bucket.multipart_uploads() == ["p/tmp/cut"]).then_some(()),
    );
    upload.kill().unwrap();
    upload.wait().unwrap();
    assert_eq!(bucket.keys("p/tmp"), ["p/tmp/two"]);
    // Garage tells a multipart upload from a single PUT.
    let big = noise(3, 6 << 20);
    bucket.write("p/big", &big);
    let stored = |key| garage.stored(&bucket.name, key);
    assert_eq!(
        stored("p/big"),
        Stored {
            size: big.len() as u64,
            multipart_parts: Some(2)
        }
    );
    assert_eq!(stored("p/objects/ab/one").multipart_parts, None);

    let dir = tempfile::tempdir().unwrap();
    let file = bucket.credentials_file(dir.path());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&bucket.secret), "{text}");

    garage.stop();
    garage.restart();
    assert_eq!(
        bucket.read("p/objects/ab/one"),
        bytes,
        "kept across a restart"
    );
}

/// `run` flags as the harness takes them.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `bucket`'s flags for a site whose objects go under `prefix`, then `extra`.
fn on_bucket(cluster: &Cluster, bucket: &Bucket, prefix: &str, extra: &[&str]) -> Vec<String> {
    let mut args = bucket.site_args(cluster.dir.path(), prefix);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// A primary on disk, and a secondary `s1` keeping its objects in `bucket` under `s1/`.
fn disk_primary_and_s3_secondary(cluster: &Cluster, bucket: &Bucket) -> (SiteProc, SiteProc) {
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary_with(
        "s1",
        &primary,
        &strs(&on_bucket(cluster, bucket, "s1", &[])),
    );
    (primary, s1)
}

/// The key a site keeping its objects under `prefix` stores `name` with checksum `sha` at.
fn object_key(prefix: &str, name: &str, sha: &str) -> String {
    let id = sha256_hex(name.as_bytes());
    format!("{prefix}/objects/{}/{id}-{sha}", &id[..2])
}

/// `geo-agent ARGS --addr SITE` as an admin.
fn admin(cluster: &Cluster, site: &SiteProc, args: &[&str]) -> (i32, String, String) {
    let url = site.url();
    let mut all = args.to_vec();
    all.extend(["--addr", url.as_str()]);
    cluster.admin_cli(&all)
}

/// `site`'s own entry in `status --json` asked at it.
fn own_status(cluster: &Cluster, site: &SiteProc) -> Option<serde_json::Value> {
    let (_, out, _) = admin(cluster, site, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    v["sites"]
        .as_array()?
        .iter()
        .find(|s| s["site_id"] == site.name.as_str())
        .cloned()
}

/// The value of `geo_object_storage_up` at `site` (whatever its labels).
async fn storage_up(site: &SiteProc) -> Option<u8> {
    let (_, metrics) = site.http_get("/metrics").await;
    metrics
        .lines()
        .find(|l| l.starts_with("geo_object_storage_up"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Asserts that no site's log holds the bucket's secret.
fn secret_kept(bucket: &Bucket, sites: &[&SiteProc]) {
    for site in sites {
        assert!(
            !site.logs().contains(&bucket.secret),
            "{}'s log holds the bucket's secret",
            site.name
        );
    }
}

/// Flips one bit of the object stored under `key`, as a failing disk under the bucket
/// would.
fn flip_a_bit(bucket: &Bucket, key: &str) {
    let mut bytes = bucket.read(key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    bucket.write(key, &bytes);
}

/// The chunk size of the tests' pushes.
const CHUNK: usize = 64 * 1024;

/// Pushes `len` bytes of noise as `name` at `site`, made and hashed chunk by chunk as they
/// are sent, never held whole: the primary's answer and the bytes' sha256.
async fn push_streamed(
    site: &SiteProc,
    token: &str,
    name: &str,
    len: u64,
) -> (pb::PushResponse, String) {
    let (tx, call) = open_push(site, token, name).await;
    let mut hash = Sha256::new();
    let mut sent = 0;
    while sent < len {
        let chunk = noise(sent, (len - sent).min(CHUNK as u64) as usize);
        hash.update(&chunk);
        sent += chunk.len() as u64;
        let part = pb::push_request::Part::Chunk(chunk);
        if tx.send(pb::PushRequest { part: Some(part) }).await.is_err() {
            break; // the call ended: its answer says why
        }
    }
    let sha = hex::encode(hash.finalize());
    let trailer = pb::push_request::Part::Trailer(pb::PushTrailer {
        size: len,
        sha256: sha.clone(),
    });
    let _ = tx
        .send(pb::PushRequest {
            part: Some(trailer),
        })
        .await;
    drop(tx);
    let answer = call.await.unwrap().expect("the push").into_inner();
    (answer, sha)
}

/// Pulls `name` from `site`, hashing the bytes as they arrive: (size, sha256).
async fn pull_streamed(site: &SiteProc, token: &str, name: &str) -> (u64, String) {
    let req = pb::PullRequest {
        name: name.into(),
        ..Default::default()
    };
    let mut stream = site
        .objects()
        .await
        .pull(bearer(req, token))
        .await
        .expect("pull")
        .into_inner();
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    while let Some(m) = stream.message().await.expect("the pull stream") {
        if let Some(pb::pull_response::Part::Chunk(c)) = m.part {
            size += c.len() as u64;
            hash.update(&c);
        }
    }
    (size, hex::encode(hash.finalize()))
}

/// [`synced`] with a deadline of `secs` seconds, for objects that take longer to copy.
async fn synced_within(site: &SiteProc, token: &str, name: &str, sha: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    poll_until_async(deadline, Duration::from_millis(100), || async {
        let info = stat(site, token, name).await.ok()?;
        let (r, o) = (info.replica?, info.object?);
        (o.sha256 == sha
            && r.sync == pb::SyncState::Synced as i32
            && r.verification == pb::VerificationState::Succeeded as i32
            && r.local_version == o.version)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{name} not synced and verified at {} in {secs} s",
            site.name
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_at_an_s3_primary_live_in_its_bucket_under_its_prefix() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-objects");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary_with(
        "primary",
        &strs(&on_bucket(&cluster, &bucket, "primary", &[])),
    );
    let marker = String::from_utf8(bucket.read("primary/site")).unwrap();
    assert!(
        marker.contains("primary"),
        "the marker names the site: {marker}"
    );

    let name = "group/project.git";
    let v1 = noise(1, 1_500_000);
    let pushed = push(&primary, token, name, &v1).await.expect("push");
    assert_eq!(pushed.object.unwrap().sha256, sha256_hex(&v1));
    let (_, got) = pull(&primary, token, name).await.expect("pull");
    assert_eq!(got, v1);
    let k1 = object_key("primary", name, &sha256_hex(&v1));
    assert_eq!(bucket.keys("primary/objects"), [k1.as_str()]);
    assert_eq!(bucket.read(&k1), v1);

    // A replace: the new version's key, and the old one's goes.
    let v2 = noise(2, 300_000);
    push(&primary, token, name, &v2).await.expect("replace");
    let (_, got) = pull(&primary, token, name).await.expect("pull");
    assert_eq!(got, v2);
    let k2 = object_key("primary", name, &sha256_hex(&v2));
    eventually("only the new version's key", || async {
        (bucket.keys("primary/objects") == [k2.as_str()]).then_some(())
    })
    .await;

    // A delete: no key remains.
    let req = pb::DeleteRequest {
        name: name.into(),
        ..Default::default()
    };
    primary
        .objects()
        .await
        .delete(bearer(req, token))
        .await
        .expect("delete");
    let err = stat(&primary, token, name).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    eventually("no key left for the object", || async {
        bucket.keys("primary/objects").is_empty().then_some(())
    })
    .await;
    eventually("nothing staged left", || async {
        bucket.keys("primary/tmp").is_empty().then_some(())
    })
    .await;
    assert!(bucket.multipart_uploads().is_empty());
    assert_eq!(
        count_object_files(&primary.data_dir),
        0,
        "nothing stored in the data directory"
    );
    secret_kept(&bucket, &[&primary]);
}

/// What the mixed-backend tests push: small objects (an empty one too) and a few of some
/// MiB, more than one multipart part.
fn mixed_objects(seed: u64) -> Vec<(String, Vec<u8>)> {
    let sizes = [0, 1, 10_000, 700_000, 3 << 20, (9 << 20) + 5];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (
                format!("mixed/{seed}/{i}"),
                noise(seed * 100 + i as u64, len),
            )
        })
        .collect()
}

/// Waits until `site` holds every object of `objects` synced and verified, and serves
/// exactly its bytes.
async fn holds_all(site: &SiteProc, token: &str, objects: &[(String, Vec<u8>)]) {
    for (name, data) in objects {
        let sha = sha256_hex(data);
        synced(site, token, name, &sha).await;
        let (_, got) = pull(site, token, name).await.expect("pull");
        assert!(got == *data, "{name} at {}: other bytes", site.name);
    }
}

/// The keys `objects` are stored at under `prefix`, sorted.
fn keys_of(prefix: &str, objects: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut keys: Vec<String> = objects
        .iter()
        .map(|(name, data)| object_key(prefix, name, &sha256_hex(data)))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_primary_a_disk_and_an_s3_secondary_converge_verified_in_maintenance_too() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-mixed");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary_with(
        "primary",
        &strs(&on_bucket(&cluster, &bucket, "primary", &[])),
    );
    let disk = cluster.secondary("disk", &primary);
    // The same bucket under a prefix of its own, re-verifying often.
    let s3 = cluster.secondary_with(
        "s3",
        &primary,
        &strs(&on_bucket(
            &cluster,
            &bucket,
            "s3",
            &["--reverify-interval", "500ms"],
        )),
    );

    let first = mixed_objects(1);
    for (name, data) in &first {
        push(&primary, token, name, data).await.expect("push");
    }
    holds_all(&disk, token, &first).await;
    holds_all(&s3, token, &first).await;

    // More pushes, and maintenance on before they have been copied: replication and
    // verification go on.
    let second = mixed_objects(2);
    for (name, data) in &second {
        push(&primary, token, name, data).await.expect("push");
    }
    set_maintenance(&primary, token, true, "failover drill")
        .await
        .unwrap();
    for site in [&disk, &s3] {
        eventually(&format!("{} in maintenance", site.name), || async {
            site.try_get_mode().await?.maintenance_mode.then_some(())
        })
        .await;
    }
    let all: Vec<_> = first.into_iter().chain(second).collect();
    holds_all(&disk, token, &all).await;
    holds_all(&s3, token, &all).await;
    holds_all(&primary, token, &all).await;
    let name = &all[3].0;
    let verified_at = |info: pb::ObjectInfo| {
        let at = info.replica?.verified_at?;
        Some((at.seconds, at.nanos))
    };
    let before = verified_at(stat(&s3, token, name).await.unwrap()).unwrap();
    eventually(
        "a re-verification at the S3 secondary in maintenance",
        || async {
            let at = verified_at(stat(&s3, token, name).await.ok()?)?;
            (at > before).then_some(())
        },
    )
    .await;

    // Each S3 site's objects are under its own prefix, nothing staged is left, and the
    // disk secondary's are files.
    assert_eq!(bucket.keys("primary/objects"), keys_of("primary", &all));
    assert_eq!(bucket.keys("s3/objects"), keys_of("s3", &all));
    for prefix in ["primary/tmp", "s3/tmp"] {
        assert!(bucket.keys(prefix).is_empty(), "{:?}", bucket.keys(prefix));
    }
    assert!(bucket.multipart_uploads().is_empty());
    assert_eq!(count_object_files(&disk.data_dir), all.len());
    assert_eq!(count_object_files(&s3.data_dir), 0);
    assert_eq!(count_object_files(&primary.data_dir), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_primary_replicates_to_an_s3_secondary() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-secondary");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let (primary, s1) = disk_primary_and_s3_secondary(&cluster, &bucket);
    let objects = mixed_objects(3);
    for (name, data) in &objects {
        push(&primary, token, name, data).await.expect("push");
    }
    holds_all(&s1, token, &objects).await;
    assert_eq!(bucket.keys("s1/objects"), keys_of("s1", &objects));
    assert!(bucket.keys("s1/tmp").is_empty());
    assert_eq!(count_object_files(&s1.data_dir), 0);
    for (name, data) in &objects {
        let key = object_key("s1", name, &sha256_hex(data));
        assert!(bucket.read(&key) == *data, "{key}: other bytes");
    }

    // A replace and a delete at the primary: the secondary's bucket follows, the old
    // version's key and the deleted object's go.
    let mut objects = objects;
    let (deleted, _) = objects.remove(2);
    objects[0].1 = noise(33, 40_000);
    push(&primary, token, &objects[0].0, &objects[0].1)
        .await
        .expect("replace");
    let req = pb::DeleteRequest {
        name: deleted.clone(),
        ..Default::default()
    };
    primary
        .objects()
        .await
        .delete(bearer(req, token))
        .await
        .expect("delete");
    holds_all(&s1, token, &objects).await;
    let want = keys_of("s1", &objects);
    eventually("only the current versions' keys at s1", || async {
        (bucket.keys("s1/objects") == want).then_some(())
    })
    .await;
    let err = stat(&s1, token, &deleted).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// A large object, for the bounded-memory test: 256 MiB.
const LARGE: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_goes_to_the_bucket_in_parts_in_bounded_memory() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-large");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary_with(
        "primary",
        &strs(&on_bucket(&cluster, &bucket, "primary", &[])),
    );
    let s1 = cluster.secondary_with(
        "s1",
        &primary,
        &strs(&on_bucket(&cluster, &bucket, "s1", &[])),
    );

    let started = Instant::now();
    let (pushed, sha) = push_streamed(&primary, token, "lfs/large", LARGE).await;
    let meta = pushed.object.expect("object");
    assert_eq!((meta.sha256.as_str(), meta.size), (sha.as_str(), LARGE));
    eprintln!("pushed {LARGE} bytes in {:?}", started.elapsed());
    let key = object_key("primary", "lfs/large", &sha);
    assert_eq!(bucket.keys("primary/objects"), [key.as_str()]);
    let stored = garage.stored(&bucket.name, &key);
    assert_eq!(stored.size, LARGE);
    assert!(
        stored.multipart_parts.is_some_and(|n| n > 1),
        "stored in parts: {stored:?}"
    );
    // (s1 may be copying it already, under its own prefix.)
    let uploads = bucket.multipart_uploads();
    assert!(
        uploads.iter().all(|k| !k.starts_with("primary/")),
        "{uploads:?}"
    );
    assert!(bucket.keys("primary/tmp").is_empty());

    let started = Instant::now();
    assert_eq!(
        pull_streamed(&primary, token, "lfs/large").await,
        (LARGE, sha.clone())
    );
    eprintln!("pulled it in {:?}", started.elapsed());
    let started = Instant::now();
    synced_within(&s1, token, "lfs/large", &sha, 180).await;
    eprintln!("synced and verified at s1 in {:?}", started.elapsed());
    let s1_key = object_key("s1", "lfs/large", &sha);
    assert_eq!(garage.stored(&bucket.name, &s1_key).size, LARGE);
    assert!(bucket.multipart_uploads().is_empty());

    let peak = peak_rss(primary.pid());
    eprintln!("the primary's peak RSS: {} MiB", peak >> 20);
    assert!(
        peak < 96 << 20,
        "the primary's peak RSS was {} MiB",
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_midway_leaves_nothing_in_the_bucket() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-killed");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary_with(
        "primary",
        &strs(&on_bucket(&cluster, &bucket, "primary", &[])),
    );
    let (tx, call) = open_push(&primary, token, "lfs/cut").await;
    for i in 0..(24 << 20) / CHUNK {
        let part = pb::push_request::Part::Chunk(noise(i as u64, CHUNK));
        tx.send(pb::PushRequest { part: Some(part) })
            .await
            .expect("the push goes on");
    }
    // Some of it is in the bucket, staged.
    let staged = wait_until(
        "the push staged in the bucket",
        Instant::now() + DEADLINE,
        Duration::from_millis(50),
        || {
            let mut staged = bucket.multipart_uploads();
            staged.extend(bucket.keys("primary/tmp"));
            (!staged.is_empty()).then_some(staged)
        },
    );
    assert!(
        staged.iter().all(|k| k.starts_with("primary/tmp/")),
        "{staged:?}"
    );
    primary.kill9();
    drop(tx);
    assert!(call.await.unwrap().is_err(), "the push cannot succeed");

    primary.restart();
    eventually("the staged parts swept", || async {
        (bucket.multipart_uploads().is_empty() && bucket.keys("primary/tmp").is_empty())
            .then_some(())
    })
    .await;
    assert!(bucket.keys("primary/objects").is_empty());
    let err = stat(&primary, token, "lfs/cut").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // And the site stores again.
    let data = noise(5, 100_000);
    push(&primary, token, "lfs/after", &data)
        .await
        .expect("push");
    assert_eq!(pull(&primary, token, "lfs/after").await.unwrap().1, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_killed_while_copying_into_its_bucket_leaves_no_upload_and_copies_again() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-killed-sync");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    // Slow enough that the copy is caught halfway.
    let mut s1 = cluster.secondary_with(
        "s1",
        &primary,
        &strs(&on_bucket(
            &cluster,
            &bucket,
            "s1",
            &["--sync-bandwidth-limit", "8MiB/s"],
        )),
    );
    let data = noise(4, 48 << 20);
    let sha = sha256_hex(&data);
    push(&primary, token, "lfs/slow", &data).await.unwrap();
    wait_until(
        "the copy under way at s1",
        Instant::now() + DEADLINE,
        Duration::from_millis(50),
        || {
            let mut staged = bucket.multipart_uploads();
            staged.extend(bucket.keys("s1/tmp"));
            (!staged.is_empty()).then_some(())
        },
    );
    s1.kill9();
    assert!(
        bucket.keys("s1/objects").is_empty(),
        "nothing visible before the copy completes"
    );

    s1.restart();
    synced_within(&s1, token, "lfs/slow", &sha, 60).await;
    eventually("no upload left behind", || async {
        (bucket.multipart_uploads().is_empty() && bucket.keys("s1/tmp").is_empty()).then_some(())
    })
    .await;
    let key = object_key("s1", "lfs/slow", &sha);
    assert_eq!(bucket.keys("s1/objects"), [key.as_str()]);
    assert_eq!(pull(&s1, token, "lfs/slow").await.unwrap().1, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flipped_in_an_s3_secondarys_bucket_is_found_and_fetched_again() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-rot");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let (primary, s1) = disk_primary_and_s3_secondary(&cluster, &bucket);
    let data = noise(7, 300_000);
    let sha = sha256_hex(&data);
    push(&primary, token, "grp/a", &data).await.unwrap();
    synced(&s1, token, "grp/a", &sha).await;
    let key = object_key("s1", "grp/a", &sha);

    flip_a_bit(&bucket, &key);
    let (code, out, err) = admin(&cluster, &s1, &["objects", "reverify", "grp/a"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reverify: 1 object"), "{out}");
    eventually(
        "the copy in the bucket fetched again and verified",
        || async {
            let r = stat(&s1, token, "grp/a").await.ok()?.replica?;
            (bucket.try_read(&key).ok()? == data
                && r.sync == pb::SyncState::Synced as i32
                && r.verification == pb::VerificationState::Succeeded as i32)
                .then_some(())
        },
    )
    .await;
    assert!(
        s1.logs().contains("checksum does not match the primary"),
        "the damage was found, not missed"
    );
    let (_, got) = pull(&s1, token, "grp/a").await.unwrap();
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flipped_in_an_s3_primarys_bucket_is_repaired_from_a_secondary() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-heal");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary_with(
        "primary",
        &strs(&on_bucket(&cluster, &bucket, "primary", &[])),
    );
    let s1 = cluster.advertised_secondary("s1", &primary);
    let data = noise(8, 300_000);
    let sha = sha256_hex(&data);
    push(&primary, token, "lfs/x", &data).await.unwrap();
    synced(&s1, token, "lfs/x", &sha).await;
    let key = object_key("primary", "lfs/x", &sha);

    flip_a_bit(&bucket, &key);
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
    eventually("the primary's copy in the bucket repaired", || async {
        (bucket.try_read(&key).ok()? == data).then_some(())
    })
    .await;
    assert_eq!(pull(&primary, token, "lfs/x").await.unwrap().1, data);
    let (_, metrics) = primary.http_get("/metrics").await;
    assert!(
        metrics.contains("geo_repairs_total{result=\"repaired\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_bucket_is_put_back_when_a_read_finds_it_gone() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-gone");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    // Verifiers that would not look for an hour: the reads find it.
    let slow = ["--reverify-interval", "1h"];
    let primary = cluster.primary_with(
        "primary",
        &strs(&on_bucket(&cluster, &bucket, "primary", &slow)),
    );
    let s1 = cluster.advertised_secondary("s1", &primary);
    let s2 = cluster.secondary_with(
        "s2",
        &primary,
        &strs(&on_bucket(&cluster, &bucket, "s2", &slow)),
    );
    let data = noise(8, 300_000);
    let sha = sha256_hex(&data);
    push(&primary, token, "lfs/x", &data).await.unwrap();
    synced(&s1, token, "lfs/x", &sha).await;
    synced(&s2, token, "lfs/x", &sha).await;
    eventually("the primary knows where s1 is", || async {
        let (_, body) = primary.http_get("/metrics").await;
        body.contains("site=\"s1\"").then_some(())
    })
    .await;

    // At the primary (repaired from s1), then at the S3 secondary (fetched again).
    for site in [&primary, &s2] {
        let key = object_key(&site.name, "lfs/x", &sha);
        bucket.delete(&key);
        if let Err(e) = pull(site, token, "lfs/x").await {
            assert_eq!(e.code(), Code::Unavailable, "at {}: {e:?}", site.name);
        }
        eventually(&format!("the copy back at {}", site.name), || async {
            let (_, got) = pull(site, token, "lfs/x").await.ok()?;
            (got == data && bucket.try_read(&key).ok()? == data).then_some(())
        })
        .await;
    }
    let (_, metrics) = primary.http_get("/metrics").await;
    assert!(
        metrics.contains("geo_repairs_total{result=\"repaired\"} 1\n"),
        "{metrics}"
    );
    synced(&s2, token, "lfs/x", &sha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_stops_answering_is_critical_and_sync_resumes_when_it_is_back() {
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-outage");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let (primary, s1) = disk_primary_and_s3_secondary(&cluster, &bucket);
    let before = noise(1, 50_000);
    push(&primary, token, "before", &before).await.unwrap();
    synced(&s1, token, "before", &sha256_hex(&before)).await;
    assert_eq!(s1.http_get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(storage_up(&s1).await, Some(1));

    garage.stop();
    let body = eventually("s1 says its bucket is failing", || async {
        let (status, body) = s1.http_get("/healthz").await;
        (status == 200 && body.starts_with("critical: object storage")).then_some(body)
    })
    .await;
    assert!(body.contains(&bucket.name), "{body}");
    assert_eq!(storage_up(&s1).await, Some(0));
    let channel = eventually("the object storage channel CRITICAL", || async {
        let c = own_status(&cluster, &s1)?["channels"]["object storage"].clone();
        (c["health"] == "CRITICAL").then_some(c)
    })
    .await;
    assert!(
        channel["reasons"][0]
            .as_str()
            .unwrap()
            .contains(&bucket.name),
        "{channel}"
    );
    // A pull of a copy s1 holds is read through from the primary meanwhile.
    let (header, bytes) = pull(&s1, token, "before").await.expect("read through");
    assert_eq!(bytes, before);
    assert!(header.read_through, "{header:?}");
    // The primary takes pushes meanwhile.
    let during: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("during/{i}"), noise(10 + i, 200_000)))
        .collect();
    for (name, data) in &during {
        push(&primary, token, name, data).await.expect("push");
    }

    garage.restart();
    holds_all(&s1, token, &during).await;
    eventually("s1 OK again", || async {
        let (status, body) = s1.http_get("/healthz").await;
        let channel = own_status(&cluster, &s1)?["channels"]["object storage"].clone();
        (status == 200
            && body == "ok\n"
            && storage_up(&s1).await == Some(1)
            && channel["health"] == "OK")
            .then_some(())
    })
    .await;
    let mut want = keys_of("s1", &during);
    want.push(object_key("s1", "before", &sha256_hex(&before)));
    want.sort();
    assert_eq!(bucket.keys("s1/objects"), want);
    secret_kept(&bucket, &[&s1]);
}

/// How a `geo-agent run` started by [`start_site`] ended up.
enum Start {
    /// It exited: its code and stderr.
    Refused(i32, String),
    /// It said where it serves (and was then killed).
    Served,
}

/// `geo-agent run` as primary `name` with `extra` flags and `env`, until it either serves
/// or exits (panics if it does neither within the deadline).
fn start_site(cluster: &Cluster, name: &str, extra: &[String], env: &[(&str, &str)]) -> Start {
    use std::io::BufRead;
    use std::ops::ControlFlow;
    let path = |f: &str| cluster.path(f).display().to_string();
    cluster.token_of(name);
    let log = cluster.path(&format!("{name}.log"));
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--site-id", name, "--role", "primary"])
        .args(["--data-dir", &path(name)])
        .args(["--admin-token-file", &path("admin-token")])
        .args(["--site-token-file", &path(&format!("{name}.site-token"))])
        .args(["--promotion-public-key", &cluster.promotion_public_key()])
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn geo-agent");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, serving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(" serving gRPC on ") {
                let _ = tx.send(());
            }
        }
    });
    let outcome = poll_until(Instant::now() + DEADLINE, || {
        if let Some(status) = child.try_wait().unwrap() {
            return ControlFlow::Break(Some(status));
        }
        match serving.try_recv() {
            Ok(()) => ControlFlow::Break(None),
            Err(_) => ControlFlow::Continue(Duration::from_millis(20)),
        }
    });
    let stderr = || std::fs::read_to_string(&log).unwrap();
    match outcome {
        Some(Some(status)) => Start::Refused(status.code().unwrap_or(-1), stderr()),
        Some(None) => {
            let _ = child.kill();
            let _ = child.wait();
            Start::Served
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} neither served nor exited; its log:\n{}", stderr());
        }
    }
}

/// [`start_site`] for a start that must be refused: (exit code, stderr).
fn start_refused(cluster: &Cluster, name: &str, extra: &[String]) -> (i32, String) {
    match start_site(cluster, name, extra, &[]) {
        Start::Refused(code, err) => (code, err),
        Start::Served => panic!(
            "{name} started where it must be refused; its log:\n{}",
            std::fs::read_to_string(cluster.path(&format!("{name}.log"))).unwrap()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_refuses_to_start_on_a_bucket_it_cannot_use_saying_why() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-refusals");
    let cluster = Cluster::new();
    let case_dir = |case: &str| {
        let dir = cluster.path(case);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let refused = |name: &str, b: &Bucket, dir: &std::path::Path| {
        let (code, err) = start_refused(&cluster, name, &b.site_args(dir, name));
        assert_ne!(code, 0, "{name}: {err}");
        assert!(err.contains("object storage"), "{name}: {err}");
        assert!(
            !err.contains(&bucket.secret),
            "{name} prints the secret: {err}"
        );
        err
    };

    let wrong_secret = Bucket {
        secret: format!("{:064x}", 0xdead_beef_u64),
        ..bucket.clone()
    };
    let err = refused("wrong-secret", &wrong_secret, &case_dir("wrong-secret"));
    assert!(err.contains(&bucket.name), "{err}");
    assert!(!err.contains(&wrong_secret.secret), "{err}");

    let unreachable = Bucket {
        endpoint: format!("http://127.0.0.1:{}", free_port()),
        ..bucket.clone()
    };
    let err = refused("unreachable", &unreachable, &case_dir("unreachable"));
    assert!(err.contains(&bucket.name), "{err}");

    // A credentials file others may read.
    let dir = case_dir("readable");
    let args = bucket.site_args(&dir, "readable");
    let file = bucket.credentials_file(&dir);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = start_refused(&cluster, "readable", &args);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(!err.contains(&bucket.secret), "{err}");

    // The credentials may come from the environment instead of a file: a wrong secret
    // there is refused too, and the right one serves.
    let dir = case_dir("env");
    let mut args = bucket.site_args(&dir, "env");
    let file_flag = args
        .iter()
        .position(|a| a == "--objects-s3-credentials-file")
        .unwrap();
    args.drain(file_flag..file_flag + 2);
    let env = |secret: &str| {
        start_site(
            &cluster,
            "env",
            &args,
            &[
                ("AWS_ACCESS_KEY_ID", &bucket.key_id),
                ("AWS_SECRET_ACCESS_KEY", secret),
            ],
        )
    };
    match env(&wrong_secret.secret) {
        Start::Refused(code, err) => {
            assert_ne!(code, 0, "{err}");
            assert!(
                err.contains("object storage") && err.contains(&bucket.name),
                "{err}"
            );
            assert!(!err.contains(&wrong_secret.secret), "{err}");
        }
        Start::Served => panic!("a wrong secret in the environment was taken"),
    }
    assert!(matches!(env(&bucket.secret), Start::Served));
    assert_eq!(bucket.keys("env"), ["env/site"]);

    // A prefix another site owns.
    let _owner = cluster.primary_with(
        "owner",
        &strs(&bucket.site_args(&case_dir("owner"), "shared")),
    );
    let (code, err) = start_refused(
        &cluster,
        "intruder",
        &bucket.site_args(&case_dir("intruder"), "shared"),
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("object storage") && err.contains("owner"),
        "{err}"
    );
    // Nothing the refused sites did reached the bucket.
    assert!(bucket.keys("wrong-secret").is_empty() && bucket.keys("readable").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_primary_whose_bucket_stops_answering_refuses_pushes_and_takes_them_when_it_is_back()
{
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-primary-outage");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary_with(
        "primary",
        &strs(&on_bucket(&cluster, &bucket, "primary", &[])),
    );
    let s1 = cluster.secondary("s1", &primary);
    let before = noise(1, 50_000);
    push(&primary, token, "before", &before).await.unwrap();

    garage.stop();
    // One PUT, and a multipart upload: both refused, naming the bucket.
    for (name, len) in [("during", 100_000), ("during-large", 20 << 20)] {
        let err = push(&primary, token, name, &noise(2, len))
            .await
            .expect_err("a push with the bucket down");
        assert!(
            err.message().contains("object storage") && err.message().contains(&bucket.name),
            "{err:?}"
        );
        // Retryable: the bucket's state, not a broken site.
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        let err = stat(&primary, token, name).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "nothing recorded: {err:?}");
    }
    let (status, body) = primary.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("critical: object storage"), "{body}");
    // A pull at the primary cannot fall back anywhere: UNAVAILABLE, naming the bucket.
    let err = pull(&primary, token, "before").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&bucket.name), "{err:?}");

    garage.restart();
    let after = noise(3, 70_000);
    let pushed = eventually("a push taken again", || async {
        push(&primary, token, "after", &after).await.ok()
    })
    .await;
    assert_eq!(pushed.object.unwrap().sha256, sha256_hex(&after));
    synced(&s1, token, "after", &sha256_hex(&after)).await;
    // Restarted, it serves what its bucket holds, and nothing of the refused pushes is
    // there.
    primary.terminate();
    primary.restart();
    assert_eq!(pull(&primary, token, "before").await.unwrap().1, before);
    assert_eq!(pull(&primary, token, "after").await.unwrap().1, after);
    let mut want = vec![
        object_key("primary", "before", &sha256_hex(&before)),
        object_key("primary", "after", &sha256_hex(&after)),
    ];
    want.sort();
    assert_eq!(bucket.keys("primary/objects"), want);
    eventually("nothing staged left", || async {
        (bucket.keys("primary/tmp").is_empty() && bucket.multipart_uploads().is_empty())
            .then_some(())
    })
    .await;
    secret_kept(&bucket, &[&primary]);
}

/// A bucket or prefix removed or replaced under a running site answers every read "not
/// found". That must not read as "every copy is missing": the site says its marker is gone
/// and its verifier waits rather than condemning copies; once the marker is back, a copy
/// really missing is found and fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_emptied_under_a_site_is_critical_and_condemns_nothing_until_it_is_back() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("geo-emptied");
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let (primary, s1) = disk_primary_and_s3_secondary(&cluster, &bucket);
    let data = noise(7, 300_000);
    let sha = sha256_hex(&data);
    push(&primary, token, "x", &data).await.unwrap();
    synced(&s1, token, "x", &sha).await;

    // The prefix emptied behind the site's back: marker and object gone.
    bucket.delete("s1/site");
    bucket.delete(&object_key("s1", "x", &sha));
    let body = eventually("s1 says its marker is gone", || async {
        let (status, body) = s1.http_get("/healthz").await;
        (status == 200 && body.contains("marker")).then_some(body)
    })
    .await;
    assert!(body.starts_with("critical: object storage"), "{body}");
    let (code, out, err) = admin(&cluster, &s1, &["objects", "reverify", "x"]);
    assert_eq!(code, 0, "{out}{err}");
    eventually("the verifier waits", || async {
        s1.logs().contains("its verification waits").then_some(())
    })
    .await;
    let info = stat(&s1, token, "x").await.unwrap();
    assert_eq!(
        info.replica.unwrap().sync,
        pb::SyncState::Synced as i32,
        "the copy was not condemned"
    );

    // The marker back: the site is healthy again, finds the object missing and copies it.
    bucket.write("s1/site", b"s1");
    synced(&s1, token, "x", &sha).await;
    eventually("the key copied again", || async {
        (bucket.try_read(&object_key("s1", "x", &sha)).ok()? == data).then_some(())
    })
    .await;
    eventually("s1 OK again", || async {
        (s1.http_get("/healthz").await == (200, "ok\n".to_string())).then_some(())
    })
    .await;
}
