//! Redirect mode on the core: every initial INVITE answered here (302 to the Request-URI
//! with the verdict, or the rule's reject), byte-identical answers to retransmissions, the
//! ACK absorbed, CANCEL and other methods answered, nothing ever forwarded; OPTIONS to us
//! answered 200 in both modes.
use super::*;
use crate::config::server::ServerMode;

/// Passes every call of account acme, rejects the callee +13125550100 with 608 (a DNC
/// hit), charges what passes.
#[derive(Default)]
struct Policy {
    screened: AtomicUsize,
    charged: AtomicUsize,
    released: AtomicUsize,
}

impl Screen for Policy {
    fn account_header(&self) -> Option<Arc<str>> {
        None
    }
    fn screen(&self, call: &Call<'_>, _now: SystemTime) -> Decision {
        self.screened.fetch_add(1, Ordering::SeqCst);
        let mut d = Decision::pass();
        d.account = Some("acme".into());
        if call.request_uri.contains("+13125550100") {
            d.rule = Some(Rule::Dnc);
            d.verdict = Arc::new(Verdict::Reject {
                code: 608,
                reason: "Rejected".into(),
                headers: vec![ExtraHeader::new("Reason", "SIP;cause=608;text=\"dnc\"")],
            });
        } else {
            self.charged.fetch_add(1, Ordering::SeqCst);
            d.verdict = Verdict::shared_forward_verstat(crate::screen::stir::Verstat::Passed);
        }
        d
    }
    fn release(&self, _d: &Decision) -> Option<Box<crate::screen::quota::shared::Reservation>> {
        self.released.fetch_add(1, Ordering::SeqCst);
        None
    }
}

fn redirector() -> (Proxy, Arc<Policy>) {
    let mut c = cfg(Some(parse_upstream("sip:10.0.0.2:5080").unwrap()));
    c.mode = ServerMode::Redirect;
    let s = Arc::new(Policy::default());
    (Proxy::new(c, s.clone()), s)
}

fn only_reply(actions: &[Action]) -> String {
    let sends: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Send { .. })).collect();
    assert_eq!(sends.len(), 1, "{actions:?}");
    let (_, dest, text) = sent(actions);
    assert_eq!(dest, UAC.parse().unwrap(), "answered to the sender, never forwarded");
    text
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

#[test]
fn a_passed_call_is_moved_to_its_request_uri_with_the_verdict() {
    let (p, s) = redirector();
    let first = go(&p, &invite(""));
    let reply = only_reply(&first);
    assert!(reply.starts_with("SIP/2.0 302 Moved Temporarily\r\n"), "{reply}");
    assert_eq!(
        header(&reply, "Contact"),
        Some(
            "<sip:+12125550100@10.0.0.2:5080;user=phone?X-Sipguard-Verdict=pass&X-Sipguard-Account=acme\
&X-Sipguard-Verstat=TN-Validation-Passed>"
        ),
        "{reply}"
    );
    assert_eq!(header(&reply, "X-Sipguard-Verdict"), Some("pass"));
    assert_eq!(header(&reply, "X-Sipguard-Account"), Some("acme"));
    assert_eq!(header(&reply, "X-Sipguard-Verstat"), Some("TN-Validation-Passed"));
    // A stateless UAS reply: the request's Via with received/rport, our To tag.
    assert!(reply.contains("\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport=5062;received=10.0.0.1\r\n"));
    let to = header(&reply, "To").unwrap();
    assert!(to.starts_with("<sip:+12125550100@10.0.0.2>;tag=sg"), "{to}");
    // Logged once, as the forward it lets through.
    let decided: Vec<&Decided> = first
        .iter()
        .filter_map(|a| match a {
            Action::Decided(d) => Some(&**d),
            _ => None,
        })
        .collect();
    assert_eq!(decided.len(), 1);
    assert!(decided[0].decision.verdict.is_forward());
    // Retransmissions: the same bytes, not screened or charged again, not logged again.
    for _ in 0..3 {
        let again = go(&p, &invite(""));
        assert_eq!(only_reply(&again), reply);
        assert!(!again.iter().any(|a| matches!(a, Action::Decided(_))));
    }
    assert_eq!((s.screened.load(Ordering::SeqCst), s.charged.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(s.released.load(Ordering::SeqCst), 0, "a redirected call keeps its charge");
    // The ACK for the 302 carries our To tag: absorbed.
    let ack = invite("")
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .replace("0.2>\r\n", &format!("0.2>;tag={}\r\n", to.rsplit("tag=").next().unwrap()));
    assert_eq!(go(&p, &ack).len(), 1);
    assert_eq!(dropped(&go(&p, &ack)), Some(DropReason::AckAbsorbed));
}

#[test]
fn a_rejected_call_gets_its_rules_response_and_nothing_is_charged() {
    let (p, s) = redirector();
    let req = invite("").replace("+12125550100@", "+13125550100@");
    let reply = only_reply(&go(&p, &req));
    assert!(reply.starts_with("SIP/2.0 608 Rejected\r\n"), "{reply}");
    assert_eq!(header(&reply, "Reason"), Some("SIP;cause=608;text=\"dnc\""));
    assert_eq!(header(&reply, "Contact"), None);
    assert_eq!(header(&reply, "X-Sipguard-Verdict"), None);
    assert_eq!(only_reply(&go(&p, &req)), reply, "retransmission: same bytes");
    assert_eq!((s.screened.load(Ordering::SeqCst), s.charged.load(Ordering::SeqCst)), (1, 0));
}

#[test]
fn every_invite_is_screened_even_with_a_to_tag_or_route() {
    let (p, s) = redirector();
    // A re-INVITE-looking request and one with a Route: a redirect server proves no
    // dialogs, so both are calls to screen and to answer, never forwarded.
    let tagged = invite("").replace("0.2>\r\n", "0.2>;tag=x\r\n").replace("call-1", "call-2");
    assert!(only_reply(&go(&p, &tagged)).starts_with("SIP/2.0 302 "));
    let routed = invite("Route: <sip:10.9.9.9;lr>\r\n").replace("call-1", "call-3");
    let r = only_reply(&go(&p, &routed));
    assert!(r.starts_with("SIP/2.0 302 "), "{r}");
    assert_eq!(s.screened.load(Ordering::SeqCst), 2);
}

#[test]
fn other_methods_are_answered_never_forwarded() {
    let (p, _) = redirector();
    let bye =
        invite("").replace("INVITE sip", "BYE sip").replace("1 INVITE", "2 BYE").replace("0.2>\r\n", "0.2>;tag=x\r\n");
    let r = only_reply(&go(&p, &bye));
    assert!(r.starts_with("SIP/2.0 405 Method Not Allowed\r\n"), "{r}");
    assert_eq!(header(&r, "Allow"), Some("INVITE, ACK, CANCEL, OPTIONS"));
    // OPTIONS for a user (not us): 405 as well.
    let opt = invite("").replace("INVITE sip", "OPTIONS sip").replace("1 INVITE", "1 OPTIONS");
    assert!(only_reply(&go(&p, &opt)).starts_with("SIP/2.0 405 "));
    // CANCEL of a call never seen: 481; of a call answered here: 200.
    let cancel = invite("").replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL");
    assert!(only_reply(&go(&p, &cancel)).starts_with("SIP/2.0 481 "));
    go(&p, &invite(""));
    assert!(only_reply(&go(&p, &cancel)).starts_with("SIP/2.0 200 OK\r\n"));
    // An ACK that is not for one of our answers goes nowhere.
    let ack = invite("")
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .replace("0.2>\r\n", "0.2>;tag=other\r\n");
    assert_eq!(dropped(&go(&p, &ack)), Some(DropReason::AckDropped));
}

fn options(ruri: &str, extra: &str) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKping;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:sbc@10.0.0.1>;tag=p1\r\n\
To: <{ruri}>\r\n\
Call-ID: ping-1\r\n\
CSeq: 7 OPTIONS\r\n{extra}\
Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn options_to_us_is_answered_in_both_modes() {
    let (redirect, _) = redirector();
    let proxy =
        Proxy::new(cfg(Some(parse_upstream("sip:10.0.0.2:5080").unwrap())), Arc::new(crate::screen::PassThrough));
    for (p, allow) in [(&redirect, Some("INVITE, ACK, CANCEL, OPTIONS")), (&proxy, None)] {
        for ruri in ["sip:192.0.2.10:5060", "sip:192.0.2.10", "sip:192.0.2.10;transport=udp"] {
            let out = go(p, &options(ruri, ""));
            let r = only_reply(&out);
            assert!(r.starts_with("SIP/2.0 200 OK\r\n"), "{ruri}: {r}");
            assert_eq!(header(&r, "CSeq"), Some("7 OPTIONS"));
            assert_eq!(header(&r, "Allow"), allow);
            assert_eq!(only_reply(&go(p, &options(ruri, ""))), r, "stateless: same bytes");
        }
    }
    // Not to us: a user part, another host, or a Route onwards. The proxy forwards them.
    for (ruri, extra) in [
        ("sip:+12125550100@192.0.2.10", ""),
        ("sip:10.0.0.2:5080", ""),
        ("sip:192.0.2.10", "Route: <sip:10.0.0.2:5080;lr>\r\n"),
    ] {
        let out = go(&proxy, &options(ruri, extra));
        let (_, dest, text) = sent(&out);
        assert_eq!(dest, "10.0.0.2:5080".parse().unwrap(), "{ruri} {extra}: {text}");
        assert!(text.starts_with("OPTIONS "), "{text}");
    }
}

fn go(p: &Proxy, msg: &str) -> Vec<Action> {
    let mut out = Vec::new();
    p.handle(now(), udp(), msg.as_bytes(), &mut out);
    out
}
