//! Replication against rsync: how fast a fresh secondary copies a primary's objects, next to
//! `rsync` of the same files.
//!
//! Everything runs as real processes on loopback: `geo-agent run` sites from the release
//! build (bound to port 0; the bench reads the `serving gRPC on … and HTTP on …` line), an
//! `rsync --daemon` and `rsync` clients. The bench process itself pushes objects over gRPC
//! and waits on conditions with deadlines; no fixed sleep is used to synchronise. Page
//! caches are not dropped: the data sets are written once and stay cached (the machine has
//! far more RAM than the data), so transfers read from memory and write to the disk.
//! `sync(2)` runs before each timed part so earlier dirty pages are not flushed while it
//! runs.
//!
//! Two data sets of random bytes: 1,000 files of 1 MiB and 20,000 files of 4 KiB. A fresh
//! primary gets every file pushed (8 pushes at a time, not timed); then a fresh secondary
//! is started and timed from its spawn until its `/objects` says every object is synced and
//! its event log is at the primary's head. The same files, as a plain directory behind
//! `rsync --daemon` (module `read only`, no chroot), are copied with
//! `rsync -a rsync://…/mod/ DEST/` into an empty directory, once as is and once with
//! `--fsync` (geo-agent fsyncs every file before it records it, so `--fsync` is the
//! like-for-like comparison). The three take turns, 3 times each, and the median counts.
//! Each copy also reports the CPU time of the receiving and the sending side and of every
//! other process on the machine (another build running at the same time shows there).
//!
//! How the end is seen without disturbing it: `/objects` scans the whole registry (about
//! 20 ms for 20,000 objects), so the bench counts the files in the secondary's object
//! directory until they are all there and only then polls `/objects` every 20 ms. The
//! moment the event log reached the primary's head comes from a `StreamEvents` call on the
//! secondary from that index, which delivers the entry once it is durable there.
//!
//! To see where the time goes, once each: the secondary with `--sync-concurrency 1` and
//! `32` (the default is 8), every object pulled from the primary into the bench's memory
//! (the transfer alone), and the secondary's file writes alone (write, fsync, rename, fsync
//! the directory, 8 threads, no network and no database). Also, once: how much of a core
//! the synced secondary uses with nothing to do.
//!
//! Environment (see `benches/support/mod.rs`): `OBJECTS_BENCH_SCALE`, `OBJECTS_BENCH_DIR`,
//! `OBJECTS_BENCH_KEEP`, `OBJECTS_BENCH_SYNC_CONCURRENCY` (then the `1` and `32` runs are
//! left out), `OBJECTS_BENCH_SECONDARY_ARGS`, `OBJECTS_BENCH_STRACE`, `GEO_AGENT_BIN`;
//! `OBJECTS_BENCH_REPEAT=N`, the runs of each timed copy (default 3; the median is
//! reported, with the range); `OBJECTS_BENCH_IDLE_SECS=S`, the window for the idle
//! secondary's CPU (default 3).
//!
//! Run with `cargo bench --bench replication` (rsync must be on PATH).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, wait_until, SiteProc, DEADLINE};
use support::*;

fn main() {
    support::run("replication", |bench, rt| {
        let big = bench.big_data_set();
        let small = {
            let t = Instant::now();
            let set = DataSet::generate(
                &bench.dir.join("src-small"),
                "small",
                bench.scaled(20000.0),
                4096,
            );
            eprintln!("generated {} in {:.1?}", set.describe(), t.elapsed());
            set
        };
        let mut table = Table::new(&[
            "seconds", "range", "MB/s", "files/s", "ratio", "dst usr", "dst sys", "src cpu",
            "other",
        ]);
        for set in [&big, &small] {
            replication(bench, rt, set, &mut table);
        }
        format!(
            "replication to an empty site, loopback, caches warm (MB = 10^6 bytes; \
             ratio = geo-agent time / rsync time; CPU seconds during the copy: user and system \
             of the receiving side (dst), user + system of the sending side (src), and of \
             every other process on the machine (other))\n{}",
            table.render()
        )
    });
}

fn replication(bench: &Bench, rt: &tokio::runtime::Runtime, set: &DataSet, table: &mut Table) {
    let n = set.files.len() as u64;
    let bytes = set.bytes();
    table.section(&set.describe());

    // geo-agent: fill a primary (not timed), then time a fresh secondary.
    eprintln!("{}: pushing to a fresh primary…", set.describe());
    let mut primary = bench.primary("primary");
    let t = Instant::now();
    let items = push_items(set);
    rt.block_on(push_all(
        &primary,
        &bench.admin_token,
        items,
        PUSH_CONCURRENCY,
    ));
    let pushed = t.elapsed();
    let at_primary = primary.counts();
    assert_eq!(
        at_primary.objects, n,
        "the primary holds every object: {at_primary:?}"
    );
    eprintln!(
        "  pushed in {:.1} s ({:.0} pushes/s); primary: {at_primary:?}",
        pushed.as_secs_f64(),
        n as f64 / pushed.as_secs_f64()
    );
    let events = at_primary.events_applied;

    // geo-agent and rsync (from a daemon serving the same files as a plain directory),
    // taking turns, `repeat` times each.
    let daemon = RsyncDaemon::start(&bench.dir.join("rsyncd"), &set.root);
    let dest = bench.dir.join("rsync-dest");
    let (mut geo, mut plain, mut fsync) = (Vec::new(), Vec::new(), Vec::new());
    let mut idle_cpu = None;
    for run in 1..=bench.repeat {
        eprintln!("  run {run} of {}", bench.repeat);
        let (transfer, waited, idle_poll, idle) = geo_sync(
            bench,
            rt,
            &primary,
            events,
            n,
            bench.sync_concurrency,
            run == 1,
        );
        idle_cpu = idle_cpu.or(idle);
        geo.push((transfer, waited, idle_poll));
        plain.push(daemon.copy(&dest, &[], n));
        fsync.push(daemon.copy(&dest, &["--fsync"], n));
        eprintln!(
            "  rsync -a: {:.2} s; rsync -a --fsync: {:.2} s",
            plain[plain.len() - 1].wall.as_secs_f64(),
            fsync[fsync.len() - 1].wall.as_secs_f64()
        );
    }
    drop(daemon);
    // Once each: serial and wider sync, to see what limits it.
    let mut variants = Vec::new();
    for c in [1, 32] {
        if bench.sync_concurrency.is_none() {
            variants.push((
                c,
                geo_sync(bench, rt, &primary, events, n, Some(c), false).0,
            ));
        }
    }
    // Where the time goes, part 1: only the transfer (Pull from the primary into memory).
    let pulled = pull_floor(bench, rt, &primary, set);
    primary.stop();
    // Part 2: only the file writes a secondary makes (no network, no database).
    let disk = disk_floor(&bench.dir.join("disk-floor"), set, PUSH_CONCURRENCY);

    // Medians (by time) of the repeated runs.
    geo.sort_by_key(|g| g.0.wall);
    let geo_range = format!(
        "{:.2}-{:.2}",
        geo[0].0.wall.as_secs_f64(),
        geo[geo.len() - 1].0.wall.as_secs_f64()
    );
    let (geo, waited, idle_poll) = &geo[geo.len() / 2];
    let range = |runs: &mut Vec<Transfer>| {
        runs.sort_by_key(|t| t.wall);
        format!(
            "{:.2}-{:.2}",
            runs[0].wall.as_secs_f64(),
            runs[runs.len() - 1].wall.as_secs_f64()
        )
    };
    let plain_range = range(&mut plain);
    let fsync_range = range(&mut fsync);
    let plain = &plain[plain.len() / 2];
    let fsync = &fsync[fsync.len() / 2];

    let row = |t: &Transfer, range: String, ratio: String| {
        let s = t.wall.as_secs_f64();
        [
            format!("{s:.2}"),
            range,
            format!("{:.0}", bytes as f64 / 1e6 / s),
            format!("{:.0}", n as f64 / s),
            ratio,
            format!("{:.2}", t.receiver.user),
            format!("{:.2}", t.receiver.sys),
            format!("{:.2}", t.sender.total()),
            format!("{:.2}", t.other),
        ]
    };
    let label = match bench.sync_concurrency {
        Some(c) => format!("geo-agent secondary (--sync-concurrency {c}), spawn -> all synced"),
        None => "geo-agent secondary, spawn -> all synced".to_string(),
    };
    table.row(&label, &row(geo, geo_range.clone(), String::new()));
    table.row(
        "  of which: spawn -> event log at the primary's head",
        &[format!("{:.2}", waited.head.as_secs_f64())],
    );
    for (label, t, range) in [
        ("rsync -a (daemon)", plain, plain_range),
        ("rsync -a --fsync (daemon)", fsync, fsync_range),
    ] {
        let ratio = format!("{:.2}", geo.wall.as_secs_f64() / t.wall.as_secs_f64());
        table.row(label, &row(t, range, ratio));
    }
    for (c, t) in &variants {
        let ratio = format!("{:.2}", t.wall.as_secs_f64() / fsync.wall.as_secs_f64());
        table.row(
            &format!("geo-agent --sync-concurrency {c} (1 run; ratio vs --fsync)"),
            &row(t, String::new(), ratio),
        );
    }
    table.row(
        "transfer only: Pull into memory, 8 at a time",
        &row(&pulled, String::new(), String::new()),
    );
    table.row(
        "writes only: write+fsync+rename+fsync dir, 8 threads",
        &row(&disk, String::new(), String::new()),
    );
    let s = pushed.as_secs_f64();
    table.row(
        "for scale: pushing it all to the primary, 8 at a time",
        &[
            format!("{s:.2}"),
            String::new(),
            format!("{:.0}", bytes as f64 / 1e6 / s),
            format!("{:.0}", n as f64 / s),
        ],
    );
    table.row(
        &format!(
            "for scale: one GET /objects at the synced secondary: {:.0} ms",
            idle_poll.as_secs_f64() * 1e3
        ),
        &[],
    );
    if let Some(share) = idle_cpu {
        table.row(
            &format!(
                "for scale: the synced secondary, idle, uses {:.1} % of a core",
                share * 100.0
            ),
            &[],
        );
    }
}

/// Pulls every object of `set` from `primary` over one connection, 8 at a time, into
/// memory and drops it: the transfer alone, as a secondary's sync workers make it (the
/// bench is the receiver here).
fn pull_floor(
    bench: &Bench,
    rt: &tokio::runtime::Runtime,
    primary: &SiteProc,
    set: &DataSet,
) -> Transfer {
    sync_disks();
    let names: Vec<String> = set.files.iter().map(|(n, _)| n.clone()).collect();
    let expected = set.bytes();
    let primary_cpu = primary.cpu();
    let (busy, own) = (machine_busy(), cpu_of(std::process::id(), false));
    let t = Instant::now();
    let got = rt.block_on(pull_all(
        primary,
        &bench.admin_token,
        names,
        PUSH_CONCURRENCY,
    ));
    let wall = t.elapsed();
    assert_eq!(got, expected, "pulled every byte");
    let receiver = cpu_of(std::process::id(), false) - own;
    let sender = primary.cpu() - primary_cpu;
    let other = machine_busy() - busy - receiver.total() - sender.total();
    eprintln!("  Pull only: {:.2} s", wall.as_secs_f64());
    Transfer {
        wall,
        receiver,
        sender,
        other: other.max(0.0),
    }
}

/// `rsync --daemon` serving one read-only module, `mod`, on a loopback port.
struct RsyncDaemon {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RsyncDaemon {
    fn start(dir: &Path, source: &Path) -> RsyncDaemon {
        std::fs::create_dir_all(dir).expect("create the rsync daemon's directory");
        // As root the daemon would drop to `nobody`, who cannot read a 0700 scratch dir.
        // SAFETY: geteuid(2) cannot fail.
        let ids = if unsafe { libc::geteuid() } == 0 {
            "  uid = root\n  gid = root\n"
        } else {
            ""
        };
        let config = dir.join("rsyncd.conf");
        std::fs::write(
            &config,
            format!(
                "use chroot = no\npid file = {}\n[mod]\n  path = {}\n  read only = yes\n  \
                 use chroot = no\n{ids}",
                dir.join("rsyncd.pid").display(),
                source.display()
            ),
        )
        .expect("write rsyncd.conf");
        let port = free_port();
        let child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", config.display()))
            .arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .arg(format!("--log-file={}", dir.join("rsyncd.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rsync --daemon (apt-get install -y rsync)");
        wait_until(
            "rsync --daemon to listen",
            Instant::now() + DEADLINE,
            Duration::from_millis(10),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        RsyncDaemon {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Times `rsync -a EXTRA rsync://…/mod/ DEST/` into an empty `dest`, then removes it.
    fn copy(&self, dest: &Path, extra: &[&str], expect_files: u64) -> Transfer {
        let _ = std::fs::remove_dir_all(dest);
        std::fs::create_dir_all(dest).expect("create the rsync destination");
        sync_disks();
        // The daemon forks a sender per connection and reaps it: its children's CPU.
        let daemon_cpu = cpu_of(self.child.id(), true);
        let client_cpu = children_cpu();
        let (busy, own) = (machine_busy(), own_cpu());
        let t = Instant::now();
        let status = Command::new("rsync")
            .arg("-a")
            .args(extra)
            .arg(format!("rsync://127.0.0.1:{}/mod/", self.port))
            .arg(format!("{}/", dest.display()))
            .stdin(Stdio::null())
            .status()
            .expect("run rsync");
        let took = t.elapsed();
        let receiver = children_cpu() - client_cpu;
        assert!(status.success(), "rsync failed: {status}");
        // The daemon reaps its per-connection sender right after the client is done: wait
        // until it has no child left, so the sender's time is in its children's.
        let daemon = self.child.id();
        wait_until(
            "rsync's sender to exit",
            Instant::now() + DEADLINE,
            Duration::from_millis(5),
            || {
                let busy =
                    std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
                        .is_ok_and(|c| !c.trim().is_empty());
                (!busy).then_some(())
            },
        );
        let sender = cpu_of(daemon, true) - daemon_cpu;
        let other = machine_busy() - busy - (own_cpu() - own) - receiver.total() - sender.total();
        let copied = std::fs::read_dir(dest)
            .expect("read the destination")
            .count() as u64;
        assert_eq!(copied, expect_files, "rsync copied every file");
        std::fs::remove_dir_all(dest).expect("remove the rsync destination");
        Transfer {
            wall: took,
            receiver,
            sender,
            other: other.max(0.0),
        }
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
