//! Addresses as SIP writes them: transport tokens, `host[:port]` (IPv6 references in
//! brackets, RFC 5118), IP literals, and the `tag` parameter of From/To. One parser for each,
//! shared by Via, URIs, routing and the config.

use super::scan::{is_lws, is_token, param_value_len, trim};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;

/// The transports sipguard speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// A transport token as Via and `transport=` write it (case-insensitive); `None` for
    /// one we do not speak (TLS, SCTP, WS, ...).
    pub fn from_token(t: &[u8]) -> Option<Transport> {
        if t.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if t.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else {
            None
        }
    }

    /// The token used in Via (upper case, as RFC 3261 writes it).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// The token in lower case: metrics labels, config, `transport=` URI parameters.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Host text without IPv6 brackets.
pub fn bare(host: &[u8]) -> &[u8] {
    host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")).unwrap_or(host)
}

/// An IP literal host (IPv6 with or without brackets), or None for a domain name.
pub fn host_ip(host: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = dotted_quad(host) {
        return Some(IpAddr::V4(v4));
    }
    std::str::from_utf8(bare(host)).ok()?.parse().ok()
}

/// The usual host, a dotted-quad IPv4 address, read without the general parser (it costs
/// several hundred instructions, and every message names a few hosts). Accepts a subset
/// of what `Ipv4Addr::from_str` accepts (four 1-3 digit octets up to 255, no leading
/// zero); anything else goes to that parser, so the two cannot disagree.
fn dotted_quad(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    // Octets done, the current octet's value and its number of digits.
    let (mut done, mut value, mut digits) = (0usize, 0u16, 0u8);
    for &c in s {
        match c {
            b'0'..=b'9' => {
                if digits == 1 && value == 0 {
                    return None; // a leading zero
                }
                value = value * 10 + u16::from(c - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && done < 3 => {
                *octets.get_mut(done)? = value as u8;
                (done, value, digits) = (done + 1, 0, 0);
            }
            _ => return None,
        }
    }
    if digits == 0 || done != 3 {
        return None;
    }
    octets[3] = value as u8;
    Some(Ipv4Addr::from(octets))
}

/// Split `host[:port]`; an IPv6 reference must be bracketed when a port follows. The host
/// is checked for the characters a hostname or IP reference may hold, not resolved.
pub fn split_host_port(hp: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (host, port) = if hp.first() == Some(&b'[') {
        let close = memchr::memchr(b']', hp)?;
        let after = &hp[close + 1..];
        match after.strip_prefix(b":") {
            Some(p) => (&hp[..=close], Some(p)),
            None if after.is_empty() => (&hp[..=close], None),
            None => return None,
        }
    } else {
        match memchr::memchr(b':', hp) {
            Some(c) => (&hp[..c], Some(&hp[c + 1..])),
            None => (hp, None),
        }
    };
    if host.is_empty() || !host.iter().all(|&b| HOST[b as usize]) {
        return None;
    }
    if host.first() == Some(&b'[') && !matches!(host_ip(host), Some(IpAddr::V6(_))) {
        return None;
    }
    let port = match port {
        Some(p) => Some(super::scan::parse_uint(p, 65535)? as u16),
        None => None,
    };
    Some((host, port))
}

/// The characters a hostname or IP reference may hold.
static HOST: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':');
        i += 1;
    }
    t
};

/// A host and port we answer to (an advertised address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// As written: IPv6 in brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// `host:port` or `[v6]:port`; the port is required.
    pub fn parse(s: &str) -> Option<HostPort> {
        let (host, port) = split_host_port(s.as_bytes())?;
        let port = port.filter(|&p| p > 0)?;
        Some(HostPort { host: String::from_utf8_lossy(host).into_owned(), port })
    }

    /// From a socket address (brackets for IPv6).
    pub fn of(addr: SocketAddr) -> HostPort {
        let host = match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        HostPort { host, port: addr.port() }
    }

    /// Does `host[:port]` (default port 5060) name this address? Case-insensitive for
    /// names; IP literals compare as addresses, so `[::1]` and `[0:0::1]` are the same.
    pub fn matches(&self, host: &[u8], port: Option<u16>) -> bool {
        if port.unwrap_or(5060) != self.port {
            return false;
        }
        match (host_ip(host), host_ip(self.host.as_bytes())) {
            (Some(a), Some(b)) => a == b,
            _ => bare(host).eq_ignore_ascii_case(bare(self.host.as_bytes())),
        }
    }

    /// The IP address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        host_ip(self.host.as_bytes())
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Index of the first non-LWS byte at or after `i` (before `end`).
pub(super) fn skip_lws(b: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && is_lws(b[i]) {
        i += 1;
    }
    i
}

/// The token starting at `i` and the index after it.
pub(super) fn take_token(b: &[u8], mut i: usize, end: usize) -> (Range<usize>, usize) {
    let s = i;
    while i < end && is_token(b[i]) {
        i += 1;
    }
    (s..i, i)
}

/// End of the quoted string starting at `i` (just past the closing quote).
fn skip_quoted(b: &[u8], mut i: usize, end: usize) -> Option<usize> {
    i += 1;
    while i < end {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Where the header parameters of a From/To/Contact value spanning `start..end` begin: after
/// the `>` of a name-addr (a quoted display name may hold `<` and `>`), else at the first `;`
/// of an addr-spec. Also returns the URI's range.
fn params_start(b: &[u8], start: usize, end: usize) -> Option<(Range<usize>, usize)> {
    let mut i = skip_lws(b, start, end);
    if b.get(i) == Some(&b'"') {
        i = skip_quoted(b, i, end)?;
    }
    let open = if b.get(i) == Some(&b'<') { Some(0) } else { b.get(i..end).and_then(|s| memchr::memchr(b'<', s)) };
    match open {
        Some(k) => {
            let uri = i + k + 1;
            let gt = uri + memchr::memchr(b'>', b.get(uri..end)?)?;
            Some((uri..gt, gt + 1))
        }
        None => {
            let semi = b.get(i..end).and_then(|s| memchr::memchr(b';', s)).map_or(end, |k| i + k);
            Some((i..semi, semi))
        }
    }
}

/// The `tag` parameter value of a From/To value spanning `r` in `b`. Parameters are read
/// one by one, quoted values skipped whole, so `;p=";tag=x"` holds no tag.
pub fn tag(b: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    let end = r.end.min(b.len());
    let (_, mut p) = params_start(b, r.start, end)?;
    loop {
        p = skip_lws(b, p, end);
        if b.get(p) != Some(&b';') {
            return None;
        }
        p = skip_lws(b, p + 1, end);
        let (name, n) = take_token(b, p, end);
        p = skip_lws(b, n, end);
        let mut value = None;
        if b.get(p) == Some(&b'=') {
            p = skip_lws(b, p + 1, end);
            let s = p;
            if b.get(p) == Some(&b'"') {
                p = skip_quoted(b, p, end)?;
            } else {
                p += param_value_len(b.get(p..end).unwrap_or_default());
            }
            value = Some(s..p);
        }
        if b[name].eq_ignore_ascii_case(b"tag") {
            return value.filter(|v| !v.is_empty());
        }
    }
}

/// The URI of a From/To value: inside `<>`, else the addr-spec before its parameters.
pub fn uri_of(value: &[u8]) -> &[u8] {
    match params_start(value, 0, value.len()) {
        Some((uri, _)) => &value[trim(value, uri)],
        None => &[],
    }
}

/// Who a From/To value names, for binding a dialog proof to the callee: the user part of a
/// sip:/sips: URI, the number of a tel: URI (before its parameters), else the whole URI.
pub fn party_of(value: &[u8]) -> &[u8] {
    let uri = uri_of(value);
    let Some(colon) = memchr::memchr(b':', uri) else { return uri };
    let (scheme, rest) = (&uri[..colon], &uri[colon + 1..]);
    if scheme.eq_ignore_ascii_case(b"tel") {
        return &rest[..memchr::memchr(b';', rest).unwrap_or(rest.len())];
    }
    if (scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips"))
        && let Some(at) = memchr::memrchr(b'@', rest)
    {
        return &rest[..at];
    }
    uri
}

/// The tag of a From/To header value (bytes), or empty.
pub fn tag_of(value: &[u8]) -> &[u8] {
    tag(value, 0..value.len()).map_or(&[][..], |r| &value[r])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let s = b"\"A;tag=no\" <sip:a@b;tag=no>;x=1; tag = abc123";
        assert_eq!(&s[tag(s, 0..s.len()).unwrap()], b"abc123");
        let s = b"sip:caller@example.net;tag=134161461246";
        assert_eq!(&s[tag(s, 0..s.len()).unwrap()], b"134161461246");
        assert_eq!(tag_of(b"<sip:a@b>"), b"");
        assert_eq!(tag_of(b"<sip:a@b>;tagx=1;tag=2"), b"2");
        assert_eq!(tag_of(b"<sip:a@b>;;;"), b"");
        assert_eq!(tag_of(b"<sip:a@b>;p=\";tag=x\""), b"", "inside a quoted value");
        assert_eq!(tag_of(b"<sip:a@b>;p=\";tag=x\";tag=real"), b"real");
        assert_eq!(tag_of(b"\"x>;tag=no\" <sip:a@b;tag=no>;tag=yes"), b"yes");
        assert_eq!(tag_of(b"sip:a@b;user=phone;tag=z"), b"z");
        assert_eq!(tag_of(b"<sip:a@b>;tag="), b"");
        assert_eq!(tag_of(b"<sip:a@b"), b"", "unterminated");
    }

    #[test]
    fn parties() {
        assert_eq!(party_of(b"\"A\" <sip:+12125550100@h;user=phone>;tag=1"), b"+12125550100");
        assert_eq!(party_of(b"<tel:+12125550100;phone-context=x>"), b"+12125550100");
        assert_eq!(party_of(b"sip:bob@h;tag=1"), b"bob");
        assert_eq!(party_of(b"<urn:service:sos>"), b"urn:service:sos");
    }

    #[test]
    fn host_port_matching() {
        let hp = HostPort::parse("127.0.0.1:5060").unwrap();
        assert!(hp.matches(b"127.0.0.1", None));
        assert!(!hp.matches(b"127.0.0.1", Some(5070)));
        let v6 = HostPort::parse("[::1]:5060").unwrap();
        assert!(v6.matches(b"[::1]", Some(5060)));
        assert!(v6.matches(b"[0:0::1]", Some(5060)));
        assert!(HostPort::parse("::1:5060").is_none(), "IPv6 needs brackets before a port");
        assert!(HostPort::parse("[nope]:5060").is_none());
        assert!(HostPort::parse("sbc.example:5060").is_some());
        assert!(HostPort::parse("sbc.example").is_none(), "port required");
        assert_eq!(HostPort::of("[2001:db8::1]:5070".parse().unwrap()).to_string(), "[2001:db8::1]:5070");
    }

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port(b"[2001:db8::1]:5070"), Some((&b"[2001:db8::1]"[..], Some(5070))));
        assert_eq!(split_host_port(b"h"), Some((&b"h"[..], None)));
        assert_eq!(split_host_port(b"h:99999"), None);
        assert_eq!(split_host_port(b"[::1]x"), None);
        assert_eq!(split_host_port(b""), None);
    }

    #[test]
    fn ipv4_fast_path_agrees_with_the_standard_parser() {
        let octets = [
            "0", "00", "01", "1", "9", "10", "99", "100", "199", "255", "256", "300", "999", "1000", "", "a", "+1",
            " 1",
        ];
        for a in octets {
            for b in ["0", "255", "07", "", "x"] {
                for (c, d) in [("1", "2"), ("254", "0"), ("1", ""), ("1", "2.3"), ("01", "2")] {
                    let s = format!("{a}.{b}.{c}.{d}");
                    let std = s.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
                    assert_eq!(host_ip(s.as_bytes()), std, "{s}");
                }
            }
        }
        for s in ["1.2.3", "1.2.3.4.", ".1.2.3.4", "1..2.3", "127.0.0.1:5060", "::ffff:1.2.3.4", "[::1]"] {
            let std = std::str::from_utf8(bare(s.as_bytes())).unwrap().parse::<IpAddr>().ok();
            assert_eq!(host_ip(s.as_bytes()), std, "{s}");
        }
    }

    #[test]
    fn transports() {
        assert_eq!(Transport::from_token(b"uDp"), Some(Transport::Udp));
        assert_eq!(Transport::from_token(b"TCP"), Some(Transport::Tcp));
        assert_eq!(Transport::from_token(b"TLS"), None);
    }
}
