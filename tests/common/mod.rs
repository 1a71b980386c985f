//! Test harness: real `geo-agent` processes on loopback ports chosen by the kernel, gRPC
//! clients for them, and waiting on conditions with deadlines (never fixed sleeps).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use geo_agent::server::pb;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_geo-agent");
/// Generous: CI machines are small and busy. Waits end as soon as the condition holds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A deployment's shared files: the tokens, and a directory per site.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub admin_token: String,
    pub site_token: String,
}

impl Cluster {
    pub fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin_token = format!("admin-{:032x}", rand_u128());
        let site_token = format!("site-{:032x}", rand_u128());
        std::fs::write(dir.path().join("admin-token"), &admin_token).unwrap();
        std::fs::write(dir.path().join("site-token"), &site_token).unwrap();
        Cluster {
            dir,
            admin_token,
            site_token,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn common_args(&self, name: &str) -> Vec<String> {
        vec![
            "run".into(),
            "--site-id".into(),
            name.into(),
            "--data-dir".into(),
            self.path(name).display().to_string(),
            "--admin-token-file".into(),
            self.path("admin-token").display().to_string(),
            "--site-token-file".into(),
            self.path("site-token").display().to_string(),
            "--heartbeat-interval".into(),
            "200ms".into(),
        ]
    }

    pub fn primary(&self, name: &str) -> SiteProc {
        self.primary_with(name, &[])
    }

    /// A primary with extra `run` flags.
    pub fn primary_with(&self, name: &str, extra: &[&str]) -> SiteProc {
        let mut args = self.common_args(name);
        args.extend(["--role".into(), "primary".into()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        SiteProc::start(name, args, self.path(&format!("{name}.log")))
    }

    pub fn secondary(&self, name: &str, primary: &SiteProc) -> SiteProc {
        self.secondary_with(name, primary, &[])
    }

    /// A secondary with extra `run` flags.
    pub fn secondary_with(&self, name: &str, primary: &SiteProc, extra: &[&str]) -> SiteProc {
        let mut args = self.common_args(name);
        args.extend([
            "--role".into(),
            "secondary".into(),
            "--primary".into(),
            primary.url(),
        ]);
        args.extend(extra.iter().map(|a| a.to_string()));
        SiteProc::start(name, args, self.path(&format!("{name}.log")))
    }
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let a = h.finish() as u128;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a as u64);
    (a << 64) | h.finish() as u128
}

/// One running site process.
pub struct SiteProc {
    pub name: String,
    /// `https` for a site started with `--tls-cert`.
    pub scheme: &'static str,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl SiteProc {
    fn start(name: &str, args: Vec<String>, log: PathBuf) -> SiteProc {
        let (child, grpc, http) = spawn_site(&args, &log);
        let tls = args.iter().any(|a| a == "--tls-cert");
        SiteProc {
            name: name.into(),
            scheme: if tls { "https" } else { "http" },
            grpc,
            http,
            log,
            args,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait()
    }

    /// SIGTERM, without waiting.
    pub fn sigterm(&self) {
        let c = self.child.as_ref().expect("site is running");
        // SAFETY: kill(2) on a pid we own; no memory is involved.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits (with the deadline) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("site is running");
        wait_exit(&mut c)
    }

    /// Starts the site again on the same data directory and the same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the site before restarting it");
        let mut args = self.args.clone();
        args.extend([
            "--listen".into(),
            self.grpc.to_string(),
            "--http-listen".into(),
            self.http.to_string(),
        ]);
        let (child, grpc, http) = spawn_site(&args, &self.log);
        assert_eq!((grpc, http), (self.grpc, self.http));
        self.child = Some(child);
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn mode(&self) -> pb::ModeClient {
        pb::mode_service_client::ModeServiceClient::new(channel(&self.url()).await)
    }

    pub async fn admin(&self) -> pb::AdminClient {
        pb::admin_service_client::AdminServiceClient::new(channel(&self.url()).await)
    }

    pub async fn replication(&self) -> pb::ReplicationClient {
        pb::replication_service_client::ReplicationServiceClient::new(channel(&self.url()).await)
    }

    pub async fn objects(&self) -> pb::ObjectClient {
        pb::ObjectClient::new(channel(&self.url()).await)
    }

    /// `GET path` on the site's HTTP listener: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_request(self.http, "GET", path, None).await
    }

    /// The site's `/objects` counts.
    pub async fn object_counts(&self) -> serde_json::Value {
        let (status, body) = self.http_get("/objects").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON from /objects")
    }

    /// `GetMode`, or `None` if the call fails: for polling a site that may be opening
    /// again (after promote, fence or repoint its servers restart in-process, and a call on
    /// a connection the old server accepted is cut).
    pub async fn try_get_mode(&self) -> Option<pb::ModeState> {
        let mut client = self.mode().await;
        client
            .get_mode(pb::GetModeRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    pub async fn get_mode(&self) -> pb::ModeState {
        self.mode()
            .await
            .get_mode(pb::GetModeRequest {})
            .await
            .expect("GetMode")
            .into_inner()
    }
}

impl Drop for SiteProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn wait_exit(c: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = c.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// Spawns `geo-agent ARGS` (port 0 unless ARGS say otherwise), stderr to `log`, and waits
/// for the line that says where it serves.
fn spawn_site(args: &[String], log: &Path) -> (Child, SocketAddr, SocketAddr) {
    let mut args = args.to_vec();
    if !args.iter().any(|a| a == "--listen") {
        args.extend([
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--http-listen".into(),
            "127.0.0.1:0".into(),
        ]);
    }
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = Command::new(BIN)
        .args(&args)
        .env("RUST_LOG", "geo_agent=debug,info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn geo-agent");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split(" serving gRPC on ").nth(1) {
                let mut parts = rest.split(" and HTTP on ");
                let grpc = parts.next().and_then(|a| a.parse().ok());
                let http = parts.next().and_then(|a| a.trim().parse().ok());
                if let (Some(g), Some(h)) = (grpc, http) {
                    let _ = tx.send((g, h));
                }
            }
        }
    });
    match rx.recv_timeout(DEADLINE) {
        Ok((g, h)) => (child, g, h),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "geo-agent {args:?} did not start; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// One HTTP/1.1 request with an optional JSON body: (status, body). Bodies are read to the
/// end of the connection (`Connection: close`).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect HTTP");
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    // Read the head, then as much body as Content-Length says (some servers keep the
    // connection open whatever the request asked), else to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (head, mut body) = loop {
        let n = s.read(&mut buf).await.expect("read");
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&raw[..at]).into_owned(),
                raw[at + 4..].to_vec(),
            );
        }
        assert!(n > 0, "the connection closed before the response head");
    };
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "the connection closed inside the body");
                body.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body).await.expect("read");
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status");
    let body = String::from_utf8_lossy(&body).into_owned();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(&body) } else { body };
    (status, body)
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A channel to `url`, retrying until the deadline (a site that just started may still be
/// binding).
pub async fn channel(url: &str) -> Channel {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match geo_agent::server::client::connect(url, &Default::default()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::task::yield_now().await,
        }
    }
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

/// Polls `probe` until it returns `Some`, or panics with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        tick.tick().await;
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Reads entries `1..=to` of a site's settings log through `StreamSettings`.
pub async fn settings_log(site: &SiteProc, site_token: &str, to: u64) -> Vec<pb::LogEntry> {
    let mut client = site.replication().await;
    let req = pb::StreamLogRequest {
        from_index: 1,
        site_id: "test-reader".into(),
        epoch: 0,
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

/// Pushes `data` as `name` to `site` in chunks of `chunk` bytes, with a trailer.
pub async fn push(
    site: &SiteProc,
    token: &str,
    name: &str,
    data: &[u8],
) -> Result<pb::PushResponse, tonic::Status> {
    let mut msgs = vec![pb::PushRequest {
        part: Some(pb::push_request::Part::Header(pb::PushHeader {
            name: name.into(),
            kind: "upload".into(),
            ..Default::default()
        })),
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
    site.objects()
        .await
        .push(bearer(tokio_stream::iter(msgs), token))
        .await
        .map(|r| r.into_inner())
}

/// Pulls `name` from `site`: its header and bytes.
pub async fn pull(
    site: &SiteProc,
    token: &str,
    name: &str,
) -> Result<(pb::PullHeader, Vec<u8>), tonic::Status> {
    let req = pb::PullRequest { name: name.into() };
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

/// Files under a site's object directory (every stored version), temporary ones apart.
pub fn object_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(data_dir.join("objects")) else {
        return out;
    };
    for shard in shards.flatten() {
        if shard.file_name() == "tmp" {
            continue;
        }
        for f in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out.sort();
    out
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
