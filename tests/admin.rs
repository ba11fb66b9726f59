//! The admin listener through the real binary: /metrics agrees with sipp's own counts,
//! /health, /reload (a broken file keeps the old config), the bearer token, /accounts, and a
//! SIGTERM under load that exits 0 with a complete decision log.
mod common;
use common::http;

use common::{NextHop, Signal, Sipguard, Sipp, UdpPeer, require_sipp};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Calls from 127.0.0.1 are account `local`; owned caller IDs are not checked.
const SCREENED: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[screening]
unknown_account = "reject"

[screening.checks]
owned = false

[[account]]
id = "local"
sources = ["{source}"]

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
level = "info"
decisions = "{dir}/decisions.jsonl"
"#;

fn screened(source: &str) -> String {
    SCREENED.replace("{source}", source)
}

fn json(sg: &Sipguard, method: &str, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http(sg, method, path, None);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, v)
}

/// The value of the series `name{labels...}` whose labels include all of `want`; 0 if absent.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            n == name && want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

fn scrape(sg: &Sipguard) -> String {
    let (code, body) = http(sg, "GET", "/metrics", None);
    assert_eq!(code, 200, "{body}");
    body
}

fn uas_calls(sg: &Sipguard, uas: &Sipp, calls: u64) -> common::SippStats {
    uas_calls_at(sg, uas, calls, 200)
}

fn uas_calls_at(sg: &Sipguard, uas: &Sipp, calls: u64, rate: u32) -> common::SippStats {
    let uas_addr = uas.addr().to_string();
    let (m, r) = (calls.to_string(), rate.to_string());
    Sipp::uac("uac_basic.xml", sg.udp_addr(), &["-m", &m, "-r", &r, "-key", "uas", &uas_addr])
}

#[test]
fn metrics_equal_sipp_counts() {
    if !require_sipp() {
        return;
    }
    const CALLS: u64 = 200;
    let sg = Sipguard::start(&screened("127.0.0.1/32"));
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    let stats = uas_calls(&sg, &uas, CALLS);
    assert_eq!((stats.successful, stats.failed, stats.retransmissions), (CALLS, 0, 0), "{stats:#?}");
    // sipp has exited: everything it sent and received has been counted.
    let text = scrape(&sg);
    let m = |name: &str, want: &[(&str, &str)]| metric(&text, name, want) as u64;
    let udp_in = |method: &str| {
        m("sipguard_messages_in_total", &[("transport", "udp"), ("kind", "request"), ("method", method)])
    };
    assert_eq!(udp_in("INVITE"), CALLS, "{text}");
    assert_eq!(udp_in("ACK"), CALLS, "{text}");
    assert_eq!(udp_in("BYE"), CALLS, "{text}");
    assert_eq!(m("sipguard_messages_out_total", &[("kind", "request")]), 3 * CALLS);
    // Every response the UAS sent came in and went back out to the UAC.
    let responses_in = m("sipguard_messages_in_total", &[("kind", "response")]);
    let received: u64 = stats.responses.values().sum();
    assert_eq!(responses_in, received, "{stats:#?}\n{text}");
    assert_eq!(m("sipguard_messages_out_total", &[("kind", "response")]), received);
    assert_eq!(m("sipguard_verdicts_total", &[("verdict", "forward"), ("rule", "-"), ("account", "local")]), CALLS);
    assert_eq!(m("sipguard_screen_seconds_count", &[]), CALLS, "{text}");
    assert!(text.contains("sipguard_screen_seconds_bucket{le=\"0.00001\"}"), "{text}");
    assert_eq!(m("sipguard_replies_total", &[]), 0);
    // 200 calls/s is 1000 datagrams/s: fewer than 3 expected per 0.5 ms wait, so the UDP
    // thread never waits (a batch only holds what had already queued).
    assert_eq!(m("sipguard_udp_batch_waits_total", &[]), 0, "{text}");
    let batches = m("sipguard_udp_receive_batches_total", &[]);
    assert!(batches > 0 && batches <= m("sipguard_messages_in_total", &[]), "{text}");

    // The account's counters say the same.
    let (code, acct) = json(&sg, "GET", "/accounts/local");
    assert_eq!(code, 200, "{acct}");
    assert_eq!(acct["id"], "local");
    assert_eq!(acct["calls_today"], CALLS);
    assert_eq!(acct["mode"], "enforce");
    let (code, missing) = json(&sg, "GET", "/accounts/nobody");
    assert_eq!((code, missing["error"].as_str()), (404, Some("no account `nobody`")));

    // `sipguard top --once` shows the same totals (no traffic now: rates are 0).
    let admin = format!("127.0.0.1:{}", sg.ports().admin);
    let out = std::process::Command::new(common::BIN)
        .args(["top", "--admin", &admin, "--interval", "0.1", "--once"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let view = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = view.lines().map(|l| l.split_whitespace().collect()).collect();
    let calls = CALLS.to_string();
    assert!(rows.contains(&vec!["-", "forward", "0.0", calls.as_str()]), "{view}");
    // Without behaviour tracking or complaints, ASR and ACD read "-" and complaints 0.
    assert!(rows.contains(&vec!["local", "0.0", "0", "0.0", calls.as_str(), "-", "-", "0"]), "{view}");
}

/// Under load the UDP thread waits after a batch (server.udp_batch_wait_us, 500 us by default)
/// so that datagrams gather; every call still goes through and every decision is logged.
#[test]
fn udp_batches_under_load_without_losing_calls() {
    if !require_sipp() {
        return;
    }
    const CALLS: u64 = 4000;
    let sg = Sipguard::start(&screened("127.0.0.1/32"));
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    // 2000 calls/s: 10000 datagrams/s, about 5 expected per wait.
    let stats = uas_calls_at(&sg, &uas, CALLS, 2000);
    assert_eq!((stats.successful, stats.failed, stats.unexpected), (CALLS, 0, 0), "{stats:#?}\n{}", uas.errors());
    assert_eq!(stats.responses_with(200), 2 * CALLS, "{stats:#?}");
    let text = scrape(&sg);
    let m = |name: &str| metric(&text, name, &[]);
    let (batches, waits, datagrams) =
        (m("sipguard_udp_receive_batches_total"), m("sipguard_udp_batch_waits_total"), m("sipguard_messages_in_total"));
    assert!(waits > 0.0, "the thread never waited: {text}");
    assert!(batches < datagrams, "no batch held more than one datagram: {batches} batches, {datagrams} datagrams");
    // Every decision is logged once (the writer flushes when it goes idle).
    let lines = || std::fs::read_to_string(sg.dir().join("decisions.jsonl")).unwrap_or_default().lines().count() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines() < CALLS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lines(), CALLS);
}

#[test]
fn health_reports_what_runs() {
    let sg = Sipguard::start(&screened("127.0.0.1/32"));
    let (code, h) = json(&sg, "GET", "/health");
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["listeners"], serde_json::json!([format!("udp:{}", sg.udp_addr())]));
    assert_eq!(h["config_file"], sg.config_path().display().to_string());
    assert_eq!(h["screening"], true);
    assert_eq!(h["accounts"], 1);
    assert_eq!(h["lists"], serde_json::json!([]));
    assert_eq!(h["last_reload"]["result"], "none");
    assert!(h["uptime_seconds"].is_u64(), "{h}");
    // The start-up line names version, listeners and accounts.
    let log = sg.log();
    let start = log.lines().find(|l| l.contains("sipguard started")).unwrap_or_default();
    for want in [env!("CARGO_PKG_VERSION"), "listen=udp:127.0.0.1", "accounts=1", "lists="] {
        assert!(start.contains(want), "{want} missing from: {start}");
    }
    let (code, _) = http(&sg, "GET", "/nothing", None);
    assert_eq!(code, 404);
}

/// One INVITE from a raw UDP peer: the status of the final answer sipguard sends back, or
/// None if it was forwarded (nothing comes back from the silent next hop).
fn invite_answer(sg: &Sipguard, hop: &NextHop, n: u32) -> Option<u16> {
    let peer = UdpPeer::bind();
    let p = peer.port();
    let msg = common::raw::sip(&format!(
        "INVITE sip:+13125550199@{hop} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-adm-{n}\r\nFrom: <sip:+12125550100@127.0.0.1>;tag=a{n}\r\nTo: <sip:+13125550199@{hop}>\r\nCall-ID: admin-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        hop = hop.addr()
    ));
    let before = hop.received().len();
    peer.send_to(&msg, sg.udp_addr());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(d) = peer.recv(Duration::from_millis(20)) {
            match d.msg().status() {
                Some(code) if code >= 200 => return Some(code),
                _ => continue,
            }
        }
        if hop.received().len() > before {
            return None;
        }
        assert!(Instant::now() < deadline, "no answer and nothing forwarded");
    }
}

#[test]
fn broken_reload_keeps_the_running_config() {
    // 10.0.0.0/8 does not hold 127.0.0.1: our calls are from an unknown account (403).
    let sg = Sipguard::start(&screened("10.0.0.0/8"));
    let hop = NextHop::bind(sg.ports().upstream);
    assert_eq!(invite_answer(&sg, &hop, 1), Some(403));

    sg.rewrite_config(&format!("{}\nbogus_key = 1\n", screened("127.0.0.1/32")));
    let (code, r) = json(&sg, "POST", "/reload");
    assert_eq!(code, 422, "{r}");
    assert_eq!(r["result"], "failed");
    let err = r["error"].as_str().unwrap_or_default();
    assert!(err.contains("sipguard.toml:") && err.contains("bogus_key"), "{err}");
    let (_, h) = json(&sg, "GET", "/health");
    assert_eq!(h["last_reload"]["result"], "failed", "{h}");
    assert_eq!(h["last_reload"]["error"], r["error"]);
    // Still the old policy.
    assert_eq!(invite_answer(&sg, &hop, 2), Some(403));

    // A good file applies; a listener change is reported as needing a restart.
    sg.rewrite_config(&screened("127.0.0.1/32").replace(
        "listen = [\"udp:127.0.0.1:{udp_port}\"]",
        "listen = [\"udp:127.0.0.1:{udp_port}\", \"tcp:127.0.0.1:{tcp_port}\"]",
    ));
    let (code, r) = json(&sg, "POST", "/reload");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["restart_needed"], serde_json::json!(["server.listen"]));
    assert_eq!(invite_answer(&sg, &hop, 3), None);

    // SIGHUP goes through the same reload: refused, exported, old config kept.
    sg.rewrite_config("[server\n");
    sg.send_signal(Signal::Hup);
    // The HTTP reload above logged the first refusal; wait for the second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sg.log().matches("reload refused").count() < 2 {
        assert!(Instant::now() < deadline, "SIGHUP reload not logged");
        std::thread::sleep(common::POLL);
    }
    let text = scrape(&sg);
    assert_eq!(metric(&text, "sipguard_reloads_total", &[("result", "failed")]), 2.0);
    assert_eq!(metric(&text, "sipguard_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(metric(&text, "sipguard_config_last_reload_successful", &[]), 0.0);
    assert_eq!(invite_answer(&sg, &hop, 4), None);
}

#[test]
fn token_is_required_when_set() {
    let sg = Sipguard::start(
        &screened("127.0.0.1/32")
            .replace("listen = \"127.0.0.1:{admin_port}\"", "listen = \"127.0.0.1:{admin_port}\"\ntoken = \"s3cret\""),
    );
    for path in ["/metrics", "/health", "/accounts/local"] {
        assert_eq!(http(&sg, "GET", path, None).0, 401, "{path}");
        assert_eq!(http(&sg, "GET", path, Some("wrong")).0, 401, "{path}");
        assert_eq!(http(&sg, "GET", path, Some("s3cret")).0, 200, "{path}");
    }
    assert_eq!(http(&sg, "POST", "/reload", None).0, 401);
    assert_eq!(http(&sg, "POST", "/reload", Some("s3cret")).0, 200);
}

#[test]
fn sigterm_under_load_exits_0_with_every_decision_logged() {
    if !require_sipp() {
        return;
    }
    let mut sg = Sipguard::start(&screened("127.0.0.1/32"));
    // A silent next hop: sipp retransmits INVITEs, which must not add lines.
    let hop = NextHop::bind(sg.ports().upstream);
    let target = sg.udp_addr();
    let hop_addr = hop.addr().to_string();
    let uac = std::thread::spawn(move || {
        Sipp::uac("uac_basic.xml", target, &["-m", "5000", "-r", "500", "-timeout", "3", "-key", "uas", &hop_addr])
    });
    hop.wait_for(200, Duration::from_secs(10));
    sg.send_signal(Signal::Term);
    let status = sg.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", sg.log());
    // A datagram sent now arrives after everything sipguard sent: then the hop has it all.
    let marker = UdpPeer::bind();
    marker.send_to(b"marker", hop.addr());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hop.received().iter().any(|d| d.bytes == b"marker") {
        assert!(Instant::now() < deadline, "marker not received");
        std::thread::sleep(common::POLL);
    }
    let forwarded: BTreeSet<String> = hop
        .received()
        .iter()
        .filter(|d| d.bytes.starts_with(b"INVITE "))
        .filter_map(|d| d.msg().header("Call-ID").map(str::to_string))
        .collect();
    let log = std::fs::read_to_string(sg.dir().join("decisions.jsonl")).unwrap_or_default();
    let logged: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["call_id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let unique: BTreeSet<String> = logged.iter().cloned().collect();
    assert_eq!(unique.len(), logged.len(), "a call logged twice");
    assert!(logged.len() >= 100, "only {} decisions", logged.len());
    assert_eq!(unique, forwarded);
    let _ = uac.join();
}
