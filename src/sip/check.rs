//! Request validation for a stateless proxy (RFC 3261 §16.3, §8.2.2, §20): the checks that
//! decide between forwarding, a local 4xx/5xx, and a silent drop. It also extracts the few
//! facts later steps need, so each header is parsed once.

use super::scan::{self, Kind, Message, StartLine, is_token, trim, values};
use super::uri;
use super::via::{self, Via};

use std::ops::Range;

/// The most Via values a request may carry (RFC 3261's recommended Max-Forwards is 70).
pub const MAX_VIA_VALUES: usize = 70;

/// What the checks read off a request.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub top: TopVia,
    /// The Request-URI when it is a SIP/SIPS URI.
    pub ruri: Option<uri::SipUri<'a>>,
    pub cseq_number: u64,
    pub max_forwards: Option<(usize, u64)>,
    pub body: Range<usize>,
}

/// A request that gets a local reply instead of being forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: u16,
    pub reason: &'static str,
    /// Text for the Warning header (399), naming what is wrong.
    pub warning: String,
    /// For 420: the option tags we don't support.
    pub unsupported: Option<String>,
}

impl Problem {
    fn bad(warning: impl Into<String>) -> Problem {
        Problem { code: 400, reason: "Bad Request", warning: warning.into(), unsupported: None }
    }
}

/// Why a request is dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswerable {
    NoVia,
    BadVia,
}

/// The first Via value of a message.
#[derive(Debug, Clone)]
pub struct TopVia {
    pub via: Via,
    /// Index into `msg.headers` of the header holding it.
    pub header: usize,
    /// The top value, and the second value of the same header line when there is one (a
    /// response loses the first and goes to the second).
    pub first: Range<usize>,
    pub second: Option<Range<usize>>,
}

impl TopVia {
    pub fn value(&self) -> Range<usize> {
        self.first.clone()
    }
}

/// The top Via: needed before anything can be answered.
pub fn top_via(msg: &Message<'_>) -> Result<TopVia, Unanswerable> {
    let header = msg.first_index(Kind::Via).ok_or(Unanswerable::NoVia)?;
    let mut values = values(msg.bytes, msg.headers[header].value.clone());
    let first = values.next().ok_or(Unanswerable::BadVia)?;
    let second = values.next();
    let via = via::parse(msg.bytes, first.clone()).map_err(|_| Unanswerable::BadVia)?;
    Ok(TopVia { via, header, first, second })
}

/// Check a request whose top Via is readable. `to_tag` is its To tag (`addr::tag_of`, read
/// once by the caller, empty when there is none); `max_body` caps Content-Length.
/// Lower Via values are not parsed here: they matter only to the hop that gets the response.
pub fn request<'a>(msg: &Message<'a>, top: TopVia, to_tag: &[u8], max_body: usize) -> Result<Facts<'a>, Problem> {
    let b = msg.bytes;
    let StartLine::Request { version, uri: uri_r, .. } = &msg.start else {
        return Err(Problem::bad("not a request"));
    };
    let ver = &b[version.clone()];
    if !ver.eq_ignore_ascii_case(b"SIP/2.0") {
        if ver.len() > 4 && ver[..4].eq_ignore_ascii_case(b"SIP/") {
            return Err(Problem {
                code: 505,
                reason: "Version Not Supported",
                warning: format!("SIP version {} not supported", String::from_utf8_lossy(&ver[..ver.len().min(16)])),
                unsupported: None,
            });
        }
        return Err(Problem::bad("malformed SIP version in request line"));
    }
    for kind in [Kind::From, Kind::To, Kind::CallId, Kind::CSeq] {
        if msg.first(kind).is_none() {
            return Err(Problem::bad(format!("missing {} header", name(kind))));
        }
    }
    if let Some(&k) = Kind::SINGLE_VALUED.iter().find(|&&k| msg.repeats(k)) {
        return Err(Problem::bad(format!("more than one {} header", name(k))));
    }
    let cseq_number = cseq(msg)?;
    // More Via values than any request can have gathered under Max-Forwards' usual 70: a
    // crafted stack, refused before anything walks it.
    let vias: usize = msg.all(Kind::Via).map(|h| values(b, h.value.clone()).count()).sum();
    if vias > MAX_VIA_VALUES {
        return Err(Problem {
            code: 483,
            reason: "Too Many Hops",
            warning: format!("more than {MAX_VIA_VALUES} Via values"),
            unsupported: None,
        });
    }
    let max_forwards = match msg.first_index(Kind::MaxForwards) {
        None => None,
        Some(idx) => {
            let v = scan::parse_uint(&b[msg.headers[idx].value.clone()], 255)
                .ok_or_else(|| Problem::bad("malformed Max-Forwards"))?;
            Some((idx, v))
        }
    };
    let body = content_length(msg, max_body)?;
    let ruri = request_uri(&b[uri_r.clone()])?;
    // Address syntax is checked on requests that start something downstream; an in-dialog
    // request (To tag) repeats addresses already checked on the dialog's first request. An
    // INVITE is always checked: a To tag alone proves nothing.
    if to_tag.is_empty() || msg.method() == b"INVITE" {
        addresses(msg)?;
    }
    if let Some(d) = msg.value(Kind::Date)
        && !d.ends_with(b"GMT")
    {
        return Err(Problem::bad("Date must be in GMT"));
    }
    if max_forwards.is_some_and(|(_, v)| v == 0) {
        return Err(Problem {
            code: 483,
            reason: "Too Many Hops",
            warning: "Max-Forwards is 0".into(),
            unsupported: None,
        });
    }
    // We implement no extensions a proxy could be required to understand (§16.3 step 5).
    // One string, tags comma-joined: never longer than the Proxy-Require text.
    let mut required = String::new();
    for r in msg.all(Kind::ProxyRequire).flat_map(|h| values(b, h.value.clone())).filter(|r| !r.is_empty()) {
        if !required.is_empty() {
            required.push(',');
        }
        required.push_str(&String::from_utf8_lossy(&b[r]));
    }
    if !required.is_empty() {
        return Err(Problem {
            code: 420,
            reason: "Bad Extension",
            // The tags are listed once, in Unsupported: a reply must not outgrow its request.
            warning: "extension not supported (see Unsupported)".into(),
            unsupported: Some(required),
        });
    }
    Ok(Facts { top, ruri, cseq_number, max_forwards, body })
}

fn name(k: Kind) -> &'static str {
    match k {
        Kind::From => "From",
        Kind::To => "To",
        Kind::CallId => "Call-ID",
        Kind::CSeq => "CSeq",
        Kind::MaxForwards => "Max-Forwards",
        Kind::ContentLength => "Content-Length",
        Kind::ContentType => "Content-Type",
        _ => "header",
    }
}

/// CSeq = 1*DIGIT LWS Method, number < 2**31, method equal to the request's.
fn cseq(msg: &Message<'_>) -> Result<u64, Problem> {
    let b = msg.bytes;
    let v = msg.first(Kind::CSeq).map(|h| h.value.clone()).unwrap_or(0..0);
    let text = &b[v.clone()];
    let digits_end = text.iter().position(|c| !c.is_ascii_digit()).unwrap_or(text.len());
    let number =
        scan::parse_uint(&text[..digits_end], (1 << 31) - 1).ok_or_else(|| Problem::bad("malformed CSeq number"))?;
    let method = &b[trim(b, v.start + digits_end..v.end)];
    if digits_end == 0 || method.is_empty() || !method.iter().all(|&c| is_token(c)) {
        return Err(Problem::bad("malformed CSeq"));
    }
    if method != msg.method() {
        return Err(Problem::bad("CSeq method does not match the request method"));
    }
    Ok(number)
}

/// The body as Content-Length says; without it (datagrams) the rest of the bytes. For
/// requests and responses alike.
pub fn content_length(msg: &Message<'_>, max_body: usize) -> Result<Range<usize>, Problem> {
    let n = match scan::declared_length(msg) {
        Ok(None) => return Ok(msg.body.clone()),
        Ok(Some(n)) if n > max_body as u64 => {
            return Err(Problem {
                code: 413,
                reason: "Request Entity Too Large",
                warning: format!("Content-Length above the limit of {max_body} bytes"),
                unsupported: None,
            });
        }
        Ok(Some(n)) => n as usize,
        Err(e) => return Err(Problem::bad(e.to_string())),
    };
    if n > msg.body.len() {
        return Err(Problem::bad("Content-Length is larger than the body"));
    }
    Ok(msg.body.start..msg.body.start + n)
}

/// Request-URI rules: an absoluteURI with no `<>` and, for SIP, no header part. Other
/// schemes are legal here; routing answers 416 when it would have to route on one.
fn request_uri(u: &[u8]) -> Result<Option<uri::SipUri<'_>>, Problem> {
    let Some(sch) = uri::scheme(u) else {
        return Err(Problem::bad("malformed Request-URI"));
    };
    if !(sch.eq_ignore_ascii_case(b"sip") || sch.eq_ignore_ascii_case(b"sips")) {
        return Ok(None);
    }
    let p = uri::parse(u).ok_or_else(|| Problem::bad("malformed Request-URI"))?;
    if p.has_headers {
        return Err(Problem::bad("headers are not allowed in a Request-URI"));
    }
    Ok(Some(p))
}

/// From, To and every Contact value must be valid name-addr / addr-spec.
fn addresses(msg: &Message<'_>) -> Result<(), Problem> {
    let b = msg.bytes;
    for kind in [Kind::From, Kind::To] {
        if let Some(v) = msg.value(kind) {
            name_addr(v).map_err(|e| Problem::bad(format!("{}: {e}", name(kind))))?;
        }
    }
    for h in msg.all(Kind::Contact) {
        if &b[h.value.clone()] == b"*" {
            continue;
        }
        for part in values(b, h.value.clone()) {
            name_addr(&b[part]).map_err(|e| Problem::bad(format!("Contact: {e}")))?;
        }
    }
    Ok(())
}

/// name-addr / addr-spec syntax of From, To and Contact values (RFC 3261 §20.10, §25.1):
/// balanced quotes, a token or quoted display name, no LWS inside `<>`, and an addr-spec
/// without `<>` may not contain `,`, `?` or `<`.
pub fn name_addr(v: &[u8]) -> Result<(), &'static str> {
    let v = &v[trim(v, 0..v.len())];
    let mut i = 0;
    if v.first() == Some(&b'"') {
        i = 1;
        loop {
            match v.get(i) {
                None => return Err("unterminated quoted display name"),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        i += 1;
        while v.get(i).is_some_and(|&c| scan::is_lws(c)) {
            i += 1;
        }
        if v.get(i) != Some(&b'<') {
            return Err("quoted display name without <URI>");
        }
    }
    match memchr::memchr(b'<', &v[i..]) {
        Some(lt) => {
            let display = &v[i..i + lt];
            if !display.iter().all(|&c| is_token(c) || scan::is_lws(c)) {
                return Err("display name must be a token or a quoted string");
            }
            let start = i + lt + 1;
            let gt = memchr::memchr(b'>', &v[start..]).ok_or("missing >")? + start;
            let inner = &v[start..gt];
            if inner.is_empty() || scan::angle_uri_len(inner) != inner.len() {
                return Err("whitespace or < inside <URI>");
            }
            Ok(())
        }
        None => {
            // addr-spec: the URI ends at the first ';' of the header parameters.
            let uri_end = memchr::memchr(b';', v).unwrap_or(v.len());
            let uri_part = &v[trim(v, 0..uri_end)];
            if uri::scheme(uri_part).is_none() {
                return Err("malformed URI");
            }
            if uri_part.iter().any(|&c| matches!(c, b',' | b'?' | b'>' | b'"') || scan::is_lws(c)) {
                return Err("URI with , ? or spaces must be enclosed in <>");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: &[u8]) -> Result<Facts<'_>, Problem> {
        let msg = scan::scan(m).unwrap();
        let to_tag = msg.value(Kind::To).map(crate::sip::addr::tag_of).unwrap_or_default();
        request(&msg, top_via(&msg).unwrap(), to_tag, 65535)
    }

    const OK: &str = "INVITE sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:bob@c>\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\nMax-Forwards: 0068\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn accepts_a_plain_request() {
        let f = check(OK.as_bytes()).unwrap();
        assert_eq!(f.cseq_number, 7);
        assert_eq!(f.max_forwards.map(|m| m.1), Some(68));
    }

    fn code(m: &str) -> u16 {
        check(m.as_bytes()).unwrap_err().code
    }

    #[test]
    fn local_replies() {
        assert_eq!(code(&OK.replace("Max-Forwards: 0068", "Max-Forwards: 0")), 483);
        assert_eq!(code(&OK.replace("Max-Forwards: 0068", "Max-Forwards: 256")), 400);
        assert_eq!(code(&OK.replace("Max-Forwards: 0068", "Proxy-Require: foo, bar")), 420);
        assert_eq!(
            check(OK.replace("Max-Forwards: 0068", "Proxy-Require: foo").as_bytes())
                .unwrap_err()
                .unsupported
                .as_deref(),
            Some("foo")
        );
        assert_eq!(code(&OK.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")), 505);
        assert_eq!(code(&OK.replace("7 INVITE", "7 OPTIONS")), 400);
        assert_eq!(code(&OK.replace("7 INVITE", "36893488147419103232 INVITE")), 400);
        assert_eq!(code(&OK.replace("Call-ID: x\r\n", "")), 400);
        assert_eq!(code(&OK.replace("Call-ID: x\r\n", "Call-ID: x\r\ni: y\r\n")), 400);
        assert_eq!(code(&OK.replace("Content-Length: 0", "Content-Length: 10")), 400);
        assert_eq!(code(&OK.replace("Content-Length: 0", "Content-Length: -1")), 400);
        assert_eq!(code(&OK.replace("sip:bob@10.0.0.2", "<sip:bob@10.0.0.2>")), 400);
        assert_eq!(code(&OK.replace("sip:bob@10.0.0.2", "sip:bob@10.0.0.2?Route=x")), 400);
        assert_eq!(code(&OK.replace("<sip:bob@c>", "\"Bob <sip:bob@c>")), 400);
        assert_eq!(code(&OK.replace("<sip:bob@c>", "Watson, Thomas <sip:bob@c>")), 400);
        assert_eq!(code(&OK.replace("<sip:bob@c>", "< sip:bob@c >")), 400);
        assert_eq!(code(&OK.replace("Content-Length", "Date: Fri, 01 Jan 2010 16:00:00 EST\r\nContent-Length")), 400);
    }

    #[test]
    fn name_addr_forms() {
        assert!(name_addr(b"caller<sip:caller@example.com>;tag=323").is_ok());
        assert!(
            name_addr(b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8").is_ok()
        );
        assert!(name_addr(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").is_ok());
        assert!(name_addr(b"isbn:2983792873").is_ok());
        assert!(name_addr(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
    }

    #[test]
    fn top_via_needed_to_answer() {
        let m = OK.replace("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1", "Via: SIP/2.0/UDP 192.0.2.15;;,;,,");
        assert_eq!(top_via(&scan::scan(m.as_bytes()).unwrap()).unwrap_err(), Unanswerable::BadVia);
        let m = OK.replace("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n", "");
        assert_eq!(top_via(&scan::scan(m.as_bytes()).unwrap()).unwrap_err(), Unanswerable::NoVia);
    }
}
