//! Calls through the proxy with sipp: every call set up and torn down, nothing lost, over UDP
//! and TCP. UAC -> sipguard -> UAS, with the UAS as [upstream] and as the Request-URI host.
mod common;

use common::{Sipguard, Sipp, require_sipp};

const CALLS: u64 = 1000;
const RATE: &str = "300";

const CONFIG: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}", "tcp:127.0.0.1:{tcp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[log]
level = "warn"
"#;

/// Run `CALLS` calls of uac_basic.xml through `sg` to a uas_basic.xml UAS; `transport` holds
/// the extra sipp arguments of both ends.
fn calls_go_through(sg: &Sipguard, transport: &[&str]) {
    let uas = Sipp::uas_with("uas_basic.xml", sg.ports().upstream, transport);
    let uas_addr = uas.addr().to_string();
    let calls = CALLS.to_string();
    let target = if transport.is_empty() { sg.udp_addr() } else { sg.tcp_addr() };
    let mut args = vec!["-m", calls.as_str(), "-r", RATE, "-key", "uas", uas_addr.as_str()];
    args.extend_from_slice(transport);
    let stats = Sipp::uac("uac_basic.xml", target, &args);
    assert_eq!(
        (stats.successful, stats.failed, stats.exit_code),
        (CALLS, 0, Some(0)),
        "{stats:#?}\nUAS errors:\n{}",
        uas.errors()
    );
    // Each call: 200 for the INVITE and 200 for the BYE, each forwarded back exactly once.
    assert_eq!(stats.responses_with(200), 2 * CALLS, "{stats:#?}");
    assert_eq!(stats.unexpected, 0, "{stats:#?}");
}

#[test]
fn thousand_calls_over_udp() {
    if !require_sipp() {
        return;
    }
    let sg = Sipguard::start(CONFIG);
    calls_go_through(&sg, &[]);
}

#[test]
fn thousand_calls_over_tcp() {
    if !require_sipp() {
        return;
    }
    let sg = Sipguard::start(&CONFIG.replace("transport=udp", "transport=tcp"));
    // t1: one connection for all calls at each end, as a PBX trunk does.
    calls_go_through(&sg, &["-t", "t1"]);
}
