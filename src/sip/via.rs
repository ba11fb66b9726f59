//! Via values: parsing the sent-by and parameters (LWS-tolerant, RFC 3261 §20.42) and where
//! a response goes (§18.2.2, RFC 3581).

use super::addr::{Transport, host_ip, skip_lws, take_token};
use super::branch::MAGIC;
use super::scan::param_value_len;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// One parsed Via value (absolute ranges into the message bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token (`UDP`, `TCP`, `TLS`, ...).
    pub transport: Range<usize>,
    pub host: Range<usize>,
    pub port: Option<u16>,
    /// `host[:port]` as written (LWS around the colon included).
    pub sent_by: Range<usize>,
    pub branch: Option<Range<usize>>,
    pub received: Option<Range<usize>>,
    /// `Some(None)`: `rport` without a value; `Some(Some(p))`: `rport=p`.
    pub rport: Option<Option<u16>>,
    /// Where a value for a bare `rport` goes (end of the `rport` token).
    pub rport_end: usize,
    /// The value of `rport=p`, to overwrite with the real source port.
    pub rport_value: Option<Range<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViaError {
    #[error("malformed Via sent-protocol")]
    Protocol,
    #[error("unsupported SIP version in Via")]
    Version,
    #[error("malformed Via sent-by")]
    SentBy,
    #[error("malformed Via parameter")]
    Param,
}

/// Parse one Via value spanning `r` (already split from its header line).
pub fn parse(b: &[u8], r: Range<usize>) -> Result<Via, ViaError> {
    let end = r.end.min(b.len());
    // sent-protocol = name LWS? "/" LWS? version LWS? "/" LWS? transport
    let mut i = skip_lws(b, r.start, end);
    let (name, n) = take_token(b, i, end);
    i = skip_lws(b, n, end);
    if name.is_empty() || b.get(i) != Some(&b'/') {
        return Err(ViaError::Protocol);
    }
    i = skip_lws(b, i + 1, end);
    let (ver, n) = take_token(b, i, end);
    i = skip_lws(b, n, end);
    if b.get(i) != Some(&b'/') {
        return Err(ViaError::Protocol);
    }
    if !b[name].eq_ignore_ascii_case(b"SIP") || &b[ver] != b"2.0" {
        return Err(ViaError::Version);
    }
    i = skip_lws(b, i + 1, end);
    let (transport, n) = take_token(b, i, end);
    if transport.is_empty() {
        return Err(ViaError::Protocol);
    }
    i = skip_lws(b, n, end);
    // sent-by = host [ COLON port ]; host may be an IPv6 reference.
    let host_start = i;
    if b.get(i) == Some(&b'[') {
        while i < end && b[i] != b']' {
            i += 1;
        }
        if i == end {
            return Err(ViaError::SentBy);
        }
        i += 1;
    } else {
        while i < end && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'-') {
            i += 1;
        }
    }
    let host = host_start..i;
    if host.is_empty() || (b[host_start] == b'[' && !matches!(host_ip(&b[host.clone()]), Some(IpAddr::V6(_)))) {
        return Err(ViaError::SentBy);
    }
    let mut sent_by = host.clone();
    i = skip_lws(b, i, end);
    let mut port = None;
    if b.get(i) == Some(&b':') {
        i = skip_lws(b, i + 1, end);
        let s = i;
        while i < end && b[i].is_ascii_digit() {
            i += 1;
        }
        port = Some(super::scan::parse_uint(&b[s..i], 65535).ok_or(ViaError::SentBy)? as u16);
        sent_by.end = i;
        i = skip_lws(b, i, end);
    }
    let mut via = Via {
        transport,
        host,
        port,
        sent_by,
        branch: None,
        received: None,
        rport: None,
        rport_end: 0,
        rport_value: None,
    };
    // *( SEMI via-params )
    while i < end {
        if b[i] != b';' {
            return Err(ViaError::Param);
        }
        i = skip_lws(b, i + 1, end);
        let (pname, n) = take_token(b, i, end);
        if pname.is_empty() {
            return Err(ViaError::Param);
        }
        i = skip_lws(b, n, end);
        let mut value = None;
        if b.get(i) == Some(&b'=') {
            i = skip_lws(b, i + 1, end);
            let s = i;
            if b.get(i) == Some(&b'"') {
                i += 1;
                while i < end && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= end {
                    return Err(ViaError::Param);
                }
                i += 1;
            } else {
                i += param_value_len(b.get(i..end).unwrap_or_default());
            }
            if s == i {
                return Err(ViaError::Param);
            }
            value = Some(s..i);
            i = skip_lws(b, i, end);
        }
        let pn = &b[pname.clone()];
        if pn.eq_ignore_ascii_case(b"branch") {
            via.branch = Some(value.ok_or(ViaError::Param)?);
        } else if pn.eq_ignore_ascii_case(b"received") {
            via.received = value;
        } else if pn.eq_ignore_ascii_case(b"rport") {
            via.rport_end = pname.end;
            via.rport_value = value.clone();
            via.rport = Some(match value {
                None => None,
                Some(v) => Some(super::scan::parse_uint(&b[v], 65535).ok_or(ViaError::Param)? as u16),
            });
        }
    }
    Ok(via)
}

impl Via {
    pub fn has_magic_cookie(&self, b: &[u8]) -> bool {
        // A branch that is only the cookie carries no transaction id (RFC 4475 §3.2.1).
        self.branch.as_ref().is_some_and(|r| {
            let v = &b[r.clone()];
            v.len() > MAGIC.len() && v.starts_with(MAGIC)
        })
    }

    /// Where a response to this Via goes (§18.2.2 with RFC 3581): the `received` address,
    /// else the sent-by host when it is an IP literal; the `rport` value, else the sent-by
    /// port. `maddr` is not honoured: it would let a sender point responses at anyone. We
    /// write `received` and `rport` ourselves on every request we forward, so for a Via of
    /// ours this is the request's real source.
    pub fn response_target(&self, b: &[u8]) -> Option<(Transport, SocketAddr)> {
        let transport = Transport::from_token(b.get(self.transport.clone())?)?;
        let ip = match &self.received {
            Some(r) => host_ip(b.get(r.clone())?)?,
            None => host_ip(b.get(self.host.clone())?)?,
        };
        let port = match self.rport {
            Some(Some(p)) => p,
            _ => self.port.unwrap_or(5060),
        };
        Some((transport, SocketAddr::new(ip, port)))
    }
}

/// Where the response to a request that came from `src` over `transport` with this top Via
/// goes: back over the connection on a reliable transport (§18.2.2); over UDP to the source
/// IP, at the source port when the client asked with `rport` (RFC 3581), else at its
/// sent-by port. Equal to `response_target` of the Via once our received/rport edits are in.
pub fn reply_target(transport: Transport, via: &Via, src: SocketAddr) -> SocketAddr {
    match transport {
        Transport::Tcp => src,
        Transport::Udp if via.rport.is_some() => src,
        Transport::Udp => SocketAddr::new(src.ip(), via.port.unwrap_or(5060)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &[u8]) -> Result<Via, ViaError> {
        parse(s, 0..s.len())
    }

    #[test]
    fn parses_odd_whitespace() {
        let s = b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw";
        let v = via(s).unwrap();
        assert_eq!(&s[v.transport.clone()], b"UDP");
        assert_eq!(&s[v.host.clone()], b"192.0.2.2");
        assert_eq!(&s[v.branch.clone().unwrap()], b"390skdjuw");
        assert!(!v.has_magic_cookie(s));
        let s = b"SIP/2.0/TCP spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8";
        let v = via(s).unwrap();
        assert_eq!(&s[v.branch.clone().unwrap()], b"z9hG4bK9ikj8");
        assert!(v.has_magic_cookie(s));
    }

    #[test]
    fn params_and_ipv6() {
        let udp = |a: &str| Some((Transport::Udp, a.parse().unwrap()));
        let s = b"SIP/2.0/UDP [2001:db8::9]:5070;rport;branch=z9hG4bKx;received=10.1.1.1;maddr=10.2.2.2";
        let v = via(s).unwrap();
        assert_eq!(&s[v.host.clone()], b"[2001:db8::9]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.response_target(s), udp("10.1.1.1:5070"), "maddr is not honoured");
        let s = b"SIP/2.0/UDP host.example;received=10.1.1.1;rport=6000;branch=z9hG4bKx";
        let v = via(s).unwrap();
        assert_eq!(v.response_target(s), udp("10.1.1.1:6000"));
        assert_eq!(&s[v.rport_value.clone().unwrap()], b"6000");
        let s = b"SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKx";
        assert_eq!(via(s).unwrap().response_target(s), udp("10.0.0.7:5060"));
        let s = b"SIP/2.0/UDP [2001:db8::7]:5062;received=2001:db8::8;branch=z9hG4bKx";
        assert_eq!(via(s).unwrap().response_target(s), udp("[2001:db8::8]:5062"));
        let s = b"SIP/2.0/UDP host.example;branch=z9hG4bKx";
        assert_eq!(via(s).unwrap().response_target(s), None, "domain names need DNS");
        let s = b"SIP/2.0/TLS 10.0.0.7;branch=z9hG4bKx";
        assert_eq!(via(s).unwrap().response_target(s), None, "a transport we do not speak");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(via(b"SIP/2.0/UDP 192.0.2.15;;,;,,").unwrap_err(), ViaError::Param);
        assert_eq!(via(b"SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw").unwrap_err(), ViaError::Version);
        assert_eq!(via(b"SIP/2.0 host").unwrap_err(), ViaError::Protocol);
        assert_eq!(via(b"SIP/2.0/UDP").unwrap_err(), ViaError::SentBy);
        assert_eq!(via(b"SIP/2.0/UDP h:99999").unwrap_err(), ViaError::SentBy);
        assert_eq!(via(b"SIP/2.0/UDP h;branch").unwrap_err(), ViaError::Param);
        assert_eq!(via(b"SIP/2.0/UDP h;x=\"open").unwrap_err(), ViaError::Param);
        assert_eq!(via(b"SIP/2.0/UDP [2001:db8::g]:5060").unwrap_err(), ViaError::SentBy);
        assert_eq!(via(b"SIP/2.0/UDP [10.0.0.1]").unwrap_err(), ViaError::SentBy);
    }
}
