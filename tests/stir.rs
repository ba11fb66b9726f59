//! STIR/SHAKEN through the real binary over real sockets: a generated SHAKEN PKI, the x5u
//! served over HTTPS by a test server with its own TLS root, and what reaches the wire:
//! verstat on the forwarded INVITE, the RFC 8224 rejects, one certificate fetch for many
//! waiting calls while unsigned calls keep flowing.
mod common;
#[path = "../src/screen/stir/testpki.rs"]
mod testpki;

use common::raw::sip;
use common::{NextHop, Sipguard, Sipp, UdpPeer, require_sipp};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testpki::{Opts, Pki, pki};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(500);

const CONFIG: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]
record_route = true

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[log]
level = "warn"

[screening]
mode = "enforce"
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
unknown_account = "reject"
caller_id_numbers = "owned.csv"

[stir]
mode = "MODE"
trust_anchors = "anchors"
x5u_roots = "x5u_root.pem"
x5u_allow_private = true
fetch_timeout_ms = 3000
on_unavailable = "reject"
"#;

const OWNED: &str = "account,number\nacct0001,+12125550100\n";

/// An HTTPS server for x5u on 127.0.0.1, with its own TLS root; counts requests, and can
/// hold every answer until released.
struct X5uServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    tls_root_pem: String,
}

impl X5uServer {
    fn start(body: String, held: bool) -> X5uServer {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "x5u test TLS root");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = p.signed_by(&key, &rcgen::Issuer::from_params(&ca, &ca_key)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(cert.der().to_vec())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new((Mutex::new(!held), Condvar::new()));
        let (h, g) = (hits.clone(), gate.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (tls, h, g, body) = (tls.clone(), h.clone(), g.clone(), body.clone());
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(tls) else { return };
                    let mut s = rustls::StreamOwned::new(conn, stream);
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let (open, cv) = &*g;
                    let mut o = open.lock().unwrap();
                    while !*o {
                        o = cv.wait(o).unwrap();
                    }
                    drop(o);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-pem-file\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(body.as_bytes());
                    s.conn.send_close_notify();
                    let _ = s.flush();
                });
            }
        });
        X5uServer { addr, hits, gate, tls_root_pem: ca_cert.pem() }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/sp.pem", self.addr.port())
    }

    fn release(&self) {
        let (open, cv) = &*self.gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn start(mode: &str, pki: &Pki, server: &X5uServer, extra: &str) -> Sipguard {
    let config = format!("{}{extra}", CONFIG.replace("MODE", mode));
    let files =
        [("owned.csv", OWNED), ("anchors/root.pem", pki.root_pem.as_str()), ("x5u_root.pem", &server.tls_root_pem)];
    Sipguard::start_with(&config, common::Ports::allocate(), &files)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An INVITE from +12125550100 to `callee`, with `extra` header lines.
fn invite(peer: &UdpPeer, id: &str, callee: &str, extra: &str) -> Vec<u8> {
    let extra = if extra.is_empty() { String::new() } else { format!("{extra}\r\n") };
    sip(&format!(
        "INVITE sip:{callee}@127.0.0.1;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id};rport\r\n\
From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f-{id}\r\n\
To: <sip:{callee}@127.0.0.1;user=phone>\r\n\
Call-ID: {id}\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:dialer@127.0.0.1:{port}>\r\n\
X-Account: acct0001\r\n\
{extra}Content-Length: 0\r\n\r\n",
        port = peer.port()
    ))
}

fn signed(pki: &Pki, url: &str, attest: &str, callee: &str, iat: u64) -> String {
    format!("Identity: {}", pki.identity(url, attest, "+12125550100", callee.trim_start_matches('+'), iat))
}

fn from_of(d: &common::raw::Datagram) -> String {
    d.msg().header("from").unwrap_or_default().to_string()
}

#[test]
fn a_signed_call_is_forwarded_with_verstat_and_unsigned_ones_are_tagged_no_validation() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), false);
    let sg = start("verify", &p, &server, "");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let id = signed(&p, &server.url(), "A", "+13105550100", now());
    // A verstat the dialer wrote itself is replaced.
    let inv = String::from_utf8(invite(&peer, "s1", "+13105550100", &id))
        .unwrap()
        .replace("+12125550100@", "+12125550100;verstat=TN-Validation-Passed@");
    peer.send_to(inv.as_bytes(), sg.udp_addr());
    let got = hop.wait_for(1, WAIT);
    assert_eq!(
        from_of(&got[0]),
        "<sip:+12125550100;verstat=TN-Validation-Passed@127.0.0.1;user=phone>;tag=f-s1",
        "{}",
        sg.log()
    );
    // The Identity header is relayed byte for byte.
    assert!(String::from_utf8_lossy(&got[0].bytes).contains(&id), "Identity relayed unchanged");
    // Unsigned: forwarded (verify mode), tagged No-TN-Validation; a forged verstat removed.
    let forged = String::from_utf8(invite(&peer, "u1", "+13105550101", ""))
        .unwrap()
        .replace("+12125550100@", "+12125550100;verstat=TN-Validation-Passed@");
    peer.send_to(forged.as_bytes(), sg.udp_addr());
    let got = hop.wait_for(2, WAIT);
    assert_eq!(from_of(&got[1]), "<sip:+12125550100;verstat=No-TN-Validation@127.0.0.1;user=phone>;tag=f-u1");
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_hundred_calls_waiting_for_one_certificate_cause_one_fetch_and_unsigned_calls_flow_meanwhile() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), true);
    let sg = start("verify", &p, &server, "");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let iat = now();
    let calls: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            let callee = format!("+1310555{:04}", 1000 + i);
            invite(&peer, &format!("w{i}"), &callee, &signed(&p, &server.url(), "A", &callee, iat))
        })
        .collect();
    for c in &calls {
        peer.send_to(c, sg.udp_addr());
    }
    let deadline = Instant::now() + WAIT;
    while server.hits() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.hits(), 1, "one fetch started");
    // While the certificate is on its way: unsigned calls pass, and retransmissions of the
    // waiting INVITEs are absorbed.
    for i in 0..20 {
        peer.send_to(&invite(&peer, &format!("n{i}"), &format!("+1415555{:04}", 1000 + i), ""), sg.udp_addr());
    }
    for c in calls.iter().take(10) {
        peer.send_to(c, sg.udp_addr());
    }
    let got = hop.wait_for(20, WAIT);
    assert!(
        got.iter().all(|d| d.msg().header("call-id").unwrap_or_default().starts_with('n')),
        "only unsigned calls yet"
    );
    server.release();
    let got = hop.wait_for(120, WAIT);
    std::thread::sleep(QUIET);
    let got_all = hop.received();
    assert_eq!(got_all.len(), 120, "each call forwarded once, retransmissions absorbed");
    let signed_fwd: Vec<_> =
        got.iter().filter(|d| d.msg().header("call-id").unwrap_or_default().starts_with('w')).collect();
    assert_eq!(signed_fwd.len(), 100);
    assert!(signed_fwd.iter().all(|d| from_of(d).contains(";verstat=TN-Validation-Passed@")));
    assert_eq!(server.hits(), 1, "one fetch for all hundred calls");
}

#[test]
fn rfc8224_rejects_in_require_mode() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), false);
    let extra = "\n[[account]]\nid = \"acct0001\"\nmin_attestation = \"A\"\n";
    let sg = start("require", &p, &server, extra);
    let peer = UdpPeer::bind();
    let url = server.url();
    let ask = |id: &str, callee: &str, identity: &str| {
        peer.send_to(&invite(&peer, id, callee, identity), sg.udp_addr());
        let r = peer.expect(id, WAIT).msg();
        (r.status(), r.header("reason").unwrap_or_default().to_string())
    };
    let t = now();
    let (code, _) = ask("r1", "+13105550201", "");
    assert_eq!(code, Some(428), "no Identity in require mode: {}", sg.log());
    let other = pki(Opts::default());
    assert_eq!(ask("r2", "+13105550202", &signed(&other, &url, "A", "+13105550202", t)).0, Some(438));
    assert_eq!(ask("r3", "+13105550203", &signed(&p, &url, "A", "+13105550203", t - 3600)).0, Some(403));
    assert_eq!(ask("r4", "+13105550204", &signed(&p, &url, "B", "+13105550204", t)).0, Some(403));
    // Signed for another callee: the claims do not match this call.
    assert_eq!(ask("r5", "+13105550205", &signed(&p, &url, "A", "+13105550299", t)).0, Some(438));
    // The certificate server is down: 436 (on_unavailable = "reject"), and the failure is
    // remembered: the next call does not wait for another attempt.
    let dead = "https://127.0.0.1:1/sp.pem";
    assert_eq!(ask("r6", "+13105550206", &signed(&p, dead, "A", "+13105550206", t)).0, Some(436));
    let started = Instant::now();
    assert_eq!(ask("r7", "+13105550207", &signed(&p, dead, "A", "+13105550207", t)).0, Some(436));
    assert!(started.elapsed() < Duration::from_millis(500));
    // A good one passes (no 4xx: the peer gets nothing back, the upstream gets the INVITE).
    let hop = NextHop::bind(sg.ports().upstream);
    peer.send_to(&invite(&peer, "r8", "+13105550208", &signed(&p, &url, "A", "+13105550208", t)), sg.udp_addr());
    assert!(from_of(&hop.wait_for(1, WAIT)[0]).contains("verstat=TN-Validation-Passed"));
}

#[test]
fn x5u_on_a_private_address_is_not_fetched_unless_allowed() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), false);
    let config = CONFIG.replace("MODE", "verify").replace("x5u_allow_private = true", "x5u_allow_private = false");
    let files =
        [("owned.csv", OWNED), ("anchors/root.pem", p.root_pem.as_str()), ("x5u_root.pem", &server.tls_root_pem)];
    let sg = Sipguard::start_with(&config, common::Ports::allocate(), &files);
    let peer = UdpPeer::bind();
    peer.send_to(
        &invite(&peer, "p1", "+13105550301", &signed(&p, &server.url(), "A", "+13105550301", now())),
        sg.udp_addr(),
    );
    let r = peer.expect("p1", WAIT).msg();
    assert_eq!(r.status(), Some(437), "x5u refused: Unsupported Credential");
    assert_eq!(server.hits(), 0, "nothing fetched from a private address");
}

#[test]
fn sipp_a_signed_call_reaches_the_uas_with_verstat_passed() {
    if !require_sipp() {
        return;
    }
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), false);
    let sg = start("verify", &p, &server, "");
    let uas = Sipp::uas("uas_verstat.xml", sg.ports().upstream);
    let identity = p.identity(&server.url(), "A", "+12125550100", "13125550199", now());
    let stats = Sipp::uac(
        "uac_identity.xml",
        sg.udp_addr(),
        &["-m", "1", "-key", "uas", &uas.addr().to_string(), "-key", "identity", &identity],
    );
    assert_eq!((stats.successful, stats.failed), (1, 0), "{stats:?}\n{}\n{}", uas.errors(), sg.log());
    assert_eq!(uas.errors(), "", "the UAS found verstat=TN-Validation-Passed");
    // The UAS's check can fail: an unsigned call (No-TN-Validation) trips it.
    Sipp::uac("uac_basic.xml", sg.udp_addr(), &["-m", "1", "-key", "uas", &uas.addr().to_string(), "-timeout", "5"]);
    let deadline = Instant::now() + WAIT;
    while uas.errors().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(uas.errors().contains("regexp"), "UAS errors: {}", uas.errors());
}

#[test]
fn check_config_names_the_line_of_each_stir_mistake() {
    let config = "[server]\nlisten = [\"udp:127.0.0.1:{udp_port}\"]\n\n[screening]\nunknown_account = \"forward\"\n\n\
[stir]\nmode = \"strict\"\ntrust_anchors = \"nowhere\"\nfreshness_seconds = 0\non_unavailable = \"maybe\"\ncrl = \"missing.crl\"\n\
\n[[account]]\nid = \"a\"\nmin_attestation = \"D\"\n";
    let (code, out, _dir) = common::check_config(config, &[]);
    assert_eq!(code, Some(2), "{out}");
    for (line, what) in [
        (8, "stir.mode"),
        (9, "stir.trust_anchors"),
        (10, "freshness_seconds"),
        (11, "on_unavailable"),
        (12, "stir.crl"),
        (16, "min_attestation"),
    ] {
        assert!(out.contains(&format!("sipguard.toml:{line}: ")) && out.contains(what), "line {line} ({what}):\n{out}");
    }
    // A trust anchor directory with no certificate, and [stir] without [screening].
    let (code, out, _dir) = common::check_config(
        "[server]\nlisten = [\"udp:127.0.0.1:{udp_port}\"]\n\n[stir]\nmode = \"verify\"\ntrust_anchors = \".\"\n",
        &[("junk.pem", "not a certificate")],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("sipguard.toml:6: stir.trust_anchors"), "{out}");
    assert!(out.contains("needs a [screening] section"), "{out}");
}

#[test]
fn identity_verify_cli_prints_each_check_and_exits_0_only_when_all_pass() {
    let p = pki(Opts::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ca")).unwrap();
    std::fs::write(dir.path().join("ca/root.pem"), &p.root_pem).unwrap();
    std::fs::write(dir.path().join("chain.pem"), &p.chain_pem).unwrap();
    let iat = 1_780_000_000u64;
    let header =
        format!("Identity: {}", p.identity("https://cert.example.com/sp.pem", "A", "12155550123", "13105550199", iat));
    let run = |header: &str, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipguard"))
            .args(["identity", "verify", "--header", header, "--cert"])
            .arg(dir.path().join("chain.pem"))
            .arg("--ca-dir")
            .arg(dir.path().join("ca"))
            .args(["--now", &(iat + 10).to_string()])
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&header, &["--from", "+1 215 555 0123", "--to", "+13105550199"]);
    assert_eq!(code, Some(0), "{out}");
    for check in ["parse", "claims", "freshness", "signature", "orig", "dest", "chain", "tnauthlist"] {
        assert!(out.lines().any(|l| l.starts_with("PASS") && l.contains(check)), "{check}:\n{out}");
    }
    assert!(out.contains("SPC 709J") && out.contains("verdict: VERIFIED"), "{out}");
    // Wrong callee, and a signature from another key: each named, exit 1.
    let (code, out) = run(&header, &["--to", "+13105550100"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("dest")), "{out}");
    let other = pki(Opts::default());
    let forged = other.identity("https://cert.example.com/sp.pem", "A", "12155550123", "13105550199", iat);
    let (code, out) = run(&forged, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("signature")), "{out}");
    // Not a PASSporT at all.
    let (code, out) = run("Identity: garbage", &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("FAIL  parse"), "{out}");
}

#[test]
fn beyond_max_pending_calls_are_decided_at_once_by_on_unavailable() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), true);
    let sg = start("verify", &p, &server, "max_pending = 5\n");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let iat = now();
    for i in 0..10 {
        let callee = format!("+1310555{:04}", 2000 + i);
        peer.send_to(
            &invite(&peer, &format!("m{i}"), &callee, &signed(&p, &server.url(), "A", &callee, iat)),
            sg.udp_addr(),
        );
    }
    // Five wait; the other five get 436 (on_unavailable = "reject") without waiting.
    let mut rejected = 0;
    while let Some(d) = peer.recv(Duration::from_secs(2)) {
        assert_eq!(d.msg().status(), Some(436), "{:?}", d.msg());
        rejected += 1;
        if rejected == 5 {
            break;
        }
    }
    assert_eq!(rejected, 5);
    assert!(hop.received().is_empty());
    server.release();
    let got = hop.wait_for(5, WAIT);
    assert!(got.iter().all(|d| from_of(d).contains("verstat=TN-Validation-Passed@")));
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_trusted_p_asserted_identity_carries_the_verstat() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), false);
    let sg = start("verify", &p, &server, "");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let id = signed(&p, &server.url(), "A", "+13105550400", now());
    let pai = "P-Asserted-Identity: <tel:+12125550100;verstat=TN-Validation-Failed>";
    peer.send_to(&invite(&peer, "pai1", "+13105550400", &format!("{pai}\r\n{id}")), sg.udp_addr());
    let got = hop.wait_for(1, WAIT);
    let m = got[0].msg();
    assert_eq!(
        m.header("p-asserted-identity"),
        Some("<tel:+12125550100;verstat=TN-Validation-Passed>"),
        "{}",
        sg.log()
    );
    assert_eq!(
        from_of(&got[0]),
        "<sip:+12125550100@127.0.0.1;user=phone>;tag=f-pai1",
        "From untouched when PAI carries it"
    );
}

#[test]
fn metrics_decision_log_and_a_crl_read_again_on_sighup() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), false);
    let admin = "\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n";
    let log = "\n[log]\nlevel = \"warn\"\ndecisions = \"decisions.jsonl\"\n";
    let base = CONFIG.replace("MODE", "verify").replace("\n[log]\nlevel = \"warn\"\n", log);
    let config = format!("{base}{admin}");
    let files =
        [("owned.csv", OWNED), ("anchors/root.pem", p.root_pem.as_str()), ("x5u_root.pem", &server.tls_root_pem)];
    let sg = Sipguard::start_with(&config, common::Ports::allocate(), &files);
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let call = |id: &str, callee: &str| {
        peer.send_to(&invite(&peer, id, callee, &signed(&p, &server.url(), "A", callee, now())), sg.udp_addr());
    };
    call("c1", "+13105550501");
    assert!(from_of(&hop.wait_for(1, WAIT)[0]).contains("verstat=TN-Validation-Passed@"));
    let (_, metrics) = common::http(&sg, "GET", "/metrics", None);
    assert!(
        metrics.lines().any(|l| l.starts_with("sipguard_stir_verifications_total")
            && l.contains("outcome=\"passed\"")
            && l.contains("attestation=\"A\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("sipguard_stir_fetches_total") && l.contains("result=\"ok\"")),
        "{metrics}"
    );
    // The CRL now revokes the leaf; SIGHUP reads it again and the cached chain is judged anew.
    std::fs::write(sg.dir().join("revoked.crl"), p.crl(&[1001])).unwrap();
    sg.rewrite_config(
        &config.replace("on_unavailable = \"reject\"", "on_unavailable = \"reject\"\ncrl = \"revoked.crl\""),
    );
    sg.send_signal(common::Signal::Hup);
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    let code = loop {
        // A new call each time: a retransmission would reuse its first verdict.
        n += 1;
        call(&format!("c2-{n}"), &format!("+1310555{:04}", 600 + n));
        if let Some(d) = peer.recv(Duration::from_millis(300)) {
            break d.msg().status();
        }
        assert!(Instant::now() < deadline, "the revoked chain still passes: {}", sg.log());
    };
    assert_eq!(code, Some(437), "revoked: Unsupported Credential");
    assert_eq!(server.hits(), 1, "no fetch: the cached chain was validated again");
    // The decision log records attestation, outcome, the failing check and the SPC.
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let text = std::fs::read_to_string(sg.dir().join("decisions.jsonl")).unwrap_or_default();
        if text.lines().count() >= 2 && text.contains("untrusted") {
            break text;
        }
        assert!(Instant::now() < deadline, "decision log: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["stir"]["outcome"], "passed", "{first}");
    assert_eq!(first["stir"]["attestation"], "A");
    assert_eq!(first["stir"]["spc"], "709J");
    assert_eq!(first["stir"]["verstat"], "TN-Validation-Passed");
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!((last["rule"].as_str(), last["code"].as_u64()), (Some("identity_untrusted"), Some(437)), "{last}");
    assert!(last["stir"]["check"].as_str().unwrap().contains("revoked"), "{last}");
}

#[test]
fn of_two_identity_headers_the_good_one_passes_the_call() {
    let p = pki(Opts::default());
    let server = X5uServer::start(p.chain_pem.clone(), false);
    let sg = start("require", &p, &server, "");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    let callee = "+13105550700";
    let other = pki(Opts::default());
    let bad = signed(&other, &server.url(), "A", callee, now());
    let good = signed(&p, &server.url(), "A", callee, now());
    peer.send_to(&invite(&peer, "two1", callee, &format!("{bad}\r\n{good}")), sg.udp_addr());
    let got = hop.wait_for(1, WAIT);
    assert!(from_of(&got[0]).contains("verstat=TN-Validation-Passed@"), "{}", sg.log());
    // Both relayed as they came.
    let text = String::from_utf8_lossy(&got[0].bytes).into_owned();
    assert!(text.contains(&bad) && text.contains(&good));
    // The bad one alone is refused.
    peer.send_to(
        &invite(&peer, "two2", "+13105550701", &signed(&other, &server.url(), "A", "+13105550701", now())),
        sg.udp_addr(),
    );
    assert_eq!(peer.expect("two2", WAIT).msg().status(), Some(438));
}
