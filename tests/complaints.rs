//! Complaints through the real binary with sipp calls: a complaint about a forwarded call is
//! attributed to the account that placed it (by Call-ID, by the index of forwarded calls, by
//! the caller ID's owner), the complainant's number is refused to that account at once (608,
//! list `complaints`) while other callees pass, the caller ID and then the account are
//! suspended (403 `suspended`), all of it survives SIGTERM and kill -9, a lift survives them
//! too, and bad input is refused whole with the field or FILE:LINE named.
mod common;

use common::decisions::WAIT;
use common::{BIN, Ports, Signal, Sipguard, Sipp, SippStats, require_sipp};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "t0ken";
const CALLER_A: &str = "+12125550100";
const CALLER_B: &str = "+12125550101";
const CALLEE_1: &str = "+13125550199";
const CALLEE_2: &str = "+13125550198";
const CALLEE_3: &str = "+13125550197";

const TEMPLATE: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "t0ken"

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

[[account]]
id = "gamma"

[complaints]
"#;

const OWNED: &str = "account,number\nacme,+12125550100\nacme,+12125550101\nbeta,+12125550110\ngamma,+12125550120\n";

fn start(state: &Path, ports: Ports) -> Sipguard {
    let config = format!("{TEMPLATE}\n[state]\ndir = \"{}\"\n", state.display());
    Sipguard::start_with(&config, ports, &[("owned.csv", OWNED)])
}

/// A state directory, the proxy on fresh ports keeping its state there, and a sipp UAS as
/// its next hop.
fn bed() -> (tempfile::TempDir, Ports, Sipguard, Sipp) {
    let state = tempfile::tempdir().unwrap();
    let ports = Ports::allocate();
    let sg = start(state.path(), ports);
    let uas = Sipp::uas("uas_basic.xml", ports.upstream);
    (state, ports, sg, uas)
}

fn now_rfc3339() -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::now()).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One HTTP request with an optional bearer token and JSON body: (status, body).
fn api(sg: &Sipguard, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], sg.ports().admin));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string())
}

fn complain(sg: &Sipguard, body: Value) -> Value {
    let (code, text) = api(sg, "POST", "/v1/complaints", Some(TOKEN), Some(&body.to_string()));
    assert_eq!(code, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn listed(sg: &Sipguard, query: &str) -> Value {
    let (code, text) = api(sg, "GET", &format!("/v1/complaints{query}"), Some(TOKEN), None);
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// sipp calls `account;caller;callee`, one at a time, against a sipp UAS.
fn calls(sg: &Sipguard, uas: &Sipp, account: &str, caller: &str, callee: &str, n: usize) -> SippStats {
    let row = format!("{account};{caller};{callee}");
    let rows: Vec<&str> = (0..n).map(|_| row.as_str()).collect();
    let (m, uas) = (n.to_string(), uas.addr().to_string());
    Sipp::uac_with_calls(
        "uac_screened.xml",
        sg.udp_addr(),
        &rows,
        &["-m", &m, "-r", "20", "-l", "1", "-key", "uas", &uas],
    )
}

fn answered(s: &SippStats) -> (u64, u64, u64) {
    (s.responses_with(180), s.responses_with(608), s.responses_with(403))
}

/// The decision log line (polled: it is written by a thread of its own) matching `pred`.
fn decision(sg: &Sipguard, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = sg.decisions();
        if let Some(v) = log.iter().rev().find(|v| pred(v)) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "no such decision in {log:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cli(sg: &Sipguard, args: &[&str]) -> (Option<i32>, String, String) {
    let admin = format!("localhost:{}", sg.ports().admin);
    let out = Command::new(BIN).args(args).args(["--admin", &admin, "--token", TOKEN]).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_complaint_bars_the_callee_then_suspends_and_everything_survives_restarts() {
    if !require_sipp() {
        return;
    }
    let (state, ports, mut sg, uas) = bed();

    // Calls placed: acme's caller ID A to two callees.
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_A, CALLEE_1, 2)), (2, 0, 0));
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_A, CALLEE_2, 1)), (1, 0, 0));

    // The callee complains: matched to acme's forwarded call through the index.
    let v = complain(&sg, json!({"callee": CALLEE_1, "caller": CALLER_A, "time": now_rfc3339(), "category": "energy"}));
    assert_eq!(v["id"], 1);
    assert_eq!((v["attribution"]["account"].as_str(), v["attribution"]["by"].as_str()), (Some("acme"), Some("index")));
    assert_eq!(v["attribution"]["call"]["source"], "127.0.0.1");
    let effects = v["effects"].as_array().unwrap();
    assert_eq!(effects[0], json!({"effect":"listed","list":"complaints","account":"acme","number":CALLEE_1}));
    assert_eq!((effects[1]["effect"].as_str(), effects[1]["id"].as_str()), (Some("suspended"), Some(CALLER_A)));

    // acme's other caller ID: the complainant is refused (608, list complaints), others pass.
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_B, CALLEE_1, 2)), (0, 2, 0));
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_B, CALLEE_2, 2)), (2, 0, 0));
    // beta may still call the complainant: the list is acme's own.
    assert_eq!(answered(&calls(&sg, &uas, "beta", "+12125550110", CALLEE_1, 1)), (1, 0, 0));
    // The complained-of caller ID is suspended.
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_A, CALLEE_3, 1)), (0, 0, 1));
    let d = decision(&sg, |v| v["list"] == "complaints");
    assert_eq!((d["code"].as_u64(), d["rule"].as_str(), d["account"].as_str()), (Some(608), Some("dnc"), Some("acme")));
    assert!(d["detail"].as_str().unwrap().contains("by complaint #1 at 20"), "{d}");
    let d = decision(&sg, |v| v["rule"] == "suspended");
    assert!(d["detail"].as_str().unwrap().contains("suspended by complaints since"), "{d}");
    assert!(d["detail"].as_str().unwrap().contains("#1 at"), "{d}");

    // A second complaint within 30 days suspends the account: every caller ID, every callee.
    let v = complain(&sg, json!({"callee": CALLEE_2, "caller": CALLER_B, "time": now_rfc3339()}));
    assert_eq!(v["attribution"]["account"], "acme");
    assert!(v["effects"].as_array().unwrap().iter().any(|e| e["subject"] == "account" && e["id"] == "acme"), "{v}");
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_B, CALLEE_3, 2)), (0, 0, 2));
    assert_eq!(answered(&calls(&sg, &uas, "beta", "+12125550110", CALLEE_3, 1)), (1, 0, 0));

    // SIGTERM and start again: complaints, list and suspensions are all still there.
    sg.send_signal(Signal::Term);
    assert!(sg.wait_exit(WAIT).success());
    drop(sg);
    let sg = start(state.path(), ports);
    assert_eq!(listed(&sg, "?account=acme")["count"], 2);
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_B, CALLEE_3, 1)), (0, 0, 1));

    // A complaint acknowledged just before a kill -9 is kept, with what it did.
    let v = complain(&sg, json!({"callee": CALLEE_3, "caller": "+12125550110", "time": now_rfc3339()}));
    assert_eq!((v["id"].as_u64(), v["attribution"]["by"].as_str()), (Some(3), Some("index")), "{v}");
    drop(sg); // kill -9
    let sg = start(state.path(), ports);
    assert_eq!(listed(&sg, "")["count"], 3);
    assert_eq!(answered(&calls(&sg, &uas, "beta", "+12125550110", CALLEE_3, 1)), (0, 0, 1), "beta's caller ID");

    // Lifting resumes acme's calls; the complainants stay off its list; kill -9 keeps the lift.
    for id in ["acme", "12125550100", "12125550101"] {
        let (code, out, err) = cli(&sg, &["suspension", "lift", id]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_A, CALLEE_3, 1)), (1, 0, 0));
    drop(sg);
    let sg = start(state.path(), ports);
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_B, CALLEE_3, 1)), (1, 0, 0));
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_A, CALLEE_1, 1)), (0, 1, 0));
    assert_eq!(answered(&calls(&sg, &uas, "acme", CALLER_B, CALLEE_2, 1)), (0, 1, 0));

    // A torn last line in the journal (a crash mid-write) is skipped, not fatal.
    drop(sg);
    let journal = state.path().join("complaints.journal");
    let mut text = std::fs::read_to_string(&journal).unwrap();
    text.push_str(r#"{"op":"complaint","id":4,"rec"#);
    std::fs::write(&journal, text).unwrap();
    let sg = start(state.path(), ports);
    assert!(sg.wait_for_log("skipped unreadable lines", WAIT), "{}", sg.log());
    assert_eq!(listed(&sg, "")["count"], 3);
}

#[test]
fn attribution_by_call_id_index_and_owner_traceback_and_bad_input() {
    if !require_sipp() {
        return;
    }
    let (_state, _ports, sg, uas) = bed();
    assert_eq!(answered(&calls(&sg, &uas, "beta", "+12125550110", CALLEE_1, 1)), (1, 0, 0));
    let forwarded = decision(&sg, |v| v["account"] == "beta" && v["verdict"] == "forward");
    let call_id = forwarded["call_id"].as_str().unwrap().to_string();

    // By Call-ID: the complainant saw another number (spoofed or misremembered); the
    // Call-ID the carrier quotes still names beta's call.
    let v =
        complain(&sg, json!({"callee": CALLEE_2, "caller": "+14155550100", "time": now_rfc3339(), "call_id": call_id}));
    assert_eq!(
        (v["attribution"]["account"].as_str(), v["attribution"]["by"].as_str()),
        (Some("beta"), Some("call_id"))
    );
    let by_call_id = v["id"].as_u64().unwrap();
    // By the index: caller, callee and time.
    let v = complain(&sg, json!({"callee": CALLEE_1, "caller": "+12125550110", "time": now_rfc3339()}));
    assert_eq!(v["attribution"]["by"], "index");
    // By the owner of the caller ID: gamma placed no call through us to that callee.
    let v = complain(&sg, json!({"callee": CALLEE_3, "caller": "+12125550120", "time": now_rfc3339()}));
    assert_eq!((v["attribution"]["account"].as_str(), v["attribution"]["by"].as_str()), (Some("gamma"), Some("owner")));
    let by_owner = v["id"].as_u64().unwrap();
    // Nobody's: kept and counted.
    let v = complain(&sg, json!({"callee": CALLEE_3, "caller": "+14155550199", "time": now_rfc3339()}));
    assert_eq!((v["attribution"]["account"].clone(), v["attribution"]["by"].as_str()), (Value::Null, Some("none")));
    assert_eq!(v["effects"], json!([]));

    // Traceback: the decision record of beta's call.
    let (code, text) = api(&sg, "GET", &format!("/v1/complaints/{by_call_id}/traceback"), Some(TOKEN), None);
    assert_eq!(code, 200, "{text}");
    let t: Value = serde_json::from_str(&text).unwrap();
    let call = &t["call"];
    assert_eq!(
        (call["source"].as_str(), call["account"].as_str(), call["caller"].as_str(), call["callee"].as_str()),
        (Some("127.0.0.1"), Some("beta"), Some("+12125550110"), Some(CALLEE_1))
    );
    assert_eq!((call["verdict"].as_str(), call["rules"].clone()), (Some("forward"), json!([])));
    assert_eq!(call["time"].as_str().map(|s| s.len()), Some(20), "{call}");
    assert_eq!(api(&sg, "GET", &format!("/v1/complaints/{by_owner}/traceback"), Some(TOKEN), None).0, 404);
    assert_eq!(api(&sg, "GET", "/v1/complaints/99/traceback", Some(TOKEN), None).0, 404);

    // Bad input: 400 naming the field; no token: 401. Nothing was filed by them.
    let (code, text) = api(&sg, "POST", "/v1/complaints", Some(TOKEN), Some("{\"callee\":"));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("malformed JSON"), "{text}");
    let bad = json!({"callee": "12", "caller": CALLER_A, "time": now_rfc3339()}).to_string();
    let (code, text) = api(&sg, "POST", "/v1/complaints", Some(TOKEN), Some(&bad));
    assert_eq!(
        (code, serde_json::from_str::<Value>(&text).unwrap()["field"].as_str()),
        (400, Some("callee")),
        "{text}"
    );
    let good = json!({"callee": CALLEE_1, "caller": CALLER_A, "time": now_rfc3339()}).to_string();
    assert_eq!(api(&sg, "POST", "/v1/complaints", None, Some(&good)).0, 401);
    assert_eq!(api(&sg, "POST", "/v1/complaints", Some("wrong"), Some(&good)).0, 401);
    assert_eq!(api(&sg, "GET", "/v1/complaints", None, None).0, 401);
    assert_eq!(listed(&sg, "")["count"], 4);
    let (code, text) = api(&sg, "GET", "/v1/complaints?since=soon", Some(TOKEN), None);
    assert_eq!(code, 400, "{text}");

    // An import with a bad line names it and files nothing; a good one files all.
    let now = now_rfc3339();
    let bad = format!("time,caller,callee,category\n{now},+12125550120,+13125550150,x\n{now},+12125550120,123,x\n");
    sg.write_file("bad.csv", &bad);
    let file = sg.dir().join("bad.csv");
    let (code, out, err) = cli(&sg, &["complaint", "import", file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains(&format!("{}:3: callee: `123` is not a phone number", file.display())), "{err}");
    assert_eq!(listed(&sg, "")["count"], 4, "nothing half-applied");
    let ftc = format!(
        "Company_Phone_Number,Created_Date,Violation_Date,Consumer_City,Consumer_State,Consumer_Area_Code,Subject,Recorded_Message_Or_Robocall\n\
         2125550120,{d},{d},Chicago,IL,312,\"Reducing your debt (credit cards, mortgage)\",Y\n",
        d = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
    );
    sg.write_file("ftc.csv", &ftc);
    let (code, out, err) =
        cli(&sg, &["complaint", "import", sg.dir().join("ftc.csv").to_str().unwrap(), "--format", "ftc"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("filed 1 complaints, 1 attributed"), "{out}");
    let (code, out, err) = cli(&sg, &["complaint", "add", "--callee", CALLEE_3, "--caller", "+12125550120"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("complaint #6 attributed to gamma by owner"), "{out}");
    let (code, out, _) = cli(&sg, &["complaint", "list", "--account", "gamma"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("3 complaints") && out.contains("1312*"), "{out}");

    // Metrics: per attributed account, and unattributed.
    let (_, metrics) = api(&sg, "GET", "/metrics", Some(TOKEN), None);
    assert!(metrics.contains("sipguard_complaints_total{account=\"beta\"} 2"), "{metrics}");
    assert!(metrics.contains("sipguard_complaints_total{account=\"gamma\"} 3"), "{metrics}");
    assert!(metrics.contains("sipguard_complaints_total{account=\"unattributed\"} 1"), "{metrics}");
}

#[test]
fn an_import_of_ten_thousand_files_each_one_and_an_oversized_one_files_none() {
    if !require_sipp() {
        return;
    }
    let (state, _ports, sg, uas) = bed();
    let now = now_rfc3339();
    let records = |n: usize| -> String {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"callee": format!("+1415{:07}", 5_550_000 + i), "caller": "+12125550110", "time": now}))
            .collect();
        json!({ "complaints": list }).to_string()
    };

    // 10,000 complaints in one import: all filed, each complainant on beta's list.
    let started = Instant::now();
    let (code, text) = api(&sg, "POST", "/v1/complaints/import", Some(TOKEN), Some(&records(10_000)));
    let took = started.elapsed();
    assert_eq!(code, 201, "{}", &text[..text.len().min(500)]);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["filed"], 10_000);
    // A loose bound: the import is linear work of well under a second here; a per-record
    // cost that grew with what was filed before it (10,000^2 steps) would not fit.
    assert!(took < Duration::from_secs(20), "10,000 complaints took {took:?}");
    assert_eq!(listed(&sg, "?account=beta&limit=1")["count"], 10_000);
    let journal = std::fs::read_to_string(state.path().join("complaints.journal")).unwrap();
    assert!(journal.lines().count() >= 10_000, "every complaint journalled");

    // One record over the cap: 413 naming the field, nothing filed.
    let (code, text) = api(&sg, "POST", "/v1/complaints/import", Some(TOKEN), Some(&records(100_001)));
    assert_eq!(code, 413, "{}", &text[..text.len().min(500)]);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["field"], "complaints");
    assert_eq!(listed(&sg, "?limit=1")["count"], 10_000);

    // Lift the suspensions the complaints caused: the last complainant still gets 608 from
    // beta, a number nobody complained from passes.
    for id in ["beta", "12125550110"] {
        let (code, out, err) = cli(&sg, &["suspension", "lift", id]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    assert_eq!(answered(&calls(&sg, &uas, "beta", "+12125550110", "+14155559999", 1)), (0, 1, 0));
    assert_eq!(answered(&calls(&sg, &uas, "beta", "+12125550110", "+14155560000", 1)), (1, 0, 0));
}
