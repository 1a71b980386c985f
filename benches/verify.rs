//! Verification against sha256sum: how fast the verifier hashes. Its own function,
//! `geo_agent::objects::files::digest_file`, over 1,000 files of 1 MiB of random bytes on
//! one thread, against one `sha256sum f1 f2 …` process (and, for scale when it is
//! installed, `openssl dgst -sha256`). Each runs twice; the second (warm) run counts. The
//! files are written once and stay in the page cache.
//!
//! Environment (see `benches/support/mod.rs`): `OBJECTS_BENCH_SCALE` (the file count),
//! `OBJECTS_BENCH_DIR`.
//!
//! Run with `cargo bench --bench verify` (sha256sum must be on PATH).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geo_agent::objects::files::digest_file;
use support::*;

fn main() {
    support::run("verify", |bench, _| verification(&bench.big_data_set()));
}

fn verification(set: &DataSet) -> String {
    let paths: Vec<&Path> = set.files.iter().map(|(_, p)| p.as_path()).collect();
    let bytes = set.bytes();
    let digest = || {
        let t = Instant::now();
        let mut total = 0;
        for p in &paths {
            total += digest_file(p).expect("digest a file").size;
        }
        assert_eq!(total, bytes);
        t.elapsed()
    };
    // One process over all the files; `None` when the tool is not installed.
    let tool = |program: &str, args: &[&str]| {
        let t = Instant::now();
        let status = Command::new(program)
            .args(args)
            .args(&paths)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .ok()?;
        assert!(status.success(), "{program} failed: {status}");
        Some(t.elapsed())
    };
    let sha256sum = || tool("sha256sum", &[]).expect("sha256sum is on PATH");
    eprintln!("verification: {}…", set.describe());
    let d1 = digest();
    let d2 = digest();
    let s1 = sha256sum();
    let s2 = sha256sum();
    eprintln!(
        "  digest_file {:.2} s then {:.2} s; sha256sum {:.2} s then {:.2} s",
        d1.as_secs_f64(),
        d2.as_secs_f64(),
        s1.as_secs_f64(),
        s2.as_secs_f64()
    );
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let mut table = Table::new(&["seconds", "MB/s", "vs sha256sum"]);
    table.section(&format!(
        "{}, one thread, second (warm) run",
        set.describe()
    ));
    table.row(
        "geo-agent digest_file (the verifier's hash)",
        &[
            format!("{:.2}", d2.as_secs_f64()),
            format!("{:.0}", mbs(d2)),
            format!("{:.0} %", 100.0 * mbs(d2) / mbs(s2)),
        ],
    );
    table.row(
        &format!("sha256sum ({})", tool_version("sha256sum")),
        &[
            format!("{:.2}", s2.as_secs_f64()),
            format!("{:.0}", mbs(s2)),
            "100 %".into(),
        ],
    );
    // For scale: a hash with the CPU's SHA extensions in C, when OpenSSL is installed.
    if tool("openssl", &["dgst", "-sha256"]).is_some() {
        let o2 = tool("openssl", &["dgst", "-sha256"]).expect("ran once already");
        eprintln!("  openssl dgst -sha256 {:.2} s", o2.as_secs_f64());
        table.row(
            &format!("for scale: openssl dgst -sha256 ({})", openssl_version()),
            &[
                format!("{:.2}", o2.as_secs_f64()),
                format!("{:.0}", mbs(o2)),
                format!("{:.0} %", 100.0 * mbs(o2) / mbs(s2)),
            ],
        );
    }
    format!(
        "verification throughput (MB = 10^6 bytes)\n{}",
        table.render()
    )
}

/// `OpenSSL 3.0.19 27 Jan 2026 (Library: …)` → `OpenSSL 3.0.19`.
fn openssl_version() -> String {
    Command::new("openssl")
        .arg("version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `sha256sum (GNU coreutils) 9.1` → `GNU coreutils 9.1`.
fn tool_version(tool: &str) -> String {
    let out = Command::new(tool).arg("--version").output();
    let first = out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    match first.split_once('(') {
        Some((_, rest)) => rest.replace(')', ""),
        None => first,
    }
}
