//! Edge trust through the real binary over real sockets: what a hostile dialer or a spoofed
//! source sends (a To tag, a Route, a forged response, a made-up received/rport) and what
//! reaches the wire because of it. Peers other than the proxy's own customers and upstream
//! sit on 127.0.0.2 and 127.0.0.3, outside every network the config allows.
mod common;

use common::raw::sip;
use common::{NextHop, SipMsg, Sipguard, Sipp, TcpSip, UdpPeer, check_config, require_sipp};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);
/// How long a negative check waits for something that must not happen.
const QUIET: Duration = Duration::from_millis(500);

/// acct0001 (X-Account, trusted from 127.0.0.1) owns +12125550100; unknown accounts are
/// refused; one call per callee per day; our Record-Route on; the carrier on 127.0.0.1.
const CONFIG: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}", "tcp:127.0.0.1:{tcp_port}"]
record_route = true

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[log]
level = "warn"

[screening]
mode = "enforce"
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
unknown_account = "reject"
caller_id_numbers = "owned.csv"

[screening.quota]
per_callee_per_day = 1
"#;

const OWNED: &str = "account,number\nacct0001,+12125550100\n";

fn start(config: &str) -> Sipguard {
    Sipguard::start_with(config, common::Ports::allocate(), &[("owned.csv", OWNED)])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An INVITE from `peer`; `extra` (CRLF-separated header lines) goes before Content-Length.
fn invite(peer: &UdpPeer, id: &str, callee: &str, extra: &str) -> Vec<u8> {
    let extra = if extra.is_empty() { String::new() } else { format!("{extra}\r\n") };
    format!(
        "INVITE sip:{callee}@127.0.0.1;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id};rport\r\n\
From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f-{id}\r\n\
To: <sip:{callee}@127.0.0.1;user=phone>\r\n\
Call-ID: {id}\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:dialer@127.0.0.1:{port}>\r\n\
{extra}Content-Length: 0\r\n\r\n",
        port = peer.port()
    )
    .into_bytes()
}

fn response(code: &str, req: &SipMsg, to_tag: &str) -> Vec<u8> {
    let vias: String = req.all("via").iter().map(|v| format!("Via: {v}\r\n")).collect();
    let rr: String = req.all("record-route").iter().map(|v| format!("Record-Route: {v}\r\n")).collect();
    format!(
        "SIP/2.0 {code}\r\n{vias}{rr}From: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:carrier@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n",
        req.header("from").unwrap_or_default(),
        req.header("to").unwrap_or_default(),
        req.header("call-id").unwrap_or_default(),
        req.header("cseq").unwrap_or_default(),
    )
    .into_bytes()
}

#[test]
fn a_to_tag_does_not_skip_screening_and_a_proven_reinvite_is_not_charged() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    // No account: 403. The same INVITE with a To tag: 403 too, nothing forwarded.
    let unknown = invite(&peer, "tt1", "+13125550199", "");
    peer.send_to(&unknown, sg.udp_addr());
    assert_eq!(peer.expect("403", WAIT).msg().status(), Some(403));
    let tagged = text(&unknown).replace("user=phone>\r\nCall-ID", "user=phone>;tag=anything\r\nCall-ID");
    assert_ne!(tagged, text(&unknown));
    peer.send_to(tagged.replace("tt1", "tt2").as_bytes(), sg.udp_addr());
    let r = peer.expect("403 for the To-tagged INVITE", WAIT).msg();
    assert_eq!(r.status(), Some(403), "{r:?}");

    // A screened call: forwarded with our Record-Route.
    let call = invite(&peer, "tt3", "+13125550199", "X-Account: acct0001");
    peer.send_to(&call, sg.udp_addr());
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    let rr = fwd.header("record-route").unwrap_or_default().to_string();
    assert!(rr.contains(";sg="), "{fwd:?}");
    assert!(fwd.header("x-account").is_none(), "the account header is ours: {fwd:?}");
    // A re-INVITE bringing our Route back passes (the callee was called once today already,
    // so a new screening would answer 403 quota).
    let reinvite = text(&call)
        .replace("z9hG4bK-tt3", "z9hG4bK-tt3re")
        .replace("CSeq: 1 INVITE", &format!("CSeq: 2 INVITE\r\nRoute: {rr}"))
        .replace("user=phone>\r\nCall-ID", "user=phone>;tag=carrier1\r\nCall-ID");
    peer.send_to(reinvite.as_bytes(), sg.udp_addr());
    let got = hop.wait_for(2, WAIT);
    assert_eq!(got[1].msg().header("cseq"), Some("2 INVITE"));
    assert!(got[1].msg().header("route").is_none(), "our Route popped: {:?}", got[1].msg());
    // The same re-INVITE with the proof altered is screened: a second call to that callee.
    let forged = reinvite.replace(";sg=", ";sg=0").replace("tt3re", "tt3forged");
    peer.send_to(forged.as_bytes(), sg.udp_addr());
    let r = peer.expect("403 quota", WAIT).msg();
    assert_eq!(r.status(), Some(403), "{r:?}");
    assert_eq!(hop.received().len(), 2);
}

#[test]
fn a_407_retry_is_the_same_call_and_an_unrouted_call_costs_nothing() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    // Refused by the relay policy (Route to 127.0.0.2): no charge.
    let routed = invite(&peer, "r1", "+13125550142", "X-Account: acct0001\r\nRoute: <sip:127.0.0.2:5060;lr>");
    peer.send_to(&routed, sg.udp_addr());
    let r = peer.expect("403 Relaying Denied", WAIT).msg();
    assert_eq!(r.start, "SIP/2.0 403 Relaying Denied", "{r:?}");
    // So the callee's one call today is still there.
    let first = invite(&peer, "r2", "+13125550142", "X-Account: acct0001");
    peer.send_to(&first, sg.udp_addr());
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    hop.send_to(&response("407 Proxy Authentication Required", &fwd, "t407"), sg.udp_addr());
    assert_eq!(peer.expect("407", WAIT).msg().status(), Some(407));
    let retry = text(&first).replace("z9hG4bK-r2", "z9hG4bK-r2b").replace(
        "CSeq: 1 INVITE",
        "CSeq: 2 INVITE\r\nProxy-Authorization: Digest username=\"acct0001\", response=\"0\"",
    );
    peer.send_to(retry.as_bytes(), sg.udp_addr());
    let got = hop.wait_for(2, WAIT);
    assert_eq!(got[1].msg().header("cseq"), Some("2 INVITE"), "the retry went through");
    // A new call to that callee is over its quota.
    peer.send_to(&invite(&peer, "r3", "+13125550142", "X-Account: acct0001"), sg.udp_addr());
    assert_eq!(peer.expect("403 quota", WAIT).msg().status(), Some(403));
}

#[test]
fn nothing_is_relayed_to_a_network_the_operator_did_not_allow() {
    let sg = start(CONFIG);
    let victim = UdpSocket::bind("127.0.0.2:0").unwrap_or_else(|e| panic!("bind 127.0.0.2: {e}"));
    let target = victim.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let peer = UdpPeer::bind();
    let message = sip(&format!(
        "MESSAGE sip:x@127.0.0.1 SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-relay;rport
         Route: <sip:{target};lr>
         From: <sip:a@127.0.0.1>;tag=1
         To: <sip:x@127.0.0.1>
         Call-ID: relay1
         CSeq: 1 MESSAGE
         Max-Forwards: 70
         Content-Length: 5

         hello
        ",
        peer.port()
    ));
    peer.send_to(&message, sg.udp_addr());
    let r = peer.expect("403", WAIT).msg();
    assert_eq!(r.start, "SIP/2.0 403 Relaying Denied", "{r:?}");
    let _ = victim.set_read_timeout(Some(QUIET));
    let mut buf = [0u8; 2048];
    assert!(victim.recv_from(&mut buf).is_err(), "the MESSAGE reached {target}");
}

#[test]
fn forged_responses_go_nowhere_and_open_no_connection() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let listener = TcpListener::bind("127.0.0.3:0").unwrap_or_else(|e| panic!("bind 127.0.0.3: {e}"));
    let tcp_target = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let victim = UdpSocket::bind("127.0.0.2:0").unwrap_or_else(|e| panic!("{e}"));
    let udp_target = victim.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let ours = format!("SIP/2.0/UDP 127.0.0.1:{}", sg.ports().udp);
    let forged = |branch: &str, next: String| {
        format!(
            "SIP/2.0 200 OK\r\nVia: {ours};branch={branch}\r\nVia: {next}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f1\r\nCSeq: 1 INVITE\r\nContent-Length: 11\r\n\r\nAUTH secret"
        )
    };
    // The attack as reported: our prefix, a TCP next hop.
    hop.send_to(
        forged("z9hG4bK-sgforged", format!("SIP/2.0/TCP {tcp_target};branch=z9hG4bKx")).as_bytes(),
        sg.udp_addr(),
    );
    // A real branch of ours, lifted from a forwarded request, with another next Via.
    let peer = UdpPeer::bind();
    peer.send_to(&invite(&peer, "fr1", "+13125550143", "X-Account: acct0001"), sg.udp_addr());
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    let our_branch = fwd.all("via")[0].split("branch=").nth(1).unwrap_or_default().to_string();
    for next in [
        format!("SIP/2.0/TCP {tcp_target};branch=z9hG4bKx"),
        format!("SIP/2.0/UDP {udp_target};branch=z9hG4bKx"),
        format!(
            "SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-fr1;received=127.0.0.2;rport={}",
            peer.port(),
            udp_target.port()
        ),
    ] {
        hop.send_to(forged(&our_branch, next).as_bytes(), sg.udp_addr());
    }
    // The genuine response still reaches the dialer: the proxy read all of the above first.
    hop.send_to(&response("180 Ringing", &fwd, "c1"), sg.udp_addr());
    assert_eq!(peer.expect("the real 180", WAIT).msg().status(), Some(180));
    let _ = listener.set_nonblocking(true);
    let deadline = Instant::now() + QUIET;
    while Instant::now() < deadline {
        assert!(listener.accept().is_err(), "sipguard connected to {tcp_target} for a forged response");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = victim.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 2048];
    assert!(victim.recv_from(&mut buf).is_err(), "a forged response reached {udp_target}");
    assert!(peer.recv(Duration::from_millis(50)).is_none(), "a forged response reached the dialer");
}

#[test]
fn received_and_rport_are_the_real_source_whatever_the_client_wrote() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let lying = text(&(invite(&peer, "rx1", "+13125550144", "X-Account: acct0001")))
        .replace("z9hG4bK-rx1;rport", "z9hG4bK-rx1;received=127.0.0.2;rport=15098");
    peer.send_to(lying.as_bytes(), sg.udp_addr());
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    let client_via = fwd.all("via")[1].to_string();
    assert_eq!(
        client_via,
        format!("SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-rx1;received=127.0.0.1;rport={}", peer.port(), peer.port())
    );
    hop.send_to(&response("200 OK", &fwd, "c2"), sg.udp_addr());
    assert_eq!(peer.expect("the 200 at the real source", WAIT).msg().status(), Some(200));
}

#[test]
fn a_tcp_client_without_rport_gets_its_responses_on_its_connection() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let mut c = TcpSip::connect(sg.tcp_addr());
    // The sent-by port is the listening port the client would like; the connection's
    // port is an ephemeral one, and the client asked for no rport.
    let req = sip("INVITE sip:+13125550145@127.0.0.1;user=phone SIP/2.0
         Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-tcp1
         From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f-tcp1
         To: <sip:+13125550145@127.0.0.1;user=phone>
         Call-ID: tcp1
         CSeq: 1 INVITE
         Max-Forwards: 70
         X-Account: acct0001
         Content-Length: 0
        ");
    c.send(&req);
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    let port = c.local_addr().port();
    assert_eq!(
        fwd.all("via")[1],
        format!("SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-tcp1;rport={port};received=127.0.0.1")
    );
    hop.send_to(&response("180 Ringing", &fwd, "c3"), sg.udp_addr());
    let back = c.recv(WAIT).map(|b| SipMsg::parse(&b)).unwrap_or_default();
    assert_eq!(back.status(), Some(180), "{back:?}");
}

#[test]
fn the_cancel_of_an_authorised_invite_gets_its_branch() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let inv = invite(
        &peer,
        "cx1",
        "+13125550146",
        "X-Account: acct0001\r\nProxy-Authorization: Digest username=\"acct0001\", response=\"0\"",
    );
    peer.send_to(&inv, sg.udp_addr());
    let cancel = sip(&format!(
        "CANCEL sip:+13125550146@127.0.0.1;user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-cx1;rport
         From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f-cx1
         To: <sip:+13125550146@127.0.0.1;user=phone>
         Call-ID: cx1
         CSeq: 1 CANCEL
         Max-Forwards: 70
         Content-Length: 0
        ",
        peer.port()
    ));
    peer.send_to(&cancel, sg.udp_addr());
    let got = hop.wait_for(2, WAIT);
    let branch = |m: &SipMsg| m.all("via")[0].split("branch=").nth(1).unwrap_or_default().to_string();
    assert_eq!(got[1].msg().method(), Some("CANCEL"));
    assert_eq!(branch(&got[0].msg()), branch(&got[1].msg()), "the carrier must match the CANCEL to its INVITE");
}

#[test]
fn the_carriers_bye_reaches_the_dialer_and_untrusted_pai_is_removed() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let dialer = UdpPeer::bind();
    let inv = invite(
        &dialer,
        "bye1",
        "+13125550147",
        "X-Account: acct0001\r\nP-Asserted-Identity: <sip:+12125550100@127.0.0.1;user=phone>",
    );
    dialer.send_to(&inv, sg.udp_addr());
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    assert!(fwd.header("p-asserted-identity").is_some(), "PAI from a trusted source stays: {fwd:?}");
    let rr = fwd.header("record-route").unwrap_or_default().to_string();
    hop.send_to(&response("200 OK", &fwd, "c4"), sg.udp_addr());
    assert_eq!(dialer.expect("200", WAIT).msg().status(), Some(200));
    let bye = sip(&format!(
        "BYE sip:dialer@127.0.0.1:{} SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-cbye
         Route: {rr}
         From: <sip:+13125550147@127.0.0.1;user=phone>;tag=c4
         To: <sip:+12125550100@127.0.0.1;user=phone>;tag=f-bye1
         Call-ID: bye1
         CSeq: 1 BYE
         Max-Forwards: 70
         Content-Length: 0
        ",
        dialer.port(),
        sg.ports().upstream
    ));
    hop.send_to(&bye, sg.udp_addr());
    let got = dialer.expect("the carrier's BYE at the dialer", WAIT).msg();
    assert_eq!(got.method(), Some("BYE"), "{got:?}");
    assert!(got.header("route").is_none(), "{got:?}");
}

#[test]
fn pai_from_outside_the_trust_boundary_is_removed() {
    // The dialer sits on 127.0.0.2, an account network that is not a trusted source.
    let config = CONFIG
        .replace("unknown_account = \"reject\"", "unknown_account = \"forward\"")
        .replace("[screening.quota]", "[[account]]\nid = \"edge\"\nsources = [\"127.0.0.2/32\"]\ncaller_ids = [\"+12125550100\"]\n\n[screening.quota]");
    let sg = start(&config);
    let hop = NextHop::bind(sg.ports().upstream);
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap_or_else(|e| panic!("{e}"));
    let port = sock.local_addr().map(|a| a.port()).unwrap_or_default();
    let req = sip(&format!(
        "INVITE sip:+13125550148@127.0.0.1;user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK-pai1;rport
         From: <sip:+12125550100@127.0.0.2;user=phone>;tag=f-pai1
         To: <sip:+13125550148@127.0.0.1;user=phone>
         Call-ID: pai1
         CSeq: 1 INVITE
         Max-Forwards: 70
         P-Asserted-Identity: <sip:+12125550100@127.0.0.2;user=phone>
         X-Account: acct0001
         Content-Length: 0
        "
    ));
    sock.send_to(&req, sg.udp_addr()).unwrap_or_else(|e| panic!("{e}"));
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    assert!(fwd.header("p-asserted-identity").is_none(), "{fwd:?}");
    assert!(fwd.header("x-account").is_none(), "{fwd:?}");
}

#[test]
fn a_response_is_cut_at_its_content_length() {
    let sg = start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    peer.send_to(&invite(&peer, "cl1", "+13125550149", "X-Account: acct0001"), sg.udp_addr());
    let fwd = hop.wait_for(1, WAIT)[0].msg();
    let mut resp = response("180 Ringing", &fwd, "c5");
    let genuine_len = resp.len();
    resp.extend_from_slice(b"INVITE sip:victim@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9\r\n\r\n");
    hop.send_to(&resp, sg.udp_addr());
    let back = peer.expect("180", WAIT);
    let ours = fwd.all("via")[0].len() + "Via: \r\n".len();
    assert_eq!(back.bytes.len(), genuine_len - ours, "{}", text(&back.bytes));
}

#[test]
fn check_config_refuses_a_wildcard_listener_without_advertise_and_warns_of_an_open_relay() {
    let (code, out, dir) = check_config("[server]\nlisten = [\"udp:0.0.0.0:{udp_port}\"]\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    let file = dir.path().join("sipguard.toml").display().to_string();
    assert!(out.contains(&format!("{file}:2: server.listen `udp:0.0.0.0:")), "{out}");
    assert!(out.contains("set server.advertise"), "{out}");
    let (code, out, _) = check_config("[server]\nlisten = [\"udp:127.0.0.1:{udp_port}\"]\n", &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: open relay"), "{out}");
}

#[test]
fn an_ipv6_listener_gets_an_ipv6_via() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: ::1 not available");
        return;
    }
    let sg = start(
        &CONFIG
            .replace(
                "listen = [\"udp:127.0.0.1:{udp_port}\", \"tcp:127.0.0.1:{tcp_port}\"]",
                "listen = [\"udp:127.0.0.1:{udp_port}\", \"udp:[::1]:{udp_port}\"]",
            )
            .replace("sip:127.0.0.1:{upstream_port}", "sip:[::1]:{upstream_port}")
            .replace("trusted_sources = [\"127.0.0.1/32\"]", "trusted_sources = [\"127.0.0.1/32\", \"::1/128\"]"),
    );
    let hop = UdpSocket::bind(("::1", sg.ports().upstream)).unwrap_or_else(|e| panic!("{e}"));
    let _ = hop.set_read_timeout(Some(WAIT));
    let peer = UdpPeer::bind();
    // An IPv4 dialer, an IPv6 carrier: our Via towards the carrier is IPv6 (RFC 5118).
    peer.send_to(&invite(&peer, "v6a", "+13125550150", "X-Account: acct0001"), sg.udp_addr());
    let mut buf = vec![0u8; 65536];
    let (n, from) = hop.recv_from(&mut buf).unwrap_or_else(|e| panic!("carrier: {e}"));
    let v6: SocketAddr = format!("[::1]:{}", sg.ports().udp).parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from, v6);
    let fwd = SipMsg::parse(&buf[..n]);
    assert!(
        fwd.all("via")[0].starts_with(&format!("SIP/2.0/UDP [::1]:{};branch=z9hG4bK-sg", sg.ports().udp)),
        "{fwd:?}"
    );
    let rr = fwd.all("record-route");
    assert_eq!(rr.len(), 2, "one Record-Route per side (RFC 5658): {fwd:?}");
    assert!(rr[0].starts_with(&format!("<sip:[::1]:{}", sg.ports().udp)), "{fwd:?}");
    assert!(rr[1].starts_with(&format!("<sip:127.0.0.1:{}", sg.ports().udp)), "{fwd:?}");
}

#[test]
fn sipp_a_407_challenged_call_with_a_reinvite_passes_once_per_callee() {
    if !require_sipp() {
        return;
    }
    let sg = start(CONFIG);
    let uas = Sipp::uas("uas_auth_reinvite.xml", sg.ports().upstream);
    let stats = Sipp::uac("uac_auth_reinvite.xml", sg.udp_addr(), &["-m", "1", "-key", "uas", &uas.addr().to_string()]);
    assert_eq!((stats.successful, stats.failed), (1, 0), "{stats:?}\n{}", uas.errors());
    assert_eq!(stats.responses_with(407), 1, "{stats:?}");
    assert_eq!(stats.responses_with(403), 0, "neither the retry nor the re-INVITE was refused: {stats:?}");
    // per_callee_per_day = 1: the call above was charged once, so another is refused.
    let again = Sipp::uac("uac_reject.xml", sg.udp_addr(), &["-m", "1", "-key", "uas", &uas.addr().to_string()]);
    assert_eq!((again.successful, again.responses_with(403)), (1, 1), "{again:?}");
}
