//! Via values: parsing the sent-by and parameters (LWS-tolerant, RFC 3261 §20.42), our own
//! branch (§16.6 step 8, §16.11) and the response next hop (§18.2.2, RFC 3581).

use super::scan::{is_lws, is_token, trim};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub const MAGIC: &[u8] = b"z9hG4bK";
/// Our branches start with this, so a response's top Via is recognisably ours.
pub const OUR_BRANCH_PREFIX: &str = "z9hG4bK-sg";

/// One parsed Via value (absolute ranges into the message bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token (`UDP`, `TCP`, `TLS`, ...).
    pub transport: Range<usize>,
    pub host: Range<usize>,
    pub port: Option<u16>,
    pub branch: Option<Range<usize>>,
    pub received: Option<Range<usize>>,
    /// `Some(None)`: `rport` without a value; `Some(Some(p))`: `rport=p`.
    pub rport: Option<Option<u16>>,
    /// Where a value for a bare `rport` goes (end of the `rport` token).
    pub rport_end: usize,
    pub maddr: Option<Range<usize>>,
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

fn skip_lws(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && is_lws(b[i]) {
        i += 1;
    }
    i
}

fn take_token(b: &[u8], mut i: usize, end: usize) -> (Range<usize>, usize) {
    let s = i;
    while i < end && is_token(b[i]) {
        i += 1;
    }
    (s..i, i)
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
    if host.is_empty() {
        return Err(ViaError::SentBy);
    }
    i = skip_lws(b, i, end);
    let mut port = None;
    if b.get(i) == Some(&b':') {
        i = skip_lws(b, i + 1, end);
        let s = i;
        while i < end && b[i].is_ascii_digit() {
            i += 1;
        }
        port = Some(super::scan::parse_uint(&b[s..i], 65535).ok_or(ViaError::SentBy)? as u16);
        i = skip_lws(b, i, end);
    }
    let mut via = Via { transport, host, port, branch: None, received: None, rport: None, rport_end: 0, maddr: None };
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
                while i < end && (is_token(b[i]) || b"[]:".contains(&b[i])) {
                    i += 1;
                }
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
        } else if pn.eq_ignore_ascii_case(b"maddr") {
            via.maddr = value;
        } else if pn.eq_ignore_ascii_case(b"rport") {
            via.rport_end = pname.end;
            via.rport = Some(match value {
                None => None,
                Some(v) => Some(super::scan::parse_uint(&b[v], 65535).ok_or(ViaError::Param)? as u16),
            });
        }
    }
    Ok(via)
}

/// Host text without IPv6 brackets.
fn bare(host: &[u8]) -> &[u8] {
    host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")).unwrap_or(host)
}

/// An IP literal host, or None for a domain name.
pub fn host_ip(host: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(bare(host)).ok()?.parse().ok()
}

impl Via {
    pub fn has_magic_cookie(&self, b: &[u8]) -> bool {
        // A branch that is only the cookie carries no transaction id (RFC 4475 §3.2.1).
        self.branch.as_ref().is_some_and(|r| {
            let v = &b[r.clone()];
            v.len() > MAGIC.len() && v.starts_with(MAGIC)
        })
    }

    /// Is this the Via we inserted? Our branch prefix and our advertised sent-by.
    pub fn is_ours(&self, b: &[u8], advertise: &HostPort) -> bool {
        let branch_ok = self.branch.as_ref().is_some_and(|r| b[r.clone()].starts_with(OUR_BRANCH_PREFIX.as_bytes()));
        branch_ok && advertise.matches(&b[self.host.clone()], self.port)
    }

    /// Where a response to this Via goes (RFC 3261 §18.2.2 with RFC 3581 rport), for a
    /// Via whose host or received is an IP literal. maddr is honoured when it is one.
    pub fn response_target(&self, b: &[u8]) -> Option<SocketAddr> {
        let default_port = if b[self.transport.clone()].eq_ignore_ascii_case(b"TLS") { 5061 } else { 5060 };
        let sent_port = self.port.unwrap_or(default_port);
        if let Some(ip) = self.maddr.as_ref().and_then(|m| host_ip(&b[m.clone()])) {
            return Some(SocketAddr::new(ip, sent_port));
        }
        let ip = match &self.received {
            Some(r) => host_ip(&b[r.clone()])?,
            None => host_ip(&b[self.host.clone()])?,
        };
        let port = match self.rport {
            Some(Some(p)) if self.received.is_some() => p,
            _ => sent_port,
        };
        Some(SocketAddr::new(ip, port))
    }
}

/// A host and port to compare sent-by and URIs against (our advertised address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(s: &str) -> Option<HostPort> {
        let (h, p) = s.rsplit_once(':')?;
        if h.starts_with('[') != h.ends_with(']') {
            return None;
        }
        Some(HostPort { host: h.to_string(), port: p.parse().ok()? })
    }

    pub fn matches(&self, host: &[u8], port: Option<u16>) -> bool {
        let port_ok = port.unwrap_or(5060) == self.port;
        port_ok && bare(host).eq_ignore_ascii_case(bare(self.host.as_bytes()))
    }
}

/// The parts of a request that the branch and the verdict key are computed from.
pub struct TxFields<'a> {
    pub top_via: &'a [u8],
    pub top_branch: Option<&'a [u8]>,
    pub sent_by: &'a [u8],
    pub magic: bool,
    pub request_uri: &'a [u8],
    pub call_id: &'a [u8],
    pub from_tag: &'a [u8],
    pub cseq_number: u64,
    pub proxy_require: &'a [u8],
    pub proxy_authorization: &'a [u8],
}

/// Hash a list of fields: each field is hashed on its own, seeded by the hash so far, so
/// field boundaries count ("ab","c" differs from "a","bc") and nothing is copied. One-shot
/// xxh3 on short inputs is a few dozen instructions; the streaming state costs far more.
pub fn hash_parts(seed: u64, parts: &[&[u8]]) -> u64 {
    parts.iter().fold(seed, |h, p| xxh3_64_with_seed(p, h))
}

/// The parts of our branch `z9hG4bK-sg` + transaction part (16 hex) + loop part (8 hex).
///
/// Transaction part: with an RFC 3261 client, the incoming branch and sent-by identify the
/// transaction, so a retransmission, its CANCEL and the ACK for a non-2xx reply (same top Via)
/// get the same branch (§16.11). Without the magic cookie, the §16.6 field list is used,
/// minus the To tag, so that the ACK for a non-2xx (which gained a To tag) still matches.
/// The CSeq method is never included, for the same reason.
pub fn transaction_hash(f: &TxFields<'_>, seed: u64) -> u64 {
    if f.magic {
        return hash_parts(seed, &[b"3261", f.top_branch.unwrap_or_default(), f.sent_by]);
    }
    let n = f.cseq_number.to_le_bytes();
    hash_parts(
        seed,
        &[b"2543", f.top_via, f.request_uri, f.call_id, f.from_tag, &n, f.proxy_require, f.proxy_authorization],
    )
}

/// Loop part: fields a looping request keeps unchanged (Request-URI, Call-ID, From tag,
/// CSeq number, Proxy-Require/Authorization), excluding the top Via that each hop replaces.
pub fn loop_hash(f: &TxFields<'_>, seed: u64) -> u32 {
    let n = f.cseq_number.to_le_bytes();
    let parts: [&[u8]; 6] = [f.request_uri, f.call_id, f.from_tag, &n, f.proxy_require, f.proxy_authorization];
    hash_parts(seed ^ 0x6c6f_6f70, &parts) as u32
}

/// The loop part of one of our branches, if `branch` is ours.
pub fn loop_part(branch: &[u8]) -> Option<u32> {
    let rest = branch.strip_prefix(OUR_BRANCH_PREFIX.as_bytes())?;
    let hex = std::str::from_utf8(rest.get(16..24)?).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// `tag` parameter value of a From/To value.
pub fn tag(b: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    // Parameters start after the closing '>' when there is one, else after the URI.
    let v = &b[r.clone()];
    let params_from = match v.iter().rposition(|&c| c == b'>') {
        Some(p) => p + 1,
        None => 0,
    };
    let mut i = r.start + params_from;
    while i < r.end {
        if b[i] == b';' {
            let name_start = skip_lws(b, i + 1, r.end);
            let (name, n) = take_token(b, name_start, r.end);
            let j = skip_lws(b, n, r.end);
            if b[name].eq_ignore_ascii_case(b"tag") && b.get(j) == Some(&b'=') {
                let vs = skip_lws(b, j + 1, r.end);
                let (val, _) = take_token(b, vs, r.end);
                return Some(trim(b, val));
            }
        }
        i += 1;
    }
    None
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
        let s = b"SIP/2.0/UDP [2001:db8::9]:5070;rport;branch=z9hG4bKx;received=10.1.1.1;maddr=10.2.2.2";
        let v = via(s).unwrap();
        assert_eq!(&s[v.host.clone()], b"[2001:db8::9]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.response_target(s), Some("10.2.2.2:5070".parse().unwrap()));
        let s = b"SIP/2.0/UDP host.example;received=10.1.1.1;rport=6000;branch=z9hG4bKx";
        assert_eq!(via(s).unwrap().response_target(s), Some("10.1.1.1:6000".parse().unwrap()));
        let s = b"SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKx";
        assert_eq!(via(s).unwrap().response_target(s), Some("10.0.0.7:5060".parse().unwrap()));
        let s = b"SIP/2.0/UDP host.example;branch=z9hG4bKx";
        assert_eq!(via(s).unwrap().response_target(s), None, "domain names need DNS");
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
    }

    fn fields<'a>(branch: &'a [u8], uri: &'a [u8]) -> TxFields<'a> {
        TxFields {
            top_via: b"SIP/2.0/UDP a",
            top_branch: Some(branch),
            sent_by: b"a",
            magic: branch.len() > 7 && branch.starts_with(MAGIC),
            request_uri: uri,
            call_id: b"c",
            from_tag: b"f",
            cseq_number: 1,
            proxy_require: b"",
            proxy_authorization: b"",
        }
    }

    fn branch(f: &TxFields<'_>, seed: u64) -> String {
        format!("{OUR_BRANCH_PREFIX}{:016x}{:08x}", transaction_hash(f, seed), loop_hash(f, seed))
    }

    #[test]
    fn branch_is_stable_and_ours() {
        let a = branch(&fields(b"z9hG4bK1", b"sip:x"), 7);
        assert_eq!(a, branch(&fields(b"z9hG4bK1", b"sip:x"), 7));
        assert_ne!(a, branch(&fields(b"z9hG4bK2", b"sip:x"), 7));
        assert!(a.starts_with(OUR_BRANCH_PREFIX));
        assert_eq!(loop_part(a.as_bytes()), Some(loop_hash(&fields(b"z9hG4bK1", b"sip:x"), 7)));
        // Without the cookie the message fields decide.
        assert_ne!(branch(&fields(b"abc", b"sip:x"), 7), branch(&fields(b"abc", b"sip:y"), 7));
    }

    #[test]
    fn tags() {
        let s = b"\"A;tag=no\" <sip:a@b;tag=no>;x=1; tag = abc123";
        assert_eq!(&s[tag(s, 0..s.len()).unwrap()], b"abc123");
        let s = b"sip:caller@example.net;tag=134161461246";
        assert_eq!(&s[tag(s, 0..s.len()).unwrap()], b"134161461246");
        let s = b"<sip:a@b>";
        assert_eq!(tag(s, 0..s.len()), None);
    }

    #[test]
    fn host_port_matching() {
        let hp = HostPort::parse("127.0.0.1:5060").unwrap();
        assert!(hp.matches(b"127.0.0.1", None));
        assert!(!hp.matches(b"127.0.0.1", Some(5070)));
        let v6 = HostPort::parse("[::1]:5060").unwrap();
        assert!(v6.matches(b"[::1]", Some(5060)));
    }
}
