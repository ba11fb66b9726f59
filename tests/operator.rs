//! Operator experience through the real binary: check-config loads every file a config names
//! as start-up does (and the proxy refuses the same configs, exit 2, each message once),
//! unknown keys are reported at their line with the nearest valid key, impossible callees and
//! country-wide owned blocks are refused, and the decision log survives rotation under sipp
//! load with no line lost or written twice.
mod common;

use common::raw::sip;
use common::{NextHop, Ports, Signal, Sipguard, Sipp, UdpPeer, check_config, require_sipp};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A screening config whose `[dnc]` part is `{dnc}`.
const WITH_LISTS: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]
[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"
[screening]
unknown_account = "forward"
[[account]]
id = "acme"
sources = ["192.0.2.0/24"]
"#;

fn with_dnc(dnc: &str) -> String {
    format!("{WITH_LISTS}{dnc}")
}

/// Run the proxy on `config` (in `dir`) and return its exit code and output; it must exit
/// by itself within WAIT.
fn run_proxy(dir: &Path) -> (Option<i32>, String) {
    let out_path = dir.join("proxy.out");
    let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("{e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(common::BIN)
        .arg("-c")
        .arg(dir.join("sipguard.toml"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(common::POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the proxy started on an invalid config:\n{}",
                    std::fs::read_to_string(&out_path).unwrap_or_default()
                );
            }
        }
    };
    (status.code(), std::fs::read_to_string(&out_path).unwrap_or_default())
}

#[test]
fn check_config_reports_every_bad_line_of_a_strict_list_and_the_proxy_refuses_it_the_same() {
    let dnc = "[dnc]\nstrict = true\n[[dnc.list]]\nname = \"internal\"\npath = \"internal.txt\"\n";
    let list = "+12125550100\ngarbage\n+12125550101\n+1212555010x\n\n12\n";
    let (code, out, dir) = check_config(&with_dnc(dnc), &[("internal.txt", list)]);
    assert_eq!(code, Some(2), "{out}");
    let file = dir.path().join("internal.txt").display().to_string();
    for (line, what) in [(2, "`garbage`"), (4, "`+1212555010x`"), (6, "`12`")] {
        let needle = format!("{file}:{line}: ");
        let at = out.lines().find(|l| l.starts_with(&needle)).unwrap_or_else(|| panic!("no {needle} in:\n{out}"));
        assert!(at.contains(what), "{at}");
    }
    assert!(!out.contains(": ok"), "{out}");
    // The proxy on the same config: exit 2, the problem printed once.
    let (code, proxy_out) = run_proxy(dir.path());
    assert_eq!(code, Some(2), "{proxy_out}");
    let first = format!("{file}:2: not a phone number: `garbage`");
    assert_eq!(proxy_out.matches(&first).count(), 1, "{proxy_out}");
}

#[test]
fn a_lenient_list_passes_with_a_count_and_its_first_bad_lines() {
    let dnc = "[[dnc.list]]\nname = \"internal\"\npath = \"internal.txt\"\n";
    let mut list = String::from("+12125550100\n");
    for i in 0..30 {
        list.push_str(&format!("bad{i}\n"));
    }
    let (code, out, dir) = check_config(&with_dnc(&format!("[dnc]\n{dnc}")), &[("internal.txt", &list)]);
    assert_eq!(code, Some(0), "{out}");
    let file = dir.path().join("internal.txt").display().to_string();
    assert!(out.contains("30 bad lines skipped"), "{out}");
    assert!(out.contains(&format!("{file}:2: warning: skipped: not a phone number: `bad0`")), "{out}");
    assert!(!out.contains(&format!("{file}:31:")), "only the first lines: {out}");
}

#[test]
fn a_truncated_snapshot_fails_check_config_at_the_line_naming_it_and_the_proxy_with_exit_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text: String = (0..2000).map(|i| format!("+1212555{i:04}\n")).collect();
    std::fs::write(dir.path().join("national.txt"), text).unwrap_or_else(|e| panic!("{e}"));
    let snap = dir.path().join("national.snap");
    let built = Command::new(common::BIN)
        .args(["dnc", "build", "--out"])
        .arg(&snap)
        .arg(dir.path().join("national.txt"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(built.status.success(), "{built:?}");
    let bytes = std::fs::read(&snap).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let dnc = "[dnc]\n[[dnc.list]]\nname = \"national\"\npath = \"national.snap\"\n";
    let config = Ports::allocate().render(&with_dnc(dnc), dir.path());
    let config_path = dir.path().join("sipguard.toml");
    std::fs::write(&config_path, &config).unwrap_or_else(|e| panic!("{e}"));
    let line = config.lines().position(|l| l.contains("national.snap")).map(|i| i + 1).unwrap_or(0);
    let out =
        Command::new(common::BIN).arg("check-config").arg(&config_path).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    let at = format!("{}:{line}: ", config_path.display());
    assert!(text.lines().any(|l| l.starts_with(&at) && l.contains("snapshot refused")), "{text}");
    let (code, proxy_out) = run_proxy(dir.path());
    assert_eq!(code, Some(2), "{proxy_out}");
    assert_eq!(proxy_out.matches("snapshot refused").count(), 1, "{proxy_out}");
}

#[test]
fn bad_consent_lines_of_a_strict_dnc_fail_check_config() {
    let dnc = "[dnc]\nstrict = true\n[[dnc.list]]\nname = \"n\"\npath = \"n.txt\"\n\
               [[dnc.consent]]\naccount = \"acme\"\npath = \"consent.txt\"\n";
    let (code, out, dir) =
        check_config(&with_dnc(dnc), &[("n.txt", "+12125550100\n"), ("consent.txt", "+12125550100\nnope\n")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("{}:2: ", dir.path().join("consent.txt").display())), "{out}");
}

#[test]
fn unknown_nested_keys_are_named_at_their_line_with_the_nearest_key() {
    let config = "[server]\nlisten = [\"udp:127.0.0.1:{udp_port}\"]\n\
                  [upstream]\nuri = \"sip:127.0.0.1:{upstream_port}\"\n\
                  [screening]\nunknown_account = \"forward\"\n\
                  [screening.checks]\nownd = true\n\
                  [[account]]\nid = \"acme\"\nsources = [\"192.0.2.0/24\"]\nquota = { per_dya = 5 }\n\
                  [dnc]\n[[dnc.list]]\nname = \"a\"\npath = \"a.txt\"\n[[dnc.list]]\nname = \"b\"\npath = \"b.txt\"\ndelta = \"d\"\n\
                  [responses.dnc_natonal]\ncode = 607\n";
    let (code, out, dir) = check_config(config, &[("a.txt", "+12125550100\n"), ("b.txt", "+12125550101\n")]);
    assert_eq!(code, Some(2), "{out}");
    let file = dir.path().join("sipguard.toml").display().to_string();
    for expected in [
        format!("{file}:8: unknown key `screening.checks.ownd`; did you mean `owned`?"),
        format!("{file}:12: unknown key `account.0.quota.per_dya`; did you mean `per_day`?"),
        format!("{file}:20: unknown key `dnc.list.1.delta`; did you mean `deltas`?"),
        format!("{file}:21: [responses.dnc_natonal]: no [[dnc.list]] has response = \"dnc_natonal\""),
    ] {
        assert!(out.lines().any(|l| l == expected), "no `{expected}` in:\n{out}");
    }
    assert!(!out.contains(".?."), "{out}");
}

#[test]
fn country_wide_owned_blocks_are_refused_with_their_line() {
    let config = "[screening]\nunknown_account = \"forward\"\ncaller_id_numbers = \"owned.csv\"\n";
    let (code, out, dir) = check_config(config, &[("owned.csv", "account,number\nacme,+1973555*\nacme,+1*\n")]);
    assert_eq!(code, Some(2), "{out}");
    let csv = dir.path().join("owned.csv").display().to_string();
    assert!(out.contains(&format!("{csv}:3: row 3 malformed: number block `+1*` has 0 digits")), "{out}");
    assert!(!out.contains(&format!("{csv}:2:")), "{out}");
    // The minimum is configurable.
    let lower =
        "[screening]\nunknown_account = \"forward\"\nmin_owned_prefix_digits = 0\ncaller_id_numbers = \"owned.csv\"\n";
    let (code, out, _dir) = check_config(lower, &[("owned.csv", "account,number\nacme,+1*\n")]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn an_impossible_callee_is_refused_404_and_the_code_is_configurable() {
    let template = "[server]\nlisten = [\"udp:127.0.0.1:{udp_port}\"]\n\
                    [upstream]\nuri = \"sip:127.0.0.1:{upstream_port};transport=udp\"\n\
                    [screening]\n[[account]]\nid = \"acme\"\nsources = [\"127.0.0.1/32\"]\ncaller_ids = [\"+12125550100\"]\n";
    // Twelve digits under +1, and +1 212 411 (an N11 exchange), cannot exist: refused by
    // checks.valid_callee (on with `valid`), else left to the next hop. A callee that is no
    // number at all is refused either way.
    let off = "[screening.checks]\nvalid_callee = false\n";
    let cases: [(&str, &str, Option<u16>); 6] = [
        ("", "+131255501221", Some(404)),
        ("[responses.callee_invalid]\ncode = 484\n", "+131255501221", Some(484)),
        ("", "+12124110100", Some(404)),
        (off, "+131255501221", None),
        (off, "+12124110100", None),
        (off, "carrier-test", Some(404)),
    ];
    for (i, (extra, callee, want)) in cases.into_iter().enumerate() {
        let sg = Sipguard::start_with(&format!("{template}{extra}"), Ports::allocate(), &[]);
        let hop = NextHop::bind(sg.ports().upstream);
        let peer = UdpPeer::bind();
        let invite = sip(&format!(
            "INVITE sip:{callee}@127.0.0.1;user=phone SIP/2.0
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ci{i};rport
             From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f1
             To: <sip:{callee}@127.0.0.1;user=phone>
             Call-ID: ci{i}@test
             CSeq: 1 INVITE
             Max-Forwards: 70
             Content-Length: 0
            ",
            port = peer.port()
        ));
        peer.send_to(&invite, sg.udp_addr());
        match want {
            Some(code) => {
                let resp = peer.expect(&format!("case {i}: a response to the INVITE from {}", peer.addr()), WAIT).msg();
                assert_eq!(resp.status(), Some(code), "case {i}: {resp:?}");
                assert!(hop.received().is_empty(), "case {i}: nothing forwarded");
            }
            None => {
                let got = hop.wait_for(1, WAIT);
                assert_eq!(got.len(), 1, "case {i}: forwarded");
                assert!(got[0].msg().start.starts_with(&format!("INVITE sip:{callee}@")), "case {i}: {got:?}");
            }
        }
    }
}

/// An INVITE from `peer` with the given X-Account, From user and callee.
fn invite(peer: &UdpPeer, id: &str, account: &str, from_user: &str, callee: &str) -> Vec<u8> {
    sip(&format!(
        "INVITE sip:{callee}@127.0.0.1;user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id};rport
         From: <sip:{from_user}@127.0.0.1;user=phone>;tag=f-{id}
         To: <sip:{callee}@127.0.0.1;user=phone>
         Call-ID: {id}@test
         CSeq: 1 INVITE
         Max-Forwards: 70
         X-Account: {account}
         Content-Length: 0
        ",
        port = peer.port()
    ))
}

#[test]
fn decision_lines_keep_the_offending_values() {
    let config = r#"
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
[[account]]
id = "acme"
caller_ids = ["+12125550100"]
quota = { per_day = 1 }
[[account]]
id = "rep"
mode = "report"
caller_ids = ["+12125550100"]
[dnc]
[[dnc.list]]
name = "internal"
path = "internal.txt"
"#;
    let mut sg = Sipguard::start_with(config, Ports::allocate(), &[("internal.txt", "+13125550199\n")]);
    let hop = common::NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let calls = [
        ("u1", "no such\"acct", "+12125550100", "+13125550198", 403),
        ("c1", "acme", "anonymous", "+13125550198", 403),
        ("q1", "acme", "+12125550100", "+13125550198", 0),
        ("q2", "acme", "+12125550100", "+13125550198", 403),
        ("r1", "rep", "+12125550142", "+13125550199", 0),
    ];
    for (id, account, from, callee, code) in calls {
        peer.send_to(&invite(&peer, id, account, from, callee), sg.udp_addr());
        if code != 0 {
            let resp = peer.expect("a response to the INVITE", WAIT).msg();
            assert_eq!(resp.status(), Some(code), "{id}: {resp:?}");
        }
    }
    hop.wait_for(2, WAIT);
    sg.send_signal(Signal::Term);
    assert!(sg.wait_exit(WAIT).success(), "{}", sg.log());
    let text = std::fs::read_to_string(sg.dir().join("decisions.jsonl")).unwrap_or_default();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let by_id = |id: &str| {
        lines.iter().find(|l| l["call_id"] == format!("{id}@test")).unwrap_or_else(|| panic!("no {id} in {text}"))
    };
    let u = by_id("u1");
    assert_eq!((u["rule"].as_str(), u["account"].is_null()), (Some("unknown_account"), true), "{u}");
    assert_eq!(u["account_header"], "no such\"acct", "{u}");
    let c = by_id("c1");
    assert_eq!((c["rule"].as_str(), c["caller"].is_null()), (Some("caller_id_invalid"), true), "{c}");
    assert_eq!(c["caller_text"], "<sip:anonymous@127.0.0.1;user=phone>;tag=f-c1", "{c}");
    let q = by_id("q2");
    assert_eq!((q["rule"].as_str(), q["counter"].as_str()), (Some("quota"), Some("account_per_day")), "{q}");
    let r = by_id("r1");
    assert_eq!((r["verdict"].as_str(), r["code"].as_u64()), (Some("would_reject"), Some(403)), "{r}");
    assert_eq!(
        r["rules"],
        serde_json::json!([{"rule": "caller_id_unowned", "code": 403}, {"rule": "dnc", "code": 608}]),
        "{r}"
    );
    assert_eq!(r["list"], "internal", "{r}");
}

/// The lines of a decision log file (all of them complete JSON), as Call-IDs.
fn call_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line in {}", path.display());
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("`{l}`: {e}"));
            v["call_id"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn wait_lines(path: &Path, n: usize) {
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(path).unwrap_or_default().lines().count() < n {
        assert!(Instant::now() < deadline, "{} never reached {n} lines", path.display());
        std::thread::sleep(common::POLL);
    }
}

#[test]
fn rotation_by_rename_and_signal_loses_and_repeats_no_decision_line_under_load() {
    if !require_sipp() {
        return;
    }
    let config = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]
[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"
[log]
level = "info"
decisions = "{dir}/decisions.jsonl"
[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
"#;
    let mut sg =
        Sipguard::start_with(config, Ports::allocate(), &[("owned.csv", "account,number\nacct0001,+12125550100\n")]);
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    const CALLS: usize = 900;
    let target = sg.udp_addr();
    let uas_addr = uas.addr().to_string();
    let load = std::thread::spawn(move || {
        let m = CALLS.to_string();
        Sipp::uac("uac_basic.xml", target, &["-m", &m, "-r", "150", "-l", "100", "-key", "uas", &uas_addr])
    });
    let log = sg.dir().join("decisions.jsonl");
    let rotated = [sg.dir().join("decisions.jsonl.1"), sg.dir().join("decisions.jsonl.2")];
    // As logrotate does: rename, then signal (SIGUSR1, then SIGHUP, which also reloads).
    for (file, signal) in rotated.iter().zip([Signal::Usr1, Signal::Hup]) {
        wait_lines(&log, 100);
        std::fs::rename(&log, file).unwrap_or_else(|e| panic!("{e}"));
        sg.send_signal(signal);
    }
    let stats = load.join().unwrap_or_else(|_| panic!("sipp thread"));
    assert_eq!((stats.successful, stats.failed), (CALLS as u64, 0), "{stats:#?}");
    sg.send_signal(Signal::Term);
    assert!(sg.wait_exit(WAIT).success(), "{}", sg.log());
    assert_eq!(sg.log().matches("decision log reopened").count(), 2, "{}", sg.log());
    let parts: Vec<Vec<String>> = [&rotated[0], &rotated[1], &log].iter().map(|p| call_ids(p)).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!p.is_empty(), "file {i} got no line: rotation did not happen under load");
    }
    let all: Vec<&String> = parts.iter().flatten().collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (CALLS, CALLS), "every call logged exactly once");
}
