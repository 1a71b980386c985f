//! Upstreams for the gating proxy's tests and bench: one that records what reaches it,
//! and one that serves git's smart HTTP protocol through `git http-backend`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: http::HeaderMap,
    /// The first MiB of the body.
    pub body: Vec<u8>,
    pub len: u64,
    pub sha256: String,
    /// The body arrived whole.
    pub complete: bool,
}

/// A small HTTP server that records every request and answers 200 "seen N bytes".
/// `/hang` is never answered, `/hold` is answered once the test says `release`, and `/ws`
/// switches to an echo protocol.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<tokio::sync::Notify>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let release = Arc::new(tokio::sync::Notify::new());
        let (record, hold) = (Arc::clone(&seen), Arc::clone(&release));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, hold) = (Arc::clone(&record), Arc::clone(&hold));
                let service =
                    service_fn(move |req| answer(req, Arc::clone(&record), Arc::clone(&hold)));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades(),
                );
            }
        });
        Upstream {
            addr,
            seen,
            release,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets the request waiting at `/hold` have its answer.
    pub fn release(&self) {
        self.release.notify_one();
    }

    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn answer(
    mut req: http::Request<Incoming>,
    record: Arc<Mutex<Vec<Seen>>>,
    hold: Arc<tokio::sync::Notify>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/ws" {
        let upgraded = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgraded.await.unwrap());
            let mut buf = [0u8; 64];
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        return Ok(http::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let path = req.uri().path().to_string();
    let (parts, mut body) = req.into_parts();
    let mut seen = Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers: parts.headers,
        body: Vec::new(),
        len: 0,
        sha256: String::new(),
        complete: false,
    };
    let mut hash = Sha256::new();
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    hash.update(d);
                    seen.len += d.len() as u64;
                    let room = (1usize << 20).saturating_sub(seen.body.len());
                    seen.body.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
        }
    };
    seen.complete = complete;
    seen.sha256 = hex::encode(hash.finalize());
    let text = format!("seen {} bytes\n", seen.len);
    record.lock().unwrap().push(seen);
    match path.as_str() {
        "/hang" => std::future::pending::<()>().await,
        "/hold" => hold.notified().await,
        _ => {}
    }
    Ok(http::Response::builder()
        .header("x-upstream", "1")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(text)))
        .unwrap())
}

/// An upstream that serves git's smart HTTP protocol by running `git http-backend` as a
/// CGI program per request, for repositories under `root`.
pub async fn git_backend(root: std::path::PathBuf) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let root = root.clone();
            let service = service_fn(move |req| cgi(req, root.clone()));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

async fn cgi(
    req: http::Request<Incoming>,
    root: std::path::PathBuf,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    use tokio::io::AsyncWriteExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, at + 2))
        })
        .unwrap_or((raw.len(), raw.len()));
    let mut response = http::Response::builder();
    for line in String::from_utf8_lossy(&raw[..split.0]).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v.trim()[..3].parse().unwrap();
            response = response.status(code);
        } else {
            response = response.header(k.trim(), v.trim());
        }
    }
    Ok(response
        .body(Full::new(Bytes::copy_from_slice(&raw[split.1..])))
        .unwrap())
}

/// Runs git with a configuration of its own in `home`: (success, stderr).
pub fn git(home: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A real Git LFS server (giftless) on a loopback port, storing objects under a directory;
/// killed when dropped.
pub struct LfsServer {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for LfsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LfsServer {
    /// Starts `tests/lfs_server.py` and waits (up to 60 s) for the port it prints.
    pub fn start(storage: &std::path::Path) -> LfsServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lfs_server.py"))
            .arg(storage)
            .current_dir(storage.parent().unwrap_or(storage))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python3 tests/lfs_server.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the LFS server printed its port within 60 s");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the LFS server did not start: {line:?}"));
        LfsServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}
