//! The CLI's side of the admin API: one blocking HTTP/1.1 request to a running sipguard
//! (`--admin HOST:PORT`, a name such as `localhost:9060` is resolved), `Connection: close`.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve the admin address `{0}`: {1}")]
    Resolve(String, std::io::Error),
    #[error("the admin address `{0}` resolves to nothing")]
    NoAddress(String),
    #[error("cannot reach the admin listener at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("admin listener {0}: {1}")]
    Io(String, std::io::Error),
    #[error("admin listener {0}: not an HTTP response")]
    Malformed(String),
}

/// A response: status code and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The addresses `admin` names: `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`.
pub fn resolve(admin: &str) -> Result<Vec<SocketAddr>, ClientError> {
    let addrs: Vec<SocketAddr> =
        admin.to_socket_addrs().map_err(|e| ClientError::Resolve(admin.to_string(), e))?.collect();
    if addrs.is_empty() {
        return Err(ClientError::NoAddress(admin.to_string()));
    }
    Ok(addrs)
}

/// Send `method path` with an optional JSON body; every address `admin` resolves to is
/// tried in turn until one connects.
pub fn request(
    admin: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let mut last = None;
    for addr in resolve(admin)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return exchange(s, admin, token, method, path, json, timeout),
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Connect(admin.to_string(), last.unwrap_or_else(|| std::io::Error::other("no address"))))
}

fn exchange(
    mut s: TcpStream,
    admin: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let io = |e| ClientError::Io(admin.to_string(), e);
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = json.unwrap_or("");
    let ctype = if json.is_some() { "Content-Type: application/json\r\n" } else { "" };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}{ctype}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes())).map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    parse(&raw).ok_or_else(|| ClientError::Malformed(admin.to_string()))
}

/// Status and body of a whole HTTP/1.1 response (plain or chunked body).
fn parse(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(raw.get(..split)?).ok()?;
    let body = raw.get(split + 4..)?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Some(Reply { status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(b.get(..eol)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = b.get(eol + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Percent-encode a path segment or query value (everything but RFC 3986 unreserved).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "{}"));
        let r =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        assert!(parse(b"garbage").is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_none());
    }

    #[test]
    fn names_resolve() {
        assert!(resolve("localhost:9060").unwrap().iter().all(|a| a.port() == 9060));
        assert!(resolve("127.0.0.1:9060").is_ok());
        assert!(resolve("no-port").is_err());
        assert_eq!(encode("+1 212/a&b=c"), "%2B1%20212%2Fa%26b%3Dc");
    }
}
