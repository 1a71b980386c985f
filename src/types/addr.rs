//! How sites address each other: `host:port` or `http(s)://host:port`, and when plain
//! HTTP is acceptable.

/// Accepts `host:port` or `http(s)://host:port` and returns the URL form.
pub fn normalize_url(addr: &str) -> Result<String, String> {
    let addr = addr.trim();
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{addr:?} is not a valid address: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{addr:?}: the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{addr:?} has no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("{addr:?}: an address has no path"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Whether a site may connect to `url`: plain `http://` is refused beyond loopback unless
/// `allow_plaintext` (the site token would cross the network in clear text), and always
/// when the site itself serves TLS (`https://` is then what the operator meant).
pub fn check_plaintext(url: &str, serves_tls: bool, allow_plaintext: bool) -> Result<(), String> {
    let url = normalize_url(url)?;
    let Some(rest) = url.strip_prefix("http://") else {
        return Ok(());
    };
    if serves_tls {
        return Err(format!(
            "{url} is plain HTTP but this site uses TLS: use https://"
        ));
    }
    let host = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_else(|| rest.to_string());
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_plaintext {
        Ok(())
    } else {
        Err(format!(
            "{url} is plain HTTP to another host: the site token would cross the network in clear text. Use https://, or set allow_plaintext = true if the network is trusted"
        ))
    }
}
