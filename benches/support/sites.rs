//! The benches' view of a running site (its `/objects` counts, memory and CPU, a stop that
//! cleans up, waiting until it caught up), filling a primary, and timing a fresh
//! secondary's sync.

use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use geo_agent::server::pb;
use tokio::task::JoinSet;

use super::cpu::{cpu_of, machine_busy, own_cpu, Cpu, Transfer};
use super::{env_or, sync_disks, Bench, DataSet, WAIT_DEADLINE};
use crate::common::{bearer, count_object_files, poll_until, SiteProc, DEADLINE};

/// Shortest pause between two `/objects` polls.
pub const POLL_MIN: Duration = Duration::from_millis(20);
/// `/objects` is a full scan of the registry: between polls wait this many times as long
/// as the last poll took, so polling costs the polled site at most ~1/(1+this) of a core.
pub const POLL_BACKOFF: u32 = 9;

/// A site's `GET /objects`.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
pub struct Counts {
    pub objects: u64,
    pub synced: u64,
    pub pending: u64,
    pub failed: u64,
    pub events_applied: u64,
}

/// How long a secondary took to catch up ([`SiteProc::wait_caught_up`]).
pub struct Waited {
    /// Until the event log was at the primary's head.
    pub head: Duration,
    /// Until every object was synced.
    pub done: Duration,
    /// `/objects` calls made, and their mean duration.
    pub polls: u32,
    pub poll_mean: Duration,
    pub last: Counts,
}

/// What [`SiteProc::poll_synced`] saw.
pub struct Synced {
    /// When everything was synced.
    pub done: Duration,
    /// When a poll first showed the event log at the head.
    pub first_at_head: Option<Duration>,
    pub polls: u32,
    /// Time spent in the polls.
    pub polling: Duration,
    pub last: Counts,
}

impl SiteProc {
    pub fn counts(&self) -> Counts {
        let (status, body) = self.http_get_blocking("/objects");
        assert_eq!(status, 200, "GET /objects at {}: {body}", self.name);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/objects at {} is not JSON ({e}): {body}", self.name))
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    /// Resets the peak RSS to the current RSS; false when the kernel refuses.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// SIGTERM, then waits for the exit (kill -9 after the deadline), and removes the data
    /// directory.
    pub fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // Under strace, geo-agent itself is signalled: strace then writes its summary and
        // exits.
        self.sigterm();
        let asked = Instant::now();
        match self.wait_for_exit(asked + DEADLINE) {
            Some(_) => {
                if asked.elapsed() > Duration::from_secs(1) {
                    eprintln!(
                        "  {} took {:.1} s to exit after SIGTERM",
                        self.name,
                        asked.elapsed().as_secs_f64()
                    );
                }
            }
            None => {
                eprintln!("{} did not stop after SIGTERM: killing it", self.name);
                self.kill9();
            }
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
    pub fn wait_caught_up(
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
        let mut files = 0;
        poll_until(deadline, || {
            let t = Instant::now();
            files = self.object_files() as u64;
            let took = t.elapsed();
            if files >= n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(POLL_MIN.max(took * POLL_BACKOFF))
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out waiting for {n} object files at {} ({files} there)",
                self.name
            )
        });
        // Phase 2: the registry, until it says everything is synced.
        let synced = self.poll_synced(since, head, n, |_| POLL_MIN);
        let at_head = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("{}: StreamEvents never delivered entry {head}", self.name));
        watcher.abort();
        Waited {
            head: at_head - since,
            done: synced.done,
            polls: synced.polls,
            poll_mean: synced.polling / synced.polls,
            last: synced.last,
        }
    }

    /// Polls `GET /objects`, waiting `pace(how long the last poll took)` between polls,
    /// until this site has applied the event log up to `head` and holds exactly `n`
    /// objects, all synced. Times are from `since`.
    pub fn poll_synced(
        &self,
        since: Instant,
        head: u64,
        n: u64,
        pace: impl Fn(Duration) -> Duration,
    ) -> Synced {
        let mut s = Synced {
            done: Duration::ZERO,
            first_at_head: None,
            polls: 0,
            polling: Duration::ZERO,
            last: Counts::default(),
        };
        let mut warned = false;
        s.done = poll_until(since + WAIT_DEADLINE, || {
            let t = Instant::now();
            s.last = self.counts();
            let took = t.elapsed();
            s.polls += 1;
            s.polling += took;
            let c = s.last;
            if c.events_applied >= head && s.first_at_head.is_none() {
                s.first_at_head = Some(since.elapsed());
            }
            if c.events_applied == head && c.objects == n && c.synced == n && c.pending == 0 {
                return ControlFlow::Break(since.elapsed());
            }
            if c.failed > 0 && !warned {
                warned = true;
                eprintln!(
                    "  {}: some objects failed to sync (retrying): {c:?}",
                    self.name
                );
            }
            ControlFlow::Continue(pace(took))
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out waiting for every object synced at {}: {:?}",
                self.name, s.last
            )
        });
        s
    }

    /// CPU seconds (user + system) the site has used so far.
    pub fn cpu(&self) -> Cpu {
        cpu_of(self.pid(), false)
    }

    /// Minor page faults so far (`/proc/<pid>/stat` field 10).
    pub fn minor_faults(&self) -> u64 {
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
    pub fn thread_cpu(&self) -> String {
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
    pub fn idle_poll(&self) -> Duration {
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
    pub fn object_files(&self) -> usize {
        count_object_files(&self.data_dir)
    }
}

/// Sends the instant `StreamEvents` on the site at `url` delivers entry `head` (so: once
/// it is durable there).
async fn watch_head(
    url: String,
    tls: geo_agent::server::tls::ClientTls,
    site_token: String,
    head: u64,
    tx: mpsc::Sender<Instant>,
) {
    let channel = crate::common::channel_with(&url, &tls).await;
    let mut client = pb::ReplicationClient::new(channel);
    let req = pb::StreamLogRequest {
        from_index: head,
        site_id: super::BENCH_SITE.into(),
        epoch: 0,
        proof: None,
    };
    // A fresh secondary knows the bench's site token only once it has applied the
    // primary's site registry: until then it answers UNAUTHENTICATED.
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut stream = loop {
        match client.stream_events(bearer(req.clone(), &site_token)).await {
            Ok(stream) => break stream.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("StreamEvents at {url}: {s}"),
        }
    };
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

/// Pushes objects to `site` over one gRPC connection, `concurrency` at a time. Each item
/// gives a name and a way to get its bytes (read on the push's task).
pub async fn push_all<F>(site: &SiteProc, token: &str, items: Vec<(String, F)>, concurrency: usize)
where
    F: FnOnce() -> Vec<u8> + Send + 'static,
{
    let channel = site.channel().await;
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

/// Pulls objects from `site` into memory over one gRPC connection, `concurrency` at a
/// time; returns the bytes received.
pub async fn pull_all(site: &SiteProc, token: &str, names: Vec<String>, concurrency: usize) -> u64 {
    let channel = site.channel().await;
    let mut tasks = JoinSet::new();
    let mut total = 0u64;
    for name in names {
        while tasks.len() >= concurrency {
            total += tasks
                .join_next()
                .await
                .expect("a task")
                .expect("a pull task");
        }
        let client = pb::ObjectClient::new(channel.clone());
        let token = token.to_string();
        tasks.spawn(async move { pull_one(client, &token, name).await });
    }
    while let Some(done) = tasks.join_next().await {
        total += done.expect("a pull task");
    }
    total
}

async fn pull_one(mut client: pb::ObjectClient, token: &str, name: String) -> u64 {
    let req = pb::PullRequest {
        name: name.clone(),
        ..Default::default()
    };
    let mut stream = client
        .pull(bearer(req, token))
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
    if let Err(s) = client.push(bearer(tokio_stream::iter(msgs), token)).await {
        panic!("push {name}: {s}");
    }
}

/// The files of `set` as [`push_all`] items, each read from disk on its push's task.
pub fn push_items(set: &DataSet) -> Vec<(String, impl FnOnce() -> Vec<u8> + Send + 'static)> {
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

/// Starts a fresh secondary of `primary` and times it until it holds all `n` objects;
/// stops it. Also: how long one `GET /objects` takes there once it is synced, and with
/// `idle`, the share of a core it uses once synced, with nothing to do, over
/// `OBJECTS_BENCH_IDLE_SECS` (default 3 s).
pub fn geo_sync(
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
