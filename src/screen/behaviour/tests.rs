//! The behaviour core with an injected clock: every figure, window edge and expiry.
use super::window::{Bucket, STEPS, Window};
use super::*;
use std::time::Duration;

const T0: u64 = 1_700_000_000;

fn at(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_secs_f64(secs)
}

struct Bed {
    b: Behaviour,
    acct: Arc<AccountBehaviour>,
}

const CALLER: u64 = 12_125_550_100;

impl Bed {
    fn new(limits: Limits) -> Bed {
        Bed { b: Behaviour::new(1000), acct: Arc::new(AccountBehaviour::new(limits, 1000)) }
    }
    fn key(&self, id: &str) -> CallKey {
        self.b.key(CallRef { call_id: id.as_bytes(), caller_tag: b"tag" })
    }
    fn start(&self, id: &str, callee: u64, t: f64) -> Result<bool, Trip> {
        self.start_from(id, CALLER, callee, t)
    }
    fn start_from(&self, id: &str, caller: u64, callee: u64, t: f64) -> Result<bool, Trip> {
        self.b.start(&self.acct, self.key(id), (caller, callee), at(t), false)
    }
    fn final_(&self, id: &str, code: u16, t: f64) {
        self.b.event(CallEvent::Final { call: self.key(id), code }, at(t));
    }
    fn bye(&self, id: &str, t: f64) {
        self.b.event(CallEvent::Bye { call: self.key(id) }, at(t));
    }
    /// A call answered at `t + 1` and hung up `secs` later.
    fn call(&self, id: &str, callee: u64, t: f64, secs: f64) {
        assert_eq!(self.start(id, callee, t), Ok(true));
        self.final_(id, 200, t + 1.0);
        self.bye(id, t + 1.0 + secs);
    }
    fn figures(&self, t: f64) -> Figures {
        self.b.expire(at(t));
        self.acct.figures(at(t))
    }
}

#[test]
fn window_edges() {
    let mut w = Window::default();
    // Step 100 holds until the window (30 steps) has moved past it.
    assert!(w.update(100, 100, true, |b| b.attempts = 3));
    assert_eq!(w.sums(100).attempts, 3);
    assert_eq!(w.sums(100 + STEPS - 1).attempts, 3, "the last step it is in");
    assert_eq!(w.sums(100 + STEPS).attempts, 0, "the first step it is out");
    // A step that has left the window is not created or found.
    assert!(!w.update(100, 100 + STEPS, false, |_| ()));
    assert!(!w.update(50, 100, true, |_| ()));
    assert!(w.is_empty(), "pruned by the look-up");
    // Out of order (a clock that stepped back): inserted in order, found again.
    for s in [10, 12, 11] {
        assert!(w.update(s, 12, true, |b| b.attempts += 1));
    }
    assert_eq!(w.len(), 3);
    assert!(w.update(11, 12, false, |_| ()));
    assert_eq!(w.bucket(11), Some(&Bucket { step: 11, attempts: 1, ..Bucket::default() }));
    assert_eq!(w.sums(12).attempts, 3);
    // A step in the future (the caller's clock ahead) is not summed yet.
    assert_eq!(w.sums(11).attempts, 2);
}

#[test]
fn figures_of_answered_short_and_long_calls() {
    let bed = Bed::new(Limits { short_call_seconds: 6, ..Limits::default() });
    bed.call("a", 1, 0.0, 1.0);
    bed.call("b", 2, 10.0, 30.0);
    bed.call("c", 3, 20.0, 5.999);
    // Unanswered: busy, and cancelled (487).
    assert_eq!(bed.start("d", 4, 30.0), Ok(true));
    bed.final_("d", 486, 31.0);
    assert_eq!(bed.start("e", 5, 40.0), Ok(true));
    bed.final_("e", 487, 41.0);
    let f = bed.figures(100.0);
    assert_eq!((f.attempts, f.answered, f.ended, f.short_calls, f.concurrent), (5, 3, 3, 2, 0));
    assert_eq!(f.asr, Some(0.6));
    assert_eq!(f.acd_seconds, Some(12.333));
    assert_eq!(f.short_call_ratio, Some(0.6667));
    assert_eq!(f.longest_sequential_run, 5);
    assert_eq!(f.distinct_callees_last_hour, Some(5));
    let callers = bed.acct.caller_figures(at(100.0), 10);
    assert_eq!(callers.len(), 1);
    assert_eq!(callers[0].0, CALLER);
    assert_eq!((callers[0].1.attempts, callers[0].1.answered), (5, 3));
}

#[test]
fn retransmitted_answers_and_byes_count_once_and_never_go_negative() {
    let bed = Bed::new(Limits::default());
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    assert_eq!(bed.figures(0.5).concurrent, 1);
    for t in [1.0, 1.5, 2.5, 4.5] {
        bed.final_("a", 200, t);
    }
    // A late 486 (a forked leg) in an answered call changes nothing.
    bed.final_("a", 486, 5.0);
    let f = bed.figures(6.0);
    assert_eq!((f.answered, f.concurrent), (1, 1));
    bed.bye("a", 11.0);
    bed.bye("a", 11.5);
    bed.final_("a", 200, 12.0);
    let f = bed.figures(13.0);
    assert_eq!((f.attempts, f.answered, f.ended, f.concurrent), (1, 1, 1, 0));
    assert_eq!(f.acd_seconds, Some(10.0));
    // Events of calls never tracked do nothing.
    bed.bye("nobody", 14.0);
    bed.final_("nobody", 487, 14.0);
    assert_eq!(bed.figures(15.0).concurrent, 0);
    assert_eq!(bed.b.tracker.stats.retransmissions.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[test]
fn challenges_keep_the_call_ringing_for_its_retry() {
    let bed = Bed::new(Limits::default());
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    bed.final_("a", 407, 0.1);
    assert_eq!(bed.figures(0.2).concurrent, 1);
    // The retry (same Call-ID and From tag) is the same call: not counted again.
    assert_eq!(bed.start("a", 1, 0.3), Ok(false));
    bed.final_("a", 200, 1.0);
    let f = bed.figures(2.0);
    assert_eq!((f.attempts, f.answered, f.concurrent), (1, 1, 1));
}

#[test]
fn a_missed_bye_frees_its_slot_after_max_call_seconds() {
    let bed = Bed::new(Limits { max_call_seconds: 60, max_concurrent: Some(1), ..Limits::default() });
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    bed.final_("a", 200, 1.0);
    // The slot is taken: the next call is refused.
    assert_eq!(bed.acct.judge(CALLER, 9, at(30.0)), Some(Trip::Concurrent { live: 1, limit: 1 }));
    assert!(matches!(bed.start("b", 9, 30.0), Err(Trip::Concurrent { .. })));
    assert_eq!(bed.figures(60.999).concurrent, 1, "a millisecond before max_call_seconds");
    let f = bed.figures(61.0);
    assert_eq!((f.concurrent, f.answered, f.ended), (0, 1, 0), "expired: answered, no duration");
    assert_eq!(bed.acct.judge(CALLER, 9, at(61.0)), None);
    assert_eq!(bed.start("b", 9, 61.0), Ok(true));
    assert_eq!(bed.b.tracker.stats.expired_answered.load(std::sync::atomic::Ordering::Relaxed), 1);
    // The late BYE of the expired call does nothing.
    bed.bye("a", 62.0);
    assert_eq!(bed.figures(62.0).concurrent, 1);
}

#[test]
fn an_answered_call_outlives_its_ringing_deadline_and_expires_at_its_own() {
    let bed = Bed::new(Limits::default());
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    bed.final_("a", 200, 1.0);
    // The ringing deadline's entry comes due and is armed again for the answered call.
    assert_eq!(bed.figures(RING_SECONDS as f64 + 1.0).concurrent, 1);
    assert_eq!(bed.b.tracker.heap_len(), 1);
    assert_eq!(bed.figures(14_400.999).concurrent, 1, "a millisecond before max_call_seconds after the 2xx");
    let f = bed.figures(14_401.0);
    assert_eq!((f.concurrent, f.answered, f.ended), (0, 1, 0));
    assert_eq!(bed.b.tracker.stats.expired_answered.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(bed.b.tracker.stats.expired_ringing.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(bed.b.tracker.is_empty());
}

#[test]
fn a_ringing_call_expires_when_its_transaction_must_have_ended() {
    let bed = Bed::new(Limits::default());
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    assert_eq!(bed.figures(RING_SECONDS as f64 - 0.001).concurrent, 1);
    let f = bed.figures(RING_SECONDS as f64);
    assert_eq!((f.attempts, f.answered, f.concurrent), (1, 0, 0));
    // The 200 that comes after that finds nothing.
    bed.final_("a", 200, RING_SECONDS as f64 + 1.0);
    assert_eq!(bed.figures(RING_SECONDS as f64 + 2.0).answered, 0);
    assert!(bed.b.tracker.is_empty());
}

#[test]
fn the_window_slides() {
    // A 30-minute window: one-minute steps.
    let bed = Bed::new(Limits { window_minutes: 30, ..Limits::default() });
    bed.call("a", 1, 0.0, 2.0);
    bed.call("b", 10, 600.0, 2.0);
    assert_eq!(bed.figures(1700.0).attempts, 2);
    // The step of the first call (0-60 s) leaves the window at 30 minutes after it began.
    let step0 = (T0 * 1000) / 60_000;
    let first_out = ((step0 + STEPS) * 60_000) as f64 / 1000.0 - T0 as f64;
    assert_eq!(bed.figures(first_out - 0.001).attempts, 2);
    let f = bed.figures(first_out);
    assert_eq!((f.attempts, f.answered, f.ended), (1, 1, 1));
    assert_eq!(bed.figures(3000.0).attempts, 0);
    // Not reset at midnight or anywhere else: only by age.
}

#[test]
fn an_answer_or_end_after_the_attempt_left_the_window_counts_nowhere() {
    let bed = Bed::new(Limits { window_minutes: 1, max_call_seconds: 3600, ..Limits::default() });
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    bed.final_("a", 200, 1.0);
    bed.bye("a", 200.0);
    let f = bed.figures(200.0);
    assert_eq!((f.attempts, f.answered, f.ended, f.concurrent), (0, 0, 0, 0));
}

#[test]
fn ratio_rules_wait_for_min_attempts() {
    let l = Limits { min_attempts: 4, min_asr: Some(0.5), action: Action::SuspendCallerId, ..Limits::default() };
    let bed = Bed::new(l);
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(bed.start(id, 100 + 10 * i as u64, i as f64), Ok(true));
        bed.final_(id, 486, i as f64 + 0.5);
    }
    // 3 attempts, ASR 0: below min_attempts.
    assert_eq!(bed.acct.judge(CALLER, 500, at(10.0)), None);
    assert_eq!(bed.start("d", 200, 10.0), Ok(true));
    bed.final_("d", 200, 11.0);
    // 4 attempts, 1 answered: 0.25 < 0.5.
    let trip = bed.acct.judge(CALLER, 500, at(12.0));
    assert_eq!(
        trip,
        Some(Trip::Ratio { subject: Subject::CallerId, figure: "asr", value: 0.25, limit: 0.5, attempts: 4 })
    );
    assert_eq!(trip.as_ref().map(Trip::reading), Some(("caller_id_asr_permille", 250, 500)));
    // Another caller ID of the account has figures of its own.
    assert_eq!(bed.acct.judge(CALLER + 1, 500, at(12.0)), None);
    // suspend_account judges the account's figures.
    bed.acct.set_limits(Limits { action: Action::SuspendAccount, ..l }, 1000);
    assert!(matches!(bed.acct.judge(CALLER + 1, 500, at(12.0)), Some(Trip::Ratio { subject: Subject::Account, .. })));
}

#[test]
fn short_call_and_acd_rules() {
    let l = Limits {
        min_attempts: 2,
        max_short_call_ratio: Some(0.5),
        min_acd_seconds: Some(10),
        short_call_seconds: 6,
        ..Limits::default()
    };
    let bed = Bed::new(l);
    bed.call("a", 1, 0.0, 30.0);
    bed.call("b", 20, 40.0, 1.0);
    // One short of two: 0.5 is not above 0.5; ACD 15.5 s.
    assert_eq!(bed.acct.judge(CALLER, 99, at(50.0)), None);
    bed.call("c", 40, 50.0, 1.0);
    assert!(matches!(bed.acct.judge(CALLER, 99, at(60.0)), Some(Trip::Ratio { figure: "short_call_ratio", .. })));
    let bed = Bed::new(Limits { max_short_call_ratio: None, ..l });
    bed.call("a", 1, 0.0, 5.0);
    bed.call("b", 20, 10.0, 9.0);
    let t = bed.acct.judge(CALLER, 99, at(30.0));
    assert!(matches!(t, Some(Trip::Ratio { figure: "acd_seconds", value, .. }) if value == 7.0));
    assert_eq!(t.map(|t| t.reading()), Some(("caller_id_acd_seconds", 7, 10)));
}

#[test]
fn sequential_runs() {
    let bed = Bed::new(Limits { max_sequential: Some(3), sequential_gap: 2, ..Limits::default() });
    let base = 13_125_550_000;
    // +1, +2 (within the gap), -1 (down counts too).
    for (i, n) in [base, base + 1, base + 3].iter().enumerate() {
        assert_eq!(bed.acct.judge(CALLER, *n, at(i as f64)), None);
        assert_eq!(bed.start(&format!("c{i}"), *n, i as f64), Ok(true));
    }
    assert_eq!(bed.acct.judge(CALLER, base + 4, at(5.0)), Some(Trip::Sequential { run: 4, limit: 3 }));
    // Skipping a number after a refusal does not start afresh: the refused one counts.
    assert_eq!(bed.acct.judge(CALLER, base + 6, at(6.0)), Some(Trip::Sequential { run: 5, limit: 3 }));
    // Retrying the refused number is refused again, and starting it (report mode lets the
    // refused call through) keeps the run as it is.
    assert_eq!(bed.acct.judge(CALLER, base + 6, at(6.5)), Some(Trip::Sequential { run: 5, limit: 3 }));
    assert_eq!(bed.start("r", base + 6, 6.5), Ok(true));
    assert_eq!(bed.acct.judge(CALLER, base + 7, at(6.6)), Some(Trip::Sequential { run: 6, limit: 3 }));
    // A jump ends the run; the same number again is not sequential.
    assert_eq!(bed.acct.judge(CALLER, base + 100, at(7.0)), None);
    assert_eq!(bed.start("x", base + 100, 7.0), Ok(true));
    assert_eq!(bed.acct.judge(CALLER, base + 100, at(8.0)), None);
    // The refused number placed anyway ("r") made a run of 5.
    assert_eq!(bed.figures(9.0).longest_sequential_run, 5);
}

#[test]
fn distinct_callees_per_hour() {
    let bed = Bed::new(Limits { max_distinct_callees_per_hour: Some(2), ..Limits::default() });
    assert_eq!(bed.start("a", 100, 0.0), Ok(true));
    assert_eq!(bed.start("b", 200, 10.0), Ok(true));
    assert_eq!(bed.acct.judge(CALLER, 300, at(20.0)), Some(Trip::Distinct { seen: 2, limit: 2 }));
    // A callee already called is not new.
    assert_eq!(bed.acct.judge(CALLER, 100, at(20.0)), None);
    // An hour after the first call it no longer counts.
    assert!(bed.acct.judge(CALLER, 300, at(3599.999)).is_some());
    assert_eq!(bed.acct.judge(CALLER, 300, at(3600.0)), None);
}

#[test]
fn the_tracker_is_bounded() {
    let bed = Bed { b: Behaviour::new(2), acct: Arc::new(AccountBehaviour::new(Limits::default(), 1000)) };
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    assert_eq!(bed.start("b", 2, 0.0), Ok(true));
    // Counted as an attempt, not tracked, and no slot held.
    assert_eq!(bed.start("c", 3, 0.0), Ok(false));
    let f = bed.figures(1.0);
    assert_eq!((f.attempts, f.concurrent), (3, 2));
    bed.bye("a", 2.0);
    assert_eq!(bed.start("d", 4, 3.0), Ok(true));
    assert_eq!(bed.b.tracker.len(), 2);
}

#[test]
fn ten_thousand_short_calls_leave_a_small_heap() {
    let bed = Bed::new(Limits::default());
    for i in 0..10_000u64 {
        let id = format!("call{i}");
        let t = i as f64 * 0.01;
        assert_eq!(bed.start_from(&id, CALLER + i % 100, 1_000_000 + i * 7, t), Ok(true));
        bed.final_(&id, 200, t);
        bed.bye(&id, t + 0.005);
    }
    assert!(bed.b.tracker.is_empty());
    // Each of the 16 shards keeps at most HEAP_SLACK stale deadlines (and the one pushed last).
    let bound = 16 * (super::tracker::HEAP_SLACK + 1);
    assert!(bed.b.tracker.heap_len() <= bound, "stale deadlines are compacted: {}", bed.b.tracker.heap_len());
    let f = bed.figures(101.0);
    assert_eq!((f.attempts, f.answered, f.ended, f.short_calls, f.concurrent), (10_000, 10_000, 10_000, 10_000, 0));
    assert_eq!(bed.acct.caller_figures(at(101.0), 1000).len(), 100);
    // Past the window the caller IDs are swept on the next call.
    assert_eq!(bed.start("late", 5, 360.0 * 60.0 + 1000.0), Ok(true));
    assert_eq!(bed.acct.held().0, 1);
}

#[test]
fn a_caller_id_with_a_live_call_outlives_the_sweep_and_its_calls_share_one_state() {
    let bed = Bed::new(Limits { window_minutes: 1, ..Limits::default() });
    let other = CALLER + 1;
    assert_eq!(bed.start_from("a", CALLER, 100, 0.0), Ok(true));
    bed.final_("a", 200, 1.0);
    // Long after the window: the next call sweeps the caller IDs, and keeps the one whose
    // call is still up.
    assert_eq!(bed.start_from("b", other, 200, 200.0), Ok(true));
    let live = |t: f64| -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> =
            bed.acct.caller_figures(at(t), 10).into_iter().map(|(n, f)| (n, f.concurrent)).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(live(200.0), vec![(CALLER, 1), (other, 1)]);
    // A second call of the same caller ID joins the same state.
    assert_eq!(bed.start_from("c", CALLER, 300, 201.0), Ok(true));
    assert_eq!(live(201.0), vec![(CALLER, 2), (other, 1)]);
    bed.bye("a", 202.0);
    bed.bye("c", 202.0);
    bed.bye("b", 202.0);
    assert_eq!(live(202.0), vec![(CALLER, 0), (other, 0)]);
    assert_eq!(bed.figures(202.0).concurrent, 0);
    // With nothing live and nothing in the window, the next sweep drops both.
    assert_eq!(bed.start_from("d", CALLER + 2, 400, 400.0), Ok(true));
    assert_eq!(bed.acct.held().0, 1);
}

#[test]
fn a_caller_id_cap_still_counts_the_account() {
    let bed = Bed { b: Behaviour::new(100), acct: Arc::new(AccountBehaviour::new(Limits::default(), 2)) };
    for i in 0..5u64 {
        assert_eq!(bed.start_from(&format!("c{i}"), CALLER + i, 100 + i * 10, i as f64), Ok(true));
    }
    assert_eq!(bed.acct.caller_figures(at(10.0), 10).len(), 2);
    assert_eq!(bed.figures(10.0).attempts, 5);
    for i in 0..5u64 {
        bed.bye(&format!("c{i}"), 11.0);
    }
    assert_eq!(bed.figures(12.0).concurrent, 0);
}

#[test]
fn a_new_window_length_starts_afresh() {
    let bed = Bed::new(Limits::default());
    bed.call("a", 1, 0.0, 1.0);
    bed.acct.set_limits(Limits { window_minutes: 60, ..Limits::default() }, 1000);
    let f = bed.figures(10.0);
    assert_eq!((f.attempts, f.window_minutes), (0, 60));
}

#[test]
fn unstart_takes_a_call_back() {
    let bed = Bed::new(Limits::default());
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    bed.b.unstart(bed.key("a"));
    let f = bed.figures(1.0);
    assert_eq!((f.attempts, f.concurrent), (0, 0));
    bed.final_("a", 200, 2.0);
    assert_eq!(bed.figures(3.0).answered, 0);
}

#[test]
fn a_bye_without_the_dialog_proof_ends_nothing_and_is_counted_when_it_names_a_tracked_call() {
    let bed = Bed::new(Limits { max_concurrent: Some(5), ..Limits::default() });
    assert_eq!(bed.start("a", 1, 0.0), Ok(true));
    bed.final_("a", 200, 1.0);
    let unproven = |id: &'static str, tags: [&'static [u8]; 2], t: f64| {
        let calls = tags.map(|caller_tag| bed.b.key(CallRef { call_id: id.as_bytes(), caller_tag }));
        bed.b.event(CallEvent::UnprovenBye { calls }, at(t));
    };
    let count = || bed.b.tracker.stats.unproven_byes.load(std::sync::atomic::Ordering::Relaxed);
    // The caller's tag as the To tag (a BYE from the callee's side) is found too.
    unproven("a", [b"callee", b"tag"], 5.0);
    unproven("a", [b"tag", b"callee"], 6.0);
    assert_eq!(count(), 2);
    let f = bed.figures(7.0);
    assert_eq!((f.concurrent, f.ended), (1, 0), "still live, no duration: {f:?}");
    // Calls that are not tracked are not counted: unknown Call-ID, other tags.
    unproven("b", [b"tag", b"callee"], 8.0);
    unproven("a", [b"x", b"y"], 8.0);
    assert_eq!(count(), 2);
    // The proven BYE still ends it, with its duration.
    bed.bye("a", 10.0);
    let f = bed.figures(10.0);
    assert_eq!((f.concurrent, f.ended), (0, 1), "{f:?}");
    unproven("a", [b"tag", b"callee"], 11.0);
    assert_eq!(count(), 2, "ended calls are not counted");
}

/// The window against the plain model it replaced (every bucket in one ordered list, the
/// sums taken by scanning it), over runs of updates and reads with a clock that may step
/// back: the same buckets, the same sums, the same answers.
mod window_model {
    use super::super::window::{Bucket, STEPS, Sums, Window};
    use proptest::prelude::*;

    #[derive(Default)]
    struct Model(Vec<Bucket>);

    impl Model {
        fn update(&mut self, step: u64, now: u64, create: bool, f: impl FnOnce(&mut Bucket)) -> bool {
            self.0.retain(|b| b.step + STEPS > now);
            if step + STEPS <= now {
                return false;
            }
            let i = match self.0.iter().position(|b| b.step >= step) {
                Some(i) if self.0[i].step == step => i,
                _ if !create => return false,
                Some(i) => {
                    self.0.insert(i, Bucket { step, ..Bucket::default() });
                    i
                }
                None => {
                    self.0.push(Bucket { step, ..Bucket::default() });
                    self.0.len() - 1
                }
            };
            f(&mut self.0[i]);
            true
        }
        fn sums(&self, now: u64) -> Sums {
            let mut s = Sums::default();
            for b in self.0.iter().filter(|b| b.step + STEPS > now && b.step <= now) {
                s.attempts += u64::from(b.attempts);
                s.answered += u64::from(b.answered);
                s.timed += u64::from(b.timed);
                s.short += u64::from(b.short);
                s.millis += b.millis;
                s.longest_run = s.longest_run.max(b.run);
            }
            s
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Count an attempt `back` steps before `now` (0: the current step), with a run.
        Attempt {
            now: u64,
            back: u64,
            run: u32,
        },
        /// Answer, time (ms) or take back a call of a step.
        Change {
            now: u64,
            step: u64,
            what: u8,
            millis: u64,
        },
        Read {
            now: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..120u64, 0..3u64, 0..8u32).prop_map(|(now, back, run)| Op::Attempt { now, back, run }),
            (0..120u64, 0..120u64, 0..4u8, 0..20_000u64).prop_map(|(now, step, what, millis)| Op::Change {
                now,
                step,
                what,
                millis
            }),
            (0..120u64).prop_map(|now| Op::Read { now }),
        ]
    }

    proptest! {
        #[test]
        fn the_window_keeps_the_sums_of_the_buckets_it_holds(ops in proptest::collection::vec(op(), 1..200)) {
            let (mut w, mut m) = (Window::default(), Model::default());
            for op in ops {
                match op {
                    Op::Attempt { now, back, run } => {
                        let step = now.saturating_sub(back);
                        let f = |b: &mut Bucket| {
                            b.attempts += 1;
                            b.run = b.run.max(run);
                        };
                        prop_assert_eq!(w.update(step, now, true, f), m.update(step, now, true, f));
                    }
                    Op::Change { now, step, what, millis } => {
                        let f = |b: &mut Bucket| match what {
                            0 => b.answered += 1,
                            1 => {
                                b.timed += 1;
                                b.millis += millis;
                                b.short += u32::from(millis < 6000);
                            }
                            2 => b.attempts = b.attempts.saturating_sub(1),
                            _ => b.run = b.run.saturating_sub(1),
                        };
                        prop_assert_eq!(w.update(step, now, false, f), m.update(step, now, false, f));
                    }
                    Op::Read { now } => prop_assert_eq!(w.sums(now), m.sums(now)),
                }
                prop_assert_eq!(w.len(), m.0.len());
                for b in &m.0 {
                    prop_assert_eq!(w.bucket(b.step), Some(b));
                }
            }
        }
    }
}
