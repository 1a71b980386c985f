//! The gating proxy's settings: `--proxy-*` flags (and `GEO_AGENT_PROXY_*`), the `[proxy]`
//! table, merged like every other setting (flags > environment > file > defaults). The proxy
//! runs only when both a listen address and an upstream are given.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::{parse_duration, ConfigError};
use crate::gate::Cidr;
use crate::proxy::{ProxyConfig, ProxyLimits, Upstream};

/// Flags of the gating proxy (`geo-agent run --proxy-listen ADDR --proxy-upstream URL`).
#[derive(Args, Debug, Default, Clone)]
pub struct ProxyArgs {
    /// Serve the gating reverse proxy on this address (e.g. 127.0.0.1:7602): every request is
    /// judged by the gate, bodies included, and allowed ones go to --proxy-upstream.
    #[arg(long, env = "GEO_AGENT_PROXY_LISTEN")]
    pub proxy_listen: Option<SocketAddr>,
    /// The application behind the proxy, e.g. http://127.0.0.1:8080 (plain HTTP, no path).
    #[arg(long, env = "GEO_AGENT_PROXY_UPSTREAM")]
    pub proxy_upstream: Option<String>,
    /// Networks of front ends whose X-Forwarded-For is believed for the gate's exempt
    /// networks, comma-separated (e.g. 127.0.0.1/32 for nginx on this host).
    #[arg(long, env = "GEO_AGENT_PROXY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub proxy_trusted_proxies: Option<Vec<String>>,
    /// How long a client may take to send a request head [default: 10s].
    #[arg(long, env = "GEO_AGENT_PROXY_HEADER_TIMEOUT", value_parser = parse_duration)]
    pub proxy_header_timeout: Option<Duration>,
    /// How long a client may send nothing in the middle of a body [default: 30s].
    #[arg(long, env = "GEO_AGENT_PROXY_BODY_TIMEOUT", value_parser = parse_duration)]
    pub proxy_body_timeout: Option<Duration>,
    /// How long connecting to the upstream may take (then 502) [default: 5s].
    #[arg(long, env = "GEO_AGENT_PROXY_CONNECT_TIMEOUT", value_parser = parse_duration)]
    pub proxy_connect_timeout: Option<Duration>,
    /// How long the upstream may take to answer a whole request, or stay silent in the
    /// middle of its answer (then 504) [default: 60s].
    #[arg(long, env = "GEO_AGENT_PROXY_RESPONSE_TIMEOUT", value_parser = parse_duration)]
    pub proxy_response_timeout: Option<Duration>,
    /// Proxy connections open at once [default: 1024].
    #[arg(long, env = "GEO_AGENT_PROXY_MAX_CONNECTIONS")]
    pub proxy_max_connections: Option<usize>,
    /// Proxy connections one client address may have open at once [default: 256].
    #[arg(long, env = "GEO_AGENT_PROXY_MAX_CONNECTIONS_PER_CLIENT")]
    pub proxy_max_connections_per_client: Option<usize>,
}

/// The `[proxy]` table.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub listen: Option<SocketAddr>,
    pub upstream: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
}

/// The proxy's configuration, or `None` when it is not asked for.
pub fn load(args: &ProxyArgs, file: ProxyFile) -> Result<Option<ProxyConfig>, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(format!("[proxy] {m}"));
    let listen = args.proxy_listen.or(file.listen);
    let upstream = args.proxy_upstream.clone().or(file.upstream);
    let (listen, upstream) = match (listen, upstream) {
        (None, None) => return Ok(None),
        (Some(l), Some(u)) => (l, Upstream::parse(&u).map_err(invalid)?),
        (Some(_), None) => {
            return Err(invalid(
                "the proxy needs an upstream: --proxy-upstream URL or [proxy] upstream".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "the proxy needs an address: --proxy-listen ADDR or [proxy] listen".into(),
            ))
        }
    };
    let trusted_proxies = args
        .proxy_trusted_proxies
        .clone()
        .or(file.trusted_proxies)
        .unwrap_or_default()
        .iter()
        .map(|s| Cidr::parse(s.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("trusted_proxies: {e}")))?;
    let mut limits = ProxyLimits::default();
    for (arg, text, key, into) in [
        (
            args.proxy_header_timeout,
            file.header_timeout,
            "header_timeout",
            &mut limits.header_timeout,
        ),
        (
            args.proxy_body_timeout,
            file.body_timeout,
            "body_timeout",
            &mut limits.body_timeout,
        ),
        (
            args.proxy_connect_timeout,
            file.connect_timeout,
            "connect_timeout",
            &mut limits.connect_timeout,
        ),
        (
            args.proxy_response_timeout,
            file.response_timeout,
            "response_timeout",
            &mut limits.response_timeout,
        ),
    ] {
        let value = match (arg, text) {
            (Some(d), _) => Some(d),
            (None, Some(t)) => {
                Some(parse_duration(&t).map_err(|e| invalid(format!("{key}: {e}")))?)
            }
            (None, None) => None,
        };
        if let Some(d) = value {
            if d < Duration::from_millis(100) {
                return Err(invalid(format!("{key} must be at least 100ms")));
            }
            *into = d;
        }
    }
    for (value, key, into) in [
        (
            args.proxy_max_connections.or(file.max_connections),
            "max_connections",
            &mut limits.max_connections,
        ),
        (
            args.proxy_max_connections_per_client
                .or(file.max_connections_per_client),
            "max_connections_per_client",
            &mut limits.max_connections_per_client,
        ),
    ] {
        if let Some(n) = value {
            if n == 0 {
                return Err(invalid(format!("{key} must be at least 1")));
            }
            *into = n;
        }
    }
    Ok(Some(ProxyConfig {
        listen,
        upstream,
        trusted_proxies,
        limits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_address_and_no_upstream_means_no_proxy() {
        assert_eq!(
            load(&ProxyArgs::default(), ProxyFile::default()).unwrap(),
            None
        );
    }

    #[test]
    fn flags_beat_the_table_and_bad_values_are_refused() {
        let file: ProxyFile = toml::from_str(
            r#"
            listen = "127.0.0.1:7602"
            upstream = "http://127.0.0.1:8080"
            trusted_proxies = ["127.0.0.1/32"]
            body_timeout = "5s"
            max_connections = 10
            "#,
        )
        .unwrap();
        let args = ProxyArgs {
            proxy_upstream: Some("http://127.0.0.1:9090".into()),
            ..ProxyArgs::default()
        };
        let c = load(&args, file).unwrap().unwrap();
        assert_eq!(c.upstream.url(), "http://127.0.0.1:9090");
        assert_eq!(c.listen.to_string(), "127.0.0.1:7602");
        assert_eq!(c.limits.body_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(c.trusted_proxies.len(), 1);

        let only_listen = ProxyArgs {
            proxy_listen: Some("127.0.0.1:7602".parse().unwrap()),
            ..ProxyArgs::default()
        };
        let e = load(&only_listen, ProxyFile::default()).unwrap_err();
        assert!(e.to_string().contains("needs an upstream"), "{e}");
        for bad in [
            r#"upstream = "https://x:1""#,
            r#"upstream = "http://a:1"
               trusted_proxies = ["not a network"]"#,
            r#"upstream = "http://a:1"
               body_timeout = "1ms""#,
            r#"upstream = "http://a:1"
               max_connections = 0"#,
        ] {
            let text = format!("listen = \"127.0.0.1:7602\"\n{bad}");
            let file: ProxyFile = toml::from_str(&text).unwrap();
            assert!(load(&ProxyArgs::default(), file).is_err(), "{bad}");
        }
        assert!(toml::from_str::<ProxyFile>("upstrem = \"http://a:1\"").is_err());
    }
}
