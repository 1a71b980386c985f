//! Objects kept in an S3 bucket (`--objects-backend s3`): replication between two buckets
//! against rclone, and the memory a large (multipart) push takes.
//!
//! Everything runs as real processes on loopback: one single-node Garage server (the test
//! harness's, `tests/common/garage.rs`) holds every bucket, `geo-agent run` sites come from
//! the release build, rclone is the Debian package. No fixed sleep is used to synchronise.
//!
//! 1. **Replication from a primary's bucket to a secondary's bucket, against rclone.** A
//!    fresh primary keeping its objects in bucket `primary` (prefix `primary/`) gets 1,000
//!    objects of 1 MiB of random bytes pushed over gRPC, 8 at a time (not timed). Then, taking
//!    turns, `OBJECTS_BENCH_REPEAT` times each (default 3), each into a fresh, empty bucket:
//!    - a fresh secondary keeping its objects in a bucket of its own, timed from its spawn
//!      until its `/objects` shows every object synced and its event log at the primary's
//!      head. It fetches each object from the primary over gRPC (the primary reads it from
//!      its bucket) and uploads it to its own bucket with one PUT;
//!    - `rclone sync --checksum` of the primary's `objects/` prefix, streamed through rclone
//!      (`--disable Copy`: a GET and a PUT per object, as geo-agent moves the bytes) with
//!      rclone's default concurrency (`--transfers 4 --checkers 8`);
//!    - the same without `--disable Copy`: source and destination are then one rclone remote
//!      (one key may use both buckets), and rclone copies server-side (`CopyObject`; the
//!      bench counts rclone's `-v` lines to say which it did).
//!
//!    Once each: rclone streamed with `--transfers 8`, the secondary with
//!    `--sync-concurrency 16` and `32` (the default is 8), and, to see where the time goes,
//!    the primary's side alone (every object `Pull`ed into the bench's memory, 8 at a time),
//!    GETs of every object from the primary's bucket, and PUTs of those bytes into a fresh
//!    bucket, 8 at a time, in the bench process through the S3 client geo-agent uses
//!    (`object_store`): with the payload's SHA-256 in the signature (as geo-agent signs
//!    over plain HTTP beyond loopback), and unsigned (`UNSIGNED-PAYLOAD`, as geo-agent
//!    sends them over TLS or loopback, and as rclone does).
//! 2. **Peak RSS during a 1 GiB multipart push.** 1 GiB, generated chunk by chunk (never
//!    whole in memory), pushed over gRPC to a fresh primary on S3, then to a fresh primary
//!    keeping its objects on disk; `VmHWM` of each after its push, and the push's rate.
//!
//! Each timed copy also reports the CPU seconds of its receiving side (the secondary or
//! rclone), of the sending side (the primary), of Garage, and of every other process on the
//! machine (another build running meanwhile shows there), and the load average before the
//! run and after it.
//!
//! Environment (see `benches/support/mod.rs`): `OBJECTS_BENCH_SCALE` (the object count and
//! the large object's size), `OBJECTS_BENCH_DIR`, `OBJECTS_BENCH_KEEP`, `OBJECTS_BENCH_REPEAT`,
//! `OBJECTS_BENCH_SYNC_CONCURRENCY` (then the `16` and `32` runs are left out),
//! `OBJECTS_BENCH_SECONDARY_ARGS`, `GEO_AGENT_BIN`.
//!
//! Run with `cargo bench --bench s3` (garage and rclone must be on PATH).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bearer, register, site_token, Bucket, Garage, SiteProc, Spawn};
use geo_agent::server::pb;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::ObjectStoreExt;
use rand::RngCore;
use support::*;
use tokio::task::JoinSet;

/// The primary's prefix in its bucket.
const PRIMARY_PREFIX: &str = "primary";
/// Every secondary's prefix in its own bucket.
const SECONDARY_PREFIX: &str = "secondary";
/// Bytes per gRPC message of a push.
const WIRE_CHUNK: usize = 1 << 20;

fn main() {
    support::run("s3", |bench, rt| {
        let Some(garage) = Garage::start() else {
            return "skipped: garage or rclone is not installed".to_string();
        };
        let load_before = load_average();
        eprintln!("load average: {load_before}");
        let replication = replication(bench, rt, &garage);
        let rss = multipart_push(bench, rt, &garage);
        format!(
            "{replication}\n\n{rss}\n\nload average (1, 5, 15 min): {load_before} before, {} after",
            load_average()
        )
    });
}

// ---------------------------------------------------------------------------------------
// 1. Replication between buckets
// ---------------------------------------------------------------------------------------

/// One timed copy: its wall time and the CPU seconds of each party.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    /// The secondary, or rclone.
    receiver: Cpu,
    /// The primary (none for rclone).
    sender: f64,
    garage: f64,
    /// Every other process but the bench.
    other: f64,
}

/// CPU meters at the start of a copy.
struct Meters {
    busy: f64,
    own: f64,
    own_split: Cpu,
    children: Cpu,
    garage: f64,
    sender: f64,
}

impl Meters {
    fn start(garage: &Garage, sender: Option<&SiteProc>) -> Meters {
        Meters {
            busy: machine_busy(),
            own: own_cpu(),
            own_split: cpu_of(std::process::id(), false),
            children: children_cpu(),
            garage: garage_cpu(garage),
            sender: sender.map_or(0.0, |s| s.cpu().total()),
        }
    }

    /// The copy's [`Run`].
    fn finish(
        &self,
        wall: Duration,
        garage: &Garage,
        sender: Option<&SiteProc>,
        receiver: Receiver,
    ) -> Run {
        let own = own_cpu() - self.own;
        let sender = sender.map_or(0.0, |s| s.cpu().total() - self.sender);
        let garage = garage_cpu(garage) - self.garage;
        let (receiver, others) = match receiver {
            Receiver::Site(site) => (site.cpu(), site.cpu().total() + own),
            Receiver::Child => {
                let child = children_cpu() - self.children;
                (child, child.total() + own)
            }
            Receiver::Bench => (cpu_of(std::process::id(), false) - self.own_split, own),
        };
        let other = machine_busy() - self.busy - others - sender - garage;
        Run {
            wall,
            receiver,
            sender,
            garage,
            other: other.max(0.0),
        }
    }
}

/// Who received the bytes: a site (all of its CPU counts: it started with the copy), a
/// child process the copy reaped (rclone), or the bench itself.
enum Receiver<'a> {
    Site(&'a SiteProc),
    Child,
    Bench,
}

fn garage_cpu(garage: &Garage) -> f64 {
    garage.pid().map_or(0.0, |pid| cpu_of(pid, false).total())
}

fn replication(bench: &Bench, rt: &tokio::runtime::Runtime, garage: &Garage) -> String {
    let n = bench.scaled(1000.0) as u64;
    let bytes = n * MIB;
    let label = format!("{} objects x 1 MiB ({})", group(n), size_label(bytes));

    let source = garage.bucket("primary");
    eprintln!("{label}: pushing to a fresh primary on S3…");
    let mut primary = primary_with(
        bench,
        "primary",
        &source.site_args(&bench.dir, PRIMARY_PREFIX),
    );
    let items: Vec<_> = (0..n)
        .map(|i| {
            (format!("big/big-{i:04}"), move || {
                let mut buf = vec![0u8; MIB as usize];
                rand::rng().fill_bytes(&mut buf);
                buf
            })
        })
        .collect();
    let t = Instant::now();
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
    let source_keys = source.keys(&format!("{PRIMARY_PREFIX}/objects")).len() as u64;
    assert_eq!(source_keys, n, "one key per object in the primary's bucket");
    eprintln!(
        "  pushed in {:.1} s ({:.0} MB/s); primary: {at_primary:?}",
        pushed.as_secs_f64(),
        bytes as f64 / 1e6 / pushed.as_secs_f64()
    );
    let head = at_primary.events_applied;

    let mut fresh = {
        let mut made = 0;
        move |what: &str| {
            made += 1;
            format!("{what}-{made}")
        }
    };
    let (mut geo, mut streamed, mut server_side) = (Vec::new(), Vec::new(), Vec::new());
    let mut copied_how = String::new();
    for round in 1..=bench.repeat {
        eprintln!(
            "  round {round} of {} (load {})",
            bench.repeat,
            load_average()
        );
        let dest = garage.bucket(&fresh("secondary"));
        geo.push(geo_sync(
            bench,
            garage,
            &primary,
            &dest,
            head,
            n,
            bench.sync_concurrency,
        ));
        let dest = garage.bucket_for(&fresh("rclone"), &source);
        streamed.push(rclone_sync(garage, &source, &dest, n, 4, false).0);
        let dest = garage.bucket_for(&fresh("rclone"), &source);
        let (run, how) = rclone_sync(garage, &source, &dest, n, 4, true);
        server_side.push(run);
        copied_how = how;
    }
    // Once each: rclone as wide as geo-agent, and wider sync.
    let dest = garage.bucket_for(&fresh("rclone"), &source);
    let streamed8 = rclone_sync(garage, &source, &dest, n, 8, false).0;
    let mut variants = Vec::new();
    if bench.sync_concurrency.is_none() {
        for c in [16, 32] {
            let dest = garage.bucket(&fresh("secondary"));
            variants.push((
                c,
                geo_sync(bench, garage, &primary, &dest, head, n, Some(c)),
            ));
        }
    }
    // Where the time goes: the primary's side, then the bucket's GETs and PUTs alone.
    let pulled = pull_floor(bench, rt, garage, &primary, n);
    let floors = [
        garage.bucket(&fresh("floor")),
        garage.bucket(&fresh("floor")),
    ];
    let (got, put, unsigned) = bucket_floor(rt, garage, &source, &floors, n);
    primary.stop();

    let mut table = Table::new(&[
        "seconds", "range", "MB/s", "ratio", "dst usr", "dst sys", "src cpu", "garage", "other",
    ]);
    table.section(&label);
    let geo_range = range(&mut geo);
    let geo = geo[geo.len() / 2];
    let (streamed_range, server_range) = (range(&mut streamed), range(&mut server_side));
    let (streamed, server_side) = (
        streamed[streamed.len() / 2],
        server_side[server_side.len() / 2],
    );
    let ratio = |t: &Run| format!("{:.2}", geo.run.wall.as_secs_f64() / t.wall.as_secs_f64());
    let row = |t: &Run, range: String, ratio: String| {
        let s = t.wall.as_secs_f64();
        [
            format!("{s:.2}"),
            range,
            format!("{:.0}", bytes as f64 / 1e6 / s),
            ratio,
            format!("{:.2}", t.receiver.user),
            format!("{:.2}", t.receiver.sys),
            format!("{:.2}", t.sender),
            format!("{:.2}", t.garage),
            format!("{:.2}", t.other),
        ]
    };
    let concurrency = bench.sync_concurrency.unwrap_or(8);
    table.row(
        &format!("geo-agent secondary (--sync-concurrency {concurrency}), spawn -> all synced"),
        &row(&geo.run, geo_range, String::new()),
    );
    table.row(
        "  of which: spawn -> serving (the bucket checked and claimed)",
        &[format!("{:.2}", geo.serving.as_secs_f64())],
    );
    table.row(
        "  of which: spawn -> event log at the primary's head",
        &[format!("{:.2}", geo.head.as_secs_f64())],
    );
    table.row(
        "rclone sync --checksum, streamed (--disable Copy), --transfers 4",
        &row(&streamed, streamed_range, ratio(&streamed)),
    );
    table.row(
        "rclone sync --checksum, streamed (--disable Copy), --transfers 8 (1 run)",
        &row(&streamed8, String::new(), ratio(&streamed8)),
    );
    table.row(
        &format!("rclone sync --checksum, one remote, --transfers 4: {copied_how}"),
        &row(&server_side, server_range, ratio(&server_side)),
    );
    for (c, v) in &variants {
        table.row(
            &format!("geo-agent --sync-concurrency {c} (1 run; ratio vs streamed, 4)"),
            &row(
                &v.run,
                String::new(),
                format!(
                    "{:.2}",
                    v.run.wall.as_secs_f64() / streamed.wall.as_secs_f64()
                ),
            ),
        );
    }
    table.row(
        "primary's side only: Pull into memory, 8 at a time",
        &row(&pulled, String::new(), String::new()),
    );
    table.row(
        "bucket only: GET from the primary's bucket, 8 at a time (object_store)",
        &row(&got, String::new(), String::new()),
    );
    table.row(
        "bucket only: PUT those bytes to a fresh bucket, 8 at a time, payload signed",
        &row(&put, String::new(), String::new()),
    );
    table.row(
        "  the same PUTs unsigned (UNSIGNED-PAYLOAD: geo-agent here, and rclone)",
        &row(&unsigned, String::new(), String::new()),
    );
    let s = pushed.as_secs_f64();
    table.row(
        "for scale: pushing it all to the primary, 8 at a time",
        &[
            format!("{s:.2}"),
            String::new(),
            format!("{:.0}", bytes as f64 / 1e6 / s),
        ],
    );
    format!(
        "replication between two buckets on one Garage server, loopback (MB = 10^6 bytes; \
         ratio = geo-agent time / that time; CPU seconds during the copy: user and system \
         of the receiving side (dst: the secondary, rclone, or the bench for the floors), \
         user + system of the primary (src), of Garage, and of every other process but the \
         bench (other))\n{}",
        table.render()
    )
}

/// `runs`' range, "min-max" seconds; sorts them by time.
fn range<T: AsRef<Run>>(runs: &mut [T]) -> String {
    runs.sort_by_key(|r| r.as_ref().wall);
    format!(
        "{:.2}-{:.2}",
        runs[0].as_ref().wall.as_secs_f64(),
        runs[runs.len() - 1].as_ref().wall.as_secs_f64()
    )
}

impl AsRef<Run> for Run {
    fn as_ref(&self) -> &Run {
        self
    }
}

/// A secondary's sync: the copy, and when it served and reached the primary's head.
#[derive(Clone, Copy)]
struct GeoRun {
    run: Run,
    serving: Duration,
    head: Duration,
}

impl AsRef<Run> for GeoRun {
    fn as_ref(&self) -> &Run {
        &self.run
    }
}

/// A primary (registering itself and the bench's reader) with more `run` flags.
fn primary_with(bench: &Bench, name: &str, extra: &[String]) -> SiteProc {
    let _ = std::fs::remove_dir_all(bench.dir.join(name));
    let site = Spawn::new(&bench.dir, name)
        .bin(&bench.bin)
        .rust_log(None)
        .args(["--role", "primary"])
        .args(extra)
        .start();
    register(
        &site,
        &bench.admin_token,
        name,
        &site_token(&bench.dir, name),
    );
    register(&site, &bench.admin_token, BENCH_SITE, &bench.site_token);
    site
}

/// Starts a fresh secondary of `primary` keeping its objects in `dest`, times it until it
/// holds all `n` objects synced at event `head`, checks the bucket, and stops it.
fn geo_sync(
    bench: &Bench,
    garage: &Garage,
    primary: &SiteProc,
    dest: &Bucket,
    head: u64,
    n: u64,
    concurrency: Option<usize>,
) -> GeoRun {
    let mut args = bench.secondary_args.clone();
    args.extend(dest.site_args(&bench.dir, SECONDARY_PREFIX));
    let on_s3 = Bench {
        secondary_args: args,
        ..bench.clone()
    };
    let label = concurrency.map_or(String::new(), |c| format!(" (--sync-concurrency {c})"));
    eprintln!("  a fresh secondary{label} into bucket {}…", dest.name);
    sync_disks();
    let meters = Meters::start(garage, Some(primary));
    let since = Instant::now();
    let mut secondary = on_s3.secondary_with("secondary", primary, concurrency);
    let serving = since.elapsed();
    // A site on S3 has no object files to count: `/objects` from the start, backing off
    // (at 1,000 objects a poll costs about a millisecond).
    let synced = secondary.poll_synced(since, head, n, |took| POLL_MIN.max(took * POLL_BACKOFF));
    let (wall, polls) = (synced.done, synced.polls);
    let at_head = synced.first_at_head.unwrap_or(wall);
    let run = meters.finish(wall, garage, Some(primary), Receiver::Site(&secondary));
    eprintln!(
        "  synced in {:.2} s (serving after {:.0} ms, event log at the head after {:.2} s, \
         {polls} /objects polls); CPU: secondary {:?}, primary {:.2}, garage {:.2}, \
         other {:.2}; peak RSS {} KiB",
        wall.as_secs_f64(),
        serving.as_secs_f64() * 1e3,
        at_head.as_secs_f64(),
        run.receiver,
        run.sender,
        run.garage,
        run.other,
        secondary.status_kib("VmHWM"),
    );
    eprintln!("  secondary's CPU by thread: {}", secondary.thread_cpu());
    let keys = dest.keys(&format!("{SECONDARY_PREFIX}/objects")).len() as u64;
    assert_eq!(keys, n, "one key per object in the secondary's bucket");
    secondary.stop();
    GeoRun {
        run,
        serving,
        head: at_head,
    }
}

/// Times `rclone sync --checksum` of the primary's objects into the empty bucket `dest`
/// (which `source`'s key may use), `--transfers transfers --checkers 8`; streamed through
/// rclone unless `server_side` (then rclone's default, a server-side copy, applies). Returns
/// the copy and what rclone's `-v` log says it did.
fn rclone_sync(
    garage: &Garage,
    source: &Bucket,
    dest: &Bucket,
    n: u64,
    transfers: usize,
    server_side: bool,
) -> (Run, String) {
    let transfers = transfers.to_string();
    let from = source.remote(&format!("{PRIMARY_PREFIX}/objects"));
    let to = dest.remote("objects");
    let mut args = vec![
        "sync",
        "--checksum",
        "-v",
        "--transfers",
        &transfers,
        "--checkers",
        "8",
    ];
    if !server_side {
        args.extend(["--disable", "Copy"]);
    }
    args.extend([from.as_str(), to.as_str()]);
    eprintln!("  rclone {}", args.join(" "));
    sync_disks();
    let meters = Meters::start(garage, None);
    let t = Instant::now();
    let out = source
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run rclone");
    let wall = t.elapsed();
    let run = meters.finish(wall, garage, None, Receiver::Child);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rclone sync failed: {log}");
    let server = log.matches("(server-side copy)").count();
    let new = log.matches("Copied (new)").count();
    let how = match (server, new) {
        (s, 0) if s as u64 == n => "server-side copy".to_string(),
        (0, c) if c as u64 == n => "streamed".to_string(),
        (s, c) => format!("{s} server-side copies, {c} streamed"),
    };
    eprintln!(
        "  rclone: {:.2} s, {how}; CPU: rclone {:?}, garage {:.2}, other {:.2}",
        wall.as_secs_f64(),
        run.receiver,
        run.garage,
        run.other
    );
    let keys = dest.keys("objects").len() as u64;
    assert_eq!(keys, n, "rclone copied every object");
    (run, how)
}

/// Pulls every object from `primary` into memory, 8 at a time over one connection: the
/// primary's reads from its bucket and its gRPC sends, without the secondary's uploads.
fn pull_floor(
    bench: &Bench,
    rt: &tokio::runtime::Runtime,
    garage: &Garage,
    primary: &SiteProc,
    n: u64,
) -> Run {
    sync_disks();
    let meters = Meters::start(garage, Some(primary));
    let t = Instant::now();
    let names = (0..n).map(|i| format!("big/big-{i:04}")).collect();
    let got = rt.block_on(pull_all(
        primary,
        &bench.admin_token,
        names,
        PUSH_CONCURRENCY,
    ));
    let wall = t.elapsed();
    assert_eq!(got, n * MIB, "pulled every byte");
    let run = meters.finish(wall, garage, Some(primary), Receiver::Bench);
    eprintln!("  Pull only: {:.2} s", wall.as_secs_f64());
    run
}

/// The bucket alone, in the bench process with geo-agent's S3 client: every object of the
/// primary's bucket fetched into memory, 8 at a time, then those bytes PUT into the empty
/// bucket `dests[0]`, 8 at a time, signed (the payload's SHA-256 in the signature, as
/// geo-agent signs beyond loopback without TLS), and into `dests[1]` unsigned (as
/// geo-agent sends here). (GETs, PUTs, unsigned PUTs.)
fn bucket_floor(
    rt: &tokio::runtime::Runtime,
    garage: &Garage,
    source: &Bucket,
    dests: &[Bucket; 2],
    n: u64,
) -> (Run, Run, Run) {
    let from = Arc::new(store(source, false));
    let listed: Vec<Key> = source
        .keys(&format!("{PRIMARY_PREFIX}/objects"))
        .into_iter()
        .map(Key::from)
        .collect();
    assert_eq!(listed.len() as u64, n);
    sync_disks();
    let meters = Meters::start(garage, None);
    let t = Instant::now();
    let fetched: Vec<(Key, Bytes)> = rt.block_on(in_parallel(listed, move |key| {
        let from = Arc::clone(&from);
        async move {
            let got = from.get(&key).await;
            let bytes = match got {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = bytes.unwrap_or_else(|e| panic!("GET {key}: {e}"));
            (key, bytes)
        }
    }));
    let wall = t.elapsed();
    let got = meters.finish(wall, garage, None, Receiver::Bench);
    let total: u64 = fetched.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(total, n * MIB, "fetched every byte");
    eprintln!("  GET only: {:.2} s", wall.as_secs_f64());

    let mut puts = dests.iter().zip([false, true]).map(|(dest, unsigned)| {
        let to = Arc::new(store(dest, unsigned));
        let fetched = fetched.clone();
        sync_disks();
        let meters = Meters::start(garage, None);
        let t = Instant::now();
        rt.block_on(in_parallel(fetched, move |(key, bytes)| {
            let to = Arc::clone(&to);
            async move {
                to.put(&key, bytes.into())
                    .await
                    .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
            }
        }));
        let wall = t.elapsed();
        let put = meters.finish(wall, garage, None, Receiver::Bench);
        let how = if unsigned { ", unsigned" } else { "" };
        eprintln!("  PUT only{how}: {:.2} s", wall.as_secs_f64());
        let keys = dest.keys(PRIMARY_PREFIX).len() as u64;
        assert_eq!(keys, n, "PUT every object");
        put
    });
    let signed = puts.next().expect("a run");
    let unsigned = puts.next().expect("a run");
    (got, signed, unsigned)
}

/// Runs `work` on every item, [`PUSH_CONCURRENCY`] at a time; the results in no order.
async fn in_parallel<I, T, F, Fut>(items: Vec<I>, work: F) -> Vec<T>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        while tasks.len() >= PUSH_CONCURRENCY {
            out.push(tasks.join_next().await.expect("a task").expect("a task"));
        }
        tasks.spawn(work(item));
    }
    while let Some(done) = tasks.join_next().await {
        out.push(done.expect("a task"));
    }
    out
}

/// An S3 client for `bucket`, configured as geo-agent configures its own; `unsigned`
/// leaves the payload's SHA-256 out of the signature (geo-agent does over TLS or
/// loopback).
fn store(bucket: &Bucket, unsigned: bool) -> AmazonS3 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_endpoint(&bucket.endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket.name)
        .with_region(&bucket.region)
        .with_access_key_id(&bucket.key_id)
        .with_secret_access_key(&bucket.secret)
        .with_unsigned_payload(unsigned)
        .build()
        .expect("an S3 client")
}

// ---------------------------------------------------------------------------------------
// 2. Peak RSS during a multipart push
// ---------------------------------------------------------------------------------------

fn multipart_push(bench: &Bench, rt: &tokio::runtime::Runtime, garage: &Garage) -> String {
    let size = bench.big_object();
    let label = size_label(size);
    let mut table = Table::new(&[
        "VmHWM MiB",
        "idle MiB",
        "seconds",
        "MB/s",
        "garage",
        "other",
    ]);
    table.section(&format!(
        "one {label} object, pushed over gRPC in 1 MiB messages from a generator"
    ));
    let bucket = garage.bucket("rss");
    let on_s3 = bucket.site_args(&bench.dir, PRIMARY_PREFIX);
    // The primary on disk goes first: its copy is gone (with its data directory) before
    // Garage stores the second GiB, which keeps the bench's peak disk use lower.
    let mut rows = Vec::new();
    for (what, extra) in [("on disk", Vec::new()), ("on S3 (multipart)", on_s3)] {
        eprintln!("peak RSS: pushing {label} to a fresh primary {what}…");
        let mut primary = primary_with(bench, "rss-primary", &extra);
        let idle = primary.status_kib("VmHWM");
        sync_disks();
        let meters = Meters::start(garage, Some(&primary));
        let t = Instant::now();
        rt.block_on(push_generated(
            &primary,
            &bench.admin_token,
            "rss/object",
            size,
        ));
        let took = t.elapsed();
        let peak = primary.status_kib("VmHWM");
        let run = meters.finish(took, garage, Some(&primary), Receiver::Bench);
        eprintln!(
            "  pushed in {:.2} s: VmHWM {:.1} MiB (idle {:.1} MiB); CPU: primary {:.2}, \
             garage {:.2}, the bench (generating, sending) {:.2}, other {:.2}",
            took.as_secs_f64(),
            peak as f64 / 1024.0,
            idle as f64 / 1024.0,
            run.sender,
            run.garage,
            run.receiver.total(),
            run.other
        );
        let counts = primary.counts();
        assert_eq!(
            counts.objects, 1,
            "the primary holds the object: {counts:?}"
        );
        rows.push((
            format!("primary {what}"),
            [
                format!("{:.1}", peak as f64 / 1024.0),
                format!("{:.1}", idle as f64 / 1024.0),
                format!("{:.2}", took.as_secs_f64()),
                format!("{:.0}", size as f64 / 1e6 / took.as_secs_f64()),
                format!("{:.2}", run.garage),
                format!("{:.2}", run.other),
            ],
        ));
        primary.stop();
    }
    for (label, values) in rows.iter().rev() {
        table.row(label, values);
    }
    assert_eq!(
        bucket.keys(&format!("{PRIMARY_PREFIX}/objects")).len(),
        1,
        "the pushed object is in the bucket"
    );
    format!(
        "peak RSS of a primary taking a large push (VmHWM after the push; 'idle' is VmHWM \
         before it; MB = 10^6 bytes; CPU seconds of Garage and of every other process but \
         the bench and the primary meanwhile)\n{}",
        table.render()
    )
}

/// Pushes `size` bytes as `name`, generated one message at a time as the stream is polled:
/// a random 1 MiB block with the message's index in its first bytes, so no two blocks are
/// alike (Garage stores identical blocks once).
async fn push_generated(site: &SiteProc, token: &str, name: &str, size: u64) {
    let mut base = vec![0u8; WIRE_CHUNK];
    rand::rng().fill_bytes(&mut base);
    let header = pb::PushRequest {
        part: Some(pb::push_request::Part::Header(pb::PushHeader {
            name: name.to_string(),
            size: Some(size),
            ..Default::default()
        })),
    };
    let trailer = pb::PushRequest {
        part: Some(pb::push_request::Part::Trailer(pb::PushTrailer {
            size,
            sha256: String::new(),
        })),
    };
    let messages = size.div_ceil(WIRE_CHUNK as u64);
    let chunks = (0..messages).map(move |i| {
        let len = (size - i * WIRE_CHUNK as u64).min(WIRE_CHUNK as u64) as usize;
        let mut chunk = base[..len].to_vec();
        let stamp = i.to_le_bytes();
        let n = stamp.len().min(len);
        chunk[..n].copy_from_slice(&stamp[..n]);
        pb::PushRequest {
            part: Some(pb::push_request::Part::Chunk(chunk)),
        }
    });
    let stream = tokio_stream::iter(
        std::iter::once(header)
            .chain(chunks)
            .chain(std::iter::once(trailer)),
    );
    let mut client = site.objects().await;
    if let Err(s) = client.push(bearer(stream, token)).await {
        panic!("push {name}: {s}");
    }
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
