//! A call waiting for the cluster store: held while its counters are reserved, its
//! retransmissions absorbed, then forwarded with the decision the answer gave; a CANCEL
//! meanwhile ends it with 487, and the reservation it got is released, never leaked.
use super::*;
use crate::screen::quota::Windows;
use crate::screen::quota::shared::{Reservation, StoreFailure, Tally};
use crate::screen::{Charge, Counting, Lookup, Step};

/// Always waits for the store; `counted` charges the call there when admitted.
#[derive(Default)]
struct Shared {
    steps: AtomicUsize,
}

fn reservation() -> Reservation {
    let w = Windows { hour: 0, day: 1, week: 0, day_start: 0 };
    Reservation::new("acme".into(), &Default::default(), w, 12125550199, 13125550100)
}

impl Screen for Shared {
    fn account_header(&self) -> Option<Arc<str>> {
        None
    }
    fn screen(&self, _call: &Call<'_>, _now: SystemTime) -> Decision {
        Decision::pass()
    }
    fn step(&self, _call: &Call<'_>, _now: SystemTime, _certificates: bool) -> Step {
        self.steps.fetch_add(1, Ordering::SeqCst);
        Step::Need(Lookup::Counters(Box::new(Counting { reservation: reservation(), decision: Decision::pass() })))
    }
    fn counted(&self, c: Counting, answer: Result<Tally, StoreFailure>, _now: SystemTime) -> Decision {
        let mut d = c.decision;
        if answer.is_ok_and(|t| t.admitted) {
            let r = c.reservation;
            d.charge = Some(Charge {
                account: r.account.clone(),
                windows: r.windows,
                caller: r.caller,
                callee: r.callee,
                shared: Some(Box::new(r)),
            });
        }
        d
    }
}

fn setup() -> (Proxy, Arc<Shared>) {
    let s = Arc::new(Shared::default());
    let mut c = cfg(None);
    c.upstream = Some(parse_upstream("sip:10.0.0.2:5080").unwrap());
    (Proxy::new(c, s.clone()), s)
}

fn held(actions: &[Action]) -> (Counting, Held) {
    match actions {
        [Action::Lookup { lookup: Lookup::Counters(c), held }] => ((**c).clone(), held.clone()),
        other => panic!("expected one counters lookup, got {other:?}"),
    }
}

const ADMITTED: Tally = Tally { admitted: true, values: [0; 5], full: false };

#[test]
fn a_call_waiting_for_the_store_is_forwarded_once_with_its_answer() {
    let (mut p, s) = setup();
    let req = invite("");
    let (c, h) = held(&run(&mut p, udp(), &req));
    assert_eq!(c.reservation, reservation());
    assert_eq!(dropped(&run(&mut p, udp(), &req)), Some(DropReason::Pending), "retransmission absorbed");
    let d = s.counted(c, Ok(ADMITTED), now());
    let mut out = Vec::new();
    p.resume_counted(now(), &h, d, &mut out);
    let (_, dest, _) = sent(&out);
    assert_eq!(dest, "10.0.0.2:5080".parse().unwrap());
    assert!(!out.iter().any(|a| matches!(a, Action::Release(_))), "a forwarded call keeps its charge");
    assert_eq!(s.steps.load(Ordering::SeqCst), 1, "screened once");
    // Cached now: a late retransmission is forwarded again without asking the store.
    assert_eq!(sent(&run(&mut p, udp(), &req)).1, dest);
    assert_eq!(s.steps.load(Ordering::SeqCst), 1);
}

#[test]
fn a_cancel_while_waiting_for_the_store_gives_the_reservation_back() {
    let (mut p, s) = setup();
    let req = invite("");
    let (c, h) = held(&run(&mut p, udp(), &req));
    let cancel = req.replacen("INVITE sip:", "CANCEL sip:", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    assert!(sent(&run(&mut p, udp(), &cancel)).2.starts_with("SIP/2.0 200 OK\r\n"));
    // The store admitted (and counted) it meanwhile: the call ends with 487 and the count
    // is taken back.
    let d = s.counted(c, Ok(ADMITTED), now());
    let mut out = Vec::new();
    p.resume_counted(now(), &h, d, &mut out);
    let replies: Vec<&Action> = out.iter().filter(|a| matches!(a, Action::Send { .. })).collect();
    assert_eq!(replies.len(), 1, "{out:?}");
    assert!(sent(&out[..1]).2.starts_with("SIP/2.0 487 Request Terminated\r\n"), "{out:?}");
    let released: Vec<&Reservation> =
        out.iter().filter_map(|a| if let Action::Release(r) = a { Some(&**r) } else { None }).collect();
    assert_eq!(released, [&reservation()], "{out:?}");
}

#[test]
fn a_store_failure_decides_by_the_screen_and_is_not_retried() {
    let (mut p, s) = setup();
    let (c, h) = held(&run(&mut p, udp(), &invite("")));
    let d = s.counted(c, Err(StoreFailure::Timeout), now());
    let mut out = Vec::new();
    p.resume_counted(now(), &h, d, &mut out);
    assert_eq!(sent(&out).1, "10.0.0.2:5080".parse().unwrap());
    assert!(!out.iter().any(|a| matches!(a, Action::Lookup { .. } | Action::Release(_))), "{out:?}");
    assert_eq!(s.steps.load(Ordering::SeqCst), 1);
}
