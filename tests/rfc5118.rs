//! RFC 5118 (IPv6 torture tests for SIP), section by section, written here from the RFC's
//! descriptions: valid IPv6 references are forwarded, invalid ones are refused with 400
//! even when `[upstream]` decides the next hop (the Request-URI is still checked).
use sipguard::config::server::{Transport, parse_upstream};
use sipguard::proxy::{Action, Inbound, Proxy, ProxyConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

fn proxy(upstream: bool) -> Proxy {
    let mut c = ProxyConfig::new("[2001:db8::100]:5060", vec!["[2001:db8::100]:5060".parse().unwrap()]);
    if upstream {
        c.upstream = Some(parse_upstream("sip:[2001:db8::99]:5060").unwrap());
    }
    Proxy::new(c, Arc::new(sipguard::screen::PassThrough))
}

fn request(ruri: &str, via: &str, body: &str) -> Vec<u8> {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@[2001:db8::1]>;tag=a\r\n\
To: <{ruri}>\r\nCall-ID: v6@test\r\nCSeq: 1 OPTIONS\r\nContact: <sip:alice@[2001:db8::1]:5062>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const VIA: &str = "SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bKv6;rport";

/// The destination the request was forwarded to, or the code of the reply.
fn outcome(p: &mut Proxy, msg: &[u8]) -> Result<(SocketAddr, String), u16> {
    let mut out = Vec::new();
    let from = Inbound { transport: Transport::Udp, src: "[2001:db8::1]:5062".parse().unwrap() };
    p.handle(SystemTime::now(), from, msg, &mut out);
    match out.first() {
        Some(Action::Send { dest, bytes, .. }) if !bytes.starts_with(b"SIP/2.0 ") => {
            Ok((*dest, String::from_utf8_lossy(bytes).into_owned()))
        }
        Some(Action::Send { bytes, .. }) => Err(std::str::from_utf8(&bytes[8..11]).unwrap().parse().unwrap()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn s4_1_a_valid_ipv6_reference_is_forwarded_there() {
    let (dest, fwd) = outcome(&mut proxy(false), &request("sip:bob@[2001:db8::10]", VIA, "")).unwrap();
    assert_eq!(dest, "[2001:db8::10]:5060".parse().unwrap());
    assert!(fwd.contains("\r\nVia: SIP/2.0/UDP [2001:db8::100]:5060;branch=z9hG4bK-sg"), "{fwd}");
    // received for an IPv6 source is the address without brackets (RFC 5118 §4.5).
    assert!(fwd.contains(";rport=5062;received=2001:db8::1\r\n"), "{fwd}");
}

#[test]
fn s4_2_an_unbracketed_ipv6_request_uri_is_refused_even_with_an_upstream() {
    for upstream in [false, true] {
        let r = outcome(&mut proxy(upstream), &request("sip:bob@2001:db8::10", VIA, ""));
        assert_eq!(r.map(|_| ()), Err(400), "upstream: {upstream}");
    }
    for bad in ["sip:bob@[2001:db8::10", "sip:bob@[2001:db8::g]", "sip:bob@[2001:db8::10]x", "sip:bob@[10.0.0.1]"] {
        assert_eq!(outcome(&mut proxy(true), &request(bad, VIA, "")).map(|_| ()), Err(400), "{bad}");
    }
}

#[test]
fn s4_3_and_4_4_ports_inside_and_after_the_brackets() {
    // Inside the brackets, ":5070" is part of the address (2001:db8::10:5070), port 5060.
    let (dest, _) = outcome(&mut proxy(false), &request("sip:bob@[2001:db8::10:5070]", VIA, "")).unwrap();
    assert_eq!(dest, "[2001:db8::10:5070]:5060".parse().unwrap());
    let (dest, _) = outcome(&mut proxy(false), &request("sip:bob@[2001:db8::10]:5070", VIA, "")).unwrap();
    assert_eq!(dest, "[2001:db8::10]:5070".parse().unwrap());
}

#[test]
fn s4_5_bracketed_received_and_via_references() {
    // received with brackets, as RFC 5118 says a receiver must accept; we overwrite it.
    let via = "SIP/2.0/UDP [2001:db8::9:1]:5062;received=[2001:db8::9:255];branch=z9hG4bKv6b;rport";
    let (_, fwd) = outcome(&mut proxy(true), &request("sip:bob@[2001:db8::10]", via, "")).unwrap();
    assert!(fwd.contains(";received=2001:db8::1;branch=z9hG4bKv6b;rport=5062\r\n"), "{fwd}");
    // A Via sent-by that is not an IPv6 reference: no reply can be sent, dropped.
    let mut out = Vec::new();
    let bad = request("sip:bob@[2001:db8::10]", "SIP/2.0/UDP [2001:db8::zz]:5062;branch=z9hG4bKx", "");
    proxy(true).handle(
        SystemTime::now(),
        Inbound { transport: Transport::Udp, src: "[2001:db8::1]:5062".parse().unwrap() },
        &bad,
        &mut out,
    );
    assert!(matches!(out.first(), Some(Action::Drop(_))), "{out:?}");
}

#[test]
fn s4_6_and_4_8_ipv6_in_the_sdp_body_passes_untouched() {
    let sdp = "v=0\r\no=bob 2808844564 2808844564 IN IP6 2001:db8::10\r\ns=-\r\nc=IN IP6 2001:db8::10\r\nt=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\nc=IN IP4 192.0.2.10\r\nm=audio 49174 RTP/AVP 0\r\n";
    let (_, fwd) = outcome(&mut proxy(true), &request("sip:bob@[2001:db8::10]", VIA, sdp)).unwrap();
    assert!(fwd.ends_with(sdp), "{fwd}");
}

#[test]
fn s4_7_mixed_ipv4_and_ipv6_vias() {
    let via = format!("{VIA}, SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKv4");
    let (_, fwd) = outcome(&mut proxy(true), &request("sip:bob@[2001:db8::10]", &via, "")).unwrap();
    assert!(fwd.contains(", SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKv4\r\n"), "{fwd}");
}

#[test]
fn s4_9_and_4_10_ipv4_mapped_and_mixed_references() {
    let (dest, _) = outcome(&mut proxy(false), &request("sip:bob@[::ffff:192.0.2.10]", VIA, "")).unwrap();
    assert_eq!(dest, "[::ffff:192.0.2.10]:5060".parse().unwrap());
    let (dest, _) = outcome(&mut proxy(false), &request("sip:bob@[2001:db8::192.0.2.1]:5070", VIA, "")).unwrap();
    assert_eq!(dest, "[2001:db8::c000:201]:5070".parse().unwrap());
}
