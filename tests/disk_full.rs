//! A full disk is a state, not a crash: a site whose data directory is on a small tmpfs
//! that fills up stays up, answers the mode, the gate and its health (CRITICAL, naming the
//! disk), refuses writes with RESOURCE_EXHAUSTED, takes them again by itself once space is
//! freed, and starts when restarted on the full disk.
//!
//! Mounting needs root: without it the test is skipped, except in CI (which runs as root),
//! where it fails.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// The size of the file system the site's data directory lives on.
const TMPFS_SIZE: &str = "24m";

/// A tmpfs mounted for the test, unmounted when dropped (after the site it holds: declare
/// it first).
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs at `dir`, or says why the test cannot run here.
    fn tmpfs(dir: &Path) -> Option<Mount> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must be able to mount a tmpfs (it runs as root): {why}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here (needs root): {why}");
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with one file, until it says ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever the last partial write left, what is written stays.
    let _ = f.sync_all();
}

async fn healthz_says(site: &SiteProc, what: &str) -> Option<String> {
    let (status, body) = site.http_get("/healthz").await;
    (status == 200 && body.contains(what)).then_some(body)
}

/// Everything a site must still answer while its disk is full.
async fn answers_while_full(site: &mut SiteProc, token: &str, admin: &str) {
    assert!(site.running(), "the site exited on a full disk");
    let mode = site.get_mode().await;
    assert!(!mode.maintenance_mode, "{mode:?}");
    let (status, body) = site.http_get("/mode").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_request(site.http, "GET", "/gate/auth", None).await;
    assert!(
        status < 500,
        "the gate answers on a full disk: {status} {body}"
    );

    let (status, body) = site.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("critical: disk full at "), "{body}");
    let (status, page) = site.http_get("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("disk full at"),
        "the status page names the disk"
    );
    let (_, metrics) = site.http_get("/metrics").await;
    assert!(metrics.contains("geo_disk_full 1"), "{metrics}");
    assert!(metrics.contains("geo_disk_free_bytes{"), "{metrics}");
    assert!(
        metrics.contains("channel=\"disk\"} 2"),
        "disk health CRITICAL: {metrics}"
    );

    let refused = push(site, admin, "full/refused", &[1u8; 1024])
        .await
        .expect_err("a push on a full disk is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().starts_with("disk full at ")
            && refused
                .message()
                .ends_with("writes resume when space is freed"),
        "{refused:?}"
    );
    let _ = token;
}

/// Pushes until a push is accepted again, without restarting the site.
async fn writes_resume(site: &SiteProc, admin: &str, name: &str) {
    let started = Instant::now();
    let last = std::sync::Mutex::new(String::new());
    let resumed = poll_until_async(
        Instant::now() + DEADLINE,
        std::time::Duration::from_millis(50),
        || async {
            match push(site, admin, name, &[2u8; 4096]).await {
                Ok(r) => Some(r),
                Err(e) => {
                    *last.lock().unwrap() = format!("{e:?}");
                    None
                }
            }
        },
    )
    .await;
    if resumed.is_none() {
        let logs = site.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        panic!(
            "writes did not resume once space was freed; last error: {}; the site's log ends:\n{}",
            last.lock().unwrap(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!(
        "RELIABILITY disk full: writes resumed {:?} after space was freed",
        started.elapsed()
    );
    eventually("health OK again", || healthz_says(site, "ok")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_state_the_site_serves_through_and_recovers_from() {
    let cluster = Cluster::new();
    let data = cluster.path("p1");
    let Some(_mount) = Mount::tmpfs(&data) else {
        return;
    };
    let admin = cluster.admin_token.clone();
    let mut p1 = cluster.primary("p1");
    assert!(
        data.join("reserve").exists(),
        "the disk reserve is made at first start"
    );

    // Objects until the disk cannot take more: refused, not a crash.
    let started = Instant::now();
    let mut pushed = 0;
    let refused = loop {
        match push(
            &p1,
            &admin,
            &format!("big/{pushed}"),
            &vec![pushed as u8; 1 << 20],
        )
        .await
        {
            Ok(_) => pushed += 1,
            Err(e) => break e,
        }
        assert!(pushed < 64, "a 24 MiB disk took {pushed} MiB of objects");
    };
    eprintln!(
        "RELIABILITY disk full: {pushed} objects of 1 MiB before pushes were refused ({:?})",
        started.elapsed()
    );
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(p1.running());

    // Deletes still go on, and free space: writes resume by themselves.
    for i in 0..4 {
        let req = geo_agent::server::pb::DeleteRequest {
            name: format!("big/{i}"),
            ..Default::default()
        };
        p1.objects()
            .await
            .delete(bearer(req, &admin))
            .await
            .expect("a delete on a full disk");
    }
    writes_resume(&p1, &admin, "after/deletes").await;

    // Something else fills the disk to the last byte.
    let filler = data.join("filler");
    fill(&filler);
    let started = Instant::now();
    eventually("health to say the disk is full", || {
        healthz_says(&p1, "critical: disk full at ")
    })
    .await;
    eprintln!(
        "RELIABILITY disk full: health CRITICAL {:?} after the disk filled",
        started.elapsed()
    );
    answers_while_full(&mut p1, &cluster.site_token, &admin).await;

    // Space freed: writes resume by themselves, and the reserve comes back.
    std::fs::remove_file(&filler).unwrap();
    writes_resume(&p1, &admin, "after/first").await;
    eventually("the reserve to be made again", || async {
        data.join("reserve").exists().then_some(())
    })
    .await;

    // Full again, and restarted on the full disk: it starts and answers.
    fill(&filler);
    eventually("health to say the disk is full", || {
        healthz_says(&p1, "critical: disk full at ")
    })
    .await;
    let status = p1.terminate();
    eprintln!("RELIABILITY disk full: SIGTERM on a full disk ended with {status}");
    let started = Instant::now();
    p1.restart();
    let mode = eventually("GetMode after a restart on a full disk", || {
        p1.try_get_mode()
    })
    .await;
    eprintln!(
        "RELIABILITY disk full: restarted on a full disk, GetMode answered after {:?}",
        started.elapsed()
    );
    assert!(!mode.maintenance_mode);
    eventually("health to say the disk is full", || {
        healthz_says(&p1, "critical: disk full at ")
    })
    .await;
    answers_while_full(&mut p1, &cluster.site_token, &admin).await;
    std::fs::remove_file(&filler).unwrap();
    writes_resume(&p1, &admin, "after/restart").await;
    assert!(p1.running());
}

/// The database itself meets the full disk (the reserve already given up): sled keeps that
/// write error, so the site must open its database again once space is back. It stays up
/// meanwhile, and settings changes work again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_met_the_full_disk_is_opened_again_in_process() {
    let cluster = Cluster::new();
    let data = cluster.path("p1");
    let Some(_mount) = Mount::tmpfs(&data) else {
        return;
    };
    let admin = cluster.admin_token.clone();
    let p1 = cluster.primary("p1");
    let (first, second) = (data.join("filler"), data.join("filler-2"));
    fill(&first);
    eventually("the reserve to be given up", || async {
        (!data.join("reserve").exists()).then_some(())
    })
    .await;
    fill(&second);

    // Settings changes until the database cannot write one.
    let mut changes = 0;
    let failed = loop {
        match set_maintenance(&p1, &admin, changes % 2 == 0, "").await {
            Ok(_) => changes += 1,
            Err(e) => break e,
        }
        assert!(
            changes < 2000,
            "{changes} settings changes on a full disk all succeeded"
        );
    };
    eprintln!("RELIABILITY disk full: the database failed to write after {changes} settings changes on a full disk");
    assert_eq!(failed.code(), tonic::Code::ResourceExhausted, "{failed:?}");
    eventually("health to say the disk is full", || {
        healthz_says(&p1, "critical: disk full at ")
    })
    .await;
    assert!(p1.running());
    p1.get_mode().await;

    std::fs::remove_file(&first).unwrap();
    std::fs::remove_file(&second).unwrap();
    let started = Instant::now();
    let want = changes % 2 == 0;
    let mode = eventually("settings changes to work again", || async {
        set_maintenance(&p1, &admin, want, "").await.ok()
    })
    .await;
    eprintln!(
        "RELIABILITY disk full: settings changes worked again {:?} after space was freed",
        started.elapsed()
    );
    assert_eq!(mode.maintenance_mode, want);
    eventually("GetMode to show the change", || async {
        p1.try_get_mode()
            .await
            .filter(|m| m.maintenance_mode == want)
    })
    .await;
    if want {
        set_maintenance(&p1, &admin, false, "")
            .await
            .expect("maintenance off");
    }
    writes_resume(&p1, &admin, "after/reopen").await;
    assert!(
        p1.logs()
            .contains("opening the site again now that the disk has space"),
        "the database was opened again"
    );
    assert!(p1.running(), "{}", p1.logs());
}
