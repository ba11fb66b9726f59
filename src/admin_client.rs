//! A minimal client of the admin listener for the CLI (`top`, `dnc check --admin`): plain
//! HTTP (the listener is local; no TLS), one request per connection.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not HOST:PORT (e.g. 127.0.0.1:9060 or localhost:9060)")]
    BadAddress(String),
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, std::io::Error),
    #[error("cannot reach the admin listener at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("talking to the admin listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("the admin listener sent no HTTP status line")]
    NoStatus,
}

/// Resolve `HOST:PORT` (a name such as `localhost`, or an address) to the addresses to try.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, ClientError> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| ClientError::BadAddress(addr.to_string()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ClientError::BadAddress(addr.to_string()));
    }
    let addrs: Vec<SocketAddr> =
        addr.to_socket_addrs().map_err(|e| ClientError::Resolve(addr.to_string(), e))?.collect();
    if addrs.is_empty() {
        return Err(ClientError::Resolve(addr.to_string(), std::io::Error::other("no address")));
    }
    Ok(addrs)
}

/// `GET path` on the admin listener at `addr` (each resolved address in turn until one
/// connects): the status code and the body.
pub fn get(addr: &str, path: &str, token: Option<&str>, timeout: Duration) -> Result<(u16, String), ClientError> {
    let mut last = None;
    let mut stream = None;
    for a in resolve(addr)? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut s) = stream else {
        let e = last.unwrap_or_else(|| std::io::Error::other("no address"));
        return Err(ClientError::Connect(addr.to_string(), e));
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // HTTP/1.0: the body ends when the connection closes, never chunked.
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ClientError::NoStatus)?;
    Ok((code, body.to_string()))
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
    fn names_resolve_and_bad_addresses_are_refused() {
        let a = resolve("localhost:9060").unwrap();
        assert!(a.iter().all(|a| a.port() == 9060 && a.ip().is_loopback()), "{a:?}");
        assert_eq!(resolve("127.0.0.1:9060").unwrap(), ["127.0.0.1:9060".parse().unwrap()]);
        assert_eq!(resolve("[::1]:9060").unwrap(), ["[::1]:9060".parse().unwrap()]);
        for bad in ["localhost", ":9060", "localhost:port", "localhost:70000"] {
            assert!(matches!(resolve(bad), Err(ClientError::BadAddress(_))), "{bad}");
        }
        assert_eq!(encode("+1 212/a&b=c"), "%2B1%20212%2Fa%26b%3Dc");
    }
}
