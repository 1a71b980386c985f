//! The command line as an operator uses it: real processes, real exit codes, real output.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

fn token_env(cluster: &Cluster) -> String {
    cluster.path("admin-token").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_settings_from_the_command_line() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    // The settings log holds the sites' registrations before any change.
    let base = primary.get_mode().await.settings_index;
    let token_file = token_env(&cluster);
    let env = [
        ("GEO_AGENT_TOKEN_FILE", token_file.as_str()),
        ("USER", "alice"),
    ];
    let p = primary.url();

    let (code, out, err) = cli(
        &[
            "maintenance",
            "enable",
            "--message",
            "Upgrade to 18.4",
            "--addr",
            &p,
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("maintenance mode enabled on primary"), "{out}");

    let json = eventually("s1 to report the mode", || async {
        let (code, out, _) = cli(&["mode", "get", "--json", "--addr", &s1.url()], &[]);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        (v["maintenance_mode"] == true).then_some(v)
    })
    .await;
    assert_eq!(json["message"], "Upgrade to 18.4");
    assert_eq!(json["updated_by"], "alice");
    assert_eq!(json["site_id"], "s1");
    assert_eq!(json["role"], "secondary");
    assert_eq!(json["epoch"], 1);
    assert_eq!(json["settings_index"], base + 1);
    let at = json["updated_at"].as_str().expect("updated_at");
    chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    assert_eq!(json["follower"]["state"], "following");

    let (code, out, _) = cli(&["mode", "get", "--addr", &s1.url()], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("maintenance mode  ON"), "{out}");
    assert!(out.contains("Upgrade to 18.4"), "{out}");

    // Settings: set, read back, read a missing key, bad JSON, a write at a secondary.
    let (code, _, err) = cli(
        &["settings", "set", "signup_enabled", "false", "--addr", &p],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(&["settings", "get", "signup_enabled", "--addr", &p], &env);
    assert_eq!((code, out.trim()), (0, "false"));
    let (code, _, err) = cli(&["settings", "get", "nope", "--addr", &p], &env);
    assert_eq!(code, 1, "a missing key is a negative answer");
    assert!(err.contains("not set"), "{err}");
    let (code, _, err) = cli(&["settings", "set", "k", "{bad", "--addr", &p], &env);
    assert_eq!(code, 2);
    assert!(err.contains("not valid JSON"), "{err}");
    let (code, _, err) = cli(
        &["settings", "unset", "signup_enabled", "--addr", &s1.url()],
        &env,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("hint: the primary is at {p}")),
        "{err}"
    );

    // No token, a wrong token, no site there.
    let (code, _, err) = cli(&["maintenance", "disable", "--addr", &p], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("needs the admin token"), "{err}");
    let (code, _, err) = cli(
        &[
            "maintenance",
            "disable",
            "--addr",
            &p,
            "--token",
            "0123456789abcdef-wrong",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("Unauthenticated"), "{err}");
    let (code, _, err) = cli(&["mode", "get", "--addr", "127.0.0.1:1"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect to"), "{err}");

    let (code, _, err) = cli(&["maintenance", "disable", "--addr", &p], &env);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli(&["mode", "get", "--json", "--addr", &p], &[]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["maintenance_mode"], false);
    assert_eq!(v["message"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_watch_prints_one_json_object_per_change() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let base = primary.get_mode().await.settings_index;
    let mut watch = Command::new(BIN)
        .args(["mode", "watch", "--json", "--addr", &s1.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["maintenance_mode"], false);

    set_maintenance(&primary, &cluster.admin_token, true, "one")
        .await
        .unwrap();
    set_maintenance(&primary, &cluster.admin_token, false, "")
        .await
        .unwrap();
    let reader = std::thread::spawn(move || {
        (0..2)
            .map(|_| {
                serde_json::from_str::<serde_json::Value>(&lines.next().unwrap().unwrap()).unwrap()
            })
            .collect::<Vec<_>>()
    });
    let seen = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(seen[0]["maintenance_mode"], true);
    assert_eq!(seen[0]["message"], "one");
    assert_eq!(seen[1]["maintenance_mode"], false);
    assert_eq!(seen[1]["settings_index"], base + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_a_primary_and_secondaries_that_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(BIN)
        .args([
            "dev",
            "--secondaries",
            "2",
            "--base-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut urls = Vec::new();
    let mut printed = String::new();
    for line in BufReader::new(dev.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed += &line;
        printed.push('\n');
        if let Some(url) = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") && line.contains("gRPC"))
        {
            urls.push(url.to_string());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert_eq!(urls.len(), 3, "{printed}");
    assert!(printed.contains("admin token:"), "{printed}");
    assert!(printed.contains("maintenance enable"), "{printed}");

    let token_file = dir.path().join("admin-token").display().to_string();
    let env = [("GEO_AGENT_TOKEN_FILE", token_file.as_str())];
    let (code, _, err) = cli(
        &[
            "maintenance",
            "enable",
            "--message",
            "dev",
            "--addr",
            &urls[0],
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    for url in &urls[1..] {
        eventually("a dev secondary to follow", || async {
            let (_, out, _) = cli(&["mode", "get", "--json", "--addr", url], &[]);
            let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
            (v["maintenance_mode"] == true && v["message"] == "dev").then_some(())
        })
        .await;
    }
    // SAFETY: kill(2) on our child's pid.
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGTERM);
    }
    assert!(dev.wait().unwrap().success(), "dev exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_from_the_command_line() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let token_file = token_env(&cluster);
    let env = [
        ("GEO_AGENT_TOKEN_FILE", token_file.as_str()),
        ("USER", "alice"),
    ];
    let input = cluster.path("input.bin");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let sha = sha256_hex(&data);

    // Pushed at the secondary: forwarded to the primary, which commits it.
    let input_arg = input.display().to_string();
    let (code, out, err) = cli(
        &[
            "push",
            "group/app.git",
            &input_arg,
            "--kind",
            "repository",
            "--json",
            "--addr",
            &s1.url(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["kind"], "repository");
    assert_eq!(v["proxied"], true);
    assert_eq!(v["committed_by"], "primary");
    assert_eq!(v["updated_by"], "alice via s1");

    synced(&s1, &cluster.admin_token, "group/app.git", &sha).await;
    let output = cluster.path("output.bin");
    let output_arg = output.display().to_string();
    let (code, _, err) = cli(
        &[
            "pull",
            "group/app.git",
            "-o",
            &output_arg,
            "--addr",
            &s1.url(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sha256 verified"), "{err}");
    assert_eq!(std::fs::read(&output).unwrap(), data);

    // Maintenance: the push is refused (exit 1, the SPEC's message); pulls still work.
    set_maintenance(&primary, &cluster.admin_token, true, "")
        .await
        .unwrap();
    eventually("s1 in maintenance", || async {
        s1.get_mode().await.maintenance_mode.then_some(())
    })
    .await;
    let (code, _, err) = cli(&["push", "x", &input_arg, "--addr", &s1.url()], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Git push is not allowed"), "{err}");
    let raw = Command::new(BIN)
        .args(["pull", "group/app.git", "--addr", &primary.url()])
        .env("GEO_AGENT_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(raw.status.success());
    assert_eq!(raw.stdout, data, "the bytes on standard output");

    // Bad input: exit 2 with the reason, nothing written.
    let (code, _, err) = cli(
        &["push", "../x", &input_arg, "--addr", &primary.url()],
        &env,
    );
    assert_eq!(code, 2);
    assert!(err.contains("`..`"), "{err}");
    let (code, _, err) = cli(&["pull", "missing", "--addr", &primary.url()], &env);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
}
