//! The core proxy rules byte by byte over real sockets: what sipguard puts on the wire when
//! it forwards a request or relays a response, its local replies, TCP framing, IPv6, and
//! `check-config`. No screening here (no `[screening]`: every request is forwarded).
mod common;

use common::raw::sip;
use common::{NextHop, SipMsg, Sipguard, TcpSip, UdpPeer, check_config};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

const CONFIG: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}", "tcp:127.0.0.1:{tcp_port}"]
max_message_bytes = 4096

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[log]
level = "warn"
"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `bytes` without its line number `n` (0 = start line), CRLF included; and that line.
fn without_line(bytes: &[u8], n: usize) -> (String, String) {
    let t = text(bytes);
    let mut lines: Vec<&str> = t.split_inclusive("\r\n").collect();
    let line = if n < lines.len() { lines.remove(n).to_string() } else { String::new() };
    (lines.concat(), line)
}

/// A request that gets a local 483: Max-Forwards 0. `via` is the whole top Via value. It
/// carries what a PBX's request does (Contact, Allow, User-Agent), so a reply with a
/// Warning still fits within its size.
fn mf0(method: &str, id: &str, via: &str) -> Vec<u8> {
    sip(&format!(
        "{method} sip:+13125550199@127.0.0.1 SIP/2.0
         Via: {via}
         From: <sip:+12125550100@example.com>;tag=f-{id}
         To: <sip:+13125550199@example.com>
         Call-ID: {id}
         CSeq: 1 {method}
         Contact: <sip:+12125550100@127.0.0.1>
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE
         User-Agent: wire-test/1.0
         Max-Forwards: 0
         Content-Length: 0
        "
    ))
}

/// A request that is forwarded as it is.
fn options(id: &str, via: &str) -> Vec<u8> {
    sip(&format!(
        "OPTIONS sip:+13125550199@127.0.0.1 SIP/2.0
         Via: {via}
         From: <sip:+12125550100@example.com>;tag=f-{id}
         To: <sip:+13125550199@example.com>
         Call-ID: {id}
         CSeq: 1 OPTIONS
         Contact: <sip:+12125550100@127.0.0.1>
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE
         User-Agent: wire-test/1.0
         Max-Forwards: 70
         Content-Length: 0
        "
    ))
}

fn udp_via(peer: &UdpPeer, branch: &str) -> String {
    format!("SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-{branch};rport", peer.port())
}

#[test]
fn a_forwarded_invite_differs_only_in_via_and_max_forwards_and_responses_come_back() {
    let sg = Sipguard::start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let port = peer.port();
    // Compact forms, odd header case, an Identity header and a body: all must pass untouched.
    let original = text(&sip(
        "INVITE sip:+13125550199@198.51.100.7:5060;user=phone SIP/2.0
         v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-wire1;rport
         f: \"Alice\" <sip:+12125550100@example.com;user=phone>;tag=a1
         t: <sip:+13125550199@example.com;user=phone>
         i: wire1@192.0.2.10
         CSeq: 1 INVITE
         mAx-FoRwArDs: 70
         Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiJ9.eyJhdHRlc3QiOiJBIn0.c2lnbmF0dXJl;info=<https://cert.example.org/sp.pem>;alg=ES256;ppt=shaken
         X-MiXeD-CaSe:   spaced   value
         m: <sip:alice@192.0.2.10:5060>
         c: application/sdp
         l: {len}

         v=0
         o=alice 2890844526 2890844526 IN IP4 192.0.2.10
         s=-
         c=IN IP4 192.0.2.10
         t=0 0
         m=audio 49170 RTP/AVP 0
         a=rtpmap:0 PCMU/8000
        ",
    ));
    peer.send_to(original.as_bytes(), sg.udp_addr());
    let got = hop.wait_for(1, WAIT);
    let fwd = &got[0];
    assert_eq!(fwd.from, sg.udp_addr(), "sent from the listening socket");

    let (rest, our_via) = without_line(&fwd.bytes, 1);
    let prefix = format!("Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-sg", sg.ports().udp);
    assert!(
        our_via.starts_with(&prefix) && our_via.ends_with("\r\n"),
        "our Via first: `{our_via}`\n{}",
        text(&fwd.bytes)
    );
    let expected = original
        .replace("branch=z9hG4bK-wire1;rport", &format!("branch=z9hG4bK-wire1;rport={port};received=127.0.0.1"))
        .replace("mAx-FoRwArDs: 70", "mAx-FoRwArDs: 69");
    assert_ne!(expected, original);
    assert_eq!(rest, expected, "every other byte as sent");

    // The carrier answers with the Via stack it got; we strip ours and send to the client.
    let our_value = our_via.trim_end().trim_start_matches("Via: ").to_string();
    let msg = fwd.msg();
    let client_value = msg.all("via").get(1).map(|v| v.to_string()).unwrap_or_default();
    let ringing = format!(
        "SIP/2.0 180 Ringing\r\nVia: {our_value}\r\nv: {client_value}\r\nf: \"Alice\" <sip:+12125550100@example.com;user=phone>;tag=a1\r\nt: <sip:+13125550199@example.com;user=phone>;tag=b2\r\ni: wire1@192.0.2.10\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"
    );
    hop.send_to(ringing.as_bytes(), sg.udp_addr());
    let back = peer.expect("the 180", WAIT);
    assert_eq!(back.from, sg.udp_addr());
    let (expected_180, _) = without_line(ringing.as_bytes(), 1);
    assert_eq!(text(&back.bytes), expected_180);

    // Both Vias in one header line: only our value and its comma go.
    let sdp =
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {our_value} , {client_value}\r\nFrom: \"Alice\" <sip:+12125550100@example.com;user=phone>;tag=a1\r\nTo: <sip:+13125550199@example.com;user=phone>;tag=b2\r\nCall-ID: wire1@192.0.2.10\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@127.0.0.1:{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sg.ports().upstream,
        sdp.len()
    );
    hop.send_to(ok.as_bytes(), sg.udp_addr());
    let back = peer.expect("the 200", WAIT);
    assert_eq!(text(&back.bytes), ok.replace(&format!("Via: {our_value} , "), "Via: "));
}

#[test]
fn max_forwards_zero_gets_483_retransmission_same_reply_and_its_ack_is_absorbed() {
    let sg = Sipguard::start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let via = udp_via(&peer, "mf0");
    let invite = mf0("INVITE", "mf0@test", &via);
    peer.send_to(&invite, sg.udp_addr());
    let first = peer.expect("483", WAIT);
    let reply = first.msg();
    assert_eq!(reply.start, "SIP/2.0 483 Too Many Hops", "{reply:?}");
    assert_eq!(first.from, sg.udp_addr());
    assert_eq!(
        reply.header("via"),
        Some(format!("{via}={};received=127.0.0.1", peer.port()).as_str()),
        "received and rport added for the client"
    );
    assert!(reply.header("warning").is_some(), "{reply:?}");

    peer.send_to(&invite, sg.udp_addr());
    let again = peer.expect("the 483 again", WAIT);
    assert_eq!(text(&again.bytes), text(&first.bytes), "stateless, byte-identical");

    let to = reply.header("to").unwrap_or_default();
    assert!(to.contains(";tag="), "{reply:?}");
    let ack = |via: &str| {
        sip(&format!(
            "ACK sip:+13125550199@127.0.0.1 SIP/2.0
             Via: {via}
             From: <sip:+12125550100@example.com>;tag=f-mf0@test
             To: {to}
             Call-ID: mf0@test
             CSeq: 1 ACK
             Max-Forwards: 70
             Content-Length: 0
            "
        ))
    };
    peer.send_to(&ack(&via), sg.udp_addr());
    // Also when the UAC gives the ACK a branch of its own (RFC 3261 §17.1.1.3 says not to;
    // SIPp's [branch] does): our To tag is what proves it acknowledges our reply.
    peer.send_to(&ack(&udp_via(&peer, "mf0-ack")), sg.udp_addr());
    // One socket, one thread, in order: had an ACK been forwarded it would arrive first.
    peer.send_to(&options("after-ack", &udp_via(&peer, "after")), sg.udp_addr());
    let got = hop.wait_for(1, WAIT);
    assert_eq!(got[0].msg().method(), Some("OPTIONS"), "{:?}", got[0].msg());
    assert!(peer.recv(Duration::from_millis(50)).is_none(), "the ACK gets no reply");
}

#[test]
fn local_replies_for_bad_requests() {
    let sg = Sipguard::start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let ask = |bytes: &[u8]| -> SipMsg {
        peer.send_to(bytes, sg.udp_addr());
        let reply = peer.expect("a local reply", WAIT);
        assert!(reply.bytes.len() <= bytes.len(), "a {}-byte reply to {} bytes", reply.bytes.len(), bytes.len());
        reply.msg()
    };

    let mut pr = text(&options("pr@test", &udp_via(&peer, "pr")));
    pr = pr.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nProxy-Require: foo, bar\r\n");
    let r = ask(pr.as_bytes());
    assert_eq!(r.start, "SIP/2.0 420 Bad Extension", "{r:?}");
    assert_eq!(r.header("unsupported"), Some("foo,bar"), "{r:?}");

    let no_call_id = text(&options("nocid@test", &udp_via(&peer, "nocid"))).replace("Call-ID: nocid@test\r\n", "");
    let r = ask(no_call_id.as_bytes());
    assert_eq!(r.status(), Some(400), "{r:?}");
    let warning = r.header("warning").unwrap_or_default();
    assert!(warning.starts_with("399 ") && warning.contains("Call-ID"), "{r:?}");

    // Garbage gets no reply; the request after it is answered (and is the first reply).
    peer.send_to(b"\x00\xff\xfegarbage \x01\r\n\r\nnot sip at all", sg.udp_addr());
    peer.send_to(b"INVITE\r\n\r\n", sg.udp_addr());
    let r = ask(&mf0("OPTIONS", "alive@test", &udp_via(&peer, "alive")));
    assert_eq!((r.status(), r.header("call-id")), (Some(483), Some("alive@test")), "{r:?}");
    assert!(hop.received().is_empty(), "{:?}", hop.received());
}

#[test]
fn non_sip_request_uri_without_upstream_gets_416() {
    let sg =
        Sipguard::start(&CONFIG.replace("[upstream]\nuri = \"sip:127.0.0.1:{upstream_port};transport=udp\"\n", ""));
    let peer = UdpPeer::bind();
    let req = text(&options("tel@test", &udp_via(&peer, "tel")))
        .replace("OPTIONS sip:+13125550199@127.0.0.1 SIP/2.0", "OPTIONS tel:+13125550199 SIP/2.0");
    peer.send_to(req.as_bytes(), sg.udp_addr());
    let r = peer.expect("416", WAIT).msg();
    assert_eq!(r.start, "SIP/2.0 416 Unsupported URI Scheme", "{r:?}");
}

fn tcp_via(c: &TcpSip, branch: &str) -> String {
    format!("SIP/2.0/TCP 127.0.0.1:{};branch=z9hG4bK-{branch};rport", c.local_addr().port())
}

#[test]
fn tcp_forwards_relays_and_replies_on_the_same_connection() {
    let sg = Sipguard::start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let mut c = TcpSip::connect(sg.tcp_addr());
    let via = tcp_via(&c, "tcp1");
    c.send(&options("tcp1@test", &via));
    let got = hop.wait_for(1, WAIT);
    let fwd = got[0].msg();
    let vias = fwd.all("via");
    assert!(vias.first().is_some_and(|v| v.starts_with("SIP/2.0/UDP 127.0.0.1:")), "{fwd:?}");
    let client = format!("{via}={};received=127.0.0.1", c.local_addr().port());
    assert_eq!(vias.get(1).copied(), Some(client.as_str()), "{fwd:?}");

    // The 200 goes back over the connection the request came on.
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nVia: {client}\r\nFrom: <sip:+12125550100@example.com>;tag=f-tcp1@test\r\nTo: <sip:+13125550199@example.com>;tag=x\r\nCall-ID: tcp1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        vias[0]
    );
    hop.send_to(ok.as_bytes(), sg.udp_addr());
    let back = c.recv(WAIT).map(|b| text(&b)).unwrap_or_default();
    assert_eq!(back, without_line(ok.as_bytes(), 1).0);

    // A local reply comes back on the connection too.
    c.send(&mf0("OPTIONS", "tcp2@test", &tcp_via(&c, "tcp2")));
    let r = c.recv(WAIT).map(|b| SipMsg::parse(&b)).unwrap_or_default();
    assert_eq!((r.status(), r.header("call-id")), (Some(483), Some("tcp2@test")));

    // Two messages in one write: both answered, in order.
    let mut two = mf0("OPTIONS", "tcp3@test", &tcp_via(&c, "tcp3"));
    two.extend(mf0("OPTIONS", "tcp4@test", &tcp_via(&c, "tcp4")));
    c.send(&two);
    for id in ["tcp3@test", "tcp4@test"] {
        let r = c.recv(WAIT).map(|b| SipMsg::parse(&b)).unwrap_or_default();
        assert_eq!((r.status(), r.header("call-id")), (Some(483), Some(id)), "{r:?}");
    }

    // One message in two writes: nothing until it is whole, then the reply.
    let split = mf0("OPTIONS", "tcp5@test", &tcp_via(&c, "tcp5"));
    let (head, tail) = split.split_at(split.len() / 2);
    c.send(head);
    assert!(c.recv(Duration::from_millis(200)).is_none(), "answered half a message");
    c.send(tail);
    let r = c.recv(WAIT).map(|b| SipMsg::parse(&b)).unwrap_or_default();
    assert_eq!((r.status(), r.header("call-id")), (Some(483), Some("tcp5@test")));
    assert_eq!(hop.received().len(), 1, "only the first request was forwarded");
}

#[test]
fn an_oversized_tcp_message_closes_the_connection() {
    let sg = Sipguard::start(CONFIG);
    let mut c = TcpSip::connect(sg.tcp_addr());
    let mut big = format!("OPTIONS sip:+13125550199@127.0.0.1 SIP/2.0\r\nVia: {}\r\n", tcp_via(&c, "big"));
    // Over max_message_bytes (4096) of headers, no end in sight.
    while big.len() <= 5000 {
        big.push_str("X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    c.send(big.as_bytes());
    assert!(c.closed_within(WAIT), "connection still open");
    // The proxy itself carries on.
    let mut c2 = TcpSip::connect(sg.tcp_addr());
    c2.send(&mf0("OPTIONS", "after-big", &tcp_via(&c2, "after")));
    let r = c2.recv(WAIT).map(|b| SipMsg::parse(&b)).unwrap_or_default();
    assert_eq!(r.status(), Some(483), "{r:?}");
}

#[test]
fn ipv6_request_forwarded_and_response_relayed() {
    let Ok(peer) = UdpSocket::bind("[::1]:0") else {
        eprintln!("skipped: ::1 not available");
        return;
    };
    let sg = Sipguard::start(
        &CONFIG
            .replace(
                "listen = [\"udp:127.0.0.1:{udp_port}\", \"tcp:127.0.0.1:{tcp_port}\"]",
                "listen = [\"udp:[::1]:{udp_port}\"]",
            )
            .replace("sip:127.0.0.1:{upstream_port}", "sip:[::1]:{upstream_port}"),
    );
    let proxy: SocketAddr = format!("[::1]:{}", sg.ports().udp).parse().unwrap_or_else(|e| panic!("{e}"));
    let hop = UdpSocket::bind(("::1", sg.ports().upstream)).unwrap_or_else(|e| panic!("{e}"));
    let _ = hop.set_read_timeout(Some(WAIT));
    let _ = peer.set_read_timeout(Some(WAIT));
    let port = peer.local_addr().map(|a| a.port()).unwrap_or_default();
    let via = format!("SIP/2.0/UDP [::1]:{port};branch=z9hG4bK-v6;rport");
    let req = text(&options("v6@test", &via));
    peer.send_to(req.as_bytes(), proxy).unwrap_or_else(|e| panic!("{e}"));

    let mut buf = vec![0u8; 65536];
    let (n, from) = hop.recv_from(&mut buf).unwrap_or_else(|e| panic!("next hop: {e}"));
    assert_eq!(from, proxy);
    let fwd = SipMsg::parse(&buf[..n]);
    let vias = fwd.all("via");
    let ours = format!("SIP/2.0/UDP [::1]:{};branch=z9hG4bK-sg", sg.ports().udp);
    assert!(vias.first().is_some_and(|v| v.starts_with(&ours)), "{fwd:?}");
    assert_eq!(fwd.header("max-forwards"), Some("69"), "{fwd:?}");

    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nVia: {}\r\nFrom: <sip:+12125550100@example.com>;tag=f-v6@test\r\nTo: <sip:+13125550199@example.com>;tag=y\r\nCall-ID: v6@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        vias[0],
        vias.get(1).copied().unwrap_or_default()
    );
    hop.send_to(ok.as_bytes(), proxy).unwrap_or_else(|e| panic!("{e}"));
    let (n, _) = peer.recv_from(&mut buf).unwrap_or_else(|e| panic!("client: {e}"));
    let back = SipMsg::parse(&buf[..n]);
    assert_eq!(back.status(), Some(200), "{back:?}");
    assert_eq!(back.all("via").len(), 1, "{back:?}");
}

#[test]
fn check_config_names_every_problem_and_accepts_the_example() {
    // Line numbers matter: the template starts on line 1.
    let bad = "[server]
listen = [\"udp:127.0.0.1:notaport\"]
max_message_bytes = 0
[upstream]
uri = \"sip:carrier.example.com:5060\"
[log]
level = \"loud\"
[screening]
caller_id_numbers = \"owned.csv\"
quota_tz = \"Mars/Olympus\"
[screening.quota]
per_day = 0
";
    let csv = "account,number\nacct0001,+12125550100\nacct0001,notanumber\n";
    let (code, out, dir) = check_config(bad, &[("owned.csv", csv)]);
    assert_eq!(code, Some(2), "{out}");
    let file = dir.path().join("sipguard.toml").display().to_string();
    for line in [2, 3, 5, 7, 10, 12] {
        assert!(out.contains(&format!("{file}:{line}: ")), "no {file}:{line} in:\n{out}");
    }
    let csv_file = dir.path().join("owned.csv").display().to_string();
    assert!(out.contains(&format!("{csv_file}:3: ")), "no {csv_file}:3 in:\n{out}");

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", common::BIN));
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
}
