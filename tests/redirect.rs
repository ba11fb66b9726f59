//! Redirect mode (`[server] mode = "redirect"`) through the real binary: sipp calls get a
//! 302 whose Contact carries the verdict, or the reject response of each rule; nothing is
//! ever forwarded; quotas are charged only for redirected calls; retransmissions get the
//! same bytes; OPTIONS to us gets 200, other methods 405 with Allow.
mod common;

use common::decisions::field;
use common::raw::sip;
use common::{NextHop, Ports, SipMsg, Sipguard, Sipp, SippStats, UdpPeer, require_sipp};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// No [upstream]: a redirect server forwards nothing. `{extra}` is replaced by more config.
const TEMPLATE: &str = r#"
[server]
mode = "redirect"
listen = ["udp:127.0.0.1:{udp_port}"]

[log]
level = "warn"
decisions = "{dir}/decisions.jsonl"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
unknown_account = "reject"

[screening.quota]
per_day = 3

[[dnc.list]]
name = "national"
path = "dnc.txt"
"#;

const OWNED: &str = "account,number\nacct0001,+12125550100\n";
const OWNED_CALLER: &str = "+12125550100";
const UNOWNED: &str = "+12125550142";
const BLOCKED: &str = "+13125550111";
const FREE: &str = "+13125550199";

fn start(extra: &str) -> Sipguard {
    Sipguard::start_with(
        &format!("{TEMPLATE}{extra}"),
        Ports::allocate(),
        &[("owned.csv", OWNED), ("dnc.txt", &format!("{BLOCKED}\n"))],
    )
}

fn calls(sg: &Sipguard, rows: &[String], hop: &NextHop) -> SippStats {
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let m = rows.len().to_string();
    let uas = hop.addr().to_string();
    Sipp::uac_with_calls(
        "uac_redirect.xml",
        sg.udp_addr(),
        &rows,
        &["-m", &m, "-r", "20", "-l", "1", "-key", "uas", &uas],
    )
}

fn invite(peer: &UdpPeer, id: &str, account: &str, caller: &str, callee: &str) -> Vec<u8> {
    sip(&format!(
        "INVITE sip:{callee}@127.0.0.1:5999;user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id};rport
         From: <sip:{caller}@127.0.0.1;user=phone>;tag=f-{id}
         To: <sip:{callee}@127.0.0.1;user=phone>
         Call-ID: {id}@redirect
         CSeq: 1 INVITE
         Max-Forwards: 70
         X-Account: {account}
         Content-Length: 0
        ",
        port = peer.port()
    ))
}

#[test]
fn passed_calls_are_redirected_each_rule_rejects_and_nothing_is_forwarded() {
    if !require_sipp() {
        return;
    }
    let sg = start("");
    let hop = NextHop::bind(sg.ports().upstream);
    // In order, one call at a time: pass, unknown account, unowned caller ID, DNC, pass,
    // pass (the third and last of per_day = 3: rejected calls took nothing), quota.
    let rows: Vec<String> = [
        ("acct0001", OWNED_CALLER, FREE),
        ("nobody", OWNED_CALLER, FREE),
        ("acct0001", UNOWNED, FREE),
        ("acct0001", OWNED_CALLER, BLOCKED),
        ("acct0001", OWNED_CALLER, FREE),
        ("acct0001", OWNED_CALLER, FREE),
        ("acct0001", OWNED_CALLER, FREE),
    ]
    .iter()
    .map(|(a, c, d)| format!("{a};{c};{d}"))
    .collect();
    let stats = calls(&sg, &rows, &hop);
    assert_eq!((stats.successful, stats.failed, stats.unexpected), (7, 0, 0), "{stats:#?}");
    assert_eq!(stats.responses, BTreeMap::from([(302, 3), (403, 3), (608, 1)]), "{stats:#?}");
    let log = sg.wait_decisions(7);
    let got: Vec<(&str, &str)> = log.iter().map(|d| (field(d, "verdict"), field(d, "rule"))).collect();
    assert_eq!(
        got,
        vec![
            ("forward", ""),
            ("reject", "unknown_account"),
            ("reject", "caller_id_unowned"),
            ("reject", "dnc"),
            ("forward", ""),
            ("forward", ""),
            ("reject", "quota"),
        ],
        "{log:#?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(hop.received().is_empty(), "a redirect server forwards nothing: {:?}", hop.received());
}

#[test]
fn calling_hours_reject_with_480_in_redirect_mode() {
    if !require_sipp() {
        return;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let opens = (now / 60 + 120) * 60;
    let hm = |t: u64| format!("{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60);
    let hours =
        format!("[screening.hours]\nstart = \"{}\"\nend = \"{}\"\ndefault_tz = \"UTC\"\n", hm(opens), hm(opens + 3600));
    let sg = start(&hours);
    let hop = NextHop::bind(sg.ports().upstream);
    let stats = calls(&sg, &[format!("acct0001;{OWNED_CALLER};{FREE}")], &hop);
    assert_eq!((stats.successful, stats.failed), (1, 0), "{stats:#?}");
    assert_eq!(stats.responses, BTreeMap::from([(480, 1)]), "{stats:#?}");
}

fn ask(sg: &Sipguard, peer: &UdpPeer, bytes: &[u8]) -> (Vec<u8>, SipMsg) {
    peer.send_to(bytes, sg.udp_addr());
    let d = peer.expect("an answer", WAIT);
    let m = d.msg();
    (d.bytes.clone(), m)
}

#[test]
fn retransmissions_get_the_same_bytes_and_other_methods_are_answered() {
    let sg = start("");
    let peer = UdpPeer::bind();
    let inv = invite(&peer, "rtx", "acct0001", OWNED_CALLER, FREE);
    let (first, m) = ask(&sg, &peer, &inv);
    assert_eq!(m.status(), Some(302), "{m:?}");
    let contact = m.header("Contact").unwrap_or_default().to_string();
    assert_eq!(
        contact,
        "<sip:+13125550199@127.0.0.1:5999;user=phone?X-Sipguard-Verdict=pass&X-Sipguard-Account=acct0001>"
    );
    for _ in 0..3 {
        assert_eq!(ask(&sg, &peer, &inv).0, first, "byte-identical answer to a retransmission");
    }
    // Charged once: two more calls fill per_day = 3, the next is refused.
    for id in ["q1", "q2"] {
        assert_eq!(ask(&sg, &peer, &invite(&peer, id, "acct0001", OWNED_CALLER, FREE)).1.status(), Some(302));
    }
    assert_eq!(ask(&sg, &peer, &invite(&peer, "q3", "acct0001", OWNED_CALLER, FREE)).1.status(), Some(403));
    // OPTIONS to us: 200 with Allow; BYE: 405 with Allow.
    let us = sg.udp_addr();
    let options = sip(&format!(
        "OPTIONS sip:{us} SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ping;rport
         From: <sip:ping@127.0.0.1>;tag=p
         To: <sip:{us}>
         Call-ID: ping@redirect
         CSeq: 1 OPTIONS
         Max-Forwards: 70
         Content-Length: 0
        ",
        port = peer.port()
    ));
    let (_, m) = ask(&sg, &peer, &options);
    assert_eq!(m.status(), Some(200), "{m:?}");
    assert_eq!(m.header("Allow"), Some("INVITE, ACK, CANCEL, OPTIONS"));
    let bye = String::from_utf8(inv.clone()).unwrap().replace("INVITE sip", "BYE sip").replace("1 INVITE", "2 BYE");
    let (_, m) = ask(&sg, &peer, bye.as_bytes());
    assert_eq!(m.status(), Some(405), "{m:?}");
    assert_eq!(m.header("Allow"), Some("INVITE, ACK, CANCEL, OPTIONS"));
}
