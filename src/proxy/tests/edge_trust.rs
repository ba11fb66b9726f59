//! The edge-trust rules on the core: nothing a sender writes can skip screening, charge a
//! call twice, or make the proxy send where the operator did not allow.
use super::*;
use crate::screen::Charge;
use crate::screen::quota::Windows;
use crate::screen::quota::shared::Reservation;
use std::sync::Mutex;

/// Forwards every call, counting screenings, and records charges taken back.
#[derive(Default)]
struct Ledger {
    screened: AtomicUsize,
    released: Mutex<Vec<String>>,
}

impl Screen for Ledger {
    fn account_header(&self) -> Option<Arc<str>> {
        Some("X-Account".into())
    }
    fn screen(&self, call: &Call<'_>, _now: SystemTime) -> Decision {
        self.screened.fetch_add(1, Ordering::SeqCst);
        let mut d = Decision::pass();
        d.charge = Some(Charge {
            account: call.call_id.to_string().into(),
            windows: Windows { hour: 0, day: 0, week: 0, day_start: 0 },
            caller: 1,
            callee: 2,
            shared: None,
        });
        d
    }
    fn release(&self, d: &Decision) -> Option<Box<Reservation>> {
        if let Some(c) = &d.charge {
            self.released.lock().unwrap().push(c.account.to_string());
        }
        None
    }
}

fn ledger(c: ProxyConfig) -> (Proxy, Arc<Ledger>) {
    let l = Arc::new(Ledger::default());
    (Proxy::new(c, l.clone()), l)
}

fn rr_cfg() -> ProxyConfig {
    let mut c = cfg(None);
    c.record_route = true;
    c
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[test]
fn a_to_tag_alone_does_not_skip_screening() {
    let (mut p, l) = ledger(rr_cfg());
    let tagged = invite("").replace("0.2>\r\n", "0.2>;tag=anything\r\n");
    assert!(sent(&run(&mut p, udp(), &tagged)).2.starts_with("INVITE "));
    assert_eq!(l.screened.load(Ordering::SeqCst), 1, "screened like an initial INVITE");
    // A Route naming us with a made-up proof is no better.
    let forged = tagged
        .replace("CSeq: 1", "Route: <sip:192.0.2.10:5060;lr;sg=0123456789abcdef>\r\nCSeq: 2")
        .replace("1 INVITE", "2 INVITE");
    let _ = run(&mut p, udp(), &forged.replace("Call-ID: call-1", "Call-ID: call-9"));
    assert_eq!(l.screened.load(Ordering::SeqCst), 2);
}

#[test]
fn a_proven_dialog_passes_unscreened_from_either_end_for_hours() {
    let (mut p, l) = ledger(rr_cfg());
    let first = sent(&run(&mut p, udp(), &invite(""))).2;
    let rr = header(&first, "Record-Route").unwrap().to_string();
    assert_eq!(l.screened.load(Ordering::SeqCst), 1);
    // A re-INVITE from the caller hours later: our Record-Route back as Route.
    let reinvite = invite(&format!("Route: {rr}\r\n"))
        .replace("0.2>\r\n", "0.2>;tag=uas\r\n")
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("z9hG4bKabc", "z9hG4bKre");
    let mut out = Vec::new();
    p.handle(now() + Duration::from_secs(4 * 3600), udp(), reinvite.as_bytes(), &mut out);
    let (_, dest, fwd) = sent(&out);
    assert_eq!(dest, "10.0.0.2:5080".parse().unwrap());
    assert!(!fwd.contains("Route:"), "our Route popped: {fwd}");
    assert!(!fwd.contains("Record-Route:"), "not record-routed again: {fwd}");
    // From the callee: tags swapped, the caller's tag now in To.
    let from_callee = format!(
        "INVITE sip:+12125550199@10.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKcallee;rport\r\n\
Route: {rr}\r\nFrom: <sip:+12125550100@10.0.0.2>;tag=uas\r\nTo: <sip:+12125550199@10.0.0.1>;tag=1\r\n\
Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let callee = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    assert_eq!(sent(&run(&mut p, callee, &from_callee)).1, "10.0.0.1:5062".parse().unwrap());
    assert_eq!(l.screened.load(Ordering::SeqCst), 1, "neither was screened");
    // The proof is bound to the call: another Call-ID with it is screened.
    let _ = run(&mut p, udp(), &reinvite.replace("Call-ID: call-1", "Call-ID: call-2"));
    assert_eq!(l.screened.load(Ordering::SeqCst), 2);
    // A proof made with another key does not verify.
    let mut other = rr_cfg();
    other.key = branch::Key::derive(b"another node's secret");
    let (mut q, lq) = ledger(other);
    let _ = run(&mut q, udp(), &reinvite);
    assert_eq!(lq.screened.load(Ordering::SeqCst), 1);
}

#[test]
fn one_screening_per_call_across_a_407_retry_but_not_across_other_facts() {
    let (mut p, l) = ledger(cfg(None));
    let first = invite("");
    let _ = run(&mut p, udp(), &first);
    let _ = run(&mut p, udp(), &first);
    let retry = first
        .replace("z9hG4bKabc", "z9hG4bKretry")
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nProxy-Authorization: Digest username=\"acme\"\r\n");
    assert!(sent(&run(&mut p, udp(), &retry)).2.starts_with("INVITE "));
    assert_eq!(l.screened.load(Ordering::SeqCst), 1, "retransmission and retry reuse the verdict");
    // Same Call-ID and From tag, another callee or caller ID: screened anew.
    let _ = run(&mut p, udp(), &retry.replace("INVITE sip:+12125550100@", "INVITE sip:+12125550111@"));
    assert_eq!(l.screened.load(Ordering::SeqCst), 2);
    let _ = run(&mut p, udp(), &retry.replace("CSeq: 2", "P-Asserted-Identity: <sip:+13105550000@x>\r\nCSeq: 2"));
    assert_eq!(l.screened.load(Ordering::SeqCst), 3);
}

#[test]
fn after_a_2xx_the_same_call_id_is_a_new_call_but_a_retransmission_is_not() {
    let (mut p, l) = ledger(cfg(None));
    let first = invite("");
    let fwd = sent(&run(&mut p, udp(), &first)).2;
    let uas = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    let _ = run(&mut p, uas, &response_to(&fwd, "200 OK"));
    // The 200 was lost on the way: the UAC retransmits, which is still the same call.
    let _ = run(&mut p, udp(), &first);
    assert_eq!(l.screened.load(Ordering::SeqCst), 1);
    // A fresh INVITE reusing the Call-ID and From tag after the answer: a new call.
    let again = first.replace("z9hG4bKabc", "z9hG4bKnext").replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
    let _ = run(&mut p, udp(), &again);
    assert_eq!(l.screened.load(Ordering::SeqCst), 2);
}

#[test]
fn a_call_that_cannot_be_routed_is_not_charged() {
    let (mut p, l) = ledger(cfg(None));
    let dns = invite("").replace("@10.0.0.2:5080;user=phone", "@carrier.example");
    assert!(sent(&run(&mut p, udp(), &dns)).2.starts_with("SIP/2.0 502 "));
    assert_eq!(*l.released.lock().unwrap(), ["call-1"], "the charge is taken back");
    // The retransmission is screened again (the verdict was never acted on) and released again.
    let _ = run(&mut p, udp(), &dns);
    assert_eq!(l.screened.load(Ordering::SeqCst), 2);
    assert_eq!(l.released.lock().unwrap().len(), 2);
    let _ = run(&mut p, udp(), &invite("").replace("call-1", "call-ok"));
    assert_eq!(l.released.lock().unwrap().len(), 2, "a forwarded call keeps its charge");
}

#[test]
fn relaying_is_limited_to_the_upstream_customers_and_relay_to() {
    let mut c = cfg(Some(parse_upstream("sip:10.9.9.9:5090").unwrap()));
    c.relay_allowed = Some(vec!["10.9.9.9/32".parse().unwrap(), "10.0.0.0/24".parse().unwrap()]);
    let mut p = Proxy::new(c, Arc::new(crate::screen::PassThrough));
    let m = "MESSAGE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKm;rport\r\n\
Route: <sip:127.0.0.1:16000;lr>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@c>\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let (_, dest, r) = sent(&run(&mut p, udp(), m));
    assert_eq!(dest, UAC.parse().unwrap());
    assert!(r.starts_with("SIP/2.0 403 Relaying Denied\r\n"), "{r}");
    // Towards a customer network it goes.
    let ok = m.replace("127.0.0.1:16000", "10.0.0.7:5060");
    assert_eq!(sent(&run(&mut p, udp(), &ok)).1, "10.0.0.7:5060".parse().unwrap());
    assert_eq!(sent(&run(&mut p, udp(), &invite(""))).1, "10.9.9.9:5090".parse().unwrap());
}

fn response_to(fwd: &str, code: &str) -> String {
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via: ")).collect();
    format!(
        "SIP/2.0 {code}\r\n{}\r\n{}\r\nTo: <sip:+12125550100@10.0.0.2>;tag=u\r\nf: <sip:+12125550199@10.0.0.1>;tag=1\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    )
}

#[test]
fn responses_go_only_where_our_branch_says() {
    let mut p = pass();
    let fwd = sent(&run(&mut p, udp(), &invite(""))).2;
    let uas = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    let resp = response_to(&fwd, "200 OK");
    assert_eq!(sent(&run(&mut p, uas, &resp)).1, UAC.parse().unwrap());
    // The next Via rewritten to another target, over UDP or TCP: forged.
    for (from, to) in [
        ("rport=5062;received=10.0.0.1", "rport=16379;received=10.0.0.1"),
        ("rport=5062;received=10.0.0.1", "rport=5062;received=127.0.0.2"),
        ("SIP/2.0/UDP 10.0.0.1:5062", "SIP/2.0/TCP 10.0.0.1:5062"),
    ] {
        let bad = resp.replace(from, to);
        assert_ne!(bad, resp);
        assert_eq!(dropped(&run(&mut p, uas, &bad)), Some(DropReason::Forged), "{to}");
    }
    // A branch in our form that we never issued.
    let ours = branch_of(&fwd);
    let mut forged = ours.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let bad = resp.replace(&ours, std::str::from_utf8(&forged).unwrap());
    assert_eq!(dropped(&run(&mut p, uas, &bad)), Some(DropReason::Forged));
    let bad = resp.replace(&ours, "z9hG4bK-sgforged");
    assert_eq!(dropped(&run(&mut p, uas, &bad)), Some(DropReason::NotOurVia));
    // Bytes after Content-Length are not relayed.
    let smuggled = format!("{resp}INVITE sip:victim@10.0.0.1 SIP/2.0\r\n\r\n");
    assert_eq!(
        sent(&run(&mut p, uas, &smuggled)).2,
        resp.replacen(&format!("{}\r\n", fwd.lines().nth(1).unwrap()), "", 1)
    );
}

#[test]
fn received_and_rport_are_always_the_real_source() {
    let mut p = pass();
    let lying = invite("").replace("z9hG4bKabc;rport", "z9hG4bKabc;received=127.0.0.2;rport=15098");
    let fwd = sent(&run(&mut p, udp(), &lying)).2;
    assert!(fwd.contains("Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;received=10.0.0.1;rport=5062\r\n"), "{fwd}");
    let uas = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    assert_eq!(sent(&run(&mut p, uas, &response_to(&fwd, "200 OK"))).1, UAC.parse().unwrap());
    // No rport asked: received is still ours, and the response goes to the sent-by port.
    let plain = invite("").replace("z9hG4bKabc;rport", "z9hG4bKabc;received=127.0.0.2");
    let from = Inbound { transport: Transport::Udp, src: "10.0.0.1:40000".parse().unwrap() };
    let fwd = sent(&run(&mut p, from, &plain)).2;
    assert!(fwd.contains("branch=z9hG4bKabc;received=10.0.0.1\r\n"), "{fwd}");
    assert_eq!(sent(&run(&mut p, uas, &response_to(&fwd, "200 OK"))).1, "10.0.0.1:5062".parse().unwrap());
}

#[test]
fn tcp_clients_without_rport_get_their_responses_on_the_connection() {
    let mut p = pass();
    let tcp = Inbound { transport: Transport::Tcp, src: "10.0.0.1:40123".parse().unwrap() };
    let req = invite("").replace("UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport", "TCP 10.0.0.1:5062;branch=z9hG4bKabc");
    let fwd = sent(&run(&mut p, tcp, &req)).2;
    assert!(
        fwd.contains("Via: SIP/2.0/TCP 10.0.0.1:5062;branch=z9hG4bKabc;rport=40123;received=10.0.0.1\r\n"),
        "{fwd}"
    );
    let uas = Inbound { transport: Transport::Udp, src: "10.0.0.2:5080".parse().unwrap() };
    let out = run(&mut p, uas, &response_to(&fwd, "180 Ringing"));
    match &out[..] {
        [Action::Send { transport: Transport::Tcp, dest, connect: false, .. }] => assert_eq!(*dest, tcp.src),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cancel_of_an_invite_with_proxy_authorization_shares_its_branch() {
    let mut p = pass();
    let auth = "Proxy-Authorization: Digest username=\"acme\", response=\"x\"\r\nProxy-Require: \r\n";
    for old_style in [false, true] {
        let mut inv = invite(auth);
        if old_style {
            inv = inv.replace(";branch=z9hG4bKabc", "");
        }
        let a = sent(&run(&mut p, udp(), &inv)).2;
        let cancel = inv
            .replace("INVITE sip", "CANCEL sip")
            .replace("1 INVITE", "1 CANCEL")
            .replace(auth, "")
            .replace("Identity: ", "X-Gone: ");
        assert_eq!(branch_of(&a), branch_of(&sent(&run(&mut p, udp(), &cancel)).2), "RFC 2543 style: {old_style}");
    }
}

#[test]
fn in_dialog_requests_from_the_far_side_go_back_to_the_customer() {
    let mut c = cfg(Some(parse_upstream("sip:10.9.9.9:5090").unwrap()));
    c.record_route = true;
    c.far_side = vec!["10.9.9.9/32".parse().unwrap()];
    let mut p = Proxy::new(c, Arc::new(crate::screen::PassThrough));
    let first = sent(&run(&mut p, udp(), &invite(""))).2;
    let rr = header(&first, "Record-Route").unwrap().to_string();
    let bye = format!(
        "BYE sip:+12125550199@10.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5090;branch=z9hG4bKbye\r\n\
Route: {rr}\r\nFrom: <sip:+12125550100@10.0.0.2>;tag=uas\r\nTo: <sip:+12125550199@10.0.0.1>;tag=1\r\n\
Call-ID: call-1\r\nCSeq: 7 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let carrier = Inbound { transport: Transport::Udp, src: "10.9.9.9:5090".parse().unwrap() };
    assert_eq!(sent(&run(&mut p, carrier, &bye)).1, "10.0.0.1:5062".parse().unwrap(), "to the dialer");
    // The dialer's own BYE goes to the upstream.
    let dialer_bye = format!(
        "BYE sip:+12125550100@10.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKbye2;rport\r\n\
Route: {rr}\r\nFrom: <sip:+12125550199@10.0.0.1>;tag=1\r\nTo: <sip:+12125550100@10.0.0.2>;tag=uas\r\n\
Call-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(sent(&run(&mut p, udp(), &dialer_bye)).1, "10.9.9.9:5090".parse().unwrap());
}

#[test]
fn the_account_header_and_untrusted_pai_stop_at_the_boundary() {
    let mut c = cfg(None);
    c.account_header = Some("X-Account".into());
    c.trusted = vec!["10.0.0.0/24".parse().unwrap()];
    let mut p = Proxy::new(c.clone(), Arc::new(crate::screen::PassThrough));
    let req = invite("X-Account: acme\r\nP-Asserted-Identity: <sip:+12125550199@10.0.0.1>\r\n");
    let fwd = sent(&run(&mut p, udp(), &req)).2;
    assert!(!fwd.contains("X-Account"), "{fwd}");
    assert!(fwd.contains("\r\nP-Asserted-Identity: <sip:+12125550199@10.0.0.1>\r\n"), "trusted source keeps PAI");
    let outsider = Inbound { transport: Transport::Udp, src: "192.0.2.99:5060".parse().unwrap() };
    let fwd = sent(&run(&mut p, outsider, &req.replace("call-1", "call-x"))).2;
    assert!(!fwd.contains("P-Asserted-Identity") && !fwd.contains("X-Account"), "{fwd}");
    c.forward_account_header = true;
    let mut p = Proxy::new(c, Arc::new(crate::screen::PassThrough));
    assert!(sent(&run(&mut p, udp(), &req)).2.contains("\r\nX-Account: acme\r\n"));
}

#[test]
fn via_and_record_route_per_address_family_and_transport() {
    let mut c = cfg(None);
    c.record_route = true;
    c.advertise_v6 = Some(Advert::new(crate::sip::addr::HostPort::parse("[2001:db8::10]:5060").unwrap()));
    let mut p = Proxy::new(c, Arc::new(crate::screen::PassThrough));
    let v6 = invite("").replace("@10.0.0.2:5080;user=phone", "@[2001:db8::2]:5080;transport=tcp");
    let (t, dest, fwd) = sent(&run(&mut p, udp(), &v6));
    assert_eq!((t, dest), (Transport::Tcp, "[2001:db8::2]:5080".parse().unwrap()));
    assert!(fwd.contains("\r\nVia: SIP/2.0/TCP [2001:db8::10]:5060;branch=z9hG4bK-sg"), "{fwd}");
    let mac = branch::route_mac(&p.config().key, b"call-1", b"1", b"+12125550100");
    let rr = format!(
        "\r\nRecord-Route: <sip:[2001:db8::10]:5060;transport=tcp;lr;sg={mac:016x}>\r\nRecord-Route: <sip:192.0.2.10:5060;lr;sg={mac:016x}>\r\n"
    );
    assert!(fwd.contains(&rr), "RFC 5658 double Record-Route: {fwd}");
    // Both of ours come back as Route and both are popped.
    let bye = format!(
        "BYE sip:+12125550100@[2001:db8::2]:5080;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKb;rport\r\n\
Route: <sip:192.0.2.10:5060;lr;sg={mac:016x}>, <sip:[2001:db8::10]:5060;transport=tcp;lr;sg={mac:016x}>\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let (_, dest, out) = sent(&run(&mut p, udp(), &bye));
    assert_eq!(dest, "[2001:db8::2]:5080".parse().unwrap());
    assert!(!out.contains("Route:"), "{out}");
}

#[test]
fn our_record_route_goes_above_existing_ones() {
    let mut p = Proxy::new(rr_cfg(), Arc::new(crate::screen::PassThrough));
    let req = invite("").replacen("Via: ", "Record-Route: <sip:10.5.5.5;lr>\r\nVia: ", 1);
    let fwd = sent(&run(&mut p, udp(), &req)).2;
    let rr: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Record-Route")).collect();
    assert_eq!(rr.len(), 2, "{fwd}");
    assert!(rr[0].contains("192.0.2.10") && rr[1].contains("10.5.5.5"), "{fwd}");
}
