//! The Kamailio recipes of contrib/kamailio with the real Kamailio 5.6 (Debian's `kamailio`,
//! `kamailio-utils-modules` for http_client, `kamailio-json-modules`):
//! sipp UAC -> Kamailio -> sipguard (redirect mode, or the HTTP decision API) and
//! Kamailio -> sipp UAS. Passed calls reach the UAS carrying sipguard's verdict, DNC calls
//! get 608 at the caller, and with sipguard stopped the recipe fails open or closed as
//! configured, each call within a bounded time.
mod common;

use common::ports::{Expected, free_port, wait_ready};
use common::raw::sip;
use common::{NextHop, Ports, Sipguard, Sipp, SippStats, UdpPeer, require_sipp};
use sipguard::config::server::Transport;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const OWNED: &str = "account,number\nacct0001,+12125550100\n";
const CALLER: &str = "+12125550100";
const BLOCKED: &str = "+13125550111";
const FREE: &str = "+13125550199";
const TOKEN: &str = "kamailio-test-token";
/// How long Kamailio waits for sipguard in these tests (the recipe's default is 1000 ms).
const TIMEOUT_MS: u64 = 300;

/// sipguard as the recipes expect it: trusts Kamailio's address (loopback), takes the
/// account from X-Account, owned caller IDs and one DNC list.
const SIPGUARD: &str = r#"
[server]
mode = "{mode}"
listen = ["udp:127.0.0.1:{udp_port}"]

{upstream}
[admin]
listen = "127.0.0.1:{admin_port}"
token = "kamailio-test-token"

[log]
level = "warn"
decisions = "{dir}/decisions.jsonl"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
unknown_account = "reject"

[[dnc.list]]
name = "national"
path = "dnc.txt"
"#;

/// True when Kamailio can be run; without it the test is skipped with a visible line, and
/// with SIPGUARD_REQUIRE_KAMAILIO=1 (CI) it fails.
fn require_kamailio() -> bool {
    let found = Command::new("kamailio").arg("-v").output().is_ok_and(|o| o.status.success());
    let modules = Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules");
    let http = ["http_client.so", "json.so"].iter().all(|m| modules.join(m).exists());
    if found && http {
        return true;
    }
    if std::env::var_os("SIPGUARD_REQUIRE_KAMAILIO").is_some_and(|v| v == "1") {
        panic!(
            "kamailio (with http_client and json) not found but SIPGUARD_REQUIRE_KAMAILIO=1 \
             (apt-get install kamailio kamailio-utils-modules kamailio-json-modules)"
        );
    }
    eprintln!("SKIP: kamailio not found (apt-get install kamailio kamailio-utils-modules kamailio-json-modules)");
    false
}

fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/kamailio").join(name)
}

/// A Kamailio running a recipe in the foreground on 127.0.0.1:port; killed on drop.
struct Kamailio {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
}

impl Kamailio {
    /// Start `recipe` with `-A` defines; returns once its UDP socket is open.
    fn start(name: &str, defines: &[String]) -> Kamailio {
        let dir = tempfile::Builder::new().prefix("kamailio.").tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = Command::new("kamailio");
        cmd.arg("-f").arg(recipe(name)).args(["-D", "-E", "-m", "32", "-M", "4"]);
        cmd.arg("-Y").arg(dir.path()).arg("-P").arg(dir.path().join("kamailio.pid"));
        cmd.args(["-A", &format!("LISTEN=udp:127.0.0.1:{port}")]);
        for d in defines {
            cmd.args(["-A", d]);
        }
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn kamailio: {e}"));
        let expected = [Expected { transport: Transport::Udp, addr }];
        if let Err(e) = wait_ready(&mut child, &expected, common::READY_TIMEOUT) {
            common::kill_group(&mut child);
            let log = std::fs::read_to_string(dir.path().join("kamailio.log")).unwrap_or_default();
            panic!("kamailio {name} on {addr}: {e}\n{log}");
        }
        Kamailio { child, dir, addr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        common::kill_group(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- kamailio {} log ---\n{}", self.addr, self.log());
        }
    }
}

fn sipguard(mode: &str) -> Sipguard {
    Sipguard::start_with(
        &SIPGUARD.replace("{mode}", mode).replace(
            "{upstream}",
            // A redirect server forwards nothing; the proxy (HTTP API test) has its trunk.
            if mode == "proxy" { "[upstream]\nuri = \"sip:127.0.0.1:{upstream_port};transport=udp\"\n" } else { "" },
        ),
        Ports::allocate(),
        &[("owned.csv", OWNED), ("dnc.txt", &format!("{BLOCKED}\n"))],
    )
}

/// Calls from acct0001 through Kamailio, one at a time; `-key uas` names the UAS so the
/// Request-URI (and with it sipguard's 302 Contact) points there.
fn calls(scenario: &str, kamailio: &Kamailio, uas: SocketAddr, callees: &[&str]) -> (SippStats, Duration) {
    let rows: Vec<String> = callees.iter().map(|c| format!("acct0001;{CALLER};{c}")).collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let m = rows.len().to_string();
    let uas = uas.to_string();
    let started = Instant::now();
    let stats = Sipp::uac_with_calls(
        scenario,
        kamailio.addr,
        &rows,
        &["-m", &m, "-r", "50", "-l", "1", "-key", "uas", &uas, "-timeout", "30"],
    );
    (stats, started.elapsed())
}

fn redirect_defines(sg_port: u16, uas: SocketAddr) -> Vec<String> {
    vec![
        format!("SIPGUARD=\"sip:127.0.0.1:{sg_port}\""),
        format!("UPSTREAM=\"sip:{uas}\""),
        format!("SIPGUARD_TIMEOUT_MS={TIMEOUT_MS}"),
    ]
}

fn http_defines(admin_port: u16, uas: SocketAddr, token: &str) -> Vec<String> {
    vec![
        format!("SIPGUARD_URL=\"http://127.0.0.1:{admin_port}/v1/screen\""),
        format!("SIPGUARD_TOKEN=\"{token}\""),
        format!("UPSTREAM=\"sip:{uas}\""),
    ]
}

#[test]
fn redirect_recipe_places_passed_calls_and_relays_rejects() {
    if !require_sipp() || !require_kamailio() {
        return;
    }
    let sg = sipguard("redirect");
    let uas = Sipp::uas("uas_verdict_pass.xml", free_port());
    let k = Kamailio::start("sipguard-redirect.cfg", &redirect_defines(sg.ports().udp, uas.addr()));
    let (stats, _) = calls("uac_dialog.xml", &k, uas.addr(), &[FREE, BLOCKED, FREE, BLOCKED, FREE]);
    assert_eq!((stats.successful, stats.failed, stats.unexpected), (5, 0, 0), "{stats:#?}\n{}", uas.errors());
    // Passed calls were answered by the UAS, which checked X-Sipguard-Verdict: pass on each;
    // DNC calls got sipguard's 608 relayed by Kamailio.
    assert_eq!(stats.responses_with(200), 3 * 2, "{stats:#?}"); // the INVITE's 200 and the BYE's
    assert_eq!(stats.responses_with(608), 2, "{stats:#?}");
    let log = sg.wait_decisions(5);
    let verdicts: Vec<&str> = log.iter().filter_map(|d| d.get("verdict").and_then(|v| v.as_str())).collect();
    assert_eq!(verdicts, ["forward", "reject", "forward", "reject", "forward"], "{log:#?}");
    // The ACK, the BYE and its 200 never went to sipguard: one decision per call, and
    // sipguard counted exactly five INVITEs.
    let (code, metrics) = common::http(&sg, "GET", "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    let invites = metrics
        .lines()
        .find(|l| {
            l.starts_with("sipguard_messages_in_total{")
                && l.contains("method=\"INVITE\"")
                && l.contains("transport=\"udp\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(invites, Some(5.0), "{metrics}");
}

#[test]
fn redirect_recipe_fails_open_or_closed_when_sipguard_is_down() {
    if !require_sipp() || !require_kamailio() {
        return;
    }
    let mut sg = sipguard("redirect");
    let port = sg.ports().udp;
    // Down: killed, its port closed (nothing answers, as after a crash).
    sg.send_signal(common::Signal::Term);
    assert!(sg.wait_exit(Duration::from_secs(10)).success());

    let uas = Sipp::uas("uas_verdict_unscreened.xml", free_port());
    let open = Kamailio::start("sipguard-redirect.cfg", &redirect_defines(port, uas.addr()));
    let (stats, took) = calls("uac_dialog.xml", &open, uas.addr(), &[FREE, BLOCKED, FREE]);
    assert_eq!((stats.successful, stats.failed), (3, 0), "{stats:#?}\n{}", uas.errors());
    // Fail open: every call (even to a DNC number: nobody screened it) reached the UAS,
    // marked unscreened, each after one TIMEOUT_MS wait for sipguard, never hanging.
    assert_eq!(stats.responses_with(200), 3 * 2, "{stats:#?}");
    assert!(took < Duration::from_millis(3 * (TIMEOUT_MS + 1500)), "3 calls took {took:?}");
    assert!(open.log().contains("sipguard unavailable"), "{}", open.log());

    let mut closed_defines = redirect_defines(port, uas.addr());
    closed_defines.push("SIPGUARD_FAIL_CLOSED".into());
    let closed = Kamailio::start("sipguard-redirect.cfg", &closed_defines);
    let (stats, took) = calls("uac_reject.xml", &closed, uas.addr(), &[FREE, FREE]);
    assert_eq!((stats.successful, stats.failed), (2, 0), "{stats:#?}");
    assert_eq!((stats.responses_with(503), stats.responses_with(200)), (2, 0), "{stats:#?}");
    assert!(took < Duration::from_millis(2 * (TIMEOUT_MS + 1500)), "2 calls took {took:?}");
}

#[test]
fn http_recipe_asks_the_decision_api_and_fails_open_or_closed() {
    if !require_sipp() || !require_kamailio() {
        return;
    }
    let mut sg = sipguard("proxy");
    let admin = sg.ports().admin;
    let uas = Sipp::uas("uas_verdict_pass.xml", free_port());
    let k = Kamailio::start("sipguard-http.cfg", &http_defines(admin, uas.addr(), TOKEN));
    let (stats, _) = calls("uac_dialog.xml", &k, uas.addr(), &[FREE, BLOCKED, FREE]);
    assert_eq!((stats.successful, stats.failed, stats.unexpected), (3, 0, 0), "{stats:#?}\n{}", uas.errors());
    assert_eq!(stats.responses_with(200), 2 * 2, "{stats:#?}");
    assert_eq!(stats.responses_with(608), 1, "{stats:#?}");
    let log = sg.wait_decisions(3);
    let verdicts: Vec<&str> = log.iter().filter_map(|d| d.get("verdict").and_then(|v| v.as_str())).collect();
    assert_eq!(verdicts, ["forward", "reject", "forward"], "{log:#?}");
    drop(k);

    // A wrong token is refused by sipguard (401): the recipe treats it as unavailable, so
    // fail closed refuses the call rather than place it unscreened.
    let mut defines = http_defines(admin, uas.addr(), "wrong");
    defines.push("SIPGUARD_FAIL_CLOSED".into());
    let closed = Kamailio::start("sipguard-http.cfg", &defines);
    let (stats, _) = calls("uac_reject.xml", &closed, uas.addr(), &[FREE]);
    assert_eq!((stats.responses_with(503), stats.responses_with(200)), (1, 0), "{stats:#?}");
    assert!(closed.log().contains("sipguard answered 401"), "{}", closed.log());
    drop(closed);

    // sipguard stopped: connection refused, fail open places the call unscreened.
    sg.send_signal(common::Signal::Term);
    assert!(sg.wait_exit(Duration::from_secs(10)).success());
    let uas2 = Sipp::uas("uas_verdict_unscreened.xml", free_port());
    let open = Kamailio::start("sipguard-http.cfg", &http_defines(admin, uas2.addr(), TOKEN));
    let (stats, took) = calls("uac_dialog.xml", &open, uas2.addr(), &[FREE, FREE]);
    assert_eq!((stats.successful, stats.failed), (2, 0), "{stats:#?}\n{}", uas2.errors());
    assert_eq!(stats.responses_with(200), 2 * 2, "{stats:#?}");
    assert!(took < Duration::from_secs(2 * 3), "2 calls took {took:?}");
}

/// A final response (skipping 100 Trying) from `peer`, or a panic.
fn final_response(peer: &UdpPeer, what: &str) -> common::SipMsg {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = peer.expect(what, left).msg();
        if m.status().is_some_and(|c| c >= 200) {
            return m;
        }
    }
}

fn raw_invite(peer: &UdpPeer, id: &str, callee: &str, uas: SocketAddr, extra: &str) -> Vec<u8> {
    sip(&format!(
        "INVITE sip:{callee}@{uas};user=phone SIP/2.0
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id};rport
         From: <sip:{CALLER}@127.0.0.1;user=phone>;tag=f-{id}
         To: <sip:{callee}@127.0.0.1;user=phone>{extra_to}
         Call-ID: {id}@kamailio-test
         CSeq: 1 INVITE
         Max-Forwards: 70
         X-Account: acct0001
         {extra}
         Content-Length: 0
        ",
        port = peer.port(),
        extra_to = if id.starts_with("reinvite") { ";tag=forged" } else { "" },
    ))
}

#[test]
fn forged_dialog_state_and_verdict_headers_get_nothing_past_the_redirect_recipe() {
    if !require_kamailio() {
        return;
    }
    let sg = sipguard("redirect");
    let hop = NextHop::bind(0);
    let k = Kamailio::start("sipguard-redirect.cfg", &redirect_defines(sg.ports().udp, hop.addr()));
    let peer = UdpPeer::bind();

    // A "re-INVITE" of a dialog that never was: a To tag and a Route naming Kamailio's own
    // Record-Route. Refused: it must neither skip screening nor reach the carrier.
    let route = format!("Route: <sip:{};lr>", k.addr);
    peer.send_to(&raw_invite(&peer, "reinvite-1", FREE, hop.addr(), &route), k.addr);
    assert_eq!(final_response(&peer, "403 to a forged re-INVITE").status(), Some(403));

    // A DNC call claiming sipguard's verdict in its own headers is still screened: 608.
    let forged = "X-Sipguard-Verdict: pass\r\nX-Sipguard-Account: someone-else";
    peer.send_to(&raw_invite(&peer, "dnc-1", BLOCKED, hop.addr(), forged), k.addr);
    assert_eq!(final_response(&peer, "608 to a DNC call").status(), Some(608));

    // A passed call carrying forged verdict headers reaches the carrier with sipguard's own,
    // once each.
    peer.send_to(&raw_invite(&peer, "pass-1", FREE, hop.addr(), forged), k.addr);
    let got = hop.wait_for(1, Duration::from_secs(5));
    let invites: Vec<common::SipMsg> = got.iter().map(|d| d.msg()).filter(|m| m.method() == Some("INVITE")).collect();
    assert_eq!(invites.len(), 1, "only the passed call reaches the carrier: {got:?}");
    let m = &invites[0];
    assert_eq!(m.header("call-id"), Some("pass-1@kamailio-test"), "{m:?}");
    assert_eq!(m.all("x-sipguard-verdict"), ["pass"], "{m:?}");
    assert_eq!(m.all("x-sipguard-account"), ["acct0001"], "{m:?}");
    assert!(m.start.starts_with(&format!("INVITE sip:{FREE}@{}", hop.addr())), "{m:?}");
    // sipguard screened the two new calls, never the forged re-INVITE.
    let log = sg.wait_decisions(2);
    let ids: Vec<&str> = log.iter().filter_map(|d| d.get("call_id").and_then(|v| v.as_str())).collect();
    assert_eq!(ids, ["dnc-1@kamailio-test", "pass-1@kamailio-test"], "{log:#?}");
}
