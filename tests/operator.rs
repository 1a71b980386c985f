//! The operator's kit, checked as an operator would use it: shell completions and man pages
//! from the binary, the Prometheus alerting rules under `promtool test rules`, the Grafana
//! dashboard against what a running site's `/metrics` exports, and the Python client example
//! against a live site.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use clap::CommandFactory;
use common::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The subcommands `geo-agent --help` lists.
fn subcommands() -> Vec<String> {
    geo_agent::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_real_commands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef geo-agent"),
        ("fish", "complete -c geo-agent"),
    ] {
        let (code, out, err) = cli(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}:\n{out}");
        for sub in subcommands() {
            assert!(out.contains(&sub), "{shell} completion lacks {sub}");
        }
    }
    let (code, _, err) = cli(&["completions", "tcsh"], &[]);
    assert_eq!(code, 2, "an unknown shell is a usage error");
    assert!(err.contains("tcsh"), "{err}");

    // bash itself completes `geo-agent ma` with the script loaded.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("geo-agent.bash");
    let (_, out, _) = cli(&["completions", "bash"], &[]);
    std::fs::write(&script, out).expect("write the script");
    let probe = format!(
        r#"source '{}'
f=$(complete -p geo-agent | sed -E 's/.*-F ([^ ]+).*/\1/')
for line in "geo-agent ma" "geo-agent maintenance e"; do
  read -r -a COMP_WORDS <<< "$line"
  COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
  COMP_LINE="$line"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()
  "$f" geo-agent "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
  echo "$line => ${{COMPREPLY[*]}}"
done"#,
        script.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words = |line: &str| -> BTreeSet<String> {
        let prefix = format!("{line} => ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no answer for {line:?}: {text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let ma = words("geo-agent ma");
    assert!(ma.contains("maintenance") && ma.contains("man"), "{text}");
    assert!(!ma.contains("mode"), "{text}");
    assert!(
        words("geo-agent maintenance e").contains("enable"),
        "{text}"
    );
}

#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().display().to_string();
    let (code, _, err) = cli(&["man", "--dir", &out], &[]);
    assert_eq!(code, 0, "{err}");
    let top = std::fs::read_to_string(dir.path().join("geo-agent.1")).expect("geo-agent.1");
    assert!(top.contains(".TH geo-agent 1"), "{top}");
    for sub in subcommands() {
        let page = dir.path().join(format!("geo-agent-{sub}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{sub}: {e}"));
        assert!(text.contains(&format!(".TH geo-agent-{sub} 1")), "{text}");
        // roff escapes the hyphen of `promotion-key`.
        let listed = sub.replace('-', "\\-");
        assert!(top.contains(&listed), "the top page lists {sub}");
    }
    // Without --dir, the top page goes to standard output.
    let (code, stdout, _) = cli(&["man"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(".SH SUBCOMMANDS"), "{stdout}");

    let missing = dir.path().join("absent").display().to_string();
    let (code, _, err) = cli(&["man", "--dir", &missing], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot write man pages"), "{err}");
}

/// The alerts the rules file defines, in order.
fn alerts(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn alert_rules_pass_their_unit_tests_firing_and_not_firing() {
    if !have(&["promtool", "--version"], "the Debian package prometheus") {
        return;
    }
    let dir = repo("contrib/prometheus");
    for args in [
        &["check", "rules", "geo-agent-rules.yml"][..],
        &["test", "rules", "geo-agent-rules.test.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every alert has a runbook, and a test case where it fires and one where it does not.
    let rules = read("contrib/prometheus/geo-agent-rules.yml");
    let names = alerts(&rules);
    assert!(names.len() >= 10, "{names:?}");
    assert_eq!(
        rules.matches("          runbook: ").count(),
        names.len(),
        "one runbook per alert"
    );
    let tests = read("contrib/prometheus/geo-agent-rules.test.yml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.strip_prefix("alertname: ") {
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => quiet.insert(name),
                Some(&"exp_alerts:") => fires.insert(name),
                other => panic!("{name}: expected exp_alerts after alertname, got {other:?}"),
            };
        }
    }
    for name in &names {
        assert!(
            fires.contains(name.as_str()),
            "{name} is never tested firing"
        );
        assert!(
            quiet.contains(name.as_str()),
            "{name} is never tested quiet"
        );
    }
}

/// Metric names (`geo_...`) an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("geo_") {
        let start = i + at;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_grafana_json_and_every_query_reads_an_exported_metric() {
    let text = read("contrib/grafana/geo-agent.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    // The fields Grafana's dashboard model needs to import it.
    assert_eq!(dash["uid"], "geo-agent");
    assert!(dash["title"].is_string());
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "{}",
        dash["schemaVersion"]
    );
    assert!(dash["time"]["from"].is_string() && dash["time"]["to"].is_string());
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(p["type"].is_string() && p["title"].is_string(), "{p}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "gridPos.{k} of {}", p["title"]);
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} queries nothing", p["title"]);
        for t in targets {
            assert!(t["refId"].is_string(), "{t}");
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 15, "{used:?}");
    let rule_metrics = metric_names(&read("contrib/prometheus/geo-agent-rules.yml"));

    // A live site: a primary with the gating proxy in front of an upstream, and a secondary
    // reporting to it. The check is against the metric families the scrape declares
    // (`# TYPE` lines): every family is declared in every scrape, also before its first
    // sample (gate decisions, proxy counters, follower states); a histogram family covers
    // its _bucket, _sum and _count series.
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let url = upstream.url();
    let primary = cluster.primary_with(
        "primary",
        &["--proxy-listen", "127.0.0.1:0", "--proxy-upstream", &url],
    );
    let _s1 = cluster.secondary("s1", &primary);
    let scrape = eventually("s1 reports its followers to the primary", || async {
        let (status, body) = primary.http_get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body.contains("geo_follower_state{site=\"s1\"")
            .then_some(body)
    })
    .await;
    let mut families = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or_default().to_string();
            if parts.next() == Some("histogram") {
                for suffix in ["_bucket", "_sum", "_count"] {
                    families.insert(format!("{name}{suffix}"));
                }
            }
            families.insert(name);
        }
    }
    // Only a site serving TLS exports its certificate's expiry (tested below).
    assert!(
        !families.contains(TLS_EXPIRY),
        "a site without TLS has no certificate"
    );
    families.insert(TLS_EXPIRY.to_string());
    // Only a site keeping objects in a bucket says whether it answers (tests/s3.rs).
    assert!(
        !families.contains(OBJECT_STORAGE_UP),
        "a site on disk has no bucket"
    );
    families.insert(OBJECT_STORAGE_UP.to_string());
    for name in used.iter().chain(&rule_metrics) {
        assert!(
            families.contains(name),
            "{name} is queried but /metrics does not export it:\n{scrape}"
        );
    }

    // Every query parses as PromQL: promtool checks them as recording rules (Grafana's
    // $__rate_interval becomes 5m).
    if have(&["promtool", "--version"], "the Debian package prometheus") {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, e) in exprs.iter().enumerate() {
            let e = serde_json::to_string(&e.replace("$__rate_interval", "5m")).expect("json");
            rules.push_str(&format!("      - record: panel_{i}\n        expr: {e}\n"));
        }
        let file = dir.path().join("dashboard.yml");
        std::fs::write(&file, rules).expect("write rules");
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const TLS_EXPIRY: &str = "geo_tls_certificate_expiry_timestamp_seconds";
const OBJECT_STORAGE_UP: &str = "geo_object_storage_up";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_site_exports_when_its_certificate_expires() {
    let cluster = Cluster::new();
    let dir = cluster.path("pki");
    std::fs::create_dir_all(&dir).expect("pki dir");
    let (_, ca) = new_ca(&dir, "ca");
    let (cert, key) = issue_cert(&dir, "site", &["localhost", "127.0.0.1"], &ca);
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let site = cluster.primary_with(
        "tls",
        &["--tls-cert", &path(&cert), "--tls-key", &path(&key)],
    );
    let (status, text) = site.http_get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    // rcgen's certificates are valid until 4096-01-01T00:00:00Z unless told otherwise.
    let expires = chrono::NaiveDate::from_ymd_opt(4096, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a date")
        .and_utc()
        .timestamp();
    assert!(
        text.contains(&format!("\n{TLS_EXPIRY} {expires}\n")),
        "{text}"
    );
    if have(&["promtool", "--version"], "the Debian package prometheus") {
        promtool_check(&text);
    }
}

/// Lines a child prints, read on a thread so the test can wait for each with a deadline.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Lines from `rx` up to and including the first that contains `marker`.
fn until(rx: &mpsc::Receiver<String>, marker: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(marker);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("no line with {marker:?} ({e}); got:\n{}", seen.join("\n")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_watches_the_mode_and_prints_readiness() {
    if !have(
        &["python3", "-c", "import grpc, grpc_tools"],
        "grpcio and grpcio-tools from PyPI",
    ) {
        return;
    }
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    // The secondary's readiness is judged by the primary, so wait until s1 reports to it.
    eventually("s1 reports to the primary", || async {
        let (_, body) = primary.http_get("/metrics").await;
        body.contains("geo_site_last_contact_seconds{site=\"s1\"}")
            .then_some(())
    })
    .await;
    let addr = s1.url().trim_start_matches("http://").to_string();
    let mut child = Command::new("python3")
        .arg(repo("examples/python/watch_mode.py"))
        .args(["--addr", &addr, "--changes", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let rx = lines_of(&mut child);
    let first = until(&rx, "readiness of").join("\n");
    assert!(
        first.contains("s1 (secondary, epoch 1): maintenance off"),
        "{first}"
    );
    let criteria = until(&rx, "maintenance mode on at the primary").join("\n");
    assert!(
        criteria.contains("[ ] maintenance mode on at the primary: off"),
        "{criteria}"
    );
    assert!(first.contains("not ready to promote"), "{first}");

    set_maintenance(&primary, &cluster.admin_token, true, "Upgrade to 18.4")
        .await
        .expect("maintenance on");
    let change = until(&rx, "maintenance ON").join("\n");
    assert!(
        change.contains("s1 (secondary, epoch 1): maintenance ON: 'Upgrade to 18.4'"),
        "{change}"
    );
    let criteria = until(&rx, "maintenance mode on at the primary").join("\n");
    assert!(
        criteria.contains("[x] maintenance mode on at the primary: on"),
        "{criteria}"
    );

    let out = child.wait_with_output().expect("the example exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
