//! The parts of a SIP URI that routing needs (host, port, transport, maddr, lr), read
//! without allocating, and tolerant of what rsip rejects (tel:, IPv6, odd user parts).

use super::addr::{Transport, host_ip, split_host_port};
use std::net::SocketAddr;

/// The URI parameter of our Record-Route that proves a dialog was screened here.
pub const OUR_ROUTE_PARAM: &[u8] = b"sg";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    pub secure: bool,
    pub user: Option<&'a [u8]>,
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub transport: Option<&'a [u8]>,
    pub maddr: Option<&'a [u8]>,
    pub lr: bool,
    /// Our `sg=` parameter (the screened-dialog proof in our Record-Route).
    pub sg: Option<&'a [u8]>,
    /// `?headers` present (not allowed in a Request-URI, RFC 3261 §19.1.1).
    pub has_headers: bool,
}

/// Scheme of a URI (`sip`, `tel`, ...), lower-cased comparison left to the caller.
pub fn scheme(uri: &[u8]) -> Option<&[u8]> {
    let colon = uri.iter().position(|&b| b == b':')?;
    let s = &uri[..colon];
    (!s.is_empty()
        && s[0].is_ascii_alphabetic()
        && s.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
    .then_some(s)
}

/// Parse a `sip:`/`sips:` URI (no angle brackets). `None` when it is not one.
pub fn parse(uri: &[u8]) -> Option<SipUri<'_>> {
    // The scheme is whatever precedes the first ':', so these prefixes are exactly the
    // schemes `sip` and `sips`.
    let (secure, rest) = match uri {
        [s, i, p, b':', rest @ ..] if [*s, *i, *p].eq_ignore_ascii_case(b"sip") => (false, rest),
        [s, i, p, x, b':', rest @ ..] if [*s, *i, *p, *x].eq_ignore_ascii_case(b"sips") => (true, rest),
        _ => return None,
    };
    // userinfo ends at the last '@' before any header part; the user part may hold ';' and '?'.
    let (user, hostpart) = match memchr::memrchr(b'@', rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (hostpart, has_headers) = match hostpart.iter().position(|&b| b == b'?') {
        Some(q) => (&hostpart[..q], true),
        None => (hostpart, false),
    };
    let mut parts = hostpart.split(|&b| b == b';');
    let hostport = parts.next()?;
    let (host, port) = split_host_port(hostport)?;
    let mut out = SipUri { secure, user, host, port, transport: None, maddr: None, lr: false, sg: None, has_headers };
    for p in parts {
        let (name, value) = match p.iter().position(|&b| b == b'=') {
            Some(e) => (&p[..e], Some(&p[e + 1..])),
            None => (p, None),
        };
        if name.eq_ignore_ascii_case(b"transport") {
            out.transport = value;
        } else if name.eq_ignore_ascii_case(b"maddr") {
            out.maddr = value;
        } else if name.eq_ignore_ascii_case(b"lr") {
            out.lr = true;
        } else if name.eq_ignore_ascii_case(OUR_ROUTE_PARAM) {
            out.sg = value;
        }
    }
    Some(out)
}

impl SipUri<'_> {
    /// Transport named by `transport=` (UDP when absent). `None` for ones we don't speak.
    pub fn transport(&self) -> Option<Transport> {
        match self.transport {
            None => Some(if self.secure { Transport::Tcp } else { Transport::Udp }),
            Some(t) => Transport::from_token(t),
        }
    }

    /// The socket address to send to, when the host (or maddr) is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = match self.maddr.and_then(host_ip) {
            Some(ip) => ip,
            None => host_ip(self.host)?,
        };
        Some(SocketAddr::new(ip, self.port_or_default()))
    }

    /// The port, else the scheme's default (5061 for sips, 5060 for sip).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.secure { 5061 } else { 5060 })
    }
}

/// The URI inside a name-addr (`"x" <uri>;p`) or the addr-spec itself.
pub fn inner(value: &[u8]) -> &[u8] {
    match (value.iter().position(|&b| b == b'<'), value.iter().position(|&b| b == b'>')) {
        (Some(l), Some(r)) if l < r => &value[l + 1..r],
        _ => {
            // addr-spec form: header parameters follow the first ';' only after the host,
            // but for routing purposes everything up to LWS is the URI.
            let end = value.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(value.len());
            &value[..end]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uris() {
        let u = parse(b"sip:+12125550100@127.0.0.1:5080;user=phone;transport=TCP").unwrap();
        assert_eq!(u.user, Some(&b"+12125550100"[..]));
        assert_eq!(u.socket_addr(), Some("127.0.0.1:5080".parse().unwrap()));
        assert_eq!(u.transport(), Some(Transport::Tcp));
        let u = parse(b"sip:[2001:db8::1];lr").unwrap();
        assert!(u.lr);
        assert_eq!(u.socket_addr(), Some("[2001:db8::1]:5060".parse().unwrap()));
        let u = parse(b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1@example.com").unwrap();
        assert_eq!(u.host, b"example.com");
        assert!(!u.has_headers);
        assert!(parse(b"sip:user@example.com?Route=%3Csip:example.com%3E").unwrap().has_headers);
        assert!(parse(b"tel:+1212").is_none());
        assert!(parse(b"sip:").is_none());
        assert!(parse(b"sip:a@h:x").is_none());
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme(b"isbn:2983792873"), Some(&b"isbn"[..]));
        assert_eq!(scheme(b"<sip:a>"), None);
        assert_eq!(inner(b"\"A\" <sip:a@b>;tag=1"), b"sip:a@b");
        assert_eq!(inner(b"sip:a@b;tag=1"), b"sip:a@b;tag=1");
    }
}
