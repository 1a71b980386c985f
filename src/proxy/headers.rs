//! Headers across the proxy: hop-by-hop fields stay on their hop (RFC 9110 §7.6.1), the
//! client's address is the socket's unless a trusted proxy says otherwise, and the upstream
//! learns who asked through `X-Forwarded-For`, `-Proto` and `-Host`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::gate::Cidr;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Fields that concern one connection only, whatever `Connection` lists. `Expect` is here
/// too: the proxy answers `100-continue` itself (when it starts reading the body), so the
/// upstream must not wait to be asked.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_lists(headers, "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Drops the hop-by-hop fields, and those `Connection` names. An upgrade keeps `Upgrade` and
/// `Connection: upgrade`, which are what it asks the next hop for.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade = keep_upgrade.then(|| headers.get(header::UPGRADE).cloned());
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(Some(protocol)) = upgrade {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The client's address for the gate's exempt networks: the socket's, or — only when the
/// socket's peer is a trusted proxy — the nearest address in `X-Forwarded-For` that is not
/// one of the trusted proxies (the one they saw connect).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> Result<IpAddr, String> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Ok(peer);
    }
    let chain = forwarded_chain(headers)?;
    Ok(chain
        .iter()
        .rev()
        .copied()
        .find(|&ip| !is_trusted(ip))
        .or(chain.first().copied())
        .unwrap_or(peer))
}

fn forwarded_chain(headers: &HeaderMap) -> Result<Vec<IpAddr>, String> {
    let mut chain = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let text = value
            .to_str()
            .map_err(|_| "X-Forwarded-For is not visible ASCII".to_string())?;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let ip = part
                .parse()
                .map_err(|_| format!("X-Forwarded-For entry {part:?} is not an IP address"))?;
            chain.push(ip);
        }
    }
    Ok(chain)
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host` for the upstream. A trusted proxy's values
/// are kept (its client's address extended with its own); anyone else's are replaced, so the
/// upstream never reads a client's claim about itself as the proxy's word.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, trusted: bool) {
    let chain: Vec<String> = if trusted {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    let mut forwarded_for = chain.join(", ");
    if !forwarded_for.is_empty() {
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&peer.to_string());
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["authorization", "content-type"]);
    }

    #[test]
    fn an_upgrade_keeps_what_it_asks_for() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let h = map(&[("x-forwarded-for", "192.0.2.7, 10.1.1.1")]);
        let lb: IpAddr = "10.9.9.9".parse().unwrap();
        let stranger: IpAddr = "198.51.100.3".parse().unwrap();
        assert_eq!(
            client_ip(lb, &h, &trusted).unwrap(),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &trusted).unwrap(), stranger);
        assert_eq!(client_ip(lb, &HeaderMap::new(), &trusted).unwrap(), lb);
        let bad = map(&[("x-forwarded-for", "nonsense")]);
        assert!(client_ip(lb, &bad, &trusted).is_err());
        assert_eq!(client_ip(stranger, &bad, &trusted).unwrap(), stranger);
    }

    #[test]
    fn forwarded_headers_are_set_and_a_strangers_claims_replaced() {
        let peer: IpAddr = "198.51.100.3".parse().unwrap();
        let mut h = map(&[
            ("host", "gitlab.example"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, peer, false);
        assert_eq!(h["x-forwarded-for"], "198.51.100.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gitlab.example");
        let mut h = map(&[
            ("host", "gitlab.example"),
            ("x-forwarded-for", "192.0.2.7"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, peer, true);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7, 198.51.100.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
