//! `geo-agent run` and `geo-agent dev`: start sites, say where they are, stop on a signal.

use std::net::SocketAddr;
use std::path::Path;

use std::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::DevArgs;
use crate::config::{read_token, write_token, Config, RunArgs, ADMIN_TOKEN_FILE, SITE_TOKEN_FILE};
use crate::failover::promotion::{self, PrivateKey, PublicKey};
use crate::runtime::{self, Opened};
use crate::server::auth::Token;
use crate::store::Store;
use crate::types::Role;

pub async fn run(args: RunArgs) -> u8 {
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if config.promotion_key.is_none() {
        eprintln!("error: {NO_PROMOTION_KEY}");
        return 2;
    }
    for (what, path) in &config.generated {
        println!(
            "geo-agent: generated a new {what} in {} (mode 0600)",
            path.display()
        );
    }
    let shutdown = CancellationToken::new();
    let (opened, grpc, http) = match open_and_bind(&config).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let proxy = match &config.proxy {
        None => None,
        Some(p) => match bind(p.listen, "the gating proxy") {
            Ok(l) => {
                println!(
                    "geo-agent: gating proxy on {} in front of {}",
                    local(&l),
                    p.upstream
                );
                Some(l)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
    };
    println!(
        "geo-agent: site {} ({}) serving gRPC on {} and HTTP on {}",
        config.site_id,
        config.role,
        local(&grpc),
        local(&http)
    );
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match runtime::run(&config, opened, grpc, http, proxy, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            error!(error = %e, "site failed");
            eprintln!("error: {e}");
            2
        }
    }
}

/// Why `run` refuses to start without the admins' public key: a site that cannot check
/// promotion proofs can never be promoted nor follow a promoted primary, which it would
/// only find out during a failover.
const NO_PROMOTION_KEY: &str = "no promotion public key: every site needs the admins' public key (--promotion-public-key HEX, GEO_AGENT_PROMOTION_PUBLIC_KEY or promotion_public_key in the configuration file) to check promotions; without it this site could never be promoted nor follow a promoted primary. Create the key pair once per deployment with `geo-agent promotion-key generate --out FILE`, keep FILE with the admins and give every site the public key it prints";

/// Opens the site (with its own shutdown token: a signal first drains it, see
/// `site::run`) and binds its listeners.
async fn open_and_bind(config: &Config) -> Result<(Opened, TcpListener, TcpListener), String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot open site {}: {e}", config.site_id);
    let store = open_store(config).await.map_err(|e| failed(&e))?;
    let opened = runtime::open(config, store, CancellationToken::new())
        .await
        .map_err(|e| failed(&e))?;
    let grpc = bind(config.listen, "gRPC")?;
    let http = bind(config.http_listen, "HTTP")?;
    Ok((opened, grpc, http))
}

/// How often a site that cannot open its database on a full disk tries again.
const FULL_DISK_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the database. On a full disk (after `Store::open` has given up the reserve) it
/// waits and tries again instead of exiting, since a supervisor restarting it could do no
/// better; the process stays up, saying why, until space is freed or it is stopped.
async fn open_store(config: &Config) -> Result<Store, crate::store::StoreError> {
    let mut logged = false;
    loop {
        match Store::open(&config.data_dir) {
            Err(e) if e.is_disk_full() => {
                if !logged {
                    eprintln!(
                        "geo-agent: CRITICAL: disk full at {}: {e}; retrying every {}s until space is freed",
                        config.data_dir.display(),
                        FULL_DISK_RETRY.as_secs()
                    );
                    logged = true;
                }
                error!(error = %e, "cannot open the database: the disk is full; retrying");
                tokio::time::sleep(FULL_DISK_RETRY).await;
            }
            other => return other,
        }
    }
}

/// A std listener: the site serves it again after a promotion or repoint.
fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

fn local(l: &TcpListener) -> String {
    l.local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

/// Reads `<dir>/<name>`, or generates it.
fn dev_token(dir: &Path, name: &str) -> Result<Token, String> {
    let path = dir.join(name);
    if path.exists() {
        return read_token(&path, name).map_err(|e| e.to_string());
    }
    let token = Token::generate();
    write_token(&path, &token).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}

/// The promotion key file `dev` keeps in its directory.
const DEV_PROMOTION_KEY: &str = "promotion-key";

/// Reads `<dir>/promotion-key`, or generates it; returns the public key.
fn dev_promotion_key(dir: &Path) -> Result<PublicKey, String> {
    let path = dir.join(DEV_PROMOTION_KEY);
    if path.exists() {
        return promotion::read_key_file(&path).map(|k| k.public_key());
    }
    let (key, der) = PrivateKey::generate()?;
    promotion::write_key_file(&path, &der)?;
    Ok(key.public_key())
}

fn port(base: u16, site: usize, offset: u16) -> Result<u16, String> {
    if base == 0 {
        return Ok(0);
    }
    u16::try_from(site * 10)
        .ok()
        .and_then(|s| base.checked_add(s)?.checked_add(offset))
        .ok_or_else(|| format!("--base-port {base} leaves no room for {site} sites"))
}

pub async fn dev(args: DevArgs) -> u8 {
    match dev_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

async fn dev_inner(args: DevArgs) -> Result<u8, String> {
    if args.secondaries > 50 {
        return Err("--secondaries is at most 50".into());
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let admin_token = dev_token(&args.data_dir, ADMIN_TOKEN_FILE)?;
    let promotion_key = dev_promotion_key(&args.data_dir)?;
    let shutdown = CancellationToken::new();
    let mut sites = Vec::new();
    let mut primary_url = None;
    for i in 0..=args.secondaries {
        let (site_id, role) = if i == 0 {
            ("primary".to_string(), Role::Primary)
        } else {
            (format!("secondary-{i}"), Role::Secondary)
        };
        // Each site has its own token, registered at the primary below.
        let site_token = dev_token(&args.data_dir, &format!("{site_id}-{SITE_TOKEN_FILE}"))?;
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], port(args.base_port, i, 0)?)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], port(args.base_port, i, 1)?)),
            primary: primary_url.clone(),
            promotion_key: Some(promotion_key),
            ..Config::new(
                &site_id,
                role,
                args.data_dir.join(&site_id),
                admin_token.clone(),
                site_token,
            )
        };
        let (opened, grpc, http) = open_and_bind(&config).await?;
        let grpc_url = format!("http://{}", local(&grpc));
        if i == 0 {
            primary_url = Some(grpc_url.clone());
        }
        sites.push((config, grpc_url, local(&http), opened, grpc, http));
    }
    if let Some((_, _, _, primary, ..)) = sites.first() {
        for (config, ..) in &sites {
            let hash = crate::settings::token_sha256(config.site_token.expose().as_bytes());
            if let Err(e) = primary
                .site
                .settings
                .add_site(&config.site_id, &hash, "geo-agent dev")
                .await
            {
                warn!(site = %config.site_id, error = %e, "cannot register the site at the primary");
            }
        }
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            p.strip_prefix(cwd).ok().map(|r| r.display().to_string())
        })
        .unwrap_or_else(|| "geo-agent".into());
    println!(
        "geo-agent dev: a primary and {} secondaries on loopback, data in {}\n",
        args.secondaries,
        args.data_dir.display()
    );
    for (config, grpc_url, http, ..) in &sites {
        println!(
            "  {:<14} {:<10} gRPC {:<24} HTTP http://{}",
            config.site_id,
            config.role.as_str(),
            grpc_url,
            http
        );
    }
    println!(
        "\nEach HTTP address serves the status page at / (open it in a browser) and Prometheus metrics at /metrics."
    );
    let token_file = args.data_dir.join(ADMIN_TOKEN_FILE);
    let primary = primary_url.unwrap_or_default();
    let watch_addr = sites
        .get(1)
        .map(|s| s.1.clone())
        .unwrap_or_else(|| primary.clone());
    println!(
        "\nadmin token: {} (in {})\n\nTry, in another terminal:\n  export GEO_AGENT_TOKEN_FILE={} GEO_AGENT_ADDR={}\n  {exe} mode watch --addr {watch_addr}\n  {exe} maintenance enable --message \"Planned failover at 22:00 UTC\"\n  {exe} mode get --addr {watch_addr} --json\n  {exe} maintenance disable\n  {exe} settings set signup_enabled false\n  {exe} push demo/readme.md README.md --addr {watch_addr}\n  {exe} pull demo/readme.md --addr {watch_addr}\n\nA failover (promotions are signed with the key in {key_file}):\n  {exe} maintenance enable\n  {exe} promote --force --promotion-key-file {key_file} --addr {watch_addr}\n\nCtrl-C stops all sites.",
        admin_token.expose(),
        token_file.display(),
        token_file.display(),
        primary,
        key_file = args.data_dir.join(DEV_PROMOTION_KEY).display(),
    );
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for (config, _, _, opened, grpc, http) in sites {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let r = runtime::run(&config, opened, grpc, http, None, shutdown.clone()).await;
            if let Err(e) = &r {
                error!(site = %config.site_id, error = %e, "site failed");
                shutdown.cancel();
            }
            r.is_ok()
        });
    }
    let mut ok = true;
    while let Some(r) = tasks.join_next().await {
        ok &= r.unwrap_or(false);
    }
    Ok(if ok { 0 } else { 2 })
}
