//! The harness the tests and the benches share: real `geo-agent` processes on loopback ports
//! chosen by the kernel ([`site`]), gRPC clients for them, HTTP ([`http`]), certificates
//! ([`pki`]), a real S3 server ([`garage`]) and waiting on conditions with deadlines, never
//! fixed sleeps ([`wait`]).
//!
//! A test includes it as `mod common;`, a bench as
//! `#[path = "../tests/common/mod.rs"] mod common;`.
#![allow(dead_code)]

mod browser;
mod garage;
mod http;
mod nginx;
mod pki;
mod proxy;
mod site;
mod upstream;
mod wait;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geo_agent::server::pb;
use geo_agent::server::tls::ClientTls;
use tonic::transport::Channel;

// Not every test or bench uses every part.
#[allow(unused_imports)]
pub use {
    browser::*, garage::*, http::*, nginx::*, pki::*, proxy::*, site::*, upstream::*, wait::*,
};

/// The `geo-agent` this build made.
pub const BIN: &str = env!("CARGO_BIN_EXE_geo-agent");
/// Generous: CI machines are small and busy. Waits end as soon as the condition holds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The binary a bench runs: `GEO_AGENT_BIN` if set, else [`BIN`].
pub fn bin_from_env() -> PathBuf {
    std::env::var_os("GEO_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// A loopback port that was free a moment ago, for programs that must be given a number up
/// front (nginx, rsync, redis-server); geo-agent itself binds port 0.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// A channel to `url`, retrying until the deadline (a site that just started may still be
/// binding).
pub async fn channel(url: &str) -> Channel {
    channel_with(url, &ClientTls::default()).await
}

/// [`channel`] with a client TLS configuration (a CA, a client certificate).
pub async fn channel_with(url: &str, tls: &ClientTls) -> Channel {
    let last_error = std::sync::Mutex::new(String::new());
    let last_error = &last_error;
    poll_until_async(Instant::now() + DEADLINE, Duration::ZERO, || async move {
        match geo_agent::server::client::connect(url, tls).await {
            Ok(c) => Some(c),
            Err(e) => {
                *last_error.lock().unwrap() = e;
                None
            }
        }
    })
    .await
    .unwrap_or_else(|| panic!("cannot connect to {url}: {}", last_error.lock().unwrap()))
}

/// Whether `check` (a command line) succeeds, i.e. a tool a test needs is installed. Missing
/// in CI is a failure (`.ci/run` installs it, and sets `CI`); missing locally skips the test
/// with a message saying what to install.
pub fn have(check: &[&str], install: &str) -> bool {
    let ok = Command::new(check[0])
        .args(&check[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {check:?}: .ci/run installs {install}"
        );
        eprintln!("SKIPPED: {check:?} does not run here; install {install}");
    }
    ok
}

/// A push under way: its call, ending with the primary's answer.
pub type PushCall =
    tokio::task::JoinHandle<Result<tonic::Response<pb::PushResponse>, tonic::Status>>;

/// Starts a push of `name` at `site` and sends its header; the test sends the chunks
/// through the returned sender and ends the push by dropping it.
pub async fn open_push(
    site: &SiteProc,
    token: &str,
    name: &str,
) -> (tokio::sync::mpsc::Sender<pb::PushRequest>, PushCall) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::PushRequest {
        part: Some(pb::push_request::Part::Header(pb::PushHeader {
            name: name.into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut client = site.objects().await;
    let token = token.to_string();
    let call = tokio::spawn(async move {
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        client.push(bearer(stream, &token)).await
    });
    (tx, call)
}

/// `message` with `authorization: Bearer token`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Reads entries `1..=to` of a site's settings log through `StreamSettings`.
pub async fn settings_log(site: &SiteProc, site_token: &str, to: u64) -> Vec<pb::LogEntry> {
    let mut client = site.replication().await;
    let req = pb::StreamLogRequest {
        from_index: 1,
        site_id: Cluster::TEST_SITE.into(),
        epoch: 0,
        proof: None,
    };
    let mut stream = client
        .stream_settings(bearer(req, site_token))
        .await
        .expect("StreamSettings")
        .into_inner();
    let mut out = Vec::new();
    while (out.len() as u64) < to {
        let msg = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("log stream stalled")
            .expect("log stream failed")
            .expect("log stream ended early");
        if let Some(pb::log_message::Kind::Entry(e)) = msg.kind {
            out.push(e);
        }
    }
    out
}

/// Sets maintenance mode on `site` with the admin token.
pub async fn set_maintenance(
    site: &SiteProc,
    token: &str,
    enabled: bool,
    message: &str,
) -> Result<pb::ModeState, tonic::Status> {
    let req = pb::SetMaintenanceModeRequest {
        enabled,
        message: message.into(),
        actor: "test".into(),
    };
    site.admin()
        .await
        .set_maintenance_mode(bearer(req, token))
        .await
        .map(|r| r.into_inner())
}

/// `geo-agent run` on a fresh data directory under `dir`, on ports the kernel picks, with
/// `extra` flags: for a start that must be refused. (exit code, stderr)
pub fn run_refused(dir: &Path, extra: &[&str]) -> (i32, String) {
    let data = dir.join("data").display().to_string();
    let mut args = vec![
        "run",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    let (code, _, err) = cli(&args, &[]);
    (code, err)
}

/// The messages of a push of `data` under `header`: the header, 64 KiB chunks, a trailer.
pub fn push_messages(header: pb::PushHeader, data: &[u8]) -> Vec<pb::PushRequest> {
    let mut msgs = vec![pb::PushRequest {
        part: Some(pb::push_request::Part::Header(header)),
    }];
    for c in data.chunks(64 * 1024) {
        msgs.push(pb::PushRequest {
            part: Some(pb::push_request::Part::Chunk(c.to_vec())),
        });
    }
    msgs.push(pb::PushRequest {
        part: Some(pb::push_request::Part::Trailer(pb::PushTrailer {
            size: data.len() as u64,
            sha256: sha256_hex(data),
        })),
    });
    msgs
}

/// Pushes `data` under `header` on `client`.
pub async fn push_on(
    client: &mut pb::ObjectClient,
    token: &str,
    header: pb::PushHeader,
    data: &[u8],
) -> Result<pb::PushResponse, tonic::Status> {
    let msgs = push_messages(header, data);
    client
        .push(bearer(tokio_stream::iter(msgs), token))
        .await
        .map(|r| r.into_inner())
}

/// The header of an ordinary push of `name`.
pub fn upload(name: &str) -> pb::PushHeader {
    pb::PushHeader {
        name: name.into(),
        kind: "upload".into(),
        ..Default::default()
    }
}

/// Pushes `data` as `name` to `site` in 64 KiB chunks, with a trailer.
pub async fn push(
    site: &SiteProc,
    token: &str,
    name: &str,
    data: &[u8],
) -> Result<pb::PushResponse, tonic::Status> {
    push_on(&mut site.objects().await, token, upload(name), data).await
}

/// Pulls `name` from `site`: its header and bytes.
pub async fn pull(
    site: &SiteProc,
    token: &str,
    name: &str,
) -> Result<(pb::PullHeader, Vec<u8>), tonic::Status> {
    let req = pb::PullRequest {
        name: name.into(),
        ..Default::default()
    };
    let mut stream = site
        .objects()
        .await
        .pull(bearer(req, token))
        .await?
        .into_inner();
    let mut header = None;
    let mut data = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.part {
            Some(pb::pull_response::Part::Header(h)) => header = Some(h),
            Some(pb::pull_response::Part::Chunk(c)) => data.extend(c),
            None => {}
        }
    }
    Ok((header.expect("a header"), data))
}

/// `Stat` of `name` at `site`.
pub async fn stat(
    site: &SiteProc,
    token: &str,
    name: &str,
) -> Result<pb::ObjectInfo, tonic::Status> {
    let req = pb::StatRequest { name: name.into() };
    site.objects()
        .await
        .stat(bearer(req, token))
        .await
        .map(|r| r.into_inner())
}

/// Waits until `site` holds `name` synced and verified with checksum `sha`.
pub async fn synced(site: &SiteProc, token: &str, name: &str, sha: &str) -> pb::ObjectInfo {
    eventually(
        &format!("{name} synced and verified at {}", site.name),
        || async {
            let info = stat(site, token, name).await.ok()?;
            let r = info.replica.as_ref()?;
            let o = info.object.as_ref()?;
            (o.sha256 == sha
                && r.sync == pb::SyncState::Synced as i32
                && r.verification == pb::VerificationState::Succeeded as i32
                && r.local_version == o.version)
                .then_some(info)
        },
    )
    .await
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The entries of a site's object directory: every stored version, temporary files apart.
fn object_entries(data_dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(data_dir.join("objects"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|shard| shard.file_name() != "tmp")
        .flat_map(|shard| {
            std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
        })
}

/// Files under a site's object directory (every stored version), temporary ones apart.
pub fn object_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = object_entries(data_dir).map(|f| f.path()).collect();
    out.sort();
    out
}

/// How many files [`object_files`] would list, without collecting their paths.
pub fn count_object_files(data_dir: &Path) -> usize {
    object_entries(data_dir).count()
}

/// Runs the CLI with `args`, returning (exit code, stdout, stderr).
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("GEO_AGENT_ADDR")
        .env_remove("GEO_AGENT_TOKEN")
        .env_remove("GEO_AGENT_TOKEN_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run geo-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `promtool check metrics`: the text parses, and names and labels follow Prometheus'
/// conventions.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- the text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `len` bytes that do not compress, the same for the same `seed` (xorshift).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Peak resident memory of a process (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
