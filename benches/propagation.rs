//! Propagation latency of a maintenance-mode change, from the primary's acknowledgement to
//! its arrival at the secondaries — and, beside it for scale, Redis primary → replica.
//!
//! What is measured, for geo-agent: a primary and 1 (then 3) secondaries run in this process
//! (one multi-thread tokio runtime, loopback listeners on port 0, a data directory each).
//! A client toggles maintenance mode with `AdminService.SetMaintenanceMode`; the instant its
//! response arrives is the **acknowledgement** (the primary answers once the entry is
//! flushed to disk). A task per secondary reads that secondary's `ModeService.WatchMode` stream and
//! stamps each state as it arrives, keyed by `settings_index`. Latency = arrival − ack,
//! so it covers the stream to the secondary, the secondary's own flush of the entry, its
//! watch fan-out and the second gRPC hop to the watcher. Changes go strictly one at a time:
//! change i+1 is issued only once every secondary has shown change i.
//!
//! For Redis (skipped, with a message, when `redis-server` is not on PATH): two
//! `redis-server` processes on loopback, the replica with `--replicaof` and keyspace
//! notifications on. A client `SET`s `mode` on the primary (the `+OK` is the ack) and a
//! `SUBSCRIBE __keyspace@0__:mode` connection to the replica stamps the notification. The
//! notification does not carry the value, hence the one-at-a-time pattern for both systems.
//! Measured with both sides on `appendfsync always` (as geo-agent flushes on both sides),
//! with only the primary on it, and with no persistence at all.
//!
//! All instants come from one `Instant` clock in this process. An arrival can beat the ack
//! (the secondary may see the change before the response reaches the client): such an
//! arrival counts as 0 µs and is reported in the `early` column.
//!
//! Two more tables explain the numbers: the ack round trip itself (request → fsync on the
//! primary → response), and a third geo-agent run with 1 secondary that also stamps the
//! moment each site publishes the entry (right after its flush), splitting the path into
//! its hops, next to the cost of a bare 4 KiB write + fsync on this disk. Those in-site
//! stamps are taken by a task woken by the publish, so each lags the true moment by a
//! scheduling delay (a hop can even come out "early"); they are kept out of the headline runs.
//!
//! Run with `cargo bench --bench propagation` (`PROPAGATION_CHANGES=N` to change the 1,000;
//! `PROPAGATION_SECONDARIES=1,10,100` for other numbers of secondaries than 1 and 3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::ControlFlow;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use geo_agent::config::{write_token, Config, RunArgs};
use geo_agent::runtime::{self, SiteError};
use geo_agent::server::auth::Token;
use geo_agent::server::client::{authorized, connect};
use geo_agent::server::pb;
use geo_agent::settings::Settings;
use geo_agent::store::Store;
use geo_agent::types::Role;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use common::{free_port, poll_until};

/// Measured changes per configuration (override with `PROPAGATION_CHANGES`).
const DEFAULT_CHANGES: usize = 1000;
/// Changes made and thrown away before measuring: connections, caches and followers settle.
const WARMUP: usize = 20;
/// How long any single wait may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(10);

fn main() {
    let changes = std::env::var("PROPAGATION_CHANGES")
        .ok()
        .map(|v| v.parse().expect("PROPAGATION_CHANGES must be a number"))
        .unwrap_or(DEFAULT_CHANGES);
    let mut report = Report::default();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    // PROPAGATION_SECONDARIES=1,10,100 for the fan-out run.
    let fan_out: Vec<usize> = std::env::var("PROPAGATION_SECONDARIES")
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().parse().expect("PROPAGATION_SECONDARIES: numbers"))
                .collect()
        })
        .unwrap_or_else(|_| vec![1, 3]);
    for &secondaries in &fan_out {
        eprint!(
            "geo-agent, {}: {changes} changes… ",
            plural(secondaries, "secondary")
        );
        let started = Instant::now();
        let run = runtime.block_on(measure_geo_agent(secondaries, changes, Stamps::Client));
        eprintln!("{:.1?}", started.elapsed());
        report.add_geo_agent(secondaries, run);
    }
    eprint!("geo-agent, 1 secondary, stamping durability inside the sites: {changes} changes… ");
    let started = Instant::now();
    let run = runtime.block_on(measure_geo_agent(1, changes, Stamps::Durable));
    eprintln!("{:.1?}", started.elapsed());
    report.breakdown = run.breakdown.expect("a breakdown was asked for");
    report.breakdown.push((
        "for scale: write 4 KiB + fsync on this disk".into(),
        fsync_probe(changes),
    ));
    drop(runtime);

    match redis_version() {
        None => eprintln!(
            "redis-server is not on PATH: skipping the Redis comparison \
             (on Debian: apt-get install -y redis-server)"
        ),
        Some(version) => {
            for persistence in [
                Persistence::Both,
                Persistence::PrimaryOnly,
                Persistence::None,
            ] {
                eprint!(
                    "redis {version}, {}: {changes} changes… ",
                    persistence.label()
                );
                let started = Instant::now();
                let run = measure_redis(persistence, changes);
                eprintln!("{:.1?}", started.elapsed());
                report.add_redis(&version, persistence, run);
            }
        }
    }
    report.print(changes);
}

// ---------------------------------------------------------------------------------------
// Statistics and the report
// ---------------------------------------------------------------------------------------

/// Latencies of one configuration, plus how many arrivals came before their ack.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    early: usize,
}

impl Samples {
    /// Records `to − from` (e.g. arrival − ack), as 0 and counted as early when `to` came
    /// first.
    fn between(&mut self, from: Instant, to: Instant) {
        match to.checked_duration_since(from) {
            Some(d) => self.latencies.push(d),
            None => {
                self.latencies.push(Duration::ZERO);
                self.early += 1;
            }
        }
    }

    fn push(&mut self, d: Duration) {
        self.latencies.push(d);
    }

    /// p50, p90, p99 and max in µs (nearest-rank percentiles).
    fn summary(&self) -> [u128; 4] {
        let mut sorted: Vec<u128> = self.latencies.iter().map(Duration::as_micros).collect();
        sorted.sort_unstable();
        assert!(!sorted.is_empty(), "no samples");
        let rank = |p: f64| {
            let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        [rank(50.0), rank(90.0), rank(99.0), sorted[sorted.len() - 1]]
    }
}

/// One run of geo-agent: propagation per arrival, per change (all secondaries), and the ack
/// round trip itself.
struct GeoAgentRun {
    each: Samples,
    all: Samples,
    ack: Samples,
    /// With [`Stamps::Durable`]: the path of a change split at the moments it became
    /// durable on the primary and on the (first) secondary.
    breakdown: Option<Vec<(String, Samples)>>,
}

/// Which instants a geo-agent run takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stamps {
    /// Only what a client sees: the ack and the watch arrivals.
    Client,
    /// Also when each site publishes the entry, i.e. right after its flush. This adds a
    /// task per site to wake on every change, so the headline runs leave it out.
    Durable,
}

/// One run of Redis: propagation and the `SET` round trip.
struct RedisRun {
    propagation: Samples,
    ack: Samples,
}

#[derive(Default)]
struct Report {
    propagation: Vec<(String, Samples)>,
    acks: Vec<(String, Samples)>,
    breakdown: Vec<(String, Samples)>,
}

impl Report {
    fn add_geo_agent(&mut self, secondaries: usize, run: GeoAgentRun) {
        let sites = plural(secondaries, "secondary");
        if secondaries == 1 {
            self.propagation
                .push((format!("geo-agent, {sites}"), run.each));
        } else {
            let each = format!("geo-agent, {sites} (each arrival)");
            self.propagation.push((each, run.each));
            let all = format!("geo-agent, {sites} (all arrived)");
            self.propagation.push((all, run.all));
        }
        let ack = format!("geo-agent SetMaintenanceMode, {sites}");
        self.acks.push((ack, run.ack));
    }

    fn add_redis(&mut self, version: &str, persistence: Persistence, run: RedisRun) {
        let label = format!("redis {version} replication, {}", persistence.label());
        self.propagation.push((label, run.propagation));
        let ack = format!("redis {version} SET, {}", persistence.label());
        self.acks.push((ack, run.ack));
    }

    fn print(&self, changes: usize) {
        println!();
        print_table(
            &format!("propagation, {changes} changes, one at a time (µs)"),
            &self.propagation,
        );
        println!();
        print_table("acknowledgement round trip at the client (µs)", &self.acks);
        println!();
        print_table(
            "geo-agent, 1 secondary: where the time goes (µs)",
            &self.breakdown,
        );
    }
}

/// `1 secondary`, `3 secondaries`.
fn plural(n: usize, one: &str) -> String {
    match (n, one.strip_suffix('y')) {
        (1, _) => format!("1 {one}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {one}s"),
    }
}

fn print_table(title: &str, rows: &[(String, Samples)]) {
    println!(
        "{title:<58}{:>8}{:>8}{:>8}{:>8}{:>7}{:>7}",
        "p50", "p90", "p99", "max", "n", "early"
    );
    for (label, samples) in rows {
        let [p50, p90, p99, max] = samples.summary();
        println!(
            "{label:<58}{p50:>8}{p90:>8}{p99:>8}{max:>8}{:>7}{:>7}",
            samples.latencies.len(),
            samples.early
        );
    }
}

// ---------------------------------------------------------------------------------------
// geo-agent
// ---------------------------------------------------------------------------------------

/// A primary and its secondaries, serving in this process until `stop`.
struct Cluster {
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    sites: Vec<tokio::task::JoinHandle<Result<(), SiteError>>>,
    /// Each site's settings, the primary's first.
    settings: Vec<Arc<Settings>>,
    primary_url: String,
    secondary_urls: Vec<String>,
    admin_token: Token,
}

impl Cluster {
    async fn start(secondaries: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // Fresh tokens, written where `Config::load` reads them (as `geo-agent run` would).
        let admin_token = Token::generate();
        let admin_token_file = dir.path().join("admin-token");
        write_token(&admin_token_file, &admin_token).expect("write the admin token");
        let shutdown = CancellationToken::new();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut sites = Vec::new();
        let mut settings = Vec::new();
        let mut urls: Vec<String> = Vec::new();
        for i in 0..=secondaries {
            let (site_id, role) = match i {
                0 => ("primary".to_string(), Role::Primary),
                _ => (format!("secondary-{i}"), Role::Secondary),
            };
            // Each site has its own token, registered at the primary (opened first).
            let site_token = Token::generate();
            let site_token_file = dir.path().join(format!("{site_id}-site-token"));
            write_token(&site_token_file, &site_token).expect("write the site token");
            let registry = settings.first().map(Arc::clone);
            let id = site_id.clone();
            let config = Config::load(&RunArgs {
                data_dir: Some(dir.path().join(&site_id)),
                site_id: Some(site_id),
                role: Some(role),
                listen: Some(loopback),
                http_listen: Some(loopback),
                primary: urls.first().cloned(),
                admin_token_file: Some(admin_token_file.clone()),
                site_token_file: Some(site_token_file),
                ..RunArgs::default()
            })
            .expect("a valid site configuration");
            let store = Store::open(&config.data_dir).expect("open the store");
            let opened = runtime::open(&config, store, shutdown.clone())
                .await
                .unwrap_or_else(|e| panic!("open site {}: {e}", config.site_id));
            let registry = registry.unwrap_or_else(|| Arc::clone(&opened.site.settings));
            let hash = geo_agent::settings::token_sha256(site_token.expose().as_bytes());
            registry
                .add_site(&id, &hash, "bench")
                .await
                .expect("register the site");
            let grpc = tokio::net::TcpListener::bind(loopback)
                .await
                .expect("bind a gRPC listener");
            let http = tokio::net::TcpListener::bind(loopback)
                .await
                .expect("bind an HTTP listener");
            urls.push(format!(
                "http://{}",
                grpc.local_addr().expect("gRPC listener address")
            ));
            settings.push(Arc::clone(&opened.site.settings));
            sites.push(tokio::spawn(opened.serve(grpc, http, shutdown.clone())));
        }
        let primary_url = urls.remove(0);
        Cluster {
            _dir: dir,
            shutdown,
            sites,
            settings,
            primary_url,
            secondary_urls: urls,
            admin_token,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for site in self.sites {
            tokio::time::timeout(DEADLINE, site)
                .await
                .expect("a site did not stop in time")
                .expect("a site task panicked")
                .expect("a site failed");
        }
    }
}

/// A mode state as it reached one secondary's watcher.
struct Arrival {
    secondary: usize,
    index: u64,
    enabled: bool,
    at: Instant,
}

/// Streams `WatchMode` from a secondary, stamping every state the moment it arrives.
async fn watch(secondary: usize, url: String, tx: tokio::sync::mpsc::UnboundedSender<Arrival>) {
    let channel = connect(&url, &Default::default())
        .await
        .expect("connect to a secondary");
    let mut client = pb::mode_service_client::ModeServiceClient::new(channel);
    let mut stream = client
        .watch_mode(pb::WatchModeRequest {})
        .await
        .expect("WatchMode")
        .into_inner();
    // Ends with the site (an error or the end of the stream); the bench notices by timeout.
    while let Some(Ok(state)) = stream.next().await {
        let at = Instant::now();
        let arrival = Arrival {
            secondary,
            index: state.settings_index,
            enabled: state.maintenance_mode,
            at,
        };
        if tx.send(arrival).is_err() {
            return;
        }
    }
}

/// Stamps the moment `settings` publishes each entry, which it does right after its flush.
async fn stamp_durable(
    site: usize,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, u64, Instant)>,
) {
    let mut published = settings.log().subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = published.changed() => if changed.is_err() { return },
        }
        let at = Instant::now();
        let index = published.borrow_and_update().head.index;
        if tx.send((site, index, at)).is_err() {
            return;
        }
    }
}

async fn next_arrival(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arrival>) -> Arrival {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("no mode state reached a watcher in time")
        .expect("every watch stream ended")
}

async fn measure_geo_agent(secondaries: usize, changes: usize, stamps: Stamps) -> GeoAgentRun {
    let cluster = Cluster::start(secondaries).await;
    let (durable_tx, mut durable_rx) = tokio::sync::mpsc::unbounded_channel();
    if stamps == Stamps::Durable {
        for (site, settings) in cluster.settings.iter().enumerate() {
            let shutdown = cluster.shutdown.clone();
            let task = stamp_durable(site, Arc::clone(settings), shutdown, durable_tx.clone());
            tokio::spawn(task);
        }
    }
    drop(durable_tx);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, url) in cluster.secondary_urls.iter().enumerate() {
        tokio::spawn(watch(i, url.clone(), tx.clone()));
    }
    drop(tx);
    // Every stream starts with the current state; the warm-up changes then prove that each
    // secondary's follower is streaming from the primary.
    let mut started = vec![false; secondaries];
    while started.contains(&false) {
        started[next_arrival(&mut rx).await.secondary] = true;
    }

    let channel = connect(&cluster.primary_url, &Default::default())
        .await
        .expect("connect to the primary");
    let mut admin = pb::admin_service_client::AdminServiceClient::new(channel);
    let mut run = GeoAgentRun {
        each: Samples::default(),
        all: Samples::default(),
        ack: Samples::default(),
        breakdown: None,
    };
    let mut breakdown = Breakdown::default();
    for i in 0..WARMUP + changes {
        // Alternate so that every change changes the mode (and so reaches the watchers).
        let enabled = i % 2 == 0;
        let message = if enabled {
            format!("bench change {i}")
        } else {
            String::new()
        };
        let request = pb::SetMaintenanceModeRequest {
            enabled,
            message,
            actor: "bench".into(),
        };
        let request = authorized(request, &cluster.admin_token).expect("authorize a request");
        let sent = Instant::now();
        let state = admin
            .set_maintenance_mode(request)
            .await
            .expect("SetMaintenanceMode")
            .into_inner();
        let ack = Instant::now();
        let index = state.settings_index;

        let mut arrived: Vec<Option<Instant>> = vec![None; secondaries];
        while arrived.contains(&None) {
            let a = next_arrival(&mut rx).await;
            assert_eq!(
                (a.index, a.enabled),
                (index, enabled),
                "secondary {} showed another change than the one awaited",
                a.secondary + 1
            );
            arrived[a.secondary] = Some(a.at);
        }
        // Primary first, then the secondaries.
        let mut durable: Vec<Option<Instant>> = vec![None; secondaries + 1];
        while stamps == Stamps::Durable && durable.contains(&None) {
            let (site, at_index, at) = tokio::time::timeout(DEADLINE, durable_rx.recv())
                .await
                .expect("a site did not publish the change in time")
                .expect("the durability stamps ended");
            // A site still publishing what it caught up on before this change: not this one.
            if at_index < index {
                continue;
            }
            assert_eq!(at_index, index, "site {site} published another entry");
            durable[site] = Some(at);
        }
        if i < WARMUP {
            continue;
        }
        if let [Some(primary), Some(secondary), ..] = durable[..] {
            let watched = arrived[0].expect("the first secondary's arrival");
            breakdown.record(sent, primary, ack, secondary, watched);
        }
        run.ack.push(ack - sent);
        let arrived: Vec<Instant> = arrived.into_iter().flatten().collect();
        for &at in &arrived {
            run.each.between(ack, at);
        }
        let last = arrived.into_iter().max().expect("at least one secondary");
        run.all.between(ack, last);
    }
    drop(admin);
    cluster.stop().await;
    if stamps == Stamps::Durable {
        run.breakdown = Some(breakdown.rows());
    }
    run
}

/// One change's path through a primary and a secondary, split where it became durable.
#[derive(Default)]
struct Breakdown {
    request: Samples,
    response: Samples,
    replication: Samples,
    watch: Samples,
    total: Samples,
}

impl Breakdown {
    fn record(
        &mut self,
        sent: Instant,
        primary: Instant,
        ack: Instant,
        secondary: Instant,
        watched: Instant,
    ) {
        self.request.between(sent, primary);
        self.response.between(primary, ack);
        self.replication.between(primary, secondary);
        self.watch.between(secondary, watched);
        self.total.between(ack, watched);
    }

    fn rows(self) -> Vec<(String, Samples)> {
        vec![
            (
                "request sent -> durable on the primary".into(),
                self.request,
            ),
            (
                "durable on the primary -> ack at the client".into(),
                self.response,
            ),
            (
                "durable on the primary -> durable on the secondary".into(),
                self.replication,
            ),
            (
                "durable on the secondary -> WatchMode arrival".into(),
                self.watch,
            ),
            (
                "ack -> WatchMode arrival (with these stamps on)".into(),
                self.total,
            ),
        ]
    }
}

/// Appends 4 KiB and fsyncs, `n` times: what one durable write costs on this disk.
fn fsync_probe(n: usize) -> Samples {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut file = std::fs::File::create(dir.path().join("probe")).expect("create a probe file");
    let block = [0x5a_u8; 4096];
    let mut samples = Samples::default();
    for _ in 0..n {
        let started = Instant::now();
        file.write_all(&block).expect("write the probe file");
        file.sync_all().expect("fsync the probe file");
        samples.push(started.elapsed());
    }
    samples
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

/// Which Redis servers append every write to their AOF with an fsync before replying.
#[derive(Clone, Copy)]
enum Persistence {
    Both,
    PrimaryOnly,
    None,
}

impl Persistence {
    fn label(self) -> &'static str {
        match self {
            Persistence::Both => "appendfsync always (both)",
            Persistence::PrimaryOnly => "appendfsync always (primary only)",
            Persistence::None => "no persistence",
        }
    }

    fn args(durable: bool) -> &'static [&'static str] {
        if durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        }
    }

    fn primary_args(self) -> &'static [&'static str] {
        Persistence::args(!matches!(self, Persistence::None))
    }

    fn replica_args(self) -> &'static [&'static str] {
        Persistence::args(matches!(self, Persistence::Both))
    }
}

/// The installed `redis-server`'s version (`7.0.15`), or `None` if there is none.
fn redis_version() -> Option<String> {
    let out = Command::new("redis-server")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("?");
    out.status.success().then(|| version.to_string())
}

/// A `redis-server` process with its own directory; killed when dropped (also on panic).
struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(["--save", "", "--daemonize", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer { child, port, dir };
        let up = poll_until(Instant::now() + DEADLINE, || {
            let pong = Resp::connect(port)
                .is_ok_and(|mut conn| conn.command(&["PING"]) == Reply::Simple("PONG".into()));
            if pong {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(Duration::from_millis(10))
            }
        });
        assert!(
            up.is_some(),
            "redis-server on port {port} did not start; its log:\n{}",
            std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default()
        );
        server
    }

    fn connect(&self) -> Resp {
        Resp::connect(self.port).expect("connect to redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP value: just what this bench reads.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One RESP connection.
struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    fn connect(port: u16) -> std::io::Result<Resp> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends a command as an array of bulk strings, in one write.
    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("write to redis");
    }

    fn command(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        self.read().expect("read a reply from redis")
    }

    fn read(&mut self) -> std::io::Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        let number = |s: &str| {
            s.parse::<i64>().map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad RESP: {line}"))
            })
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Integer(number(rest)?),
            "$" => match number(rest)? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut data = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            },
            "*" => match number(rest)? {
                n if n < 0 => Reply::Array(None),
                n => Reply::Array(Some((0..n).map(|_| self.read()).collect::<Result<_, _>>()?)),
            },
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad RESP: {line}"),
                ))
            }
        })
    }

    /// One CRLF-terminated line, without the CRLF; an error at the end of the stream.
    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "empty RESP line",
            ));
        }
        Ok(line)
    }
}

fn bulk_text(r: &Reply) -> Option<&str> {
    match r {
        Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// Waits until the replica reports `master_link_status:up`.
fn wait_for_link(replica: &RedisServer) {
    let mut conn = replica.connect();
    let mut info = Reply::Array(None);
    let up = poll_until(Instant::now() + DEADLINE, || {
        info = conn.command(&["INFO", "replication"]);
        if bulk_text(&info).is_some_and(|t| t.contains("master_link_status:up")) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(Duration::from_millis(20))
        }
    });
    assert!(
        up.is_some(),
        "the replica did not connect to its primary: {info:?}"
    );
}

const KEYSPACE_CHANNEL: &str = "__keyspace@0__:mode";

/// Subscribes to the replica's keyspace notifications for `mode` and stamps each one on a
/// thread of its own. The thread ends when the connection is shut down.
fn subscribe(
    replica: &RedisServer,
) -> (
    mpsc::Receiver<(String, Instant)>,
    TcpStream,
    std::thread::JoinHandle<()>,
) {
    let mut conn = replica.connect();
    let confirmation = conn.command(&["SUBSCRIBE", KEYSPACE_CHANNEL]);
    assert!(
        matches!(&confirmation, Reply::Array(Some(items)) if items.last() == Some(&Reply::Integer(1))),
        "SUBSCRIBE was not confirmed: {confirmation:?}"
    );
    let handle = conn
        .writer
        .try_clone()
        .expect("clone the subscriber socket");
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        while let Ok(reply) = conn.read() {
            let at = Instant::now();
            if let Reply::Array(Some(items)) = &reply {
                if let [kind, _channel, event] = items.as_slice() {
                    if bulk_text(kind) == Some("message") {
                        let event = bulk_text(event).unwrap_or("?").to_string();
                        if tx.send((event, at)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    (rx, handle, thread)
}

fn measure_redis(persistence: Persistence, changes: usize) -> RedisRun {
    // Without the delay, a primary waits 5 s for more replicas before the first sync.
    let mut primary_args = vec!["--repl-diskless-sync-delay", "0"];
    primary_args.extend(persistence.primary_args());
    let primary = RedisServer::start(&primary_args);
    let port = primary.port.to_string();
    let mut replica_args = vec!["--replicaof", "127.0.0.1", &port];
    replica_args.extend(["--notify-keyspace-events", "KEA"]);
    replica_args.extend(persistence.replica_args());
    let replica = RedisServer::start(&replica_args);
    wait_for_link(&replica);
    let (notifications, subscriber, reader) = subscribe(&replica);

    let mut client = primary.connect();
    let mut run = RedisRun {
        propagation: Samples::default(),
        ack: Samples::default(),
    };
    for i in 0..WARMUP + changes {
        let value = format!("{}:{i}", if i % 2 == 0 { "on" } else { "off" });
        let sent = Instant::now();
        let reply = client.command(&["SET", "mode", &value]);
        let ack = Instant::now();
        assert_eq!(reply, Reply::Simple("OK".into()), "SET mode");
        let (event, at) = notifications
            .recv_timeout(DEADLINE)
            .expect("no keyspace notification from the replica in time");
        assert_eq!(event, "set", "unexpected keyspace event");
        if i >= WARMUP {
            run.ack.push(ack - sent);
            run.propagation.between(ack, at);
        }
    }
    let _ = subscriber.shutdown(Shutdown::Both);
    reader.join().expect("the notification reader panicked");
    run
}
