//! What the object benches (`replication`, `verify`, `catchup`, `rss`, `tls`) share beyond
//! the site harness of `tests/common`: the frame every one of them runs in ([`run`]), its
//! settings ([`Bench`]), data sets, the bench's view of a site ([`sites`]), CPU meters
//! ([`cpu`]) and the report's tables ([`report`]).
//!
//! A bench includes it as `mod support;`, after
//! `#[path = "../tests/common/mod.rs"] mod common;`.
//!
//! Environment, where it applies:
//! - `OBJECTS_BENCH_SCALE=0.1` scales every size (file counts, events, the 1 GiB object);
//!   default 1.
//! - `OBJECTS_BENCH_DIR=/path` puts the scratch directory there (default: the temp dir).
//! - `OBJECTS_BENCH_KEEP=1` keeps the scratch directory (the sites' logs) at the end.
//! - `OBJECTS_BENCH_SYNC_CONCURRENCY=N` passes `--sync-concurrency N` to the secondaries.
//! - `OBJECTS_BENCH_SECONDARY_ARGS="--flag value"` adds `geo-agent run` flags to every
//!   secondary.
//! - `OBJECTS_BENCH_STRACE=DIR` runs each secondary under `strace -f -c -o DIR/<name>`: a
//!   diagnostic (strace slows it down a lot), not a measurement.
//! - `OBJECTS_BENCH_REPEAT=N`: runs of each repeated measurement (default 3; the median
//!   is reported, with the range).
//! - `GEO_AGENT_BIN=/path/to/geo-agent` uses another binary.
#![allow(dead_code)]

pub mod cpu;
pub mod report;
pub mod sites;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geo_agent::server::tls::ClientTls;
use rand::RngCore;

use crate::common::{
    bin_from_env, issue_cert, new_ca, register, site_token, Cluster, SiteProc, Spawn,
};

/// The site id the bench's own replication reader is registered as.
pub const BENCH_SITE: &str = "objects-bench";

// Not every bench uses every part.
#[allow(unused_imports)]
pub use {cpu::*, report::*, sites::*};

pub const MIB: u64 = 1024 * 1024;
/// How long any transfer may take before the bench gives up.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(900);
/// Pushes in flight while filling a primary.
pub const PUSH_CONCURRENCY: usize = 8;

/// Runs one object bench: a scratch directory with the deployment's token files, a tokio
/// runtime, `part` (which returns its report), then the report on stdout and the total
/// time.
pub fn run(name: &str, part: impl FnOnce(&Bench, &tokio::runtime::Runtime) -> String) {
    let started = Instant::now();
    let scale: f64 = env_or("OBJECTS_BENCH_SCALE", 1.0);
    assert!(scale > 0.0, "OBJECTS_BENCH_SCALE must be positive");
    let base = std::env::var_os("OBJECTS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let cluster = Cluster::new_in(&base, &format!("{name}-bench-"));
    let bench = Bench::new(&cluster, scale);
    eprintln!(
        "geo-agent: {}\nscratch: {}\nscale: {scale}",
        bench.bin.display(),
        bench.dir.display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let section = part(&bench, &runtime);

    println!();
    println!("{section}\n");
    println!(
        "total bench time: {:.0} s (scale {scale})",
        started.elapsed().as_secs_f64()
    );
    if std::env::var_os("OBJECTS_BENCH_KEEP").is_some() {
        drop(bench);
        eprintln!(
            "kept the scratch directory (site logs): {}",
            cluster.dir.keep().display()
        );
    }
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------
// The bench's settings and its sites
// ---------------------------------------------------------------------------------------

/// The binary, the scratch directory and the shared tokens, and how sites are started.
#[derive(Clone)]
pub struct Bench {
    pub bin: PathBuf,
    pub dir: PathBuf,
    /// `OBJECTS_BENCH_SCALE`.
    pub scale: f64,
    pub admin_token: String,
    pub site_token: String,
    pub admin_token_file: PathBuf,
    pub sync_concurrency: Option<usize>,
    pub strace: Option<PathBuf>,
    /// Runs of each repeated measurement (the median is reported).
    pub repeat: usize,
    /// More `geo-agent run` flags for every secondary.
    pub secondary_args: Vec<String>,
    /// With certificates, every site serves mutual TLS and every client presents one.
    pub tls: Option<TlsFiles>,
}

impl Bench {
    fn new(cluster: &Cluster, scale: f64) -> Bench {
        let strace = std::env::var_os("OBJECTS_BENCH_STRACE").map(PathBuf::from);
        if let Some(d) = &strace {
            std::fs::create_dir_all(d).expect("create the strace directory");
        }
        Bench {
            bin: bin_from_env(),
            dir: cluster.dir.path().to_path_buf(),
            scale,
            admin_token: cluster.admin_token.clone(),
            site_token: cluster.site_token.clone(),
            admin_token_file: cluster.path("admin-token"),
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

    /// `n` scaled by `OBJECTS_BENCH_SCALE`, at least 1.
    pub fn scaled(&self, n: f64) -> usize {
        ((n * self.scale).round() as usize).max(1)
    }

    /// The size of the big object (1 GiB, scaled, whole MiB).
    pub fn big_object(&self) -> u64 {
        ((1024.0 * self.scale).round() as u64).max(1) * MIB
    }

    /// The 1,000 files of 1 MiB (scaled), in `src-big`.
    pub fn big_data_set(&self) -> DataSet {
        let t = Instant::now();
        let set = DataSet::generate(
            &self.dir.join("src-big"),
            "big",
            self.scaled(1000.0),
            MIB as usize,
        );
        eprintln!("generated {} in {:.1?}", set.describe(), t.elapsed());
        set
    }

    /// The same bench, but every site it starts serves mutual TLS (`--tls-cert`,
    /// `--tls-key`, `--tls-ca`, `--require-client-cert`) and every client (secondaries,
    /// the bench, the CLI) presents a certificate. Certificates are made here, in `pki/`.
    pub fn with_tls(&self) -> Bench {
        Bench {
            tls: Some(TlsFiles::generate(&self.dir.join("pki"))),
            ..self.clone()
        }
    }

    /// The primary registers itself and [`BENCH_SITE`] (the bench's own reader).
    pub fn primary(&self, name: &str) -> SiteProc {
        let site = self.site(name, &["--role", "primary"]);
        let own = site_token(&self.dir, name);
        register(&site, &self.admin_token, name, &own);
        register(&site, &self.admin_token, BENCH_SITE, &self.site_token);
        site
    }

    pub fn secondary(&self, name: &str, primary: &SiteProc) -> SiteProc {
        self.secondary_with(name, primary, self.sync_concurrency)
    }

    /// A secondary with `--sync-concurrency` set when `concurrency` is.
    pub fn secondary_with(
        &self,
        name: &str,
        primary: &SiteProc,
        concurrency: Option<usize>,
    ) -> SiteProc {
        let token = site_token(&self.dir, name);
        register(primary, &self.admin_token, name, &token);
        let url = primary.url();
        let mut args = vec!["--role", "secondary", "--primary", &url];
        let concurrency = concurrency.map(|n| n.to_string());
        if let Some(n) = &concurrency {
            args.extend(["--sync-concurrency", n]);
        }
        args.extend(self.secondary_args.iter().map(String::as_str));
        self.site(name, &args)
    }

    /// Starts `geo-agent run` with a fresh data directory and `RUST_LOG` unset (a
    /// secondary under strace with `OBJECTS_BENCH_STRACE`), and waits for its serving line.
    fn site(&self, name: &str, role: &[&str]) -> SiteProc {
        let _ = std::fs::remove_dir_all(self.dir.join(name));
        let mut spawn = Spawn::new(&self.dir, name)
            .bin(&self.bin)
            .rust_log(None)
            .args(role);
        if let Some(tls) = &self.tls {
            spawn = spawn.args(tls.site_args()).client(tls.client());
        }
        if let (true, Some(dir)) = (role.contains(&"secondary"), &self.strace) {
            let out = dir.join(format!("{name}-{}.strace", now_stamp()));
            spawn = spawn.under([
                "strace".into(),
                "-f".into(),
                "-c".into(),
                "-o".into(),
                out.into_os_string(),
                "--".into(),
            ]);
        }
        spawn.start()
    }
}

/// `geo-agent push NAME FILE --addr … --token-file …`: (success, duration).
pub fn cli_push(bench: &Bench, site: &SiteProc, name: &str, file: &Path) -> (bool, Duration) {
    let t = Instant::now();
    let out = Command::new(&bench.bin)
        .arg("push")
        .arg(name)
        .arg(file)
        .arg("--addr")
        .arg(site.url())
        .arg("--token-file")
        .arg(&bench.admin_token_file)
        .args(bench.tls.iter().flat_map(TlsFiles::cli_args))
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

/// Certificates for mutual TLS: a CA, one certificate for every site (SANs `localhost`
/// and `127.0.0.1`; a site presents it as a server and, to its primary, as a client), and
/// a client certificate for the bench and the CLI.
#[derive(Clone)]
pub struct TlsFiles {
    ca: PathBuf,
    site_cert: PathBuf,
    site_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsFiles {
    fn generate(dir: &Path) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("create the pki directory");
        let (ca, issuer) = new_ca(dir, "ca");
        let (site_cert, site_key) = issue_cert(dir, "site", &["localhost", "127.0.0.1"], &issuer);
        let (client_cert, client_key) = issue_cert(dir, "bench", &["objects-bench"], &issuer);
        TlsFiles {
            ca,
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

// ---------------------------------------------------------------------------------------
// Data sets
// ---------------------------------------------------------------------------------------

/// Files of random bytes in one directory, and the object names they are pushed as.
pub struct DataSet {
    pub root: PathBuf,
    /// (object name, file), in name order.
    pub files: Vec<(String, PathBuf)>,
    pub file_size: usize,
}

impl DataSet {
    pub fn generate(root: &Path, prefix: &str, count: usize, file_size: usize) -> DataSet {
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
        sync_disks();
        DataSet {
            root: root.to_path_buf(),
            files,
            file_size,
        }
    }

    pub fn bytes(&self) -> u64 {
        (self.files.len() * self.file_size) as u64
    }

    pub fn describe(&self) -> String {
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

/// Writes `size` random bytes to `file`, then `sync(2)`.
pub fn write_random_file(file: &Path, size: u64) {
    use std::io::Write;
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

pub fn size_label(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= MIB {
        format!("{:.0} MiB", n as f64 / MIB as f64)
    } else {
        format!("{:.0} KiB", n as f64 / 1024.0)
    }
}

/// 20000 → "20,000".
pub fn group(n: u64) -> String {
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

pub fn sync_disks() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Writes every file of `set` the way a secondary installs a fetched object — a new file in
/// a temporary directory, written, fsynced, renamed into one of 256 shard directories, the
/// shard fsynced — on `threads` threads, and removes them again. The disk's share of a sync.
pub fn disk_floor(dir: &Path, set: &DataSet, threads: usize) -> Transfer {
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
