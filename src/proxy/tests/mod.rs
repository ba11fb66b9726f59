use super::*;
use crate::config::server::{Upstream, parse_upstream};
use crate::screen::{Call, Rule};
use crate::sip::branch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const UAC: &str = "10.0.0.1:5062";

fn cfg(upstream: Option<Upstream>) -> ProxyConfig {
    let mut c = ProxyConfig::new("192.0.2.10:5060", vec!["192.0.2.10:5060".parse().unwrap()]);
    c.upstream = upstream;
    c
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn udp() -> Inbound {
    Inbound { transport: Transport::Udp, src: UAC.parse().unwrap() }
}

fn invite(extra: &str) -> String {
    format!(
        "INVITE sip:+12125550100@10.0.0.2:5080;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport\r\n\
Max-Forwards: 70\r\n\
f: <sip:+12125550199@10.0.0.1>;tag=1\r\n\
To: <sip:+12125550100@10.0.0.2>\r\n\
Call-ID: call-1\r\n\
CSeq: 1 INVITE\r\n{extra}\
Identity: eyJhbGciOiJFUzI1NiJ9.e30.sig;info=<https://cert.example/x.pem>\r\n\
Content-Length: 4\r\n\r\nv=0\n"
    )
}

fn run(p: &mut Proxy, from: Inbound, msg: &str) -> Vec<Action> {
    let mut out = Vec::new();
    p.handle(now(), from, msg.as_bytes(), &mut out);
    out
}

fn sent(actions: &[Action]) -> (Transport, SocketAddr, String) {
    for a in actions {
        if let Action::Send { transport, dest, bytes, .. } = a {
            return (*transport, *dest, String::from_utf8(bytes.clone()).unwrap());
        }
    }
    panic!("nothing sent: {actions:?}");
}

fn dropped(actions: &[Action]) -> Option<DropReason> {
    actions.iter().find_map(|a| match a {
        Action::Drop(r) => Some(*r),
        _ => None,
    })
}

fn pass() -> Proxy {
    Proxy::new(cfg(None), Arc::new(crate::screen::PassThrough))
}

fn branch_of(msg: &str) -> String {
    let line = msg.lines().find(|l| l.starts_with("Via: SIP/2.0/UDP 192.0.2.10")).unwrap();
    line.split("branch=").nth(1).unwrap().to_string()
}

#[test]
fn forwards_by_splicing() {
    let mut p = pass();
    let req = invite("");
    let (t, dest, out) = sent(&run(&mut p, udp(), &req));
    assert_eq!((t, dest), (Transport::Udp, "10.0.0.2:5080".parse().unwrap()));
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(lines[1].starts_with("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-sg"), "{out}");
    assert_eq!(lines[2], "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport=5062;received=10.0.0.1");
    assert_eq!(lines[3], "Max-Forwards: 69");
    // Every other byte is the original: undo our three edits and compare.
    let undone = out
        .replacen(&format!("{}\r\n", lines[1]), "", 1)
        .replace(";rport=5062;received=10.0.0.1", ";rport")
        .replace("Max-Forwards: 69", "Max-Forwards: 70");
    assert_eq!(undone, req);
}

#[test]
fn retransmission_cancel_and_ack_share_the_branch() {
    let mut p = pass();
    let a = sent(&run(&mut p, udp(), &invite(""))).2;
    let b = sent(&run(&mut p, udp(), &invite(""))).2;
    assert_eq!(a, b, "a retransmission is forwarded byte-identically");
    let cancel = invite("").replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL");
    let c = sent(&run(&mut p, udp(), &cancel)).2;
    let ack = invite("")
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .replace("0.2>\r\n", "0.2>;tag=uas\r\n");
    let d = sent(&run(&mut p, udp(), &ack)).2;
    assert_eq!(branch_of(&a), branch_of(&c));
    assert_eq!(branch_of(&a), branch_of(&d));
    let other = invite("").replace("z9hG4bKabc", "z9hG4bKother");
    assert_ne!(branch_of(&a), branch_of(&sent(&run(&mut p, udp(), &other)).2));
}

#[test]
fn rfc2543_branch_uses_message_fields() {
    let mut p = pass();
    let old = invite("").replace(";branch=z9hG4bKabc", "");
    let a = sent(&run(&mut p, udp(), &old)).2;
    let cancel = old.replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL");
    assert_eq!(branch_of(&a), branch_of(&sent(&run(&mut p, udp(), &cancel)).2));
    let next = old.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
    assert_ne!(branch_of(&a), branch_of(&sent(&run(&mut p, udp(), &next)).2));
}

#[test]
fn max_forwards_rules() {
    let mut p = pass();
    let out = sent(&run(&mut p, udp(), &invite("").replace("Max-Forwards: 70\r\n", ""))).2;
    assert!(out.contains("\r\nMax-Forwards: 70\r\n"), "{out}");
    let out = sent(&run(&mut p, udp(), &invite("").replace("Max-Forwards: 70", "Max-Forwards: 0010"))).2;
    assert!(out.contains("\r\nMax-Forwards: 9\r\n"), "{out}");
    let zero = invite("").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let (_, dest, reply) = sent(&run(&mut p, udp(), &zero));
    assert_eq!(dest, UAC.parse().unwrap());
    assert!(reply.starts_with("SIP/2.0 483 Too Many Hops\r\n"), "{reply}");
    assert!(reply.contains("Warning: 399 192.0.2.10 \"Max-Forwards is 0\""), "{reply}");
    assert_eq!(reply, sent(&run(&mut p, udp(), &zero)).2, "retransmission gets the same bytes");
    // The ACK for that reply carries our To tag and is absorbed.
    let tag = reply.split("To: <sip:+12125550100@10.0.0.2>;tag=").nth(1).unwrap().split("\r\n").next().unwrap();
    let ack = zero
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .replace("0.2>\r\n", &format!("0.2>;tag={tag}\r\n"));
    assert_eq!(dropped(&run(&mut p, udp(), &ack)), Some(DropReason::AckAbsorbed));
    // So is one whose UAC gave it a branch of its own (SIPp's `[branch]`): the tag proves it
    // acknowledges our reply, and the next hop never saw the INVITE.
    let own_branch = ack.replace("branch=z9hG4bKabc", "branch=z9hG4bKother");
    assert_eq!(dropped(&run(&mut p, udp(), &own_branch)), Some(DropReason::AckAbsorbed));
    // A tag of our form that is not the MAC of this Call-ID, From tag and CSeq number is
    // not ours: that ACK goes on (or is refused) like any other.
    for (a, b) in [("CSeq: 1 ACK", "CSeq: 2 ACK"), ("Call-ID: call-1", "Call-ID: call-2"), (";tag=1\r\n", ";tag=2\r\n")]
    {
        let other = ack.replace(a, b);
        assert_ne!(dropped(&run(&mut p, udp(), &other)), Some(DropReason::AckAbsorbed), "{a} -> {b}");
    }
}

#[test]
fn extension_scheme_and_bad_requests() {
    let mut p = pass();
    let r = sent(&run(&mut p, udp(), &invite("Proxy-Require: com.example.x\r\n"))).2;
    assert!(r.starts_with("SIP/2.0 420 Bad Extension\r\n") && r.contains("\r\nUnsupported: com.example.x\r\n"), "{r}");
    let r = sent(&run(
        &mut p,
        udp(),
        &invite("").replace("INVITE sip:+12125550100@10.0.0.2:5080;user=phone", "INVITE isbn:2983792873"),
    ))
    .2;
    assert!(r.starts_with("SIP/2.0 416 "), "{r}");
    let r = sent(&run(&mut p, udp(), &invite("").replace("Call-ID: call-1\r\n", ""))).2;
    assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n") && r.contains("missing Call-ID"), "{r}");
    assert_eq!(dropped(&run(&mut p, udp(), "garbage\r\n\r\n")), Some(DropReason::Malformed));
    assert_eq!(dropped(&run(&mut p, udp(), "\r\n\r\n")), Some(DropReason::Keepalive));
    let bad_via = invite("").replace("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport", "SIP/2.0/UDP ;;,");
    assert_eq!(dropped(&run(&mut p, udp(), &bad_via)), Some(DropReason::BadVia));
}

#[test]
fn unknown_methods_and_compact_forms_are_forwarded() {
    let mut p = pass();
    let m = "FOOBAR sip:x@10.0.0.2:5080 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKq\r\nf: <sip:a@b>;tag=1\r\nt: <sip:x@c>\r\ni: z\r\nCSeq: 3 FOOBAR\r\nl: 0\r\n\r\n";
    let (_, dest, out) = sent(&run(&mut p, udp(), m));
    assert_eq!(dest, "10.0.0.2:5080".parse().unwrap());
    assert!(out.contains("\r\nv: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKq\r\nf: <sip:a@b>;tag=1\r\n"), "{out}");
    assert!(out.starts_with("FOOBAR sip:x@10.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch="), "{out}");
}

#[test]
fn loops_are_detected_and_spirals_pass() {
    let mut p = pass();
    let first = sent(&run(&mut p, udp(), &invite(""))).2;
    // The next hop sends it straight back to us.
    let back = first.replacen("Via: ", "Via: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKhop\r\nVia: ", 1);
    let from_hop = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    let r = sent(&run(&mut p, from_hop, &back)).2;
    assert!(r.starts_with("SIP/2.0 482 Loop Detected"), "{r}");
    let spiral = back.replace("INVITE sip:+12125550100@10.0.0.2:5080", "INVITE sip:+12125550100@10.0.0.3:5080");
    let (_, dest, _) = sent(&run(&mut p, from_hop, &spiral));
    assert_eq!(dest, "10.0.0.3:5080".parse().unwrap());
}

#[test]
fn routes_and_upstream() {
    let mut p = pass();
    let r = invite("Route: <sip:192.0.2.10:5060;lr>, <sip:10.0.0.9:5070;lr;transport=tcp>\r\n");
    let (t, dest, out) = sent(&run(&mut p, udp(), &r));
    assert_eq!((t, dest), (Transport::Tcp, "10.0.0.9:5070".parse().unwrap()));
    assert!(out.contains("\r\nRoute: <sip:10.0.0.9:5070;lr;transport=tcp>\r\n"), "{out}");
    assert!(out.contains("Via: SIP/2.0/TCP 192.0.2.10:5060;branch="), "{out}");
    let only_us = invite("Route: <sip:192.0.2.10;lr>\r\n");
    let (_, dest, out) = sent(&run(&mut p, udp(), &only_us));
    assert_eq!(dest, "10.0.0.2:5080".parse().unwrap());
    assert!(!out.contains("Route:"), "{out}");
    let mut p =
        Proxy::new(cfg(Some(parse_upstream("sip:10.9.9.9:5090").unwrap())), Arc::new(crate::screen::PassThrough));
    assert_eq!(sent(&run(&mut p, udp(), &invite(""))).1, "10.9.9.9:5090".parse().unwrap());
    let mut p = pass();
    let dns = invite("").replace("@10.0.0.2:5080;user=phone", "@carrier.example");
    assert!(sent(&run(&mut p, udp(), &dns)).2.starts_with("SIP/2.0 502 "));
}

#[test]
fn responses_follow_the_via_stack() {
    let mut p = pass();
    let fwd = sent(&run(&mut p, udp(), &invite(""))).2;
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via: ")).collect();
    let resp = format!(
        "SIP/2.0 180 Ringing\r\n{}\r\n{}\r\nTo: <sip:+12125550100@10.0.0.2>;tag=u\r\nf: <sip:+12125550199@10.0.0.1>;tag=1\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    let from_uas = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    let (_, dest, out) = sent(&run(&mut p, from_uas, &resp));
    assert_eq!(dest, UAC.parse().unwrap(), "received + rport of the next Via");
    assert_eq!(out, resp.replacen(&format!("{}\r\n", vias[0]), "", 1));
    // Both Vias on one line: only the first value goes.
    let one_line = resp.replacen(&format!("{}\r\nVia: ", vias[0]), &format!("{} , ", vias[0]), 1);
    let out = sent(&run(&mut p, from_uas, &one_line)).2;
    assert!(out.starts_with(&format!("SIP/2.0 180 Ringing\r\nVia: {}\r\nTo:", &vias[1][5..])), "{out}");
    let foreign = resp.replacen(vias[0], "Via: SIP/2.0/UDP 10.7.7.7;branch=z9hG4bKnotours", 1);
    assert_eq!(dropped(&run(&mut p, from_uas, &foreign)), Some(DropReason::NotOurVia));
}

/// Rejects every call as `quota` and counts how often it was asked.
struct Counting(AtomicUsize);

impl Screen for Counting {
    fn account_header(&self) -> Option<Arc<str>> {
        Some("X-Account".into())
    }
    fn screen(&self, call: &Call<'_>, _now: SystemTime) -> Decision {
        self.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(call.account_header.as_deref(), Some("acme"));
        assert_eq!(call.from, "<sip:+12125550199@10.0.0.1>;tag=1");
        let mut d = Decision::pass();
        d.rule = Some(Rule::Quota);
        d.verdict = Arc::new(Verdict::Reject {
            code: 403,
            reason: "Quota Exceeded".into(),
            headers: vec![ExtraHeader::new("Reason", "SIP;cause=403;text=\"daily quota\"")],
        });
        d
    }
}

#[test]
fn screening_is_once_per_transaction() {
    let screen = Arc::new(Counting(AtomicUsize::new(0)));
    let mut p = Proxy::new(cfg(None), screen.clone());
    let req = invite("X-Account: acme\r\n");
    let first = run(&mut p, udp(), &req);
    let reply = sent(&first).2;
    assert!(reply.starts_with("SIP/2.0 403 Quota Exceeded\r\n"), "{reply}");
    assert!(reply.contains("\r\nReason: SIP;cause=403;text=\"daily quota\"\r\n"), "{reply}");
    assert_eq!(first.iter().filter(|a| matches!(a, Action::Decided(_))).count(), 1);
    let again = run(&mut p, udp(), &req);
    assert_eq!(sent(&again).2, reply, "retransmission: same reply bytes");
    assert!(!again.iter().any(|a| matches!(a, Action::Decided(_))), "not logged twice");
    assert_eq!(screen.0.load(Ordering::SeqCst), 1, "not screened twice");
    let cancel = req.replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL");
    assert!(sent(&run(&mut p, udp(), &cancel)).2.starts_with("SIP/2.0 200 OK\r\n"));
    // A To tag alone proves nothing: that INVITE is screened (and rejected) like the first.
    let reinvite = req.replace("0.2>\r\n", "0.2>;tag=x\r\n").replace("Call-ID: call-1", "Call-ID: call-2");
    assert!(sent(&run(&mut p, udp(), &reinvite)).2.starts_with("SIP/2.0 403 "));
    assert_eq!(screen.0.load(Ordering::SeqCst), 2);
}

#[test]
fn forward_verdict_headers_are_added() {
    struct Tagging;
    impl Screen for Tagging {
        fn account_header(&self) -> Option<Arc<str>> {
            None
        }
        fn screen(&self, _: &Call<'_>, _: SystemTime) -> Decision {
            let mut d = Decision::pass();
            d.verdict =
                Arc::new(Verdict::Forward { headers: vec![ExtraHeader::new("X-Screened", "pass")], verstat: None });
            d
        }
    }
    let mut p = Proxy::new(cfg(None), Arc::new(Tagging));
    let out = sent(&run(&mut p, udp(), &invite(""))).2;
    assert!(out.contains("\r\nX-Screened: pass\r\nVia: SIP/2.0/UDP 10.0.0.1"), "{out}");
}

#[test]
fn tcp_replies_go_back_on_the_connection() {
    let mut p = pass();
    let tcp = Inbound { transport: Transport::Tcp, src: "10.0.0.1:40000".parse().unwrap() };
    let zero =
        invite("").replace("Max-Forwards: 70", "Max-Forwards: 0").replace("UDP 10.0.0.1:5062", "TCP 10.0.0.1:5062");
    let (t, dest, _) = sent(&run(&mut p, tcp, &zero));
    assert_eq!((t, dest), (Transport::Tcp, tcp.src));
}

#[test]
fn record_route_when_configured() {
    let mut c = cfg(None);
    c.record_route = true;
    let mut p = Proxy::new(c, Arc::new(crate::screen::PassThrough));
    let out = sent(&run(&mut p, udp(), &invite(""))).2;
    let mac = branch::route_mac(&p.config().key, b"call-1", b"1", b"+12125550100");
    assert!(out.contains(&format!("\r\nRecord-Route: <sip:192.0.2.10:5060;lr;sg={mac:016x}>\r\n")), "{out}");
}

#[test]
fn trailing_bytes_after_content_length_are_not_forwarded() {
    let mut p = pass();
    let req = format!("{}INVITE sip:second@x SIP/2.0\r\n\r\n", invite(""));
    let out = sent(&run(&mut p, udp(), &req)).2;
    assert!(out.ends_with("\r\n\r\nv=0\n"), "{out}");
}

mod attack;
mod bypass;
mod counting;
mod edge_trust;
mod redirect;
mod waiting;

/// The core counts through the `Events` it is given and nowhere else.
#[test]
fn counts_go_to_the_events_given() {
    use crate::proxy::events::{Events, Inward};
    use std::sync::Mutex;
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);
    impl Events for Log {
        fn message_in(&self, t: Transport, kind: Inward) {
            self.0.lock().unwrap().push(format!("in {} {kind:?}", t.label()));
        }
        fn message_out(&self, _t: Transport, kind: &'static str) {
            self.0.lock().unwrap().push(format!("out {kind}"));
        }
        fn reply(&self, code: u16, trimmed: bool) {
            self.0.lock().unwrap().push(format!("reply {code} {trimmed}"));
        }
        fn cache_hit(&self) {
            self.0.lock().unwrap().push("cache hit".into());
        }
        fn decided(&self, d: &Decision, started: Option<std::time::Instant>) {
            let rule = d.rule.map_or("-", |r| r.name());
            self.0.lock().unwrap().push(format!("decided {rule} {}", started.is_some()));
        }
    }
    let log = Arc::new(Log::default());
    let mut p = Proxy::new(cfg(None), Arc::new(Counting(AtomicUsize::new(0)))).with_events(log.clone());
    let req = invite("X-Account: acme\r\n");
    run(&mut p, udp(), &req);
    run(&mut p, udp(), &req);
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            "in udp Request(\"INVITE\")",
            "decided quota false",
            "reply 403 false",
            "out reply",
            "in udp Request(\"INVITE\")",
            "cache hit",
            "reply 403 false",
            "out reply",
        ]
    );
}
