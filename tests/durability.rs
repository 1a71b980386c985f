//! Acknowledged means on stable storage, checked on the real daemon: a primary runs under
//! `strace`, takes maintenance-mode changes and pushes one at a time, and the trace must show
//! that no answer left for the client while a file it had written under the data directory
//! (log segments, object files) was not yet `fsync`ed or `fdatasync`ed.
//!
//! The answer is recognised as a write of an HTTP/2 HEADERS frame (a response starts with
//! one) on a connection accepted on the site's gRPC port. The log store's writer syncs the
//! files it writes on the thread that wrote them; sled's files are not checked: the state
//! they hold is rebuilt from the logs (see ARCHITECTURE.md).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use common::*;

/// One system call of the trace, whole (an `<unfinished ...>` line joined with its
/// `<... resumed>` line).
#[derive(Debug)]
struct Call {
    name: String,
    /// The first argument as strace decodes it with `-yy`: `12</path>` or
    /// `15<TCP:[a:p->b:q]>`.
    fd: String,
    /// The line, for messages.
    line: String,
    /// The bytes written, as far as `-xx -s` shows them.
    data: Vec<u8>,
    ok: bool,
}

/// Parses `strace -f -yy -xx` output into calls, in the order they finished (a sync counts
/// once it has returned) — except writes, which count from when they started, so a write
/// that is still running is never mistaken for one after the sync.
fn parse(trace: &str) -> Vec<Call> {
    let mut unfinished: HashMap<String, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let whole = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            if is_write(head) {
                calls.push(call(head, ""));
            } else {
                unfinished.insert(pid.to_string(), head.to_string());
            }
            continue;
        } else if let Some(after) = rest.strip_prefix("<... ") {
            let Some(head) = unfinished.remove(pid) else {
                continue;
            };
            let result = after.split_once("resumed>").map_or("", |(_, r)| r);
            format!("{head}{result}")
        } else {
            rest.to_string()
        };
        if !is_write(&whole) {
            let result = whole.rsplit_once(" = ").map_or("", |(_, r)| r);
            calls.push(call(&whole, result));
        } else {
            calls.push(call(&whole, ""));
        }
    }
    calls
}

fn is_write(line: &str) -> bool {
    [
        "write(",
        "pwrite64(",
        "writev(",
        "pwritev(",
        "pwritev2(",
        "sendmsg(",
        "sendto(",
    ]
    .iter()
    .any(|w| line.starts_with(w))
}

fn call(text: &str, result: &str) -> Call {
    let name = text.split('(').next().unwrap_or_default().to_string();
    let args = text.split_once('(').map_or("", |(_, a)| a);
    let fd = decorated_fd(args).to_string();
    let data = args
        .split_once('"')
        .and_then(|(_, d)| d.split_once('"'))
        .map_or_else(Vec::new, |(d, _)| unhex(d));
    Call {
        name,
        fd,
        line: text.to_string(),
        data,
        ok: result.is_empty() || result.trim().starts_with('0'),
    }
}

/// `\x00\x1f...` (strace `-xx`) into bytes.
fn unhex(s: &str) -> Vec<u8> {
    s.split("\\x")
        .filter(|b| b.len() >= 2)
        .filter_map(|b| u8::from_str_radix(&b[..2], 16).ok())
        .collect()
}

/// The descriptor at the start of `args` with what `-yy` adds: `12</a/b>` or
/// `15<TCP:[127.0.0.1:5->127.0.0.1:6]>` (whose address has a `>` of its own).
fn decorated_fd(args: &str) -> &str {
    let Some(open) = args.find('<') else {
        return args.split([',', ')']).next().unwrap_or_default();
    };
    let close = if args[open..].contains("]>") && args[open + 1..].starts_with(['T', 'U']) {
        args[open..].find("]>").map(|i| open + i + 1)
    } else {
        args[open..].find('>').map(|i| open + i)
    };
    close.map_or(args, |c| &args[..=c])
}

/// The path in a decoded descriptor, `12</a/b>` → `/a/b` (which `-xx` writes in hex).
fn fd_path(fd: &str) -> Option<String> {
    let path = fd.split_once('<')?.1.strip_suffix('>')?;
    if path.starts_with("\\x") {
        String::from_utf8(unhex(path)).ok()
    } else {
        Some(path.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledgement_follows_a_sync_of_what_it_wrote() {
    if !have(&["strace", "-o", "/dev/null", "true"], "strace") {
        return;
    }
    let cluster = Cluster::new();
    let trace_file = cluster.path("primary.strace");
    let primary = Spawn::new(cluster.dir.path(), "primary")
        .under([
            "strace",
            "-f",
            "-yy",
            "-xx",
            "-s",
            "16",
            "-e",
            "trace=write,pwrite64,writev,pwritev,pwritev2,sendmsg,sendto,fsync,fdatasync",
            "-o",
            &trace_file.display().to_string(),
            "--",
        ])
        .args(["--role", "primary"])
        .start();
    let token = &cluster.admin_token;
    const CHANGES: usize = 20;
    const PUSHES: usize = 10;
    for i in 0..CHANGES {
        let enable = i % 2 == 0;
        let message = if enable {
            format!("change {i}")
        } else {
            String::new()
        };
        set_maintenance(&primary, token, enable, &message)
            .await
            .expect("maintenance-mode change");
    }
    set_maintenance(&primary, token, false, "").await.unwrap();
    for i in 0..PUSHES {
        push(
            &primary,
            token,
            &format!("uploads/{i}.bin"),
            &[i as u8; 4096],
        )
        .await
        .expect("push");
    }
    let data_dir = primary.data_dir.display().to_string();
    let grpc_port = format!(":{}->", primary.grpc.port());
    drop(primary);
    let trace = std::fs::read_to_string(&trace_file).expect("the trace");

    let watched = |path: &str| {
        path.starts_with(&format!("{data_dir}/logs/"))
            || path.starts_with(&format!("{data_dir}/objects/"))
    };
    let mut unsynced: HashSet<String> = HashSet::new();
    let mut synced: HashMap<&'static str, usize> = HashMap::new();
    let mut answers = 0;
    for c in parse(&trace) {
        let path = fd_path(&c.fd);
        let path = path.as_deref();
        match c.name.as_str() {
            "fsync" | "fdatasync" => {
                if let Some(p) = path.filter(|p| watched(p)) {
                    assert!(c.ok, "a sync failed: {}", c.line);
                    if unsynced.remove(p) {
                        let log = if p.contains("/logs/settings/") {
                            "settings"
                        } else if p.contains("/logs/events/") {
                            "events"
                        } else {
                            "objects"
                        };
                        *synced.entry(log).or_default() += 1;
                    }
                }
            }
            _ if c.fd.contains(&grpc_port) => {
                // A response begins with a HEADERS frame (type 1): 3 bytes of length, the type.
                if c.data.get(3) == Some(&1) {
                    answers += 1;
                    assert!(
                        unsynced.is_empty(),
                        "answer {answers} left while {unsynced:?} had unsynced writes: {}",
                        c.line
                    );
                }
            }
            _ => {
                if let Some(p) = path.filter(|p| watched(p)) {
                    unsynced.insert(p.to_string());
                }
            }
        }
    }
    // Each acknowledged change and push was a write and a sync of its own.
    assert!(
        answers >= CHANGES + 1 + PUSHES,
        "{answers} answers in the trace"
    );
    assert!(
        synced.get("settings").copied().unwrap_or(0) > CHANGES,
        "{synced:?}"
    );
    assert!(
        synced.get("events").copied().unwrap_or(0) >= PUSHES,
        "{synced:?}"
    );
    assert!(
        synced.get("objects").copied().unwrap_or(0) >= PUSHES,
        "{synced:?}"
    );
}

#[test]
fn the_trace_parser_joins_resumed_calls_and_reads_frames() {
    let trace = "\
7 pwrite64(9</d/logs/settings/1.seg>, \"\\x10\\x00\"..., 80, 0) = 80
8 fdatasync(9</d/logs/settings/1.seg> <unfinished ...>
7 write(12<TCP:[127.0.0.1:5->127.0.0.1:6]>, \"\\x00\\x00\\x04\\x01\\x04\"..., 40 <unfinished ...>
8 <... fdatasync resumed>) = 0
";
    let calls = parse(trace);
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pwrite64", "write", "fdatasync"]);
    assert_eq!(
        fd_path(&calls[0].fd).as_deref(),
        Some("/d/logs/settings/1.seg")
    );
    assert_eq!(fd_path("3<\\x2f\\x61>").as_deref(), Some("/a"));
    assert_eq!(calls[1].data.get(3), Some(&1));
    assert!(calls[2].ok);
    assert!(Path::new(&fd_path(&calls[2].fd).unwrap()).ends_with("1.seg"));
    assert_eq!(
        decorated_fd("15<TCP:[127.0.0.1:5->127.0.0.1:6]>, \"\\x00\"..., 9) = 9"),
        "15<TCP:[127.0.0.1:5->127.0.0.1:6]>"
    );
}
