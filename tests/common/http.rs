//! HTTP/1.1 on loopback, one request per connection: what the tests and benches read from
//! the sites' HTTP listeners (and from nginx and ChromeDriver).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long connecting may take, and then any single read: a response slower than that is
/// a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    /// The body, de-chunked.
    pub body: String,
}

/// Sends `METHOD path` with `headers` (give `Host`), `Connection: close`, `Content-Length`
/// and `body`, and reads the response: the head, then as much body as `Content-Length` says
/// (some servers keep the connection open whatever the request asked), else to the end.
pub fn http_exchange(
    addr: impl ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += &format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (head, mut body) = loop {
        let n = s.read(&mut buf)?;
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&raw[..at]).into_owned(),
                raw[at + 4..].to_vec(),
            );
        }
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "the connection closed before the response head: {:?}",
                String::from_utf8_lossy(&raw)
            )));
        }
    };
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::Error::other(
                        "the connection closed inside the body",
                    ));
                }
                body.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body)?;
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(&body) } else { body };
    Ok(Response { status, head, body })
}

/// `GET path` at `addr`, blocking: (status, body).
pub fn http_get_blocking(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let host = addr.to_string();
    http_exchange(addr, "GET", path, &[("Host", &host)], b"").map(|r| (r.status, r.body))
}

/// One HTTP/1.1 request with an optional JSON body: (status, body). Panics when the
/// exchange fails.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> (u16, String) {
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    let (method, path) = (method.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let host = addr.to_string();
        let headers = [
            ("Host", host.as_str()),
            ("Content-Type", "application/json"),
        ];
        match http_exchange(addr, &method, &path, &headers, body.as_bytes()) {
            Ok(r) => (r.status, r.body),
            Err(e) => panic!("{method} {path} at {addr}: {e}"),
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
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
