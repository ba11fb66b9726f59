//! Call behaviour through the real binary over UDP with sipp, record-routed so that the BYEs
//! come through: answered calls of 1 s and 30 s, calls the next hop refuses (486), calls the
//! caller cancels (487), exact figures at `GET /accounts/<id>` and `/caller-ids`, the call at
//! which a low ASR suspends the caller ID (another of the account's caller IDs still passes),
//! the suspension kept across a kill -9; `max_concurrent` with `sipp -l`, and the slot of a
//! call whose BYE never comes freed after `max_call_seconds`; sequential dialling refused
//! (`max_sequential`), and report mode forwarding what it would refuse or suspend; a user
//! agent that ignores Record-Route (its BYEs end nothing, and are counted and logged).
mod common;

use common::{Ports, Sipguard, Sipp, SippStats, http, require_sipp};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const A: &str = "+12125550100";
const B: &str = "+12125550101";

const TEMPLATE: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]
record_route = true

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
"#;

const OWNED: &str = "account,number\nacme,+12125550100\nacme,+12125550101\n";

fn start(behaviour: &str, ports: Ports, state: Option<&Path>) -> Sipguard {
    let mut config = format!("{TEMPLATE}\n[screening.behaviour]\n{behaviour}\n");
    if let Some(dir) = state {
        config.push_str(&format!("\n[state]\ndir = \"{}\"\n", dir.display()));
    }
    Sipguard::start_with(&config, ports, &[("owned.csv", OWNED)])
}

/// `n` calls of `scenario` from `caller` to distinct, far apart callees (`first` on), at most
/// `parallel` at once, each answered call lasting `hold_ms`.
fn calls(sg: &Sipguard, scenario: &str, caller: &str, first: u64, n: u64, parallel: u64, hold_ms: u64) -> SippStats {
    let rows: Vec<String> = (0..n).map(|i| format!("acme;{caller};+1312555{:04}", first + 37 * i)).collect();
    place(sg, scenario, &rows, parallel, hold_ms)
}

/// One call of `scenario` per row (`account;caller;callee`), in row order, at most
/// `parallel` at once, each answered call lasting `hold_ms`.
fn place(sg: &Sipguard, scenario: &str, rows: &[String], parallel: u64, hold_ms: u64) -> SippStats {
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let n = rows.len();
    let (m, l, d, uas) = (n.to_string(), parallel.to_string(), hold_ms.to_string(), sg.upstream_addr().to_string());
    let s = Sipp::uac_with_calls(
        scenario,
        sg.udp_addr(),
        &rows,
        &["-m", &m, "-l", &l, "-r", "20", "-d", &d, "-key", "uas", &uas],
    );
    assert_eq!((s.failed, s.unexpected), (0, 0), "{s:#?}");
    s
}

fn account(sg: &Sipguard) -> Value {
    let (code, body) = http(sg, "GET", "/accounts/acme", None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["behaviour"].clone()
}

fn figure(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Poll the account's figures until `done` holds; the figures and the time it took.
fn poll(sg: &Sipguard, timeout: Duration, done: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let f = account(sg);
        if done(&f) {
            return (f, started.elapsed());
        }
        assert!(started.elapsed() < timeout, "still {f} after {timeout:?}");
        std::thread::sleep(common::POLL);
    }
}

#[test]
fn figures_and_the_call_at_which_a_low_asr_suspends_the_caller_id() {
    if !require_sipp() {
        return;
    }
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ports = Ports::allocate();
    let rules = "window_minutes = 60\nmin_attempts = 10\nmin_asr = 0.5\nshort_call_seconds = 2\n\
                 action = \"suspend_caller_id\"\nsuspend_minutes = 10\n";
    let sg = start(rules, ports, Some(state.path()));

    // Three answered calls: two of 1 s (short, at once) and one of 30 s.
    let uas = Sipp::uas("uas_answer.xml", ports.upstream);
    assert_eq!(calls(&sg, "uac_timed.xml", A, 1, 2, 2, 1000).responses_with(200), 4, "two 200s, two BYE 200s");
    assert_eq!(calls(&sg, "uac_timed.xml", A, 100, 1, 1, 30_000).responses_with(200), 2);
    drop(uas);
    // Five the next hop refuses, two the caller cancels.
    let uas = Sipp::uas("uas_busy.xml", ports.upstream);
    assert_eq!(calls(&sg, "uac_timed.xml", A, 200, 5, 1, 0).responses_with(486), 5);
    drop(uas);
    let uas = Sipp::uas("uas_ring.xml", ports.upstream);
    assert_eq!(calls(&sg, "uac_cancel.xml", A, 500, 2, 1, 0).responses_with(487), 2);
    drop(uas);

    // Ten attempts, three answered: ASR 0.3; two of the three calls under 2 s.
    let (f, _) = poll(&sg, Duration::from_secs(5), |f| f["concurrent"] == 0);
    assert_eq!(
        (f["attempts"].as_u64(), f["answered"].as_u64(), f["ended"].as_u64()),
        (Some(10), Some(3), Some(3)),
        "{f}"
    );
    assert_eq!((figure(&f, "asr"), f["short_calls"].as_u64(), figure(&f, "short_call_ratio")), (0.3, Some(2), 0.6667));
    let acd = figure(&f, "acd_seconds");
    assert!((32.0 / 3.0..11.0).contains(&acd), "ACD {acd}: (1 + 1 + 30) / 3 s and the relay's own time");
    assert_eq!(f["window_minutes"].as_u64(), Some(60));
    let (code, body) = http(&sg, "GET", "/accounts/acme/caller-ids", None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    let rows = v["caller_ids"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!((rows[0]["caller_id"].as_str(), rows[0]["attempts"].as_u64()), (Some(A), Some(10)));
    assert_eq!((figure(&rows[0], "asr"), rows[0]["short_calls"].as_u64()), (0.3, Some(2)));
    assert_eq!(http(&sg, "GET", "/accounts/nobody/caller-ids", None).0, 404);

    // The eleventh call is judged: refused and the caller ID suspended; the twelfth is
    // refused as suspended. The account's other caller ID still passes.
    let uas = Sipp::uas("uas_answer.xml", ports.upstream);
    let s = calls(&sg, "uac_timed.xml", A, 1000, 2, 1, 0);
    assert_eq!((s.responses_with(403), s.responses_with(200)), (2, 0), "{s:#?}");
    assert_eq!(calls(&sg, "uac_timed.xml", B, 2000, 1, 1, 0).responses_with(200), 2);
    let log = sg.decisions_until(|log| log.iter().filter(|d| d["caller"] == A && d["rule"].is_string()).count() >= 2);
    let fired: Vec<&str> = log.iter().filter(|d| d["caller"] == A).filter_map(|d| d["rule"].as_str()).collect();
    assert_eq!(fired, ["behaviour", "suspended"], "{log:?}");
    let tripped = log.iter().find(|d| d["rule"] == "behaviour").unwrap_or_else(|| panic!());
    let reading = &tripped["counters"][0];
    assert_eq!(
        (reading["name"].as_str(), reading["value"].as_u64(), reading["limit"].as_u64()),
        (Some("caller_id_asr_permille"), Some(300), Some(500)),
        "{tripped}"
    );
    assert!(
        tripped["detail"].as_str().is_some_and(|d| d.ends_with("caller ID asr 0.300 below 0.5 over 10 attempts")),
        "{tripped}"
    );
    let (code, body) = http(&sg, "GET", "/suspensions", None);
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    let listed = v["suspensions"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!((listed[0]["id"].as_str(), listed[0]["source"].as_str()), (Some(A), Some("behaviour")));
    assert_eq!(listed[0]["cause"].as_str(), Some("caller ID asr 0.300 below 0.5 over 10 attempts"));
    assert_eq!(sg.log().matches("suspended for its call behaviour").count(), 1, "{}", sg.log());
    let f = account(&sg);
    assert_eq!(f["attempts"].as_u64(), Some(11), "the refused calls are no attempts: {f}");

    // The figures and the suspension as metrics (the account's, not the caller ID's).
    let (_, metrics) = http(&sg, "GET", "/metrics", None);
    assert!(metrics.contains("sipguard_behaviour_attempts{account=\"acme\"} 11"), "{metrics}");
    assert!(metrics.contains("sipguard_suspensions_active{subject=\"caller_id\",source=\"behaviour\"} 1"), "{metrics}");
    assert!(!metrics.contains("12125550100"), "no caller ID as a label");

    // kill -9 once the journal has it: the restarted proxy still refuses the caller ID.
    let journal = state.path().join("suspensions.journal");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&journal).unwrap_or_default().contains(A) {
        assert!(Instant::now() < deadline, "the suspension never reached the journal");
        std::thread::sleep(common::POLL);
    }
    drop(sg);
    let sg = start(rules, ports, Some(state.path()));
    let s = calls(&sg, "uac_timed.xml", A, 3000, 1, 1, 0);
    assert_eq!((s.responses_with(403), s.responses_with(200)), (1, 0), "{s:#?}");
    assert_eq!(
        sg.decisions_until(|log| log.last().is_some_and(|d| d["rule"] == "suspended"))
            .last()
            .and_then(|d| d["rule"].as_str().map(str::to_string))
            .as_deref(),
        Some("suspended")
    );
    assert_eq!(calls(&sg, "uac_timed.xml", B, 4000, 1, 1, 0).responses_with(200), 2);
    drop(uas);
}

#[test]
fn max_concurrent_with_parallel_calls_and_a_missed_bye_freeing_its_slot() {
    if !require_sipp() {
        return;
    }
    let ports = Ports::allocate();
    let sg = start("max_concurrent = 2\nmax_call_seconds = 3\n", ports, None);
    let _uas = Sipp::uas("uas_answer.xml", ports.upstream);

    // An answered call whose BYE never comes holds one slot.
    assert_eq!(calls(&sg, "uac_no_bye.xml", A, 1, 1, 1, 0).responses_with(200), 1);
    let held = Instant::now();
    assert_eq!(account(&sg)["concurrent"].as_u64(), Some(1));

    // Three calls of 1.5 s at once: one more fits, two are refused.
    let s = calls(&sg, "uac_timed.xml", A, 100, 3, 3, 1500);
    assert_eq!((s.responses_with(200), s.responses_with(403)), (2, 2), "{s:#?}");
    let concurrent = |log: &[Value]| log.iter().filter(|d| d["rule"] == "concurrent").count();
    let refused: Vec<Value> =
        sg.decisions_until(|log| concurrent(log) >= 2).into_iter().filter(|d| d["rule"] == "concurrent").collect();
    assert_eq!(refused.len(), 2);
    let r = &refused[0]["counters"][0];
    assert_eq!((r["name"].as_str(), r["value"].as_u64(), r["limit"].as_u64()), (Some("concurrent"), Some(2), Some(2)));

    // The missed BYE's slot is freed max_call_seconds after its answer, not before.
    let (f, _) = poll(&sg, Duration::from_secs(10), |f| f["concurrent"] == 0);
    assert!(held.elapsed() >= Duration::from_millis(2500), "freed after {:?}", held.elapsed());
    assert_eq!(
        (f["attempts"].as_u64(), f["answered"].as_u64(), f["ended"].as_u64()),
        (Some(2), Some(2), Some(1)),
        "{f}"
    );
    let s = calls(&sg, "uac_timed.xml", A, 300, 2, 2, 200);
    assert_eq!((s.responses_with(200), s.responses_with(403)), (4, 0), "{s:#?}");
    let (_, metrics) = http(&sg, "GET", "/metrics", None);
    assert!(metrics.contains("sipguard_behaviour_call_events_total{event=\"expired_answered\"} 1"), "{metrics}");
}

#[test]
fn a_user_agent_ignoring_record_route_keeps_its_calls_live_and_is_counted_and_logged_once() {
    if !require_sipp() {
        return;
    }
    let ports = Ports::allocate();
    let sg = start("max_concurrent = 3\nmax_call_seconds = 600\n", ports, None);
    let _uas = Sipp::uas("uas_answer.xml", ports.upstream);

    // Two calls hung up with BYEs that carry no Route: relayed (the UAC gets its 200 to
    // each BYE or the call fails), but they prove no dialog, so neither call ends here.
    calls(&sg, "uac_ignores_rr.xml", A, 1, 2, 1, 100);
    let f = account(&sg);
    assert_eq!(
        (f["attempts"].as_u64(), f["answered"].as_u64(), f["ended"].as_u64(), f["concurrent"].as_u64()),
        (Some(2), Some(2), Some(0), Some(2)),
        "{f}"
    );
    let (_, metrics) = http(&sg, "GET", "/metrics", None);
    assert!(metrics.contains("sipguard_behaviour_call_events_total{event=\"unproven_bye\"} 2"), "{metrics}");
    assert!(metrics.contains("sipguard_behaviour_call_events_total{event=\"ended\"} 0"), "{metrics}");
    let warning = "came without our Record-Route";
    assert!(sg.wait_for_log(warning, Duration::from_secs(5)), "{}", sg.log());
    assert_eq!(sg.log().matches(warning).count(), 1, "logged once: {}", sg.log());

    // A record-routed call of the same account still ends with its BYE.
    calls(&sg, "uac_timed.xml", A, 500, 1, 1, 100);
    let (f, _) = poll(&sg, Duration::from_secs(5), |f| f["ended"] == 1);
    assert_eq!(f["concurrent"].as_u64(), Some(2), "{f}");
}

#[test]
fn sequential_dialling_is_refused_and_report_mode_logs_without_refusing_or_suspending() {
    if !require_sipp() {
        return;
    }
    let ports = Ports::allocate();
    // acme enforces; gamma runs the same rule in report mode; beta (report) has a ratio rule
    // that would suspend the whole account.
    let config = format!(
        "{TEMPLATE}
[[account]]
id = \"beta\"
mode = \"report\"
behaviour = {{ min_attempts = 3, min_asr = 0.5, action = \"suspend_account\" }}

[[account]]
id = \"gamma\"
mode = \"report\"

[screening.behaviour]
max_sequential = 3
"
    );
    let owned = format!("{OWNED}beta,+12125550110\ngamma,+12125550120\n");
    let sg = Sipguard::start_with(&config, ports, &[("owned.csv", owned.as_str())]);
    let uas = Sipp::uas("uas_answer.xml", ports.upstream);

    // Five callees in a row, then one far away: the fourth and fifth make runs of 4 and 5
    // (over 3) and are refused; the far one starts a new run.
    let callees = ["+13125550001", "+13125550002", "+13125550003", "+13125550004", "+13125550005", "+13125559000"];
    let rows: Vec<String> = callees.iter().map(|c| format!("acme;{A};{c}")).collect();
    let s = place(&sg, "uac_timed.xml", &rows, 1, 0);
    assert_eq!(
        (s.responses_with(200), s.responses_with(403)),
        (8, 2),
        "four calls answered (INVITE and BYE), two refused: {s:#?}"
    );
    // The same calls from the report-mode account all go through, marked.
    let rows: Vec<String> = callees.iter().map(|c| format!("gamma;+12125550120;{c}")).collect();
    let s = place(&sg, "uac_timed.xml", &rows, 1, 0);
    assert_eq!((s.responses_with(200), s.responses_with(403)), (12, 0), "{s:#?}");

    let log = sg.wait_decisions(12);
    let seen = |account: &str| -> Vec<(String, String, String)> {
        log.iter()
            .filter(|d| d["account"] == account)
            .map(|d| {
                let f = |k: &str| d[k].as_str().unwrap_or("").to_string();
                (f("callee"), f("verdict"), f("rule"))
            })
            .collect()
    };
    let want = |verdict: &str| -> Vec<(String, String, String)> {
        callees
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (v, r) = if i == 3 || i == 4 { (verdict, "sequential") } else { ("forward", "") };
                (c.to_string(), v.to_string(), r.to_string())
            })
            .collect()
    };
    assert_eq!(seen("acme"), want("reject"), "{log:#?}");
    assert_eq!(seen("gamma"), want("would_reject"), "{log:#?}");
    let refused = log.iter().find(|d| d["account"] == "acme" && d["rule"] == "sequential").unwrap_or_else(|| panic!());
    let r = &refused["counters"][0];
    assert_eq!(
        (r["name"].as_str(), r["value"].as_u64(), r["limit"].as_u64()),
        (Some("sequential_run"), Some(4), Some(3))
    );
    drop(uas);

    // beta: three calls the next hop refuses (ASR 0 over 3 attempts), then two more. Report
    // mode: both are forwarded, the would-be account suspension is logged once, nothing is
    // suspended.
    let uas = Sipp::uas("uas_busy.xml", ports.upstream);
    let rows: Vec<String> = (0..5).map(|i| format!("beta;+12125550110;+1415555{:04}", 100 * i)).collect();
    let s = place(&sg, "uac_timed.xml", &rows, 1, 0);
    assert_eq!((s.responses_with(486), s.responses_with(403)), (5, 0), "{s:#?}");
    let log = sg.wait_decisions(17);
    let beta: Vec<(&str, &str)> = log
        .iter()
        .filter(|d| d["account"] == "beta")
        .map(|d| (d["verdict"].as_str().unwrap_or(""), d["rule"].as_str().unwrap_or("")))
        .collect();
    let mut want = vec![("forward", ""); 3];
    want.extend([("would_reject", "behaviour"); 2]);
    assert_eq!(beta, want, "{log:#?}");
    assert!(sg.wait_for_log("would be suspended for its call behaviour (report mode)", Duration::from_secs(5)));
    // Once, and no enforced suspension ("suspended for its call behaviour" alone).
    assert_eq!(sg.log().matches("would be suspended for its call behaviour").count(), 1, "{}", sg.log());
    assert_eq!(sg.log().matches("suspended for its call behaviour").count(), 1, "{}", sg.log());
    let (code, body) = http(&sg, "GET", "/suspensions", None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["suspensions"].as_array().map(Vec::len), Some(0), "{v}");
    drop(uas);
}
