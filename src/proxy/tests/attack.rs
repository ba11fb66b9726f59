//! Hostile input on the core: replies never amplify, cost stays linear.
use super::*;

#[test]
fn no_reply_is_larger_than_its_request() {
    let mut p = pass();
    // 20 KB of Proxy-Require tags: named once (Unsupported), not echoed in Warning too.
    let tags: Vec<String> = (0..2000).map(|i| format!("x{i}")).collect();
    let req = invite(&format!("Proxy-Require: {}\r\n", tags.join(",")));
    let (_, _, r) = sent(&run(&mut p, udp(), &req));
    assert!(r.starts_with("SIP/2.0 420 "), "{}", &r[..60]);
    assert!(r.len() <= req.len(), "420 of {} bytes for a request of {}", r.len(), req.len());
    // Many Via values on few lines: copied as lines, not one line per value.
    let vias: Vec<String> =
        (0..400).map(|i| format!("SIP/2.0/UDP 10.1.{}.{}:5060;branch=z9hG4bK{i}", i / 250, i % 250)).collect();
    let req = invite(&format!("Via: {}\r\n", vias.join(","))).replace("Max-Forwards: 70", "Max-Forwards: 0");
    let (_, _, r) = sent(&run(&mut p, udp(), &req));
    assert!(r.starts_with("SIP/2.0 483 "), "{}", &r[..60]);
    assert!(r.len() <= req.len(), "483 of {} bytes for a request of {}", r.len(), req.len());
    // A minimal request: the Warning goes rather than outgrow it.
    let tiny = "OPTIONS sip:a@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKt\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\ni: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\n\r\n";
    let (_, _, r) = sent(&run(&mut p, udp(), tiny));
    assert!(r.starts_with("SIP/2.0 483 ") && !r.contains("Warning"), "{r}");
    // Bounded: what it must add is the To tag and Content-Length (no received/rport here).
    let must = ";tag=sg0000000000000000".len() + "Content-Length: 0\r\n".len();
    assert!(r.len() <= tiny.len() + must, "{} vs {}", r.len(), tiny.len());
}

#[test]
fn scanners_are_dropped_without_a_word() {
    let mut c = cfg(None);
    c.scanners = vec!["friendly-scanner".into(), "sipvicious".into()];
    let mut p = Proxy::new(c, Arc::new(crate::screen::PassThrough));
    let probe = invite("User-Agent: Friendly-Scanner\r\n").replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(run(&mut p, udp(), &probe).len(), 1);
    assert_eq!(dropped(&run(&mut p, udp(), &probe)), Some(DropReason::Scanner), "not even a 483");
    assert_eq!(dropped(&run(&mut p, udp(), &invite("User-Agent: x sipvicious/0.3\r\n"))), Some(DropReason::Scanner));
    assert!(sent(&run(&mut p, udp(), &invite("User-Agent: Acme PBX 1.0\r\n"))).2.starts_with("INVITE "));
}

#[test]
fn under_overload_new_calls_get_503_and_everything_else_flows() {
    let p = Proxy::new(rr_proxy_cfg(), Arc::new(crate::screen::PassThrough));
    let mut out = Vec::new();
    let first = invite("");
    p.handle(now(), udp(), first.as_bytes(), &mut out);
    let fwd = sent(&out).2;
    let rr = fwd.split("\r\n").find_map(|l| l.strip_prefix("Record-Route: ")).unwrap().to_string();
    out.clear();
    // A new call while shedding: 503 with Retry-After, not screened, not forwarded.
    let new_call = invite("").replace("call-1", "call-2");
    p.handle_loaded(now(), udp(), new_call.as_bytes(), Load::Shedding, &mut out);
    let r = sent(&out).2;
    assert!(r.starts_with("SIP/2.0 503 Service Unavailable\r\n") && r.contains("\r\nRetry-After: 5\r\n"), "{r}");
    out.clear();
    // A response and a proven re-INVITE of the call in progress go through.
    let uas = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via: ")).collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\nTo: <sip:+12125550100@10.0.0.2>;tag=u\r\nf: <sip:+12125550199@10.0.0.1>;tag=1\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    p.handle_loaded(now(), uas, ok.as_bytes(), Load::Shedding, &mut out);
    assert_eq!(sent(&out).1, UAC.parse().unwrap());
    out.clear();
    let reinvite = invite(&format!("Route: {rr}\r\n"))
        .replace("0.2>\r\n", "0.2>;tag=u\r\n")
        .replace("CSeq: 1", "CSeq: 2")
        .replace("1 INVITE", "2 INVITE");
    p.handle_loaded(now(), udp(), reinvite.as_bytes(), Load::Shedding, &mut out);
    assert!(sent(&out).2.starts_with("INVITE "));
}

fn rr_proxy_cfg() -> ProxyConfig {
    let mut c = cfg(None);
    c.record_route = true;
    c
}

/// Fuzzing found a strict-router repair that wrote a malformed last Route value into the
/// request line (`BYE sip:: <sip:...;lr SIP/2.0`): such a request is refused, not relayed.
#[test]
fn a_malformed_route_never_reaches_the_request_line() {
    let mut p = pass();
    let bye = "BYE sip:+13125552000@192.0.2.10:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-1\r\n\
From: <sip:+12125550100@10.0.0.1>;tag=a\r\n\
To: <sip:+13125552000@192.0.2.10>;tag=b\r\n\
Call-ID: strict-1\r\n\
CSeq: 2 BYE\r\n\
Route: <sip:: <sip:192.0.2.10:5060;lr>\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";
    let out = run(&mut p, udp(), bye);
    let (_, _, reply) = sent(&out);
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");
    // A well-formed strict route is still repaired: the last Route becomes the target.
    let ok = bye.replace("Route: <sip:: <sip:192.0.2.10:5060;lr>", "Route: <sip:10.0.0.9:5090>");
    let (_, dest, fwd) = sent(&run(&mut p, udp(), &ok));
    assert_eq!(dest, "10.0.0.9:5090".parse().unwrap());
    assert!(fwd.starts_with("BYE sip:10.0.0.9:5090 SIP/2.0\r\n"), "{fwd}");
}
