//! Counters shared by a cluster of nodes (`[cluster] backend = "redis"`), as the core sees
//! them: a call's reservation (which windows and numbers, which caps) goes out as a lookup,
//! and the store's tally comes back. The store checks every cap and counts the call in one
//! atomic step, so N nodes admit exactly the cap between them. Pacing (per second and per
//! minute) stays on each node: it smooths bursts through this node and needs no round trip.
use super::{QuotaLimits, Windows};
use crate::screen::CounterReading;
use std::sync::Arc;

/// The five window counters, in the order of `Reservation::caps` and `Tally::values`.
pub const COUNTERS: [&str; 5] =
    ["account_per_hour", "account_per_day", "caller_id_per_day", "callee_per_day", "callee_per_week"];

/// Index of each counter.
pub const HOUR: usize = 0;
pub const DAY: usize = 1;
pub const CALLER_DAY: usize = 2;
pub const CALLEE_DAY: usize = 3;
pub const CALLEE_WEEK: usize = 4;

/// One call to count: its account, windows and numbers, and the cap of each counter.
/// The hour and day are always counted (they are shown even without a cap); a per-number
/// counter only when its cap is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub account: Arc<str>,
    pub windows: Windows,
    pub caller: u64,
    pub callee: u64,
    pub caps: [Option<u64>; 5],
    /// The most numbers one per-number counter may hold (`max_tracked_numbers`), as locally.
    pub max_tracked: u64,
}

impl Reservation {
    pub fn new(account: Arc<str>, limits: &QuotaLimits, windows: Windows, caller: u64, callee: u64) -> Self {
        let caps = [
            limits.per_hour,
            limits.per_day,
            limits.per_caller_id_per_day,
            limits.per_callee_per_day,
            limits.per_callee_per_week,
        ];
        Reservation { account, windows, caller, callee, caps, max_tracked: u64::MAX }
    }

    pub fn tracking_at_most(mut self, n: usize) -> Self {
        self.max_tracked = n as u64;
        self
    }

    /// Whether counter `i` is kept for this call.
    pub fn counts(&self, i: usize) -> bool {
        i <= DAY || self.caps.get(i).is_some_and(Option::is_some)
    }

    /// The readings of the decision log: each capped counter with its value (this call
    /// included when it was admitted).
    pub fn readings(&self, tally: &Tally, out: &mut Vec<CounterReading>) {
        if tally.full {
            out.push(CounterReading { name: "tracked_numbers", value: self.max_tracked, limit: self.max_tracked });
        }
        let step = u64::from(tally.admitted);
        for (i, cap) in self.caps.iter().enumerate() {
            if let (Some(limit), Some(&value), Some(&name)) = (cap, tally.values.get(i), COUNTERS.get(i)) {
                out.push(CounterReading { name, value: value + step, limit: *limit });
            }
        }
    }
}

/// The store's answer: whether every cap held (and the call was counted), and each
/// counter's value before this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub admitted: bool,
    pub values: [u64; 5],
    /// Refused because a per-number counter holds `max_tracked` numbers already.
    pub full: bool,
}

/// Why the store gave no tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    #[error("no answer within timeout_ms")]
    Timeout,
    #[error("not connected")]
    Down,
    #[error("connection failed")]
    Connection,
    #[error("the store refused the script")]
    Script,
    #[error("too many calls waiting for the store")]
    Overloaded,
}

impl StoreFailure {
    pub fn label(self) -> &'static str {
        match self {
            StoreFailure::Timeout => "timeout",
            StoreFailure::Down => "down",
            StoreFailure::Connection => "connection",
            StoreFailure::Script => "script",
            StoreFailure::Overloaded => "overloaded",
        }
    }
}

/// `[cluster] on_failure`: what a call gets when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Forward it and count it locally (written back when the store returns).
    #[default]
    Open,
    /// Refuse it with the quota rule's response.
    Closed,
    /// Judge it by this node's counters against the caps divided by `[cluster] nodes`
    /// (what is left of the account's cap as last seen, for the hour and the day).
    Local,
}

/// `[cluster]` as the screening policy uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCounters {
    pub on_failure: OnFailure,
    pub nodes: u32,
}

/// The limits one node applies on its own during an outage (`on_failure = "local"`): the
/// hour and day caps are what was left of them when the store last answered, divided by
/// the node count; a per-number cap is divided too, but never below one call.
pub fn local_share(limits: &QuotaLimits, nodes: u32, seen_hour: u64, seen_day: u64) -> QuotaLimits {
    let n = u64::from(nodes.max(1));
    let share = |cap: Option<u64>, seen: u64| cap.map(|c| c.saturating_sub(seen) / n);
    let per_number = |cap: Option<u64>| cap.map(|c| (c / n).max(1));
    QuotaLimits {
        per_hour: share(limits.per_hour, seen_hour),
        per_day: share(limits.per_day, seen_day),
        per_caller_id_per_day: per_number(limits.per_caller_id_per_day),
        per_callee_per_day: per_number(limits.per_callee_per_day),
        per_callee_per_week: per_number(limits.per_callee_per_week),
        ..*limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_share_is_what_is_left_divided_by_the_nodes() {
        let limits = QuotaLimits {
            per_hour: Some(100),
            per_day: Some(1000),
            per_callee_per_day: Some(1),
            per_caller_id_per_day: Some(10),
            ..Default::default()
        };
        let l = local_share(&limits, 3, 40, 400);
        assert_eq!((l.per_hour, l.per_day), (Some(20), Some(200)));
        assert_eq!(l.per_callee_per_day, Some(1), "never below one call");
        assert_eq!(l.per_caller_id_per_day, Some(3));
        let spent = local_share(&limits, 2, 100, 2000);
        assert_eq!((spent.per_hour, spent.per_day), (Some(0), Some(0)));
    }

    #[test]
    fn readings_show_the_capped_counters_with_this_call() {
        let limits = QuotaLimits { per_day: Some(5), per_callee_per_day: Some(1), ..Default::default() };
        let w = Windows { hour: 0, day: 1, week: 0, day_start: 0 };
        let r = Reservation::new("acme".into(), &limits, w, 1, 2);
        assert!(r.counts(HOUR) && r.counts(DAY) && r.counts(CALLEE_DAY));
        assert!(!r.counts(CALLER_DAY) && !r.counts(CALLEE_WEEK));
        let mut out = Vec::new();
        r.readings(&Tally { admitted: true, values: [3, 3, 0, 0, 0], full: false }, &mut out);
        assert_eq!(
            out,
            vec![
                CounterReading { name: "account_per_day", value: 4, limit: 5 },
                CounterReading { name: "callee_per_day", value: 1, limit: 1 },
            ]
        );
    }
}
