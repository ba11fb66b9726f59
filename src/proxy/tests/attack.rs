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
    let vias: Vec<String> = (0..400).map(|i| format!("SIP/2.0/UDP 10.1.{}.{}:5060;branch=z9hG4bK{i}", i / 250, i % 250)).collect();
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
