//! Do-not-call lists through the real binary: hits answered with the dnc response, lists
//! swapped under sipp load without losing a call, operator `dnc add` taking effect in a
//! running proxy, snapshots loaded, and a corrupt snapshot refused while the old list serves.
mod common;

use common::raw::sip;
use common::{NextHop, Ports, Signal, Sipguard, Sipp, UdpPeer, require_sipp};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

const TEMPLATE: &str = r#"
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

[[dnc.list]]
name = "national"
path = "LIST"
deltas = "national.d"
"#;

const OWNED: &str = "account,number\nacct0001,+12125550100\n";
const BLOCKED: &str = "+13125550111";
const FREE: &str = "+13125550199";

fn start(list: &str, files: &[(&str, &str)]) -> Sipguard {
    let mut all = vec![("owned.csv", OWNED), ("national.d/.keep", "")];
    all.extend_from_slice(files);
    Sipguard::start_with(&TEMPLATE.replace("LIST", list), Ports::allocate(), &all)
}

fn invite(peer: &UdpPeer, id: &str, callee: &str) -> Vec<u8> {
    sip(&format!(
        "INVITE sip:{callee}@127.0.0.1;user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id}
         From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f-{id}
         To: <sip:{callee}@127.0.0.1;user=phone>
         Call-ID: {id}@dnc
         CSeq: 1 INVITE
         Max-Forwards: 70
         X-Account: acct0001
         Content-Length: 0
        ",
        port = peer.port()
    ))
}

/// The status of the reply to a fresh INVITE for `callee`, or None when it was forwarded
/// (the next hop got it and nothing came back within the wait).
fn verdict(sg: &Sipguard, hop: &NextHop, callee: &str, id: &str) -> Option<u16> {
    let peer = UdpPeer::bind();
    let before = hop.received().len();
    peer.send_to(&invite(&peer, id, callee), sg.udp_addr());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(d) = peer.recv(common::POLL) {
            return d.msg().status();
        }
        if hop.received().len() > before {
            return None;
        }
        assert!(Instant::now() < deadline, "no reply and nothing forwarded for {callee}");
    }
}

/// Poll until a fresh INVITE for `callee` gets `want` (lists reload asynchronously).
fn eventually(sg: &Sipguard, hop: &NextHop, callee: &str, want: Option<u16>) {
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    loop {
        n += 1;
        let got = verdict(sg, hop, callee, &format!("poll-{callee}-{n}-{}", std::process::id()));
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{callee}: still {got:?}, want {want:?}\n{}", sg.log());
    }
}

/// Replace a file the way list publishers do: write aside, then rename over.
fn replace(dir: &Path, name: &str, contents: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn sipguard_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sipguard"))
}

#[test]
fn listed_callee_gets_608_and_the_log_names_the_list() {
    let sg = start("dnc.txt", &[("dnc.txt", &format!("# national registry\n{BLOCKED}\n"))]);
    let hop = NextHop::bind(sg.ports().upstream);
    assert_eq!(verdict(&sg, &hop, BLOCKED, "hit"), Some(608));
    assert_eq!(verdict(&sg, &hop, FREE, "miss"), None);
    let log = std::fs::read_to_string(sg.dir().join("decisions.jsonl")).unwrap_or_default();
    assert!(log.lines().any(|l| l.contains("\"rule\":\"dnc\"") && l.contains("\"list\":\"national\"")), "{log}");
}

#[test]
fn lists_swapped_ten_times_under_load_lose_no_call() {
    if !require_sipp() {
        return;
    }
    let sg = start("dnc.txt", &[("dnc.txt", &format!("{BLOCKED}\n"))]);
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    let uas_addr = uas.addr().to_string();
    let target = sg.udp_addr();
    let rows: Vec<String> = (0..600).map(|i| format!("acct0001;+12125550100;+1312555{:04}", 2000 + i)).collect();
    let load = std::thread::spawn(move || {
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        Sipp::uac_with_calls("uac_basic.xml", target, &rows, &["-m", "600", "-r", "150", "-key", "uas", &uas_addr])
    });
    // Ten swaps while the calls run: five by file replacement (the watcher), five by SIGHUP.
    for i in 0..10 {
        let list = format!("{BLOCKED}\n+1415555{:04}\n", i);
        replace(sg.dir(), "dnc.txt", list.as_bytes());
        if i % 2 == 1 {
            sg.send_signal(Signal::Hup);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let stats = load.join().unwrap();
    assert_eq!((stats.successful, stats.failed), (600, 0), "{stats:#?}");
    drop(uas);
    // The last list swapped in is the one in force.
    let hop = NextHop::bind(sg.ports().upstream);
    eventually(&sg, &hop, "+14155550009", Some(608));
    eventually(&sg, &hop, "+14155550008", None);
}

#[test]
fn operator_add_and_remove_take_effect_in_a_running_proxy() {
    let sg = start("dnc.txt", &[("dnc.txt", &format!("{BLOCKED}\n"))]);
    let hop = NextHop::bind(sg.ports().upstream);
    assert_eq!(verdict(&sg, &hop, FREE, "before"), None);
    let add = sipguard_cmd()
        .args(["dnc", "add", FREE, "--list", "national", "--config"])
        .arg(sg.config_path())
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");
    eventually(&sg, &hop, FREE, Some(608));
    let remove = sipguard_cmd()
        .args(["dnc", "remove", FREE, "--list", "national", "--config"])
        .arg(sg.config_path())
        .output()
        .unwrap();
    assert!(remove.status.success(), "{remove:?}");
    eventually(&sg, &hop, FREE, None);
}

#[test]
fn snapshot_serves_and_a_corrupt_replacement_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("in.txt");
    std::fs::write(&text, format!("{BLOCKED}\n")).unwrap();
    let snap = dir.path().join("list.snap");
    let built = sipguard_cmd().args(["dnc", "build", "--out"]).arg(&snap).arg(&text).output().unwrap();
    assert!(built.status.success(), "{built:?}");
    let bytes = std::fs::read(&snap).unwrap();
    // Start on a text list under the same name; the header tells the two apart.
    let sg = start("list.snap", &[("list.snap", "+13125550122\n")]);
    replace(sg.dir(), "list.snap", &bytes);
    sg.send_signal(Signal::Hup);
    let hop = NextHop::bind(sg.ports().upstream);
    eventually(&sg, &hop, BLOCKED, Some(608));
    // Flip a byte in the middle: the checksum fails, the old set keeps answering.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    replace(sg.dir(), "list.snap", &bad);
    sg.send_signal(Signal::Hup);
    assert!(sg.wait_for_log("refused", WAIT) || sg.wait_for_log("checksum", WAIT), "{}", sg.log());
    assert_eq!(verdict(&sg, &hop, BLOCKED, "after-corrupt"), Some(608));
}

/// Issue 15 item 1: `dnc check` (from the config, and `--admin` from the running proxy)
/// agrees with the proxy's verdict: a categorised entry blocks an account of that category
/// (608 on the wire), an unknown account is an error, and names like localhost resolve.
#[test]
fn dnc_check_and_the_admin_query_agree_with_the_proxy() {
    let categorised = "+13125550122";
    let template = TEMPLATE.replace("LIST", "dnc.txt").replace(
        "[[dnc.list]]",
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n[[account]]\nid = \"acct0001\"\nsources = [\"10.9.9.0/24\"]\ncategory = \"finance\"\n\n[[dnc.list]]",
    );
    let list = format!("{BLOCKED}\n{categorised},finance\n");
    let sg = Sipguard::start_with(
        &template,
        Ports::allocate(),
        &[("owned.csv", OWNED), ("national.d/.keep", ""), ("dnc.txt", &list)],
    );
    let hop = NextHop::bind(sg.ports().upstream);
    assert_eq!(verdict(&sg, &hop, categorised, "cat-hit"), Some(608), "{}", sg.log());
    assert_eq!(verdict(&sg, &hop, FREE, "cat-miss"), None);

    let (code, body) = common::http(&sg, "GET", &format!("/dnc/%2B{}?account=acct0001", &categorised[1..]), None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["blocked"].as_bool(), v["hit"]["list"].as_str()), (Some(true), Some("national")), "{body}");
    assert_eq!(v["hit"]["category"].as_str(), Some("finance"), "{body}");
    let (code, body) = common::http(&sg, "GET", &format!("/dnc/{FREE}?account=acct0001"), None);
    assert_eq!((code, body.contains("\"blocked\":false")), (200, true), "{body}");
    assert_eq!(common::http(&sg, "GET", "/dnc/12345?account=nosuch", None).0, 404);
    assert_eq!(common::http(&sg, "GET", "/dnc/notanumber", None).0, 400);

    let cli = |args: &[&str]| {
        let out = sipguard_cmd().args(["dnc", "check"]).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let config = sg.config_path().to_str().unwrap().to_string();
    let admin = format!("localhost:{}", sg.ports().admin);
    let offline = cli(&[categorised, "-c", &config, "--account", "acct0001"]);
    let live = cli(&[categorised, "--admin", &admin, "--account", "acct0001"]);
    assert_eq!(offline.0, Some(1), "{}", offline.1);
    assert!(
        offline.1.contains("BLOCKED for account `acct0001` by list `national`, category `finance`"),
        "{}",
        offline.1
    );
    assert_eq!(live, offline, "the running proxy and the config say the same");
    let free = cli(&[FREE, "--admin", &admin, "--account", "acct0001"]);
    assert_eq!(free.0, Some(0), "{}", free.1);
    assert!(free.1.contains("not blocked for account `acct0001` (category `finance`)"), "{}", free.1);
    for args in [
        vec![categorised, "-c", &config, "--account", "nosuch"],
        vec![categorised, "--admin", &admin, "--account", "nosuch"],
    ] {
        let (code, text) = cli(&args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains("nosuch"), "{text}");
    }
}
