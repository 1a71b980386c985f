//! `push` and `pull`: stream an object to or from a site, checking its sha256 end to end,
//! with a progress line on a terminal.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::client::{channel, report, token, Failure};
use super::{ActorArgs, ClientArgs};
use crate::objects::files::chunks;
use crate::server::client::authorized;
use crate::server::convert::{object_json, rfc3339};
use crate::server::pb;

/// Transfers smaller than this show no progress line.
const PROGRESS_MIN: u64 = 8 * 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The object's name: a relative path such as group/project.git.
    pub name: String,
    /// The file to push; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// A label: repository, upload, lfs, package, … [default: blob].
    #[arg(long, default_value = "")]
    pub kind: String,
    #[command(flatten)]
    pub actor: ActorArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    pub name: String,
    /// Write to FILE (atomically, once the checksum matched) instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// At a secondary that cannot reach the primary for the current version: fail
    /// (UNAVAILABLE) rather than get the newest verified older copy, marked stale.
    #[arg(long)]
    pub no_stale: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn push(args: PushArgs) -> u8 {
    report(push_inner(args).await)
}

pub async fn pull(args: PullArgs) -> u8 {
    report(pull_inner(args).await)
}

async fn push_inner(args: PushArgs) -> Result<u8, Failure> {
    let token = token(&args.client)?;
    let (source, size): (Box<dyn std::io::Read + Send>, Option<u64>) = match args.file.as_deref() {
        None => (Box::new(std::io::stdin()), None),
        Some(p) if p == Path::new("-") => (Box::new(std::io::stdin()), None),
        Some(p) => {
            let f =
                std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
            let len = f.metadata().map(|m| m.len()).ok();
            (Box::new(f), len)
        }
    };
    let mut client = pb::ObjectClient::new(channel(&args.client).await?);
    let header = pb::PushHeader {
        name: args.name.clone(),
        kind: args.kind.clone(),
        size,
        sha256: String::new(),
        proxied_by: None,
        actor: super::client::actor(&args.actor),
    };
    let mut progress = Progress::new("push", size);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _ = tx
        .send(pb::PushRequest {
            part: Some(pb::push_request::Part::Header(header)),
        })
        .await;
    let request = authorized(ReceiverStream::new(rx), &token)?;
    let call = client.push(request);
    tokio::pin!(call);
    let send = async move {
        let mut input = chunks(source);
        let mut hasher = Sha256::new();
        let mut sent = 0u64;
        while let Some(chunk) = input.recv().await {
            let chunk = chunk.map_err(|e| format!("cannot read the input: {e}"))?;
            hasher.update(&chunk);
            sent += chunk.len() as u64;
            progress.update(sent);
            let msg = pb::PushRequest {
                part: Some(pb::push_request::Part::Chunk(chunk)),
            };
            if tx.send(msg).await.is_err() {
                return Ok(()); // the site answered early: its answer says why
            }
        }
        progress.done();
        let trailer = pb::PushTrailer {
            size: sent,
            sha256: hex::encode(hasher.finalize()),
        };
        let _ = tx
            .send(pb::PushRequest {
                part: Some(pb::push_request::Part::Trailer(trailer)),
            })
            .await;
        Ok::<(), String>(())
    };
    tokio::pin!(send);
    let reply = tokio::select! {
        sent = &mut send => {
            // A failed read ends here, cancelling the call: nothing is stored.
            sent?;
            (&mut call).await
        }
        reply = &mut call => reply,
    };
    let reply = match reply {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            eprintln!("refused: {}", s.message());
            return Ok(1);
        }
        Err(s) => return Err(s.into()),
    };
    let meta = reply.object.unwrap_or_default();
    if args.client.json {
        let mut out = object_json(&meta);
        out["proxied"] = reply.proxied.into();
        out["committed_by"] = reply.committed_by.clone().into();
        println!("{out}");
    } else {
        println!(
            "pushed {} version {} ({} bytes, sha256 {}) to {}{}",
            meta.name,
            meta.version,
            meta.size,
            meta.sha256,
            reply.committed_by,
            if reply.proxied {
                ", forwarded by the secondary"
            } else {
                ""
            }
        );
    }
    Ok(0)
}

async fn pull_inner(args: PullArgs) -> Result<u8, Failure> {
    let token = token(&args.client)?;
    let mut client = pb::ObjectClient::new(channel(&args.client).await?);
    let request = authorized(
        pb::PullRequest {
            name: args.name.clone(),
            no_stale: args.no_stale,
        },
        &token,
    )?;
    let mut stream = client.pull(request).await?.into_inner();
    let header = match stream.message().await? {
        Some(pb::PullResponse {
            part: Some(pb::pull_response::Part::Header(h)),
        }) => h,
        _ => return Err(Failure::Local("the site sent no header".into())),
    };
    let meta = header.object.unwrap_or_default();
    let (mut out, temp): (Box<dyn Write + Send>, Option<PathBuf>) = match &args.output {
        None => (Box::new(std::io::BufWriter::new(std::io::stdout())), None),
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let temp = dir.join(format!(
                ".{}.geo-agent-{:08x}",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                rand::random::<u32>()
            ));
            let f = std::fs::File::create(&temp)
                .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
            (Box::new(std::io::BufWriter::new(f)), Some(temp))
        }
    };
    let result = async {
        let mut progress = Progress::new("pull", Some(meta.size));
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        while let Some(msg) = stream.next().await {
            match msg?.part {
                Some(pb::pull_response::Part::Chunk(c)) => {
                    hasher.update(&c);
                    got += c.len() as u64;
                    out.write_all(&c)
                        .map_err(|e| format!("cannot write: {e}"))?;
                    progress.update(got);
                }
                _ => return Err(Failure::Local("the site sent a second header".into())),
            }
        }
        out.flush().map_err(|e| format!("cannot write: {e}"))?;
        drop(out);
        progress.done();
        let sha = hex::encode(hasher.finalize());
        if sha != meta.sha256 || got != meta.size {
            return Err(Failure::Local(format!(
                "received {got} bytes with sha256 {sha}, but {} is {} bytes with sha256 {}",
                meta.name, meta.size, meta.sha256
            )));
        }
        Ok(())
    }
    .await;
    match (&result, &temp, &args.output) {
        (Ok(()), Some(temp), Some(path)) => std::fs::rename(temp, path)
            .map_err(|e| format!("cannot move the download to {}: {e}", path.display()))?,
        (Err(_), Some(temp), _) => {
            let _ = std::fs::remove_file(temp);
        }
        _ => {}
    }
    result?;
    let source = match &header.stale {
        Some(s) => stale_note(s),
        None if header.read_through => {
            " (read through from the primary: not replicated here yet)".to_string()
        }
        None => String::new(),
    };
    if args.client.json {
        let mut out = object_json(&meta);
        out["read_through"] = header.read_through.into();
        if let Some(s) = &header.stale {
            out["stale"] = serde_json::json!({
                "version": s.version,
                "current_version": s.current_version,
                "superseded_at": rfc3339(&s.superseded_at),
                "age_seconds": s.age_seconds,
                "verified_at": rfc3339(&s.verified_at),
                "reason": s.reason,
            });
        }
        eprintln!("{out}");
    } else if args.output.is_some() || std::io::stderr().is_terminal() || header.stale.is_some() {
        eprintln!(
            "pulled {} version {} ({} bytes, sha256 verified){source}",
            meta.name, meta.version, meta.size
        );
    }
    Ok(0)
}

/// What a stale read says: which version, how old, and why.
fn stale_note(s: &pb::StaleRead) -> String {
    let age = if s.version == s.current_version {
        "the current version, unconfirmed".to_string()
    } else {
        format!(
            "version {} is current since {} ({:.0}s ago)",
            s.current_version,
            rfc3339(&s.superseded_at).unwrap_or_else(|| "?".into()),
            s.age_seconds
        )
    };
    format!(
        " STALE: the primary cannot be reached ({}); this is the newest verified copy here, version {} ({age}), verified {}",
        s.reason,
        s.version,
        rfc3339(&s.verified_at).unwrap_or_else(|| "?".into())
    )
}

/// A progress line on stderr, for large transfers on a terminal only.
struct Progress {
    verb: &'static str,
    total: Option<u64>,
    start: Instant,
    last: Instant,
    shown: bool,
    enabled: bool,
}

impl Progress {
    fn new(verb: &'static str, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            verb,
            total,
            start: now,
            last: now,
            shown: false,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled || done < PROGRESS_MIN || self.last.elapsed() < Duration::from_millis(200)
        {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(0.001);
        let line = match self.total.filter(|t| *t > 0) {
            Some(t) => format!(
                "{} {} / {} ({:.0}%) {}/s",
                self.verb,
                bytes(done),
                bytes(t),
                done as f64 * 100.0 / t as f64,
                bytes(rate as u64)
            ),
            None => format!("{} {} {}/s", self.verb, bytes(done), bytes(rate as u64)),
        };
        eprint!("\r\x1b[2K{line}");
    }

    fn done(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
