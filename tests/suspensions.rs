//! Suspensions through the real binary: a journal left by an earlier run bars an account and
//! one caller ID (403 `suspended`, Reason saying until when, decision log saying why), another
//! caller ID of the same account passes, `GET /suspensions` and `sipguard suspension
//! list|lift` agree with the proxy, and a lift survives SIGTERM, kill -9 and a torn line.
mod common;

use common::raw::sip;
use common::{BIN, Ports, Signal, Sipguard, Sipp, SippStats, UdpPeer, http, require_sipp};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(5);
const CALLEE: &str = "+13125550199";

const TEMPLATE: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
level = "info"
decisions = "{dir}/decisions.jsonl"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"

[[account]]
id = "acme"

[[account]]
id = "beta"
"#;

const OWNED: &str = "account,number\nacme,+12125550100\nbeta,+12125550110\nbeta,+12125550111\n";

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A journal as an earlier run would have left it: `acme` suspended, and beta's caller ID
/// +12125550110, both for an hour.
fn seed_journal(state: &Path) {
    let (since, until) = (unix_now() - 60, unix_now() + 3600);
    let lines = [
        format!(
            r#"{{"op":"suspend","subject":"account","id":"acme","account":"acme","since":{since},"until":{until},"source":"complaints","cause":"2 complaints in 30 days"}}"#
        ),
        format!(
            r#"{{"op":"suspend","subject":"caller_id","id":"+12125550110","account":"beta","since":{since},"until":{until},"source":"behaviour","cause":"asr 0.05 < 0.15 over 40 attempts"}}"#
        ),
    ];
    std::fs::create_dir_all(state).unwrap();
    std::fs::write(state.join("suspensions.journal"), lines.join("\n") + "\n").unwrap();
}

fn start(state: &Path, ports: Ports) -> Sipguard {
    let config = format!("{TEMPLATE}\n[state]\ndir = \"{}\"\n", state.display());
    Sipguard::start_with(&config, ports, &[("owned.csv", OWNED)])
}

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

/// sipp calls `account;caller;callee`, one at a time, against a sipp UAS.
fn calls(sg: &Sipguard, uas: &Sipp, account: &str, caller: &str, n: usize) -> SippStats {
    let row = format!("{account};{caller};{CALLEE}");
    let rows: Vec<&str> = (0..n).map(|_| row.as_str()).collect();
    let (m, uas) = (n.to_string(), uas.addr().to_string());
    Sipp::uac_with_calls(
        "uac_screened.xml",
        sg.udp_addr(),
        &rows,
        &["-m", &m, "-r", "20", "-l", "1", "-key", "uas", &uas],
    )
}

fn cli(sg: &Sipguard, args: &[&str]) -> (Option<i32>, String) {
    let admin = format!("localhost:{}", sg.ports().admin);
    let out = Command::new(BIN).arg("suspension").args(args).args(["--admin", &admin]).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn listed(sg: &Sipguard) -> Vec<String> {
    let (code, body) = http(sg, "GET", "/suspensions", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["suspensions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn suspended_accounts_and_caller_ids_are_refused_until_lifted_across_restarts() {
    if !require_sipp() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    seed_journal(state.path());
    let ports = Ports::allocate();
    let mut sg = start(state.path(), ports);
    let uas = Sipp::uas("uas_basic.xml", ports.upstream);

    // The account: every call 403, with the end of the suspension in the Reason.
    let s = calls(&sg, &uas, "acme", "+12125550100", 3);
    assert_eq!((s.responses_with(403), s.responses_with(180)), (3, 0), "{s:#?}");
    let peer = UdpPeer::bind();
    peer.send_to(&invite(&peer, "why", "acme", "+12125550100"), sg.udp_addr());
    let r = peer.expect("403", WAIT).msg();
    assert_eq!(r.status(), Some(403), "{r:?}");
    let reason = r.header("reason").unwrap_or_default().to_string();
    assert!(reason.starts_with("SIP;cause=403;text=\"Calling suspended until 20"), "{reason}");
    assert!(reason.ends_with("Z\""), "{reason}");

    // beta: the suspended caller ID is refused, its other caller ID passes.
    let s = calls(&sg, &uas, "beta", "+12125550110", 2);
    assert_eq!((s.responses_with(403), s.responses_with(180)), (2, 0), "{s:#?}");
    let s = calls(&sg, &uas, "beta", "+12125550111", 2);
    assert_eq!((s.responses_with(180), s.responses_with(403)), (2, 0), "{s:#?}");

    // The decision log says which suspension and why.
    let log = std::fs::read_to_string(sg.dir().join("decisions.jsonl")).unwrap_or_default();
    let line = log.lines().find(|l| l.contains("\"rule\":\"suspended\"")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("acme suspended by complaints since") && line.contains("2 complaints in 30 days"), "{line}");

    // API and CLI agree.
    assert_eq!(listed(&sg), ["+12125550110", "acme"], "same end: by id");
    let (code, text) = cli(&sg, &["list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("acme") && text.contains("+12125550110") && text.contains("2 suspended"), "{text}");

    // Lift the account; again is "nothing to lift" (exit 1); an unknown id is 404.
    let (code, text) = cli(&sg, &["lift", "acme"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = cli(&sg, &["lift", "acme"]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(http(&sg, "POST", "/suspensions/nobody/lift", None).0, 404);
    let s = calls(&sg, &uas, "acme", "+12125550100", 2);
    assert_eq!((s.responses_with(180), s.responses_with(403)), (2, 0), "{s:#?}");

    // SIGTERM: the lift stays, the caller ID stays suspended.
    sg.send_signal(Signal::Term);
    assert!(sg.wait_exit(WAIT).success());
    drop(sg);
    let sg = start(state.path(), ports);
    assert_eq!(listed(&sg), ["+12125550110"]);
    let s = calls(&sg, &uas, "acme", "+12125550100", 1);
    assert_eq!((s.responses_with(180), s.responses_with(403)), (1, 0), "{s:#?}");

    // Lift the caller ID by its digits, then kill -9: acknowledged means kept.
    let (code, text) = cli(&sg, &["lift", "12125550110"]);
    assert_eq!(code, Some(0), "{text}");
    drop(sg);
    // A write torn by the crash at the end of the journal is skipped, not fatal.
    let mut journal = std::fs::read_to_string(state.path().join("suspensions.journal")).unwrap();
    journal.push_str(r#"{"op":"suspend","subject":"acc"#);
    std::fs::write(state.path().join("suspensions.journal"), journal).unwrap();
    let sg = start(state.path(), ports);
    assert!(sg.wait_for_log("skipped unreadable lines", WAIT), "{}", sg.log());
    assert!(listed(&sg).is_empty());
    let s = calls(&sg, &uas, "beta", "+12125550110", 1);
    assert_eq!((s.responses_with(180), s.responses_with(403)), (1, 0), "{s:#?}");
}
