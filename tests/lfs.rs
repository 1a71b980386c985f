//! A real git-lfs client against a real LFS server (giftless) behind the gating proxy. In
//! maintenance mode `git lfs push` is refused with the SPEC sentence, which git-lfs prints,
//! and nothing reaches the server's storage; downloads (`git lfs pull`, a checkout's smudge)
//! work. With the mode off the push goes through.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use geo_agent::gate::READ_ONLY_MESSAGE;

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_lfs_pushes_are_refused_in_maintenance_and_pulls_still_work() {
    if !have(&["git", "lfs", "version"], "the Debian package git-lfs")
        || !have(
            &["python3", "-c", "import giftless.app"],
            "giftless and its dependencies from PyPI",
        )
    {
        return;
    }
    let cluster = Cluster::new();
    let storage = cluster.path("lfs-storage");
    std::fs::create_dir_all(&storage).unwrap();
    let lfs = LfsServer::start(&storage);
    let site = cluster.primary_with(
        "primary",
        &[
            "--proxy-listen",
            "127.0.0.1:0",
            "--proxy-upstream",
            &format!("http://{}", lfs.addr),
        ],
    );
    let lfs_url = format!("http://{}/group/project.git/info/lfs", site.proxy());

    let home = cluster.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let git_in = |dir: &Path, args: &[&str]| {
        let (home, dir) = (home.clone(), dir.to_path_buf());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                git(&home, &dir, &args)
            })
            .await
            .unwrap()
        }
    };
    let must = |(ok, err): (bool, String), what: &str| assert!(ok, "{what}: {err}");
    must(git_in(&home, &["lfs", "install"]).await, "git lfs install");

    // The repository's refs live in a bare repository on disk; its LFS objects behind the
    // proxy. Lock verification is off: giftless has no locking API.
    let bare = cluster.path("project.git");
    let work = cluster.path("work");
    for d in [&bare, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    must(
        git_in(&bare, &["init", "--bare", "-q", "-b", "main"]).await,
        "init bare",
    );
    must(git_in(&work, &["init", "-q", "-b", "main"]).await, "init");
    let configure = |dir: PathBuf| {
        let bare = bare.to_str().unwrap().to_string();
        let lfs_url = lfs_url.clone();
        let git_in = &git_in;
        async move {
            for args in [
                vec!["remote", "add", "origin", bare.as_str()],
                vec!["config", "lfs.url", lfs_url.as_str()],
                vec!["config", "lfs.locksverify", "false"],
            ] {
                must(git_in(&dir, &args).await, "configure");
            }
        }
    };
    configure(work.clone()).await;
    must(git_in(&work, &["lfs", "track", "*.bin"]).await, "track");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(work.join("model.bin"), &content).unwrap();
    must(
        git_in(&work, &["add", ".gitattributes", "model.bin"]).await,
        "add",
    );
    must(
        git_in(&work, &["commit", "-q", "-m", "model"]).await,
        "commit",
    );

    set_maintenance(&site, &cluster.admin_token, true, "upgrade")
        .await
        .unwrap();
    let (ok, err) = git_in(&work, &["lfs", "push", "origin", "main"]).await;
    assert!(!ok, "git lfs push in maintenance must fail");
    assert!(err.contains(READ_ONLY_MESSAGE), "git-lfs shows why: {err}");
    // The pre-push hook stops a plain push as well.
    let (ok, err) = git_in(&work, &["push", "-q", "origin", "main"]).await;
    assert!(!ok, "git push with an LFS object in maintenance must fail");
    assert!(err.contains(READ_ONLY_MESSAGE), "{err}");
    assert!(files(&storage).is_empty(), "{:?}", files(&storage));

    set_maintenance(&site, &cluster.admin_token, false, "")
        .await
        .unwrap();
    must(
        git_in(&work, &["push", "-q", "origin", "main"]).await,
        "push with the mode off",
    );
    let stored = files(&storage);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).unwrap(), content);

    // In maintenance a fresh checkout downloads the object, and `git lfs pull` works.
    set_maintenance(&site, &cluster.admin_token, true, "upgrade")
        .await
        .unwrap();
    let clone = cluster.path("clone");
    std::fs::create_dir_all(&clone).unwrap();
    must(
        git_in(&clone, &["init", "-q", "-b", "main"]).await,
        "init clone",
    );
    configure(clone.clone()).await;
    must(git_in(&clone, &["fetch", "-q", "origin"]).await, "fetch");
    must(
        git_in(&clone, &["checkout", "-q", "-b", "main", "origin/main"]).await,
        "checkout in maintenance",
    );
    assert_eq!(std::fs::read(clone.join("model.bin")).unwrap(), content);
    std::fs::remove_file(clone.join("model.bin")).unwrap();
    must(
        git_in(&clone, &["lfs", "pull", "origin"]).await,
        "git lfs pull in maintenance",
    );
    assert_eq!(std::fs::read(clone.join("model.bin")).unwrap(), content);
}
