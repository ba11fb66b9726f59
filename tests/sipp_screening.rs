//! Screening verdicts through the real binary: sipp calls (or raw UDP INVITEs where a header
//! must be read) against sipguard with a `[screening]` block, one test per verdict, each
//! asserting the exact response code, how many calls got it, what reached the next hop and
//! what the decision log says.
mod common;

use common::decisions::field;
use common::raw::sip;
use common::{NextHop, Ports, Signal, SipMsg, Sipguard, Sipp, SippStats, UdpPeer, require_sipp};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// Account `acct0001` owns +12125550100, +12125550101 and the block +1646555*; the
/// X-Account header is trusted from 127.0.0.1. `{screening}` is replaced by extra keys of
/// `[screening]` and `{tail}` by further tables.
const TEMPLATE: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[log]
level = "warn"
decisions = "{dir}/decisions.jsonl"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
"#;

const OWNED: &str = "account,number\nacct0001,+12125550100\nacct0001,+12125550101\nacct0001,+1646555*\n";

/// A caller ID acct0001 does not own (valid NANP, so only ownership fails).
const UNOWNED: &str = "+12125550142";
const CALLEE: &str = "+13125550199";

fn start(screening: &str, tail: &str) -> Sipguard {
    let config = format!("{TEMPLATE}{screening}\n{tail}");
    Sipguard::start_with(&config, Ports::allocate(), &[("owned.csv", OWNED)])
}

fn rows(n: usize, account: &str, caller: &str) -> Vec<String> {
    (0..n).map(|_| format!("{account};{caller};{CALLEE}")).collect()
}

/// Run `scenario` for every row, one call at a time in row order.
fn calls(sg: &Sipguard, scenario: &str, rows: &[String], uas: &str) -> SippStats {
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let m = rows.len().to_string();
    Sipp::uac_with_calls(scenario, sg.udp_addr(), &rows, &["-m", &m, "-r", "20", "-l", "1", "-key", "uas", uas])
}

/// A raw INVITE from `peer` for acct0001 (or `account`), Call-ID and branch from `id`.
fn invite(peer: &UdpPeer, id: &str, account: &str, caller: &str) -> Vec<u8> {
    sip(&format!(
        "INVITE sip:{CALLEE}@127.0.0.1;user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id};rport
         From: <sip:{caller}@127.0.0.1;user=phone>;tag=f-{id}
         To: <sip:{CALLEE}@127.0.0.1;user=phone>
         Call-ID: {id}@test
         CSeq: 1 INVITE
         Max-Forwards: 70
         X-Account: {account}
         Content-Length: 0
        ",
        port = peer.port()
    ))
}

/// Send an INVITE and return the response it gets.
fn ask(sg: &Sipguard, peer: &UdpPeer, bytes: &[u8]) -> SipMsg {
    peer.send_to(bytes, sg.udp_addr());
    peer.expect("a response to the INVITE", WAIT).msg()
}

fn assert_all_ok(stats: &SippStats, n: u64) {
    assert_eq!((stats.successful, stats.failed, stats.unexpected), (n, 0, 0), "{stats:#?}");
}

#[test]
fn owned_caller_ids_of_a_known_account_pass() {
    if !require_sipp() {
        return;
    }
    let sg = start("", "");
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    let callers = ["+12125550100", "+12125550101", "+16465550123"];
    let rows: Vec<String> = (0..9).map(|i| format!("acct0001;{};{CALLEE}", callers[i % 3])).collect();
    let stats = calls(&sg, "uac_basic.xml", &rows, &uas.addr().to_string());
    assert_all_ok(&stats, 9);
    // 200 to each INVITE and each BYE: every call reached the UAS and was answered there.
    assert_eq!(stats.responses_with(200), 18, "{stats:#?}");
    let log = sg.wait_decisions(9);
    assert_eq!(log.len(), 9);
    for d in &log {
        assert_eq!(field(d, "verdict"), "forward", "{d}");
        assert_eq!(field(d, "account"), "acct0001", "{d}");
    }
}

#[test]
fn unowned_caller_id_is_refused_with_403() {
    if !require_sipp() {
        return;
    }
    let sg = start("", "");
    let hop = NextHop::bind(sg.ports().upstream);
    let stats = calls(&sg, "uac_reject.xml", &rows(4, "acct0001", UNOWNED), &hop.addr().to_string());
    assert_all_ok(&stats, 4);
    assert_eq!(stats.responses, BTreeMap::from([(403, 4)]), "{stats:#?}");
    let log = sg.wait_decisions(4);
    for d in &log {
        assert_eq!(field(d, "verdict"), "reject", "{d}");
        assert_eq!(field(d, "rule"), "caller_id_unowned", "{d}");
        assert_eq!(d.get("code").and_then(Value::as_u64), Some(403), "{d}");
    }
    // Every call has ended (ACKed): anything forwarded would have arrived by now.
    assert!(hop.received().is_empty(), "{:?}", hop.received());
}

#[test]
fn calls_beyond_the_daily_quota_get_403() {
    if !require_sipp() {
        return;
    }
    let sg = start("[screening.quota]\nper_day = 5\n", "");
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    let stats = calls(&sg, "uac_screened.xml", &rows(8, "acct0001", "+12125550100"), &uas.addr().to_string());
    assert_all_ok(&stats, 8);
    // Five calls rang and were answered (200 to INVITE and BYE), three refused.
    assert_eq!(stats.responses, BTreeMap::from([(180, 5), (200, 10), (403, 3)]), "{stats:#?}");
    let log = sg.wait_decisions(8);
    let verdicts: Vec<(&str, &str)> = log.iter().map(|d| (field(d, "verdict"), field(d, "rule"))).collect();
    let mut expected = vec![("forward", ""); 5];
    expected.extend([("reject", "quota"); 3]);
    assert_eq!(verdicts, expected, "calls in order: {log:#?}");
}

/// `[screening.hours]` in UTC opening two hours from now (to the minute) for one hour, so
/// that now is certainly outside; returns the config and the seconds until it opens.
fn closed_window() -> (String, u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let opens = (now / 60 + 120) * 60;
    let hm = |t: u64| format!("{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60);
    let cfg =
        format!("[screening.hours]\nstart = \"{}\"\nend = \"{}\"\ndefault_tz = \"UTC\"\n", hm(opens), hm(opens + 3600));
    (cfg, opens - now)
}

#[test]
fn outside_calling_hours_gets_480_with_retry_after() {
    if !require_sipp() {
        return;
    }
    let (hours, wait) = closed_window();
    let sg = start("", &hours);
    let hop = NextHop::bind(sg.ports().upstream);
    let stats = calls(&sg, "uac_reject.xml", &rows(3, "acct0001", "+12125550100"), &hop.addr().to_string());
    assert_all_ok(&stats, 3);
    assert_eq!(stats.responses, BTreeMap::from([(480, 3)]), "{stats:#?}");

    let peer = UdpPeer::bind();
    let reply = ask(&sg, &peer, &invite(&peer, "hours1", "acct0001", "+12125550100"));
    assert_eq!(reply.status(), Some(480), "{reply:?}");
    let retry: u64 = reply
        .header("retry-after")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After: {reply:?}"));
    // Measured before sipguard started; the test may take a few seconds since.
    assert!(retry <= wait && retry + 60 >= wait, "Retry-After {retry}, window opens in {wait} s: {reply:?}");
    assert!(hop.received().is_empty(), "{:?}", hop.received());
}

#[test]
fn unknown_account_is_refused_with_403() {
    if !require_sipp() {
        return;
    }
    let sg = start("", "");
    let hop = NextHop::bind(sg.ports().upstream);
    let stats = calls(&sg, "uac_reject.xml", &rows(3, "nobody", "+12125550100"), &hop.addr().to_string());
    assert_all_ok(&stats, 3);
    assert_eq!(stats.responses, BTreeMap::from([(403, 3)]), "{stats:#?}");
    for d in sg.wait_decisions(3) {
        assert_eq!(field(&d, "rule"), "unknown_account", "{d}");
    }
    assert!(hop.received().is_empty(), "{:?}", hop.received());
}

#[test]
fn report_mode_forwards_and_logs_would_reject() {
    if !require_sipp() {
        return;
    }
    let mut sg = start("mode = \"report\"\n", "");
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    let stats = calls(&sg, "uac_basic.xml", &rows(5, "acct0001", UNOWNED), &uas.addr().to_string());
    assert_all_ok(&stats, 5);
    assert_eq!(stats.responses_with(200), 10, "{stats:#?}");
    // Stopping flushes the log: read it whole afterwards.
    sg.send_signal(Signal::Term);
    let status = sg.wait_exit(WAIT);
    assert!(status.success(), "{status}\n{}", sg.log());
    let text = std::fs::read_to_string(sg.dir().join("decisions.jsonl")).unwrap_or_default();
    let log = sg.wait_decisions(5);
    assert_eq!(log.len(), 5, "{text}");
    for d in &log {
        assert_eq!(field(d, "verdict"), "would_reject", "{d}");
        assert_eq!(field(d, "rule"), "caller_id_unowned", "{d}");
        assert_eq!(field(d, "caller"), UNOWNED, "{d}");
    }
}

#[test]
fn configured_response_forms_603_plus_and_608_jwscard() {
    let sg = start(
        "",
        r#"
[responses.caller_id_unowned]
code = 603
q850 = true

[responses.unknown_account]
code = 608
call_info = "https://example.com/jwscard/sipguard"
"#,
    );
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();

    let r = ask(&sg, &peer, &invite(&peer, "form603", "acct0001", UNOWNED));
    assert_eq!(r.start, "SIP/2.0 603 Network Blocked", "{r:?}");
    let reason = r.header("reason").unwrap_or_default();
    assert!(reason.starts_with("Q.850;cause=21"), "Reason `{reason}`: {r:?}");
    assert!(r.header("call-info").is_none(), "{r:?}");

    let r = ask(&sg, &peer, &invite(&peer, "form608", "nobody", "+12125550100"));
    assert_eq!(r.status(), Some(608), "{r:?}");
    assert_eq!(r.header("call-info"), Some("<https://example.com/jwscard/sipguard>;purpose=jwscard"), "{r:?}");
    assert!(r.header("reason").is_some_and(|v| v.starts_with("SIP;cause=608")), "{r:?}");
    assert!(hop.received().is_empty(), "{:?}", hop.received());
}

#[test]
fn a_retransmitted_invite_is_screened_and_counted_once() {
    let sg = start("[screening.quota]\nper_day = 1\n", "");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let first = invite(&peer, "retrans", "acct0001", "+12125550100");
    for _ in 0..3 {
        peer.send_to(&first, sg.udp_addr());
    }
    // Stateless: each copy is forwarded, and identically (same branch, same bytes).
    let got = hop.wait_for(3, WAIT);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|d| d.bytes == got[0].bytes), "copies differ: {got:?}");
    assert_eq!(got[0].msg().method(), Some("INVITE"));

    // A new call (new Call-ID and branch) finds the quota used up by the first, once.
    let r = ask(&sg, &peer, &invite(&peer, "second", "acct0001", "+12125550100"));
    assert_eq!(r.status(), Some(403), "{r:?}");
    let log = sg.wait_decisions(2);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!((field(&log[0], "verdict"), field(&log[0], "call_id")), ("forward", "retrans@test"), "{log:#?}");
    assert_eq!((field(&log[1], "verdict"), field(&log[1], "rule")), ("reject", "quota"), "{log:#?}");
    assert_eq!(hop.received().len(), 3, "the refused call is not forwarded");
}

#[test]
fn cancel_of_a_refused_invite_is_answered_here() {
    let sg = start("", "");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let inv = invite(&peer, "cancel1", "acct0001", UNOWNED);
    let r = ask(&sg, &peer, &inv);
    assert_eq!(r.status(), Some(403), "{r:?}");
    // CANCEL: same branch, Request-URI, Call-ID and CSeq number as the INVITE (RFC 3261 §9.1).
    let cancel =
        String::from_utf8_lossy(&inv).replace("INVITE sip:", "CANCEL sip:").replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let r = ask(&sg, &peer, cancel.as_bytes());
    assert_eq!((r.status(), r.header("cseq")), (Some(200), Some("1 CANCEL")), "{r:?}");
    // The INVITE was never forwarded, so neither is its CANCEL.
    assert!(hop.received().is_empty(), "{:?}", hop.received());
}
