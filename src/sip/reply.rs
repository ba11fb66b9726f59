//! Local replies as a stateless UAS (RFC 3261 §8.2.6, §16.11). The status line is rsip's;
//! the Via, From, To, Call-ID and CSeq the UAS must copy are copied byte for byte from the
//! request (rsip would re-encode them as UTF-8 text), and the headers we add (rendered at
//! config time) are written as they are. The To
//! tag is derived from the request, so a retransmission gets a byte-identical reply and the
//! ACK for it can be recognised.

use super::addr::{Transport, host_ip, tag};
use super::check::TopVia;
use super::scan::{Kind, Message};
use super::splice::Splice;
use rsip::{StatusCode, Version};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

/// An extra header on a local reply (Warning, Reason, Retry-After, Unsupported, ...).
pub type Extra<'a> = (&'a str, &'a str);

/// Append the status line. Lines are rendered by rsip once and kept per thread: a proxy
/// answers with a handful of (code, reason) pairs, all from the config or fixed here, and
/// formatting one cost more than copying the rest of the reply.
fn status_line(out: &mut Vec<u8>, code: u16, reason: &str) {
    /// (code, reason phrase, the rendered line with its CRLF)
    type Rendered = (u16, Box<str>, Box<[u8]>);
    thread_local! {
        static LINES: RefCell<Vec<Rendered>> = const { RefCell::new(Vec::new()) };
    }
    LINES.with_borrow_mut(|lines| {
        if let Some((_, _, l)) = lines.iter().find(|(c, r, _)| *c == code && **r == *reason) {
            return out.extend_from_slice(l);
        }
        let rendered = format!("{} {}\r\n", Version::V2, StatusCode::Other(code, reason.to_string())).into_bytes();
        out.extend_from_slice(&rendered);
        if lines.len() < 64 {
            lines.push((code, reason.into(), rendered.into()));
        }
    })
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Build a reply to `msg`. `top_via` gets `received`/`rport` for the UAC (RFC 3581);
/// `to_tag` is added when the To header has none.
#[allow(clippy::too_many_arguments)]
pub fn build(
    msg: &Message<'_>,
    top_via: Option<&TopVia>,
    transport: Transport,
    src: SocketAddr,
    code: u16,
    reason: &str,
    to_tag: &[u8],
    extra: &[Extra<'_>],
) -> Vec<u8> {
    let b = msg.bytes;
    let mut out = Vec::with_capacity(b.len().min(2048) + 256);
    status_line(&mut out, code, reason);
    // Via header lines as they came (several values on a line stay on one line, so the
    // reply never outgrows the request), with our received/rport in the top value.
    let mut first = true;
    for h in msg.all(Kind::Via) {
        // The line without its line end (which may be a bare LF): ours is CRLF.
        let text = &b[h.line.clone()];
        let line = h.line.start..h.line.end - (text.len() - text.trim_ascii_end().len());
        match top_via {
            Some(top) if first => {
                let mut s = Splice::new();
                received_edits(&mut s, b, top, transport, src, line.start);
                s.apply_into(&mut out, &b[line]);
            }
            _ => out.extend_from_slice(&b[line]),
        }
        out.extend_from_slice(b"\r\n");
        first = false;
    }
    if let Some(v) = msg.value(Kind::From) {
        line(&mut out, b"From", v);
    }
    if let Some(h) = msg.first(Kind::To) {
        out.extend_from_slice(b"To: ");
        out.extend_from_slice(&b[h.value.clone()]);
        if tag(b, h.value.clone()).is_none() {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(to_tag);
        }
        out.extend_from_slice(b"\r\n");
    }
    if let Some(v) = msg.value(Kind::CallId) {
        line(&mut out, b"Call-ID", v);
    }
    if let Some(v) = msg.value(Kind::CSeq) {
        line(&mut out, b"CSeq", v);
    }
    for (name, value) in extra {
        line(&mut out, name.as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    out
}

/// The source address, written by us whatever the client wrote (RFC 3261 §18.2.1, RFC
/// 3581 §4): `received` is set to the source IP (added when the sent-by host differs, when
/// rport was asked for, or on TCP), `rport` to the source port when the client asked for it
/// and always on TCP, where the response must find the connection, not the sent-by port.
/// Positions are made relative to `base` (0 when splicing the whole message).
pub fn received_edits(s: &mut Splice, b: &[u8], top: &TopVia, transport: Transport, src: SocketAddr, base: usize) {
    let v = &top.via;
    let tcp = transport == Transport::Tcp;
    let needs_received = match &v.received {
        Some(_) => true,
        None => tcp || v.rport.is_some() || host_ip(&b[v.host.clone()]) != Some(src.ip()),
    };
    if v.rport.is_none() && !tcp && !needs_received {
        // The common case of a client that wrote its real address and asked for nothing.
        return;
    }
    // "=PORT", of which the value alone is eq_port[1..].
    let mut eq_port = Vec::with_capacity(6);
    eq_port.push(b'=');
    super::splice::push_dec(&mut eq_port, u64::from(src.port()));
    let port = &eq_port[1..];
    let mut tail = Vec::new();
    match (&v.rport, &v.rport_value) {
        (Some(_), Some(val)) => s.replace(val.start - base..val.end - base, port),
        (Some(_), None) => s.insert(v.rport_end - base, &eq_port),
        (None, _) if tcp => {
            tail.extend_from_slice(b";rport");
            tail.extend_from_slice(&eq_port);
        }
        (None, _) => {}
    }
    if needs_received {
        let mut ip = Vec::with_capacity(40);
        push_ip(&mut ip, src.ip());
        match &v.received {
            Some(r) => s.replace(r.start - base..r.end - base, &ip),
            None => {
                tail.extend_from_slice(b";received=");
                tail.extend_from_slice(&ip);
            }
        }
    }
    if !tail.is_empty() {
        s.insert(top.value().end - base, &tail);
    }
}

/// Append an IP address as `received` writes it (IPv6 without brackets, RFC 5118 §4.5).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                super::splice::push_dec(out, u64::from(o));
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{check, scan};

    #[test]
    fn status_lines_are_kept_per_code_and_reason() {
        let line = |code, reason| {
            let mut out = Vec::new();
            status_line(&mut out, code, reason);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line(607, "Unwanted"), "SIP/2.0 607 Unwanted\r\n");
        assert_eq!(line(607, "Unwanted"), "SIP/2.0 607 Unwanted\r\n", "from the kept lines");
        assert_eq!(line(607, "Go Away"), "SIP/2.0 607 Go Away\r\n");
        assert_eq!(line(403, "Unwanted"), "SIP/2.0 403 Unwanted\r\n");
    }

    #[test]
    fn copies_dialog_headers_and_adds_tag() {
        let req = b"INVITE sip:b@10.0.0.2 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.9.9.9\r\nf: <sip:a@b>;tag=1\r\nt: <sip:b@c>\r\ni: x\r\nCSeq: 7 INVITE\r\nl: 0\r\n\r\n";
        let m = scan::scan(req).unwrap();
        let f = check::request(&m, check::top_via(&m).unwrap(), b"", 65535).unwrap();
        let src: SocketAddr = "10.0.0.1:5062".parse().unwrap();
        let out = String::from_utf8(build(
            &m,
            Some(&f.top),
            Transport::Udp,
            src,
            403,
            "Forbidden",
            b"abc",
            &[("Warning", "399 sipguard \"x\"")],
        ))
        .unwrap();
        assert!(out.starts_with("SIP/2.0 403 Forbidden\r\n"), "{out}");
        assert!(
            out.contains("\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=5062;received=10.0.0.1, SIP/2.0/UDP 10.9.9.9\r\n"),
            "Via lines as they came: {out}"
        );
        assert!(out.contains("To: <sip:b@c>;tag=abc\r\n"), "{out}");
        assert!(
            out.contains("Call-ID: x\r\nCSeq: 7 INVITE\r\nWarning: 399 sipguard \"x\"\r\nContent-Length: 0\r\n\r\n"),
            "{out}"
        );
    }
}
