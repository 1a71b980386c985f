//! Object replication: how fast a fresh secondary copies a primary's objects (against
//! `rsync` of the same files), how fast the verifier hashes (against `sha256sum`), how fast
//! a secondary catches up on a long event log, how much memory a 1 GiB transfer takes, and
//! what mutual TLS costs against plain gRPC.
//!
//! Everything runs as real processes on loopback: `geo-agent run` sites from the release
//! build (bound to port 0; the bench reads the `serving gRPC on … and HTTP on …` line), an
//! `rsync --daemon`, `rsync` and `sha256sum` clients. The bench process itself pushes
//! objects over gRPC and waits on conditions with deadlines; no fixed sleep is used to
//! synchronise. Page caches are not dropped: the data sets are written once and stay cached
//! (the machine has far more RAM than the data), so transfers read from memory and write to
//! the disk. `sync(2)` runs before each timed part so earlier dirty pages are not flushed
//! while it runs.
//!
//! 1. **Replication vs rsync.** Two data sets of random bytes: 1,000 files of 1 MiB and
//!    20,000 files of 4 KiB. A fresh primary gets every file pushed (8 pushes at a time, not
//!    timed); then a fresh secondary is started and timed from its spawn until its
//!    `/objects` says every object is synced and its event log is at the primary's head.
//!    The same files, as a plain directory behind `rsync --daemon` (module `read only`, no
//!    chroot), are copied with `rsync -a rsync://…/mod/ DEST/` into an empty directory, once
//!    as is and once with `--fsync` (geo-agent fsyncs every file before it records it, so
//!    `--fsync` is the like-for-like comparison). The three take turns, 3 times each, and
//!    the median counts. Each copy also reports the CPU time of the receiving and the
//!    sending side and of every other process on the machine (another build running at the
//!    same time shows there).
//!
//!    How the end is seen without disturbing it: `/objects` scans the whole registry (about
//!    20 ms for 20,000 objects), so the bench counts the files in the secondary's object
//!    directory until they are all there and only then polls `/objects` every 20 ms. The
//!    moment the event log reached the primary's head comes from a `StreamEvents` call on
//!    the secondary from that index, which delivers the entry once it is durable there.
//!
//!    To see where the time goes, once each: the secondary with `--sync-concurrency 1` and
//!    `32` (the default is 8), every object pulled from the primary into the bench's memory
//!    (the transfer alone), and the secondary's file writes alone (write, fsync, rename,
//!    fsync the directory, 8 threads, no network and no database). Also, once: how much of
//!    a core the synced secondary uses with nothing to do.
//! 2. **Verification vs sha256sum.** The verifier's own function, `digest_file`, over the
//!    1,000 files of 1 MiB on one thread, against one `sha256sum f1 f2 …` process. Each runs
//!    twice; the second (warm) run counts.
//! 3. **Catch-up.** A fresh primary commits 100,000 pushes of tiny objects over 1,000 names
//!    (100 versions each, every version different bytes). Then a fresh secondary starts and
//!    is timed until its event log is at the primary's head (events/s), and until every
//!    object is synced.
//! 4. **Peak RSS** (`VmHWM` in `/proc/<pid>/status`) of a fresh primary while a 1 GiB file
//!    is pushed to it with the CLI; then of a fresh secondary while it syncs that object
//!    (and of the primary serving it); then of the secondary while it forwards a 1 GiB push
//!    (the same bytes under the same name, so the secondary has nothing to fetch after it).
//!    Between the parts the peak is reset by writing `5` to `/proc/<pid>/clear_refs`.
//! 5. **What TLS costs.** The same measurements over plain gRPC and over mutual TLS
//!    (`--tls-cert`, `--tls-key`, `--tls-ca`, `--require-client-cert` on every site; a CA,
//!    a site certificate and a client certificate made with rcgen, ECDSA P-256): a fresh
//!    secondary syncing the 1,000 files of 1 MiB (timed as in part 1), and one
//!    `geo-agent push` of 1 GiB to a fresh primary (as in part 4). Each runs
//!    `OBJECTS_BENCH_REPEAT` times per transport, the two taking turns; the median counts,
//!    with the range and the ratio TLS / plain of the median times.
//!
//! Environment:
//! - `OBJECTS_BENCH_SCALE=0.1` scales every size (file counts, events, the 1 GiB object);
//!   default 1.
//! - `OBJECTS_BENCH_ONLY=replication,verify,catchup,rss,tls` runs only those parts.
//! - `OBJECTS_BENCH_DIR=/path` puts the scratch directory there (default: the temp dir).
//! - `OBJECTS_BENCH_SYNC_CONCURRENCY=N` passes `--sync-concurrency N` to the secondaries.
//! - `OBJECTS_BENCH_SECONDARY_ARGS="--flag value"` adds `geo-agent run` flags to every
//!   secondary.
//! - `OBJECTS_BENCH_STRACE=DIR` runs each secondary under `strace -f -c -o DIR/<name>`: a
//!   diagnostic (strace slows it down a lot), not a measurement.
//! - `OBJECTS_BENCH_REPEAT=N`: runs of each timed copy in the rsync comparison and of each
//!   measurement in the TLS part (default 3; the median is reported, with the range).
//! - `OBJECTS_BENCH_IDLE_SECS=S`: the window for the idle secondary's CPU (default 3).
//! - `OBJECTS_BENCH_KEEP=1` keeps the scratch directory (the sites' logs) at the end.
//! - `GEO_AGENT_BIN=/path/to/geo-agent` uses another binary.
//!
//! Run with `cargo bench --bench objects` (rsync and sha256sum must be on PATH).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use geo_agent::objects::files::digest_file;
use geo_agent::server::client::connect;
use geo_agent::server::pb;
use geo_agent::server::tls::ClientTls;
use rand::RngCore;
use tokio::task::JoinSet;

const MIB: u64 = 1024 * 1024;
/// How long a site may take to print where it serves.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long any transfer may take before the bench gives up.
const WAIT_DEADLINE: Duration = Duration::from_secs(900);
/// Pushes in flight while filling a primary.
const PUSH_CONCURRENCY: usize = 8;
/// Shortest pause between two `/objects` polls.
const POLL_MIN: Duration = Duration::from_millis(20);
/// `/objects` is a full scan of the registry: between polls wait this many times as long
/// as the last poll took, so polling costs the polled site at most ~1/(1+this) of a core.
const POLL_BACKOFF: u32 = 9;

fn main() {
    let started = Instant::now();
    let scale: f64 = env_or("OBJECTS_BENCH_SCALE", 1.0);
    assert!(scale > 0.0, "OBJECTS_BENCH_SCALE must be positive");
    let only: Option<HashSet<String>> = std::env::var("OBJECTS_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let wants = |part: &str| only.as_ref().is_none_or(|o| o.contains(part));
    let scaled = |n: f64| ((n * scale).round() as usize).max(1);

    let base = std::env::var_os("OBJECTS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("objects-bench-")
        .tempdir_in(&base)
        .expect("create the scratch directory");
    let bench = Bench::new(dir.path());
    eprintln!(
        "geo-agent: {}\nscratch: {}\nscale: {scale}",
        bench.bin.display(),
        dir.path().display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let mut out = Vec::<String>::new();

    let big_count = scaled(1000.0);
    let small_count = scaled(20000.0);
    let need_big = wants("replication") || wants("verify") || wants("tls");
    let big_object = ((1024.0 * scale).round() as u64).max(1) * MIB;
    let big = need_big.then(|| {
        let t = Instant::now();
        let set = DataSet::generate(&bench.dir.join("src-big"), "big", big_count, MIB as usize);
        eprintln!("generated {} in {:.1?}", set.describe(), t.elapsed());
        set
    });

    if wants("replication") {
        let small = {
            let t = Instant::now();
            let set = DataSet::generate(&bench.dir.join("src-small"), "small", small_count, 4096);
            eprintln!("generated {} in {:.1?}", set.describe(), t.elapsed());
            set
        };
        let mut table = Table::new(&[
            "seconds", "range", "MB/s", "files/s", "ratio", "dst usr", "dst sys", "src cpu",
            "other",
        ]);
        for set in [big.as_ref().expect("generated above"), &small] {
            replication(&bench, &runtime, set, &mut table);
        }
        out.push(format!(
            "replication to an empty site, loopback, caches warm (MB = 10^6 bytes; \
             ratio = geo-agent time / rsync time; CPU seconds during the copy: user and system \
             of the receiving side (dst), user + system of the sending side (src), and of \
             every other process on the machine (other))\n{}",
            table.render()
        ));
        drop(small);
    }

    if wants("verify") {
        out.push(verification(big.as_ref().expect("generated above")));
    }
    if wants("tls") {
        let set = big.as_ref().expect("generated above");
        out.push(tls_cost(&bench, &runtime, set, big_object));
    }
    drop(big);

    if wants("catchup") {
        let events = scaled(100_000.0);
        let names = (events / 100).max(1);
        out.push(catch_up(&bench, &runtime, events, names));
    }

    if wants("rss") {
        out.push(peak_rss(&bench, &runtime, big_object));
    }

    println!();
    for section in &out {
        println!("{section}\n");
    }
    println!(
        "total bench time: {:.0} s (scale {scale})",
        started.elapsed().as_secs_f64()
    );
    if std::env::var_os("OBJECTS_BENCH_KEEP").is_some() {
        drop(bench);
        eprintln!(
            "kept the scratch directory (site logs): {}",
            dir.keep().display()
        );
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------
// Data sets
// ---------------------------------------------------------------------------------------

/// Files of random bytes in one directory, and the object names they are pushed as.
struct DataSet {
    root: PathBuf,
    /// (object name, file), in name order.
    files: Vec<(String, PathBuf)>,
    file_size: usize,
}

impl DataSet {
    fn generate(root: &Path, prefix: &str, count: usize, file_size: usize) -> DataSet {
        std::fs::create_dir_all(root).expect("create a data-set directory");
        let mut rng = rand::rng();
        let mut buf = vec![0u8; file_size];
        let width = count.to_string().len().max(4);
        let files = (0..count)
            .map(|i| {
                let file = format!("{prefix}-{i:0width$}");
                let path = root.join(&file);
                rng.fill_bytes(&mut buf);
                std::fs::write(&path, &buf).expect("write a data-set file");
                (format!("{prefix}/{file}"), path)
            })
            .collect();
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        DataSet {
            root: root.to_path_buf(),
            files,
            file_size,
        }
    }

    fn bytes(&self) -> u64 {
        (self.files.len() * self.file_size) as u64
    }

    fn describe(&self) -> String {
        format!(
            "{} files x {} ({})",
            group(self.files.len() as u64),
            size_label(self.file_size as u64),
            size_label(self.bytes())
        )
    }
}

impl Drop for DataSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn size_label(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= MIB {
        format!("{:.0} MiB", n as f64 / MIB as f64)
    } else {
        format!("{:.0} KiB", n as f64 / 1024.0)
    }
}

/// 20000 → "20,000".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds since the epoch, to name diagnostic files.
fn now_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sync_disks() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

// ---------------------------------------------------------------------------------------
// geo-agent sites
// ---------------------------------------------------------------------------------------

/// The binary, the scratch directory and the shared token files.
#[derive(Clone)]
struct Bench {
    bin: PathBuf,
    dir: PathBuf,
    admin_token: String,
    site_token: String,
    admin_token_file: PathBuf,
    site_token_file: PathBuf,
    sync_concurrency: Option<usize>,
    strace: Option<PathBuf>,
    /// Runs of each timed copy in the rsync comparison (the median is reported).
    repeat: usize,
    /// More `geo-agent run` flags for every secondary.
    secondary_args: Vec<String>,
    /// With certificates, every site serves mutual TLS and every client presents one.
    tls: Option<TlsFiles>,
}

impl Bench {
    fn new(dir: &Path) -> Bench {
        let bin = std::env::var_os("GEO_AGENT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_geo-agent")));
        let mut rng = rand::rng();
        let admin_token = format!(
            "admin-{:032x}",
            rng.next_u64() as u128 | (rng.next_u64() as u128) << 64
        );
        let site_token = format!(
            "site-{:032x}",
            rng.next_u64() as u128 | (rng.next_u64() as u128) << 64
        );
        let admin_token_file = dir.join("admin-token");
        let site_token_file = dir.join("site-token");
        std::fs::write(&admin_token_file, &admin_token).expect("write the admin token");
        std::fs::write(&site_token_file, &site_token).expect("write the site token");
        let strace = std::env::var_os("OBJECTS_BENCH_STRACE").map(PathBuf::from);
        if let Some(d) = &strace {
            std::fs::create_dir_all(d).expect("create the strace directory");
        }
        Bench {
            bin,
            dir: dir.to_path_buf(),
            admin_token,
            site_token,
            admin_token_file,
            site_token_file,
            sync_concurrency: std::env::var("OBJECTS_BENCH_SYNC_CONCURRENCY")
                .ok()
                .map(|v| {
                    v.parse()
                        .expect("OBJECTS_BENCH_SYNC_CONCURRENCY must be a number")
                }),
            strace,
            repeat: env_or("OBJECTS_BENCH_REPEAT", 3).max(1),
            secondary_args: std::env::var("OBJECTS_BENCH_SECONDARY_ARGS")
                .map(|a| a.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            tls: None,
        }
    }

    /// The same bench, but every site it starts serves mutual TLS (`--tls-cert`,
    /// `--tls-key`, `--tls-ca`, `--require-client-cert`) and every client (secondaries,
    /// the bench, the CLI) presents a certificate. Certificates are made here, in `pki/`.
    fn with_tls(&self) -> Bench {
        Bench {
            tls: Some(TlsFiles::generate(&self.dir.join("pki"))),
            ..self.clone()
        }
    }

    fn primary(&self, name: &str) -> SiteProc {
        self.site(name, &["--role", "primary"])
    }

    fn secondary(&self, name: &str, primary: &SiteProc) -> SiteProc {
        self.secondary_with(name, primary, self.sync_concurrency)
    }

    /// A secondary with `--sync-concurrency` set when `concurrency` is.
    fn secondary_with(
        &self,
        name: &str,
        primary: &SiteProc,
        concurrency: Option<usize>,
    ) -> SiteProc {
        let url = primary.url();
        let mut args = vec!["--role", "secondary", "--primary", &url];
        let concurrency = concurrency.map(|n| n.to_string());
        if let Some(n) = &concurrency {
            args.extend(["--sync-concurrency", n]);
        }
        args.extend(self.secondary_args.iter().map(String::as_str));
        self.site(name, &args)
    }

    /// Starts `geo-agent run` with a fresh data directory, waits for its serving line.
    fn site(&self, name: &str, role: &[&str]) -> SiteProc {
        let data_dir = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&data_dir);
        let log = self.dir.join(format!("{name}.log"));
        let mut args: Vec<String> = [
            "run",
            "--site-id",
            name,
            "--data-dir",
            &data_dir.display().to_string(),
            "--admin-token-file",
            &self.admin_token_file.display().to_string(),
            "--site-token-file",
            &self.site_token_file.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(role.iter().map(|s| s.to_string()));
        if let Some(tls) = &self.tls {
            args.extend(tls.site_args());
        }
        let traced = role.contains(&"secondary") && self.strace.is_some();
        let mut cmd = if traced {
            let out = self
                .strace
                .as_ref()
                .expect("checked above")
                .join(format!("{name}-{}.strace", now_stamp()));
            let mut c = Command::new("strace");
            c.arg("-f")
                .arg("-c")
                .arg("-o")
                .arg(out)
                .arg("--")
                .arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open a site log");
        let mut child = cmd
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn geo-agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split(" serving gRPC on ").nth(1) {
                    let mut parts = rest.split(" and HTTP on ");
                    let grpc = parts.next().and_then(|a| a.trim().parse().ok());
                    let http = parts.next().and_then(|a| a.trim().parse().ok());
                    if let (Some(g), Some(h)) = (grpc, http) {
                        let _ = tx.send((g, h));
                    }
                }
            }
        });
        match rx.recv_timeout(START_DEADLINE) {
            Ok((grpc, http)) => SiteProc {
                name: name.to_string(),
                data_dir,
                grpc,
                http,
                child: Some(child),
                traced,
                tls: self.tls.clone(),
                client: self
                    .tls
                    .as_ref()
                    .map_or_else(ClientTls::default, TlsFiles::client),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "geo-agent {args:?} did not start; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }
}

/// One running `geo-agent run`.
struct SiteProc {
    name: String,
    data_dir: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
    child: Option<Child>,
    /// Runs under strace: the pid is strace's.
    traced: bool,
    /// The certificates when the site serves mutual TLS.
    tls: Option<TlsFiles>,
    /// How the bench connects to it (the default for plain gRPC).
    client: ClientTls,
}

/// A site's `GET /objects`.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
struct Counts {
    objects: u64,
    synced: u64,
    pending: u64,
    failed: u64,
    events_applied: u64,
}

impl SiteProc {
    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.grpc)
    }

    /// The geo-agent process (under strace: strace's child).
    fn pid(&self) -> u32 {
        let pid = self.child.as_ref().expect("the site runs").id();
        if !self.traced {
            return pid;
        }
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("strace ({pid}) has no child"))
    }

    fn counts(&self) -> Counts {
        let body = http_get(self.http, "/objects")
            .unwrap_or_else(|e| panic!("GET /objects at {}: {e}", self.name));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/objects at {} is not JSON ({e}): {body}", self.name))
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    /// Resets the peak RSS to the current RSS; false when the kernel refuses.
    fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// SIGTERM, then waits for the exit (kill -9 after the deadline).
    fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // Under strace, signal geo-agent itself: strace then writes its summary and exits.
        let pid = self.pid();
        let mut child = self.child.take().expect("checked above");
        // SAFETY: kill(2) on a process we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let asked = Instant::now();
        let deadline = asked + START_DEADLINE;
        loop {
            if child.try_wait().expect("wait for a site").is_some() {
                if asked.elapsed() > Duration::from_secs(1) {
                    eprintln!(
                        "  {} took {:.1} s to exit after SIGTERM",
                        self.name,
                        asked.elapsed().as_secs_f64()
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                eprintln!("{} did not stop after SIGTERM: killing it", self.name);
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Waits until this (secondary) site has applied the event log up to `head` and holds
    /// exactly `n` objects, all synced. Times are from `since`:
    /// - **head**: when the site's own `StreamEvents` (opened by the bench from index
    ///   `head`) delivers entry `head`, i.e. once it is durable there. No polling.
    /// - **synced**: the first `GET /objects` that shows everything synced. `/objects`
    ///   scans the whole registry, so while many objects are still missing the bench only
    ///   counts the files in the site's object directory (on its own CPU), and polls
    ///   `/objects` every [`POLL_MIN`] once every file is there.
    fn wait_caught_up(
        &self,
        bench: &Bench,
        rt: &tokio::runtime::Runtime,
        since: Instant,
        head: u64,
        n: u64,
    ) -> Waited {
        let deadline = since + WAIT_DEADLINE;
        let (tx, rx) = mpsc::channel();
        let watcher = rt.spawn(watch_head(
            self.url(),
            self.client.clone(),
            bench.site_token.clone(),
            head,
            tx,
        ));
        // Phase 1: files on disk, polled at a pace that costs the bench ≤ 10 % of a core.
        loop {
            let t = Instant::now();
            let files = self.object_files() as u64;
            let took = t.elapsed();
            if files >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} object files at {} ({files} there)",
                self.name
            );
            std::thread::sleep(POLL_MIN.max(took * POLL_BACKOFF));
        }
        // Phase 2: the registry, until it says everything is synced.
        let mut polls = 0u32;
        let mut polling = Duration::ZERO;
        let mut warned = false;
        let (done, last) = loop {
            let t = Instant::now();
            let c = self.counts();
            let took = t.elapsed();
            polls += 1;
            polling += took;
            if c.events_applied == head && c.objects == n && c.synced == n && c.pending == 0 {
                break (since.elapsed(), c);
            }
            if c.failed > 0 && !warned {
                warned = true;
                eprintln!(
                    "  {}: some objects failed to sync (retrying): {c:?}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for every object synced at {}: {c:?}",
                self.name
            );
            std::thread::sleep(POLL_MIN);
        };
        let at_head = rx
            .recv_timeout(START_DEADLINE)
            .unwrap_or_else(|_| panic!("{}: StreamEvents never delivered entry {head}", self.name));
        watcher.abort();
        Waited {
            head: at_head - since,
            done,
            polls,
            poll_mean: polling / polls,
            last,
        }
    }

    /// CPU seconds (user + system) the site has used so far.
    fn cpu(&self) -> Cpu {
        cpu_of(self.pid(), false)
    }

    /// Minor page faults so far (`/proc/<pid>/stat` field 10).
    fn minor_faults(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
        rest.split_whitespace()
            .nth(10 - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time of the site's live threads, summed by kind (a diagnostic; threads that
    /// already exited are missing). tokio names its async workers and its blocking pool
    /// alike: the workers are taken to be the first ones it starts, one per core, which is
    /// usually but not always right; the split between the two is approximate.
    fn thread_cpu(&self) -> String {
        let pid = self.pid();
        let mut threads: Vec<(u32, String, Cpu)> = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
                continue;
            };
            let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // SAFETY: sysconf(3) has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            let cpu = Cpu {
                user: f[11].parse::<f64>().unwrap_or(0.0) / hz,
                sys: f[12].parse::<f64>().unwrap_or(0.0) / hz,
            };
            threads.push((tid, comm.trim().to_string(), cpu));
        }
        threads.sort_by_key(|t| t.0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut workers = 0;
        let mut by_kind: std::collections::BTreeMap<String, (usize, Cpu)> = Default::default();
        for (_, comm, cpu) in threads {
            let kind = if comm == "tokio-rt-worker" {
                workers += 1;
                if workers <= cores {
                    "async workers".to_string()
                } else {
                    "blocking pool".to_string()
                }
            } else if comm.starts_with("sled-io") {
                "sled-io".to_string()
            } else {
                comm
            };
            let e = by_kind.entry(kind).or_default();
            e.0 += 1;
            e.1.user += cpu.user;
            e.1.sys += cpu.sys;
        }
        by_kind
            .iter()
            .map(|(name, (n, c))| format!("{name} x{n}: {:.2} usr {:.2} sys", c.user, c.sys))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The median of a few `GET /objects` on this site, as it is now.
    fn idle_poll(&self) -> Duration {
        let mut took: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                self.counts();
                t.elapsed()
            })
            .collect();
        took.sort();
        took[2]
    }

    /// Object files in the data directory (every version), temporary ones apart.
    fn object_files(&self) -> usize {
        let mut n = 0;
        let Ok(shards) = std::fs::read_dir(self.data_dir.join("objects")) else {
            return 0;
        };
        for shard in shards.flatten() {
            if shard.file_name() != "tmp" {
                n += std::fs::read_dir(shard.path()).map_or(0, |d| d.count());
            }
        }
        n
    }
}

impl Drop for SiteProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Certificates for mutual TLS, made with rcgen: a CA, one certificate for every site
/// (SANs `localhost` and `127.0.0.1`; a site presents it as a server and, to its primary,
/// as a client), and a client certificate for the bench and the CLI. ECDSA P-256 keys,
/// rcgen's default.
#[derive(Clone)]
struct TlsFiles {
    ca: PathBuf,
    site_cert: PathBuf,
    site_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsFiles {
    fn generate(dir: &Path) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("create the pki directory");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "objects-bench CA");
        let ca_path = write("ca.pem", ca.self_signed(&ca_key).expect("self-sign").pem());
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let issue = |name: &str, sans: &[&str]| {
            let key = rcgen::KeyPair::generate().expect("a key");
            let mut params = rcgen::CertificateParams::new(
                sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (
                write(&format!("{name}.pem"), cert.pem()),
                write(&format!("{name}.key"), key.serialize_pem()),
            )
        };
        let (site_cert, site_key) = issue("site", &["localhost", "127.0.0.1"]);
        let (client_cert, client_key) = issue("bench", &["objects-bench"]);
        TlsFiles {
            ca: ca_path,
            site_cert,
            site_key,
            client_cert,
            client_key,
        }
    }

    /// `geo-agent run` flags.
    fn site_args(&self) -> Vec<String> {
        [
            "--tls-cert",
            &self.site_cert.display().to_string(),
            "--tls-key",
            &self.site_key.display().to_string(),
            "--tls-ca",
            &self.ca.display().to_string(),
            "--require-client-cert",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Flags of the CLI's client commands.
    fn cli_args(&self) -> Vec<String> {
        [
            "--ca-cert",
            &self.ca.display().to_string(),
            "--client-cert",
            &self.client_cert.display().to_string(),
            "--client-key",
            &self.client_key.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The bench's own client (gRPC calls it makes in-process).
    fn client(&self) -> ClientTls {
        ClientTls::load(
            Some(&self.ca),
            Some(&self.client_cert),
            Some(&self.client_key),
        )
        .expect("load the bench's client certificate")
    }
}

struct Waited {
    /// Until the event log was at the primary's head.
    head: Duration,
    /// Until every object was synced.
    done: Duration,
    /// `/objects` calls made, and their mean duration.
    polls: u32,
    poll_mean: Duration,
    last: Counts,
}

/// Sends the instant `StreamEvents` on the site at `url` delivers entry `head` (so: once
/// it is durable there).
async fn watch_head(
    url: String,
    tls: ClientTls,
    site_token: String,
    head: u64,
    tx: mpsc::Sender<Instant>,
) {
    let deadline = Instant::now() + START_DEADLINE;
    let channel = loop {
        match connect(&url, &tls).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let mut client = pb::ReplicationClient::new(channel);
    let mut req = tonic::Request::new(pb::StreamLogRequest {
        from_index: head,
        site_id: "objects-bench".into(),
        epoch: 0,
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {site_token}")
            .parse()
            .expect("a valid header"),
    );
    let mut stream = client
        .stream_events(req)
        .await
        .unwrap_or_else(|s| panic!("StreamEvents at {url}: {s}"))
        .into_inner();
    while let Some(msg) = stream
        .message()
        .await
        .unwrap_or_else(|s| panic!("StreamEvents: {s}"))
    {
        if let Some(pb::log_message::Kind::Entry(e)) = msg.kind {
            if e.index >= head {
                let _ = tx.send(Instant::now());
                return;
            }
        }
    }
    panic!("StreamEvents at {url} ended before entry {head}");
}

/// `GET path` over HTTP/1.1 with `Connection: close`; the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {raw:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("{head}\n{body}")));
    }
    Ok(body.to_string())
}

/// Pushes objects to `site` over one gRPC connection, `concurrency` at a time. Each item
/// gives a name and a way to get its bytes (read on the push's task).
async fn push_all<F>(site: &SiteProc, token: &str, items: Vec<(String, F)>, concurrency: usize)
where
    F: FnOnce() -> Vec<u8> + Send + 'static,
{
    let channel = connect(&site.url(), &site.client)
        .await
        .expect("connect to the primary");
    let mut tasks = JoinSet::new();
    for (name, data) in items {
        while tasks.len() >= concurrency {
            tasks
                .join_next()
                .await
                .expect("a task")
                .expect("a push task");
        }
        let client = pb::ObjectClient::new(channel.clone());
        let token = token.to_string();
        tasks.spawn(async move { push_one(client, &token, name, data()).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a push task");
    }
}

async fn push_one(mut client: pb::ObjectClient, token: &str, name: String, data: Vec<u8>) {
    const WIRE_CHUNK: usize = 1 << 20;
    let size = data.len() as u64;
    let mut msgs = vec![pb::PushRequest {
        part: Some(pb::push_request::Part::Header(pb::PushHeader {
            name: name.clone(),
            size: Some(size),
            ..Default::default()
        })),
    }];
    msgs.extend(data.chunks(WIRE_CHUNK).map(|c| pb::PushRequest {
        part: Some(pb::push_request::Part::Chunk(c.to_vec())),
    }));
    msgs.push(pb::PushRequest {
        part: Some(pb::push_request::Part::Trailer(pb::PushTrailer {
            size,
            sha256: String::new(),
        })),
    });
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a valid header"),
    );
    if let Err(s) = client.push(req).await {
        panic!("push {name}: {s}");
    }
}

// ---------------------------------------------------------------------------------------
// 1. Replication vs rsync
// ---------------------------------------------------------------------------------------

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

/// The files of `set` as [`push_all`] items, each read from disk on its push's task.
fn push_items(set: &DataSet) -> Vec<(String, impl FnOnce() -> Vec<u8> + Send + 'static)> {
    set.files
        .iter()
        .map(|(name, path)| {
            let path = path.clone();
            (name.clone(), move || {
                std::fs::read(&path).expect("read a data-set file")
            })
        })
        .collect()
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
    let got = rt.block_on(async {
        let channel = connect(&primary.url(), &primary.client)
            .await
            .expect("connect to the primary");
        let mut tasks = JoinSet::new();
        let mut total = 0u64;
        for name in names {
            while tasks.len() >= PUSH_CONCURRENCY {
                total += tasks
                    .join_next()
                    .await
                    .expect("a task")
                    .expect("a pull task");
            }
            let mut client = pb::ObjectClient::new(channel.clone());
            let token = bench.admin_token.clone();
            tasks.spawn(async move {
                let mut req = tonic::Request::new(pb::PullRequest { name: name.clone() });
                req.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("a valid header"),
                );
                let mut stream = client
                    .pull(req)
                    .await
                    .unwrap_or_else(|s| panic!("pull {name}: {s}"))
                    .into_inner();
                let mut size = 0u64;
                while let Some(m) = stream
                    .message()
                    .await
                    .unwrap_or_else(|s| panic!("pull {name}: {s}"))
                {
                    if let Some(pb::pull_response::Part::Chunk(c)) = m.part {
                        size += c.len() as u64;
                    }
                }
                size
            });
        }
        while let Some(done) = tasks.join_next().await {
            total += done.expect("a pull task");
        }
        total
    });
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

/// Writes every file of `set` the way a secondary installs a fetched object — a new file in
/// a temporary directory, written, fsynced, renamed into one of 256 shard directories, the
/// shard fsynced — on `threads` threads, and removes them again. The disk's share of a sync.
fn disk_floor(dir: &Path, set: &DataSet, threads: usize) -> Transfer {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("create the floor's directory");
    for shard in 0..256 {
        std::fs::create_dir_all(dir.join(format!("{shard:02x}"))).expect("create a shard");
    }
    let data: Vec<(usize, Vec<u8>)> = set
        .files
        .iter()
        .enumerate()
        .map(|(i, (_, p))| (i, std::fs::read(p).expect("read a data-set file")))
        .collect();
    let data = std::sync::Arc::new(data);
    sync_disks();
    let (busy, own) = (machine_busy(), cpu_of(std::process::id(), false));
    let t = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|w| {
            let (data, dir, tmp) = (std::sync::Arc::clone(&data), dir.to_path_buf(), tmp.clone());
            std::thread::spawn(move || {
                for (i, bytes) in data.iter().skip(w).step_by(threads) {
                    let temp = tmp.join(format!("{i:08}"));
                    let mut f = std::fs::File::create_new(&temp).expect("create a file");
                    f.write_all(bytes).expect("write a file");
                    f.sync_all().expect("fsync a file");
                    drop(f);
                    let shard = dir.join(format!("{:02x}", i % 256));
                    std::fs::rename(&temp, shard.join(format!("{i:08}"))).expect("rename");
                    std::fs::File::open(&shard)
                        .and_then(|d| d.sync_all())
                        .expect("fsync a directory");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a writer thread");
    }
    let wall = t.elapsed();
    let receiver = cpu_of(std::process::id(), false) - own;
    let other = machine_busy() - busy - receiver.total();
    std::fs::remove_dir_all(dir).expect("remove the floor's directory");
    eprintln!("  writes only: {:.2} s", wall.as_secs_f64());
    Transfer {
        wall,
        receiver,
        sender: Cpu::default(),
        other: other.max(0.0),
    }
}

/// Starts a fresh secondary of `primary` and times it until it holds all `n` objects;
/// stops it. Also: how long one `GET /objects` takes there once it is synced, and with
/// `idle`, the share of a core it uses once synced, with nothing to do, over
/// `OBJECTS_BENCH_IDLE_SECS` (default 3 s).
fn geo_sync(
    bench: &Bench,
    rt: &tokio::runtime::Runtime,
    primary: &SiteProc,
    events: u64,
    n: u64,
    concurrency: Option<usize>,
    idle: bool,
) -> (Transfer, Waited, Duration, Option<f64>) {
    sync_disks();
    let label = concurrency.map_or(String::new(), |c| format!(" (--sync-concurrency {c})"));
    eprintln!("  starting a fresh secondary{label}…");
    let primary_cpu = primary.cpu();
    let (busy, own) = (machine_busy(), own_cpu());
    let since = Instant::now();
    let mut secondary = bench.secondary_with("secondary", primary, concurrency);
    let started = since.elapsed();
    let waited = secondary.wait_caught_up(bench, rt, since, events, n);
    let receiver = secondary.cpu();
    let sender = primary.cpu() - primary_cpu;
    let other = machine_busy() - busy - (own_cpu() - own) - receiver.total() - sender.total();
    let geo = Transfer {
        wall: waited.done,
        receiver,
        sender,
        other: other.max(0.0),
    };
    let faults = secondary.minor_faults();
    let threads = secondary.thread_cpu();
    let files = secondary.object_files();
    assert_eq!(files as u64, n, "one file per object at the secondary");
    let idle_poll = secondary.idle_poll();
    let idle_cpu = idle.then(|| {
        // A measuring window, not a wait for anything: the site has nothing left to do.
        let window = Duration::from_secs_f64(env_or("OBJECTS_BENCH_IDLE_SECS", 3.0));
        let before = secondary.cpu().total();
        std::thread::sleep(window);
        (secondary.cpu().total() - before) / window.as_secs_f64()
    });
    if let Some(share) = idle_cpu {
        eprintln!(
            "  synced secondary with nothing to do used {:.1} % of a core",
            share * 100.0
        );
    }
    eprintln!(
        "  synced in {:.2} s (serving after {:.0} ms, event log at the head after {:.2} s; \
         {} /objects polls of {:.1} ms on average; idle: {:.1} ms); CPU: secondary {:?}, \
         primary {:?}; {:?}",
        waited.done.as_secs_f64(),
        started.as_secs_f64() * 1e3,
        waited.head.as_secs_f64(),
        waited.polls,
        waited.poll_mean.as_secs_f64() * 1e3,
        idle_poll.as_secs_f64() * 1e3,
        geo.receiver,
        geo.sender,
        waited.last
    );
    eprintln!(
        "  secondary: {faults} minor page faults; CPU by thread name: {threads}; \
         other processes used {:.2} s CPU meanwhile",
        geo.other
    );
    secondary.stop();
    (geo, waited, idle_poll, idle_cpu)
}

/// One timed copy, with the CPU time of the receiving and the sending side.
struct Transfer {
    wall: Duration,
    receiver: Cpu,
    sender: Cpu,
    /// CPU seconds the rest of the machine used meanwhile (other processes: anything but
    /// the two sides and this bench).
    other: f64,
}

/// Busy CPU seconds of the whole machine so far (`/proc/stat`, all but idle and iowait).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let cpu = stat.lines().next().expect("a cpu line");
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("a number in /proc/stat"))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f.get(7).copied().unwrap_or(0);
    // SAFETY: sysconf(3) has no preconditions.
    busy as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Measures the CPU time the rest of the machine uses over a stretch of time.
struct Meter {
    busy: f64,
    own: f64,
    children: f64,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            busy: machine_busy(),
            own: own_cpu(),
            children: children_cpu().total(),
        }
    }

    /// CPU seconds used since the start by every process but this bench, its reaped
    /// children and `ours` (the CPU seconds the caller's sites used meanwhile).
    fn other(&self, ours: f64) -> f64 {
        let other = machine_busy()
            - self.busy
            - (own_cpu() - self.own)
            - (children_cpu().total() - self.children)
            - ours;
        other.max(0.0)
    }
}

/// This bench process's CPU seconds so far.
fn own_cpu() -> f64 {
    cpu_of(std::process::id(), false).total()
}

/// CPU seconds, user and system.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    user: f64,
    sys: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.sys
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user - o.user,
            sys: self.sys - o.sys,
        }
    }
}

/// CPU time of process `pid`; with `children`, of its reaped children.
fn cpu_of(pid: u32, children: bool) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name, which ends at the last ')': state is field 3.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |n: usize| {
        fields[n - 3]
            .parse::<u64>()
            .expect("a number in /proc/<pid>/stat")
    };
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (u, s) = if children {
        (at(16), at(17))
    } else {
        (at(14), at(15))
    };
    Cpu {
        user: u as f64 / hz,
        sys: s as f64 / hz,
    }
}

/// CPU time of this process's reaped children.
fn children_cpu() -> Cpu {
    // SAFETY: getrusage(2) writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu {
        user: tv(u.ru_utime),
        sys: tv(u.ru_stime),
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
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rsync --daemon did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
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
        let deadline = Instant::now() + START_DEADLINE;
        while std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
            .is_ok_and(|c| !c.trim().is_empty())
        {
            assert!(Instant::now() < deadline, "rsync's sender did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// A port that was free a moment ago (rsync needs a number; nothing else binds here).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

// ---------------------------------------------------------------------------------------
// 2. Verification vs sha256sum
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// 3. Catch-up
// ---------------------------------------------------------------------------------------

fn catch_up(bench: &Bench, rt: &tokio::runtime::Runtime, events: usize, names: usize) -> String {
    eprintln!(
        "catch-up: {} pushes over {} names to a fresh primary…",
        group(events as u64),
        group(names as u64)
    );
    let mut primary = bench.primary("primary");
    let items: Vec<_> = (0..events)
        .map(|i| {
            let name = format!("catchup/o{:05}", i % names);
            // Every version different bytes, so each push is a new file on the primary.
            (name, move || {
                format!("version {i} of a tiny object\n").into_bytes()
            })
        })
        .collect();
    let (meter, primary_cpu) = (Meter::start(), primary.cpu());
    let t = Instant::now();
    rt.block_on(push_all(&primary, &bench.admin_token, items, 16));
    let pushed = t.elapsed();
    let push_cpu = primary.cpu() - primary_cpu;
    let push_other = meter.other(push_cpu.total());
    eprintln!(
        "  primary CPU during the pushes: {push_cpu:?}; by thread: {}",
        primary.thread_cpu()
    );
    let at_primary = primary.counts();
    let head = at_primary.events_applied;
    assert_eq!(at_primary.objects, names as u64, "{at_primary:?}");
    assert!(head >= events as u64, "{at_primary:?}");
    eprintln!(
        "  {} pushes in {:.1} s ({:.0}/s)",
        group(events as u64),
        pushed.as_secs_f64(),
        events as f64 / pushed.as_secs_f64()
    );
    sync_disks();
    let (meter, primary_cpu) = (Meter::start(), primary.cpu());
    let since = Instant::now();
    let mut secondary = bench.secondary("secondary", &primary);
    let n = names as u64;
    let waited = secondary.wait_caught_up(bench, rt, since, head, n);
    let (secondary_cpu, serving_cpu) = (secondary.cpu(), primary.cpu() - primary_cpu);
    let other = meter.other(secondary_cpu.total() + serving_cpu.total());
    eprintln!(
        "  head after {:.2} s, all synced after {:.2} s ({} polls of {:.1} ms); CPU: \
         secondary {secondary_cpu:?}, primary {serving_cpu:?}, others {other:.2} s; {:?}",
        waited.head.as_secs_f64(),
        waited.done.as_secs_f64(),
        waited.polls,
        waited.poll_mean.as_secs_f64() * 1e3,
        waited.last
    );
    secondary.stop();
    primary.stop();

    let mut table = Table::new(&["seconds", "events/s", "dst cpu", "src cpu", "other"]);
    table.section(&format!(
        "{} events ({} pushes over {} names, ~40 B each), secondary started after",
        group(head),
        group(events as u64),
        group(n)
    ));
    table.row(
        "spawn -> event log at the primary's head",
        &[
            format!("{:.2}", waited.head.as_secs_f64()),
            format!("{:.0}", head as f64 / waited.head.as_secs_f64()),
        ],
    );
    table.row(
        &format!("spawn -> all {} objects synced", group(n)),
        &[
            format!("{:.2}", waited.done.as_secs_f64()),
            String::new(),
            format!("{:.2}", secondary_cpu.total()),
            format!("{:.2}", serving_cpu.total()),
            format!("{other:.2}"),
        ],
    );
    table.row(
        "for scale: the primary committing the pushes (16 at a time)",
        &[
            format!("{:.2}", pushed.as_secs_f64()),
            format!("{:.0}", events as f64 / pushed.as_secs_f64()),
            format!("{:.2}", push_cpu.total()),
            String::new(),
            format!("{push_other:.2}"),
        ],
    );
    format!(
        "catch-up of a secondary that was not running (CPU seconds: the secondary (dst), \
         the primary (src), every other process but the bench (other))\n{}",
        table.render()
    )
}

// ---------------------------------------------------------------------------------------
// 4. Peak RSS
// ---------------------------------------------------------------------------------------

/// Writes `size` random bytes to `file`, then `sync(2)`.
fn write_random_file(file: &Path, size: u64) {
    let mut f = std::fs::File::create(file).expect("create the big object");
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write the big object");
        left -= n as u64;
    }
    drop(f);
    sync_disks();
}

fn peak_rss(bench: &Bench, rt: &tokio::runtime::Runtime, size: u64) -> String {
    let file = bench.dir.join("rss-object");
    write_random_file(&file, size);
    let label = size_label(size);
    eprintln!("peak RSS: pushing {label} to a fresh primary with the CLI…");
    let mut primary = bench.primary("primary");
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let idle = primary.status_kib("VmHWM");
    let (meter, p0) = (Meter::start(), primary.cpu().total());
    let (push, took) = cli_push(bench, &primary, "rss/object", &file);
    assert!(push, "the CLI push to the primary failed");
    let primary_push = primary.status_kib("VmHWM");
    let other_push = meter.other(primary.cpu().total() - p0);
    eprintln!(
        "  pushed in {:.1} s: primary VmHWM {} MiB (idle {} MiB)",
        took.as_secs_f64(),
        mib(primary_push),
        mib(idle)
    );
    let mut table = Table::new(&["VmHWM MiB", "idle MiB", "seconds", "MB/s", "other"]);
    table.section(&format!("one {label} object"));
    let rate = |d: Duration| format!("{:.0}", size as f64 / 1e6 / d.as_secs_f64());
    table.row(
        "primary, taking a CLI push",
        &[
            mib(primary_push),
            mib(idle),
            format!("{:.2}", took.as_secs_f64()),
            rate(took),
            format!("{other_push:.2}"),
        ],
    );

    // A fresh secondary syncs it (the primary serves it).
    let reset = primary.reset_peak();
    let (meter, p0) = (Meter::start(), primary.cpu().total());
    let since = Instant::now();
    let mut secondary = bench.secondary("secondary", &primary);
    let head = primary.counts().events_applied;
    let secondary_idle = secondary.status_kib("VmRSS");
    let waited = secondary.wait_caught_up(bench, rt, since, head, 1);
    let secondary_sync = secondary.status_kib("VmHWM");
    let primary_serve = primary.status_kib("VmHWM");
    let other_sync = meter.other(primary.cpu().total() - p0 + secondary.cpu().total());
    table.row(
        "secondary, syncing it (spawn -> synced)",
        &[
            mib(secondary_sync),
            mib(secondary_idle),
            format!("{:.2}", waited.done.as_secs_f64()),
            rate(waited.done),
            format!("{other_sync:.2}"),
        ],
    );
    table.row(
        if reset {
            "primary, serving it to the secondary"
        } else {
            "primary, serving it (peak not reset: includes the push)"
        },
        &[
            mib(primary_serve),
            String::new(),
            String::new(),
            String::new(),
        ],
    );

    // The secondary forwards a push of the same bytes under the same name (nothing to
    // fetch afterwards, so its peak is the forward's alone).
    let reset_s = secondary.reset_peak();
    let reset_p = primary.reset_peak();
    let secondary_before = secondary.status_kib("VmRSS");
    let (meter, c0) = (
        Meter::start(),
        primary.cpu().total() + secondary.cpu().total(),
    );
    let (push, took) = cli_push(bench, &secondary, "rss/object", &file);
    assert!(push, "the CLI push through the secondary failed");
    let secondary_forward = secondary.status_kib("VmHWM");
    let primary_forwarded = primary.status_kib("VmHWM");
    let other_forward = meter.other(primary.cpu().total() + secondary.cpu().total() - c0);
    let head = primary.counts().events_applied;
    secondary.wait_caught_up(bench, rt, Instant::now(), head, 1);
    table.row(
        if reset_s {
            "secondary, forwarding a CLI push"
        } else {
            "secondary, forwarding a CLI push (peak not reset: includes the sync)"
        },
        &[
            mib(secondary_forward),
            mib(secondary_before),
            format!("{:.2}", took.as_secs_f64()),
            rate(took),
            format!("{other_forward:.2}"),
        ],
    );
    table.row(
        if reset_p {
            "primary, taking that forwarded push"
        } else {
            "primary, taking that forwarded push (peak not reset)"
        },
        &[
            mib(primary_forwarded),
            String::new(),
            String::new(),
            String::new(),
        ],
    );
    secondary.stop();
    primary.stop();
    let _ = std::fs::remove_file(&file);
    format!(
        "peak RSS (VmHWM; 'idle' is the RSS before the transfer; MB = 10^6 bytes; other = CPU \
         seconds of every other process but the bench and the CLI meanwhile)\n{}",
        table.render()
    )
}

/// `geo-agent push NAME FILE --addr … --token-file …`: (success, duration).
fn cli_push(bench: &Bench, site: &SiteProc, name: &str, file: &Path) -> (bool, Duration) {
    let t = Instant::now();
    let out = Command::new(&bench.bin)
        .arg("push")
        .arg(name)
        .arg(file)
        .arg("--addr")
        .arg(site.url())
        .arg("--token-file")
        .arg(&bench.admin_token_file)
        .args(site.tls.iter().flat_map(TlsFiles::cli_args))
        .env_remove("GEO_AGENT_ADDR")
        .env_remove("GEO_AGENT_TOKEN")
        .env_remove("GEO_AGENT_TOKEN_FILE")
        .env_remove("GEO_AGENT_CA_CERT")
        .env_remove("GEO_AGENT_CLIENT_CERT")
        .env_remove("GEO_AGENT_CLIENT_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run geo-agent push");
    let took = t.elapsed();
    if !out.status.success() {
        eprintln!(
            "geo-agent push failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), took)
}

// ---------------------------------------------------------------------------------------
// 5. What TLS costs
// ---------------------------------------------------------------------------------------

/// Plain gRPC against mutual TLS, in the same run: (a) a fresh secondary syncing `set` from
/// its primary, timed as in part 1 ([`geo_sync`]); (b) one `geo-agent push` of `size`
/// random bytes to a fresh primary, as in part 4 ([`cli_push`]). Each is repeated
/// `OBJECTS_BENCH_REPEAT` times per transport; the transports take turns and swap who goes
/// first every run. The median counts.
fn tls_cost(bench: &Bench, rt: &tokio::runtime::Runtime, set: &DataSet, size: u64) -> String {
    let tls = bench.with_tls();
    let transports: [(&str, &Bench); 2] = [("plain gRPC", bench), ("mutual TLS", &tls)];
    let n = set.files.len() as u64;
    let bytes = set.bytes();

    // (a) One primary per transport, filled once (the fill is timed, for scale).
    let mut primaries = Vec::new();
    let mut fills = Vec::new();
    for (i, (label, b)) in transports.iter().enumerate() {
        eprintln!(
            "tls: {label}: pushing {} to a fresh primary…",
            set.describe()
        );
        let primary = b.primary(&format!("primary-{i}"));
        sync_disks();
        let (meter, p0, own) = (Meter::start(), primary.cpu(), own_cpu());
        let t = Instant::now();
        rt.block_on(push_all(
            &primary,
            &b.admin_token,
            push_items(set),
            PUSH_CONCURRENCY,
        ));
        let wall = t.elapsed();
        let receiver = primary.cpu() - p0;
        let client = own_cpu() - own;
        let fill = Transfer {
            wall,
            receiver,
            sender: Cpu {
                user: client,
                sys: 0.0,
            },
            other: meter.other(receiver.total()),
        };
        eprintln!(
            "  pushed in {:.2} s; primary CPU {:?}, bench (client) CPU {client:.2} s",
            wall.as_secs_f64(),
            fill.receiver
        );
        fills.push(fill);
        let c = primary.counts();
        assert_eq!(c.objects, n, "the primary holds every object: {c:?}");
        primaries.push((primary, c.events_applied));
    }
    let mut syncs: [Vec<Transfer>; 2] = [Vec::new(), Vec::new()];
    for run in 0..bench.repeat {
        eprintln!("tls: replication, run {} of {}", run + 1, bench.repeat);
        for k in 0..2 {
            let i = (run + k) % 2;
            let (label, b) = transports[i];
            let (primary, events) = &primaries[i];
            eprintln!("  {label}:");
            let (t, ..) = geo_sync(b, rt, primary, *events, n, b.sync_concurrency, false);
            syncs[i].push(t);
        }
    }
    for (mut primary, _) in primaries {
        primary.stop();
    }

    // (b) One CLI push of a big file to a fresh primary.
    let file = bench.dir.join("tls-object");
    write_random_file(&file, size);
    let mut cli: [Vec<Transfer>; 2] = [Vec::new(), Vec::new()];
    for run in 0..bench.repeat {
        eprintln!(
            "tls: geo-agent push of {}, run {} of {}",
            size_label(size),
            run + 1,
            bench.repeat
        );
        for k in 0..2 {
            let i = (run + k) % 2;
            let (label, b) = transports[i];
            let mut primary = b.primary("primary-push");
            sync_disks();
            let (meter, p0, c0) = (Meter::start(), primary.cpu(), children_cpu());
            let (ok, wall) = cli_push(b, &primary, "tls/object", &file);
            assert!(ok, "the CLI push ({label}) failed");
            let receiver = primary.cpu() - p0;
            // The CLI has exited and been reaped: its CPU is in the bench's children's.
            let sender = children_cpu() - c0;
            let other = meter.other(receiver.total());
            eprintln!(
                "  {label}: {:.2} s; primary {receiver:?} (by thread: {}); CLI {sender:?}",
                wall.as_secs_f64(),
                primary.thread_cpu()
            );
            primary.stop();
            cli[i].push(Transfer {
                wall,
                receiver,
                sender,
                other,
            });
        }
    }
    let _ = std::fs::remove_file(&file);

    let mut table = Table::new(&[
        "seconds",
        "range",
        "MB/s",
        "TLS/plain",
        "dst usr",
        "dst sys",
        "src cpu",
        "other",
    ]);
    let row = |t: &Transfer, bytes: u64, range: String, ratio: String| {
        let s = t.wall.as_secs_f64();
        [
            format!("{s:.2}"),
            range,
            format!("{:.0}", bytes as f64 / 1e6 / s),
            ratio,
            format!("{:.2}", t.receiver.user),
            format!("{:.2}", t.receiver.sys),
            format!("{:.2}", t.sender.total()),
            format!("{:.2}", t.other),
        ]
    };
    let rows = |table: &mut Table, what: &str, runs: &mut [Vec<Transfer>; 2], bytes: u64| {
        let plain = median_of(&mut runs[0]).wall.as_secs_f64();
        for (i, (label, _)) in transports.iter().enumerate() {
            let runs = &mut runs[i];
            let t = median_of(runs).wall.as_secs_f64();
            eprintln!(
                "tls: {label}: {what}: {}",
                runs.iter()
                    .map(|r| format!("{:.2} s", r.wall.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let range = format!(
                "{:.2}-{:.2}",
                runs[0].wall.as_secs_f64(),
                runs[runs.len() - 1].wall.as_secs_f64()
            );
            let ratio = format!("{:.2}", t / plain);
            let median = &runs[runs.len() / 2];
            table.row(
                &format!("{label}: {what}"),
                &row(median, bytes, range, ratio),
            );
        }
    };
    table.section(&format!(
        "{}: a fresh secondary, spawn -> all synced",
        set.describe()
    ));
    rows(&mut table, "secondary", &mut syncs, bytes);
    let fill_plain = fills[0].wall.as_secs_f64();
    for (fill, (label, _)) in fills.iter().zip(&transports) {
        table.row(
            &format!("for scale: {label}: filling the primary, 8 pushes at a time (1 run)"),
            &row(
                fill,
                bytes,
                String::new(),
                format!("{:.2}", fill.wall.as_secs_f64() / fill_plain),
            ),
        );
    }
    table.section(&format!(
        "one {} object: `geo-agent push` to a fresh primary",
        size_label(size)
    ));
    rows(&mut table, "geo-agent push", &mut cli, size);
    format!(
        "what TLS costs: plain gRPC against mutual TLS (both sides present certificates; \
         ECDSA P-256), {} runs each, taking turns (MB = 10^6 bytes; seconds: the median; \
         TLS/plain: the ratio of the median times; CPU seconds of the median run: the \
         receiving side (dst: the secondary; the primary taking a push), the sending side \
         (src: the primary serving the sync; the CLI; for the fills, the bench's own \
         process), and every other process (other))\n{}",
        bench.repeat,
        table.render()
    )
}

/// Sorts `runs` by time and returns the median (the upper one of an even count).
fn median_of(runs: &mut [Transfer]) -> &Transfer {
    runs.sort_by_key(|t| t.wall);
    &runs[runs.len() / 2]
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// A text table: a label column and right-aligned value columns, with section headings.
struct Table {
    columns: Vec<String>,
    rows: Vec<(String, Option<Vec<String>>)>,
}

impl Table {
    fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn section(&mut self, title: &str) {
        self.rows.push((title.to_string(), None));
    }

    fn row(&mut self, label: &str, values: &[String]) {
        self.rows
            .push((format!("  {label}"), Some(values.to_vec())));
    }

    fn render(&self) -> String {
        let label_w = self
            .rows
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            + 2;
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .filter_map(|(_, v)| v.as_ref()?.get(i).map(|s| s.chars().count()))
                    .chain([c.chars().count()])
                    .max()
                    .unwrap_or(0)
                    + 3
            })
            .collect();
        let mut out = format!("{:label_w$}", "");
        for (c, w) in self.columns.iter().zip(&widths) {
            out.push_str(&format!("{c:>w$}"));
        }
        for (label, values) in &self.rows {
            out.push('\n');
            match values {
                None => out.push_str(label),
                Some(values) => {
                    out.push_str(&format!("{label:label_w$}"));
                    for (v, w) in values.iter().zip(&widths) {
                        out.push_str(&format!("{v:>w$}"));
                    }
                }
            }
        }
        out
    }
}
