//! A real S3 server for the S3 object backend's tests: one single-node Garage per test, on
//! loopback ports, in a directory of its own, killed when dropped; and rclone, configured
//! by environment variables alone, to look into its buckets as an operator would.
//!
//! Garage is what a small deployment would run, and it keeps the tests honest about
//! S3's real behaviour (multipart uploads, listings, refused signatures) where a mock would
//! only echo the client's assumptions. The price is a process and a few hundred
//! milliseconds per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, have, http_exchange, wait_until, write_private, DEADLINE};

/// The region Garage is configured with, and the tests' sites are given.
pub const REGION: &str = "garage";

/// A running single-node Garage: its S3 API on `127.0.0.1:s3_port`.
pub struct Garage {
    dir: tempfile::TempDir,
    config: PathBuf,
    pub s3_port: u16,
    child: Option<Child>,
}

/// A bucket on a [`Garage`], with a key that may read, write and own it.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub name: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
}

/// How an object is stored, as Garage says.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    /// How many parts, when it was stored by a multipart upload (`None`: by one PUT).
    pub multipart_parts: Option<u32>,
}

impl Garage {
    /// Starts Garage with a one-node layout and waits until it serves S3. `None` (after
    /// saying so) when garage or rclone is not installed; in CI that is a failure.
    pub fn start() -> Option<Garage> {
        if !have(
            &["garage", "--version"],
            "garage (cargo install --locked garage --version 2.5.0)",
        ) || !have(&["rclone", "version"], "the Debian package rclone")
        {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("garage")
            .tempdir()
            .expect("tempdir");
        let (rpc, s3_port) = (free_port(), free_port());
        let d = dir.path().display();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = true
data_fsync = true
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
"#,
                secret = random_hex(32),
            ),
        )
        .expect("write garage.toml");
        let mut garage = Garage {
            dir,
            config,
            s3_port,
            child: None,
        };
        garage.spawn();
        let id = garage.retry("garage node id", &["node", "id", "-q"]);
        let id = id.trim().split('@').next().unwrap_or_default().to_string();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        Some(garage)
    }

    /// A new bucket `name`, and a new key allowed to read, write and own it.
    pub fn bucket(&self, name: &str) -> Bucket {
        self.cli(&["bucket", "create", name]);
        let out = self.cli(&["key", "create", &format!("{name}-key")]);
        let field = |label: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {label:?} in `garage key create`:\n{out}"))
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", &key_id,
        ]);
        let bucket = Bucket {
            endpoint: format!("http://127.0.0.1:{}", self.s3_port),
            name: name.to_string(),
            region: REGION.to_string(),
            key_id,
            secret,
        };
        // The key's rights take effect at once on one node; wait anyway, with the deadline,
        // until the bucket answers through them.
        wait_until(
            &format!("bucket {name} listable"),
            Instant::now() + DEADLINE,
            Duration::from_millis(50),
            || bucket.try_rclone(&["lsf", &bucket.remote("")]).ok(),
        );
        bucket
    }

    /// How `key` is stored in `bucket`, as Garage itself says (`bucket inspect-object`).
    pub fn stored(&self, bucket: &str, key: &str) -> Stored {
        let out = self.cli(&["bucket", "inspect-object", bucket, key]);
        let field = |label: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {label:?} in `garage bucket inspect-object`:\n{out}"))
        };
        let size = field("Size (exact):").parse().expect("a size");
        // A multipart upload's ETag is the parts' MD5 followed by `-` and their number.
        let multipart_parts = field("Etag:")
            .split_once('-')
            .map(|(_, n)| n.parse().expect("a number of parts"));
        Stored {
            size,
            multipart_parts,
        }
    }

    /// A new bucket `name` that `key`'s key may read, write and own: one rclone remote
    /// then reaches both buckets, and can copy between them server-side.
    pub fn bucket_for(&self, name: &str, key: &Bucket) -> Bucket {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            &key.key_id,
        ]);
        let bucket = Bucket {
            name: name.to_string(),
            ..key.clone()
        };
        wait_until(
            &format!("bucket {name} listable"),
            Instant::now() + DEADLINE,
            Duration::from_millis(50),
            || bucket.try_rclone(&["lsf", &bucket.remote("")]).ok(),
        );
        bucket
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server; its directories stay, for [`Garage::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and data, and waits until it serves S3.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop Garage before restarting it");
        self.spawn();
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Spawns `garage server` (its log in the directory) and waits until the S3 port
    /// answers HTTP.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("garage.log");
        let child = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("garage.log"))
            .stderr(log)
            .spawn()
            .expect("spawn garage server");
        self.child = Some(child);
        let addr = ("127.0.0.1", self.s3_port);
        wait_until(
            "Garage serving S3",
            Instant::now() + DEADLINE,
            Duration::from_millis(50),
            || {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                    panic!("garage server exited ({status}):\n{}", self.log());
                }
                http_exchange(addr, "GET", "/", &[("Host", "127.0.0.1")], b"").ok()
            },
        );
    }

    /// `garage -c CONFIG ARGS`: its stdout; panics when it fails.
    fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("garage {args:?}: {e}"))
    }

    /// [`Garage::cli`] until it succeeds, with the deadline (the server may still be
    /// opening its RPC port).
    fn retry(&self, what: &str, args: &[&str]) -> String {
        wait_until(
            what,
            Instant::now() + DEADLINE,
            Duration::from_millis(50),
            || self.try_cli(args).ok(),
        )
    }

    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run garage");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Bucket {
    /// The credentials file a site is given: TOML, mode 0600, in `dir`.
    pub fn credentials_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.s3-credentials", self.name));
        write_private(
            &path,
            &format!(
                "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                self.key_id, self.secret
            ),
        );
        path
    }

    /// The `geo-agent run` flags that keep a site's objects in this bucket under `prefix`,
    /// with the credentials in a file in `dir`.
    pub fn site_args(&self, dir: &Path, prefix: &str) -> Vec<String> {
        let credentials = self.credentials_file(dir).display().to_string();
        [
            "--objects-backend",
            "s3",
            "--objects-s3-endpoint",
            &self.endpoint,
            "--objects-s3-bucket",
            &self.name,
            "--objects-s3-region",
            &self.region,
            "--objects-s3-prefix",
            prefix,
            "--objects-s3-credentials-file",
            &credentials,
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Every object key under `prefix` (`""`: the whole bucket), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.rclone(&["lsf", "-R", "--files-only", &self.remote(prefix)]);
        let base = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let mut keys: Vec<String> = out.lines().map(|k| format!("{base}{k}")).collect();
        keys.sort();
        keys
    }

    /// The keys of the bucket's incomplete multipart uploads.
    pub fn multipart_uploads(&self) -> Vec<String> {
        let out = self.rclone(&["backend", "list-multipart-uploads", &self.remote("")]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("list-multipart-uploads: {e}:\n{out}"));
        let mut keys: Vec<String> = v[&self.name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["Key"].as_str().map(str::to_string))
            .collect();
        keys.sort();
        keys
    }

    /// The bytes stored under `key`.
    pub fn read(&self, key: &str) -> Vec<u8> {
        self.try_read(key)
            .unwrap_or_else(|e| panic!("rclone cat {key}: {e}"))
    }

    /// [`Bucket::read`], or why not (no such key, say).
    pub fn try_read(&self, key: &str) -> Result<Vec<u8>, String> {
        let out = self.command(&["cat", &self.remote(key)]).output();
        let out = out.expect("run rclone");
        match out.status.success() {
            true => Ok(out.stdout),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// Stores `bytes` under `key`, replacing what was there.
    pub fn write(&self, key: &str, bytes: &[u8]) {
        use std::io::Write;
        let mut child = self.rcat(key);
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("write to rclone rcat");
        let out = child.wait_with_output().expect("rclone rcat");
        assert!(
            out.status.success(),
            "rclone rcat {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Removes `key`, as an operator's mistake (or a lifecycle rule) would.
    pub fn delete(&self, key: &str) {
        self.rclone(&["deletefile", &self.remote(key)]);
    }

    /// `rclone rcat` to `key`, started: what is written to its stdin is stored once it is
    /// closed. Past 5 MiB (rclone's chunk) it is a multipart upload.
    pub fn rcat(&self, key: &str) -> Child {
        self.command(&["rcat", &self.remote(key)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rclone")
    }

    /// `REMOTE:BUCKET/path` for rclone.
    pub fn remote(&self, path: &str) -> String {
        format!("{RCLONE_REMOTE}:{}/{path}", self.name)
    }

    fn rclone(&self, args: &[&str]) -> String {
        self.try_rclone(args)
            .unwrap_or_else(|e| panic!("rclone {args:?}: {e}"))
    }

    fn try_rclone(&self, args: &[&str]) -> Result<String, String> {
        let out = self.command(args).output().expect("run rclone");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// rclone with `args`, its remote configured by the environment alone (no config file
    /// is read or written), retrying nothing: a test sees the first answer. The caller's
    /// `AWS_*` variables are not passed on: the AWS SDK inside rclone would read them (a CA
    /// bundle it cannot use on plain HTTP, say).
    pub fn command(&self, args: &[&str]) -> Command {
        let var = |name: &str| format!("RCLONE_CONFIG_{}_{name}", RCLONE_REMOTE.to_uppercase());
        let mut cmd = Command::new("rclone");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(name);
            }
        }
        cmd.args([
            "--config",
            "/dev/null",
            "--retries",
            "1",
            "--low-level-retries",
            "1",
        ])
        .args(args)
        .env(var("TYPE"), "s3")
        .env(var("PROVIDER"), "Other")
        .env(var("ENDPOINT"), &self.endpoint)
        .env(var("REGION"), &self.region)
        .env(var("ACCESS_KEY_ID"), &self.key_id)
        .env(var("SECRET_ACCESS_KEY"), &self.secret)
        .env(var("FORCE_PATH_STYLE"), "true")
        .stdin(Stdio::null());
        cmd
    }
}

/// The name rclone knows the test's Garage by.
const RCLONE_REMOTE: &str = "garage";

/// `n` random bytes, hex-encoded.
fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    hex::encode(bytes)
}
