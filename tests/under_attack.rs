//! Under attack, through the real binary: a flooding source is banned and gets nothing back
//! while the customers keep being served; scanners get silence; slow and greedy TCP clients
//! lose their connections; a declared oversized body is answered 413 at once.
mod common;

use common::raw::sip;
use common::{NextHop, SipMsg, Sipguard, TcpSip, UdpPeer, http};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

const CONFIG: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}", "tcp:127.0.0.1:{tcp_port}"]
tcp_message_timeout_seconds = 1
tcp_max_connections_per_source = 2
max_message_bytes = 8192

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
level = "warn"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
unknown_account = "forward"

[security]
per_source_per_second = 20
ban_seconds = 2
"#;

/// A request that gets a local 483 (Max-Forwards 0): one reply per request, if any.
fn probe(id: &str, port: u16, ua: &str) -> Vec<u8> {
    sip(&format!(
        "OPTIONS sip:+13125550199@127.0.0.1 SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK-{id};rport
         From: <sip:probe@127.0.0.2>;tag=f-{id}
         To: <sip:+13125550199@127.0.0.1>
         Call-ID: {id}
         CSeq: 1 OPTIONS
         Contact: <sip:probe@127.0.0.2:{port}>
         User-Agent: {ua}
         Max-Forwards: 0
         Content-Length: 0
        "
    ))
}

fn replies(sock: &UdpSocket, within: Duration) -> Vec<SipMsg> {
    let _ = sock.set_read_timeout(Some(within));
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        out.push(SipMsg::parse(&buf[..n]));
    }
    out
}

#[test]
fn a_flooding_source_is_banned_silently_and_customers_keep_flowing() {
    let sg = Sipguard::start(CONFIG);
    let hop = NextHop::bind(sg.ports().upstream);
    let flood = UdpSocket::bind("127.0.0.2:0").unwrap_or_else(|e| panic!("{e}"));
    let port = flood.local_addr().map(|a| a.port()).unwrap_or_default();
    // 60 at once: a burst of 20 is allowed, then the ban.
    for i in 0..60 {
        flood.send_to(&probe(&format!("fl{i}"), port, "flooder/1.0"), sg.udp_addr()).unwrap_or_else(|e| panic!("{e}"));
    }
    // A customer (trusted, so exempt) meanwhile: still forwarded.
    let customer = UdpPeer::bind();
    let opt = sip(&format!(
        "OPTIONS sip:+13125550199@127.0.0.1 SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-cust;rport
         From: <sip:c@127.0.0.1>;tag=c
         To: <sip:+13125550199@127.0.0.1>
         Call-ID: cust
         CSeq: 1 OPTIONS
         Max-Forwards: 70
         Content-Length: 0
        ",
        customer.port()
    ));
    for _ in 0..30 {
        customer.send_to(&opt, sg.udp_addr());
    }
    assert_eq!(hop.wait_for(30, WAIT).len(), 30, "the customer is never limited");
    let got = replies(&flood, Duration::from_millis(300));
    assert!((19..=21).contains(&got.len()), "replies to the flood: {} (burst 20)", got.len());
    let (code, body) = http(&sg, "GET", "/security/bans", None);
    assert_eq!(code, 200, "{body}");
    let bans: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let list = bans["bans"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["source"], "127.0.0.2", "{body}");
    assert!(list[0]["dropped"].as_u64().unwrap_or(0) >= 39, "{body}");
    assert_eq!(sg.log().matches("source banned").count(), 1, "logged once:\n{}", sg.log());
    let (_, metrics) = http(&sg, "GET", "/metrics", None);
    assert!(metrics.contains("sipguard_bans_total 1"), "{metrics}");
    // The ban ends (2 s): the source is answered again.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = http(&sg, "GET", "/security/bans", None);
        if body.contains("\"bans\":[]") {
            break;
        }
        assert!(Instant::now() < deadline, "ban still in force: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    flood.send_to(&probe("after", port, "flooder/1.0"), sg.udp_addr()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replies(&flood, Duration::from_millis(500)).len(), 1, "answered after the ban");
}

#[test]
fn scanners_get_silence() {
    let sg = Sipguard::start(CONFIG);
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap_or_else(|e| panic!("{e}"));
    let port = sock.local_addr().map(|a| a.port()).unwrap_or_default();
    for (i, ua) in ["friendly-scanner", "sipvicious 0.3.4", "SIPCLI/v1.8"].iter().enumerate() {
        sock.send_to(&probe(&format!("sc{i}"), port, ua), sg.udp_addr()).unwrap_or_else(|e| panic!("{e}"));
    }
    // Handled in order on one socket: the first reply, if the scanners got none, is this one.
    sock.send_to(&probe("pbx", port, "Acme PBX"), sg.udp_addr()).unwrap_or_else(|e| panic!("{e}"));
    let got = replies(&sock, Duration::from_millis(500));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].header("call-id"), Some("pbx"));
    let (_, metrics) = http(&sg, "GET", "/metrics", None);
    assert!(metrics.contains("sipguard_drops_total{reason=\"scanner\"} 3"), "{metrics}");
}

#[test]
fn slow_and_greedy_tcp_clients_lose_their_connections() {
    let sg = Sipguard::start(CONFIG);
    // Slowloris: a header block that never completes is cut after tcp_message_timeout_seconds.
    let mut slow = TcpSip::connect(sg.tcp_addr());
    slow.send(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-slow\r\n");
    let t = Instant::now();
    assert!(slow.closed_within(WAIT), "still open after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());
    // Two connections per source: the third is closed at once.
    let mut a = TcpSip::connect(sg.tcp_addr());
    let mut b = TcpSip::connect(sg.tcp_addr());
    let mut c = TcpSip::connect(sg.tcp_addr());
    assert!(c.closed_within(WAIT), "a third connection from one source");
    assert!(!a.closed_within(Duration::from_millis(100)) && !b.closed_within(Duration::from_millis(100)));
}

#[test]
fn a_declared_oversized_body_is_answered_413_within_a_second() {
    let sg = Sipguard::start(CONFIG);
    let mut c = TcpSip::connect(sg.tcp_addr());
    let port = c.local_addr().port();
    let head = format!(
        "INVITE sip:+13125550199@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-big\r\n\
From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:+13125550199@127.0.0.1>\r\nCall-ID: big\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\nContact: <sip:a@127.0.0.1:{port};transport=tcp>\r\nContent-Length: 10000000\r\n\r\n"
    );
    let t = Instant::now();
    c.send(head.as_bytes());
    let r = c.recv(WAIT).map(|b| SipMsg::parse(&b)).unwrap_or_default();
    assert_eq!(r.start, "SIP/2.0 413 Request Entity Too Large", "{r:?}");
    assert!(c.closed_within(WAIT));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn when_the_core_falls_behind_new_calls_get_503_and_none_is_lost() {
    // A 1 ms queueing delay counts as behind here, so a burst is enough to show it.
    let config =
        CONFIG.replace("max_message_bytes = 8192", "max_message_bytes = 8192\noverload_delay_ms = 1\nudp_threads = 1");
    let sg = Sipguard::start(&config);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let n = 3000;
    for i in 0..n {
        let inv = sip(&format!(
            "INVITE sip:+1312555{:04}@127.0.0.1 SIP/2.0
             Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-ov{i};rport
             From: <sip:+12125550100@127.0.0.1>;tag=ov{i}
             To: <sip:+1312555{:04}@127.0.0.1>
             Call-ID: ov{i}
             CSeq: 1 INVITE
             Max-Forwards: 70
             Contact: <sip:d@127.0.0.1:{}>
             Content-Length: 0
            ",
            i % 10000,
            peer.port(),
            i % 10000,
            peer.port()
        ));
        peer.send_to(&inv, sg.udp_addr());
    }
    // Every INVITE the proxy read is either forwarded or answered 503 (counted by the proxy,
    // since the client's own socket may overflow with replies; the kernel may drop some of
    // the burst before the proxy reads it, when its receive buffer is capped by rmem_max).
    let counter = |series: &str| -> usize {
        let (_, metrics) = http(&sg, "GET", "/metrics", None);
        metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let shed = || counter("sipguard_shed_total ");
    let forwarded = || counter("sipguard_messages_out_total{transport=\"udp\",kind=\"request\"} ");
    let read = || counter("sipguard_messages_in_total{transport=\"udp\",kind=\"request\",method=\"INVITE\"} ");
    let deadline = Instant::now() + WAIT;
    while (shed() + forwarded() < read() || read() == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (shed, forwarded, read) = (shed(), forwarded(), read());
    assert_eq!(shed + forwarded, read, "{shed} shed + {forwarded} forwarded of {read} read ({n} sent)");
    assert!(shed > 0, "a burst of {n} never put the core 1 ms behind");
    // With a 1 ms threshold all of a burst may be late, so nothing is asserted of what was
    // forwarded; that responses and calls in progress keep flowing is the core's unit test.
    let _ = (forwarded, &hop);
    let r = peer.expect("a 503", WAIT).msg();
    assert_eq!((r.status(), r.header("retry-after")), (Some(503), Some("5")), "{r:?}");
}
