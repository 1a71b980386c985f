//! `geo-agent run` processes: a deployment's directory and tokens ([`Cluster`]), how to
//! start one site ([`Spawn`]), and the running site ([`SiteProc`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use geo_agent::server::pb;
use geo_agent::server::tls::ClientTls;
use tonic::transport::Channel;

use super::{channel_with, http_get_blocking, http_request, poll_until, BIN, DEADLINE};

/// A deployment's shared files: the admin token, a token per site (`NAME.site-token`,
/// registered at the primary before the site starts), and a directory per site.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub admin_token: String,
    /// The token of [`Cluster::TEST_SITE`], a site registered at every primary the cluster
    /// starts, for tests that talk to `ReplicationService` themselves (in `site-token`).
    pub site_token: String,
}

impl Cluster {
    /// A deployment in a new temporary directory.
    pub fn new() -> Cluster {
        Cluster::create(tempfile::tempdir().expect("tempdir"))
    }

    /// A deployment in a new directory under `base`, named `PREFIX…`.
    pub fn new_in(base: &Path, prefix: &str) -> Cluster {
        Cluster::create(
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(base)
                .expect("create the scratch directory"),
        )
    }

    fn create(dir: tempfile::TempDir) -> Cluster {
        let admin_token = format!("admin-{:032x}", rand_u128());
        let site_token = format!("site-{:032x}", rand_u128());
        write_private(&dir.path().join("admin-token"), &admin_token);
        write_private(&dir.path().join("site-token"), &site_token);
        promotion_public_key(dir.path());
        Cluster {
            dir,
            admin_token,
            site_token,
        }
    }

    /// The id [`Cluster::site_token`] is registered under.
    pub const TEST_SITE: &'static str = "test-reader";

    /// Site `name`'s own token (created on first use, mode 0600).
    pub fn token_of(&self, name: &str) -> String {
        site_token(self.dir.path(), name)
    }

    /// Registers site `id` with `token` at `primary` (AddSite with the admin token).
    pub fn register(&self, primary: &SiteProc, id: &str, token: &str) {
        register(primary, &self.admin_token, id, token)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The deployment's promotion private key (what `promote --promotion-key-file` reads).
    pub fn promotion_key_file(&self) -> PathBuf {
        self.path(PROMOTION_KEY)
    }

    /// The environment of an admin's CLI here: the admin token file and the promotion key.
    pub fn admin_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "GEO_AGENT_TOKEN_FILE",
                self.path("admin-token").display().to_string(),
            ),
            (
                "GEO_AGENT_PROMOTION_KEY_FILE",
                self.promotion_key_file().display().to_string(),
            ),
        ]
    }

    /// Runs `geo-agent ARGS` as an admin of this deployment: (exit code, stdout, stderr).
    pub fn admin_cli(&self, args: &[&str]) -> (i32, String, String) {
        let env = self.admin_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::cli(args, &env)
    }

    /// The public key every site of the deployment is given.
    pub fn promotion_public_key(&self) -> String {
        promotion_public_key(self.dir.path())
    }

    /// Site `name` as the tests run it: [`Spawn::new`]'s defaults, a heartbeat every
    /// 200 ms, then `role` and `extra` flags.
    fn site(&self, name: &str, role: &[&str], extra: &[&str]) -> SiteProc {
        Spawn::new(self.dir.path(), name)
            .args(["--heartbeat-interval", "200ms"])
            .args(role)
            .args(extra)
            .start()
    }

    pub fn primary(&self, name: &str) -> SiteProc {
        self.primary_with(name, &[])
    }

    /// A primary with extra `run` flags.
    /// It registers itself (so that, once replaced, it can follow the new primary) and
    /// [`Cluster::TEST_SITE`].
    pub fn primary_with(&self, name: &str, extra: &[&str]) -> SiteProc {
        let site = self.site(name, &["--role", "primary"], extra);
        self.register(&site, name, &self.token_of(name));
        self.register(&site, Cluster::TEST_SITE, &self.site_token);
        site
    }

    pub fn secondary(&self, name: &str, primary: &SiteProc) -> SiteProc {
        self.secondary_with(name, primary, &[])
    }

    /// A secondary with extra `run` flags.
    /// It is registered at `primary` first.
    pub fn secondary_with(&self, name: &str, primary: &SiteProc, extra: &[&str]) -> SiteProc {
        self.secondary_via(name, primary, &primary.url(), extra)
    }

    /// A secondary on a fixed gRPC port that it advertises, so that the primary can call it
    /// back (to fetch a verified copy when repairing its own).
    pub fn advertised_secondary(&self, name: &str, primary: &SiteProc) -> SiteProc {
        let listen = format!("127.0.0.1:{}", super::free_port());
        let advertise = format!("http://{listen}");
        self.secondary_with(
            name,
            primary,
            &[
                "--listen",
                &listen,
                "--http-listen",
                "127.0.0.1:0",
                "--advertise-url",
                &advertise,
            ],
        )
    }

    /// A secondary registered at `primary` that reaches it at `url` (a [`super::FaultProxy`]
    /// in front of it, say).
    pub fn secondary_via(
        &self,
        name: &str,
        primary: &SiteProc,
        url: &str,
        extra: &[&str],
    ) -> SiteProc {
        self.register(primary, name, &self.token_of(name));
        self.site(name, &["--role", "secondary", "--primary", url], extra)
    }
}

/// Writes a token file only its owner may read (a site refuses any other).
pub fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write a token file");
    f.write_all(text.as_bytes()).expect("write a token file");
}

/// Site `name`'s token in `dir/NAME.site-token`, created (0600) on first use.
pub fn site_token(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.site-token"));
    match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(_) => {
            let token = format!("site-{name}-{:032x}", rand_u128());
            write_private(&path, &token);
            token
        }
    }
}

/// Registers site `id` with `token` at `primary`, with the admin token, as `sites add`
/// does (only the sha256 is sent); on a thread of its own, so a test's runtime need not be
/// entered.
pub fn register(primary: &SiteProc, admin_token: &str, id: &str, token: &str) {
    use sha2::Digest;
    let (url, tls) = (primary.url(), registrar_tls(primary));
    let req = pb::AddSiteRequest {
        site_id: id.to_string(),
        token_sha256: hex::encode(sha2::Sha256::digest(token.as_bytes())),
        actor: "harness".into(),
    };
    let admin_token = admin_token.to_string();
    let name = primary.name.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut client =
                pb::admin_service_client::AdminServiceClient::new(channel_with(&url, &tls).await);
            client
                .add_site(super::bearer(req, &admin_token))
                .await
                .unwrap_or_else(|e| panic!("register a site at {name}: {e:?}"));
        })
    })
    .join()
    .expect("register a site");
}

/// How the harness reaches a site to register others at it: over TLS with the site's own
/// certificate as the client's, trusting its `--tls-ca` (else the `ca.pem` beside its
/// certificate, as [`super::new_ca`] names it).
fn registrar_tls(site: &SiteProc) -> ClientTls {
    let args = &site.spawn.args;
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let Some(cert) = flag("--tls-cert") else {
        return site.client.clone();
    };
    let ca = flag("--tls-ca").unwrap_or_else(|| cert.with_file_name("ca.pem"));
    let key = flag("--tls-key");
    ClientTls::load(Some(&ca), Some(&cert), key.as_deref()).expect("the site's TLS files")
}

const PROMOTION_KEY: &str = "promotion-key";
const PROMOTION_PUBLIC_KEY: &str = "promotion-public-key";

/// The promotion key pair of the deployment in `dir` (one per deployment, made on first
/// use with `geo-agent promotion-key generate`): returns the public key.
pub fn promotion_public_key(dir: &Path) -> String {
    let public = dir.join(PROMOTION_PUBLIC_KEY);
    if let Ok(key) = std::fs::read_to_string(&public) {
        return key.trim().to_string();
    }
    let out = Command::new(BIN)
        .args(["promotion-key", "generate", "--out"])
        .arg(dir.join(PROMOTION_KEY))
        .output()
        .expect("run geo-agent promotion-key generate");
    assert!(
        out.status.success(),
        "promotion-key generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::write(&public, &key).unwrap();
    key
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

/// How to start one `geo-agent run`: the tests' defaults, which a bench can change.
#[derive(Clone)]
pub struct Spawn {
    dir: PathBuf,
    name: String,
    args: Vec<String>,
    bin: PathBuf,
    rust_log: Option<String>,
    wrapper: Vec<OsString>,
    client: ClientTls,
    /// Where the gating proxy listens, as the last start said (`--proxy-listen`).
    proxy: Arc<Mutex<Option<SocketAddr>>>,
}

impl Spawn {
    /// Site `name` of the deployment in `dir`: [`BIN`] `run` with site id `name`, data
    /// directory `dir/NAME`, the token files `dir/admin-token` and `dir/NAME.site-token`, stderr
    /// appended to `dir/NAME.log`, `RUST_LOG=geo_agent=debug,info`, listening on port 0
    /// unless the flags say `--listen`.
    pub fn new(dir: &Path, name: &str) -> Spawn {
        Spawn {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            args: Vec::new(),
            bin: PathBuf::from(BIN),
            rust_log: Some("geo_agent=debug,info".into()),
            wrapper: Vec::new(),
            client: ClientTls::default(),
            proxy: Arc::default(),
        }
    }

    /// More `run` flags.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Spawn {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Another `geo-agent` binary.
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Spawn {
        self.bin = bin.into();
        self
    }

    /// The site's `RUST_LOG`; `None` unsets it.
    pub fn rust_log(mut self, filter: Option<&str>) -> Spawn {
        self.rust_log = filter.map(str::to_string);
        self
    }

    /// Runs the site under `wrapper`, a command line the binary and its flags are appended
    /// to (`strace -f -c -o FILE --`). The process the harness holds is then the wrapper's;
    /// [`SiteProc::pid`] is still geo-agent's.
    pub fn under<S: Into<OsString>>(mut self, wrapper: impl IntoIterator<Item = S>) -> Spawn {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// How the harness's own gRPC clients connect to the site (for mutual TLS: a client
    /// certificate).
    pub fn client(mut self, tls: ClientTls) -> Spawn {
        self.client = tls;
        self
    }

    /// Starts the site and waits (with the deadline) for the line that says where it
    /// serves. Its token is `dir/NAME.site-token` (created when missing).
    pub fn start(self) -> SiteProc {
        site_token(&self.dir, &self.name);
        let (child, grpc, http) = self.spawn(None);
        let tls = self.args.iter().any(|a| a == "--tls-cert");
        SiteProc {
            name: self.name.clone(),
            scheme: if tls { "https" } else { "http" },
            grpc,
            http,
            log: self.log(),
            data_dir: self.dir.join(&self.name),
            client: self.client.clone(),
            spawn: self,
            child: Some(child),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// Spawns the site on `listen` (else on port 0, unless the flags say `--listen`), stderr
    /// to its log, and waits for the line that says where it serves.
    fn spawn(&self, listen: Option<(SocketAddr, SocketAddr)>) -> (Child, SocketAddr, SocketAddr) {
        let path = |file: &str| self.dir.join(file).display().to_string();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--site-id".into(),
            self.name.clone(),
            "--data-dir".into(),
            path(&self.name),
            "--admin-token-file".into(),
            path("admin-token"),
            "--site-token-file".into(),
            path(&format!("{}.site-token", self.name)),
        ];
        if !self.args.iter().any(|a| a == "--promotion-public-key") {
            args.extend([
                "--promotion-public-key".into(),
                promotion_public_key(&self.dir),
            ]);
        }
        args.extend(self.args.iter().cloned());
        let listen = match listen {
            Some((grpc, http)) => Some((grpc.to_string(), http.to_string())),
            None if !args.iter().any(|a| a == "--listen") => {
                Some(("127.0.0.1:0".into(), "127.0.0.1:0".into()))
            }
            None => None,
        };
        if let Some((grpc, http)) = listen {
            args.extend(["--listen".into(), grpc, "--http-listen".into(), http]);
        }
        let log = self.log();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        match &self.rust_log {
            Some(filter) => cmd.env("RUST_LOG", filter),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn geo-agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let proxy = Arc::clone(&self.proxy);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Said before the line below, so known once the site is up.
                if let Some(rest) = line.split(" gating proxy on ").nth(1) {
                    let addr = rest.split(' ').next().and_then(|a| a.parse().ok());
                    *proxy.lock().unwrap() = addr;
                }
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
        match rx.recv_timeout(DEADLINE) {
            Ok((g, h)) => (child, g, h),
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

/// One running site process, killed (`kill -9`) when dropped.
pub struct SiteProc {
    pub name: String,
    /// `https` for a site started with `--tls-cert`.
    pub scheme: &'static str,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    pub data_dir: PathBuf,
    /// How the harness's gRPC clients connect to it.
    pub client: ClientTls,
    spawn: Spawn,
    child: Option<Child>,
}

impl SiteProc {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc)
    }

    /// Whether the process was started and not yet stopped (it may have exited on its own).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The geo-agent process's id (when it runs under a wrapper: the wrapper's child).
    pub fn pid(&self) -> u32 {
        let pid = self.child.as_ref().expect("site is running").id();
        if self.spawn.wrapper.is_empty() {
            return pid;
        }
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("the wrapper ({pid}) of {} has no child", self.name))
    }

    /// `kill -9` (of the wrapper, when there is one).
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

    /// SIGTERM to geo-agent, without waiting.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on a pid we own; no memory is involved.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
    }

    /// Waits (with the deadline) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_for_exit(Instant::now() + DEADLINE)
            .expect("process did not exit in time")
    }

    /// Waits until `deadline` for the process to exit: its status, or `None` when it still
    /// runs.
    pub fn wait_for_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("site is running");
        let status = poll_until(deadline, || match child.try_wait().expect("wait") {
            Some(status) => ControlFlow::Break(status),
            None => ControlFlow::Continue(Duration::from_millis(10)),
        })?;
        self.child = None;
        Some(status)
    }

    /// Starts the site again on the same data directory and the same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the site before restarting it");
        let (child, grpc, http) = self.spawn.spawn(Some((self.grpc, self.http)));
        assert_eq!((grpc, http), (self.grpc, self.http));
        self.child = Some(child);
    }

    /// The gating proxy's address (a site started with `--proxy-listen`).
    pub fn proxy(&self) -> SocketAddr {
        self.spawn
            .proxy
            .lock()
            .unwrap()
            .expect("the site was started with --proxy-listen")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new connection to the site.
    pub async fn channel(&self) -> Channel {
        channel_with(&self.url(), &self.client).await
    }

    pub async fn mode(&self) -> pb::ModeClient {
        pb::mode_service_client::ModeServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> pb::AdminClient {
        pb::admin_service_client::AdminServiceClient::new(self.channel().await)
    }

    pub async fn replication(&self) -> pb::ReplicationClient {
        pb::replication_service_client::ReplicationServiceClient::new(self.channel().await)
    }

    pub async fn objects(&self) -> pb::ObjectClient {
        pb::ObjectClient::new(self.channel().await)
    }

    /// `GET path` on the site's HTTP listener: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_request(self.http, "GET", path, None).await
    }

    /// [`SiteProc::http_get`] without a runtime; panics when the exchange fails.
    pub fn http_get_blocking(&self, path: &str) -> (u16, String) {
        http_get_blocking(self.http, path)
            .unwrap_or_else(|e| panic!("GET {path} at {}: {e}", self.name))
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
