//! The RFC 4475 torture messages, run through the sans-IO core and checked against what
//! `../shared/conformance/rfc4475/MANIFEST.tsv` says a stateless proxy must do.

use sipguard::config::server::Transport;
use sipguard::proxy::{Action, DropReason, Inbound, Proxy, ProxyConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// The corpus, or None (with a loud SKIP line) when `../shared` is not beside the repo. In
/// CI (`CI` set, or `SIPGUARD_REQUIRE_SHARED=1` as `.ci/run` sets it) its absence fails.
fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/rfc4475");
    if dir.join("MANIFEST.tsv").exists() {
        return Some(dir);
    }
    let required = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
        || std::env::var("SIPGUARD_REQUIRE_SHARED").is_ok_and(|v| v == "1");
    assert!(!required, "{} not found: the RFC 4475 corpus is required here", dir.display());
    // Straight to the process's stderr: the test harness captures eprintln! of a passing
    // test, and this line must show in the default output.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP: {} not found; the RFC 4475 torture tests did not run", dir.display());
    None
}

fn proxy() -> Proxy {
    let cfg = {
        let mut c = ProxyConfig::new("192.0.2.200:5060", vec!["192.0.2.200:5060".parse().unwrap()]);
        c.record_route = false;
        c.upstream = Some(sipguard::config::server::parse_upstream("sip:192.0.2.99:5060").unwrap());
        c
    };
    Proxy::new(cfg, Arc::new(sipguard::screen::PassThrough))
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Forwarded,
    Replied(u16),
    Dropped(DropReason),
}

fn outcome(bytes: &[u8]) -> Outcome {
    let p = proxy();
    let mut out = Vec::new();
    let from = Inbound { transport: Transport::Udp, src: "192.0.2.1:5060".parse().unwrap() };
    p.handle(SystemTime::now(), from, bytes, &mut out);
    for a in &out {
        match a {
            Action::Send { bytes, .. } if bytes.starts_with(b"SIP/2.0 ") => {
                let code = std::str::from_utf8(&bytes[8..11]).unwrap().parse().unwrap();
                return Outcome::Replied(code);
            }
            Action::Send { .. } => return Outcome::Forwarded,
            Action::Drop(r) => return Outcome::Dropped(*r),
            _ => {}
        }
    }
    panic!("no outcome: {out:?}");
}

#[test]
fn torture_messages_match_the_manifest() {
    let Some(dir) = corpus() else { return };
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in manifest.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, class, want) = (cols[0], cols[2], cols[3]);
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let got = outcome(&bytes);
        n += 1;
        let is_response = bytes.starts_with(b"SIP/2.0 ");
        let ok = match (class, file) {
            // Responses to requests we never sent: their top Via is not ours.
            _ if is_response => matches!(got, Outcome::Dropped(_)),
            ("valid" | "compat" | "txn", _) => got == Outcome::Forwarded,
            ("invalid", "badvers.dat") => {
                matches!(got, Outcome::Replied(505) | Outcome::Dropped(_))
            }
            ("invalid", "mismatch02.dat") => {
                matches!(got, Outcome::Replied(400 | 501) | Outcome::Dropped(_))
            }
            ("invalid", _) => matches!(got, Outcome::Replied(400) | Outcome::Dropped(_)),
            ("app", "insuf.dat" | "multi01.dat" | "mcl01.dat") => got == Outcome::Replied(400),
            ("app", "unkscm.dat") => matches!(got, Outcome::Replied(416) | Outcome::Forwarded),
            ("app", "bext01.dat") => got == Outcome::Replied(420),
            ("app", "zeromf.dat") => got == Outcome::Replied(483),
            ("app", _) => got == Outcome::Forwarded,
            _ => false,
        };
        if !ok {
            failures.push(format!("{file} ({class}: {want}): got {got:?}"));
        }
    }
    assert_eq!(n, 49, "the manifest lists 49 messages");
    assert!(failures.is_empty(), "{} of {n} wrong:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn bext01_lists_the_unsupported_option() {
    let Some(dir) = corpus() else { return };
    let bytes = std::fs::read(dir.join("bext01.dat")).unwrap();
    let mut out = Vec::new();
    let from = Inbound { transport: Transport::Udp, src: "192.0.2.1:5060".parse().unwrap() };
    proxy().handle(SystemTime::now(), from, &bytes, &mut out);
    let Some(Action::Send { bytes, .. }) = out.first() else { panic!("{out:?}") };
    let text = String::from_utf8_lossy(bytes);
    assert!(text.contains("\r\nUnsupported: noProxiesSupportThis,norDoAnyProxiesSupportThis\r\n"), "{text}");
    // The whole Warning would make the reply outgrow this small request: it is cut to fit.
    assert!(text.contains("\r\nWarning: 399 192.0.2.200 \"ext"), "{text}");
    assert!(bytes.len() <= std::fs::read(dir.join("bext01.dat")).unwrap().len(), "{text}");
}
