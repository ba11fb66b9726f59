//! A screening step that waits for a lookup: the INVITE is held, its retransmissions are
//! absorbed, a CANCEL ends it, and the resumed INVITE is screened once and forwarded.
use super::*;
use crate::screen::stir::Verstat;
use crate::screen::{Lookup, Step};
use std::sync::atomic::AtomicBool;

/// Needs a certificate until `ready`; then forwards with TN-Validation-Passed. Counts steps.
#[derive(Default)]
struct Waits {
    ready: AtomicBool,
    steps: AtomicUsize,
}

impl Screen for Waits {
    fn account_header(&self) -> Option<Arc<str>> {
        None
    }
    fn screen(&self, _call: &Call<'_>, _now: SystemTime) -> Decision {
        let mut d = Decision::pass();
        d.verdict = Verdict::shared_forward_verstat(Verstat::None);
        d
    }
    fn step(&self, call: &Call<'_>, now: SystemTime, certificates: bool) -> Step {
        if !certificates {
            return Step::Done(self.screen(call, now));
        }
        self.steps.fetch_add(1, Ordering::SeqCst);
        if !self.ready.load(Ordering::SeqCst) {
            return Step::Need(Lookup::Certificate { url: "https://cert.example/x.pem".into() });
        }
        let mut d = self.screen(call, now);
        d.verdict = Verdict::shared_forward_verstat(Verstat::Passed);
        Step::Done(d)
    }
}

fn held(actions: &[Action]) -> Held {
    match actions {
        [Action::Lookup { lookup: Lookup::Certificate { url }, held }] => {
            assert_eq!(url, "https://cert.example/x.pem");
            held.clone()
        }
        other => panic!("expected one lookup, got {other:?}"),
    }
}

fn setup() -> (Proxy, Arc<Waits>) {
    let w = Arc::new(Waits::default());
    let mut c = cfg(None);
    c.upstream = Some(parse_upstream("sip:10.0.0.2:5080").unwrap());
    (Proxy::new(c, w.clone()), w)
}

#[test]
fn a_held_invite_is_forwarded_once_after_its_lookup() {
    let (mut p, w) = setup();
    let req = invite("");
    let h = held(&run(&mut p, udp(), &req));
    assert_eq!(h.bytes, req.as_bytes());
    // Retransmissions while waiting: absorbed, not screened again.
    assert_eq!(dropped(&run(&mut p, udp(), &req)), Some(DropReason::Pending));
    assert_eq!(dropped(&run(&mut p, udp(), &req)), Some(DropReason::Pending));
    assert_eq!(w.steps.load(Ordering::SeqCst), 1);
    w.ready.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    p.resume(now(), &h, true, &mut out);
    let (_, dest, fwd) = sent(&out);
    assert_eq!(dest, "10.0.0.2:5080".parse().unwrap());
    assert!(fwd.contains("f: <sip:+12125550199;verstat=TN-Validation-Passed@10.0.0.1>;tag=1\r\n"), "{fwd}");
    // The verdict is cached now: a late retransmission is forwarded again, unscreened.
    let (_, _, again) = sent(&run(&mut p, udp(), &req));
    assert_eq!(again, fwd);
    assert_eq!(w.steps.load(Ordering::SeqCst), 2);
}

#[test]
fn a_cancel_while_waiting_is_answered_and_ends_the_call() {
    let (mut p, w) = setup();
    let req = invite("");
    let h = held(&run(&mut p, udp(), &req));
    let cancel = req.replacen("INVITE sip:", "CANCEL sip:", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let (_, _, ok) = sent(&run(&mut p, udp(), &cancel));
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    // The lookup comes in: the INVITE is answered 487 and never forwarded or screened.
    w.ready.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    p.resume(now(), &h, true, &mut out);
    let (_, dest, reply) = sent(&out);
    assert!(reply.starts_with("SIP/2.0 487 Request Terminated\r\n"), "{reply}");
    assert_eq!(dest, UAC.parse().unwrap());
    assert_eq!(w.steps.load(Ordering::SeqCst), 1);
    // A retransmission gets the same 487.
    assert!(sent(&run(&mut p, udp(), &req)).2.starts_with("SIP/2.0 487 "));
}

#[test]
fn resuming_without_waiting_decides_at_once() {
    let (mut p, w) = setup();
    let req = invite("");
    let h = held(&run(&mut p, udp(), &req));
    // Too many calls waiting (or the lookup never came): screened without waiting.
    let mut out = Vec::new();
    p.resume(now(), &h, false, &mut out);
    let (_, _, fwd) = sent(&out);
    assert!(fwd.contains("verstat=No-TN-Validation@"), "{fwd}");
    assert_eq!(w.steps.load(Ordering::SeqCst), 1, "the no-wait path uses screen(), not step()");
}
