//! Bypass attempts found in review, kept as regression tests: a proof minted by a request
//! that is never screened, a proof lifted onto another callee, a strict-route rewrite of the
//! screened Request-URI, untrusted PAI judged by the policy, IPv4-mapped sources, and a
//! legitimate tagless caller whose dialog must still verify.
use super::*;
use std::sync::Mutex;

/// Rejects any call whose Request-URI or To names the blocked number; records what it saw.
#[derive(Default)]
struct Dnc {
    screened: AtomicUsize,
    seen: Mutex<Vec<(String, String, Option<String>)>>,
}
const BLOCKED: &str = "+12125550666";
impl Screen for Dnc {
    fn account_header(&self) -> Option<Arc<str>> {
        None
    }
    fn screen(&self, call: &Call<'_>, _now: SystemTime) -> Decision {
        self.screened.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push((
            call.request_uri.to_string(),
            call.to.to_string(),
            call.p_asserted_identity.as_deref().map(str::to_string),
        ));
        let mut d = Decision::pass();
        if call.request_uri.contains(BLOCKED) || call.to.contains(BLOCKED) {
            d.rule = Some(Rule::Dnc);
            d.verdict = Arc::new(Verdict::Reject { code: 607, reason: "Unwanted".into(), headers: vec![] });
        }
        d
    }
}

fn rr_proxy() -> (Proxy, Arc<Dnc>) {
    let mut c = cfg(None);
    c.record_route = true;
    let s = Arc::new(Dnc::default());
    (Proxy::new(c, s.clone()), s)
}

fn rr_of(fwd: &str) -> String {
    fwd.split("\r\n").find_map(|l| l.strip_prefix("Record-Route: ")).expect("record-route").to_string()
}

fn blocked_invite(route: &str, call_id: &str) -> String {
    // `tag=x` only inside a quoted generic-param value: no To tag, for us as for any RFC parser.
    format!(
        "INVITE sip:{BLOCKED}@10.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKbypass;rport\r\n\
Route: {route}\r\nMax-Forwards: 70\r\nFrom: <sip:+12125550199@10.0.0.1>;tag=1\r\nTo: <sip:{BLOCKED}@10.0.0.2>;p=\";tag=x\"\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A SUBSCRIBE (never screened) is record-routed without the proof, so it cannot mint
/// one for an INVITE; and the To tag hidden in a quoted parameter value is no tag.
#[test]
fn subscribe_mints_no_screening_proof() {
    let (mut p, s) = rr_proxy();
    let sub = "SUBSCRIBE sip:x@10.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKsub;rport\r\n\
From: <sip:+12125550199@10.0.0.1>;tag=1\r\nTo: <sip:x@10.0.0.1>\r\nCall-ID: minted\r\nCSeq: 1 SUBSCRIBE\r\n\
Event: presence\r\nContent-Length: 0\r\n\r\n";
    let (_, dest, fwd) = sent(&run(&mut p, udp(), sub));
    assert_eq!(dest, "10.0.0.1:5062".parse().unwrap());
    let rr = rr_of(&fwd);
    assert!(rr.ends_with(";lr>") && !rr.contains("sg="), "{rr}");
    assert_eq!(s.screened.load(Ordering::SeqCst), 0);
    let r = sent(&run(&mut p, udp(), &blocked_invite(&rr, "minted"))).2;
    assert!(r.starts_with("SIP/2.0 607 "), "{r}");
    assert_eq!(s.screened.load(Ordering::SeqCst), 1);
    // Even a real proof under that Call-ID would not help a To tag that is not one.
    let mut with_sg = rr.clone();
    with_sg.insert_str(with_sg.len() - 1, ";sg=0123456789abcdef");
    assert!(sent(&run(&mut p, udp(), &blocked_invite(&with_sg, "minted2"))).2.starts_with("SIP/2.0 607 "));
}

/// The proof names the callee: one screened call's Record-Route does not carry an
/// INVITE to another callee past the screen.
#[test]
fn a_proof_from_one_call_does_not_reach_another_callee() {
    let (mut p, s) = rr_proxy();
    let fwd = sent(&run(&mut p, udp(), &invite(""))).2;
    assert_eq!(s.screened.load(Ordering::SeqCst), 1);
    let rr = rr_of(&fwd);
    let lifted = blocked_invite(&rr, "call-1").replace(";p=\";tag=x\"", ";tag=x");
    let r = sent(&run(&mut p, udp(), &lifted)).2;
    assert!(r.starts_with("SIP/2.0 607 "), "{r}");
    assert_eq!(s.screened.load(Ordering::SeqCst), 2);
    // The genuine re-INVITE of that call (same callee in To) still passes.
    let reinvite = invite(&format!("Route: {rr}\r\n")).replace("0.2>\r\n", "0.2>;tag=x\r\n");
    assert!(sent(&run(&mut p, udp(), &reinvite)).2.starts_with("INVITE "));
    assert_eq!(s.screened.load(Ordering::SeqCst), 2);
}

/// After a strict router (Request-URI naming us, the target in the last Route) the screen
/// judges the Request-URI that is forwarded.
#[test]
fn a_strict_route_rewrite_is_screened_as_forwarded() {
    let (mut p, s) = rr_proxy();
    let req = format!(
        "INVITE sip:192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKstrict;rport\r\n\
Route: <sip:{BLOCKED}@10.0.0.2:5080>\r\nMax-Forwards: 70\r\nFrom: <sip:+12125550199@10.0.0.1>;tag=1\r\n\
To: <sip:+12125550100@10.0.0.2>\r\nCall-ID: strict\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let r = sent(&run(&mut p, udp(), &req)).2;
    assert_eq!(s.seen.lock().unwrap()[0].0, format!("sip:{BLOCKED}@10.0.0.2:5080"));
    assert!(r.starts_with("SIP/2.0 607 "), "{r}");
}

/// PAI from an untrusted source is neither judged by the policy (trust_pai would take it
/// as the caller ID) nor forwarded: the screen judges what downstream sees.
#[test]
fn untrusted_pai_is_not_screened_and_not_forwarded() {
    let mut c = cfg(None);
    c.trusted = vec!["192.0.2.0/24".parse().unwrap()];
    let s = Arc::new(Dnc::default());
    let mut p = Proxy::new(c, s.clone());
    let req = invite("P-Asserted-Identity: <sip:+12125550123@10.0.0.1>\r\n");
    let fwd = sent(&run(&mut p, udp(), &req)).2;
    assert!(!fwd.contains("P-Asserted-Identity"), "stripped: {fwd}");
    assert_eq!(s.seen.lock().unwrap()[0].2, None, "BUG: the screen judged a P-Asserted-Identity that is not forwarded");
}

#[test]
fn random_mutations_never_panic() {
    let mut c = cfg(None);
    c.record_route = true;
    c.advertise_v6 = Some(Advert::new(crate::sip::addr::HostPort::parse("[2001:db8::10]:5060").unwrap()));
    c.account_header = Some("X-Account".into());
    c.trusted = vec!["10.0.0.0/24".parse().unwrap()];
    let s = Arc::new(Dnc::default());
    let mut p = Proxy::new(c, s);
    let fwd = sent(&run(&mut p, udp(), &invite(""))).2;
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via: ")).collect();
    let resp = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\nTo: <sip:b@c>;tag=u\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    let rr = rr_of(&fwd);
    let seeds: Vec<String> = vec![
        invite("Route: <sip:192.0.2.10:5060;lr>, <sip:[2001:db8::10];lr;sg=1>,<sip:10.0.0.5;maddr=10.0.0.6>\r\nP-Asserted-Identity: <sip:+1@x>\r\nX-Account: a\r\n"),
        invite(&format!("Route: {rr}\r\n")).replace("0.2>\r\n", "0.2>;tag=\"x;tag=y\"\r\n"),
        resp.clone(),
        blocked_invite(&rr, "call-1"),
        "ACK sip:a@10.0.0.2 SIP/2.0\r\nv: SIP/2.0/TCP [2001:db8::1]:5060;received=;rport;branch=z9hG4bK\r\nf: a;tag=1\r\nt: <sip:b>;tag=sg00\r\ni: x\r\nCSeq: 1 ACK\r\n\r\n".into(),
        "CANCEL sip:192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;rport=1;received=\"1.1.1.1\",SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-sg0000\r\nRoute: <sip:10.0.0.9>\r\nRoute: <sip:192.0.2.10>\r\nFrom: x;tag=\r\nTo: y\r\nCall-ID: c\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 1\r\nl: 0\r\n\r\n".into(),
    ];
    let alphabet: &[u8] = b";:=,<>\"\\[]@ \t\r\n0123456789abcdefz9hG4bK-sgtagSIP/2.0UDPTCP.%?";
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let froms = [
        udp(),
        Inbound { transport: Transport::Tcp, src: "[2001:db8::1]:5060".parse().unwrap() },
        Inbound { transport: Transport::Udp, src: "192.0.2.10:5060".parse().unwrap() },
    ];
    for it in 0..100_000u64 {
        let seed = &seeds[(rnd() % seeds.len() as u64) as usize];
        let mut b = seed.clone().into_bytes();
        let n = 1 + rnd() % 6;
        for _ in 0..n {
            let pos = (rnd() % (b.len() as u64 + 1)) as usize;
            match rnd() % 4 {
                0 if pos < b.len() => {
                    b[pos] = alphabet[(rnd() % alphabet.len() as u64) as usize];
                }
                1 if pos < b.len() => {
                    b.remove(pos);
                }
                2 => {
                    b.insert(pos.min(b.len()), alphabet[(rnd() % alphabet.len() as u64) as usize]);
                }
                _ => {
                    // duplicate a slice
                    let a = (rnd() % (b.len() as u64)) as usize;
                    let l = (rnd() % 40) as usize;
                    let e = (a + l).min(b.len());
                    let chunk = b[a..e].to_vec();
                    let at = pos.min(b.len());
                    b.splice(at..at, chunk);
                }
            }
        }
        let mut out = Vec::new();
        let from = froms[(it % 3) as usize];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.handle(now(), from, &b, &mut out)));
        if r.is_err() {
            panic!("PANIC on input {:?}", String::from_utf8_lossy(&b));
        }
    }
}

/// The same with [upstream] and the relay policy: the SUBSCRIBE steered back to the
/// sender's own (customer) address gets no proof, so the INVITE is screened.
#[test]
fn subscribe_mints_no_proof_with_upstream() {
    let mut c = cfg(Some(crate::config::server::parse_upstream("sip:10.9.9.9:5090").unwrap()));
    c.record_route = true;
    c.relay_allowed = Some(vec!["10.9.9.9/32".parse().unwrap(), "10.0.0.0/24".parse().unwrap()]);
    c.far_side = vec!["10.9.9.9/32".parse().unwrap()];
    let s = Arc::new(Dnc::default());
    let mut p = Proxy::new(c, s.clone());
    let sub = "SUBSCRIBE sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKsub;rport\r\n\
Route: <sip:10.0.0.1:5062;lr>\r\nFrom: <sip:+12125550199@10.0.0.1>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: minted\r\n\
CSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n";
    let (_, dest, fwd) = sent(&run(&mut p, udp(), sub));
    assert_eq!(dest, "10.0.0.1:5062".parse().unwrap(), "back to the sender");
    let rr = rr_of(&fwd);
    let r = sent(&run(&mut p, udp(), &blocked_invite(&rr, "minted"))).2;
    assert!(r.starts_with("SIP/2.0 607 "), "{r}");
    assert_eq!(s.screened.load(Ordering::SeqCst), 1);
}

/// A request claiming the callee's end of a dialog must come from the far side: the caller
/// cannot pose as its callee (it knows the callee's tag from the 200) to reach the upstream.
#[test]
fn the_callee_end_must_come_from_the_far_side() {
    let mut c = cfg(Some(crate::config::server::parse_upstream("sip:10.9.9.9:5090").unwrap()));
    c.record_route = true;
    c.far_side = vec!["10.9.9.9/32".parse().unwrap()];
    let s = Arc::new(Dnc::default());
    let mut p = Proxy::new(c, s.clone());
    let rr = rr_of(&sent(&run(&mut p, udp(), &invite(""))).2);
    let posing = format!(
        "INVITE sip:{BLOCKED}@10.9.9.9:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKpose;rport\r\n\
Route: {rr}\r\nFrom: <sip:+12125550100@10.0.0.2>;tag=uas\r\nTo: <sip:{BLOCKED}@10.0.0.1>;tag=1\r\n\
Call-ID: call-1\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let r = sent(&run(&mut p, udp(), &posing)).2;
    assert!(r.starts_with("SIP/2.0 607 "), "{r}");
    assert_eq!(s.screened.load(Ordering::SeqCst), 2);
}

/// An RFC 2543 caller without a From tag: the callee's re-INVITE (the caller's empty tag
/// now in To) still belongs to the screened dialog.
#[test]
fn the_callee_reinvite_of_a_tagless_caller_verifies() {
    let (mut p, s) = rr_proxy();
    let first = invite("").replace("10.0.0.1>;tag=1\r\n", "10.0.0.1>\r\n");
    let fwd = sent(&run(&mut p, udp(), &first)).2;
    let rr = rr_of(&fwd);
    let from_callee = format!(
        "INVITE sip:+12125550199@10.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKcallee;rport\r\n\
Route: {rr}\r\nFrom: <sip:+12125550100@10.0.0.2>;tag=uas\r\nTo: <sip:+12125550199@10.0.0.1>\r\n\
Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let callee = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    let _ = run(&mut p, callee, &from_callee);
    assert_eq!(s.screened.load(Ordering::SeqCst), 1, "the callee's re-INVITE belongs to the screened dialog");
}

/// A TCP listener on [::] (no IPV6_V6ONLY) reports IPv4 peers as ::ffff:a.b.c.d: the
/// core matches them as their IPv4 address.
#[test]
fn a_v4_mapped_tcp_peer_is_its_v4_address() {
    let mut c = cfg(None);
    c.trusted = vec!["10.0.0.0/24".parse().unwrap()];
    let mut p = Proxy::new(c, Arc::new(crate::screen::PassThrough));
    let req = invite("P-Asserted-Identity: <sip:+12125550199@10.0.0.1>\r\n")
        .replace("UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport", "TCP 10.0.0.1:5062;branch=z9hG4bKabc");
    let mapped = Inbound { transport: Transport::Tcp, src: "[::ffff:10.0.0.1]:40000".parse().unwrap() };
    let fwd = sent(&run(&mut p, mapped, &req)).2;
    assert!(
        fwd.contains("P-Asserted-Identity"),
        "a trusted 10.0.0.1 over a dual-stack TCP socket keeps its PAI:\n{fwd}"
    );
}
