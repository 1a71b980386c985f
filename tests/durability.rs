//! Acknowledged means on stable storage, checked on the real daemon: a primary runs under
//! `strace`, takes maintenance-mode changes and pushes one at a time, and the trace must show
//! that no answer left for the client while something it had written under the data
//! directory was not yet on stable storage: a log segment or object file written and not
//! `fsync`ed/`fdatasync`ed since, or a file renamed into a directory not `fsync`ed since.
//!
//! Ordering is strict: a write counts from the moment it *starts*, a sync covers only the
//! writes that had *finished* before it started, and an answer is any write on the client's
//! connection (accepted on the site's gRPC port) that carries an HTTP/2 HEADERS frame
//! (responses and their trailers start with one). sled's files are not checked: the state
//! they hold is rebuilt from the logs (see ARCHITECTURE.md).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::*;

/// One system call of the trace, whole (an `<unfinished ...>` line joined with its
/// `<... resumed>` line).
#[derive(Debug, Default)]
struct Call {
    name: String,
    /// The first argument as strace decodes it with `-yy`: `12</path>` or
    /// `15<TCP:[a:p->b:q]>`.
    fd: String,
    /// The line it started on and the line it finished on (the same for a whole line;
    /// `usize::MAX` if the trace ends before it returns).
    start: usize,
    end: usize,
    /// The quoted arguments, decoded (`-xx` writes every byte in hex): what was written as
    /// far as `-s` shows it, or a rename's paths.
    strings: Vec<Vec<u8>>,
    /// The text of the call, for messages.
    line: String,
    /// The call returned without an error.
    ok: bool,
}

/// Parses `strace -f -yy -xx` output into calls, in the order they started.
fn parse(trace: &str) -> Vec<Call> {
    let mut unfinished: HashMap<String, usize> = HashMap::new();
    let mut calls: Vec<Call> = Vec::new();
    for (n, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            unfinished.insert(pid.to_string(), calls.len());
            calls.push(call(head, n, usize::MAX, ""));
        } else if let Some(after) = rest.strip_prefix("<... ") {
            if let Some(i) = unfinished.remove(pid) {
                let result = after.split_once("resumed>").map_or("", |(_, r)| r);
                calls[i].end = n;
                calls[i].ok = returned_ok(result);
            }
        } else if rest.contains('(') {
            calls.push(call(rest, n, n, rest));
        }
    }
    calls
}

fn call(text: &str, start: usize, end: usize, result: &str) -> Call {
    let name = text.split('(').next().unwrap_or_default().to_string();
    let args = text.split_once('(').map_or("", |(_, a)| a);
    Call {
        name,
        fd: decorated_fd(args).to_string(),
        start,
        end,
        strings: quoted(args).into_iter().map(|q| unhex(&q)).collect(),
        line: text.to_string(),
        ok: end != usize::MAX && returned_ok(result),
    }
}

/// Whether a call's text ends in a successful result (` = 0`, ` = 80`), or has none yet.
fn returned_ok(text: &str) -> bool {
    match text.rsplit_once(" = ") {
        None => true,
        Some((_, r)) => !r.trim_start().starts_with('-'),
    }
}

/// The quoted strings of a call's arguments, as written (`\x2f\x61`).
fn quoted(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = args;
    while let Some((_, after)) = rest.split_once('"') {
        let Some((inner, tail)) = after.split_once('"') else {
            break;
        };
        out.push(inner.to_string());
        rest = tail;
    }
    out
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

/// Whether `bytes` (the start of what was written on an HTTP/2 connection, as far as the
/// trace shows it) holds a HEADERS frame: the frames are walked by their length fields.
fn has_headers_frame(bytes: &[u8]) -> bool {
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 9) {
        if header[3] == 1 {
            return true;
        }
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        at += 9 + len;
    }
    // A frame header cut by the trace's limit: its type is the fourth byte.
    bytes.get(at + 3) == Some(&1)
}

fn is_write(name: &str) -> bool {
    matches!(
        name,
        "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "sendmsg" | "sendto"
    )
}

/// What must reach stable storage before the next answer: per path (a file, or a directory
/// a file was renamed into), the calls (start, end) that changed it and no sync covered yet.
#[derive(Default)]
struct Unsynced(BTreeMap<String, Vec<(usize, usize)>>);

impl Unsynced {
    fn changed(&mut self, path: &str, call: &Call) {
        self.0
            .entry(path.to_string())
            .or_default()
            .push((call.start, call.end));
    }

    /// A sync of `path` that started at `start` covers the changes that had finished by then.
    fn synced(&mut self, path: &str, start: usize) -> bool {
        let Some(changes) = self.0.get_mut(path) else {
            return false;
        };
        let before = changes.len();
        changes.retain(|&(_, end)| end == usize::MAX || end >= start);
        let covered = changes.len() < before;
        if changes.is_empty() {
            self.0.remove(path);
        }
        covered
    }
}

/// Checks the trace (see the module doc); returns how many answers it saw and how many
/// syncs covered a change, per kind of file.
fn check(trace: &str, data_dir: &str, grpc_port: u16) -> (usize, HashMap<&'static str, usize>) {
    let watched = |path: &str| {
        path.starts_with(&format!("{data_dir}/logs/"))
            || path.starts_with(&format!("{data_dir}/objects/"))
    };
    let client = format!(":{grpc_port}->");
    let calls = parse(trace);
    // Events in trace order: writes and answers where they start, syncs and renames where
    // they finish (a sync starting before a write finished does not cover it).
    let mut events: Vec<(usize, &Call)> = Vec::new();
    for c in &calls {
        match c.name.as_str() {
            "fsync" | "fdatasync" | "rename" => events.push((c.end, c)),
            _ => events.push((c.start, c)),
        }
    }
    events.sort_by_key(|(at, _)| *at);
    let mut unsynced = Unsynced::default();
    let mut directories = std::collections::HashSet::new();
    let mut synced: HashMap<&'static str, usize> = HashMap::new();
    let mut answers = 0;
    for (_, c) in events {
        let path = fd_path(&c.fd);
        match c.name.as_str() {
            "fsync" | "fdatasync" => {
                let Some(p) = path.filter(|p| watched(p)) else {
                    continue;
                };
                assert!(c.ok, "a sync failed or never returned: {}", c.line);
                if unsynced.synced(&p, c.start) {
                    let kind = if p.contains("/logs/settings/") {
                        "settings"
                    } else if p.contains("/logs/events/") {
                        "events"
                    } else if directories.contains(&p) {
                        "directories"
                    } else {
                        "objects"
                    };
                    *synced.entry(kind).or_default() += 1;
                }
            }
            "rename" => {
                let Some(to) = c
                    .strings
                    .get(1)
                    .and_then(|b| String::from_utf8(b.clone()).ok())
                else {
                    continue;
                };
                if c.ok && watched(&to) {
                    let dir = Path::new(&to)
                        .parent()
                        .expect("a parent")
                        .display()
                        .to_string();
                    unsynced.changed(&dir, c);
                    directories.insert(dir);
                }
            }
            name if is_write(name)
                && c.fd.contains(&client)
                && c.strings.iter().any(|s| has_headers_frame(s)) =>
            {
                answers += 1;
                assert!(
                    unsynced.0.is_empty(),
                    "answer {answers} left while these had changes not yet synced: {:?}\n{}",
                    unsynced.0,
                    c.line
                );
            }
            name if is_write(name) => {
                if let Some(p) = path.filter(|p| watched(p)) {
                    unsynced.changed(&p, c);
                }
            }
            _ => {}
        }
    }
    (answers, synced)
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
            "64",
            "-e",
            "trace=write,pwrite64,writev,pwritev,pwritev2,sendmsg,sendto,fsync,fdatasync,rename",
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
    let port = primary.grpc.port();
    drop(primary);
    let trace = std::fs::read_to_string(&trace_file).expect("the trace");
    let (answers, synced) = check(&trace, &data_dir, port);
    // Each acknowledged change and push was a write and a sync of its own.
    assert!(
        answers >= CHANGES + 1 + PUSHES,
        "{answers} answers in the trace"
    );
    let count = |kind| synced.get(kind).copied().unwrap_or(0);
    assert!(count("settings") > CHANGES, "{synced:?}");
    assert!(count("events") >= PUSHES, "{synced:?}");
    assert!(count("objects") >= PUSHES, "{synced:?}");
    assert!(count("directories") >= PUSHES, "{synced:?}");
}

/// The checker itself: each way of breaking the property fails it.
#[test]
fn the_checker_catches_an_answer_before_a_sync_and_a_sync_that_started_too_early() {
    let seg = "9</d/logs/settings/1.seg>";
    let answer = "write(12<TCP:[127.0.0.1:5->127.0.0.1:6]>, \"\\x00\\x00\\x04\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x05\\x01\\x04\"..., 40) = 40";
    let good = format!(
        "7 pwrite64({seg}, \"\\x10\\x00\"..., 80, 0) = 80\n\
         8 fdatasync({seg}) = 0\n\
         7 {answer}\n"
    );
    let (answers, synced) = check(&good, "/d", 5);
    assert_eq!((answers, synced.get("settings")), (1, Some(&1)));
    // The answer (a HEADERS frame after a WINDOW_UPDATE in one write) before the sync.
    let early = format!(
        "7 pwrite64({seg}, \"\\x10\\x00\"..., 80, 0) = 80\n\
         7 {answer}\n\
         8 fdatasync({seg}) = 0\n"
    );
    let failed = std::panic::catch_unwind(|| check(&early, "/d", 5));
    assert!(failed.is_err(), "an answer before its sync passed");
    // A sync that started before the write finished does not cover it.
    let overlapping = format!(
        "7 pwrite64({seg}, \"\\x10\\x00\"..., 80, 0 <unfinished ...>\n\
         8 fdatasync({seg} <unfinished ...>\n\
         7 <... pwrite64 resumed>) = 80\n\
         8 <... fdatasync resumed>) = 0\n\
         7 {answer}\n"
    );
    let failed = std::panic::catch_unwind(|| check(&overlapping, "/d", 5));
    assert!(failed.is_err(), "a sync that started too early counted");
    // A rename into a directory needs that directory synced.
    let renamed = format!(
        "7 rename(\"\\x2f\\x64\\x2f\\x6f\\x62\\x6a\\x65\\x63\\x74\\x73\\x2f\\x74\", \"\\x2f\\x64\\x2f\\x6f\\x62\\x6a\\x65\\x63\\x74\\x73\\x2f\\x61\\x62\\x2f\\x78\") = 0\n\
         7 {answer}\n"
    );
    let failed = std::panic::catch_unwind(|| check(&renamed, "/d", 5));
    assert!(
        failed.is_err(),
        "an answer before the directory sync passed"
    );
    let renamed_and_synced = renamed.replace(
        &format!("7 {answer}"),
        &format!("8 fsync(3<\\x2f\\x64\\x2f\\x6f\\x62\\x6a\\x65\\x63\\x74\\x73\\x2f\\x61\\x62>) = 0\n7 {answer}"),
    );
    let (answers, synced) = check(&renamed_and_synced, "/d", 5);
    assert_eq!((answers, synced.get("directories")), (1, Some(&1)));
    assert_eq!(
        decorated_fd("15<TCP:[127.0.0.1:5->127.0.0.1:6]>, \"\\x00\"..., 9) = 9"),
        "15<TCP:[127.0.0.1:5->127.0.0.1:6]>"
    );
}
